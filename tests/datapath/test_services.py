"""Services through the real BPF programs: connections to a frontend reach a backend (policy decided on the
backend), every packet of a connection keeps its backend, replies come back from the frontend, ClientIP affinity,
terminating backends keep their connections and get no new ones, a service without backends fails at once with
Cilium's drop reason 158."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from support.two_nodes import peer_server

from ciliumctl.datapath import events as ev
from ciliumctl.policy.resolved import PROTO_TCP
from ciliumctl.services.model import Backend, Frontend, Service, ServiceTable

from .conftest import entry

pytestmark = pytest.mark.root

CIDR = "10.96.0.0/12"
VIP = "10.96.0.10"


def _table(*services: Service) -> ServiceTable:
    t = ServiceTable()
    for s in services:
        t = t.update(s, CIDR)
    return t


def _state(sandbox, revision, table, policies=None):
    return dataclasses.replace(sandbox.state(revision, policies or {}), services=table)


def _ask(client, ip, port, timeout=2.0):
    """Connect, read who answered; the socket's peer address as the client sees it (the frontend)."""
    s = client.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        who = s.recv(32).decode().split()[0]
        return who, s.getpeername()
    finally:
        s.close()


def test_clusterip_reaches_backends_and_replies_come_from_the_frontend(sandbox, datapath, events):
    a, b, c = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, c, 8080)
    svc = Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080), Backend(c.ip, 8080)))
    rep = datapath.apply(_state(sandbox, 1, _table(svc)))
    assert rep.entries["lb_services"] == 3
    seen = set()
    for _ in range(40):
        who, peer = _ask(a, VIP, 80)
        assert peer == (VIP, 80)       # the client only ever sees the frontend
        seen.add(who)
    assert seen == {b.ip, c.ip}        # random choice: both get connections
    # one connection keeps its backend for all its packets (the echo goes on answering on one socket)
    s = a.socket()
    s.settimeout(2)
    s.connect((VIP, 80))
    first = s.recv(32)
    for i in range(20):
        s.sendall(b"x%02d" % i)
        assert s.recv(16) == b"x%02d" % i
    s.close()
    assert first.decode().split()[0] in (b.ip, c.ip)
    # direct traffic to a backend is not translated
    assert _ask(a, b.ip, 8080)[0] == b.ip


def test_udp_service(sandbox, datapath):
    a, b, _ = sandbox.pods
    sandbox.udp_server(b, 5353)
    svc = Service(0, Frontend(VIP, 53, "udp"), backends=(Backend(b.ip, 5353),))
    datapath.apply(_state(sandbox, 1, _table(svc)))
    s = a.socket(socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"hello", (VIP, 53))
    data, addr = s.recvfrom(64)
    s.close()
    assert (data, addr) == (b"hello", (VIP, 53))


def test_session_affinity_client_ip(sandbox, datapath):
    a, b, c = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, c, 8080)
    svc = Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080), Backend(c.ip, 8080)), affinity="ClientIP")
    datapath.apply(_state(sandbox, 1, _table(svc)))
    got = {_ask(a, VIP, 80)[0] for _ in range(20)}
    assert len(got) == 1              # one client, one backend while the affinity holds
    # its backend terminating: the affinity gives way, new connections go to the other one
    held = got.pop()
    table = _table(dataclasses.replace(svc, backends=tuple(
        Backend(p.ip, 8080, "terminating" if p.ip == held else "active") for p in (b, c))))
    datapath.apply(_state(sandbox, 2, table))
    assert {_ask(a, VIP, 80)[0] for _ in range(10)} == {b.ip, c.ip} - {held}


def test_terminating_backend_keeps_its_connections_and_gets_no_new_ones(sandbox, datapath):
    a, b, c = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, c, 8080)
    table = _table(Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080), Backend(c.ip, 8080))))
    datapath.apply(_state(sandbox, 1, table))
    # open connections until one lands on b
    s = None
    for _ in range(50):
        s = a.socket()
        s.settimeout(2)
        s.connect((VIP, 80))
        if s.recv(32).decode().split()[0] == b.ip:
            break
        s.close()
    else:
        pytest.fail("no connection reached backend b")
    svc = table.services[1]
    table = table.update(dataclasses.replace(svc, backends=(Backend(b.ip, 8080, "terminating"),
                                                            Backend(c.ip, 8080))), CIDR)
    datapath.apply(_state(sandbox, 2, table))
    s.sendall(b"still")
    assert s.recv(16) == b"still"     # the open connection keeps its terminating backend
    s.close()
    assert {_ask(a, VIP, 80)[0] for _ in range(20)} == {c.ip}


