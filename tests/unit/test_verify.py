"""`status --verify` without a kernel: the differ between wanted and held map entries says each difference in one
readable line, and the node lock's marker tells the next command that one died half way (issue 17, item 2)."""

import os
import subprocess
import sys

import pytest

from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.datapath import maps, readback
from ciliumctl.datapath.mapstate import compile_state
from ciliumctl.node import settings
from ciliumctl.policy.resolved import DirectionPolicy, EndpointPolicy, PolicyEntry, PortRange, ResolvedState, RuleOrigin

ORIGIN = RuleOrigin("CiliumNetworkPolicy", "allow", "default", "ingress", 0)
NAMES = {256: "app=a", 257: "app=b"}


def state(peer: int = 256, deny: bool = False, b_identity: int = 257) -> ResolvedState:
    """Endpoint 2 (app=b) accepts `peer` on TCP 8080-8087 and everything on UDP; endpoint 1 (app=a) is open."""
    b = EndpointPolicy(2, b_identity,
                       ingress=DirectionPolicy(True, [PolicyEntry(peer, PortRange(6, 8080, 8087), deny, (ORIGIN,)),
                                                      PolicyEntry(0, PortRange(17), False, (ORIGIN,))]),
                       egress=DirectionPolicy(False))
    a = EndpointPolicy(1, 256, ingress=DirectionPolicy(False), egress=DirectionPolicy(False))
    return ResolvedState(revision=4, identities={256: frozenset({"k8s:app=a"}), 257: frozenset({"k8s:app=b"})},
                         ipcache={"10.200.0.1/32": 256, "10.200.0.2/32": b_identity}, endpoints={1: a, 2: b})


def held(s: ResolvedState, slot: int = 1) -> dict[str, dict[bytes, bytes]]:
    """What the kernel would hold after programming `s` into `slot`."""
    m = compile_state(s, slot)
    return {"policy": dict(m.policy), "ipcache": dict(m.ipcache), "epcfg": dict(m.epcfg)}


def test_the_same_state_has_no_difference():
    assert readback.compare(compile_state(state(), 1), held(state()), NAMES) == []


def test_a_killed_apply_shows_as_missing_and_unexpected_entries():
    """The issue's case: the store admits app=a, the kernel still admits the revoked peer app=c (258)."""
    lines = readback.compare(compile_state(state(peer=256), 1), held(state(peer=258)), NAMES)
    assert lines == ["policy: missing endpoint 2 ingress identity 256 (app=a) tcp/8080-8087: allow",
                     "policy: unexpected endpoint 2 ingress identity 258 tcp/8080-8087: allow"]


def test_changed_values_say_what_the_kernel_has_and_what_is_wanted():
    cookie = maps.POLICY_VAL.unpack(next(iter(compile_state(state(), 1).policy.values())))[3]
    lines = readback.compare(compile_state(state(deny=True, b_identity=300), 1), held(state()), NAMES)
    assert lines == [
        "ipcache: 10.200.0.2/32 is identity 257 (app=b) in the kernel, identity 300 wanted",
        "epcfg: endpoint 2 is identity 257 (app=b), enforcing ingress in the kernel, identity 300, enforcing ingress "
        "wanted",
        f"policy: endpoint 2 ingress identity 256 (app=a) tcp/8080-8087 is allow (match type 2, rule cookie {cookie}) "
        f"in the kernel, deny (match type 2, rule cookie {cookie}) wanted"]


def test_only_the_compared_slot_counts_and_lost_entries_are_named():
    want = compile_state(state(), 0)
    have = held(state(), 0)
    lost_ip = next(iter(have["ipcache"]))
    del have["ipcache"][lost_ip]
    lost_cfg = maps.EPCFG_KEY.pack(0, 1)
    del have["epcfg"][lost_cfg]
    have["policy"].pop(next(k for k in have["policy"] if maps.POLICY_KEY.unpack(k)[5] == 17))
    assert readback.compare(want, have, NAMES) == [
        "ipcache: missing 10.200.0.1/32: identity 256 (app=a)",
        "epcfg: missing endpoint 1: identity 256 (app=a), not enforcing",
        "policy: missing endpoint 2 ingress any identity udp/any port: allow"]
    assert readback.compare(compile_state(state(), 1), held(state(), 0), NAMES)   # the other slot: all differs


def test_port_prefixes_read_back_as_ranges():
    key = maps.policy_key(1, 1, 2, 256, 6, 8080, maps.POLICY_PORT_BASE + 13)
    assert readback.describe_key("policy", key, NAMES) == "endpoint 2 ingress identity 256 (app=a) tcp/8080-8087"
    key = maps.policy_key(1, 2, 2, 0, 0, 0, maps.POLICY_FIXED_BITS)
    assert readback.describe_key("policy", key) == "endpoint 2 egress any identity any protocol"
    key = maps.policy_key(1, 1, 2, 0, 17, 53, maps.POLICY_FULL_BITS)
    assert readback.describe_key("policy", key) == "endpoint 2 ingress any identity udp/53"


def test_local_redirect_skip_entries_read_back_by_their_kind():
    vip = bytes([10, 96, 0, 10])
    key = maps.LB_SKIP_KEY.pack(0, 17 | maps.LB_KIND_SKIP, bytes([10, 200]), vip, 53, bytes([0, 5]))
    assert readback.describe_key("lb_services", key) == "redirect skipped from 10.200.0.5 to 10.96.0.10:53/UDP"
    key = maps.LB_SVC_KEY.pack(0, 6 | maps.LB_KIND_ORIGINAL, 2, vip, 53)
    assert readback.describe_key("lb_services", key) == "backend slot 2 of the service redirected at 10.96.0.10:53/TCP"
    assert readback.describe_key("lb_services", maps.LB_SVC_KEY.pack(0, 6, 0, vip, 53)) == "service 10.96.0.10:53/TCP"


# ------------------------------------------------------------------------------------------ the lock's marker

def test_the_marker_stays_when_a_command_dies_and_goes_when_it_is_repaired(node_env):
    marker = settings.changing_path()
    with settings.locked():
        assert marker.exists() and not settings.interrupted()
    assert not marker.exists()                                  # a command that finished leaves nothing

    code = "import os\nfrom ciliumctl.node.settings import locked\nwith locked():\n    os.kill(os.getpid(), 9)"
    assert subprocess.run([sys.executable, "-c", code], env=os.environ.copy()).returncode == -9
    assert marker.exists()
    with settings.locked():
        assert settings.interrupted()                           # the next holder learns it
    with settings.locked():
        assert settings.interrupted()                           # ... until something repairs
        settings.repaired()
        assert not settings.interrupted()
    assert not marker.exists()


def test_a_failure_half_way_keeps_the_marker_a_refusal_does_not(node_env):
    marker = settings.changing_path()
    with pytest.raises(UsageError), settings.locked():
        raise UsageError("endpoint x already exists")
    assert not marker.exists()
    with pytest.raises(EnvironmentProblem), settings.locked():
        raise EnvironmentProblem("the policy map is full")
    assert marker.exists()


def test_verify_refuses_a_node_programmed_from_a_cluster(node_env):
    """The local store is not that node's desired state: a repair from it would drop the cluster's policies."""
    from ciliumctl.node import verify

    settings.save_settings(settings.Settings(policy_source="cluster"))
    with pytest.raises(UsageError, match="programmed from a cluster"):
        verify.check()
    assert not verify.node_mode() and verify.heal() == []
