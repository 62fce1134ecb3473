"""L7 HTTP policy through Debian's HAProxy (node/http_proxy/haproxy.py), with real packets: the datapath redirects the
connections of a port with rules.http to HAProxy in the sandbox node's namespace (bpf/lib/proxy.h), HAProxy
decides each request from the configuration made from the policy and the identity map. Allowed requests reach
the server unchanged (keep-alive, chunked, large bodies), denied ones get 403 "Access denied"."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import signal
import time

import pytest
from support.httpd import HttpServer, PodHTTPConnection

from ciliumctl.datapath import proxyroute
from ciliumctl.node.http_proxy import config as haproxy_config
from ciliumctl.node.http_proxy.haproxy import HAProxy
from ciliumctl.policy import model
from ciliumctl.policy.resolved import PROTO_TCP, Direction, HTTPAllow, PortRange, RuleOrigin

from .conftest import entry

pytestmark = pytest.mark.root
PORT = 15080
LANDING = model.HTTPRule(method="POST", path="/v1/request-landing")
ORIGIN = (RuleOrigin("CiliumNetworkPolicy", "rule1", "default", "ingress", 0),)


@pytest.fixture
def l7(sandbox, datapath, tmp_path):
    """(apply, proxy): apply(ingress rules of b for a, egress rules of a toward b) programs datapath and proxy."""
    a, b, _ = sandbox.pods
    proxyroute.ensure()
    proxy = HAProxy(tmp_path / "haproxy", PORT)
    srv = HttpServer(b.ns, 80)

    def apply(revision=1, ingress=None, egress=None, ipcache=None):
        pol = {}
        if ingress is not None:
            pol[b.ep.id] = (True, [entry(a.identity, PROTO_TCP, 80)], False, [])
        if egress is not None:
            pol[a.ep.id] = (False, [], True, [entry(b.identity, PROTO_TCP, 80, section="egress")])
        state = sandbox.state(revision, pol, ipcache=ipcache)
        if ingress is not None:
            state.http[(b.ep.id, int(Direction.INGRESS))] = [
                HTTPAllow(a.identity, PortRange(PROTO_TCP, 80, 80), tuple(ingress), ORIGIN)]
        if egress is not None:
            state.http[(a.ep.id, int(Direction.EGRESS))] = [
                HTTPAllow(b.identity, PortRange(PROTO_TCP, 80, 80), tuple(egress), ORIGIN)]
        haproxy_config.redirect(state, PORT)
        proxy.apply(state)
        datapath.apply(state)
        return state

    yield apply, proxy
    srv.close()
    proxy.stop()
    proxyroute.remove()


def _conn(pod, ip, port=80) -> http.client.HTTPConnection:
    c = PodHTTPConnection(pod, ip, port, timeout=5)
    c.connect()
    return c


def _req(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def test_ingress_http_rules_landing_allowed_exhaust_port_denied(sandbox, l7):
    apply, proxy = l7
    a, b, c = sandbox.pods
    apply(ingress=[LANDING, model.HTTPRule(method="GET", path="/v1/.*")])
    conn = _conn(a, b.ip)
    status, body = _req(conn, "POST", "/v1/request-landing", b"land")
    assert status == 200
    got = json.loads(body)
    # transparent: the server sees the client's own address, the request as sent
    assert got["client"][0] == a.ip and got["method"] == "POST" and got["path"] == "/v1/request-landing"
    assert got["len"] == 4
    status, body = _req(_conn(a, b.ip), "PUT", "/v1/exhaust-port", b"boom")
    assert (status, body) == (403, b"Access denied\r\n")
    # the path regex is anchored: a longer path is another path
    assert _req(_conn(a, b.ip), "POST", "/v1/request-landing/x", b"")[0] == 403
    assert _req(_conn(a, b.ip), "GET", "/v1/anything")[0] == 200
    # c has no L4 allow at all: dropped by the datapath, never reaches the proxy
    with pytest.raises(OSError):
        _conn(c, b.ip).sock.recv(1)


def test_keep_alive_chunked_and_large_bodies_pass_unchanged(sandbox, l7):
    apply, _ = l7
    a, b, _ = sandbox.pods
    apply(ingress=[LANDING])
    conn = _conn(a, b.ip)
    ports = set()
    for n in (1, 1000, 8 << 20):              # one keep-alive connection: small, medium, an 8 MiB upload
        payload = os.urandom(n)
        status, body = _req(conn, "POST", "/v1/request-landing", payload)
        got = json.loads(body)
        assert status == 200 and got["len"] == n and got["sha256"] == hashlib.sha256(payload).hexdigest()
        ports.add(got["client"][1])
    assert len(ports) == 1                    # HAProxy kept one server connection for the client's one

    chunks = [os.urandom(65536) for _ in range(16)]
    conn.request("POST", "/v1/request-landing", body=iter(chunks), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    got = json.loads(r.read())
    assert r.status == 200 and got["len"] == 16 * 65536
    assert got["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_egress_http_rules_with_host_and_headers(sandbox, l7):
    apply, _ = l7
    a, b, _ = sandbox.pods
    apply(egress=[model.HTTPRule(method="GET", path="/public", host="deathstar(\\.empire)?",
                                 headers=("X-Has-Force: True",)),
                  model.HTTPRule(method="GET", path="/status", header_matches=(
                      model.HTTPHeaderMatch("X-Token", "abc"),))])
    ok_headers = {"Host": "deathstar.empire", "X-Has-Force": "True"}
    assert _req(_conn(a, b.ip), "GET", "/public", headers=ok_headers)[0] == 200
    assert _req(_conn(a, b.ip), "GET", "/public", headers={**ok_headers, "X-Has-Force": "False"})[0] == 403
    assert _req(_conn(a, b.ip), "GET", "/public", headers={**ok_headers, "Host": "rebel.base"})[0] == 403
    assert _req(_conn(a, b.ip), "GET", "/status", headers={"X-Token": "abc"})[0] == 200
    assert _req(_conn(a, b.ip), "GET", "/status", headers={"X-Token": "abd"})[0] == 403


def test_identity_map_updates_without_reload_and_crash_restart(sandbox, l7):
    apply, proxy = l7
    a, b, _ = sandbox.pods
    apply(ingress=[LANDING])
    worker = proxy.worker_pid()
    assert _req(_conn(a, b.ip), "POST", "/v1/request-landing", b"")[0] == 200
    # a's address now carries another identity (the datapath still allows it at L4 by the new entry below):
    # only the map changes, through the runtime API, and the rules for a's old identity no longer apply
    ipc = {**sandbox.ipcache(), f"{a.ip}/32": 4242}
    state = apply(revision=2, ingress=[LANDING], ipcache=ipc)
    assert proxy.worker_pid() == worker                      # no reload
    assert f"{a.ip} 4242" in proxy.command(f"show map {proxy.paths.ipcache_map}")
    assert state.ipcache[f"{a.ip}/32"] == 4242
    # the proxy dies: the supervisor brings it back with the same rules
    apply(revision=3, ingress=[LANDING])
    os.killpg(proxy.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while proxy.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.restarts == 1
    while not proxy.admin_ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _req(_conn(a, b.ip), "POST", "/v1/request-landing", b"")[0] == 200
    assert _req(_conn(a, b.ip), "PUT", "/v1/exhaust-port", b"")[0] == 403


def test_a_new_peer_identity_for_the_same_rules_changes_no_configuration(sandbox, datapath, l7):
    """The rules are the configuration, whom they concern is data: c's identity joins the rule through the runtime
    API (add acl), the worker that serves a's kept-alive connection stays."""
    apply, proxy = l7
    a, b, c = sandbox.pods
    apply(ingress=[LANDING])
    worker, config = proxy.worker_pid(), proxy.config
    kept = _conn(a, b.ip)
    assert _req(kept, "POST", "/v1/request-landing", b"")[0] == 200
    state = sandbox.state(2, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 80), entry(c.identity, PROTO_TCP, 80)],
                                        False, [])})
    state.http[(b.ep.id, int(Direction.INGRESS))] = [
        HTTPAllow(p.identity, PortRange(PROTO_TCP, 80, 80), (LANDING,), ORIGIN) for p in (a, c)]
    haproxy_config.redirect(state, PORT)
    proxy.apply(state)
    datapath.apply(state)
    assert proxy.config == config and proxy.worker_pid() == worker          # no reload
    assert _req(_conn(c, b.ip), "POST", "/v1/request-landing", b"")[0] == 200
    assert _req(_conn(c, b.ip), "PUT", "/v1/exhaust-port", b"") == (403, b"Access denied\r\n")
    assert _req(kept, "POST", "/v1/request-landing", b"")[0] == 200          # the same connection goes on


