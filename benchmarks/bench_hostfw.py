"""The host firewall's cost (issue 13): TCP request/response and new connections from a "world" namespace to a
server in the node namespace, through the node's device (a veth, `install --devices`), with no program on the
device, with the host firewall on and no host policy (programs run, nothing enforced), and with 1,000 host rules
(a CiliumClusterwideNetworkPolicy with a nodeSelector: 999 rules that never match, the matching one last).
Also the BPF run time per packet of the device programs, and the time of `install --host-firewall` /
`--no-host-firewall` (enable / disable).

Ratios against the no-program baseline of the same run, robust against a busy machine: each round runs
A B C C B A, its ratio for a configuration is the mean of its two runs over the mean of the round's two baseline
runs (neighbours in time share the machine's load); the result is the median of the rounds' ratios, with their
spread (min-max). The sandbox node is the tests' (tests/support/node.py: the real CLI, its own namespace, state and
pins), removed on exit. Run as root:
    .venv/bin/python benchmarks/bench_hostfw.py [--seconds 1] [--rounds 9]
"""

from __future__ import annotations

import argparse
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


def run_time_ns_per_packet(node: SandboxNode, world: str, loadgen: str, secs: float) -> tuple[float, float]:
    """BPF run time per program run of the device programs, and program runs per rr transaction, over an rr run
    (stats enabled only for it)."""
    import os

    from ciliumctl.datapath import bpfsys

    fds = [bpfsys.obj_get(node.bpffs / name) for name in ("from_netdev", "to_netdev")]
    stats = bpfsys.enable_run_time_stats()
    try:
        before = [bpfsys.prog_info(fd) for fd in fds]
        rate = run(node, world, loadgen, "rr", secs)
        after = [bpfsys.prog_info(fd) for fd in fds]
    finally:
        os.close(stats)
        for fd in fds:
            os.close(fd)
    ns = sum(a.run_time_ns - b.run_time_ns for a, b in zip(after, before))
    runs = sum(a.run_cnt - b.run_cnt for a, b in zip(after, before))
    return (ns / runs if runs else 0.0), runs / max(rate * secs, 1.0)


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
            per_txn: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                this: dict[tuple[str, str], list[float]] = {}
                for config in configs + configs[::-1]:
                    to(config)
                    for mode in ("rr", "crr"):
                        rate = run(node, world, loadgen, mode, args.seconds)
                        got.setdefault((config, mode), []).append(rate)
                        this.setdefault((config, mode), []).append(rate)
                    if config != "no program":
                        ns_run, runs = run_time_ns_per_packet(node, world, loadgen, args.seconds / 2)
                        bpf_ns.setdefault(config, []).append(ns_run)
                        per_txn.setdefault(config, []).append(runs)
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
    print(f"{'configuration':28} {'rr/s':>10} {'rr ratio':>18} {'crr/s':>10} {'crr ratio':>18} {'BPF ns/run':>11}")
    base_rr = statistics.median(got[("no program", "rr")])
    for config in configs:
        rr, crr = (statistics.median(got[(config, m)]) for m in ("rr", "crr"))
        ns = f"{statistics.median(bpf_ns[config]):.0f}" if config in bpf_ns else "-"
        print(f"{config:28} {rr:10.0f} {ratio(config, 'rr'):>18} {crr:10.0f} {ratio(config, 'crr'):>18} {ns:>11}")
    # the programs' own share, from their run time: noise-free where the throughput ratios are not (a shared
    # machine moves those by more than the programs cost)
    txn_ns = 1e9 / base_rr
    for config in configs[1:]:
        cost = statistics.median(per_txn[config]) * statistics.median(bpf_ns[config])
        print(f"{config}: {statistics.median(per_txn[config]):.1f} program runs x "
              f"{statistics.median(bpf_ns[config]):.0f} ns = {cost:.0f} ns per rr transaction of {txn_ns:.0f} ns "
              f"-> {txn_ns / (txn_ns + cost):.3f}x from the programs' own run time")
    print(f"install --host-firewall (enable, 1,000 rules stored): median {statistics.median(on) * 1000:.0f} ms "
          f"({min(on) * 1000:.0f}-{max(on) * 1000:.0f}; the CLI's whole install run, checks included)")
    print(f"install --no-host-firewall (disable): median {statistics.median(off) * 1000:.0f} ms "
          f"({min(off) * 1000:.0f}-{max(off) * 1000:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
