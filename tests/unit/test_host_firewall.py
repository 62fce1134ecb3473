"""The host firewall's pure parts (issue 13): the gaps a nodeSelector policy has with and without it, the host
endpoint resolved from the seed's policy, its map entries, the settings' parsing, and `policy trace` with
--src-entity/--dst-entity."""

import pytest
from support.cli import cli_env, run_cli
from support.hostfw import FROM_DB_NODES, SEED

from ciliumctl.base.errors import UsageError
from ciliumctl.datapath import maps
from ciliumctl.datapath.mapstate import compile_state
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import HOST, REMOTE_NODE, MemoryAllocator
from ciliumctl.node.hostfw import host as hostfw
from ciliumctl.node.settings import Settings
from ciliumctl.policy import model
from ciliumctl.policy.enforcement_gaps import HostFirewall, find_gaps
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID, resolve
from ciliumctl.policy.resolved import PROTO_TCP, PortRange


def _seed() -> model.Policy:
    import yaml

    return model.parse_policy(yaml.safe_load(SEED))


def test_a_node_selector_is_a_gap_only_without_the_host_firewall():
    off = {g.kind for g in find_gaps(_seed())}
    assert "host-policy" in off
    on = find_gaps(_seed(), HostFirewall(remote_nodes=True))
    assert not on                                   # metrics-server on 10250, remote-node on 22: all enforced
    without_remote = find_gaps(_seed(), HostFirewall(remote_nodes=False))
    assert [(g.kind, g.what) for g in without_remote] == [("entity", "the entity remote-node")]
    cluster = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                                  "metadata": {"name": "c"}, "spec": {"nodeSelector": {},
                                                                      "ingress": [{"fromEntities": ["cluster"]}]}})
    [gap] = find_gaps(cluster, HostFirewall(remote_nodes=True))
    assert "kube-apiserver" in gap.instead and "host" not in gap.instead.split("of ")[1].split(" arrives")[0]


def test_the_seed_resolves_into_the_host_endpoint():
    metrics = Endpoint(1, "metrics", "kube-system", {"k8s-app": "metrics-server"}, ipv4="10.200.0.1")
    state = resolve([metrics], [_seed()], "default", MemoryAllocator(),
                    node_labels={"node-role.kubernetes.io/worker": ""}, host_ips=["192.168.81.1"],
                    host=HostFirewall(remote_nodes=True))
    host = state.endpoints[HOST_ENDPOINT_ID]
    assert host.identity == HOST and host.ingress.enforced and not host.egress.enforced
    by_port = {(e.identity, e.ports) for e in host.ingress.entries}
    assert (REMOTE_NODE, PortRange(PROTO_TCP, 22, 22)) in by_port
    assert (state.endpoints[1].identity, PortRange(PROTO_TCP, 10250, 10250)) in by_port
    assert state.ipcache["192.168.81.1/32"] == HOST
    # a node whose labels the selector does not match has a host endpoint without policy
    other = resolve([], [_seed()], "default", MemoryAllocator(), node_labels={"role": "db"})
    assert not other.endpoints[HOST_ENDPOINT_ID].ingress.enforced


def test_host_audit_and_remote_nodes_reach_the_maps():
    s = Settings(host_firewall=True, host_firewall_audit=True, node_labels="node-role.kubernetes.io/worker=",
                 remote_nodes="192.168.82.0/24")
    state = resolve([], [_seed()], "default", MemoryAllocator(),
                    node_labels=hostfw.parse_node_labels(s.node_labels), host=hostfw.gap_context(s),
                    remote_nodes=hostfw.parse_remote_nodes(s.remote_nodes))
    hostfw.finish_state(state, s)
    assert state.ipcache["192.168.82.0/24"] == REMOTE_NODE
    epcfg = compile_state(state, 0).epcfg
    ident, flags = maps.EPCFG_VAL.unpack(epcfg[maps.EPCFG_KEY.pack(0, HOST_ENDPOINT_ID)])
    assert ident == HOST and flags == maps.EP_F_ENFORCE_INGRESS | maps.EP_F_AUDIT
    hostfw.finish_state(state, Settings())            # off: nothing added
    assert hostfw.resolve_kwargs(Settings()) == {}


@pytest.mark.parametrize("flag,value", [("--node-labels", "role"), ("--node-labels", "=x"),
                                        ("--remote-nodes", "not-an-ip"), ("--remote-nodes", "fd00::1")])
def test_bad_settings_are_one_line(flag, value):
    parse = hostfw.parse_node_labels if flag == "--node-labels" else hostfw.parse_remote_nodes
    with pytest.raises(UsageError) as err:
        parse(value)
    assert flag in str(err.value) and "\n" not in str(err.value)


