"""ICMP type names of Cilium's policy language, and how its decoder checks them (pkg/policy/api/icmp.go:
icmpIpv4TypeNameToCode, icmpIpv6TypeNameToCode, ICMPField.UnmarshalJSON)."""

from __future__ import annotations

import re

IPV4 = "IPv4"
IPV6 = "IPv6"

ICMPV4_TYPES = {"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8, "EchoRequest": 8,
                "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
                "Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42,
                "ExtendedEchoReply": 43}
ICMPV6_TYPES = {"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
                "EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130,
                "MulticastListenerReport": 131, "MulticastListenerDone": 132, "RouterSolicitation": 133,
                "RouterAdvertisement": 134, "NeighborSolicitation": 135, "NeighborAdvertisement": 136,
                "RedirectMessage": 137, "RouterRenumbering": 138, "ICMPNodeInformationQuery": 139,
                "ICMPNodeInformationResponse": 140, "InverseNeighborDiscoverySolicitation": 141,
                "InverseNeighborDiscoveryAdvertisement": 142, "HomeAgentAddressDiscoveryRequest": 144,
                "HomeAgentAddressDiscoveryReply": 145, "MobilePrefixSolicitation": 146,
                "MobilePrefixAdvertisement": 147, "DuplicateAddressRequestCodeSuffix": 157,
                "DuplicateAddressConfirmationCodeSuffix": 158, "ExtendedEchoRequest": 160,
                "ExtendedEchoReply": 161}

_ATOI = re.compile(r"[+-]?[0-9]+")


def names(family: str) -> dict:
    """The name table Cilium looks a type name up in: IPv6's for family IPv6, IPv4's for anything else."""
    return ICMPV6_TYPES if family == IPV6 else ICMPV4_TYPES


def is_name(value: str) -> bool:
    """Whether Cilium reads a string type as a name: IntOrString.IntValue() (strconv.Atoi, 0 on failure) is 0
    and the string is not "0". So "08" and "-1" are numbers, "00", "0x8" and " 8" are names."""
    return value != "0" and not (_ATOI.fullmatch(value) and int(value) != 0)


def type_name_problem(value: str, family: str) -> str | None:
    """Cilium's decoder error for a string ICMP type, with a hint; None when the type is accepted."""
    if not is_name(value) or value in names(family):
        return None
    shown = family or '""'
    other = ICMPV4_TYPES if family == IPV6 else ICMPV6_TYPES
    if value in other:
        right = IPV4 if family == IPV6 else IPV6
        return (f"ICMP type {value} not found in {shown}: {value} is an {right} type name; set family: {right} "
                f"(or use the number)")
    table = names(family)
    lower = {n.lower(): n for n in table}
    hint = (f"did you mean {lower[value.strip().lower()]!r}? names are case-sensitive" if value.strip().lower() in lower
            else f"use a number 0-255 or one of {', '.join(sorted(table))}")
    return f"ICMP type {value} not found in {shown}: {hint}"
