"""Which endpoints of this node a CiliumLocalRedirectPolicy's localEndpointSelector picks, and the service table
with the redirects in force (services.local_redirect). Node mode: the endpoint registry (every endpoint is this
node's); cluster mode: the Pods scheduled on this node (spec.nodeName), running and Ready, with a pod IP, as Cilium's
redirect policy controller takes its backends from local pods (pkg/loadbalancer/redirectpolicy). Only pods of the
policy's namespace are selected (docs "Local Redirect Policy": the backend pods' namespace must be the policy's)."""

from __future__ import annotations

from typing import NamedTuple

from ciliumctl.services.local_redirect import LocalRedirect, Redirected, redirect
from ciliumctl.services.model import ServiceTable


class Candidate(NamedTuple):
    namespace: str
    labels: dict[str, str]
    ip: str


def from_endpoints(endpoints) -> list[Candidate]:
    """Node mode: the registry's endpoints with an address, but not one being removed (a new endpoint is programmed
    in the same reconcile that makes it ready)."""
    return [Candidate(ep.namespace, dict(ep.labels), ep.ipv4.split("/")[0]) for ep in endpoints
            if ep.ipv4 and ep.state != "disconnecting"]


def from_pods(pods: list[dict], node_name: str) -> list[Candidate]:
    """Cluster mode: Pods on `node_name`, phase Running, condition Ready True, with an IPv4 pod IP."""
    import ipaddress

    out = []
    for pod in pods:
        spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
        if spec.get("nodeName") != node_name or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
            continue
        ips = [p.get("ip", "") for p in status.get("podIPs") or []] or [status.get("podIP", "")]
        for ip in ips:
            try:
                if ipaddress.ip_address(ip).version == 4:
                    out.append(Candidate(meta.get("namespace", ""), dict(meta.get("labels") or {}), ip))
                    break
            except ValueError:
                continue
    return out


def apply(table: ServiceTable, lrps: list[LocalRedirect], candidates: list[Candidate]) -> Redirected:
    """`table` with the redirects of `lrps` to the candidates each selects."""
    from ciliumctl.policy.labels import k8s
    from ciliumctl.policy.model import parse_selector
    from ciliumctl.policy.selectors import LabelSet, compile_selector

    sets = [(c, LabelSet(k8s(k, v) for k, v in c.labels.items())) for c in candidates]

    def local_ips(lrp: LocalRedirect) -> list[str]:
        sel = compile_selector(parse_selector(lrp.selector))
        return [c.ip for c, labels in sets if c.namespace == lrp.namespace and sel.matches(labels)]

    return redirect(table, lrps, local_ips)


def in_force(table: ServiceTable, endpoints=None) -> Redirected:
    """Node mode: the stored services with the stored redirects to the registry's `endpoints` (read from the
    registry when not given, only when there is a redirect)."""
    from ciliumctl.services import redirect_store

    lrps = redirect_store.load()
    if not lrps:
        return Redirected(table, {}, [])
    if endpoints is None:
        from ciliumctl.endpoints import registry

        endpoints = registry.load_all()
    return apply(table, lrps, from_endpoints(endpoints))
