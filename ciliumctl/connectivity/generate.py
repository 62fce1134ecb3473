"""Least-privilege CiliumNetworkPolicies from observed flows (`policy generate`).

Flows are read as Hubble prints them (`hubble observe -o jsonpb`: one GetFlowsResponse per line, proto field
names; flow/flow.proto) with json.loads and plain dict reads: google.protobuf.json_format takes ~45 us a flow,
too slow for 100,000. Each connection is counted once (the first packet: not a reply; TCP SYN without ACK when
is_reply is absent). For every workload (namespace + stable labels: Cilium's identity label filter, without
pod-template-hash and other per-rollout labels, policy.labels) one CiliumNetworkPolicy allows what it was seen to
receive (ingress) and send (egress): peers as label selectors, entities (host, remote-node, kube-apiserver...),
toFQDNs for destinations the flow names by DNS, toCIDR /32 otherwise; ports merged into ranges where they are
consecutive. Every policy is checked by policy.validate and the flows are replayed through the trace engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from ciliumctl.base.errors import CiliumctlError, UsageError
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity import allocator as ids
from ciliumctl.policy.labels import (
    CLUSTER_LABEL,
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    SERVICE_ACCOUNT_LABEL,
    SOURCE_K8S,
    is_security_relevant,
    parse_label,
)
from ciliumctl.policy.resolved import PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP

MAX_PORTS = 40          # items of one toPorts[].ports (the CRD's maxItems; schema_cilium)
MANAGED_BY = "ciliumctl-policy-generate"
# reserved identity names -> the entity that selects them (pkg/policy/api/entity.go)
ENTITIES = {"host": "host", "remote-node": "remote-node", "kube-apiserver": "kube-apiserver", "health": "health",
            "ingress": "ingress", "init": "init", "unmanaged": "unmanaged"}
_PROTO_KEYS = (("TCP", PROTO_TCP), ("UDP", PROTO_UDP), ("SCTP", PROTO_SCTP), ("ICMPv4", PROTO_ICMP),
               ("ICMPv6", PROTO_ICMPV6))
_PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_SCTP: "SCTP"}
_ICMP_REQUESTS = {PROTO_ICMP: {8, 13, 15, 17}, PROTO_ICMPV6: {128}}   # echo, timestamp, info, mask requests


# ---------------------------------------------------------------------------------------------- flows

class Workload(NamedTuple):      # NamedTuples, not dataclasses: hashed per flow, and tuples hash in C
    namespace: str
    labels: tuple[tuple[str, str], ...]        # stable k8s labels (selector)

    @property
    def text(self) -> str:
        return f"{self.namespace}/{','.join(f'{k}={v}' for k, v in self.labels) or '(no stable labels)'}"


class Peer(NamedTuple):
    kind: str                                  # workload | entity | cidr | fqdn
    workload: Workload | None = None
    value: str = ""                            # entity name, address, DNS name


class Conn(NamedTuple):
    src: Peer
    dst: Peer
    proto: int
    port: int                                  # ICMP: type
    src_ip: str = ""
    dst_ip: str = ""


@dataclass
class Observed:
    flows: int = 0
    conns: dict[Conn, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    pods: dict[tuple[Workload, str], dict] = field(default_factory=dict)   # (workload, ip) -> pod labels, sa

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _stable(namespace: str, labels: Iterable[str]) -> tuple[tuple[tuple[str, str], ...], dict[str, str], str]:
    """(selector labels, all pod labels, service account) of a flow endpoint's labels."""
    stable, pod, sa = [], {}, ""
    for text in labels:
        lab = parse_label(text)
        if lab.source != SOURCE_K8S:
            continue
        if lab.key == SERVICE_ACCOUNT_LABEL:
            sa = lab.value
            continue
        if lab.key in (POD_NAMESPACE_LABEL, CLUSTER_LABEL) or lab.key.startswith(NAMESPACE_LABELS_PREFIX):
            continue
        pod[lab.key] = lab.value
        if is_security_relevant(lab):
            stable.append((lab.key, lab.value))
    if not stable and sa:        # nothing else to tell it by: Cilium selects by service account too
        stable.append((SERVICE_ACCOUNT_LABEL, sa))
    return tuple(sorted(stable)), pod, sa


_PEERS: dict[tuple, tuple[Peer | None, dict | None]] = {}   # one flow endpoint's labels -> its peer, once


