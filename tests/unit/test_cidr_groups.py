"""cidrGroupRef / cidrGroupSelector expanded from CiliumCIDRGroup objects with Cilium's semantics
(ciliumctl.cluster.cidr_groups); the real-cluster test (tests/k8s/test_cluster_agent_reports.py) shows the
datapath following them."""

from ciliumctl.cluster import cidr_groups as cg

GROUPS = [
    {"metadata": {"name": "corp", "labels": {"env": "prod"}},
     "spec": {"externalCIDRs": ["192.0.2.0/24", "198.51.100.0/28", "10.9.0.0/16", "2001:db8::/64", "bogus"]}},
    {"metadata": {"name": "lab", "labels": {"env": "lab"}}, "spec": {"externalCIDRs": ["203.0.113.0/24"]}},
]


def test_ref_selects_the_named_group_and_except_applies_inside_each_prefix():
    entry = {"cidrGroupRef": "corp", "except": ["192.0.2.128/25", "10.0.0.0/8"]}
    assert cg.expand_entry(entry, GROUPS) == [
        {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]},   # an except inside the prefix stays with it
        {"cidr": "198.51.100.0/28"},
        {"cidr": "2001:db8::/64"},                                 # 10.9.0.0/16 lies inside an except: gone
    ]                                                              # and a CIDR Cilium cannot parse is skipped


def test_selector_matches_group_labels_and_the_name_label():
    by_label = cg.expand_entry({"cidrGroupSelector": {"matchLabels": {"env": "lab"}}}, GROUPS)
    assert by_label == [{"cidr": "203.0.113.0/24"}]
    by_name = cg.expand_entry({"cidrGroupSelector": {"matchExpressions": [
        {"key": "io.cilium.policy.cidrgroupname/lab", "operator": "Exists"}]}}, GROUPS)
    assert by_name == by_label
    not_lab = cg.expand_entry({"cidrGroupSelector": {"matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["lab"]}]}}, GROUPS)
    assert [e["cidr"] for e in not_lab] == ["192.0.2.0/24", "198.51.100.0/28", "10.9.0.0/16", "2001:db8::/64"]


def test_policy_expansion_keeps_plain_entries_and_a_missing_group_selects_nothing():
    policy = {"kind": "CiliumNetworkPolicy", "metadata": {"name": "p"}, "specs": [{
        "endpointSelector": {},
        "egress": [{"toCIDRSet": [{"cidr": "1.1.1.1/32"}, {"cidrGroupRef": "lab"}]}],
        "ingressDeny": [{"fromCIDRSet": [{"cidrGroupRef": "missing"}]}]}]}
    out = cg.expand_policy(policy, GROUPS)
    rule = out["specs"][0]
    assert rule["egress"][0]["toCIDRSet"] == [{"cidr": "1.1.1.1/32"}, {"cidr": "203.0.113.0/24"}]
    assert rule["ingressDeny"][0]["fromCIDRSet"] == []     # an explicitly empty set: selects nothing
    assert policy["specs"][0]["egress"][0]["toCIDRSet"][1] == {"cidrGroupRef": "lab"}   # the input is untouched
    plain = {"kind": "CiliumNetworkPolicy", "spec": {"egress": [{"toCIDR": ["1.2.3.4/32"]}]}}
    assert cg.expand_policy(plain, GROUPS) is plain
