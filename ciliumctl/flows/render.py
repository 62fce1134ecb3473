"""Stored raw records -> GetFlowsResponse, as wire bytes (gRPC) or as the JSON line `hubble observe -o json`
prints, without a protobuf message per flow.

What a flow says is a function of its record's fields (all but the time stamp, length and packet counter), the
metadata snapshot it arrived with and its interface's name; only its time and uuid change from flow to flow. So
the first flow of each kind is built the slow, checked way (convert.record_to_flow, jsonpb.encode) and cut where
its time and uuid go; every later flow of that kind is those pieces around its own time and uuid."""

from __future__ import annotations

import struct

from ciliumctl.flows import jsonpb
from ciliumctl.flows.convert import IfNames, record_to_flow, uuid_prefix, uuid_with
from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.records import RECORD, RECORD_SIZE, pack_record

# One record as (ts, type..flags, ifindex, identities..ports, cookie/match/reply): the hdr, the length and the
# packet counter (bytes 0-8, 48-52, 58-64) say nothing about the flow's content.
_VIEW = struct.Struct("<8xQ8sI20s4x6s6x")
_TS = struct.Struct("<8xQ")
assert _VIEW.size == RECORD_SIZE
_probe = _VIEW.unpack(pack_record(ts_ns=1, ifindex=2, length=3, packets=4, rule_cookie=5))
assert _probe[0] == 1 and _probe[2] == 2 and _probe[4][:4] == b"\x05\0\0\0"   # the layout is records.RECORD's

# Stand-ins for the time and the uuid while a kind's JSON is made: cut out again afterwards.
_T_SEC, _T_NANOS = 1, 1
_T_JSON = '"' + jsonpb.timestamp(_T_SEC, _T_NANOS) + '"'
_U_TEXT = "\x01"
_U_JSON = jsonpb._q(_U_TEXT)
_CACHE_MAX = 20_000
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


_UUID_TAG = varint(flow_pb2.Flow.DESCRIPTOR.fields_by_name["uuid"].number << 3 | 2)