def _endpoint_peer(ep: dict, ip: str, names: list, obs: Observed) -> Peer | None:
    labels = ep.get("labels") or []
    key = (ep.get("identity"), ep.get("namespace"), tuple(labels), ep.get("pod_name"),
           ip if not ep.get("namespace") else "", names[0] if names else "")
    hit = _PEERS.get(key)
    if hit is None:
        if len(_PEERS) > 100_000:
            _PEERS.clear()
        hit = _PEERS[key] = _endpoint_peer_uncached(ep, ip, names, labels)
    peer, pod = hit
    if peer is not None and pod is not None and peer.workload is not None:
        obs.pods.setdefault((peer.workload, ip), pod)
    return peer


def _endpoint_peer_uncached(ep: dict, ip: str, names: list, labels: list) -> tuple[Peer | None, dict | None]:
    reserved = [lab[len("reserved:"):] for lab in labels if lab.startswith("reserved:")]
    ident = int(ep.get("identity") or 0)
    if ident in (ids.WORLD, ids.WORLD_IPV4, ids.WORLD_IPV6) or any(r.startswith("world") for r in reserved) \
            or (not labels and not ep.get("namespace") and ip):
        if names:
            return Peer("fqdn", value=str(names[0]).rstrip(".")), None
        return (Peer("cidr", value=ip) if ip else None), None
    for r in reserved:
        if r in ENTITIES:
            return Peer("entity", value=ENTITIES[r]), None
    if ident in ids.RESERVED_NAMES:
        name = ids.RESERVED_NAMES[ident]
        if name in ENTITIES:
            return Peer("entity", value=ENTITIES[name]), None
    ns = str(ep.get("namespace") or "")
    if not ns:
        return (Peer("cidr", value=ip) if ip else None), None
    stable, pod, sa = _stable(ns, labels)
    return Peer("workload", Workload(ns, stable)), {"labels": pod, "sa": sa or "default",
                                                     "name": str(ep.get("pod_name") or "")}


def _l4(flow: dict) -> tuple[int, int] | None:
    l4 = flow.get("l4") or {}
    for key, proto in _PROTO_KEYS:
        body = l4.get(key)
        if body is None:
            continue
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            t = int(body.get("type") or 0)
            return (proto, t) if t in _ICMP_REQUESTS[proto] else None
        return proto, int(body.get("destination_port") or body.get("destinationPort") or 0)
    return None


def _first_packet(flow: dict) -> bool:
    reply = flow.get("is_reply", flow.get("isReply"))
    if reply is not None:
        return not reply
    tcp = (flow.get("l4") or {}).get("TCP")
    if tcp is not None:
        flags = tcp.get("flags") or {}
        return bool(flags.get("SYN")) and not flags.get("ACK")
    return True


def add_flow(obs: Observed, flow: dict, verdicts: frozenset[str]) -> None:
    obs.flows += 1
    verdict = flow.get("verdict") or "VERDICT_UNKNOWN"
    if verdict not in verdicts:
        obs.skip(f"verdict {verdict}")
        return
    if not _first_packet(flow):
        obs.skip("reply or mid-connection packet")
        return
    l4 = _l4(flow)
    if l4 is None:
        obs.skip("no TCP/UDP/SCTP port or ICMP request")
        return
    ip = flow.get("IP") or {}
    sip, dip = str(ip.get("source") or ""), str(ip.get("destination") or "")
    src = _endpoint_peer(flow.get("source") or {}, sip, flow.get("source_names") or [], obs)
    dst = _endpoint_peer(flow.get("destination") or {}, dip, flow.get("destination_names") or [], obs)
    if src is None or dst is None:
        obs.skip("a side without labels or address")
        return
    if src.kind != "workload" and dst.kind != "workload":
        obs.skip("neither side is a workload")
        return
    c = Conn(src, dst, l4[0], l4[1], sip, dip)
    obs.conns[c] = obs.conns.get(c, 0) + 1


