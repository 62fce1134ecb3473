"""policy.enforcement_gaps: every part of a policy the datapath does not enforce, with file:line:col, and what
is enforced instead; resolve's notes and trace's remarks come from it."""

import textwrap

import pytest

from ciliumctl.policy import enforcement_gaps as eg
from ciliumctl.policy import load
from ciliumctl.policy.model import parse_policy
from ciliumctl.policy.resolved import PROTO_TCP, PortRange


def located(text: str, file: str = "p.yaml"):
    return eg.locate_all(load.load_text(textwrap.dedent(text), file))


def cnp(spec: str, kind: str = "CiliumNetworkPolicy") -> str:
    head = f"apiVersion: cilium.io/v2\nkind: {kind}\nmetadata:\n  name: p\n  namespace: default\nspec:\n"
    return head + textwrap.indent(textwrap.dedent(spec), "  ")


def where(gaps) -> list[tuple[str, int, int]]:
    return [(g.gap.kind, g.line, g.column) for g in gaps]


def test_star_wars_l7_kafka_points_at_the_kafka_key_and_says_l4():
    gaps = eg.locate_all(load.load_paths(["examples/policies/starwars-l7-kafka.yaml"]))
    assert where(gaps) == [("l7-kafka", 22, 9)]            # `kafka:` under rules
    g = gaps[0]
    assert g.path == "spec.ingress[0].toPorts[0].rules.kafka"
    assert g.warning() == (
        "examples/policies/starwars-l7-kafka.yaml:22:9: warning: the L7 Kafka rule (rules.kafka) is not enforced: "
        "all traffic on 80/TCP with the rule's peers is allowed at L4 (no L7 proxy) "
        "(--strict-enforcement refuses it)")
    assert g.gap.weaker and g.gap.ports == (PortRange(PROTO_TCP, 80, 80),)
    assert g.gap.origin.section == "ingress" and g.gap.origin.index == 0


def test_every_l7_kind_tls_and_listener():
    gaps = located(cnp("""\
    endpointSelector: {}
    ingress:
    - toPorts:
      - ports: [{port: "9092", protocol: TCP}]
        rules:
          kafka: [{topic: deathstar-plans}]
      - ports: [{port: "53", protocol: ANY}]
        rules:
          dns: [{matchPattern: "*"}]
      - ports: [{port: "4000", protocol: TCP}]
        rules:
          l7proto: r2d2
          l7: [{cmd: READ}]
    egress:
    - toPorts:
      - ports: [{port: "443", protocol: TCP}]
        serverNames: [api.example.com]
        terminatingTLS: {secret: {name: s}}
        originatingTLS: {secret: {name: o}}
        listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: e}, name: l}
    """))
    assert where(gaps) == [("l7-kafka", 12, 9), ("l7-dns", 15, 9), ("l7-generic", 18, 9), ("l7-generic", 19, 9),
                           ("tls-sni", 23, 7), ("tls-inspection", 24, 7), ("tls-inspection", 25, 7),
                           ("listener", 26, 7)]
    assert "all traffic on 53/ANY" in gaps[1].gap.instead
    assert all(g.gap.weaker for g in gaps)


def test_peers_that_match_nothing_here():
    gaps = located(cnp("""\
    endpointSelector: {matchLabels: {app: crawler}}
    egress:
    - toServices: [{k8sService: {serviceName: s, namespace: default}}]
    - toGroups: [{aws: {securityGroupsIds: [sg-1]}}]
    - toNodes: [{}]
    - toEntities: [kube-apiserver, world, host, cluster]
    - toCIDRSet: [{cidrGroupRef: office}]
    - toEndpoints: [{matchLabels: {"reserved:host": ""}}]
    - toRequires: [{matchLabels: {env: prod}}]
    """))
    assert where(gaps) == [("services", 9, 5), ("groups", 10, 5), ("nodes", 11, 5),
                           ("entity", 12, 18), ("entity", 12, 41), ("entity", 12, 47), ("cidr-group", 13, 18),
                           ("entity", 14, 34), ("requires", 15, 5)]
    by_kind = {g.gap.kind: g.gap for g in gaps}
    assert "allows nothing" in by_kind["services"].instead and not by_kind["services"].weaker   # stricter
    assert gaps[3].gap.what == "the entity kube-apiserver" and "arrives as world" in gaps[4].gap.instead
    assert "world" not in {g.gap.what.split()[-1] for g in gaps}                         # world is enforced
    assert by_kind["requires"].weaker


