"""Click's usage errors as one line, in the style of ciliumctl's own errors (`--flag 'value': what is wrong`),
ending with where help is: `Error: --output 'x': one of table, json, yaml; see 'ciliumctl status --help'`."""

from __future__ import annotations

import re

_MISSING = object()


def _option_name(param) -> str:
    if param.param_type_name == "argument":
        from ciliumctl.cli.params import argument_name

        return argument_name(param)
    return max(param.opts, key=len)


def _bad_value(err) -> object:
    """The value typer refused: its pydantic error carries it (typer's own message does not)."""
    cause = err.__cause__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            found = errors()
        except Exception:
            return _MISSING
        if found and "input" in found[0]:
            return found[0]["input"]
    return _MISSING


def _why(err, param) -> str:
    from ciliumctl.cli.params import choices_of

    choices = choices_of(param)
    if choices:
        return f"one of {', '.join(choices)}"
    annotation = getattr(param.type_descriptor, "annotation", None)
    if annotation is int:
        return "not a whole number"
    if annotation is float:
        return "not a number"
    return _clean(err.message)


def _clean(message: str) -> str:
    """Click's sentence as a clause: no "Value error," prefix or final stop, a lower-case start, suggestions in
    parentheses."""
    message = re.sub(r"^Value error, ", "", message.strip()).rstrip(".")
    message = re.sub(r"\.? ?Did you mean (.*)\?$", r" (did you mean \1?)", message)
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return message


def describe(err) -> str:
    """What is wrong, without the help hint."""
    from typer._click import exceptions as ex

    param = getattr(err, "param", None)
    if isinstance(err, ex.MissingParameter) and param is not None:
        what = "argument" if param.param_type_name == "argument" else "option"
        return f"missing {what} {_option_name(param) if what == 'argument' else '/'.join(param.opts)}"
    if isinstance(err, ex.BadParameter) and param is not None:
        value = _bad_value(err)
        name = _option_name(param)
        if value is _MISSING:
            return f"{name}: {_clean(err.message)}"
        return f"{name} {str(value)!r}: {_why(err, param)}"
    if isinstance(err, ex.NoSuchOption):
        close = f" (did you mean {' or '.join(sorted(err.possibilities))}?)" if err.possibilities else ""
        return f"no such option {err.option_name}{close}"
    if isinstance(err, ex.BadOptionUsage):
        found = re.match(r"Option '(.+)' requires an argument", err.message)
        if found:
            return f"option {found.group(1)} needs a value"
    found = re.match(r"Got unexpected extra argument(?:s|\(s\))? \((.*)\)$", err.message)
    if found:
        return f"unexpected argument {found.group(1)!r}"
    return _clean(err.format_message())


def one_line(err) -> str:
    from ciliumctl.base.errors import shorten

    text = " ".join(describe(err).split())   # one line, whatever the message held
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        text += f"; see '{ctx.command_path} --help'"
    return shorten(text)
