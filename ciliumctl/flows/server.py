"""The Hubble Observer gRPC service (observer.Observer) over the agent's flow ring, plus ciliumctl's batched
variant of GetFlows (ciliumctl.batch.FlowBatches) that `ciliumctl observe` prefers for speed.

Flows are built from raw records here, per request: decode, enrich with the metadata snapshot of the record's
batch, filter (whitelist - blacklist), serialize."""

from __future__ import annotations

import os
import time
import uuid as _uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ciliumctl import __version__
from ciliumctl.flows.convert import IfNames, record_to_flow
from ciliumctl.flows.filters import FlowMatcher
from ciliumctl.flows.meta import MetaWatcher
from ciliumctl.flows.pb.batch import batch_pb2_grpc
from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.pb.observer import observer_pb2_grpc
from ciliumctl.flows.pb.relay import relay_pb2
from ciliumctl.flows.records import R_DADDR, R_SADDR, R_TS
from ciliumctl.flows.store import KIND_LOST, Entry, FlowStore

VERSION = f"ciliumctl {__version__}"
BATCH_MAX = 256
FLUSH = None  # marker from iter_responses: the caller is caught up, send what is pending


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


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
        self._templates: dict = {}
        self._node_field = b"\xc2\x3e" + _varint(len(self.node_name.encode())) + self.node_name.encode()

    def response_bytes(self, entry: Entry, matcher: FlowMatcher | None) -> tuple[bytes | None, int]:
        """(serialized GetFlowsResponse or None when filtered out, event wall time ns)."""
        if entry.kind == KIND_LOST:
            source, num, t = entry.lost
            r = opb.GetFlowsResponse(lost_events=flow_pb2.LostEvent(source=source, num_events_lost=num),
                                     node_name=self.node_name)
            r.time.FromNanoseconds(t)
            return r.SerializeToString(), t
        rec, snap = entry.record, entry.snap
        assert rec is not None and snap is not None   # every entry but a lost one has both
        flow = record_to_flow(rec, snap, self.wall_offset_ns, self.node_name, self.boot_id, entry.seq,
                              self.ifnames, self._templates)
        t = rec[R_TS] + self.wall_offset_ns
        if matcher is not None and not matcher(flow):
            return None, t
        fb = flow.SerializeToString()
        tb = flow.time.SerializeToString()
        # GetFlowsResponse{flow=1, node_name=1000, time=1001} written directly: cheaper than a second message
        return (b"\x0a" + _varint(len(fb)) + fb + self._node_field + b"\xca\x3e" + _varint(len(tb)) + tb), t

    def wall_ns(self, entry: Entry) -> int:
        if entry.kind == KIND_LOST:
            return entry.lost[2]
        assert entry.record is not None
        return entry.record[R_TS] + self.wall_offset_ns


def iter_responses(src: FlowSource, req: opb.GetFlowsRequest, active=lambda: True):
    """Serialized GetFlowsResponse messages for one GetFlows request, with FLUSH markers whenever the stream is
    caught up. Raises ValueError for a request that makes no sense."""
    store = src.store
    if req.first and req.follow:
        raise ValueError("first and follow cannot be combined")
    matcher = FlowMatcher(req.whitelist, req.blacklist) if (req.whitelist or req.blacklist) else None
    since = req.since.ToNanoseconds() if req.HasField("since") else None
    until = req.until.ToNanoseconds() if req.HasField("until") else None
    number = req.number
    follow_from = store.next_seq

    def in_time(t: int) -> bool:
        return (since is None or t >= since) and (until is None or t <= until)

    # history
    if req.first:
        sent = 0
        for e in store.entries(0, follow_from):
            b, t = src.response_bytes(e, matcher)
            if b is None or not in_time(t):
                continue
            yield b
            sent += 1
            if number and sent >= number:
                break
    elif number:
        picked, nflows = [], 0
        for e in store.entries(0, follow_from, reverse=True):
            t = src.wall_ns(e)
            if since is not None and t < since:
                break
            if until is not None and t > until:
                continue
            b, _ = src.response_bytes(e, matcher)
            if b is not None:
                picked.append(b)
                nflows += e.kind != KIND_LOST  # lost-event notices ride along, they do not count
                if nflows >= number:
                    break
        for b in reversed(picked):
            yield b
    elif since is not None or not req.follow:
        for e in store.entries(0, follow_from):
            t = src.wall_ns(e)
            if not in_time(t):
                continue
            b, _ = src.response_bytes(e, matcher)
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
            r = opb.GetFlowsResponse(lost_events=flow_pb2.LostEvent(
                source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=oldest - seq), node_name=src.node_name)
            r.time.FromNanoseconds(time.time_ns())
            yield r.SerializeToString()
            seq = oldest
        for e in store.entries(seq, store.next_seq):
            seq = e.seq + 1
            b, t = src.response_bytes(e, matcher)
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
                parts.append(b"\x0a" + _varint(len(b)) + b)  # FlowBatch.responses (field 1)
                if len(parts) >= BATCH_MAX:
                    yield b"".join(parts)
                    parts = []
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if parts:
            yield b"".join(parts)


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
