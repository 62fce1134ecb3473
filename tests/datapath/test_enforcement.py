"""Real packets through the real BPF programs: what the kernel forwarded or dropped, and which events it sent."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from ciliumctl.datapath import events as ev
from ciliumctl.datapath.mapstate import port_prefixes
from ciliumctl.datapath.monitor import MonitorConfig
from ciliumctl.policy.resolved import PROTO_ICMP, PROTO_TCP, PROTO_UDP

from .conftest import entry

pytestmark = pytest.mark.root


def _of(evts, **want):
    return [e for e in evts if all(getattr(e, k) == v for k, v in want.items())]


def _collect(reader, settle: float = 0.1):
    time.sleep(settle)
    return reader.events()


def test_nothing_enforced_everything_flows(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    sandbox.udp_server(b, 5353)
    datapath.apply(sandbox.state(1, {}))
    events.drain()
    assert a.tcp_ok(b, 8080)
    assert a.udp_ok(b, 5353)
    assert a.ping(b.ip)
    evts = _collect(events)
    # traces only: no policy verdicts where no direction is enforced
    assert _of(evts, type=ev.EVENT_TRACE, saddr=a.ip, daddr=b.ip, proto=PROTO_TCP)
    assert not _of(evts, type=ev.EVENT_POLICY_VERDICT)
    assert not _of(evts, type=ev.EVENT_DROP)


def test_l3_allow_by_identity(sandbox, datapath, events):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    rep = datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, name="allow-a")], False, [])}))
    assert rep.entries["policy"] == 1
    events.drain()
    assert a.tcp_ok(b, 8080)
    assert a.ping(b.ip)
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    assert not c.ping(b.ip)
    evts = _collect(events)

    allowed = _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=a.ip, daddr=b.ip, proto=PROTO_TCP)
    assert allowed and allowed[0].verdict == ev.VERDICT_FORWARDED
    assert allowed[0].direction == ev.DIR_INGRESS and allowed[0].ep_id == b.ep.id
    assert allowed[0].match_type == ev.MATCH_L3_ONLY
    assert (allowed[0].src_identity, allowed[0].dst_identity) == (a.identity, b.identity)
    cookies = json.loads(open(os.path.join(sandbox.state_dir, "datapath", "cookies.json")).read())["cookies"]
    assert cookies[str(allowed[0].rule_cookie)][0]["name"] == "allow-a"

    drops = _of(evts, type=ev.EVENT_DROP, saddr=c.ip, daddr=b.ip)
    assert drops and {d.subtype for d in drops} == {ev.DROP_POLICY}
    assert {d.proto for d in drops} == {PROTO_TCP, PROTO_ICMP}
    denied = _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=c.ip, verdict=ev.VERDICT_DROPPED)
    assert denied and denied[0].rule_cookie == 0 and denied[0].src_identity == c.identity


def test_l4_ports_and_ranges(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    for port in (8000, 8005, 8010, 8011):
        sandbox.tcp_server(b, port)
    sandbox.udp_server(b, 8005)
    sandbox.udp_server(b, 53)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(0, PROTO_TCP, 8000, 8010),
                                                      entry(a.identity, PROTO_UDP, 53)], False, [])}))
    events.drain()
    assert a.tcp_ok(b, 8000) and a.tcp_ok(b, 8005) and a.tcp_ok(b, 8010)
    assert not a.tcp_ok(b, 8011, timeout=0.5)
    assert not a.udp_ok(b, 8005)          # range is TCP only
    assert a.udp_ok(b, 53)                # L3+L4
    assert not a.ping(b.ip)
    evts = _collect(events)
    verdicts = {(e.proto, e.dport): e for e in _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=a.ip)}
    assert verdicts[(PROTO_TCP, 8005)].match_type == ev.MATCH_L4_ONLY
    assert verdicts[(PROTO_UDP, 53)].match_type == ev.MATCH_L3_L4
    assert verdicts[(PROTO_TCP, 8011)].verdict == ev.VERDICT_DROPPED


def test_deny_beats_allow(sandbox, datapath, events):
    a, b, c = sandbox.pods
    for port in (80, 9050):
        sandbox.tcp_server(b, port)
    policy = [
        entry(a.identity, name="allow-a"),                                   # L3 allow of a
        entry(a.identity, PROTO_TCP, 9000, 9100, deny=True, name="deny-range", section="ingressDeny"),
        entry(c.identity, PROTO_TCP, 80, name="allow-c-80"),                 # a more specific allow ...
        entry(c.identity, deny=True, name="deny-c", section="ingressDeny"),  # ... under a wider deny
    ]
    datapath.apply(sandbox.state(1, {b.ep.id: (True, policy, False, [])}))
    events.drain()
    assert a.tcp_ok(b, 80)
    assert not a.tcp_ok(b, 9050, timeout=0.5)
    assert not c.tcp_ok(b, 80, timeout=0.5)       # L3 deny of c beats its L3+L4 allow
    evts = _collect(events)
    drops = _of(evts, type=ev.EVENT_DROP)
    assert drops and {d.subtype for d in drops} == {ev.DROP_POLICY_DENY}
    cookies = json.loads(open(os.path.join(sandbox.state_dir, "datapath", "cookies.json")).read())["cookies"]
    by_src = {d.saddr: cookies[str(d.rule_cookie)][0]["name"] for d in drops}
    assert by_src == {a.ip: "deny-range", c.ip: "deny-c"}

    # a deny for every peer (identity any) beats an identity-specific allow
    datapath.apply(sandbox.state(2, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 80),
                                                      entry(0, PROTO_TCP, 1, 1024, deny=True)], False, [])}))
    events.drain()
    assert not a.tcp_ok(b, 80, timeout=0.5)
    assert a.ping(b.ip) is False     # nothing allows ICMP: default deny, 133
    evts = _collect(events)
    assert {d.subtype for d in _of(evts, type=ev.EVENT_DROP, proto=PROTO_TCP)} == {ev.DROP_POLICY_DENY}
    assert {d.subtype for d in _of(evts, type=ev.EVENT_DROP, proto=PROTO_ICMP)} == {ev.DROP_POLICY}
    counts = {(d["reason"], d["direction"]): d["packets"] for d in datapath.status()["drops"]}
    assert counts[(ev.DROP_POLICY_DENY, "ingress")] == len(_of(drops, subtype=ev.DROP_POLICY_DENY)) + \
        len(_of(evts, type=ev.EVENT_DROP, subtype=ev.DROP_POLICY_DENY))


def test_enforcement_per_direction_and_replies(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(a, 7000)
    sandbox.tcp_server(b, 7000)
    sandbox.udp_server(a, 7001)
    datapath.set_monitor(MonitorConfig("none"))   # a's replies are traced where they leave a (from-endpoint)
    # a: egress enforced with nothing allowed, ingress open
    datapath.apply(sandbox.state(1, {a.ep.id: (False, [], True, [])}))
    events.drain()
    assert not a.tcp_ok(b, 7000, timeout=0.5)
    assert b.tcp_ok(a, 7000)      # a's replies leave through its enforced egress: conntrack lets them pass
    assert b.udp_ok(a, 7001)
    assert b.ping(a.ip)
    evts = _collect(events)
    drops = _of(evts, type=ev.EVENT_DROP)
    assert drops and all(d.direction == ev.DIR_EGRESS and d.ep_id == a.ep.id for d in drops)
    replies = _of(evts, type=ev.EVENT_TRACE, saddr=a.ip, daddr=b.ip, is_reply=True, ep_id=a.ep.id)
    assert replies and all(r.direction == ev.DIR_INGRESS for r in replies)

    # flip: ingress enforced allowing only b, egress open
    datapath.apply(sandbox.state(2, {a.ep.id: (True, [entry(b.identity, PROTO_TCP, 7000)], False, [])}))
    assert a.tcp_ok(b, 7000)
    assert b.tcp_ok(a, 7000)
    assert not b.udp_ok(a, 7001)
    assert a.ping(b.ip)           # echo reply comes back in through a's enforced ingress as a reply


def test_audit_mode_reports_and_forwards(sandbox, datapath, events):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    policy = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080),
                              entry(c.identity, deny=True, section="ingressDeny")], False, [])}
    datapath.apply(sandbox.state(1, policy, audit=True))
    events.drain()
    assert c.tcp_ok(b, 8080)
    assert a.tcp_ok(b, 8080)
    evts = _collect(events)
    assert not _of(evts, type=ev.EVENT_DROP)
    audit = _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=c.ip)
    assert audit and audit[0].verdict == ev.VERDICT_AUDIT
    assert _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=a.ip, verdict=ev.VERDICT_FORWARDED)
    # audit off again: the same peer is dropped by its deny rule
    datapath.apply(sandbox.state(2, policy))
    events.drain()
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    assert {d.subtype for d in _of(_collect(events), type=ev.EVENT_DROP)} == {ev.DROP_POLICY_DENY}


def _echo(s, msg: bytes) -> bool:
    try:
        s.sendall(msg)
        return s.recv(16) == msg
    except OSError:   # timeout: the datapath dropped it
        return False


def test_revoking_a_policy_cuts_its_established_connections(sandbox, datapath, events):
    """Forward packets are decided again under a new revision (Cilium's bpf_lxc.c: only replies skip policy)."""
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    allow_a = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}
    datapath.apply(sandbox.state(1, allow_a))
    s = a.socket()
    s.settimeout(0.5)
    s.connect((b.ip, 8080))
    assert _echo(s, b"one\n")
    # a revision that still allows a: the connection keeps flowing
    datapath.apply(sandbox.state(2, {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8000, 8090)], False, [])}))
    assert all(_echo(s, f"keep{i}\n".encode()) for i in range(10))
    # the revision that allows nothing: the open connection is cut at its next packet, with a policy drop
    events.drain()
    datapath.apply(sandbox.state(3, {b.ep.id: (True, [], False, [])}))
    assert not _echo(s, b"cut\n")
    drops = _of(_collect(events), type=ev.EVENT_DROP, saddr=a.ip, daddr=b.ip, proto=PROTO_TCP)
    assert drops and {d.subtype for d in drops} == {ev.DROP_POLICY}
    assert all(d.direction == ev.DIR_INGRESS and d.ep_id == b.ep.id for d in drops)
    # allowed again: the same connection resumes (TCP retransmits what was dropped)
    datapath.apply(sandbox.state(4, allow_a))
    s.settimeout(5)
    assert s.recv(16) == b"cut\n"
    assert _echo(s, b"back\n")
    s.close()


