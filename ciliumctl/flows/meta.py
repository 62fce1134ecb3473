"""What the agent knows about the node when it turns events into flows: endpoints (by IP and by id), identity
labels and the policy rules behind each policy-map cookie. Read from the node's state files and re-read when
they change; each reload makes a new immutable Snapshot, so a flow is always enriched with one consistent view.
In cluster mode also the other nodes' pods and the cluster's identities, from the file the cluster sync writes
(its format lives here: peers_document, save_peers)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.flows.names import RESERVED_IDENTITIES


@dataclass(frozen=True)
class EndpointInfo:
    id: int
    name: str
    namespace: str
    labels: tuple[str, ...]          # "k8s:app=x" form, sorted
    identity: int
    workloads: tuple[tuple[str, str], ...] = ()   # (name, kind)


@dataclass(frozen=True)
class PolicyRef:
    name: str
    namespace: str
    kind: str
    labels: tuple[str, ...]
    revision: int


@dataclass(frozen=True)
class ServiceNames:
    """The services the datapath translates, as flows name them (flow.proto Service: namespace, name)."""

    by_id: dict[int, tuple[str, str]] = field(default_factory=dict)         # lb_services id -> (namespace, name)
    by_addr: dict[tuple[bytes, int], tuple[str, str]] = field(default_factory=dict)   # (frontend IP, port)
    ips: frozenset[bytes] = frozenset()                                      # frontend IPs (4 bytes)


def _parse_services(data) -> ServiceNames:
    """datapath/services.json (datapath.servicemap.names_json). By address as Cilium's Hubble looks a frontend up
    (pkg/hubble/.../service getter GetServiceByAddr: IP and port, TCP first, then UDP)."""
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        return ServiceNames()
    by_id: dict[int, tuple[str, str]] = {}
    by_addr: dict[tuple[bytes, int], tuple[str, str]] = {}
    rows = []
    for row in data["services"]:
        try:
            sid, ns, name, ip, port, proto = row
            rows.append((int(sid), str(ns), str(name), socket.inet_aton(ip), int(port), str(proto)))
        except (ValueError, TypeError, OSError):
            continue
    for sid, ns, name, addr, port, _proto in sorted(rows, key=lambda r: r[5] != "tcp"):
        by_id[sid] = (ns, name)
        by_addr.setdefault((addr, port), (ns, name))
    return ServiceNames(by_id, by_addr, frozenset(a for a, _ in by_addr))


@dataclass(frozen=True, eq=False)   # compared and hashed by identity: one object per reload
class Snapshot:
    by_ip: dict[str, EndpointInfo] = field(default_factory=dict)
    by_id: dict[int, EndpointInfo] = field(default_factory=dict)
    identity_labels: dict[int, tuple[str, ...]] = field(default_factory=dict)
    cookies: dict[int, tuple[PolicyRef, ...]] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    services: ServiceNames = field(default_factory=ServiceNames)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)   # ip -> DNS names the DNS proxy learned

    def labels_of(self, identity: int) -> tuple[str, ...]:
        labels = self.identity_labels.get(identity)
        if labels is not None:
            return labels
        name = RESERVED_IDENTITIES.get(identity)
        return (f"reserved:{name}",) if name and identity else ()


def _k8s_labels(ep: dict) -> tuple[str, ...]:
    labels = {f"k8s:{k}={v}" for k, v in (ep.get("labels") or {}).items()}
    labels.add(f"k8s:io.kubernetes.pod.namespace={ep.get('namespace') or 'default'}")
    return tuple(sorted(labels))


def _workloads(ep: dict) -> tuple[tuple[str, str], ...]:
    """The owning workload, as far as a pod's name and labels tell it (Deployment pods carry pod-template-hash)."""
    labels = ep.get("labels") or {}
    name = ep.get("name") or ""
    h = labels.get("pod-template-hash")
    if h and f"-{h}-" in name:
        return ((name.split(f"-{h}-")[0], "Deployment"),)
    if "controller-revision-hash" in labels and "-" in name:
        return ((name.rsplit("-", 1)[0], "StatefulSet" if name.rsplit("-", 1)[1].isdigit() else "DaemonSet"),)
    return ()