def test_proxy_down_refuses_redirected_connections(sandbox, l7):
    apply, proxy = l7
    a, b, _ = sandbox.pods
    apply(ingress=[LANDING])
    proxy.stop()                              # no proxy, no supervisor: nothing listens on the proxy port
    s = a.socket()
    s.settimeout(3)
    with s, pytest.raises(OSError) as err:
        s.connect((b.ip, 80))
        s.sendall(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(100)                # (never reached: the connection is not passed to b unfiltered)
    # refused: the first SYN is dropped where it was bounced (to b's side), its retransmission is refused where a
    # sent it (a's conntrack entry carries the proxy port since the first)
    assert err.value.errno == errno.ECONNREFUSED
    apply(revision=2, ingress=[LANDING])      # started again by the next apply
    assert _req(_conn(a, b.ip), "POST", "/v1/request-landing", b"")[0] == 200


def test_unexpressible_rule_changes_nothing(sandbox, l7):
    apply, proxy = l7
    a, b, _ = sandbox.pods
    apply(ingress=[LANDING])
    before = proxy.config
    with pytest.raises(haproxy_config.Unexpressible, match="quote"):
        apply(revision=2, ingress=[model.HTTPRule(path="/it's")])
    assert proxy.config == before
    assert _req(_conn(a, b.ip), "POST", "/v1/request-landing", b"")[0] == 200


def test_proxy_port_taken_is_one_clear_line(sandbox, tmp_path):
    import socket

    from support.netns import in_netns

    from ciliumctl.base.errors import EnvironmentProblem

    a, b, _ = sandbox.pods
    with in_netns(sandbox.node):
        taken = socket.socket()
    taken.bind(("0.0.0.0", PORT))
    taken.listen(1)
    state = sandbox.state(1, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 80)], False, [])})
    state.http[(b.ep.id, int(Direction.INGRESS))] = [HTTPAllow(a.identity, PortRange(PROTO_TCP, 80, 80), (LANDING,))]
    proxy = HAProxy(tmp_path / "haproxy", PORT)
    try:
        with pytest.raises(EnvironmentProblem, match=f"port {PORT} is already taken") as err:
            proxy.apply(state)
        assert "\n" not in str(err.value)
    finally:
        proxy.stop()
        taken.close()


