"""Every output format of `observe`, on flows converted from datapath records."""

import io
import json

from google.protobuf import json_format

from ciliumctl.flows import jsonpb
from ciliumctl.flows.convert import record_to_flow
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.printers import Aggregator, Printer
from ciliumctl.flows.records import RECORD

from .flowdata import SNAP, ip, rec

T0 = 1_764_150_000_123_456_789  # 2025-11-26T09:40:00.123456789Z


def resp(seq=1, **kw):
    f = record_to_flow(RECORD.unpack(rec(ts_ns=0, **kw)), SNAP, T0, "node-a", 0xABC, seq)
    r = opb.GetFlowsResponse(flow=f, node_name="node-a")
    r.time.CopyFrom(f.time)
    return r


VERDICT = resp()
DROP = resp(2, type=1, subtype=181, verdict=2, saddr=ip("10.200.0.14"), src_identity=302, rule_cookie=9, proto=17,
            sport=5353, dport=53, match_type=0)
REPLY = resp(3, type=4, subtype=5, verdict=1, direction=2, saddr=ip("10.200.0.13"), daddr=ip("10.200.0.12"),
             src_identity=301, dst_identity=300, sport=80, dport=40000, is_reply=1, tcp_flags=0x12)
DENIED = resp(5, type=5, subtype=181, verdict=2, direction=2, saddr=ip("10.200.0.12"), daddr=ip("10.200.0.14"),
              src_identity=300, dst_identity=302, rule_cookie=9, proto=17, sport=5353, dport=53, match_type=1)
ICMP = resp(4, type=4, subtype=0, verdict=1, saddr=ip("1.2.3.4"), src_identity=2, proto=1, sport=8, dport=0,
            rule_cookie=0)
LOST = opb.GetFlowsResponse(lost_events=pb.LostEvent(source=pb.PERF_EVENT_RING_BUFFER, num_events_lost=42),
                            node_name="node-a")


def render(output, *resps, **opts):
    out, err = io.StringIO(), io.StringIO()
    p = Printer(output, out=out, err=err, **opts)
    for r in resps:
        p.write(r)
    p.close()
    return out.getvalue(), err.getvalue()


def test_compact_lines_like_hubble():
    out, err = render("compact", VERDICT, DROP, REPLY, ICMP, LOST)
    assert out.splitlines()[:-1] == [
        "Nov 26 09:40:00.123: default/tiefighter:40000 (ID:300) -> empire/deathstar-6f87d5-x2x9z:80 (ID:301) "
        "policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)",
        # a drop: Cilium does not know whether it was a reply, hence "<>"
        "Nov 26 09:40:00.123: default/xwing:5353 (ID:302) <> empire/deathstar-6f87d5-x2x9z:53 (ID:301) "
        "Policy denied by denylist DROPPED (UDP)",
        # a reply: arrow and sides flipped, so the client is always on the left
        "Nov 26 09:40:00.123: default/tiefighter:40000 (ID:300) <- empire/deathstar-6f87d5-x2x9z:80 (ID:301) "
        "from-endpoint FORWARDED (TCP Flags: SYN, ACK)",
        "Nov 26 09:40:00.123: 1.2.3.4 (world) -> empire/deathstar-6f87d5-x2x9z (ID:301) "
        "to-endpoint FORWARDED (ICMPv4 EchoRequest)",
    ]
    assert err == ""
    assert out.splitlines()[-1] == "N/A EVENTS LOST: PERF_EVENT_RING_BUFFER CPU(0) 42"   # as hubble 1.19 (no time)


def test_compact_policy_names_and_node():
    out, _ = render("compact", VERDICT, DENIED, DROP, print_policy_names=True, node_name=True)
    lines = out.splitlines()
    assert lines[0].startswith("Nov 26 09:40:00.123 [node-a]: ")
    assert "INGRESS ALLOWED BY allow-empire (CiliumNetworkPolicy) (TCP Flags: SYN)" in lines[0]
    assert "policy-verdict:L3-Only EGRESS DENIED BY no-xwing (CiliumClusterwideNetworkPolicy) (UDP)" in lines[1]
    assert lines[2].endswith("Policy denied by denylist DROPPED (UDP)")   # names go with policy verdicts only
    table, _ = render("table", VERDICT, print_policy_names=True)
    assert "ALLOWED BY allow-empire (CiliumNetworkPolicy)   TCP Flags: SYN" in table


def test_dict():
    out, _ = render("dict", VERDICT, DROP)
    assert out == (
        "  TIMESTAMP: Nov 26 09:40:00.123\n"
        "     SOURCE: default/tiefighter:40000\n"
        "DESTINATION: empire/deathstar-6f87d5-x2x9z:80\n"
        "       TYPE: policy-verdict:L3-L4 INGRESS\n"
        "    VERDICT: ALLOWED\n"
        "    SUMMARY: TCP Flags: SYN\n"
        "------------\n"
        "  TIMESTAMP: Nov 26 09:40:00.123\n"
        "     SOURCE: default/xwing:5353\n"
        "DESTINATION: empire/deathstar-6f87d5-x2x9z:53\n"
        "       TYPE: Policy denied by denylist\n"
        "    VERDICT: DROPPED\n"
        "    SUMMARY: UDP\n")