def test_policy_trace_entities(tmp_path):
    f = tmp_path / "seed.yaml"
    f.write_text(SEED)
    env = cli_env(CILIUMCTL_STATE_DIR=str(tmp_path / "state"))
    common = ("policy", "trace", "-f", str(f), "--node-labels", "node-role.kubernetes.io/worker=", "--dst-entity",
              "host", "--dport")
    res = run_cli(*common, "22/tcp", "--src-entity", "remote-node", env=env)
    assert res.returncode == 0 and "reserved:remote-node, identity 6" in res.stdout
    assert run_cli(*common, "10250/tcp", "--src-entity", "remote-node", env=env).returncode == 1
    assert run_cli(*common, "22/tcp", "--src-entity", "world", env=env).returncode == 1
    bad = run_cli(*common, "22/tcp", "--src-entity", "moon", env=env)
    assert bad.returncode == 2 and "moon" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# /proc/net/tcp as the kernel writes it: 192.168.81.1:22 listening, one connection in on 22 from 192.168.81.2, one
# out from the node to 192.168.82.2:6443, one on loopback
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0151A8C0:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1
   1: 0151A8C0:0016 0251A8C0:9C40 01 00000000:00000000 00:00000000 00000000     0        0 102 1
   2: 0151A8C0:A000 0252A8C0:192B 01 00000000:00000000 00:00000000 00000000     0        0 103 1
   3: 0100007F:1F90 0100007F:A001 01 00000000:00000000 00:00000000 00000000     0        0 104 1
"""


def test_the_lockout_guard_judges_live_connections_by_the_new_host_policy():
    from ciliumctl.node.hostfw import lockout

    conns = lockout.live_connections(PROC_NET_TCP)
    assert [(c.remote, c.rport, c.lport, c.inbound) for c in conns] == [
        ("192.168.81.2", 40000, 22, True), ("192.168.82.2", 6443, 40960, False), ("127.0.0.1", 40961, 8080, False)]
    s = Settings(host_firewall=True, node_labels="node-role.kubernetes.io/worker=", remote_nodes="192.168.82.0/24")
    state = resolve([], [_seed()], "default", MemoryAllocator(), node_labels=hostfw.parse_node_labels(s.node_labels),
                    host_ips=["192.168.81.1"], host=hostfw.gap_context(s))
    hostfw.finish_state(state, s)
    # the world's connection to 22 is cut (only remote-node may); egress is not enforced by the seed
    assert lockout.would_cut(state, conns) == ["192.168.81.2:40000 -> 192.168.81.1:22/tcp (from world)"]
    state.endpoints[HOST_ENDPOINT_ID].audit = True              # audit: nothing is cut
    assert lockout.would_cut(state, conns) == []
    held_by_agent = lockout.Connection("192.168.81.1", 40962, "192.168.81.2", 22, True, agent=True)
    state.endpoints[HOST_ENDPOINT_ID].audit = False
    assert lockout.would_cut(state, [*conns, held_by_agent])[0].startswith("the agent's own connection")


def test_the_api_server_is_kube_apiserver_or_stays_the_nodes_identity():
    """Cilium's LookupReservedIdentityByLabels: an API server on this node keeps host (1), whose labels gain
    reserved:kube-apiserver; on another node it is kube-apiserver (7) and still selected as remote-node."""
    from ciliumctl.identity.allocator import KUBE_APISERVER

    def to(entity: str, api: list[str]) -> tuple[set[int], dict]:
        pol = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                                  "metadata": {"name": "e"}, "spec": {"nodeSelector": {},
                                                                      "egress": [{"toEntities": [entity]}]}})
        state = resolve([], [pol], "default", MemoryAllocator(), node_labels={}, host_ips=["192.168.81.1"],
                        remote_nodes=["192.168.82.2/32"], kube_apiserver=api)
        return {e.identity for e in state.endpoints[HOST_ENDPOINT_ID].egress.entries}, state.ipcache

    peers, ipcache = to("kube-apiserver", ["10.0.0.9"])
    assert peers == {KUBE_APISERVER} and ipcache["10.0.0.9/32"] == KUBE_APISERVER
    peers, ipcache = to("kube-apiserver", ["192.168.81.1"])
    assert HOST in peers and ipcache["192.168.81.1/32"] == HOST      # 7 is selected too, wherever it is
    peers, ipcache = to("remote-node", ["192.168.82.2"])
    assert peers == {REMOTE_NODE, KUBE_APISERVER} and ipcache["192.168.82.2/32"] == KUBE_APISERVER
    assert to("remote-node", ["10.0.0.9"])[0] == {REMOTE_NODE}


# /proc/net/udp: a DNS server's unconnected socket on 53 and its connected per-peer socket for 192.168.81.2:5000
# (inbound), a client's socket connected to 192.168.82.2:123 (outbound), an unconnected client socket (no peer)
PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 201 2 0 0
  2: 0151A8C0:0035 0251A8C0:1388 01 00000000:00000000 00:00000000 00000000     0        0 202 2 0 0
  3: 0151A8C0:9C41 0252A8C0:007B 01 00000000:00000000 00:00000000 00000000     0        0 203 2 0 0
  4: 00000000:A002 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 204 2 0 0
"""


