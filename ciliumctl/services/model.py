"""Services, pure: a frontend (VIP:port/protocol) and its backends, as Cilium's load balancer models them
(pkg/loadbalancer: L3n4Addr frontends, backends with a state, service types, session affinity). Parsing of the
CLI's text forms, the checks every desired state passes (service CIDR, NodePort range, duplicate frontends, backend
ports), id allocation, and the lookup `policy trace` uses to show a translation. No kernel, no files."""

from __future__ import annotations

import ipaddress
import re
import weakref
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from ciliumctl.base.errors import UsageError

PROTOCOLS = {"tcp": 6, "udp": 17}       # what the datapath translates (SCTP needs a CRC32c rewrite: not yet)
TYPES = ("ClusterIP", "NodePort", "LocalRedirect")   # LocalRedirect: made by services.local_redirect only
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"   # kube-apiserver's --service-cluster-ip-range default
NODEPORT_RANGE = (30000, 32767)         # kube-apiserver's --service-node-port-range default
# Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (core/v1 DefaultClientIPServiceAffinitySeconds)
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400            # core/v1 MaxClientIPServiceAffinitySeconds
MAX_SERVICE_ID = 65535                  # Cilium's rev-NAT index is 16 bits (lb4_service.rev_nat_index)
MAX_BACKENDS = 65535                    # backend slots per service (lb_svc_val.count is 16 bits)
STATES = ("active", "terminating")      # pkg/loadbalancer BackendState names (active, terminating)
DEFAULT_NAMESPACE = "default"           # a name without namespace (Kubernetes; Hubble's filters, k8s.go)


@dataclass(frozen=True, order=True)
class Frontend:
    ip: str
    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol.upper()}"

    @property
    def proto_number(self) -> int:
        return PROTOCOLS[self.protocol]


class Backend(NamedTuple):
    """One backend (a tuple: a table holds 100,000 of them, and they are built on every load)."""

    ip: str
    port: int
    state: str = "active"
    id: int = 0              # the datapath's backend id (lb_backends key); allocated by ServiceTable.update

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


_make_backend = Backend._make
_BACKEND_SHAPES = {(str, int, state, int) for state in STATES}


@dataclass(frozen=True)
class Service:
    id: int
    frontend: Frontend
    type: str = "ClusterIP"
    backends: tuple[Backend, ...] = ()
    affinity: str = ""                  # "" (None) or "ClientIP"
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    name: str = ""                      # the Kubernetes Service (cluster mode) or `service update --name`
    namespace: str = ""
    # a LocalRedirect with skipRedirectFromBackend (services.local_redirect): the backends' addresses, whose own
    # traffic to the frontend skips the redirect and goes to `original`, the service it replaced (None: an
    # address that was no service, left untranslated)
    skip_from: tuple[str, ...] = ()
    original: Service | None = None

    @property
    def active(self) -> tuple[Backend, ...]:
        """The backends that take new connections."""
        return tuple(b for b in self.backends if b.state == "active")

    @property
    def flow_name(self) -> tuple[str, str]:
        """(namespace, name) as flows carry it (flow.proto Service): a service without a name is named by its
        frontend IP:PORT, in "default" (where Hubble's filters look for a name given without namespace)."""
        return (self.namespace or DEFAULT_NAMESPACE,
                self.name or f"{self.frontend.ip}:{self.frontend.port}")

    def to_dict(self) -> dict:
        out: dict = {"id": self.id, "frontend": str(self.frontend), "type": self.type,
                     "backends": [{"address": str(b), "state": b.state, "id": b.id} for b in self.backends]}
        if self.name:
            out["name"], out["namespace"] = self.name, self.namespace or DEFAULT_NAMESPACE
        if self.affinity:
            out["sessionAffinity"] = {"type": self.affinity, "timeoutSeconds": self.affinity_timeout}
        if self.skip_from:
            out["skipRedirectFromBackend"] = {"from": list(self.skip_from),
                                              "to": self.original.id if self.original else None}
        return out

    def to_record(self) -> list:
        """The compact form the node's store keeps (100,000 backends load in well under a second)."""
        f = self.frontend
        out = [self.id, f.ip, f.port, f.protocol, self.type, self.affinity, self.affinity_timeout,
               self.backends]     # JSON writes each Backend, a tuple (ip, port, state, id), as that array
        return out + [self.name, self.namespace] if self.name else out

    @classmethod
    def from_record(cls, r: list) -> Service:
        """What to_record() wrote (checked when it was stored; a malformed record raises). Records from before
        names have 8 fields."""
        sid, ip, port, proto, typ, aff, timeout, backs, *named = r
        name, namespace = (str(named[0]), str(named[1])) if len(named) == 2 else ("", "")
        if proto not in PROTOCOLS or typ not in TYPES:
            raise ValueError(f"service {sid}: protocol {proto!r} or type {typ!r}")
        try:
            backends = tuple(map(_make_backend, backs))
        except TypeError:       # not four fields
            raise ValueError(f"service {sid}: a malformed backend") from None
        # the shapes of its backends in one set (a loop of checks per backend took half of loading 100,000)
        if not {(type(ip), type(port), state, type(bid)) for ip, port, state, bid in backends} <= _BACKEND_SHAPES:
            raise ValueError(f"service {sid}: a malformed backend")
        return cls(int(sid), Frontend(str(ip), int(port), proto), typ, backends, str(aff), int(timeout), name,
                   namespace)


