"""L7 HTTP policy on a sandbox node, end to end (issue 14): `policy apply` of Cilium's Star Wars rule with
rules.http, the agent runs HAProxy from it, requests from one endpoint to another go through it: the landing POST
reaches the deathstar, the PUT to the exhaust port gets 403 "Access denied" from the proxy, an endpoint without
the L4 allow never gets a connection; with the agent down, the L7 port refuses connections."""

from __future__ import annotations

import json
import sys

import pytest
from support.shell import wait_until, write

pytestmark = [pytest.mark.root, pytest.mark.slow]

POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
spec:
  description: L7 policy to restrict access to specific HTTP call
  endpointSelector:
    matchLabels:
      app: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: tiefighter
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: POST
          path: /v1/request-landing
        - method: GET
          path: /
"""

REQUEST = """
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=3)
try:
    c.request(sys.argv[2], sys.argv[3], body=b"x" if sys.argv[2] != "GET" else None)
    r = c.getresponse()
    print(r.status, repr(r.read()[:40]))
except OSError as err:
    print("ERROR", type(err).__name__)
"""


def request(node, ep: str, ip: str, method: str, path: str) -> str:
    return node.cli("endpoint", "exec", ep, "--", sys.executable, "-c", REQUEST, ip, method, path).stdout.strip()


def test_star_wars_l7_rule_end_to_end(node, tmp_path):
    node.cli("install", "--no-agent")
    ds = node.add_pod("deathstar", "deathstar")
    node.add_pod("tiefighter", "tiefighter")
    node.add_pod("xwing", "xwing")
    node.serve("deathstar", ds, 80)
    out = node.cli("policy", "apply", "-f", str(write(tmp_path / "rule1.yaml", POLICY)))
    assert "rules.http" not in out.stdout + out.stderr          # enforced: no "not enforced" warning
    node.cli("agent", "start", "--metrics-listen", "", "--no-cni")

    # the landing POST passes the proxy and the deathstar's server (node.demo.SERVER) answers it
    assert wait_until(lambda: request(node, "tiefighter", ds, "GET", "/").startswith("200"), 10)
    assert request(node, "tiefighter", ds, "POST", "/v1/request-landing") == "200 b'Ship landed\\n'"
    assert request(node, "tiefighter", ds, "PUT", "/v1/exhaust-port") == "403 b'Access denied\\r\\n'"
    assert request(node, "tiefighter", ds, "GET", "/etc").startswith("403")
    # no L4 allow for the xwing: the datapath drops it before any proxy
    assert request(node, "xwing", ds, "GET", "/").startswith("ERROR")

    # every request through the proxy is an L7 flow, as hubble shows them
    def l7(*flags: str) -> list[dict]:
        out = node.cli("observe", "--last", "100", "-t", "l7", "-o", "json", *flags, check=False).stdout
        return [json.loads(x)["flow"] for x in out.splitlines() if x.strip()]

    assert wait_until(lambda: l7("--http-method", "PUT"), 5), node.cli("observe", "--last", "20").stdout
    put = l7("--http-method", "PUT")
    assert put and put[0]["verdict"] == "DROPPED" and put[0]["l7"]["type"] == "REQUEST"
    assert put[0]["l7"]["http"]["url"].endswith("/v1/exhaust-port") and put[0]["source"]["pod_name"] == "tiefighter"
    landing = l7("--http-path", "/v1/request-landing", "--http-status", "200")
    assert landing and landing[0]["l7"]["type"] == "RESPONSE" and landing[0]["verdict"] == "FORWARDED"
    assert landing[0]["traffic_direction"] == "INGRESS" and landing[0]["source"]["pod_name"] == "deathstar"

    # the agent (and its proxy) down: the redirected port refuses, never passes unfiltered
    node.cli("agent", "stop")
    assert request(node, "tiefighter", ds, "GET", "/").startswith("ERROR")
