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
from types import SimpleNamespace

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
  - toFQDNs: [{{matchName: "api2.example.test"}}]
    toPorts:
    - ports: [{{port: "8080", protocol: TCP}}]
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

        # a second name, matched by two selectors: its label set is new, its identity and address go into the
        # active revision in place (node.dns_proxy.service.program_new_identities)
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


NEW_SET_POLICY = f"""apiVersion: cilium.io/v2
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
        dns: [{{matchPattern: "*"}}]
  - toFQDNs: [{{matchPattern: "*.example.test"}}]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
  - toFQDNs: [{{matchName: "multi.example.test"}}]
    toPorts:
    - ports: [{{port: "443", protocol: TCP}}]
  - toCIDR: [10.97.64.0/18]
    toPorts:
    - ports: [{{port: "22", protocol: TCP}}]
"""


MULTI = "10.97.64.9"       # multi.example.test: both selectors match it, the rule CIDR contains it


def _slot_free(name: str, key: bytes) -> bytes:
    """A map key with its slot bit cleared, so two slots' entries compare."""
    from ciliumctl.datapath import maps

    fmt = {"ipcache": (maps.IPCACHE_KEY, 1), "policy": (maps.POLICY_KEY, 1), "epcfg": (maps.EPCFG_KEY, 0)}
    if name not in fmt:
        return key
    st, i = fmt[name]
    fields = list(st.unpack(key))
    fields[i] = 0
    return st.pack(*fields)


def _active_maps(dp) -> dict:
    from ciliumctl.datapath import readback

    active = readback.state_of(dp.maps)[0]
    return {name: {_slot_free(name, k): v for k, v in entries.items()}
            for name, entries in readback.slot_entries(dp.maps, active).items() if name != "lb_services"}


def test_a_new_label_set_goes_in_place_and_a_reconcile_writes_the_same_maps(node, tmp_path, monkeypatch):
    """An address whose label set the revision lacks (two selectors match its name, a rule CIDR contains it) is
    programmed without a reconcile: its identity's policy entries and its ipcache entry into the active revision
    (Cilium's incremental policy update), so the connection right after the answer is allowed; a full reconcile
    afterwards writes exactly those maps."""
    from support.netns import in_netns

    from ciliumctl.base import netns as node_netns
    from ciliumctl.node import reconcile, settings, verify
    from ciliumctl.node.dns_proxy.policy import NodeDNSPolicy
    from ciliumctl.node.dns_proxy.server import Answer
    from ciliumctl.node.dns_proxy.service import program_new_identities

    ns = external(node, "ext")
    sh("ip", "-n", ns, "addr", "add", f"{MULTI}/32", "dev", "eth0")
    sh("ip", "-n", node.name, "route", "add", f"{MULTI}/32", "via", DNS)
    http_server(node, ns)
    node.cli("install", "--no-agent")
    client = node.add_pod("client", "client")
    node.cli("policy", "apply", "-f", str(write(tmp_path / "p.yaml", NEW_SET_POLICY)))
    # the rule CIDR allows port 22 only: port 80 needs the name
    assert not node.connect("client", MULTI, 80, timeout=0.5)
    for k, v in node.env.items():
        if k.startswith("CILIUMCTL_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(node_netns, "_entered", None)     # this thread enters the node's namespace (below) only
    monkeypatch.setattr(reconcile, "_proxy_route", False)
    reconciles = []
    with in_netns(node.name):
        pol = NodeDNSPolicy(lambda: reconciles.append(reconcile.reconcile()), settings.locked)
        dp = reconcile.open_datapath()
        pol.datapath, pol.new_identities = (lambda: dp), program_new_identities
        try:
            q = SimpleNamespace(client=(client, 40000), server=(DNS, 53), proto="udp", qname="multi.example.test.")
            pol.learn(q, Answer("NOERROR", [(MULTI, 300)], [], b"", True))
            assert reconciles == []                       # in place
            assert node.connect("client", MULTI, 80)
            ident = {i: ls for i, ls in reconcile.allocator().known().items()
                     if ls == {"fqdn:*.example.test", "fqdn:multi.example.test", "cidr:10.97.64.0/18",
                               "reserved:world"}}
            assert len(ident) == 1
            new_id = next(iter(ident))
            maps = _active_maps(dp)
            cookies = json.loads((node.state / "datapath" / "cookies.json").read_text())["cookies"]
            # its ipcache entry, and its policy entries: egress TCP 80 (*.example.test), 443 (multi...), 22 (CIDR)
            from ciliumctl.datapath import maps as bpfmaps

            key = bpfmaps.IPCACHE_KEY.pack(bpfmaps.IPCACHE_BASE_BITS + 32, 0, bytes([10, 97, 64, 9]))
            assert bpfmaps.IPCACHE_VAL.unpack(maps["ipcache"][key])[0] == new_id
            ports = sorted(int.from_bytes(k[-2:], "big") for k in maps["policy"]
                           if bpfmaps.POLICY_KEY.unpack(k)[4] == new_id)
            assert ports == [22, 80, 443]
            # the node's own check finds the kernel as the stored state says, cookie table included; the cache is
            # not saved yet: its journal has the address (what `status --verify` and a reconcile read)
            assert not (node.state / "fqdn-cache.json").exists()
            with settings.locked():
                assert verify.check(dp).differences == []
            # the same maps from a full reconcile (the other slot)
            with settings.locked():
                reconcile.reconcile()
            assert _active_maps(dp) == maps
            assert json.loads((node.state / "datapath" / "cookies.json").read_text())["cookies"] == cookies
        finally:
            dp.close()
