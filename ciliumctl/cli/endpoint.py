"""`ciliumctl endpoint add|delete|exec|list|get`."""


import enum

import typer

from ciliumctl.cli.common import Output
from ciliumctl.cli.typer_app import App

app = App(help="Manage and inspect endpoints on this node.")


def _row(ep) -> dict:
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings

    enf = node_reconcile.enforcement_of(ep.id)
    audit = node_settings.load_settings().audit
    d = ep.to_dict()
    d["labels_full"] = sorted(node_reconcile.endpoint_labels(ep))
    d["policy_enforcement"] = {
        k: ("unknown" if k not in enf else ("disabled (audit)" if enf[k] and audit else
                                            "enabled" if enf[k] else "disabled"))
        for k in ("ingress", "egress")}
    return d


def _host_row() -> list[dict]:
    """The host endpoint while the host firewall is on (node.hostfw.host), else nothing."""
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node.hostfw import host as hostfw

    row = hostfw.host_row(node_settings.load_settings(), node_reconcile.enforcement_of(0))
    return [row] if row else []


def _rows(endpoints: list, report: bool = True) -> list[dict]:
    """Rows of `endpoints`; every disagreement of the node's endpoint state goes to stderr, and an endpoint whose
    add or delete was killed shows as `interrupted`, not as the state its dead command left."""
    from ciliumctl.node import endpoint_check
    from ciliumctl.node import settings as node_settings

    stuck = {ep.id for ep in endpoint_check.dead_transitional(endpoints)}
    rows = [_row(ep) for ep in endpoints]
    for r in rows:
        if r["id"] in stuck:
            r["state"] = "interrupted"
    if report:
        _warn(endpoint_check.problems(node_settings.pool()))
    return rows


