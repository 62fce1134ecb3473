"""networking.k8s.io/v1 NetworkPolicy: the API server's validation."""

import textwrap

import pytest

from tests.unit.validate_helpers import check_text, errors

HEAD = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\n"


def np(spec: str, **options):
    [report] = check_text(HEAD + "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n",
                          **options)
    return report


def test_plain_network_policy_is_valid_and_gets_the_default_namespace():
    report = np("""
        podSelector: {matchLabels: {app: web}}
        policyTypes: [Ingress, Egress]
        ingress:
        - from:
          - podSelector: {matchLabels: {role: fe}}
            namespaceSelector: {matchLabels: {team: a}}
          ports:
          - {protocol: TCP, port: 80, endPort: 90}
          - {port: http}
        egress:
        - to:
          - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    """)
    assert report.valid, errors(report)
    assert report.namespace == "default" and report.document.namespace is None


@pytest.mark.parametrize("spec,path,message", [
    ("podSelector: {}\ningress:\n- ports:\n  - {protocol: ICMP}", "protocol", "not supported"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: 0}", "ports[0].port", "between 1 and 65535"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: 90, endPort: 80}", "endPort", "greater than or equal"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: http, endPort: 80}", "endPort", "non-numeric"),
    ("podSelector: {}\ningress:\n- ports:\n  - {endPort: 80}", "endPort", "not specified"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: HTTP}", "ports[0].port", "port name"),
    ("podSelector: {}\ningress:\n- ports:\n  - {port: '80'}", "ports[0].port", "must not be quoted"),
    ("podSelector: {}\ningress:\n- from:\n  - {}", "from[0]", "must specify"),
    ("podSelector: {}\ningress:\n- from:\n  - ipBlock: {cidr: 10.0.0.0/8}\n    podSelector: {}", "from[0]",
     "both ipBlock"),
    ("podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}", "except[0]",
     "strict subset"),
    ("podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}", "except[0]",
     "strict subset"),
    ("podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.1}", "cidr", "not a valid CIDR"),
    ("podSelector: {}\npolicyTypes: [ingress]", "policyTypes[0]", "not supported"),
    ("podSelector:\n  matchLabels: {'a b': c}", "podSelector.matchLabels", "invalid key"),
    ("podSelector:\n  matchExpressions:\n  - {key: a, operator: Equals, values: [b]}", "operator",
     "not a valid selector operator"),
])
def test_invalid_network_policies(spec, path, message):
    report = np(spec)
    assert not report.valid
    assert any(path in e.split(": ", 1)[0] and message in e for e in errors(report)), errors(report)


def test_network_policy_keys_are_not_extended_with_a_cilium_source():
    # a 60-character key is fine in Kubernetes (the Cilium `any.` prefix only applies to Cilium policies)
    assert np("podSelector:\n  matchLabels:\n    " + "k" * 60 + ": x").valid


def test_network_policy_unknown_fields_follow_strict():
    assert np("podSelector: {}\ningres: []").valid
    assert not np("podSelector: {}\ningres: []", strict=True).valid


def test_network_policy_without_spec_or_name():
    [report] = check_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\n")
    msgs = errors(report)
    assert any("metadata.name is required" in m for m in msgs) and any("spec is required" in m for m in msgs)
