"""The host firewall (issue 13) on a sandbox node, with real packets: the node namespace plays the node, its two
uplink veths (`install --devices`) lead to a namespace that plays another node (`--remote-nodes`) and one that
plays the world. Programs go only on those veths and the endpoints' (all inside the test's namespaces).

The seed's policy: a CiliumClusterwideNetworkPolicy with a nodeSelector lets only metrics-server reach the kubelet
(a listener in the node namespace on 10250); the other node may reach 22. Another endpoint and the world may not."""

import json
import os
import time

import pytest
from support.hostfw import (
    FROM_DB_NODES,
    NODE_IP,
    REMOTE_NET,
    SEED,
    WORLD_NET,
    HeldConnection,
    connects_from_ns,
    listen,
    ready,
    uplinks,
)

pytestmark = pytest.mark.root


def test_host_firewall_seed_policy_end_to_end(node, tmp_path):
    world, remote, devs = uplinks(node)
    node.cli("install", "--no-agent", "--devices", ",".join(devs), "--host-firewall",
             "--node-labels", "node-role.kubernetes.io/worker=,kubernetes.io/hostname=n1",
             "--remote-nodes", f"{REMOTE_NET}.2")
    node.cli("endpoint", "add", "metrics", "-n", "kube-system", "-l", "k8s-app=metrics-server")
    node.cli("endpoint", "add", "other", "-l", "app=other")
    for port in (10250, 22):
        listen(node, port)
        ready(node, port)

    # nothing selects the host yet: everyone reaches it
    assert node.connect("other", NODE_IP, 10250)
    assert connects_from_ns(world, NODE_IP, 10250)

    policy = tmp_path / "seed.yaml"
    policy.write_text(SEED)

    # the lock-out guard: a live connection from the world to 22, which the seed would cut, is named and refused
    held = HeldConnection(node, world, NODE_IP, 22)
    assert held.alive()
    res = node.cli("policy", "apply", "-f", str(policy), check=False)
    assert res.returncode == 1, res
    assert f"{WORLD_NET}.2:{held.port} -> {NODE_IP}:22/tcp (from world)" in res.stderr
    assert "--force" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "kubelet" not in node.cli("policy", "get").stdout and held.alive()     # nothing applied
    # --force applies it: the connection's next packet is decided again and dropped
    applied = node.cli("policy", "apply", "-f", str(policy), "--force", "--strict-enforcement")
    assert "not enforced" not in applied.stderr       # the host firewall enforces all of it: no gap, strict passes
    assert not held.alive()
    # deleting the policy that allows a live connection is guarded the same way
    extra = tmp_path / "world-ssh.yaml"
    extra.write_text("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: world-ssh}\n"
                     "spec:\n  nodeSelector: {}\n  ingress:\n  - fromEntities: [world]\n"
                     "    toPorts: [{ports: [{port: '22', protocol: TCP}]}]\n")
    node.cli("policy", "apply", "-f", str(extra))
    held = HeldConnection(node, world, NODE_IP, 22)
    res = node.cli("policy", "delete", "world-ssh", check=False)
    assert res.returncode == 1 and "policy delete refused" in res.stderr and f":{held.port} -> " in res.stderr
    assert held.alive()
    node.cli("policy", "delete", "world-ssh", "--force")
    assert not held.alive()

    assert node.connect("metrics", NODE_IP, 10250)             # metrics-server -> kubelet
    assert not node.connect("metrics", NODE_IP, 22)            # only 10250
    assert not node.connect("other", NODE_IP, 10250)           # another endpoint
    assert not connects_from_ns(world, NODE_IP, 10250)        # the world, through the device
    assert connects_from_ns(remote, f"{REMOTE_NET}.1", 22)    # the other node: remote-node rule
    assert not connects_from_ns(remote, f"{REMOTE_NET}.1", 10250)

    # the drops are the host's: on the world's device, identity world -> host
    with node.ring() as ring:
        ring.drain()
        assert not connects_from_ns(world, NODE_IP, 10250)
        events = ring.events()
    drops = [e for e in events if e.type == 1 and e.dst_identity == 1]
    assert drops and all(e.src_identity == 2 and e.subtype == 133 for e in drops)

    # policy trace --live: the node's labels and host firewall, so the host's verdict is enforced, not a what-if
    live = ("policy", "trace", "--live", "--dst-entity", "host", "--dport")
    world_trace = node.cli(*live, "10250/tcp", "--src-entity", "world", check=False)
    assert world_trace.returncode == 1 and "not enforced" not in world_trace.stdout, world_trace.stdout
    assert node.cli(*live, "22/tcp", "--src-entity", "remote-node", check=False).returncode == 0

    # the host in `endpoint list`, like Cilium's reserved:host endpoint, with its enforcement
    rows = {r["id"]: r for r in json.loads(node.cli("endpoint", "list", "-o", "json").stdout)}
    assert rows[0]["identity"] == 1 and "reserved:host" in rows[0]["labels_full"]
    assert rows[0]["policy_enforcement"] == {"ingress": "enabled", "egress": "disabled"}
    assert "reserved:host" in node.cli("endpoint", "list").stdout

    # flows of the host carry reserved:host / reserved:remote-node; observe --from-identity 1
    node.cli("agent", "start", "--metrics-listen", "")
    try:
        assert connects_from_ns(remote, f"{REMOTE_NET}.1", 22)
        got = []
        for _ in range(50):
            out = node.cli("observe", "--all", "--from-identity", "1", "-o", "json").stdout
            got = [json.loads(line)["flow"] for line in out.splitlines() if '"flow"' in line]
            if got:
                break
            time.sleep(0.2)
        assert got and all(f["source"]["identity"] == 1 for f in got)
        f = got[0]
        assert "reserved:host" in f["source"]["labels"] and "reserved:remote-node" in f["destination"]["labels"]
        assert f["IP"]["source"] == f"{REMOTE_NET}.1" and f["is_reply"] is True
        assert f["trace_observation_point"] == "TO_NETWORK"
    finally:
        node.cli("agent", "stop")

    # the kernel follows the stored state: the devices' host entries are the host firewall's, not strays
    assert node.cli("status", "--verify", check=False).returncode == 0
    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["host_firewall"]["enabled"] and st["host_firewall"]["devices"] == devs and not st["partially_enforced"]
    assert "Host firewall" in node.cli("status").stdout

    # an upgrade (the pinned programs from other sources) keeps the devices on the device programs only
    from ciliumctl.datapath import bpfsys, maps

    state = bpfsys.Map.from_pin(node.bpffs / "state")
    key = (0).to_bytes(4, "little")
    fields = list(maps.DP_STATE.unpack(state.lookup(key)))
    fields[1] ^= 0xFFFF
    state.update(key, maps.DP_STATE.pack(*fields))
    state.close()
    assert "datapath: done upgraded" in node.cli("install", "--no-agent").stdout
    links = os.listdir(node.bpffs / "links")
    on_devices = {int(n.split("-")[0]) for n in links if "netdev" in n}
    assert len(on_devices) == 2 and not [n for n in links if int(n.split("-")[0]) in on_devices and "netdev" not in n]
    assert not connects_from_ns(world, NODE_IP, 10250) and node.connect("metrics", NODE_IP, 10250)
    assert node.cli("status", "--verify", check=False).returncode == 0

    # audit: the same denials forwarded and reported as AUDIT
    node.cli("install", "--no-agent", "--host-firewall-audit")
    assert connects_from_ns(world, NODE_IP, 10250)
    assert node.connect("other", NODE_IP, 10250)
    with node.ring() as ring:
        ring.drain()
        assert connects_from_ns(world, NODE_IP, 22)
        events = ring.events()
    verdicts = [e for e in events if e.type == 5 and e.dst_identity == 1]
    assert verdicts and all(e.verdict == 4 for e in verdicts)          # AUDIT
    assert not [e for e in events if e.type == 1]

    # leaving audit for real is guarded too: a live connection the policy would cut is named, --force goes on
    held = HeldConnection(node, world, NODE_IP, 22)
    res = node.cli("install", "--no-agent", "--no-host-firewall-audit", check=False)
    assert res.returncode == 1 and f"{WORLD_NET}.2:{held.port} -> {NODE_IP}:22/tcp (from world)" in res.stderr
    assert held.alive() and connects_from_ns(world, NODE_IP, 10250)     # still audit only
    node.cli("install", "--no-agent", "--no-host-firewall-audit", "--force")
    assert not held.alive() and not connects_from_ns(world, NODE_IP, 10250)

    # off: nothing of the host is enforced any more, the devices carry only NodePort
    node.cli("install", "--no-agent", "--no-host-firewall")
    assert connects_from_ns(world, NODE_IP, 10250)
    assert node.connect("other", NODE_IP, 22)


