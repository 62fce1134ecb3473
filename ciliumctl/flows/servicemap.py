"""The service map of `ciliumctl ui`: flows aggregated into nodes (workloads, reserved identities, external
peers) and edges (source -> destination, protocol, port) with counts per verdict, as Hubble UI draws them
(hubble-ui's backend keys a link by source, destination, port and protocol and keeps the set of its verdicts:
backend/domain/link/link.go). Aggregated here, not in the page, so the page holds thousands of flows/s: it gets
the nodes and edges that changed, a few times a second. The last flows of each edge are kept for the flow table.

Thread-safe: one feeder adds flows, HTTP handlers read snapshots and deltas."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from ciliumctl.base.errors import UsageError
from ciliumctl.flows import filters, jsonpb, names, printers
from ciliumctl.flows.pb.flow import flow_pb2 as pb

FLOWS_PER_EDGE = 50      # the flow table of one edge: its last flows
RECENT_FLOWS = 500       # the flow table with no edge selected
MAX_EDGES = 2000         # beyond this, flows of new edges are counted (overflow) but not drawn
MAX_LABELS = 12          # labels shown per node
SEP = "\x1f"             # between the parts of an id: no name has it, so two peers never share an id

# verdict classes the page colours; the colour of an edge is the worst it has seen (as hubble-ui: a link with a
# dropped flow is red)
FORWARDED, DROPPED, AUDIT, OTHER = "forwarded", "dropped", "audit", "other"
_VERDICT_CLASS = {pb.FORWARDED: FORWARDED, pb.REDIRECTED: FORWARDED, pb.TRANSLATED: FORWARDED,
                  pb.DROPPED: DROPPED, pb.ERROR: DROPPED, pb.AUDIT: AUDIT}
_SEVERITY = {OTHER: 0, FORWARDED: 1, AUDIT: 2, DROPPED: 3}
_APP_LABELS = ("k8s:app.kubernetes.io/name=", "k8s:app=")
_VERDICT_NAMES = {v.number: v.name for v in pb.Verdict.DESCRIPTOR.values}
_DIRECTIONS = {v.number: v.name for v in pb.TrafficDirection.DESCRIPTOR.values}


@dataclass
class MapNode:
    id: str
    label: str
    namespace: str          # "" for reserved identities and peers outside the cluster
    kind: str               # workload | reserved | external
    identity: int
    labels: list[str]
    flows: int = 0
    version: int = 0

    def as_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "namespace": self.namespace, "kind": self.kind,
                "identity": self.identity, "labels": self.labels, "flows": self.flows}


@dataclass
class MapEdge:
    id: str
    source: str
    target: str
    protocol: str
    port: int
    counts: dict[str, int] = field(default_factory=lambda: {FORWARDED: 0, DROPPED: 0, AUDIT: 0, OTHER: 0})
    verdict: str = OTHER
    drop_reasons: set[str] = field(default_factory=set)
    last_seen: str = ""
    flows: deque = field(default_factory=lambda: deque(maxlen=FLOWS_PER_EDGE))
    version: int = 0

    def as_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "target": self.target, "protocol": self.protocol,
                "port": self.port, "counts": dict(self.counts), "verdict": self.verdict,
                "drop_reasons": sorted(self.drop_reasons), "last_seen": self.last_seen}


def _labels(ep) -> list[str]:
    return list(ep.labels)[:MAX_LABELS]


def peer(ep, ip: str, dns_names) -> tuple[str, str, str, str]:
    """(id, label, namespace, kind) of one side of a flow: a workload by namespace and workload name (its
    app label or pod name when it has no workload), a reserved identity by name, a peer outside by DNS name,
    else by address."""
    if ep.pod_name or ep.workloads:
        name = ep.workloads[0].name if ep.workloads else ""
        if not name:
            name = next((lbl.split("=", 1)[1] for pre in _APP_LABELS for lbl in ep.labels if lbl.startswith(pre)),
                        ep.pod_name)
        return f"w:{ep.namespace}{SEP}{name}", name, ep.namespace, "workload"
    reserved = names.RESERVED_IDENTITIES.get(ep.identity) if ep.identity else None
    if dns_names:
        return f"dns:{dns_names[0]}", dns_names[0], "", "external"
    if reserved is not None:
        return f"r:{reserved}", reserved, "", "reserved"
    for lbl in ep.labels:
        if lbl.startswith("reserved:"):
            return f"r:{lbl[9:]}", lbl[9:], "", "reserved"
    if ep.identity:
        return f"id:{ep.identity}", f"identity {ep.identity}", "", "external"
    return f"ip:{ip}", ip or "unknown", "", "external"


def _l4(f) -> tuple[str, int]:
    which = f.l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        return which, getattr(f.l4, which).destination_port
    return which or "-", 0


def flow_row(f) -> dict:
    """One line of the page's flow table: hubble observe's table columns, plain strings (the page escapes)."""
    src, dst = printers.hostnames(f)
    return {"time": jsonpb.timestamp(f.time.seconds, f.time.nanos), "source": src, "destination": dst,
            "type": printers.flow_type(f), "verdict": printers.verdict_text(f),
            "verdict_class": _VERDICT_CLASS.get(f.verdict, OTHER),
            "direction": _DIRECTIONS.get(f.traffic_direction, ""),
            "drop_reason": pb.DropReason.Name(f.drop_reason_desc) if f.drop_reason_desc else "",
            "policies": printers.policy_names(f), "summary": f.Summary, "node": f.node_name,
            "is_reply": f.is_reply.value if f.HasField("is_reply") else None}


class ServiceMap:
    def __init__(self):
        self._lock = threading.Lock()
        self.version = 0
        self.nodes: dict[str, MapNode] = {}
        self.edges: dict[str, MapEdge] = {}
        self.recent: deque = deque(maxlen=RECENT_FLOWS)
        self.total = 0         # flows received
        self.replies = 0       # reply flows: counted, drawn as their request's edge (hubble-ui skips them too)
        self.lost = 0          # events the server says it lost
        self.overflow = 0      # flows of edges beyond MAX_EDGES

    # ---------------------------------------------------------------- feeding

    def add_many(self, responses) -> None:
        """GetFlowsResponse messages (flows and lost-events notices)."""
        with self._lock:
            self.version += 1
            for r in responses:
                which = r.WhichOneof("response_types")
                if which == "flow":
                    self._add(r.flow)
                elif which == "lost_events":
                    self.lost += r.lost_events.num_events_lost

    def _node(self, ep, who: tuple[str, str, str, str]) -> None:
        nid, label, ns, kind = who
        node = self.nodes.get(nid)
        if node is None:
            node = self.nodes[nid] = MapNode(nid, label, ns, kind, ep.identity, _labels(ep))
        node.flows += 1
        node.version = self.version

    def _add(self, f) -> None:
        self.total += 1
        self.recent.append(f)
        if f.HasField("is_reply") and f.is_reply.value:
            self.replies += 1
            return
        ip = f.IP
        proto, port = _l4(f)
        src = peer(f.source, ip.source, f.source_names)
        dst = peer(f.destination, ip.destination, f.destination_names)
        eid = f"{src[0]}{SEP}{dst[0]}{SEP}{proto}/{port}"
        edge = self.edges.get(eid)
        if edge is None:
            if len(self.edges) >= MAX_EDGES:
                self.overflow += 1
                return
            edge = self.edges[eid] = MapEdge(eid, src[0], dst[0], proto, port)
        self._node(f.source, src)
        self._node(f.destination, dst)
        verdict = _VERDICT_CLASS.get(f.verdict, OTHER)
        edge.counts[verdict] += 1
        if _SEVERITY[verdict] > _SEVERITY[edge.verdict]:
            edge.verdict = verdict
        if f.drop_reason_desc:
            edge.drop_reasons.add(pb.DropReason.Name(f.drop_reason_desc))
        edge.last_seen = jsonpb.timestamp(f.time.seconds, f.time.nanos)
        edge.flows.append(f)
        edge.version = self.version

    # ---------------------------------------------------------------- reading

    def stats(self) -> dict:
        return {"flows": self.total, "replies": self.replies, "lost": self.lost, "overflow": self.overflow,
                "nodes": len(self.nodes), "edges": len(self.edges)}

    def delta(self, since: int = 0) -> dict:
        """The nodes and edges changed after version `since` (all of them for 0), the version to ask from next,
        and the counters."""
        with self._lock:
            return {"version": self.version, "stats": self.stats(),
                    "nodes": [n.as_dict() for n in self.nodes.values() if n.version > since],
                    "edges": [e.as_dict() for e in self.edges.values() if e.version > since]}

    def flow_rows(self, edge_id: str | None, args: list[str], limit: int = 100) -> list[dict]:
        """The last flows of one edge (all edges when None), newest first, that pass hubble observe's filter
        flags (`--verdict DROPPED --not --type trace`). Unknown edge: []. Bad flags: UsageError."""
        for tok in args:   # filters_from_args passes over what is not a filter flag: here that is a typo
            flag = tok.partition("=")[0]
            if flag.startswith("-") and len(flag) > 1 and flag not in filters.FILTER_FLAGS and flag != "--not":
                raise UsageError(f"unknown filter flag {flag!r}: use hubble observe's, e.g. --verdict DROPPED, "
                                 "--to-port 80, --not --type trace")
        white, black = filters.filters_from_args(args)
        match = filters.FlowMatcher(white, black)
        with self._lock:
            if edge_id is None:
                flows = list(self.recent)
            else:
                edge = self.edges.get(edge_id)
                flows = list(edge.flows) if edge is not None else []
        rows = []
        for f in reversed(flows):
            if match(f):
                rows.append(flow_row(f))
                if len(rows) >= limit:
                    break
        return rows


__all__ = ["ServiceMap", "flow_row", "peer", "FORWARDED", "DROPPED", "AUDIT", "OTHER"]