class Renderer:
    """One agent's flows (its node name, boot id, clock offset and interface names)."""

    def __init__(self, node_name: str, boot_id: int, wall_offset_ns: int, ifnames: IfNames | None):
        self.node_name = node_name
        self.boot_id = boot_id
        self.wall_offset_ns = wall_offset_ns
        self.ifnames = ifnames
        self._uuid_prefix = uuid_prefix(boot_id)
        self._node_field = b"\xc2\x3e" + varint(len(node_name.encode())) + node_name.encode()
        self._kinds: dict = {}       # what a flow says (see _kind) -> its kind
        self._templates: dict = {}   # record_to_flow's own cache
        self._sec_wire: dict[int, bytes] = {}

    # --- one record ---

    def wall_ns(self, data: bytes, off: int) -> int:
        return _TS.unpack_from(data, off)[0] + self.wall_offset_ns

    def flow(self, data: bytes, off: int, snap: Snapshot, seq: int) -> flow_pb2.Flow:
        return record_to_flow(RECORD.unpack_from(data, off), snap, self.wall_offset_ns, self.node_name, self.boot_id,
                              seq, self.ifnames, self._templates)

    def _kind(self, data: bytes, off: int, snap: Snapshot) -> tuple[int, list]:
        """(wall time ns, the kind's [wire bytes without time and uuid, JSON pieces (None: encode each flow whole),
        the flow for the JSON pieces until they are made])."""
        ts, head, ifindex, peers, rule = _VIEW.unpack_from(data, off)
        ifname = self.ifnames.get(ifindex) if ifindex and self.ifnames is not None else None
        key = (snap, head, ifindex, peers, rule, ifname)
        kind = self._kinds.get(key)
        if kind is None:
            f = record_to_flow(RECORD.unpack_from(data, off), snap, 0, self.node_name, self.boot_id, 0,
                               {ifindex: ifname} if ifname else {}, self._templates)
            f.ClearField("time")
            f.ClearField("uuid")
            kind = [f.SerializeToString(), _UNMADE, f]
            if len(self._kinds) >= _CACHE_MAX:
                self._kinds.clear()
            self._kinds[key] = kind
        return ts + self.wall_offset_ns, kind

    def _pieces(self, kind: list) -> tuple | None:
        """The kind's JSON line cut where the time, the uuid and the time go."""
        f = kind[2]
        f.time.seconds, f.time.nanos, f.uuid = _T_SEC, _T_NANOS, _U_TEXT
        r = opb.GetFlowsResponse(flow=f, node_name=self.node_name)
        r.time.seconds, r.time.nanos = _T_SEC, _T_NANOS
        text = jsonpb.encode(r)
        a, u = text.find(_T_JSON), text.find(_U_JSON)
        b = text.find(_T_JSON, a + 1)
        pieces = None   # unless time, uuid, time come once each in this order: then each flow is encoded whole
        if text.count(_T_JSON) == 2 and text.count(_U_JSON) == 1 and 0 <= a < u < b:
            pieces = (text[:a], text[a + len(_T_JSON):u], text[u + len(_U_JSON):b], text[b + len(_T_JSON):])
        kind[1], kind[2] = pieces, None
        return pieces

    def json_line(self, data: bytes, off: int, snap: Snapshot, seq: int) -> tuple[str, int]:
        """(the response's JSON line with its newline, wall time ns)."""
        t, kind = self._kind(data, off, snap)
        pieces = kind[1]
        if pieces is _UNMADE:
            pieces = self._pieces(kind)
        if pieces is None:
            r = opb.GetFlowsResponse(flow=self.flow(data, off, snap, seq), node_name=self.node_name)
            r.time.FromNanoseconds(t)
            return jsonpb.encode(r) + "\n", t
        ts = '"' + jsonpb.timestamp(t // 1_000_000_000, t % 1_000_000_000) + '"'
        uuid = uuid_with(self._uuid_prefix, seq)
        return f'{pieces[0]}{ts}{pieces[1]}"{uuid}"{pieces[2]}{ts}{pieces[3]}\n', t

    def wire(self, data: bytes, off: int, snap: Snapshot, seq: int) -> tuple[bytes, int]:
        """(the serialized response, wall time ns). Fields need not come in number order on the wire: time and
        uuid go first, then the kind's cached bytes."""
        t, kind = self._kind(data, off, snap)
        rest = kind[0]
        tb = self._ts_wire(t)
        fb = b"\x0a" + varint(len(tb)) + tb + _UUID_TAG + b"\x24" + uuid_with(self._uuid_prefix, seq).encode() + rest
        return b"\x0a" + varint(len(fb)) + fb + self._node_field + b"\xca\x3e" + varint(len(tb)) + tb, t

    def _ts_wire(self, t: int) -> bytes:
        """google.protobuf.Timestamp{seconds = 1, nanos = 2} serialized."""
        sec, nanos = divmod(t, 1_000_000_000)
        if sec < 0:   # a clock before 1970 (never seen): protobuf writes it
            return flow_pb2.Flow(time={"seconds": sec, "nanos": nanos}).time.SerializeToString()
        head = self._sec_wire.get(sec)
        if head is None:
            if len(self._sec_wire) > 4096:
                self._sec_wire.clear()
            head = self._sec_wire[sec] = b"\x08" + varint(sec) if sec else b""
        return head + b"\x10" + varint(nanos) if nanos else head

    # --- lost events ---

    def lost(self, source: int, num: int, t: int) -> opb.GetFlowsResponse:
        r = opb.GetFlowsResponse(lost_events=flow_pb2.LostEvent(source=source, num_events_lost=num),
                                 node_name=self.node_name)
        r.time.FromNanoseconds(t)
        return r
