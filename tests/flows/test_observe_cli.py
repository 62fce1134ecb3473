"""`ciliumctl observe` as a user runs it, against an Observer server on a unix socket in a temp dir: default
--last 20, formats, filters and --not, falling back to observer.Observer/GetFlows when the server has no batched
method (a real Hubble), and one-line errors with exit 2."""

import json
import os
import select
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest

from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.server import FlowSource, ObserverServer, _handlers
from ciliumctl.flows.store import FlowStore

from .flowdata import SNAP, rec

CLI = [sys.executable, "-m", "ciliumctl.cli.main", "observe"]


def fill(store, n=30):
    recs = [rec(ts_ns=i * 10**9, sport=1000 + i, **({"type": 1, "subtype": 133, "verdict": 2} if i % 3 == 0
                                                    else {})) for i in range(n)]
    store.add_records(b"".join(recs), n, SNAP)


@pytest.fixture
def server(tmp_path):
    store = FlowStore(100)
    fill(store)
    srv = ObserverServer(FlowSource(store, node_name="node-a"), tmp_path / "hubble.sock")
    srv.start()
    yield f"unix://{tmp_path / 'hubble.sock'}"
    srv.stop()


def observe(server, *args):
    return subprocess.run([*CLI, "--server", server, *args], capture_output=True, text=True, timeout=60)


def test_default_is_the_last_20_compact(server):
    r = observe(server)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 20 and r.stderr == ""
    assert lines[-1].endswith("default/tiefighter:1029 (ID:300) -> empire/deathstar-6f87d5-x2x9z:80 (ID:301) "
                              "policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)")


def test_formats_and_filters(server):
    r = observe(server, "--all", "-o", "jsonpb", "--verdict", "DROPPED")
    flows = [json.loads(line)["flow"] for line in r.stdout.splitlines()]
    assert len(flows) == 10 and {f["verdict"] for f in flows} == {"DROPPED"}
    r = observe(server, "--all", "-o", "json", "--not", "--verdict", "DROPPED", "--to-port", "80")
    flows = [json.loads(line)["flow"] for line in r.stdout.splitlines()]
    assert len(flows) == 20 and {f["verdict"] for f in flows} == {"FORWARDED"}
    r = observe(server, "--first", "2", "-o", "dict")
    assert r.stdout.count("  TIMESTAMP: ") == 2 and "------------" in r.stdout
    r = observe(server, "--last", "3", "-o", "table")
    assert r.stdout.splitlines()[0].split() == ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    r = observe(server, "--all", "--aggregate-by", "verdict,port")
    assert r.stdout.splitlines()[1:] == ["FORWARDED   80/TCP   20", "DROPPED     80/TCP   10"]


def test_falls_back_to_plain_get_flows(tmp_path):
    store = FlowStore(10)
    fill(store, 5)
    observer_only = _handlers(FlowSource(store, node_name="node-a"))[0]   # like a real Hubble: no batches
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((observer_only,))
    sock = tmp_path / "plain.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        r = observe(f"unix://{sock}", "--all", "-o", "json")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 5
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            with pytest.raises(grpc.RpcError) as err:
                list(ch.unary_stream("/ciliumctl.batch.FlowBatches/GetFlowBatches",
                                     request_serializer=opb.GetFlowsRequest.SerializeToString)(
                    opb.GetFlowsRequest()))
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(0)


@pytest.mark.parametrize("args, message", [
    (["--verdict", "MAYBE"], "--verdict 'MAYBE'"),
    (["--first", "2", "-f"], "--first cannot be combined with --follow"),
    (["-o", "xml"], "--output 'xml'"),
    (["--aggregate-by", "colour"], "--aggregate-by colour"),
    (["--since", "last tuesday"], "time 'last tuesday'"),
])
def test_bad_input_is_one_line_exit_2(server, args, message):
    r = observe(server, *args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("mode", ["--last=1", "--follow"])
def test_no_agent_is_one_line_exit_2(tmp_path, mode):
    r = observe(f"unix://{tmp_path}/nothing.sock", mode)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"Error: cannot reach the Hubble API at unix://{tmp_path}/nothing.sock; start "
                                "the agent with `ciliumctl agent start` (or pass --server)")


def test_more_hubble_filter_flags(server):
    r = observe(server, "--all", "-o", "json", "--from-namespace", "default", "--to-identity", "301",
                "--node-name", "node-*", "--tcp-flags", "SYN")
    flows = [json.loads(line)["flow"] for line in r.stdout.splitlines()]
    assert r.returncode == 0 and len(flows) == 30
    uuid = flows[4]["uuid"]
    r = observe(server, "--all", "-o", "json", "--uuid", uuid)
    assert [json.loads(line)["flow"]["uuid"] for line in r.stdout.splitlines()] == [uuid]
    r = observe(server, "--all", "--to-namespace", "default")
    assert r.returncode == 0 and r.stdout == ""


@pytest.mark.parametrize("output", ["json", "compact"])
def test_follow_into_a_pipe_prints_each_batch_as_it_comes(server, output):
    """A reader at the other end of a pipe (`observe -f -o json | jq`) gets the flows while observe still runs,
    not when it exits (stdout into a pipe is block-buffered)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # as a user's shell runs it
    p = subprocess.Popen([*CLI, "--server", server, "-f", "--last", "3", "-o", output], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    got = b""
    try:
        deadline = time.monotonic() + 30
        while got.count(b"\n") < 3 and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 1.0)[0]:
                got += os.read(p.stdout.fileno(), 65536)
        assert got.count(b"\n") == 3 and p.poll() is None, got
    finally:
        p.terminate()
        p.wait(timeout=10)
