"""The Observer gRPC API over a unix socket in a temp dir, through a plain grpc client (the generated stubs):
GetFlows number/first/follow/since/until/whitelist/blacklist, lost events, ServerStatus, GetNodes,
GetNamespaces, and ciliumctl's batched GetFlows giving the same answers."""

import os
import stat
import threading
import time

import grpc
import pytest

from ciliumctl.flows.pb.batch import batch_pb2, batch_pb2_grpc
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.pb.observer import observer_pb2_grpc
from ciliumctl.flows.server import FlowSource, ObserverServer
from ciliumctl.flows.store import FlowStore

from .flowdata import SNAP, ip, rec

T0 = 1_764_150_000_000_000_000
SEC = 1_000_000_000


class Node:
    def __init__(self, tmp_path, capacity=100):
        self.store = FlowStore(capacity)
        self.src = FlowSource(self.store, node_name="node-a", wall_offset_ns=T0, boot_id=7)
        self.sock = tmp_path / "hubble.sock"
        self.server = ObserverServer(self.src, self.sock)
        self.server.start()
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.stub = observer_pb2_grpc.ObserverStub(self.channel)
        self.batches = batch_pb2_grpc.FlowBatchesStub(self.channel)

    def add(self, *records):
        self.store.add_records(b"".join(records), len(records), SNAP)

    def flows(self, **req):
        return list(self.stub.GetFlows(opb.GetFlowsRequest(**req), timeout=10))

    def close(self):
        self.channel.close()
        self.server.stop()


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    yield n
    n.close()


def ports(resps):
    return [r.flow.l4.TCP.source_port or r.flow.l4.UDP.source_port for r in resps if r.HasField("flow")]


def fill(node, n, start=0, **kw):
    node.add(*[rec(ts_ns=(start + i) * SEC, sport=1000 + start + i, **kw) for i in range(n)])


def test_last_first_and_default_order(node):
    fill(node, 30)
    assert ports(node.flows(number=5)) == [1025, 1026, 1027, 1028, 1029]       # the last 5, oldest first
    assert ports(node.flows(number=3, first=True)) == [1000, 1001, 1002]
    assert ports(node.flows(number=500)) == list(range(1000, 1030))
    r = node.flows(number=1)[0]
    assert r.node_name == "node-a" and r.time == r.flow.time
    assert r.flow.time.ToNanoseconds() == T0 + 29 * SEC
    assert r.flow.source.pod_name == "tiefighter" and r.flow.destination.namespace == "empire"


def test_ring_keeps_last_capacity(tmp_path):
    n = Node(tmp_path, capacity=10)
    try:
        fill(n, 7)
        fill(n, 7, start=7)
        assert ports(n.flows()) == list(range(1004, 1014))   # number 0, no follow: all in the buffer
        st = n.stub.ServerStatus(opb.ServerStatusRequest())
        assert (st.num_flows, st.max_flows, st.seen_flows) == (10, 10, 14)
    finally:
        n.close()


def test_whitelist_blacklist(node):
    node.add(rec(sport=1), rec(sport=2, type=1, subtype=133, verdict=2, proto=17),
             rec(sport=3, saddr=ip("10.200.0.14"), src_identity=302), rec(sport=4, proto=17))
    wl = [pb.FlowFilter(verdict=[pb.DROPPED]), pb.FlowFilter(source_pod=["default/xwing"])]
    assert ports(node.flows(whitelist=wl)) == [2, 3]
    assert ports(node.flows(whitelist=wl, blacklist=[pb.FlowFilter(protocol=["udp"])])) == [3]
    assert ports(node.flows(blacklist=[pb.FlowFilter(protocol=["udp"])])) == [1, 3]
    # number counts matching flows only
    assert ports(node.flows(number=1, whitelist=[pb.FlowFilter(protocol=["udp"])])) == [4]


def test_since_until(node):
    fill(node, 10)
    req = opb.GetFlowsRequest()
    req.since.FromNanoseconds(T0 + 3 * SEC)
    req.until.FromNanoseconds(T0 + 5 * SEC)
    assert ports(node.stub.GetFlows(req)) == [1003, 1004, 1005]
    req = opb.GetFlowsRequest(number=2)
    req.since.FromNanoseconds(T0 + 8 * SEC)
    assert ports(node.stub.GetFlows(req)) == [1008, 1009]


def test_lost_events_are_streamed(node):
    fill(node, 2)
    node.store.add_lost(pb.PERF_EVENT_RING_BUFFER, 17)
    fill(node, 1, start=2)
    resps = node.flows()
    kinds = [r.WhichOneof("response_types") for r in resps]
    assert kinds == ["flow", "flow", "lost_events", "flow"]
    le = resps[2].lost_events
    assert (le.source, le.num_events_lost) == (pb.PERF_EVENT_RING_BUFFER, 17)


def _follow(node, req, want, out):
    call = node.stub.GetFlows(req)
    for r in call:
        out.append(r)
        if len(out) >= want:
            call.cancel()
            return


def test_follow_streams_new_flows(node):
    fill(node, 5)
    got = []
    t = threading.Thread(target=_follow, args=(node, opb.GetFlowsRequest(follow=True, number=2), 6, got))
    t.start()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:   # history delivered: the stream is following now
        time.sleep(0.01)
    fill(node, 2, start=5)
    time.sleep(0.2)
    fill(node, 2, start=7)
    t.join(10)
    assert not t.is_alive()
    assert ports(got) == [1003, 1004, 1005, 1006, 1007, 1008]


