"""Stored raw records -> GetFlowsResponse, as wire bytes (gRPC) or as the JSON line `hubble observe -o json`
prints, without a protobuf message per flow.

What a flow says is a function of its record's fields (all but the time stamp, length and packet counter), the
metadata snapshot it arrived with and its interface's name. Flows of one kind differ only in their time and uuid,
and, for TCP, UDP and SCTP, their ports (every new connection has another client port, so they are no part of the
kind). The first flow of each kind is built the slow, checked way (convert.record_to_flow, jsonpb.encode) with
stand-ins for those values and cut where they go; every later flow of the kind is those pieces around its own
values. On the wire, fields may come in any order: time, uuid, the kind's bytes, then l4 with the ports."""

from __future__ import annotations

import struct
import threading

from google.protobuf.timestamp_pb2 import Timestamp

from ciliumctl.flows import jsonpb
from ciliumctl.flows.convert import IfNames, Services, record_to_flow, services_of, uuid_prefix, uuid_with
from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.records import R_DPORT, R_PROTO, R_SPORT, RECORD, RECORD_SIZE, pack_record

# One record as (ts, type..flags, ifindex, identities and addresses, sport, dport, cookie/match/reply, service id):
# the hdr, the length and the packet counter (bytes 0-8, 48-52, 60-64) say nothing about the flow's content.
_VIEW = struct.Struct("<8xQ8sI16sHH4x6sH4x")
_TS = struct.Struct("<8xQ")
assert _VIEW.size == RECORD_SIZE
_probe = _VIEW.unpack(pack_record(ts_ns=1, proto=6, ifindex=2, sport=3, dport=4, length=5, packets=6,
                                  rule_cookie=7, svc_id=8))
assert _probe[:3] == (1, _probe[1], 2) and _probe[1][6] == 6 and _probe[4:6] == (3, 4) and _probe[6][0] == 7 \
    and _probe[7] == 8

# Stand-ins while a kind's JSON is made, cut out again afterwards: values no real flow has there.
_T_SEC, _T_NANOS = 1, 1
_T_JSON = '"' + jsonpb.timestamp(_T_SEC, _T_NANOS) + '"'
_U_TEXT = "\x01"
_U_JSON = jsonpb._q(_U_TEXT)
_SPORT, _DPORT = 4_000_000_001, 4_000_000_002    # ports are 16 bits; the proto fields are uint32
_S_JSON, _D_JSON = f'"source_port":{_SPORT}', f'"destination_port":{_DPORT}'
_PORTED = {6: "TCP", 17: "UDP", 132: "SCTP"}     # record proto -> flow.Layer4 field whose ports vary in a kind
_CACHE_MAX = 20_000
_NO_SERVICES: Services = (None, None)
_UNMADE = object()   # a kind's JSON pieces before its first JSON line


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_SMALL = [varint(i) for i in range(1 << 14)]     # lengths of fields and ports: one list index


