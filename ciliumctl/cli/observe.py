"""`ciliumctl observe`: flows from the agent's Hubble API, with hubble's flags, filters and output formats.
Flags -> filters (ciliumctl.flows.filters) -> gRPC stream (ciliumctl.flows.client) -> printers."""


import typer

from ciliumctl.cli.typer_app import Command

_S = list[str]


# hubble's --ip-translation is a bool flag (hubble cmd/observe/flows.go): bare it means true, and its value is
# what Go's strconv.ParseBool reads (strconv/atob.go)
_GO_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), "true"),
             **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), "false")}


def _as_hubble_reads(arg: str) -> str:
    name, eq, value = arg.partition("=")
    if name != "--ip-translation" or (eq and value not in _GO_BOOLS):
        return arg
    return f"--ip-translation={_GO_BOOLS[value] if eq else 'true'}"


class _OrderedArgs(Command):
    """Keeps the raw argument list: --not applies to the filter flag that follows it, so order matters."""

    def parse_args(self, ctx, args):
        args = [_as_hubble_reads(arg) for arg in args]
        ctx.meta["observe_args"] = list(args)
        return super().parse_args(ctx, args)


def _opt(*decls, metavar: str, help: str, default=None):
    return typer.Option(default, *decls, metavar=metavar, help=help, show_default=False)


# hubble observe --help's list (hubble/cmd/observe/flows.go, monitor/api TraceObservationPoints)
_TYPE_HELP = ("Filter by event type, TYPE[:SUBTYPE] (names or numbers):\n\n\b\n"
              "capture, drop, l7, policy-verdict, trace-sock\n"
              "trace, with subtypes:\n"
              "  from-endpoint from-host from-network\n"
              "  from-overlay from-proxy from-stack\n"
              "  from-crypto to-endpoint to-host\n"
              "  to-network to-overlay to-proxy to-stack\n"
              "  to-crypto")