def _parse_identities(data) -> dict[int, tuple[str, ...]]:
    """identities.json as the allocator writes it. Accepts {id: [labels]} and {labels-key: id} shapes, optionally
    under an "identities" key, so that the agent does not break on a layout detail of the allocator."""
    out: dict[int, tuple[str, ...]] = {}
    if isinstance(data, dict) and isinstance(data.get("identities"), (dict, list)):
        data = data["identities"]
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "id" in item:
                out[int(item["id"])] = tuple(sorted(item.get("labels") or ()))
        return out
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        if str(key).isdigit() and isinstance(value, (list, tuple)):
            out[int(key)] = tuple(sorted(value))
        elif isinstance(value, int) and not str(key).isdigit():
            out[value] = tuple(sorted(x for x in str(key).split(",") if x))
        elif isinstance(value, dict) and "labels" in value and "id" in value:
            out[int(value["id"])] = tuple(sorted(value["labels"]))
    return out


def _policy_labels(kind: str, name: str, namespace: str) -> tuple[str, ...]:
    # the labels Cilium derives for a rule from its policy object
    labels = [f"k8s:io.cilium.k8s.policy.derived-from={kind}", f"k8s:io.cilium.k8s.policy.name={name}"]
    if namespace:
        labels.append(f"k8s:io.cilium.k8s.policy.namespace={namespace}")
    return tuple(labels)


def _parse_cookies(data) -> dict[int, tuple[PolicyRef, ...]]:
    revision = 0
    if isinstance(data, dict) and isinstance(data.get("cookies"), dict):
        revision = int(data.get("revision") or 0)
        data = data["cookies"]
    out: dict[int, tuple[PolicyRef, ...]] = {}
    if not isinstance(data, dict):
        return out
    for key, origins in data.items():
        try:
            cookie = int(key)
        except ValueError:
            continue
        refs: dict[tuple, PolicyRef] = {}
        for o in origins or ():
            if not isinstance(o, dict):
                continue
            kind, name, ns = o.get("kind", ""), o.get("name", ""), o.get("namespace", "")
            refs.setdefault((kind, ns, name), PolicyRef(name, ns, kind, _policy_labels(kind, name, ns),
                                                        int(o.get("revision") or revision)))
        out[cookie] = tuple(refs.values())
    return out