def test_a_haproxy_left_by_a_dead_agent_is_replaced(sandbox, l7, tmp_path):
    apply, old = l7
    a, b, _ = sandbox.pods
    state = apply(ingress=[LANDING])
    left = old.proc
    old._stop.set()                                  # the agent died: nobody supervises its HAProxy any more
    old._watch.join(2)
    new = HAProxy(tmp_path / "haproxy", PORT)      # the next agent: same run dir, the old HAProxy still runs
    try:
        new.apply(state)
        assert left.wait(5) is not None              # ended, its port taken over
        assert _req(_conn(a, b.ip), "POST", "/v1/request-landing", b"")[0] == 200
        assert _req(_conn(a, b.ip), "PUT", "/v1/exhaust-port", b"")[0] == 403
    finally:
        new.stop()
        old.proc = None


def test_egress_rules_to_the_world_connect_from_the_nodes_address(sandbox, datapath, l7):
    """c stands for a server outside the cluster (not in the ipcache: world). HAProxy connects to it from the node's
    own address (a reply to a pod's address from outside would be forwarded to the pod, not to the proxy)."""
    from support.shell import sh

    _, proxy = l7
    a, _, c = sandbox.pods
    sh("ip", "-n", sandbox.node, "addr", "add", "10.11.255.1/32", "dev", "lo")    # the node's address
    srv = HttpServer(c.ns, 80)
    sandbox.closers.append(srv.close)
    ipcache = {k: v for k, v in sandbox.ipcache().items() if k != f"{c.ip}/32"}
    state = sandbox.state(5, {a.ep.id: (False, [], True, [entry(2, PROTO_TCP, 80, section="egress")])},
                          ipcache=ipcache)
    state.http[(a.ep.id, int(Direction.EGRESS))] = [
        HTTPAllow(2, PortRange(PROTO_TCP, 80, 80), (model.HTTPRule(method="GET", path="/public"),), ORIGIN)]
    haproxy_config.redirect(state, PORT)
    proxy.apply(state)
    datapath.apply(state)
    status, body = _req(_conn(a, c.ip), "GET", "/public")
    assert status == 200 and json.loads(body)["client"][0] == "10.11.255.1"
    assert _req(_conn(a, c.ip), "GET", "/private") == (403, b"Access denied\r\n")


