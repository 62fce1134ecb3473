"""Flow pipeline speed (needs root and BPF).

1. Kernel -> agent flow store: a small BPF program of the benchmark's own (tests/flows/emitter.py) writes
   ctl_event records into a ring buffer pinned where the datapath pins its own (4 MiB, like bpf/lib/maps.h),
   driven by BPF_PROG_TEST_RUN at a chosen rate; `ciliumctl agent run` (its own process) reads it. Offered vs
   delivered vs lost events/s per rate. Baseline, same run, same rates: a reader that takes one libbcc ring
   buffer callback per event and builds an object per event (the approach the issue warns about).
2. `ciliumctl observe --all -o json` into a pipe: flows/s, against a plain client of observer.Observer/GetFlows
   printing with google.protobuf.json_format (the straightforward Python client), same agent, same flows. The
   target holds for the rate in all, the client's start-up included.

Targets: >= 150k events/s delivered without loss; observe -o json >= 50k flows/s.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "flows"))
sys.path.insert(0, str(ROOT))

RATES = [int(r) for r in os.environ.get("BENCH_RATES", "50000,100000,150000,200000,300000,500000,1000000")
         .split(",")]
SECONDS = 3.0
OBSERVE_TARGET = 50_000   # flows/s, issue 18
PY = sys.executable

BASELINE_READER = r"""
import ctypes, os, signal, sys, collections
from ciliumctl.datapath.bpfsys import obj_get
from ciliumctl.datapath.events import decode
lib = ctypes.CDLL("libbcc.so.0")
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
lib.bpf_new_ringbuf.restype = ctypes.c_void_p
lib.bpf_new_ringbuf.argtypes = [ctypes.c_int, CB, ctypes.c_void_p]
lib.bpf_poll_ringbuf.argtypes = [ctypes.c_void_p, ctypes.c_int]
ring = collections.deque(maxlen=4095)
count = [0]
def on_event(ctx, data, size):
    ring.append(decode(ctypes.string_at(data, size)))   # one Python object per event
    count[0] += 1
    return 0
