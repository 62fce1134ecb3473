"""DNS names in policy, pure: which names a `matchName` / `matchPattern` (toFQDNs, rules.dns) selects, and the
identity label of a toFQDNs selector.

Semantics are Cilium's (pkg/fqdn/matchpattern/matchpattern.go, pkg/policy/api/fqdn.go): names compare as
lower-case FQDNs with the trailing dot; `*` in a pattern is zero or more of [-a-zA-Z0-9_] within one label; a
pattern made only of stars (`*`, `**.`) matches every name; a leading `**.` matches one or more whole labels
(`**.example.test` selects a.example.test and a.b.example.test, not example.test).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

# matchpattern.go: allowedDNSCharsREGroup, dnsWildcardREGroup
_CHARS = "[-a-zA-Z0-9_]"
_SUBDOMAINS = "(" + _CHARS + "+" + "([.]" + _CHARS + "+){0,})[.]"
LABEL_SOURCE = "fqdn"           # pkg/labels: LabelSourceFQDN


def to_fqdn(name: str) -> str:
    """Lower case with the trailing dot, as Cilium compares names (dns.FQDN + ToLower)."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _all_stars(pattern: str) -> bool:
    # matchpattern.go isDNSWildcard: '*', '**', '**.', but not '.' or ''
    body = pattern[:-1] if pattern.endswith(".") else pattern
    return bool(body) and set(body) == {"*"}


def pattern_regex(pattern: str) -> str:
    """matchpattern.ToAnchoredRegexp of a Sanitize'd pattern."""
    pattern = pattern.strip().lower()
    if _all_stars(pattern):
        return "(^(" + _CHARS + "+[.])+$)|(^[.]$)"
    pattern = to_fqdn(pattern)
    out, start = [], 0
    stars = len(pattern) - len(pattern.lstrip("*"))
    if stars >= 2 and stars < len(pattern) and pattern[stars] == ".":
        out.append(_SUBDOMAINS)
        start = stars + 1
    i = start
    while i < len(pattern):
        c = pattern[i]
        if c == ".":
            out.append("[.]")
        elif c == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(_CHARS + "*")
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


@dataclass(frozen=True, order=True)
class NameMatch:
    """One matchName or matchPattern (exactly one is set)."""

    name: str = ""
    pattern: str = ""

    @property
    def text(self) -> str:
        """What Cilium puts in the identity label (FQDNSelector.IdentityLabel): matchName, else matchPattern."""
        return self.name or self.pattern

    @property
    def label(self) -> str:
        return f"{LABEL_SOURCE}:{self.text}"

    def matches(self, qname: str) -> bool:
        return _compiled(self.name, self.pattern).match(to_fqdn(qname)) is not None

    def __str__(self) -> str:
        return f"matchName: {self.name}" if self.name else f"matchPattern: {self.pattern}"


@functools.lru_cache(maxsize=4096)
def _compiled(name: str, pattern: str) -> re.Pattern:
    if name:
        return re.compile("^" + re.escape(to_fqdn(name)) + "$")
    return re.compile(pattern_regex(pattern))


def of(items: Iterable | None) -> tuple[NameMatch, ...]:
    """model.FQDNSelector / model.DNSRule items -> NameMatch, the empty ones left out."""
    out = []
    for x in items or ():
        if x.match_name:
            out.append(NameMatch(name=x.match_name))
        elif x.match_pattern:
            out.append(NameMatch(pattern=x.match_pattern))
    return tuple(out)


def any_matches(matches: Iterable[NameMatch], qname: str) -> bool:
    return any(m.matches(qname) for m in matches)


class RulePrefixes:
    """The IPv4 prefixes policies name (toCIDR, CIDRSet and their excepts), indexed for "which contain this
    address": a learned address carries their cidr: labels, so CIDR rules select it as they select any address
    inside them."""

    def __init__(self, prefixes: Iterable[str]):
        self.by_len: dict[int, set[int]] = {}
        for p in prefixes:
            net = ipaddress.ip_network(p, strict=False)
            if net.version == 4:
                self.by_len.setdefault(net.prefixlen, set()).add(int(net.network_address))
        self._lens = sorted(self.by_len)

    @property
    def texts(self) -> list[str]:
        return sorted(f"{ipaddress.IPv4Address(a)}/{n}" for n, s in self.by_len.items() for a in s)

    def containing(self, ip: str) -> list[str]:
        if not self._lens:
            return []
        try:
            addr = int.from_bytes(socket.inet_aton(ip), "big") if ip.count(".") == 3 else int(ipaddress.IPv4Address(ip))
        except OSError:                  # inet_aton refused it: the strict parser says why
            addr = int(ipaddress.IPv4Address(ip))
        out = []
        for n in self._lens:
            net = addr & ((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF)
            if net in self.by_len[n]:
                out.append(f"{ipaddress.IPv4Address(net)}/{n}")
        return out


def learned_labels(ip: str, names: Iterable[str], selectors: Iterable[NameMatch],
                   prefixes: RulePrefixes) -> frozenset[str] | None:
    """The identity labels of a learned IPv4 address: the fqdn: label of every toFQDNs selector matching one of its
    names (Cilium 1.16+ gives addresses selected by the same selectors one identity, pkg/fqdn/namemanager), the
    cidr: labels of the rule prefixes containing it, reserved:world. None: no selector wants it."""
    labels: set[str] = set()
    for n in names:
        labels |= _labels_of_name(n, selectors)
    if not labels:
        return None
    return frozenset({*labels, *(f"cidr:{p}" for p in prefixes.containing(ip)), "reserved:world"})


# The fqdn: labels of a name, per selector set: every resolve asks for every learned address, with the same
# selectors as the one before (a new tuple each time, equal), and most addresses share their names' answers.
_last_selectors: list = [None, (), {}]        # [the object asked with, its items, name -> labels]
_NAME_CACHE_MAX = 200_000


def _labels_of_name(name: str, selectors: Iterable[NameMatch]) -> frozenset[str]:
    obj, items, by_name = _last_selectors
    if selectors is not obj:
        asked = tuple(selectors)
        if asked != items:
            by_name = {}
        _last_selectors[:] = [selectors, asked, by_name]
        items = asked
    hit = by_name.get(name)
    if hit is None:
        if len(by_name) >= _NAME_CACHE_MAX:
            by_name.clear()
        hit = by_name[name] = frozenset(nm.label for nm in items if nm.matches(name))
    return hit
