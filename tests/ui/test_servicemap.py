"""The service map's aggregation (flows.servicemap), on flows built as a Hubble server sends them: nodes by
namespace and workload, peers outside the cluster, one edge per source, destination, protocol and port with
counts per verdict, replies folded away, the flow table with hubble observe's filter flags."""

import pytest
from support.fake_hubble import Peer, flow

from ciliumctl.base.errors import UsageError
from ciliumctl.flows import servicemap
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb

DEATH = Peer("10.200.0.1", "deathstar", "default", ["k8s:org=empire", "k8s:class=deathstar"], 300)
TIE = Peer("10.200.0.2", "tiefighter", "default", ["k8s:org=empire"], 301)
XWING = Peer("10.200.0.3", "xwing", "rebels", ["k8s:org=alliance"], 302)
WORLD = Peer("1.1.1.1", labels=["reserved:world"], identity=2)


def fed(*flows):
    smap = servicemap.ServiceMap()
    smap.add_many([opb.GetFlowsResponse(flow=f) for f in flows])
    return smap


def edge(smap, src, dst, proto="TCP", port=80):
    sep = servicemap.SEP
    return smap.edges[f"w:{src.namespace}{sep}{src.pod}{sep}w:{dst.namespace}{sep}{dst.pod}{sep}{proto}/{port}"]


def test_workloads_grouped_by_namespace_with_one_edge_per_port_and_counts_per_verdict():
    smap = fed(flow(TIE, DEATH), flow(TIE, DEATH), flow(XWING, DEATH),
               flow(XWING, DEATH, verdict=pb.DROPPED, drop_reason=133, event_type=1),
               flow(TIE, DEATH, port=443, verdict=pb.AUDIT))
    nodes = {n["label"]: n for n in smap.delta()["nodes"]}
    assert sorted(nodes) == ["deathstar", "tiefighter", "xwing"]
    assert (nodes["xwing"]["namespace"], nodes["deathstar"]["namespace"]) == ("rebels", "default")
    assert nodes["deathstar"]["labels"] == ["k8s:org=empire", "k8s:class=deathstar"]
    tie = edge(smap, TIE, DEATH)
    assert (tie.counts, tie.verdict) == ({"forwarded": 2, "dropped": 0, "audit": 0, "other": 0}, "forwarded")
    x = edge(smap, XWING, DEATH)   # a drop makes the edge red, whatever came before (as hubble-ui)
    assert (x.counts["forwarded"], x.counts["dropped"], x.verdict) == (1, 1, "dropped")
    assert x.drop_reasons == {"POLICY_DENIED"}
    assert edge(smap, TIE, DEATH, port=443).verdict == "audit"
    assert smap.stats()["flows"] == 5 and smap.stats()["edges"] == 3


def test_replies_are_counted_but_draw_no_edge_back():
    smap = fed(flow(TIE, DEATH), flow(DEATH, TIE, reply=True))
    assert len(smap.edges) == 1 and smap.replies == 1 and smap.total == 2


def test_peers_outside_the_cluster_by_dns_name_reserved_identity_or_address():
    dns = Peer("142.250.0.1", labels=["reserved:world"], identity=2)
    f = flow(TIE, dns, port=443)
    f.destination_names.append("api.example.com")
    unknown = Peer("192.0.2.7")
    smap = fed(f, flow(TIE, WORLD, port=53), flow(unknown, DEATH))
    kinds = {(n.label, n.kind, n.namespace) for n in smap.nodes.values()}
    assert {("api.example.com", "external", ""), ("world", "reserved", ""), ("192.0.2.7", "external", "")} <= kinds


def test_a_workload_is_named_by_its_workload_then_its_app_label():
    web1 = Peer("10.0.0.5", "web-7d9f-abcde", "shop", ["k8s:app=web"], 500)
    web2 = Peer("10.0.0.6", "web-7d9f-fghij", "shop", ["k8s:app=web"], 500)
    f = flow(web1, DEATH)
    smap = fed(f, flow(web2, DEATH))
    assert [n.label for n in smap.nodes.values() if n.namespace == "shop"] == ["web"]
    assert len(smap.edges) == 1 and next(iter(smap.edges.values())).counts["forwarded"] == 2
    f.source.workloads.add(name="frontend", kind="Deployment")
    assert servicemap.peer(f.source, "", [])[1] == "frontend"


def test_delta_carries_only_what_changed_since_a_version():
    smap = fed(flow(TIE, DEATH))
    v = smap.delta()["version"]
    smap.add_many([opb.GetFlowsResponse(flow=flow(XWING, DEATH))])
    d = smap.delta(v)
    assert [e["source"] for e in d["edges"]] == [edge(smap, XWING, DEATH).source]
    assert sorted(n["label"] for n in d["nodes"]) == ["deathstar", "xwing"]
    assert smap.delta(d["version"])["edges"] == []


def test_lost_events_and_edges_beyond_the_limit_are_counted(monkeypatch):
    monkeypatch.setattr(servicemap, "MAX_EDGES", 1)
    smap = fed(flow(TIE, DEATH), flow(XWING, DEATH))
    smap.add_many([opb.GetFlowsResponse(lost_events=opb.LostEvent(num_events_lost=7))])
    assert (len(smap.edges), smap.overflow, smap.lost) == (1, 1, 7)


def test_flow_table_of_an_edge_with_hubble_filter_flags_newest_first():
    smap = fed(flow(XWING, DEATH, time_ns=1_000), flow(XWING, DEATH, verdict=pb.DROPPED, drop_reason=133,
                                                       event_type=1, time_ns=2_000),
               flow(TIE, DEATH, time_ns=3_000))
    eid = edge(smap, XWING, DEATH).id
    rows = smap.flow_rows(eid, [])
    assert [r["verdict"] for r in rows] == ["DROPPED", "ALLOWED"]
    assert rows[0]["source"] == "rebels/xwing:40000" and rows[0]["drop_reason"] == "POLICY_DENIED"
    assert [r["verdict"] for r in smap.flow_rows(eid, ["--verdict", "FORWARDED"])] == ["ALLOWED"]
    assert [r["source"] for r in smap.flow_rows(None, ["--not", "--from-pod", "rebels/"])] == \
        ["default/tiefighter:40000"]
    assert smap.flow_rows("no such edge", []) == []
    with pytest.raises(UsageError, match="unknown filter flag '--verdic'"):
        smap.flow_rows(eid, ["--verdic", "DROPPED"])
    with pytest.raises(UsageError):
        smap.flow_rows(eid, ["--verdict", "SOMETIMES"])