def read_lines(lines: Iterable, name: str) -> Iterator[dict]:
    """Flows (dicts) of `hubble observe -o jsonpb` (or -o json) lines; other formats are one line, exit 2."""
    hint = "give `hubble observe -o jsonpb` (or `ciliumctl observe -o jsonpb`) output"
    seen = 0
    for lineno, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise UsageError(f"{name}:{lineno}: not a JSON line, so not hubble jsonpb output; {hint}") from None
        if not isinstance(obj, dict):
            raise UsageError(f"{name}:{lineno}: a JSON {type(obj).__name__}, not a flow response; {hint}")
        flow = obj.get("flow")
        if flow is None:
            if not any(k in obj for k in ("node_status", "lost_events", "time", "node_name")):
                raise UsageError(f"{name}:{lineno}: a JSON object without \"flow\"; {hint}")
            continue
        if not isinstance(flow, dict):
            raise UsageError(f"{name}:{lineno}: \"flow\" is not an object; {hint}")
        seen += 1
        yield flow
    if not seen:
        raise UsageError(f"{name}: no flows in it; {hint}")


def read_file(path: str, stdin=None) -> Iterator[dict]:
    import sys

    if path == "-":
        yield from read_lines(stdin if stdin is not None else sys.stdin, "stdin")
        return
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as err:
        raise UsageError(f"--input-file {path}: {err.strerror or err}; {'give a flow file or - for stdin'}") \
            from None
    with fh:
        yield from read_lines(fh, path)


def read_agent(server: str, since=None) -> Iterator[dict]:
    """Flows of the agent's buffer (every flow, or those since a time) through the flows client."""
    from ciliumctl.flows import client, jsonpb

    req = client.Query(all=since is None, since=since).request()
    for batch in client.stream_batches(server, req, reconnect=False, json_lines=True):
        if isinstance(batch, (bytes, str)):
            text = batch.decode() if isinstance(batch, bytes) else batch
            for line in text.splitlines():
                if line.strip():
                    flow = json.loads(line).get("flow")
                    if isinstance(flow, dict):
                        yield flow
        else:
            for resp in batch:
                if resp.HasField("flow"):
                    yield jsonpb.to_dict(resp.flow)


def observe(flows: Iterable[dict], from_audit: bool = False) -> Observed:
    verdicts = frozenset({"AUDIT"} if from_audit else {"FORWARDED", "AUDIT"})
    obs = Observed()
    for f in flows:
        add_flow(obs, f, verdicts)
    return obs


# ---------------------------------------------------------------------------------------------- policies

