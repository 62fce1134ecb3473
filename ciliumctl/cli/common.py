"""Small shared pieces of the command layer: output formats, printing JSON/YAML, consoles."""

import enum
import json
import os
import sys


class Output(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def console(stderr: bool = False):
    """A rich console that colours only on a terminal and never with NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    colour = stream.isatty() and "NO_COLOR" not in os.environ
    return Console(file=stream, no_color=not colour, highlight=False, soft_wrap=True,
                   force_terminal=colour if colour else None, color_system="auto" if colour else None)


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_yaml(value) -> None:
    import yaml

    sys.stdout.write(yaml.safe_dump(value, sort_keys=False))


def print_data(value, output: "Output") -> None:
    if output == Output.yaml:
        print_yaml(value)
    else:
        print_json(value)


def render_table(headers: list[str], rows: list[list[str]], no_headers: bool = False) -> str:
    """A plain kubectl-style table: columns padded, three spaces apart."""
    lines = ([] if no_headers else [headers]) + [[str(c) for c in r] for r in rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def parse_duration(flag: str, text: str) -> float:
    """Seconds of a Go-style duration (90s, 5m, 1h30m, 500ms), as kubectl's and cilium's duration flags take."""
    import re

    from ciliumctl.base.errors import UsageError

    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip() or not sum(float(n) for n, _ in parts):
        raise UsageError(f"{flag} {text!r}: use a duration above zero such as 90s, 5m or 1h30m")
    return sum(float(n) * units[u] for n, u in parts)


def refuse_unused(mode: str, flags: dict) -> None:
    """A flag that has no effect in the chosen mode is refused, never ignored: one line, exit 2. `flags` maps the
    flag as typed to whether it was given."""
    from ciliumctl.base.errors import UsageError

    given = [flag for flag, on in flags.items() if on]
    if given:
        raise UsageError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect {mode}: drop "
                         f"{'it' if len(given) == 1 else 'them'}")
