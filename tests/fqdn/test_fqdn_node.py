"""DNS-aware policy on a sandbox node, end to end (issue 15): an endpoint whose egress allows DNS to the test's
server (rules.dns) and TCP 80 to `api.example.test` (toFQDNs). Its lookups go through the agent's DNS proxy
(redirected by the datapath); the server namespace (outside the cluster, as an external API is) answers with
dnsmasq. Allowed names resolve and the connection that follows is allowed, only to the learned address; other
names are REFUSED; a short TTL expires; the learned names survive an agent restart; with the proxy down, DNS gets
no answer from anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.dnsmasq import Dnsmasq, require_dnsmasq
from support.shell import sh, wait_until, write

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "10.97.0"
DNS, API, OTHER = f"{NET}.53", f"{NET}.5", f"{NET}.6"   # OTHER: same server namespace, never learned
API2 = f"{NET}.7"
NODE_ADDR = f"{NET}.1"
TTL = 5

POLICY = f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: fqdn
spec:
  endpointSelector:
    matchLabels:
      app: client
  egress:
  - toCIDR: [{DNS}/32]
    toPorts:
    - ports: [{{port: "53", protocol: ANY}}]
      rules:
        dns: [{{matchPattern: "api*.example.test"}}, {{matchPattern: "web*.example.test"}}]
  - toFQDNs: [{{matchPattern: "api*.example.test"}}]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
"""

LOOKUP = """
import sys, dns.message, dns.query, dns.rcode
q = dns.message.make_query(sys.argv[1], "A")
ask = dns.query.tcp if sys.argv[3] == "tcp" else dns.query.udp
try:
    r = ask(q, sys.argv[2], timeout=float(sys.argv[4]))
except Exception as err:
    print("ERROR", type(err).__name__); sys.exit(0)
print(dns.rcode.to_text(r.rcode()), " ".join(rd.address for rr in r.answer for rd in rr))
"""


def external(node, name: str) -> str:
    """A namespace outside the cluster holding the server's addresses, wired to the node by a veth of the test."""
    ns = f"{node.name}-{name}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", node.name, "link", "add", f"{node.name}x", "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    for ip in (DNS, API, OTHER, API2):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    sh("ip", "-n", ns, "route", "add", "10.200.0.0/16", "via", NODE_ADDR)
    sh("ip", "-n", node.name, "addr", "add", f"{NODE_ADDR}/24", "dev", f"{node.name}x")
    sh("ip", "-n", node.name, "link", "set", f"{node.name}x", "up")
    return ns


def lookup(node, ep: str, name: str, tcp: bool = False, timeout: float = 3.0) -> tuple[str, list[str]]:
    out = node.cli("endpoint", "exec", ep, "--", sys.executable, "-c", LOOKUP, name, DNS, "tcp" if tcp else "udp",
                   str(timeout)).stdout.split()
    return out[0], out[1:]


def http_server(node, ns: str):
    """Answers on every address of the server namespace, port 80."""
    code = ("import http.server, socketserver\nsocketserver.TCPServer.allow_reuse_address = True\n"
            "http.server.HTTPServer(('0.0.0.0', 80), http.server.SimpleHTTPRequestHandler).serve_forever()")
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    node.servers.append(p)
    assert wait_until(lambda: ":80 " in sh("ip", "netns", "exec", ns, "ss", "-tlnH").stdout, 5)


def flows(node, *args: str) -> list[dict]:
    out = node.cli("observe", "--last", "100", "-o", "json", *args, check=False).stdout
    return [json.loads(x)["flow"] for x in out.splitlines() if x.strip()]


