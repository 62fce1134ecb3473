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


# ---- `fqdn cache clean` in another process than the agent, which keeps the cache in memory and saves it within a
# second: the clean must hold whatever the agent learned before it, saved or not

FQDN_POLICY = """
endpointSelector: {matchLabels: {app: client}}
egress:
- toCIDR: [10.96.0.53/32]
  toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*.example.test"}]}}]
- toFQDNs: [{matchPattern: "*.example.test"}]
  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""


class _InPlace:
    """The datapath's in-place ipcache write (Datapath.add_ipcache), recorded."""

    def __init__(self):
        self.written: dict[str, int] = {}

    def add_ipcache(self, entries, revision):
        self.written.update(entries)
        return True


def _agent(tmp_path, monkeypatch):
    """The agent's NodeDNSPolicy over a revision whose toFQDNs selector is programmed (learning goes in place)."""
    from ciliumctl.node.dns_proxy.server import Answer

    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path))
    client = Endpoint(1, "client", "default", {"app": "client"}, ipv4="10.200.0.1")
    pol = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "p", "namespace": "default"}, "spec": yaml.safe_load(FQDN_POLICY)}
    state = resolve([client], [pol], "default", MemoryAllocator(), revision=7)
    dns_policy.save(state, {1: "10.200.0.1"})
    reconciles = []
    agent = dns_policy.NodeDNSPolicy(lambda: reconciles.append(1), _nolock)
    dp = _InPlace()
    agent.datapath = lambda: dp

    def learn(name, ip):
        agent.learn(_query("10.200.0.1", "10.96.0.53", name), Answer("NOERROR", [(ip, 300)], [], b"", True))
    return agent, learn, dp, reconciles


def _nolock():
    import contextlib

    return contextlib.nullcontext()


def _on_disk(tmp_path) -> dict[str, set[str]]:
    return FQDNCache(tmp_path / "fqdn-cache.json").load().live_ips()


def test_a_clean_is_not_undone_by_the_agents_next_save(tmp_path, monkeypatch):
    agent, learn, dp, reconciles = _agent(tmp_path, monkeypatch)
    learn("api.example.test.", "10.96.1.5")
    agent.flush()                                      # saved
    learn("api2.example.test.", "10.96.1.7")           # written in place, not saved yet
    assert set(dp.written) == {"10.96.1.5/32", "10.96.1.7/32"}
    assert not reconciles
    # `fqdn cache clean` (cache_ops.clean's part on the file) in another process, within that second
    other = FQDNCache(tmp_path / "fqdn-cache.json")
    with other.locked():
        other.load()
        other.clean("api*.example.test")
        other.save()
    agent.flush()                                      # the agent's next save
    assert _on_disk(tmp_path) == {}                    # neither the saved address nor the unsaved one came back
    assert agent.expire() == 0 and _on_disk(tmp_path) == {}


def test_what_the_agent_learned_besides_a_clean_stays(tmp_path, monkeypatch):
    agent, learn, dp, _ = _agent(tmp_path, monkeypatch)
    learn("api.example.test.", "10.96.1.5")
    learn("web.example.test.", "10.96.1.6")            # neither saved
    other = FQDNCache(tmp_path / "fqdn-cache.json")
    with other.locked():
        other.load()
        other.clean("api.example.test")
        other.save()
    learn("api3.example.test.", "10.96.1.8")           # after the clean: it holds
    assert agent.expire() == 0                         # the agent's expiry round: merges, then saves
    assert _on_disk(tmp_path) == {"10.96.1.6": {"web.example.test."}, "10.96.1.8": {"api3.example.test."}}
    # looked up again after the clean: learned again
    learn("api.example.test.", "10.96.1.5")
    agent.flush()
    assert "10.96.1.5" in _on_disk(tmp_path)


def test_clean_records_age_out_and_what_they_could_cover_is_dropped(tmp_path):
    c = FQDNCache(tmp_path / "c.json")
    c.clean(now=1000.0)
    c.save(now=1000.0 + 10)
    assert [x.time for x in FQDNCache(tmp_path / "c.json").load().cleaned] == [1000.0]
    c.save(now=1000.0 + 601)
    back = FQDNCache(tmp_path / "c.json").load()
    assert back.cleaned == [] and back.pruned_before == 1000.0
    # an entry held unsaved from before the oldest record kept: dropped at the merge (learned again at a lookup)
    mine = FQDNCache(tmp_path / "c.json")
    mine.add(1, ["old.example.test."], [("10.0.0.1", 3600)], now=999.0)
    mine.add(1, ["new.example.test."], [("10.0.0.2", 3600)], now=1001.0)
    assert set(mine.merge_file().live_ips(1002.0)) == {"10.0.0.2"}


# ---- the journal: what the agent programs before its next save, for a reconcile in the meantime (any process)

def test_an_address_written_in_place_is_what_a_reconcile_reads_before_the_agent_saves(tmp_path, monkeypatch):
    from ciliumctl.node.dns_proxy.cache import learned_ips

    agent, learn, dp, _ = _agent(tmp_path, monkeypatch)
    learn("api.example.test.", "10.96.1.5")            # in place, not saved
    assert set(dp.written) == {"10.96.1.5/32"}
    assert not (tmp_path / "fqdn-cache.json").exists()
    assert learned_ips() == {"10.96.1.5": {"api.example.test."}}    # reconcile's input, in another process too
    agent.flush()                                      # the save folds the journal in
    assert not (tmp_path / "fqdn-cache.json.journal").exists()
    assert learned_ips() == {"10.96.1.5": {"api.example.test."}}


def test_a_journal_line_a_clean_covers_stays_gone(tmp_path, monkeypatch):
    agent, learn, _, _ = _agent(tmp_path, monkeypatch)
    learn("api.example.test.", "10.96.1.5")
    other = FQDNCache(tmp_path / "fqdn-cache.json")
    with other.locked():
        other.load()
        assert set(other.live_ips()) == {"10.96.1.5"}
        other.clean("api.example.test")
        other.save()
    assert _on_disk(tmp_path) == {} and not (tmp_path / "fqdn-cache.json.journal").exists()
    # a journal left by a crash between the save and its removal: the recorded clean still covers its old lines;
    # a line after the clean holds, a torn one is skipped
    journal = FQDNCache(tmp_path / "fqdn-cache.json")
    journal.add(1, ["api.example.test."], [("10.96.1.5", 300)], now=1.0)
    journal.add(1, ["api3.example.test."], [("10.96.1.8", 300)])
    with journal.locked():
        journal.append(list(journal.entries.values()))
    with (tmp_path / "fqdn-cache.json.journal").open("a") as fh:
        fh.write('{"endpoint": 1, "name": "torn')
    assert _on_disk(tmp_path) == {"10.96.1.8": {"api3.example.test."}}
