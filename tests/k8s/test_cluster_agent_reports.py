"""What the agents tell an admin on a real two-node cluster: the flows of every node through the API server
(`ciliumctl observe --kubeconfig`, a port-forward to each agent pod), CIDR groups followed as they change
(cidrGroupRef / cidrGroupSelector from CiliumCIDRGroup objects, with real traffic), and why a policy is rejected
or enforced only in part (status conditions and Events from each node's agent).

One agent install and three pods for the module; everything is removed at the end (the next module installs
its own agent)."""

from __future__ import annotations

import json

import pytest
from support.cli import run_cli
from support.shell import wait_until

from k8s.workloads import apply, connects, kubectl_json, pod

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

NS = "ciliumctl-system"
PODS = [pod("rep-web", "node2", ["python3", "-m", "http.server", "8080"]),
        pod("rep-client", "node1", ["sleep", "infinity"]), pod("rep-other", "node1", ["sleep", "infinity"])]


@pytest.fixture(scope="module")
def cluster(k8s, cli_env_k8s):
    res = run_cli("install", "--kubeconfig", str(k8s.kubeconfig), "--image", "ciliumctl:local",
                  "--image-pull-policy", "Never", "--wait", env=cli_env_k8s, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        apply(k8s, *PODS)
        k8s.kubectl("wait", "--for", "condition=Ready", *(f"pod/{p['metadata']['name']}" for p in PODS),
                    "--timeout", "120s")
        ips = {p["metadata"]["name"]: kubectl_json(k8s, "get", "pod", p["metadata"]["name"])["status"]["podIP"]
               for p in PODS}
        nodes = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"]
                                             if a["type"] == "InternalIP")
                 for n in kubectl_json(k8s, "get", "nodes")["items"]}
        yield {"ips": ips, "nodes": nodes}
    finally:
        k8s.kubectl("delete", "cnp,ccg", "-l", "test=agent-reports", "--ignore-not-found", check=False)
        k8s.kubectl("delete", "pod", *(p["metadata"]["name"] for p in PODS), "--wait=true", "--timeout", "60s",
                    check=False)
        k8s.kubectl("delete", "clusterrole,clusterrolebinding", "rep-pod-reader", "--ignore-not-found", check=False)
        assert run_cli("uninstall", "--kubeconfig", str(k8s.kubeconfig), env=cli_env_k8s,
                       timeout=120).returncode == 0
        assert wait_until(lambda: k8s.kubectl("get", "namespace", NS, check=False).returncode != 0, 90, 0.5)


def flows_of(stdout: str) -> list[dict]:
    return [json.loads(line)["flow"] for line in stdout.splitlines() if line.strip().startswith('{"flow"')]


