"""New TCP connections/s and kept-alive request/response through ciliumctl endpoints vs plain veth endpoints on the
same sandbox node, with a C load generator (benchmarks/loadgen.c, compiled here with the machine's cc), so that
the network path and the agent, not a Python sender, are what is measured.

One sandbox node (a netns of this run), set up through the real `ciliumctl` executable: `install`, two endpoints
`a` -> `b`; beside them two plain endpoints wired the same way (veth, /32 routes, proxy ARP) with no programs.
Each configuration (rules on b's ingress; the agent off, or on at a monitor aggregation level) is measured in
ABBA pairs (plain, ciliumctl, ciliumctl, plain), so drifts of a busy machine fall on both sides; the ratio is
the median of the pairs' ciliumctl / plain ratios, printed with their spread (the middle half of the pairs, p25-p75,
and min-max) and the machine's load average over the configuration: many short pairs beat a few long ones on a
shared machine, where one burst of someone else's work spoils a pair, not the median. Agent CPU: utime + stime
of the agent process over the ciliumctl runs, as cores per 10,000 new connections/s, beside the agent's own
figure (`status`). Events lost: the datapath's counter (`status`) over the configuration.
The datapath alone, apart from the machine's load: b's `to_container` run with BPF_PROG_TEST_RUN on crafted packets
(a new connection's SYN, each from a source port of its own, and a packet of a tracked connection, repeated), ns
per run at each rule count (test_run_ns; no kernel-wide BPF stats switch is touched).
Run as root:
    .venv/bin/python benchmarks/bench_connections.py [--seconds 1] [--pairs 10] [--levels none,low,medium,maximum]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bpf_test_run  # noqa: E402  (benchmarks/bpf_test_run.py)
from bpf_test_run import TC_ACT_OK, TCP_ACK, TCP_SYN, tcp_frame  # noqa: E402
from stats import pct  # noqa: E402  (benchmarks/stats.py)

CLI = str(Path(sys.executable).parent / "ciliumctl")
PORT = 5002
CLIENT_THREADS = 4
SERVER_THREADS = 8


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {res.returncode}: {res.stderr.strip() or res.stdout.strip()}")
    return res


class Node:
    """The sandbox node, its ciliumctl endpoints a, b and plain endpoints pa, pb; torn down by close()."""

    def __init__(self, tmp: Path, prefix: str):
        self.tmp, self.prefix = tmp, prefix
        self.name = f"{prefix}n"
        self.bpffs = Path(f"/sys/fs/bpf/{prefix}")
        self.env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("CILIUMCTL_")}
        self.env.update(NO_COLOR="1", CILIUMCTL_NODE_NETNS=self.name, CILIUMCTL_STATE_DIR=str(tmp / "state"),
                        CILIUMCTL_RUN_DIR=str(tmp / "run"), CILIUMCTL_BPFFS_DIR=str(self.bpffs),
                        CILIUMCTL_NODE_NAME=self.name)
        self.procs: list[subprocess.Popen] = []
        self.eps: dict[str, tuple[str, str]] = {}    # name -> (netns, ip)
        self.host_ifnames: dict[str, str] = {}

    def cli(self, *args: str, timeout: float = 300) -> str:
        res = subprocess.run([CLI, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"ciliumctl {' '.join(args)} -> {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    def build(self, install_args: list[str]) -> None:
        sh("ip", "netns", "add", self.name)
        self.cli("install", "--no-agent", *install_args)
        for name in ("a", "b"):
            ep = json.loads(self.cli("endpoint", "add", name, "-l", f"app={name}", "-o", "json"))
            self.eps[name] = (Path(ep["netns"]).name, ep["ipv4"].split("/")[0])
            self.host_ifnames[name] = ep["host_ifname"]
        for i, name in ((1, "pa"), (2, "pb")):
            self.eps[name] = (self._plain(i, name), f"10.12.0.{i}")
        for ns, _ip in self.eps.values():   # thousands of short connections: reuse TIME_WAIT ports, use them all
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
               "net.ipv4.ip_local_port_range=1024 65000")

    def _plain(self, i: int, name: str) -> str:
        """An endpoint wired as ciliumctl wires its own (endpoints/plumbing.py), with no program on it."""
        ns, host, ip, n = f"{self.prefix}{name}", f"{self.prefix}{name}", f"10.12.0.{i}", self.name
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", n, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "netns", "exec", n, "sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1",
           f"net.ipv4.conf.{host}.rp_filter=0")
        sh("ip", "-n", n, "link", "set", host, "up")
        sh("ip", "-n", n, "route", "replace", f"{ip}/32", "dev", host, "scope", "link")
        host_mac = sh("ip", "netns", "exec", n, "cat", f"/sys/class/net/{host}/address").stdout.strip()
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "neigh", "replace", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
        sh("ip", "-n", ns, "route", "replace", "169.254.1.1/32", "dev", "eth0", "scope", "link")
        sh("ip", "-n", ns, "route", "replace", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
        return ns

    def run_in(self, ep: str, *argv: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.eps[ep][0], *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        return p

    def agent_pid(self) -> int | None:
        try:
            return int((self.tmp / "run" / "agent.pid").read_text())
        except (OSError, ValueError):
            return None

    def events_lost(self) -> int:
        return int(json.loads(self.cli("status", "-o", "json"))["datapath"].get("events_lost") or 0)

    def agent_budget(self) -> float:
        """The agent's own figure (`status`): cores per 10k new connections/s over its last window."""
        st = json.loads(self.cli("status", "-o", "json"))["agent"].get("cpu_budget") or {}
        v = st.get("cores_per_10k_new_connections_per_second")
        return float("nan") if v is None else float(v)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pid = self.agent_pid()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([CLI, "agent", "stop"], env=self.env, capture_output=True, timeout=60)
        try:
            if pid and self.name.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(pid, signal.SIGKILL)    # `agent stop` failed: the agent this run started goes all the same
        except OSError:
            pass                                # gone already
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run([CLI, "uninstall"], env=self.env, capture_output=True, timeout=120)
        for ns in sorted(p.name for p in Path("/run/netns").glob(f"{self.prefix}*")):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(self.bpffs, ignore_errors=True)