def test_a_revoked_flow_cannot_come_back_as_a_reply(sandbox, datapath, events):
    """After a revocation the server side may still answer (replies skip policy, as in Cilium), but that never
    turns the client's packets into replies: they stay denied."""
    a, b, _ = sandbox.pods
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, PROTO_UDP, 5353)], False, [])}))
    client, server = a.socket(socket.SOCK_DGRAM), b.socket(socket.SOCK_DGRAM)
    client.settimeout(0.5)
    server.settimeout(0.5)
    try:
        server.bind((b.ip, 5353))
        client.sendto(b"hello", (b.ip, 5353))
        _, peer = server.recvfrom(64)
        server.sendto(b"hello", peer)
        assert client.recvfrom(64)[0] == b"hello"
        datapath.apply(sandbox.state(2, {b.ep.id: (True, [], False, [])}))
        client.sendto(b"again", (b.ip, 5353))
        with pytest.raises(TimeoutError):
            server.recvfrom(64)
        server.sendto(b"from b", peer)                      # the reply direction of the tracked flow
        assert client.recvfrom(64)[0] == b"from b"
        client.sendto(b"still", (b.ip, 5353))
        with pytest.raises(TimeoutError):
            server.recvfrom(64)
    finally:
        client.close()
        server.close()


def test_policy_switch_under_load_never_opens_a_window(sandbox, datapath, events):
    """Flip between two revisions that both allow a->b:8080 and deny c, while a and c open connections."""
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    rev_a = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8080)], False, [])}
    rev_b = {b.ep.id: (True, [entry(a.identity, PROTO_TCP, 8000, 8090), entry(0, PROTO_UDP, 53)], False, [])}
    datapath.apply(sandbox.state(1, rev_a))
    import threading

    stop = threading.Event()

    def flipper():
        rev = 2
        while not stop.is_set():
            datapath.apply(sandbox.state(rev, rev_b if rev % 2 else rev_a))
            rev += 1

    t = threading.Thread(target=flipper)
    t.start()
    try:
        results_a = [a.tcp_ok(b, 8080, timeout=1.0) for _ in range(40)]
        results_c = [c.tcp_ok(b, 8080, timeout=0.2) for _ in range(5)]
    finally:
        stop.set()
        t.join()
    assert all(results_a)
    assert not any(results_c)
    assert datapath.status()["revision"] > 3


