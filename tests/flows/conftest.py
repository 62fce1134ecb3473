"""Fixtures for flow tests: per-test state/run directories, synthetic datapath records, an in-process Observer
server on a unix socket in a temp dir, and (root) a per-test bpffs directory with the tests' own BPF emitter."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def node_dirs(tmp_path, monkeypatch):
    """Separate state and run directories for this test (as CILIUMCTL_* env)."""
    state, run = tmp_path / "state", tmp_path / "run"
    (state / "endpoints").mkdir(parents=True)
    (state / "datapath").mkdir()
    run.mkdir()
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(state))
    monkeypatch.setenv("CILIUMCTL_RUN_DIR", str(run))
    monkeypatch.setenv("CILIUMCTL_NODE_NAME", "node-a")
    monkeypatch.delenv("KUBECONFIG", raising=False)       # node mode unless a test says otherwise
    monkeypatch.delenv("CILIUMCTL_CLUSTER", raising=False)
    return state, run


@pytest.fixture
def bpffs_dir(monkeypatch):
    """A per-test pin directory under /sys/fs/bpf (root only), removed afterwards."""
    d = Path(f"/sys/fs/bpf/cctl{secrets.token_hex(2)}")
    d.mkdir()
    monkeypatch.setenv("CILIUMCTL_BPFFS_DIR", str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def emitter(bpffs_dir):
    from emitter import Emitter

    e = Emitter(bpffs_dir, ring_pages=int(os.environ.get("CCTL_TEST_RING_PAGES", "64")))
    yield e
    e.close()
