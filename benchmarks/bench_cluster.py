"""On a real two-node cluster (tests/k8s/cluster.py, the agent installed with `ciliumctl install --wait`):

1. pods: a Deployment of 20 pods on node1, applied at once -> every pod Ready; per pod (watch ADDED -> Ready)
   p50/p90/max and the wall time (apply -> last Ready), ciliumctl-cni against Debian's `bridge` plugin
   (+ host-local), alternated ABBA in one run. Where the time goes: the pod conditions seen on the watch
   (scheduled, sandbox with network ready, Ready), and from containerd's own log the RunPodSandbox time per pod
   (sandbox + CNI ADD), its request -> container started, and the burst's span in the runtime (first request ->
   last container started: the runtime's side without the kubelet's status loop, which polls the runtime).
2. memory: the agent container on node1 (RSS of its processes, anonymous and file-mapped, and its memory
   cgroup) at 0 pods, 100 pods, and 0 again after they are gone.
3. policy: `kubectl apply` of a CiliumNetworkPolicy -> a new TCP connection between two pods on node1 is dropped
   (the rule is in the kernel); and `kubectl delete` -> connections pass again. p50/p90 over N applies. At the
   end, how often the agent's API watches failed during the run (a policy applied then waits for the retry).

The baseline of 1 (why `bridge` on the same node, not a second node or cluster): containerd's CRI loads the first
conflist of /etc/cni/net.d (max_conf_num = 1) and reloads the directory when it changes, so dropping
`00-...-bridge.conflist` beside the agent's `05-ciliumctl.conflist` switches node1 to bridge, and removing it
switches back. Same node, same kubelet, same containerd, same images, same agent running beside; only the CNI
plugin differs. (A second node would compare two kubelets and containerds; the other node keeps running
ciliumctl either way.) Each switch is checked with a warm-up pod whose address must be in the plugin's range,
and a burst is removed (every DEL done: the plugin's host-local leases are gone) before the next switch, so that
no DEL goes to the other plugin.

Targets (issue 11): pods wall time and per-pod p50 (apply -> Ready) <= 1.3x bridge; policy apply -> enforced
p50 < 1 s. The memory figures have no target.
Run as root from the project root (builds or reuses the images of scripts/image.sh, ~1-2 min of cluster start):
    .venv/bin/python benchmarks/bench_cluster.py [--pairs 2] [--pods 20] [--mem-pods 100] [--applies 20]
Everything is in the cluster's namespaces and temporary directory (prefix ck<rand4>), removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from k8s.cluster import (  # noqa: E402  (the tests' real cluster)
    Cluster,
    build_images,
    default_bin,
    install_agent,
    run,
    socket_in_netns,
    wait_for,
)
from stats import pct  # noqa: E402  (benchmarks/stats.py)

BRIDGE_NET = "cctlbench"                    # the bridge conflist's network name (host-local's lease directory)
BRIDGE_SUBNET = "10.239.0.0/24"             # only inside node1's network namespace
BRIDGE_CONF = "00-cctlbench-bridge.conflist"   # sorts before 05-ciliumctl.conflist
AGENT_SELECTOR = "app.kubernetes.io/name=ciliumctl-agent"
BRIDGE_BIN = "/usr/lib/cni/bridge"          # Debian's containernetworking-plugins
POD_TARGET = 1.3                            # issue 11: pod creation -> Ready <= 1.3x the bridge plugin
POLICY_TARGET = 1.0                         # issue 11: apply -> enforced p50 < 1 s


def fmt(values: list[float]) -> str:
    return f"p50 {statistics.median(values):6.2f}s  p90 {pct(values, 0.9):6.2f}s  max {max(values):6.2f}s"


class Bench:
    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.node = cluster.nodes[0]
        self.ns = cluster.prefix + "-bench"
        self.host = self.node.dir / "host"       # node1's /etc/cni/net.d, /opt/cni/bin, /var/lib/cni ...
        self.seq = 0

    # --- API helpers
    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120):
        return self.c.kubectl(*args, input=input, timeout=timeout)

    def pods(self, selector: str, ns: str | None = None) -> list[dict]:
        path = f"/api/v1/namespaces/{ns or self.ns}/pods?labelSelector={selector}"
        return json.loads(self.c.get_raw(path))["items"]

    def pod_spec(self, labels: dict, command: list[str]) -> dict:
        return {"metadata": {"labels": labels},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": self.node.name},
                         "terminationGracePeriodSeconds": 1, "enableServiceLinks": False,
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "main", "image": "ciliumctl-test:local",
                                         "imagePullPolicy": "Never", "command": command}]}}

    def deployment(self, name: str, replicas: int) -> dict:
        labels = {"bench": name}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": self.ns},
                "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                         "template": self.pod_spec(labels, ["sleep", "infinity"])}}

    def name(self, what: str) -> str:
        self.seq += 1
        return f"{what}{self.seq}"

    # --- which plugin node1 uses
    def leases(self, network: str) -> list[str]:
        d = self.host / "var/lib/cni/networks" / network
        return [p.name for p in d.glob("*") if p.name[:1].isdigit()] if d.exists() else []

    def use_plugin(self, plugin: str) -> None:
        conf = self.host / "etc/cni/net.d" / BRIDGE_CONF
        if plugin == "bridge":
            bin_dir = self.host / "opt/cni/bin"
            if not (bin_dir / "bridge").exists():
                shutil.copy2(BRIDGE_BIN, bin_dir / "bridge")
            # ipMasq off: no iptables rules, not even in the node's namespace; the bridge is node1's own
            conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": BRIDGE_NET, "plugins": [{
                "type": "bridge", "bridge": "cctlbench0", "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": BRIDGE_SUBNET}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}}]}))
        else:
            conf.unlink(missing_ok=True)
        want = ipaddress.ip_network(BRIDGE_SUBNET if plugin == "bridge" else self.c.pod_cidrs[self.node.name])
        # containerd reloads the directory on its own: a warm-up pod says when its address comes from `plugin`
        for _ in range(10):
            name = self.name("warm")
            pod = {"apiVersion": "v1", "kind": "Pod", **self.pod_spec({"bench": name}, ["sleep", "infinity"])}
            pod["metadata"].update(name=name, namespace=self.ns)
            self.kubectl("apply", "-f", "-", input=json.dumps(pod))
            ip = wait_for(f"warm-up pod {name}", lambda n=name: self._ready_ip(n), 120)
            self.remove(f"pod/{name}", f"bench={name}")
            if ipaddress.ip_address(ip) in want:
                return
            time.sleep(1)
        raise SystemExit(f"node1 does not switch to {plugin}: pod addresses stay outside {want}")

    def _ready_ip(self, name: str) -> str | None:
        pod = json.loads(self.c.get_raw(f"/api/v1/namespaces/{self.ns}/pods/{name}"))
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        return pod["status"].get("podIP") if ready else None

    def remove(self, obj: str, selector: str) -> None:
        """Delete and wait until every pod is gone and every CNI DEL is done (their host-local leases released,
        in either network)."""
        ips = {p["status"].get("podIP") for p in self.pods(selector)} - {None}
        self.kubectl("delete", "-n", self.ns, obj, "--wait=false")
        wait_for(f"{obj} pods gone", lambda: not self.pods(selector), 300, step=0.3)
        wait_for(f"{obj} leases released", lambda: not ips & set(self.leases(BRIDGE_NET) + self.leases("ciliumctl")),
                 120, step=0.3)

    # --- 1. a burst of pods
    def runtime_leftovers(self) -> int:
        """Containers (sandboxes included) of the bench namespace that containerd on node1 still holds."""
        res = run("ctr", "--address", self.node.sock, "-n", "k8s.io", "containers", "ls", "-q",
                  f'labels."io.kubernetes.pod.namespace"=={self.ns}')
        return len(res.stdout.split())

    def quiet(self) -> float:
        """Wait until the kubelet has removed every sandbox of the pods already deleted: its garbage collection
        (once a minute) stops and removes them with two more CNI DELs, which would otherwise land in a later
        burst, on whichever plugin is active then. Returns the seconds waited."""
        t0 = time.monotonic()
        wait_for("the kubelet removing old sandboxes", lambda: self.runtime_leftovers() == 0, 180, step=1)
        return time.monotonic() - t0

    def burst(self, n: int) -> dict:
        quiet = self.quiet()
        name = self.name("burst")
        watch = PodWatch(self.c, self.ns, f"bench={name}")
        watch.ready.wait(10)
        t0 = time.monotonic()
        self.kubectl("apply", "-f", "-", input=json.dumps(self.deployment(name, n)))
        watch.wait(n, 300)
        watch.stop()
        pods = list(watch.seen.values())
        sandbox, runtime, span = runtime_times(self.node.dir / "containerd.log", {p["name"] for p in pods})
        self.remove(f"deployment/{name}", f"bench={name}")
        return {
            "wall": max(p["ready"] for p in pods) - t0,
            "per_pod": [p["ready"] - p["added"] for p in pods],
            "to_sched": [p.get("sched", p["added"]) - p["added"] for p in pods],
            "sched_to_net": [p["net"] - p.get("sched", p["added"]) for p in pods if "net" in p],
            "net_to_ready": [p["ready"] - p["net"] for p in pods if "net" in p],
            "sandbox": sandbox, "runtime": runtime, "span": span, "quiet": quiet,
        }

    # --- 2. the agent's memory on node1
    def container_cgroup(self, pod: dict, container: str) -> Path:
        """The container's memory cgroup (v1) under node1's kubelet cgroupRoot."""
        cid = next(st["containerID"].split("://")[1] for st in pod["status"]["containerStatuses"]
                   if st["name"] == container)
        base = Path("/sys/fs/cgroup/memory") / self.node.cgroup
        cg = next(iter(base.glob(f"kubepods/**/pod{pod['metadata']['uid']}/{cid}")), None)
        if cg is None:
            raise SystemExit(f"no memory cgroup of container {cid[:12]} under {base}")
        return cg

    def agent_memory(self) -> dict:
        pod = next(p for p in self.pods(AGENT_SELECTOR, "ciliumctl-system")
                   if p["spec"].get("nodeName") == self.node.name and not p["metadata"].get("deletionTimestamp"))
        cg = self.container_cgroup(pod, "agent")
        stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
        # RssFile is mostly the shared libraries (libbcc with its LLVM): mapped, not the agent's own
        mem = {"procs": 0, "rss": 0, "anon": 0, "file": 0}
        for pid in (cg / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                mem["procs"] += 1
                for key, field in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile")):
                    mem[key] += int(status[field].split()[0]) * 1024
        return {**mem, "cg_rss": int(stat["total_rss"]),
                "cg_usage": int((cg / "memory.usage_in_bytes").read_text())}

    def memory(self, n: int) -> list[tuple[str, dict]]:
        time.sleep(5)
        rows = [("0 pods", self.agent_memory())]
        name = self.name("mem")
        self.kubectl("apply", "-f", "-", input=json.dumps(self.deployment(name, n)))
        wait_for(f"{n} pods Ready", lambda: sum(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            for p in self.pods(f"bench={name}")) >= n, 900, step=1)
        # the agent has published their CiliumEndpoints (and identities) once they are all there
        wait_for("CiliumEndpoints of the pods", lambda: len(json.loads(self.c.get_raw(
            f"/apis/cilium.io/v2/namespaces/{self.ns}/ciliumendpoints"))["items"]) >= n, 300, step=1)
        time.sleep(5)
        rows.append((f"{n} pods", self.agent_memory()))
        self.remove(f"deployment/{name}", f"bench={name}")
        time.sleep(5)
        rows.append(("0 pods again", self.agent_memory()))
        return rows

    # --- 3. policy apply -> enforced in the kernel
    def policy(self, applies: int) -> tuple[list[float], list[float], list[float]]:
        for name, cmd in (("web", ["python3", "-m", "http.server", "8080"]), ("client", ["sleep", "infinity"])):
            pod = {"apiVersion": "v1", "kind": "Pod", **self.pod_spec({"bench": name, "app": name}, cmd)}
            pod["metadata"].update(name=name, namespace=self.ns)
            self.kubectl("apply", "-f", "-", input=json.dumps(pod))
        web_ip = wait_for("web Ready", lambda: self._ready_ip("web"), 120)
        wait_for("client Ready", lambda: self._ready_ip("client"), 120)
        netns = f"/proc/{self.container_pid('client')}/ns/net"
        wait_for("web answers", lambda: connects(netns, web_ip, timeout=0.5), 60)
        policy = json.dumps({
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "web-from-nobody", "namespace": self.ns},
            "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "nobody"}}]}]}})
        to_enforced, to_kubectl, to_lifted = [], [], []
        for _ in range(applies):
            t0 = time.monotonic()
            self.kubectl("apply", "-f", "-", input=policy)
            to_kubectl.append(time.monotonic() - t0)
            # a dropped SYN shows as a timeout: three in a row, so that one slow accept on a busy machine is not
            # taken for the policy
            to_enforced.append(until("policy enforced (client -> web dropped)",
                                     lambda: not any(connects(netns, web_ip) for _ in range(3)), 30) - t0)
            t0 = time.monotonic()
            self.kubectl("delete", "-n", self.ns, "ciliumnetworkpolicy/web-from-nobody")
            to_lifted.append(until("policy lifted (client -> web passes)", lambda: connects(netns, web_ip), 30) - t0)
        return to_enforced, to_kubectl, to_lifted

    def agent_watch_failures(self) -> int:
        """How often the agent on node1 logged a failed API watch (ciliumctl/cluster/watch.py): each is a pause in
        which a new policy waits."""
        logs = self.host.glob("var/log/pods/ciliumctl-system_ciliumctl-agent-*/agent/*.log")
        return sum(p.read_text(errors="replace").count(" watch failed (") for p in logs)

    def container_pid(self, pod_name: str) -> str:
        pod = json.loads(self.c.get_raw(f"/api/v1/namespaces/{self.ns}/pods/{pod_name}"))
        return (self.container_cgroup(pod, "main") / "cgroup.procs").read_text().split()[0]


PROBE_TIMEOUT = 0.05     # a dropped SYN is a failed attempt after this; an allowed connect on node1 takes < 1 ms


def connects(netns: str, ip: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """A new TCP connection from the pod whose network namespace is `netns` (the test's own pod)."""
    s = socket_in_netns(netns)
    s.settimeout(timeout)
    try:
        s.connect((ip, 8080))
        return True
    except OSError:
        return False
    finally:
        s.close()


def until(what: str, predicate, timeout: float) -> float:
    """The monotonic time at the start of the first attempt for which predicate() held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = time.monotonic()
        if predicate():
            return t
        time.sleep(0.005)
    raise SystemExit(f"{what}: not within {timeout:.0f}s")


class PodWatch:
    """A watch of the API server on the burst's pods: when each was first seen, scheduled, its sandbox and network
    ready (PodReadyToStartContainers), Ready."""

    CONDITIONS = {"PodScheduled": "sched", "PodReadyToStartContainers": "net", "Ready": "ready"}

    def __init__(self, cluster: Cluster, ns: str, selector: str):
        import urllib.request

        self.seen: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.error = ""
        self._stop = False
        # resourceVersion=0: from the API server's watch cache as it is. Without it the server first waits for
        # its cache to reach etcd's newest revision, and etcd 3.4 (Debian's) cannot be asked for progress: a watch
        # opened after other kinds changed fails with "Too large resource version" (504)
        url = (f"https://127.0.0.1:{cluster.api_port}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion=0"
               f"&labelSelector={selector}&timeoutSeconds=600&allowWatchBookmarks=false")
        self.resp = urllib.request.urlopen(url, context=cluster._ssl, timeout=600)
        self.ready.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for line in self.resp:
                if self._stop:
                    return
                now = time.monotonic()
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    raise RuntimeError(f"watch error: {event.get('object')}")
                obj = event["object"]
                name = obj["metadata"]["name"]
                with self.lock:
                    rec = self.seen.setdefault(name, {"name": name, "added": now})
                    if obj["status"].get("podIP"):
                        rec["ip"] = obj["status"]["podIP"]
                    for cond in obj["status"].get("conditions", []):
                        key = self.CONDITIONS.get(cond["type"])
                        if key and cond["status"] == "True" and key not in rec:
                            rec[key] = now
            if not self._stop:
                self.error = "the watch ended"
        except Exception as err:      # reported by wait() in the main thread
            if not self._stop:
                self.error = f"{type(err).__name__}: {err}"

    def wait(self, n: int, timeout: float) -> None:
        """Until n pods are Ready; a broken watch or a timeout is an error that says what the watch saw."""
        deadline = time.monotonic() + timeout
        while self.count_ready() < n:
            if self.error or time.monotonic() > deadline:
                with self.lock:
                    seen = {k: sorted(v) for k, v in self.seen.items()}
                raise SystemExit(f"{n} pods Ready: {self.error or f'not within {timeout:.0f}s'}; seen {seen}")
            time.sleep(0.05)

    def count_ready(self) -> int:
        with self.lock:
            return sum("ready" in r for r in self.seen.values())

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(Exception):
            self.resp.close()


# containerd 1.6's CRI log lines (pkg/cri/server/sandbox_run.go, container_create.go, container_start.go):
# "RunPodSandbox for &PodSandboxMetadata{Name:...}" when the request arrives, the same with "returns sandbox id \"ID\""
# when the sandbox and its network are up; "CreateContainer within sandbox \"ID\" ... returns container id \"CID\"";
# "StartContainer for \"CID\" returns successfully"
_SANDBOX = re.compile(r'time="([^"]+)".*RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),')
_CREATED = re.compile(r'CreateContainer within sandbox \\"(\w+)\\".* returns container id \\"(\w+)')
_STARTED = re.compile(r'time="([^"]+)".*StartContainer for \\"(\w+)\\" returns successfully')
_SANDBOX_ID = re.compile(r'returns sandbox id \\"(\w+)')


def runtime_times(log: Path, names: set[str]) -> tuple[list[float], list[float], float]:
    """From containerd's own log: per pod the RunPodSandbox time (sandbox container + the CNI ADD) and the time
    from its RunPodSandbox request to its container started; and the span from the burst's first RunPodSandbox
    request to its last container started (the runtime's side of the burst, without the kubelet's status loop)."""
    from datetime import datetime

    def ts(stamp: str) -> float:
        return datetime.fromisoformat(stamp[:26].rstrip("Z")).timestamp()

    start: dict[str, float] = {}
    end: dict[str, float] = {}
    started: dict[str, float] = {}
    owner: dict[str, str] = {}          # sandbox and container ids -> pod name
    for line in log.read_text(errors="replace").splitlines():
        if m := _SANDBOX.search(line):
            if m.group(2) in names:
                if sid := _SANDBOX_ID.search(line):
                    end[m.group(2)] = ts(m.group(1))
                    owner[sid.group(1)] = m.group(2)
                else:
                    start[m.group(2)] = ts(m.group(1))
        elif (c := _CREATED.search(line)) and c.group(1) in owner:
            owner[c.group(2)] = owner[c.group(1)]
        elif (st := _STARTED.search(line)) and st.group(2) in owner:
            started[owner[st.group(2)]] = ts(st.group(1))
    span = max(started.values()) - min(start.values()) if started and start else float("nan")
    return ([end[n] - start[n] for n in end if n in start], [started[n] - start[n] for n in started if n in start],
            span)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report_pods(results: dict[str, list[dict]], pods: int, pairs: int) -> None:
    print(f"\n1. {pods} pods at once on node1 (a Deployment) -> all Ready; {pairs} ABBA block(s)")
    merged = {}
    for plugin, runs in results.items():
        merged[plugin] = {k: [v for r in runs for v in r[k]] for k in
                          ("per_pod", "to_sched", "sched_to_net", "net_to_ready", "sandbox", "runtime")}
        merged[plugin]["wall"] = [r["wall"] for r in runs]
        merged[plugin]["span"] = [r["span"] for r in runs]
        m = merged[plugin]
        print(f"  {plugin:<9} wall (median of {len(runs)}) {med(m['wall']):5.2f}s;  per pod {fmt(m['per_pod'])}")
        print(f"  {'':<9} as the API server saw it, p50: scheduled {med(m['to_sched']):.2f}s, sandbox+network "
              f"{med(m['sched_to_net']):.2f}s, -> Ready {med(m['net_to_ready']):.2f}s")
        print(f"  {'':<9} as containerd saw it: RunPodSandbox p50 {med(m['sandbox']):.2f}s, its request -> container "
              f"started p50 {med(m['runtime']):.2f}s; burst span (first request -> last started) {med(m['span']):.2f}s")
    c, br = merged["ciliumctl"], merged["bridge"]
    wall_ratio = med(c["wall"]) / med(br["wall"])
    p50_ratio = med(c["per_pod"]) / med(br["per_pod"])
    print(f"  ratio ciliumctl/bridge: wall {wall_ratio:.2f}x, per-pod p50 {p50_ratio:.2f}x, per-pod p90 "
          f"{pct(c['per_pod'], 0.9) / pct(br['per_pod'], 0.9):.2f}x")
    print(f"  ratio in containerd: RunPodSandbox p50 {med(c['sandbox']) / med(br['sandbox']):.2f}x, request -> "
          f"started p50 {med(c['runtime']) / med(br['runtime']):.2f}x, burst span "
          f"{med(c['span']) / med(br['span']):.2f}x")
    print(f"  target (apply -> Ready) wall and per-pod p50 <= {POD_TARGET}x bridge: "
          f"{'meets' if max(wall_ratio, p50_ratio) <= POD_TARGET else 'MISSES'}", flush=True)


def report_memory(mem: list[tuple[str, dict]], pods: int) -> None:
    mib = 1 << 20
    print("\n2. the agent container on node1: its processes' RSS (anonymous + file-mapped, the latter mostly shared "
          "libraries); its memory cgroup's rss (anonymous) and usage (incl. page cache)")
    for label, row in mem:
        print(f"  {label:<13} {row['procs']} process(es) RSS {row['rss'] / mib:6.1f} MiB (anon "
              f"{row['anon'] / mib:6.1f}, file {row['file'] / mib:6.1f})   cgroup rss {row['cg_rss'] / mib:6.1f} MiB"
              f"   usage {row['cg_usage'] / mib:6.1f} MiB")
    (_, m0), (_, m1), _ = mem
    print(f"  ratio {pods} pods / 0 pods: RSS {m1['rss'] / m0['rss']:.2f}x, anonymous {m1['anon'] / m0['anon']:.2f}x;"
          f" per pod {(m1['anon'] - m0['anon']) / pods / 1024:.0f} KiB anonymous (no target: a figure to watch)",
          flush=True)


def report_policy(enforced: list[float], kubectl: list[float], lifted: list[float]) -> None:
    print(f"\n3. CiliumNetworkPolicy, {len(enforced)} applies: kubectl apply -> a new connection from client to web "
          f"on node1 is dropped")
    print(f"  apply -> enforced   p50 {med(enforced):.3f}s  p90 {pct(enforced, 0.9):.3f}s  max {max(enforced):.3f}s"
          f"   (kubectl itself returns after p50 {med(kubectl):.3f}s)")
    print(f"  delete -> lifted    p50 {med(lifted):.3f}s  p90 {pct(lifted, 0.9):.3f}s  max {max(lifted):.3f}s")
    print(f"  target apply -> enforced p50 < {POLICY_TARGET:.0f} s: "
          f"{'meets' if med(enforced) < POLICY_TARGET else 'MISSES'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2, help="ABBA blocks of bursts (ciliumctl, bridge, bridge, ciliumctl)")
    ap.add_argument("--pods", type=int, default=20, help="pods per burst")
    ap.add_argument("--mem-pods", type=int, default=100, help="pods on node1 for the memory figure (0: skip)")
    ap.add_argument("--applies", type=int, default=20, help="policy applies (0: skip)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_cluster needs root (namespaces, mounts, cgroups)")
    if not Path(BRIDGE_BIN).exists():
        raise SystemExit(f"{BRIDGE_BIN} is missing: apt-get install containernetworking-plugins")

    t = time.monotonic()
    cluster = Cluster(default_bin(), build_images(), nodes=2)
    try:
        cluster.start()
        install_agent(cluster)
        print(f"cluster of 2 nodes up, agent installed: {time.monotonic() - t:.0f}s", flush=True)
        b = Bench(cluster)
        b.kubectl("create", "namespace", b.ns)
        wait_for("the namespace's default ServiceAccount",
                 lambda: cluster.get_raw(f"/api/v1/namespaces/{b.ns}/serviceaccounts/default"), 60)
        if args.pairs:
            results: dict[str, list[dict]] = {"ciliumctl": [], "bridge": []}
            current = "ciliumctl"
            b.use_plugin(current)
            for plugin in ["ciliumctl", "bridge", "bridge", "ciliumctl"] * args.pairs:
                if plugin != current:
                    b.use_plugin(plugin)
                    current = plugin
                r = b.burst(args.pods)
                results[plugin].append(r)
                print(f"  burst {plugin:<9} wall {r['wall']:5.2f}s  per pod {fmt(r['per_pod'])}  (after "
                      f"{r['quiet']:.0f}s waiting for the old sandboxes' removal)", flush=True)
            report_pods(results, args.pods, args.pairs)
        if args.mem_pods:
            report_memory(b.memory(args.mem_pods), args.mem_pods)
        if args.applies:
            report_policy(*b.policy(args.applies))
        print(f"\nthe agent on node1 logged {b.agent_watch_failures()} failed API watch(es) during the run")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
