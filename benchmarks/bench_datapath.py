"""Datapath cost against iptables: pod netns -> node netns routing -> pod netns, with no filter, with ciliumctl's
tc programs at N = 0, 1,000 and 10,000 policy entries (the matching entry last), and with N iptables FORWARD
rules (inside the node netns only); the programs' own run time per packet (BPF_PROG_TEST_RUN on crafted packets,
benchmarks/bpf_test_run.py; the kernel's BPF run-time statistics are never switched on). Also: time to program
10,000 entries, and cold install (compile + load + pin) time. No agent runs here.

UDP packets/s are measured by a Python sender and receiver in separate processes, so absolute numbers are
Python's; the ratios against the no-filter baseline (measured in the same run) are the point. TCP connections/s and
request/response, with and without the agent, are bench_connections.py's (a C load generator). Run as root:
    .venv/bin/python benchmarks/bench_datapath.py [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bpf_test_run  # noqa: E402  (benchmarks/bpf_test_run.py)
from bpf_test_run import TC_ACT_OK, TC_ACT_REDIRECT, udp_frame  # noqa: E402
from support.netns import unique_prefix  # noqa: E402
from support.pods import Sandbox, _build, entry, teardown_sandbox  # noqa: E402
from support.shell import sh  # noqa: E402

PY = sys.executable

UDP_RX = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", 5001)); s.settimeout(0.5)
print("ready", flush=True)
n = 0; first = last = None
while True:
    try:
        s.recv(2048)
    except socket.timeout:
        if first is not None:
            break
        continue
    last = time.perf_counter()
    if first is None:
        first = last
    n += 1
print(n, (last - first) if first else 0)
"""

UDP_TX = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = (sys.argv[1], 5001); payload = b"x" * 18; end = time.perf_counter() + float(sys.argv[2])
n = 0
send = s.sendto
while True:
    for _ in range(256):
        try:
            send(payload, dst)
        except OSError:
            pass
    n += 256
    if time.perf_counter() > end:
        break
