"""The strings Hubble prints for Cilium's numeric codes: drop reasons, trace points, match types, identities."""

from __future__ import annotations

# Cilium monitor message types (flow.event_type.type)
MSG_DROP = 1
MSG_TRACE = 4
MSG_POLICY_VERDICT = 9

MSG_TYPE_NAMES = {MSG_DROP: "Drop", MSG_TRACE: "Trace", MSG_POLICY_VERDICT: "PolicyVerdict"}
# `hubble observe -t/--type` names -> message type
TYPE_FLAG = {"drop": MSG_DROP, "trace": MSG_TRACE, "policy-verdict": MSG_POLICY_VERDICT}

DROP_REASONS = {
    130: "Invalid source mac",
    131: "Invalid destination mac",
    132: "Invalid source ip",
    133: "Policy denied",
    134: "Invalid packet",
    135: "CT: Truncated or invalid header",
    136: "CT: Missing TCP ACK flag",
    137: "CT: Unknown L4 protocol",
    138: "CT: Can't create entry from packet",
    139: "Unsupported L3 protocol",
    142: "Unknown L4 protocol",
    151: "Stale or unroutable IP",
    155: "CT: Map insertion failed",
    157: "Fragmented packet",
    163: "Unknown connection tracking state",
    165: "No configuration available to perform policy decision",
    169: "FIB lookup failed",
    171: "Invalid identity",
    172: "Unknown sender",
    181: "Policy denied by denylist",
    189: "Authentication required",
    196: "TTL exceeded",
}

# Cilium's trace observation points as monitor sub types (0 is "to-endpoint", TraceToLxc).
TRACE_POINTS = {
    0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack", 4: "to-overlay", 5: "from-endpoint",
    6: "from-proxy", 7: "from-host", 8: "from-stack", 9: "from-overlay", 10: "from-network", 11: "to-network",
}

MATCH_TYPES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all"}

RESERVED_IDENTITIES = {
    0: "unknown", 1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node",
    7: "kube-apiserver", 8: "ingress",
}

PROTO_NAMES = {1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

# TCP header flag bits, in the order Hubble lists them in summaries
TCP_FLAG_BITS = [("SYN", 0x02), ("ACK", 0x10), ("RST", 0x04), ("FIN", 0x01), ("PSH", 0x08), ("URG", 0x20),
                 ("ECE", 0x40), ("CWR", 0x80)]

ICMP4_TYPES = {0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench", 5: "Redirect", 8: "EchoRequest",
               9: "RouterAdvertisement", 10: "RouterSolicitation", 11: "TimeExceeded", 12: "ParameterProblem",
               13: "TimestampRequest", 14: "TimestampReply"}
ICMP4_UNREACH_CODES = {0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
                       9: "NetAdminProhibited", 10: "HostAdminProhibited", 13: "CommAdminProhibited"}


def drop_reason(code: int) -> str:
    return DROP_REASONS.get(code, f"unknown ({code})")


def identity_label(identity: int) -> str:
    """How Hubble's compact output shows an identity: (world) for reserved ones, (ID:1234) otherwise."""
    name = RESERVED_IDENTITIES.get(identity)
    return f"({name})" if name is not None else f"(ID:{identity})"


def icmp4_summary(typ: int, code: int) -> str:
    name = ICMP4_TYPES.get(typ)
    if name is None:
        return f"ICMPv4 {typ}({code})"
    if typ == 3:
        return f"ICMPv4 {name}({ICMP4_UNREACH_CODES.get(code, code)})"
    if typ == 11:
        return f"ICMPv4 {name}({'TTLExceeded' if code == 0 else 'FragmentReassemblyTimeExceeded'})"
    return f"ICMPv4 {name}"