def test_dns_aware_policy_end_to_end(node, tmp_path):
    require_dnsmasq()
    ns = external(node, "ext")
    node.cli("install", "--no-agent")
    node.add_pod("client", "client")
    node.cli("policy", "apply", "-f", str(write(tmp_path / "fqdn.yaml", POLICY)))
    node.cli("agent", "start", "--metrics-listen", "", "--no-cni")
    http_server(node, ns)
    with Dnsmasq(ns, DNS, {"api.example.test": API, "web.example.test": OTHER, "denied.example.test": OTHER,
                           "api2.example.test": API2}, ttl=TTL):
        # nothing learned yet: the name's address is not reachable
        assert not node.connect("client", API, 80, timeout=0.5)

        # an allowed name resolves (UDP and TCP) through the proxy, and the connection that follows is allowed,
        # only to the learned address
        assert lookup(node, "client", "api.example.test") == ("NOERROR", [API])
        assert node.connect("client", API, 80)
        assert not node.connect("client", OTHER, 80, timeout=0.5)
        # flows to a learned address carry its name (destination_names), so --fqdn finds them, as in hubble (the
        # agent names flows from a snapshot of the node's files taken at most every 0.5 s: connect until one is)
        assert wait_until(lambda: node.connect("client", API, 80) and any(
            f["IP"]["destination"] == API for f in flows(node, "--fqdn", "api.example.test")), 10)
        named = flows(node, "--fqdn", "api.example.test")
        assert named and all(f.get("destination_names") == ["api.example.test"] or
                             f.get("source_names") == ["api.example.test"] for f in named)
        assert lookup(node, "client", "api.example.test", tcp=True) == ("NOERROR", [API])
        # a name the rules do not allow is REFUSED by the proxy (the server would answer it); web.example.test is
        # allowed by rules.dns but no toFQDNs selects it: answered, and its address stays unreachable
        assert lookup(node, "client", "denied.example.test") == ("REFUSED", [])
        assert lookup(node, "client", "web.example.test") == ("NOERROR", [OTHER])
        assert not node.connect("client", OTHER, 80, timeout=0.5)

        # DNS flows: hubble's L7 DNS fields, observation source proxy
        dns = wait_until(lambda: [f for f in flows(node, "-t", "l7")
                                  if f.get("l7", {}).get("dns", {}).get("query") == "denied.example.test."], 5)
        assert dns
        got = flows(node, "-t", "l7")
        answers = [f for f in got if f["l7"]["type"] == "RESPONSE" and f["l7"]["dns"]["query"] == "api.example.test."]
        assert answers and answers[0]["l7"]["dns"]["ips"] == [API] and answers[0]["l7"]["dns"]["ttl"] == TTL
        assert answers[0]["l7"]["dns"]["observation_source"] == "proxy"
        refused = [f for f in got if f["l7"]["dns"]["query"] == "denied.example.test."]
        assert refused[0]["verdict"] == "DROPPED"

        # a second name of the selectors: its address goes into the ipcache in place (the identity is programmed)
        assert not node.connect("client", API2, 80, timeout=0.5)
        assert lookup(node, "client", "api2.example.test") == ("NOERROR", [API2])
        assert node.connect("client", API2, 80)
        # forgotten (fqdn cache clean, by another process than the agent) at once, while the agent may still hold
        # its in-place write unsaved: unreachable, and the agent's next save (its stop saves) does not bring it back
        node.cli("fqdn", "cache", "clean", "-p", "api2.example.test")
        assert not node.connect("client", API2, 80, timeout=0.5)
        node.cli("agent", "stop")
        assert API2 not in {r["ip"] for r in json.loads(node.cli("fqdn", "cache", "list", "-o", "json").stdout)}
        node.cli("agent", "start", "--metrics-listen", "", "--no-cni")
        assert not node.connect("client", API2, 80, timeout=0.5)
        # until looked up again
        assert lookup(node, "client", "api2.example.test") == ("NOERROR", [API2])
        assert node.connect("client", API2, 80)
        # the cache, as cilium-dbg fqdn cache list (the agent saves what it wrote in place within a second)
        assert wait_until(lambda: ("api2.example.test.", API2) in {
            (r["fqdn"], r["ip"]) for r in json.loads(node.cli("fqdn", "cache", "list", "-o", "json").stdout)}, 5)

        # the learned address survives an agent restart while its TTL holds (persisted, restored)
        # (a fresh lookup first, so the entry is young)
        assert lookup(node, "client", "api.example.test") == ("NOERROR", [API])
        node.cli("agent", "stop")
        node.cli("agent", "start", "--metrics-listen", "", "--no-cni")
        assert node.connect("client", API, 80)

        # TTL expiry removes the entry: the address is unreachable again
        assert wait_until(lambda: not node.cli("fqdn", "cache", "list", "-o", "json").stdout.strip("[]\n "), 30)
        assert wait_until(lambda: not node.connect("client", API, 80, timeout=0.5), 10)

        # fail closed: with the agent (and its proxy) down, redirected DNS gets no answer from anywhere else
        node.cli("agent", "stop")
        assert lookup(node, "client", "api.example.test", timeout=1.0)[0] == "ERROR"
