"""The host firewall (issue 13): the node's own stack as an endpoint, Cilium's reserved:host.

Off unless `install --host-firewall` (Cilium's --enable-host-firewall). When on, reconcile resolves the host
endpoint (policy.resolve: id HOST_ENDPOINT_ID, identity 1) from the nodeSelector policies that match the node's
labels (`install --node-labels`), puts the node's addresses in the ipcache as host (1) and `--remote-nodes` as
remote-node (6); the device step marks the node's devices (`install --devices`, else the native devices detected
when the host firewall turns on: node.hostfw.devices) as the host endpoint's in the `endpoints` map, so
bpf_host.c enforces its policy there. With --enable-node-selector-labels each --remote-nodes prefix has an
identity of its labels (`install --remote-node-labels ADDR:k=v`), which fromNodes/toNodes select. A pod's packets
to and from the host meet it in bpf_lxc.c whether or not a device is named (lib/enforce.h decide_host_too). In
cluster mode (node.cluster_sync) the labels are the Node object's, the other Nodes' addresses are remote-node (or,
with --enable-node-selector-labels, identities of their labels) and the `kubernetes` Service's endpoints are
kube-apiserver (7).
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ciliumctl.base import paths
from ciliumctl.base.errors import UsageError
from ciliumctl.identity import allocator as ids
from ciliumctl.policy.enforcement_gaps import HostFirewall

SIOCGIFCONF = 0x8912
_IFREQ = 40      # struct ifreq on 64-bit Linux: 16 bytes of name, 24 of union


def parse_node_labels(text: str, flag: str = "--node-labels") -> dict[str, str]:
    """k=v,k=v -> {k: v}; one clear line on a malformed item."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{flag} {item!r}: give labels as key=value[,key=value] (e.g. "
                             "kubernetes.io/hostname=node1,role=worker)")
        out[key.strip()] = value.strip()
    return out


def parse_remote_nodes(text: str, flag: str = "--remote-nodes") -> list[str]:
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(f"{flag} {item!r} is not an IPv4 address or prefix; give the other nodes' addresses "
                             "as IP[,IP/len]") from None
        if net.version != 4:
            raise UsageError(f"{flag} {item!r}: the datapath is IPv4 only; give IPv4 addresses")
        out.append(net.with_prefixlen)
    return out


def parse_remote_node_labels(items: Iterable[str], remote: list[str],
                             flag: str = "--remote-node-labels") -> dict[str, dict[str, str]]:
    """ADDR[/LEN]:K=V[,K=V] items (one per other node, or per prefix of nodes with the same labels) -> {prefix:
    labels}. Each address lies in `remote` (the --remote-nodes prefixes): node mode knows other nodes only from
    there. "" items are skipped (`--remote-node-labels ""` clears them all)."""
    nets = [ipaddress.ip_network(r) for r in remote]
    out: dict[str, dict[str, str]] = {}
    for item in (x.strip() for x in items):
        if not item:
            continue
        addr, colon, text = item.partition(":")
        prefixes = parse_remote_nodes(addr, flag)
        if not colon or len(prefixes) != 1:
            raise UsageError(f"{flag} {item!r}: give a node's address and its labels as ADDR:key=value[,key=value] "
                             "(e.g. 192.168.1.2:kubernetes.io/hostname=node2,role=db)")
        prefix = prefixes[0]
        net = ipaddress.ip_network(prefix)
        if not any(net.subnet_of(n) for n in nets):       # type: ignore[arg-type]
            raise UsageError(f"{flag} {item!r}: {prefix} is not one of the other nodes' addresses; add it to "
                             "--remote-nodes first")
        out[prefix] = parse_node_labels(text, flag)
    return out


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def wanted(s, o) -> dict:
    """The host firewall's settings after install options `o` (steps.Options) over the current `s`."""
    fw = s.host_firewall if o.host_firewall is None else o.host_firewall
    audit = s.host_firewall_audit if o.host_firewall_audit is None else o.host_firewall_audit
    labels = s.node_labels if o.node_labels is None else o.node_labels
    remote = s.remote_nodes if o.remote_nodes is None else o.remote_nodes
    labels = labels_text(parse_node_labels(labels))
    remote_list = parse_remote_nodes(remote)
    # kept labels are checked again: a --remote-nodes change must not leave a labelled address outside it
    items = [f"{p}:{t}" for p, t in s.remote_node_labels.items()] if o.remote_node_labels is None \
        else o.remote_node_labels
    node_labels = {p: labels_text(lbls) for p, lbls in parse_remote_node_labels(items, remote_list).items()}
    if audit and not fw and o.host_firewall_audit:
        raise UsageError("--host-firewall-audit needs the host firewall: add --host-firewall")
    by_labels = s.node_selector_labels if o.node_selector_labels is None else o.node_selector_labels
    return {"host_firewall": fw, "host_firewall_audit": audit and fw, "node_labels": labels,
            "remote_nodes": ",".join(remote_list), "remote_node_labels": node_labels, "node_selector_labels": by_labels}