def test_trace_events_are_aggregated_per_connection(sandbox, datapath, events):
    a, b, _ = sandbox.pods
    sandbox.tcp_server(b, 8080)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity)], False, [])}))
    events.drain()
    s = a.socket()
    s.settimeout(2)
    s.connect((b.ip, 8080))
    sport = s.getsockname()[1]
    for _ in range(100):
        s.sendall(b"x" * 100)
        got = 0
        while got < 100:
            got += len(s.recv(4096))
    s.close()
    evts = _collect(events, 0.3)
    conn = [e for e in evts if e.type == ev.EVENT_TRACE and e.proto == PROTO_TCP
            and ((e.saddr, e.sport) == (a.ip, sport) or (e.daddr, e.dport) == (a.ip, sport))]
    # 2 observation points (a's egress side, b's ingress side), each: first packet per side + flag changes
    assert 4 <= len(conn) <= 16, conn
    fwd_at_b = [e for e in conn if e.ep_id == b.ep.id and not e.is_reply]
    assert sum(e.packets for e in fwd_at_b) >= 100


def test_ipcache_prefixes_and_world(sandbox, datapath, events):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    cidr_identity = 16777217
    ipcache = {f"{a.ip}/32": a.identity, "10.11.0.0/24": cidr_identity, f"{b.ip}/32": b.identity}
    # c has no /32 of its own: it gets the CIDR identity; a keeps its own (longest prefix)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(cidr_identity, PROTO_TCP, 8080)], False, [])},
                                 ipcache=ipcache))
    events.drain()
    assert c.tcp_ok(b, 8080)
    assert not a.tcp_ok(b, 8080, timeout=0.5)
    evts = _collect(events)
    assert _of(evts, type=ev.EVENT_POLICY_VERDICT, saddr=c.ip)[0].src_identity == cidr_identity
    # without any prefix covering c it is world (2)
    ipcache.pop("10.11.0.0/24")
    datapath.apply(sandbox.state(2, {b.ep.id: (True, [entry(2, PROTO_TCP, 8080)], False, [])}, ipcache=ipcache))
    events.drain()
    assert c.tcp_ok(b, 8080)
    assert _of(_collect(events), type=ev.EVENT_POLICY_VERDICT, saddr=c.ip)[0].src_identity == 2


