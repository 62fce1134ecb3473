"""CiliumLocalRedirectPolicy (cilium.io/v2), pure: the object's checks and what it does to a service table.

Fields and their rules are Cilium's (pkg/k8s/apis/cilium.io/v2/clrp_types.go: redirectFrontend with exactly one of
addressMatcher {ip, toPorts} or serviceMatcher {serviceName, namespace, toPorts?}; redirectBackend
{localEndpointSelector, toPorts}; PortInfo {port "1-65535", protocol TCP|UDP, name}, several ports must be named:
SanitizePortInfo; the docs' "Local Redirect Policy": the backend pods are in the policy's namespace, a
serviceMatcher's service too).

An LRP is not a second datapath path: its frontends become entries of the one service table with this node's
matching endpoints as backends and type LocalRedirect (cilium-dbg service list's Type). What happens without a
local backend is Cilium's (pkg/loadbalancer/redirectpolicy/testdata/no-target-pods.txtar): nothing is redirected,
so a serviceMatcher's service keeps its own backends and an addressMatcher's address is not translated at all.
Endpoint selection is the caller's (`local_ips`): label selectors live in policy/, above this package.
"""

from __future__ import annotations

import ipaddress
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from ciliumctl.base.errors import UsageError
from ciliumctl.services.model import (
    DEFAULT_NAMESPACE,
    MAX_SERVICE_ID,
    Backend,
    Frontend,
    Service,
    ServiceTable,
)