def policy_yaml(n: int) -> str:
    """n ingress rules on b: n-1 on ports a never uses, the one that matches (a -> b:PORT) last."""
    rules = [f"  - fromEndpoints: [{{matchLabels: {{app: a}}}}]\n"
             f"    toPorts: [{{ports: [{{port: \"{10000 + i}\", protocol: TCP}}]}}]\n" for i in range(n - 1)]
    rules.append(f"  - fromEndpoints: [{{matchLabels: {{app: a}}}}]\n"
                 f"    toPorts: [{{ports: [{{port: \"{PORT}\", protocol: TCP}}]}}]\n")
    return ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bench, namespace: default}\n"
            "spec:\n  endpointSelector: {matchLabels: {app: b}}\n  ingress:\n" + "".join(rules))


def cpu_ticks(pid: int | None) -> int:
    if not pid:
        return 0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_ticks_task(pid: int, tid: str) -> int:
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def measure(node: Node, loadgen: str, mode: str, client: str, server: str, secs: float) -> tuple[float, float]:
    """(transactions/s, agent CPU seconds spent meanwhile)."""
    pid = node.agent_pid()
    c0 = cpu_ticks(pid)
    p = node.run_in(client, loadgen, mode, node.eps[server][1], str(PORT), str(secs), str(CLIENT_THREADS))
    out, err = p.communicate(timeout=secs + 60)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen {mode}: {err.strip()}")
    return float(out), (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK")


def abba(node: Node, loadgen: str, mode: str, secs: float, pairs: int) -> dict:
    """Pairs in ABBA order (plain, ciliumctl, ciliumctl, plain, ...): the ratio is the median of the pairs' ratios,
    so a burst of load from elsewhere spoils one pair, not the result."""
    plain, cctl, ratios = [], [], []
    cpu = cctl_secs = 0.0
    lost0 = node.events_lost()
    load = [os.getloadavg()[0]]
    for i in range(pairs):
        got = {}
        for side in (("plain", "cctl") if i % 2 == 0 else ("cctl", "plain")):
            if side == "plain":
                got[side] = measure(node, loadgen, mode, "pa", "pb", secs)[0]
            else:
                got[side], used = measure(node, loadgen, mode, "a", "b", secs)
                cpu += used
                cctl_secs += secs
        plain.append(got["plain"])
        cctl.append(got["cctl"])
        ratios.append(got["cctl"] / got["plain"] if got["plain"] else float("nan"))
        load.append(os.getloadavg()[0])
    lost = node.events_lost() - lost0
    own = node.agent_budget() if node.agent_pid() else float("nan")
    rate = statistics.mean(cctl)
    per_10k = (cpu / cctl_secs) / (rate / 10000) if rate else float("nan")
    return {"plain": statistics.mean(plain), "cctl": rate, "ratio": statistics.median(ratios),
            "spread": (pct(ratios, 0.25), pct(ratios, 0.75), min(ratios), max(ratios)),
            "agent_cpu_per_10k": per_10k, "lost": lost, "agent_says": own, "load": (min(load), max(load))}


def test_run_ns(node: Node, src: str, dst: str, sport_base: int, new: int = 3000, repeat: int = 20000) -> tuple:
    """(median and mean ns of a new connection's SYN, ns per packet of a tracked connection) of b's to_container,
    by BPF_PROG_TEST_RUN (bpf_test_run.py). Source ports above the endpoints' ip_local_port_range (the generator's
    connections never meet these conntrack entries), destination ports 10000.. (allowed from a at every rule count:
    policy_yaml)."""
    syns = [(tcp_frame(src, dst, sport_base + i // 999, 10000 + i % 999, TCP_SYN), 1) for i in range(new)]
    tracked = [(tcp_frame(src, dst, sport_base, 10000, TCP_ACK), repeat)]
    got = bpf_test_run.run(node.name, node.bpffs / "to_container", node.host_ifnames["b"], syns + tracked)
    times = bpf_test_run.expect(got, (TC_ACT_OK,), "to_container")   # passed the policy, as a's packets do
    return statistics.median(times[:new]), statistics.mean(times[:new]), times[new]


def profile(node: Node, loadgen: str, secs: float, out: Path) -> None:
    """py-spy (PyPI) attached to the running agent while the generator opens connections: where its CPU goes,
    by function (self samples, then samples with the function on the stack), all threads."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    load = node.run_in("a", loadgen, "crr", node.eps["b"][1], str(PORT), str(secs + 1), str(CLIENT_THREADS))
    pid = node.agent_pid()
    tasks = {t.name: (t / "comm").read_text().strip() for t in Path(f"/proc/{pid}/task").iterdir()}
    t0 = {t: cpu_ticks_task(pid, t) for t in tasks}
    lost0 = node.events_lost()
    sh(spy, "record", "--pid", str(pid), "--duration", str(int(secs)), "--rate", "250",
       "--format", "raw", "--output", str(out), "--nonblocking", check=False)
    rate = float(load.communicate(timeout=secs + 60)[0])
    print(f"crr {rate:.0f}/s; events lost meanwhile {node.events_lost() - lost0}; agent CPU per thread (cores):")
    for t, name in tasks.items():
        print(f"    {name:16} {(cpu_ticks_task(pid, t) - t0[t]) / os.sysconf('SC_CLK_TCK') / secs:.3f}")
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack.split(";")]
        total += int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for f in set(frames):
            incl[f] = incl.get(f, 0) + int(n)
    print(f"py-spy: {total} samples of the agent's threads over {secs:.0f} s under crr load")
    for title, table in (("self", own), ("on stack", incl)):
        print(f"  top by {title}:")
        for f, n in sorted(table.items(), key=lambda kv: -kv[1])[:18]:
            print(f"    {n / total:6.1%}  {f}")


def spread(r: dict) -> str:
    """The pairs' ratios: middle half and extremes, e.g. 0.88-0.97 [0.71-1.05]."""
    p25, p75, lo, hi = r["spread"]
    return f"{p25:.2f}-{p75:.2f} [{lo:.2f}-{hi:.2f}]"


def loads(r: dict) -> str:
    """The 1-minute load average seen over the configuration (min-max; 2 cores here)."""
    return f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"


def set_agent(node: Node, level: str | None) -> None:
    """level None: no agent; else the agent running with the datapath at that aggregation level."""
    node.cli("agent", "stop")
    if level is None:
        return
    if level != "default":
        node.cli("install", "--no-agent", "--monitor-aggregation", level)
    node.cli("agent", "start")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0, help="per run (each pair is 2 runs)")
    ap.add_argument("--pairs", type=int, default=10, help="ABBA pairs per configuration")
    ap.add_argument("--rules", default="0,1000,10000", help="rule counts on b's ingress")
    ap.add_argument("--levels", default="none,low,medium,maximum",
                    help="monitor aggregation levels to run the agent at ('default': as installed)")
    ap.add_argument("--profile", type=float, default=0,
                    help="only profile the agent (py-spy) for this many seconds under crr load, then exit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_connections: needs root (netns, BPF)", file=sys.stderr)
        return 2
    cc = shutil.which("cc")
    if not cc:
        print("bench_connections: needs a C compiler (cc)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cctl-bench-"))
    loadgen = str(tmp / "loadgen")
    sh(cc, "-O2", "-pthread", "-o", loadgen, str(ROOT / "benchmarks" / "loadgen.c"))
    node = Node(tmp, f"cctl{secrets.token_hex(2)}")
    rows: list[tuple[str, dict]] = []
    runs: dict[int, tuple] = {}     # rules -> BPF_PROG_TEST_RUN ns (new connection median, mean; tracked packet)
    levels: list[str | None] = [None] + [lv for lv in args.levels.split(",") if lv]
    try:
        node.build([])
        for srv in ("b", "pb"):
            p = node.run_in(srv, loadgen, "server", str(PORT), str(SERVER_THREADS))
            assert p.stdout.readline().strip() == "ready"
        if args.profile:
            set_agent(node, "default")
            time.sleep(0.5)
            profile(node, loadgen, args.profile, tmp / "profile.txt")
            return 0
        for n in (int(x) for x in args.rules.split(",") if x):     # --rules '': kept-alive RR only
            if n:
                f = tmp / f"rules{n}.yaml"
                f.write_text(policy_yaml(n))
                node.cli("policy", "apply", "-f", str(f))
            elif (tmp / "applied").exists():
                node.cli("policy", "delete", "bench")
            (tmp / "applied").touch()
            set_agent(node, None)
            runs[n] = test_run_ns(node, node.eps["a"][1], node.eps["b"][1], 65100 + 10 * len(runs))
            for level in levels:
                set_agent(node, level)
                time.sleep(0.5)
                r = abba(node, loadgen, "crr", args.seconds, args.pairs)
                rows.append((f"N={n:<6,} agent {level or 'off':8}", r))
                print(f"  {rows[-1][0]} {r['plain']:8.0f} {r['cctl']:8.0f} {r['ratio']:6.2f} {spread(r)} "
                      f"{r['agent_cpu_per_10k']:6.3f} {r['agent_says']:6.3f} {r['lost']:6d} load {loads(r)}",
                      file=sys.stderr, flush=True)
        # kept-alive request/response: events are per connection, so this must cost the agent nothing
        for level in levels:
            set_agent(node, level)
            r = abba(node, loadgen, "rr", args.seconds, args.pairs)
            rows.append((f"RR agent {level or 'off':8}", r))
    finally:
        try:
            node.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"ABBA: {args.pairs} pairs x {args.seconds:.1f} s per side; C load generator, {CLIENT_THREADS} client "
          f"threads; ratio = median over pairs of ciliumctl / plain veth (same node, same run)")
    print(f"{'configuration':28} {'plain/s':>9} {'cctl/s':>9} {'ratio':>6} {'p25-p75 [min-max]':>23} "
          f"{'agent cores/10k':>16} {'(status says)':>13} {'lost':>6} {'load avg':>10}")

    def num(v: float) -> str:
        return "-" if v != v else f"{v:.3f}"

    for name, r in rows:
        off = "off" in name    # no agent: nobody reads the ring, every event is lost by design
        print(f"{name:28} {r['plain']:9.0f} {r['cctl']:9.0f} {r['ratio']:6.2f} {spread(r):>23} "
              f"{'-' if off else num(r['agent_cpu_per_10k']):>16} {'-' if off else num(r['agent_says']):>13} "
              f"{'-' if off else r['lost']:>6} {loads(r):>10}")
    print("the datapath alone (BPF_PROG_TEST_RUN of b's to_container, ns per run; agent off, load does not matter "
          "much):")
    for n, (median_new, mean_new, est) in runs.items():
        print(f"  N={n:<6,} new connection (SYN) median {median_new:6.0f} ns (mean {mean_new:6.0f}); packet of a "
              f"tracked connection {est:5.0f} ns")
    print("new connections/s (crr: connect, 1-byte request, 1-byte response, close); RR: one kept-alive connection "
          "per client thread. Targets: agent < 0.2 core per 10k new conn/s at medium, ratio >= 0.9 (crr, agent at "
          "medium), >= 0.95 (RR), no event lost at medium.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
