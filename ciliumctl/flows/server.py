"""The Hubble Observer gRPC service (observer.Observer) over the agent's flow ring, plus ciliumctl's batched
variants of GetFlows (ciliumctl.batch.FlowBatches: many responses per message, or their JSON lines as
`hubble observe -o json` prints them) that `ciliumctl observe` prefers for speed.

Flows are made from raw records here, per request (flows.render): decoded, enriched with the metadata snapshot of
the record's batch, filtered (whitelist - blacklist), serialized or rendered as JSON. The proxies' L7 flows are
built from their events when a request first walks them, and kept (store.Chunk.flows)."""

from __future__ import annotations

import os
import time
import uuid as _uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ciliumctl import __version__
from ciliumctl.flows import jsonpb
from ciliumctl.flows.convert import IfNames
from ciliumctl.flows.filters import FlowMatcher
from ciliumctl.flows.meta import MetaWatcher
from ciliumctl.flows.pb.batch import batch_pb2_grpc
from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.pb.observer import observer_pb2_grpc
from ciliumctl.flows.pb.relay import relay_pb2
from ciliumctl.flows.records import R_DADDR, R_SADDR, RECORD_SIZE
from ciliumctl.flows.render import Renderer, varint
from ciliumctl.flows.store import KIND_L7, KIND_LOST, Chunk, FlowStore

VERSION = f"ciliumctl {__version__}"
BATCH_MAX = 256
LINES_MAX = 1024   # JSON lines per FlowLines message (~700 bytes each)
FLUSH = None  # marker from iter_responses: the caller is caught up, send what is pending


@dataclass
class FlowSource:
    """What the server needs from the agent."""

    store: FlowStore
    meta: MetaWatcher | None = None
    node_name: str = ""
    boot_id: int = field(default_factory=lambda: _uuid.uuid4().int >> 64)
    started_ns: int = field(default_factory=time.time_ns)
    wall_offset_ns: int = field(default_factory=lambda: time.time_ns() - time.monotonic_ns())
    address: str = ""
    ifnames: IfNames = field(default_factory=dict[int, str])

    def __post_init__(self):
        self.renderer = Renderer(self.node_name, self.boot_id, self.wall_offset_ns, self.ifnames)

    def response(self, c: Chunk, seq: int, matcher: FlowMatcher | None, as_json: bool = False
                 ) -> tuple[bytes | str | None, int]:
        """(the GetFlowsResponse of entry seq of chunk c, serialized or as its JSON line; None when filtered
        out, event wall time ns)."""
        ren = self.renderer
        if c.kind == KIND_LOST:
            source, num, t = c.lost
            r = ren.lost(source, num, t)
            return (jsonpb.encode(r) + "\n" if as_json else r.SerializeToString()), t
        if c.kind == KIND_L7:
            flows = c.flows()
            if not flows:       # could not be made (store.Chunk.flows): skipped like a flow filtered out
                return None, self.wall_ns(c, seq)
            f = flows[seq - c.start]
            t = f.time.ToNanoseconds()
            if matcher is not None and not matcher(f):
                return None, t
            r = opb.GetFlowsResponse(flow=f, node_name=self.node_name)
            r.time.CopyFrom(f.time)
            return (jsonpb.encode(r) + "\n" if as_json else r.SerializeToString()), t
        off = (seq - c.start) * RECORD_SIZE
        if matcher is not None and not matcher(ren.flow(c.data, off, c.snap, seq)):   # type: ignore[arg-type]
            return None, ren.wall_ns(c.data, off)
        return (ren.json_line if as_json else ren.wire)(c.data, off, c.snap, seq)   # type: ignore[arg-type]

    def wall_ns(self, c: Chunk, seq: int) -> int:
        if c.kind == KIND_LOST:
            return c.lost[2]
        if c.kind == KIND_L7:
            flows = c.flows()
            if not flows:       # none could be made: the event's own time
                return getattr(c.event, "time_ns", 0)
            return flows[seq - c.start].time.ToNanoseconds()
        return self.renderer.wall_ns(c.data, (seq - c.start) * RECORD_SIZE)


def _walk(store: FlowStore, start: int, stop: int, reverse: bool = False):
    """(chunk, seq) of the entries with start <= seq < stop, oldest first (newest first with reverse)."""
    for c, lo, hi in store.runs(start, stop, reverse):
        for seq in (range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)):
            yield c, seq


