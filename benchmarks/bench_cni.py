"""CNI ADD/DEL latency end to end: the runtime's exec of the installed `ciliumctl-cni` (launcher, IPAM plugin,
agent round trip with veth, registry, identity, datapath attach and policy reconcile) until it exits, against
Debian's own `ptp` plugin (veth + host-local + routes, no policy) measured in the same run on the same node.

Target: ciliumctl-cni ADD p50 < 150 ms. Run as root: .venv/bin/python benchmarks/bench_cni.py [-n 30]
Everything happens in network namespaces this script creates and removes (the node is one of them)."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from stats import pct  # noqa: E402  (benchmarks/stats.py)
from support.cni_node import CniNode  # noqa: E402  (the tests' sandbox node: netns + CNI server + installed plugin)

_libc = ctypes.CDLL(None, use_errno=True)


def _enter(path: str):
    def pre():
        fd = os.open(path, os.O_RDONLY)
        _libc.setns(fd, 0x40000000)
        os.close(fd)
    return pre


def timed_exec(argv: list[str], env: dict, conf: dict, node_ns: str) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(conf), env=env, capture_output=True, text=True,
                          preexec_fn=_enter(f"/run/netns/{node_ns}"), timeout=60)
    return (time.perf_counter() - t0) * 1000, proc.returncode, proc.stdout + proc.stderr


def bench(node: CniNode, name: str, argv: list[str], conf: dict, n: int) -> dict:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": str(node.bin_dir), "CNI_IFNAME": "eth0",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p"}
    nss = [node.new_pod_ns(f"{name[:1]}{i}") for i in range(n)]
    adds, dels = [], []
    for i, ns in enumerate(nss):
        e = dict(env, CNI_COMMAND="ADD", CNI_CONTAINERID=f"{name}{i}", CNI_NETNS=f"/run/netns/{ns}",
                 CNI_ARGS=env["CNI_ARGS"] + str(i))
        ms, code, out = timed_exec(argv, e, conf, node.node_ns)
        if code != 0:
            raise SystemExit(f"{name} ADD failed: {out}")
        adds.append(ms)
    for i, ns in enumerate(nss):
        e = dict(env, CNI_COMMAND="DEL", CNI_CONTAINERID=f"{name}{i}", CNI_NETNS=f"/run/netns/{ns}")
        ms, code, out = timed_exec(argv, e, conf, node.node_ns)
        if code != 0:
            raise SystemExit(f"{name} DEL failed: {out}")
        dels.append(ms)
    for ns in nss:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        node.pod_ns.remove(ns)
    return {"add_p50": statistics.median(adds), "add_p90": pct(adds, 0.9), "del_p50": statistics.median(dels)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=30, help="pods per plugin")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_cni needs root (network namespaces, veth, BPF)")
    with CniNode(pool="10.234.0.0/22") as node:
        plugin = [str(node.bin_dir / "ciliumctl-cni")]
        conf = node.conf()
        # cold: the first ADD on a fresh node compiles and pins the datapath
        ns = node.new_pod_ns("cold")
        e = {"PATH": "/usr/bin:/bin", "CNI_PATH": str(node.bin_dir), "CNI_IFNAME": "eth0", "CNI_COMMAND": "ADD",
             "CNI_CONTAINERID": "cold", "CNI_NETNS": f"/run/netns/{ns}", "CNI_ARGS": "IgnoreUnknown=1"}
        cold, code, out = timed_exec(plugin, e, conf, node.node_ns)
        if code != 0:
            raise SystemExit(f"cold ADD failed: {out}")
        timed_exec(plugin, dict(e, CNI_COMMAND="DEL"), conf, node.node_ns)
        ours = bench(node, "cctl", plugin, conf, args.n)
        ptp_conf = {"cniVersion": "1.0.0", "name": "ptpbench", "type": "ptp",
                    "ipam": {"type": "host-local", "subnet": "10.235.0.0/22", "dataDir": str(node.tmp / "ptp-ipam")}}
        base = bench(node, "ptp", ["/usr/lib/cni/ptp"], ptp_conf, args.n)
    print(f"CNI ADD/DEL latency, {args.n} pods each, end to end (exec until exit), same node netns")
    print(f"{'plugin':<34}{'ADD p50':>10}{'ADD p90':>10}{'DEL p50':>10}")
    print(f"{'Debian ptp + host-local (baseline)':<34}{base['add_p50']:>8.1f}ms{base['add_p90']:>8.1f}ms"
          f"{base['del_p50']:>8.1f}ms")
    print(f"{'ciliumctl-cni + host-local':<34}{ours['add_p50']:>8.1f}ms{ours['add_p90']:>8.1f}ms"
          f"{ours['del_p50']:>8.1f}ms")
    print(f"ratio ciliumctl/ptp ADD p50: {ours['add_p50'] / base['add_p50']:.2f}x; "
          f"first ADD on a fresh node (compiles the datapath): {cold:.0f} ms")
    verdict = "meets" if ours["add_p50"] < 150 else "MISSES"
    print(f"target ADD p50 < 150 ms: {verdict} ({ours['add_p50']:.1f} ms)")


if __name__ == "__main__":
    main()
