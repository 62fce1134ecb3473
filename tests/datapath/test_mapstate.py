"""The policy -> map entries compiler, without root: prefixes, deny marking, cookies, layouts. A Python model of
the kernel's lookup (LPM per identity, two lookups, deny first) is checked against a plain reference verdict."""

from __future__ import annotations

import ctypes
import random

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.datapath import maps
from ciliumctl.datapath.mapstate import (
    MATCH_ALL,
    MATCH_L3_L4,
    MATCH_L3_ONLY,
    MATCH_L3_PROTO,
    MATCH_L4_ONLY,
    MATCH_PROTO_ONLY,
    compile_state,
    port_prefixes,
)
from ciliumctl.policy.resolved import (
    PROTO_ICMP,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    DirectionPolicy,
    EndpointPolicy,
    PolicyEntry,
    PortRange,
    ResolvedState,
    RuleOrigin,
)


def _origin(name, section="ingress", index=0):
    return (RuleOrigin("CiliumNetworkPolicy", name, "default", section, index),)


def _state(entries, direction="ingress", audit=False, ipcache=None):
    ing = DirectionPolicy(True, entries if direction == "ingress" else [])
    eg = DirectionPolicy(True, entries if direction == "egress" else [])
    return ResolvedState(revision=1, identities={}, ipcache=ipcache or {},
                         endpoints={7: EndpointPolicy(7, 300, ing, eg)}, audit=audit)


# ------------------------------------------------------------------------------------------- port prefixes

@pytest.mark.parametrize("lo,hi", [(1, 1), (80, 80), (8000, 8010), (1, 65535), (0, 65535), (1024, 2047),
                                   (1023, 2048), (65535, 65535), (3, 5)])
def test_port_prefixes_cover_exactly_the_range(lo, hi):
    covered = set()
    for port, bits in port_prefixes(lo, hi):
        size = 1 << (16 - bits)
        assert port % size == 0
        block = set(range(port, port + size))
        assert not covered & block
        covered |= block
    assert covered == set(range(lo, hi + 1))


def test_port_prefixes_random_ranges_are_minimal_and_exact():
    rng = random.Random(5)
    for _ in range(300):
        lo = rng.randint(1, 65535)
        hi = rng.randint(lo, 65535)
        pf = port_prefixes(lo, hi)
        assert sum(1 << (16 - b) for _, b in pf) == hi - lo + 1
        assert len(pf) <= 30


def test_any_port_and_bad_range():
    assert port_prefixes(0, 0) == [(0, 0)]
    assert port_prefixes(80, 0) == [(80, 16)]
    with pytest.raises(UsageError):
        port_prefixes(10, 70000)


# ------------------------------------------------------------------------------------------- a model of the kernel

def _decode_policy(ms):
    out = []
    for k, v in ms.policy.items():
        plen, slot, d, ep, ident, proto, port = maps.POLICY_KEY.unpack(k)
        deny, mtype, _pad, cookie = maps.POLICY_VAL.unpack(v)
        out.append((plen, slot, d, ep, ident, proto, int.from_bytes(port, "big"), deny, mtype, cookie))
    return out


def _lpm(entries, slot, d, ep, ident, proto, port):
    """Longest prefix over the key bits: (slot, dir, ep, identity) fixed, then proto, pad, port."""
    best = None
    for e in entries:
        plen, s, ed, eep, eid, eproto, eport = e[:7]
        if (s, ed, eep, eid) != (slot, d, ep, ident):
            continue
        if plen >= maps.POLICY_PROTO_BITS and eproto != proto:
            continue
        if plen > maps.POLICY_PORT_BASE:
            shift = 16 - (plen - maps.POLICY_PORT_BASE)
            if (eport >> shift) != (port >> shift):
                continue
        if best is None or plen > best[0]:
            best = e
    return best


def kernel_model(ms, d, ep, peer, proto, port):
    """What bpf/lib/policy.h decides: (allowed, denied_by_rule, match_type, cookie)."""
    entries = _decode_policy(ms)
    spec = _lpm(entries, ms.slot, d, ep, peer, proto, port)
    anyid = _lpm(entries, ms.slot, d, ep, 0, proto, port)
    for hit in (spec, anyid):
        if hit and hit[7]:
            return False, True, hit[8], hit[9]
    for hit in (spec, anyid):
        if hit:
            return True, False, hit[8], hit[9]
    return False, False, 0, 0


def reference(entries, peer, proto, port):
    """The policy semantics: denied if any deny matches, allowed if any allow matches, else default deny."""
    def matches(e):
        if e.identity not in (0, peer):
            return False
        p = e.ports
        if p.proto == 0:
            return p.any_port or proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP) and p.lo <= port <= (p.hi or p.lo)
        if p.proto != proto:
            return False
        return p.any_port or p.lo <= port <= (p.hi or p.lo)
    hits = [e for e in entries if matches(e)]
    if any(e.deny for e in hits):
        return "deny"
    return "allow" if hits else "default"


