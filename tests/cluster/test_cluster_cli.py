"""The cluster commands through the real `ciliumctl` executable, against the fake API server."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLI = str(Path(sys.executable).parent / "ciliumctl")
pytestmark = pytest.mark.skipif(not Path(CLI).exists(), reason="ciliumctl executable missing (make setup)")


def run(*args, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(NO_COLOR="1", **(env_extra or {}))
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60)


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
