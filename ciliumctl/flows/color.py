"""observe --color: which parts of a flow hubble colours, and when.

As hubble 1.19 (cilium/cilium hubble/pkg/printer/color.go, used by printer.go): hosts cyan (with the port yellow
inside them), identities magenta, verdicts green (forwarded, redirected), red (dropped, error) or yellow (audit,
traced, translated); compact and dict output only, never table. The sequences are github.com/fatih/color's:
ESC[<n>m ... ESC[0m."""

from __future__ import annotations

import os

from ciliumctl.flows.pb.flow import flow_pb2 as pb

WHEN = ("auto", "always", "never")
OUTPUTS = ("compact", "dict")   # printer.go: New() disables the colorer for the tab writer

_RESET = "\x1b[0m"
# fatih/color's FgRed.. FgCyan
_RED, _GREEN, _YELLOW, _MAGENTA, _CYAN = 31, 32, 33, 35, 36
_VERDICTS = {pb.FORWARDED: _GREEN, pb.REDIRECTED: _GREEN, pb.DROPPED: _RED, pb.ERROR: _RED,
             pb.AUDIT: _YELLOW, pb.TRACED: _YELLOW, pb.TRANSLATED: _YELLOW}


def wanted(when: str, output: str, stream) -> bool:
    """always: colour (even with NO_COLOR, as hubble); auto: on a terminal, unless NO_COLOR is set (to anything,
    as ciliumctl's other commands read it) or TERM=dumb (fatih/color's NoColor); never: no colour."""
    if output not in OUTPUTS or when == "never":
        return False
    if when == "always":
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Colorer:
    """Paints the parts of a flow line; with on=False every method returns its text unchanged."""

    def __init__(self, on: bool):
        self.on = on

    def _paint(self, code: int, text: str) -> str:
        return f"\x1b[{code}m{text}{_RESET}" if self.on else text

    def host(self, text: str) -> str:
        return self._paint(_CYAN, text)

    def port(self, text: str) -> str:
        return self._paint(_YELLOW, text)

    def identity(self, text: str) -> str:
        return self._paint(_MAGENTA, text)

    def verdict(self, verdict: int, text: str) -> str:
        code = _VERDICTS.get(verdict)
        return self._paint(code, text) if code else text


PLAIN = Colorer(False)
