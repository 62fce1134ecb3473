"""The real hubble CLI (1.19, ../shared/tools) against ciliumctl's Observer server on a unix socket: every output
format, the filter flags, --follow, `hubble status` and `hubble list nodes`; and `ciliumctl observe` printing the
same flows exactly as hubble prints them. The flows are datapath records (the tests' synthetic ones here; real
packets through the real datapath in test_e2e.py)."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from datetime import datetime

import pytest

from ciliumctl.flows import names
from ciliumctl.flows.server import FlowSource, ObserverServer
from ciliumctl.flows.store import FlowStore

from .flowdata import SNAP, ip, rec

T0 = 1_764_150_000_000_000_000   # 2025-11-26T09:40:00Z: flow i happens at T0 + i seconds
SEC = 1_000_000_000
CILIUMCTL = [sys.executable, "-m", "ciliumctl.cli.main", "observe"]

XWING = dict(saddr=ip("10.200.0.14"), src_identity=302)
NO_IP = dict(saddr=b"\0" * 4, daddr=b"\0" * 4, sport=0, dport=0)
# (name, record fields): one of every kind of event the datapath emits, on the endpoints of flowdata.SNAP
FLOWS = [
    ("allowed", {}),                                                     # tiefighter -> deathstar:80, L3-L4
    ("denied", dict(subtype=133, verdict=2, match_type=0, rule_cookie=0, **XWING)),
    ("drop", dict(type=1, subtype=133, verdict=2, match_type=0, rule_cookie=0, **XWING)),
    ("denied-by-rule", dict(subtype=181, verdict=2, direction=2, ep_id=12, daddr=ip("10.200.0.14"), dst_identity=302,
                            proto=17, sport=5353, dport=53, match_type=1, rule_cookie=9)),
    ("drop-by-rule", dict(type=1, subtype=181, verdict=2, direction=2, ep_id=12, daddr=ip("10.200.0.14"),
                          dst_identity=302, proto=17, sport=5353, dport=53, match_type=1, rule_cookie=9)),
    ("to-endpoint", dict(type=4, subtype=0)),
    ("reply", dict(type=4, subtype=5, saddr=ip("10.200.0.13"), daddr=ip("10.200.0.12"), src_identity=301,
                   dst_identity=300, sport=80, dport=40000, is_reply=1, tcp_flags=0x12)),
    ("audit", dict(verdict=4, saddr=ip("1.2.3.4"), src_identity=2, proto=1, sport=8, dport=0, match_type=0,
                   rule_cookie=0)),
    ("world-ping", dict(type=4, subtype=0, saddr=ip("1.2.3.4"), src_identity=2, proto=1, sport=8, dport=0)),
    ("sctp-l4-only", dict(direction=2, ep_id=13, saddr=ip("10.200.0.13"), daddr=ip("10.200.0.12"),
                          src_identity=301, dst_identity=300, proto=132, sport=5000, dport=3868, match_type=3)),
    ("ipv6-drop", dict(type=1, subtype=139, verdict=2, proto=0, src_identity=0, rule_cookie=0, match_type=0,
                       **NO_IP)),
]
NAMES = [n for n, _ in FLOWS]


def serve(tmp_path, records, capacity=1000, snap=SNAP):
    store = FlowStore(capacity)
    store.add_records(b"".join(records), len(records), snap)
    sock = tmp_path / "hubble.sock"
    server = ObserverServer(FlowSource(store, node_name="node-a", wall_offset_ns=T0, boot_id=7), sock)
    server.start()
    return server, store, f"unix://{sock}"


@pytest.fixture
def node(tmp_path):
    server, store, address = serve(tmp_path, [rec(ts_ns=i * SEC, **kw) for i, (_, kw) in enumerate(FLOWS)])
    yield store, address
    server.stop()


def run_hubble(hubble, address, *args, check=True):
    r = subprocess.run([str(hubble), *args, "--server", address], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HOME": "/nonexistent"})   # no user config file
    if check:
        assert r.returncode == 0, r.stderr
    return r


def observe_hubble(hubble, address, *args):
    return run_hubble(hubble, address, "observe", "--color", "never", *args).stdout


def observe_ciliumctl(address, *args):
    r = subprocess.run([*CILIUMCTL, "--server", address, *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def which(out: str) -> list[str]:
    """The names of the flows in jsonpb output, by their time (flow i is at T0 + i s)."""
    got = []
    for line in out.splitlines():
        t = json.loads(line)["flow"]["time"]
        secs = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() - T0 / SEC
        got.append(NAMES[round(secs)])
    return got


def test_compact_reads_like_cilium(node, hubble):
    _, address = node
    lines = dict(zip(NAMES, observe_hubble(hubble, address, "--all").splitlines()))
    assert len(lines) == len(FLOWS) and not [l for l in lines.values() if "UNKNOWN" in l]
    assert lines["allowed"].endswith(": default/tiefighter:40000 (ID:300) -> empire/deathstar-6f87d5-x2x9z:80 "
                                     "(ID:301) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)")
    assert lines["denied"].endswith(": default/xwing:40000 (ID:302) <> empire/deathstar-6f87d5-x2x9z:80 (ID:301) "
                                    "policy-verdict:none INGRESS DENIED (TCP Flags: SYN)")
    assert lines["drop"].endswith("(ID:301) Policy denied DROPPED (TCP Flags: SYN)")
    assert lines["denied-by-rule"].endswith(": default/tiefighter:5353 (ID:300) <> default/xwing:53 (ID:302) "
                                            "policy-verdict:L3-Only EGRESS DENIED (UDP)")
    assert lines["drop-by-rule"].endswith("Policy denied by denylist DROPPED (UDP)")
    assert lines["to-endpoint"].endswith("(ID:301) to-endpoint FORWARDED (TCP Flags: SYN)")
    assert lines["reply"].endswith(": default/tiefighter:40000 (ID:300) <- empire/deathstar-6f87d5-x2x9z:80 "
                                   "(ID:301) from-endpoint FORWARDED (TCP Flags: SYN, ACK)")
    assert lines["audit"].endswith(": 1.2.3.4 (world) -> empire/deathstar-6f87d5-x2x9z (ID:301) "
                                   "policy-verdict:none INGRESS AUDITED (ICMPv4 EchoRequest)")
    assert lines["sctp-l4-only"].endswith("policy-verdict:L4-Only EGRESS ALLOWED (SCTP)")
    # a routable IPv6 packet carries no IPv4 addresses: hubble names hosts by IP only and shows none
    assert lines["ipv6-drop"].endswith(":  (unknown) <>  (ID:301) Unsupported L3 protocol DROPPED (IPv6)")


@pytest.mark.parametrize("opts", [[], ["--print-policy-names", "--print-node-name"]])
def test_ciliumctl_compact_lines_equal_hubbles(node, hubble, opts):
    _, address = node
    theirs = observe_hubble(hubble, address, "--all", *opts).splitlines()
    ours = observe_ciliumctl(address, "--all", *opts).splitlines()
    assert len(ours) == len(theirs) == len(FLOWS)
    for name, a, b in zip(NAMES, ours, theirs):
        if name == "ipv6-drop":
            # what hubble cannot know without an IP: ciliumctl names the endpoint whose policy dropped it
            assert a == b.replace(":  (unknown) <>  (ID:301)",
                                  ": - (unknown) <> empire/deathstar-6f87d5-x2x9z (ID:301)")
        else:
            assert a == b
    if opts:
        assert " [node-a]: " in ours[0] and ours[0].endswith("ALLOWED BY allow-empire (CiliumNetworkPolicy) "
                                                              "(TCP Flags: SYN)")
        assert "EGRESS DENIED BY no-xwing (CiliumClusterwideNetworkPolicy)" in ours[NAMES.index("denied-by-rule")]


@pytest.mark.parametrize("output", ["dict", "table", "json", "jsonpb"])
def test_every_output_format_equals_hubbles(node, hubble, output):
    _, address = node
    args = ["--all", "-o", output, "--not", "--type", "drop:139"]   # the IPv6 drop aside (see above)
    theirs, ours = observe_hubble(hubble, address, *args), observe_ciliumctl(address, *args)
    if output.startswith("json"):
        theirs = [json.loads(line) for line in theirs.splitlines()]
        ours = [json.loads(line) for line in ours.splitlines()]
        assert [r["flow"]["event_type"]["type"] for r in theirs] == [5, 5, 1, 5, 1, 4, 4, 5, 4, 5]
    else:
        assert output != "table" or theirs.splitlines()[0].split() == \
            ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
        assert output != "dict" or theirs.count("------------") == len(FLOWS) - 2
    assert ours == theirs


# flag sets and the flows they select, by what the flows are (FLOWS above)
FILTERS = [
    (["-t", "policy-verdict"], ["allowed", "denied", "denied-by-rule", "audit", "sctp-l4-only"]),
    (["-t", "drop"], ["drop", "drop-by-rule", "ipv6-drop"]),
    (["-t", "trace"], ["to-endpoint", "reply", "world-ping"]),
    (["-t", "trace:to-endpoint"], ["to-endpoint", "world-ping"]),
    (["-t", "trace:from-endpoint", "-t", "drop:181"], ["drop-by-rule", "reply"]),
    (["--verdict", "DROPPED"], ["denied", "drop", "denied-by-rule", "drop-by-rule", "ipv6-drop"]),
    (["--verdict", "AUDIT"], ["audit"]),
    (["--not", "--verdict", "DROPPED"], ["allowed", "to-endpoint", "reply", "audit", "world-ping", "sctp-l4-only"]),
    # one blacklist filter: excluded are flows both DROPPED and from xwing
    (["--not", "--verdict", "DROPPED", "--not", "--from-pod", "default/xwing"],
     [n for n in NAMES if n not in ("denied", "drop")]),
    (["--from-pod", "default/xwing"], ["denied", "drop"]),
    (["--from-pod", "xwing", "--verdict", "FORWARDED"], []),
    (["--to-namespace", "empire"], ["allowed", "denied", "drop", "to-endpoint", "audit", "world-ping", "ipv6-drop"]),
    (["--port", "53"], ["denied-by-rule", "drop-by-rule"]),
    (["--to-port", "80", "--type", "policy-verdict"], ["allowed", "denied"]),
    (["--label", "org=alliance"], ["denied", "drop", "denied-by-rule", "drop-by-rule"]),
    (["--from-label", "k8s:class=deathstar"], ["reply", "sctp-l4-only"]),
    (["--traffic-direction", "egress"], ["denied-by-rule", "drop-by-rule", "sctp-l4-only"]),
    (["--drop-reason-desc", "POLICY_DENY"], ["denied-by-rule", "drop-by-rule"]),
    (["--from-identity", "2"], ["audit", "world-ping"]),
    (["--protocol", "icmp"], ["audit", "world-ping"]),
    (["--since", "2025-11-26T09:40:06Z", "--until", "2025-11-26T09:40:08Z"], ["reply", "audit", "world-ping"]),
]


@pytest.mark.parametrize("args, expected", FILTERS, ids=[" ".join(a) for a, _ in FILTERS])
def test_filters_select_the_same_flows(node, hubble, args, expected):
    _, address = node
    extra = [] if "--since" in args else ["--all"]
    assert which(observe_hubble(hubble, address, *extra, "-o", "jsonpb", *args)) == expected
    assert which(observe_ciliumctl(address, *extra, "-o", "jsonpb", *args)) == expected


def test_follow_streams_new_flows(node, hubble):
    store, address = node
    proc = subprocess.Popen([str(hubble), "observe", "--server", address, "--follow", "--last", "2", "-o", "jsonpb",
                             "-t", "policy-verdict"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOME": "/nonexistent"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    try:
        history = [lines.get(timeout=30) for _ in range(2)]         # the stream is open once history arrived
        assert which("".join(history)) == ["audit", "sctp-l4-only"]
        new = [rec(ts_ns=(len(FLOWS) + i) * SEC, sport=7000 + i, **kw) for i, kw in
               enumerate([{}, dict(type=4, subtype=0), dict(subtype=133, verdict=2, **XWING)])]
        store.add_records(b"".join(new), len(new), SNAP)
        got = [json.loads(lines.get(timeout=30))["flow"] for _ in range(2)]   # the trace is filtered out
        assert [(f["l4"]["TCP"]["source_port"], f["verdict"]) for f in got] == [(7000, "FORWARDED"), (7002, "DROPPED")]
        assert lines.empty()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_status_and_list_nodes(node, hubble):
    _, address = node
    out = run_hubble(hubble, address, "status").stdout
    assert f"Healthcheck (via {address}): Ok" in out
    assert f"Current/Max Flows: {len(FLOWS)}/1,000 ({len(FLOWS) / 10:.2f}%)" in out
    assert re.search(r"^Flows/s: \d+\.\d\d$", out, re.M) and "Connected Nodes: 1/1" in out
    table = run_hubble(hubble, address, "list", "nodes").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"]
    assert table[1].split()[:2] == ["node-a", "Connected"] and table[1].endswith(f"{len(FLOWS)}/1000 (  1.10%)")
    nodes = json.loads(run_hubble(hubble, address, "list", "nodes", "-o", "json").stdout)
    assert [(n["name"], n["state"], n["num_flows"]) for n in nodes] == [("node-a", "NODE_CONNECTED", str(len(FLOWS)))]
    assert run_hubble(hubble, address, "list", "namespaces").stdout.split() == ["NAMESPACE", "default", "empire"]


def _number_flows():
    """Every code hubble has a name for, and some it has none for, each in a flow of its own."""
    out = []
    for code in [*sorted(names.DROP_REASONS), 1, 250]:
        out.append(dict(type=1, subtype=code, verdict=2))
    for point in range(16):
        out.append(dict(type=4, subtype=point, verdict=1))
    for match in range(8):
        for verdict in (1, 2, 4):
            out.append(dict(type=5, verdict=verdict, match_type=match, direction=1 + match % 2,
                            subtype=133 if verdict == 2 else 0))
    for identity in [*range(13), 255, 256, 70000]:
        out.append(dict(type=4, subtype=5, src_identity=identity, saddr=ip("192.0.2.9")))
    for verdict in range(9):
        out.append(dict(type=5, verdict=verdict))
    for verdict in range(9):
        out.append(dict(type=9, verdict=verdict))   # no such message type: "UNKNOWN", the verdict's own name
    return out


def test_every_number_prints_as_hubble_names_it(tmp_path, hubble):
    """Our tables of Cilium's names (drop reasons, trace points, match types, identities, verdicts) against the
    ones compiled into the real hubble."""
    flows = _number_flows()
    server, _, address = serve(tmp_path, [rec(ts_ns=i * SEC, **kw) for i, kw in enumerate(flows)])
    try:
        theirs = observe_hubble(hubble, address, "--all").splitlines()
        ours = observe_ciliumctl(address, "--all").splitlines()
    finally:
        server.stop()
    assert len(theirs) == len(flows)
    assert [a for a, b in zip(ours, theirs) if a != b] == []
    assert sum("Policy denied" in line for line in theirs) == 2 and sum("to-crypto" in line for line in theirs) == 1
    assert [line for line in theirs if " UNKNOWN " in line] == theirs[-9:]


def test_json_output_is_hubbles_byte_for_byte(tmp_path, hubble):
    """`observe -o json` writes the agent's own JSON lines (flows.render, GetFlowLines): every kind of flow, names
    hubble has and has not, and a lost-events notice, exactly as the real hubble prints them from the same server."""
    connections = [dict(kw, sport=1024 + 7919 * i % 64000) for i, (_, kw) in enumerate(FLOWS * 3)]  # other ports
    kinds = [*_number_flows(), *(kw for _, kw in FLOWS), *connections]
    records = [rec(ts_ns=i * SEC + i * 1001, **kw) for i, kw in enumerate(kinds)]
    server, store, address = serve(tmp_path, records)
    store.add_lost(1, 5)   # PERF_EVENT_RING_BUFFER
    try:
        for args, lines in ((["--all"], len(records) + 1), (["--last", "7"], 8), (["--first", "3"], 3)):
            theirs = observe_hubble(hubble, address, *args, "-o", "json")
            assert theirs.count("\n") == lines
            assert observe_ciliumctl(address, *args, "-o", "json") == theirs
    finally:
        server.stop()


def test_a_missing_reference_tool_fails_under_ci(monkeypatch):
    import conftest  # tests/conftest.py

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="reference tool no-such-tool missing"):
        conftest.reference_tool("no-such-tool")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.reference_tool("no-such-tool")


@pytest.mark.parametrize("output", ["compact", "dict", "table", "jsonpb"])
def test_lost_events_print_as_hubbles(tmp_path, hubble, output):
    server, store, address = serve(tmp_path, [rec(ts_ns=0), rec(ts_ns=SEC, type=1, subtype=133, verdict=2)])
    try:
        store.add_lost(3, 17)   # HUBBLE_RING_BUFFER
        store.add_records(rec(ts_ns=2 * SEC, type=4, subtype=0), 1, SNAP)
        args = ["--all", "-o", output, "--print-node-name"]
        theirs, ours = observe_hubble(hubble, address, *args), observe_ciliumctl(address, *args)
    finally:
        server.stop()
    assert "HUBBLE_RING_BUFFER" in theirs and "17" in theirs
    if output == "jsonpb":
        ours, theirs = [json.loads(l) for l in ours.splitlines()], [json.loads(l) for l in theirs.splitlines()]
    assert ours == theirs


@pytest.mark.parametrize("args", [
    [], ["--http-status", "5+", "--http-method", "get", "--http-path", "/a", "--http-url", "x",
         "--http-header", "foo:bar"],
    ["-A"], ["--from-all-namespaces", "--to-service", "s", "--interface", "eth0", "--node-label", "a=b"],
    ["--pod", "foo", "-n", "bar", "--label", "a=b", "--node-name", "x", "--not", "--verdict", "DROPPED"],
    ["-A", "--label", "a", "--service", "s"], ["-n", "foo", "--service", "s"], ["--workload", "deploy/x/y", "-4"],
    ["--fqdn", "*.io", "--ip-version", "none", "-6"],
    ["--allowlist", '{"source_pod":["a/"],"verdict":["DROPPED"]}', "--to-fqdn", "x",
     "--denylist", '{"http_header":[{"key":"x"}],"interface":[{"name":"e"}]}'],
])
def test_print_raw_filters_equal_hubbles(hubble, args):
    r = run_hubble(hubble, "unix:///nonexistent", "observe", "--print-raw-filters", *args)
    assert observe_ciliumctl("unix:///nonexistent", "--print-raw-filters", *args) == r.stdout


@pytest.mark.parametrize("args", [
    ["-n", "x", "--to-pod", "a"], ["--from-service", "s", "-n", "x"], ["--to-pod", "a", "-A"],
    ["-n", "x", "--to-ip", "1.1.1.1"], ["--fqdn", "a", "--ip", "1.1.1.1"], ["--pod", "a", "--from-pod", "b"],
    ["-A", "-n", "x"], ["-l", "a", "--to-label", "b"], ["--port", "1", "--from-port", "2"],
    ["--not", "--to-pod", "a", "--not", "-n", "x"],
])
def test_filter_conflicts_are_refused_as_hubble_refuses_them(hubble, args):
    r = run_hubble(hubble, "unix:///nonexistent", "observe", "--print-raw-filters", *args, check=False)
    theirs = re.search(r"filters --\S+ and --\S+ cannot be combined", r.stderr)
    ours = subprocess.run([*CILIUMCTL, "--print-raw-filters", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and theirs, r.stderr
    assert ours.returncode == 2 and ours.stderr == f"Error: {theirs[0]}\n"


@pytest.mark.parametrize("args", [
    ["-n", "x", "--pod", "a"], ["--from-all-namespaces", "--from-pod", "a"], ["--not", "--to-pod", "a", "-n", "x"],
    ["--to-all-namespaces", "--from-ip", "1.1.1.1"], ["--to-namespace", "a", "--to-pod", "b", "--from-service", "c"],
    ["-n", "a", "-n", "b", "--service", "s", "--label", "x"],
])
def test_combinations_hubble_takes_are_taken(hubble, args):
    assert observe_ciliumctl("unix:///nonexistent", "--print-raw-filters", *args) == \
        run_hubble(hubble, "unix:///nonexistent", "observe", "--print-raw-filters", *args).stdout


@pytest.mark.parametrize("args", [
    ["--http-url", "x"], ["--http-method", "GET"], ["--not", "--http-method", "GET"], ["--service", "kube-dns"],
    ["-A"], ["--from-all-namespaces", "--verdict", "DROPPED"], ["-4"], ["-6"], ["--interface", "lxc0"],
    ["--node-label", "zone=a"], ["--workload", "tiefighter"],
])
def test_new_filter_flags_select_the_same_flows_as_hubble(node, hubble, args):
    """hubble sends the FlowFilter fields to our server; ciliumctl builds the same ones."""
    _, address = node
    theirs = which(observe_hubble(hubble, address, "--all", "-o", "jsonpb", *args))
    assert which(observe_ciliumctl(address, "--all", "-o", "jsonpb", *args)) == theirs
    if args[0] in ("-A", "--not", "-4"):
        assert theirs   # every flow here has a pod on one side; none is an HTTP request
    elif args[0] in ("--http-url", "--http-method", "--service"):
        assert theirs == []   # no L7 or service flows here: a filter on them selects nothing, not everything


def test_hubble_http_status_needs_valid_codes(node, hubble):
    _, address = node
    r = run_hubble(hubble, address, "observe", "--http-status", "7", check=False)
    assert r.returncode != 0 and "invalid http status code filter" in r.stderr


def _without_ipv6_drop(text: str, output: str) -> str:
    """The ipv6-drop flow prints differently on purpose (see test_ciliumctl_compact_lines_equal_hubbles)."""
    if output == "dict":
        return "\n".join(text.split(DICT_SEP)[:-1])
    return "\n".join(text.splitlines()[:-1])


DICT_SEP = "------------\n"


@pytest.mark.parametrize("time_format", ["StampMilli", "YearMonthDay", "YearMonthDayHour", "YearMonthDayHourMinute",
                                         "RFC3339", "RFC3339Milli", "RFC3339Micro", "RFC3339Nano", "RFC1123Z"])
@pytest.mark.parametrize("output", ["compact", "dict", "table"])
def test_time_formats_equal_hubbles(node, hubble, time_format, output):
    _, address = node
    args = ["--all", "-o", output, "--time-format", time_format]
    theirs, ours = observe_hubble(hubble, address, *args), observe_ciliumctl(address, *args)
    assert _without_ipv6_drop(ours, output) == _without_ipv6_drop(theirs, output) != ""


@pytest.mark.parametrize("args", [["--numeric"], ["--ip-translation=false", "-o", "dict"],
                                  ["--numeric", "-o", "table", "--print-node-name"]])
def test_numeric_equals_hubbles(node, hubble, args):
    _, address = node
    ours = observe_ciliumctl(address, "--all", *args)
    assert ours == observe_hubble(hubble, address, "--all", *args) and "10.200.0.12" in ours
    assert "tiefighter" not in ours


@pytest.mark.parametrize("args", [[], ["--last", "3", "-o", "dict"], ["--first", "2", "--verdict", "DROPPED"],
                                  ["-o", "jsonpb", "--not", "-t", "policy-verdict"],
                                  ["--since", "2025-11-26T09:40:03Z", "--until", "2025-11-26T09:40:05Z"]])
def test_input_file_from_hubble_jsonpb(node, hubble, tmp_path, args):
    """A file the real hubble wrote (-o jsonpb), read back by both CLIs with the same filters and printers."""
    _, address = node
    dump = tmp_path / "flows.json"
    dump.write_text(observe_hubble(hubble, address, "--all", "-o", "jsonpb"))
    theirs = run_hubble(hubble, "unix:///nonexistent", "observe", "--color", "never", "--input-file", str(dump),
                        *args).stdout
    ours = observe_ciliumctl("unix:///nonexistent", "--input-file", str(dump), *args)
    output = args[args.index("-o") + 1] if "-o" in args else "compact"
    if "--since" in args or "--first" in args:
        assert ours == theirs != ""
    else:
        assert _without_ipv6_drop(ours, output) == _without_ipv6_drop(theirs, output) != ""
    piped = subprocess.run([*CILIUMCTL, "--input-file", "-", *args], input=dump.read_text(), capture_output=True,
                           text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert piped.returncode == 0 and piped.stdout == ours


def test_yaml_and_field_mask(node):
    import yaml

    _, address = node
    docs = list(yaml.safe_load_all(observe_ciliumctl(address, "--all", "-o", "yaml")))
    assert [d["flow"]["uuid"] for d in docs] == [json.loads(line)["flow"]["uuid"] for line in
                                                observe_ciliumctl(address, "--all", "-o", "jsonpb").splitlines()]
    masked = [json.loads(line)["flow"] for line in
              observe_ciliumctl(address, "--all", "-o", "jsonpb", "--field-mask", "time,verdict,source.pod_name")
              .splitlines()]
    assert len(masked) == len(FLOWS) and all(set(f) <= {"time", "verdict", "source"} for f in masked)
    assert masked[0] == {"time": "2025-11-26T09:40:00Z", "verdict": "FORWARDED", "source": {"pod_name": "tiefighter"}}
    for bad, message in ((["--field-mask", "time"], "Error: compact output format is not compatible with custom "
                                                    "field mask"),
                         (["-o", "json", "--field-mask", "bogus"], "Error: --field-mask 'bogus': not fields"),
                         (["--time-format", "Kitchen"], "Error: --time-format 'Kitchen': one of StampMilli"),
                         (["--input-file", "/nonexistent/x"], "Error: --input-file /nonexistent/x: No such file")):
        r = subprocess.run([*CILIUMCTL, "--server", address, *bad], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith(message), r.stderr


# --color: flows the synthetic datapath does not make, as a hubble -o jsonpb file has them (IPv6 with ports, DNS
# names, a port 0, every verdict, reserved identities, a reply, no endpoints at all, services)
COLOUR_FLOWS = [
    {"verdict": "TRACED", "IP": {"source": "fd00::1", "destination": "fd00::2", "ipVersion": "IPv6"},
     "l4": {"UDP": {"source_port": 1234, "destination_port": 53}}, "source": {"identity": 1},
     "destination": {"identity": 6}, "event_type": {"type": 4}, "Summary": "UDP", "is_reply": False},
    {"verdict": "TRANSLATED", "IP": {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"},
     "l4": {"TCP": {"source_port": 0, "destination_port": 443}}, "source": {"identity": 16777217},
     "destination": {"identity": 7}, "destination_names": ["a.example.com", "b.example.com"],
     "event_type": {"type": 4}, "Summary": "TCP"},
    {"verdict": "REDIRECTED", "IP": {"source": "10.0.0.1", "destination": "10.0.0.3", "ipVersion": "IPv4"},
     "source": {"identity": 2}, "destination": {"identity": 3}, "event_type": {"type": 5}, "is_reply": True,
     "Summary": "ICMPv4 EchoRequest"},
    {"verdict": "ERROR", "IP": {"source": "10.0.0.1", "destination": "10.0.0.3", "ipVersion": "IPv4"},
     "source": {"identity": 4}, "event_type": {"type": 1, "sub_type": 130}, "Summary": "x"},
    {"IP": {"source": "10.0.0.1", "destination": "10.0.0.3", "ipVersion": "IPv4"}, "event_type": {"type": 4},
     "Summary": "x"},
    # services name hosts after pods and before DNS names, and give their namespace (even to the pod: hubble's)
    {"verdict": "FORWARDED", "IP": {"source": "10.0.0.1", "destination": "10.0.0.3", "ipVersion": "IPv4"},
     "l4": {"UDP": {"source_port": 1234, "destination_port": 53}},
     "source": {"identity": 300, "namespace": "default", "pod_name": "client"},
     "source_service": {"name": "front", "namespace": "web"}, "destination": {"identity": 3, "namespace": "x"},
     "destination_service": {"name": "dns", "namespace": "kube-system"}, "event_type": {"type": 4},
     "Summary": "UDP", "is_reply": False},
    {"verdict": "FORWARDED", "IP": {"source": "10.0.0.1", "destination": "10.0.0.3", "ipVersion": "IPv4"},
     "source": {"identity": 300, "namespace": "default", "pod_name": "client"}, "source_service": {},
     "destination": {"identity": 3}, "destination_service": {"name": "noname"}, "destination_names": ["x.example"],
     "event_type": {"type": 4}, "Summary": "x"},
]


@pytest.fixture
def colour_file(node, hubble, tmp_path):
    """The node's flows as the real hubble writes them (-o jsonpb), then COLOUR_FLOWS."""
    _, address = node
    extra = [json.dumps({"flow": {"time": f"2025-11-26T09:41:{i:02d}Z", **f}, "node_name": "node-a"})
             for i, f in enumerate(COLOUR_FLOWS)]
    dump = tmp_path / "colour.json"
    dump.write_text(observe_hubble(hubble, address, "--all", "-o", "jsonpb") + "\n".join(extra) + "\n")
    return dump