def test_in_a_deny_rule_a_peer_matching_nothing_denies_nothing():
    gaps = located(cnp("""\
    endpointSelector: {}
    egressDeny:
    - toEntities: [remote-node]
    - toPorts: [{ports: [{port: dns, protocol: UDP}]}]
    """))
    assert where(gaps) == [("entity", 9, 18), ("named-port", 10, 31)]
    assert all(g.gap.weaker and "denies nothing" in g.gap.instead for g in gaps)


def test_ipv6_named_ports_authentication_and_ipv4_icmp_is_enforced():
    gaps = located(cnp("""\
    endpointSelector: {}
    ingress:
    - fromCIDR: ["10.0.0.0/8", "fd00::/8"]
      toPorts: [{ports: [{port: http, protocol: TCP}]}]
    - fromCIDRSet: [{cidr: "2001:db8::/32"}]
    - fromEntities: [world-ipv6]
    - icmps: [{fields: [{type: 8}, {type: EchoRequest, family: IPv6}]}]
    - fromEndpoints: [{}]
      authentication: {mode: required}
    - fromEndpoints: [{}]
      authentication: {mode: disabled}
    """))
    assert where(gaps) == [("ipv6", 9, 30), ("named-port", 10, 31), ("ipv6", 11, 26), ("ipv6", 12, 20),
                           ("ipv6", 13, 62), ("authentication", 15, 5)]
    assert "IPv4-only" in gaps[0].gap.instead and not gaps[0].gap.weaker
    assert gaps[-1].gap.what == "mutual authentication (authentication.mode required)"


def test_host_policy_is_one_gap_for_the_whole_rule():
    gaps = eg.locate_all(load.load_paths(["examples/policies/host-firewall-ccnp.yaml"]))
    assert where(gaps) == [("host-policy", 7, 3)]
    assert "not filtered" in gaps[0].gap.instead


def test_specs_items_and_list_items_carry_their_paths():
    text = textwrap.dedent("""\
    apiVersion: v1
    kind: List
    items:
    - apiVersion: cilium.io/v2
      kind: CiliumNetworkPolicy
      metadata: {name: a}
      specs:
      - endpointSelector: {}
        ingress: [{fromEntities: [all]}]
      - endpointSelector: {}
        egress:
        - toServices: [{k8sService: {serviceName: s}}]
    """)
    gaps = eg.locate_all(load.load_text(text, "l.yaml"))
    assert [(g.path, g.line, g.column) for g in gaps] == [("items[0].specs[1].egress[0].toServices", 12, 7)]
    assert gaps[0].gap.origin.section == "egress" and gaps[0].gap.origin.index == 0


def test_network_policy_named_port_and_ipv6_ip_block():
    text = textwrap.dedent("""\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: n}
    spec:
      podSelector: {}
      ingress:
      - from: [{ipBlock: {cidr: "fd00::/8"}}, {ipBlock: {cidr: 10.0.0.0/8}}]
        ports: [{port: http}, {port: 80}]
    """)
    gaps = eg.locate_all(load.load_text(text, "n.yaml"))
    assert [(g.gap.kind, g.path, g.line, g.column) for g in gaps] == [
        ("named-port", "spec.ingress[0].ports[0].port", 8, 20), ("ipv6", "spec.ingress[0].from[0].ipBlock.cidr", 7, 29)]


def test_fully_enforced_policies_have_no_gap():
    for f in ("examples/policies/starwars-l3-l4.yaml", "examples/policies/cidr-with-except-and-deny.yaml",
              "examples/policies/k8s-networkpolicy.json"):
        assert eg.locate_all(load.load_paths([f])) == [], f
    assert eg.enforcement([]) == "full"


def test_condition_and_summary():
    data = next(iter(load.load_paths(["examples/policies/starwars-l7-kafka.yaml"]))).data
    gaps = eg.gaps_of_data(data)
    cond = eg.condition(gaps)
    assert cond["type"] == "Enforced" and cond["status"] == "False" and cond["reason"] == "PartiallyEnforced"
    assert cond["message"].startswith("spec.ingress[0].toPorts[0].rules.kafka: the L7 Kafka rule")
    assert eg.condition([])["status"] == "True"
    assert eg.PolicyEnforcement("x", gaps).to_dict()["enforced"] == "partial"
    assert len(eg.condition(gaps * 50, max_message=200)["message"]) == 200
    assert eg.gaps_of_data({"kind": "ConfigMap"}) == []


