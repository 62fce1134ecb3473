"""Netlink work for a CNI attachment: a veth whose peer is created directly inside a runtime's network namespace.

H4's plumbing (ciliumctl/endpoints/plumbing.py) makes sandbox endpoints, where ciliumctl creates the namespace
itself; here the namespace belongs to the container runtime and arrives as an open descriptor (passed over the
agent socket), so the peer is created straight into it and configured through a netlink socket opened inside
it. The caller is in the node network namespace (ciliumctl.base.netns.enter_node_netns()).

Routing follows DESIGN.md: the pod has a /32, a static neighbour for the gateway 169.254.1.1 (the host veth's
MAC, so no ARP towards an address nobody owns), a link route to it and a default route via it; the host side
has proxy_arp and forwarding on, and a /32 route back to the pod."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import TYPE_CHECKING

from ciliumctl.base.netns import in_netns
from ciliumctl.endpoints.rtnl import Rtnl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

GATEWAY = "169.254.1.1"


def _ipr_in(fd: int) -> IPRoute:
    from pyroute2 import IPRoute

    with in_netns(fd):
        return IPRoute()   # a netlink socket stays bound to the namespace it was created in


def _sysctl_if(ifname: str, key: str, value: str) -> None:
    with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "w") as fh:
        fh.write(value)


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    """The index of a link by name: one RTM_GETLINK, not a dump of every link (a node has many)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return ipr.link("get", ifname=ifname)[0]["index"]
    except NetlinkError as err:
        if err.code == errno.ENODEV:
            return None
        raise


def _random_mac() -> str:
    """A random unicast, locally administered address, as the kernel gives a veth (eth_random_addr); chosen here
    so that the ADD result needs no read-back of either end."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def create_veth(host_ifname: str, netns_fd: int, ifname: str, mtu: int = 1500) -> dict:
    """Create the pair and bring the host side up; no address is needed yet, so the CNI server does this while the
    IPAM plugin runs. Returns {host_ifindex, pod_ifindex, host_mac, pod_mac}. Undoes itself on failure.
    Plain rtnetlink requests (rtnl.py): this runs on every pod's start."""
    with Rtnl() as node:
        old = node.link_index(host_ifname)
        if old is not None:          # left over from an ADD that died half-way
            node.delete_link(old)
        with in_netns(netns_fd):
            pod = Rtnl()             # a netlink socket stays bound to the namespace it was created in
        try:
            if pod.link_index(ifname) is not None:
                raise FileExistsError(f"interface {ifname} already exists in the container's network namespace")
            host_mac, pod_mac = _random_mac(), _random_mac()
            host_idx: int | None = None
            node.add_veth(host_ifname, host_mac, mtu, ifname, pod_mac, netns_fd)
            try:
                host_idx = node.link_index(host_ifname)
                assert host_idx is not None    # the add above returned: the pair exists
                _sysctl_if(host_ifname, "proxy_arp", "1")
                _sysctl_if(host_ifname, "forwarding", "1")
                _sysctl_if(host_ifname, "rp_filter", "0")
                node.set_up(host_idx)
                pod_idx = pod.link_index(ifname)
                assert pod_idx is not None
            except BaseException:
                _delete_quietly(node, host_ifname, host_idx)
                raise
        finally:
            pod.close()
    return {"host_ifindex": host_idx, "pod_ifindex": pod_idx, "host_mac": host_mac, "pod_mac": pod_mac}


def address_veth(host_ifname: str, netns_fd: int, links: dict, ipv4: str) -> None:
    """The pod's /32, the gateway neighbour and routes, the host's route back (links: create_veth's answer).
    On failure the pair goes."""
    with Rtnl() as node:
        try:
            with in_netns(netns_fd):
                pod = Rtnl()
            try:
                pod_idx = links["pod_ifindex"]
                pod.add_address(pod_idx, ipv4, 32)
                pod.set_up(pod_idx)
                pod.add_permanent_neighbour(pod_idx, GATEWAY, links["host_mac"])
                pod.route(GATEWAY, 32, pod_idx)
                pod.route("0.0.0.0", 0, pod_idx, gateway=GATEWAY)
            finally:
                pod.close()
            node.route(ipv4, 32, links["host_ifindex"], replace=True)
        except BaseException:
            _delete_quietly(node, host_ifname, links["host_ifindex"])
            raise


def _delete_quietly(node: Rtnl, host_ifname: str, idx: int | None) -> None:
    with contextlib.suppress(OSError):
        idx = idx if idx is not None else node.link_index(host_ifname)
        if idx is not None:
            node.delete_link(idx)   # the kernel takes the peer and the routes with it


def teardown_veth(host_ifname: str) -> bool:
    """Remove the host side; the kernel removes the peer and the routes through either end with it.
    True if it was there."""
    with Rtnl() as node:
        idx = node.link_index(host_ifname)
        if idx is None:
            return False
        with contextlib.suppress(OSError):   # e.g. gone meanwhile, with the pod's namespace
            node.delete_link(idx)
        return True


def check_veth(host_ifname: str, netns_fd: int, ifname: str, ipv4: str) -> list[str]:
    """What is wrong with an attachment (empty list: all well)."""
    from pyroute2 import IPRoute

    problems = []
    with IPRoute() as ipr:
        idx = link_index(ipr, host_ifname)
        if idx is None:
            return [f"host interface {host_ifname} is missing"]
        if not ipr.get_links(idx)[0]["flags"] & 1:
            problems.append(f"host interface {host_ifname} is down")
        routes = [r for r in ipr.get_routes(family=socket.AF_INET)
                  if r.get("dst_len") == 32 and r.get_attr("RTA_DST") == ipv4]
        if not any(r.get_attr("RTA_OIF") == idx for r in routes):
            problems.append(f"route {ipv4}/32 dev {host_ifname} is missing")
    pod = _ipr_in(netns_fd)
    try:
        pidx = link_index(pod, ifname)
        if pidx is None:
            problems.append(f"interface {ifname} is missing in the container")
        else:
            addrs = [a.get_attr("IFA_ADDRESS") for a in pod.get_addr(index=pidx, family=socket.AF_INET)]
            if ipv4 not in addrs:
                problems.append(f"interface {ifname} in the container lacks address {ipv4}")
    finally:
        pod.close()
    return problems
