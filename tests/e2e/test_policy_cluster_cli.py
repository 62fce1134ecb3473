"""The `policy apply|get|delete` commands in cluster mode (a kubeconfig given): the same command line, served by
ciliumctl.cluster.policy_apply against the fake API server (no root needed)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CLI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/fakeapi

POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-web
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
"""


@pytest.fixture
def cluster(tmp_path):
    pytest.importorskip("ciliumctl.cluster.policy_apply")
    from fakeapi import FakeApiServer

    from ciliumctl.cluster.install import install
    from ciliumctl.cluster.kube import Kube

    with FakeApiServer() as server:
        kc = str(server.write_kubeconfig(tmp_path / "kubeconfig"))
        install(kube=Kube.connect(kc), out=io.StringIO())
        yield kc


def run(*args, kubeconfig=None, state=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CILIUMCTL_") and k != "KUBECONFIG"}
    env["NO_COLOR"] = "1"
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    if state:
        env["CILIUMCTL_STATE_DIR"] = str(state)
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def test_policy_commands_follow_the_kubeconfig(cluster, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    res = run("policy", "apply", "-f", str(f), kubeconfig=cluster, state=tmp_path / "node")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web created"
    assert not (tmp_path / "node" / "policies").exists()            # the node's own store is untouched
    assert run("policy", "apply", "-f", str(f), kubeconfig=cluster).stdout.strip().endswith("unchanged")
    table = run("policy", "get", kubeconfig=cluster).stdout
    assert "allow-web" in table and "VALID" in table
    assert "name: allow-web" in run("policy", "get", "allow-web", "-o", "yaml", kubeconfig=cluster).stdout
    assert run("policy", "delete", "allow-web", kubeconfig=cluster).stdout.strip().endswith("deleted")
    gone = run("policy", "delete", "allow-web", kubeconfig=cluster)
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert "Traceback" not in gone.stderr
