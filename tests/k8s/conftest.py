"""The real cluster (tests/k8s/cluster.py) as a session fixture: built once for all tests under tests/k8s, taken
down at the end with a check that nothing of it is left. Its pieces (the Kubernetes binaries of ../shared/tools,
the images of scripts/image.sh) are missing -> skip, and under CI=true fail: CI tests on the real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from k8s.cluster import Cluster, ClusterError, build_images

K8S_TOOLS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")


def _missing(why: str):
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def k8s_images() -> list[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (images are built with mmdebstrap and umoci)")
    try:
        return build_images()
    except (ClusterError, OSError, subprocess.TimeoutExpired) as err:
        _missing(f"scripts/image.sh failed: {err}")


def _cluster(k8s_images, nodes: int):
    from conftest import reference_tool  # tests/conftest.py: ../shared/tools unpacked, CI=true fails when missing

    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts, cgroups)")
    bin_dir = {reference_tool(t).parent for t in K8S_TOOLS}.pop()
    cluster = Cluster(bin_dir, k8s_images, nodes=nodes)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftovers()
        assert not left, f"the cluster left {left}"


@pytest.fixture(scope="session")
def k8s(k8s_images):
    """A two-node cluster, without the agent (tests install it)."""
    yield from _cluster(k8s_images, 2)


@pytest.fixture(scope="session")
def cli_env_k8s(k8s):
    """Environment for the real `ciliumctl` and kubectl against the cluster."""
    from support.cli import cli_env

    return cli_env(KUBECONFIG=str(k8s.kubeconfig))


@pytest.fixture
def api():
    """A fresh real API server (etcd + kube-apiserver, no controllers or nodes) for one test: cluster-mode
    commands that need only the API."""
    from conftest import reference_tool

    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces)")
    cluster = Cluster(reference_tool("kube-apiserver").parent, [], nodes=0, controllers=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.leftovers()
