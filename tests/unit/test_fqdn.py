"""DNS names in policy: Cilium's matchName / matchPattern semantics (pkg/fqdn/matchpattern) and what resolve
makes of toFQDNs (learned addresses) and rules.dns (the DNS proxy's allow list)."""

import pytest
import yaml

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import MIN_LOCAL, MemoryAllocator
from ciliumctl.policy.fqdn import NameMatch, pattern_regex, to_fqdn
from ciliumctl.policy.resolve import resolve
from ciliumctl.policy.resolved import IDENTITY_ANY, PROTO_TCP, PROTO_UDP, PortRange

CLIENT = Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")
DNS = Endpoint(2, "dns", "default", {"app": "dns"}, ipv4="10.200.0.2")


@pytest.mark.parametrize("pattern,name,hit", [
    ("*", "anything.example.test", True),
    ("*", "a.b.c.", True),
    ("**.", "x.y.", True),
    ("*.example.test", "api.example.test", True),
    ("*.example.test", "a.b.example.test", False),       # one label only
    ("*.example.test", "example.test", False),
    ("**.example.test", "a.b.example.test", True),       # whole labels, one or more
    ("**.example.test", "api.example.test", True),
    ("**.example.test", "example.test", False),
    ("api*.example.test", "api.example.test", True),     # zero or more characters
    ("api*.example.test", "api-2.example.test", True),
    ("api*.example.test", "xapi.example.test", False),
    ("API.Example.TEST", "api.example.test.", True),     # case and trailing dot do not matter
    ("api.example.test", "apixexample.test", False),     # a dot is a dot, not a regex wildcard
    ("sub.*.test", "sub.example.test", True),
    ("sub.*.test", "sub.a.b.test", False),
])
def test_match_pattern_like_cilium(pattern, name, hit):
    assert NameMatch(pattern=pattern).matches(name) is hit


def test_pattern_regex_is_ciliums_anchored_regexp():
    # matchpattern_test.go: "*.cilium.io" -> "^[-a-zA-Z0-9_]*[.]cilium[.]io[.]$"
    assert pattern_regex("*.cilium.io") == "^[-a-zA-Z0-9_]*[.]cilium[.]io[.]$"
    assert pattern_regex("*") == "(^([-a-zA-Z0-9_]+[.])+$)|(^[.]$)"


def test_match_name_is_exact_and_case_insensitive():
    m = NameMatch(name="api.example.test")
    assert m.matches("API.example.test.") and not m.matches("www.api.example.test")
    assert m.label == "fqdn:api.example.test"
    assert to_fqdn("A.B") == "a.b."


def policy(spec: str) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "fqdn", "namespace": "default"}, "spec": yaml.safe_load(spec)}


FQDN_POLICY = policy("""
endpointSelector: {matchLabels: {app: client}}
egress:
- toEndpoints: [{matchLabels: {app: dns}}]
  toPorts:
  - ports: [{port: "53", protocol: ANY}]
    rules:
      dns: [{matchName: api.example.test}, {matchPattern: "*.svc.test"}]
- toFQDNs: [{matchName: api.example.test}]
  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""")


def test_tofqdns_selects_the_learned_addresses_only():
    learned = {"10.99.0.5": ["api.example.test."], "10.99.0.6": ["other.example.test"]}
    state = resolve([CLIENT, DNS], [FQDN_POLICY], "default", MemoryAllocator(), fqdn_ips=learned)
    ident = state.ipcache["10.99.0.5/32"]
    assert ident >= MIN_LOCAL                      # node-local, like a CIDR identity
    assert "fqdn:api.example.test" in state.identities[ident]
    assert "10.99.0.6/32" not in state.ipcache     # no selector wants it
    allowed = {(e.identity, e.ports) for e in state.endpoints[1].egress.entries if not e.deny}
    assert (ident, PortRange(PROTO_TCP, 80, 80)) in allowed
    assert not any(e.ports == PortRange(PROTO_TCP, 80, 80) and e.identity != ident
                   for e in state.endpoints[1].egress.entries)