def test_the_lockout_guard_judges_connected_udp_sockets_too():
    from ciliumctl.node.hostfw import lockout

    conns = lockout.live_connections("", PROC_NET_UDP)
    assert [(c.remote, c.rport, c.lport, c.inbound, c.proto) for c in conns] == [
        ("192.168.81.2", 5000, 53, True, 17), ("192.168.82.2", 123, 40001, False, 17)]
    egress_tcp_only = model.parse_policy({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "e"},
        "spec": {"nodeSelector": {}, "egress": [{"toEntities": ["remote-node"],
                                                "toPorts": [{"ports": [{"port": "123", "protocol": "TCP"}]}]}]}})
    state = resolve([], [_seed(), egress_tcp_only], "default", MemoryAllocator(),
                    node_labels={"node-role.kubernetes.io/worker": ""},
                    host_ips=["192.168.81.1"], remote_nodes=["192.168.82.0/24"])
    # the seed's ingress lets the world reach nothing: the resolver's peer is cut; NTP over UDP is not allowed out
    assert lockout.would_cut(state, conns) == ["192.168.81.1:40001 -> 192.168.82.2:123/udp (to remote-node)",
                                               "192.168.81.2:5000 -> 192.168.81.1:53/udp (from world)"]


def test_connected_udp_sockets_are_read_from_the_kernels_table():
    """A real connected UDP socket (loopback, this test's own) is listed with its peer."""
    import socket

    from ciliumctl.node.hostfw import lockout

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        client.connect(server.getsockname())
        port = server.getsockname()[1]
        mine = [c for c in lockout.live_connections() if c.proto == 17 and c.lport == client.getsockname()[1]]
    assert [(c.remote, c.rport, c.inbound) for c in mine] == [("127.0.0.1", port, False)]



def test_node_mode_gives_remote_nodes_the_labels_install_names():
    """install --remote-node-labels ADDR:k=v (an address or prefix of --remote-nodes) is each other node's labels:
    with --enable-node-selector-labels every --remote-nodes prefix has an identity of its labels (none given:
    none), so fromNodes selects by them and is no gap; without the flag, or without --remote-nodes, it stays one."""
    from ciliumctl.node.steps import Options

    got = hostfw.wanted(Settings(), Options(host_firewall=True, remote_nodes="192.168.82.0/24,10.9.0.7",
                                            remote_node_labels=["192.168.82.2:role=db,zone=a", "10.9.0.7:role=web"],
                                            node_selector_labels=True))
    assert got["remote_node_labels"] == {"192.168.82.2/32": "role=db,zone=a", "10.9.0.7/32": "role=web"}
    s = Settings(**{**Settings().__dict__, **got})
    assert hostfw.remote_node_labels(s) == {"192.168.82.0/24": {}, "192.168.82.2/32": {"role": "db", "zone": "a"},
                                            "10.9.0.7/32": {"role": "web"}}
    pol = model.parse_policy(FROM_DB_NODES)
    assert not find_gaps(pol, hostfw.gap_context(s))
    for off in (Settings(host_firewall=True, remote_nodes="192.168.82.0/24"),            # no flag
                Settings(host_firewall=True, node_selector_labels=True)):                # no other node known
        assert [g.kind for g in find_gaps(pol, hostfw.gap_context(off))] == ["nodes"]
        assert "--remote-node-labels" in find_gaps(pol, hostfw.gap_context(off))[0].instead

    state = resolve([], [pol], "default", MemoryAllocator(), node_labels={}, host_ips=["192.168.81.1"],
                    remote_nodes=hostfw.parse_remote_nodes(s.remote_nodes),
                    remote_node_labels=hostfw.remote_node_labels(s), host=hostfw.gap_context(s))
    peers = {e.identity for e in state.endpoints[HOST_ENDPOINT_ID].ingress.entries}
    db, web, rest = (state.ipcache[p] for p in ("192.168.82.2/32", "10.9.0.7/32", "192.168.82.0/24"))
    assert peers == {db} and len({db, web, rest, REMOTE_NODE}) == 4
    assert "node:role=db" in state.identities[db] and "reserved:remote-node" in state.identities[rest]

    # kept labels: a later install keeps them; "" clears them; a --remote-nodes change that leaves one outside is
    # refused, naming it
    assert hostfw.wanted(s, Options())["remote_node_labels"] == got["remote_node_labels"]
    assert hostfw.wanted(s, Options(remote_node_labels=[""]))["remote_node_labels"] == {}
    with pytest.raises(UsageError, match="10.9.0.7/32 is not one of the other nodes' addresses"):
        hostfw.wanted(s, Options(remote_nodes="192.168.82.0/24"))