@pytest.mark.parametrize("opts", [["-o", "compact"], ["-o", "dict"], ["--print-policy-names", "--print-node-name"],
                                  ["-o", "dict", "--numeric", "--print-node-name"], ["-o", "table"]])
def test_colour_always_is_hubbles_byte_for_byte(colour_file, hubble, opts):
    """hubble/pkg/printer/color.go: hosts cyan with the port yellow inside, identities magenta, verdicts
    green/red/yellow, in compact and dict; table never coloured. NO_COLOR does not stop `always` (hubble's neither)."""
    args = ["--input-file", str(colour_file), "--color", "always", "--not", "-t", "drop:139", *opts]  # see ipv6-drop
    theirs = run_hubble(hubble, "unix:///nonexistent", "observe", *args).stdout
    ours = observe_ciliumctl("unix:///nonexistent", *args)
    assert ours == theirs
    if "table" in opts:
        assert "\x1b" not in ours and "ALLOWED" in ours
        return
    assert ("\x1b[31mDENIED" in ours and "\x1b[32mALLOWED" in ours and "\x1b[33mAUDITED\x1b[0m" in ours and
            "\x1b[33mTRACED\x1b[0m" in ours and "\x1b[36m[fd00::1]:\x1b[33m1234\x1b[0m\x1b[0m" in ours)
    host = "10.200.0.12" if "--numeric" in opts else "default/tiefighter"
    assert f"\x1b[36m{host}:\x1b[33m40000\x1b[0m\x1b[0m" in ours
    assert "dict" in opts or "\x1b[35m(ID:300)\x1b[0m" in ours
    assert "--numeric" in opts or ("\x1b[36mweb/client:\x1b[33m1234\x1b[0m\x1b[0m" in ours and
                                   "\x1b[36mkube-system/dns:\x1b[33m53\x1b[0m\x1b[0m" in ours and
                                   "\x1b[36mclient\x1b[0m" in ours and "\x1b[36mnoname\x1b[0m" in ours)


