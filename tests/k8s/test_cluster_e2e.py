"""End to end on a real two-node cluster, as an admin does it: `ciliumctl install --kubeconfig --wait` deploys the
agent DaemonSet (its image built by scripts/image.sh) on both nodes, pods made with kubectl get addresses from
ciliumctl-cni in their node's pod CIDR, a CiliumNetworkPolicy applied with kubectl is enforced on real traffic
between pods on different nodes (identities from the CiliumIdentity CRD), flows show in `ciliumctl observe` (in
the agent pod) and in the real hubble, and `ciliumctl uninstall --kubeconfig` leaves nothing in the cluster.

The steps share one cluster and run in order (each test is one step of the story)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time

import pytest
from support.cli import run_cli
from support.shell import sh, wait_until

from k8s.cluster import NODE_NET
from k8s.workloads import NS, agent_pod, connects, kubectl_json, pod

# the first test also builds the images (minutes on a fresh machine) and starts the cluster
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]

CRDS = ["ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io",
        "ciliumidentities.cilium.io", "ciliumendpoints.cilium.io", "ciliumlocalredirectpolicies.cilium.io",
        "ciliumcidrgroups.cilium.io"]




# web on one node, its clients on the other: every connection crosses the wire between the nodes
WEB = pod("web", "node2", ["python3", "-m", "http.server", "8080"])
CLIENT = pod("client", "node1", ["sleep", "infinity"])
OTHER = pod("other", "node1", ["sleep", "infinity"])
NODE_OF = {"web": 1, "client": 0, "other": 0}     # index in k8s.nodes

POLICY = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "web-from-client"},
    "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
             "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                          "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]},
}




# a client outside the nodes, on their wire (the cluster's bridge), in a namespace of this test
OUTSIDE_IP = str(NODE_NET.network_address + 250)
GET = ("import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
       " s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.makefile('rb').readline().decode().strip())\n"
       "except OSError as e:\n print('failed', e)\n")


@pytest.fixture
def outside(k8s):
    """The namespace of a machine outside the cluster, plugged into the nodes' wire; removed afterwards."""
    name, veth = f"{k8s.prefix}-outside", f"{k8s.prefix}o"
    try:
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", veth, "netns", name, "type", "veth", "peer", "name", f"{veth}p", "netns", k8s.net_ns)
        sh("ip", "-n", k8s.net_ns, "link", "set", f"{veth}p", "master", "br0", "up")
        sh("ip", "-n", name, "link", "set", veth, "name", "eth0")
        sh("ip", "-n", name, "addr", "add", f"{OUTSIDE_IP}/{NODE_NET.prefixlen}", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "delete", name, check=False)


def http_from(netns: str, ip: str, port: int) -> str:
    """The status line of GET / from the namespace, or "failed ..." (refused, unreachable or no answer in 2 s)."""
    return sh("ip", "netns", "exec", netns, "python3", "-c", GET, ip, str(port), timeout=30).stdout.strip()


