"""Services without kube-proxy (issue 12): new TCP connections/s to a service address vs directly to a backend,
at 1 / 1,000 / 10,000 services x 10 backends, against kube-proxy-shaped iptables rules built in the same run;
the time to program the services (the product's reconcile) vs iptables-nft-restore of the same; one backend
added when N services exist, by a command (reconcile: the maps read back) and by a long-lived agent (the service
maps written as the difference to what it wrote last, datapath/lbwrite.py); backend spread (chi-square) and
ClientIP affinity from the datapath's own connection table (lb_conns).

One sandbox node (a netns of this run) set up with the real `ciliumctl` (bench_connections.Node): endpoints a
(client) and b (10 loadgen servers, ports 5002..5011, the measured service's 10 backends), plain endpoints pa/pb
wired the same way with no programs for the iptables side. The other N-1 services have 10 backends each at
addresses nobody uses. kube-proxy's layout (pkg/proxy/iptables/proxier.go): PREROUTING -> KUBE-SERVICES, one
`-d VIP -p tcp --dport P -j KUBE-SVC-*` per service, each KUBE-SVC-* jumps to one KUBE-SEP-* per endpoint with
`-m statistic --mode random --probability 1/(n-i)`, each KUBE-SEP-* DNATs. The measured service sits in the
middle of KUBE-SERVICES (the average walk). iptables rules exist only while the iptables side is measured (else
they would be walked for the ciliumctl side's connections too).

The baseline is the same connections made directly to the backends: loadgen round robin over the 10 backends'
ports. Direct to one backend (one server process instead of ten) is printed beside it: connections through a
service land on ten processes, which costs wake-ups of their own (kube-proxy's DNAT pays the same), so against
one backend the ratio measures the spread as much as the service path. Rounds in A B C / C B A order, the ratio of
each round, their median and range, the load average over the rounds; what a new connection's SYN costs in a's
from_container straight to a backend and through the service (BPF_PROG_TEST_RUN, benchmarks/bpf_test_run.py; the
kernel's BPF run-time statistics are never switched on).
Run as root:
    .venv/bin/python benchmarks/bench_services.py [--seconds 2] [--pairs 3] [--services 1,1000,10000]
"""

from __future__ import annotations

import argparse
import collections
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import bpf_test_run
from bench_connections import ROOT, Node, sh
from bpf_test_run import TC_ACT_OK, TC_ACT_REDIRECT, TCP_SYN, tcp_frame

from ciliumctl.services.model import Backend

PORT, BACKENDS, CLIENT_THREADS = 5002, 10, 4
VIP = "10.96.0.10"            # ciliumctl's measured service
IPT_VIP = "10.112.0.10"       # the iptables side's measured service (no BPF frontend there)
CHI2_9DOF_P01 = 21.666        # chi-square critical value, 9 degrees of freedom, p = 0.01


def crr(node: Node, loadgen: str, client: str, ip: str, ports: str, secs: float) -> float:
    """New connections/s from the client to ip at ports (one port, or LO-HI: round robin over them)."""
    p = node.run_in(client, loadgen, "crr", ip, ports, str(secs), str(CLIENT_THREADS))
    out, err = p.communicate(timeout=secs + 60)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen crr {ip}:{ports}: {err.strip()}")
    return float(out)


class SynTime:
    """What the service path costs a new connection in the datapath itself, by BPF_PROG_TEST_RUN
    (benchmarks/bpf_test_run.py; the kernel's BPF run-time statistics are never switched on): a's from_container
    on SYNs of new connections straight to b (the measured service's first backend) and to the service's address,
    where it picks a backend and translates. Source ports above the endpoints' ip_local_port_range, new per call;
    run after the spread is read (each SYN to the service leaves an lb_conns entry)."""

    def __init__(self, node: Node, syns: int = 200):
        self.node, self.syns, self.used = node, syns, 0

    def measure(self, a_ip: str, b_ip: str) -> tuple[float, float]:
        """(median ns of a SYN straight to the backend, of a SYN to the service) in a's from_container."""
        out = []
        for dst in (b_ip, VIP):
            ports = [61000 + (self.used + i) % 4500 for i in range(self.syns)]
            self.used += self.syns
            got = bpf_test_run.run(self.node.name, self.node.bpffs / "from_container", self.node.host_ifnames["a"],
                                   [(tcp_frame(a_ip, dst, p, PORT, TCP_SYN), 1) for p in ports])
            out.append(statistics.median(bpf_test_run.expect(got, (TC_ACT_OK, TC_ACT_REDIRECT), "from_container")))
        return out[0], out[1]