def test_ingress_rules_apply_to_requests_from_a_pod_on_another_node(sandbox, datapath, l7):
    """A pod on node B (its identity from the ipcache, as the cluster's other endpoints are) asks b on this node,
    whose ingress has rules.http for that identity: its connection crosses node A's device, is redirected to
    HAProxy at b's veth like a local client's, and HAProxy sees its identity and its own address."""
    from support.shell import sh
    from support.two_nodes import NODE_IP_TO_B, REMOTE_POD, build_two_nodes

    _, proxy = l7
    a, b, _ = sandbox.pods
    two = build_two_nodes(sandbox, datapath)
    sh("ip", "-n", f"{sandbox.prefix}m", "route", "add", "10.11.0.0/24", "via", NODE_IP_TO_B)   # node B -> A's pods
    remote_id = 5001
    ipcache = {**sandbox.ipcache(), f"{REMOTE_POD}/32": remote_id}
    state = sandbox.state(1, {b.ep.id: (True, [entry(remote_id, PROTO_TCP, 80)], False, [])}, ipcache=ipcache)
    state.http[(b.ep.id, int(Direction.INGRESS))] = [
        HTTPAllow(remote_id, PortRange(PROTO_TCP, 80, 80), (LANDING,), ORIGIN)]
    haproxy_config.redirect(state, PORT)
    proxy.apply(state)
    datapath.apply(state)
    status, body = _req(_conn(two.remote, b.ip), "POST", "/v1/request-landing", b"land")
    assert status == 200 and json.loads(body)["client"][0] == REMOTE_POD
    assert _req(_conn(two.remote, b.ip), "PUT", "/v1/exhaust-port", b"") == (403, b"Access denied\r\n")
    # a is local and has no allow: still dropped before any proxy
    with pytest.raises(OSError):
        _conn(a, b.ip).sock.recv(1)


def _tcp_counters(ns: str) -> dict[str, int]:
    """The namespace's TCP counters (/proc/net/snmp and netstat, as nstat shows them): retransmitted SYNs, resets."""
    from support.shell import sh

    out = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = sh("ip", "netns", "exec", ns, "cat", path).stdout.splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            kind = names.split(":")[0]
            out.update({kind + n: int(v) for n, v in zip(names.split()[1:], values.split()[1:], strict=True)})
    return out


def _only_port(ns: str, port: int) -> None:
    """The namespace's connect() takes its source port from `port` alone (HAProxy's upstream connections, which bind
    the client's address without a port and let connect() pick one, as any client does)."""
    from support.shell import sh

    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={port} {port}")


def _bound_conn(pod, ip: str, port: int) -> http.client.HTTPConnection:
    c = PodHTTPConnection(pod, ip, 80, timeout=8)
    s = pod.socket()
    s.settimeout(8)
    s.bind((pod.ip, port))
    s.connect((ip, 80))
    c.sock = s
    return c


