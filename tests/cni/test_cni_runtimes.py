"""End to end with real runtimes from Debian: containerd 1.6 driven over CRI gRPC the way kubelet drives it, and
podman 4.3 with its CNI backend, both calling the installed `ciliumctl-cni` through the conflist `install_cni`
wrote. The node is a network namespace the test creates; the runtimes run in it and in private mount
namespaces (tests/cni/cni_runtimes.py). One node and one runtime per module keep the suite quick."""

import json
import time

import pytest
from cni_runtimes import IMAGE, Podman, containerd_cri
from support.cni_node import CniNode, require_stack
from support.policies import allow_ingress

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICY = allow_ingress("web-from-client", {"app": "web"}, {"app": "client"}, port=8080, namespace="shop")


@pytest.fixture(scope="module")
def node():
    require_stack()
    with CniNode(pool="10.233.0.0/24") as n:
        yield n


def events(node):
    with node.ring() as ring:
        return ring.events()


def assert_node_clean(node) -> None:
    assert node.host_links() == [], "host veths left behind"
    assert node.host_routes() == [], "routes left behind"
    assert node.leases() == [], "IPAM leases left behind"
    assert node.endpoints() == [], "endpoints left behind"
    assert not list((node.state / "cni").glob("*.json")), "attachment state left behind"


# --------------------------------------------------------------------------------------------- containerd

@pytest.fixture(scope="module")
def containerd(node):
    with containerd_cri(node) as cri:
        yield cri


def start_pod(cri, name: str, namespace: str, labels: str, command: list[str]):
    cfg = cri.sandbox_config(name, namespace, annotations={"ciliumctl.io/labels": labels})
    pod = cri.run_pod(cfg)
    ctr = cri.start_container(pod, cfg, "main", IMAGE, command)
    return pod, ctr


def test_containerd_pods_talk_policy_drops_one_direction_and_delete_cleans_up(node, containerd):
    pytest.importorskip("ciliumctl.policy.validate", reason="policy validation (policy apply) not in this build yet")
    cri = containerd
    assert cri.version().runtime_name == "containerd"
    pods = {}
    try:
        pods["web"] = start_pod(cri, "web", "shop", "app=web", ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"])
        pods["client"] = start_pod(cri, "client", "shop", "app=client", ["/bin/sleep", "100000"])
        pods["other"] = start_pod(cri, "other", "shop", "app=other", ["/bin/sleep", "100000"])
        ips = {name: cri.pod_ip(pod) for name, (pod, _) in pods.items()}
        eps = {e["name"]: e for e in node.endpoints()}
        assert set(eps) == {"web", "client", "other"}
        for name in pods:
            assert eps[name]["ipv4"] == ips[name] and eps[name]["namespace"] == "shop"
            assert eps[name]["container_id"] == pods[name][0]
            assert eps[name]["state"] == "ready" and eps[name]["identity"] >= 256
        assert eps["web"]["labels"] == {"app": "web"}   # from the pod annotation, through the CNI capability
        assert len(node.leases()) == 3 and len(node.host_links()) == 3

        def fetch(src: str) -> tuple[int, str]:
            # busybox-static's wget crashes without NSS files in the image; nc speaks the HTTP/1.0 it needs
            code, out, _ = cri.exec_sync(pods[src][1], [
                "/bin/sh", "-c", f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ips['web']} 8080"],
                timeout=10)
            return code, out.rsplit("\r\n\r\n", 1)[-1]

        def ping(src: str, dst: str) -> bool:
            return cri.exec_sync(pods[src][1], ["/bin/ping", "-c", "1", "-W", "2", ips[dst]])[0] == 0

        assert fetch("client") == (0, "hello from a pod\n")
        assert fetch("other") == (0, "hello from a pod\n")

        policy = node.tmp / "policy.yaml"
        policy.write_text(POLICY)
        applied = node.cli("policy", "apply", "-f", str(policy))
        assert applied.returncode == 0, applied.stderr
        events(node)   # drain what came before the policy

        assert fetch("client") == (0, "hello from a pod\n")
        code, _ = fetch("other")
        assert code != 0, "app=other must not reach web:8080 under the policy"
        assert ping("web", "other"), "the other direction (web -> other) stays open"

        from ciliumctl.datapath import events as ev

        seen = events(node)
        drops = [e for e in seen if e.type == ev.EVENT_DROP and e.saddr == ips["other"] and e.daddr == ips["web"]
                 and e.dport == 8080]
        assert drops and drops[0].subtype == ev.DROP_POLICY, seen
        assert drops[0].ep_id == eps["web"]["id"]
        allowed = [e for e in seen if e.type == ev.EVENT_POLICY_VERDICT and e.saddr == ips["client"]
                   and e.daddr == ips["web"] and e.verdict == ev.VERDICT_FORWARDED]
        assert allowed, seen
    finally:
        for pod, _ctr in pods.values():
            cri.stop_pod(pod)      # kubelet: StopPodSandbox (CNI DEL), then RemovePodSandbox (more DELs)
            cri.remove_pod(pod)
        node.cli("policy", "delete", "web-from-client", "-n", "shop")
    assert_node_clean(node)
    assert cri.list_pods() == []


def test_containerd_repeated_stop_is_idempotent(node, containerd):
    cri = containerd
    pod, _ = start_pod(cri, "again", "default", "app=again", ["/bin/sleep", "100000"])
    for _ in range(3):
        cri.stop_pod(pod)
    cri.remove_pod(pod)
    cri.remove_pod(pod)
    assert_node_clean(node)


# --------------------------------------------------------------------------------------------- podman

@pytest.fixture(scope="module")
def podman(node):
    pm = Podman(node.tmp / "podman", node.bin_dir, node.conf_dir, f"/run/netns/{node.node_ns}",
                    f"/{node.prefix}")
    try:
        yield pm
    finally:
        pm.close()


def test_podman_containers_talk_and_removal_cleans_up(node, podman):
    names = [f"{node.prefix}a", f"{node.prefix}b"]
    try:
        for name in names:
            podman.podman("run", "-d", "--name", name, "--network", "ciliumctl", "--cap-add", "NET_RAW",
                          "--cgroup-parent", f"/{node.prefix}", IMAGE)
        ips = {}
        for name in names:
            out = podman.podman("inspect", name).stdout
            ips[name] = json.loads(out)[0]["NetworkSettings"]["Networks"]["ciliumctl"]["IPAddress"]
        eps = {e["ipv4"]: e for e in node.endpoints()}
        assert set(eps) == set(ips.values())
        assert all(e["state"] == "ready" for e in eps.values())
        a, b = names
        assert podman.podman("exec", a, "ping", "-c", "1", "-W", "2", ips[b], check=False).returncode == 0
        assert podman.podman("exec", b, "ping", "-c", "1", "-W", "2", ips[a], check=False).returncode == 0
        # stop: podman's cleanup process (which drops custom environment variables) runs the CNI DEL
        podman.podman("stop", "-t", "0", a)
        deadline = time.monotonic() + 20
        while len(node.endpoints()) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e["ipv4"] for e in node.endpoints()] == [ips[b]]
    finally:
        podman.podman("rm", "-f", "-t", "0", *names, check=False)
    assert_node_clean(node)