def abba(node: Node, loadgen: str, client: str, backend: str, via: str, secs: float, pairs: int) -> dict:
    """Rounds of (direct: the same connections round robin over the service's backends; via the service; direct
    to one backend), in A B C / C B A order so that drift hits all alike. Ratios per round, their median and
    spread."""
    sides = {"direct": (backend, f"{PORT}-{PORT + BACKENDS - 1}"), "service": (via, str(PORT)),
             "one": (backend, str(PORT))}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    ratios, ratios_one = [], []
    load = [os.getloadavg()[0]]
    for i in range(pairs):
        got = {}
        for side in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
            got[side] = crr(node, loadgen, client, *sides[side], secs)
        for k, v in got.items():
            rates[k].append(v)
        ratios.append(got["service"] / got["direct"] if got["direct"] else float("nan"))
        ratios_one.append(got["service"] / got["one"] if got["one"] else float("nan"))
        load.append(os.getloadavg()[0])
    return {**{k: statistics.median(v) for k, v in rates.items()}, "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "ratio_one": statistics.median(ratios_one),
            "load": (min(load), max(load))}


def fake_ip(i: int, j: int) -> str:
    n = i * BACKENDS + j
    return f"10.{128 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def table_of(n: int, b_ip: str, affinity: str = ""):
    from ciliumctl.services.model import Frontend, Service, ServiceTable

    services = {}
    for i in range(n):      # built directly (ids given), as a cluster's watch would hand a whole table over
        if i == 0:
            fe, addrs = Frontend(VIP, PORT), [(b_ip, PORT + j) for j in range(BACKENDS)]
        else:
            fe = Frontend(f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 80)
            addrs = [(fake_ip(i, j), 8080) for j in range(BACKENDS)]
        backs = tuple(Backend(ip, port, "active", i * BACKENDS + k + 1) for k, (ip, port) in enumerate(addrs))
        services[i + 1] = Service(i + 1, fe, backends=backs, affinity=affinity)
    return ServiceTable(services, n * BACKENDS + 1)


def program(table) -> tuple[float, float]:
    """Store the table and run the product's one reconcile (in this process, on the node's pins): (seconds in
    all, seconds of them in Datapath.apply: the diff against the slot, the writes and the switch)."""
    from ciliumctl.node import reconcile, settings
    from ciliumctl.services import store

    t0 = time.perf_counter()
    with settings.locked():
        store.save(table)
        report = reconcile.reconcile()
    return time.perf_counter() - t0, report.seconds


def agent_applies(table, grown) -> tuple[float, float, float]:
    """As a long-lived agent programs (one Datapath kept open, ResolvedState built once, as node.cluster_sync):
    (first apply: the maps read back; the next: the other slot brought up to date, plus the change; then one
    backend added in the steady state), seconds of Datapath.apply each. The +1 backend is the median of 5."""
    from ciliumctl.endpoints import registry
    from ciliumctl.node import reconcile, settings
    from ciliumctl.policy import store as policy_store

    dp = reconcile.open_datapath()
    try:
        with settings.locked():
            base = reconcile.resolve_state(registry.load_all(), policy_store.load_all(), settings.load_settings())

            def apply(t) -> float:
                time.sleep(0.15)        # past the 100 ms in which a slot is rewritten only after a grace period
                return dp.apply(replace(base, services=t, revision=dp.revision + 1)).seconds

            first, catch_up = apply(table), apply(grown)
            steady = []
            for _ in range(5):
                apply(table)
                steady.append(apply(grown))
            apply(table)
            assert dp.service_maps.current(dp.status()["active_slot"], dp.revision)
    finally:
        dp.close()
    return first, catch_up, statistics.median(steady)


