"""Compile once, attach many; pins keep enforcing without any ciliumctl process; uninstall leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.netns import in_netns
from support.pods import entry
from support.shell import sh

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import bpfsys, build, environment, loader, maps

pytestmark = pytest.mark.root


ENDPOINT_PROGRAMS = ("from_container", "to_container")   # the node's devices get from_netdev/to_netdev


def _filter_prog_ids(sandbox, ifname: str) -> set[int]:
    """Programs on an interface of the sandbox node: tcx links and clsact filters alike."""
    from ciliumctl.datapath import hooks

    ids = set()
    for parent in ("ingress", "egress"):
        out = sh("ip", "netns", "exec", sandbox.node, "tc", "-j", "filter", "show", "dev", ifname, parent).stdout
        for f in json.loads(out or "[]"):
            prog = (f.get("options") or {}).get("prog") or {}
            if "id" in prog:
                ids.add(prog["id"])
    with in_netns(sandbox.node):
        import socket

        idx = socket.if_nametoindex(ifname)
        for side_ids in hooks.attached_prog_ids(idx).values():
            ids.update(side_ids)
    return ids


def test_attach_reuses_pinned_programs_without_compiling(sandbox):
    before = build.compile_count
    first = loader.Datapath.open()
    assert first.compiled and build.compile_count == before + 1
    prog_ids = {p["name"]: p["id"] for p in first.status()["programs"] if p["name"] in ENDPOINT_PROGRAMS}
    first.close()
    for pod in sandbox.pods:             # each attach from a fresh open(), as separate commands would
        dp = loader.Datapath.open()
        assert not dp.compiled
        dp.attach(pod.ep)
        dp.close()
    assert build.compile_count == before + 1
    for pod in sandbox.pods:
        assert _filter_prog_ids(sandbox, pod.ep.host_ifname) == set(prog_ids.values())
    # attach is idempotent: the programs are replaced, not stacked
    from ciliumctl.datapath import hooks

    with loader.Datapath.open() as dp:
        dp.attach(sandbox.pods[0].ep)
        st = dp.status()
        assert st["attached_endpoints"] == 3 and st["tcx_links"] == 6 and dp.attach_mode == "tcx"
        per_side = hooks.attached_prog_ids(sandbox.pods[0].ep.host_ifindex)
        assert per_side == {"ingress": [prog_ids["from_container"]], "egress": [prog_ids["to_container"]]}


def test_layout_matches_the_kernel_and_pins_know_their_source(sandbox):
    with loader.Datapath.open() as dp:
        for name, (ks, vs) in maps.SIZES.items():
            assert (dp.maps[name].key_size, dp.maps[name].value_size) == (ks, vs), name
        assert not dp.outdated and dp.status()["outdated"] is False
        # pins built from other sources are reported (install replaces them), and apply keeps the mark
        dp.maps["state"].update(b"\0" * 4, maps.DP_STATE.pack(0, 12345, 0, 0))
        assert dp.outdated
        dp.apply(sandbox.state(1, {}))
        assert dp.status()["outdated"] is True


_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from ciliumctl.datapath.loader import Datapath
    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.policy.resolved import *
    eps = [Endpoint.from_dict(d) for d in {eps!r}]
    dp = Datapath.open()
    for ep in eps:
        dp.attach(ep)
    origin = (RuleOrigin("CiliumNetworkPolicy", "child", "default", "ingress", 0),)
    b = eps[1]
    pol = {{ep.id: EndpointPolicy(ep.id, ep.identity, DirectionPolicy(ep.id == b.id,
            [PolicyEntry(eps[0].identity, PortRange(6, 8080, 8080), False, origin)] if ep.id == b.id else []),
            DirectionPolicy(False)) for ep in eps}}
    rep = dp.apply(ResolvedState(5, {{}}, {{ep.ipv4 + "/32": ep.identity for ep in eps}}, pol))
    print(rep.revision, rep.entries["policy"])
""")


def test_enforcement_continues_after_the_loading_process_exits(sandbox):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    code = _CHILD.format(root=str(Path(loader.__file__).resolve().parents[2]),
                         eps=[p.ep.to_dict() for p in sandbox.pods])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["5", "1"]
    # no ciliumctl process is left: the kernel enforces from the pins and the attached filters
    assert a.tcp_ok(b, 8080)
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    # a later open() reuses the child's pins and sees its revision
    before = build.compile_count
    with loader.Datapath.open() as dp:
        assert not dp.compiled and dp.status()["revision"] == 5
    assert build.compile_count == before


def test_uninstall_leaves_nothing_behind(sandbox):
    dp = loader.Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    assert sandbox.pods[0].ping(sandbox.pods[1].ip)
    assert len(dp.maps["conntrack"].items()) == 2      # the echo at each endpoint's interface
    st = dp.status()
    prog_ids = [p["id"] for p in st["programs"]]
    map_ids = [m["id"] for m in st["maps"]]
    for pod in sandbox.pods:
        dp.detach(pod.ep)
    assert dp.maps["conntrack"].items() == {} and dp.maps["endpoints"].items() == {}
    for pod in sandbox.pods:
        assert _filter_prog_ids(sandbox, pod.ep.host_ifname) == set()
    dp.close()
    removed = loader.uninstall_pins()
    assert set(removed) == set(maps.MAPS + maps.PROGRAMS)
    assert not os.path.exists(sandbox.pin_dir)
    # with no pin, fd or filter left, the kernel frees programs and maps (maps after an RCU grace period)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (any(map(bpfsys.prog_exists, prog_ids)) or
                                           any(map(bpfsys.map_exists, map_ids))):
        time.sleep(0.1)
    assert not any(map(bpfsys.prog_exists, prog_ids))
    assert not any(map(bpfsys.map_exists, map_ids))
    assert loader.uninstall_pins() == []      # idempotent


