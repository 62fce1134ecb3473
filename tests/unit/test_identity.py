"""Identity allocation: stable ids per label set, reserved/cluster/local ranges, shared by processes."""

import json
import multiprocessing
import subprocess
import sys

import pytest

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.identity import allocator as identity
from ciliumctl.identity.allocator import IdentityAllocator, MemoryAllocator

WEB = frozenset({"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"})
DB = frozenset({"k8s:app=db", "k8s:io.kubernetes.pod.namespace=default"})
CIDR = frozenset({"cidr:10.0.0.0/8", "reserved:world"})


def test_reserved_identities_are_fixed():
    a = MemoryAllocator()
    assert a.allocate(frozenset({"reserved:host"})) == 1
    assert a.allocate(frozenset({"reserved:host", "k8s:node-role=worker"})) == 1
    assert [a.allocate(frozenset({f"reserved:{n}"})) for n in
            ("world", "unmanaged", "health", "init", "remote-node", "kube-apiserver", "ingress",
             "world-ipv4", "world-ipv6")] == list(range(2, 11))
    assert a.lookup(7) == frozenset({"reserved:kube-apiserver"})
    assert a.known() == {}


def test_cluster_and_cidr_ranges():
    a = MemoryAllocator()
    web, db, cidr = a.allocate_many([WEB, DB, CIDR])
    assert (web, db) == (256, 257)
    assert cidr == 16777217 and identity.scope_of(cidr) == "local"
    assert a.allocate(WEB) == 256 and a.allocate(CIDR) == cidr
    assert a.lookup(257) == DB


def test_persisted_and_shared(tmp_path):
    path = tmp_path / "identities.json"
    first = IdentityAllocator(path)
    web = first.allocate(WEB)
    second = IdentityAllocator(path)
    assert second.allocate(WEB) == web
    db = second.allocate(DB)
    assert db != web
    assert first.allocate(DB) == db       # first process sees the second's allocation
    data = json.loads(path.read_text())
    assert data["identities"][str(web)] == sorted(WEB)
    assert second.snapshot().allocate(frozenset({"k8s:app=new"})) == 258
    assert 258 not in IdentityAllocator(path).known()    # a snapshot never writes


def test_default_path_is_under_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path))
    IdentityAllocator().allocate(WEB)
    assert (tmp_path / "identities.json").is_file()


def test_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "identities.json"
    path.write_text("{not json")
    with pytest.raises(EnvironmentProblem, match="identities.json"):
        IdentityAllocator(path).allocate(WEB)


def _worker(path, n, q):
    a = IdentityAllocator(path)
    got = {}
    for i in range(n):
        labels = frozenset({f"k8s:app=a{i % 15}"})
        got[",".join(sorted(labels))] = a.allocate(labels)
    q.put(got)


def test_concurrent_processes_agree(tmp_path):
    path = str(tmp_path / "identities.json")
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, 30, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    merged = {}
    for r in results:
        for labels, ident in r.items():
            assert merged.setdefault(labels, ident) == ident, "two processes gave one label set two ids"
    assert len(merged) == 15 and len(set(merged.values())) == 15


def test_identity_is_stable_across_processes(tmp_path):
    path = tmp_path / "identities.json"
    code = ("import sys; from ciliumctl.identity.allocator import IdentityAllocator as A; "
            "print(A(sys.argv[1]).allocate(frozenset({'k8s:app=web', 'k8s:x=y'})))")
    out1 = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    IdentityAllocator(path).allocate(DB)
    out2 = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out1.stdout == out2.stdout == "256\n"
