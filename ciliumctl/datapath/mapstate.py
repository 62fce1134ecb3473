"""ResolvedState -> the exact map entries of one slot. A pure function: no BPF, no root.

Policy entries become LPM keys (slot, direction, endpoint, peer identity | protocol | port prefix). A port range
becomes its minimal set of port prefixes. The datapath does two lookups per new connection (the peer's identity
and "any"); each returns only its most specific match, so every entry covered by a less specific deny of the same
lookup is stored as that deny: then the most specific match is a deny whenever any deny matches, and deny wins.
"""

from __future__ import annotations

import ipaddress
import json
import zlib
from dataclasses import dataclass, field

from ciliumctl.base.errors import UsageError
from ciliumctl.datapath import maps
from ciliumctl.datapath.events import (
    MATCH_ALL,
    MATCH_L3_L4,
    MATCH_L3_ONLY,
    MATCH_L3_PROTO,
    MATCH_L4_ONLY,
    MATCH_PROTO_ONLY,
)
from ciliumctl.policy.resolved import (
    PROTO_ANY,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Direction,
    PolicyEntry,
    PortRange,
    ResolvedState,
    RuleOrigin,
)


@dataclass
class MapState:
    """Entries of one slot, as raw key -> value bytes per map, plus the cookie table."""

    slot: int
    policy: dict[bytes, bytes] = field(default_factory=dict)
    ipcache: dict[bytes, bytes] = field(default_factory=dict)
    epcfg: dict[bytes, bytes] = field(default_factory=dict)
    lb_services: dict[bytes, bytes] = field(default_factory=dict)    # services of the revision (servicemap)
    cookies: dict[int, tuple[RuleOrigin, ...]] = field(default_factory=dict)   # cookie -> origins


def port_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """Minimal (port, prefix bits) cover of [lo, hi] in the 16-bit port space. 0..0 and 0..65535 are 'any'."""
    if lo == 0 and hi == 0:
        return [(0, 0)]
    if hi == 0:
        hi = lo
    if not (0 <= lo <= hi <= 65535):
        raise UsageError(f"port range {lo}-{hi} is not within 0-65535")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        bits = 16 - (size.bit_length() - 1)
        out.append((lo, bits))
        lo += size
    return out


def cookie_for(origins: tuple[RuleOrigin, ...], taken: dict[int, tuple]) -> int:
    """A u32 that names a set of origins; stable across revisions (a hash), never 0, collisions probed."""
    canon = tuple(sorted(set(origins))) if len(origins) > 1 else tuple(origins)
    text = "\n".join([f"{o.kind}/{o.namespace}/{o.name}/{o.section}/{o.index}" for o in canon])
    c = zlib.crc32(text.encode()) or 1
    while c in taken and taken[c] != canon:
        c = (c + 1) & 0xFFFFFFFF or 1
    taken[c] = canon
    return c


def _expand_protocols(entry: PolicyEntry) -> list[tuple[int, int, int]]:
    """(proto, lo, hi) triples; a port with 'any' protocol applies to TCP, UDP and SCTP like Cilium's ANY."""
    p = entry.ports
    if p.proto == PROTO_ANY and not p.any_port:
        return [(proto, p.lo, p.hi) for proto in (PROTO_TCP, PROTO_UDP, PROTO_SCTP)]
    return [(p.proto, p.lo, p.hi)]


def _match_type(identity: int, key: tuple[int, int, int]) -> int:
    """Cilium's POLICY_MATCH_* for an entry: with or without a peer identity, by what of L4 it names."""
    proto, _port, plen = key
    if proto == PROTO_ANY:
        return MATCH_L3_ONLY if identity else MATCH_ALL
    if plen == maps.POLICY_PROTO_BITS:      # a protocol, any port
        return MATCH_L3_PROTO if identity else MATCH_PROTO_ONLY
    return MATCH_L3_L4 if identity else MATCH_L4_ONLY


def _prefix_bits(proto: int, port: int, pbits: int) -> tuple[int, int, int]:
    """(proto, port, LPM prefix length) of the key."""
    if proto == PROTO_ANY:
        return 0, 0, maps.POLICY_FIXED_BITS
    if pbits == 0:
        return proto, 0, maps.POLICY_PROTO_BITS
    return proto, port, maps.POLICY_PORT_BASE + pbits


def _ancestors(k: tuple[int, int, int]):
    """Every LPM entry key that matches all packets of entry k (k itself included), most specific first."""
    proto, port, plen = k
    if plen >= maps.POLICY_PORT_BASE:
        for bits in range(plen - maps.POLICY_PORT_BASE, 0, -1):
            shift = 16 - bits
            yield proto, (port >> shift) << shift, maps.POLICY_PORT_BASE + bits
    if plen >= maps.POLICY_PROTO_BITS:
        yield proto, 0, maps.POLICY_PROTO_BITS
    yield 0, 0, maps.POLICY_FIXED_BITS


_enc = json.encoder.encode_basestring   # a JSON string literal (C accelerated)


def cookies_json(cookies: dict[int, tuple[RuleOrigin, ...]], revision: int) -> str:
    """The cookie table file: {"revision": N, "cookies": {"<cookie>": [RuleOrigin as a dict, ...]}}."""
    cache: dict[RuleOrigin, str] = {}
    parts = []
    for c, origins in cookies.items():
        items = []
        for o in origins:
            text = cache.get(o)
            if text is None:
                text = cache[o] = (f'{{"index": {int(o.index)}, "kind": {_enc(o.kind)}, "name": {_enc(o.name)}, '
                                   f'"namespace": {_enc(o.namespace)}, "section": {_enc(o.section)}}}')
            items.append(text)
        parts.append(f'"{c}": [{", ".join(items)}]')
    return f'{{"revision": {int(revision)}, "cookies": {{{", ".join(parts)}}}}}'