def test_pin_dir_nested_inside_bpffs(sandbox, monkeypatch):
    nested = f"{sandbox.pin_dir}/x/y"
    monkeypatch.setenv("CILIUMCTL_BPFFS_DIR", nested)
    with loader.Datapath.open() as dp:
        assert dp.pin_dir == Path(nested) and (Path(nested) / "policy").exists()
    assert set(loader.uninstall_pins()) == set(maps.MAPS + maps.PROGRAMS)
    os.rmdir(f"{sandbox.pin_dir}/x")
    assert environment.fs_type(Path("/sys/fs/bpf")) == environment.BPF_FS_MAGIC


def test_pins_of_another_version_with_endpoints_attached_are_not_replaced(sandbox):
    with loader.Datapath.open() as dp:
        dp.attach(sandbox.pods[0].ep)
    os.unlink(f"{sandbox.pin_dir}/fragments")        # as if an older ciliumctl had made these pins
    with pytest.raises(EnvironmentProblem, match="another ciliumctl version with 1 endpoint"):
        loader.Datapath.open()
    assert os.path.exists(f"{sandbox.pin_dir}/policy")  # nothing was removed
    # without attached endpoints the old pins are simply replaced
    endpoints = bpfsys.Map.from_pin(f"{sandbox.pin_dir}/endpoints")
    endpoints.delete_batch(endpoints.keys())
    endpoints.close()
    before = build.compile_count
    with loader.Datapath.open() as dp:
        assert dp.compiled and build.compile_count == before + 1


def test_upgrade_swaps_outdated_programs_without_a_gap(sandbox):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    policy = {b.ep.id: (True, [entry(a.identity, 6, 8080)], True, [])}   # b answers only as replies
    dp = loader.Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    dp.apply(sandbox.state(1, policy))
    old_ids = {p["id"] for p in dp.status()["programs"]}
    s = a.socket()
    s.settimeout(1)
    s.connect((b.ip, 8080))
    s.sendall(b"before\n")
    assert s.recv(16) == b"before\n"
    dp.maps["state"].update(b"\0" * 4, maps.DP_STATE.pack(1, 999, 1, 0))   # pretend: built from other sources
    assert dp.outdated
    before = build.compile_count
    rep = dp.upgrade(sandbox.state(2, policy))
    assert build.compile_count == before + 1 and rep.revision == 2
    st = dp.status()
    new_ids = {p["id"] for p in st["programs"] if p["name"] in ENDPOINT_PROGRAMS}
    assert not st["outdated"] and st["revision"] == 2 and not new_ids & old_ids
    for pod in sandbox.pods:
        assert _filter_prog_ids(sandbox, pod.ep.host_ifname) == new_ids
    s.sendall(b"after\n")                   # the tracked connection moved over: b's replies still pass
    assert s.recv(16) == b"after\n"
    s.close()
    assert a.tcp_ok(b, 8080)
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    dp.close()
    with loader.Datapath.open() as again:     # the new pins are what later processes see
        assert not again.compiled and {p["id"] for p in again.status()["programs"]
                                       if p["name"] in ENDPOINT_PROGRAMS} == new_ids


def test_open_with_a_pin_vanishing_is_one_clear_error(sandbox, monkeypatch):
    with loader.Datapath.open():
        pass
    real = bpfsys.obj_get

    def vanish(path):
        if str(path).endswith("to_container"):
            raise bpfsys.BpfError(2, "No such file or directory")
        return real(path)

    monkeypatch.setattr(bpfsys, "obj_get", vanish)
    with pytest.raises(EnvironmentProblem, match="cannot open the pinned datapath .*ciliumctl install"):
        loader.Datapath(Path(sandbox.pin_dir), False)


def test_clsact_fallback_enforces_and_detaches(sandbox, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_TC_ATTACH", "clsact")
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    with loader.Datapath.open() as dp:
        for pod in sandbox.pods:
            dp.attach(pod.ep)
        assert dp.attach_mode == "clsact" and dp.status()["tcx_links"] == 0
        dp.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, 6, 8080)], False, [])}))
        assert a.tcp_ok(b, 8080)
        assert not c.tcp_ok(b, 8080, timeout=0.5)
        prog_ids = {p["id"] for p in dp.status()["programs"] if p["name"] in ENDPOINT_PROGRAMS}
        assert _filter_prog_ids(sandbox, b.ep.host_ifname) == prog_ids
        for pod in sandbox.pods:
            dp.detach(pod.ep)
        assert _filter_prog_ids(sandbox, b.ep.host_ifname) == set()
        assert c.tcp_ok(b, 8080)
