"""The agent end to end on a real BPF ring buffer (the tests' own emitter pinned where the datapath pins its
ring): events become enriched flows in GetFlows, lost events are counted and shown, metrics are served, the
background agent starts/stops, and `observe --follow` reconnects across an agent restart without losing flows."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.pb.observer import observer_pb2_grpc
from ciliumctl.node.agent import Agent, AgentOptions

from .flowdata import write_endpoint

pytestmark = pytest.mark.root
CLI = [sys.executable, "-m", "ciliumctl.cli.main"]


def aton(s):
    return socket.inet_aton(s)


@pytest.fixture
def node(node_dirs, bpffs_dir):
    state, run = node_dirs
    write_endpoint(state, 12, "tiefighter", "default", {"org": "empire"}, "10.200.0.12", 300)
    write_endpoint(state, 13, "deathstar", "default", {"org": "empire", "class": "deathstar"}, "10.200.0.13", 301)
    (state / "datapath" / "cookies.json").write_text(json.dumps({"revision": 5, "cookies": {"7": [
        {"kind": "CiliumNetworkPolicy", "name": "rule1", "namespace": "default", "section": "ingress",
         "index": 0}]}}))
    return state, run


def start_agent(**kw):
    a = Agent(AgentOptions(metrics_listen="127.0.0.1:0", serve_cni=False, **kw))
    a.start()
    return a


def flows(agent, **req):
    with grpc.insecure_channel(f"unix://{agent.socket_path}") as ch:
        return list(observer_pb2_grpc.ObserverStub(ch).GetFlows(opb.GetFlowsRequest(**req), timeout=10))


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_events_become_enriched_flows(node, emitter):
    state, _ = node
    agent = start_agent()
    try:
        emitter.set_template(type=5, verdict=1, direction=1, proto=6, tcp_flags=2, sport=40000, dport=80,
                             saddr=aton("10.200.0.12"), daddr=aton("10.200.0.13"), src_identity=300,
                             dst_identity=301, rule_cookie=7, match_type=2, ifindex=1)
        emitter.emit(3)
        got = wait_for(lambda: (lambda r: r if len(r) == 3 else None)(flows(agent, number=10)))
        f = got[0].flow
        assert f.verdict == pb.FORWARDED and f.traffic_direction == pb.INGRESS
        assert f.event_type.type == 5 and f.policy_match_type == 2
        assert (f.l4.TCP.source_port, f.l4.TCP.destination_port, f.l4.TCP.flags.SYN) == (40000, 80, True)
        assert (f.source.pod_name, f.source.namespace, f.source.ID, f.source.identity) == \
            ("tiefighter", "default", 12, 300)
        assert "k8s:class=deathstar" in f.destination.labels
        assert [(p.name, p.namespace, p.kind, p.revision) for p in f.ingress_allowed_by] == \
            [("rule1", "default", "CiliumNetworkPolicy", 5)]
        assert f.node_name == "node-a" and f.interface.index == 1 and f.interface.name == "lo"
        assert abs(f.time.ToNanoseconds() - time.time_ns()) < 60 * 10**9   # monotonic stamp -> wall clock

        # a new endpoint appears in the registry: later flows see it, earlier ones keep what was known then
        emitter.set_template(type=1, subtype=133, verdict=2, direction=1, proto=17, sport=5353, dport=53,
                             saddr=aton("10.200.0.14"), daddr=aton("10.200.0.13"), src_identity=302,
                             dst_identity=301)
        emitter.emit(1)
        wait_for(lambda: len(flows(agent)) == 4)
        write_endpoint(state, 14, "xwing", "default", {"org": "alliance"}, "10.200.0.14", 302)
        time.sleep(0.6)  # past the agent's metadata re-check interval
        emitter.emit(1)
        got = wait_for(lambda: (lambda r: r if len(r) == 5 else None)(flows(agent)))
        assert [r.flow.source.pod_name for r in got[3:]] == ["", "xwing"]
        assert got[4].flow.drop_reason_desc == pb.POLICY_DENIED and got[4].flow.verdict == pb.DROPPED

        body = urllib.request.urlopen(f"http://{agent.metrics.address}/metrics", timeout=5).read().decode()
        assert 'hubble_flows_processed_total{type="PolicyVerdict",subtype="",verdict="FORWARDED"} 3' in body
        assert 'hubble_drop_total{reason="POLICY_DENIED",protocol="UDP"} 2' in body
        assert 'hubble_policy_verdicts_total{direction="ingress",match="l3-l4",action="forwarded"} 3' in body
        # the agent's CPU budget (no datapath connection counter here: no rate, so no per-10k figure)
        assert "\nciliumctl_agent_cpu_cores " in body
        assert "\nciliumctl_agent_cpu_cores_per_10k_new_connections_per_second NaN\n" in body
    finally:
        agent.shutdown()


def test_lost_events_counted_and_shown(node, bpffs_dir, monkeypatch):
    from emitter import Emitter

    small = Emitter(bpffs_dir, ring_pages=1)      # 4 KiB: 64 records
    try:
        small.emit(1000)                           # no agent yet: the ring fills, the rest is lost
        lost_before = small.lost()
        assert lost_before > 900
        agent = start_agent()
        try:
            kept = 1000 - lost_before                                        # what fitted in the ring
            got = wait_for(lambda: (lambda r: r if len(r) == kept + 1 else None)(flows(agent)))
            assert got[0].lost_events.num_events_lost == lost_before       # reported once, at start
            assert got[0].lost_events.source == pb.PERF_EVENT_RING_BUFFER
            assert all(r.HasField("flow") for r in got[1:])
            small.emit(500)                        # one syscall: faster than any reader can drain
            wait_for(lambda: agent.store.lost_in_kernel == small.lost())
            lost = [r.lost_events.num_events_lost for r in flows(agent) if r.HasField("lost_events")]
            assert sum(lost) == small.lost()
            body = urllib.request.urlopen(f"http://{agent.metrics.address}/metrics", timeout=5).read().decode()
            assert f'hubble_lost_events_total{{source="perf_event_ring_buffer"}} {small.lost()}' in body
        finally:
            agent.shutdown()
    finally:
        small.close()


def _env():
    return dict(os.environ)


def _cli(*args, timeout=30):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=timeout)


def test_background_agent_and_observe_follow_reconnects(node, emitter, node_dirs, tmp_path):
    _, run = node_dirs
    emitter.set_template(type=4, subtype=5, verdict=1, direction=2, proto=17, sport=1111, dport=53,
                         saddr=aton("10.200.0.12"), daddr=aton("10.200.0.13"), src_identity=300,
                         dst_identity=301)
    r = _cli("agent", "start", "--metrics-listen", "127.0.0.1:0")
    assert r.returncode == 0, r.stderr
    assert (run / "agent.pid").exists() and (run / "agent.sock").exists()    # the CNI socket is mounted
    out_path, err_path = tmp_path / "observe.out", tmp_path / "observe.err"
    observer = None

    def printed():
        return [json.loads(line)["flow"] for line in out_path.read_text().splitlines()]

    try:
        st = _cli("agent", "status", "-o", "json")
        assert st.returncode == 0 and json.loads(st.stdout)["running"] is True
        assert _cli("agent", "start").returncode == 0          # idempotent
        with open(out_path, "w") as out, open(err_path, "w") as err:
            observer = subprocess.Popen([*CLI, "observe", "-f", "--last", "100", "-o", "json"], stdout=out,
                                        stderr=err, env=_env())
        emitter.emit(5)                                        # 0..4 while the agent runs
        wait_for(lambda: len(printed()) == 5, timeout=20)
        r = _cli("agent", "stop")
        assert r.returncode == 0 and "stopped" in r.stdout
        assert json.loads(_cli("agent", "status", "-o", "json").stdout)["running"] is False
        emitter.emit(5)                                        # 5..9: the kernel ring keeps them meanwhile
        assert _cli("agent", "start", "--metrics-listen", "127.0.0.1:0").returncode == 0
        emitter.emit(5)                                        # 10..14 on the new agent
        wait_for(lambda: len(printed()) >= 15, timeout=20)
        time.sleep(0.5)                                        # nothing more (no duplicates) arrives
    finally:
        if observer is not None:
            observer.send_signal(signal.SIGINT)
            observer.wait(timeout=10)
        _cli("agent", "stop")
    flows_seen = printed()
    assert all(f["source"]["pod_name"] == "tiefighter" for f in flows_seen)
    assert len(flows_seen) == 15 and len({f["time"] for f in flows_seen}) == 15, flows_seen  # all, once each
    assert "reconnecting" in err_path.read_text()


def test_install_step_starts_and_uninstall_stops_the_agent(node_dirs, bpffs_dir):
    from ciliumctl.node import agent as agent_mod
    from ciliumctl.node.install import Options

    step = agent_mod.install_step()
    assert step.check(Options()) is not None                        # not running: install would start it
    detail = step.run(Options(extra={"agent_args": ["--no-cni", "--metrics-listen", "127.0.0.1:0"]}))
    try:
        pid = agent_mod.running_pid()
        assert pid and f"pid {pid}" in detail
        assert step.check(Options()) is None                        # idempotent: nothing to do now
        assert agent_mod.status()["seen_flows"] == 0
    finally:
        assert step.undo() == f"agent stopped (pid {pid})"
    assert agent_mod.running_pid() is None and step.undo() is None


def test_agent_follows_a_reinstalled_datapath(node, bpffs_dir):
    from emitter import Emitter

    first = Emitter(bpffs_dir, ring_pages=4)
    agent = start_agent()
    try:
        first.set_template(type=4, proto=17, sport=1, dport=53)
        first.emit(2)
        wait_for(lambda: len(flows(agent)) == 2)
        first.close()                                   # uninstall: pins gone
        second = Emitter(bpffs_dir, ring_pages=4)       # install again: new maps at the same paths
        try:
            second.set_template(type=4, proto=17, sport=2, dport=53)
            new_pin = os.stat(bpffs_dir / "events").st_ino
            wait_for(lambda: agent.events_pin_inode == new_pin)   # the agent noticed and opened the new ring
            second.emit(3)
            got = wait_for(lambda: (lambda r: r if len(r) == 5 else None)(flows(agent)))
            assert [r.flow.l4.UDP.source_port for r in got] == [1, 1, 2, 2, 2]
        finally:
            second.close()
    finally:
        agent.shutdown()


def test_cluster_mode_starts_and_stops_the_cluster_sync(node_dirs, monkeypatch):
    """In cluster mode the agent hands the node to ciliumctl.cluster.node_sync (tested on a real API server in
    tests/k8s/test_api_node_sync.py); here: that the agent starts it with its node name only in cluster mode, and
    stops it."""
    from ciliumctl.node import cluster_sync as node_sync
    from ciliumctl.node.services import devices

    calls, stopped, device_calls = [], [], []

    class Running:
        kube = "the cluster's client"

        def stop(self):
            stopped.append(True)

    monkeypatch.setattr(node_sync, "start_for_agent", lambda *a: calls.append(a) or Running())
    # the DaemonSet's agent puts NodePort on its node's devices (tested on a real cluster in
    # tests/k8s/test_cluster_e2e.py); here only that it does so in-cluster, and asks about an uninstall at stop
    monkeypatch.setattr(devices, "start", lambda: device_calls.append("start") or ["eth0"])
    monkeypatch.setattr(devices, "stop", lambda kube, ns: device_calls.append(("stop", kube, ns)))
    monkeypatch.setenv("CILIUMCTL_NAMESPACE", "ciliumctl-system")
    a = start_agent()
    a.shutdown()
    assert calls == [] and device_calls == []             # node mode
    monkeypatch.setenv("CILIUMCTL_CLUSTER", "in-cluster")
    a = start_agent(context="kind")
    assert calls == [(None, "kind", "node-a")] and a.cluster is not None and a.devices == ["eth0"]
    a.shutdown()
    assert stopped == [True]
    assert device_calls == ["start", ("stop", "the cluster's client", "ciliumctl-system")]
