"""The policy graph as Graphviz dot, and as SVG through Debian's `dot` (package graphviz).

Node and edge ids in the output are generated (n0, e0): user-controlled names only ever appear inside quoted,
escaped strings. Graphviz itself XML-escapes labels in the SVG it writes."""

from __future__ import annotations

import shutil
import subprocess

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.connectivity import graph as G

_SHAPES = {G.GROUP: "box", G.ENDPOINTS: "box", G.ENTITY: "hexagon", G.CIDR: "note", G.FQDN: "component",
           G.SERVICE: "cds", G.NODES: "box3d", G.ANY: "doublecircle", G.NOTHING: "plaintext",
           G.INVALID: "octagon"}
MAX_LABEL_LINES = 4
# Above this many edges dot's layout gets slow (edge labels become virtual nodes, namespace clusters with many
# edges between them take minutes and can fail with "lost edge"): a compact graph then, ports in the tooltips.
COMPACT_EDGES = 400


def quote(text: str) -> str:
    """A dot double-quoted string: backslashes and quotes escaped (so \\N, \\G, \\l in a name stay literal),
    newlines become dot's centred line break."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "")
    return '"' + text.replace("\n", "\\n") + '"'


def edge_label(e: G.Edge) -> str:
    lines = list(e.ports or ["any port"]) + e.l7
    if len(lines) > MAX_LABEL_LINES:
        lines = lines[:MAX_LABEL_LINES - 1] + [f"+{len(lines) - MAX_LABEL_LINES + 1} more"]
    return ("deny " if e.deny else "") + "\n".join(lines)


def node_ids(g: G.Graph) -> dict[str, str]:
    return {nid: f"n{i}" for i, nid in enumerate(g.nodes)}


def render(g: G.Graph, links: bool = False, compact: bool | None = None) -> str:
    """dot text. links: each edge links to #edge-<id> (the html page's table of rules). compact (default: more
    than COMPACT_EDGES edges): no namespace boxes, straight edges, edge labels only in tooltips."""
    ids = node_ids(g)
    if compact is None:
        compact = len(g.edges) > COMPACT_EDGES
    out = ["digraph policies {", '  graph [rankdir=LR, fontname="Helvetica", fontsize=10'
           + (", splines=line" if compact else "") + "];",
           '  node [fontname="Helvetica", fontsize=10, style=filled, fillcolor="#f4f6f8"];',
           '  edge [fontname="Helvetica", fontsize=9];']
    by_ns: dict[str, list[G.Node]] = {}
    for n in g.nodes.values():
        by_ns.setdefault(n.namespace, []).append(n)
    for k, ns in enumerate(sorted(by_ns)):
        indent = "  "
        boxed = bool(ns) and not compact
        if boxed:
            out.append(f"  subgraph cluster_{k} {{")
            out.append(f"    label={quote('namespace ' + ns)}; style=rounded; color=\"#9aa5b1\";")
            indent = "    "
        for n in by_ns[ns]:
            attrs = [f"id={quote(ids[n.id])}", f"shape={_SHAPES.get(n.kind, 'box')}"]
            label = n.label
            if n.members:
                shown = n.members[:3] + ([f"+{len(n.members) - 3} more"] if len(n.members) > 3 else [])
                label += "\n[" + ", ".join(shown) + "]"
            if n.findings:
                label += f"\n{len(n.findings)} finding(s)"
                attrs += ['color="#c62828"', 'fillcolor="#fdecea"', "penwidth=2"]
                attrs.append(f"tooltip={quote(chr(10).join(n.findings[:10]))}")
            attrs.append(f"label={quote(label)}")
            out.append(f"{indent}{ids[n.id]} [{', '.join(attrs)}];")
        if boxed:
            out.append("  }")
    for e in g.edges:
        colour = "#c62828" if e.deny else "#2e7d32"
        tip = f"{e.policy} {e.rule} ({e.where})"
        attrs = [f"id={quote(e.id)}", f'color="{colour}"', f'fontcolor="{colour}"']
        if compact:
            attrs.append(f"tooltip={quote(edge_label(e).replace(chr(10), ', ') + ': ' + tip)}")
        else:
            attrs += [f"label={quote(edge_label(e))}", f"tooltip={quote(tip)}"]
        if e.deny:
            attrs.append("arrowhead=tee")
        if not e.valid:
            attrs.append("style=dashed")
        if links:
            attrs.append(f"href={quote('#edge-' + e.id)}")
        out.append(f"  {ids[e.src]} -> {ids[e.dst]} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def svg(dot_text: str, timeout: float = 120) -> str:
    """SVG from Graphviz's dot; a missing dot is one line naming the package."""
    exe = shutil.which("dot")
    if exe is None:
        raise EnvironmentProblem("Graphviz's dot is not installed: apt-get install graphviz (or use -o dot, "
                                 "-o mermaid)")
    try:
        res = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"Graphviz's dot did not finish in {timeout:.0f} s; draw fewer policies, or use "
                                 "-o dot and lay it out yourself") from None
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["no message"])[0]
        raise EnvironmentProblem(f"Graphviz's dot failed: {first}")
    return res.stdout


def svg_of(g: G.Graph, links: bool = False) -> str:
    """The graph's SVG; when dot fails on the namespace boxes (its "lost edge" on some cluster layouts), the
    compact graph, which has none."""
    text = render(g, links)
    try:
        return svg(text)
    except EnvironmentProblem:
        if "subgraph cluster_" not in text:
            raise
        return svg(render(g, links, compact=True))