def test_service_without_backends_fails_at_once_with_drop_158(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    datapath.apply(_state(sandbox, 1, _table(Service(0, Frontend(VIP, 80)))))
    events.drain()
    s = a.socket()
    s.settimeout(5)
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        s.connect((VIP, 80))
    s.close()
    # refused by the ICMP answer, not by waiting: well inside the first SYN retransmission (1 s)
    assert time.monotonic() - t0 < 0.9
    time.sleep(0.1)
    drops = [e for e in events.events() if e.type == ev.EVENT_DROP]
    assert drops and drops[0].subtype == 158 and drops[0].daddr == VIP and drops[0].dport == 80
    assert drops[0].ep_id == a.ep.id and drops[0].svc_id == 1     # the service, for the flow (Hubble's names)
    assert {d["reason"] for d in datapath.drop_counts()} == {158}


def test_policy_is_decided_on_the_backend(sandbox, datapath, events):
    a, b, c = sandbox.pods
    peer_server(sandbox, b, 8080)
    svc = Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080),))
    # b lets a in on 8080 only; c is not allowed: through the service as directly
    policies = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}
    datapath.apply(_state(sandbox, 1, _table(svc), policies))
    events.drain()
    assert _ask(a, VIP, 80)[0] == b.ip
    with pytest.raises(OSError):
        _ask(c, VIP, 80, timeout=0.5)
    time.sleep(0.1)
    evts = events.events()
    ok = [e for e in evts if e.type == ev.EVENT_POLICY_VERDICT and e.saddr == a.ip]
    assert ok and ok[0].daddr == b.ip and ok[0].dport == 8080 and ok[0].verdict == ev.VERDICT_FORWARDED
    # the backend's end sees a packet to the backend; the client's side marked it: its events name the service
    assert ok[0].svc_id == 1
    denied = [e for e in evts if e.type == ev.EVENT_DROP and e.saddr == c.ip]
    assert denied and denied[0].daddr == b.ip and denied[0].dport == 8080 and denied[0].subtype == ev.DROP_POLICY
    assert {e.svc_id for e in denied} == {1}       # the retransmitted SYNs too (the marker is renewed by each)
    # replies reach the client from the frontend (flows name the service by that address): no id
    replies = [e for e in evts if e.type == ev.EVENT_TRACE and e.is_reply and e.daddr == a.ip]
    assert replies and all(e.saddr == VIP and e.sport == 80 and e.svc_id == 0 for e in replies)
    # egress policy of the client sees the backend's identity and port too
    policies[a.ep.id] = (False, [], True, [entry(b.identity, PROTO_TCP, 8080, section="egress")])
    datapath.apply(_state(sandbox, 2, _table(svc), policies))
    events.drain()
    assert _ask(a, VIP, 80)[0] == b.ip
    # the client's verdict is on the translated packet: its event names the service (flows' destination_service)
    assert _ask(a, b.ip, 8080)[0] == b.ip       # direct: none
    time.sleep(0.1)
    evts = events.events()
    mine = [e for e in evts if e.type == ev.EVENT_POLICY_VERDICT and e.saddr == a.ip and e.direction == 2]
    assert [(e.daddr, e.dport, e.svc_id) for e in mine] == [(b.ip, 8080, 1), (b.ip, 8080, 0)]
    at_b = [e for e in evts if e.type == ev.EVENT_POLICY_VERDICT and e.saddr == a.ip and e.direction == 1]
    assert [e.svc_id for e in at_b] == [1, 0]      # at the backend: the service's connection, then the direct one


NODE_IP, OUTSIDE_IP = "192.168.77.1", "192.168.77.2"


@pytest.fixture
def outside(sandbox, datapath):
    """A host outside the node: a namespace `<prefix>x` on a veth whose node side is the node's device
    (192.168.77.1) with the NodePort programs on it. Removed with the sandbox (same prefix)."""
    from support.pods import Pod
    from support.shell import sh

    from ciliumctl.endpoints.model import Endpoint

    ns, dev = f"{sandbox.prefix}x", f"{sandbox.prefix}d"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", sandbox.node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", sandbox.node, "addr", "add", f"{NODE_IP}/24", "dev", dev)
    sh("ip", "-n", sandbox.node, "link", "set", dev, "up")
    sh("ip", "-n", ns, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "route", "add", "10.11.0.0/16", "via", NODE_IP)
    datapath.attach_device(dev)
    return Pod(Endpoint(id=0, name="outside", ipv4=OUTSIDE_IP), ns)