def _v(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else varint(n)


def _tag(desc, name: str) -> bytes:
    """The key of a length-delimited field (number << 3 | 2)."""
    return varint(desc.fields_by_name[name].number << 3 | 2)


_UUID_TAG = _tag(flow_pb2.Flow.DESCRIPTOR, "uuid")
_L4_TAG = _tag(flow_pb2.Flow.DESCRIPTOR, "l4")
_PROTO_TAGS = {p: _tag(flow_pb2.Layer4.DESCRIPTOR, name) for p, name in _PORTED.items()}
_SPORT_KEY = varint(flow_pb2.TCP.DESCRIPTOR.fields_by_name["source_port"].number << 3)
_DPORT_KEY = varint(flow_pb2.TCP.DESCRIPTOR.fields_by_name["destination_port"].number << 3)
assert all(getattr(flow_pb2, n).DESCRIPTOR.fields_by_name["source_port"].number << 3 == _SPORT_KEY[0] and
           getattr(flow_pb2, n).DESCRIPTOR.fields_by_name["destination_port"].number << 3 == _DPORT_KEY[0]
           for n in _PORTED.values())


class _Kind:
    __slots__ = ("wire", "l4_tag", "l4_rest", "pieces", "flow", "ported")

    def __init__(self, wire: bytes, l4_tag: bytes, l4_rest: bytes, flow: flow_pb2.Flow, ported: bool):
        self.wire = wire         # the flow without time, uuid (and l4 when ported)
        self.l4_tag = l4_tag     # ported: Layer4's field of the protocol
        self.l4_rest = l4_rest   # and its fields but the ports (TCP flags)
        self.pieces: object = _UNMADE        # the JSON line cut at its stand-ins; None: encode each flow whole
        self.flow: flow_pb2.Flow | None = flow   # for the pieces, until they are made
        self.ported = ported


class Renderer:
    """One agent's flows (its node name, boot id, clock offset and interface names)."""

    def __init__(self, node_name: str, boot_id: int, wall_offset_ns: int, ifnames: IfNames | None):
        self.node_name = node_name
        self.boot_id = boot_id
        self.wall_offset_ns = wall_offset_ns
        self.ifnames = ifnames
        self._uuid_prefix = uuid_prefix(boot_id)
        self._node_field = b"\xc2\x3e" + varint(len(node_name.encode())) + node_name.encode()
        self._kinds: dict = {}       # what a flow says (see _kind) -> its _Kind
        self._templates: dict = {}   # record_to_flow's own cache
        self._lock = threading.Lock()

    # --- one record ---

    def wall_ns(self, data: bytes, off: int) -> int:
        return _TS.unpack_from(data, off)[0] + self.wall_offset_ns

    def flow(self, data: bytes, off: int, snap: Snapshot, seq: int) -> flow_pb2.Flow:
        return record_to_flow(RECORD.unpack_from(data, off), snap, self.wall_offset_ns, self.node_name, self.boot_id,
                              seq, self.ifnames, self._templates)

    def _kind(self, data: bytes, off: int, snap: Snapshot) -> tuple[int, int, int, _Kind]:
        """(wall time ns, sport, dport, the record's kind)."""
        ts, head, ifindex, peers, sport, dport, rule, svc_id = _VIEW.unpack_from(data, off)
        ifname = self.ifnames.get(ifindex) if ifindex and self.ifnames is not None else None
        # ports out of the key where they are plain numbers in l4 (a zero port is left out of the JSON: keyed);
        # the services they name are in it
        ported = head[6] in _PORTED and sport and dport
        svcs = services_of(peers[8:12], sport, peers[12:16], dport, head[6], svc_id, snap) \
            if svc_id or snap.services.ips else _NO_SERVICES
        key = (snap, head, ifindex, peers, rule, ifname, svcs) if ported else \
            (snap, head, ifindex, peers, rule, ifname, svcs, sport, dport)
        kind = self._kinds.get(key)
        if kind is None:
            kind = self._new_kind(RECORD.unpack_from(data, off), snap, {ifindex: ifname} if ifname else {},
                                  bool(ported), svcs)
            if len(self._kinds) >= _CACHE_MAX:
                self._kinds.clear()
            self._kinds[key] = kind
        return ts + self.wall_offset_ns, sport, dport, kind

    def _new_kind(self, rec: tuple, snap: Snapshot, ifnames: dict, ported: bool, svcs: Services) -> _Kind:
        if ported:
            rec = rec[:R_SPORT] + (_SPORT, _DPORT) + rec[R_DPORT + 1:]
        f = record_to_flow(rec, snap, 0, self.node_name, self.boot_id, 0, ifnames, self._templates, svcs)
        f.ClearField("time")
        f.ClearField("uuid")
        tag = rest = b""
        if ported:
            which = f.l4.WhichOneof("protocol")
            inner = flow_pb2.Layer4()
            inner.CopyFrom(f.l4)
            sub = getattr(inner, which)
            sub.source_port = sub.destination_port = 0
            tag, rest = _PROTO_TAGS[rec[R_PROTO]], sub.SerializeToString()
            wire = _without_l4(f)
        else:
            wire = f.SerializeToString()
        return _Kind(wire, tag, rest, f, ported)

    def _pieces(self, kind: _Kind) -> tuple | None:
        """The kind's JSON line cut where the time, the uuid, the ports and the time go."""
        with self._lock:   # gRPC serves requests on several threads: one of them makes a kind's pieces
            if kind.pieces is not _UNMADE:
                return kind.pieces   # type: ignore[return-value]
            return self._cut(kind)

    def _cut(self, kind: _Kind) -> tuple | None:
        f = kind.flow
        assert f is not None
        f.time.seconds, f.time.nanos, f.uuid = _T_SEC, _T_NANOS, _U_TEXT
        r = opb.GetFlowsResponse(flow=f, node_name=self.node_name)
        r.time.seconds, r.time.nanos = _T_SEC, _T_NANOS
        text = jsonpb.encode(r)
        marks = [_T_JSON, _U_JSON, _S_JSON, _D_JSON, _T_JSON] if kind.ported else [_T_JSON, _U_JSON, _T_JSON]
        cut: list[str] = []
        pos = 0
        for m in marks:
            i = text.find(m, pos)
            if i < 0:
                break
            cut.append(text[pos:i])
            pos = i + len(m)
        cut.append(text[pos:])
        # each stand-in found in order, and nowhere else
        ok = len(cut) == len(marks) + 1 and all(text.count(m) == marks.count(m) for m in set(marks))
        pieces = tuple(cut) if ok else None
        kind.pieces, kind.flow = pieces, None
        return pieces

    def json_line(self, data: bytes, off: int, snap: Snapshot, seq: int) -> tuple[str, int]:
        """(the response's JSON line with its newline, wall time ns)."""
        t, sport, dport, kind = self._kind(data, off, snap)
        p = kind.pieces
        if p is _UNMADE:
            p = self._pieces(kind)
        if not isinstance(p, tuple):   # None: encode this kind's flows whole
            r = opb.GetFlowsResponse(flow=self.flow(data, off, snap, seq), node_name=self.node_name)
            r.time.FromNanoseconds(t)
            return jsonpb.encode(r) + "\n", t
        ts = '"' + jsonpb.timestamp(t // 1_000_000_000, t % 1_000_000_000) + '"'
        uuid = uuid_with(self._uuid_prefix, seq)
        if kind.ported:
            return (f'{p[0]}{ts}{p[1]}"{uuid}"{p[2]}"source_port":{sport}{p[3]}"destination_port":{dport}{p[4]}'
                    f'{ts}{p[5]}\n'), t
        return f'{p[0]}{ts}{p[1]}"{uuid}"{p[2]}{ts}{p[3]}\n', t

    def wire(self, data: bytes, off: int, snap: Snapshot, seq: int) -> tuple[bytes, int]:
        """(the serialized response, wall time ns)."""
        t, sport, dport, kind = self._kind(data, off, snap)
        sec, nanos = divmod(t, 1_000_000_000)
        tb = Timestamp(seconds=sec, nanos=nanos).SerializeToString()   # not a shared one: requests run in threads
        fb = b"\x0a" + _v(len(tb)) + tb + _UUID_TAG + b"\x24" + uuid_with(self._uuid_prefix, seq).encode() + kind.wire
        if kind.ported:
            body = _SPORT_KEY + _v(sport) + _DPORT_KEY + _v(dport) + kind.l4_rest
            l4 = kind.l4_tag + _v(len(body)) + body
            fb += _L4_TAG + _v(len(l4)) + l4
        return b"\x0a" + _v(len(fb)) + fb + self._node_field + b"\xca\x3e" + _v(len(tb)) + tb, t

    # --- lost events ---

    def lost(self, source: int, num: int, t: int) -> opb.GetFlowsResponse:
        r = opb.GetFlowsResponse(lost_events=flow_pb2.LostEvent(source=source, num_events_lost=num),
                                 node_name=self.node_name)
        r.time.FromNanoseconds(t)
        return r


def _without_l4(f: flow_pb2.Flow) -> bytes:
    g = flow_pb2.Flow()
    g.CopyFrom(f)
    g.ClearField("l4")
    return g.SerializeToString()