KIND = "CiliumLocalRedirectPolicy"
API_VERSION = "cilium.io/v2"
TYPE = "LocalRedirect"                      # pkg/loadbalancer SVCTypeLocalRedirect, as cilium-dbg service list shows
# IANA_SVC_NAME (k8s.io/apimachinery validation IsValidPortName, what Cilium's iana.IsSvcName checks)
_SVC_NAME = re.compile(r"^(?=.{1,15}$)(?!.*--)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# backend ids of redirect entries: derived from (frontend, backend) with the top bit set, so that they stay the same
# from one reconcile to the next (a connection keeps its lb_conns backend id) and never meet the store's ids,
# which count up from 1
_BACKEND_ID_BIT = 0x80000000


@dataclass(frozen=True)
class PortInfo:
    port: int
    protocol: str               # tcp | udp
    name: str = ""              # lower-cased, as SanitizePortInfo normalises it


@dataclass(frozen=True)
class LocalRedirect:
    name: str
    namespace: str
    address: str                                  # addressMatcher.ip ("" for a serviceMatcher)
    service: str                                  # serviceMatcher.serviceName ("" for an addressMatcher)
    frontend_ports: tuple[PortInfo, ...]          # empty: every port of the service
    selector: dict                                # localEndpointSelector, as written
    backend_ports: tuple[PortInfo, ...]
    obj: dict                                     # the object as applied (what `list -o yaml` gives back)
    skip_from_backend: bool = False               # spec.skipRedirectFromBackend

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def frontend_text(self) -> str:
        ports = ",".join(f"{p.port}/{p.protocol.upper()}" for p in self.frontend_ports) or "all ports"
        return f"{self.address} {ports}" if self.address else f"service {self.namespace}/{self.service} {ports}"


def _fail(where: str, what: str) -> UsageError:
    return UsageError(f"{where}: {what}")


def _ports(items, where: str, required: bool) -> tuple[PortInfo, ...]:
    if items is None or items == []:
        if required:
            raise _fail(where, "toPorts is required: give at least one {port, protocol}")
        return ()
    if not isinstance(items, list):
        raise _fail(where, "toPorts must be a list of {port, protocol, name}")
    out = []
    for i, p in enumerate(items):
        at = f"{where}.toPorts[{i}]"
        if not isinstance(p, dict):
            raise _fail(at, "must be a mapping with port and protocol")
        port = str(p.get("port", "")).strip()
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise _fail(at, f"port {p.get('port')!r}: use a number 1-65535 (as a string, e.g. \"53\")")
        proto = str(p.get("protocol", ""))
        if proto not in ("TCP", "UDP"):
            raise _fail(at, f"protocol {p.get('protocol')!r}: use TCP or UDP")
        name = str(p.get("name") or "").lower()
        if len(items) > 1 and not name:
            raise _fail(at, f"port {port} needs a name: several ports must be named (to pair frontend and backend)")
        if name and not _SVC_NAME.match(name):
            raise _fail(at, f"name {name!r} is not a valid IANA_SVC_NAME (lower-case letters, digits and '-', "
                            "at most 15 characters)")
        out.append(PortInfo(int(port), proto.lower(), name))
    return tuple(out)


def parse(obj: dict, where: str = "") -> LocalRedirect:
    """Check one CiliumLocalRedirectPolicy object; a problem is one UsageError line naming `where` and the field."""
    at = where or KIND
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise _fail(at, f"not a {KIND}")
    if obj.get("apiVersion") != API_VERSION:
        raise _fail(at, f"apiVersion {obj.get('apiVersion')!r}: use {API_VERSION}")
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or DEFAULT_NAMESPACE)
    if not _SUBDOMAIN.match(name):
        raise _fail(at, f"metadata.name {name!r}: use a DNS-1123 subdomain (e.g. nodelocaldns)")
    if not _DNS1123.match(namespace):
        raise _fail(at, f"metadata.namespace {namespace!r}: use a DNS-1123 label (e.g. kube-system)")
    at = f"{where + ': ' if where else ''}{KIND} {namespace}/{name}"
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise _fail(at, "spec is missing: give redirectFrontend and redirectBackend")
    fe, be = spec.get("redirectFrontend"), spec.get("redirectBackend")
    if not isinstance(fe, dict) or not fe:
        raise _fail(at, "spec.redirectFrontend is required: give addressMatcher or serviceMatcher")
    if not isinstance(be, dict) or not be:
        raise _fail(at, "spec.redirectBackend is required: give localEndpointSelector and toPorts")
    unknown = sorted(set(fe) - {"addressMatcher", "serviceMatcher"})
    if unknown:
        raise _fail(at, f"spec.redirectFrontend.{unknown[0]}: unknown field; use addressMatcher or serviceMatcher")
    am, sm = fe.get("addressMatcher"), fe.get("serviceMatcher")
    if (am is None) == (sm is None):
        raise _fail(at, "spec.redirectFrontend: give exactly one of addressMatcher and serviceMatcher")
    address = service = ""
    if am is not None:
        if not isinstance(am, dict):
            raise _fail(at, "spec.redirectFrontend.addressMatcher must be a mapping with ip and toPorts")
        try:
            ip = ipaddress.ip_address(str(am.get("ip", "")).strip())
        except ValueError:
            raise _fail(at, f"spec.redirectFrontend.addressMatcher.ip {am.get('ip')!r}: not an IP address "
                            "(e.g. 169.254.20.10)") from None
        if ip.version != 4:
            raise _fail(at, f"spec.redirectFrontend.addressMatcher.ip {ip}: only IPv4 is supported")
        address = str(ip)
        fports = _ports(am.get("toPorts"), f"{at}: spec.redirectFrontend.addressMatcher", True)
    else:
        if not isinstance(sm, dict):
            raise _fail(at, "spec.redirectFrontend.serviceMatcher must be a mapping with serviceName and namespace")
        service, sns = str(sm.get("serviceName") or ""), str(sm.get("namespace") or "")
        if not service:
            raise _fail(at, "spec.redirectFrontend.serviceMatcher.serviceName is required")
        if sns != namespace:
            raise _fail(at, f"spec.redirectFrontend.serviceMatcher.namespace {sns!r} must be the policy's namespace "
                            f"{namespace!r}")
        fports = _ports(sm.get("toPorts"), f"{at}: spec.redirectFrontend.serviceMatcher", False)
    selector = be.get("localEndpointSelector")
    if not isinstance(selector, dict):
        raise _fail(at, "spec.redirectBackend.localEndpointSelector is required (matchLabels / matchExpressions)")
    skip = spec.get("skipRedirectFromBackend", False)
    if not isinstance(skip, bool):
        raise _fail(at, f"spec.skipRedirectFromBackend {skip!r}: use true or false")
    bports = _ports(be.get("toPorts"), f"{at}: spec.redirectBackend", True)
    if len(bports) > 1:
        names = {p.name for p in bports}
        missing = [p.name for p in fports if p.name not in names]
        if missing:
            raise _fail(at, f"frontend port {missing[0]!r} has no backend port of that name in "
                            "spec.redirectBackend.toPorts")
    return LocalRedirect(name, namespace, address, service, fports, selector, bports, obj, skip)