def _ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and out[-1][1] == p - 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def _port_items(conns: Iterable[tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    """(toPorts, icmps) of a peer's (proto, port) set: consecutive ports of one protocol become one range."""
    by_proto: dict[int, set[int]] = {}
    for proto, port in conns:
        by_proto.setdefault(proto, set()).add(port)
    ports: list[dict] = []
    icmps: list[dict] = []
    for proto in sorted(by_proto):
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            fam = "IPv6" if proto == PROTO_ICMPV6 else "IPv4"
            icmps.extend({"type": t, "family": fam} for t in sorted(by_proto[proto]))
            continue
        for lo, hi in _ranges(by_proto[proto]):
            item: dict = {"port": str(lo), "protocol": _PROTO_NAMES[proto]}
            if hi > lo:
                item["endPort"] = hi
            ports.append(item)
    to_ports = [{"ports": ports[i:i + MAX_PORTS]} for i in range(0, len(ports), MAX_PORTS)]
    icmp_rules = [{"fields": icmps[i:i + MAX_PORTS]} for i in range(0, len(icmps), MAX_PORTS)]
    return to_ports, icmp_rules


def _selector(w: Workload, home: str) -> dict:
    labels = {k: v for k, v in w.labels}
    if w.namespace != home:
        labels[f"k8s:{POD_NAMESPACE_LABEL}"] = w.namespace
    return {"matchLabels": labels} if labels else {}


def _peer_fields(peer: Peer, home: str, direction: str) -> tuple[str, object]:
    p = "from" if direction == "ingress" else "to"
    if peer.kind == "workload":
        assert peer.workload is not None
        return f"{p}Endpoints", _selector(peer.workload, home)
    if peer.kind == "entity":
        return f"{p}Entities", peer.value
    if peer.kind == "fqdn":
        return "toFQDNs", {"matchName": peer.value}
    return f"{p}CIDR", f"{peer.value}/{128 if ':' in peer.value else 32}"


def _items(by_peer: dict[Peer, set[tuple[int, int]]], home: str, direction: str) -> list[dict]:
    """Rule items: peers with the same ports share one item, one item per peer field (Cilium forbids mixing
    some of them, e.g. toFQDNs with toEndpoints)."""
    grouped: dict[tuple, dict[str, list]] = {}
    for peer in sorted(by_peer, key=lambda x: (x.kind, x.value, x.workload.text if x.workload else "")):
        key = tuple(sorted(by_peer[peer]))
        fname, value = _peer_fields(peer, home, direction)
        lst = grouped.setdefault(key, {}).setdefault(fname, [])
        if value not in lst:
            lst.append(value)
    out = []
    for key, fields in grouped.items():
        to_ports, icmps = _port_items(key)
        for fname, values in fields.items():
            for extra in ([{"toPorts": to_ports}] if to_ports else []) + ([{"icmps": icmps}] if icmps else []):
                out.append({fname: values, **extra})
    return out


_DNS_NAME = re.compile(r"[^a-z0-9-]+")


def _name(w: Workload, taken: set[tuple[str, str]]) -> str:
    labels = dict(w.labels)
    base = next((labels[k] for k in ("app.kubernetes.io/name", "app", "k8s-app", "name", "class", "component")
                 if labels.get(k)), "-".join(v for _, v in w.labels) or "pods")
    base = _DNS_NAME.sub("-", base.lower()).strip("-")[:40] or "pods"
    name, n = f"{base}-least-privilege", 2
    while (w.namespace, name) in taken:
        name, n = f"{base}-least-privilege-{n}", n + 1
    taken.add((w.namespace, name))
    return name


@dataclass
class Generated:
    policies: list[dict]                       # CiliumNetworkPolicy objects
    workloads: dict[str, Workload]             # policy "ns/name" -> workload
    observed: Observed
    notes: list[str] = field(default_factory=list)
    fqdn: bool = True                          # DNS names became toFQDNs (else toCIDR)


def generate(obs: Observed, use_fqdn: bool = True) -> Generated:
    ingress: dict[Workload, dict[Peer, set]] = {}
    egress: dict[Workload, dict[Peer, set]] = {}
    fqdn_users: set[Workload] = set()
    for c in obs.conns:
        src, dst = c.src, c.dst
        if not use_fqdn and dst.kind == "fqdn":
            dst = Peer("cidr", value=c.dst_ip)
        if not use_fqdn and src.kind == "fqdn":
            src = Peer("cidr", value=c.src_ip)
        if src.kind == "fqdn":        # a DNS name is only a destination in policy: the source by address
            src = Peer("cidr", value=c.src_ip)
        if dst.kind == "workload" and dst.workload is not None:
            ingress.setdefault(dst.workload, {}).setdefault(src, set()).add((c.proto, c.port))
        if src.kind == "workload" and src.workload is not None:
            egress.setdefault(src.workload, {}).setdefault(dst, set()).add((c.proto, c.port))
            if dst.kind == "fqdn":
                fqdn_users.add(src.workload)
    notes = []
    taken: set[tuple[str, str]] = set()
    policies, workloads = [], {}
    for w in sorted(set(ingress) | set(egress), key=lambda x: x.text):
        spec: dict = {"description": f"least privilege for {w.text}, from observed flows (ciliumctl policy "
                                     "generate)",
                      "endpointSelector": {"matchLabels": dict(w.labels)} if w.labels else {}}
        if not w.labels:
            notes.append(f"{w.namespace}: pods without stable labels; the policy selects every pod of the namespace")
        if w in ingress:
            spec["ingress"] = _items(ingress[w], w.namespace, "ingress")
        if w in egress:
            items = _items(egress[w], w.namespace, "egress")
            if w in fqdn_users:
                _dns_visibility(items)
            spec["egress"] = items
        name = _name(w, taken)
        policies.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                         "metadata": {"name": name, "namespace": w.namespace,
                                      "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
                         "spec": spec})
        workloads[f"{w.namespace}/{name}"] = w
    return Generated(policies, workloads, obs, notes, use_fqdn)


def _dns_visibility(items: list[dict]) -> None:
    """toFQDNs only learns addresses from DNS answers the proxy sees: port-53 egress items get a DNS rule."""
    for item in items:
        if "toEndpoints" not in item and "toCIDR" not in item:
            continue
        for pr in item.get("toPorts", []):
            if all(p["port"] == "53" and "endPort" not in p for p in pr["ports"]):
                pr["rules"] = {"dns": [{"matchPattern": "*"}]}


# ---------------------------------------------------------------------------------------------- checks

def to_yaml(policies: list[dict]) -> str:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)     # libyaml's: ~10x faster at 500 policies
    return "".join("---\n" + yaml.dump(p, Dumper=dumper, sort_keys=False) for p in policies)