def device_programs(node) -> list[int]:
    """The tcx programs on the node's eth0, ingress and egress (read in its namespace)."""
    from ciliumctl.base.netns import in_netns
    from ciliumctl.datapath import bpfsys

    fd = os.open(node.netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with in_netns(fd):
            idx = socket.if_nametoindex("eth0")
            return [p for t in (bpfsys.BPF_TCX_INGRESS, bpfsys.BPF_TCX_EGRESS) for p in bpfsys.tcx_prog_ids(idx, t)]
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def state():
    return {}


def test_install_waits_for_the_agent_daemonset(k8s, cli_env_k8s):
    res = run_cli("install", "--kubeconfig", str(k8s.kubeconfig), "--image", "ciliumctl:local",
                  "--image-pull-policy", "Never", "--wait", env=cli_env_k8s, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "daemonset.apps/ciliumctl-agent created" in res.stdout
    assert "ciliumctl is ready on every node" in res.stderr
    for crd in CRDS:
        k8s.kubectl("wait", "--for", "condition=Established", f"crd/{crd}", "--timeout", "30s")
    ds = kubectl_json(k8s, "get", "daemonset", "-n", NS, "ciliumctl-agent")
    assert ds["status"]["numberReady"] == ds["status"]["desiredNumberScheduled"] == 2
    # the init step put the plugin, host-local, loopback and the conflist on each node (not on the machine),
    # with that node's pod CIDR
    for node in k8s.nodes:
        conflist = json.loads((node.dir / "host/etc/cni/net.d/05-ciliumctl.conflist").read_text())
        assert conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == k8s.pod_cidrs[node.name]
        for plugin in ("ciliumctl-cni", "host-local", "loopback"):
            assert (node.dir / "host/opt/cni/bin" / plugin).exists()
    assert len(set(k8s.pod_cidrs.values())) == 2
    status = run_cli("status", "--kubeconfig", str(k8s.kubeconfig), "-o", "json", env=cli_env_k8s, timeout=60)
    assert json.loads(status.stdout)["healthy"] is True, status.stdout
    # no --devices: each agent detected its node's native device, eth0 (its lo is left out), and put bpf_host.c's
    # NodePort programs on it, ingress and egress
    for node in k8s.nodes:
        assert len(device_programs(node)) == 2, node.name


def test_pods_get_addresses_endpoints_and_identities(k8s, state):
    k8s.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [WEB, CLIENT, OTHER]}))
    k8s.kubectl("wait", "--for", "condition=Ready", "pod/web", "pod/client", "pod/other", "--timeout", "120s")
    for name in ("web", "client", "other"):
        pool = ipaddress.ip_network(k8s.pod_cidrs[k8s.nodes[NODE_OF[name]].name])
        ip = kubectl_json(k8s, "get", "pod", name)["status"]["podIP"]
        assert ipaddress.ip_address(ip) in pool, (name, ip, pool)
        state[name] = ip

    def endpoints():
        ceps = {c["metadata"]["name"]: c for c in kubectl_json(k8s, "get", "ciliumendpoints")["items"]}
        return ceps if {"web", "client", "other"} <= set(ceps) else None

    assert wait_until(endpoints, 60, 0.5), kubectl_json(k8s, "get", "ciliumendpoints")
    ceps = endpoints()
    for name in ("web", "client", "other"):
        status = ceps[name]["status"]
        assert status["networking"]["addressing"][0]["ipv4"] == state[name]
        assert status["networking"]["node"] == k8s.nodes[NODE_OF[name]].name
        state[f"{name}-identity"] = status["identity"]["id"]
    identities = {i["metadata"]["name"]: i for i in kubectl_json(k8s, "get", "ciliumidentities")["items"]}
    web_identity = identities[str(state["web-identity"])]
    assert web_identity["security-labels"].get("k8s:app") == "web", web_identity
    assert len({state[f"{n}-identity"] for n in ("web", "client", "other")}) == 3


def test_policy_applied_with_kubectl_is_enforced(k8s, state):
    assert connects(k8s, "client", state["web"]) and connects(k8s, "other", state["web"])   # default allow
    k8s.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    assert wait_until(lambda: not connects(k8s, "other", state["web"]), 30, 0.5), "the policy is not enforced"
    assert connects(k8s, "client", state["web"])
    cnp = kubectl_json(k8s, "get", "cnp", "web-from-client")
    conditions = {c["type"]: c["status"] for c in (cnp.get("status") or {}).get("conditions") or []}
    assert conditions.get("Valid") == "True", cnp.get("status")


def test_flows_in_observe_and_in_the_real_hubble(k8s, state, hubble):
    """Each node's flows name the pod of the other node as Cilium's Hubble names a remote endpoint: pod name,
    namespace, its identity's labels, no endpoint ID (pkg/hubble/parser/common/endpoint.go, ResolveEndpoint)."""
    assert not connects(k8s, "other", state["web"])
    assert connects(k8s, "client", state["web"])

    def flows(node: str, source: str, destination: str, verdict: str) -> list[dict]:
        """The last flow source -> destination with the verdict at the node, in the real hubble and in
        `ciliumctl observe` in the node's agent pod: both must have one."""
        sock = next(n for n in k8s.nodes if n.name == node).dir / "host/run/ciliumctl/hubble.sock"
        real = sh(str(hubble), "observe", "--server", f"unix://{sock}", "--last", "500", "-o", "jsonpb", timeout=30)
        ours = k8s.kubectl("exec", "-n", NS, agent_pod(k8s, node), "-c", "agent", "--", "ciliumctl", "observe",
                           "--last", "500", "-o", "jsonpb", timeout=60)
        found = []
        for out in (real.stdout, ours.stdout):
            parsed = [json.loads(line) for line in out.splitlines() if line.strip()]
            matching = [f for f in (p.get("flow", p) for p in parsed) if f.get("verdict") == verdict
                        and f.get("IP", {}).get("source") == state[source]
                        and f.get("IP", {}).get("destination") == state[destination]]
            assert matching, out[-2000:]
            found.append(matching[-1])
        return found

    def named(ep: dict, pod: str, local: bool) -> None:
        assert (ep.get("pod_name"), ep.get("namespace")) == (pod, "default"), ep
        assert ep.get("identity") == state[f"{pod}-identity"] and ("ID" in ep) == local, ep
        assert f"k8s:app={pod}" in ep.get("labels", []), ep

    for drop in flows("node2", "other", "web", "DROPPED"):      # web's ingress policy: real hubble, then ours
        assert drop.get("drop_reason_desc") == "POLICY_DENIED", drop
        named(drop["destination"], "web", local=True)
        named(drop["source"], "other", local=False)
    for reply in flows("node1", "web", "client", "FORWARDED"):  # web's answers delivered to client
        named(reply["source"], "web", local=False)
        named(reply["destination"], "client", local=True)