def iptables_rules(n: int, pb_ip: str) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]"]
    rules = ["-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"]
    order = list(range(1, n))
    order.insert(len(order) // 2, 0)       # the measured service in the middle of the walk
    for i in order:
        svc = f"KUBE-SVC-{i:016d}"
        lines.append(f":{svc} - [0:0]")
        if i == 0:
            vip, port, backs = IPT_VIP, PORT, [(pb_ip, PORT + j) for j in range(BACKENDS)]
        else:
            vip, port = f"10.{112 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 80
            backs = [(fake_ip(i, j), 8080) for j in range(BACKENDS)]
        rules.append(f"-A KUBE-SERVICES -d {vip}/32 -p tcp -m tcp --dport {port} -j {svc}")
        for j, (ip, bport) in enumerate(backs):
            sep = f"KUBE-SEP-{i:012d}{j:04d}"
            lines.append(f":{sep} - [0:0]")
            left = len(backs) - j
            stat = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
            rules.append(f"-A {svc} {stat}-j {sep}")
            rules.append(f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:{bport}")
    return "\n".join(lines + rules + ["COMMIT", ""])


def ipt_restore(node: Node, text: str) -> float:
    t0 = time.perf_counter()
    res = sh("ip", "netns", "exec", node.name, "iptables-nft-restore", input=text, timeout=3600)
    assert res.returncode == 0
    return time.perf_counter() - t0


def ipt_flush(node: Node) -> None:
    sh("ip", "netns", "exec", node.name, "iptables-nft-restore", input="*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")


def spread(node: Node) -> tuple[dict, float]:
    """Backend ids of the connections in lb_conns to the measured frontend, and the chi-square statistic."""
    import socket

    from ciliumctl.datapath import bpfsys

    m = bpfsys.Map.from_pin(node.bpffs / "lb_conns")
    try:
        vip = socket.inet_aton(VIP)
        counts = collections.Counter(int.from_bytes(v[8:12], "little") for k, v in m.items().items() if k[4:8] == vip)
    finally:
        m.close()
    total = sum(counts.values())
    expected = total / BACKENDS
    chi2 = sum((counts.get(i, 0) - expected) ** 2 / expected for i in range(1, BACKENDS + 1)) if total else 0.0
    return dict(counts), chi2


def clear_conns(node: Node) -> None:
    from ciliumctl.datapath import bpfsys

    m = bpfsys.Map.from_pin(node.bpffs / "lb_conns")
    try:
        m.delete_batch(list(m.keys()))
    finally:
        m.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--services", default="1,1000,10000")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("cc") or not shutil.which("iptables-nft-restore"):
        print("bench_services: needs root, cc and iptables-nft-restore", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cctl-bench-"))
    loadgen = str(tmp / "loadgen")
    sh("cc", "-O2", "-pthread", "-o", loadgen, str(ROOT / "benchmarks" / "loadgen.c"))
    node = Node(tmp, f"cctl{secrets.token_hex(2)}")
    out: list[str] = []
    syns = SynTime(node)
    try:
        node.build([])
        os.environ.update({k: v for k, v in node.env.items() if k.startswith("CILIUMCTL_")})
        b_ip, pb_ip = node.eps["b"][1], node.eps["pb"][1]
        for srv in ("b", "pb"):
            for j in range(BACKENDS):
                p = node.run_in(srv, loadgen, "server", str(PORT + j), "2")
                assert p.stdout.readline().strip() == "ready"
        for n in (int(x) for x in args.services.split(",") if x):
            table = table_of(n, b_ip)
            prog, prog_dp = program(table)
            # one backend more for the last service, the rest as they are: the cost of a small change at N
            last = table.services[n]
            grown = table.update(replace(last, backends=last.backends + (Backend(fake_ip(n, 99), 8080),)),
                                 "10.96.0.0/12")
            time.sleep(0.2)                 # past the 100 ms in which a slot is rewritten only after a grace period
            one, one_dp = program(grown)
            program(table)                  # back: with N=1 the grown service is the measured one
            agent_first, agent_catch_up, agent_one = agent_applies(table, grown)
            clear_conns(node)
            ours = abba(node, loadgen, "a", b_ip, VIP, args.seconds, args.pairs)
            counts, chi2 = spread(node)
            syn_direct, syn_service = syns.measure(node.eps["a"][1], b_ip)
            ipt_text = iptables_rules(n, pb_ip)
            ipt_prog = ipt_restore(node, ipt_text)
            try:
                ipt = abba(node, loadgen, "pa", pb_ip, IPT_VIP, args.seconds, args.pairs)
            finally:
                ipt_flush(node)
            row = (f"N={n:<6,} conn/s direct (10 backends) {ours['direct']:6.0f} via service {ours['service']:6.0f} "
                   f"ratio {ours['ratio']:.2f} [{ours['ratio_min']:.2f}-{ours['ratio_max']:.2f}] (direct to one "
                   f"backend {ours['one']:6.0f}: {ours['ratio_one']:.2f}) SYN in from_container "
                   f"direct {syn_direct:.0f} ns, via {syn_service:.0f} ns; load "
                   f"{ours['load'][0]:.1f}-{ours['load'][1]:.1f} | iptables "
                   f"direct {ipt['direct']:6.0f} via service {ipt['service']:6.0f} ratio {ipt['ratio']:.2f} "
                   f"[{ipt['ratio_min']:.2f}-{ipt['ratio_max']:.2f}] (one backend: {ipt['ratio_one']:.2f}) | "
                   f"ours/iptables {ours['service'] / ipt['service']:.2f}x | program {prog:.3f}s, apply "
                   f"{prog_dp:.3f}s (iptables-nft-restore {ipt_prog:.3f}s, {ipt_prog / prog:.1f}x) | +1 backend "
                   f"{one * 1000:.1f} ms, apply {one_dp * 1000:.1f} ms | long-lived agent: apply {agent_first:.3f}s, "
                   f"next {agent_catch_up:.3f}s, +1 backend {agent_one * 1000:.2f} ms | spread chi2 "
                   f"{chi2:.1f} over {sum(counts.values())} conns "
                   f"({'uniform' if chi2 < CHI2_9DOF_P01 else 'NOT uniform'} at p=0.01)")
            print(row, flush=True)
            out.append(row)
        # ClientIP affinity: every connection of the client to the measured service gets one backend
        program(table_of(1, b_ip, affinity="ClientIP"))
        clear_conns(node)
        crr(node, loadgen, "a", VIP, str(PORT), 1.0)
        counts, _ = spread(node)
        print(f"affinity ClientIP: {sum(counts.values())} connections, backends used {sorted(counts)} "
              f"({'held' if len(counts) == 1 else 'NOT held'})", flush=True)
    finally:
        node.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