def _read_json(path: Path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None  # missing or being replaced: keep going with what we have


PEERS_FILE = "cluster-peers.json"
PEERS_VERSION = 1


def peers_path(state_dir: Path | None = None) -> Path:
    return (state_dir or paths.state_dir()) / PEERS_FILE


def peers_document(endpoints: list[dict], identities: dict[int, list[str]]) -> dict:
    """What flows need of the cluster beyond this node: the other nodes' pods (rows with name, namespace, labels,
    identity, ipv4, node; extra keys are left out) and the labels of every cluster identity (CiliumIdentity), so
    that a peer is named as Cilium's Hubble names a remote endpoint: pod name, namespace and its identity's
    labels, endpoint ID 0 (pkg/hubble/parser/common/endpoint.go, ResolveEndpoint: ipcache metadata and the
    identity cache). Ordered, so that equal content makes an equal document."""
    rows = [{"name": str(e["name"]), "namespace": str(e["namespace"]), "labels": sorted(e["labels"]),
             "identity": int(e["identity"]), "ipv4": str(e["ipv4"]), "node": str(e["node"])} for e in endpoints]
    return {"version": PEERS_VERSION, "endpoints": sorted(rows, key=lambda r: (r["ipv4"], r["namespace"], r["name"])),
            "identities": {str(i): sorted(labels) for i, labels in sorted(identities.items())}}


def save_peers(document: dict, state_dir: Path | None = None) -> None:
    """Root-only (mkstemp's 0600), not fsynced: the cluster sync writes it again from the API server after any
    loss."""
    statefile.write_json(peers_path(state_dir), document, compact=True, durable=False)


def _parse_peers(data) -> tuple[dict[str, EndpointInfo], dict[int, tuple[str, ...]]]:
    """The peers file as remote endpoints by address and identity labels; what is malformed is left out."""
    by_ip: dict[str, EndpointInfo] = {}
    identities: dict[int, tuple[str, ...]] = {}
    if not isinstance(data, dict) or data.get("version") != PEERS_VERSION:
        return by_ip, identities
    for key, labels in (data.get("identities") or {}).items() if isinstance(data.get("identities"), dict) else ():
        if str(key).isdigit() and isinstance(labels, list):
            identities[int(key)] = tuple(sorted(str(x) for x in labels))
    for row in data.get("endpoints") or () if isinstance(data.get("endpoints"), list) else ():
        try:
            ip = str(row["ipv4"]).split("/")[0]
            info = EndpointInfo(0, str(row["name"]), str(row["namespace"]),
                                tuple(sorted(str(x) for x in row["labels"])), int(row["identity"]))
        except (KeyError, TypeError, ValueError):
            continue
        if ip:
            by_ip.setdefault(ip, info)
    return by_ip, identities


def load_snapshot(state_dir: Path | None = None) -> Snapshot:
    state = state_dir or paths.state_dir()
    by_ip: dict[str, EndpointInfo] = {}
    by_id: dict[int, EndpointInfo] = {}
    namespaces = set()
    ep_dir = state / "endpoints"
    if ep_dir.is_dir():
        for f in sorted(ep_dir.glob("*.json")):
            ep = _read_json(f)
            if not isinstance(ep, dict) or "id" not in ep:
                continue
            info = EndpointInfo(int(ep["id"]), ep.get("name") or "", ep.get("namespace") or "default",
                                _k8s_labels(ep), int(ep.get("identity") or 0), _workloads(ep))
            by_id[info.id] = info
            if ep.get("ipv4"):
                by_ip[ep["ipv4"].split("/")[0]] = info
            namespaces.add(info.namespace)
    identities = _parse_identities(_read_json(state / "identities.json"))
    remote, cluster_identities = _parse_peers(_read_json(peers_path(state)))
    for ident, labels in cluster_identities.items():   # the CiliumIdentity's labels, as Hubble shows them
        identities.setdefault(ident, labels)
    for info in by_id.values():
        identities.setdefault(info.identity, info.labels)
    for ip, info in remote.items():      # a local endpoint wins on the same address (Hubble asks it first)
        by_ip.setdefault(ip, info)
        identities.setdefault(info.identity, info.labels)
    cookies = _parse_cookies(_read_json(state / "datapath" / "cookies.json"))
    services = _parse_services(_read_json(state / "datapath" / "services.json"))
    return Snapshot(by_ip, by_id, identities, cookies, frozenset(namespaces), services,
                    _parse_dns_names(_read_json(state / "fqdn-cache.json")))


def _parse_dns_names(data) -> dict[str, tuple[str, ...]]:
    """The DNS cache (node/dns_proxy/cache.py) as address -> names, without the trailing dot as Hubble shows them
    (Cilium's getNamesOf trims it); one cache for the node, where Cilium asks the flow's endpoint's own."""
    out: dict[str, set[str]] = {}
    for row in (data or {}).get("entries") or () if isinstance(data, dict) else ():
        if isinstance(row, dict) and row.get("ip") and row.get("name"):
            out.setdefault(str(row["ip"]), set()).add(str(row["name"]).rstrip("."))
    return {ip: tuple(sorted(names)) for ip, names in out.items()}


class MetaWatcher:
    """Holds the current Snapshot and reloads it when a state file changed (checked at most every `interval`)."""

    def __init__(self, state_dir: Path | None = None, interval: float = 0.5):
        self.state_dir = state_dir or paths.state_dir()
        self.interval = interval
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._checked = 0.0
        self.snapshot = Snapshot()
        self.refresh(force=True)

    def _fingerprint(self) -> tuple:
        stamp: list[tuple | None] = []
        for p in (self.state_dir / "endpoints", self.state_dir / "identities.json",
                  self.state_dir / "datapath" / "cookies.json", self.state_dir / "datapath" / "services.json",
                  self.state_dir / "fqdn-cache.json", peers_path(self.state_dir)):
            try:
                st = os.stat(p)
                stamp.append((st.st_mtime_ns, st.st_ino, st.st_size))
            except OSError:
                stamp.append(None)
        ep_dir = self.state_dir / "endpoints"
        if ep_dir.is_dir():  # an endpoint file rewritten in place does not touch the directory
            for f in ep_dir.glob("*.json"):
                try:
                    st = os.stat(f)
                    stamp.append((f.name, st.st_mtime_ns, st.st_ino))
                except OSError:
                    pass
        return tuple(stamp)

    def refresh(self, force: bool = False) -> Snapshot:
        now = time.monotonic()
        if not force and now - self._checked < self.interval:
            return self.snapshot
        with self._lock:
            self._checked = now
            stamp = self._fingerprint()
            if force or stamp != self._stamp:
                self._stamp = stamp
                self.snapshot = load_snapshot(self.state_dir)
        return self.snapshot
