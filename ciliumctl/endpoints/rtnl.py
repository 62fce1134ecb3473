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
RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER = 36, 37, 44
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
TCA_KIND, TCA_OPTIONS = 1, 2                                 # linux/rtnetlink.h
TCA_BPF_CLASSID, TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 3, 6, 7, 8   # linux/pkt_cls.h
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT, TC_H_MIN_INGRESS, TC_H_MIN_EGRESS = 0xFFFFFFF1, 0xFFF2, 0xFFF3   # linux/pkt_sched.h
ETH_P_ALL = 0x0003

_HDR = struct.Struct("=IHHII")          # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg
_RT = struct.Struct("=BBBBBBBBI")       # rtmsg
_ND = struct.Struct("=BxxxiHBB")        # ndmsg
_ERR = struct.Struct("=i")
_TC = struct.Struct("=BxxxiIII")        # tcmsg


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

    # --- tc: a clsact qdisc and direct-action bpf filters (what `tc filter add ... bpf da` sends) ---

    def add_clsact(self, index: int) -> None:
        """EEXIST when the interface has one already."""
        body = _TC.pack(socket.AF_UNSPEC, index, 0xFFFF0000, TC_H_CLSACT, 0) + _attr(TCA_KIND, b"clsact\0")
        self.request(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def del_clsact(self, index: int) -> None:
        self.request(RTM_DELQDISC, NLM_F_ACK, _TC.pack(socket.AF_UNSPEC, index, 0xFFFF0000, TC_H_CLSACT, 0))

    def bpf_filter(self, index: int, egress: bool, prog_fd: int, name: str, prio: int = 1, handle: int = 1) -> None:
        """A direct-action bpf filter (created or replaced) on the clsact ingress or egress hook."""
        parent = 0xFFFF0000 | (TC_H_MIN_EGRESS if egress else TC_H_MIN_INGRESS)
        info = (prio << 16) | socket.htons(ETH_P_ALL)
        opts = (_attr(TCA_BPF_FD, struct.pack("=I", prog_fd)) + _attr(TCA_BPF_NAME, _name(name))
                + _attr(TCA_BPF_FLAGS, struct.pack("=I", TCA_BPF_FLAG_ACT_DIRECT))
                + _attr(TCA_BPF_CLASSID, struct.pack("=I", 1)))
        body = _TC.pack(socket.AF_UNSPEC, index, handle, parent, info) + _attr(TCA_KIND, b"bpf\0") + \
            _attr(TCA_OPTIONS, opts)
        self.request(RTM_NEWTFILTER, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
