"""The effective connectivity between the workloads that exist: for each source and destination, the ports the
datapath allows, computed by the trace engine (policy.resolve's ResolvedState, looked up with policy.trace.judge
as the datapath looks it up: the source's egress and the destination's ingress, a deny wins).

Verdicts are constant between the port boundaries the entries name, so each protocol's port space is cut at
those boundaries and one port of every piece is judged: exact, and no 65,535 lookups per pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity import allocator as ids
from ciliumctl.policy.ports import PROTOCOL_NAMES
from ciliumctl.policy.resolve import resolve_detailed
from ciliumctl.policy.resolved import (
    IDENTITY_ANY,
    PROTO_ANY,
    PROTO_ICMP,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    DirectionPolicy,
    Enforcement,
)
from ciliumctl.policy.trace import judge

PROTOS = ((PROTO_TCP, 1, 65535), (PROTO_UDP, 1, 65535), (PROTO_SCTP, 1, 65535), (PROTO_ICMP, 0, 255))
ALL, PORTS, DENIED, DEFAULT_DENY, SELF = "all", "ports", "denied", "default-deny", "self"


@dataclass
class Cell:
    state: str                                       # all | ports | denied | default-deny | self
    allowed: list[tuple[int, int, int]] = field(default_factory=list)    # (proto, lo, hi)

    @property
    def text(self) -> str:
        if self.state == ALL:
            return "all"
        if self.state == SELF:
            return "-"
        if self.state in (DENIED, DEFAULT_DENY):
            return self.state
        parts = []
        for proto, lo, hi in self.allowed:
            name = PROTOCOL_NAMES.get(proto, str(proto))
            if proto == PROTO_ICMP:
                parts.append("ICMP" if (lo, hi) == (0, 255) else f"ICMP {lo}" if lo == hi else f"ICMP {lo}-{hi}")
            elif (lo, hi) == (1, 65535):
                parts.append(name)
            else:
                parts.append(f"{lo}/{name}" if lo == hi else f"{lo}-{hi}/{name}")
        return ", ".join(parts)

    def allows(self, proto: int, port: int) -> bool:
        if self.state == ALL:
            return True
        return any(p == proto and lo <= port <= hi for p, lo, hi in self.allowed)


@dataclass
class Matrix:
    workloads: list[str]                             # "ns/name", rows and columns in this order
    cells: dict[tuple[str, str], Cell]
    mode: Enforcement

    def to_dict(self) -> dict:
        return {"workloads": self.workloads, "mode": self.mode.value,
                "cells": [{"source": s, "destination": d, "verdict": c.state, "allowed": c.text}
                          for (s, d), c in self.cells.items()]}


def _cuts(entries: Iterable, proto: int, lo: int, hi: int) -> list[int]:
    cuts = {lo}
    for e in entries:
        r = e.ports
        if r.any_port or r.proto not in (proto, PROTO_ANY):
            continue
        if r.proto == PROTO_ANY and proto == PROTO_ICMP:
            continue
        top = max(r.lo, r.hi)
        if lo <= r.lo <= hi:
            cuts.add(r.lo)
        if top + 1 <= hi:
            cuts.add(top + 1)
    return sorted(cuts)


def side_verdict(dp: DirectionPolicy, peer: int, proto: int, port: int) -> str:
    """allow | deny | default for one side; a direction that is not enforced allows."""
    if not dp.enforced:
        return "allow"
    return judge(dp, peer, proto, port)[0]


def cell(egress: DirectionPolicy, ingress: DirectionPolicy, src_identity: int, dst_identity: int) -> Cell:
    eg = [e for e in egress.entries if e.identity in (dst_identity, IDENTITY_ANY)] if egress.enforced else []
    ig = [e for e in ingress.entries if e.identity in (src_identity, IDENTITY_ANY)] if ingress.enforced else []
    eg_dp, ig_dp = DirectionPolicy(egress.enforced, eg), DirectionPolicy(ingress.enforced, ig)
    allowed: list[tuple[int, int, int]] = []
    everything, denied_explicitly = True, False
    for proto, lo, hi in PROTOS:
        cuts = _cuts(eg + ig, proto, lo, hi)
        for i, start in enumerate(cuts):
            end = cuts[i + 1] - 1 if i + 1 < len(cuts) else hi
            a, b = side_verdict(eg_dp, dst_identity, proto, start), side_verdict(ig_dp, src_identity, proto, start)
            if a == "allow" and b == "allow":
                if allowed and allowed[-1][0] == proto and allowed[-1][2] == start - 1:
                    allowed[-1] = (proto, allowed[-1][1], end)
                else:
                    allowed.append((proto, start, end))
            else:
                everything = False
                denied_explicitly = denied_explicitly or "deny" in (a, b)
    if everything:
        return Cell(ALL)
    if allowed:
        return Cell(PORTS, allowed)
    return Cell(DENIED if denied_explicitly else DEFAULT_DENY)


def compute(endpoints: list[Endpoint], policies: Iterable, mode: Enforcement | str = Enforcement.DEFAULT,
            namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
            allocator: ids.IdentityBackend | None = None) -> Matrix:
    mode = Enforcement(mode)
    eps = [ep if ep.id else Endpoint(**{**ep.to_dict(), "id": i + 1}) for i, ep in enumerate(endpoints)]
    res = resolve_detailed(eps, list(policies), mode, allocator or ids.MemoryAllocator(),
                           namespace_labels=namespace_labels)
    names = [f"{ep.namespace}/{ep.name}" for ep in eps]
    pols = [res.state.endpoints[ep.id] for ep in eps]
    cells: dict[tuple[str, str], Cell] = {}
    by_identity: dict[tuple[int, int], Cell] = {}       # one identity pair, one verdict
    for i, src in enumerate(pols):
        for j, dst in enumerate(pols):
            if i == j:
                cells[(names[i], names[j])] = Cell(SELF)
                continue
            key = (src.identity, dst.identity)
            c = by_identity.get(key)
            if c is None:
                c = by_identity[key] = cell(src.egress, dst.ingress, src.identity, dst.identity)
            cells[(names[i], names[j])] = c
    return Matrix(names, cells, mode)
