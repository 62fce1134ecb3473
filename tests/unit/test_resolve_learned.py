"""resolve_learned: the identities of newly learned addresses and the policy entries they take part in, without
resolving the rest of the node (what the DNS proxy programs in place, node.dns_proxy.service). Its result must be
what a full resolve() gives those identities, over the shared corpus and policies written to stress it."""

from __future__ import annotations

import ipaddress

import pytest
import yaml
from support.corpus import CORPUS, valid_policies

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import MemoryAllocator
from ciliumctl.policy.resolve import resolve, resolve_learned
from ciliumctl.policy.resolved import PROTO_TCP, Direction, PortRange

NODE = {"kubernetes.io/hostname": "n1"}
OUTSIDE = "192.0.2.77"          # inside no rule's CIDR


def _spec_labels(selector: dict | None, namespace: str) -> tuple[str, dict[str, str]]:
    """An endpoint a rule's matchLabels select: (namespace, labels)."""
    labels = {}
    for key, value in ((selector or {}).get("matchLabels") or {}).items():
        source, _, rest = key.partition(":")
        key = rest if rest and source in ("k8s", "any") else key
        if key.startswith("reserved:"):
            continue
        if key == "io.kubernetes.pod.namespace":
            namespace = str(value)
        else:
            labels[key] = str(value)
    return namespace, labels or {"app": "other"}


def endpoints_for(docs: list[dict]) -> list[Endpoint]:
    """One endpoint per rule, with the labels its selector names, so that every rule has a subject."""
    eps = []
    for doc in docs:
        namespace = (doc.get("metadata") or {}).get("namespace") or "default"
        if doc.get("kind") == "NetworkPolicy":
            selectors = [(doc.get("spec") or {}).get("podSelector")]
        else:
            selectors = [s.get("endpointSelector") for s in [doc.get("spec") or {}, *(doc.get("specs") or [])]]
        for sel in selectors:
            n = len(eps) + 1
            ns, labels = _spec_labels(sel, namespace)
            eps.append(Endpoint(n, f"ep{n}", ns, labels, ipv4=f"10.200.{n // 250}.{n % 250 + 1}"))
    return eps


def learned_addresses(docs: list[dict], eps: list[Endpoint]) -> dict[str, list[str]]:
    """Addresses as the DNS proxy learns them: names each toFQDNs selector matches, alone, in pairs and all
    together (several selectors: a label set of its own), at addresses inside every rule CIDR and outside all."""
    state = resolve(eps, docs, "default", MemoryAllocator())
    names = []
    for nm in state.fqdn_selectors:
        name = nm.name or nm.pattern.replace("**", "deep.sub").replace("*", "x")
        if nm.matches(name):
            names.append(name)
    if not names:
        return {}
    combos = [[n] for n in names] + [list(p) for p in zip(names, names[1:])] + [names]
    places = [ipaddress.ip_network(p) for p in state.fqdn_prefixes if ipaddress.ip_network(p).version == 4]
    places.append(ipaddress.ip_network(f"{OUTSIDE}/32"))
    out: dict[str, list[str]] = {}
    for net in places:
        for k, combo in enumerate(combos[:max(1, min(len(combos), net.num_addresses - 2))]):
            ip = str(net.network_address + (k + 1 if net.num_addresses > 2 else 0))
            out.setdefault(ip, combo)
    return out


def restricted(state, identities: set[int], addresses) -> dict:
    """What a full resolve gives these identities and addresses, in resolve_learned's terms."""
    entries = {}
    for ep_id, pol in state.endpoints.items():
        for d in (Direction.INGRESS, Direction.EGRESS):
            mine = [e for e in pol.direction(d).entries if e.identity in identities]
            if mine:
                entries[(ep_id, d)] = mine
    return {"identities": {i: state.identities[i] for i in identities},
            "ipcache": {p: i for p, i in state.ipcache.items() if i in identities and p[:-3] in addresses},
            "endpoint_identities": {ep_id: pol.identity for ep_id, pol in state.endpoints.items()},
            "entries": entries,
            "dns": {ep: mine for ep, allows in state.dns.items()
                    if (mine := [a for a in allows if a.identity in identities])},
            "http": {key: mine for key, allows in state.http.items()
                     if (mine := [a for a in allows if a.identity in identities])}}


def learned_view(part, state) -> dict:
    """resolve_learned's result; its rules.dns and rules.http only where the full state enforces the direction
    (resolve() lists them there only)."""
    return {"identities": part.identities, "ipcache": part.ipcache,
            "endpoint_identities": part.endpoint_identities, "entries": part.entries,
            "dns": {ep: a for ep, a in part.dns.items() if state.endpoints[ep].egress.enforced},
            "http": {(ep, d): a for (ep, d), a in part.http.items()
                     if state.endpoints[ep].direction(Direction(d)).enforced}}


