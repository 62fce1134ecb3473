"""Cluster mode never enforces less than a policy says without a word: `policy apply --kubeconfig` names the parts
the datapath does not enforce (and refuses them under --strict-enforcement before anything reaches the server),
and the agent puts an `Enforced` condition beside `Valid` on each policy's status (policy.enforcement_gaps). On a
real API server (the shared one of tests/k8s/conftest.py)."""

from pathlib import Path

import pytest
from support.cli import cli_env, run_cli
from support.recording import RecordingDatapath

from ciliumctl.cluster import policy_apply as pa
from ciliumctl.cluster import status_conditions as sc
from ciliumctl.cluster.kube import KINDS
from ciliumctl.node import cluster_sync
from ciliumctl.policy import enforcement_gaps

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
pytestmark = [pytest.mark.root]
L7 = EXAMPLES / "starwars-l7-kafka.yaml"
L4 = EXAMPLES / "starwars-l3-l4.yaml"
CNP = KINDS["CiliumNetworkPolicy"]


def sync_once(kube):
    agent = cluster_sync.ClusterNode(kube, "node-a", datapath=RecordingDatapath())
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        return agent.sync()
    finally:
        agent.cache.stop()


def test_apply_names_the_gaps_and_strict_refuses_before_any_write(installed):
    with pytest.raises(enforcement_gaps.UnenforcedPolicies) as refused:
        pa.apply_policies([str(L4), str(L7)], kube=installed, strict=True)
    assert refused.value.exit_code == 1 and [g.gap.kind for g in refused.value.gaps] == ["l7-kafka"]
    assert installed.list(CNP)[0] == []                      # nothing applied, not even the fully enforced one

    gaps: list = []
    results = pa.apply_policies([str(L4), str(L7)], kube=installed, gaps=gaps)
    assert [r.action for r in results] == ["created", "created"]
    assert [(g.file, g.line, g.column, g.gap.kind) for g in gaps] == [(str(L7), 22, 9, "l7-kafka")]


def test_agent_sets_enforced_beside_valid(installed, kubeconfig, node_env, caplog, tmp_path):
    pa.apply_policies([str(L4), str(L7)], kube=installed)
    installed.create({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                      "metadata": {"name": "broken", "namespace": "default"},
                      "spec": {"endpointSelector": {}, "egress": [{"toCIDR": ["300.1.2.3/32"]}]}})
    with caplog.at_level("WARNING", logger="ciliumctl.node.cluster_sync"):
        report = sync_once(installed)
    assert "policy CiliumNetworkPolicy/default/rule1-l7 is enforced partially: spec.ingress[0]" in caplog.text

    assert report.partially_enforced == {"CiliumNetworkPolicy/default/rule1-l7": [
        "spec.ingress[0].toPorts[0].rules.kafka: the L7 Kafka rule (rules.kafka) is not enforced: all traffic on "
        "80/TCP with the rule's peers is allowed at L4 (no L7 proxy)"]}
    l7 = installed.get(CNP, "rule1-l7", "default")
    cond = sc.enforced_condition(l7)
    assert cond["status"] == "False" and cond["reason"] == "PartiallyEnforced" and cond["observedGeneration"] == 1
    assert cond["message"] == report.partially_enforced["CiliumNetworkPolicy/default/rule1-l7"][0]
    assert sc.valid_condition(l7)["status"] == "True"
    assert sc.enforced_condition(installed.get(CNP, "rule1", "default"))["status"] == "True"
    broken = sc.enforced_condition(installed.get(CNP, "broken", "default"))
    assert broken["status"] == "False" and broken["reason"] == "PolicyInvalid"

    rows = {r["name"]: r for r in pa.policy_rows(pa.get_policies(kube=installed))}
    assert (rows["rule1"]["enforced"], rows["rule1-l7"]["enforced"], rows["broken"]["enforced"]) == (
        "full", "partial", "none")
    assert "rules.kafka" in rows["rule1-l7"]["message"]
    from ciliumctl.cluster import install

    assert install.status(kube=installed).partially_enforced == ["CiliumNetworkPolicy/default/rule1-l7"]
    out = cluster_cli(kubeconfig, tmp_path, "status", "--kubeconfig", kubeconfig).stdout
    assert "Partially enforced: CiliumNetworkPolicy/default/rule1-l7 (" in out

    # the same verdict again writes nothing; fixing the policy turns Enforced True
    rv = l7["metadata"]["resourceVersion"]
    sync_once(installed)
    assert installed.get(CNP, "rule1-l7", "default")["metadata"]["resourceVersion"] == rv
    fixed = installed.get(CNP, "rule1-l7", "default")
    del fixed["spec"]["ingress"][0]["toPorts"][0]["rules"]
    installed.replace(fixed)
    assert sync_once(installed).partially_enforced == {}
    cond = sc.enforced_condition(installed.get(CNP, "rule1-l7", "default"))
    assert cond["status"] == "True" and cond["reason"] == "FullyEnforced" and cond["observedGeneration"] == 2


def cluster_cli(kubeconfig, tmp_path, *args):
    """`ciliumctl ARGS` against the API server, with a node state of its own."""
    return run_cli(*args, env=cli_env(KUBECONFIG=kubeconfig, CILIUMCTL_STATE_DIR=str(tmp_path / "cli-node")))


def test_cli_warns_and_strict_exits_1(installed, kubeconfig, tmp_path):
    def run(*args):
        return cluster_cli(kubeconfig, tmp_path, *args)

    strict = run("policy", "apply", "-f", str(L7), "--strict-enforcement")
    assert strict.returncode == 1 and strict.stdout == ""
    assert f"{L7}:22:9: error: the L7 Kafka rule (rules.kafka) is not enforced" in strict.stderr
    assert "nothing applied" in strict.stderr and installed.list(CNP)[0] == []

    res = run("policy", "apply", "-f", str(L7))
    assert res.returncode == 0 and res.stdout.strip() == "ciliumnetworkpolicy.cilium.io/rule1-l7 created"
    assert f"{L7}:22:9: warning: the L7 Kafka rule (rules.kafka) is not enforced" in res.stderr
    table = run("policy", "get").stdout
    assert "ENFORCED" in table.splitlines()[0] and "Unknown" in table      # no agent has looked at it yet