def iter_responses(src: FlowSource, req: opb.GetFlowsRequest, active=lambda: True, as_json: bool = False):
    """GetFlowsResponse messages for one GetFlows request, serialized (or with as_json: (JSON line, the flow's
    wall time ns or None for a lost-events notice)), with FLUSH markers whenever the stream is caught up. Raises
    ValueError for a request that makes no sense."""
    store = src.store
    if req.first and req.follow:
        raise ValueError("first and follow cannot be combined")
    matcher = FlowMatcher(req.whitelist, req.blacklist) if (req.whitelist or req.blacklist) else None
    since = req.since.ToNanoseconds() if req.HasField("since") else None
    until = req.until.ToNanoseconds() if req.HasField("until") else None
    number = req.number
    follow_from = store.next_seq

    def response(c, seq) -> tuple:
        b, t = src.response(c, seq, matcher, as_json)
        if as_json and b is not None:
            return (b, None if c.kind == KIND_LOST else t), t
        return b, t

    def in_time(t: int) -> bool:
        return (since is None or t >= since) and (until is None or t <= until)

    # history
    if req.first:
        sent = 0
        for c, seq in _walk(store, 0, follow_from):
            b, t = response(c, seq)
            if b is None or not in_time(t):
                continue
            yield b
            sent += 1
            if number and sent >= number:
                break
    elif number:
        picked, nflows = [], 0
        for c, seq in _walk(store, 0, follow_from, reverse=True):
            t = src.wall_ns(c, seq)
            if since is not None and t < since:
                break
            if until is not None and t > until:
                continue
            b, _ = response(c, seq)
            if b is not None:
                picked.append(b)
                nflows += c.kind != KIND_LOST  # lost-event notices ride along, they do not count
                if nflows >= number:
                    break
        yield from reversed(picked)
    elif since is not None or not req.follow:
        timed = since is not None or until is not None
        for c, seq in _walk(store, 0, follow_from):
            if timed and not in_time(src.wall_ns(c, seq)):
                continue
            b, _ = response(c, seq)
            if b is not None:
                yield b
    yield FLUSH
    if not req.follow:
        return

    seq = follow_from
    while active():
        if not store.wait_beyond(seq, 0.5):
            continue
        oldest = store.oldest_seq
        if seq < oldest:  # this client fell behind the ring: say how much it missed
            r = src.renderer.lost(flow_pb2.HUBBLE_RING_BUFFER, oldest - seq, time.time_ns())
            yield (jsonpb.encode(r) + "\n", None) if as_json else r.SerializeToString()
            seq = oldest
        for c, s in _walk(store, seq, store.next_seq):
            seq = s + 1
            b, t = response(c, s)
            if until is not None and t > until:
                yield FLUSH
                return
            if b is not None and (since is None or t >= since):
                yield b
        yield FLUSH


class ObserverService(observer_pb2_grpc.ObserverServicer):
    def __init__(self, src: FlowSource):
        self.src = src

    def GetFlows(self, request, context):
        try:
            for b in iter_responses(self.src, request, context.is_active):
                if b is not None:
                    yield b
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))

    def ServerStatus(self, request, context):
        st = self.src.store
        uptime = time.time_ns() - self.src.started_ns
        r = opb.ServerStatusResponse(num_flows=st.num_entries(), max_flows=st.capacity, seen_flows=st.seen_flows,
                                     uptime_ns=uptime, version=VERSION,
                                     flows_rate=st.flows_rate())
        r.num_connected_nodes.value = 1
        r.num_unavailable_nodes.value = 0
        return r

    def GetNodes(self, request, context):
        st = self.src.store
        node = opb.Node(name=self.src.node_name, version=VERSION, address=self.src.address,
                        state=relay_pb2.NODE_CONNECTED, uptime_ns=time.time_ns() - self.src.started_ns,
                        num_flows=st.num_entries(), max_flows=st.capacity, seen_flows=st.seen_flows)
        node.tls.enabled = False
        return opb.GetNodesResponse(nodes=[node])

    def GetNamespaces(self, request, context):
        namespaces = set()
        snap = self.src.meta.refresh() if self.src.meta else None
        if snap is not None:
            namespaces |= set(snap.namespaces)
        import socket as _s
        for e in self.src.store.entries(0, self.src.store.next_seq):
            if e.kind == KIND_LOST:
                continue
            if e.kind == KIND_L7:
                namespaces.update(ep.namespace for ep in (e.record[0].source, e.record[0].destination)
                                  if ep.namespace)
                continue
            for addr in (e.record[R_SADDR], e.record[R_DADDR]):
                info = e.snap.by_ip.get(_s.inet_ntoa(addr)) if e.snap else None
                if info is not None:
                    namespaces.add(info.namespace)
        return opb.GetNamespacesResponse(
            namespaces=[opb.Namespace(namespace=ns) for ns in sorted(namespaces)])


