"""The node's DNS cache (TTL, min TTL, grace, persistence) and the DNS proxy's view of a revision
(node/dns_proxy/policy.py: which queries an endpoint may ask, by the server's identity as the ipcache gives it)."""

from types import SimpleNamespace

import yaml

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import MemoryAllocator
from ciliumctl.node.dns_proxy import policy as dns_policy
from ciliumctl.node.dns_proxy.cache import FQDNCache
from ciliumctl.policy.resolve import resolve


def test_ttl_min_ttl_and_grace(tmp_path):
    c = FQDNCache(tmp_path / "c.json", min_ttl=10, grace=5)
    assert c.add(1, ["api.example.test."], [("10.0.0.5", 2)], now=100.0) is True
    assert c.add(1, ["api.example.test."], [("10.0.0.5", 2)], now=101.0) is False     # nothing new to select
    e = c.entries[(1, "api.example.test.", "10.0.0.5")]
    assert (e.ttl, e.expires, e.until) == (2, 111.0, 116.0)                           # max(ttl, min_ttl), + grace
    assert c.live_ips(115.0) == {"10.0.0.5": {"api.example.test."}}
    assert c.expire(115.9) == [] and len(c.expire(116.0)) == 1 and c.live_ips(116.0) == {}


def test_persisted_and_restored(tmp_path):
    c = FQDNCache(tmp_path / "c.json")
    c.add(3, ["a.example.test.", "cname.example.test."], [("10.0.0.7", 30)], now=1000.0)
    c.save()
    back = FQDNCache(tmp_path / "c.json").load()
    assert back.live_ips(1001.0) == {"10.0.0.7": {"a.example.test.", "cname.example.test."}}
    assert len(back.clean("*.example.test")) == 2 and back.entries == {}


def _query(client, server, name, proto="udp"):
    return SimpleNamespace(client=(client, 40000), server=(server, 53), proto=proto, qname=name)


def test_the_proxy_decides_as_the_revision_says(tmp_path, monkeypatch):
    monkeypatch.setattr(dns_policy, "policy_path", lambda: tmp_path / "dns-policy.json")
    client = Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")
    server = Endpoint(2, "dns", "default", {"app": "dns"}, ipv4="10.200.0.2")
    other = Endpoint(3, "other", "default", {"app": "other"}, ipv4="10.200.0.3")
    pol = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "p", "namespace": "default"}, "spec": yaml.safe_load("""
endpointSelector: {matchLabels: {app: client}}
egress:
- toEndpoints: [{matchLabels: {app: dns}}]
  toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*.example.test"}]}}]
""")}
    state = resolve([client, server, other], [pol], "default", MemoryAllocator())
    dns_policy.save(state, {1: "10.200.0.1", 2: "10.200.0.2", 3: "10.200.0.3"})
    p = dns_policy.NodeDNSPolicy(lambda: None, None, path=tmp_path / "dns-policy.json")
    assert p.allowed(_query("10.200.0.1", "10.200.0.2", "api.example.test."))
    assert not p.allowed(_query("10.200.0.1", "10.200.0.2", "api.other.test."))          # name
    assert not p.allowed(_query("10.200.0.1", "10.200.0.3", "api.example.test."))        # another server
    assert not p.allowed(_query("10.200.0.1", "10.200.0.2", "api.example.test.", "tcp"))  # UDP only
    assert not p.allowed(_query("10.200.0.3", "10.200.0.2", "api.example.test."))        # no DNS rules: refused
