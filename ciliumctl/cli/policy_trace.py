"""`ciliumctl policy trace`: would this connection be allowed, and which rule decides it."""


import typer

from ciliumctl.cli.common import Output


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def trace_cmd(
        src_labels: list[str] = typer.Option([], "--src-labels", "-s", metavar="LABELS",
                                             help="Source labels k=v[,k=v] (repeatable); reserved:host etc. "
                                                  "for a reserved identity."),
        src_ip: str | None = typer.Option(None, "--src-ip", metavar="IP", help="Source IP address."),
        src_namespace: str | None = typer.Option(None, "--src-namespace", metavar="NAMESPACE",
                                                    help="Source namespace (default: default)."),
        src_entity: str | None = typer.Option(None, "--src-entity", metavar="ENTITY",
                                              help="Source entity: host, remote-node, world (or another "
                                                   "reserved identity)."),
        dst_entity: str | None = typer.Option(None, "--dst-entity", metavar="ENTITY",
                                              help="Destination entity: host, remote-node, world, ..."),
        dst_labels: list[str] = typer.Option([], "--dst-labels", "-d", metavar="LABELS",
                                             help="Destination labels k=v[,k=v]."),
        dst_ip: str | None = typer.Option(None, "--dst-ip", metavar="IP", help="Destination IP address."),
        dst_namespace: str | None = typer.Option(None, "--dst-namespace", metavar="NAMESPACE",
                                                    help="Destination namespace (default: default)."),
        dport: str | None = typer.Option(None, "--dport", metavar="PORT/PROTO",
                                            help="Destination port/protocol: 80/tcp, 53/udp, 8/icmp "
                                                 "(ICMP type). Omitted: all traffic (L3 only)."),
        files: list[str] = typer.Option([], "--filename", "-f", "--file", metavar="FILE|DIR",
                                         help="Policy file or directory (repeatable), as for policy apply."),
        mode: str | None = typer.Option(None, "--mode", metavar="{default,always,never}",
                                           help="Enforcement mode (default: default; with --live: the node's)."),
        node_labels: list[str] = typer.Option([], "--node-labels", metavar="LABELS",
                                              help="Labels of the node k=v[,k=v]: the host becomes an endpoint "
                                                   "that nodeSelector rules select."),
        http_method: str | None = typer.Option(None, "--http-method", metavar="METHOD",
                                               help="L7: the request's HTTP method (with --http-path): the verdict "
                                                    "of the HTTP proxy where the port has rules.http."),
        http_path: str | None = typer.Option(None, "--http-path", metavar="PATH",
                                             help="L7: the request's path (and query), e.g. /v1/request-landing."),
        live: bool = typer.Option(False, "--live", help="Use this node's endpoints, policies and mode."),
        output: Output = typer.Option(Output.table, "--output", "-o", help="Output format."),
    ) -> None:
        """Trace a connection through policy: allowed or denied, and why.

        Egress of the source, ingress of the destination, and the final verdict.
        Exit 0 when allowed, 1 when denied, 2 on bad input (an invalid policy included)."""
        from ciliumctl.base.errors import UsageError
        from ciliumctl.cli.common import console, print_data
        from ciliumctl.policy import trace as tr
        from ciliumctl.policy.labels import parse_label_list
        from ciliumctl.policy.ports import parse_port_spec
        from ciliumctl.policy.resolved import Enforcement

        try:
            proto, port = parse_port_spec(dport) if dport else (0, 0)
        except ValueError as err:
            raise UsageError(f"--dport {dport!r}: {err} (e.g. 80/tcp, 53/udp, 8/icmp)") from None
        try:
            enforcement = Enforcement((mode or "default").lower())
        except ValueError:
            raise UsageError(f"--mode {mode!r}: use default, always or never") from None
        nodes = ({lab.key: lab.value for lab in parse_label_list(node_labels)} if node_labels else None)
        src = tr.Peer(parse_label_list(src_labels + _entity("--src-entity", src_entity, src_labels)), src_namespace,
                      src_ip)
        dst = tr.Peer(parse_label_list(dst_labels + _entity("--dst-entity", dst_entity, dst_labels)), dst_namespace,
                      dst_ip)

        policies, endpoints, allocator, audit, host = [], None, None, False, None
        if live:
            from ciliumctl.node import view as node_view

            inputs = node_view.trace_inputs()
            policies, endpoints, allocator, audit = (inputs.policies, inputs.endpoints, inputs.allocator,
                                                     inputs.audit)
            host = inputs.host          # the node's host firewall: its labels make the host an endpoint
            if nodes is None and inputs.node_labels is not None:
                nodes = inputs.node_labels
            if mode is None and inputs.mode is not None:
                enforcement = inputs.mode
        if files:
            policies = policies + tr.load_policy_files(files)
        if not files and not live:
            raise UsageError("no policies given: use -f FILE|DIR (repeatable) or --live for this node's policies")
        http = None
        if http_method is not None or http_path is not None:
            if proto != 6:
                raise UsageError("--http-method/--http-path trace an HTTP request: give a TCP --dport (e.g. 80/tcp)")
            http = tr.HTTPRequest((http_method or "GET").upper(), http_path or "/")
            if not http.path.startswith("/"):
                raise UsageError(f"--http-path {http_path!r}: a path starts with / (e.g. /v1/request-landing)")
        result = tr.trace(src, dst, proto, port, policies, enforcement, endpoints=endpoints, allocator=allocator,
                          node_labels=nodes, audit=audit, services=_services(live), host=host, http=http)
        if output != Output.table:
            print_data(result.to_dict(), output)
        else:
            _render(console(), result)
        if not result.allowed:
            raise typer.Exit(1)


