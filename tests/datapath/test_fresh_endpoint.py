"""A new endpoint's first revision (Datapath.attaching + apply(fresh=...)): written into the active slot in place
when only the new endpoint's own entries and address are new, by a switch otherwise; policed from its first
packet either way, and default-denied before its revision lands."""

from __future__ import annotations

import pytest

from ciliumctl.datapath.loader import Datapath

from .conftest import entry

pytestmark = pytest.mark.root
WORLD = 2   # reserved:world, what an address without an ipcache entry is (bpf/lib/common.h CTL_IDENTITY_WORLD)


def _state(sb, pods, revision, policies):
    st = sb.state(revision, policies)
    ids = {p.ep.id for p in pods}
    st.endpoints = {k: v for k, v in st.endpoints.items() if k in ids}
    st.ipcache = {f"{p.ip}/32": p.identity for p in pods}
    return st


def test_fresh_endpoint_in_place_and_policed_from_the_start(sandbox4):
    a, b, c, d = sandbox4.pods
    sandbox4.tcp_server(a, 8080)
    sandbox4.tcp_server(c, 8080)
    sandbox4.tcp_server(b, 8080)
    with Datapath.open() as dp:
        for pod in (a, b):
            dp.attach(pod.ep)
        # b admits only a
        first = dp.apply(_state(sandbox4, [a, b], 1, {b.ep.id: (True, [entry(a.identity)], False, [])}))
        assert a.tcp_ok(b, 8080)

        # c arrives: its endpoint entry default-denies both ways before any revision names it
        with dp.attaching(c.ep):
            pass
        assert not a.tcp_ok(c, 8080, timeout=0.5) and not c.tcp_ok(a, 8080, timeout=0.5)

        # its revision adds only its own entries and its address: the active slot, no switch; c admits only a
        rev = dp.apply(_state(sandbox4, [a, b, c], 2, {b.ep.id: (True, [entry(a.identity)], False, []),
                                                        c.ep.id: (True, [entry(a.identity)], False, [])}),
                       fresh=frozenset({c.ep.id}))
        assert rev.slot == first.slot and dp.revision == 2
        assert a.tcp_ok(c, 8080) and not b.tcp_ok(c, 8080, timeout=0.5)
        assert c.tcp_ok(a, 8080) and not c.tcp_ok(b, 8080, timeout=0.5)    # b still admits only a

        # d's arrival changes b's entries (b admits d's identity): that takes a switch
        with dp.attaching(d.ep):
            rev = dp.apply(_state(sandbox4, [a, b, c, d], 3,
                                  {b.ep.id: (True, [entry(a.identity), entry(d.identity)], False, []),
                                   c.ep.id: (True, [entry(a.identity)], False, [])}),
                           fresh=frozenset({d.ep.id}))
        assert rev.slot != first.slot and dp.revision == 3
        assert d.tcp_ok(b, 8080) and not d.tcp_ok(c, 8080, timeout=0.5) and a.tcp_ok(c, 8080)
        assert dp.status()["tcx_links"] == 8


def test_in_place_revision_decides_tracked_connections_again(sandbox4):
    """A connection to an address tracked before its endpoint existed (as world) is decided again with the new
    endpoint's revision: the in-place write bumps the revision number as a switch does."""
    a, b, c, _ = sandbox4.pods
    sandbox4.tcp_server(c, 8080)
    with Datapath.open() as dp:
        for pod in (a, b):
            dp.attach(pod.ep)
        # a may talk to the world (c's address is no endpoint yet), egress enforced
        world = {a.ep.id: (False, [], True, [entry(WORLD, section="egress")])}
        first = dp.apply(_state(sandbox4, [a, b], 1, world))
        conn = a.socket()
        conn.settimeout(1.0)
        conn.connect((c.ip, 8080))
        conn.sendall(b"x")
        assert conn.recv(1) == b"x"
        # c becomes an endpoint whose identity a's egress does not allow
        with dp.attaching(c.ep):
            rev = dp.apply(_state(sandbox4, [a, b, c], 2, world), fresh=frozenset({c.ep.id}))
        assert rev.revision == 2 and rev.slot == first.slot
        conn.settimeout(0.5)
        conn.sendall(b"y")
        with pytest.raises(TimeoutError):
            conn.recv(1)
        conn.close()


def test_deferred_tcx_polices_on_clsact_then_moves_without_a_gap(sandbox4):
    """attaching(defer_tcx=True), as the CNI server does: clsact filters (raw rtnetlink) enforce from the start;
    move_to_tcx() puts the programs on tcx links and removes the qdisc, the verdicts unchanged."""
    from support.netns import in_netns
    from support.shell import sh

    from ciliumctl.datapath import hooks, loader

    a, b, c, _ = sandbox4.pods
    sandbox4.tcp_server(c, 8080)

    def qdiscs() -> str:
        return sh("ip", "netns", "exec", sandbox4.node, "tc", "qdisc", "show", "dev", c.ep.host_ifname).stdout

    with Datapath.open() as dp:
        for pod in (a, b):
            dp.attach(pod.ep)
        dp.apply(_state(sandbox4, [a, b], 1, {}))
        with dp.attaching(c.ep, defer_tcx=True):
            dp.apply(_state(sandbox4, [a, b, c], 2, {c.ep.id: (True, [entry(a.identity)], False, [])}),
                     fresh=frozenset({c.ep.id}))
        assert dp.attach_mode == "clsact" and "clsact" in qdiscs()
        with in_netns(sandbox4.node):
            assert hooks.attached_prog_ids(c.ep.host_ifindex) == {"ingress": [], "egress": []}
        assert a.tcp_ok(c, 8080) and not b.tcp_ok(c, 8080, timeout=0.5)
        with in_netns(sandbox4.node):
            assert loader.move_to_tcx(c.ep.host_ifindex)
            on_tcx = hooks.attached_prog_ids(c.ep.host_ifindex)
        assert len(on_tcx["ingress"]) == 1 and len(on_tcx["egress"]) == 1
        assert "clsact" not in qdiscs()
        assert a.tcp_ok(c, 8080) and not b.tcp_ok(c, 8080, timeout=0.5)
