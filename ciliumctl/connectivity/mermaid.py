"""The policy graph as a Mermaid flowchart (GitHub and most wikis render it). Every user-controlled string goes
through `text()`: anything but letters, digits, space and plain punctuation becomes a Mermaid entity code
(#35; style), so no label can close its quotes, start markup or inject a directive."""

from __future__ import annotations

from ciliumctl.connectivity import graph as G
from ciliumctl.connectivity.dot import edge_label, node_ids

_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/=-_*+()")
_SHAPES = {G.GROUP: ('["', '"]'), G.ENDPOINTS: ('["', '"]'), G.ENTITY: ('{{"', '"}}'), G.CIDR: ('[/"', '"/]'),
           G.FQDN: ('(["', '"])'), G.SERVICE: ('[["', '"]]'), G.NODES: ('[("', '")]'), G.ANY: ('(("', '"))'),
           G.NOTHING: ('["', '"]'), G.INVALID: ('{"', '"}')}


def text(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\n":
            out.append("<br/>")
        elif ch in _SAFE:
            out.append(ch)
        else:
            out.append(f"#{ord(ch)};")
    return "".join(out)


def render(g: G.Graph) -> str:
    ids = node_ids(g)
    out = ["flowchart LR"]
    by_ns: dict[str, list[G.Node]] = {}
    for n in g.nodes.values():
        by_ns.setdefault(n.namespace, []).append(n)
    for k, ns in enumerate(sorted(by_ns)):
        indent = "  "
        if ns:
            out.append(f'  subgraph ns{k}["namespace {text(ns)}"]')
            indent = "    "
        for n in by_ns[ns]:
            left, right = _SHAPES.get(n.kind, ('["', '"]'))
            label = n.label + (f"\n{len(n.findings)} finding(s)" if n.findings else "")
            out.append(f"{indent}{ids[n.id]}{left}{text(label)}{right}")
        if ns:
            out.append("  end")
    styles = []
    for i, e in enumerate(g.edges):
        arrow = "-.->" if not e.valid else "-->"
        out.append(f'  {ids[e.src]} {arrow}|"{text(edge_label(e))}"| {ids[e.dst]}')
        styles.append(f"  linkStyle {i} stroke:{'#c62828' if e.deny else '#2e7d32'}")
    for nid, n in g.nodes.items():
        if n.findings:
            styles.append(f"  style {ids[nid]} stroke:#c62828,stroke-width:2px")
    return "\n".join(out + styles) + "\n"