def test_nodeport_from_outside_the_node(sandbox, datapath, outside, events):
    a, b, c = sandbox.pods
    peer_server(sandbox, b, 8080)
    table = ServiceTable().update(Service(0, Frontend(NODE_IP, 30080), "NodePort", (Backend(b.ip, 8080),)), CIDR,
                                  frozenset({NODE_IP}))
    table = table.update(Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080),)), CIDR)
    table = table.update(Service(0, Frontend(NODE_IP, 30081), "NodePort"), CIDR, frozenset({NODE_IP}))
    datapath.apply(_state(sandbox, 1, table))
    events.drain()
    for _ in range(3):
        who, peer = _ask(outside, NODE_IP, 30080)
        assert (who, peer) == (b.ip, (NODE_IP, 30080))
    assert _ask(a, NODE_IP, 30080)[0] == b.ip          # from an endpoint of the node too
    with pytest.raises(OSError):
        _ask(outside, VIP, 80, timeout=0.5)             # ClusterIPs are not reachable from outside
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):         # a NodePort without backends: refused at once
        _ask(outside, NODE_IP, 30081, timeout=5)
    assert time.monotonic() - t0 < 0.9
    time.sleep(0.1)
    drops = [e for e in events.events() if e.type == ev.EVENT_DROP and e.subtype == 158]
    assert drops and drops[0].saddr == OUTSIDE_IP and drops[0].dport == 30081


def test_a_refused_update_leaves_the_old_services_in_force_and_stored(sandbox, datapath):
    """More backends than the maps hold: `service update` fails with one line, the store and the kernel keep the
    services that were in force (node.services.ops through the one reconcile)."""
    from support.shell import sh

    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.node.services import ops as service_ops
    from ciliumctl.services import store

    a, b, _ = sandbox.pods
    peer_server(sandbox, b, 8080)
    sh("ip", "-n", sandbox.node, "route", "add", "10.64.0.0/10", "dev", "lo")   # the many backends are reachable
    service_ops.update_service(Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080),)))
    assert _ask(a, VIP, 80)[0] == b.ip
    many = tuple(Backend(f"10.{64 + i // 65536}.{(i >> 8) & 255}.{i & 255}", 80) for i in range(65535))
    service_ops.update_service(Service(0, Frontend("10.96.1.1", 80), backends=many))
    service_ops.update_service(Service(0, Frontend("10.96.1.2", 80), backends=many))   # 131071 backends now
    before = store.load()
    with pytest.raises(EnvironmentProblem) as err:
        service_ops.update_service(Service(0, Frontend("10.96.1.3", 80), backends=many[:100]))
    assert "map is full" in str(err.value) and "\n" not in str(err.value)
    assert store.load() == before
    assert _ask(a, VIP, 80)[0] == b.ip


def test_a_client_that_is_its_own_backend(sandbox, datapath, events):
    """Hairpin: the connection reaches the client's own server (from 169.254.42.1, Cilium's service loopback
    address, not from its own address, which its stack would drop) and replies come back from the frontend."""
    a, b, _ = sandbox.pods
    peer_server(sandbox, a, 8080)
    svc = Service(0, Frontend(VIP, 80), backends=(Backend(a.ip, 8080),))
    datapath.apply(_state(sandbox, 1, _table(svc)))
    for _ in range(3):
        s = a.socket()
        s.settimeout(2)
        s.connect((VIP, 80))
        assert s.recv(32).decode().split()[0] == a.ip and s.getpeername() == (VIP, 80)
        s.sendall(b"again")
        assert s.recv(16) == b"again"
        s.close()
    assert _ask(b, VIP, 80)[0] == a.ip          # other clients as before