def view_changed(before, after) -> bool:
    """Whether the settings that decide what the host's policy selects changed (its labels, the other nodes and
    their labels): enforced anew, they may cut live connections like a new policy."""
    keys = ("node_labels", "remote_nodes", "remote_node_labels", "node_selector_labels")
    return any(getattr(before, k) != getattr(after, k) for k in keys)


def selector_labels_on() -> bool:
    """Whether the node's policies are validated with Cilium's --enable-node-selector-labels (fromNodes/toNodes
    valid): as install set it."""
    from ciliumctl.node.settings import load_settings

    return load_settings().node_selector_labels


def node_addresses() -> list[str]:
    """The IPv4 addresses of the current network namespace's interfaces (the node's, in its namespace), loopback
    aside: Cilium's ipcache gives them the host identity."""
    from ciliumctl.base import netns as nodens

    nodens.enter_node_netns()
    size = _IFREQ * 256
    buf = array.array("B", b"\0" * size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        n = struct.unpack("iL", fcntl.ioctl(s.fileno(), SIOCGIFCONF,
                                            struct.pack("iL", size, buf.buffer_info()[0])))[0]
    raw = buf.tobytes()[:n]
    out = []
    for off in range(0, n, _IFREQ):
        ip = socket.inet_ntoa(raw[off + 20:off + 24])    # sockaddr_in.sin_addr inside the union
        if not ip.startswith("127."):
            out.append(ip)
    return sorted(set(out))


def enforces(settings) -> bool:
    """Whether the host firewall drops (on, and neither it nor the node in audit mode)."""
    return settings.host_firewall and not settings.host_firewall_audit and not settings.audit


@dataclass(frozen=True)
class ClusterNodes:
    """The host firewall's view of the cluster's Node objects (cluster mode): this node's labels, which
    nodeSelector rules match, and the other nodes' addresses (remote-node)."""

    labels: dict[str, str]
    remote: tuple[str, ...]      # IPv4 /32 prefixes
    kube_apiserver: tuple[str, ...] = ()     # the API server's IPv4 addresses
    remote_labels: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()   # (prefix, that node's labels)
    addresses: tuple[str, ...] = ()          # this node's own Node addresses (IPv4): host, beside its interfaces'


def kube_apiserver_ips(slices: list[dict]) -> tuple[str, ...]:
    """The API server's addresses: the endpoints of the `kubernetes` Service in default (its EndpointSlices),
    where Cilium's agent finds them too (pkg/k8s/watchers: the kube-apiserver entity, identity 7)."""
    out = set()
    for sl in slices:
        meta = sl.get("metadata") or {}
        if meta.get("namespace") != "default" or \
                (meta.get("labels") or {}).get("kubernetes.io/service-name") != "kubernetes":
            continue
        for ep in sl.get("endpoints") or []:
            for addr in ep.get("addresses") or []:
                try:
                    if ipaddress.ip_address(addr).version == 4:
                        out.add(addr)
                except ValueError:
                    continue
    return tuple(sorted(out))


def cluster_nodes(nodes: list[dict], me: str, slices: Iterable[dict] = ()) -> ClusterNodes:
    """From the Node objects: this node's metadata.labels, and every other node's InternalIP and ExternalIP as
    remote-node. Cilium does the same: the k8s Node's addresses are its IPAddresses (pkg/k8s/node.go ParseNode),
    each upserted to the ipcache with the node's identity, remote-node for any other node
    (pkg/node/manager/manager.go NodeUpdated)."""
    labels: dict[str, str] = {}
    remote = set()
    remote_labels = []
    own = set()
    for node in nodes:
        meta = node.get("metadata") or {}
        mine = meta.get("name") == me
        if mine:
            labels = dict(meta.get("labels") or {})
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("type") in ("InternalIP", "ExternalIP"):
                try:
                    ip = ipaddress.ip_address(a.get("address", ""))
                except ValueError:
                    continue
                if ip.version != 4:
                    continue
                if mine:      # the local node's addresses are host (pkg/node/manager/manager.go nodeIdentityLabels)
                    own.add(str(ip))
                    continue
                remote.add(f"{ip}/32")
                remote_labels.append((f"{ip}/32", tuple(sorted((meta.get("labels") or {}).items()))))
    return ClusterNodes(labels, tuple(sorted(remote)), kube_apiserver_ips(list(slices)), tuple(sorted(remote_labels)),
                        tuple(sorted(own)))


def gap_context(settings, cluster: ClusterNodes | None = None) -> HostFirewall | None:
    """What the node's host firewall enforces, for policy.enforcement_gaps (None: it is off). In cluster mode the
    Node objects name every other node: remote-node is known. In node mode the other nodes are --remote-nodes:
    with --enable-node-selector-labels each has an identity of its --remote-node-labels (none given: no labels)."""
    if not settings.host_firewall:
        return None
    known = bool(settings.remote_nodes) or cluster is not None
    return HostFirewall(remote_nodes=known, kube_apiserver=cluster is not None,
                        node_identities=known and settings.node_selector_labels)


def remote_node_labels(settings, cluster: ClusterNodes | None = None) -> dict[str, dict[str, str]] | None:
    """Other nodes' prefix -> labels, whose identities fromNodes/toNodes select; None without
    --enable-node-selector-labels. Cluster mode: every other Node's addresses with its labels. Node mode: every
    --remote-nodes prefix, with its --remote-node-labels or none (a node whose labels were not given has none:
    a selector with labels does not pick it)."""
    if not settings.node_selector_labels:
        return None
    if cluster is not None:
        return {p: dict(lbls) for p, lbls in cluster.remote_labels}
    out: dict[str, dict[str, str]] = {p: {} for p in parse_remote_nodes(settings.remote_nodes)}
    out.update((p, parse_node_labels(t)) for p, t in settings.remote_node_labels.items())
    return out


def resolve_kwargs(settings, cluster: ClusterNodes | None = None) -> dict:
    """What resolve() takes for the host endpoint: nothing while the host firewall is off. cluster: the node's
    labels come from its Node object instead of install --node-labels."""
    if not settings.host_firewall:
        return {}
    labels = cluster.labels if cluster is not None else parse_node_labels(settings.node_labels)
    remote = parse_remote_nodes(settings.remote_nodes) + list(cluster.remote if cluster else ())
    host_ips = sorted(set(node_addresses()) | set(cluster.addresses if cluster else ()))
    return {"node_labels": labels, "host_ips": host_ips, "host": gap_context(settings, cluster),
            "remote_nodes": remote, "kube_apiserver": cluster.kube_apiserver if cluster else (),
            "remote_node_labels": remote_node_labels(settings, cluster)}


def finish_state(state, settings) -> None:
    """The host's audit mode into a resolved state."""
    if not settings.host_firewall:
        return
    from ciliumctl.policy.resolve import HOST_ENDPOINT_ID

    host = state.endpoints.get(HOST_ENDPOINT_ID)
    if host is not None:
        host.audit = settings.host_firewall_audit


# ------------------------------------------------------------------------------------------------- devices

def _device_entries() -> dict[int, int]:
    """ifindex -> endpoint id of the endpoints-map entries (read from the pins; {} before install)."""
    from ciliumctl.datapath import bpfsys, maps

    path = paths.bpffs_dir() / "endpoints"
    if not path.exists():
        return {}
    m = bpfsys.Map.from_pin(path)
    try:
        return {int.from_bytes(k, "little"): maps.EP_INFO.unpack(v)[0] for k, v in m.items().items()}
    finally:
        m.close()


def devices_follow(ifindexes: list[int]) -> bool:
    """Whether the devices carry the host endpoint exactly when the host firewall is on."""
    from ciliumctl.node.settings import load_settings

    on = load_settings().host_firewall
    entries = _device_entries()
    return all((entries.get(i) == 0) == on for i in ifindexes)


def device_plan_text() -> str:
    from ciliumctl.node.settings import load_settings

    return ", with the host firewall" if load_settings().host_firewall else ""


def program_devices(dp, ifindexes: list[int], removed: set[int]) -> str:
    """The host endpoint on the devices (endpoints map: ifindex -> endpoint 0, identity host) while the host
    firewall is on, off them otherwise and on devices no longer named."""
    from ciliumctl.datapath import maps
    from ciliumctl.node.settings import load_settings

    on = load_settings().host_firewall
    m = dp.maps["endpoints"]
    for idx in ifindexes:
        key = idx.to_bytes(4, "little")
        if on:
            m.update(key, maps.EP_INFO.pack(0, 0, ids.HOST))
        else:
            m.delete(key)
    for idx in removed:
        m.delete(idx.to_bytes(4, "little"))
    return "; host firewall on them" if on and ifindexes else ""


# ------------------------------------------------------------------------------------------------- the view

def host_row(settings, enforcement: dict) -> dict | None:
    """The host endpoint as a row of `endpoint list` (Cilium lists its reserved:host endpoint too): identity 1,
    the node's labels, enforcement as last programmed (`enforcement`: node.reconcile.enforcement_of(0)). None while
    the host firewall is off."""
    from ciliumctl.policy.labels import node_identity_labels
    from ciliumctl.policy.resolve import HOST_ENDPOINT_ID

    if not settings.host_firewall:
        return None
    labels = parse_node_labels(settings.node_labels)
    audit = settings.audit or settings.host_firewall_audit
    return {"id": HOST_ENDPOINT_ID, "name": "", "namespace": "", "labels": labels, "ipv4": ", ".join(
        node_addresses()), "identity": ids.HOST, "state": "ready", "host": True,
        "labels_full": sorted(node_identity_labels(labels)),
        "policy_enforcement": {k: ("unknown" if k not in enforcement else "disabled (audit)"
                                   if enforcement[k] and audit else "enabled" if enforcement[k] else "disabled")
                               for k in ("ingress", "egress")}}
