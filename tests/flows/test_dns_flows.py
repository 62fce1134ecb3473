"""DNS flows (flows/dns.py): the DNS proxy's queries and answers as Hubble L7 DNS flows in the agent's ring, served
to the real hubble CLI (which prints them as `dns-request proxy` / `dns-response proxy`) and to `ciliumctl
observe -t l7`, filtered like any flow."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

from ciliumctl.flows.dns import DNSEvent, dns_flow, dns_flows, summary
from ciliumctl.flows.server import FlowSource, ObserverServer
from ciliumctl.flows.store import FlowStore

from .flowdata import SNAP, rec

T = 1_764_150_000_000_000_000
TIE, SERVER = ("10.200.0.12", 40001), ("10.200.0.13", 53)
ASK = dict(client=TIE, server=SERVER, proto=17, query="api.example.test.", qtypes=("A",), client_identity=300,
           server_identity=301)
EVENTS = [
    DNSEvent(response=False, time_ns=T, **ASK),
    DNSEvent(response=True, ips=("10.99.0.5",), ttl=7, rrtypes=("A",), latency_ns=800_000, time_ns=T + 1000, **ASK),
    DNSEvent(response=False, allowed=False, time_ns=T + 2000, **{**ASK, "query": "evil.example.test."}),
]


def test_summaries_are_hubbles():
    assert summary(EVENTS[0]) == "DNS Query api.example.test. A"
    assert summary(EVENTS[1]) == 'DNS Answer "10.99.0.5" TTL: 7 (Proxy api.example.test. A)'
    nx = DNSEvent(response=True, rcode=3, **ASK)
    assert summary(nx) == "DNS Answer RCode: Non-Existent Domain TTL: 0 (Proxy api.example.test. A)"


def test_the_flow_fields():
    req, resp = (dns_flow(e, SNAP, "node-a") for e in EVENTS[:2])
    assert req.l7.type == 1 and req.l7.dns.query == "api.example.test." and not req.l7.dns.ips
    assert req.source.pod_name == "tiefighter" and req.l4.UDP.destination_port == 53
    assert resp.is_reply.value and resp.source.pod_name.startswith("deathstar") and resp.IP.destination == TIE[0]
    assert list(resp.l7.dns.ips) == ["10.99.0.5"] and resp.l7.dns.ttl == 7 and resp.l7.dns.observation_source == "proxy"
    assert resp.event_type.type == 129 and resp.Type == 2 and resp.l7.latency_ns == 800_000
    assert dns_flow(EVENTS[2], SNAP, "node-a").verdict == 2        # a refused query: DROPPED


def _serve(tmp_path):
    store = FlowStore(100)
    store.add_records(rec(), 1, SNAP)                               # an L3/L4 flow beside them
    for e in EVENTS:                                                # as the agent keeps them: built when read
        store.add_l7(e, e.flow_count, SNAP, partial(dns_flows, node_name="node-a"))
    sock = tmp_path / "hubble.sock"
    server = ObserverServer(FlowSource(store, node_name="node-a", wall_offset_ns=T, boot_id=7), sock)
    server.start()
    return server, f"unix://{sock}"


def test_the_real_hubble_prints_them(tmp_path, hubble):
    server, addr = _serve(tmp_path)
    try:
        out = subprocess.run([str(hubble), "observe", "--server", addr, "-t", "l7", "--last", "10"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        lines = out.strip().splitlines()
        assert len(lines) == 3, out
        assert "dns-request proxy FORWARDED (DNS Query api.example.test. A)" in lines[0]
        assert "dns-response proxy FORWARDED (DNS Answer \"10.99.0.5\" TTL: 7 (Proxy api.example.test. A))" in lines[1]
        assert "dns-request proxy DROPPED (DNS Query evil.example.test. A)" in lines[2]
        js = subprocess.run([str(hubble), "observe", "--server", addr, "--last", "10", "-o", "json",
                             "--protocol", "dns"], capture_output=True, text=True, timeout=60, check=True).stdout
        flows = [json.loads(x)["flow"] for x in js.splitlines()]
        assert [f["l7"]["type"] for f in flows] == ["REQUEST", "RESPONSE", "REQUEST"]
        assert flows[1]["l7"]["dns"] == {"query": "api.example.test.", "ips": ["10.99.0.5"], "ttl": 7,
                                         "observation_source": "proxy", "qtypes": ["A"], "rrtypes": ["A"]}
        # ciliumctl observe prints what hubble prints
        ours = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "observe", "--server", addr, "-t", "l7",
                               "--last", "10"], capture_output=True, text=True, timeout=60)
        assert ours.stdout == out, ours.stderr
    finally:
        server.stop()