def test_a_long_lived_datapath_writes_services_by_difference(sandbox, datapath):
    """What a long-lived Datapath (the agent's) writes by difference is exactly what a full write would have
    written, revision after revision, also when another process applied in between (then it reads back)."""
    from ciliumctl.datapath import maps
    from ciliumctl.datapath.loader import Datapath
    from ciliumctl.datapath.servicemap import compile_backends, compile_services

    a, b, c = sandbox.pods

    def check(table):
        active = datapath.status()["active_slot"]
        held = {k: v for k, v in datapath.maps["lb_services"].items().items() if maps.key_slot("lb_services", k)
                == active}
        assert held == compile_services(table, active)
        assert datapath.maps["lb_backends"].items() == compile_backends(table)

    t = ServiceTable()
    for i in range(1, 21):
        t = t.update(Service(0, Frontend(f"10.96.1.{i}", 80), backends=(Backend(b.ip, 8080),)), CIDR)
    rev = 1
    for step in range(6):
        if step == 3:      # another process applies: this Datapath's record no longer describes the maps
            other = Datapath.open()
            try:
                t = t.update(Service(0, Frontend("10.96.1.9", 80), backends=(Backend(c.ip, 8080),)), CIDR)
                other.apply(_state(sandbox, rev, t))
            finally:
                other.close()
            rev += 1
            check(t)
        t = t.update(Service(0, Frontend("10.96.1.5", 80), backends=tuple(
            Backend(p.ip, 8000 + j) for j in range(step + 1) for p in (b, c))), CIDR)
        if step == 4:
            t, _ = t.delete("10.96.1.7:80")
        datapath.apply(_state(sandbox, rev, t))
        rev += 1
        check(t)
        assert datapath.service_maps.current(datapath.status()["active_slot"], datapath.revision)
    # translation works on what was written that way
    peer_server(sandbox, b, 8000)
    peer_server(sandbox, c, 8000)
    t = t.update(Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8000), Backend(c.ip, 8000))), CIDR)
    datapath.apply(_state(sandbox, rev, t))
    assert {_ask(a, VIP, 80)[0] for _ in range(30)} == {b.ip, c.ip}



@pytest.fixture(scope="session")
def loadgen(tmp_path_factory) -> str:
    """The benchmarks' C load generator (benchmarks/loadgen.c), built with the machine's cc: Python cannot make
    connections fast enough to fill conntrack the way traffic does."""
    import shutil
    import subprocess
    from pathlib import Path

    cc = shutil.which("cc")
    assert cc, "needs a C compiler (cc)"
    out = str(tmp_path_factory.mktemp("loadgen") / "loadgen")
    src = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.c"
    subprocess.run([cc, "-O2", "-pthread", "-o", out, str(src)], check=True)
    return out


def _crr(loadgen, pod, ip, port, seconds) -> dict[str, int]:
    """New connections from `pod` for `seconds` as fast as four threads go: how many, failed, retransmitted."""
    import subprocess

    res = subprocess.run(["ip", "netns", "exec", pod.ns, loadgen, "crr", ip, str(port), str(seconds), "4"],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    words = res.stderr.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def test_connections_keep_working_once_conntrack_is_full(sandbox, datapath, loadgen):
    """Conntrack (an LRU map) fills with closed connections' entries, which only eviction removes: new connections
    through a service must go on keeping theirs (a plain hash map would refuse them once full). The load of a
    busy machine made the kernel's common LRU evict entries another CPU had just made (a SYN's entry gone when its
    SYN-ACK came back: a reset and a SYN retransmission), hence per-CPU LRU lists (bpf/lib/maps.h); on a quiet
    machine this test passes with either."""
    import subprocess

    a, b, _ = sandbox.pods
    server = subprocess.Popen(["ip", "netns", "exec", b.ns, loadgen, "server", "8080", "2"], stdout=subprocess.PIPE,
                              text=True)
    sandbox.closers.append(server.kill)
    assert server.stdout.readline().strip() == "ready"
    # the client pod's own namespace: reuse TIME_WAIT ports, or it runs out of them long before conntrack fills
    subprocess.run(["ip", "netns", "exec", a.ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
                    "net.ipv4.ip_local_port_range=1024 65000"], check=True)
    datapath.apply(_state(sandbox, 1, _table(Service(0, Frontend(VIP, 80), backends=(Backend(b.ip, 8080),)))))
    ct = datapath.maps["conntrack"]
    made, failed, retransmitted = 0, 0, 0
    for _ in range(20):                   # until conntrack has been full for a while (2 entries per connection)
        got = _crr(loadgen, a, VIP, 80, 2)
        made, failed, retransmitted = (made + got["connections"], failed + got["failed"],
                                       retransmitted + got["retransmitted"])
        if made * 2 > ct.max_entries * 3 or retransmitted:
            break
    assert (failed, retransmitted) == (0, 0), f"of {made} connections {failed} failed, {retransmitted} lost a packet"
    assert made * 2 > ct.max_entries * 1.5, f"only {made} connections were made"