# ------------------------------------------------------------------------------------------------ parsing

def _ipv4(text: str, what: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{what} {text!r}: not an IP address (e.g. 10.96.0.10)") from None
    if addr.version != 4:
        raise UsageError(f"{what} {text!r}: only IPv4 services are supported")
    return str(addr)


def _port(text: str, what: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{what} port {text!r}: not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UsageError(f"{what} port {port}: use 1-65535")
    return port


def parse_address(text: str, what: str) -> tuple[str, int]:
    """IP:PORT -> (ip, port)."""
    ip, sep, port = text.strip().rpartition(":")
    if not sep or not ip:
        raise UsageError(f"{what} {text!r}: use IP:PORT (e.g. 10.0.0.5:8080)")
    return _ipv4(ip, what), _port(port, what)


def parse_frontend(text: str) -> Frontend:
    """IP:PORT[/PROTO] (PROTO tcp or udp, default tcp; as cilium-dbg service update --frontend)."""
    addr, _, proto = text.strip().partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise UsageError(f"frontend {text!r}: protocol {proto!r} is not supported; use tcp or udp")
    ip, port = parse_address(addr, "frontend")
    return Frontend(ip, port, proto)


def parse_backends(text: str, states: str = "") -> list[Backend]:
    """IP:PORT,IP:PORT,... with optional states (active,terminating,...) in the same order."""
    items = [t for t in (x.strip() for x in text.split(",")) if t]
    names = [s.strip().lower() for s in states.split(",")] if states else []
    if names and len(names) != len(items):
        raise UsageError(f"--states names {len(names)} state(s) for {len(items)} backend(s): give one per backend")
    out = []
    for i, item in enumerate(items):
        ip, port = parse_address(item, "backend")
        state = names[i] if names else "active"
        if state not in STATES:
            raise UsageError(f"backend {item}: state {state!r} is not one of {', '.join(STATES)}")
        out.append(Backend(ip, port, state))
    return out


# apimachinery validation: a Service name is a DNS-1035 label, a namespace a DNS-1123 label (63 characters at most)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_name(text: str) -> tuple[str, str]:
    """[NAMESPACE/]NAME -> (name, namespace), namespace "default" when not given."""
    ns, sep, name = text.strip().rpartition("/")
    if not _DNS1035.match(name):
        raise UsageError(f"service name {name!r}: use a DNS-1035 label (lower-case letters, digits and '-', "
                         "starting with a letter, at most 63 characters), e.g. web")
    if sep and not _DNS1123.match(ns):
        raise UsageError(f"namespace {ns!r} of service name {text!r}: use a DNS-1123 label (lower-case letters, "
                         "digits and '-', at most 63 characters), e.g. default")
    return name, ns or DEFAULT_NAMESPACE


def parse_cidr(text: str) -> str:
    try:
        net = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise UsageError(f"service CIDR {text!r}: {err} (e.g. 10.96.0.0/12)") from None
    if net.version != 4:
        raise UsageError(f"service CIDR {text!r}: only IPv4 is supported")
    return str(net)


# ------------------------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class ServiceTable:
    """The desired services of a node, keyed by id. Pure: update() and delete() return a new table."""

    services: dict[int, Service] = field(default_factory=dict)
    next_backend_id: int = 1            # backend ids are never reused while the table lives (lb_conns holds them)
    # made by update()/delete() of a table: (a weak reference to it, the service ids that differ), so that a
    # long-lived writer finds what changed without comparing 10,000 services (datapath/lbwrite.py)
    derived: tuple[weakref.ref, frozenset[int]] | None = field(default=None, compare=False, repr=False)

    def changed_since(self, base: ServiceTable, steps: int = 8) -> set[int] | None:
        """The ids that may differ from `base` when this table was derived from it in at most `steps` updates
        or deletes (a superset: an id changed and changed back is in it), else None."""
        out: set[int] = set()
        t: ServiceTable | None = self
        for _ in range(steps):
            if t is base:
                return out
            if t is None or t.derived is None:
                return None
            out |= t.derived[1]
            t = t.derived[0]()
        return out if t is base else None

    def lookup(self, ip: str, port: int, protocol: str) -> Service | None:
        for svc in self.services.values():
            f = svc.frontend
            if (f.ip, f.port, f.protocol) == (ip, port, protocol):
                return svc
        return None

    def find(self, ref: str) -> Service | None:
        """A service by id (a number) or by frontend (IP:PORT[/PROTO])."""
        if ref.isdigit():
            return self.services.get(int(ref))
        fe = parse_frontend(ref)
        return self.lookup(fe.ip, fe.port, fe.protocol)

    def update(self, svc: Service, service_cidr: str, node_ips: frozenset[str] = frozenset()) -> ServiceTable:
        """Add or replace `svc` (id 0: the service of the same frontend, else the lowest free id). Checked first:
        nothing changes when it is refused."""
        check_service(svc, service_cidr, node_ips)
        same = self.lookup(svc.frontend.ip, svc.frontend.port, svc.frontend.protocol)
        sid = svc.id or (same.id if same else self._free_id())
        if same is not None and same.id != sid:
            raise UsageError(f"frontend {svc.frontend} belongs to service {same.id} already: update that id or "
                             "delete it first")
        old = self.services.get(sid)
        backends, nxt = _backend_ids(svc.backends, old, self.next_backend_id)
        if not svc.name and old is not None:     # an update without --name keeps the name
            svc = replace(svc, name=old.name, namespace=old.namespace)
        services = dict(self.services)
        services[sid] = replace(svc, id=sid, backends=tuple(backends))
        return ServiceTable(services, nxt, (weakref.ref(self), frozenset({sid})))

    def rebuilt(self, services: list[Service]) -> ServiceTable:
        """The table of exactly `services` (already checked, frontends distinct), in one pass: each keeps the id
        of its frontend here and its backends' ids, new frontends get the lowest free ids (update() one by one
        is quadratic: a cluster's thousands of services on every sync)."""
        here = {(s.frontend.ip, s.frontend.port, s.frontend.protocol): s for s in self.services.values()}
        old = [here.get((s.frontend.ip, s.frontend.port, s.frontend.protocol)) for s in services]
        taken = {o.id for o in old if o is not None}
        free = (i for i in range(1, MAX_SERVICE_ID + 1) if i not in taken)
        nxt, out = self.next_backend_id, {}
        for svc, prev in zip(services, old):
            sid = prev.id if prev is not None else next(free, 0)
            if not sid:
                raise UsageError(f"all {MAX_SERVICE_ID} service ids are taken: delete a service first")
            backends, nxt = _backend_ids(svc.backends, prev, nxt)
            out[sid] = replace(svc, id=sid, backends=tuple(backends))
        return ServiceTable(out, nxt)

    def delete(self, ref: str) -> tuple[ServiceTable, Service | None]:
        svc = self.find(ref)
        if svc is None:
            return self, None
        services = {k: v for k, v in self.services.items() if k != svc.id}
        return ServiceTable(services, self.next_backend_id, (weakref.ref(self), frozenset({svc.id}))), svc

    def counts(self) -> dict:
        """`status`: services and backends (a backend of two services counts twice, as it has two ids)."""
        backs = [b.state for s in self.services.values() for b in s.backends]
        return {"services": len(self.services), "backends": len(backs),
                "active": backs.count("active"), "terminating": backs.count("terminating")}

    def _free_id(self) -> int:
        for i in range(1, MAX_SERVICE_ID + 1):
            if i not in self.services:
                return i
        raise UsageError(f"all {MAX_SERVICE_ID} service ids are taken: delete a service first")

    def to_dict(self) -> dict:
        return {"version": 1, "nextBackendID": self.next_backend_id,
                "services": [s.to_record() for _, s in sorted(self.services.items())]}

    @classmethod
    def from_dict(cls, d: dict) -> ServiceTable:
        if d.get("version") != 1:
            raise ValueError(f"service table version {d.get('version')!r}")
        services = {}
        for item in d.get("services", []):
            svc = Service.from_record(item)
            services[svc.id] = svc
        return cls(services, int(d.get("nextBackendID", 1)))


def _backend_ids(backends: tuple[Backend, ...], prev: Service | None, nxt: int) -> tuple[list[Backend], int]:
    """`backends` with their datapath ids: a backend `prev` (the same service before) had keeps its id, a new one
    gets the next; returns them and the next free id."""
    ids = {(b.ip, b.port): b.id for b in prev.backends} if prev is not None else {}
    out = []
    for b in backends:
        bid = ids.get((b.ip, b.port))
        if not bid:
            bid, nxt = nxt, nxt + 1
        out.append(b._replace(id=bid))
    return out, nxt


def check_service(svc: Service, service_cidr: str, node_ips: frozenset[str] = frozenset()) -> None:
    """What makes a service unusable, as one line (UsageError)."""
    fe = svc.frontend
    if svc.type not in TYPES[:2]:
        raise UsageError(f"service type {svc.type!r}: use {' or '.join(TYPES[:2])}")
    if not 0 <= svc.id <= MAX_SERVICE_ID:
        raise UsageError(f"service id {svc.id}: use 1-{MAX_SERVICE_ID}")
    if svc.type == "ClusterIP":
        if ipaddress.ip_address(fe.ip) not in ipaddress.ip_network(service_cidr):
            raise UsageError(f"frontend {fe}: {fe.ip} is outside the service CIDR {service_cidr}; pick an address "
                             "in it (install --service-cidr sets the range)")
    else:
        lo, hi = NODEPORT_RANGE
        if not lo <= fe.port <= hi:
            raise UsageError(f"NodePort frontend {fe}: port {fe.port} is outside the NodePort range {lo}-{hi}")
        if fe.ip not in node_ips:
            have = ", ".join(sorted(node_ips)) or "none"
            raise UsageError(f"NodePort frontend {fe}: {fe.ip} is not an address of this node (it has: {have})")
    if svc.affinity not in ("", "ClientIP"):
        raise UsageError(f"session affinity {svc.affinity!r}: use ClientIP (or none)")
    if not 1 <= svc.affinity_timeout <= MAX_AFFINITY_TIMEOUT:
        raise UsageError(f"affinity timeout {svc.affinity_timeout}: use 1-{MAX_AFFINITY_TIMEOUT} seconds")
    if len(svc.backends) > MAX_BACKENDS:
        raise UsageError(f"service {fe}: {len(svc.backends)} backends, more than the {MAX_BACKENDS} one service "
                         "holds")
    seen = set()
    for b in svc.backends:
        if not 1 <= b.port <= 65535:
            raise UsageError(f"backend {b}: port {b.port} is not usable; use 1-65535")
        if b.state not in STATES:
            raise UsageError(f"backend {b}: state {b.state!r} is not one of {', '.join(STATES)}")
        if (b.ip, b.port) in seen:
            raise UsageError(f"backend {b} is listed twice for {fe}")
        seen.add((b.ip, b.port))
        if b.ip == fe.ip:
            raise UsageError(f"backend {b}: a backend cannot be the frontend address itself")


@dataclass(frozen=True)
class Translation:
    """What the datapath does to a connection to a frontend: for `policy trace`."""

    service: Service
    backends: tuple[Backend, ...]       # the ones a new connection may get

    def to_dict(self) -> dict:
        return {"service": self.service.id, "frontend": str(self.service.frontend),
                "backends": [str(b) for b in self.backends]}


def translate(table: ServiceTable, ip: str, port: int, protocol: str, src_ip: str = "") -> Translation | None:
    """A connection from `src_ip` to ip:port: a local redirect's backend that skips it (skipRedirectFromBackend)
    gets the service the redirect replaced, or no translation."""
    svc = table.lookup(ip, port, protocol)
    if svc is not None and src_ip and src_ip in svc.skip_from:
        svc = svc.original
    return Translation(svc, svc.active) if svc is not None else None