@pytest.mark.parametrize("value,says", [("192.168.82.2", "ADDR:key=value"), ("192.168.82.2:role", "key=value"),
                                        (":role=db", "ADDR:key=value"), ("10.1.1.1:role=db", "--remote-nodes first"),
                                        ("fd00::1:role=db", "IPv4")])
def test_bad_remote_node_labels_are_one_line(value, says):
    with pytest.raises(UsageError) as err:
        hostfw.parse_remote_node_labels([value], ["192.168.82.0/24"])
    assert "--remote-node-labels" in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def _ccnp(name: str, spec: dict, annotations: dict | None = None) -> dict:
    meta = {"name": name, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": meta, "spec": spec}


def test_cluster_mode_holds_back_the_host_policy_that_would_cut_a_live_connection():
    """The agent's guard (lockout.hold_back, over real resolves of PROC_NET_TCP's connections): a host policy that
    would cut the world's connection to 22 is held back, naming it; an allow for it applied in the same change lets
    both in, in any order; the annotation forces it; a policy in force stays and the new one is held."""
    import yaml

    from ciliumctl.node.hostfw import lockout

    conns = lockout.live_connections(PROC_NET_TCP)
    seed = yaml.safe_load(SEED)
    world_ssh = _ccnp("world-ssh", {"nodeSelector": {}, "ingress": [{"fromEntities": ["world"], "toPorts": [
        {"ports": [{"port": "22", "protocol": "TCP"}]}]}]})
    deny_world = _ccnp("deny-world", {"nodeSelector": {}, "ingressDeny": [{"fromEntities": ["world"]}]})
    pod_policy = _ccnp("pods", {"endpointSelector": {}, "ingress": [{}]})

    def cuts(pols: list[dict]) -> list[str]:
        state = resolve([], pols, "default", MemoryAllocator(), node_labels={"node-role.kubernetes.io/worker": ""},
                        host_ips=["192.168.81.1"], remote_nodes=["192.168.82.0/24"])
        return lockout.would_cut(state, conns)

    def held(pols: list[dict], forced=(), in_force=()) -> dict[str, list[str]]:
        return lockout.hold_back([(p["metadata"]["name"], p) for p in pols], set(forced), set(in_force), cuts)

    cut = ["192.168.81.2:40000 -> 192.168.81.1:22/tcp (from world)"]
    assert held([seed, pod_policy]) == {"kubelet-from-metrics-server": cut}
    assert held([world_ssh, seed]) == {} and held([seed, world_ssh]) == {}
    assert held([seed], forced={"kubelet-from-metrics-server"}) == {}
    assert held([world_ssh, deny_world], in_force={"world-ssh"}) == {"deny-world": cut}
    assert not lockout.is_host_policy(pod_policy) and lockout.is_host_policy(seed)
    assert lockout.forced(_ccnp("f", {}, {lockout.FORCE_ANNOTATION: "true"})) and not lockout.forced(seed)
    message = lockout.held_message(cut)
    assert cut[0] in message and f"{lockout.FORCE_ANNOTATION}=true" in message


def test_the_nodes_own_node_addresses_are_host():
    """Cluster mode: this node's Node addresses are the host's (Cilium's nodeIdentityLabels gives the local node
    reserved:host), the others' remote-node."""
    nodes = [{"metadata": {"name": "me", "labels": {"a": "b"}},
              "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"},
                                       {"type": "Hostname", "address": "me"}]}},
             {"metadata": {"name": "other"},
              "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}]
    got = hostfw.cluster_nodes(nodes, "me")
    assert got.addresses == ("192.0.2.10",) and got.remote == ("192.0.2.11/32",) and got.labels == {"a": "b"}
