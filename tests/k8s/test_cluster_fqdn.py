"""DNS-aware policy on the real two-node cluster (issue 15), as an admin does it: the agent DaemonSet installed by
`ciliumctl install --kubeconfig --wait`, a DNS server pod (Debian's dnsmasq, serving the test's own names) on node2,
a client pod on node1 whose CiliumNetworkPolicy, applied with kubectl, allows DNS to that pod for `api*.fqdn.test`
(rules.dns) and TCP 8080 to `api.fqdn.test` (toFQDNs). The name's address is a server outside the cluster (a
namespace of this test on the nodes' wire, as an external API is: toFQDNs selects CIDR identities, "world").
node1's agent runs the DNS proxy: the allowed name resolves and the connection to its address succeeds, another
name is REFUSED by the proxy (the server never sees it), a not-learned address of the same server is dropped, and
the lookups are L7 DNS flows in `ciliumctl observe` in the agent pod and in the real hubble; a short TTL expires; a
name two selectors match is learned through the cluster sync; with no agent on the node DNS gets no answer (fail
closed), and the next agent restores the learned name.

The steps share one cluster and run in order."""

from __future__ import annotations

import json
import subprocess

import pytest
from support.shell import sh, stop, wait_until

from k8s.cluster import NODE_NET
from k8s.workloads import NS, agent_installed, agent_pod, apply, connects, kubectl_json, pod

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]

# the external server's addresses: on the nodes' wire, outside the pod CIDRs (world to the agents)
API = str(NODE_NET.network_address + 240)       # api.fqdn.test
OTHER = str(NODE_NET.network_address + 241)     # denied.fqdn.test: same server, never learned
BRIEF = str(NODE_NET.network_address + 242)     # api-brief.fqdn.test, with a short TTL
MULTI = str(NODE_NET.network_address + 243)     # api-multi.fqdn.test: two toFQDNs selectors match it
TTL = 600     # outlives the agent restart below: what it checks is the persisted name, not its expiry
BRIEF_TTL = 5
# name -> dnsmasq's host record: address[,TTL]
ZONE = {"api.fqdn.test": API, "denied.fqdn.test": OTHER, "api-brief.fqdn.test": f"{BRIEF},{BRIEF_TTL}",
        "api-multi.fqdn.test": MULTI}
# the scope of a node's own identities, CIDR ones included: Cilium's IdentityScopeLocal
# (pkg/identity/numericidentity.go)
LOCAL_IDENTITY_FLAG = 1 << 24

# dnsmasq authoritative for fqdn.test only (no upstream, no /etc/hosts, no resolv.conf), logging each query it gets
DNS_SERVER = pod("fqdn-dns", "node2", [
    "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
    "--pid-file=", "--user=root", "--group=root", "--port=53", f"--local-ttl={TTL}", "--local=/fqdn.test/",
    "--log-facility=-", "--log-queries", *(f"--host-record={name},{record}" for name, record in ZONE.items())])
CLIENT = pod("fqdn-client", "node1", ["sleep", "infinity"])

