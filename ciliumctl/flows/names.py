"""The strings Hubble prints for Cilium's numeric codes: message types, drop reasons, trace points, match types,
identities. Each table is Cilium's (v1.19, as vendored by the hubble CLI 1.19), cited next to it."""

from __future__ import annotations

# Cilium monitor message types (flow.event_type.type): pkg/monitor/api/types.go MessageType*,
# bpf/lib/common.h CILIUM_NOTIFY_*
MSG_DROP = 1
MSG_DEBUG = 2
MSG_CAPTURE = 3
MSG_TRACE = 4
MSG_POLICY_VERDICT = 5
MSG_TRACE_SOCK = 7
MSG_ACCESS_LOG = 129
MSG_AGENT = 130

# `hubble observe -t/--type` names -> message type (pkg/monitor/api/types.go MessageTypeNames)
TYPE_FLAG = {"drop": MSG_DROP, "debug": MSG_DEBUG, "capture": MSG_CAPTURE, "trace": MSG_TRACE, "l7": MSG_ACCESS_LOG,
             "agent": MSG_AGENT, "policy-verdict": MSG_POLICY_VERDICT, "trace-sock": MSG_TRACE_SOCK}
# the type label of hubble_flows_processed_total (pkg/hubble/metrics/flow/handler.go)
# ("Unknown" for the others, with the type number as subtype)
MSG_TYPE_NAMES = {MSG_DROP: "Drop", MSG_CAPTURE: "Capture", MSG_TRACE: "Trace", MSG_POLICY_VERDICT: "PolicyVerdict",
                  MSG_ACCESS_LOG: "L7"}

# Drop reasons as `hubble observe` prints them (pkg/monitor/api/drop.go; codes from bpf/lib/common.h DROP_*)
DROP_REASONS = {
    0: "Success",
    2: "Invalid packet",
    3: "Interface",
    4: "Interface Decrypted",
    5: "LB, sock cgroup: No backend slot entry found",
    6: "LB, sock cgroup: No backend entry found",
    7: "LB, sock cgroup: Reverse entry update failed",
    8: "LB, sock cgroup: Reverse entry stale",
    9: "Fragmented packet",
    10: "Fragmented packet entry update failed",
    11: "Missed tail call to custom program",
    12: "Interface Decrypting",
    13: "Interface Encrypting",
    14: "LB: sock cgroup: Reverse entry delete succeeded",
    15: "MTU error message",
    130: "Invalid source mac",
    131: "Invalid destination mac",
    132: "Invalid source ip",
    133: "Policy denied",
    134: "Invalid packet",
    135: "CT: Truncated or invalid header",
    136: "Fragmentation needed",
    137: "CT: Unknown L4 protocol",
    138: "CT: Can't create entry from packet",
    139: "Unsupported L3 protocol",
    140: "Missed tail call",
    141: "Error writing to packet",
    142: "Unknown L4 protocol",
    143: "Unknown ICMPv4 code",
    144: "Unknown ICMPv4 type",
    145: "Unknown ICMPv6 code",
    146: "Unknown ICMPv6 type",
    147: "Error retrieving tunnel key",
    148: "Error retrieving tunnel options",
    149: "Invalid Geneve option",
    150: "Unknown L3 target address",
    151: "Stale or unroutable IP",
    152: "No matching local container found",
    153: "Error while correcting L3 checksum",
    154: "Error while correcting L4 checksum",
    155: "CT: Map insertion failed",
    156: "Invalid IPv6 extension header",
    157: "IP fragmentation not supported",
    158: "Service backend not found",
    160: "No tunnel/encapsulation endpoint (datapath BUG!)",
    161: "NAT 46/64 not enabled",
    162: "Reached EDT rate-limiting drop horizon",
    163: "Unknown connection tracking state",
    164: "Local host is unreachable",
    165: "No configuration available to perform policy decision",
    166: "Unsupported L2 protocol",
    167: "No mapping for NAT masquerade",
    168: "Unsupported protocol for NAT masquerade",
    169: "FIB lookup failed",
    170: "Encapsulation traffic is prohibited",
    171: "Invalid identity",
    172: "Unknown sender",
    173: "NAT not needed",
    174: "Is a ClusterIP",
    175: "First logical datagram fragment not found",
    176: "Forbidden ICMPv6 message",
    177: "Denied by LB src range check",
    178: "Socket lookup failed",
    179: "Socket assign failed",
    180: "Proxy redirection not supported for protocol",
    181: "Policy denied by denylist",
    182: "VLAN traffic disallowed by VLAN filter",
    183: "Incorrect VNI from VTEP",
    184: "Failed to update or lookup TC buffer",
    185: "No SID was found for the IP address",
    186: "SRv6 state was removed during tail call",
    187: "L3 translation from IPv4 to IPv6 failed (NAT46)",
    188: "L3 translation from IPv6 to IPv4 failed (NAT64)",
    189: "Authentication required",
    190: "No conntrack map found",
    191: "No nat map found",
    192: "Invalid ClusterID",
    193: "Unsupported packet protocol for DSR encapsulation",
    194: "No egress gateway found",
    195: "Traffic is unencrypted",
    196: "TTL exceeded",
    197: "No node ID found",
    198: "Rate limited",
    199: "IGMP handled",
    200: "IGMP subscribed",
    201: "Multicast handled",
    202: "Host datapath not ready",
    203: "Endpoint policy program not available",
    204: "No Egress IP configured",
    205: "Punt to proxy",
}