def test_colour_never_and_case_as_hubble(colour_file, hubble):
    for when, coloured in (("never", False), ("ALWAYS", True), ("Auto", False)):   # auto: a pipe here
        args = ["--input-file", str(colour_file), "--color", when, "-o", "dict", "--not", "-t", "drop:139"]
        ours = observe_ciliumctl("unix:///nonexistent", *args)
        assert ours == run_hubble(hubble, "unix:///nonexistent", "observe", *args).stdout
        assert ("\x1b[" in ours) == coloured


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> bytes:
    """What argv writes to a terminal (a pty of its own)."""
    import pty

    parent, child = pty.openpty()
    with subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env) as proc:
        os.close(child)
        out = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:   # EIO: the program is gone and closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.close(parent)
    assert proc.wait(timeout=60) == 0, out
    return out


@pytest.mark.parametrize("env, coloured", [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)],
                         ids=["terminal", "NO_COLOR", "TERM=dumb"])
@pytest.mark.parametrize("output", ["compact", "dict", "table"])
def test_colour_auto_on_a_terminal_as_hubble(colour_file, hubble, env, coloured, output):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "TERM": "xterm", **env}
    args = ["observe", "--input-file", str(colour_file), "--color", "auto", "-o", output, "--last", "3"]
    theirs = _on_a_terminal([str(hubble), *args], base)
    ours = _on_a_terminal([sys.executable, "-m", "ciliumctl.cli.main", *args],
                          {**base, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert ours == theirs
    assert (b"\x1b[" in ours) == (coloured and output != "table")
