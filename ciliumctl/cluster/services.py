"""The cluster's Services and EndpointSlices -> this node's service table (services.model), pure: no API calls.

Field names and meanings are Kubernetes': core/v1 Service (spec.clusterIP(s), type, ports[].port/protocol/
nodePort/name, sessionAffinity, sessionAffinityConfig.clientIP.timeoutSeconds, externalTrafficPolicy,
internalTrafficPolicy) and discovery.k8s.io/v1 EndpointSlice (k8s.io/api discovery/v1/types.go: addressType,
endpoints[].addresses/conditions/nodeName, ports[].name/port/protocol; the kubernetes.io/service-name label,
discovery/v1/well_known_labels.go LabelServiceName).

Backends, as Cilium's pkg/k8s/endpoints.go ParseEndpointSliceV1 reads the conditions (types.go: ready and serving
nil mean true, terminating nil means false): ready -> active; not ready but serving and terminating -> terminating
(keeps its connections, gets no new ones); otherwise not a backend.

Skipped, each with a reason: headless services (clusterIP None), ExternalName, IPv6 and FQDN slices, SCTP ports
(the datapath does not translate SCTP), loopback backends, frontends the model refuses (check_service).
LoadBalancer services get their ClusterIP and NodePort frontends (no load-balancer addresses yet).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ciliumctl.base.errors import UsageError
from ciliumctl.services.model import (
    DEFAULT_AFFINITY_TIMEOUT,
    Backend,
    Frontend,
    Service,
    ServiceTable,
    check_service,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"   # discovery/v1 well_known_labels.go LabelServiceName
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


@dataclass
class ClusterServices:
    """The table for the datapath, which Kubernetes Service each frontend comes from, and what was left out."""

    table: ServiceTable = field(default_factory=ServiceTable)
    names: dict[int, str] = field(default_factory=dict)       # service id -> namespace/name (port name)
    skipped: list[str] = field(default_factory=list)          # "namespace/name: why"
    service_cidrs: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**self.table.to_dict(), "names": {str(k): v for k, v in self.names.items()},
                "skipped": self.skipped, "serviceCIDRs": list(self.service_cidrs)}

    @classmethod
    def from_dict(cls, d: dict) -> ClusterServices:
        return cls(ServiceTable.from_dict(d), {int(k): v for k, v in d.get("names", {}).items()},
                   list(d.get("skipped", [])), tuple(d.get("serviceCIDRs", ())))


def service_cidrs(objects: list[dict], fallback: str) -> tuple[str, ...]:
    """The IPv4 ranges of the cluster's ServiceCIDR objects (networking.k8s.io/v1, spec.cidrs; the API server makes
    "kubernetes" from its --service-cluster-ip-range), or `fallback` (install's setting) when there are none."""
    out = []
    for obj in sorted(objects, key=lambda o: o["metadata"]["name"]):
        for text in (obj.get("spec") or {}).get("cidrs") or []:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            if net.version == 4 and str(net) not in out:
                out.append(str(net))
    return tuple(out) or (fallback,)


def node_addresses(node: dict | None) -> frozenset[str]:
    """A Node's IPv4 InternalIP and ExternalIP (status.addresses): where its NodePort frontends live."""
    out = set()
    for a in ((node or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") in ("InternalIP", "ExternalIP") and _ipv4(a.get("address", "")):
            out.add(a["address"])
    return frozenset(out)


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _ref(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def backend_state(conditions: dict | None) -> str | None:
    """"active", "terminating" or None (not a backend), from an endpoint's conditions (nil: ready and serving
    true, terminating false: discovery/v1 types.go EndpointConditions)."""
    c = conditions or {}
    if c.get("ready", True) is not False:
        return "active"
    if c.get("serving", True) is not False and c.get("terminating", False) is True:
        return "terminating"
    return None


def _backends(slices: list[dict], port_name: str, protocol: str, local_node: str | None,
              skipped: list[str], ref: str) -> tuple[Backend, ...]:
    """The backends of one service port over all its slices (IPv4 only); local_node: only those on that node."""
    found: dict[tuple[str, int], str] = {}
    for sl in slices:
        if sl.get("addressType") != "IPv4":
            continue
        port = next((p.get("port") for p in sl.get("ports") or []
                     if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol), None)
        if not port:
            continue
        for ep in sl.get("endpoints") or []:
            state = backend_state(ep.get("conditions"))
            if state is None or (local_node is not None and ep.get("nodeName") != local_node):
                continue
            for ip in ep.get("addresses") or []:
                if ipaddress.ip_address(ip).is_loopback:
                    skipped.append(f"{ref}: backend {ip}:{port} is a loopback address (reachable from the host "
                                   "only): left out")
                    continue
                if found.get((ip, port)) != "active":   # the same address in two slices: active wins
                    found[(ip, port)] = state
    return tuple(Backend(ip, port, state) for (ip, port), state in sorted(found.items()))


def _cidr_for(ip: str, cidrs: tuple[str, ...]) -> str:
    addr = ipaddress.ip_address(ip)
    return next((c for c in cidrs if addr in ipaddress.ip_network(c)), cidrs[0])


def build(services: list[dict], slices: list[dict], node_name: str, node_ips: frozenset[str],
          cidrs: tuple[str, ...], previous: ServiceTable | None = None) -> ClusterServices:
    """This node's service table. `previous` (the last one built) keeps service and backend ids stable: a
    frontend keeps its id while it exists, a backend its id while its service has it."""
    out = ClusterServices(service_cidrs=cidrs)
    by_service: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name:
            by_service.setdefault((meta.get("namespace", ""), name), []).append(sl)
    wanted: list[tuple[Service, str, str]] = []      # (service with id 0, cidr to check it against, name)
    for obj in sorted(services, key=_ref):
        ref, spec = _ref(obj), obj.get("spec") or {}
        typ = spec.get("type") or "ClusterIP"
        if typ == "ExternalName":
            continue    # a DNS alias: nothing to translate
        cluster_ip = spec.get("clusterIP") or ""
        if cluster_ip == "None":
            continue    # headless: clients get the endpoints' addresses from DNS
        ips = [ip for ip in (spec.get("clusterIPs") or [cluster_ip]) if _ipv4(ip)]
        if not ips:
            if cluster_ip:
                out.skipped.append(f"{ref}: no IPv4 cluster IP ({cluster_ip}): IPv6 services are not supported")
            continue
        meta = obj.get("metadata") or {}
        who = (meta.get("name", ""), meta.get("namespace", ""))   # what flows name (flow.proto Service)
        mine = by_service.get((who[1], who[0]), [])
        affinity = "ClientIP" if spec.get("sessionAffinity") == "ClientIP" else ""
        timeout = (((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
                   or DEFAULT_AFFINITY_TIMEOUT)
        internal_local = spec.get("internalTrafficPolicy") == "Local"
        external_local = spec.get("externalTrafficPolicy") == "Local"
        for port in spec.get("ports") or []:
            protocol = port.get("protocol") or "TCP"
            name = port.get("name") or ""
            label = f"{ref}{' (' + name + ')' if name else ''}"
            if protocol not in ("TCP", "UDP"):
                out.skipped.append(f"{label}: port {port.get('port')}/{protocol} is not translated (TCP and UDP "
                                   "only)")
                continue
            proto = protocol.lower()
            backs = _backends(mine, name, protocol, node_name if internal_local else None, out.skipped, ref)
            for ip in ips:
                wanted.append((Service(0, Frontend(ip, int(port["port"]), proto), "ClusterIP", backs, affinity,
                                       timeout, *who), _cidr_for(ip, cidrs), label))
            if typ in NODE_PORT_TYPES and port.get("nodePort"):
                local = _backends(mine, name, protocol, node_name, [], ref) if external_local else backs
                for ip in sorted(node_ips):
                    wanted.append((Service(0, Frontend(ip, int(port["nodePort"]), proto), "NodePort", local,
                                           affinity, timeout, *who), cidrs[0], label))
    checked: dict[tuple[str, int, str], tuple[Service, str]] = {}
    for svc, cidr, label in wanted:
        fe = (svc.frontend.ip, svc.frontend.port, svc.frontend.protocol)
        try:
            if fe in checked:
                raise UsageError(f"frontend {svc.frontend} is {checked[fe][1]}'s already")
            check_service(svc, cidr, node_ips)
        except UsageError as err:
            out.skipped.append(f"{label}: {err}")
            continue
        checked[fe] = (svc, label)
    out.table = (previous or ServiceTable()).rebuilt([svc for svc, _ in checked.values()])
    out.names = {sid: checked[(s.frontend.ip, s.frontend.port, s.frontend.protocol)][1]
                 for sid, s in out.table.services.items()}
    out.skipped.sort()
    return out
