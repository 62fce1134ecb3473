"""Hubble's filter semantics on flows built from datapath records, and filters built from observe flags."""

from datetime import UTC

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.flows.convert import record_to_flow
from ciliumctl.flows.filters import (
    CompiledFilter,
    FlowMatcher,
    filters_from_args,
    parse_selector,
    parse_time,
    selector_matches,
)
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.records import RECORD

from .flowdata import SNAP, ip, rec

_seq = iter(range(1, 100))


def flow(**kw):
    return record_to_flow(RECORD.unpack(rec(**kw)), SNAP, 0, "node-a", 1, next(_seq))


ALLOWED = flow()                                                         # tiefighter -> deathstar:80 TCP
DROPPED = flow(type=1, subtype=181, verdict=2, saddr=ip("10.200.0.14"), src_identity=302, rule_cookie=9,
               proto=17, sport=5353, dport=53, match_type=0)             # xwing -> deathstar:53 UDP drop
REPLY = flow(type=4, subtype=5, verdict=1, direction=2, saddr=ip("10.200.0.13"), daddr=ip("10.200.0.12"),
             src_identity=301, dst_identity=300, sport=80, dport=40000, is_reply=1, tcp_flags=0x12)
WORLD = flow(type=4, subtype=0, verdict=1, saddr=ip("1.2.3.4"), src_identity=2, proto=1, sport=8, dport=0)
ALL = [ALLOWED, DROPPED, REPLY, WORLD]


def matching(**fields):
    f = CompiledFilter(pb.FlowFilter(**fields))
    return [x for x in ALL if f(x)]


@pytest.mark.parametrize("fields, expected", [
    ({"uuid": [ALLOWED.uuid, "nope"]}, [ALLOWED]),
    ({"source_ip": ["10.200.0.14"]}, [DROPPED]),
    ({"source_ip": ["10.200.0.0/24"]}, [ALLOWED, DROPPED, REPLY]),
    ({"destination_ip": ["10.200.0.12", "9.9.9.9"]}, [REPLY]),
    ({"source_pod": ["default/xwing"]}, [DROPPED]),
    ({"source_pod": ["tie"]}, [ALLOWED]),                       # no namespace: "default"
    ({"destination_pod": ["empire/"]}, [ALLOWED, DROPPED, WORLD]),
    ({"destination_pod": ["deathstar"]}, []),                   # deathstar lives in namespace empire
    ({"source_label": ["org=alliance"]}, [DROPPED]),
    ({"source_label": ["k8s:org in (empire)"]}, [ALLOWED, REPLY]),
    ({"source_label": ["reserved:world"]}, [WORLD]),
    ({"destination_label": ["class=deathstar,org!=alliance"]}, [ALLOWED, DROPPED, WORLD]),
    ({"destination_label": ["!class"]}, [REPLY]),
    ({"source_workload": [pb.Workload(name="deathstar", kind="Deployment")]}, [REPLY]),
    ({"destination_workload": [pb.Workload(name="deathstar")]}, [ALLOWED, DROPPED, WORLD]),
    ({"traffic_direction": [pb.EGRESS]}, [REPLY]),
    ({"verdict": [pb.DROPPED]}, [DROPPED]),
    ({"verdict": [pb.FORWARDED, pb.DROPPED]}, ALL),
    ({"drop_reason_desc": [pb.POLICY_DENY]}, [DROPPED]),
    ({"drop_reason_desc": [pb.POLICY_DENIED]}, []),
    ({"event_type": [pb.EventTypeFilter(type=4)]}, [REPLY, WORLD]),
    ({"event_type": [pb.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)]}, [WORLD]),  # to-endpoint
    ({"event_type": [pb.EventTypeFilter(type=5), pb.EventTypeFilter(type=1)]}, [ALLOWED, DROPPED]),
    ({"event_type": [pb.EventTypeFilter(type=0, match_sub_type=True, sub_type=5)]}, [REPLY]),  # any type
    ({"protocol": ["udp"]}, [DROPPED]),
    ({"protocol": ["ICMP"]}, [WORLD]),
    ({"protocol": ["tcp", "icmpv4"]}, [ALLOWED, REPLY, WORLD]),
    ({"source_port": ["80"]}, [REPLY]),
    ({"destination_port": ["53", "80"]}, [ALLOWED, DROPPED]),
    ({"reply": [True]}, [REPLY]),
    ({"reply": [False]}, [ALLOWED, DROPPED, WORLD]),   # a drop's unknown is_reply counts as false
    ({"source_identity": [2, 302]}, [DROPPED, WORLD]),
    ({"destination_identity": [300]}, [REPLY]),
    ({"tcp_flags": [pb.TCPFlags(SYN=True, ACK=True)]}, [REPLY]),
    ({"tcp_flags": [pb.TCPFlags(SYN=True)]}, [ALLOWED, REPLY]),
    ({"node_name": ["node-*"]}, ALL),
    ({"node_name": ["cluster/other"]}, []),
    ({"ip_version": [pb.IPv6]}, []),
    ({"source_service": ["default/x"]}, []),          # no services on a ciliumctl node: never matches
    ({"http_method": ["GET"]}, []),                   # no L7 visibility
    ({"verdict": [pb.FORWARDED], "destination_port": ["80"]}, [ALLOWED]),   # AND within a filter
])
def test_filter_fields(fields, expected):
    assert matching(**fields) == expected


