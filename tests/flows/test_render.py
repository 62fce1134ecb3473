"""flows.render against the flow built field by field (convert.record_to_flow) and encoded by jsonpb: the JSON
line and the wire bytes of every kind of record, the first of its kind and later ones (cut pieces around a new
time and uuid), and what must not share a kind (interface name, metadata snapshot)."""

import dataclasses

from ciliumctl.flows import jsonpb
from ciliumctl.flows.convert import record_to_flow
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.records import RECORD
from ciliumctl.flows.render import Renderer

from .flowdata import SNAP, rec
from .test_hubble_cli import FLOWS, _number_flows

T0 = 1_764_150_000_000_000_000
BOOT = 0x1234_5678_9ABC_DEF0


def expected(data: bytes, seq: int, snap=SNAP, ifnames=None, node="node-a") -> opb.GetFlowsResponse:
    f = record_to_flow(RECORD.unpack(data), snap, T0, node, BOOT, seq, ifnames)
    r = opb.GetFlowsResponse(flow=f, node_name=node)
    r.time.CopyFrom(f.time)
    return r


def kinds() -> list[dict]:
    return [kw for _, kw in FLOWS] + _number_flows() + [dict(ifindex=7), dict(proto=17, sport=53, dport=5353)]


def test_every_kind_renders_as_the_flow_built_field_by_field():
    ren = Renderer("node-a", BOOT, T0, {7: "lxc7"})
    for seq, kw in enumerate(kinds() * 2):   # twice: built once, then from the kind's cut pieces
        for ts in (seq * 1_000_000_007, seq * 1_000_000_000, 5_000_000):   # 9, 0 and 3 fraction digits
            if kw.get("proto", 6) in (6, 17, 132):   # another connection of the kind: other ports, 0 included
                kw = dict(kw, sport=(kw.get("sport", 40000) + seq * 997) % 65536, dport=ts % 3 and 80 + ts % 200)
            data = rec(ts_ns=ts, **kw)
            want = expected(data, seq, ifnames={7: "lxc7"})
            line, t = ren.json_line(data, 0, SNAP, seq)
            assert line == jsonpb.encode(want) + "\n", kw
            wire, t2 = ren.wire(data, 0, SNAP, seq)
            assert opb.GetFlowsResponse.FromString(wire) == want, kw
            assert t == t2 == ts + T0


def test_length_and_packet_count_share_a_kind_the_interface_name_and_snapshot_do_not():
    names = {7: "lxc7"}
    ren = Renderer("", BOOT, T0, names)
    ren.json_line(rec(ifindex=7, length=60, packets=1), 0, SNAP, 1)
    ren.json_line(rec(ifindex=7, length=1500, packets=9), 0, SNAP, 2)
    ren.json_line(rec(ifindex=7, sport=50123), 0, SNAP, 3)   # another client port: the same kind
    assert len(ren._kinds) == 1
    names[7] = "lxc7b"   # the index now names another interface
    data = rec(ifindex=7)
    assert ren.json_line(data, 0, SNAP, 3)[0] == jsonpb.encode(expected(data, 3, ifnames=names, node="")) + "\n"
    other = dataclasses.replace(SNAP, by_ip={})   # the endpoints left the node
    assert ren.json_line(data, 0, other, 4)[0] == \
        jsonpb.encode(expected(data, 4, snap=other, ifnames=names, node="")) + "\n"
    assert '"pod_name"' not in ren.json_line(data, 0, other, 4)[0]