def check_valid(policies: list[dict]) -> None:
    """Each generated policy as `policy validate` sees it; an invalid one is a bug here, said in one line."""
    from ciliumctl.policy import load, validate

    docs = [load.from_data(p, "generated", i) for i, p in enumerate(policies)]
    for rep in validate.validate_documents(docs, validate.Options()):
        if not rep.valid:
            f = rep.errors[0]
            raise CiliumctlError(f"generated policy {rep.document.name} does not validate: {f.path}: {f.message} "
                                 "(a bug in policy generate; please report it with the flows)")


@dataclass
class Replay:
    connections: int = 0
    allowed: int = 0
    denied: list[str] = field(default_factory=list)
    unprovable: list[str] = field(default_factory=list)     # rest on toFQDNs, which the trace engine cannot see

    @property
    def all_allowed(self) -> bool:
        return not self.denied

    def summary(self, flows: int) -> str:
        text = (f"replayed {self.connections} connection(s) from {flows} flow(s) through the trace engine: "
                + ("all allowed" if self.all_allowed else f"{len(self.denied)} DENIED"))
        if self.unprovable:
            text += (f"; {len(self.unprovable)} rest on toFQDNs (a DNS proxy), which the trace engine does not "
                     "model: not replayed (--no-fqdn gives toCIDR rules it can prove)")
        return text


def replay(gen: Generated, extra_policies: Iterable = ()) -> Replay:
    """Every observed connection through the trace engine (policy.resolve + trace.judge, as `policy trace`):
    the generated policies (and any already applied) must allow each."""
    from ciliumctl.connectivity.matrix import side_verdict
    from ciliumctl.policy import model
    from ciliumctl.policy.resolve import resolve_detailed
    from ciliumctl.policy.trace import lpm_identity

    obs = gen.observed
    eps: list[Endpoint] = []
    ep_of: dict[tuple[Workload, str], int] = {}
    for (w, ip), pod in obs.pods.items():
        ep = Endpoint(id=len(eps) + 1, name=pod["name"] or f"pod-{len(eps) + 1}", namespace=w.namespace,
                      labels=pod["labels"], ipv4=ip if ":" not in ip else "", service_account=pod["sa"])
        eps.append(ep)
        ep_of[(w, ip)] = ep.id
    policies = [model.parse_policy(p) for p in gen.policies] + list(extra_policies)
    res = resolve_detailed(eps, policies, "default", ids.MemoryAllocator())
    state = res.state
    ip_cache: dict[str, int] = {}

    def identity(peer: Peer, ip: str) -> tuple[int, int | None]:
        if peer.kind == "workload":
            ep_id = ep_of[(peer.workload, ip)]     # type: ignore[index]
            return state.endpoints[ep_id].identity, ep_id
        if peer.kind == "entity":
            return ids.RESERVED[peer.value], None
        if ip not in ip_cache:
            ip_cache[ip] = lpm_identity(state.ipcache, ip) if ip else ids.WORLD
        return ip_cache[ip], None

    rep = Replay()
    for c in obs.conns:
        what = f"{_peer_text(c.src, c.src_ip)} -> {_peer_text(c.dst, c.dst_ip)} {c.port}/{c.proto}"
        if c.dst.kind == "fqdn" and gen.fqdn:
            rep.unprovable.append(what)
            continue
        rep.connections += 1
        s_id, s_ep = identity(c.src, c.src_ip)
        d_id, d_ep = identity(c.dst, c.dst_ip)
        ok = True
        if s_ep is not None:
            ok = side_verdict(state.endpoints[s_ep].egress, d_id, c.proto, c.port) == "allow"
        if ok and d_ep is not None:
            ok = side_verdict(state.endpoints[d_ep].ingress, s_id, c.proto, c.port) == "allow"
        if ok:
            rep.allowed += 1
        else:
            rep.denied.append(what)
    return rep


def _peer_text(p: Peer, ip: str) -> str:
    if p.kind == "workload" and p.workload is not None:
        return f"{p.workload.text} ({ip})"
    return f"{p.kind} {p.value}"
