"""Errors the user can act on. The CLI prints them as one line and exits with their code; never a traceback."""


class CiliumctlError(Exception):
    """A problem with input or environment: message says what, where and what to do."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(shorten(message))
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CiliumctlError):
    """Bad flags, bad files, unreadable YAML (exit 2)."""


class EnvironmentProblem(CiliumctlError):
    """Not root, no BPF, missing headers, agent not running (exit 2)."""


class Finding(CiliumctlError):
    """A finding such as an invalid policy or a denied trace (exit 1)."""

    exit_code = 1


class NotFound(Finding):
    """A named policy or endpoint that does not exist (exit 1, as kubectl's NotFound); nothing was changed."""


class NotImplementedYet(CiliumctlError):
    """A command that exists in the command tree but has no implementation yet (exit 2)."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not implemented yet in this version of ciliumctl")


LONG_WORD = 200       # characters of one word (a label value, a name, a path) that a message echoes whole
LONG_MESSAGE = 2000


def shorten(message: str) -> str:
    """What a message echoes of the user's input stays readable: a very long word keeps its ends (so quotes and
    what follows stay), a very long message its head and tail. Every CiliumctlError goes through it."""
    import re

    def elide(m: "re.Match[str]") -> str:
        word = m.group(0)
        return f"{word[:120]}…[{len(word) - 160} characters]…{word[-40:]}"

    message = re.sub(rf"\S{{{LONG_WORD + 1},}}", elide, str(message))
    if len(message) > LONG_MESSAGE:
        message = f"{message[:1400]}…[{len(message) - 1800} characters]…{message[-400:]}"
    return message
