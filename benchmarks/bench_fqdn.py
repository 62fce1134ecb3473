"""DNS-aware policy (issue 15): the DNS proxy's cost and learning's.

1. Lookup latency through the proxy vs straight to the server, in one run: Debian's dnsmasq in a test namespace,
   the agent's DNSProxy (node/dns_proxy/server.py) beside it with the node's rule check (a rules.dns match per query);
   sequential A queries alternating direct / proxied (ABBA), p50 and p90 of each and the added p50.
2. Lookups per second the proxy sustains with 64 queries in flight (direct in the same run for the ratio).
3. Answer -> map: on a sandbox node (its own namespace and pins), the time NodeDNSPolicy.learn() takes for an
   answer with a new address of a selected name, until the datapath has it: a known label set (ipcache entry in
   place), a new label set (its identity's entries in place, resolved alone: program_new_identities and
   policy.resolve.resolve_learned, against the full reconcile it replaces, alternating in the same run); at few and
   at 10,000 learned names.
4. Memory at 10,000 learned names: the cache (tracemalloc) and what resolve builds for them.

Run as root: .venv/bin/python benchmarks/bench_fqdn.py [-n 2000]"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import netns  # noqa: E402
from support.dnsmasq import Dnsmasq  # noqa: E402

from ciliumctl.node.dns_proxy.server import Answer, DNSProxy  # noqa: E402
from ciliumctl.policy.fqdn import NameMatch  # noqa: E402

SERVER = "10.96.99.53"
CLI = str(ROOT / ".venv" / "bin" / "ciliumctl")


class RulePolicy:
    names = (NameMatch(pattern="*.example.test"),)

    def allowed(self, q) -> bool:
        return any(n.matches(q.qname) for n in self.names)

    def learn(self, q, a) -> None:
        pass

    def learn_nowait(self, q, a) -> bool:
        return True          # as the agent's for a name already learned: no thread hop

    def observe(self, q, a) -> None:
        pass


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True).stdout


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def latency(ns: str, proxy: tuple[str, int], n: int) -> tuple[list[float], list[float]]:
    import dns.message

    wire = dns.message.make_query("api.example.test", "A").to_wire()
    with netns.in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    direct, proxied = [], []
    order = [(SERVER, 53), proxy, proxy, (SERVER, 53)]
    for i in range(n):
        dst = order[i % 4]
        t = time.perf_counter()
        s.sendto(wire, dst)
        s.recv(4096)
        (direct if dst[1] == 53 else proxied).append((time.perf_counter() - t) * 1e6)
    s.close()
    return direct, proxied


RATE_CLIENT = """
import asyncio, socket, sys, time
import dns.message
host, port, seconds, inflight = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
async def run():
    loop = asyncio.get_running_loop()
    done = 0
    stop = time.perf_counter() + seconds
    async def worker(k):
        nonlocal done
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect((host, port))
        wire = dns.message.make_query(f"api{k % 8}.example.test", "A").to_wire()
        while time.perf_counter() < stop:
            await loop.sock_sendall(s, wire)
            try:
                await asyncio.wait_for(loop.sock_recv(s, 4096), 1.0)
                done += 1
            except TimeoutError:
                pass
        s.close()
    await asyncio.gather(*(worker(k) for k in range(inflight)))
    print(done / seconds)
