"""Cluster-mode tests run against the in-process fake API server (tests/fakeapi)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # makes tests/fakeapi importable

from fakeapi import FakeApiServer  # noqa: E402


@pytest.fixture
def fake():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(fake, tmp_path):
    return str(fake.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def kube(kubeconfig):
    from ciliumctl.cluster.kube import Kube

    return Kube.connect(kubeconfig)


@pytest.fixture
def installed(kube):
    """The CRDs and the rest of the install in place."""
    import io

    from ciliumctl.cluster.install import install

    install(kube=kube, out=io.StringIO())
    return kube
