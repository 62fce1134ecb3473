"""The typed policy model: parse_policy() on CNP, CCNP and NetworkPolicy objects."""

from pathlib import Path

import pytest
import yaml

from ciliumctl.policy import model

CNP = yaml.safe_load("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: team-a, labels: {owner: x}}
spec:
  description: frontends to backends
  endpointSelector: {matchLabels: {app: backend}}
  enableDefaultDeny: {egress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}, matchExpressions: [{key: tier, operator: In, values: [a, b]}]}]
    toPorts:
    - ports: [{port: "8080", endPort: 8090, protocol: tcp}, {port: http}]
      rules:
        http: [{method: GET, path: /api, headers: ["X-A: 1"]}]
  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    icmps: [{fields: [{type: 8}, {type: EchoRequest, family: IPv6}]}]
  egress:
  - toEndpoints: []
  - toFQDNs: [{matchName: example.com}]
    toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
  - toServices: [{k8sService: {serviceName: api, namespace: default}}]
  - toPorts: [{ports: [{port: "9092"}], rules: {kafka: [{role: produce, topic: t}]}}]
  egressDeny:
  - toEntities: [World]
specs:
- nodeSelector: {matchLabels: {role: worker}}
  ingress: [{fromNodes: [{}]}]
""")


def test_cnp_fields():
    pol = model.parse_policy(CNP)
    assert (pol.kind, pol.name, pol.namespace) == ("CiliumNetworkPolicy", "p", "team-a")
    assert pol.metadata_labels == (("owner", "x"),)
    spec, extra = pol.rules
    assert spec.description == "frontends to backends"
    assert spec.endpoint_selector.match_labels == (("app", "backend"),)
    assert spec.enable_default_deny == model.DefaultDeny(None, False)
    ing0, ing1 = spec.ingress
    sel = ing0.endpoints[0]
    assert sel.match_expressions == (model.SelectorRequirement("tier", "In", ("a", "b")),)
    p0, p1 = ing0.to_ports[0].ports
    assert (p0.port, p0.end_port, p0.protocol) == ("8080", 8090, "TCP")
    assert p1.is_named and p1.protocol == "ANY"
    assert ing0.to_ports[0].rules.http[0] == model.HTTPRule(method="GET", path="/api", headers=("X-A: 1",))
    assert ing1.cidr_sets == (model.CIDRRule("10.0.0.0/8", ("10.1.0.0/16",)),)
    assert ing1.icmps[0].fields == (model.ICMPField(8, "IPv4"), model.ICMPField("EchoRequest", "IPv6"))
    e0, e1, e2, e3 = spec.egress
    assert e0.endpoints == () and e0.has_l3      # explicitly empty, not absent
    assert e1.endpoints is None and e1.fqdns == (model.FQDNSelector("example.com", ""),)
    assert e1.to_ports[0].rules.dns == (model.DNSRule("", "*"),)
    assert e2.services[0].k8s_service == model.K8sServiceNamespace("api", "default")
    assert not e3.has_l3 and e3.has_l4
    assert e3.to_ports[0].rules.kafka[0].role == "produce"
    assert spec.egress_deny[0].entities == ("world",)
    assert spec.ingress_deny is None
    assert extra.endpoint_selector is None and extra.node_selector.match_labels == (("role", "worker"),)
    assert extra.ingress[0].nodes == (model.LabelSelector(),)


def test_ccnp_has_no_namespace_and_cnp_defaults_to_default():
    ccnp = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                               "metadata": {"name": "c", "namespace": "ignored"},
                               "spec": {"endpointSelector": {}}})
    assert ccnp.namespace == "" and ccnp.ref == "CiliumClusterwideNetworkPolicy c"
    cnp = model.parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "n"},
                              "spec": {"endpointSelector": {}}})
    assert cnp.namespace == "default"
    assert cnp.rules[0].endpoint_selector.empty


def test_network_policy():
    pol = model.parse_policy(yaml.safe_load("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: api}}
      namespaceSelector: {matchLabels: {team: a}}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    ports: [{port: 5432}, {protocol: UDP, port: 1000, endPort: 2000}, {port: pg}]
  egress:
  - {}
"""))
    spec = pol.network_policy
    assert pol.kind == "NetworkPolicy" and pol.rules == ()
    assert spec.policy_types == ("Ingress", "Egress")
    peer0, peer1 = spec.ingress[0].peers
    assert peer0.namespace_selector.match_labels == (("team", "a"),)
    assert peer1.ip_block == model.IPBlock("192.168.0.0/16", ("192.168.1.0/24",))
    assert spec.ingress[0].ports == (model.NetworkPolicyPort("TCP", "5432", 0),
                                     model.NetworkPolicyPort("UDP", "1000", 2000),
                                     model.NetworkPolicyPort("TCP", "pg", 0))
    assert spec.egress == (model.NetworkPolicyRule(None, None),)


def test_rejects_non_policies():
    with pytest.raises(ValueError):
        model.parse_policy({"kind": "Service", "metadata": {"name": "x"}})


CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="policy corpus not present")
def test_every_valid_corpus_policy_parses_and_resolves():
    import json

    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.identity.allocator import MemoryAllocator
    from ciliumctl.policy.resolve import resolve

    rows = [json.loads(line) for line in (CORPUS / "verdicts.jsonl").read_text().splitlines() if line.strip()]
    policies = []
    for row in rows:
        if not row["valid"]:
            continue
        docs = [d for d in yaml.safe_load_all((CORPUS / row["file"]).read_text()) if d]
        items = []
        for d in docs:
            items.extend(d.get("items", []) if d.get("kind") == "List" else [d])
        doc = items[row["index"]]
        if doc.get("kind") in model.KINDS:
            policies.append(model.parse_policy(doc))
    assert len(policies) > 50
    eps = [Endpoint(1, "a", "default", {"app": "x"}, ipv4="10.200.0.1"),
           Endpoint(2, "b", "kube-system", {"k8s-app": "kube-dns"}, ipv4="10.200.0.2")]
    state = resolve(eps, policies, "default", MemoryAllocator(), node_labels={"kubernetes.io/hostname": "n1"})
    assert set(state.endpoints) == {0, 1, 2}


@pytest.mark.skipif(not CORPUS.is_dir(), reason="policy corpus not present")
def test_resolved_corpus_compiles_to_datapath_maps():
    """What resolve() produces from every valid corpus policy is loadable by the datapath's map compiler."""
    import json

    from ciliumctl.datapath.mapstate import compile_state
    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.identity.allocator import MemoryAllocator
    from ciliumctl.policy.resolve import resolve

    policies = []
    for line in (CORPUS / "verdicts.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else None
        if not row or not row["valid"]:
            continue
        docs = [d for d in yaml.safe_load_all((CORPUS / row["file"]).read_text()) if d]
        items = []
        for d in docs:
            items.extend(d.get("items", []) if d.get("kind") == "List" else [d])
        if items[row["index"]].get("kind") in model.KINDS:
            policies.append(items[row["index"]])
    eps = [Endpoint(1, "a", "default", {"app": "x"}, ipv4="10.200.0.1"),
           Endpoint(2, "b", "kube-system", {"k8s-app": "kube-dns"}, ipv4="10.200.0.2")]
    for mode in ("default", "always"):
        state = resolve(eps, policies, mode, MemoryAllocator())
        ms = compile_state(state, 0)
        assert ms.policy and ms.ipcache and len(ms.epcfg) == 2
