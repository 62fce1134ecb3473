"""The agent's DNS proxy (asyncio, dnspython for the wire format), UDP and TCP.

A query comes from a client (an endpoint) to a server (its original destination: the DNS server the endpoint
asked, redirected here by the datapath; a query sent to the proxy's own address directly goes to the configured
upstream). The policy (a `Policy`) decides per query: allowed -> forwarded to the server, its answer checked and
learned (`Policy.learn`, which may program the datapath and blocks until it has) and only then released to the
client; refused -> REFUSED with the question echoed, as Cilium's proxy answers a denied query
(pkg/fqdn/dnsproxy/proxy.go: `sendRefused`, --tofqdns-dns-reject-response-code refused). An answer the server does
not give in time becomes SERVFAIL. Every query and response is reported (`Policy.observe`) for flows.

Answers go back from the address the client asked (a transparent socket bound to the original destination,
IP_TRANSPARENT as Cilium's proxy binds its replies), so the client's resolver accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from ciliumctl.base import netns

log = logging.getLogger("ciliumctl.node.dns_proxy.server")

IP_TRANSPARENT = 19            # linux/in.h
IP_RECVORIGDSTADDR = 20        # linux/in.h (IP_ORIGDSTADDR in the control message)
SOL_IP = 0
UPSTREAM_TIMEOUT = 2.0         # Cilium's ProxyForwardTimeout is 10 s; a resolver retries sooner
MAX_UDP = 65535


@dataclass
class Query:
    client: tuple[str, int]
    server: tuple[str, int]    # where the client sent it (the original destination)
    proto: str                 # "udp" | "tcp"
    qname: str                 # as asked, FQDN form
    qtype: str                 # "A", "AAAA", ...
    wire: bytes
    started: float = field(default_factory=time.monotonic)
    wall_ns: int = field(default_factory=time.time_ns)


@dataclass
class Answer:
    rcode: str                             # NOERROR, NXDOMAIN, REFUSED, SERVFAIL, ...
    ips: list[tuple[str, int]]             # (address, ttl) of the A/AAAA records for the question's name chain
    cnames: list[str]
    wire: bytes
    allowed: bool                          # False: the proxy refused the query
    rrtypes: list[str] = field(default_factory=list)   # types of the answer section's records


class Policy(Protocol):
    def allowed(self, q: Query) -> bool: ...

    def learn(self, q: Query, a: Answer) -> None: ...          # blocking: returns once the datapath has it

    def observe(self, q: Query, a: Answer | None) -> None: ...  # a None: the query itself


def parse_query(wire: bytes):
    import dns.message

    return dns.message.from_wire(wire)


def _question(msg) -> tuple[str, str]:
    import dns.rdatatype

    if not msg.question:
        return "", ""
    rr = msg.question[0]
    return rr.name.to_text().lower(), dns.rdatatype.to_text(rr.rdtype)


def refused(msg) -> bytes:
    import dns.message
    import dns.rcode

    resp = dns.message.make_response(msg)
    resp.set_rcode(dns.rcode.REFUSED)
    return resp.to_wire()


def servfail(msg) -> bytes:
    import dns.message
    import dns.rcode

    resp = dns.message.make_response(msg)
    resp.set_rcode(dns.rcode.SERVFAIL)
    return resp.to_wire()


def answer_of(wire: bytes, allowed: bool = True) -> Answer:
    """The rcode and the addresses of a response (A/AAAA of every name in the answer section, which holds the
    question's name and the CNAMEs it leads to)."""
    import dns.message
    import dns.rcode
    import dns.rdatatype

    msg = dns.message.from_wire(wire)
    ips: list[tuple[str, int]] = []
    cnames: list[str] = []
    rrtypes: list[str] = []
    for rrset in msg.answer:
        rrtypes.extend(dns.rdatatype.to_text(rrset.rdtype) for _ in rrset)
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            ips.extend((rd.address, rrset.ttl) for rd in rrset)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            cnames.extend(rd.target.to_text().lower() for rd in rrset)
    return Answer(dns.rcode.to_text(msg.rcode()), ips, cnames, wire, allowed, rrtypes)


def _orig_dst(ancdata, fallback: tuple[str, int]) -> tuple[str, int]:
    for level, kind, data in ancdata:
        if level == SOL_IP and kind == IP_RECVORIGDSTADDR and len(data) >= 8:
            port, addr = struct.unpack_from("!2xH4s", data)
            return socket.inet_ntoa(addr), port
    return fallback


class DNSProxy:
    """Serves UDP and TCP on (host, port) in its own event loop thread. upstream: where a query sent to the proxy's
    own address goes (None: such queries are refused)."""

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = 0,
                 upstream: tuple[str, int] | None = None, transparent: bool = False,
                 timeout: float = UPSTREAM_TIMEOUT, executor_threads: int = 4):
        self.policy = policy
        self.host, self.port = host, port
        self.upstream = upstream
        self.transparent = transparent
        self.timeout = timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._netns_fd: int | None = None
        self._error: BaseException | None = None
        from concurrent.futures import ThreadPoolExecutor

        self._learn_pool = ThreadPoolExecutor(executor_threads, thread_name_prefix="dns-learn")

    # ---- sockets

    def _socket(self, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.transparent:
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
        if kind == socket.SOCK_DGRAM:
            s.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
        s.bind((self.host, self.port))
        s.setblocking(False)
        return s

    def bind(self) -> tuple[str, int]:
        """Open both sockets (in the caller's network namespace, where the proxy's thread will also forward
        queries from) on one port; returns the address."""
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._udp = self._socket(socket.SOCK_DGRAM)
        self.port = self._udp.getsockname()[1]
        self._tcp = self._socket(socket.SOCK_STREAM)
        self._tcp.listen(128)
        return self.host, self.port

    # ---- lifecycle

    def start(self) -> tuple[str, int]:
        if self._udp is None:
            self.bind()
        self._thread = threading.Thread(target=self._run, name="dns-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self.host, self.port

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            # upstream sockets are made in this thread: in the namespace the proxy was bound in, never another
            if self._netns_fd is not None:
                netns.setns_fd(self._netns_fd, "the DNS proxy's network namespace")
            loop.run_until_complete(self._serve())
        except BaseException as err:  # noqa: BLE001 - reported to start()
            self._error = err
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._udp is not None and self._tcp is not None
        loop.add_reader(self._udp.fileno(), self._on_udp)
        self._server = await asyncio.start_server(self._on_tcp, sock=self._tcp)
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        loop.remove_reader(self._udp.fileno())
        self._server.close()
        await self._server.wait_closed()

    def stop(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(5)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None
        self._learn_pool.shutdown(wait=False, cancel_futures=True)

    # ---- one query

    def _server_of(self, dst: tuple[str, int]) -> tuple[str, int] | None:
        # sent to the proxy's own port: a query to the proxy itself, not a redirected one
        return self.upstream if dst[1] == self.port else dst

    async def _handle(self, wire: bytes, client: tuple[str, int], dst: tuple[str, int], proto: str) -> bytes | None:
        try:
            msg = parse_query(wire)
        except Exception:  # noqa: BLE001 - not DNS: dropped, as a server drops garbage
            return None
        qname, qtype = _question(msg)
        server = self._server_of(dst)
        q = Query(client, server or dst, proto, qname, qtype, wire)
        self.policy.observe(q, None)
        loop = asyncio.get_running_loop()
        if server is None or not qname or not self.policy.allowed(q):     # cheap: no thread hop
            out = refused(msg)
            self.policy.observe(q, Answer("REFUSED", [], [], out, False))
            return out
        try:
            resp = await (self._forward_udp(wire, server) if proto == "udp" else self._forward_tcp(wire, server))
            a = answer_of(resp)
        except (TimeoutError, OSError, ValueError) as err:
            log.info("DNS %s %s to %s:%d: %s", qtype, qname, *server, err)
            out = servfail(msg)
            self.policy.observe(q, Answer("SERVFAIL", [], [], out, True))
            return out
        except Exception as err:  # noqa: BLE001 - a malformed answer: SERVFAIL, never a crash
            log.info("DNS %s %s: bad answer from %s:%d: %s", qtype, qname, *server, err)
            out = servfail(msg)
            self.policy.observe(q, Answer("SERVFAIL", [], [], out, True))
            return out
        # learned (and programmed) before the client sees the answer: its next connection must be allowed. An
        # answer with nothing new is taken in the loop; one that may program the datapath in a thread
        fast = getattr(self.policy, "learn_nowait", None)
        if fast is None or not fast(q, a):
            await loop.run_in_executor(self._learn_pool, self.policy.learn, q, a)
        self.policy.observe(q, a)
        return resp

    async def _forward_udp(self, wire: bytes, server: tuple[str, int]) -> bytes:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect(server)
            await loop.sock_sendall(s, wire)
            while True:
                data = await asyncio.wait_for(loop.sock_recv(s, MAX_UDP), self.timeout)
                if data[:2] == wire[:2]:     # the same id; anything else is not our answer
                    return data
        finally:
            s.close()

    async def _forward_tcp(self, wire: bytes, server: tuple[str, int]) -> bytes:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server), self.timeout)
        try:
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.timeout))[0]
            return await asyncio.wait_for(reader.readexactly(n), self.timeout)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # ---- UDP

    def _on_udp(self) -> None:
        assert self._udp is not None
        for _ in range(64):
            try:
                data, anc, _flags, client = self._udp.recvmsg(MAX_UDP, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.info("DNS proxy: %s", err)
                return
            dst = _orig_dst(anc, (self.host, self.port))
            asyncio.ensure_future(self._udp_query(data, client, dst))

    async def _udp_query(self, data: bytes, client: tuple[str, int], dst: tuple[str, int]) -> None:
        out = await self._handle(data, client, dst, "udp")
        if out is None:
            return
        try:
            self._reply_udp(out, client, dst)
        except OSError as err:
            log.info("DNS reply to %s:%d: %s", *client, err)

    def _reply_udp(self, out: bytes, client: tuple[str, int], dst: tuple[str, int]) -> None:
        assert self._udp is not None
        if dst[1] == self.port or not self.transparent:
            self._udp.sendto(out, client)
            return
        # from the address the client asked: a transparent socket bound to it (Cilium's proxy does the same)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
            s.bind(dst)
            s.sendto(out, client)
        finally:
            s.close()

    # ---- TCP

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[:2]
        dst = writer.get_extra_info("sockname")[:2]     # the original destination of a transparent connection
        try:
            while True:
                head = await reader.readexactly(2)
                wire = await reader.readexactly(struct.unpack("!H", head)[0])
                out = await self._handle(wire, client, dst, "tcp")
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