asyncio.run(run())
"""


def rate(ns: str, dst: tuple[str, int], seconds: float = 3.0, inflight: int = 64) -> float:
    """Lookups/s of a client in its own process (not sharing the proxy's interpreter lock)."""
    out = sh("ip", "netns", "exec", ns, sys.executable, "-c", RATE_CLIENT, dst[0], str(dst[1]), str(seconds),
             str(inflight))
    return float(out.strip())


def proxy_part(n: int) -> None:
    ns = f"{netns.unique_prefix()}-dnsb"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{SERVER}/32", "dev", "lo")
        records = {f"api{k}.example.test": f"10.96.98.{k + 1}" for k in range(8)}
        records["api.example.test"] = "10.96.98.100"
        with Dnsmasq(ns, SERVER, records, ttl=300):
            p = DNSProxy(RulePolicy(), "127.0.0.1", 0, upstream=(SERVER, 53))
            with netns.in_netns(ns):
                p.bind()
            p.start()
            try:
                latency(ns, (p.host, p.port), 200)               # warm up
                direct, proxied = latency(ns, (p.host, p.port), n)
                d50, p50 = statistics.median(direct), statistics.median(proxied)
                print(f"lookup latency (us), {n} queries ABBA: direct p50 {d50:.0f} p90 {pct(direct, .9):.0f}; "
                      f"through the proxy p50 {p50:.0f} p90 {pct(proxied, .9):.0f}; added p50 {p50 - d50:.0f} us "
                      f"(target < 1000)")
                r_direct = rate(ns, (SERVER, 53))
                r_proxy = rate(ns, (p.host, p.port))
                print(f"lookups/s, 64 in flight: direct {r_direct:,.0f}, through the proxy {r_proxy:,.0f} "
                      f"({r_proxy / r_direct:.2f}x)")
            finally:
                p.stop()
    finally:
        netns.delete(ns)


POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fqdn}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toCIDR: [10.96.99.53/32]
    toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
  - toFQDNs: [{matchPattern: "*.example.test"}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toFQDNs: [M_NAMES]
    toPorts: [{ports: [{port: "8443", protocol: TCP}]}]
""".replace("M_NAMES", ", ".join(f'{{matchName: "m{k}.example.test"}}' for k in range(80)))
# m<k>.example.test is matched by two selectors: each one's address has a label set of its own


def learn_part(big: int) -> None:
    prefix = netns.unique_prefix()
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    env = dict(CILIUMCTL_NODE_NETNS=prefix, CILIUMCTL_STATE_DIR=str(tmp / "state"), CILIUMCTL_RUN_DIR=str(tmp / "run"),
               CILIUMCTL_BPFFS_DIR=f"/sys/fs/bpf/{prefix}")
    os.environ.update(env)
    full = {**os.environ, **env}
    sh("ip", "netns", "add", prefix)
    try:
        subprocess.run([CLI, "install", "--no-agent"], env=full, check=True, capture_output=True)
        out = subprocess.run([CLI, "endpoint", "add", "client", "-l", "app=client", "-o", "json"], env=full,
                             check=True, capture_output=True, text=True).stdout
        import json

        client_ip = json.loads(out)["ipv4"].split("/")[0]
        (tmp / "p.yaml").write_text(POLICY)
        subprocess.run([CLI, "policy", "apply", "-f", str(tmp / "p.yaml")], env=full, check=True, capture_output=True)

        from ciliumctl.node import reconcile, settings
        from ciliumctl.node.dns_proxy.cache import FQDNCache
        from ciliumctl.node.dns_proxy.policy import NodeDNSPolicy
        from ciliumctl.node.dns_proxy.service import program_new_identities

        pol = NodeDNSPolicy(reconcile.reconcile, settings.locked)
        dp = reconcile.open_datapath()
        pol.datapath = lambda: dp          # as the agent keeps it open (node/dns_proxy/service.py)
        pol.new_identities = program_new_identities

        def one(k: int, name: str = "n") -> float:
            q = SimpleNamespace(client=(client_ip, 40000), server=("10.96.99.53", 53), proto="udp",
                                qname=f"{name}{k}.example.test.", qtype="A")
            net = 90 if name == "n" else 80          # m<k> names: addresses of their own
            a = Answer("NOERROR", [(f"10.{net + k // 65536}.{k // 256 % 256}.{k % 256}", 300)], [], b"", True)
            t = time.perf_counter()
            pol.learn(q, a)
            return (time.perf_counter() - t) * 1000

        first = one(1)                    # a lone selector's label set: its identity is programmed ahead
        small = [one(k) for k in range(2, 42)]
        print(f"answer -> map: the first address of a selector {first:.1f} ms; the next ones (in "
              f"place) p50 {statistics.median(small):.2f} ms, p90 {pct(small, .9):.2f} (target < 5 ms)")
        # a new label set each: in place (program_new_identities) vs the full reconcile it replaces, alternating
        inplace, by_reconcile = [], []
        for k in range(0, 40):
            pol.new_identities = program_new_identities if k % 2 == 0 else None
            (inplace if k % 2 == 0 else by_reconcile).append(one(k, "m"))
        pol.new_identities = program_new_identities
        print(f"answer -> map, a new label set: in place p50 {statistics.median(inplace):.2f} ms, p90 "
              f"{pct(inplace, .9):.2f}; by a reconcile p50 {statistics.median(by_reconcile):.2f} ms, p90 "
              f"{pct(by_reconcile, .9):.2f} ({statistics.median(by_reconcile) / statistics.median(inplace):.1f}x; "
              "target < 5 ms)")
        cache = FQDNCache()
        with cache.locked():
            cache.load()
            now = time.time()
            for k in range(1000, 1000 + big):
                cache.add(1, [f"bulk{k}.example.test."], [(f"10.{90 + k // 65536}.{k // 256 % 256}.{k % 256}", 3600)],
                          now)
            cache.save()
        with settings.locked():
            t = time.perf_counter()
            reconcile.reconcile()
            bulk = time.perf_counter() - t
        pol._cache_key = ()                # the file changed under it (as after `fqdn cache clean`): reread
        many = [one(k) for k in range(100, 140)]
        print(f"a reconcile with {big:,} learned names: {bulk:.2f} s; answer -> map at {big:,} names (in place): "
              f"p50 {statistics.median(many):.2f} ms, p90 {pct(many, .9):.2f}")
        new_sets = [one(k, "m") for k in range(40, 60)]
        print(f"answer -> map at {big:,} names, a new label set (in place): p50 {statistics.median(new_sets):.2f} ms, "
              f"p90 {pct(new_sets, .9):.2f}")
        dp.close()
    finally:
        subprocess.run([CLI, "uninstall"], env=full, capture_output=True)
        netns.delete(*netns.named(f"{prefix}-"), prefix)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(f"/sys/fs/bpf/{prefix}", ignore_errors=True)


def memory_part(n: int) -> None:
    import yaml

    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.identity.allocator import MemoryAllocator
    from ciliumctl.node.dns_proxy.cache import FQDNCache
    from ciliumctl.policy.resolve import resolve

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache = FQDNCache(Path(tempfile.gettempdir()) / f"bench-fqdn-{secrets.token_hex(3)}.json")
    now = time.time()
    for k in range(n):
        cache.add(1, [f"n{k}.example.test."], [(f"10.{90 + k // 65536}.{k // 256 % 256}.{k % 256}", 3600)], now)
    cache_mb = (tracemalloc.get_traced_memory()[0] - base) / 2**20
    doc = yaml.safe_load(POLICY)
    doc["metadata"]["namespace"] = "default"
    eps = [Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")]
    before = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    state = resolve(eps, [doc], "default", MemoryAllocator(), fqdn_ips=cache.live_ips())
    secs = time.perf_counter() - t
    state_mb = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    tracemalloc.stop()
    print(f"{n:,} learned names: cache {cache_mb:.1f} MiB; resolve {secs:.2f} s, its state {state_mb:.1f} MiB "
          f"({len(state.ipcache):,} ipcache entries, {len(state.endpoints[1].egress.entries):,} egress entries)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="queries for the latency part")
    ap.add_argument("--names", type=int, default=10_000)
    args = ap.parse_args()
    proxy_part(args.n)
    memory_part(args.names)
    learn_part(args.names)


if __name__ == "__main__":
    main()
