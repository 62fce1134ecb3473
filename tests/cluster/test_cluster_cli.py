"""The cluster commands through the real `ciliumctl` executable, against the fake API server."""

from pathlib import Path

import pytest
import yaml

from support.cli import CLI, cli_env, run_cli
from support.policies import allow_ingress

pytestmark = pytest.mark.skipif(not Path(CLI).exists(), reason="ciliumctl executable missing (make setup)")


def run(*args):
    return run_cli(*args, env=cli_env())


def test_install_dry_run_prints_manifests_and_install_applies_them(fake, kubeconfig):
    dry = run("install", "--kubeconfig", kubeconfig, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    docs = list(yaml.safe_load_all(dry.stdout))
    assert len(docs) == 11 and all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in docs)
    assert fake.count("PATCH") == 0  # a dry run never touches the cluster

    res = run("install", "--kubeconfig", kubeconfig)
    assert res.returncode == 0, res.stderr
    assert "daemonset.apps/ciliumctl-agent created" in res.stdout
    again = run("install", "--kubeconfig", kubeconfig)
    assert again.stdout.count(" unchanged") == 11


def test_unreachable_cluster_is_one_line_exit_2(fake, kubeconfig):
    fake.stop()
    res = run("install", "--kubeconfig", kubeconfig)
    assert res.returncode == 2
    assert res.stderr.startswith("Error: cannot reach the Kubernetes API server") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


POLICY = allow_ingress("allow-web", {"app": "web"}, {"app": "client"})


def test_policy_apply_get_delete_against_the_cluster(installed, kubeconfig, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    first = run("policy", "apply", "-f", str(f), "--kubeconfig", kubeconfig)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web created"
    again = run("policy", "apply", "-f", str(f), "--kubeconfig", kubeconfig)
    assert again.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web unchanged"

    table = run("policy", "get", "--kubeconfig", kubeconfig).stdout.splitlines()
    assert table[0].split() == ["KIND", "NAMESPACE", "NAME", "VALID", "ENFORCED", "MESSAGE"]
    assert table[1].split() == ["CiliumNetworkPolicy", "default", "allow-web", "Unknown", "Unknown"]

    bad = tmp_path / "bad.yaml"
    bad.write_text(allow_ingress("bad", {"app": "web"}, {"app": "client"}, port=99999))
    res = run("policy", "apply", "-f", str(bad), "--kubeconfig", kubeconfig)
    assert res.returncode == 1 and "bad.yaml:" in res.stderr and "Traceback" not in res.stderr
    assert "bad" not in run("policy", "get", "--kubeconfig", kubeconfig).stdout

    gone = run("policy", "delete", "allow-web", "--kubeconfig", kubeconfig)
    assert gone.returncode == 0 and "deleted" in gone.stdout
    assert run("policy", "delete", "allow-web", "--kubeconfig", kubeconfig).returncode == 1


def test_uninstall_against_the_cluster(installed, kubeconfig, fake):
    dry = run("uninstall", "--kubeconfig", kubeconfig, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("deleted (server dry run)") == 11
    res = run("uninstall", "--kubeconfig", kubeconfig)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "daemonset.apps/ciliumctl-agent deleted"
    assert ("cilium.io", "ciliumnetworkpolicies") not in fake.store.types


def test_status_reports_the_daemonset_and_exits_1_until_agents_are_ready(fake, kubeconfig):
    assert run("install", "--kubeconfig", kubeconfig).returncode == 0
    res = run("status", "--kubeconfig", kubeconfig, "-o", "json")
    import json

    st = json.loads(res.stdout)
    assert st["installed"] is True and st["healthy"] is False and res.returncode == 1  # no node runs the pods
    table = run("status", "--kubeconfig", kubeconfig)
    assert "DaemonSet:  installed" in table.stdout and "AGENT POD" in table.stdout


def test_endpoint_list_all_nodes_reads_ciliumendpoints_of_every_node(fake, kubeconfig):
    from ciliumctl.cluster import endpoints
    from ciliumctl.cluster.kube import Kube
    from ciliumctl.endpoints.model import Endpoint

    assert run("install", "--kubeconfig", kubeconfig).returncode == 0
    kube = Kube.connect(kubeconfig, None)
    endpoints.publish(kube, Endpoint(id=7, name="web", namespace="default", ipv4="10.200.0.7", identity=300),
                      "node-a", ["k8s:app=web"])
    endpoints.publish(kube, Endpoint(id=9, name="db", namespace="default", ipv4="10.200.1.9", identity=301),
                      "node-b", ["k8s:app=db"])
    res = run("endpoint", "list", "--all-nodes", "--kubeconfig", kubeconfig)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "NAMESPACE", "NAME"]
    assert any(line.startswith("node-a") and "web" in line and "10.200.0.7" in line for line in lines)
    assert any(line.startswith("node-b") and "db" in line and "10.200.1.9" in line for line in lines)
    missing = run("endpoint", "list", "--all-nodes")
    assert missing.returncode == 2 and "--kubeconfig" in missing.stderr
