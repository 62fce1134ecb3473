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
