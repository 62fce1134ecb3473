"""`ciliumctl policy draw`: the policies you have, as a tree, dot, SVG, Mermaid, one HTML page or JSON; with
--matrix the effective connectivity between the workloads that exist. The model is ciliumctl.connectivity."""

import enum

import typer


class DrawOutput(enum.StrEnum):
    tree = "tree"
    dot = "dot"
    svg = "svg"
    mermaid = "mermaid"
    html = "html"
    json = "json"


def register(app: typer.Typer) -> None:
    @app.command("draw")
    def draw_cmd(
        paths: list[str] = typer.Argument(None, metavar="[PATH]...",
                                          help="Policy files or folders (as for validate; - reads stdin). Pod and "
                                               "Namespace objects among them are the workloads that exist."),
        node: bool = typer.Option(False, "--node", help="This node's stored policies and endpoints."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE",
                                                 help="The cluster's policies and pods (all namespaces)."),
        context: str | None = typer.Option(None, "--context", metavar="NAME", help="Kubeconfig context."),
        output: DrawOutput = typer.Option(DrawOutput.tree, "--output", "-o", help="Output format."),
        matrix: bool = typer.Option(False, "--matrix",
                                    help="Effective connectivity between the workloads that exist (sources x "
                                         "destinations), computed by the trace engine."),
        mode: str | None = typer.Option(None, "--mode", metavar="{default,always,never}",
                                           help="Enforcement mode for --matrix (default: default; with --node: "
                                                "the node's)."),
    ) -> None:
        """Draw policies: who may talk to whom, on which ports, and why.

        The tree shows each workload group (what an endpointSelector selects) with its ingress and egress
        rules, allow and deny, peers, ports, L7 rules, and whether default deny is on and which policy turned
        it on. Invalid policies are drawn with their findings. -o svg and -o html need Graphviz (apt-get
        install graphviz); the HTML page is self-contained.

        Exit 0 when drawn, 1 when some policy is invalid (drawn with its findings), 2 on bad input."""
        import sys

        from ciliumctl.base.errors import UsageError
        from ciliumctl.connectivity import graph as G
        from ciliumctl.connectivity import inputs
        from ciliumctl.policy.resolved import Enforcement

        try:
            enforcement = Enforcement((mode or "default").lower())
        except ValueError:
            raise UsageError(f"--mode {mode!r}: use default, always or never") from None
        if not paths and not node and not kubeconfig:
            raise UsageError("nothing to draw: give policy files or folders, --node, or --kubeconfig FILE")
        if context and not kubeconfig:
            raise UsageError("--context selects a kubeconfig context: pass --kubeconfig too")
        inp = inputs.DrawInput()
        if paths:
            got = inputs.from_paths(paths, stdin=sys.stdin)
            _merge(inp, got)
        if node:
            from ciliumctl.node import view

            v = view.live_view()
            inp.policies += inputs.from_objects([s.data for s in v.stored], "node store")
            inp.endpoints += v.endpoints
            if mode is None:
                enforcement = v.mode
        if kubeconfig:
            _merge(inp, inputs.from_cluster(kubeconfig, context))
        g = G.build(inp)
        m = None
        if matrix:
            m = _matrix(inp, enforcement)
        if output == DrawOutput.tree:
            from ciliumctl.cli.common import console

            con = console()
            render_tree(con, g)
            if m is not None:
                render_matrix(con, m)
        elif output == DrawOutput.json:
            from ciliumctl.cli.common import print_json

            print_json({**g.to_dict(), **({"matrix": m.to_dict()} if m is not None else {})})
        else:
            sys.stdout.write(_text(g, output, m))
        if any(not p.valid for p in g.policies):
            raise typer.Exit(1)


def _merge(into, got) -> None:
    ids = {ep.id for ep in into.endpoints}
    for ep in got.endpoints:
        if ep.id in ids or not ep.id:
            ep.id = max(ids | {0}) + 1
        ids.add(ep.id)
        into.endpoints.append(ep)
    into.policies += got.policies
    into.namespace_labels.update(got.namespace_labels)


def _matrix(inp, enforcement):
    from ciliumctl.base.errors import UsageError
    from ciliumctl.connectivity import matrix

    if not inp.endpoints:
        raise UsageError("--matrix needs the workloads that exist: use --node, --kubeconfig, or add Pod objects "
                         "to the files (kubectl get pods -A -o yaml > pods.yaml)")
    valid = [p.policy for p in inp.policies if p.valid and p.policy is not None]   # the agent refuses the rest
    return matrix.compute(inp.endpoints, valid, enforcement, inp.namespace_labels)


