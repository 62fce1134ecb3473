"""The agent's DNS proxy (node/dns_proxy/server.py) on its own: queries sent to it directly, over UDP and TCP, inside a
test network namespace where Debian's dnsmasq serves the test's zone. Allowed names are forwarded and answered
(after learning), others REFUSED without reaching the server, a dead server SERVFAIL."""

from __future__ import annotations

import socket
import threading

import pytest
from support import netns
from support.dnsmasq import Dnsmasq, require_dnsmasq
from support.shell import sh

from ciliumctl.node.dns_proxy.server import DNSProxy
from ciliumctl.policy.fqdn import NameMatch

pytestmark = pytest.mark.root
SERVER = "10.98.0.53"
API = "10.98.0.5"


class RulesPolicy:
    """The proxy's policy for the test: the names of one rules.dns list, what was learned and observed."""

    def __init__(self, names):
        self.names = names
        self.learned: list = []
        self.seen: list = []
        self.hold: threading.Event | None = None     # learn() waits for it when set
        self.in_learn = threading.Event()

    def allowed(self, q) -> bool:
        return any(n.matches(q.qname) for n in self.names)

    def learn(self, q, a) -> None:
        self.in_learn.set()
        if self.hold is not None:
            assert self.hold.wait(30)
        self.learned.append((q.qname, a.ips))

    def observe(self, q, a) -> None:
        self.seen.append((q.qname, q.proto, None if a is None else (a.rcode, a.allowed)))


@pytest.fixture
def zone_ns():
    netns.require_root()
    require_dnsmasq()
    name = f"{netns.unique_prefix()}-dns"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{SERVER}/32", "dev", "lo")
        yield name
    finally:
        netns.delete(name)


@pytest.fixture
def proxy(zone_ns):
    policy = RulesPolicy((NameMatch(name="api.example.test"), NameMatch(pattern="*.svc.example.test")))
    with Dnsmasq(zone_ns, SERVER, {"api.example.test": API, "db.svc.example.test": "10.98.0.6",
                                   "evil.example.test": "10.98.0.7"}, ttl=7) as server:
        p = DNSProxy(policy, "127.0.0.1", 0, upstream=(SERVER, 53))
        with netns.in_netns(zone_ns):
            p.bind()
        p.start()
        try:
            yield p, policy, server
        finally:
            p.stop()


def ask(ns: str, addr, name: str, tcp: bool = False):
    import dns.message
    import dns.query

    q = dns.message.make_query(name, "A")
    with netns.in_netns(ns):
        return (dns.query.tcp if tcp else dns.query.udp)(q, addr[0], port=addr[1], timeout=5)


def addresses(resp) -> list[str]:
    return [rd.address for rrset in resp.answer for rd in rrset]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_allowed_names_are_forwarded_answered_and_learned(proxy, zone_ns, tcp):
    import dns.rcode

    p, policy, _ = proxy
    resp = ask(zone_ns, (p.host, p.port), "api.example.test", tcp)
    assert resp.rcode() == dns.rcode.NOERROR and addresses(resp) == [API]
    assert resp.answer[0].ttl == 7
    resp = ask(zone_ns, (p.host, p.port), "DB.svc.example.test", tcp)
    assert addresses(resp) == ["10.98.0.6"]
    assert policy.learned == [("api.example.test.", [(API, 7)]), ("db.svc.example.test.", [("10.98.0.6", 7)])]
    proto = "tcp" if tcp else "udp"
    assert ("api.example.test.", proto, ("NOERROR", True)) in policy.seen


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_other_names_are_refused_and_never_forwarded(proxy, zone_ns, tcp):
    import dns.rcode

    p, policy, _ = proxy
    resp = ask(zone_ns, (p.host, p.port), "evil.example.test", tcp)
    assert resp.rcode() == dns.rcode.REFUSED and not resp.answer
    assert resp.question[0].name.to_text() == "evil.example.test."     # the question is echoed
    assert policy.learned == []
    assert ("evil.example.test.", "tcp" if tcp else "udp", ("REFUSED", False)) in policy.seen


def test_the_answer_waits_for_learning(proxy, zone_ns):
    """The client gets nothing while learn() (which programs the datapath) has not returned."""
    import dns.message

    p, policy, _ = proxy
    policy.hold = threading.Event()
    with netns.in_netns(zone_ns):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        c.sendto(dns.message.make_query("api.example.test", "A").to_wire(), (p.host, p.port))
        assert policy.in_learn.wait(10)
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.recv(4096)
        policy.hold.set()
        c.setblocking(True)
        c.settimeout(10)
        assert addresses(dns.message.from_wire(c.recv(4096))) == [API]
    finally:
        c.close()


def test_a_dead_server_gives_servfail(proxy, zone_ns):
    import dns.rcode

    p, policy, server = proxy
    server.__exit__(None, None, None)
    p.timeout = 0.3
    assert ask(zone_ns, (p.host, p.port), "api.example.test").rcode() == dns.rcode.SERVFAIL
    assert policy.learned == []
