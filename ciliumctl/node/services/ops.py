"""Services on this node (node mode): update and delete (store, then program through the one reconcile; the store
is rolled back when the datapath refuses, so it never describes services that are not in force), and the views.
In cluster mode the agent builds the table from the cluster's Services (node.cluster_sync): the store is not used,
update and delete are refused, and the views show what the agent programmed."""

from __future__ import annotations

import contextlib

from ciliumctl.base.errors import NotFound
from ciliumctl.node.reconcile import reconcile
from ciliumctl.node.settings import environment_errors, load_settings, locked, require_root
from ciliumctl.node.verify import heal_if_interrupted, node_mode
from ciliumctl.services import store
from ciliumctl.services.model import Service, ServiceTable


def node_addresses() -> frozenset[str]:
    """The IPv4 addresses of the node (its network namespace): where NodePort frontends live."""
    from pyroute2 import IPRoute  # noqa: PLC0415

    from ciliumctl.base.netns import enter_node_netns

    enter_node_netns()
    with IPRoute() as ipr:
        return frozenset(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)
                         if not a.get_attr("IFA_ADDRESS", "").startswith("127."))


RTN_UNICAST, RTN_LOCAL = 1, 2     # rtnetlink route types (linux/rtnetlink.h)


def check_reachable(svc: Service) -> None:
    """Every backend has a route from the node (its network namespace): a backend nobody can reach is refused
    (UsageError) instead of turning into connections that time out. One route dump, longest prefix in Python."""
    import socket

    from pyroute2 import IPRoute  # noqa: PLC0415

    from ciliumctl.base.errors import UsageError
    from ciliumctl.base.netns import enter_node_netns

    if not svc.backends:
        return
    enter_node_netns()
    with IPRoute() as ipr:
        routes = {(int.from_bytes(socket.inet_aton(r.get_attr("RTA_DST") or "0.0.0.0"), "big"), r["dst_len"])
                  for r in ipr.get_routes(family=socket.AF_INET) if r["type"] in (RTN_UNICAST, RTN_LOCAL)}
    masks = sorted({plen for _, plen in routes})
    for ip in sorted({b.ip for b in svc.backends}):
        addr = int.from_bytes(socket.inet_aton(ip), "big")
        if not any(((addr >> (32 - p)) << (32 - p) if p else 0, p) in routes for p in masks):
            raise UsageError(f"backend {ip}: no route to it from this node; add the endpoint first (or a route), "
                             "then the service")


def refuse_in_cluster_mode(command: str) -> None:
    from ciliumctl.base.errors import UsageError

    if not node_mode():
        raise UsageError(f"{command}: this node's services come from the cluster (its agent runs in cluster mode "
                         "and reads Services and EndpointSlices); change the Service with kubectl instead")


@contextlib.contextmanager
def _rollback():
    before = store.load()
    try:
        yield
    except BaseException:
        store.save(before)
        raise


def update_service(svc: Service) -> tuple[Service, bool]:
    """Add or replace a service; (the stored service with its id and backend ids, created?)."""
    require_root("service update")
    refuse_in_cluster_mode("service update")
    with environment_errors("service update"), locked():
        heal_if_interrupted()
        settings = load_settings()
        table = store.load()
        node_ips = node_addresses() if svc.type == "NodePort" else frozenset()
        new = table.update(svc, settings.service_cidr, node_ips)     # refused here: nothing changed
        check_reachable(svc)
        stored = next(s for s in new.services.values() if s.frontend == svc.frontend)
        created = stored.id not in table.services
        if new == table:
            return stored, created
        with _rollback():
            store.save(new)
            reconcile(settings=settings)
        return stored, created


def delete_service(ref: str) -> Service:
    require_root("service delete")
    refuse_in_cluster_mode("service delete")
    with environment_errors("service delete"), locked():
        heal_if_interrupted()
        table, gone = store.load().delete(ref)
        if gone is None:
            raise NotFound(f"service {ref!r} not found; see `ciliumctl service list`")
        with _rollback():
            store.save(table)
            reconcile(settings=load_settings())
        return gone


def services() -> ServiceTable:
    """The table in force: node mode's store with its local redirects (node.services.local_redirect), or the
    cluster's."""
    from ciliumctl.node.services.local_redirect import in_force

    return in_force(store.load()).table if node_mode() else cluster_view().table


def cluster_view():
    """In cluster mode: the table the agent last programmed, with the Service each frontend comes from and what it
    left out (cluster.services.ClusterServices); None in node mode."""
    if node_mode():
        return None
    from ciliumctl.node.cluster_sync import programmed_services

    return programmed_services()