def _random_entries(rng, peers):
    out = []
    for i in range(rng.randint(1, 8)):
        ident = rng.choice([0] + peers)
        proto = rng.choice([0, PROTO_TCP, PROTO_UDP, PROTO_TCP])
        if proto == 0 or rng.random() < 0.2:
            ports = PortRange(proto, 0, 0)
        else:
            lo = rng.choice([80, 443, 1, 1000, 8000, 8080])
            hi = lo if rng.random() < 0.5 else min(65535, lo + rng.choice([1, 10, 100, 1000, 60000]))
            ports = PortRange(proto, lo, hi)
        out.append(PolicyEntry(ident, ports, rng.random() < 0.35, _origin(f"r{i}")))
    return out


def test_kernel_model_agrees_with_reference_on_random_policies():
    rng = random.Random(1)
    peers = [1001, 1002]
    probes = [0, 1, 79, 80, 81, 443, 999, 1000, 1010, 5000, 8000, 8009, 8080, 8090, 9080, 65535]
    for _ in range(150):
        entries = _random_entries(rng, peers)
        ms = compile_state(_state(entries), slot=1)
        for peer in peers + [2]:
            for proto in (PROTO_TCP, PROTO_UDP):
                for port in probes:
                    allowed, by_rule, _, _ = kernel_model(ms, Direction.INGRESS, 7, peer, proto, port)
                    want = reference(entries, peer, proto, port)
                    got = "allow" if allowed else ("deny" if by_rule else "default")
                    assert got == want, (entries, peer, proto, port)


# ------------------------------------------------------------------------------------------- entries

def test_less_specific_deny_overrides_more_specific_allow_in_the_same_lookup():
    entries = [PolicyEntry(1001, PortRange(PROTO_TCP, 80, 80), False, _origin("allow")),
               PolicyEntry(1001, PortRange(PROTO_TCP, 0, 0), True, _origin("deny", "ingressDeny"))]
    ms = compile_state(_state(entries), slot=0)
    allowed, by_rule, mtype, cookie = kernel_model(ms, Direction.INGRESS, 7, 1001, PROTO_TCP, 80)
    assert not allowed and by_rule and mtype == MATCH_L3_PROTO     # the deny names TCP, no port
    assert ms.cookies[cookie][0].name == "deny"


def test_match_types_and_cookies():
    entries = [PolicyEntry(1001, PortRange(0), False, _origin("l3")),
               PolicyEntry(1002, PortRange(PROTO_UDP, 53, 53), False, _origin("l3l4")),
               PolicyEntry(0, PortRange(PROTO_TCP, 443, 443), False, _origin("l4")),
               PolicyEntry(0, PortRange(PROTO_ICMP, 8, 8), False, _origin("icmp")),
               PolicyEntry(1003, PortRange(PROTO_TCP, 0, 0), False, _origin("l3proto")),
               PolicyEntry(0, PortRange(PROTO_UDP, 0, 0), False, _origin("proto"))]
    ms = compile_state(_state(entries, direction="egress"), slot=1)
    e = Direction.EGRESS
    assert kernel_model(ms, e, 7, 1001, PROTO_TCP, 5)[2] == MATCH_L3_ONLY
    assert kernel_model(ms, e, 7, 1002, PROTO_UDP, 53)[2] == MATCH_L3_L4
    assert kernel_model(ms, e, 7, 9999, PROTO_TCP, 443)[2] == MATCH_L4_ONLY
    assert kernel_model(ms, e, 7, 1003, PROTO_TCP, 22)[2] == MATCH_L3_PROTO      # Cilium's L3-Proto
    assert kernel_model(ms, e, 7, 9999, PROTO_UDP, 9)[2] == MATCH_PROTO_ONLY     # Cilium's Proto-Only
    assert kernel_model(ms, e, 7, 9999, PROTO_ICMP, 8)[0]          # echo request: type 8
    assert not kernel_model(ms, e, 7, 9999, PROTO_ICMP, 0)[0]
    assert not kernel_model(ms, Direction.INGRESS, 7, 1001, PROTO_TCP, 5)[0]   # other direction: nothing
    names = {c: o[0].name for c, o in ms.cookies.items()}
    assert sorted(names.values()) == ["icmp", "l3", "l3l4", "l3proto", "l4", "proto"]
    allow_all = compile_state(_state([PolicyEntry(0, PortRange(0), False, _origin("all"))]), slot=0)
    assert kernel_model(allow_all, Direction.INGRESS, 7, 5, PROTO_UDP, 1)[2] == MATCH_ALL


def test_cookies_are_stable_across_revisions_and_slots():
    entries = [PolicyEntry(1001, PortRange(PROTO_TCP, 80, 80), False, _origin("a", index=3))]
    c0 = compile_state(_state(entries), slot=0).cookies
    c1 = compile_state(_state(entries + [PolicyEntry(5, PortRange(0), False, _origin("b"))]), slot=1).cookies
    assert set(c0) <= set(c1) and all(c != 0 for c in c1)


