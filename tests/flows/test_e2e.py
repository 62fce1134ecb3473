"""Real traffic between sandbox endpoints on a sandbox node (the e2e node fixture), through the real datapath,
read by the real agent: flows with the right verdicts, ports, directions, endpoints and policy names; `observe`
filters and formats on them; enforcement holds while the agent is stopped, and what happened meanwhile shows up
after it restarts."""

import json
import os
import subprocess
import time
from datetime import UTC

import pytest
from e2e.conftest import node, write  # noqa: F401  (the sandbox node fixture)

from ciliumctl.node.demo import DEMO_POLICY  # Cilium's getting-started L3/L4 rule1 (no namespace: default)

pytestmark = pytest.mark.root

DEATHSTAR = "10.200.0.1"


def flows(node, *args):  # noqa: F811
    out = node.cli("observe", "-o", "json", *args).stdout
    return [json.loads(line)["flow"] for line in out.splitlines() if '"flow"' in line]


def wait_flows(node, pred, *args, timeout=10.0):  # noqa: F811
    end = time.monotonic() + timeout
    while True:
        got = [f for f in flows(node, "--all", *args) if pred(f)]
        if got or time.monotonic() > end:
            return got
        time.sleep(0.2)


def tcp_dport(f):
    return f.get("l4", {}).get("TCP", {}).get("destination_port")


def start_empire(node, tmp_path):  # noqa: F811
    """deathstar serving :80 under rule1 (org=empire may enter), tiefighter (empire), xwing (alliance); the agent."""
    node.cli("endpoint", "add", "deathstar", "-l", "org=empire,class=deathstar")
    node.cli("endpoint", "add", "tiefighter", "-l", "org=empire")
    node.cli("endpoint", "add", "xwing", "-l", "org=alliance")
    node.serve("deathstar", DEATHSTAR, 80)
    node.cli("policy", "apply", "-f", str(write(tmp_path / "p" / "rule1.yaml", DEMO_POLICY)))
    node.cli("agent", "start", "--metrics-listen", "127.0.0.1:0", "--no-cni")


def test_real_traffic_becomes_flows(node, tmp_path):  # noqa: F811
    start_empire(node, tmp_path)
    try:
        assert node.connect("tiefighter", DEATHSTAR, 80)
        assert not node.connect("xwing", DEATHSTAR, 80, timeout=0.5)

        allowed = wait_flows(node, lambda f: f["event_type"]["type"] == 5 and f["verdict"] == "FORWARDED"
                             and f["source"].get("pod_name") == "tiefighter")
        assert allowed, flows(node, "--all")
        f = allowed[0]
        assert f["destination"]["pod_name"] == "deathstar" and f["destination"]["namespace"] == "default"
        assert tcp_dport(f) == 80 and f["traffic_direction"] == "INGRESS" and f["is_reply"] is False
        assert f["l4"]["TCP"]["flags"] == {"SYN": True}
        assert f["policy_match_type"] == 2                              # L3-L4
        assert [(p["name"], p["namespace"], p["kind"]) for p in f["ingress_allowed_by"]] == \
            [("rule1", "default", "CiliumNetworkPolicy")]
        assert f["source"]["identity"] >= 256 and "k8s:org=empire" in f["source"]["labels"]
        assert f["destination"]["identity"] >= 256 and f["destination"]["ID"] > 0

        drops = wait_flows(node, lambda f: f["event_type"]["type"] == 1 and f["source"].get("pod_name") == "xwing")
        assert drops, flows(node, "--all")
        d = drops[0]
        assert (d["verdict"], d["drop_reason_desc"], d["traffic_direction"]) == \
            ("DROPPED", "POLICY_DENIED", "INGRESS")
        assert d["source"]["pod_name"] == "xwing" and d["destination"]["pod_name"] == "deathstar"
        assert tcp_dport(d) == 80 and "ingress_allowed_by" not in d
        denied = [f for f in flows(node, "--all") if f["event_type"]["type"] == 5 and f["verdict"] == "DROPPED"]
        assert denied and denied[0]["source"]["pod_name"] == "xwing"

        replies = [f for f in flows(node, "--all") if f.get("is_reply") and f["source"].get("pod_name") == "deathstar"]
        assert replies and replies[0]["l4"]["TCP"]["source_port"] == 80
        assert replies[0]["destination"]["pod_name"] == "tiefighter"

        # observe's own filters and formats on real flows
        sel = flows(node, "--all", "--from-pod", "xwing", "--verdict", "DROPPED")
        assert sel and all(f["source"]["pod_name"] == "xwing" and f["verdict"] == "DROPPED" for f in sel)
        assert not flows(node, "--all", "--from-pod", "tiefighter", "--verdict", "DROPPED")
        compact = node.cli("observe", "--all", "--from-label", "org=alliance", "-t", "drop").stdout.splitlines()
        assert compact and all("default/xwing:" in l and "<> default/deathstar:80" in l
                               and "Policy denied DROPPED" in l for l in compact)
        named = node.cli("observe", "--all", "--type", "policy-verdict", "--to-port", "80", "--verdict",
                         "FORWARDED", "--print-policy-names").stdout
        assert "INGRESS ALLOWED BY rule1 (CiliumNetworkPolicy)" in named
        agg = node.cli("observe", "--all", "--aggregate-by", "source,destination,port,verdict", "-o", "json").stdout
        rows = json.loads(agg)
        assert {"source": "default/xwing", "destination": "default/deathstar", "port": "80/TCP",
                "verdict": "DROPPED"} in [{k: v for k, v in r.items() if k != "count"} for r in rows]

        # the agent stops: enforcement goes on (pinned datapath), and the kernel ring keeps the events
        node.cli("agent", "stop")
        stopped_at = time.time()
        assert not node.connect("xwing", DEATHSTAR, 80, timeout=0.5)
        assert node.connect("tiefighter", DEATHSTAR, 80)
        node.cli("agent", "start", "--metrics-listen", "127.0.0.1:0", "--no-cni")
        later = wait_flows(node, lambda f: f["event_type"]["type"] == 1 and f["source"].get("pod_name") == "xwing")
        assert later, "drops made while the agent was down did not show up after its restart"
        from datetime import datetime

        t = datetime.fromisoformat(later[0]["time"].rstrip("Z")[:26]).replace(tzinfo=UTC).timestamp()
        assert t > stopped_at - 1
    finally:
        node.cli("agent", "stop", check=False)