def _upstream_connects(proxy) -> int:
    """HAProxy's count of connections opened to endpoints (`show stat`, the to_endpoint backend's `connect`)."""
    lines = proxy.command("show stat").splitlines()
    names = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(names, line.split(","), strict=False))
        if row.get("pxname") == "to_endpoint" and row.get("svname") == "BACKEND":
            return int(row["connect"])
    raise AssertionError("no to_endpoint backend in show stat")


def test_an_upstream_connection_on_the_clients_own_port_reaches_the_server(sandbox, l7):
    """HAProxy connects to b from a's address (usesrc clientip) with a port of the node's choosing; nothing keeps it
    from being the port of a's own connection to the proxy (the two sockets differ: one is the node's b:80 <- a:P,
    the other a:P -> b:80). Its SYN then carries the tuple the datapath saw a's SYN with at b's veth: it must reach
    b, not be handed back to the proxy as a's packet (each such SYN stalled the request by a 1 s retransmission)."""
    apply, _ = l7
    a, b, _ = sandbox.pods
    apply(ingress=[model.HTTPRule(method="GET", path="/v1/.*")])
    _only_port(sandbox.node, 40000)                  # the upstream connection can only take port 40000
    before = _tcp_counters(sandbox.node)
    conn = _bound_conn(a, b.ip, 40000)               # and a's own connection has it too
    for _ in range(3):
        status, body = _req(conn, "GET", "/v1/status")
        assert status == 200 and json.loads(body)["client"] == [a.ip, 40000]
    after = _tcp_counters(sandbox.node)
    assert after["TcpExtTCPSynRetrans"] - before["TcpExtTCPSynRetrans"] == 0
    assert after["TcpActiveOpens"] - before["TcpActiveOpens"] == 1      # one upstream connection, kept


def test_a_client_on_the_port_of_a_live_upstream_connection_still_goes_through_the_proxy(sandbox, l7):
    """The other way round: the proxy's upstream connection holds a:40000 -> b:80 when a opens a connection of its own
    from port 40000. Its SYN has the upstream connection's tuple at b's veth: it must go to the proxy like any new
    connection of a (here: a denied request), not pass to b as the proxy's packet; the upstream connection of a's
    first connection is not disturbed."""
    apply, proxy = l7
    a, b, _ = sandbox.pods
    apply(ingress=[model.HTTPRule(method="GET", path="/v1/.*")])
    _only_port(sandbox.node, 40000)
    first = _bound_conn(a, b.ip, 41000)
    status, body = _req(first, "GET", "/v1/status")
    assert status == 200 and json.loads(body)["client"] == [a.ip, 40000]   # the upstream connection took 40000
    before = _tcp_counters(a.ns)
    second = _bound_conn(a, b.ip, 40000)
    assert _req(second, "PUT", "/v1/exhaust-port", b"") == (403, b"Access denied\r\n")
    status, body = _req(first, "GET", "/v1/status")
    assert status == 200 and json.loads(body)["client"] == [a.ip, 40000]
    assert _tcp_counters(a.ns)["TcpExtTCPSynRetrans"] - before["TcpExtTCPSynRetrans"] == 0
    assert _upstream_connects(proxy) == 1


def test_each_kept_alive_client_connection_keeps_one_upstream_connection(sandbox, l7):
    """Requests of several kept-alive connections in turn: each client connection's requests reach b over one
    connection of its own, opened once. (HAProxy's default `http-reuse safe` pools the upstream connections of one
    client address across its connections and closes, with a reset, what exceeds its estimate of the need: under
    load most requests paid a new connection.)"""
    apply, proxy = l7
    a, b, _ = sandbox.pods
    apply(ingress=[model.HTTPRule(method="GET", path="/v1/.*")])
    conns = [_conn(a, b.ip) for _ in range(4)]
    seen: dict[int, set] = {i: set() for i in range(len(conns))}
    for _ in range(10):
        for i, c in enumerate(conns):
            status, body = _req(c, "GET", "/v1/status")
            assert status == 200
            seen[i].add(json.loads(body)["client"][1])
    assert all(len(ports) == 1 for ports in seen.values()), seen
    assert len(set().union(*seen.values())) == len(conns)
    assert _upstream_connects(proxy) == len(conns)