def test_observe_kubeconfig_merges_the_flows_of_every_node(k8s, cluster, cli_env_k8s):
    ips, kubeconfig = cluster["ips"], str(k8s.kubeconfig)
    apply(k8s, {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                "metadata": {"name": "rep-web-from-client", "labels": {"test": "agent-reports"}},
                "spec": {"endpointSelector": {"matchLabels": {"app": "rep-web"}},
                         "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "rep-client"}}],
                                      "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}})
    assert wait_until(lambda: not connects(k8s, "rep-other", ips["rep-web"], 8080), 30, 0.5)
    assert connects(k8s, "rep-client", ips["rep-web"], 8080)

    res = run_cli("observe", "--kubeconfig", kubeconfig, "--last", "2000", "-o", "jsonpb", env=cli_env_k8s,
                  timeout=60)
    assert res.returncode == 0, res.stderr
    flows = flows_of(res.stdout)
    between = lambda f, a, b: f.get("IP", {}).get("source") == ips[a] and f["IP"].get("destination") == ips[b]
    drops = [f for f in flows if f.get("verdict") == "DROPPED" and between(f, "rep-other", "rep-web")]
    allowed = [f for f in flows if f.get("verdict") == "FORWARDED" and (between(f, "rep-client", "rep-web") or
                                                                        between(f, "rep-web", "rep-client"))]
    assert drops and allowed, res.stdout[-3000:]
    assert {f["node_name"] for f in drops} == {"node2"}      # web's ingress policy drops on web's node
    assert drops[-1].get("drop_reason_desc") == "POLICY_DENIED" and drops[-1]["destination"]["pod_name"] == "rep-web"
    # the connection is traced where it enters a pod: the request on web's node, the replies on the client's
    assert {f["node_name"] for f in allowed} == {"node1", "node2"}, allowed   # both agents' flows, merged
    times = [f["time"] for f in flows]
    assert times == sorted(times)

    one = run_cli("observe", "--kubeconfig", kubeconfig, "--node", "node1", "--last", "2000", "-o", "jsonpb",
                  env=cli_env_k8s, timeout=60)
    assert one.returncode == 0, one.stderr
    assert {f["node_name"] for f in flows_of(one.stdout)} == {"node1"}


def test_observe_kubeconfig_errors_are_one_line(k8s, cluster, cli_env_k8s):
    res = run_cli("observe", "--kubeconfig", str(k8s.kubeconfig), "--node", "node9", env=cli_env_k8s, timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no ciliumctl agent pod is running on node node9" in res.stderr
    # a user who may list the agent pods but not port-forward to them: the API server's refusal, in one line
    reader = k8s.user_kubeconfig("rep-pod-reader")
    apply(k8s, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "rep-pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": "rep-pod-reader"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rep-pod-reader"},
           "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "rep-pod-reader"}]})
    res = run_cli("observe", "--kubeconfig", str(reader), "--node", "node1", env=cli_env_k8s, timeout=60)
    line = res.stderr.strip()
    assert res.returncode == 2 and len(line.splitlines()) == 1, res.stderr
    assert "agent pod ciliumctl-system/ciliumctl-agent-" in line and "on node node1" in line, line
    assert "pods/portforward" in line and "forbidden" in line, line


def test_cidr_groups_are_resolved_and_followed(k8s, cluster):
    """A client's egress to the kubelets' port, allowed by a CIDR group: the datapath follows the group's
    prefixes and, with cidrGroupSelector, its labels (traffic to the nodes' addresses is `world` here)."""
    node1, node2 = cluster["nodes"]["node1"], cluster["nodes"]["node2"]
    group: dict = {"apiVersion": "cilium.io/v2", "kind": "CiliumCIDRGroup",
                   "metadata": {"name": "rep-kubelets", "labels": {"test": "agent-reports", "role": "kubelets"}},
                   "spec": {"externalCIDRs": [f"{node2}/32"]}}
    policy: dict = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                    "metadata": {"name": "rep-client-to-kubelets", "labels": {"test": "agent-reports"}},
                    "spec": {"endpointSelector": {"matchLabels": {"app": "rep-client"}},
                             "egress": [{"toCIDRSet": [{"cidrGroupRef": "rep-kubelets"}],
                                         "toPorts": [{"ports": [{"port": "10250", "protocol": "TCP"}]}]}]}}
    apply(k8s, group, policy)
    assert wait_until(lambda: not connects(k8s, "rep-client", node1, 10250), 30, 0.5)
    assert connects(k8s, "rep-client", node2, 10250)
    cnp = kubectl_json(k8s, "get", "cnp", "rep-client-to-kubelets")
    enforced = {c["type"]: c["status"] for c in cnp["status"]["conditions"]}
    assert enforced == {"Valid": "True", "Enforced": "True"}, cnp["status"]   # no gap: the groups are read

    group["spec"]["externalCIDRs"] = [f"{node1}/32"]      # the group changes: the agent follows it
    apply(k8s, group)
    assert wait_until(lambda: not connects(k8s, "rep-client", node2, 10250), 30, 0.5)
    assert connects(k8s, "rep-client", node1, 10250)

    policy["spec"]["egress"][0]["toCIDRSet"] = [{"cidrGroupSelector": {"matchLabels": {"role": "kubelets"}}}]
    apply(k8s, policy)
    assert connects(k8s, "rep-client", node1, 10250)
    group["metadata"]["labels"]["role"] = "other"          # the selector no longer selects the group
    apply(k8s, group)
    assert wait_until(lambda: not connects(k8s, "rep-client", node1, 10250), 30, 0.5)


def test_rejected_and_partial_policies_say_why(k8s, cluster):
    labels = {"test": "agent-reports"}
    rejected = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",   # the API server takes it, Cilium not
                "metadata": {"name": "rep-bad-label", "labels": labels},
                "spec": {"endpointSelector": {"matchLabels": {"app": "we b/!"}}, "ingress": [{}]}}
    partial = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "rep-l7", "labels": labels},
               "spec": {"endpointSelector": {"matchLabels": {"app": "rep-web"}},
                        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "rep-client"}}],
                                     "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                                  "rules": {"kafka": [{"role": "produce", "topic": "t"}]}}]}]}}
    apply(k8s, rejected, partial)

    def events(name: str) -> dict[str, dict]:
        items = kubectl_json(k8s, "get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
        return {e["source"]["host"]: e for e in items if e["source"].get("component") == "ciliumctl-agent"}

    assert wait_until(lambda: set(events("rep-bad-label")) == {"node1", "node2"}, 30, 0.5), events("rep-bad-label")
    for node, event in events("rep-bad-label").items():
        assert event["type"] == "Warning" and event["reason"] == "PolicyInvalid", event
        assert event["involvedObject"]["kind"] == "CiliumNetworkPolicy"
        assert event["message"].startswith(f"node {node}: policy not imported: ") and "we b/!" in event["message"]
    conditions = {c["type"]: c for c in kubectl_json(k8s, "get", "cnp", "rep-bad-label")["status"]["conditions"]}
    assert conditions["Valid"]["status"] == "False" and "we b/!" in conditions["Valid"]["message"]

    assert wait_until(lambda: set(events("rep-l7")) == {"node1", "node2"}, 30, 0.5), events("rep-l7")
    for event in events("rep-l7").values():
        assert event["reason"] == "PolicyPartiallyEnforced" and "rules.kafka" in event["message"], event
    conditions = {c["type"]: c for c in kubectl_json(k8s, "get", "cnp", "rep-l7")["status"]["conditions"]}
    assert conditions["Valid"]["status"] == "True" and conditions["Enforced"]["status"] == "False"
    assert "L7 Kafka rule" in conditions["Enforced"]["message"], conditions["Enforced"]