def _keys_for(proto: int, lo: int, hi: int) -> tuple[tuple[int, int, int], ...]:
    """The (proto, port, prefix length) LPM keys of one port range."""
    if proto != PROTO_ANY and lo == hi and lo:
        return ((proto, lo, maps.POLICY_FULL_BITS),)
    out = []
    for p, plo, phi in _expand_protocols(PolicyEntry(0, PortRange(proto, lo, hi), False)):
        for port, pbits in port_prefixes(plo, phi):
            out.append(_prefix_bits(p, port, pbits))
    return tuple(out)


def compile_policy(state: ResolvedState, slot: int) -> tuple[dict[bytes, bytes], dict[int, tuple[RuleOrigin, ...]]]:
    """Policy map entries of a slot and the cookie table. (Hot: 10,000 entries must compile in a few ms.)"""
    taken: dict[int, tuple] = {}
    cookie_by_id: dict[int, int] = {}       # id(origins) -> cookie; the tuples live as long as `state`
    cookie_by_set: dict = {}                # one origin or a frozenset of them -> cookie
    key_cache: dict[tuple[int, int, int], tuple] = {}
    pack_key, pack_val = maps.POLICY_KEY.pack, maps.POLICY_VAL.pack
    out: dict[bytes, bytes] = {}
    merged: list[tuple] = []                # keeps merged origin tuples alive while ids are cached
    for ep_id, ep in sorted(state.endpoints.items()):
        for direction in (Direction.INGRESS, Direction.EGRESS):
            # peer identity -> (proto, port, plen) -> [deny?, origins, proxy port]
            groups: dict[int, dict[tuple[int, int, int], list]] = {}
            has_deny: set[int] = set()
            for entry in ep.direction(direction).entries:
                ports = entry.ports
                rk = (ports.proto, ports.lo, ports.hi)
                keys = key_cache.get(rk)
                if keys is None:
                    keys = key_cache[rk] = _keys_for(*rk)
                group = groups.get(entry.identity)
                if group is None:
                    group = groups[entry.identity] = {}
                deny, origins, proxy = entry.deny, entry.origins, entry.proxy_port
                if deny:
                    has_deny.add(entry.identity)
                for k in keys:
                    cur = group.get(k)
                    if cur is None or (deny and not cur[0]):
                        group[k] = [deny, origins, proxy]
                        continue
                    if proxy and not cur[0] and not cur[2]:
                        cur[2] = proxy          # an allow with L7 rules and one without: the proxy decides
                    if cur[0] == deny and cur[1] is not origins and not set(origins) <= set(cur[1]):
                        cur[1] = tuple(sorted(set(cur[1]) | set(origins)))
                        merged.append(cur[1])
            d = int(direction)
            for identity, entries in groups.items():
                check = identity in has_deny
                for k, (deny, origins, proxy) in entries.items():
                    mtype = _match_type(identity, k)
                    if deny:
                        proxy = 0
                    elif check:
                        # stored as the most specific deny that covers it, if any
                        for anc in _ancestors(k):
                            cover = entries.get(anc)
                            if cover is not None and cover[0]:
                                deny, origins = True, cover[1]
                                mtype = _match_type(identity, anc)
                                break
                    cookie = cookie_by_id.get(id(origins))
                    if cookie is None:
                        fs = origins[0] if len(origins) == 1 else frozenset(origins)
                        cookie = cookie_by_set.get(fs)
                        if cookie is None:
                            cookie = cookie_by_set[fs] = cookie_for(origins, taken)
                        cookie_by_id[id(origins)] = cookie
                    proto, port, plen = k
                    out[pack_key(plen, slot, d, ep_id, identity, proto, port.to_bytes(2, "big"))] = \
                        pack_val(1 if deny else 0, mtype, maps.proxy_port_field(proxy) if proxy and not deny else 0,
                                 cookie)
    return out, taken


def compile_ipcache(state: ResolvedState, slot: int) -> dict[bytes, bytes]:
    out = {}
    for prefix, identity in state.ipcache.items():
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise UsageError(f"ipcache prefix {prefix!r} is not an IP prefix") from None
        if net.version != 4:
            continue  # the datapath is IPv4-only for now
        key = maps.IPCACHE_KEY.pack(maps.IPCACHE_BASE_BITS + net.prefixlen, slot, net.network_address.packed)
        out[key] = maps.IPCACHE_VAL.pack(identity)
    return out


def compile_epcfg(state: ResolvedState, slot: int) -> dict[bytes, bytes]:
    out = {}
    for ep_id, ep in state.endpoints.items():
        flags = ((maps.EP_F_ENFORCE_INGRESS if ep.ingress.enforced else 0)
                 | (maps.EP_F_ENFORCE_EGRESS if ep.egress.enforced else 0)
                 | (maps.EP_F_AUDIT if state.audit or ep.audit else 0))
        out[maps.EPCFG_KEY.pack(slot, ep_id)] = maps.EPCFG_VAL.pack(ep.identity, flags)
    return out


def compile_state(state: ResolvedState, slot: int) -> MapState:
    for ep_id in state.endpoints:
        if not 0 <= ep_id <= 65535:     # 0: the host endpoint (policy.resolve HOST_ENDPOINT_ID, bpf_host.c)
            raise UsageError(f"endpoint id {ep_id} is outside 1-65535")
    from ciliumctl.datapath.servicemap import compile_services

    policy, cookies = compile_policy(state, slot)
    return MapState(slot=slot, policy=policy, ipcache=compile_ipcache(state, slot),
                    epcfg=compile_epcfg(state, slot), lb_services=compile_services(state.services, slot),
                    cookies=cookies)
