"""L7 HTTP policy on the real two-node cluster (issue 14), as an admin does it: the agent DaemonSet installed by
`ciliumctl install --kubeconfig --wait`, a CiliumNetworkPolicy with rules.http applied with kubectl through the API
server, a client pod on node1 asking a server pod on node2 (the connection crosses the wire and reaches the
server's node through its device: ingress L7 from another node), HAProxy in the server node's agent lets the GET
through and answers the PUT with 403 `Access denied`, and both show as L7 flows in `ciliumctl observe` there.

The steps share one cluster and run in order."""

from __future__ import annotations

import json

import pytest
from support.shell import wait_until

from k8s.workloads import NS, agent_installed, agent_pod, kubectl_json, pod

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]



DEATHSTAR = pod("deathstar", "node2", ["python3", "-m", "http.server", "8080"])
TIEFIGHTER = pod("tiefighter", "node1", ["sleep", "infinity"])

# Cilium's Star Wars rule, on the port the server listens on: GET / only (the path is a full-match regex)
POLICY = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "deathstar-l7"},
    "spec": {"endpointSelector": {"matchLabels": {"app": "deathstar"}},
             "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "tiefighter"}}],
                          "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                       "rules": {"http": [{"method": "GET", "path": "/"}]}}]}]},
}

REQUEST = ("import http.client,sys\ntry:\n c=http.client.HTTPConnection(sys.argv[1], 8080, timeout=3)\n"
           " c.request(sys.argv[2], sys.argv[3], body=b'x' if sys.argv[2] != 'GET' else None)\n"
           " r=c.getresponse(); print(r.status, repr(r.read()[:40]))\nexcept OSError as e:\n print('ERROR', e)\n")


def request(k8s, ip: str, method: str, path: str) -> str:
    return k8s.kubectl("exec", "tiefighter", "--", "python3", "-c", REQUEST, ip, method, path,
                       timeout=30).stdout.strip()


@pytest.fixture(scope="module")
def installed(k8s, cli_env_k8s):
    with agent_installed(k8s, cli_env_k8s):
        try:
            yield
        finally:
            k8s.kubectl("delete", "cnp", "deathstar-l7", "--ignore-not-found", check=False)
            k8s.kubectl("delete", "pod", "deathstar", "tiefighter", "--ignore-not-found", "--wait=true",
                        check=False, timeout=120)


@pytest.fixture(scope="module")
def deathstar(k8s, installed) -> str:
    k8s.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": [DEATHSTAR, TIEFIGHTER]}))
    k8s.kubectl("wait", "--for", "condition=Ready", "pod/deathstar", "pod/tiefighter", "--timeout", "120s")
    return kubectl_json(k8s, "get", "pod", "deathstar")["status"]["podIP"]


def test_rules_http_applied_through_the_api_server_are_enforced_by_the_proxy(k8s, deathstar):
    assert request(k8s, deathstar, "PUT", "/").startswith("501")    # no policy: http.server itself refuses PUT
    k8s.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    assert wait_until(lambda: request(k8s, deathstar, "PUT", "/") == "403 b'Access denied\\r\\n'", 60, 0.5), \
        request(k8s, deathstar, "PUT", "/")
    assert request(k8s, deathstar, "GET", "/").startswith("200")
    assert request(k8s, deathstar, "GET", "/etc").startswith("403")    # the path regex is anchored


def test_the_requests_are_l7_flows_in_observe_on_the_servers_node(k8s, deathstar):
    agent = agent_pod(k8s, "node2")

    def l7() -> list[dict]:
        out = k8s.kubectl("exec", "-n", NS, agent, "-c", "agent", "--", "ciliumctl", "observe", "--last", "500",
                          "-t", "l7", "-o", "json", timeout=60, check=False).stdout
        return [json.loads(x)["flow"] for x in out.splitlines() if x.strip()]

    def seen() -> bool:
        flows = l7()
        return any(f["l7"]["http"]["method"] == "PUT" and f["verdict"] == "DROPPED" for f in flows) and any(
            f["l7"]["http"].get("code") == 200 and f["verdict"] == "FORWARDED" for f in flows)

    assert wait_until(seen, 30, 0.5), l7()[-4:]
    put = next(f for f in l7() if f["l7"]["http"]["method"] == "PUT" and f["verdict"] == "DROPPED")
    assert put["traffic_direction"] == "INGRESS" and put["Type"] == "L7"
    # the client's identity is the one its node's agent published (the CiliumEndpoint), known here by the ipcache
    tiefighter = kubectl_json(k8s, "get", "ciliumendpoint", "tiefighter")["status"]["identity"]["id"]
    assert put["source"]["identity"] == tiefighter and put["destination"].get("pod_name") == "deathstar"
    assert put["l7"]["http"]["url"] == f"http://{deathstar}:8080/"
