"""The kernel follows the stored state whatever a `kill -9` interrupted (issue 17, item 2), on a sandbox node.

A killed `policy apply` used to leave the store on the new policy and the maps on the old one: a revoked peer was
admitted, re-apply said "unchanged" and nothing repaired it. Now `status --verify` names every difference,
`status --repair` removes them, and so do the next `policy apply` / `delete`, `install` and the agent's start.
The crash injection kills apply, delete, endpoint add / delete and install at random moments on a fixed seed, then
checks verify, repair and real TCP between the endpoints against what the store says."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from support.cli import CLI
from support.netns import in_netns
from support.policies import allow_ingress
from support.shell import write

pytestmark = pytest.mark.root

SEED = 1717
ITERATIONS = 30
PORT = 8080

# A `policy apply` killed after it stored the policy and before it programmed the maps: the lock taken (its marker
# written), the object stored, then SIGKILL. The exact state the issue reports, at a moment chosen, not hoped for.
KILLED_APPLY = """
import os, sys, yaml
from ciliumctl.node.settings import locked
from ciliumctl.policy import store
with locked():
    store.put(store.from_object(yaml.safe_load(open(sys.argv[1])), sys.argv[1]))
    os.kill(os.getpid(), 9)
"""


def reaches(netns: str, ip: str, timeout: float) -> bool:
    """A TCP connection from inside an endpoint's namespace (made in this process: no CLI start per try)."""
    with in_netns(os.path.basename(netns)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, PORT))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Node:
    """The sandbox node of one test: three endpoints a, b, c (app=a, app=b, app=c) and a server in b."""

    def __init__(self, node, tmp_path):
        self.node = node
        self.files = {name: write(tmp_path / f"{name}.yaml", allow_ingress("allow", {"app": "b"}, {"app": peer}))
                      for name, peer in (("allow-a", "a"), ("allow-c", "c"))}
        for name in ("a", "b", "c"):
            node.add_pod(name, name)
        self.b_ip = self.endpoints()["b"]["ipv4"].split("/")[0]
        node.serve("b", self.b_ip, PORT)

    def endpoints(self) -> dict[str, dict]:
        return {e["name"]: e for e in json.loads(self.node.cli("endpoint", "list", "-o", "json").stdout)}

    def stored_peer(self) -> str | None:
        """Whom the stored policy lets into b: "a", "c", or None without a policy."""
        stored = json.loads(self.node.cli("policy", "get", "-o", "json").stdout)["items"]
        if not stored:
            return None
        return stored[0]["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["app"]

    def mode(self) -> str:
        """The stored enforcement mode (the node's settings file; `install --enforcement-mode` writes it)."""
        return json.loads((self.node.state / "node.json").read_text())["enforcement_mode"]

    def verify(self, *flags: str) -> dict:
        res = self.node.cli("status", *flags, "-o", "json", check=False)
        assert res.returncode in (0, 1) and not res.stderr, res.stderr
        out = json.loads(res.stdout)
        left = out.get("remaining", out["differences"])
        assert res.returncode == (1 if left else 0)
        return out

    def traffic_mismatches(self, endpoints: dict[str, dict] | None = None) -> list[str]:
        """Every endpoint whose connection to b is not what the store says (mode, policy, endpoints)."""
        peer, mode = self.stored_peer(), self.mode()
        out = []
        for name, ep in (endpoints or self.endpoints()).items():
            if name == "b" or ep["state"] != "ready":
                continue
            want = mode != "always" and (peer is None or ep["labels"].get("app") == peer)
            # an allowed handshake takes well under a second; a dropped SYN is sent again only after one
            got = reaches(ep["netns"], self.b_ip, 3.0 if want else 0.5)
            if got != want:
                out.append(f"{name} -> b {'connects' if got else 'is dropped'} (store: policy for "
                           f"{peer or 'nobody'}, mode {mode})")
        return out


def test_a_killed_apply_is_found_by_verify_and_repaired_by_apply_install_and_agent_start(node, tmp_path):
    n = Node(node, tmp_path)
    node.cli("policy", "apply", "-f", str(n.files["allow-c"]))
    assert n.verify("--verify")["differences"] == []
    assert n.traffic_mismatches() == []
    eps = n.endpoints()

    def killed_apply():
        res = subprocess.run([sys.executable, "-c", KILLED_APPLY, str(n.files["allow-a"])], env=node.env)
        assert res.returncode == -signal.SIGKILL
        assert n.stored_peer() == "a"
        # the state: the store says allow-a, the kernel still lets c in and keeps a out
        assert reaches(eps["c"]["netns"], n.b_ip, 3.0) and not reaches(eps["a"]["netns"], n.b_ip, 0.8)
        found = n.verify("--verify")["differences"]
        assert found and all(d["repairable"] for d in found)
        lines = [d["what"] for d in found]
        assert any(x.startswith("policy: missing endpoint ") and " ingress identity " in x and "(app=a)" in x
                   and x.endswith("any protocol: allow") for x in lines), lines
        assert any(x.startswith("policy: unexpected ") and "(app=c)" in x for x in lines), lines
        table = node.cli("status", "--verify", check=False)
        assert table.returncode == 1 and "`ciliumctl status --repair`" in table.stdout
        return lines

    def back_to_allow_c():
        node.cli("policy", "apply", "-f", str(n.files["allow-c"]))
        assert n.traffic_mismatches() == []

    # 1. the next apply, although its object is unchanged, repairs first and says so
    killed_apply()
    res = node.cli("policy", "apply", "-f", str(n.files["allow-a"]))
    assert res.stdout.strip() == "ciliumnetworkpolicy/allow unchanged"
    assert "interrupted" in res.stderr and "repaired: " in res.stderr
    assert n.verify("--verify")["differences"] == [] and n.traffic_mismatches() == []
    back_to_allow_c()

    # 2. status --repair
    lines = killed_apply()
    out = n.verify("--repair")
    assert [d["what"] for d in out["differences"]] == lines and out["remaining"] == [] and out["repaired"]
    assert n.traffic_mismatches() == []
    back_to_allow_c()

    # 3. install (settings already installed: only its datapath state step can repair it)
    node.cli("install", "--no-agent")
    killed_apply()
    res = node.cli("install", "--no-agent")
    assert "node settings: ok" in res.stdout and "datapath state: done" in res.stdout
    assert n.verify("--verify")["differences"] == [] and n.traffic_mismatches() == []
    back_to_allow_c()

    # 4. the agent's start (node mode)
    killed_apply()
    node.cli("agent", "start")
    try:
        assert n.verify("--verify")["differences"] == [] and n.traffic_mismatches() == []
    finally:
        node.cli("agent", "stop")


def test_lost_programs_and_map_entries_are_found_and_repaired(node, tmp_path):
    n = Node(node, tmp_path)
    node.cli("policy", "apply", "-f", str(n.files["allow-a"]))
    links = sorted(os.listdir(node.bpffs / "links"))
    (node.bpffs / "links" / links[0]).unlink()          # the last reference: the kernel detaches that program
    found = [d["what"] for d in n.verify("--verify")["differences"]]
    assert len(found) == 1 and "without the datapath program on" in found[0], found
    out = n.verify("--repair")
    assert out["remaining"] == [] and any("attached the datapath to endpoint" in x for x in out["repaired"])
    assert sorted(os.listdir(node.bpffs / "links")) == links
    assert n.traffic_mismatches() == []


def _healers(n: Node):
    """What may make the kernel follow the store again after a kill, taken in turn; each returns the differences
    `status --verify` still finds after it."""
    node = n.node

    def repair():
        return n.verify("--repair")["remaining"]

    def next_policy_command():
        peer = n.stored_peer()
        if peer is None:
            node.cli("policy", "delete", "allow", check=False)       # nothing stored: "not found", exit 2
        else:
            node.cli("policy", "apply", "-f", str(n.files[f"allow-{peer}"]))      # unchanged
        return n.verify("--verify")["differences"]

    def install():
        node.cli("install", "--no-agent")
        return n.verify("--verify")["differences"]

    return [repair, next_policy_command, install]


def test_kill_9_at_random_moments_then_verify_repair_and_traffic_match_the_store(node, tmp_path):
    n = Node(node, tmp_path)
    node.cli("install", "--no-agent")
    rng = random.Random(SEED)
    endpoints = n.endpoints()

    def op_args(kind: str) -> list[str]:
        if kind == "apply":
            return ["policy", "apply", "-f", str(n.files[rng.choice(["allow-a", "allow-c"])])]
        if kind == "delete":
            return ["policy", "delete", "allow"]
        if kind == "endpoint":
            return ["endpoint", "delete", "d"] if "d" in endpoints else ["endpoint", "add", "d", "-l", "app=a"]
        return ["install", "--no-agent", "--enforcement-mode", "always" if n.mode() == "default" else "default"]

    kinds = ["apply", "apply", "delete", "endpoint", "endpoint", "install"]
    marker = node.state / "node.changing"          # there while a command holds the node lock

    def start(args: list[str]) -> tuple[subprocess.Popen, float, float]:
        """The command, when it started and when it took the node lock (or ended without)."""
        t0 = time.monotonic()
        proc = subprocess.Popen([CLI, *args], env=node.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not marker.exists() and proc.poll() is None:
            time.sleep(0.002)
        return proc, t0, time.monotonic()

    # how long each kind runs unkilled, in all and holding the node lock: kills land anywhere in those spans
    span: dict[str, float] = {}
    locked_span: dict[str, float] = {}
    for kind in ("apply", "delete", "endpoint", "install", "endpoint", "install"):
        proc, t0, t_lock = start(op_args(kind))
        proc.wait()
        span[kind] = max(span.get(kind, 0.0), time.monotonic() - t0)
        locked_span[kind] = max(locked_span.get(kind, 0.0), time.monotonic() - t_lock)
        endpoints = n.endpoints()
    healers = _healers(n)
    stats = {"iterations": 0, "killed": 0, "killed holding the lock": 0, "found differences": 0, "failures": 0}
    failures = []
    for i in range(ITERATIONS):
        kind = rng.choice(kinds)
        args = op_args(kind)
        if rng.random() < 0.75:       # most kills while the command changes state, some anywhere
            proc, t0, t_lock = start(args)
            delay = rng.uniform(0.0, locked_span[kind] * 1.1)
            time.sleep(max(0.0, t_lock + delay - time.monotonic()))
        else:
            t0 = time.monotonic()
            proc = subprocess.Popen([CLI, *args], env=node.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, span[kind] * 1.1))
        holding, after = marker.exists(), time.monotonic() - t0
        proc.send_signal(signal.SIGKILL)
        killed = proc.wait() == -signal.SIGKILL
        stats["iterations"] += 1
        stats["killed"] += killed
        stats["killed holding the lock"] += killed and holding
        stats["found differences"] += bool(n.verify("--verify")["differences"])
        healer = healers[i % len(healers)]
        left = healer()
        endpoints = n.endpoints()
        problems = [f"after {healer.__name__}: {d['what']}" for d in left] + n.traffic_mismatches(endpoints)
        if problems:
            stats["failures"] += 1
            failures.append(f"#{i} {' '.join(args)} killed after {after:.2f}s: " + "; ".join(problems))
            n.verify("--repair")                 # go on from a clean node
            endpoints = n.endpoints()
    print(f"\ncrash injection (seed {SEED}): " + ", ".join(f"{k} {v}" for k, v in stats.items())
          + "; spans (locked) " + ", ".join(f"{k} {span[k]:.2f}s ({locked_span[k]:.2f}s)" for k in span))
    assert failures == [], "\n".join(failures)
    assert stats["killed"] >= ITERATIONS // 2      # most kills landed while the command ran