def test_status_reports_maps_and_counters(sandbox, datapath):
    a, b, _ = sandbox.pods
    datapath.apply(sandbox.state(7, {b.ep.id: (True, [entry(a.identity), entry(0, PROTO_TCP, 1, 1000)], True, [])}))
    st = datapath.status()
    assert st["revision"] == 7
    assert {p["name"] for p in st["programs"]} == {"from_container", "to_container", "from_netdev", "to_netdev"}
    maps = {m["name"]: m for m in st["maps"]}
    assert maps["policy"]["entries"] == 1 + len(port_prefixes(1, 1000))
    assert maps["epcfg"]["entries"] == 3
    assert maps["endpoints"]["entries"] == 3
    assert st["events_lost"] == 0


def test_events_lost_are_counted_when_the_ring_buffer_is_full(sandbox, datapath, events):
    """Nobody reads while ~2 events per dropped packet overflow the 4 MiB ring: every failed reserve counts."""
    a, b, _ = sandbox.pods
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [], False, [])}))
    events.drain()
    capacity = datapath.maps["events"].max_entries // 64          # 56-byte records + 8-byte headers
    s = a.socket(socket.SOCK_DGRAM)
    sent = 0
    for i in range(capacity // 2 + 5000):
        try:
            s.sendto(b"x", (b.ip, 10000))
            sent += 1
        except OSError:
            pass
        if i % 128 == 127:
            time.sleep(0.001)     # paced: the veth's backlog queue must not drop before the programs run
    s.close()
    time.sleep(0.2)
    lost = datapath.events_lost()
    got = [e for e in events.events() if e.saddr == a.ip]
    assert lost > 0, (len(got), sent)
    # drops are counted apart from events: each dropped packet made a policy verdict and a drop event (a's side
    # traces nothing at the default aggregation, medium: from-endpoint is a receive point); every one of them was
    # either read or counted as lost
    (dropped,) = [d for d in datapath.drop_counts() if d["reason"] == ev.DROP_POLICY]
    assert dropped["direction"] == "ingress" and 0 < dropped["packets"] <= sent
    assert len(got) + lost == 2 * dropped["packets"]
    assert datapath.status()["events_lost"] == lost


def test_ipv6_is_dropped_only_in_enforced_directions(sandbox, datapath, events):
    """The datapath enforces IPv4: an enforced direction drops routable IPv6 (reason 139) instead of letting it
    bypass policy; link-local and multicast stay on the veth's link and pass."""
    from .conftest import in_netns

    a, b, _ = sandbox.pods

    def send_ipv6_frame(dst: str):
        with in_netns(a.ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with s:
            s.bind(("eth0", 0))
            ip6 = (b"\x60\0\0\0" + b"\0\x08" + b"\x11\x40" + socket.inet_pton(socket.AF_INET6, "fd00::1")
                   + socket.inet_pton(socket.AF_INET6, dst) + b"\0" * 8)
            s.send(b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x86\xdd" + ip6)

    datapath.apply(sandbox.state(1, {}))
    events.drain()
    send_ipv6_frame("fd00::2")
    assert not [e for e in _collect(events) if e.type == ev.EVENT_DROP]
    datapath.apply(sandbox.state(2, {a.ep.id: (False, [], True, [])}))
    send_ipv6_frame("ff02::1")      # link-scope control traffic passes
    send_ipv6_frame("fe80::1")
    send_ipv6_frame("fd00::2")
    drops = [e for e in _collect(events) if e.type == ev.EVENT_DROP]
    assert [(d.subtype, d.ep_id, d.direction) for d in drops] == [(ev.DROP_UNKNOWN_L3, a.ep.id, ev.DIR_EGRESS)]


def test_icmp_errors_of_tracked_connections_pass_as_related(sandbox, datapath, events):
    """A UDP packet to a closed port: b's port unreachable reaches a through a's enforced ingress."""
    a, b, _ = sandbox.pods
    datapath.apply(sandbox.state(1, {a.ep.id: (True, [], False, [])}))
    events.drain()
    s = a.socket(socket.SOCK_DGRAM)
    s.settimeout(1)
    s.connect((b.ip, 9999))
    s.send(b"anyone?")
    with pytest.raises(ConnectionRefusedError):
        s.recv(16)
    s.close()
    assert not [e for e in _collect(events) if e.type == ev.EVENT_DROP]
    # an ICMP error quoting a packet a never sent is a new flow, subject to a's ingress policy
    inner = (b"\x45\0\0\x1c\0\0\0\0\x40\x11\0\0" + socket.inet_aton(a.ip) + socket.inet_aton(b.ip)
             + (1111).to_bytes(2, "big") + (2222).to_bytes(2, "big") + b"\0\x08\0\0")
    raw = b.socket_raw()
    raw.sendto(b"\x03\x03\0\0\0\0\0\0" + inner, (a.ip, 0))
    raw.close()
    drops = [e for e in _collect(events) if e.type == ev.EVENT_DROP]
    assert [(d.saddr, d.proto, d.sport, d.subtype) for d in drops] == [(b.ip, PROTO_ICMP, 3, ev.DROP_POLICY)]


def test_fragmented_datagrams_follow_the_first_fragment(sandbox, datapath, events):
    """Later fragments carry no ports: they must get the verdict of their first fragment, not port 0's."""
    a, b, _ = sandbox.pods
    sandbox.udp_server(b, 5353)
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, PROTO_UDP, 5353)], False, [])}))
    events.drain()
    s = a.socket(socket.SOCK_DGRAM)
    s.settimeout(1)
    big = bytes(range(256)) * 16       # 4 KiB: three fragments on a 1500-byte link
    s.sendto(big, (b.ip, 5353))
    assert s.recvfrom(8192)[0] == big
    s.close()
    assert not [e for e in _collect(events) if e.type == ev.EVENT_DROP]


