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
import os
import resource
import shutil
import subprocess
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
from ciliumctl.node.http_proxy import config as haproxy_config  # noqa: E402
from ciliumctl.node.http_proxy.haproxy import HAProxy  # noqa: E402
from ciliumctl.node.http_proxy.service import HTTPService, proxy_dir  # noqa: E402
from ciliumctl.policy import model  # noqa: E402
from ciliumctl.policy.resolved import PROTO_TCP, Direction, HTTPAllow, PortRange  # noqa: E402

PORT = 15080


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def state(sb, revision: int, rules: tuple | None, peers: tuple = (0,)):
    """b's ingress: the L4 allow of port 80 for the pods `peers` (indexes), with `rules` for them when given."""
    b = sb.pods[1]
    idents = [sb.pods[i].identity for i in peers]
    st = sb.state(revision, {b.ep.id: (True, [pods.entry(i, PROTO_TCP, 80) for i in idents], False, [])})
    if rules is not None:
        st.http[(b.ep.id, int(Direction.INGRESS))] = [HTTPAllow(i, PortRange(PROTO_TCP, 80, 80), rules)
                                                      for i in idents]
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


def compile_httpload(tmp: Path) -> str:
    cc = shutil.which("cc")
    if not cc:
        sys.exit("bench_l7: needs a C compiler (cc)")
    out = str(tmp / "httpload")
    subprocess.run([cc, "-O2", "-pthread", "-o", out, str(ROOT / "benchmarks" / "httpload.c")], check=True)
    return out


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def httpload(load: str, pod, ip: str, conns: int, secs: float, pids: list[int]) -> dict:
    """One round of the C client in the pod: its rate, latencies, and the CPU each party spent per request (the
    client's by wait4, the server's and HAProxy's from /proc, the agent's log reader's as this process's own)."""
    before = [cpu_s(p) for p in pids]
    me0 = resource.getrusage(resource.RUSAGE_SELF)
    proc = subprocess.Popen(["ip", "netns", "exec", pod.ns, load, "client", ip, "80", str(secs), str(conns),
                             "/v1/status"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    me1 = resource.getrusage(resource.RUSAGE_SELF)
    if proc.returncode != 0:
        raise RuntimeError(f"httpload client exited {proc.returncode}: {out}")
    words = out.split()
    r = {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}
    n = max(r["requests"], 1)
    cpu = {"client": usage.ru_utime + usage.ru_stime,
           "agent": (me1.ru_utime + me1.ru_stime) - (me0.ru_utime + me0.ru_stime),
           "server": cpu_s(pids[0]) - before[0] if pids else 0.0,
           "haproxy": sum(cpu_s(p) - b for p, b in zip(pids[1:], before[1:], strict=True))}
    return {"rps": r["rps"], "p50": r["p50_us"] / 1e3, "p99": r["p99_us"] / 1e3, "errors": int(r["errors"]),
            "n": n, "cpu": {k: v / n * 1e6 for k, v in cpu.items()}}


def upstream_connects(proxy) -> int:
    """HAProxy's count of connections opened to endpoints (`show stat`: the to_endpoint backend's `connect`)."""
    lines = proxy.command("show stat").splitlines()
    names = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(names, line.split(","), strict=False))
        if row.get("pxname") == "to_endpoint" and row.get("svname") == "BACKEND":
            return int(row["connect"] or 0)
    return 0


def syn_retrans(ns: str) -> int:
    """The namespace's retransmitted SYNs (TcpExtTCPSynRetrans): each one a request stalled by a second or more."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/netstat"], capture_output=True,
                         text=True).stdout.splitlines()
    for names, values in zip(out[::2], out[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["TCPSynRetrans"])
    return 0


def merge(rounds: list[dict]) -> dict:
    """Two rounds of one side: mean rate, mean of the percentiles, CPU per request weighted by requests."""
    n = sum(r["n"] for r in rounds)
    return {"rps": sum(r["rps"] for r in rounds) / len(rounds), "p50": sum(r["p50"] for r in rounds) / len(rounds),
            "p99": sum(r["p99"] for r in rounds) / len(rounds), "errors": sum(r["errors"] for r in rounds),
            "cpu": {k: sum(r["cpu"][k] * r["n"] for r in rounds) / n for k in rounds[0]["cpu"]}}


def agent_flow(counter: list[int]):
    """What the agent does with each logged request (node/agent.py _http_flow): the event into a flow store, its
    L7 flows built when a client reads them (none does here)."""
    from ciliumctl.flows.http import http_flows
    from ciliumctl.flows.meta import MetaWatcher
    from ciliumctl.flows.store import FlowStore

    store, meta = FlowStore(4096), MetaWatcher()

    def build(event, snap):
        return http_flows(event, snap, "bench")

    def on_flow(event) -> None:
        store.add_l7(event, event.flow_count, meta.refresh(), build)
        counter[0] += 1
    return on_flow


def update(sb, proxy, dp, rules: tuple, kind: str, i: int, base: int) -> None:
    if kind == "identities":
        st = state(sb, base + i + 1, rules, (0, 2) if i % 2 == 0 else (0,))
    else:
        st = state(sb, base + i + 1, rules + (model.HTTPRule(method="GET", path=f"/v2/extra-{i}"),))
    proxy.apply(st)
    dp.apply(st)


def under_load(a, ip: str, change) -> dict:
    """4 clients send GETs on kept-alive connections while change(0..4) runs every 0.5 s."""
    stop = threading.Event()
    done, failed = [0], [0]
    why: dict[str, int] = {}

    def client():
        c = PodHTTPConnection(a, ip, 80, timeout=10)      # reconnects by itself after a `Connection: close`
        while not stop.is_set():
            try:
                c.request("GET", "/v1/status")
                r = c.getresponse()
                r.read()
                done[0] += r.status == 200
                if r.status != 200:
                    failed[0] += 1
                    why[str(r.status)] = why.get(str(r.status), 0) + 1
            except (OSError, http.client.HTTPException) as err:
                failed[0] += 1
                why[type(err).__name__] = why.get(type(err).__name__, 0) + 1
                c.close()
                time.sleep(0.01)
        c.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(5):
        time.sleep(0.5)
        change(i)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(15)
    return {"done": done[0], "failed": failed[0], "why": why}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def serve(ns: str) -> None:
    """Python's http.server in its own process (tests/support/httpd.py, thread per connection): a server that spends
    tens of microseconds per request, as an application does, where the C server spends a few."""
    srv = HttpServer(ns, 80)
    print("ready", flush=True)
    srv.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=8, help="kept-alive connections of the loaded rounds")
    ap.add_argument("--serve", metavar="NETNS", help=argparse.SUPPRESS)    # the Python server, in a pod
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    from ciliumctl.datapath.loader import Datapath

    rules = (model.HTTPRule(method="GET", path="/v1/.*"), model.HTTPRule(method="POST", path="/v1/request-landing"))
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as tmp, pods.sandbox(mp, Path(tmp), 3) as sb:
        a, b, _ = sb.pods
        dp = Datapath.open()
        for p in sb.pods:
            dp.attach(p.ep)
        proxyroute.ensure()
        proxy = HAProxy(proxy_dir(), PORT)          # where the agent's log reader listens
        flows = [0]
        srv = logs = None
        try:
            # 1. throughput and latency, A B B A, at 1 and at CONNS kept-alive connections
            load = compile_httpload(Path(tmp))
            logs = HTTPService(on_flow=agent_flow(flows))
            logs.listen_log()
            rev = 0
            print(f"1. keep-alive GET, C client (benchmarks/httpload.c), {args.seconds:.0f} s per round, A B B A; the "
                  "agent's log reader (L7 flows) runs in this process")
            print(f"   {'':41} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}   CPU us per request: "
                  "haproxy client server agent")
            for kind, server_cmd in (("C server", [load, "server", "80"]),
                                     ("Python server", [sys.executable, str(ROOT / "benchmarks" / "bench_l7.py"),
                                                        "--serve", b.ns])):
                server = subprocess.Popen(["ip", "netns", "exec", b.ns, *server_cmd], stdout=subprocess.PIPE,
                                          text=True)
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                for conns in (1, args.conns):
                    res: dict[str, list] = {"l4": [], "l7": []}
                    for phase in ("l4", "l7", "l7", "l4"):
                        rev += 1
                        st = state(sb, rev, rules if phase == "l7" else None)
                        if phase == "l7":
                            proxy.apply(st)
                        dp.apply(st)
                        httpload(load, a, b.ip, conns, 0.3, [])                 # warm-up
                        opened, retrans = upstream_connects(proxy) if phase == "l7" else 0, syn_retrans(sb.node)
                        res[phase].append(httpload(load, a, b.ip, conns, args.seconds,
                                                   [server.pid] + ([proxy.worker_pid()] if phase == "l7" else [])))
                        if phase == "l7":
                            res[phase][-1]["opened"] = upstream_connects(proxy) - opened
                            res[phase][-1]["syn_retrans"] = syn_retrans(sb.node) - retrans
                    for phase, name in (("l4", "L4 allow only"), ("l7", "rules.http, HAProxy")):
                        r = merge(res[phase])
                        cpu = " ".join(f"{r['cpu'].get(k, 0):5.1f}" for k in ("haproxy", "client", "server", "agent"))
                        print(f"   {kind:13} {conns:2d} conn {name:19} {r['rps']:8.0f} {r['p50']:7.3f} "
                              f"{r['p99']:7.3f}   {cpu}{'  ERRORS ' + str(r['errors']) if r['errors'] else ''}")
                    print(f"   {kind:13} {conns:2d} conn upstream connections opened "
                          f"{sum(r['opened'] for r in res['l7'])} for {sum(r['n'] for r in res['l7']):.0f} requests, "
                          f"SYNs retransmitted {sum(r['syn_retrans'] for r in res['l7'])} (stalls)")
                    l4, l7 = merge(res["l4"]), merge(res["l7"])
                    print(f"   {kind:13} {conns:2d} conn ratio {l7['rps'] / l4['rps']:.2f}x throughput (target >= "
                          f"0.5x), added p50 {l7['p50'] - l4['p50']:.3f} ms (target < 0.5 ms)")
                server.terminate()
                server.wait()
            print(f"   requests the agent made L7 flows of: {flows[0]}")
            srv = HttpServer(b.ns, 80)
            srv.server.handle_error = lambda *a: None   # a client gone mid-request is counted by the client side

            # 2. policy updates under load: 4 clients on kept-alive connections; 5 updates that change only whom the
            # rules concern (c's identity joins and leaves: runtime API), then 5 that change the rules (reload)
            print("2. policy updates under load, 4 Python clients on kept-alive connections (a request that fails, "
                  "a connection broken under a request: target 0)")
            for kind in ("identities", "rules"):
                rev += 1
                st = state(sb, rev, rules)
                proxy.apply(st)
                dp.apply(st)
                worker = proxy.worker_pid()
                got = under_load(a, b.ip, lambda i, kind=kind, rev=rev: update(sb, proxy, dp, rules, kind, i, rev))
                rev += 5
                print(f"   5 updates of the {kind:10}: {got['done']} requests, {got['failed']} failed "
                      f"{got['why'] or ''}; HAProxy {'reloaded' if proxy.worker_pid() != worker else 'not reloaded'}")

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
            if srv is not None:
                srv.close()
            if logs is not None:
                logs.stop()
            proxy.stop()
            proxyroute.remove()
            dp.close()
            mp.undo()


if __name__ == "__main__":
    main()
