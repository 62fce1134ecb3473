"""The host firewall's cost (issue 13): TCP request/response and new connections from a "world" namespace to a
server in the node namespace, through the node's device (a veth, `install --devices`), with no program on the
device, with the host firewall on and no host policy (programs run, nothing enforced), and with 1,000 host rules
(a CiliumClusterwideNetworkPolicy with a nodeSelector: 999 rules that never match, the matching one last).
Also the device programs' own run time (BPF_PROG_TEST_RUN on crafted packets, benchmarks/bpf_test_run.py: the
kernel's BPF run-time statistics are never switched on) times the device's packets per rr transaction, and the time
of `install --host-firewall` / `--no-host-firewall` (enable / disable).

Ratios against the no-program baseline of the same run, robust against a busy machine: each round runs
A B C C B A, its ratio for a configuration is the mean of its two runs over the mean of the round's two baseline
runs (neighbours in time share the machine's load); the result is the median of the rounds' ratios, with their
spread (min-max). The sandbox node is the tests' (tests/support/node.py: the real CLI, its own namespace, state and
pins), removed on exit. Run as root:
    .venv/bin/python benchmarks/bench_hostfw.py [--seconds 1] [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import shutil
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
from bpf_test_run import TC_ACT_OK, TCP_ACK, TCP_SYN, tcp_frame  # noqa: E402
from support.hostfw import NODE_IP, uplinks  # noqa: E402
from support.node import SandboxNode  # noqa: E402
from support.shell import sh  # noqa: E402

PORT, THREADS = 5002, 1


def policy(n: int) -> str:
    """n host rules on ingress: n-1 from CIDRs that never send here, on other ports; the world on PORT last."""
    rules = [f"  - fromCIDR: [10.{99 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}/32]\n"
             f"    toPorts: [{{ports: [{{port: \"{1 + i % 60000}\", protocol: TCP}}]}}]\n" for i in range(n - 1)]
    rules.append(f"  - fromEntities: [world]\n    toPorts: [{{ports: [{{port: \"{PORT}\", protocol: TCP}}]}}]\n")
    return ("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: bench-host}\n"
            "spec:\n  nodeSelector: {}\n  ingress:\n" + "".join(rules))


def run(node: SandboxNode, world: str, loadgen: str, mode: str, secs: float) -> float:
    p = subprocess.run(["ip", "netns", "exec", world, loadgen, mode, NODE_IP, str(PORT), str(secs), str(THREADS)],
                       capture_output=True, text=True, timeout=secs + 60)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen {mode}: {p.stderr.strip()}")
    return float(p.stdout.split()[0])


def device_packets(node: SandboxNode, dev: str) -> int:
    """Packets received and sent by the node's device so far: each ran one of its programs (from_netdev on
    ingress, to_netdev on egress)."""
    out = sh("ip", "-n", node.name, "-s", "-j", "link", "show", "dev", dev).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["packets"] + stats["tx"]["packets"]


class ProgramTime:
    """The device programs' own run time by BPF_PROG_TEST_RUN (benchmarks/bpf_test_run.py; no kernel-wide BPF
    statistics): a new connection's SYN from the world to the server (from_netdev), then a packet of that
    connection each way, repeated (from_netdev in, to_netdev out: what an rr transaction's packets run). Each call
    takes fresh world addresses (172.30.0.0/16, no rule names them), so its SYNs are new to conntrack."""

    def __init__(self, node: SandboxNode, dev: str, syns: int = 200, repeat: int = 20000):
        self.node, self.dev, self.syns, self.repeat, self.used = node, dev, syns, repeat, 0

    def measure(self) -> tuple[float, float]:
        """(median ns of a new connection's SYN in from_netdev, mean ns per run of a tracked packet in and out)."""
        srcs = [f"172.30.{(self.used + i) // 250 % 250}.{(self.used + i) % 250 + 1}" for i in range(self.syns)]
        self.used += self.syns
        ok = (TC_ACT_OK,)
        pins = self.node.bpffs
        syns = bpf_test_run.run(self.node.name, pins / "from_netdev", self.dev,
                                [(tcp_frame(src, NODE_IP, 40000, PORT, TCP_SYN), 1) for src in srcs] +
                                [(tcp_frame(srcs[0], NODE_IP, 40000, PORT, TCP_ACK), self.repeat)])
        syn = bpf_test_run.expect(syns, ok, "from_netdev")
        out = bpf_test_run.run(self.node.name, pins / "to_netdev", self.dev,
                               [(tcp_frame(NODE_IP, srcs[0], PORT, 40000, TCP_ACK), self.repeat)])
        (reply,) = bpf_test_run.expect(out, ok, "to_netdev")
        return statistics.median(syn[:-1]), (syn[-1] + reply) / 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    cc = shutil.which("cc")
    if not cc:
        print("bench_hostfw: needs a C compiler (cc)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-hostfw-"))
    loadgen = str(tmp / "loadgen")
    sh(cc, "-O2", "-pthread", "-o", loadgen, str(ROOT / "benchmarks" / "loadgen.c"))
    big = tmp / "host-1000.yaml"
    big.write_text(policy(1000))
    try:
        with SandboxNode(tmp / "node") as node:
            world, _remote, devs = uplinks(node)
            dev = devs[0]
            # thousands of short connections: the client reuses TIME_WAIT ports (its own namespace's setting)
            sh("ip", "netns", "exec", world, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
               "net.ipv4.ip_local_port_range=1024 65000")
            node.cli("install", "--no-agent", "--devices", "", "--no-host-firewall")
            server = subprocess.Popen(["ip", "netns", "exec", node.name, loadgen, "server", str(PORT), "4"],
                                      stdout=subprocess.PIPE, text=True)
            node.servers.append(server)
            server.stdout.readline()

            def to(config: str) -> float:
                """Switch the node to a configuration; the seconds the switch took."""
                t0 = time.perf_counter()
                if config == "no program":
                    node.cli("install", "--no-agent", "--no-host-firewall", "--devices", "")
                    node.cli("policy", "delete", "bench-host", check=False)
                elif config == "host firewall, 0 rules":
                    node.cli("policy", "delete", "bench-host", check=False)
                    node.cli("install", "--no-agent", "--devices", dev, "--host-firewall")
                else:
                    node.cli("install", "--no-agent", "--devices", dev, "--host-firewall")
                    node.cli("policy", "apply", "-f", str(big), "--force")
                return time.perf_counter() - t0

            configs = ["no program", "host firewall, 0 rules", "host firewall, 1,000 rules"]
            got: dict[tuple[str, str], list[float]] = {}
            ratios: dict[tuple[str, str], list[float]] = {}
            bpf_ns: dict[str, list[float]] = {}
            syn_ns: dict[str, list[float]] = {}
            per_txn: list[float] = []
            timer = ProgramTime(node, dev)
            for _ in range(args.rounds):
                this: dict[tuple[str, str], list[float]] = {}
                for config in configs + configs[::-1]:
                    to(config)
                    for mode in ("rr", "crr"):
                        packets = device_packets(node, dev)
                        rate = run(node, world, loadgen, mode, args.seconds)
                        if mode == "rr":   # each packet of the device runs one of its programs
                            per_txn.append((device_packets(node, dev) - packets) / max(rate * args.seconds, 1.0))
                        got.setdefault((config, mode), []).append(rate)
                        this.setdefault((config, mode), []).append(rate)
                    if config != "no program":
                        syn, tracked = timer.measure()
                        syn_ns.setdefault(config, []).append(syn)
                        bpf_ns.setdefault(config, []).append(tracked)
                for (config, mode), rates in this.items():
                    base = statistics.mean(this[("no program", mode)])
                    ratios.setdefault((config, mode), []).append(statistics.mean(rates) / base)
            # enable / disable, with the 1,000-rule policy stored (what a real node turns on)
            to("host firewall, 1,000 rules")
            on, off = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                node.cli("install", "--no-agent", "--no-host-firewall")
                off.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                node.cli("install", "--no-agent", "--host-firewall")
                on.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(config: str, mode: str) -> str:
        r = ratios[(config, mode)]
        return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"

    print(f"{args.rounds} rounds of A B C C B A, {args.seconds:g} s per run; ratio: median of the rounds' ratios "
          "(min-max)")
    print(f"{'configuration':28} {'rr/s':>10} {'rr ratio':>18} {'crr/s':>10} {'crr ratio':>18} {'ns/run':>7} "
          f"{'SYN ns':>7}")
    base_rr = statistics.median(got[("no program", "rr")])
    for config in configs:
        rr, crr = (statistics.median(got[(config, m)]) for m in ("rr", "crr"))
        ns, syn = (f"{statistics.median(d[config]):.0f}" if config in d else "-" for d in (bpf_ns, syn_ns))
        print(f"{config:28} {rr:10.0f} {ratio(config, 'rr'):>18} {crr:10.0f} {ratio(config, 'crr'):>18} {ns:>7} "
              f"{syn:>7}")
    print("ns/run: a tracked packet's run of from_netdev and to_netdev (mean of the two), SYN ns: a new "
          "connection's SYN in from_netdev (median); both by BPF_PROG_TEST_RUN")
    # the programs' own share, from their run time: noise-free where the throughput ratios are not (a shared
    # machine moves those by more than the programs cost)
    txn_ns = 1e9 / base_rr
    runs = statistics.median(per_txn)
    for config in configs[1:]:
        cost = runs * statistics.median(bpf_ns[config])
        print(f"{config}: {runs:.1f} program runs (device packets) x {statistics.median(bpf_ns[config]):.0f} ns = "
              f"{cost:.0f} ns per rr transaction of {txn_ns:.0f} ns -> {txn_ns / (txn_ns + cost):.3f}x from the "
              "programs' own run time")
    print(f"install --host-firewall (enable, 1,000 rules stored): median {statistics.median(on) * 1000:.0f} ms "
          f"({min(on) * 1000:.0f}-{max(on) * 1000:.0f}; the CLI's whole install run, checks included)")
    print(f"install --no-host-firewall (disable): median {statistics.median(off) * 1000:.0f} ms "
          f"({min(off) * 1000:.0f}-{max(off) * 1000:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
