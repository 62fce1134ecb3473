"""Python mirrors of the datapath's map keys and values (bpf/lib/common.h), and fast packers for them.

The ctypes structures are the reference layout; the struct.Struct packers are what the hot paths use
(tests/datapath/test_maps_layout.py checks that both agree, and root tests check the sizes the kernel reports).
"""

from __future__ import annotations

import ctypes
import struct

# names of the pins under paths.bpffs_dir()
PROGRAMS = ("from_container", "to_container", "from_netdev", "to_netdev")
ADDED_PROGRAMS = ("from_netdev", "to_netdev")     # newer than installed datapaths: upgrade() adds them
REQUIRED_PROGRAMS = tuple(p for p in PROGRAMS if p not in ADDED_PROGRAMS)
MAPS = ("endpoints", "state", "monitor_config", "epcfg", "ipcache", "policy", "conntrack", "fragments", "events",
        "events_lost", "ct_created", "drop_stats", "lb_services", "lb_backends", "lb_conns", "lb_affinity", "lb_snat")
# Maps newer than datapaths already installed: pins without them are an outdated datapath (upgrade() adds them),
# not a broken one.
ADDED_MAPS = ("monitor_config", "ct_created", "lb_services", "lb_backends", "lb_conns", "lb_affinity", "lb_snat")
SERVICE_MAPS = ("lb_services", "lb_backends", "lb_conns", "lb_affinity", "lb_snat")
REQUIRED_MAPS = tuple(m for m in MAPS if m not in ADDED_MAPS)

EP_F_ENFORCE_INGRESS = 1
EP_F_ENFORCE_EGRESS = 2
EP_F_AUDIT = 4

POLICY_FIXED_BITS = 64   # slot, dir, ep_id, identity
POLICY_PROTO_BITS = 72   # + proto
POLICY_PORT_BASE = 80    # + pad; then the port prefix bits
POLICY_FULL_BITS = 96
IPCACHE_BASE_BITS = 32   # slot + pad


class EpInfo(ctypes.Structure):
    _fields_ = [("ep_id", ctypes.c_uint16), ("flags", ctypes.c_uint16), ("identity", ctypes.c_uint32)]


class DpState(ctypes.Structure):
    _fields_ = [("active_slot", ctypes.c_uint32), ("src_crc", ctypes.c_uint32), ("revision", ctypes.c_uint64),
                ("flip_ns", ctypes.c_uint64)]


class EpcfgKey(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("ep_id", ctypes.c_uint32)]


class EpcfgVal(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class IpcacheKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("slot", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3),
                ("ip", ctypes.c_uint8 * 4)]


class IpcacheVal(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32)]


class PolicyKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("slot", ctypes.c_uint8), ("dir", ctypes.c_uint8),
                ("ep_id", ctypes.c_uint16), ("identity", ctypes.c_uint32), ("proto", ctypes.c_uint8),
                ("pad", ctypes.c_uint8), ("dport", ctypes.c_uint8 * 2)]   # network byte order


class PolicyVal(ctypes.Structure):
    _fields_ = [("deny", ctypes.c_uint8), ("match_type", ctypes.c_uint8), ("pad", ctypes.c_uint16),
                ("cookie", ctypes.c_uint32)]


class CtKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint8 * 4), ("daddr", ctypes.c_uint8 * 4), ("sport", ctypes.c_uint16),
                ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("dir", ctypes.c_uint8),
                ("pad", ctypes.c_uint16), ("ifindex", ctypes.c_uint32)]


class MonitorConfig(ctypes.Structure):
    _fields_ = [("aggregation", ctypes.c_uint32), ("report_flags", ctypes.c_uint32),
                ("report_interval_ns", ctypes.c_uint64)]


class CtEntry(ctypes.Structure):
    _fields_ = [("last_seen", ctypes.c_uint64), ("fwd_report", ctypes.c_uint64), ("rev_report", ctypes.c_uint64),
                ("cookie", ctypes.c_uint32), ("peer_identity", ctypes.c_uint32),
                ("own_identity", ctypes.c_uint32), ("ep_id", ctypes.c_uint16), ("match_type", ctypes.c_uint8),
                ("verdict", ctypes.c_uint8),
                ("fwd_pkts", ctypes.c_uint32), ("rev_pkts", ctypes.c_uint32),
                ("fwd_bytes", ctypes.c_uint32), ("rev_bytes", ctypes.c_uint32),
                ("fwd_flags", ctypes.c_uint8), ("rev_flags", ctypes.c_uint8),
                ("fwd_reported", ctypes.c_uint8), ("rev_reported", ctypes.c_uint8),
                ("policy_rev", ctypes.c_uint32), ("nat_addr", ctypes.c_uint8 * 4), ("nat_port", ctypes.c_uint16),
                ("proxy_port", ctypes.c_uint16), ("proxy_upstream", ctypes.c_uint8),
                ("nodeport_snat", ctypes.c_uint8), ("proxy_pad", ctypes.c_uint8 * 2)]