class BatchService(batch_pb2_grpc.FlowBatchesServicer):
    def __init__(self, src: FlowSource):
        self.src = src

    def GetFlowBatches(self, request, context):
        parts: list[bytes] = []
        try:
            for b in iter_responses(self.src, request, context.is_active):
                if b is None:
                    if parts:
                        yield b"".join(parts)
                        parts = []
                    continue
                parts.append(b"\x0a" + varint(len(b)) + b)  # FlowBatch.responses (field 1)
                if len(parts) >= BATCH_MAX:
                    yield b"".join(parts)
                    parts = []
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if parts:
            yield b"".join(parts)

    def GetFlowLines(self, request, context):
        lines: list[str] = []
        last = 0

        def batch() -> bytes:
            text = "".join(lines).encode()
            lines.clear()
            # FlowLines{text = 1, last_flow_time_ns = 2}
            return b"\x0a" + varint(len(text)) + text + (b"\x10" + varint(last) if last > 0 else b"")

        try:
            for item in iter_responses(self.src, request, context.is_active, as_json=True):
                if item is None:
                    if lines:
                        yield batch()
                    continue
                line, t = item
                lines.append(line)
                if t is not None:
                    last = t
                if len(lines) >= LINES_MAX:
                    yield batch()
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if lines:
            yield batch()


def _raw(b: bytes) -> bytes:
    return b


# grpc.health.v1.Health, which `hubble status` asks first ("Healthcheck (via ...): Ok"). Its messages are tiny:
# HealthCheckRequest{string service = 1}, HealthCheckResponse{ServingStatus status = 1}, SERVING = 1.
_SERVING = b"\x08\x01"


def _health_check(request: bytes, context) -> bytes:
    return _SERVING


def _health_watch(request: bytes, context):
    yield _SERVING
    while context.is_active():
        time.sleep(1.0)


def _handlers(src: FlowSource):
    obs, batch = ObserverService(src), BatchService(src)
    observer = grpc.method_handlers_generic_handler("observer.Observer", {
        "GetFlows": grpc.unary_stream_rpc_method_handler(
            obs.GetFlows, request_deserializer=opb.GetFlowsRequest.FromString, response_serializer=_raw),
        "ServerStatus": grpc.unary_unary_rpc_method_handler(
            obs.ServerStatus, request_deserializer=opb.ServerStatusRequest.FromString,
            response_serializer=opb.ServerStatusResponse.SerializeToString),
        "GetNodes": grpc.unary_unary_rpc_method_handler(
            obs.GetNodes, request_deserializer=opb.GetNodesRequest.FromString,
            response_serializer=opb.GetNodesResponse.SerializeToString),
        "GetNamespaces": grpc.unary_unary_rpc_method_handler(
            obs.GetNamespaces, request_deserializer=opb.GetNamespacesRequest.FromString,
            response_serializer=opb.GetNamespacesResponse.SerializeToString),
    })
    batches = grpc.method_handlers_generic_handler("ciliumctl.batch.FlowBatches", {
        "GetFlowBatches": grpc.unary_stream_rpc_method_handler(
            batch.GetFlowBatches, request_deserializer=opb.GetFlowsRequest.FromString, response_serializer=_raw),
        "GetFlowLines": grpc.unary_stream_rpc_method_handler(
            batch.GetFlowLines, request_deserializer=opb.GetFlowsRequest.FromString, response_serializer=_raw),
    })
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(_health_check, request_deserializer=_raw,
                                                     response_serializer=_raw),
        "Watch": grpc.unary_stream_rpc_method_handler(_health_watch, request_deserializer=_raw,
                                                      response_serializer=_raw),
    })
    return observer, batches, health


class ObserverServer:
    """gRPC server on a unix socket (mode 0660) and optionally a TCP address."""

    def __init__(self, src: FlowSource, socket_path: Path | None, tcp_listen: str | None = None,
                 max_workers: int = 32):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hubble"),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers(_handlers(src))
        self.socket_path = socket_path
        if socket_path is not None:
            socket_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                socket_path.unlink()
            except FileNotFoundError:
                pass
            self.server.add_insecure_port(f"unix://{socket_path}")
        self.tcp_port = None
        if tcp_listen:
            self.tcp_port = self.server.add_insecure_port(tcp_listen)
            if not self.tcp_port:
                raise OSError(f"cannot listen on {tcp_listen}")

    def start(self) -> None:
        self.server.start()
        if self.socket_path is not None:
            os.chmod(self.socket_path, 0o660)

    def stop(self, grace: float = 0.5) -> None:
        self.server.stop(grace).wait()
        if self.socket_path is not None:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