def _wide_table(rows: list[dict], no_headers: bool) -> str:
    """`-o wide`: cilium's `endpoint list` layout (enforcement per direction, every label on a line of its own),
    with the name that get/exec/delete take."""
    head = [["ENDPOINT", "NAME", "POLICY (ingress)", "POLICY (egress)", "IDENTITY", "LABELS (source:key[=value])",
             "IPv4", "STATUS"],
            ["", "", "ENFORCEMENT", "ENFORCEMENT", "", "", "", ""]]
    lines: list[list[str]] = [] if no_headers else list(head)
    for r in rows:
        pe = r["policy_enforcement"]
        labels = r["labels_full"] or [""]
        lines.append([str(r["id"]), _name(r), pe["ingress"].capitalize(), pe["egress"].capitalize(),
                      str(r["identity"]), labels[0], r["ipv4"], r["state"]])
        lines.extend(["", "", "", "", "", lab, "", ""] for lab in labels[1:])
    widths = [max(len(line[i]) for line in lines) for i in range(8)] if lines else [0] * 8
    return "".join("   ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def _table(rows: list[dict], no_headers: bool) -> str:
    """The default table: one line per endpoint that fits 80 columns (labels and more under -o wide)."""
    from ciliumctl.cli.common import render_table

    return render_table(["ID", "NAME", "IDENTITY", "IPv4", "POLICY", "STATUS"],
                        [[str(r["id"]), _name(r), str(r["identity"]), r["ipv4"].split("/")[0],
                          _enforced(r["policy_enforcement"]), r["state"]] for r in rows], no_headers)


def _name(row: dict) -> str:
    """NAMESPACE/NAME as get, exec and delete take it; the id for an endpoint without a name."""
    if row.get("host"):
        return "reserved:host"
    return f"{row['namespace']}/{row['name']}" if row.get("name") else "-"


def _enforced(pe: dict) -> str:
    """The directions policy is enforced in: ingress, egress, both or none; audit when only reported."""
    on = [d for d in ("ingress", "egress") if pe[d] == "enabled"]
    if any(pe[d] == "unknown" for d in ("ingress", "egress")):
        return "unknown"
    if any(pe[d] == "disabled (audit)" for d in ("ingress", "egress")):
        return "audit"
    return "both" if len(on) == 2 else on[0] if on else "none"


class ListOutput(enum.StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Endpoint name (like a pod name)."),
    labels: list[str] = typer.Option([], "--labels", "-l", metavar="LABELS",
                                     help="Labels k=v[,k2=v2] (repeatable)."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of the endpoint."),
    pool: str | None = typer.Option(None, "--pool", metavar="CIDR", help="Address pool (default: node setting, "
                                       "$CILIUMCTL_POOL, 10.200.0.0/16)."),
    ipv4: str | None = typer.Option(None, "--ipv4", metavar="IP", help="A specific address of the pool."),
    output: Output | None = typer.Option(None, "--output", "-o", help="Print the endpoint as json or yaml."),
) -> None:
    """Create a sandbox endpoint, a pod without a container runtime.

    Its network namespace, veth, address and identity, with the datapath and policy in force."""
    from ciliumctl.cli.common import print_data
    from ciliumctl.node import endpoint_ops

    notes: list[str] = []
    try:
        ep = endpoint_ops.add_endpoint(name, endpoint_ops.parse_labels(labels), namespace, pool_cidr=pool,
                                       ipv4=ipv4, notes=notes)
    finally:
        _warn(notes)
    if output in (Output.json, Output.yaml):
        print_data(_row(ep), output)
    else:
        typer.echo(f"endpoint/{ep.name} created (id {ep.id}, identity {ep.identity}, ipv4 {ep.ipv4}, "
                   f"netns {ep.netns})")


@app.command("delete")
def delete(
    ref: str = typer.Argument(..., metavar="NAME|ID", help="Endpoint name, NAMESPACE/NAME or id."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of NAME."),
) -> None:
    """Delete an endpoint.

    Its network namespace, veth, route, address lease and registry entry."""
    from ciliumctl.node import endpoint_ops

    notes: list[str] = []
    ep = endpoint_ops.delete_endpoint(ref, namespace, notes=notes)
    _warn(notes)
    typer.echo(f"endpoint/{ep.name} deleted (id {ep.id})" if ep.name else f"endpoint {ep.id} deleted")


def _warn(lines: list[str]) -> None:
    for line in lines:
        typer.echo(f"Warning: {line}", err=True)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    ref: str = typer.Argument(..., metavar="NAME|ID", help="Endpoint name, NAMESPACE/NAME or id."),
    command: list[str] = typer.Argument(..., metavar="-- CMD [ARGS]...", help="Command to run."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of NAME."),
) -> None:
    """Run a command inside the endpoint's network namespace.

    The command's exit code is ours."""
    from ciliumctl.node import endpoint_ops

    argv, namespace = _exec_args(list(command), namespace)
    endpoint_ops.exec_in_endpoint(ref, argv, namespace)


def _exec_args(argv: list[str], namespace: str | None) -> tuple[list[str], str | None]:
    """Option parsing stops at NAME (so that the command's own options are never ours): our options between NAME
    and the command (`exec NAME -n NS -- CMD`) are taken here. Returns the command and the namespace."""
    from ciliumctl.base.errors import UsageError

    while argv:
        arg = argv[0]
        if arg == "--":
            return argv[1:], namespace
        if arg in ("-n", "--namespace"):
            if len(argv) < 2:
                raise UsageError(f"option {arg} needs a namespace, e.g. `ciliumctl endpoint exec NAME -n prod -- "
                                 "CMD`")
            namespace, argv = argv[1], argv[2:]
        elif arg.startswith("--namespace="):
            namespace, argv = arg.partition("=")[2], argv[1:]
        elif arg in ("-D", "--debug"):   # the global flag, here too
            from ciliumctl.cli.typer_app import debug_on

            debug_on()
            argv = argv[1:]
        elif arg.startswith("-") and "--" in argv:
            raise UsageError(f"endpoint exec: no such option {_shown(arg)}; the command and its options go after --")
        else:
            break
    return argv, namespace


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


@app.command("list")
def list_(
    output: ListOutput = typer.Option(ListOutput.table, "--output", "-o",
                                      help="Output format: wide adds labels and enforcement per direction."),
    no_headers: bool = typer.Option(False, "--no-headers", help="Omit the table headers."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only endpoints of this namespace."),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A",
                                        help="Endpoints of every namespace (the default without -n, as "
                                             "`cilium endpoint list`)."),
    all_nodes: bool = typer.Option(False, "--all-nodes", help="Every endpoint of the cluster, from CiliumEndpoint "
                                   "objects (needs --kubeconfig or $KUBECONFIG)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE", help="Kubeconfig for --all-nodes."),
    context: str | None = typer.Option(None, "--context", metavar="NAME",
                                          help="Kubeconfig context for --all-nodes."),
) -> None:
    """List endpoints of this node (or of every node with --all-nodes)."""
    from ciliumctl.base.errors import UsageError
    from ciliumctl.cli.common import print_data
    from ciliumctl.endpoints import registry

    namespace = namespace or None      # an empty -n is no -n, as kubectl reads it
    if namespace and all_namespaces:
        raise UsageError("-n and -A (--all-namespaces) exclude each other: drop one")

    if all_nodes:
        _list_all_nodes(kubeconfig, context, namespace, output, no_headers)
        return
    from ciliumctl.cli.common import refuse_unused

    refuse_unused("without --all-nodes (this node's endpoints are read from this node)",
                  {"--kubeconfig": kubeconfig is not None, "--context": context is not None})

    rows = _rows([ep for ep in registry.scan()[0] if namespace is None or ep.namespace == namespace])
    if namespace is None:
        rows = _host_row() + rows
    if output == ListOutput.table:
        typer.echo(_table(rows, no_headers), nl=False)
    elif output == ListOutput.wide:
        typer.echo(_wide_table(rows, no_headers), nl=False)
    else:
        print_data(rows, Output(output.value))


def _list_all_nodes(kubeconfig, context, namespace, output, no_headers) -> None:
    import os

    from ciliumctl.base.errors import UsageError
    from ciliumctl.cli.common import print_data, render_table
    from ciliumctl.cluster.endpoints import list_all_nodes

    kc = kubeconfig or os.environ.get("KUBECONFIG")
    if not kc:
        raise UsageError("--all-nodes reads CiliumEndpoint objects from the cluster: pass --kubeconfig or set "
                         "KUBECONFIG")
    rows = list_all_nodes(kubeconfig=kc, context=context, namespace=namespace)
    if output not in (ListOutput.table, ListOutput.wide):
        print_data(rows, Output(output.value))
        return
    cols = ["NODE", "NAMESPACE", "NAME", "ENDPOINT", "IDENTITY", "IPv4", "STATUS", "LABELS"]
    keys = ["node", "namespace", "name", "id", "identity", "ipv4", "state", "labels"]
    table = [[", ".join(r[k]) if isinstance(r.get(k), list) else
              ",".join(f"{a}={b}" for a, b in r[k].items()) if isinstance(r.get(k), dict) else str(r.get(k, ""))
              for k in keys] for r in rows]
    typer.echo(render_table(cols, table, no_headers), nl=False)


@app.command("get")
def get(
    ref: str = typer.Argument(..., metavar="NAME|ID", help="Endpoint name, NAMESPACE/NAME or id."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of NAME."),
    output: ListOutput = typer.Option(ListOutput.yaml, "--output", "-o", help="Output format."),
    no_headers: bool = typer.Option(False, "--no-headers", help="Omit the table headers."),
) -> None:
    """Show one endpoint.

    A missing endpoint is exit 1, as kubectl."""
    from ciliumctl.cli.common import print_data
    from ciliumctl.node import endpoint_ops

    row = _rows([endpoint_ops.get_endpoint(ref, namespace)], report=False)[0]
    if output == ListOutput.table:
        typer.echo(_table([row], no_headers), nl=False)
    elif output == ListOutput.wide:
        typer.echo(_wide_table([row], no_headers), nl=False)
    else:
        print_data(row, Output(output.value))
