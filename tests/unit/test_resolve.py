"""resolve(): endpoints + policies + mode -> ResolvedState, with Cilium's semantics."""

import pytest
import yaml

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import MemoryAllocator
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID, resolve, resolve_detailed
from ciliumctl.policy.resolved import (
    IDENTITY_ANY,
    PROTO_ANY,
    PROTO_ICMP,
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
    Enforcement,
    PortRange,
    RuleOrigin,
)

WEB = Endpoint(1, "web", "default", {"app": "web"}, ipv4="10.200.0.1")
DB = Endpoint(2, "db", "default", {"app": "db"}, ipv4="10.200.0.2")
OTHER = Endpoint(3, "web-b", "other", {"app": "web"}, ipv4="10.200.0.3")
EPS = [WEB, DB, OTHER]


def cnp(spec, name="p", namespace="default", kind="CiliumNetworkPolicy", specs=None):
    doc = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": name, "namespace": namespace}}
    if spec is not None:
        doc["spec"] = yaml.safe_load(spec) if isinstance(spec, str) else spec
    if specs is not None:
        doc["specs"] = yaml.safe_load(specs)
    return doc


def run(policies, mode="default", eps=EPS, **kw):
    return resolve(eps, policies, mode, MemoryAllocator(), **kw)


def peers(dp, deny=False):
    return {(e.identity, e.ports) for e in dp.entries if e.deny == deny}


def ident(state, ep):
    return state.endpoints[ep.id].identity


DB_FROM_WEB = cnp("""
endpointSelector: {matchLabels: {app: db}}
ingress:
- fromEndpoints: [{matchLabels: {app: web}}]
  toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
""")


def test_allow_by_labels_and_ipcache():
    st = run([DB_FROM_WEB])
    db = st.endpoints[DB.id]
    assert db.ingress.enforced and not db.egress.enforced
    assert peers(db.ingress) == {(ident(st, WEB), PortRange(PROTO_TCP, 5432, 5432))}
    assert db.ingress.entries[0].origins == (RuleOrigin("CiliumNetworkPolicy", "p", "default", "ingress", 0),)
    assert not st.endpoints[WEB.id].ingress.enforced
    assert st.ipcache["10.200.0.1/32"] == ident(st, WEB) and st.ipcache["0.0.0.0/0"] == 2
    assert ident(st, WEB) != ident(st, OTHER)        # same pod labels, other namespace: other identity
    assert "k8s:app=web" in st.identities[ident(st, WEB)]
    assert st.revision == 0 and not st.audit


def test_same_labels_share_an_identity_and_revision_audit_pass_through():
    twin = Endpoint(9, "web-2", "default", {"app": "web"}, ipv4="10.200.0.9")
    st = resolve([WEB, twin], [], "default", MemoryAllocator(), revision=7, audit=True)
    assert ident(st, WEB) == ident(st, twin)
    assert st.revision == 7 and st.audit


def test_cnp_namespace_scoping():
    st = run([DB_FROM_WEB])
    # web in namespace "other" is not selected by a peer selector of a policy in "default"
    assert ident(st, OTHER) not in {e.identity for e in st.endpoints[DB.id].ingress.entries}
    named = cnp("""
endpointSelector: {matchLabels: {app: db}}
ingress:
- fromEndpoints: [{matchLabels: {app: web, io.kubernetes.pod.namespace: other}}]
""")
    st = run([named])
    assert {e.identity for e in st.endpoints[DB.id].ingress.entries} == {ident(st, OTHER)}
    # the policy's endpointSelector never reaches into another namespace
    in_other = cnp(DB_FROM_WEB["spec"], namespace="other")
    st = run([in_other])
    assert not st.endpoints[DB.id].ingress.enforced


def test_ccnp_selects_across_namespaces():
    ccnp = cnp("""
endpointSelector: {matchLabels: {app: web}}
egress:
- toEndpoints: [{}]
""", kind="CiliumClusterwideNetworkPolicy", namespace="")
    st = run([ccnp])
    assert st.endpoints[WEB.id].egress.enforced and st.endpoints[OTHER.id].egress.enforced
    pods = {ident(st, e) for e in EPS}
    assert {e.identity for e in st.endpoints[WEB.id].egress.entries} == pods   # pods only, no reserved