def _text(g, output: DrawOutput, m) -> str:
    from ciliumctl.connectivity import dot, mermaid

    if output == DrawOutput.mermaid:
        return mermaid.render(g)
    if output == DrawOutput.dot:
        return dot.render(g)
    svg = dot.svg_of(g, links=output == DrawOutput.html)
    if output == DrawOutput.svg:
        return svg
    from ciliumctl.connectivity import html

    return html.render(g, svg, m)


# one line of the tree: (text, style, children); styles are rich's, used only on a terminal
Line = tuple[str, str, list]


def tree_lines(g) -> list[Line]:
    """One tree per workload group (its policies, ingress and egress: default deny and who set it, each rule
    with peer, ports, L7 and file:line), then the policies that could not be drawn, with their findings."""
    edges = {e.id: e for e in g.edges}
    roots: list[Line] = []
    for gid in sorted(g.groups, key=lambda i: (g.nodes[i].namespace, g.nodes[i].label)):
        grp, n = g.groups[gid], g.nodes[gid]
        title = n.label.replace("\n", "  ns ")
        if n.members:
            title += f"  ({len(n.members)} endpoint(s): {', '.join(n.members[:8])}" + \
                     (" ..." if len(n.members) > 8 else "") + ")"
        children: list[Line] = [("policies: " + ", ".join(grp.policies), "", [])]
        for word, state in (("ingress", grp.ingress), ("egress", grp.egress)):
            on = f"{state.also_on} of its {len(n.members)} endpoints"
            if state.default_deny:
                head = f"{word}: default deny (set by {', '.join(state.set_by)})"
                if state.also_by:
                    head += f"; on {on} also by {', '.join(state.also_by)}"
            elif state.also_by:
                head = f"{word}: default deny on {on} (set by {', '.join(state.also_by)})"
            else:
                head = f"{word}: no default deny from these policies"
            rules: list[Line] = []
            for eid in state.edges:
                e = edges[eid]
                peer = g.nodes[e.src if word == "ingress" else e.dst].label.replace("\n", " ns ")
                verb = "DENY " if e.deny else "ALLOW"
                way = "from" if word == "ingress" else "to"
                l7 = f"  L7: {'; '.join(e.l7)}" if e.l7 else ""
                bad = " (invalid policy)" if not e.valid else ""
                rules.append((f"{verb} {way} {peer}  {', '.join(e.ports) or 'any port'}{l7}  "
                              f"{e.policy} {e.rule} ({e.where}){bad}", "red" if e.deny else "green", []))
            children.append((head, "red" if state.default_deny or state.also_by else "", rules))
        children += [(f, "red", []) for f in n.findings]
        roots.append((title, "bold", children))
    for n in g.nodes.values():
        if n.kind == "invalid":
            roots.append((n.label.replace("\n", " "), "bold red", [(f, "red", []) for f in n.findings]))
    return roots


def render_tree(con, g) -> None:
    roots = tree_lines(g)
    invalid = sum(1 for p in g.policies if not p.valid)
    summary = (f"{len(g.policies)} policies, {len(g.groups)} workload groups, {len(g.edges)} rules"
               + (f"; {invalid} invalid (drawn with their findings)" if invalid else ""))
    if not con.is_terminal:    # a pipe or a file: plain whole lines (grep finds a rule), no rich layout to pay for
        out: list[str] = []

        def walk(lines: list[Line], prefix: str) -> None:
            for i, (text, _, kids) in enumerate(lines):
                last = i == len(lines) - 1
                out.append(prefix + ("└── " if last else "├── ") + text)
                walk(kids, prefix + ("    " if last else "│   "))

        for text, _, kids in roots:
            out.append(text)
            walk(kids, "")
        con.file.write("\n".join(out + [summary]) + "\n")
        return
    from rich.markup import escape
    from rich.tree import Tree

    def add(tree, lines: list[Line]) -> None:
        for text, style, kids in lines:
            add(tree.add(f"[{style}]{escape(text)}[/{style}]" if style else escape(text)), kids)

    for text, style, kids in roots:
        tree = Tree(f"[{style}]{escape(text)}[/{style}]")
        add(tree, kids)
        con.print(tree, soft_wrap=False)
    con.print(f"[red]{escape(summary)}[/red]" if invalid else escape(summary))


def render_matrix(con, m) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not con.is_terminal:
        con.width = 100_000        # every column whole, however many workloads

    t = Table(title=f"Effective connectivity (mode {m.mode.value}): rows are sources, columns destinations",
              show_lines=False)
    t.add_column("source \\ destination")
    for w in m.workloads:
        t.add_column(escape(w))
    colours = {"all": "green", "ports": "green", "denied": "red", "default-deny": "red", "self": "dim"}
    for s in m.workloads:
        row = [escape(s)]
        for d in m.workloads:
            c = m.cells[(s, d)]
            row.append(f"[{colours[c.state]}]{escape(c.text)}[/{colours[c.state]}]")
        t.add_row(*row)
    con.print(t)
