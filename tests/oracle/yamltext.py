"""Write generated policy trees as YAML text, including what a dict cannot hold: duplicate keys and plain
scalars that YAML 1.1 resolves on its own (`yes`, `0x1F`, `~`).

    text = to_yaml({"a": Raw("yes"), "b": Pairs([("c", 1), ("c", 2)])})
    text = to_yaml(tree, flow=True)    # one line of flow style: {a: yes, ...}
"""

from __future__ import annotations

import json
import re


class Raw(str):
    """A scalar written exactly as given, unquoted: the YAML reader decides what it is."""


class Pairs(list):
    """A mapping written from (key, value) pairs: may repeat a key."""


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def scalar(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _SPECIAL:
        return text
    return json.dumps(text)


def _items(node):
    return list(node) if isinstance(node, Pairs) else list(node.items())


def _is_map(node) -> bool:
    return isinstance(node, (dict, Pairs))


def _flow(node) -> str:
    if _is_map(node):
        return "{" + ", ".join(f"{scalar(k)}: {_flow(v)}" for k, v in _items(node)) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_flow(v) for v in node) + "]"
    return scalar(node)


def _inline(node) -> str | None:
    """The one-line form of a scalar or an empty container; None for a container with content."""
    if _is_map(node) or isinstance(node, list):
        return _flow(node) if not node else None
    return scalar(node)


def _block(node, indent: str, out: list) -> None:
    if _is_map(node):
        for key, value in _items(node):
            one = _inline(value)
            if one is not None:
                out.append(f"{indent}{scalar(key)}: {one}")
            else:
                out.append(f"{indent}{scalar(key)}:")
                _block(value, indent + "  ", out)
        return
    for item in node:
        one = _inline(item)
        if one is not None:
            out.append(f"{indent}- {one}")
            continue
        start = len(out)
        _block(item, indent + "  ", out)
        out[start] = indent + "- " + out[start][len(indent) + 2:]


def to_yaml(node, flow: bool = False) -> str:
    if flow or _inline(node) is not None:
        return _flow(node) + "\n"
    out: list = []
    _block(node, "", out)
    return "\n".join(out) + "\n"
