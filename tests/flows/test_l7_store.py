"""The proxies' L7 events in the flow ring (flows/store.py KIND_L7): the agent keeps each event as parsed, with the
metadata snapshot of its arrival and the number of flows it makes (an allowed HTTP request 2: request and response;
a denied one 1), and its flows are built the first time a reader walks that part of the ring, once. Sequence
numbers, order, --last, reverse walks and follow are as if the flows had been stored one by one."""

from __future__ import annotations

from ciliumctl.flows.http import http_flows
from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.server import FLUSH, FlowSource, ObserverService, iter_responses
from ciliumctl.flows.store import KIND_L7, FlowStore
from ciliumctl.node.http_proxy.service import parse_log

from .flowdata import SNAP, rec

T = 1_764_150_000_000_000_000
SEC = 1_000_000_000


def logged(port: int, allowed: bool = True, at_ms: int = T // 1_000_000):
    """An HTTP event as the agent gets it: one of HAProxy's log lines (haproxy_config.LOG_FORMAT), parsed."""
    verdict, code, method = ("FORWARDED", 200, "POST") if allowed else ("DROPPED", 403, "PUT")
    return parse_log(f"{at_ms}|10.200.0.12|{port}|10.200.0.13|80|300|301|ingress|{code}|3|4|{method}|HTTP/1.1|"
                     f"deathstar|{verdict}|/v1/request-landing")


class Builds:
    """http_flows as the agent hands it to the store, counting its calls."""

    def __init__(self):
        self.events: list = []

    def __call__(self, event, snap: Snapshot):
        self.events.append(event)
        return http_flows(event, snap, "node-a")


def add_http(store: FlowStore, event, builds: Builds) -> None:
    store.add_l7(event, event.flow_count, SNAP, builds)


def records(store: FlowStore, *ports: int) -> None:
    store.add_records(b"".join(rec(sport=p, ts_ns=p * SEC) for p in ports), len(ports), SNAP)


def responses(store: FlowStore, **req) -> list[opb.GetFlowsResponse]:
    src = FlowSource(store, node_name="node-a", wall_offset_ns=T, boot_id=7)
    return [opb.GetFlowsResponse.FromString(b) for b in iter_responses(src, opb.GetFlowsRequest(**req))
            if b is not FLUSH]


def names(resps: list[opb.GetFlowsResponse]) -> list[str]:
    """Each flow as `port` (a datapath record's source port) or `request PORT` / `response PORT` (L7)."""
    out = []
    for r in resps:
        f = r.flow
        if f.HasField("l7"):
            client = f.l4.TCP.destination_port if f.is_reply.value else f.l4.TCP.source_port
            out.append(f"{'response' if f.is_reply.value else 'request'} {client}")
        else:
            out.append(str(f.l4.TCP.source_port))
    return out


def test_an_event_takes_as_many_sequence_numbers_as_flows_and_is_not_built_until_read():
    store, builds = FlowStore(100), Builds()
    records(store, 1)
    add_http(store, logged(40001), builds)                  # allowed: request and response
    add_http(store, logged(40002, allowed=False), builds)   # denied: the request only
    records(store, 2)
    assert (store.next_seq, store.seen_flows, store.num_entries()) == (5, 5, 5)
    assert builds.events == []                              # taking it in built nothing
    assert names(responses(store)) == ["1", "request 40001", "response 40001", "request 40002", "2"]
    assert len(builds.events) == 2
    first = [e.record[0].uuid for e in store.entries(0, store.next_seq) if e.kind == KIND_L7]
    again = [r.flow.uuid for r in responses(store) if r.flow.HasField("l7")]
    assert len(builds.events) == 2 and again == first       # built once, kept on the chunk: the same flows


def test_the_snapshot_of_arrival_enriches_the_flows():
    store = FlowStore(10)
    store.add_l7(logged(40001), 2, SNAP, Builds())
    store.add_l7(logged(40002), 2, Snapshot(), Builds())    # the node forgot both pods after the first request
    got = responses(store)
    assert [r.flow.source.pod_name for r in got] == ["tiefighter", "deathstar-6f87d5-x2x9z", "", ""]


def test_last_n_across_a_chunk_of_two_flows():
    store, builds = FlowStore(100), Builds()
    records(store, 1, 2)
    add_http(store, logged(40001), builds)
    records(store, 3)
    assert names(responses(store, number=1)) == ["3"]
    assert builds.events == []                              # --last 1 stopped before the L7 chunk
    assert names(responses(store, number=2)) == ["response 40001", "3"]
    assert names(responses(store, number=3)) == ["request 40001", "response 40001", "3"]
    assert names(responses(store, number=4)) == ["2", "request 40001", "response 40001", "3"]
    assert names(responses(store, number=2, first=True)) == ["1", "2"]
    assert names(responses(store, number=3, first=True)) == ["1", "2", "request 40001"]
    assert len(builds.events) == 1


def test_reverse_walks_a_chunk_newest_first():
    store = FlowStore(100)
    records(store, 1)
    add_http(store, logged(40001), Builds())
    got = [(e.seq, e.kind, e.record[0].is_reply.value if e.kind == KIND_L7 else e.record)
           for e in store.entries(0, store.next_seq, reverse=True)]
    assert [(seq, kind) for seq, kind, _ in got] == [(2, KIND_L7), (1, KIND_L7), (0, 0)]
    assert [reply for _, _, reply in got[:2]] == [True, False]
    assert [(c.kind, lo, hi) for c, lo, hi in store.runs(0, 3, reverse=True)] == [(KIND_L7, 1, 3), (0, 0, 1)]


def test_a_chunk_that_left_the_ring_is_never_built():
    store, builds = FlowStore(3), Builds()
    add_http(store, logged(40001), builds)                  # seq 0-1
    records(store, 1, 2, 3)                                 # the ring now holds seq 2-4 only
    assert names(responses(store)) == ["1", "2", "3"]
    assert names(responses(store, number=10)) == ["1", "2", "3"]
    assert list(store.entries(0, store.next_seq))[0].seq == 2
    assert builds.events == []


def test_half_of_a_chunk_in_the_ring_serves_that_half():
    store, builds = FlowStore(3), Builds()
    add_http(store, logged(40001), builds)                  # seq 0-1
    records(store, 1, 2)                                    # the ring holds seq 1-3: the response and two records
    assert store.oldest_seq == 1 and store.num_entries() == 3
    assert names(responses(store)) == ["response 40001", "1", "2"]
    assert names(responses(store, number=3)) == ["response 40001", "1", "2"]


def test_follow_gets_the_flows_of_an_event_that_arrives_later():
    store = FlowStore(100)
    records(store, 1)
    src = FlowSource(store, node_name="node-a", wall_offset_ns=T, boot_id=7)
    stream = iter_responses(src, opb.GetFlowsRequest(number=1, follow=True))
    assert names([opb.GetFlowsResponse.FromString(next(stream))]) == ["1"]
    assert next(stream) is FLUSH                            # caught up
    add_http(store, logged(40001), Builds())
    add_http(store, logged(40002, allowed=False), Builds())
    got = [next(stream) for _ in range(3)]
    assert names([opb.GetFlowsResponse.FromString(b) for b in got]) == [
        "request 40001", "response 40001", "request 40002"]
    assert next(stream) is FLUSH
    stream.close()


def test_since_and_until_see_the_flows_times():
    store = FlowStore(100)
    at_ms = T // 1_000_000 + 10_000                         # the response comes 3 ms after its request
    add_http(store, logged(40001, at_ms=at_ms), Builds())
    since = opb.GetFlowsRequest().since
    since.FromNanoseconds(at_ms * 1_000_000 + 1)
    assert names(responses(store, since=since)) == ["response 40001"]
    assert names(responses(store, number=5, since=since)) == ["response 40001"]
    until = opb.GetFlowsRequest().until
    until.FromNanoseconds(at_ms * 1_000_000)
    assert names(responses(store, until=until)) == ["request 40001"]


def test_an_event_whose_flows_cannot_be_made_is_skipped_and_the_stream_goes_on(caplog):
    def broken(event, snap):
        raise ValueError("port out of range")

    store = FlowStore(10)
    records(store, 1)
    store.add_l7(logged(40001), 2, SNAP, broken)
    store.add_l7(logged(40002), 1, SNAP, Builds())          # says 1, makes 2: the entries after it would shift
    add_http(store, logged(40003), Builds())
    records(store, 2)
    assert names(responses(store)) == ["1", "request 40003", "response 40003", "2"]
    assert names(responses(store, number=3)) == ["request 40003", "response 40003", "2"]
    assert names(responses(store, number=4)) == ["1", "request 40003", "response 40003", "2"]
    assert [e.seq for e in store.entries(0, store.next_seq)] == [0, 4, 5, 6]
    warnings = [r.getMessage() for r in caplog.records if r.name == "ciliumctl.flows.store"]
    assert len(warnings) == 2 and "port out of range" in warnings[0] and "made 2 flows, stored as 1" in warnings[1]


def test_namespaces_name_those_of_l7_flows():
    store = FlowStore(10)
    add_http(store, logged(40001), Builds())
    got = ObserverService(FlowSource(store, node_name="node-a")).GetNamespaces(opb.GetNamespacesRequest(), None)
    assert [n.namespace for n in got.namespaces] == ["default", "empire"]
