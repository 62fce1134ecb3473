"""`ciliumctl service update|list|get|delete`: the node's services (node mode), as `cilium-dbg service` shows them.
In cluster mode list and get show what the agent programmed from the cluster's Services (read-only)."""

import enum

import typer

from ciliumctl.cli.common import Output
from ciliumctl.cli.typer_app import App

app = App(help="Manage the services this node load-balances, without kube-proxy.")


class ServiceType(enum.StrEnum):
    ClusterIP = "ClusterIP"
    NodePort = "NodePort"


class Affinity(enum.StrEnum):
    ClientIP = "ClientIP"
    none = "None"


def _table(services, names: dict[int, str] | None = None) -> str:
    """cilium-dbg service list's columns: ID, Frontend, Service Type, Backend (one line per backend, numbered,
    with its state); in cluster mode (names given) the Kubernetes Service last."""
    lines = [["ID", "Frontend", "Service Type", "Backend"] + (["Service"] if names is not None else [])]
    for svc in services:
        proto = svc.frontend.protocol.upper()
        backs = [f"{i} => {b}/{proto} ({b.state})" for i, b in enumerate(svc.backends, 1)] or [""]
        lines.append([str(svc.id), str(svc.frontend), svc.type, backs[0]]
                     + ([names.get(svc.id, "")] if names is not None else []))
        lines.extend(["", "", "", b] + ([""] if names is not None else []) for b in backs[1:])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines)


def _named(services) -> dict[int, str] | None:
    """Node mode: the names given with --name (None when no service has one: no column)."""
    names = {s.id: "/".join(s.flow_name) for s in services if s.name}
    return names or None


def _print(services, output: Output, view=None) -> None:
    """view: cluster mode's ClusterServices (names and what was left out), None in node mode."""
    from ciliumctl.cli.common import print_data

    names = view.names if view is not None else _named(services)
    if output == Output.table:
        if view is not None:
            typer.echo(f"cluster mode: services from the cluster's Services and EndpointSlices, as the agent last "
                       f"programmed them (read-only; service CIDR {', '.join(view.service_cidrs) or 'unknown'})")
        typer.echo(_table(services, names), nl=False)
        for line in view.skipped if view is not None else []:
            typer.echo(f"not programmed: {line}")
    else:
        print_data([{**s.to_dict(), **({"service": view.names.get(s.id, "")} if view is not None else {})}
                    for s in services], output)


@app.command("update")
def update(
    frontend: str = typer.Option(..., "--frontend", metavar="IP:PORT[/PROTO]",
                                 help="Frontend address (PROTO tcp or udp, default tcp)."),
    backends: str = typer.Option("", "--backends", metavar="IP:PORT,...",
                                 help="Backend addresses, comma-separated (none: connections are refused)."),
    states: str = typer.Option("", "--states", metavar="STATE,...",
                               help="Backend states in --backends order: active or terminating (default active)."),
    service_id: int = typer.Option(0, "--id", metavar="N", help="Service id (default: the frontend's, or a free one)."),
    service_type: ServiceType = typer.Option(ServiceType.ClusterIP, "--type", help="Service type."),
    affinity: Affinity = typer.Option(Affinity.none, "--affinity", help="Session affinity."),
    affinity_timeout: int = typer.Option(10800, "--affinity-timeout", metavar="SECONDS",
                                         help="How long a client keeps its backend (ClientIP affinity)."),
    name: str = typer.Option("", "--name", metavar="[NAMESPACE/]NAME",
                             help="What flows call the service (Hubble's destination_service; observe "
                                  "--to-service). Default: kept, or the frontend IP:PORT in namespace default."),
    output: Output | None = typer.Option(None, "--output", "-o", help="Print the service as json or yaml."),
) -> None:
    """Create or update a service.

    ClusterIP frontends come from the service CIDR (install --service-cidr, default 10.96.0.0/12); NodePort
    frontends are this node's addresses with a port in 30000-32767."""
    from ciliumctl.cli.common import print_data
    from ciliumctl.node.services import ops as service_ops
    from ciliumctl.services.model import Service, parse_backends, parse_frontend, parse_name

    svc_name, namespace = parse_name(name) if name else ("", "")
    svc = Service(service_id, parse_frontend(frontend), service_type.value, tuple(parse_backends(backends, states)),
                  "" if affinity == Affinity.none else affinity.value, affinity_timeout, svc_name, namespace)
    stored, created = service_ops.update_service(svc)
    if output in (Output.json, Output.yaml):
        print_data(stored.to_dict(), output)
    else:
        typer.echo(f"service {stored.id} ({stored.frontend}) {'created' if created else 'updated'}, "
                   f"{len(stored.active)} of {len(stored.backends)} backend(s) active")


