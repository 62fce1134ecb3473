"""The Typer app and command classes every ciliumctl command is declared with, so that help reads the same
everywhere: plain click help as kubectl and cilium print it (no boxes, fits 80 columns, usage errors in the
same `Error:` line style as ours), metavars that say what to type, none on flags.

Typer shows the Python annotation where a metavar goes (`<str>`, `<list[str]>`) and usage lines such as
`{PATH...}...`; the classes below replace that with ciliumctl.cli.params, which docgen uses too.

The same classes are where every command gets what is kept out of the command modules: its examples at the end
of --help (ciliumctl.cli.examples, by command path), the values <TAB> offers (ciliumctl.cli.completion_values, by
option name and command path) and the global -D/--debug flag, so that a command or option added later gets them
without edits."""

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from ciliumctl.cli.params import argument_name, argument_usage, command_path, metavar_of


def _completions(values):
    from typer._click.shell_completion import CompletionItem

    return [CompletionItem(v) for v in values]


class _Option(TyperOption):
    def display_type_rich(self, ctx):
        return metavar_of(self) or None

    def shell_complete(self, ctx, incomplete):
        from ciliumctl.cli import completion_values

        values = completion_values.option_values(self, ctx, incomplete)
        return super().shell_complete(ctx, incomplete) if values is None else _completions(values)


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:  # also click's "Missing argument 'NAME'"
        return self.metavar or (self.name or "arg").upper()

    def display_type_rich(self, ctx):
        return None  # the name column already says what to type

    def _rich_display_name(self) -> str:
        return argument_name(self)

    def _usage_display_name(self) -> str:
        return argument_usage(self)

    def shell_complete(self, ctx, incomplete):
        from ciliumctl.cli import completion_values

        values = completion_values.argument_values(self, ctx, incomplete)
        return super().shell_complete(ctx, incomplete) if values is None else _completions(values)


def debug_on() -> None:
    """-D/--debug: ciliumctl's log messages down to DEBUG on stderr, and an unexpected error prints its full trace
    (main.run reads CILIUMCTL_DEBUG; processes started from here, such as `agent start`'s agent, inherit it)."""
    import logging
    import os

    os.environ["CILIUMCTL_DEBUG"] = "1"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("ciliumctl").setLevel(logging.DEBUG)
    import sys

    from ciliumctl import __version__
    from ciliumctl.base import paths

    log = logging.getLogger("ciliumctl.cli")
    log.debug("ciliumctl %s (Python %s): %s", __version__, sys.version.split()[0], " ".join(sys.argv[1:]))
    log.debug("state %s, run %s, pins %s, kubeconfig %s", paths.state_dir(), paths.run_dir(), paths.bpffs_dir(),
              os.environ.get("KUBECONFIG") or "(none)")


def _debug_on(ctx, param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        debug_on()


def _debug_flag(debug: bool = typer.Option(False, "-D", "--debug", is_eager=True, expose_value=False,
                                           callback=_debug_on,
                                           help="Debug messages on stderr; an unexpected error prints its full "
                                                "trace.")) -> None:
    pass


def _with_debug(params: list) -> list:
    """The command's parameters and -D/--debug, which every command takes, before or after its name, as hubble's
    and cilium's global flags (cobra's persistent flags) are read."""
    if any("--debug" in p.opts for p in params):
        return params
    from typer.main import _get_param  # typer's own way from a signature to a parameter (it has no public one)
    from typer.utils import get_params_from_function

    (meta,) = get_params_from_function(_debug_flag).values()
    return [*params, _get_param(meta)]


def _restyle(params: list) -> list:
    """Give typer's parameters our help display. The subclasses add no state, so changing the class of the
    objects typer built is safe; typer offers no other hook for how a parameter is shown."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params


def _format_examples(ctx, formatter) -> None:
    """An Examples section after the options, as kubectl's help ends (the command's own epilog stays first)."""
    from ciliumctl.cli import examples

    width = formatter.width - formatter.current_indent - 2
    lines = examples.render(command_path(ctx), max(width, 40))
    if lines:
        with formatter.section("Examples"):
            for line in lines:
                formatter.write(f"{'':{formatter.current_indent}}{line}\n" if line else "\n")


class _Shared:
    """What Command and Group add to typer's classes."""

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)  # type: ignore[misc]
        _format_examples(ctx, formatter)

    def parse_args(self, ctx, args):
        from typer._click.exceptions import UsageError

        try:
            return super().parse_args(ctx, args)  # type: ignore[misc]
        except UsageError as err:   # the parser's own errors (an option without its value) come without one
            if err.ctx is None:
                err.ctx, err.cmd = ctx, ctx.command
            raise


class Command(_Shared, TyperCommand):
    def __init__(self, *args, params=None, **kwargs):
        super().__init__(*args, params=_restyle(_with_debug(list(params or []))), **kwargs)


class Group(_Shared, TyperGroup):
    def __init__(self, *args, params=None, **kwargs):
        super().__init__(*args, params=_restyle(_with_debug(list(params or []))), **kwargs)


class App(typer.Typer):
    """typer.Typer with ciliumctl's defaults: plain help, no completion flags (completions/ is generated),
    a group that shows its help when called without a command."""

    def __init__(self, **kwargs):
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("rich_markup_mode", None)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, name=None, *, cls=None, **kwargs):
        return super().command(name, cls=cls or Command, **kwargs)