def test_same_key_from_two_rules_merges_origins_and_deny_wins():
    entries = [PolicyEntry(1001, PortRange(PROTO_TCP, 80, 80), False, _origin("x")),
               PolicyEntry(1001, PortRange(PROTO_TCP, 80, 80), False, _origin("y")),
               PolicyEntry(1002, PortRange(PROTO_TCP, 80, 80), False, _origin("z")),
               PolicyEntry(1002, PortRange(PROTO_TCP, 80, 80), True, _origin("zz", "ingressDeny"))]
    ms = compile_state(_state(entries), slot=0)
    _, _, _, cookie = kernel_model(ms, Direction.INGRESS, 7, 1001, PROTO_TCP, 80)
    assert sorted(o.name for o in ms.cookies[cookie]) == ["x", "y"]
    allowed, by_rule, _, cookie = kernel_model(ms, Direction.INGRESS, 7, 1002, PROTO_TCP, 80)
    assert not allowed and by_rule and [o.name for o in ms.cookies[cookie]] == ["zz"]


def test_any_protocol_with_a_port_means_tcp_udp_sctp():
    ms = compile_state(_state([PolicyEntry(0, PortRange(0, 80, 80), False, _origin("any80"))]), slot=0)
    assert len(ms.policy) == 3
    for proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP):
        assert kernel_model(ms, Direction.INGRESS, 7, 1, proto, 80)[0]
    assert not kernel_model(ms, Direction.INGRESS, 7, 1, PROTO_ICMP, 80)[0]


def test_ipcache_and_epcfg_entries():
    st = _state([], audit=True, ipcache={"10.0.0.0/8": 16777217, "10.1.2.3": 300, "fd00::/64": 9})
    st.endpoints[7].egress.enforced = False
    ms = compile_state(st, slot=1)
    keys = {maps.IPCACHE_KEY.unpack(k): maps.IPCACHE_VAL.unpack(v)[0] for k, v in ms.ipcache.items()}
    assert keys == {(40, 1, bytes([10, 0, 0, 0])): 16777217, (64, 1, bytes([10, 1, 2, 3])): 300}
    (k, v), = ms.epcfg.items()
    assert maps.EPCFG_KEY.unpack(k) == (1, 7)
    assert maps.EPCFG_VAL.unpack(v) == (300, maps.EP_F_ENFORCE_INGRESS | maps.EP_F_AUDIT)
    with pytest.raises(UsageError):
        compile_state(_state([], ipcache={"not-an-ip": 5}), slot=0)


def test_ctypes_mirrors_match_the_packers():
    assert ctypes.sizeof(maps.PolicyKey) == maps.POLICY_KEY.size == 16
    assert ctypes.sizeof(maps.PolicyVal) == maps.POLICY_VAL.size == 8
    assert ctypes.sizeof(maps.IpcacheKey) == maps.IPCACHE_KEY.size == 12
    assert ctypes.sizeof(maps.EpInfo) == maps.EP_INFO.size
    assert ctypes.sizeof(maps.DpState) == maps.DP_STATE.size
    assert ctypes.sizeof(maps.EpcfgKey) == maps.EPCFG_KEY.size
    assert ctypes.sizeof(maps.CtKey) == 20 and maps.CtKey.ifindex.offset == 16
    assert ctypes.sizeof(maps.CtEntry) == 80 and maps.CtEntry.nat_addr.offset == 64
    assert ctypes.sizeof(maps.LbSvcKey) == maps.LB_SVC_KEY.size == 12
    assert ctypes.sizeof(maps.LbSvcVal) == maps.LB_SVC_VAL.size == 16
    assert ctypes.sizeof(maps.LbBackend) == maps.LB_BACKEND.size == 8
    assert ctypes.sizeof(maps.MonitorConfig) == maps.MONITOR_CONFIG.size == 16
    raw = maps.policy_key(1, 2, 7, 1001, PROTO_TCP, 8080, 96)
    k = maps.PolicyKey.from_buffer_copy(raw)
    assert (k.prefixlen, k.slot, k.dir, k.ep_id, k.identity, k.proto) == (96, 1, 2, 7, 1001, PROTO_TCP)
    assert bytes(k.dport) == (8080).to_bytes(2, "big")


def test_cookie_file_is_json_with_origin_dicts():
    import json

    from ciliumctl.datapath.mapstate import cookies_json

    ms = compile_state(_state([PolicyEntry(1, PortRange(PROTO_TCP, 1, 2), False, _origin("a\"b", index=2))]), 0)
    data = json.loads(cookies_json(ms.cookies, 9))
    assert data["revision"] == 9
    (cookie, origins), = data["cookies"].items()
    assert int(cookie) in ms.cookies
    assert origins == [{"kind": "CiliumNetworkPolicy", "name": "a\"b", "namespace": "default",
                        "section": "ingress", "index": 2}]