@app.command("list")
def list_(
    output: Output = typer.Option(Output.table, "--output", "-o", help="Output format."),
) -> None:
    """List the services of this node.

    Frontends a local redirect policy sends to endpoints of this node have type LocalRedirect. In cluster mode:
    what the agent programmed from the cluster's Services and EndpointSlices (read-only)."""
    from ciliumctl.node.services import ops as service_ops

    view = service_ops.cluster_view()
    table = view.table if view is not None else service_ops.services()
    _print([s for _, s in sorted(table.services.items())], output, view)


@app.command("get")
def get(
    ref: str = typer.Argument(..., metavar="ID|FRONTEND", help="Service id or frontend IP:PORT[/PROTO]."),
    output: Output = typer.Option(Output.table, "--output", "-o", help="Output format."),
) -> None:
    """Show one service."""
    from ciliumctl.base.errors import NotFound
    from ciliumctl.cli.common import print_data
    from ciliumctl.node.services import ops as service_ops

    svc = service_ops.services().find(ref)
    if svc is None:
        raise NotFound(f"service {ref!r} not found; see `ciliumctl service list`")
    if output == Output.table:
        view = service_ops.cluster_view()
        typer.echo(_table([svc], view.names if view is not None else _named([svc])), nl=False)
    else:
        print_data(svc.to_dict(), output)


@app.command("delete")
def delete(
    ref: str = typer.Argument(..., metavar="ID|FRONTEND", help="Service id or frontend IP:PORT[/PROTO]."),
) -> None:
    """Delete a service: its frontend is no longer translated."""
    from ciliumctl.node.services import ops as service_ops

    svc = service_ops.delete_service(ref)
    typer.echo(f"service {svc.id} ({svc.frontend}) deleted")


redirect = App(help="Local redirect policies: a frontend to this node's endpoints.")
app.add_typer(redirect, name="redirect")


@redirect.command("apply")
def redirect_apply(
    files: list[str] = typer.Option(..., "--filename", "-f", metavar="FILE",
                                    help="YAML file(s) of CiliumLocalRedirectPolicy objects (- for stdin)."),
) -> None:
    """Apply CiliumLocalRedirectPolicy objects (cilium.io/v2) on this node.

    redirectFrontend by addressMatcher (ip, toPorts) or serviceMatcher (serviceName, namespace, toPorts);
    redirectBackend by localEndpointSelector (endpoints of the policy's namespace) and toPorts. Without a local
    endpoint nothing is redirected: a service keeps its own backends, an address is not translated. One invalid
    document: nothing changes. In cluster mode the agent reads them from the cluster (kubectl apply)."""
    from ciliumctl.node.services import redirect_ops as local_redirect_ops

    for ref, verb in local_redirect_ops.apply(local_redirect_ops.read_files(files)):
        typer.echo(f"ciliumlocalredirectpolicy/{ref} {verb}")
    for line in local_redirect_ops.skipped():
        typer.echo(f"warning: not redirected: {line}", err=True)


@redirect.command("list")
def redirect_list(
    output: Output = typer.Option(Output.table, "--output", "-o", help="Output format."),
) -> None:
    """List local redirect policies and their local backends.

    Node mode: the stored policies, each with the endpoints it redirects to now. Cluster mode: the redirects the
    agent last programmed."""
    from ciliumctl.cli.common import print_data
    from ciliumctl.node.services import redirect_ops as local_redirect_ops

    rows = local_redirect_ops.rows()
    if output != Output.table:
        print_data([{"name": r.ref, "frontend": r.frontend, "backends": r.backends, "services": r.service_ids}
                    for r in rows], output)
        return
    lines = [["Name", "Frontend", "Local backends"]]
    lines += [[r.ref, r.frontend, ", ".join(r.backends) or "none (not redirected)"] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    typer.echo("".join("   ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in lines),
               nl=False)


@redirect.command("delete")
def redirect_delete(
    name: str = typer.Argument(..., metavar="NAME", help="The policy's metadata.name."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="The policy's namespace."),
) -> None:
    """Delete a local redirect policy.

    Its frontends go back to their service's own backends (an address is no longer translated)."""
    from ciliumctl.node.services import redirect_ops as local_redirect_ops

    gone = local_redirect_ops.delete(name, namespace)
    typer.echo(f"ciliumlocalredirectpolicy/{gone.ref} deleted")
