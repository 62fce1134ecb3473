"""The ciliumctl command tree. Commands load on use: the root's help lists them from COMMANDS without importing
a command module, and `ciliumctl X ...` imports only X's module (start-up is part of the product).

`app` is built on first use (module __getattr__), so that `policy validate`, which runs many times in CI jobs
and hooks, can skip Typer entirely (ciliumctl.cli.policy_validate.fast_main)."""

import sys
from collections.abc import MutableMapping

# name -> (module, the one line the root's help shows). A module either has `app` (a command group) or
# `register(app)`, which adds its commands. tests/unit/test_cli_help.py checks each line against the first
# line of the command's own help.
COMMANDS = {
    "install": ("ciliumctl.cli.install", "Install the eBPF datapath on this node."),
    "uninstall": ("ciliumctl.cli.install", "Remove everything ciliumctl made on this node."),
    "status": ("ciliumctl.cli.status", "Show the datapath, endpoints, policies and agent of this node."),
    "policy": ("ciliumctl.cli.policy", "Validate, apply, trace and inspect network policies."),
    "endpoint": ("ciliumctl.cli.endpoint", "Manage and inspect endpoints on this node."),
    "service": ("ciliumctl.cli.service", "Manage the services this node load-balances, without kube-proxy."),
    "fqdn": ("ciliumctl.cli.fqdn", "Inspect the DNS names learned for toFQDNs policies."),
    "observe": ("ciliumctl.cli.observe", "Observe flows: the datapath's verdicts, with pods and policies."),
    "agent": ("ciliumctl.cli.agent", "Run the node agent: flows, Hubble API, metrics, CNI socket."),
    "ui": ("ciliumctl.cli.ui", "Serve a live service map of the node's flows on a local web page."),
    "demo": ("ciliumctl.cli.demo", "Run Cilium's getting-started demo on a sandbox node."),
    "version": ("ciliumctl.cli.version", "Print the ciliumctl version."),
    "completion": ("ciliumctl.cli.completion", "Print the shell completion script for bash, zsh or fish."),
}


def load_command(name: str):
    """The click command of one entry of COMMANDS, built from its module."""
    import importlib

    import typer.main
    from typer.core import TyperGroup

    from ciliumctl.cli.typer_app import App

    module = importlib.import_module(COMMANDS[name][0])
    group = getattr(module, "app", None)
    if group is not None:
        command = typer.main.get_command(group)
    else:
        holder = App()
        holder.callback()(lambda: None)  # a callback makes typer build a group even for one command
        module.register(holder)
        root = typer.main.get_command(holder)
        assert isinstance(root, TyperGroup)   # the callback made it a group
        command = root.commands[name]
    command.name = name
    return command


class _LazyCommands(MutableMapping):
    """The root's commands by name, each built on first lookup; names, `in` and len() load nothing."""

    def __init__(self):
        self._built: dict = {}

    def __getitem__(self, name):
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = load_command(name)
        return self._built[name]

    def __setitem__(self, name, command):
        self._built[name] = command

    def __delitem__(self, name):
        del self._built[name]

    def __contains__(self, name):
        return name in COMMANDS or name in self._built

    def __iter__(self):
        return iter([*COMMANDS, *(n for n in self._built if n not in COMMANDS)])

    def __len__(self):
        return len(list(iter(self)))


def _print_version(ctx, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        import typer

        from ciliumctl.cli.version import version_line

        typer.echo(version_line())
        raise typer.Exit()


def _build_app():
    import typer

    from ciliumctl.cli.typer_app import App, Group

    class Root(Group):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.commands = _LazyCommands()

        def list_commands(self, ctx):
            return list(self.commands)

        def format_commands(self, ctx, formatter):  # from the index: listing commands loads none of them
            with formatter.section("Commands"):
                formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])

        def main(self, args=None, prog_name=None, complete_var=None,  # type: ignore[override]
                 standalone_mode=True, **extra):
            """Usage errors of every command as one `Error:` line (exit 2), here and under typer's test runner."""
            from typer._click.exceptions import ClickException, NoArgsIsHelpError

            try:
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                code = result if isinstance(result, int) else 0
            except NoArgsIsHelpError as err:   # a group without its command: its help, as before
                err.show()
                code = result = err.exit_code
            except ClickException as err:
                from ciliumctl.cli.usage_errors import one_line

                sys.stderr.write(f"Error: {one_line(err)}\n")
                code = result = err.exit_code
            except typer.Abort:
                sys.stderr.write("Aborted!\n")
                code = result = 1
            if standalone_mode:
                sys.exit(code)
            return result

        def _main_shell_completion(self, ctx_args, prog_name, complete_var=None):
            """`_CILIUMCTL_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=N ciliumctl` (click's spelling; typer's
            `complete_bash` too): the candidates for one <TAB>, one a line."""
            import os

            complete_var = complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper()
            instruction = os.environ.get(complete_var)
            if instruction:
                from ciliumctl.cli import completion

                sys.exit(completion.respond(self, ctx_args, prog_name, complete_var, instruction))

    app = App(
        name="ciliumctl",
        help="eBPF networking and security for Kubernetes nodes: install, policy, endpoint, observe.",
        cls=Root,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    # the root's own options; its commands come from COMMANDS. --version as hubble's: eager, needs no command
    def root(version: bool = typer.Option(False, "--version", is_eager=True, expose_value=False,
                                          callback=_print_version, help="Print the ciliumctl version and exit.")):
        pass

    app.callback()(root)
    return app


def __getattr__(name: str):
    if name == "app":
        app = globals()["app"] = _build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
def run() -> None:
    """Console-script entry: user-facing errors become one line on stderr and an exit code."""
    from ciliumctl.base.errors import CiliumctlError

    try:
        if sys.argv[1:3] == ["policy", "validate"]:
            from ciliumctl.cli.policy_validate import fast_main

            code = fast_main(sys.argv[1:])
            if code is not None:
                sys.exit(code)
        sys.exit(_run_app())
    except CiliumctlError as err:
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `ciliumctl observe | head`
        sys.stderr.close()
        sys.exit(0)
    except Exception as err:  # a bug or an unforeseen environment problem: one line, the trace on request
        import os

        if os.environ.get("CILIUMCTL_DEBUG"):
            raise
        from ciliumctl.base.errors import shorten

        if isinstance(err, PermissionError):  # pins, sockets and node state are root's: no bug, never "remove it"
            what = f"{err.filename}: " if err.filename else ""
            sys.stderr.write(f"Error: {shorten(what)}{err.strerror or 'permission denied'}; this needs root; run "
                             "it with sudo\n")
            sys.exit(2)
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        sys.stderr.write(f"Error: {type(err).__name__}: {shorten(f'{err}{where}')}; run again with "
                         "CILIUMCTL_DEBUG=1 for the full trace and report it\n")
        sys.exit(2)


def _run_app() -> int:
    """The command tree; its usage errors are one line already (Root.main)."""
    code = __getattr__("app")(prog_name="ciliumctl", standalone_mode=False)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    run()