def register(app: typer.Typer) -> None:
    @app.command("observe", cls=_OrderedArgs)
    def observe(
        ctx: typer.Context,
        last: int | None = _opt("--last", metavar="N",
                                   help="Get the last N flows (default 20 without --follow/--since)."),
        first: int | None = _opt("--first", metavar="N", help="Get the first N flows in the buffer."),
        all_: bool = typer.Option(False, "--all", help="Get all flows in the buffer."),
        follow: bool = typer.Option(False, "-f", "--follow", help="Follow new flows as they arrive."),
        since: str | None = _opt("--since", metavar="DURATION|RFC3339",
                                    help="Flows since this time: RFC 3339 or a duration ago (5m)."),
        until: str | None = _opt("--until", metavar="DURATION|RFC3339",
                                    help="Flows until this time: RFC 3339 or a duration ago."),
        pod: _S = _opt("--pod", metavar="[NS/]POD", help="Flows from or to a pod (name prefix)."),
        from_pod: _S = _opt("--from-pod", metavar="[NS/]POD", help="Flows from a pod (name prefix)."),
        to_pod: _S = _opt("--to-pod", metavar="[NS/]POD", help="Flows to a pod (name prefix)."),
        namespace: _S = _opt("-n", "--namespace", metavar="NAMESPACE", help="Flows from or to a namespace."),
        ip: _S = _opt("--ip", metavar="IP|CIDR", help="Flows from or to an address."),
        from_ip: _S = _opt("--from-ip", metavar="IP|CIDR", help="Flows from an address."),
        to_ip: _S = _opt("--to-ip", metavar="IP|CIDR", help="Flows to an address."),
        label: _S = _opt("-l", "--label", metavar="SELECTOR",
                         help="Flows from or to endpoints matching a label selector."),
        from_label: _S = _opt("--from-label", metavar="SELECTOR",
                              help="Flows from endpoints matching a label selector."),
        to_label: _S = _opt("--to-label", metavar="SELECTOR", help="Flows to endpoints matching a label selector."),
        port: _S = _opt("--port", metavar="PORT", help="Flows from or to an L4 port."),
        from_port: _S = _opt("--from-port", metavar="PORT", help="Flows from an L4 port."),
        to_port: _S = _opt("--to-port", metavar="PORT", help="Flows to an L4 port."),
        from_namespace: _S = _opt("--from-namespace", metavar="NAMESPACE", help="Flows from a namespace."),
        to_namespace: _S = _opt("--to-namespace", metavar="NAMESPACE", help="Flows to a namespace."),
        identity: _S = _opt("--identity", metavar="ID", help="Flows from or to a security identity."),
        from_identity: _S = _opt("--from-identity", metavar="ID", help="Flows from a security identity."),
        to_identity: _S = _opt("--to-identity", metavar="ID", help="Flows to a security identity."),
        node_name: _S = _opt("--node-name", metavar="GLOB", help="Flows of a node, e.g. node-*."),
        uuid: _S = _opt("--uuid", metavar="UUID", help="The flow with this UUID."),
        tcp_flags: _S = _opt("--tcp-flags", metavar="FLAGS", help="TCP flows with these flags set: SYN or SYN,ACK."),
        protocol: _S = _opt("--protocol", metavar="PROTO", help="Flows of an L4 protocol: tcp, udp, icmp, sctp."),
        verdict: _S = _opt("--verdict", metavar="VERDICT", help="Flows with a verdict: FORWARDED, DROPPED, AUDIT..."),
        drop_reason_desc: _S = _opt("--drop-reason-desc", metavar="REASON",
                                    help="Drops with a reason, e.g. POLICY_DENIED."),
        traffic_direction: _S = _opt("--traffic-direction", metavar="{ingress,egress}",
                                     help="Flows in this direction."),
        type_: _S = _opt("-t", "--type", metavar="TYPE[:SUBTYPE]", help=_TYPE_HELP),
        all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="Flows in any namespace."),
        from_all_namespaces: bool = typer.Option(False, "--from-all-namespaces",
                                                 help="Flows from any namespace."),
        to_all_namespaces: bool = typer.Option(False, "--to-all-namespaces", help="Flows to any namespace."),
        service: _S = _opt("--service", metavar="[NS/]SVC",
                           help="Flows from or to a service's ClusterIP (name prefix)."),
        from_service: _S = _opt("--from-service", metavar="[NS/]SVC", help="Flows from a service (name prefix)."),
        to_service: _S = _opt("--to-service", metavar="[NS/]SVC", help="Flows to a service (name prefix)."),
        workload: _S = _opt("--workload", metavar="[KIND/]NAME", help="Flows from or to an endpoint's workload."),
        from_workload: _S = _opt("--from-workload", metavar="[KIND/]NAME", help="Flows from a workload."),
        to_workload: _S = _opt("--to-workload", metavar="[KIND/]NAME", help="Flows to a workload."),
        fqdn: _S = _opt("--fqdn", metavar="FQDN", help="Flows from or to a domain name (e.g. *.cilium.io)."),
        from_fqdn: _S = _opt("--from-fqdn", metavar="FQDN", help="Flows from a domain name."),
        to_fqdn: _S = _opt("--to-fqdn", metavar="FQDN", help="Flows to a domain name."),
        http_status: _S = _opt("--http-status", metavar="CODE", help="L7 flows with an HTTP status: 404, 5+."),
        http_method: _S = _opt("--http-method", metavar="METHOD", help="L7 flows with an HTTP method: get, post."),
        http_path: _S = _opt("--http-path", metavar="REGEXP", help="L7 flows whose HTTP path matches."),
        http_url: _S = _opt("--http-url", metavar="REGEXP", help="L7 flows whose HTTP URL matches."),
        http_header: _S = _opt("--http-header", metavar="NAME:VALUE", help="L7 flows with this HTTP header."),
        ip_version: _S = _opt("--ip-version", metavar="{v4,v6,none}", help="Flows of an IP version."),
        ipv4: bool = typer.Option(False, "-4", "--ipv4", help="Only IPv4 flows."),
        ipv6: bool = typer.Option(False, "-6", "--ipv6", help="Only IPv6 flows."),
        interface: _S = _opt("--interface", metavar="NAME", help="Flows seen at a network interface."),
        node_label: _S = _opt("--node-label", metavar="SELECTOR",
                              help="Flows of nodes matching a label selector."),
        cel_expression: _S = _opt("--cel-expression", metavar="EXPR",
                                  help="Not supported: ciliumctl has no CEL evaluator (refused)."),
        allowlist: _S = _opt("--allowlist", metavar="JSON", help="A FlowFilter as JSON to allow (repeatable)."),
        denylist: _S = _opt("--denylist", metavar="JSON", help="A FlowFilter as JSON to deny (repeatable)."),
        print_raw_filters: bool = typer.Option(False, "--print-raw-filters",
                                               help="Print the allowlist/denylist filters and exit."),
        color: str = typer.Option("auto", "--color", metavar="{auto,always,never}",
                                  help="Colour compact and dict output as hubble: auto (on a terminal, "
                                  "without NO_COLOR)."),
        not_: bool = typer.Option(False, "--not", help="Turn the next filter flag into an exclusion."),
        output: str = typer.Option("compact", "-o", "--output", metavar="{compact,dict,json,jsonpb,table,yaml}",
                                   help="Output format (json is jsonpb; yaml is the same data as YAML)."),
        time_format: str = typer.Option("StampMilli", "--time-format", metavar="LAYOUT",
                                        help="Times in compact, dict and table output: StampMilli, YearMonthDay, "
                                             "YearMonthDayHour, YearMonthDayHourMinute, RFC3339, RFC3339Milli, "
                                             "RFC3339Micro, RFC3339Nano or RFC1123Z."),
        numeric: bool = typer.Option(False, "--numeric", help="Addresses instead of pod and domain names."),
        ip_translation: str = typer.Option("true", "--ip-translation", metavar="true|false", is_flag=False,
                                           flag_value="true",
                                           help="Show pod and domain names instead of addresses (--ip-translation"
                                                "=false: addresses)."),
        input_file: str | None = _opt("--input-file", metavar="FILE|-",
                                      help="Flows from `hubble observe -o jsonpb` output instead of a server."),
        field_mask: str | None = _opt("--field-mask", metavar="FIELDS",
                                      help="Keep only these flow fields (comma-separated, e.g. time,verdict,IP); "
                                           "json, jsonpb and yaml output only."),
        print_policy_names: bool = typer.Option(False, "--print-policy-names",
                                                help="Show the policies that allowed or denied each flow."),
        print_node_name: bool = typer.Option(False, "--print-node-name", help="Show the node of each flow."),
        aggregate_by: str | None = _opt("--aggregate-by", metavar="FIELDS",
                                           help="Count flows per FIELDS (comma-separated: source, destination, "
                                                "port, verdict, protocol, type, direction, drop-reason, policy)."),
        server: str | None = _opt("--server", metavar="ADDRESS",
                                     help="Hubble API address (default: the agent's unix socket)."),
        kubeconfig: str | None = _opt("--kubeconfig", metavar="FILE",
                                      help="Flows of the cluster's agents, read through the API server."),
        context: str | None = _opt("--context", metavar="NAME",
                                   help="The cluster's agents, by this kubeconfig context (kubeconfig: "
                                        "--kubeconfig, $KUBECONFIG or ~/.kube/config)."),
        node: str | None = _opt("--node", metavar="NAME",
                                help="Only this node's agent of the cluster (kubeconfig as for --context)."),
    ) -> None:
        """Observe flows: the datapath's verdicts, with pods and policies.

        Every verdict of the datapath, enriched with endpoint and policy names, read from the agent's Hubble
        API; the flags, filters and formats are hubble observe's."""
        import os
        import sys

        from ciliumctl.base.errors import UsageError
        from ciliumctl.flows import client, field_masks, filters, printers, raw_filters, timefmt, yaml_output
        from ciliumctl.flows import color as flow_colour
        from ciliumctl.flows import input_file as input_files

        for flag, n in (("--last", last), ("--first", first)):
            if n is not None and n < 0:
                raise UsageError(f"{flag} {n}: a number of flows, 0 or more")
        if color.lower() not in flow_colour.WHEN:   # hubble's colorer lower-cases it
            raise UsageError(f"--color {color!r}: one of auto, always, never")
        # the cluster's agents are a source of their own; --server with --input-file is hubble's (the file wins)
        cluster = [flag for flag, value in (("--kubeconfig", kubeconfig), ("--context", context), ("--node", node))
                   if value is not None]
        other = [flag for flag, value in (("--server", server), ("--input-file", input_file)) if value is not None]
        if cluster and other:
            raise UsageError(f"{cluster[0]} and {other[0]} exclude each other (flows from the cluster's agents, or "
                             "from one server or file): drop one")
        white, black = filters.filters_from_args(ctx.meta.get("observe_args", []))
        white += raw_filters.parse("--allowlist", allowlist or [])
        black += raw_filters.parse("--denylist", denylist or [])
        if print_raw_filters:
            sys.stdout.write(raw_filters.render(white, black))
            return
        outputs = (*printers.OUTPUTS, "yaml")
        if output not in outputs:
            raise UsageError(f"--output {output!r}: one of {', '.join(outputs)}")
        if ip_translation.lower() not in ("true", "false"):
            raise UsageError(f"--ip-translation {ip_translation!r}: true or false")
        mask = field_masks.parse(field_mask, output) if field_mask else None
        filters.FlowMatcher(white, black)   # a filter the server would refuse is refused here, as one line
        query = client.Query(last=last, first=first, all=all_, follow=follow,
                             since=filters.parse_time(since) if since else None,
                             until=filters.parse_time(until) if until else None,
                             whitelist=white, blacklist=black)
        req = query.request()
        srv = server or os.environ.get("HUBBLE_SERVER") or client.default_server()
        sink: printers.Aggregator | printers.Printer | yaml_output.YamlPrinter
        timefmt.formatter(time_format)
        if aggregate_by:
            sink = printers.Aggregator([f.strip() for f in aggregate_by.split(",") if f.strip()])
        elif output == "yaml":
            sink = yaml_output.YamlPrinter()
        else:
            sink = printers.Printer(output, colour=flow_colour.wanted(color.lower(), output, sys.stdout),
                                    node_name=print_node_name,
                                    print_policy_names=print_policy_names, follow=follow,
                                    time_format=None if time_format == "StampMilli" else time_format,
                                    ip_translation=not numeric and ip_translation.lower() == "true")
        if input_file:
            if follow:
                raise UsageError("--input-file cannot be combined with --follow")
            if not (last or first):   # a file is read whole unless --first/--last say otherwise
                req.number = 0
            batches = input_files.flow_batches(input_file, req)
        elif kubeconfig or context or node:   # the agents' pods, through the API server
            from ciliumctl.node import cluster_observe

            batches = cluster_observe.flow_batches(req, kubeconfig, context, node)
        else:
            # -o json with nothing to do on the flows: the agent's JSON lines go out as they come
            lines = output in ("json", "jsonpb") and not aggregate_by and mask is None
            batches = client.stream_batches(srv, req, json_lines=lines)
        if mask is not None:
            batches = field_masks.masked(batches, mask)
        try:
            for batch in batches:
                sink.write_many(batch)
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            sys.stderr.close()
            return
        if isinstance(sink, printers.Aggregator):
            sink.print(output)
        else:
            sink.close()
