"""The whole node path: containerd (over CRI) -> ciliumctl-cni -> the real `ciliumctl agent` (which serves the
CNI socket and turns datapath events into flows) -> `ciliumctl observe` shows the verdicts with pod names."""

import json

import pytest
from cni_runtimes import IMAGE, containerd_cri
from support.cni_node import CniNode, require_stack
from support.policies import allow_ingress

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICY = allow_ingress("db-from-api", {"app": "db"}, {"app": "api"}, port=5432, namespace="shop")


@pytest.fixture(scope="module")
def stack():
    require_stack()
    pytest.importorskip("ciliumctl.node.agent", reason="the node agent is not in this build yet")
    pytest.importorskip("ciliumctl.policy.validate", reason="policy validation is not in this build yet")
    with CniNode(pool="10.237.0.0/24", agent=True) as node, containerd_cri(node) as cri:
        yield node, cri


def test_agent_serves_cni_and_observe_shows_the_verdicts(stack):
    node, cri = stack
    pods = {}
    try:
        for name, labels, cmd in (("db", "app=db", ["/bin/httpd", "-f", "-p", "5432", "-h", "/www"]),
                                  ("api", "app=api", ["/bin/sleep", "100000"]),
                                  ("intruder", "app=intruder", ["/bin/sleep", "100000"])):
            cfg = cri.sandbox_config(name, "shop", annotations={"ciliumctl.io/labels": labels})
            pod = cri.run_pod(cfg)
            pods[name] = (pod, cri.start_container(pod, cfg, "main", IMAGE, cmd))
        ips = {name: cri.pod_ip(pod) for name, (pod, _) in pods.items()}
        policy = node.tmp / "policy.yaml"
        policy.write_text(POLICY)
        applied = node.cli("policy", "apply", "-f", str(policy))
        assert applied.returncode == 0, applied.stderr

        def connect(src: str) -> int:
            req = f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ips['db']} 5432"
            code, out, _ = cri.exec_sync(pods[src][1], ["/bin/sh", "-c", req], timeout=10)
            return code if code != 0 or "hello from a pod" in out else 1

        assert connect("api") == 0
        assert connect("intruder") != 0
        flows = []
        for verdict in ("DROPPED", "FORWARDED"):
            out = node.cli("observe", "--verdict", verdict, "--to-pod", "shop/db", "-o", "json", "--last", "50")
            assert out.returncode == 0, out.stderr
            flows += [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        flows = [f.get("flow", f) for f in flows]
        dropped = [f for f in flows if f.get("verdict") == "DROPPED"]
        forwarded = [f for f in flows if f.get("verdict") == "FORWARDED"]
        assert dropped and forwarded, flows
        assert dropped[0]["source"]["pod_name"] == "intruder" and dropped[0]["source"]["namespace"] == "shop"
        assert dropped[0]["destination"]["pod_name"] == "db"
        assert dropped[0]["IP"]["source"] == ips["intruder"]
        assert any(f["source"].get("pod_name") == "api" for f in forwarded)
    finally:
        for pod, _ in pods.values():
            cri.stop_pod(pod)
            cri.remove_pod(pod)
        node.cli("policy", "delete", "db-from-api", "-n", "shop")
    assert node.host_links() == [] and node.leases() == [] and node.endpoints() == []
