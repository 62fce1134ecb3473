"""The node-local address pool: lowest free address, no double leases under concurrency, release."""

import ipaddress
import multiprocessing

import pytest

from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.endpoints import ipam


def test_allocates_lowest_free_and_reuses_released(tmp_path):
    pool = ipam.Pool("10.9.0.0/29", tmp_path)
    assert [pool.allocate(f"ep:{i}") for i in range(3)] == ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    assert pool.release("10.9.0.2")
    assert not pool.release("10.9.0.2")
    assert pool.allocate("ep:9") == "10.9.0.2"
    assert ipam.Pool("10.9.0.0/29", tmp_path).leases()["10.9.0.2"] == "ep:9"   # persisted


def test_exhaustion_and_release_owner(tmp_path):
    pool = ipam.Pool("10.9.0.0/30", tmp_path)
    pool.allocate("a")
    pool.allocate("b")
    with pytest.raises(EnvironmentProblem, match="exhausted"):
        pool.allocate("c")
    assert pool.release_owner("a") == ["10.9.0.1"]
    assert pool.allocate("c") == "10.9.0.1"


def test_upper_half_is_left_to_the_cni_plugin(tmp_path):
    pool = ipam.Pool("10.9.0.0/29", tmp_path)
    assert ipam.cni_half(pool.network) == ipaddress.ip_network("10.9.0.4/30")
    got = [pool.allocate(f"ep:{i}") for i in range(3)]
    assert got == ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
    with pytest.raises(EnvironmentProblem, match="exhausted"):
        pool.allocate("ep:4")
    with pytest.raises(UsageError, match="CNI plugin"):
        pool.allocate("ep:5", wanted="10.9.0.5")
    assert ipam.cni_half(ipaddress.ip_network("10.9.0.0/30")) is None


def test_wanted_address(tmp_path):
    pool = ipam.Pool("10.9.0.0/24", tmp_path)
    assert pool.allocate("a", wanted="10.9.0.77") == "10.9.0.77"
    with pytest.raises(UsageError, match="already leased"):
        pool.allocate("b", wanted="10.9.0.77")
    with pytest.raises(UsageError, match="not a usable address"):
        pool.allocate("b", wanted="10.8.0.1")


@pytest.mark.parametrize("bad", ["nonsense", "fd00::/64", "10.0.0.1/31"])
def test_bad_pools(bad):
    with pytest.raises(UsageError):
        ipam.parse_pool(bad)


def test_pool_precedence(monkeypatch):
    monkeypatch.delenv("CILIUMCTL_POOL", raising=False)
    assert ipam.effective_pool() == ipam.DEFAULT_POOL
    assert ipam.effective_pool(configured="10.1.0.0/16") == "10.1.0.0/16"
    monkeypatch.setenv("CILIUMCTL_POOL", "10.2.0.0/16")
    assert ipam.effective_pool(configured="10.1.0.0/16") == "10.2.0.0/16"
    assert ipam.effective_pool(explicit="10.3.0.5/24") == "10.3.0.0/24"


def _grab(args):
    state, n = args
    pool = ipam.Pool("10.9.0.0/24", state)
    return [pool.allocate(f"p{n}:{i}") for i in range(10)]


def test_concurrent_allocations_never_collide(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as workers:
        results = workers.map(_grab, [(tmp_path, n) for n in range(4)])
    got = [a for r in results for a in r]
    assert len(got) == 40 and len(set(got)) == 40
    assert len(ipam.Pool("10.9.0.0/24", tmp_path).leases()) == 40


def test_addresses_in_use_elsewhere_are_never_handed_out(tmp_path):
    """A lost or emptied lease file must not hand out an address the registry or the kernel still uses."""
    pool = ipam.Pool("10.9.0.0/24", tmp_path)
    taken = {"10.9.0.1": "endpoint 1 (default/a)", "10.9.0.2": "a route to cctlep2 in the node network namespace"}
    assert pool.allocate("endpoint:3", in_use=taken) == "10.9.0.3"
    with pytest.raises(UsageError, match=r"10\.9\.0\.2 is in use by a route to cctlep2"):
        pool.allocate("endpoint:4", wanted="10.9.0.2", in_use=taken)
    with pytest.raises(UsageError, match="not an IPv4 address"):
        pool.allocate("endpoint:4", wanted="999.1.1.1")


def test_release_only_by_its_owner_and_restore(tmp_path):
    pool = ipam.Pool("10.9.0.0/24", tmp_path)
    addr = pool.allocate("endpoint:1")
    assert not pool.release(addr, "endpoint:2") and pool.leases() == {addr: "endpoint:1"}
    assert pool.release(addr, "endpoint:1") and pool.leases() == {}
    assert pool.restore({"10.9.0.5": "endpoint:5", "10.8.0.1": "endpoint:6"}) == ["10.8.0.1", "10.9.0.5"]
    assert pool.restore({"10.9.0.5": "endpoint:7"}) == []                 # a lease is never overwritten
    assert pool.leases()["10.9.0.5"] == "endpoint:5"


CORRUPT_LEASES = {
    "empty file": "",
    "truncated": '{"leases": {"10.9.0.1": "endpo',
    "not JSON": "leases: yes\n",
    "a list": "[]\n",
    "leases a list": '{"leases": []}\n',
    "no leases": '{"pool": "10.9.0.0/24"}\n',
    "bad address": '{"leases": {"10.9.0.999": "endpoint:1"}}\n',
    "owner not a string": '{"leases": {"10.9.0.1": 1}}\n',
    "binary": "\udcff\udcfe",
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_LEASES))
def test_a_corrupt_lease_file_is_refused_naming_itself(tmp_path, kind):
    pool = ipam.Pool("10.9.0.0/24", tmp_path)
    pool.path.write_bytes(CORRUPT_LEASES[kind].encode("utf-8", "surrogateescape"))
    for call in (pool.leases, lambda: pool.allocate("endpoint:1"), lambda: pool.release_owner("endpoint:1")):
        with pytest.raises(EnvironmentProblem) as err:
            call()
        assert str(pool.path) in str(err.value) and "remove the file" in str(err.value)
    assert pool.path.read_bytes() == CORRUPT_LEASES[kind].encode("utf-8", "surrogateescape")   # never rewritten


def test_every_truncation_of_the_lease_file_is_refused_or_read_whole(tmp_path):
    """Cut a real lease file at every byte: either the whole file (all leases) or a clear refusal."""
    pool = ipam.Pool("10.9.0.0/24", tmp_path)
    for i in range(5):
        pool.allocate(f"endpoint:{i + 1}")
    full = pool.path.read_bytes()
    whole = pool.leases()
    refused = 0
    for cut in range(len(full)):
        pool.path.write_bytes(full[:cut])
        try:
            got = pool.leases()
        except EnvironmentProblem as err:
            assert str(pool.path) in str(err)
            refused += 1
            continue
        assert got == whole, f"cut at {cut} read as {got}"
    assert refused >= len(full) - 2        # only whitespace may be cut off the end