def check(docs: list[dict], eps: list[Endpoint], learned: dict[str, list[str]], mode: str) -> int:
    """Both ways a node meets new addresses, each compared with the full resolve; the entries compared."""
    # 1. everything at once, from an empty identity table
    part = resolve_learned(eps, docs, mode, MemoryAllocator(), learned, NODE)
    state = resolve(eps, docs, mode, MemoryAllocator(), node_labels=NODE, fqdn_ips=learned)
    assert learned_view(part, state) == restricted(state, set(part.identities), learned)
    # 2. a programmed revision learns the second half: its allocator has the first half's identities
    ips = sorted(learned)
    before, after = {ip: learned[ip] for ip in ips[::2]}, {ip: learned[ip] for ip in ips[1::2]}
    alloc = MemoryAllocator()
    resolve(eps, docs, mode, alloc, node_labels=NODE, fqdn_ips=before)
    part = resolve_learned(eps, docs, mode, alloc, after, NODE)
    state = resolve(eps, docs, mode, alloc, node_labels=NODE, fqdn_ips=learned)
    assert learned_view(part, state) == restricted(state, set(part.identities), after)
    return sum(len(e) for e in part.entries.values())


STRESS = [yaml.safe_load(d) for d in """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.97.0.53/32]
    toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
  - toFQDNs: [{matchPattern: "*.example.test"}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toFQDNs: [{matchName: multi.example.test}, {matchPattern: "**.deep.test"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}, {port: "80", protocol: TCP}]}]
  - toCIDRSet: [{cidr: 10.97.0.0/16, except: [10.97.66.0/24]}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  - toEntities: [world]
    toPorts: [{ports: [{port: "8443", protocol: TCP}]}]
  - toFQDNs: [{matchName: web.example.test}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - toCIDR: [10.98.0.0/16]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchName: multi.example.test}]}}]
  egressDeny:
  - toCIDR: [10.97.99.0/24]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingress:
  - fromCIDR: [10.97.0.0/16]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: audit, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: lax}}
  enableDefaultDeny: {egress: false}
  egress:
  - toFQDNs: [{matchPattern: "*.example.test"}]
  egressDeny:
  - toCIDR: [10.97.99.0/24]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host}
spec:
  nodeSelector: {matchLabels: {kubernetes.io/hostname: n1}}
  egress:
  - toCIDR: [10.97.0.0/16]
    toPorts: [{ports: [{port: "6443", protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: knp, namespace: default}
spec:
  podSelector: {matchLabels: {app: knp}}
  egress:
  - to: [{ipBlock: {cidr: 10.97.0.0/17, except: [10.97.1.0/24]}}]
""".split("\n---\n")]


@pytest.mark.parametrize("mode", ["default", "always", "never"])
def test_equals_a_full_resolve_on_policies_that_stress_it(mode):
    eps = endpoints_for(STRESS) + [Endpoint(9, "lax", "default", {"app": "lax"}, ipv4="10.200.9.1")]
    learned = learned_addresses(STRESS, eps)
    learned.update({"10.97.66.5": ["multi.example.test"], "10.97.99.5": ["a.example.test"],
                    "10.98.0.5": ["multi.example.test", "a.example.test"], "10.97.1.9": ["web.example.test"],
                    "10.200.0.2": ["a.example.test"]})        # the last one: an endpoint's address
    compared = check(STRESS, eps, learned, mode)
    assert compared > 50 if mode != "never" else compared == 0


@pytest.mark.skipif(not CORPUS.is_dir(), reason="policy corpus not present")
def test_equals_a_full_resolve_over_the_corpus():
    corpus = [doc for _, doc in valid_policies() if doc.get("kind") in
              ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy")]
    assert len(corpus) > 50
    compared = 0
    for doc in corpus:                                   # each policy alone
        eps = endpoints_for([doc])
        learned = learned_addresses([doc], eps)
        if learned:
            compared += check([doc], eps, learned, "default")
    eps = endpoints_for(corpus)                          # and all of them on one node
    learned = learned_addresses(corpus, eps)
    for mode in ("default", "always"):
        compared += check(corpus, eps, learned, mode)
    assert compared > 100


def test_an_address_of_two_selectors_inside_a_rule_cidr():
    """The case that costs a new identity: its entries are those of every rule that selects it."""
    client = Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")
    part = resolve_learned([client], STRESS[:1], "default", MemoryAllocator(), {"10.97.0.9": ["multi.example.test."]})
    (ident, labels), = part.identities.items()
    assert labels == {"fqdn:*.example.test", "fqdn:multi.example.test", "cidr:10.97.0.0/16", "reserved:world"}
    assert part.ipcache == {"10.97.0.9/32": ident}
    egress = part.entries[(1, Direction.EGRESS)]
    assert sorted(e.ports.lo for e in egress) == [22, 80, 443, 8443]
    assert all(e.identity == ident and not e.deny and e.ports.proto == PROTO_TCP for e in egress)
    # port 80 by two rules: one entry with both origins
    (http,) = [e for e in egress if e.ports == PortRange(PROTO_TCP, 80, 80)]
    assert [o.index for o in http.origins] == [1, 2]
    assert part.entries[(1, Direction.INGRESS)][0].ports == PortRange(PROTO_TCP, 9090, 9090)
    assert not part.dns and not part.http


def test_an_address_no_selector_wants_gets_nothing():
    client = Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")
    part = resolve_learned([client], STRESS[:1], "default", MemoryAllocator(), {"10.97.0.9": ["other.test."]})
    assert not part.identities and not part.ipcache and not part.entries
    assert part.endpoint_identities.keys() == {1}
