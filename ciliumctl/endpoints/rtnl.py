"""A minimal rtnetlink client for the CNI ADD path: just the requests a veth attachment needs, each one message and
its ACK on a plain netlink socket. pyroute2 spends ~2 ms of Python per request on a busy node; this is ~0.1 ms,
and a pod's ADD makes a dozen. Message layouts from the kernel's uapi headers: linux/netlink.h (nlmsghdr),
linux/rtnetlink.h (ifinfomsg, ifaddrmsg, rtmsg, ndmsg), linux/if_link.h (IFLA_*), linux/veth.h, linux/neighbour.h."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")          # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg
_RT = struct.Struct("=BBBBBBBBI")       # rtmsg
_ND = struct.Struct("=BxxxiHBB")        # ndmsg
_ERR = struct.Struct("=i")


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    """One NETLINK_ROUTE socket, bound to the network namespace of the thread that opens it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes) -> bytes:
        """Send one request; its answer (the reply message for a GET, b"" for an ACK). A refusal is the OSError
        of its errno."""
        seq = next(self._seq)
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, mseq, _ = _HDR.unpack_from(data, off)
                msg = data[off:off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    code = -_ERR.unpack_from(msg, _HDR.size)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return b""
                return msg

    # --- links ---

    def link_index(self, ifname: str) -> int | None:
        try:
            msg = self.request(RTM_GETLINK, 0, ifinfo() + _attr(IFLA_IFNAME, _name(ifname)))
        except OSError as err:
            if err.errno == errno.ENODEV:
                return None
            raise
        return _IFINFO.unpack_from(msg, _HDR.size)[2]

    def add_veth(self, ifname: str, mac: str, mtu: int, peer: str, peer_mac: str, peer_netns_fd: int) -> None:
        peer_info = (ifinfo() + _attr(IFLA_IFNAME, _name(peer)) + _attr(IFLA_MTU, struct.pack("=I", mtu))
                     + _attr(IFLA_ADDRESS, _mac(peer_mac)) + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)))
        linkinfo = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = (ifinfo() + _attr(IFLA_IFNAME, _name(ifname)) + _attr(IFLA_MTU, struct.pack("=I", mtu))
                + _attr(IFLA_ADDRESS, _mac(mac)) + _attr(IFLA_LINKINFO, linkinfo))
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, NLM_F_ACK, ifinfo(index, IFF_UP, IFF_UP))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, NLM_F_ACK, ifinfo(index))

    # --- addresses, neighbours, routes (IPv4) ---

    def add_address(self, index: int, ipv4: str, prefixlen: int) -> None:
        a = socket.inet_aton(ipv4)
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + _attr(IFA_LOCAL, a) + \
            _attr(IFA_ADDRESS, a)
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def add_permanent_neighbour(self, index: int, ipv4: str, mac: str) -> None:
        body = _ND.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, socket.inet_aton(ipv4)) + \
            _attr(NDA_LLADDR, _mac(mac))
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def route(self, dst: str, dst_len: int, oif: int, gateway: str | None = None, replace: bool = False) -> None:
        """A main-table unicast route: scope link without a gateway, universe with one."""
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = _RT.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
        if dst_len:
            body += _attr(RTA_DST, socket.inet_aton(dst))
        body += _attr(RTA_OIF, struct.pack("=I", oif))
        if gateway:
            body += _attr(RTA_GATEWAY, socket.inet_aton(gateway))
        flags = NLM_F_ACK | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.request(RTM_NEWROUTE, flags, body)