def test_nothing_learned_selects_nothing():
    """The selector's own identity is there (its entries programmed ahead, so the first address it selects needs
    only an ipcache entry) but no address has it."""
    state = resolve([CLIENT, DNS], [FQDN_POLICY], "default", MemoryAllocator())
    web = {e.identity for e in state.endpoints[1].egress.entries if e.ports == PortRange(PROTO_TCP, 80, 80)}
    assert [state.identities[i] for i in web] == [{"fqdn:api.example.test", "reserved:world"}]
    assert not web & set(state.ipcache.values())
    assert [str(s) for s in state.fqdn_selectors] == ["matchName: api.example.test"]


def test_dns_rules_become_the_proxys_allow_list():
    state = resolve([CLIENT, DNS], [FQDN_POLICY], "default", MemoryAllocator())
    dns_id = state.endpoints[2].identity
    allows = state.dns[1]
    assert {(a.identity, a.ports) for a in allows} == {(dns_id, PortRange(PROTO_TCP, 53, 53)),
                                                       (dns_id, PortRange(PROTO_UDP, 53, 53)),
                                                       (dns_id, PortRange(132, 53, 53))}
    names = allows[0].names
    assert any(n.matches("api.example.test") for n in names)
    assert any(n.matches("x.svc.test") for n in names)
    assert not any(n.matches("evil.example.test") for n in names)
    assert 2 not in state.dns                      # the server's egress has no DNS rules


def test_dns_rules_without_a_peer_apply_to_every_server():
    pol = policy("""
endpointSelector: {matchLabels: {app: client}}
egress:
- toPorts:
  - ports: [{port: "53", protocol: UDP}]
    rules: {dns: [{matchPattern: "*"}]}
""")
    state = resolve([CLIENT], [pol], "default", MemoryAllocator())
    assert [(a.identity, a.ports) for a in state.dns[1]] == [(IDENTITY_ANY, PortRange(PROTO_UDP, 53, 53))]


def test_a_cidr_rule_still_selects_a_learned_address_inside_it():
    pol = policy("""
endpointSelector: {matchLabels: {app: client}}
egress:
- toCIDR: [10.99.0.0/16]
- toFQDNs: [{matchPattern: "*.example.test"}]
""")
    state = resolve([CLIENT], [pol], "default", MemoryAllocator(), fqdn_ips={"10.99.0.5": ["api.example.test"]})
    ident = state.ipcache["10.99.0.5/32"]
    assert state.identities[ident] == {"fqdn:*.example.test", "cidr:10.99.0.0/16", "reserved:world"}
    assert sum(1 for e in state.endpoints[1].egress.entries if e.identity == ident) == 1   # folded: one entry


def test_addresses_selected_alike_share_one_identity_and_excepts_hold():
    pol = policy("""
endpointSelector: {matchLabels: {app: client}}
egress:
- toFQDNs: [{matchPattern: "*.example.test"}]
  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
- toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.66.0.0/16]}]
  toPorts: [{ports: [{port: "22", protocol: TCP}]}]
""")
    learned = {"10.99.0.5": ["a.example.test"], "10.99.0.6": ["b.example.test"], "10.66.0.7": ["c.example.test"]}
    state = resolve([CLIENT], [pol], "default", MemoryAllocator(), fqdn_ips=learned)
    assert state.ipcache["10.99.0.5/32"] == state.ipcache["10.99.0.6/32"] != state.ipcache["10.66.0.7/32"]
    ssh = {e.identity for e in state.endpoints[1].egress.entries if e.ports == PortRange(PROTO_TCP, 22, 22)}
    assert state.ipcache["10.99.0.5/32"] in ssh and state.ipcache["10.66.0.7/32"] not in ssh     # the except
    https = {e.identity for e in state.endpoints[1].egress.entries if e.ports == PortRange(PROTO_TCP, 443, 443)}
    assert https & set(state.ipcache.values()) == {state.ipcache["10.99.0.5/32"], state.ipcache["10.66.0.7/32"]}