def _backend_port(lrp: LocalRedirect, protocol: str, name: str) -> PortInfo | None:
    """Which backend port a frontend port goes to: the only one, else the one of the same name (Cilium pairs
    several ports by name), else the only one of the frontend's protocol (a service's frontends carry no port name
    here: node-local DNS's dns/UDP and dns-tcp/TCP pair by protocol); the protocol must be the same."""
    same = [p for p in lrp.backend_ports if p.protocol == protocol]
    if len(lrp.backend_ports) == 1:
        return same[0] if same else None
    named = [p for p in same if name and p.name == name]
    return named[0] if named else same[0] if len(same) == 1 and not name else None


def _backend_id(fe: Frontend, ip: str, port: int, taken: set[int]) -> int:
    bid = zlib.crc32(f"{fe}|{ip}:{port}".encode()) | _BACKEND_ID_BIT
    while bid in taken:
        bid = ((bid + 1) & 0xFFFFFFFF) | _BACKEND_ID_BIT
    taken.add(bid)
    return bid


@dataclass
class Redirected:
    """The table with the redirects in force, which LRP each redirected service id comes from, what was left out."""

    table: ServiceTable
    by: dict[int, str]              # service id -> namespace/name of the LRP
    skipped: list[str]


def redirect(table: ServiceTable, lrps: list[LocalRedirect],
             local_ips: Callable[[LocalRedirect], list[str]]) -> Redirected:
    """`table` with each LRP's frontends sent to its local endpoints (`local_ips`: the IPv4 addresses of the ready
    endpoints of this node it selects). An LRP with no local endpoint changes nothing. The result has no lineage
    (lbwrite compares it as a whole); with no LRP in force it is `table` itself."""
    services = dict(table.services)
    by: dict[int, str] = {}
    skipped: list[str] = []
    taken_ids = {b.id for s in table.services.values() for b in s.backends}
    owner: dict[Frontend, str] = {}
    for lrp in sorted(lrps, key=lambda x: (x.namespace, x.name)):
        ips = sorted(set(local_ips(lrp)), key=ipaddress.ip_address)
        if not ips:
            continue
        targets: list[tuple[Service | None, Frontend, str]] = []    # (service it replaces, frontend, port name)
        if lrp.address:
            for p in lrp.frontend_ports:
                fe = Frontend(lrp.address, p.port, p.protocol)
                other = table.lookup(fe.ip, fe.port, fe.protocol)
                if other is not None:
                    skipped.append(f"{lrp.ref}: {fe} is service {other.id}'s frontend: use a serviceMatcher for a "
                                   "service's traffic")
                    continue
                targets.append((None, fe, p.name))
        else:
            for svc in table.services.values():
                if svc.type != "ClusterIP" or (svc.name, svc.namespace or DEFAULT_NAMESPACE) != (lrp.service,
                                                                                                  lrp.namespace):
                    continue
                fe = svc.frontend
                if lrp.frontend_ports:
                    match = next((p for p in lrp.frontend_ports if (p.port, p.protocol) == (fe.port, fe.protocol)),
                                 None)
                    if match is None:
                        continue
                    targets.append((svc, fe, match.name))
                else:
                    targets.append((svc, fe, ""))
        for orig, fe, port_name in targets:
            bp = _backend_port(lrp, fe.protocol, port_name)
            if bp is None:
                skipped.append(f"{lrp.ref}: no backend port for {fe} in spec.redirectBackend.toPorts")
                continue
            if fe in owner:
                skipped.append(f"{lrp.ref}: {fe} is redirected by {owner[fe]} already")
                continue
            owner[fe] = lrp.ref
            backends = tuple(Backend(ip, bp.port, "active", _backend_id(fe, ip, bp.port, taken_ids)) for ip in ips)
            # skipRedirectFromBackend: the backends' own traffic goes where the frontend went before (Cilium's
            # clrp_types.go: "forwarded to the original destination"): the service, or the address untranslated
            skip = (tuple(ips), orig) if lrp.skip_from_backend else ((), None)
            if orig is not None:    # flows keep naming the Kubernetes Service
                new = replace(orig, type=TYPE, backends=backends, affinity="", skip_from=skip[0], original=skip[1])
            else:
                sid = next((i for i in range(MAX_SERVICE_ID, 0, -1) if i not in services), 0)
                if not sid:
                    skipped.append(f"{lrp.ref}: all {MAX_SERVICE_ID} service ids are taken")
                    continue
                new = Service(sid, fe, TYPE, backends, name=lrp.name, namespace=lrp.namespace, skip_from=skip[0])
            services[new.id] = new
            by[new.id] = lrp.ref
    if not by:
        return Redirected(table, {}, skipped)
    return Redirected(ServiceTable(services, table.next_backend_id), by, skipped)
