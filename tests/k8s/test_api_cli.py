"""The cluster-mode commands through the real `ciliumctl` executable against a real API server (etcd and
kube-apiserver 1.36, TLS, RBAC): install / uninstall / status / policy apply|get|delete / endpoint list
--all-nodes, each from a fresh server (the faults a real server gives are in test_api_faults.py).
(Moved here from tests/cluster/test_cluster_cli.py and tests/e2e/test_policy_cluster_cli.py, which ran on the fake.)"""

from __future__ import annotations

import json

import pytest
import yaml
from support.cli import cli_env, run_cli
from support.policies import allow_ingress
from support.shell import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICY = allow_ingress("allow-web", {"app": "web"}, {"app": "client"})
OBJECTS = 13   # what an install applies (ciliumctl/cluster/manifests.py build())


def run(*args, kubeconfig=None, state=None, timeout=60):
    env = cli_env()
    if kubeconfig:
        env["KUBECONFIG"] = str(kubeconfig)
    if state:
        env["CILIUMCTL_STATE_DIR"] = str(state)
    return run_cli(*args, env=env, timeout=timeout)


def names(api, *args) -> set[str]:
    out = api.kubectl("get", *args, "-o", "name", check=False).stdout
    return {line.split("/", 1)[1] for line in out.split()}


def test_install_dry_run_changes_nothing_and_install_is_idempotent(api):
    kc = api.kubeconfig
    dry = run("install", "--kubeconfig", kc, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    docs = list(yaml.safe_load_all(dry.stdout))
    assert len(docs) == OBJECTS and all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in docs)
    assert not names(api, "crd") and "ciliumctl-system" not in names(api, "namespaces")

    res = run("install", "--kubeconfig", kc)
    assert res.returncode == 0, res.stderr
    assert "daemonset.apps/ciliumctl-agent created" in res.stdout
    assert "ciliumnetworkpolicies.cilium.io" in names(api, "crd")
    again = run("install", "--kubeconfig", kc)
    assert again.stdout.count(" unchanged") == OBJECTS, again.stdout


def test_status_exits_1_while_no_agent_is_ready(api):
    assert run("install", "--kubeconfig", api.kubeconfig).returncode == 0
    res = run("status", "--kubeconfig", api.kubeconfig, "-o", "json")
    st = json.loads(res.stdout)
    assert st["installed"] is True and st["healthy"] is False and res.returncode == 1   # no node runs the pods
    table = run("status", "--kubeconfig", api.kubeconfig)
    assert "DaemonSet:  installed" in table.stdout and "AGENT POD" in table.stdout


def test_policy_apply_get_delete_follow_the_kubeconfig(api, tmp_path):
    kc = api.kubeconfig
    assert run("install", "--kubeconfig", kc).returncode == 0
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    first = run("policy", "apply", "-f", str(f), kubeconfig=kc, state=tmp_path / "node")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web created"
    assert not (tmp_path / "node" / "policies").exists()            # the node's own store is untouched
    assert "allow-web" in names(api, "cnp")                          # kubectl sees it
    again = run("policy", "apply", "-f", str(f), "--kubeconfig", str(kc))
    assert again.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web unchanged"

    table = run("policy", "get", "--kubeconfig", str(kc)).stdout.splitlines()
    assert table[0].split()[:4] == ["KIND", "NAMESPACE", "NAME", "VALID"]
    assert table[1].split()[:4] == ["CiliumNetworkPolicy", "default", "allow-web", "Unknown"]   # no agent yet
    assert "name: allow-web" in run("policy", "get", "allow-web", "-o", "yaml", kubeconfig=kc).stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(allow_ingress("bad", {"app": "web"}, {"app": "client"}, port=99999))
    res = run("policy", "apply", "-f", str(bad), "--kubeconfig", str(kc))
    assert res.returncode == 1 and "bad.yaml:" in res.stderr
    assert "bad" not in names(api, "cnp")

    gone = run("policy", "delete", "allow-web", kubeconfig=kc)
    assert gone.returncode == 0 and gone.stdout.strip().endswith("deleted")
    assert "allow-web" not in names(api, "cnp")
    twice = run("policy", "delete", "allow-web", kubeconfig=kc)
    assert twice.returncode == 1 and "not found" in twice.stderr


def test_uninstall_dry_run_then_uninstall(api):
    kc = api.kubeconfig
    assert run("install", "--kubeconfig", kc).returncode == 0
    dry = run("uninstall", "--kubeconfig", kc, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("deleted (server dry run)") == OBJECTS
    assert "ciliumendpoints.cilium.io" in names(api, "crd")
    res = run("uninstall", "--kubeconfig", kc)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "daemonset.apps/ciliumctl-agent deleted"
    # the server removes a CRD once its objects are gone (the customresourcecleanup finalizer)
    assert wait_until(lambda: not {n for n in names(api, "crd") if n.endswith(".cilium.io")}, 30, 0.2)
    assert "ciliumctl-agent" not in names(api, "clusterroles")


def test_endpoint_list_all_nodes_reads_ciliumendpoints_of_every_node(api):
    from ciliumctl.cluster import endpoints
    from ciliumctl.cluster.kube import Kube
    from ciliumctl.endpoints.model import Endpoint

    kc = str(api.kubeconfig)
    assert run("install", "--kubeconfig", kc).returncode == 0
    kube = Kube.connect(kc, None)
    endpoints.publish(kube, Endpoint(id=7, name="web", namespace="default", ipv4="10.200.0.7", identity=300),
                      "node-a", ["k8s:app=web"])
    endpoints.publish(kube, Endpoint(id=9, name="db", namespace="default", ipv4="10.200.1.9", identity=301),
                      "node-b", ["k8s:app=db"])
    res = run("endpoint", "list", "--all-nodes", "--kubeconfig", kc)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "NAMESPACE", "NAME"]
    assert any(line.startswith("node-a") and "web" in line and "10.200.0.7" in line for line in lines)
    assert any(line.startswith("node-b") and "db" in line and "10.200.1.9" in line for line in lines)
