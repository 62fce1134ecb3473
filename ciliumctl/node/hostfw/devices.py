"""The node's native devices, when `install --host-firewall` is given no `--devices`: picked as Cilium picks them
(pkg/datapath/linux/devices_controller.go, isSelectedDevice; the prefixes are pkg/defaults'
ExcludedDevicePrefixes). A device is selected when it is up, has an address and a route in any table whose
destination is a global unicast address (its connected or local routes), and is none of: loopback, a bond or
bridge port (a master), a bridge or Open vSwitch device, a veth without a default route (leftovers of another
CNI, endpoints' host sides), a device named cilium_*, lo*, lxc*, cni*, docker*. One difference: a device without
a link-layer address (L3: wireguard, tun) is left out, since bpf_host.c parses Ethernet frames; Cilium takes them
on kernels >= 5.8.

`select` is pure (links in, names and reasons out); `detect` reads the node namespace's links, addresses and
routes over rtnetlink (pyroute2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IFF_UP, IFF_LOOPBACK, IFF_SLAVE = 0x1, 0x8, 0x800           # include/uapi/linux/if.h
EXCLUDED_PREFIXES = ("cilium_", "lo", "lxc", "cni", "docker")
BRIDGE_KINDS = ("bridge", "openvswitch")


@dataclass
class Link:
    index: int
    name: str
    kind: str = ""                 # IFLA_INFO_KIND: veth, bridge, dummy, ... ("" for a physical device)
    flags: int = 0
    master: int = 0
    has_mac: bool = True
    addresses: list[str] = field(default_factory=list)
    route_dsts: list[str] = field(default_factory=list)     # destination prefixes of its routes, all tables


def global_unicast(addr: str) -> bool:
    """Go's net.IP.IsGlobalUnicast for an address: not unspecified, loopback, multicast, link-local or the limited
    broadcast (private ranges count)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4 and str(ip) == "255.255.255.255":
        return False
    return not (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local)


def why_not(link: Link) -> str:
    """"" when the device is selected, else why not (the order of isSelectedDevice)."""
    if not link.addresses:
        return "no addresses"
    if not link.flags & IFF_UP:
        return "down"
    if link.flags & (IFF_SLAVE | IFF_LOOPBACK):
        return "loopback or bond port"
    if link.master:
        return f"bridged or bonded to ifindex {link.master}"
    if not link.has_mac:
        return "L3 device (no link-layer address)"
    for prefix in EXCLUDED_PREFIXES:
        if link.name.startswith(prefix):
            return f"excluded prefix {prefix!r}"
    if link.kind == "veth" and not any(ipaddress.ip_network(d).prefixlen == 0 for d in link.route_dsts):
        return "veth without default route"
    if link.kind in BRIDGE_KINDS:
        return "bridge-like device"
    if not any(global_unicast(d.split("/")[0]) for d in link.route_dsts):
        return "no global unicast routes"
    return ""


def select(links: list[Link]) -> list[str]:
    """The names of the selected devices, by ifindex."""
    return [lk.name for lk in sorted(links, key=lambda lk: lk.index) if not why_not(lk)]


def read_links() -> list[Link]:
    """The current network namespace's links with their addresses and routes (every table, both families)."""
    from pyroute2 import IPRoute

    links: dict[int, Link] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            mac = msg.get_attr("IFLA_ADDRESS")
            links[msg["index"]] = Link(msg["index"], msg.get_attr("IFLA_IFNAME"),
                                       (info.get_attr("IFLA_INFO_KIND") if info else "") or "",
                                       msg["flags"], msg.get_attr("IFLA_MASTER") or 0,
                                       bool(mac) and mac != "00:00:00:00:00:00")
        for msg in ipr.get_addr():
            if msg["index"] in links:
                links[msg["index"]].addresses.append(msg.get_attr("IFA_ADDRESS"))
        for family in (2, 10):           # AF_INET, AF_INET6
            for msg in ipr.get_routes(family=family):      # a dump: every table, local's included
                oif = msg.get_attr("RTA_OIF")
                if oif not in links:
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                links[oif].route_dsts.append(f"{dst}/{msg['dst_len']}")
    return list(links.values())


def detect() -> list[str]:
    """The native devices of the node namespace."""
    from ciliumctl.base import netns as nodens

    nodens.enter_node_netns()
    return select(read_links())


def wanted(s, o) -> str:
    """The devices install programs (comma-separated), after options `o` (steps.Options) over settings `s`:
    --devices when given ("" for none); the detected native devices when this install turns the host firewall on
    and the node names none; else the stored ones."""
    if o.devices is not None:
        return ",".join(d.strip() for d in o.devices.split(",") if d.strip())
    if o.host_firewall and not s.host_firewall and not s.devices:
        return ",".join(detect())
    return s.devices
