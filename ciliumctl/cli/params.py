"""How a parameter reads in help, man pages and completion scripts: its fixed values, metavar, usage name, and
the command path of a context. Typer's own display shows Python annotations; typer_app's classes and docgen
both use these instead."""

import enum


def choices_of(param) -> list[str]:
    """The values an option accepts when they are a fixed set: an Enum annotation or a `{a,b,c}` metavar."""
    if param.metavar and param.metavar.startswith("{") and param.metavar.endswith("}"):
        return param.metavar[1:-1].split(",")
    members = param.type_descriptor.choices or ()
    return [m.value if isinstance(m, enum.Enum) else str(m) for m in members]


def metavar_of(param) -> str:
    """What to type after an option: its own metavar, `{a,b}` for a fixed set, N for a number, else its long
    name (--namespace NAMESPACE); empty for a flag."""
    if param.is_flag or param.count:
        return ""
    if param.metavar:
        return param.metavar
    choices = choices_of(param)
    if choices:
        return "{" + ",".join(choices) + "}"
    if param.type_descriptor.annotation in (int, float):
        return "N"
    return max(param.opts, key=len).lstrip("-").upper()


def argument_name(param) -> str:
    """An argument as help shows it: NAME, or PATH... when it takes several."""
    name = param.metavar or (param.name or "arg").upper()
    return name if param.nargs == 1 or name.endswith("...") else f"{name}..."


def argument_usage(param) -> str:
    """An argument in a usage line: NAME when required, [NAME] when not."""
    return argument_name(param) if param.required else f"[{argument_name(param)}]"


def command_path(ctx) -> list[str]:
    """["policy", "get"] for the context of `ciliumctl policy get ...`, whatever the program is called."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return names[::-1]