def test_follow_without_number_starts_now(node):
    fill(node, 5)
    got = []
    t = threading.Thread(target=_follow, args=(node, opb.GetFlowsRequest(follow=True), 1, got))
    t.start()
    time.sleep(1.0)  # the stream is open (nothing to show for it until a flow comes)
    fill(node, 1, start=42)
    t.join(10)
    assert ports(got) == [1042]


def test_follower_behind_the_ring_gets_a_lost_event(tmp_path):
    n = Node(tmp_path, capacity=10)
    try:
        got = []
        t = threading.Thread(target=_follow, args=(n, opb.GetFlowsRequest(follow=True), 11, got))
        t.start()
        time.sleep(1.0)  # the stream is open
        fill(n, 25)           # one burst larger than the ring: 15 entries are gone before the client reads
        t.join(10)
        assert got[0].lost_events.source == pb.HUBBLE_RING_BUFFER
        assert got[0].lost_events.num_events_lost == 15
        assert ports(got[1:]) == list(range(1015, 1025))
    finally:
        n.close()


def test_first_with_follow_is_invalid(node):
    with pytest.raises(grpc.RpcError) as err:
        node.flows(first=True, follow=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_nodes_namespaces(node, tmp_path):
    fill(node, 3)
    st = node.stub.ServerStatus(opb.ServerStatusRequest())
    assert st.num_flows == 3 and st.max_flows == 100 and st.seen_flows == 3
    assert st.num_connected_nodes.value == 1 and st.num_unavailable_nodes.value == 0
    assert st.version.startswith("ciliumctl ")
    assert st.flows_rate == 3.0          # flows over the last minute, per second (at least 1 s of window)
    nodes = node.stub.GetNodes(opb.GetNodesRequest()).nodes
    assert [(x.name, x.state, x.num_flows) for x in nodes] == [("node-a", 1, 3)]
    ns = node.stub.GetNamespaces(opb.GetNamespacesRequest()).namespaces
    assert [x.namespace for x in ns] == ["default", "empire"]
    assert stat.S_IMODE(os.stat(node.sock).st_mode) == 0o660


def test_batches_equal_single_flow_stream(tmp_path):
    node = Node(tmp_path, capacity=1000)
    fill(node, 600)
    node.store.add_lost(pb.PERF_EVENT_RING_BUFFER, 3)
    fill(node, 10, start=600, proto=17)
    for req in (opb.GetFlowsRequest(number=100), opb.GetFlowsRequest(),
                opb.GetFlowsRequest(whitelist=[pb.FlowFilter(protocol=["udp"])])):
        single = [r.SerializeToString() for r in node.stub.GetFlows(req)]
        batches = list(node.batches.GetFlowBatches(req))
        assert all(isinstance(b, batch_pb2.FlowBatch) for b in batches)
        batched = [r.SerializeToString() for b in batches for r in b.responses]
        assert batched == single and single
    assert len(list(node.batches.GetFlowBatches(opb.GetFlowsRequest()))) == 3   # 611 responses, 256 a batch
    node.close()


def test_grpc_health_check_answers_serving(node):
    """`hubble status` starts with a gRPC health check (grpc.health.v1.Health/Check, service "")."""
    check = node.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b)
    assert check(b"", timeout=5) == b"\x08\x01"   # HealthCheckResponse{status: SERVING}


def test_tcp_listener_serves_the_same_api(tmp_path):
    store = FlowStore(10)
    server = ObserverServer(FlowSource(store, node_name="node-a"), None, "127.0.0.1:0")
    server.start()
    try:
        store.add_records(rec(sport=7), 1, SNAP)
        with grpc.insecure_channel(f"127.0.0.1:{server.tcp_port}") as ch:
            got = list(observer_pb2_grpc.ObserverStub(ch).GetFlows(opb.GetFlowsRequest(), timeout=10))
        assert ports(got) == [7]
    finally:
        server.stop()


def test_metrics_text(node):
    from ciliumctl.flows.metrics import render

    node.add(rec(), rec(), rec(type=1, subtype=181, verdict=2, proto=17), rec(type=4, subtype=0, verdict=1),
             rec(type=5, subtype=133, verdict=2, direction=2, match_type=0))
    node.store.add_lost(pb.PERF_EVENT_RING_BUFFER, 4)
    text = render(node.store)
    for line in ['hubble_flows_processed_total{type="PolicyVerdict",subtype="",verdict="FORWARDED"} 2',
                 'hubble_flows_processed_total{type="PolicyVerdict",subtype="",verdict="DROPPED"} 1',
                 'hubble_flows_processed_total{type="Drop",subtype="",verdict="DROPPED"} 1',
                 'hubble_flows_processed_total{type="Trace",subtype="to-endpoint",verdict="FORWARDED"} 1',
                 'hubble_drop_total{reason="POLICY_DENY",protocol="UDP"} 1',
                 'hubble_policy_verdicts_total{direction="ingress",match="l3-l4",action="forwarded"} 2',
                 'hubble_policy_verdicts_total{direction="egress",match="none",action="dropped"} 1',
                 'hubble_lost_events_total{source="perf_event_ring_buffer"} 4',
                 "hubble_seen_flows_total 5", "hubble_flows_in_buffer 6"]:
        assert line in text.splitlines(), line
