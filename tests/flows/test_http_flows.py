"""HTTP flows (flows/http.py): HAProxy's log lines (node/http_proxy/service.parse_log) as Hubble L7 HTTP flows in the
agent's ring, served to the real hubble CLI (which prints them as `http-request` / `http-response`) and to
`ciliumctl observe -t l7 --http-method/--http-path/--http-status`, which prints the same."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

from ciliumctl.flows.http import http_flows, summary
from ciliumctl.flows.server import FlowSource, ObserverServer
from ciliumctl.flows.store import FlowStore
from ciliumctl.node.http_proxy.service import parse_log

from .flowdata import SNAP, rec

T = 1_764_150_000_000_000_000
T_MS = T // 1_000_000
# two lines as HAProxy logs them (haproxy_config.LOG_FORMAT): a landing that passed, an exhaust-port PUT refused
LINES = [f"{T_MS}|10.200.0.12|40001|10.200.0.13|80|300|301|ingress|200|3|4|POST|HTTP/1.1|deathstar|FORWARDED"
         "|/v1/request-landing",
         f"{T_MS + 5}|10.200.0.12|40002|10.200.0.13|80|300|301|ingress|403|-1|0|PUT|HTTP/1.1|deathstar|DROPPED"
         "|/v1/exhaust-port"]


def test_log_lines_parse_and_summaries_are_hubbles():
    ok, denied = (parse_log(x) for x in LINES)
    assert ok is not None and denied is not None
    assert ok.client == ("10.200.0.12", 40001) and ok.server == ("10.200.0.13", 80) and ok.allowed and ok.ingress
    assert ok.latency_ns == 3_000_000 and ok.url == "http://deathstar/v1/request-landing"
    assert summary(ok, False) == "HTTP/1.1 POST http://deathstar/v1/request-landing"
    assert summary(ok, True) == "HTTP/1.1 200 3ms (POST http://deathstar/v1/request-landing)"
    assert not denied.allowed and denied.code == 403 and denied.latency_ns == 0
    assert parse_log("garbage") is None and parse_log("a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p") is None


def test_the_flow_fields():
    ok, denied = (parse_log(x) for x in LINES)
    req, resp = http_flows(ok, SNAP, "node-a")
    assert req.Type == 2 and req.event_type.type == 129 and req.l7.type == 1 and req.traffic_direction == 1
    assert req.source.pod_name == "tiefighter" and req.l7.http.method == "POST" and req.l7.http.code == 0
    assert resp.is_reply.value and resp.IP.source == "10.200.0.13" and resp.l7.http.code == 200
    assert resp.l7.latency_ns == 3_000_000 and resp.l4.TCP.destination_port == 40001
    (only,) = http_flows(denied, SNAP, "node-a")           # denied: the request only, DROPPED
    assert only.verdict == 2 and only.l7.type == 1


def _serve(tmp_path):
    store = FlowStore(100)
    store.add_records(rec(), 1, SNAP)                       # an L3/L4 flow beside them
    for line in LINES:                                      # as the agent keeps them: built when read
        event = parse_log(line)
        store.add_l7(event, event.flow_count, SNAP, partial(http_flows, node_name="node-a"))
    sock = tmp_path / "hubble.sock"
    server = ObserverServer(FlowSource(store, node_name="node-a", wall_offset_ns=T, boot_id=7), sock)
    server.start()
    return server, f"unix://{sock}"


def test_the_real_hubble_prints_them_and_observe_filters_them(tmp_path, hubble):
    server, addr = _serve(tmp_path)
    try:
        out = subprocess.run([str(hubble), "observe", "--server", addr, "-t", "l7", "--last", "10"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        lines = out.strip().splitlines()
        assert len(lines) == 3, out
        assert "http-request FORWARDED (HTTP/1.1 POST http://deathstar/v1/request-landing)" in lines[0]
        assert "http-response FORWARDED (HTTP/1.1 200 3ms (POST http://deathstar/v1/request-landing))" in lines[1]
        assert "http-request DROPPED (HTTP/1.1 PUT http://deathstar/v1/exhaust-port)" in lines[2]
        js = subprocess.run([str(hubble), "observe", "--server", addr, "--last", "10", "-o", "json",
                             "--protocol", "http"], capture_output=True, text=True, timeout=60, check=True).stdout
        flows = [json.loads(x)["flow"] for x in js.splitlines()]
        assert flows[1]["l7"]["http"] == {"code": 200, "method": "POST", "url": "http://deathstar/v1/request-landing",
                                          "protocol": "HTTP/1.1"}
        ours = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "observe", "--server", addr, "-t", "l7",
                               "--last", "10"], capture_output=True, text=True, timeout=60)
        assert ours.stdout == out, ours.stderr
        for flags, want in ((["--http-method", "PUT"], 1), (["--http-path", "/v1/request-.*"], 2),
                            (["--http-status", "200"], 1)):
            ref = subprocess.run([str(hubble), "observe", "--server", addr, "-t", "l7", "--last", "10", *flags],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            got = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "observe", "--server", addr, "-t",
                                  "l7", "--last", "10", *flags], capture_output=True, text=True, timeout=60)
            assert got.stdout == ref and len(ref.strip().splitlines()) == want, (flags, got.stderr, ref)
    finally:
        server.stop()