def test_table_aligned_columns():
    out, _ = render("table", VERDICT, ICMP)
    lines = out.splitlines()
    assert lines[0].split() == ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    col = lines[0].index("DESTINATION")
    assert lines[1][col:].startswith("empire/deathstar-6f87d5-x2x9z:80")
    assert lines[2][col:].startswith("empire/deathstar-6f87d5-x2x9z ")
    assert lines[0].index("SOURCE") == len("Nov 26 09:40:00.123") + 3   # widest cell + 3 spaces


def test_json_and_jsonpb_are_protojson_of_the_response():
    for output in ("json", "jsonpb"):
        out, err = render(output, VERDICT, DROP, LOST)
        lines = out.splitlines()
        assert len(lines) == 3 and err == ""
        for line, r in zip(lines, (VERDICT, DROP, LOST)):
            assert json.loads(line) == json.loads(json_format.MessageToJson(r, preserving_proto_field_name=True))
    first = json.loads(render("json", VERDICT)[0])
    assert list(first) == ["flow", "node_name", "time"]
    f = first["flow"]
    assert f["time"] == "2025-11-26T09:40:00.123456789Z"
    assert f["verdict"] == "FORWARDED" and f["traffic_direction"] == "INGRESS" and f["is_reply"] is False
    assert f["l4"] == {"TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": True}}}
    assert f["ingress_allowed_by"][0]["name"] == "allow-empire" and f["ingress_allowed_by"][0]["revision"] == "3"
    assert f["destination"]["workloads"] == [{"name": "deathstar", "kind": "Deployment"}]
    assert list(f)[:3] == ["time", "uuid", "verdict"]   # declaration order, as Hubble prints
    drop = json.loads(render("json", DROP)[0])["flow"]
    assert drop["drop_reason_desc"] == "POLICY_DENY" and drop["event_type"] == {"type": 1, "sub_type": 181}
    assert "is_reply" not in drop and "ingress_denied_by" not in drop   # as Cilium: unknown; names on verdicts
    denied = json.loads(render("json", DENIED)[0])["flow"]
    assert denied["event_type"] == {"type": 5} and denied["verdict"] == "DROPPED" and "is_reply" not in denied
    assert (denied["drop_reason_desc"], denied["drop_reason"], denied["policy_match_type"]) == ("POLICY_DENY", 181, 1)
    assert denied["egress_denied_by"][0]["kind"] == "CiliumClusterwideNetworkPolicy"
    icmp = json.loads(render("json", ICMP)[0])["flow"]
    assert icmp["event_type"] == {"type": 4} and icmp["trace_observation_point"] == "TO_ENDPOINT"


def test_jsonpb_encoder_matches_json_format_on_many_shapes():
    for r in (VERDICT, DENIED, DROP, REPLY, ICMP, LOST, opb.GetFlowsResponse()):
        assert json.loads(jsonpb.encode(r)) == json.loads(
            json_format.MessageToJson(r, preserving_proto_field_name=True)), r


def test_aggregate_by_counts():
    agg = Aggregator(["source", "destination", "port", "verdict"])
    for r in (VERDICT, VERDICT, DROP, ICMP, LOST):
        agg.write(r)
    out, err = io.StringIO(), io.StringIO()
    agg.print("table", out=out, err=err)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["SOURCE", "DESTINATION", "PORT", "VERDICT", "FLOWS"]
    assert lines[1].split() == ["default/tiefighter", "empire/deathstar-6f87d5-x2x9z", "80/TCP", "FORWARDED", "2"]
    assert sorted(l.split()[-1] for l in lines[2:]) == ["1", "1"]
    assert err.getvalue() == "EVENTS LOST: 42\n"
    out = io.StringIO()
    agg.print("json", out=out, err=io.StringIO())
    rows = json.loads(out.getvalue())
    assert rows[0] == {"source": "default/tiefighter", "destination": "empire/deathstar-6f87d5-x2x9z",
                       "port": "80/TCP", "verdict": "FORWARDED", "count": 2}
    assert {"source": "1.2.3.4 (world)", "destination": "empire/deathstar-6f87d5-x2x9z", "port": "ICMPv4 8",
            "verdict": "FORWARDED", "count": 1} in rows


def test_non_ipv4_drop_names_the_endpoint_and_has_no_ip():
    v6 = resp(9, type=1, subtype=139, verdict=2, direction=1, ep_id=13, proto=58, saddr=b"\0" * 4,
              daddr=b"\0" * 4, sport=0, dport=0, src_identity=0, dst_identity=301, rule_cookie=0)
    assert not v6.flow.HasField("IP")
    assert v6.flow.destination.pod_name == "deathstar-6f87d5-x2x9z" and v6.flow.source.pod_name == ""
    out, _ = render("compact", v6)
    assert ": - (unknown) <> empire/deathstar-6f87d5-x2x9z (ID:301) Unsupported L3 protocol DROPPED (ICMPv6)\n" in out


def test_traces_are_forwarded_as_in_cilium():
    """A trace of an audited connection: the packet went through (FORWARDED); AUDIT is the policy verdict's."""
    assert resp(10, type=4, subtype=0, verdict=4).flow.verdict == pb.FORWARDED
    assert resp(11, type=5, verdict=4).flow.verdict == pb.AUDIT