# Trace observation points as monitor sub types (pkg/monitor/api/types.go TraceObservationPoints,
# bpf/lib/trace.h enum trace_point). flow.proto's trace_observation_point differs only for 0: TO_ENDPOINT = 101.
TRACE_POINTS = {
    0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack", 4: "to-overlay", 5: "from-endpoint",
    6: "from-proxy", 7: "from-host", 8: "from-stack", 9: "from-overlay", 10: "from-network", 11: "to-network",
    12: "from-crypto", 13: "to-crypto",
}
TRACE_TO_ENDPOINT = 0
FLOW_TO_ENDPOINT = 101

# Policy match types (pkg/monitor/api/types.go PolicyMatchType.String, bpf/lib/policy.h POLICY_MATCH_*)
MATCH_TYPES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all", 5: "L3-Proto", 6: "Proto-Only"}

# Reserved identities by name (pkg/identity/numericidentity.go reservedIdentityNames); hubble prints these as
# "(world)" and every other identity as "(ID:n)"
RESERVED_IDENTITIES = {
    0: "unknown", 1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node",
    7: "kube-apiserver", 8: "ingress", 9: "world-ipv4", 10: "world-ipv6",
}

PROTO_NAMES = {1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

# TCP header flag bits, in the order Hubble lists them in summaries (pkg/hubble/parser/threefour getTCPFlags)
TCP_FLAG_BITS = [("SYN", 0x02), ("ACK", 0x10), ("RST", 0x04), ("FIN", 0x01), ("PSH", 0x08), ("URG", 0x20),
                 ("ECE", 0x40), ("CWR", 0x80)]

# ICMPv4 type and code names of gopacket's ICMPv4TypeCode.String() (layers/icmp4.go), which Cilium's flow
# parser puts in the summary
ICMP4_TYPES = {0: "EchoReply", 3: "DestinationUnreachable", 4: "SourceQuench", 5: "Redirect", 8: "EchoRequest",
               9: "RouterAdvertisement", 10: "RouterSolicitation", 11: "TimeExceeded", 12: "ParameterProblem",
               13: "TimestampRequest", 14: "TimestampReply", 15: "InfoRequest", 16: "InfoReply",
               17: "AddressMaskRequest", 18: "AddressMaskReply"}
ICMP4_CODES = {
    3: {0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded", 5: "SourceRoutingFailed",
        6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated", 9: "NetAdminProhibited", 10: "HostAdminProhibited",
        11: "NetTOS", 12: "HostTOS", 13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff"},
    5: {0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"},
    11: {0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"},
    12: {0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"},
}


def drop_reason(code: int) -> str:
    """As pkg/monitor/api/drop.go DropReason prints it: the name, or "<code>, 0" when it has none."""
    return DROP_REASONS.get(code, f"{code}, 0")


def trace_point(sub_type: int) -> str:
    return TRACE_POINTS.get(sub_type, str(sub_type))


def identity_label(identity: int) -> str:
    """How Hubble's compact output shows an identity: (world) for reserved ones, (ID:1234) otherwise."""
    name = RESERVED_IDENTITIES.get(identity)
    return f"({name})" if name is not None else f"(ID:{identity})"


def icmp4_summary(typ: int, code: int) -> str:
    name = ICMP4_TYPES.get(typ)
    if name is None:
        return f"ICMPv4 {typ}({code})"
    codes = ICMP4_CODES.get(typ)
    if codes is None:
        return f"ICMPv4 {name}" if code == 0 else f"ICMPv4 {name}(Code: {code})"
    return f"ICMPv4 {name}({codes[code]})" if code in codes else f"ICMPv4 {name}(Code: {code})"