def test_agent_restart_lets_no_denied_packet_through(k8s, state):
    old = agent_pod(k8s, "node2")      # web's node: where its ingress policy is enforced
    k8s.kubectl("delete", "pod", "-n", NS, old, "--wait=false")
    # while the agent is away and coming back, the pinned datapath keeps enforcing
    deadline = time.monotonic() + 120
    attempts = 0
    while time.monotonic() < deadline:
        assert not connects(k8s, "other", state["web"]), "a denied connection passed during the agent restart"
        attempts += 1
        pods = kubectl_json(k8s, "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=ciliumctl-agent")["items"]
        ready = [p for p in pods if p["metadata"]["name"] != old and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
        if ready:
            break
    assert ready, "the agent pod did not come back"
    assert connects(k8s, "client", state["web"])
    assert not connects(k8s, "other", state["web"])
    # the new agent publishes its endpoints again, under the identities they had
    want = {n: state[f"{n}-identity"] for n in ("web", "client", "other")}

    def published():
        ceps = kubectl_json(k8s, "get", "ciliumendpoints")["items"]
        return {c["metadata"]["name"]: c["status"]["identity"]["id"] for c in ceps}

    assert wait_until(lambda: published() == want, 60, 0.5), f"identities after the restart: {published()}"


def test_deleting_the_policy_lets_traffic_flow(k8s, state):
    k8s.kubectl("delete", "cnp", "web-from-client")
    assert wait_until(lambda: connects(k8s, "other", state["web"]), 30, 0.5)


def test_a_cluster_ip_service_reaches_its_backend_on_the_other_node(k8s, state):
    """No kube-proxy: the client's node translates the ClusterIP to web's address (its EndpointSlice made by the
    controller-manager) and the connection crosses to the other node; `service list` in the agent shows it."""
    k8s.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}))
    vip = kubectl_json(k8s, "get", "service", "web")["spec"]["clusterIP"]
    assert wait_until(lambda: connects(k8s, "client", vip, 80), 60, 0.5), "the ClusterIP does not reach web"
    listed = k8s.kubectl("exec", "-n", NS, agent_pod(k8s, k8s.nodes[NODE_OF["client"]].name), "-c", "agent", "--",
                         "ciliumctl", "service", "list", timeout=60).stdout
    assert listed.startswith("cluster mode:") and f"{vip}:80/TCP" in listed, listed
    assert f"{state['web']}:8080/TCP (active)" in listed and "default/web" in listed, listed
    k8s.kubectl("delete", "service", "web")
    assert wait_until(lambda: not connects(k8s, "client", vip, 80), 30, 0.5), "the deleted service still answers"


