"""policy trace: verdicts and explanations on top of resolve(), and the CLI's exit codes and JSON."""

import json
from pathlib import Path

import pytest
import yaml
from support.cli import cli_env, run_cli

from ciliumctl.base.errors import UsageError
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy.labels import parse_label_list
from ciliumctl.policy.model import parse_policy
from ciliumctl.policy.resolved import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from ciliumctl.policy.trace import Peer, lpm_identity, trace

POLICIES = yaml.safe_load_all("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deathstar, namespace: default}
spec:
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts: [{ports: [{port: "80", endPort: 90, protocol: TCP}]}]
  - icmps: [{fields: [{type: 8}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {org: empire, class: tiefighter, rogue: "true"}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: xwing-egress, namespace: default}
spec:
  endpointSelector: {matchLabels: {org: alliance}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
  - toEndpoints: [{matchLabels: {class: deathstar}}]
""")
POLICIES = [parse_policy(p) for p in POLICIES]


def peer(labels=None, ns=None, ip=None):
    return Peer(parse_label_list(labels) if labels else [], ns, ip)


TIE = peer("org=empire,class=tiefighter")
XWING = peer("org=alliance,class=xwing")
DEATHSTAR = peer("org=empire,class=deathstar")


def test_allowed_by_rule_and_not_selected():
    r = trace(TIE, DEATHSTAR, PROTO_TCP, 85, POLICIES)
    assert r.allowed
    assert r.egress.kind == "not-enforced" and "no policy selects the source" in r.egress.reason
    assert r.ingress.kind == "allowed"
    assert r.ingress.reason == "allowed by CiliumNetworkPolicy default/deathstar rule ingress[0]"
    assert [o.index for o in r.ingress.origins] == [0]


def test_default_deny_names_the_policy():
    r = trace(TIE, DEATHSTAR, PROTO_TCP, 91, POLICIES)          # outside the port range
    assert not r.allowed and r.ingress.kind == "default-deny"
    assert "CiliumNetworkPolicy default/deathstar" in r.ingress.reason
    r = trace(TIE, DEATHSTAR, PROTO_UDP, 80, POLICIES)
    assert not r.allowed


def test_icmp():
    assert trace(XWING, DEATHSTAR, PROTO_ICMP, 8, POLICIES).allowed
    assert not trace(XWING, DEATHSTAR, PROTO_ICMP, 13, POLICIES).allowed


def test_deny_beats_allow():
    rogue = peer("org=empire,class=tiefighter,rogue=true")
    r = trace(rogue, DEATHSTAR, PROTO_TCP, 80, POLICIES)
    assert not r.allowed and r.ingress.kind == "explicit-deny"
    assert "explicit deny by CiliumNetworkPolicy default/deathstar rule ingressDeny[0]" == r.ingress.reason


def test_egress_side_and_cidr_except():
    r = trace(XWING, peer(ip="10.1.2.3"), PROTO_TCP, 443, POLICIES)
    assert r.allowed and r.egress.kind == "allowed" and not r.ingress.applies
    assert r.destination.identity >= 16777217
    r = trace(XWING, peer(ip="10.96.0.10"), PROTO_TCP, 443, POLICIES)
    assert not r.allowed and r.egress.kind == "default-deny"
    r = trace(XWING, peer(ip="8.8.8.8"), PROTO_TCP, 443, POLICIES)
    assert not r.allowed and r.destination.identity == 2
    # egress allowed to deathstar by label, but deathstar's ingress denies alliance on 80
    r = trace(XWING, DEATHSTAR, PROTO_TCP, 80, POLICIES)
    assert r.egress.allowed and not r.ingress.allowed and not r.allowed


def test_namespaces():
    other_tie = peer("org=empire,class=tiefighter", ns="other")
    r = trace(other_tie, DEATHSTAR, PROTO_TCP, 80, POLICIES)
    assert not r.allowed                                      # CNP peers are confined to the namespace
    assert r.source.namespace == "other"
    r = trace(peer("org=empire,io.kubernetes.pod.namespace=other"), DEATHSTAR, PROTO_TCP, 80, POLICIES)
    assert r.source.namespace == "other" and not r.allowed


def test_modes():
    assert trace(XWING, TIE, PROTO_TCP, 80, [], "default").allowed
    r = trace(XWING, TIE, PROTO_TCP, 80, [], "always")
    assert not r.allowed and "enforcement mode always" in r.egress.reason
    r = trace(TIE, DEATHSTAR, PROTO_TCP, 22, POLICIES, "never")
    assert r.allowed and r.ingress.reason == "enforcement mode is never"


def test_enable_default_deny_false_explained():
    pol = parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "soft", "namespace": "default"},
                        "spec": {"endpointSelector": {"matchLabels": {"class": "deathstar"}},
                                 "enableDefaultDeny": {"ingress": False},
                                 "ingress": [{"fromEndpoints": [{"matchLabels": {"org": "empire"}}]}],
                                 "ingressDeny": [{"fromEntities": ["world"]}]}})
    r = trace(XWING, DEATHSTAR, PROTO_TCP, 80, [pol])
    assert r.allowed and "no default deny" in r.ingress.reason
    r = trace(peer(ip="1.1.1.1"), DEATHSTAR, PROTO_TCP, 80, [pol])
    assert not r.allowed and r.ingress.kind == "explicit-deny"


def test_reserved_sources_and_host_endpoint():
    ccnp = parse_policy({"kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "node"},
                         "spec": {"nodeSelector": {"matchLabels": {"role": "worker"}},
                                  "ingress": [{"fromEntities": ["cluster"],
                                               "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}]}]}})
    host = peer("reserved:host")
    r = trace(TIE, host, PROTO_TCP, 22, [ccnp])
    assert r.allowed and not r.ingress.applies          # no node labels: the host is no endpoint
    r = trace(peer(ip="8.8.8.8"), host, PROTO_TCP, 22, [ccnp], node_labels={"role": "worker"})
    assert not r.allowed and r.ingress.kind == "default-deny"
    r = trace(TIE, host, PROTO_TCP, 22, [ccnp], node_labels={"role": "worker"})
    assert r.allowed and r.ingress.kind == "allowed"
    with pytest.raises(UsageError):
        trace(peer("reserved:nonsense"), TIE, PROTO_TCP, 1, [])


def test_live_endpoints_are_found_by_ip():
    ds = Endpoint(5, "deathstar", "default", {"org": "empire", "class": "deathstar"}, ipv4="10.200.0.5")
    r = trace(TIE, peer(ip="10.200.0.5"), PROTO_TCP, 80, POLICIES, endpoints=[ds])
    assert r.destination.endpoint_id == 5 and r.allowed
    r = trace(XWING, peer(ip="10.200.0.5"), PROTO_TCP, 80, POLICIES, endpoints=[ds])
    assert not r.allowed


def test_missing_sides_are_usage_errors():
    with pytest.raises(UsageError, match="source"):
        trace(Peer(), DEATHSTAR, PROTO_TCP, 80, POLICIES)
    with pytest.raises(UsageError, match="--dst-ip"):
        trace(TIE, peer(ip="not-an-ip"), PROTO_TCP, 80, POLICIES)


def test_lpm():
    cache = {"0.0.0.0/0": 2, "10.0.0.0/8": 100, "10.1.0.0/16": 101, "10.1.2.3/32": 300}
    assert lpm_identity(cache, "10.1.2.3") == 300
    assert lpm_identity(cache, "10.1.9.9") == 101
    assert lpm_identity(cache, "10.9.9.9") == 100
    assert lpm_identity(cache, "11.0.0.1") == 2


# ------------------------------------------------------------------------------------------------- CLI

POLICY_FILE = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1, namespace: default}
spec:
  endpointSelector: {matchLabels: {org: empire, class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""


def cli(*args, tmp_path):
    return run_cli("policy", "trace", *args, env=cli_env(CILIUMCTL_STATE_DIR=str(tmp_path / "state")))


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "rule1.yaml").write_text(POLICY_FILE)
    return d


def test_cli_allowed_and_denied(tmp_path, policy_dir):
    ok = cli("-f", str(policy_dir), "--src-labels", "org=empire", "--dst-labels", "org=empire,class=deathstar",
             "--dport", "80/tcp", tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Final verdict: ALLOWED" in ok.stdout
    assert "allowed by CiliumNetworkPolicy default/rule1 rule ingress[0]" in ok.stdout
    denied = cli("-f", str(policy_dir / "rule1.yaml"), "-s", "org=alliance", "-d", "org=empire",
                 "-d", "class=deathstar", "--dport", "80/tcp", tmp_path=tmp_path)
    assert denied.returncode == 1, denied.stderr
    assert "Final verdict: DENIED" in denied.stdout and "default deny" in denied.stdout
    assert not (tmp_path / "state" / "identities.json").exists()   # a what-if never touches node state


def test_cli_json(tmp_path, policy_dir):
    out = cli("-f", str(policy_dir), "-s", "org=alliance", "-d", "org=empire,class=deathstar", "--dport",
              "80/tcp", "-o", "json", tmp_path=tmp_path)
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["verdict"] == "denied" and data["protocol"] == "TCP" and data["port"] == 80
    assert data["ingress"]["kind"] == "default-deny" and data["egress"]["kind"] == "not-enforced"
    assert data["mode"] == "default"
    out = cli("-f", str(policy_dir), "-s", "org=empire", "-d", "org=empire,class=deathstar", "--dport", "80",
              "-o", "json", "--mode", "always", tmp_path=tmp_path)
    data = json.loads(out.stdout)
    assert out.returncode == 1 and data["egress"]["kind"] == "default-deny" and data["ingress"]["verdict"] == "allowed"
    assert data["ingress"]["policies"] == [{"kind": "CiliumNetworkPolicy", "name": "rule1", "namespace": "default",
                                            "section": "ingress", "index": 0}]


@pytest.mark.parametrize("args,needle", [
    (["--dport", "80/xyz"], "--dport"),
    (["--mode", "sometimes"], "--mode"),
    (["--src-ip", "999.1.1.1"], "--src-ip"),
])
def test_cli_usage_errors(tmp_path, policy_dir, args, needle):
    out = cli("-f", str(policy_dir), "-d", "org=empire", *args, tmp_path=tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_needs_policies_and_existing_files(tmp_path):
    out = cli("-s", "a=b", "-d", "c=d", tmp_path=tmp_path)
    assert out.returncode == 2 and "-f" in out.stderr
    out = cli("-f", str(tmp_path / "missing.yaml"), "-s", "a=b", "-d", "c=d", tmp_path=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_cli_invalid_policy_is_exit_2_with_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY_FILE.replace('port: "80"', 'port: "99999"'))
    out = cli("-f", str(bad), "-s", "org=empire", "-d", "org=empire,class=deathstar", tmp_path=tmp_path)
    assert out.returncode == 2 and f"{bad}:8:" in out.stderr and "Traceback" not in out.stderr


def test_cli_icmp_and_all_traffic(tmp_path, policy_dir):
    out = cli("-f", str(policy_dir), "-s", "org=empire", "-d", "org=empire,class=deathstar", "--dport", "8/icmp",
              "-o", "json", tmp_path=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)["protocol"] == "ICMP"
    out = cli("-f", str(policy_dir), "-s", "org=empire", "-d", "org=empire,class=deathstar", tmp_path=tmp_path)
    assert out.returncode == 1 and "all traffic" in out.stdout     # only port 80 is allowed, not everything


def test_cli_live_uses_the_nodes_endpoints_policies_and_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path / "state"))
    from ciliumctl.endpoints import registry
    from ciliumctl.identity.allocator import IdentityAllocator
    from ciliumctl.node import settings as node_settings
    from ciliumctl.policy import store

    registry.save(Endpoint(7, "deathstar", "default", {"org": "empire", "class": "deathstar"},
                           ipv4="10.200.0.7"))
    store.put(store.from_object(yaml.safe_load(POLICY_FILE)))
    before = IdentityAllocator().known()
    ok = cli("--live", "-s", "org=empire", "--dst-ip", "10.200.0.7", "--dport", "80/tcp", "-o", "json",
             tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["destination"]["endpoint_id"] == 7 and data["ingress"]["kind"] == "allowed"
    bad = cli("--live", "-s", "org=alliance", "--dst-ip", "10.200.0.7", "--dport", "80/tcp", tmp_path=tmp_path)
    assert bad.returncode == 1
    settings = node_settings.load_settings()
    settings.enforcement_mode = "always"
    node_settings.save_settings(settings)
    out = cli("--live", "-s", "org=empire", "--dst-ip", "10.200.0.7", "--dport", "80/tcp", "-o", "json",
              tmp_path=tmp_path)
    data = json.loads(out.stdout)
    assert out.returncode == 1 and data["mode"] == "always" and data["egress"]["kind"] == "default-deny"
    out = cli("--live", "--mode", "default", "-s", "org=empire", "--dst-ip", "10.200.0.7", "--dport", "80/tcp",
              tmp_path=tmp_path)
    assert out.returncode == 0
    assert IdentityAllocator().known() == before          # hypothetical endpoints never enter node state


def test_audit_is_reported():
    r = trace(XWING, DEATHSTAR, PROTO_TCP, 80, POLICIES, audit=True)
    assert not r.allowed and r.to_dict()["audit"] is True
    assert any("AUDIT" in n for n in r.notes)
    assert trace(XWING, DEATHSTAR, PROTO_TCP, 80, POLICIES).to_dict()["audit"] is False


def test_notes_only_from_policies_involved():
    l7 = parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "l7", "namespace": "default"},
                       "spec": {"endpointSelector": {"matchLabels": {"class": "deathstar"}},
                                "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                                                          "rules": {"kafka": [{"topic": "t"}]}}]}]}})
    other = parse_policy({"kind": "CiliumNetworkPolicy", "metadata": {"name": "svc", "namespace": "default"},
                          "spec": {"endpointSelector": {"matchLabels": {"class": "crawler"}},
                                   "egress": [{"toServices": [{"k8sService": {"serviceName": "s"}}]}]}})
    r = trace(TIE, DEATHSTAR, PROTO_TCP, 80, [l7, other])
    assert r.allowed and len(r.notes) == 1 and "L7" in r.notes[0]
    assert trace(TIE, XWING, PROTO_TCP, 80, [l7, other]).notes == []