print(n)
"""

def _in(ns: str, code: str, *args: str, cpu: int | None = None) -> subprocess.Popen:
    """A Python snippet in a pod's netns; pinned to a CPU so that runs are comparable (sender and receiver apart)."""
    pin = ["taskset", "-c", str(cpu % (os.cpu_count() or 1))] if cpu is not None else []
    return subprocess.Popen(["ip", "netns", "exec", ns, *pin, PY, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def udp_pps(sb, secs: float) -> tuple[float, float]:
    """(delivered packets/s, share lost) of one Python UDP sender blasting at one receiver."""
    a, b = sb.pods[0], sb.pods[1]
    rx = _in(b.ns, UDP_RX, cpu=1)
    rx.stdout.readline()
    tx = _in(a.ns, UDP_TX, b.ip, str(secs), cpu=0)
    sent = int(tx.communicate(timeout=secs + 30)[0])
    got, span = rx.communicate(timeout=30)[0].split()
    return (int(got) / float(span) if float(span) else 0.0), (1 - int(got) / sent if sent else 0.0)


def measure(sb, secs: float) -> dict[str, float]:
    pps, loss = udp_pps(sb, secs)
    return {"udp_pps": pps, "udp_loss": loss}


class ProgramTime:
    """The endpoint programs' own run time per packet from a to b by BPF_PROG_TEST_RUN (benchmarks/bpf_test_run.py;
    the kernel's BPF run-time statistics are never switched on): from_container at a's host veth, then
    to_container at b's, for the first packet of new UDP flows (each call takes source ports of its own, above the
    pods' ip_local_port_range, so conntrack has not seen them) and for a packet of a tracked flow, repeated."""

    def __init__(self, sb, flows: int = 200, repeat: int = 20000):
        self.sb, self.flows, self.repeat, self.used = sb, flows, repeat, 0

    def measure(self) -> tuple[float, float]:
        """(median ns of a new flow's first packet, ns of a tracked flow's packet), both programs together."""
        a, b = self.sb.pods[0], self.sb.pods[1]
        ports = [61000 + (self.used + i) % 4500 for i in range(self.flows)]
        self.used += self.flows
        packets = [(udp_frame(a.ip, b.ip, p, 5001), 1) for p in ports] + \
            [(udp_frame(a.ip, b.ip, ports[0], 5001), self.repeat)]
        times = []
        for prog, pod in (("from_container", a), ("to_container", b)):
            got = bpf_test_run.run(self.sb.node, Path(self.sb.pin_dir) / prog, pod.ep.host_ifname, packets)
            # passed (or handed to b's veth): a's packets are allowed at every N
            times.append(bpf_test_run.expect(got, (TC_ACT_OK, TC_ACT_REDIRECT), prog))
        new = [x + y for x, y in zip(times[0][:-1], times[1][:-1])]
        return statistics.median(new), times[0][-1] + times[1][-1]


def ciliumctl_state(sb, n: int, revision: int):
    """n entries on b's ingress: n-2 that never match (other identities and ports), the two matching ones (UDP,
    TCP) last."""
    a, b = sb.pods[0], sb.pods[1]
    if n == 0:
        return sb.state(revision, {})
    entries = [entry(20000 + i, 6, 1 + i % 60000) for i in range(max(0, n - 2))]
    entries += [entry(a.identity, 17, 5001), entry(a.identity, 6, 5002)]
    return sb.state(revision, {b.ep.id: (True, entries, False, [])})


def iptables_rules(sb, n: int) -> None:
    a, b = sb.pods[0], sb.pods[1]
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]" if n else ":FORWARD ACCEPT [0:0]",
             ":OUTPUT ACCEPT [0:0]"]
    for i in range(max(0, n - 3)):
        lines.append(f"-A FORWARD -s 10.99.{i // 250}.{i % 250 + 1}/32 -p tcp --dport {1 + i % 60000} -j ACCEPT")
    if n:
        lines += [f"-A FORWARD -s {a.ip}/32 -d {b.ip}/32 -p udp --dport 5001 -j ACCEPT",
                  f"-A FORWARD -s {a.ip}/32 -d {b.ip}/32 -p tcp --dport 5002 -j ACCEPT",
                  f"-A FORWARD -s {b.ip}/32 -d {a.ip}/32 -j ACCEPT"]
    lines.append("COMMIT")
    subprocess.run(["ip", "netns", "exec", sb.node, "iptables-restore"], input="\n".join(lines) + "\n",
                   text=True, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.6, help="per metric and configuration and round")
    ap.add_argument("--rounds", type=int, default=5, help="configurations are interleaved; medians are shown")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_datapath: needs root (netns, BPF)", file=sys.stderr)
        return 2
    prefix = unique_prefix()
    tmp = tempfile.mkdtemp(prefix="cctl-bench-")
    sb = Sandbox(prefix=prefix, node=f"{prefix}n", pin_dir=f"/sys/fs/bpf/{prefix}", state_dir=f"{tmp}/state")
    _build(sb, 2)
    for pod in sb.pods:   # thousands of short connections per run: let the client reuse TIME_WAIT ports
        sh("ip", "netns", "exec", pod.ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    os.environ.update(CILIUMCTL_NODE_NETNS=sb.node, CILIUMCTL_BPFFS_DIR=sb.pin_dir,
                      CILIUMCTL_STATE_DIR=f"{tmp}/state", CILIUMCTL_RUN_DIR=f"{tmp}/run")
    extra: list[tuple[str, str]] = []
    results: dict[str, list[dict]] = {}
    try:
        # cold install in a fresh process: import, compile, load, pin
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", "from ciliumctl.datapath.loader import Datapath; Datapath.open()"], check=True,
                       cwd=ROOT, capture_output=True)
        extra.append(("cold install (new process: compile + load + pin)", f"{time.perf_counter() - t0:.2f} s"))
        from ciliumctl.datapath import loader

        t0 = time.perf_counter()
        dp = loader.Datapath.open()
        extra.append(("open again (reuse pins, no compile)", f"{(time.perf_counter() - t0) * 1e3:.1f} ms"))

        # programming time, on its own (best of 5, each into the other slot)
        st = ciliumctl_state(sb, 10000, 1)
        times = []
        for rev in range(1, 6):
            st.revision = rev
            times.append(dp.apply(st).seconds)
        extra.append(("program 10,000 entries: first apply (empty slot)", f"{times[0] * 1e3:.1f} ms"))
        extra.append(("program 10,000 entries: best of 5 applies", f"{min(times) * 1e3:.1f} ms"))

        attached = False
        rev = 10

        def use(kind: str, n: int):
            nonlocal attached, rev
            if kind == "ciliumctl":
                iptables_rules(sb, 0)
                if not attached:
                    for pod in sb.pods:
                        dp.attach(pod.ep)
                    attached = True
                rev += 1
                dp.apply(ciliumctl_state(sb, n, rev))
                return
            if attached:
                for pod in sb.pods:
                    dp.detach(pod.ep)
                attached = False
            iptables_rules(sb, n if kind == "iptables" else 0)

        configs = [("no filter", "none", 0)]
        configs += [(f"ciliumctl N={n:,}", "ciliumctl", n) for n in (0, 1000, 10000)]
        configs += [(f"iptables FORWARD N={n:,}", "iptables", n) for n in (1000, 10000)]
        order = random.Random(7)
        timer = ProgramTime(sb)
        for _ in range(args.rounds):
            for name, kind, n in order.sample(configs, len(configs)):   # no configuration always goes first
                use(kind, n)
                r = measure(sb, args.seconds)
                r["new_ns"] = r["tracked_ns"] = float("nan")
                if kind == "ciliumctl":
                    r["new_ns"], r["tracked_ns"] = timer.measure()
                results.setdefault(name, []).append(r)
        t0 = time.perf_counter()
        iptables_rules(sb, 10000)
        extra.append(("iptables-restore of 10,000 rules (for comparison)",
                      f"{(time.perf_counter() - t0) * 1e3:.1f} ms"))
        if attached:
            for pod in sb.pods:
                dp.detach(pod.ep)
        dp.close()
    finally:
        teardown_sandbox(sb)
        subprocess.run(["rm", "-rf", tmp])

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base = {k: med("no filter", k) for k in ("udp_pps",)}
    print(f"{args.rounds} rounds (configurations shuffled per round) of {args.seconds:.1f} s per metric; medians; "
          "ratio = rate / no-filter rate; sender on CPU 0, receiver on CPU 1")
    print(f"{'configuration':28} {'UDP pkt/s':>10} {'ratio':>6} {'BPF ns new':>10} {'tracked':>8}")
    for name, _kind, _n in configs:
        pps, new, tracked = (med(name, k) for k in ("udp_pps", "new_ns", "tracked_ns"))
        new_text, tracked_text = ("-" if v != v else f"{v:.0f}" for v in (new, tracked))
        print(f"{name:28} {pps:10.0f} {pps / base['udp_pps']:6.2f} {new_text:>10} {tracked_text:>8}")
    print("BPF ns: the run time of a packet from pod to pod through both programs (from_container, to_container) "
          "by BPF_PROG_TEST_RUN: a new flow's first packet (median), a tracked flow's packet")
    print()
    for k, v in extra:
        print(f"{k:52} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