def test_whitelist_or_blacklist_minus():
    either = [pb.FlowFilter(verdict=[pb.DROPPED]), pb.FlowFilter(source_identity=[2])]
    assert [f for f in ALL if FlowMatcher(either)(f)] == [DROPPED, WORLD]          # OR across filters
    no_udp = [pb.FlowFilter(protocol=["udp"])]
    assert [f for f in ALL if FlowMatcher(either, no_udp)(f)] == [WORLD]            # allow - deny
    assert [f for f in ALL if FlowMatcher((), no_udp)(f)] == [ALLOWED, REPLY, WORLD]  # deny alone
    assert [f for f in ALL if FlowMatcher()(f)] == ALL


def test_flags_either_side_makes_two_filters():
    white, black = filters_from_args(["--pod", "default/xwing", "--verdict", "DROPPED"])
    assert white == [pb.FlowFilter(source_pod=["default/xwing"], verdict=[pb.DROPPED]),
                     pb.FlowFilter(destination_pod=["default/xwing"], verdict=[pb.DROPPED])]
    assert black == []


def test_flags_from_and_to_make_one_filter():
    white, _ = filters_from_args(["--from-label", "org=empire", "--to-port", "80", "--protocol", "TCP"])
    assert white == [pb.FlowFilter(source_label=["org=empire"], destination_port=["80"], protocol=["tcp"])]


def test_not_sends_next_filter_to_blacklist():
    white, black = filters_from_args(["--to-ip", "10.0.0.1", "--not", "--verdict", "DROPPED",
                                      "--traffic-direction", "ingress"])
    assert white == [pb.FlowFilter(destination_ip=["10.0.0.1"], traffic_direction=[pb.INGRESS])]
    assert black == [pb.FlowFilter(verdict=[pb.DROPPED])]


def test_namespace_is_default_for_pods_and_a_filter_alone():
    white, _ = filters_from_args(["--to-namespace", "empire", "--to-pod", "deathstar"])
    assert white == [pb.FlowFilter(destination_pod=["empire/deathstar"])]
    white, _ = filters_from_args(["-n", "empire", "--pod", "deathstar", "--pod", "x/y"])
    assert white == [pb.FlowFilter(source_pod=["empire/deathstar", "x/y"]),
                     pb.FlowFilter(destination_pod=["empire/deathstar", "x/y"])]
    white, _ = filters_from_args(["--namespace=empire"])
    assert white == [pb.FlowFilter(source_pod=["empire/"]), pb.FlowFilter(destination_pod=["empire/"])]


def test_type_and_identity_flags():
    white, _ = filters_from_args(["-t", "trace:to-endpoint", "--identity", "2", "--drop-reason-desc",
                                  "policy_denied"])
    et = pb.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)
    assert white == [pb.FlowFilter(event_type=[et], source_identity=[2], drop_reason_desc=[pb.POLICY_DENIED]),
                     pb.FlowFilter(event_type=[et], destination_identity=[2], drop_reason_desc=[pb.POLICY_DENIED])]


@pytest.mark.parametrize("args, message", [
    (["--pod", "a", "--from-pod", "b"], "cannot be combined"),
    (["--verdict", "MAYBE"], "--verdict"),
    (["--port", "http"], "port"),
    (["-t", "l8"], "--type"),
    (["--not"], "--not must be followed"),
    (["--label", "a in (b"], "label selector"),
    (["--traffic-direction", "sideways"], "ingress or egress"),
])
def test_bad_flags_are_one_clear_error(args, message):
    with pytest.raises(UsageError, match=message):
        filters_from_args(args)


def test_label_selectors():
    labels = ["k8s:app=web", "k8s:tier=front", "reserved:host"]
    for sel, ok in [("app=web", True), ("app==web", True), ("app!=web", False), ("tier in (front, back)", True),
                    ("tier notin (front)", False), ("app", True), ("!db", True), ("!app", False),
                    ("k8s:app=web", True), ("container:app=web", False), ("reserved:host", True),
                    ("app=web,tier=back", False)]:
        assert selector_matches(parse_selector(sel), labels) is ok, sel


def test_times():
    from datetime import datetime

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_time("90s", now) == datetime(2026, 1, 1, 11, 58, 30, tzinfo=UTC)
    assert parse_time("1h30m", now) == datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    assert parse_time("2026-01-01T10:00:00Z") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(UsageError):
        parse_time("yesterday")