def test_a_node_port_reaches_its_pod_on_the_other_node_from_outside(k8s, state, outside):
    """No kube-proxy (the cluster runs none): a client outside the cluster asks node A (client's node) for a
    NodePort Service whose only pod (web) is on node B. externalTrafficPolicy Cluster: node A's device
    translates it to web, SNATed out to node B; Local: node A has no pod of it and refuses, node B answers
    with the client's own address kept."""
    node_a, node_b = k8s.nodes[NODE_OF["client"]], k8s.nodes[NODE_OF["web"]]
    rules = sh("ip", "netns", "exec", node_a.netns, "iptables-save", check=False).stdout
    assert "KUBE-SERVICES" not in rules and "KUBE-NODEPORTS" not in rules    # kube-proxy's chains (the kubelet's
    # own KUBE-IPTABLES-HINT and KUBE-KUBELET-CANARY are there)
    k8s.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}))
    try:
        port = kubectl_json(k8s, "get", "service", "web-np")["spec"]["ports"][0]["nodePort"]
        assert wait_until(lambda: http_from(outside, node_a.ip, port).startswith("HTTP/1.0 200"), 60, 0.5), \
            http_from(outside, node_a.ip, port)
        listed = k8s.kubectl("exec", "-n", NS, agent_pod(k8s, node_a.name), "-c", "agent", "--", "ciliumctl",
                             "service", "list", timeout=60).stdout
        assert f"{node_a.ip}:{port}/TCP" in listed and "NodePort" in listed, listed
        # node B saw node A's address (SNAT), not the client's
        assert f"{node_a.ip} - -" in k8s.kubectl("logs", "web").stdout

        k8s.kubectl("patch", "service", "web-np", "-p", json.dumps({"spec": {"externalTrafficPolicy": "Local"}}))
        assert wait_until(lambda: http_from(outside, node_a.ip, port).startswith("failed"), 30, 0.5), \
            "node A still answers for a Local service without a pod of it"
        # refused by node A's device program, as Cilium: drop 158, no service backend
        flows = k8s.kubectl("exec", "-n", NS, agent_pod(k8s, node_a.name), "-c", "agent", "--", "ciliumctl",
                            "observe", "--last", "500", "--verdict", "DROPPED", "--from-ip", OUTSIDE_IP, "-o",
                            "jsonpb", timeout=60).stdout
        reasons = {json.loads(line)["flow"].get("drop_reason_desc") for line in flows.splitlines() if line.strip()}
        assert "SERVICE_BACKEND_NOT_FOUND" in reasons, flows[-2000:]
        assert http_from(outside, node_b.ip, port).startswith("HTTP/1.0 200")
        assert f"{OUTSIDE_IP} - -" in k8s.kubectl("logs", "web").stdout
    finally:
        k8s.kubectl("delete", "service", "web-np", check=False)


def test_deleting_a_pod_releases_everything(k8s, state):
    node = k8s.nodes[NODE_OF["other"]]
    lease = node.dir / "host/var/lib/cni/networks/ciliumctl" / state["other"]
    assert lease.exists()
    netns_before = set((node.dir / "host/run/netns").iterdir())
    k8s.kubectl("delete", "pod", "other", "--wait=true", "--timeout", "60s")
    assert wait_until(lambda: "other" not in {c["metadata"]["name"] for c in
                                              kubectl_json(k8s, "get", "ciliumendpoints")["items"]}, 60, 0.5)
    assert wait_until(lambda: not lease.exists(), 30, 0.2), "host-local kept the address"
    assert wait_until(lambda: len(set((node.dir / "host/run/netns").iterdir())) == len(netns_before) - 1, 30, 0.2)
    endpoints = k8s.kubectl("exec", "-n", NS, agent_pod(k8s, node.name), "-c", "agent", "--", "ciliumctl",
                            "endpoint", "list", "-o", "json", timeout=60).stdout
    assert state["other"] not in endpoints and state["client"] in endpoints


def test_uninstall_leaves_nothing(k8s, cli_env_k8s):
    k8s.kubectl("delete", "pod", "web", "client", "--wait=true", "--timeout", "60s")
    res = run_cli("uninstall", "--kubeconfig", str(k8s.kubeconfig), env=cli_env_k8s, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    # the agents saw their DaemonSet gone and took NodePort off the devices before uninstall went on
    for node in k8s.nodes:
        assert device_programs(node) == [], node.name
    assert wait_until(lambda: k8s.kubectl("get", "namespace", NS, check=False).returncode != 0, 90, 0.5)
    for crd in CRDS:
        assert k8s.kubectl("get", "crd", crd, check=False).returncode != 0
    assert k8s.kubectl("get", "clusterrole", "ciliumctl-agent", check=False).returncode != 0
    assert k8s.kubectl("get", "clusterrolebinding", "ciliumctl-agent", check=False).returncode != 0
    left = k8s.kubectl("get", "all", "-A", "-l", "app.kubernetes.io/part-of=ciliumctl", "-o", "name").stdout
    assert not left.strip(), left


def test_install_of_a_missing_image_says_which_pod_and_why(k8s, cli_env_k8s):
    res = run_cli("install", "--kubeconfig", str(k8s.kubeconfig), "--image", "ciliumctl-missing:local",
                  "--image-pull-policy", "Never", "--wait", env=cli_env_k8s, timeout=300)
    try:
        assert res.returncode == 2, res.stdout + res.stderr
        line = res.stderr.strip().splitlines()[-1]
        assert "cannot start: ErrImageNeverPull" in line and "ciliumctl-missing:local" in line, res.stderr
        assert " on node" in line, line
    finally:
        assert run_cli("uninstall", "--kubeconfig", str(k8s.kubeconfig), env=cli_env_k8s,
                       timeout=120).returncode == 0