def test_ten_thousand_entries_the_matching_one_last(sandbox, datapath, events):
    a, b, c = sandbox.pods
    sandbox.tcp_server(b, 8080)
    many = [entry(20000 + i, PROTO_TCP, 1 + i % 60000) for i in range(9999)] + [entry(a.identity, PROTO_TCP, 8080)]
    rep = datapath.apply(sandbox.state(1, {b.ep.id: (True, many, False, [])}))
    assert rep.entries["policy"] == 10000 and rep.written >= 10000
    assert a.tcp_ok(b, 8080)
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    # the next revision drops all but one: the slot written now still holds revision 0's nothing, the
    # one after must delete the 10,000 stale entries of revision 1
    one = [entry(c.identity, PROTO_TCP, 8080)]
    datapath.apply(sandbox.state(2, {b.ep.id: (True, one, False, [])}))
    rep3 = datapath.apply(sandbox.state(3, {b.ep.id: (True, one, False, [])}))
    assert rep3.deleted == 10000
    assert c.tcp_ok(b, 8080)
    assert not a.tcp_ok(b, 8080, timeout=0.5)
    st = {m["name"]: m for m in datapath.status()["maps"]}
    assert st["policy"]["entries"] == 1 and st["policy"]["entries_all_slots"] == 2


def test_sctp_ports(sandbox, datapath, events):
    """SCTP by port, with raw packets (the kernel's SCTP stack need not be there)."""
    a, b, _ = sandbox.pods
    datapath.apply(sandbox.state(1, {b.ep.id: (True, [entry(a.identity, 132, 3868)], False, [])}))
    events.drain()
    raw = a.socket_raw(132)
    for dport in (3868, 3869):
        raw.sendto((40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0" * 8, (b.ip, 0))
    raw.close()
    evts = _collect(events)
    verdicts = {e.dport: e.verdict for e in _of(evts, type=ev.EVENT_POLICY_VERDICT, proto=132)}
    assert verdicts == {3868: ev.VERDICT_FORWARDED, 3869: ev.VERDICT_DROPPED}
    assert [(d.dport, d.subtype) for d in _of(evts, type=ev.EVENT_DROP)] == [(3869, ev.DROP_POLICY)]