def test_host_firewall_without_devices_picks_the_native_devices_as_cilium(node):
    """install --host-firewall with no --devices detects the node's native devices (node.hostfw.devices, Cilium's
    isSelectedDevice): the uplink with the default route; not the other veth (no default route), not a bridge, not
    an endpoint's lxc veth. All inside the node namespace the test made."""
    from support.shell import sh

    world, _remote, (world_dev, remote_dev) = uplinks(node)
    sh("ip", "-n", node.name, "route", "add", "default", "via", f"{WORLD_NET}.2", "dev", world_dev)
    sh("ip", "-n", node.name, "link", "add", f"{node.name}b", "type", "bridge")
    sh("ip", "-n", node.name, "addr", "add", "192.168.83.1/24", "dev", f"{node.name}b")
    sh("ip", "-n", node.name, "link", "set", f"{node.name}b", "up")
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "web", "-l", "app=web")
    out = node.cli("install", "--no-agent", "--host-firewall").stdout
    assert f"NodePort on {world_dev}; host firewall on them" in out, out
    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["host_firewall"]["devices"] == [world_dev]
    listen(node, 10250)
    ready(node, 10250)
    assert connects_from_ns(world, NODE_IP, 10250)
    policy = "\n".join(["apiVersion: cilium.io/v2", "kind: CiliumClusterwideNetworkPolicy",
                        "metadata: {name: nothing-from-world}", "spec:", "  nodeSelector: {}",
                        "  ingress: [{fromEntities: [remote-node]}]", ""])
    node.cli("policy", "apply", "-f", "-", "--force", input=policy)
    assert not connects_from_ns(world, NODE_IP, 10250)      # the detected device carries the host's policy
    # kept: a later install without --devices does not detect again; --devices "" names none
    node.cli("install", "--no-agent")
    assert json.loads(node.cli("status", "-o", "json").stdout)["host_firewall"]["devices"] == [world_dev]
    node.cli("install", "--no-agent", "--devices", "")
    assert json.loads(node.cli("status", "-o", "json").stdout)["host_firewall"]["devices"] == []
    assert remote_dev not in out


