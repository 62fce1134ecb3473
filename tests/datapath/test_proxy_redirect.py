"""Redirection to a local proxy (bpf/lib/proxy.h): real packets between the sandbox's pods, a transparent proxy in
the node namespace. A policy entry with a proxy port sends its connections to the proxy with their original
tuple, for egress (assigned at tc ingress) and ingress (bounced from tc egress); ports without one never reach
it; no proxy -> refused, never passed."""

from __future__ import annotations

import dataclasses
import errno
import socket
import time

import pytest
from support.tproxy import TransparentProxy

from ciliumctl.datapath import events as ev
from ciliumctl.datapath import proxyroute
from ciliumctl.policy.resolved import PROTO_TCP, PROTO_UDP

from .conftest import entry

pytestmark = pytest.mark.root
PROXY = 15001


def _l7(identity, proto, port, proxy=PROXY, section="egress"):
    return dataclasses.replace(entry(identity, proto, port, section=section), proxy_port=proxy)


def _exchange(pod, ip, port, timeout=2.0) -> bytes:
    s = pod.socket()
    s.settimeout(timeout)
    with s:
        s.connect((ip, port))
        s.sendall(b"ping\n")
        return s.recv(64)


@pytest.fixture
def proxy_route(sandbox):
    proxyroute.ensure()
    assert proxyroute.installed()
    yield
    proxyroute.remove()
    assert not proxyroute.installed()


def test_egress_l7_port_goes_to_the_proxy_others_do_not(sandbox, datapath, proxy_route):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 80)
    sandbox.tcp_server(b, 81)
    proxy = TransparentProxy(sandbox.node, PROXY)
    sandbox.closers.append(proxy.close)
    datapath.apply(sandbox.state(1, {a.ep.id: (False, [], True, [_l7(b.identity, PROTO_TCP, 80),
                                                                  entry(b.identity, PROTO_TCP, 81)])}))
    # the proxy answers in place of b, and sees the client and the original destination
    assert _exchange(a, b.ip, 80) == f"proxied {b.ip}:80\n".encode()
    assert proxy.seen and proxy.seen[0][0][0] == a.ip and proxy.seen[0][1] == (b.ip, 80)
    # a port without L7 rules never touches the proxy
    n = len(proxy.seen)
    assert _exchange(a, b.ip, 81) == b"ping\n"
    assert len(proxy.seen) == n
    # a second connection on the L7 port: the proxy again (the proxy port is per connection, not per packet)
    assert _exchange(a, b.ip, 80) == f"proxied {b.ip}:80\n".encode()


def test_ingress_l7_port_goes_to_the_proxy(sandbox, datapath, proxy_route):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 80)
    proxy = TransparentProxy(sandbox.node, PROXY)
    sandbox.closers.append(proxy.close)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [_l7(c.identity, PROTO_TCP, 80, section="ingress"),
                                                      entry(a.identity, PROTO_TCP, 80)], False, [])}))
    assert _exchange(c, b.ip, 80) == f"proxied {b.ip}:80\n".encode()
    assert proxy.seen[-1][0][0] == c.ip and proxy.seen[-1][1] == (b.ip, 80)
    n = len(proxy.seen)
    assert _exchange(a, b.ip, 80) == b"ping\n"      # same port, a peer without L7 rules: straight through
    assert len(proxy.seen) == n


def test_proxy_upstream_keeps_the_client_identity_and_gets_its_replies(sandbox, datapath, proxy_route):
    """The proxy relays from the client's own address: b's ingress policy (a only, at L4) still applies, and b's
    replies reach the proxy's upstream socket, not a."""
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 80)
    proxy = TransparentProxy(sandbox.node, PROXY, relay=True)
    sandbox.closers.append(proxy.close)
    datapath.apply(sandbox.state(1, {a.ep.id: (False, [], True, [_l7(b.identity, PROTO_TCP, 80)]),
                                     c.ep.id: (False, [], True, [_l7(b.identity, PROTO_TCP, 80)]),
                                     b.ep.id: (True, [entry(a.identity, PROTO_TCP, 80)], False, [])}))
    assert _exchange(a, b.ip, 80) == b"ping\n"
    assert proxy.seen[-1][0][0] == a.ip
    with pytest.raises(OSError):        # c is proxied too, but b's ingress policy refuses c's identity
        _exchange(c, b.ip, 80, timeout=1.0)


def test_proxy_down_refuses_redirected_connections(sandbox, datapath, proxy_route, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 80)
    datapath.apply(sandbox.state(1, {a.ep.id: (False, [], True, [_l7(b.identity, PROTO_TCP, 80)])}))
    events.drain()
    s = a.socket()
    s.settimeout(2)
    with s, pytest.raises(OSError) as err:
        s.connect((b.ip, 80))
    assert err.value.errno == errno.ECONNREFUSED     # refused at once, never passed to b unfiltered
    drops = [e for e in events.events() if e.type == ev.EVENT_DROP and e.subtype == ev.DROP_SOCKET_LOOKUP]
    assert drops and drops[0].saddr == a.ip and drops[0].daddr == b.ip
    assert (drops[0].src_identity, drops[0].dst_identity) == (a.identity, b.identity)
    # the proxy comes up: the same policy now reaches it
    proxy = TransparentProxy(sandbox.node, PROXY)
    sandbox.closers.append(proxy.close)
    assert _exchange(a, b.ip, 80) == f"proxied {b.ip}:80\n".encode()


def test_udp_to_the_proxy_with_its_original_destination(sandbox, datapath, proxy_route):
    """What the DNS proxy (issue 15) relies on: a datagram to port 53 reaches a transparent UDP socket on the
    proxy port, which reads the original destination (IP_ORIGDSTADDR)."""
    a, b, _ = sandbox.pods
    proxy = TransparentProxy(sandbox.node, PROXY, udp=True)
    sandbox.closers.append(proxy.close)
    datapath.apply(sandbox.state(1, {a.ep.id: (False, [], True, [_l7(b.identity, PROTO_UDP, 53)])}))
    s = a.socket(socket.SOCK_DGRAM)
    with s:
        s.bind(("0.0.0.0", 40053))
        for _ in range(20):
            s.sendto(b"query", (b.ip, 53))
            if proxy.seen:
                break
            time.sleep(0.05)
    assert proxy.seen and proxy.seen[0] == ((a.ip, 40053), (b.ip, 53))