def test_real_hubble_prints_real_datapath_events(node, tmp_path, hubble):  # noqa: F811
    """Policy verdicts (allowed, denied), a drop and traces of real packets, as the real hubble CLI prints them
    from the agent's socket: Cilium's words, no UNKNOWN; `ciliumctl observe` prints the same lines."""
    start_empire(node, tmp_path)
    try:
        assert node.connect("tiefighter", DEATHSTAR, 80)
        assert not node.connect("xwing", DEATHSTAR, 80, timeout=0.5)
        assert wait_flows(node, lambda f: f["event_type"]["type"] == 1 and f["source"].get("pod_name") == "xwing")
        server = f"unix://{node.env['CILIUMCTL_RUN_DIR']}/hubble.sock"

        def hubble_observe(*args):
            r = subprocess.run([str(hubble), "observe", "--server", server, "--color", "never", *args],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/nonexistent"})
            assert r.returncode == 0, r.stderr
            return r.stdout.splitlines()

        lines = hubble_observe("--all")
        assert lines and not [l for l in lines if " UNKNOWN " in l or "VERDICT_UNKNOWN" in l]

        def one(src, arrow, words):
            return [l for l in lines if f": default/{src}:" in l and f" {arrow} default/deathstar:80 (ID:" in l
                    and l.endswith(f" {words} (TCP Flags: SYN)")]
        assert one("tiefighter", "->", "policy-verdict:L3-L4 INGRESS ALLOWED"), lines
        assert one("tiefighter", "->", "to-endpoint FORWARDED"), lines
        assert one("xwing", "<>", "policy-verdict:none INGRESS DENIED"), lines
        assert one("xwing", "<>", "Policy denied DROPPED"), lines
        # the reply, where it enters tiefighter (medium aggregation: no trace at the from-endpoint receive point)
        assert [l for l in lines if "<- default/deathstar:80" in l
                and " to-endpoint FORWARDED (TCP Flags: SYN, ACK" in l], lines
        assert not [l for l in lines if " from-endpoint " in l], lines

        verdicts = hubble_observe("--all", "-t", "policy-verdict")
        assert verdicts and all(" policy-verdict:" in l for l in verdicts)
        assert {l.split(" INGRESS ")[1].split()[0] for l in verdicts} == {"ALLOWED", "DENIED"}
        drops = hubble_observe("--all", "-t", "drop", "--from-pod", "default/xwing")
        assert drops and all("Policy denied DROPPED" in l for l in drops)
        assert all(" to-endpoint " in l for l in hubble_observe("--all", "-t", "trace:to-endpoint"))
        named = hubble_observe("--all", "--print-policy-names", "--verdict", "FORWARDED", "-t", "policy-verdict")
        assert named and all(l.endswith("INGRESS ALLOWED BY rule1 (CiliumNetworkPolicy) (TCP Flags: SYN)")
                             for l in named)

        # the same flows (the first len(lines) of the ring) printed by ciliumctl: the same lines
        ours = node.cli("observe", "--server", server, "--first", str(len(lines))).stdout.splitlines()
        assert ours == lines
    finally:
        node.cli("agent", "stop", check=False)