def test_lockout_guard_names_a_connected_udp_socket(node, tmp_path):
    """A UDP flow the node holds with a connected socket (a resolver, NTP) is named like a TCP connection; --force
    applies the policy and the flow's next packet is dropped."""
    from support.hostfw import HeldUdp, udp_echo

    world, _remote, devs = uplinks(node)
    node.cli("install", "--no-agent", "--devices", ",".join(devs), "--host-firewall")
    udp_echo(node, world, 5353)
    held = HeldUdp(node, node.name, f"{WORLD_NET}.2", 5353)
    assert held.alive()
    policy = tmp_path / "tcp-only.yaml"
    policy.write_text("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: tcp-only}\n"
                      "spec:\n  nodeSelector: {}\n  egress:\n  - toEntities: [world]\n"
                      "    toPorts: [{ports: [{port: '5353', protocol: TCP}]}]\n")
    res = node.cli("policy", "apply", "-f", str(policy), check=False)
    assert res.returncode == 1, res
    assert f"{NODE_IP}:{held.port} -> {WORLD_NET}.2:5353/udp (to world)" in res.stderr
    assert held.alive()                                         # nothing applied
    node.cli("policy", "apply", "-f", str(policy), "--force")
    assert not held.alive()


def test_benchmarks_time_the_device_programs_by_test_runs_with_bpf_statistics_off(node):
    """The benchmarks' timing (benchmarks/bpf_test_run.py, BPF_PROG_TEST_RUN) drives the real device programs: an
    allowed SYN passes, a denied one is dropped, each run takes time; and the kernel's run-time statistics stay off
    throughout (the program's run count, kept only while they are on, does not move)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bpf_test_run

    from ciliumctl.datapath import bpfsys

    world, _remote, devs = uplinks(node)
    node.cli("install", "--no-agent", "--devices", devs[0], "--host-firewall")
    node.cli("policy", "apply", "-f", "-", "--force", input=(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: world-22}\n"
        "spec:\n  nodeSelector: {}\n  ingress:\n  - fromEntities: [world]\n"
        "    toPorts: [{ports: [{port: '22', protocol: TCP}]}]\n"))
    pin = node.bpffs / "from_netdev"
    fd = bpfsys.obj_get(pin)
    try:
        runs_before = bpfsys.prog_info(fd).run_cnt
        got = bpf_test_run.run(node.name, pin, devs[0], [
            (bpf_test_run.tcp_frame(f"{WORLD_NET}.2", NODE_IP, 40000, 22, bpf_test_run.TCP_SYN), 1),
            (bpf_test_run.tcp_frame(f"{WORLD_NET}.2", NODE_IP, 40001, 10250, bpf_test_run.TCP_SYN), 1),
            (bpf_test_run.tcp_frame(f"{WORLD_NET}.2", NODE_IP, 40000, 22, bpf_test_run.TCP_ACK), 1000)])
        runs_after = bpfsys.prog_info(fd).run_cnt
    finally:
        os.close(fd)
    assert [r for r, _ in got] == [bpf_test_run.TC_ACT_OK, bpf_test_run.TC_ACT_SHOT, bpf_test_run.TC_ACT_OK]
    assert all(ns > 0 for _, ns in got)
    assert runs_after == runs_before          # 1,002 runs, none counted: the statistics were off
    with pytest.raises(RuntimeError, match=r"returned \[2\]"):
        bpf_test_run.expect(got, (bpf_test_run.TC_ACT_OK,), "from_netdev")


def test_node_mode_from_nodes_selects_the_other_node_by_the_labels_install_gave_it(node, tmp_path):
    """Node mode knows the other nodes from --remote-nodes; --remote-node-labels gives one its labels and, with
    --enable-node-selector-labels, an identity of them: a fromNodes rule on those labels lets that node in (real
    TCP from the namespace playing it), and is enforced in full (--strict-enforcement passes). Relabelled, the
    same rule no longer selects it (a live connection it would cut is named first, as for a policy)."""
    world, remote, devs = uplinks(node)
    node.cli("install", "--no-agent", "--devices", ",".join(devs), "--host-firewall",
             "--remote-nodes", f"{REMOTE_NET}.2", "--enable-node-selector-labels",
             "--remote-node-labels", f"{REMOTE_NET}.2:role=db,kubernetes.io/hostname=n2")
    listen(node, 22)
    ready(node, 22)
    policy = tmp_path / "from-db-nodes.yaml"
    policy.write_text(json.dumps(FROM_DB_NODES))
    res = node.cli("policy", "apply", "-f", str(policy), "--strict-enforcement")
    assert "not enforced" not in res.stderr
    assert connects_from_ns(remote, f"{REMOTE_NET}.1", 22)            # the db node
    assert not connects_from_ns(world, NODE_IP, 22)                    # the world is no node
    st = json.loads(node.cli("status", "-o", "json").stdout)["host_firewall"]
    assert st["remote_node_labels"] == {f"{REMOTE_NET}.2/32": "role=db,kubernetes.io/hostname=n2"}

    # relabelled, the rule no longer selects it: install names the live connection that would be cut, as policy
    # apply does, and --force goes on
    held = HeldConnection(node, remote, f"{REMOTE_NET}.1", 22)
    res = node.cli("install", "--no-agent", "--remote-node-labels", f"{REMOTE_NET}.2:role=web", check=False)
    assert res.returncode == 1, res
    assert f"{REMOTE_NET}.2:{held.port} -> {REMOTE_NET}.1:22/tcp (from remote-node)" in res.stderr
    assert held.alive()
    node.cli("install", "--no-agent", "--remote-node-labels", f"{REMOTE_NET}.2:role=web", "--force")
    assert not held.alive() and not connects_from_ns(remote, f"{REMOTE_NET}.1", 22)
    # without the flag fromNodes is Cilium's invalid rule again: nothing applied, one finding
    node.cli("policy", "delete", "n")
    node.cli("install", "--no-agent", "--disable-node-selector-labels")
    bad = node.cli("policy", "apply", "-f", str(policy), check=False)
    assert bad.returncode == 1 and "--enable-node-selector-labels" in bad.stdout + bad.stderr