def _entity(flag: str, entity: str | None, labels: list[str]) -> list[str]:
    """--src-entity/--dst-entity NAME as the reserved label it stands for (Cilium's entities, reserved ids of
    pkg/identity/numericidentity.go)."""
    from ciliumctl.base.errors import UsageError
    from ciliumctl.identity.allocator import RESERVED

    if entity is None:
        return []
    if labels:
        raise UsageError(f"{flag} {entity} and labels name the same side twice; give one of them")
    if entity not in RESERVED:
        raise UsageError(f"{flag} {entity!r} is not an entity; use one of {', '.join(sorted(RESERVED))}")
    return [f"reserved:{entity}"]


def _services(live: bool):
    """The node's services, so that a --dst-ip that is a frontend is traced to its backends as the datapath
    translates it: with --live always (an unreadable store is an error then), else when the store is readable."""
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.node.services.local_redirect import in_force  # local redirects change the table in force
    from ciliumctl.services import store

    if live:
        return in_force(store.load()).table
    try:
        return in_force(store.load()).table
    except (EnvironmentProblem, OSError):
        return None


def _render(con, result) -> None:
    from rich.markup import escape

    from ciliumctl.policy.ports import PROTOCOL_NAMES

    def verdict(side) -> str:
        if not side.applies:
            return "[dim]N/A    [/dim]"
        return "[green]ALLOWED[/green]" if side.allowed else "[red]DENIED [/red]"

    proto = PROTOCOL_NAMES.get(result.protocol, str(result.protocol))
    what = "all traffic (L3)" if result.protocol == 0 else (
        f"{proto} type {result.port}" if result.protocol in (1, 58) else f"{result.port}/{proto}")
    con.print(f"Source:      {escape(result.source.description)}, identity {result.source.identity}")
    con.print(f"Destination: {escape(result.destination.description)}, identity {result.destination.identity}")
    con.print(f"Traffic:     {what}, enforcement mode {result.mode.value}")
    if result.http is not None:
        con.print(f"Request:     HTTP {escape(result.http.method)} {escape(result.http.path)}")
    if result.service is not None:
        svc = result.service
        to = f"-> backend {svc['backend']}" if svc.get("backend") else "-> no backend"
        con.print(f"Service:     {svc['frontend']} (id {svc['service']}) {to}; backends for new connections: "
                  f"{', '.join(svc['backends']) or 'none'}")
    con.print("")
    for label, side in (("Egress  (source):     ", result.egress), ("Ingress (destination):", result.ingress)):
        con.print(f"{label} {verdict(side)}  {escape(side.reason)}")
        for text in side.unenforced:     # the datapath decides otherwise here (policy.enforcement_gaps)
            con.print(f"{' ' * len(label)}          [yellow]{escape(text)}[/yellow]")
    con.print("")
    final = "[green]ALLOWED[/green]" if result.allowed else "[red]DENIED[/red]"
    con.print(f"Final verdict: {final}")
    for note in result.notes:
        con.print(f"[yellow]note:[/yellow] {escape(note)}")
