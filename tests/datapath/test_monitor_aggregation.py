"""Monitor aggregation with real packets through the real programs: each level changes what the datapath traces,
as Cilium's levels do (datapath/monitor.py), and a new level takes effect at once, without a recompile. Drops and
policy verdicts are sent at every level."""

from __future__ import annotations

import os
import socket
import time

import pytest

from ciliumctl.datapath import build
from ciliumctl.datapath import events as ev
from ciliumctl.datapath.monitor import MonitorConfig
from ciliumctl.policy.resolved import PROTO_TCP, PROTO_UDP

from .conftest import entry

pytestmark = pytest.mark.root
EXCHANGES = 20


def _conversation(a, b, port: int, exchanges: int = EXCHANGES, pause: float = 0.0) -> int:
    """A connection a -> b: `exchanges` request/response rounds, then close. Returns a's source port."""
    s = a.socket()
    s.settimeout(2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((b.ip, port))
    sport = s.getsockname()[1]
    for _ in range(exchanges):
        s.sendall(b"x" * 10)
        got = 0
        while got < 10:
            got += len(s.recv(64))
        time.sleep(pause)
    s.close()
    time.sleep(0.2)   # the FIN exchange and the last events
    return sport


def _traces(reader, a, sport: int) -> list:
    return [e for e in reader.events() if e.type == ev.EVENT_TRACE and e.proto == PROTO_TCP
            and ((e.saddr, e.sport) == (a.ip, sport) or (e.daddr, e.dport) == (a.ip, sport))]


def _at(traces, obs: int) -> list:
    return [e for e in traces if e.subtype == obs]


def test_each_level_changes_what_is_traced(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}))
    compiles = build.compile_count
    seen = {}
    for level in ("none", "low", "medium", "maximum"):
        datapath.set_monitor(MonitorConfig(level))
        assert datapath.monitor().level == level
        events.drain()
        sport = _conversation(a, b, 8080)
        traces = _traces(events, a, sport)
        seen[level] = (_at(traces, ev.OBS_FROM_ENDPOINT), _at(traces, ev.OBS_TO_ENDPOINT))
    assert build.compile_count == compiles        # a map write, no recompile

    # none: every packet at both points (each round is a request and a response, both ways through both veths)
    frm, to = seen["none"]
    assert len(frm) >= 2 * EXCHANGES and len(to) >= 2 * EXCHANGES
    assert all(e.packets == 1 for e in frm + to)
    # low: nothing on receive (from-endpoint), still one trace per packet at to-endpoint
    frm, to = seen["low"]
    assert not frm and len(to) >= 2 * EXCHANGES
    # medium and maximum: per connection; no per-packet traces; the packets in between are counted in the next one
    for level in ("medium", "maximum"):
        frm, to = seen[level]
        assert not frm, level
        assert 2 <= len(to) <= 8, (level, to)
        fwd = [e for e in to if e.ep_id == b.ep.id and not e.is_reply]
        rev = [e for e in to if e.ep_id == a.ep.id and e.is_reply]
        assert fwd[0].tcp_flags & 0x02 and rev[0].tcp_flags & 0x02     # SYN at b, SYN-ACK back at a
        assert any(e.tcp_flags & 0x01 for e in fwd)                      # the closing FIN is reported
        assert sum(e.packets for e in fwd) >= EXCHANGES + 2
        # content as before: identities, verdict, endpoint, direction
        assert (fwd[0].src_identity, fwd[0].dst_identity) == (a.identity, b.identity)
        assert fwd[0].verdict == ev.VERDICT_FORWARDED and fwd[0].direction == ev.DIR_INGRESS


def test_policy_verdicts_and_drops_at_every_level(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}))
    for level in ("none", "low", "medium", "maximum"):
        datapath.set_monitor(MonitorConfig(level))
        events.drain()
        sport = _conversation(a, b, 8080, exchanges=2)
        s = a.socket(socket.SOCK_DGRAM)
        for _ in range(5):
            s.sendto(b"x", (b.ip, 9999))    # denied: no UDP allowed
        s.close()
        time.sleep(0.2)
        got = events.events()
        verdicts = [e for e in got if e.type == ev.EVENT_POLICY_VERDICT and e.sport == sport]
        drops = [e for e in got if e.type == ev.EVENT_DROP and e.proto == PROTO_UDP and e.saddr == a.ip]
        assert len(verdicts) == 1 and verdicts[0].verdict == ev.VERDICT_FORWARDED, level
        assert len(drops) == 5 and all(d.subtype == ev.DROP_POLICY for d in drops), level