cb = CB(on_event)
rb = lib.bpf_new_ringbuf(obj_get(sys.argv[1]), cb, None)
stop = [False]
signal.signal(signal.SIGUSR1, lambda *a: (open(sys.argv[2], "w").write(str(count[0]))))
signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
print("ready", flush=True)
while not stop[0]:
    lib.bpf_poll_ringbuf(rb, 100)
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class AgentProc:
    def __init__(self, env: dict, buffer: int):
        self.port = free_port()
        self.proc = subprocess.Popen([PY, "-m", "ciliumctl.cli.main", "agent", "run", "--no-cni",
                                      "--metrics-listen", f"127.0.0.1:{self.port}", "--flow-buffer-size",
                                      str(buffer)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sock = Path(env["CILIUMCTL_RUN_DIR"]) / "hubble.sock"
        end = time.monotonic() + 20
        while not self.sock.exists() or not self._try_metrics():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise SystemExit("agent did not start")
            time.sleep(0.1)

    def _try_metrics(self):
        try:
            return self.metrics()
        except OSError:
            return None

    def metrics(self) -> dict:
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        out = {}
        for line in body.splitlines():
            if line.startswith("hubble_seen_flows_total "):
                out["seen"] = int(line.split()[-1])
            if line.startswith('hubble_lost_events_total{source="perf_event_ring_buffer"}'):
                out["lost"] = int(line.split()[-1])
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def measure_agent(agent: AgentProc, emitter, rate: float):
    from emitter import emit_at_rate

    m0, lost0, seq0 = agent.metrics(), emitter.lost(), emitter.emitted()
    t = time.perf_counter()
    emit_at_rate(emitter, rate, SECONDS)
    elapsed = time.perf_counter() - t
    offered = emitter.emitted() - seq0
    prev = -1
    while True:  # let the agent drain what is in the ring
        time.sleep(0.3)
        m = agent.metrics()
        if m["seen"] == prev:
            break
        prev = m["seen"]
    return offered / elapsed, (m["seen"] - m0["seen"]) / elapsed, (emitter.lost() - lost0) / elapsed


def measure_baseline(pin: Path, emitter, rate: float, tmp: Path, env: dict):
    out = tmp / "baseline.count"
    p = subprocess.Popen([PY, "-c", BASELINE_READER, str(pin), str(out)], env=env, stdout=subprocess.PIPE,
                         text=True)
    p.stdout.readline()
    from emitter import emit_at_rate

    lost0, seq0 = emitter.lost(), emitter.emitted()
    t = time.perf_counter()
    emit_at_rate(emitter, rate, SECONDS)
    elapsed = time.perf_counter() - t
    offered = emitter.emitted() - seq0
    prev = -1
    while True:
        time.sleep(0.3)
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
        got = int(out.read_text() or 0) if out.exists() else 0
        if got == prev:
            break
        prev = got
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    return offered / elapsed, prev / elapsed, (emitter.lost() - lost0) / elapsed


PLAIN_CLIENT = r"""
import sys, time, grpc
from google.protobuf import json_format
from ciliumctl.flows.pb.observer import observer_pb2 as opb, observer_pb2_grpc
out = sys.stdout
with grpc.insecure_channel(sys.argv[1]) as ch:
    for r in observer_pb2_grpc.ObserverStub(ch).GetFlows(opb.GetFlowsRequest()):
        out.write(json_format.MessageToJson(r, preserving_proto_field_name=True, indent=None) + "\n")
"""


def time_pipe(cmd, env) -> tuple[float, float, int]:
    """(seconds in all, seconds from the first output to the end, lines) of a command writing into a pipe."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, bufsize=0)
    lines, first = 0, None
    while True:
        chunk = p.stdout.read(1 << 16)
        if not chunk:
            break
        if first is None:
            first = time.perf_counter()
        lines += chunk.count(b"\n")
    p.wait()
    end = time.perf_counter()
    return end - t, end - (first or end), lines


def main() -> int:
    if os.geteuid() != 0:
        print("bench_flows: needs root (BPF)")
        return 0
    from emitter import Emitter

    tmp = Path(tempfile.mkdtemp(prefix="cctlbench"))
    bpffs = Path(f"/sys/fs/bpf/cctl{secrets.token_hex(2)}")
    env = dict(os.environ, CILIUMCTL_BPFFS_DIR=str(bpffs), CILIUMCTL_STATE_DIR=str(tmp / "state"),
               CILIUMCTL_RUN_DIR=str(tmp / "run"), CILIUMCTL_NODE_NAME="bench", PYTHONPATH=str(ROOT))
    (tmp / "state" / "endpoints").mkdir(parents=True)
    for i, (name, ipv4) in enumerate((("client", "10.200.0.12"), ("server", "10.200.0.13"))):
        (tmp / "state" / "endpoints" / f"{i + 1}.json").write_text(json.dumps(
            {"id": i + 1, "name": name, "namespace": "default", "labels": {"app": name}, "ipv4": ipv4,
             "identity": 300 + i}))
    emitter = Emitter(bpffs, ring_pages=1024)
    emitter.set_template(type=4, subtype=5, verdict=1, direction=2, proto=6, tcp_flags=0x18, sport=40000, dport=80,
                         saddr=socket.inet_aton("10.200.0.12"), daddr=socket.inet_aton("10.200.0.13"),
                         src_identity=300, dst_identity=301, match_type=2, length=1500)
    try:
        print("== kernel ring buffer -> flow store (events/s; 4 MiB ring; "
              f"{SECONDS:.0f} s per rate)")
        rows = []
        agent = AgentProc(env, 4095)
        try:
            for rate in RATES:
                rows.append(("ciliumctl agent", rate, *measure_agent(agent, emitter, rate)))
        finally:
            agent.stop()
        for rate in RATES:
            rows.append(("per-event callback (baseline)", rate, *measure_baseline(bpffs / "events", emitter, rate,
                                                                                   tmp, env)))
        print(f"{'reader':32} {'target/s':>9} {'offered/s':>10} {'delivered/s':>12} {'lost/s':>10} "
              f"{'delivered':>9}")
        for name, rate, off, dlv, lost in rows:
            print(f"{name:32} {rate:9,d} {off:10,.0f} {dlv:12,.0f} {lost:10,.0f} {dlv / off:9.3f}")
        ours = {r[1]: r for r in rows if r[0] == "ciliumctl agent"}
        base = {r[1]: r for r in rows if r[0] != "ciliumctl agent"}
        lossless = [r for r in RATES if ours[r][4] == 0]
        print(f"highest rate without loss: ciliumctl {max(lossless, default=0):,}/s; baseline "
              f"{max([r for r in RATES if base[r][4] == 0], default=0):,}/s")
        print("delivered ratio ciliumctl/baseline per rate: "
              + ", ".join(f"{r // 1000}k: {ours[r][3] / max(base[r][3], 1):.2f}x" for r in RATES))

        print("\n== observe -o json into a pipe (flows/s)")
        n_flows = 60_000
        agent = AgentProc(env, 65535)
        try:
            for _ in range(n_flows // 5000):
                emitter.emit(5000)
                time.sleep(0.05)
            while agent.metrics()["seen"] < n_flows:
                time.sleep(0.1)
            target = f"unix://{agent.sock}"
            ours = time_pipe([PY, "-m", "ciliumctl.cli.main", "observe", "--all", "-o", "json", "--server", target],
                             env)
            plain = time_pipe([PY, "-c", PLAIN_CLIENT, target], env)
        finally:
            agent.stop()
        print(f"{'client':42} {'flows':>7} {'total s':>8} {'flows/s':>8} {'streaming s':>12} {'flows/s':>8}")
        for name, (total, streaming, n) in (("ciliumctl observe --all -o json", ours),
                                            ("plain GetFlows + json_format (baseline)", plain)):
            print(f"{name:42} {n:7d} {total:8.2f} {n / total:8,.0f} {streaming:12.2f} {n / streaming:8,.0f}")
        print(f"ratio ciliumctl/baseline: {(ours[2] / ours[0]) / (plain[2] / plain[0]):.2f}x in all (process "
              f"start-up included), {(ours[2] / ours[1]) / (plain[2] / plain[1]):.2f}x while streaming")
        rate = ours[2] / ours[0]
        print(f"target observe -o json >= {OBSERVE_TARGET:,} flows/s in all (start-up included): "
              f"{'meets' if rate >= OBSERVE_TARGET else 'MISSES'} ({rate:,.0f}/s, {rate / OBSERVE_TARGET:.2f}x the "
              "target)")
    finally:
        emitter.close()
        shutil.rmtree(bpffs, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