def test_resolve_notes_come_from_the_gaps():
    import yaml

    from ciliumctl.identity.allocator import MemoryAllocator
    from ciliumctl.policy.resolve import resolve_detailed

    data = yaml.safe_load(cnp("""\
    endpointSelector: {}
    egress:
    - toServices: [{k8sService: {serviceName: s}}]
    - toGroups: [{aws: {securityGroupsIds: [sg-1]}}]
    """))
    res = resolve_detailed([], [parse_policy(data)], "default", MemoryAllocator())
    assert res.notes == [g.note() for g in res.gaps] and len(res.gaps) == 2
    assert {o.index for o in res.gaps_by_origin} == {0, 1}


@pytest.mark.parametrize("mode", ["required", "test-always-fail"])
def test_any_authentication_mode_but_disabled_is_a_gap(mode):
    pol = parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "a"},
                        "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["all"],
                                                                      "authentication": {"mode": mode}}]}})
    assert [g.kind for g in eg.find_gaps(pol)] == ["authentication"]


# ------------------------------------------------------------------------------------------------ policy trace

def _policies(path):
    return [parse_policy(d.data) for d in load.load_paths([path])]


def test_trace_says_l7_is_not_enforced_where_the_verdict_rests_on_it():
    from ciliumctl.policy.labels import parse_label_list
    from ciliumctl.policy.trace import Peer, trace

    pols = _policies("examples/policies/starwars-l7-kafka.yaml")
    tie = Peer(parse_label_list(["org=empire,class=tiefighter"]))
    deathstar = Peer(parse_label_list(["org=empire,class=deathstar"]))
    r = trace(tie, deathstar, PROTO_TCP, 80, pols)
    assert r.allowed and r.ingress.unenforced == [
        "L7 not enforced: allowed at L4 (spec.ingress[0].toPorts[0].rules.kafka)"]
    assert r.to_dict()["ingress"]["unenforced"] == r.ingress.unenforced and r.egress.unenforced == []
    denied = trace(tie, deathstar, PROTO_TCP, 81, pols)    # not the L7 rule's port: nothing to add
    assert not denied.allowed and denied.ingress.unenforced == []


def test_trace_names_gaps_that_may_decide_a_denial_or_an_allowance():
    from ciliumctl.policy.labels import parse_label_list
    from ciliumctl.policy.trace import Peer, trace

    crawler = Peer(parse_label_list(["app=crawler"]))
    # toFQDNs is enforced (the DNS proxy learns the addresses): an address trace never saw resolved is denied
    r = trace(crawler, Peer(ip="140.82.112.6"), PROTO_TCP, 443, _policies("examples/policies/dns-and-fqdn-egress.yaml"))
    assert not r.allowed and r.egress.unenforced == []

    deny = parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "d", "namespace": "default"},
                         "spec": {"endpointSelector": {"matchLabels": {"app": "crawler"}},
                                  "enableDefaultDeny": {"egress": False},
                                  "egressDeny": [{"toEntities": ["kube-apiserver"]}]}})
    r = trace(crawler, Peer(ip="10.96.0.1"), PROTO_TCP, 443, [deny])
    assert r.allowed and "the entity kube-apiserver is not enforced: this peer denies nothing" in r.egress.unenforced[0]


def test_trace_of_a_host_endpoint_says_host_policies_are_not_enforced():
    from ciliumctl.policy.labels import parse_label_list
    from ciliumctl.policy.trace import Peer, trace

    pols = _policies("examples/policies/host-firewall-ccnp.yaml")
    host = Peer(parse_label_list(["reserved:host"]))
    r = trace(Peer(ip="192.0.2.1"), host, PROTO_TCP, 22, pols,
              node_labels={"node-role.kubernetes.io/worker": ""})
    assert not r.allowed and r.ingress.unenforced[0] == eg.TRACE_TEXT["host-policy"]


def test_trace_cli_prints_the_remark(tmp_path):
    import json
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "ciliumctl.cli.main", "policy", "trace", "-f",
            "examples/policies/starwars-l7-kafka.yaml", "-s", "org=empire,class=tiefighter",
            "-d", "org=empire,class=deathstar", "--dport", "80/tcp"]
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "L7 not enforced: allowed at L4 (spec.ingress[0].toPorts[0].rules.kafka)" in out.stdout
    data = json.loads(subprocess.run(args + ["-o", "json"], capture_output=True, text=True, env=env).stdout)
    assert data["ingress"]["unenforced"] == ["L7 not enforced: allowed at L4 (spec.ingress[0].toPorts[0].rules.kafka)"]
