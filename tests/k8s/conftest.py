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


# ------------------------------------------------------- one shared API server for the cluster-mode code's tests

@pytest.fixture(scope="session")
def api_shared():
    """One real API server (etcd + kube-apiserver: no controllers, no nodes) shared by the tests of the
    cluster-mode code that need the API only (tests/k8s/test_api_*.py). The `kube` fixture below leaves it as it
    found it. Without the controller-manager nothing makes ServiceAccounts or finishes deleting a namespace:
    tests/k8s/objects.py add_pod makes the ServiceAccount, new_namespace names are unique."""
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


@pytest.fixture
def kubeconfig(api_shared) -> str:
    """The shared API server's admin kubeconfig."""
    return str(api_shared.kubeconfig)


TEST_NAMESPACE_LABEL = "ciliumctl-test"


@pytest.fixture
def kube(kubeconfig):
    """A client of the shared API server; afterwards every object a test may have made is deleted: cilium.io
    objects, pods (forced: no kubelet will confirm), DaemonSets (their status is the test's: the next install
    starts at 0/0), config maps in default, namespaces labelled ciliumctl-test (see new_namespace)."""
    from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube

    client = Kube.connect(kubeconfig)
    yield client
    for kind in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "CiliumEndpoint", "CiliumIdentity",
                 "CiliumCIDRGroup", "Pod", "DaemonSet", "ConfigMap"):
        try:
            items, _ = client.list(KINDS[kind])
        except ApiFailure:        # the CRDs are not there
            continue
        for item in items:
            meta = item["metadata"]
            if kind == "ConfigMap" and (meta["namespace"] != "default" or meta["name"].endswith(".crt")):
                continue
            client.request("DELETE", client.path(KINDS[kind], meta.get("namespace"), meta["name"]),
                           body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
    for ns in client.list(KINDS["Namespace"], label_selector=TEST_NAMESPACE_LABEL)[0]:
        client.delete(KINDS["Namespace"], ns["metadata"]["name"])


@pytest.fixture
def installed(kube):
    """The shared API server with ciliumctl installed (CRDs, RBAC, the DaemonSet: no node runs it)."""
    import io

    from ciliumctl.cluster.install import install

    install(kube=kube, out=io.StringIO())
    return kube


@pytest.fixture
def new_namespace(kube):
    """new_namespace(prefix, labels) -> the name of a namespace of the test's own, unique (a deleted namespace
    stays Terminating on the shared server), deleted after the test."""
    def make(prefix: str, labels: dict | None = None) -> str:
        name = f"{prefix}-{os.urandom(3).hex()}"
        kube.create({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": {**(labels or {}), TEST_NAMESPACE_LABEL: "true"}}})
        return name
    return make


class Made:
    """Objects a test makes on the shared server, deleted newest first after it (no namespace controller there
    empties a namespace): create(obj) makes and records one; track(kind, name, namespace) records one made
    otherwise."""

    def __init__(self, kube):
        self.kube = kube
        self.objects: list[tuple[str, str, str]] = []

    def create(self, obj: dict) -> dict:
        out = self.kube.create(obj)
        self.track(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
        return out

    def track(self, kind: str, name: str, namespace: str = "") -> None:
        self.objects.append((kind, name, namespace))


@pytest.fixture
def made(kube):
    from ciliumctl.cluster.kube import KINDS

    tracker = Made(kube)
    yield tracker
    for kind, name, namespace in reversed(tracker.objects):
        kube.delete(KINDS[kind], name, namespace or None)