@pytest.mark.parametrize("entity,expected", [
    ("host", {1}), ("world", {2}), ("remote-node", {6}), ("kube-apiserver", {7}), ("health", {4}),
    ("init", {5}), ("unmanaged", {3}), ("ingress", {8}), ("none", set()), ("all", {IDENTITY_ANY}),
])
def test_entities(entity, expected):
    st = run([cnp({"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": [entity]}]})])
    assert {e.identity for e in st.endpoints[WEB.id].egress.entries} == expected
    assert st.endpoints[WEB.id].egress.enforced


def test_cluster_entity_is_every_pod_and_the_cluster_reserved_identities():
    st = run([cnp({"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["cluster"]}]})])
    got = {e.identity for e in st.endpoints[WEB.id].egress.entries}
    assert got == {1, 3, 4, 5, 6, 7, 8} | {ident(st, e) for e in EPS}
    assert 2 not in got


def test_cidr_with_except():
    st = run([cnp("""
endpointSelector: {matchLabels: {app: web}}
egress:
- toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
- toCIDR: [192.168.1.0/24]
- toEntities: [world]
  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
""")])
    c8, c12, c24 = (st.ipcache[p] for p in ("10.0.0.0/8", "10.96.0.0/12", "192.168.1.0/24"))
    assert len({c8, c12, c24}) == 3 and all(c >= 16777217 for c in (c8, c12, c24))
    assert st.identities[c12] == frozenset({"cidr:10.96.0.0/12", "reserved:world"})
    eg = st.endpoints[WEB.id].egress
    l3 = {e.identity for e in eg.entries if e.ports == PortRange(PROTO_ANY)}
    assert l3 == {c8, c24}                           # the except prefix is not selected
    # world selects world and every CIDR identity
    assert {e.identity for e in eg.entries if e.ports == PortRange(PROTO_TCP, 443, 443)} == {2, c8, c12, c24}


def test_cidr_rule_selects_narrower_prefixes_mentioned_elsewhere():
    st = run([cnp("""
endpointSelector: {matchLabels: {app: web}}
egress:
- toCIDR: [0.0.0.0/0]
- toCIDR: [172.16.0.0/12]
  toPorts: [{ports: [{port: "80"}]}]
""")])
    c12 = st.ipcache["172.16.0.0/12"]
    assert {e.identity for e in st.endpoints[WEB.id].egress.entries if e.ports.proto == PROTO_ANY} == {2, c12}


def test_ports_ranges_any_and_icmp():
    st = run([cnp("""
endpointSelector: {matchLabels: {app: web}}
ingress:
- toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}, {port: "53"}, {port: "0", protocol: UDP}]}]
- icmps: [{fields: [{type: 8}, {type: EchoRequest, family: IPv6}]}]
""")])
    got = peers(st.endpoints[WEB.id].ingress)
    assert got == {(IDENTITY_ANY, PortRange(PROTO_TCP, 8000, 8100)),
                   (IDENTITY_ANY, PortRange(PROTO_TCP, 53, 53)), (IDENTITY_ANY, PortRange(PROTO_UDP, 53, 53)),
                   (IDENTITY_ANY, PortRange(PROTO_SCTP, 53, 53)), (IDENTITY_ANY, PortRange(PROTO_UDP, 0, 0)),
                   (IDENTITY_ANY, PortRange(PROTO_ICMP, 8, 8)), (IDENTITY_ANY, PortRange(58, 128, 128))}


def test_named_ports_l7_fqdn_are_noted():
    res = resolve_detailed(EPS, [cnp("""
endpointSelector: {matchLabels: {app: web}}
egress:
- toPorts: [{ports: [{port: http, protocol: TCP}]}]
- toFQDNs: [{matchName: example.com}]
  toPorts: [{ports: [{port: "443"}]}]
- toEndpoints: [{matchLabels: {app: db}}]
  toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
""")], "default", MemoryAllocator())
    eg = res.state.endpoints[WEB.id].egress
    assert eg.enforced
    fqdn_ids = {i for i, ls in res.state.identities.items() if "fqdn:example.com" in ls}   # no address yet
    assert {p for p in peers(eg) if p[0] not in fqdn_ids} == {(ident(res.state, DB), PortRange(PROTO_TCP, 80, 80))}
    assert fqdn_ids and not set(res.state.ipcache.values()) & fqdn_ids
    text = "\n".join(res.notes)
    # toFQDNs and rules.http are enforced (the DNS proxy, HAProxy): only the named port is noted
    assert "named port 'http'" in text and "toFQDNs" not in text and "L7" not in text


def test_deny_and_allow_both_kept_and_duplicates_fold():
    st = run([cnp("""
endpointSelector: {matchLabels: {app: db}}
ingress:
- fromEndpoints: [{matchLabels: {app: web}}]
- fromEndpoints: [{matchLabels: {app: web}}]
ingressDeny:
- fromEndpoints: [{matchLabels: {app: web}}]
  toPorts: [{ports: [{port: "22", protocol: TCP}]}]
""")])
    ing = st.endpoints[DB.id].ingress
    w = ident(st, WEB)
    assert peers(ing) == {(w, PortRange(PROTO_ANY))}
    assert peers(ing, deny=True) == {(w, PortRange(PROTO_TCP, 22, 22))}
    allow = next(e for e in ing.entries if not e.deny)
    assert [o.index for o in allow.origins] == [0, 1]


def test_empty_sections_and_empty_rules():
    # ingress: [{}] turns on default deny and allows nothing; ingress: [] does nothing
    st = run([cnp("endpointSelector: {matchLabels: {app: db}}\ningress: [{}]\negress: []")])
    db = st.endpoints[DB.id]
    assert db.ingress.enforced and db.ingress.entries == []
    assert not db.egress.enforced
    # an explicitly empty peer list selects nothing, even with ports
    st = run([cnp("""
endpointSelector: {matchLabels: {app: db}}
ingress: [{fromEndpoints: [], toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
""")])
    assert st.endpoints[DB.id].ingress.enforced and st.endpoints[DB.id].ingress.entries == []


def test_modes():
    assert not run([], "default").endpoints[WEB.id].ingress.enforced
    st = run([], Enforcement.ALWAYS)
    assert all(p.ingress.enforced and p.egress.enforced and not p.ingress.entries for p in st.endpoints.values())
    st = run([DB_FROM_WEB], "never")
    assert not st.endpoints[DB.id].ingress.enforced and st.endpoints[DB.id].ingress.entries == []
    st = run([DB_FROM_WEB], "always")
    assert peers(st.endpoints[DB.id].ingress) == {(ident(st, WEB), PortRange(PROTO_TCP, 5432, 5432))}
    assert st.endpoints[WEB.id].egress.enforced


def test_enable_default_deny_false():
    spec = yaml.safe_load(yaml.safe_dump(DB_FROM_WEB["spec"]))
    spec["enableDefaultDeny"] = {"ingress": False}
    st = run([cnp(spec)])
    assert not st.endpoints[DB.id].ingress.enforced
    # another policy that does default-deny still turns it on
    st = run([cnp(spec), cnp("endpointSelector: {matchLabels: {app: db}}\ningress: [{}]", name="dd")])
    assert st.endpoints[DB.id].ingress.enforced
    # explicit true enforces without any rule
    st = run([cnp({"endpointSelector": {"matchLabels": {"app": "db"}}, "enableDefaultDeny": {"egress": True}})])
    assert st.endpoints[DB.id].egress.enforced and not st.endpoints[DB.id].ingress.enforced


def test_deny_without_default_deny_is_enforced_with_allow_all():
    st = run([cnp("""
endpointSelector: {matchLabels: {app: db}}
enableDefaultDeny: {ingress: false}
ingressDeny:
- fromEntities: [world]
""")])
    ing = st.endpoints[DB.id].ingress
    assert ing.enforced
    assert peers(ing, deny=True) == {(2, PortRange(PROTO_ANY))}
    allow_all = [e for e in ing.entries if not e.deny]
    assert [(e.identity, e.ports, e.origins) for e in allow_all] == [(IDENTITY_ANY, PortRange(PROTO_ANY), ())]


def test_origin_index_is_flattened_across_specs():
    st = run([cnp(None, specs="""
- endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEntities: [host]}]
- endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEntities: [world]}]
""")])
    by = {e.identity: e.origins[0].index for e in st.endpoints[DB.id].ingress.entries}
    assert by == {1: 0, 2: 1}


NODE_POLICY = cnp("""
nodeSelector: {matchLabels: {role: worker}}
ingress:
- fromEntities: [cluster]
  toPorts: [{ports: [{port: "22", protocol: TCP}]}]
""", kind="CiliumClusterwideNetworkPolicy", namespace="")


def test_ccnp_node_selector_selects_only_the_host():
    st = run([NODE_POLICY])
    assert HOST_ENDPOINT_ID not in st.endpoints
    assert not any(p.ingress.enforced for p in st.endpoints.values())
    st = run([NODE_POLICY], node_labels={"role": "worker"}, host_ips=["192.168.50.1"])
    host = st.endpoints[HOST_ENDPOINT_ID]
    assert host.identity == 1 and host.ingress.enforced and not host.egress.enforced
    assert (ident(st, WEB), PortRange(PROTO_TCP, 22, 22)) in peers(host.ingress)
    assert "k8s:role=worker" in st.identities[1]
    assert st.ipcache["192.168.50.1/32"] == 1
    st = run([NODE_POLICY], node_labels={"role": "control-plane"})
    assert not st.endpoints[HOST_ENDPOINT_ID].ingress.enforced
    # an endpointSelector rule never selects the host
    st = run([cnp("endpointSelector: {}\ningress: [{}]", kind="CiliumClusterwideNetworkPolicy", namespace="")],
             node_labels={})
    assert not st.endpoints[HOST_ENDPOINT_ID].ingress.enforced and st.endpoints[WEB.id].ingress.enforced


def test_from_nodes_selects_the_host_by_node_labels():
    pol = cnp("""
endpointSelector: {matchLabels: {app: web}}
ingress: [{fromNodes: [{matchLabels: {role: worker}}]}]
""")
    assert peers(run([pol], node_labels={"role": "worker"}).endpoints[WEB.id].ingress) == {(1, PortRange(0))}
    assert peers(run([pol]).endpoints[WEB.id].ingress) == set()


def test_allow_localhost():
    st = run([DB_FROM_WEB], allow_localhost=True)
    assert (1, PortRange(PROTO_ANY)) in peers(st.endpoints[DB.id].ingress)
    assert not st.endpoints[WEB.id].ingress.enforced


def knp(spec, name="np", namespace="default"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": yaml.safe_load(spec)}


def test_network_policy_basics():
    st = run([knp("""
podSelector: {matchLabels: {app: db}}
ingress:
- from:
  - podSelector: {matchLabels: {app: web}}
  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other}}
  - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
  ports: [{port: 5432}, {protocol: UDP, port: 1000, endPort: 1010}]
""")])
    db = st.endpoints[DB.id]
    assert db.ingress.enforced and not db.egress.enforced
    c16 = st.ipcache["192.168.0.0/16"]
    want_peers = {ident(st, WEB), ident(st, OTHER), c16}
    assert {e.identity for e in db.ingress.entries} == want_peers
    assert {e.ports for e in db.ingress.entries} == {PortRange(PROTO_TCP, 5432, 5432),
                                                     PortRange(PROTO_UDP, 1000, 1010)}
    assert db.ingress.entries[0].origins[0] == RuleOrigin("NetworkPolicy", "np", "default", "ingress", 0)


def test_network_policy_default_deny_and_allow_all():
    st = run([knp("podSelector: {}\npolicyTypes: [Egress]")])
    assert all(st.endpoints[e.id].egress.enforced != (e is OTHER) for e in EPS)
    assert not st.endpoints[WEB.id].ingress.enforced
    st = run([knp("podSelector: {}")])                # no policyTypes: ingress default deny
    assert st.endpoints[WEB.id].ingress.enforced and not st.endpoints[WEB.id].egress.enforced
    st = run([knp("podSelector: {matchLabels: {app: db}}\ningress: [{}]")])
    assert peers(st.endpoints[DB.id].ingress) == {(IDENTITY_ANY, PortRange(PROTO_ANY))}


def test_accepts_parsed_policies_and_objects_with_data():
    from ciliumctl.policy.model import parse_policy

    class Stored:
        data = DB_FROM_WEB

    a = run([parse_policy(DB_FROM_WEB)])
    b = run([Stored()])
    assert a.endpoints[DB.id] == b.endpoints[DB.id]