POLICY = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "fqdn-client"},
    "spec": {"endpointSelector": {"matchLabels": {"app": "fqdn-client"}},
             "egress": [{"toEndpoints": [{"matchLabels": {"app": "fqdn-dns"}}],
                         "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                                      "rules": {"dns": [{"matchPattern": "api*.fqdn.test"}]}}]},
                        {"toFQDNs": [{"matchName": "api.fqdn.test"}, {"matchName": "api-brief.fqdn.test"},
                                     {"matchName": "api-multi.fqdn.test"}],
                         "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]},
                        {"toFQDNs": [{"matchPattern": "api-m*.fqdn.test"}],
                         "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]},
}

# an A query over UDP or TCP with the standard library only (the test image has no DNS client): "RCODE ip...";
# with a port, then a TCP connection to the first address at once (a second line: connected or failed)
LOOKUP = r"""
import random, socket, struct, sys
name, server, proto = sys.argv[1:4]
q = struct.pack('!HHHHHH', random.getrandbits(16), 0x0100, 1, 0, 0, 0)
q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0' + struct.pack('!HH', 1, 1)
try:
    if proto == 'tcp':
        s = socket.create_connection((server, 53), timeout=3)
        s.sendall(struct.pack('!H', len(q)) + q)
        r = b''
        while len(r) < 2 or len(r) < 2 + struct.unpack('!H', r[:2])[0]:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError('closed')
            r += chunk
        r = r[2:]
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        r = s.recv(4096)
except OSError as e:
    print('ERROR', type(e).__name__)
    sys.exit()
ips, i = [], len(q)                   # the answers follow the question, echoed as asked
for _ in range(struct.unpack('!H', r[6:8])[0]):
    while r[i] and r[i] < 0xC0:
        i += r[i] + 1
    i += 2 if r[i] >= 0xC0 else 1
    rtype, _, _, size = struct.unpack('!HHIH', r[i:i + 10])
    if rtype == 1:
        ips.append(socket.inet_ntoa(r[i + 10:i + 14]))
    i += 10 + size
print({0: 'NOERROR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 5: 'REFUSED'}.get(r[3] & 15, r[3] & 15), *ips)
if len(sys.argv) > 4 and ips:
    try:
        socket.create_connection((ips[0], int(sys.argv[4])), timeout=2).close()
        print('connected')
    except OSError as e:
        print('failed', e)
"""


def lookup(k8s, server: str, name: str, proto: str = "udp") -> tuple[str, list[str]]:
    """The client pod asks `server` for `name`'s A records: (rcode or "ERROR", addresses)."""
    out = k8s.kubectl("exec", "fqdn-client", "--", "python3", "-c", LOOKUP, name, server, proto,
                      timeout=30).stdout.split()
    return out[0], out[1:]


def lookup_and_connect(k8s, server: str, name: str, port: int = 8080) -> tuple[str, list[str], bool]:
    """lookup(), then a connection to the first address on `port` right after the answer (within a short TTL)."""
    lines = k8s.kubectl("exec", "fqdn-client", "--", "python3", "-c", LOOKUP, name, server, "udp", str(port),
                        timeout=30).stdout.splitlines()
    answer = lines[0].split()
    return answer[0], answer[1:], len(lines) > 1 and lines[1] == "connected"


def queries_seen(k8s, name: str) -> int:
    """How many A queries for `name` the DNS server itself received (its --log-queries lines)."""
    return k8s.kubectl("logs", "fqdn-dns").stdout.count(f"query[A] {name} ")


@pytest.fixture(scope="module")
def installed(k8s, cli_env_k8s):
    with agent_installed(k8s, cli_env_k8s):
        try:
            yield
        finally:
            k8s.kubectl("delete", "cnp", "fqdn-client", "--ignore-not-found", check=False)
            k8s.kubectl("delete", "pod", "fqdn-dns", "fqdn-client", "--ignore-not-found", "--wait=true",
                        check=False, timeout=120)


@pytest.fixture(scope="module")
def external(k8s):
    """A server outside the cluster: a namespace of this test on the nodes' wire holding its addresses, an HTTP
    server on port 8080 of each, routes back to the pod CIDRs through their nodes; removed afterwards."""
    name, veth = f"{k8s.prefix}-fqdnext", f"{k8s.prefix}f"
    server = None
    try:
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", veth, "netns", name, "type", "veth", "peer", "name", f"{veth}p", "netns", k8s.net_ns)
        sh("ip", "-n", k8s.net_ns, "link", "set", f"{veth}p", "master", "br0", "up")
        sh("ip", "-n", name, "link", "set", veth, "name", "eth0")
        for ip in (API, OTHER, BRIEF, MULTI):
            sh("ip", "-n", name, "addr", "add", f"{ip}/{NODE_NET.prefixlen}", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        for node in k8s.nodes:
            sh("ip", "-n", name, "route", "add", k8s.pod_cidrs[node.name], "via", node.ip)
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-m", "http.server", "8080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: ":8080 " in sh("ip", "netns", "exec", name, "ss", "-tlnH").stdout, 10)
        yield name
    finally:
        stop(server)
        sh("ip", "netns", "delete", name, check=False)


@pytest.fixture(scope="module")
def dns_ip(k8s, installed, external) -> str:
    apply(k8s, DNS_SERVER, CLIENT)
    k8s.kubectl("wait", "--for", "condition=Ready", "pod/fqdn-dns", "pod/fqdn-client", "--timeout", "120s")
    return kubectl_json(k8s, "get", "pod", "fqdn-dns")["status"]["podIP"]


def test_without_a_policy_the_server_answers_every_name_and_both_addresses_connect(k8s, dns_ip):
    assert wait_until(lambda: lookup(k8s, dns_ip, "denied.fqdn.test") == ("NOERROR", [OTHER]), 30, 0.5), \
        lookup(k8s, dns_ip, "denied.fqdn.test")
    assert lookup(k8s, dns_ip, "api.fqdn.test", "tcp") == ("NOERROR", [API])
    assert connects(k8s, "fqdn-client", API) and connects(k8s, "fqdn-client", OTHER)


def test_dns_policy_applied_with_kubectl_allows_the_name_and_only_its_learned_address(k8s, dns_ip):
    k8s.kubectl("apply", "-f", "-", input=json.dumps(POLICY))
    # in force once the proxy answers: denied.fqdn.test is REFUSED by it (the server answers it), and from then
    # on the server never sees the query
    assert wait_until(lambda: lookup(k8s, dns_ip, "denied.fqdn.test")[0] == "REFUSED", 60, 0.5), \
        lookup(k8s, dns_ip, "denied.fqdn.test")
    seen = queries_seen(k8s, "denied.fqdn.test")
    assert lookup(k8s, dns_ip, "denied.fqdn.test")[0] == "REFUSED"
    assert queries_seen(k8s, "api.fqdn.test") and queries_seen(k8s, "denied.fqdn.test") == seen
    # nothing learned yet: the name's address is not reachable
    assert not connects(k8s, "fqdn-client", API)
    # the allowed name resolves through the proxy (UDP and TCP), and then its address connects, only it
    assert lookup(k8s, dns_ip, "api.fqdn.test") == ("NOERROR", [API])
    assert connects(k8s, "fqdn-client", API)
    assert not connects(k8s, "fqdn-client", OTHER)
    assert lookup(k8s, dns_ip, "api.fqdn.test", "tcp") == ("NOERROR", [API])
    assert lookup(k8s, dns_ip, "denied.fqdn.test", "tcp")[0] == "REFUSED"
    assert not connects(k8s, "fqdn-client", OTHER)
    # the client's node learned it, as cilium-dbg fqdn cache list shows it
    cache = json.loads(k8s.kubectl("exec", "-n", NS, agent_pod(k8s, "node1"), "-c", "agent", "--", "ciliumctl",
                                   "fqdn", "cache", "list", "-o", "json", timeout=60).stdout)
    assert ("api.fqdn.test.", API) in {(r["fqdn"], r["ip"]) for r in cache}, cache
    assert OTHER not in {r["ip"] for r in cache}


def test_the_lookups_are_dns_flows_in_observe_and_in_the_real_hubble(k8s, dns_ip, hubble):
    agent = agent_pod(k8s, "node1")      # the client's node: its agent's proxy answered

    def l7() -> list[dict]:
        out = k8s.kubectl("exec", "-n", NS, agent, "-c", "agent", "--", "ciliumctl", "observe", "--last", "500",
                          "-t", "l7", "-o", "json", timeout=60, check=False).stdout
        return [f for f in (json.loads(x)["flow"] for x in out.splitlines() if x.strip()) if "dns" in f["l7"]]

    def of(flows: list[dict], query: str, kind: str) -> list[dict]:
        return [f for f in flows if f["l7"]["dns"].get("query") == query and f["l7"]["type"] == kind]

    assert wait_until(lambda: of(l7(), "api.fqdn.test.", "RESPONSE") and of(l7(), "denied.fqdn.test.", "REQUEST"),
                      30, 0.5), l7()[-4:]
    flows = l7()
    answer = of(flows, "api.fqdn.test.", "RESPONSE")[0]
    assert answer["verdict"] == "FORWARDED" and answer["l7"]["dns"]["ips"] == [API], answer
    assert answer["l7"]["dns"]["ttl"] == TTL and answer["l7"]["dns"]["observation_source"] == "proxy", answer
    # the answer goes from the server pod to the client: the server's identity is the one node2's agent
    # published (its CiliumEndpoint), known here by the ipcache
    assert answer["destination"].get("pod_name") == "fqdn-client" and answer["IP"]["source"] == dns_ip, answer
    assert answer["source"]["identity"] == kubectl_json(k8s, "get", "ciliumendpoint", "fqdn-dns")["status"][
        "identity"]["id"]
    assert {f["verdict"] for f in of(flows, "denied.fqdn.test.", "REQUEST")} == {"DROPPED"}
    assert not of(flows, "denied.fqdn.test.", "RESPONSE")

    # the connection to the learned address: its flow carries the name (observe --fqdn finds it), and the
    # address's identity is a CIDR identity of the node (local scope), as toFQDNs selects in Cilium
    def to_api() -> list[dict]:
        out = k8s.kubectl("exec", "-n", NS, agent, "-c", "agent", "--", "ciliumctl", "observe", "--last", "500",
                          "--fqdn", "api.fqdn.test", "-o", "json", timeout=60, check=False).stdout
        return [f for f in (json.loads(x)["flow"] for x in out.splitlines() if x.strip())
                if f.get("IP", {}).get("destination") == API and f["verdict"] == "FORWARDED"]

    assert wait_until(lambda: connects(k8s, "fqdn-client", API) and to_api(), 30, 0.5), to_api()
    flow = to_api()[0]
    assert flow["destination_names"] == ["api.fqdn.test"], flow
    assert flow["destination"]["identity"] & LOCAL_IDENTITY_FLAG, flow

    sock = k8s.nodes[0].dir / "host/run/ciliumctl/hubble.sock"
    real = sh(str(hubble), "observe", "--server", f"unix://{sock}", "--last", "500", "-t", "l7",
              timeout=30).stdout
    assert "dns-request proxy FORWARDED (DNS Query api.fqdn.test. A)" in real, real[-3000:]
    assert f'dns-response proxy FORWARDED (DNS Answer "{API}" TTL: {TTL} (Proxy api.fqdn.test. A))' in real, \
        real[-3000:]
    assert "dns-request proxy DROPPED (DNS Query denied.fqdn.test. A)" in real, real[-3000:]


def test_a_short_ttl_expires_and_takes_the_address_away(k8s, dns_ip):
    """The agent's expiry reconciles the learned address away once its TTL ran out (no --tofqdns-min-ttl, no
    grace: the DaemonSet's defaults); the long-lived name stays."""
    assert not connects(k8s, "fqdn-client", BRIEF)
    assert lookup_and_connect(k8s, dns_ip, "api-brief.fqdn.test") == ("NOERROR", [BRIEF], True)
    agent = agent_pod(k8s, "node1")

    def cached() -> set[str]:
        out = k8s.kubectl("exec", "-n", NS, agent, "-c", "agent", "--", "ciliumctl", "fqdn", "cache", "list", "-o",
                          "json", timeout=60).stdout
        return {r["ip"] for r in json.loads(out)}

    assert wait_until(lambda: BRIEF not in cached(), 60, 1), cached()
    assert wait_until(lambda: not connects(k8s, "fqdn-client", BRIEF), 30, 0.5), "the expired address still connects"
    assert API in cached() and connects(k8s, "fqdn-client", API)


def test_a_name_two_selectors_match_gets_a_new_identity_before_its_answer(k8s, dns_ip):
    """Its label set (both selectors) has no identity programmed ahead, as a lone selector's has: in cluster mode
    the cluster sync's reconcile gives it one, with its policy entries, before the proxy releases the answer."""
    assert not connects(k8s, "fqdn-client", MULTI)
    assert lookup_and_connect(k8s, dns_ip, "api-multi.fqdn.test") == ("NOERROR", [MULTI], True)
    assert not connects(k8s, "fqdn-client", OTHER)


def agents_on(k8s, node: str) -> list[str]:
    """The agent pods on `node`, terminating ones included (their proxy may still answer)."""
    pods = kubectl_json(k8s, "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=ciliumctl-agent")["items"]
    return [p["metadata"]["name"] for p in pods if p["spec"].get("nodeName") == node]


def keep_agent_off(k8s, node: str | None) -> None:
    """The DaemonSet's pods kept off `node` (an affinity to the other nodes only); None: everywhere again."""
    others = [n.name for n in k8s.nodes if n.name != node]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": others}]}]}}} if node else None
    k8s.kubectl("patch", "daemonset", "-n", NS, "ciliumctl-agent", "-p",
                json.dumps({"spec": {"template": {"spec": {"affinity": affinity}}}}))


def test_with_no_agent_dns_gets_no_answer_and_the_next_agent_restores_the_learned_name(k8s, dns_ip):
    """Fail closed: while node1 runs no agent, its client's DNS, still redirected to the proxy's port, gets no
    answer from anywhere (the server never sees it); the pinned datapath keeps enforcing, the learned address
    included. The DNS cache is node state (hostPath): the next agent pod programs the learned address again in
    its first sync, so the connection keeps working without a new lookup."""
    settings = k8s.nodes[0].dir / "host/var/lib/ciliumctl/node.json"
    keep_agent_off(k8s, "node1")
    try:
        assert wait_until(lambda: not agents_on(k8s, "node1"), 120, 0.5), agents_on(k8s, "node1")
        seen = queries_seen(k8s, "api.fqdn.test")
        assert lookup(k8s, dns_ip, "api.fqdn.test") == ("ERROR", ["TimeoutError"])
        assert lookup(k8s, dns_ip, "api.fqdn.test", "tcp")[0] == "ERROR"
        assert queries_seen(k8s, "api.fqdn.test") == seen
        assert connects(k8s, "fqdn-client", API)
        assert not connects(k8s, "fqdn-client", OTHER)
        revision = json.loads(settings.read_text())["revision"]
    finally:
        keep_agent_off(k8s, None)
    # the new agent's first sync programs a new revision from the cluster and the cache it finds
    assert wait_until(lambda: json.loads(settings.read_text())["revision"] > revision, 180, 0.5), \
        "the new agent did not reconcile"
    assert connects(k8s, "fqdn-client", API)
    assert not connects(k8s, "fqdn-client", OTHER)
    # and its proxy answers as the old one did
    assert lookup(k8s, dns_ip, "denied.fqdn.test")[0] == "REFUSED"
    assert lookup(k8s, dns_ip, "api.fqdn.test") == ("NOERROR", [API])
