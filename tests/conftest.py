"""Shared test configuration and the fixtures every suite may use, defined once: root-only tests skip cleanly
elsewhere; reference tools (the real hubble CLI, ...) come from ../shared/tools, unpacked into .tools/bin; sandbox
nodes (tests/support) and the fake API server (tests/fakeapi: only for faults a real server does not give on
demand) for the suites that need them."""

import fcntl
import functools
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS_BIN = REPO / ".tools" / "bin"
UNPACK = REPO.parent / "shared" / "tools" / "unpack.sh"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (BPF, netns, veth)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@functools.cache
def _unpacked(name: str) -> Path | None:
    """Unpack ../shared/tools into .tools/bin (idempotent, checksummed; one unpacker at a time, as several test
    runs share the directory). The tool's path, or None when neither it nor the shared copy exists."""
    if UNPACK.exists():
        TOOLS_BIN.mkdir(parents=True, exist_ok=True)
        with open(TOOLS_BIN.parent / ".unpack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run([str(UNPACK), str(TOOLS_BIN)], check=True, capture_output=True, timeout=600)
    path = TOOLS_BIN / name
    return path if os.access(path, os.X_OK) else None


def reference_tool(name: str) -> Path:
    """A reference tool of ../shared/tools. Missing, the test skips; under CI=true it fails: CI tests against it."""
    path = _unpacked(name)
    if path is None:
        why = f"reference tool {name} missing: no {TOOLS_BIN / name} and no {UNPACK}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def hubble() -> Path:
    """The real hubble CLI 1.19 (../shared/tools/hubble.xz)."""
    return reference_tool("hubble")


@pytest.fixture(scope="session")
def cnp_oracle() -> Path:
    """Cilium 1.19's own policy validator (../shared/tools/cnp-oracle.xz, see its README)."""
    return reference_tool("cnp-oracle")


# --------------------------------------------------------------------------------------------- sandbox nodes

@pytest.fixture
def node(tmp_path):
    """A sandbox node driven through the real `ciliumctl` executable (tests/support/node.py)."""
    from support.cli import require_cli
    from support.netns import require_root
    from support.node import SandboxNode

    require_root()
    require_cli()
    with SandboxNode(tmp_path) as n:
        yield n


@pytest.fixture
def sandbox(monkeypatch, tmp_path):
    """Three pods (ids 1..3, identities 1001..1003, 10.11.0.1..3) on an in-process sandbox node; env points the
    core at it (tests/support/pods.py)."""
    from support import pods
    from support.netns import require_root

    require_root()
    with pods.sandbox(monkeypatch, tmp_path, 3) as sb:
        yield sb


@pytest.fixture
def sandbox4(monkeypatch, tmp_path):
    """Like `sandbox` with four pods (tests make some of them hosts outside the cluster)."""
    from support import pods
    from support.netns import require_root

    require_root()
    with pods.sandbox(monkeypatch, tmp_path, 4) as sb:
        yield sb


@pytest.fixture
def cni_node():
    """A sandbox node with the CNI server and the installed plugin (tests/support/cni_node.py)."""
    from support.cni_node import CniNode, require_stack

    require_stack()
    with CniNode() as n:
        yield n


@pytest.fixture
def node_env(tmp_path, monkeypatch):
    """This test's own state, run and pin directories (under tmp_path) as CILIUMCTL_* variables, for the core run
    in-process without a sandbox node: never the machine's own state or pins."""
    for name in ("state", "run", "bpffs"):
        (tmp_path / name).mkdir(exist_ok=True)
        monkeypatch.setenv(f"CILIUMCTL_{name.upper()}_DIR", str(tmp_path / name))


# --------------------------------------------------------------------------------------------- the cluster

@pytest.fixture
def fake():
    """The in-process fake Kubernetes API server (tests/fakeapi)."""
    from fakeapi import FakeApiServer

    with FakeApiServer() as server:
        yield server


@pytest.fixture
def fake_kube(fake, tmp_path):
    """A client of the fake, for the corner cases the real server does not give on demand (tests/cluster); the
    real API server's fixtures are in tests/k8s/conftest.py."""
    from ciliumctl.cluster.kube import Kube

    return Kube.connect(str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