def test_report_flags_and_interval(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    datapath.apply(sandbox.state(1, {}))

    def forward_traces(cfg: MonitorConfig, **kw) -> list:
        datapath.set_monitor(cfg)
        events.drain()
        sport = _conversation(a, b, 8080, **kw)
        return [e for e in _at(_traces(events, a, sport), ev.OBS_TO_ENDPOINT) if e.ep_id == b.ep.id]

    default = forward_traces(MonitorConfig("medium"))
    with_psh = forward_traces(MonitorConfig("medium", flags="syn,fin,rst,psh"))
    # the first PSH on the side is one more report; later PSHs are not new
    assert len(with_psh) == len(default) + 1
    assert not any(e.tcp_flags & 0x08 for e in default[:1]) and any(e.tcp_flags & 0x08 for e in with_psh)
    # an active connection is reported again once the interval has passed since the side's last trace
    periodic = forward_traces(MonitorConfig("medium", interval=0.2), exchanges=12, pause=0.1)
    assert len(periodic) > len(default)
    assert len(periodic) < 12


def test_new_connections_are_counted_and_budgeted(sandbox, datapath, events):
    """The datapath counts the connections it tracks by direction; the agent's CPU budget turns the count and its
    own CPU time into cores per 10k new connections/s, for `status` (a file) and metrics."""
    from ciliumctl.node import agent_budget

    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    datapath.apply(sandbox.state(1, {}))
    before = datapath.new_connections()
    agent_budget.budget_file().parent.mkdir(parents=True, exist_ok=True)    # the agent's run directory
    budget = agent_budget.CpuBudget(period=0)
    budget.tick()
    for _ in range(40):
        assert a.tcp_ok(b, 8080)
    time.sleep(0.1)
    budget.tick()
    after = datapath.new_connections()
    # each connection: once at a's egress (from_container), once at b's ingress (to_container)
    assert after["egress"] - before["egress"] == 40 and after["ingress"] - before["ingress"] == 40
    assert datapath.status()["new_connections"] == after
    cur = budget.current
    assert cur["new_connections_per_second"] == pytest.approx(40 / cur["window_seconds"], rel=0.05)
    if cur["new_connections_per_second"] >= agent_budget.MIN_RATE:
        assert cur["cores_per_10k_new_connections_per_second"] == pytest.approx(
            cur["agent_cpu_cores"] / (cur["new_connections_per_second"] / 10000), rel=0.01)
    else:
        assert cur["cores_per_10k_new_connections_per_second"] is None
    assert agent_budget.read() == cur
    lines = agent_budget.metric_lines(cur)
    assert f"ciliumctl_datapath_new_connections_per_second {cur['new_connections_per_second']}" in lines
    assert any(l.startswith("ciliumctl_agent_cpu_cores_per_10k_new_connections_per_second ") for l in lines)


def test_a_datapath_from_before_these_maps_is_upgraded_in_place(sandbox):
    """Pins of a datapath that predates monitor_config and ct_created, endpoints attached: outdated, not broken;
    upgrade() adds the maps and the default level, the endpoints keep their policy and traffic."""
    from ciliumctl.datapath import loader, maps

    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    policy = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}
    with loader.Datapath.open() as dp:
        for pod in sandbox.pods:
            dp.attach(pod.ep)
        dp.apply(sandbox.state(1, policy))
        dp.maps["state"].update(b"\0" * 4, maps.DP_STATE.pack(1, 999, 1, 0))   # built from other sources
    for name in maps.ADDED_MAPS:
        os.unlink(os.path.join(sandbox.pin_dir, name))
    compiles = build.compile_count
    with loader.Datapath.open() as old:
        assert build.compile_count == compiles and old.outdated      # opened as it is, not rebuilt
        assert old.monitor() is None and old.new_connections() == {}
        old.set_monitor(MonitorConfig("none"))                      # nothing to write to yet: no error
        assert a.tcp_ok(b, 8080)
        old.upgrade(sandbox.state(2, policy))
        assert not old.outdated and old.monitor() == MonitorConfig()
    assert all(os.path.exists(os.path.join(sandbox.pin_dir, n)) for n in maps.MAPS)
    with loader.Datapath.open() as dp:
        assert dp.status()["monitor_aggregation"]["level"] == "medium" and dp.status()["attached_endpoints"] == 3
        assert a.tcp_ok(b, 8080)
        assert dp.new_connections()["ingress"] >= 1
