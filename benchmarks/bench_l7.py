"""L7 HTTP policy through HAProxy (issue 14): what the proxy costs, whether a policy update drops connections, and
memory at 1,000 L7 rules.

1. Keep-alive HTTP/1.1 requests (GET, 200 with a small JSON body) from one pod to another over one connection:
   requests/s and latency p50/p99 through an L7-policed port (the datapath redirects to HAProxy, which checks
   rules.http and connects on) vs the same port with the same L4 allow and no L7 rules, in one run, rounds
   A B B A. The server is Python's http.server (tests/support/httpd.py): the absolute rates are its, the added
   latency is the proxy's.
2. A policy update under load: while a client sends requests on kept-alive connections, the rules change (new
   configuration: HAProxy reloads, master-worker); failed requests and broken connections are counted.
3. Memory at 1,000 L7 rules (distinct paths for one peer and port): HAProxy's resident memory (master + worker)
   and what the agent side holds for them (the ResolvedState's HTTP part and the rendered configuration,
   tracemalloc).

Run as root: .venv/bin/python benchmarks/bench_l7.py [--seconds 3]"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support import pods  # noqa: E402
from support.httpd import HttpServer, PodHTTPConnection  # noqa: E402

from ciliumctl.datapath import proxyroute  # noqa: E402
from ciliumctl.node import haproxy_config  # noqa: E402
from ciliumctl.node.http_proxy.haproxy import HAProxy  # noqa: E402
from ciliumctl.policy import model  # noqa: E402
from ciliumctl.policy.resolved import PROTO_TCP, Direction, HTTPAllow, PortRange  # noqa: E402

PORT = 15080


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def state(sb, revision: int, rules: tuple | None):
    a, b, _ = sb.pods
    st = sb.state(revision, {b.ep.id: (True, [pods.entry(a.identity, PROTO_TCP, 80)], False, [])})
    if rules is not None:
        st.http[(b.ep.id, int(Direction.INGRESS))] = [HTTPAllow(a.identity, PortRange(PROTO_TCP, 80, 80), rules)]
        haproxy_config.redirect(st, PORT)
    return st


def conn(pod, ip: str) -> http.client.HTTPConnection:
    c = PodHTTPConnection(pod, ip, 80, timeout=10)
    c.connect()
    return c


def run_requests(pod, ip: str, seconds: float, path: str = "/v1/status") -> tuple[int, list[float]]:
    c = conn(pod, ip)
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        assert r.status == 200, r.status
    c.close()
    return len(lat), lat


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    from ciliumctl.datapath.loader import Datapath

    rules = (model.HTTPRule(method="GET", path="/v1/.*"), model.HTTPRule(method="POST", path="/v1/request-landing"))
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as tmp, pods.sandbox(mp, Path(tmp), 3) as sb:
        a, b, _ = sb.pods
        dp = Datapath.open()
        for p in sb.pods:
            dp.attach(p.ep)
        proxyroute.ensure()
        proxy = HAProxy(Path(tmp) / "haproxy", PORT)
        srv = HttpServer(b.ns, 80)
        srv.server.handle_error = lambda *a: None       # a client gone mid-request is counted by the client side
        try:
            # 1. throughput and latency, A B B A
            res: dict[str, list] = {"l4": [[], 0.0], "l7": [[], 0.0]}
            rev = 0
            for phase in ("l4", "l7", "l7", "l4"):
                rev += 1
                st = state(sb, rev, rules if phase == "l7" else None)
                if phase == "l7":
                    proxy.apply(st)
                dp.apply(st)
                run_requests(a, b.ip, 0.3)                      # warm-up
                n, lat = run_requests(a, b.ip, args.seconds)
                res[phase][0].extend(lat)
                res[phase][1] += n / args.seconds / 2
            print(f"1. keep-alive GET over one connection, {args.seconds:.0f} s per round, A B B A")
            print(f"   {'':28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for phase, name in (("l4", "L4 allow only (no proxy)"), ("l7", "rules.http through HAProxy")):
                lat, rate = res[phase]
                print(f"   {name:28} {rate:8.0f} {pct(lat, 50) * 1e3:8.3f} {pct(lat, 99) * 1e3:8.3f}")
            ratio = res["l7"][1] / res["l4"][1]
            added = (pct(res["l7"][0], 50) - pct(res["l4"][0], 50)) * 1e3
            print(f"   ratio {ratio:.2f}x throughput (target >= 0.5x), added p50 {added:.3f} ms (target < 0.5 ms)")

            # 2. a policy update under load: 4 clients on kept-alive connections, the rules change 5 times
            rev += 1
            st = state(sb, rev, rules)
            proxy.apply(st)
            dp.apply(st)
            stop = threading.Event()
            done, failed = [0], [0]
            why: dict[str, int] = {}

            def client():
                try:
                    c = conn(a, b.ip)
                except OSError:
                    failed[0] += 1
                    return
                while not stop.is_set():
                    try:
                        c.request("GET", "/v1/status")
                        r = c.getresponse()
                        r.read()
                        done[0] += r.status == 200
                        failed[0] += r.status != 200
                        if r.status != 200:
                            why[str(r.status)] = why.get(str(r.status), 0) + 1
                    except (OSError, http.client.HTTPException) as err:
                        failed[0] += 1
                        why[type(err).__name__] = why.get(type(err).__name__, 0) + 1
                        c.close()
                        try:
                            c = conn(a, b.ip)
                        except OSError as err2:
                            why["connect " + type(err2).__name__] = why.get("connect " + type(err2).__name__, 0) + 1
                            time.sleep(0.01)
                c.close()

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            reloads = 0
            for i in range(5):
                time.sleep(0.5)
                rev += 1
                more = rules + (model.HTTPRule(method="GET", path=f"/v2/extra-{i}"),)
                st = state(sb, rev, more)
                proxy.apply(st)                   # a new configuration: HAProxy reloads
                dp.apply(st)
                reloads += 1
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(15)
            print(f"2. policy update under load: {reloads} reloads while 4 clients sent {done[0]} requests on "
                  f"kept-alive connections: {failed[0]} failed or broken (target 0) {why or ''}")

            # 3. memory at 1,000 L7 rules
            many = tuple(model.HTTPRule(method="GET", path=f"/api/v1/resource-{i}/.*") for i in range(1000))
            tracemalloc.start()
            rev += 1
            st = state(sb, rev, many)
            text = haproxy_config.render(st, PORT, proxy.paths)
            size, _peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            proxy.apply(st)
            dp.apply(st)
            time.sleep(0.5)
            pids = [proxy.proc.pid] + [proxy.worker_pid()]
            total = sum(rss_kb(p) for p in pids if p)
            print(f"3. 1,000 L7 rules: HAProxy resident {total / 1024:.1f} MiB (master + worker), configuration "
                  f"{len(text) / 1024:.0f} KiB; agent side (state's HTTP part + rendering) {size / 1024:.0f} KiB")
            assert run_requests(a, b.ip, 0.2, "/api/v1/resource-999/x")[0] > 0
        finally:
            srv.close()
            proxy.stop()
            proxyroute.remove()
            dp.close()
            mp.undo()


if __name__ == "__main__":
    main()