# services (bpf/lib/common.h, lib/lb.h)
LB_F_NODEPORT = 1
LB_F_AFFINITY = 2
LB_F_SKIP_FROM_BACKEND = 4
LB_KIND_ORIGINAL = 0x80     # in lb_svc_key.proto: entries of the service a local redirect replaced
LB_KIND_SKIP = 0x40         # in lb_svc_key.proto: a redirect backend whose own traffic skips it
LB_BACKEND_ACTIVE = 0
LB_BACKEND_TERMINATING = 1


class LbSvcKey(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint8), ("proto", ctypes.c_uint8), ("backend_slot", ctypes.c_uint16),
                ("vip", ctypes.c_uint8 * 4), ("dport", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class LbSvcVal(ctypes.Structure):
    _fields_ = [("backend_id", ctypes.c_uint32), ("svc_id", ctypes.c_uint32), ("count", ctypes.c_uint16),
                ("flags", ctypes.c_uint8), ("pad", ctypes.c_uint8), ("affinity_timeout", ctypes.c_uint32)]


class LbBackend(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 4), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("state", ctypes.c_uint8)]


# Fast packers, little endian host (x86_64/aarch64); byte strings are kept in network order.
EP_INFO = struct.Struct("<HHI")
DP_STATE = struct.Struct("<IIQQ")
MONITOR_CONFIG = struct.Struct("<IIQ")
EPCFG_KEY = struct.Struct("<II")
EPCFG_VAL = struct.Struct("<II")
IPCACHE_KEY = struct.Struct("<IB3x4s")
IPCACHE_VAL = struct.Struct("<I")
POLICY_KEY = struct.Struct("<IBBHIBx2s")
POLICY_VAL = struct.Struct("<BBHI")   # deny, match type, proxy port (network byte order: see proxy_port_field), cookie


def proxy_port_field(port: int) -> int:
    """policy_val.proxy_port as POLICY_VAL packs it: the port in network byte order (Cilium's ProxyPortNetwork)."""
    return ((port & 0xff) << 8) | (port >> 8)
LB_SVC_KEY = struct.Struct("<BBH4sHxx")
LB_SKIP_KEY = struct.Struct("<BB2s4sH2s")    # the backend's address in backend_slot and pad (bpf/lib/common.h)
LB_SVC_VAL = struct.Struct("<IIHBxI")
LB_BACKEND = struct.Struct("<4sHBB")

SIZES = {  # map name -> (key size, value size) the kernel must report
    "endpoints": (4, ctypes.sizeof(EpInfo)),
    "state": (4, ctypes.sizeof(DpState)),
    "monitor_config": (4, ctypes.sizeof(MonitorConfig)),
    "epcfg": (ctypes.sizeof(EpcfgKey), ctypes.sizeof(EpcfgVal)),
    "ipcache": (ctypes.sizeof(IpcacheKey), ctypes.sizeof(IpcacheVal)),
    "policy": (ctypes.sizeof(PolicyKey), ctypes.sizeof(PolicyVal)),
    "conntrack": (ctypes.sizeof(CtKey), ctypes.sizeof(CtEntry)),
    "lb_services": (ctypes.sizeof(LbSvcKey), ctypes.sizeof(LbSvcVal)),
    "lb_backends": (4, ctypes.sizeof(LbBackend)),
}


def policy_key(slot: int, direction: int, ep_id: int, identity: int, proto: int, port: int,
               prefixlen: int) -> bytes:
    return POLICY_KEY.pack(prefixlen, slot, direction, ep_id, identity, proto, port.to_bytes(2, "big"))


def key_slot(map_name: str, key: bytes) -> int:
    """Which slot an entry written by apply belongs to."""
    if map_name == "epcfg":
        return EPCFG_KEY.unpack(key)[0]
    if map_name == "lb_services":
        return key[0]
    return key[4]   # ipcache and policy: slot is the first data byte after prefixlen
