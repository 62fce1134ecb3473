"""Go standard-library parsers the Cilium agent relies on, reproduced exactly where verdicts depend on them:
strconv.ParseUint(s, 0, 16), net/netip.ParsePrefix / ParseAddr, iana.IsSvcName, and the Kubernetes
apimachinery name/label validators."""

from __future__ import annotations

import ipaddress
import re

# ------------------------------------------------------------------------------------------ strconv


def _underscore_ok(s: str) -> bool:
    """strconv.underscoreOK: underscores only between digits (or after a base prefix)."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if c.isdigit() and c.isascii() or hexa and c.lower() in "abcdef":
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_uint(s: str, bits: int = 64) -> tuple[int | None, str]:
    """strconv.ParseUint(s, 0, bits): (value, "") or (None, "invalid syntax" | "value out of range")."""
    if not s:
        return None, "invalid syntax"
    s0 = s
    base = 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "b":
            base, s = 2, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, s = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "x":
            base, s = 16, s[2:]
        else:
            base, s = 8, s[1:]
    max_val = (1 << bits) - 1
    n = 0
    underscores = False
    overflow = False
    for c in s:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z" and c.isascii():
            d = ord(c.lower()) - 87
        else:
            return None, "invalid syntax"
        if d >= base:
            return None, "invalid syntax"
        n = n * base + d
        if n > max_val:
            overflow = True
    if underscores and not _underscore_ok(s0):
        return None, "invalid syntax"
    if overflow:
        return None, "value out of range"
    return n, ""


# ------------------------------------------------------------------------------------------ net/netip

def parse_addr(s: str):
    """netip.ParseAddr: an IPv4 (no leading zeros) or IPv6 address (zone allowed); None when invalid."""
    if not s:
        return None
    first = next((c for c in s if c in ".:%"), "")
    try:
        if first == ":":
            addr, sep, zone = s.partition("%")
            if sep and not zone:
                return None  # the zone must be non-empty
            # Go keeps everything after % as the zone (even a "/64"); Python's parser wants a plain one
            parsed = ipaddress.IPv6Address(addr)
            return ipaddress.IPv6Address(f"{addr}%zone") if sep else parsed  # the zone's text does not matter
        if first == ".":
            return ipaddress.IPv4Address(s)
        return None
    except ValueError:
        return None


def parse_prefix(s: str):
    """netip.ParsePrefix: (address, bits) or an error string like Go's."""
    i = s.rfind("/")
    if i < 0:
        return None, f'netip.ParsePrefix("{s}"): no \'/\''
    addr = parse_addr(s[:i])
    if addr is None:
        return None, f'netip.ParsePrefix("{s}"): ParseAddr("{s[:i]}"): unable to parse IP'
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return None, f'netip.ParsePrefix("{s}"): IPv6 zones cannot be present in a prefix'
    bits_s = s[i + 1:]
    if not bits_s or not bits_s.isascii() or not bits_s.isdigit() or (len(bits_s) > 1 and bits_s[0] == "0"):
        return None, f'netip.ParsePrefix("{s}"): bad bits after slash: "{bits_s}"'
    bits = int(bits_s)
    if bits > addr.max_prefixlen:
        return None, f'netip.ParsePrefix("{s}"): prefix length out of range'
    return (addr, bits), ""


def prefix_contains(prefix, addr) -> bool:
    """netip.Prefix.Contains: same family, no zone, first `bits` bits equal."""
    paddr, bits = prefix
    if type(paddr) is not type(addr):
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return False
    shift = paddr.max_prefixlen - bits
    return (int(paddr) >> shift) == (int(addr) >> shift) if bits else True


def is_k8s_cidr(s: str) -> bool:
    """The OpenAPI `cidr` format (Go net.ParseCIDR): address/bits, bits within the family's length."""
    if "/" not in s:
        return False
    addr_s, bits_s = s.split("/", 1)
    if not bits_s.isascii() or not bits_s.isdigit() or len(bits_s) > 3:
        return False
    addr = parse_addr(addr_s)
    if addr is None or (isinstance(addr, ipaddress.IPv6Address) and addr.scope_id):
        return False
    return int(bits_s) <= addr.max_prefixlen


# ------------------------------------------------------------------------------------------ time

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,]\d+)?(?:Z|[+-](\d{2}):(\d{2}))$")


def is_rfc3339(s: str) -> bool:
    """time.Parse(time.RFC3339, s) succeeds (metav1.Time): date, T, time, optional fraction, Z or +hh:mm."""
    import calendar

    m = _RFC3339.match(s)
    if not m:
        return False
    year, month, day, hour, minute, sec = (int(x) for x in m.groups()[:6])
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year or 2000, month)[1]:
        return False
    if hour > 23 or minute > 59 or sec > 59:
        return False
    if m.group(7) is not None and (int(m.group(7)) > 23 or int(m.group(8)) > 59):
        return False
    return True


# ------------------------------------------------------------------------------------------ iana

_SVC_NAME = re.compile(r"^([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$")


def is_svc_name(name: str) -> bool:
    """iana.IsSvcName: RFC 6335 service names (letters, digits, single dashes, at least one letter, <= 15)."""
    return 0 < len(name) <= 15 and _SVC_NAME.match(name) is not None


# ------------------------------------------------------------------------------------------ apimachinery

_QNAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME = re.compile(r"^[-a-z0-9]+$")


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                    "must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')")
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                    "'.', and must start and end with an alphanumeric character (e.g. 'example.com')")
    return errs


def qualified_name(value: str) -> list[str]:
    """validation.IsQualifiedName: [DNS-subdomain prefix/]name, name <= 63 of [A-Za-z0-9-_.]."""
    errs = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in dns1123_subdomain(prefix))
    else:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                "end with an alphanumeric character, with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QNAME.match(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')")
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(value):
        errs.append("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', "
                    "or '12345')")
    return errs


def port_name(value: str) -> list[str]:
    """validation.IsValidPortName (Kubernetes named ports: lowercase IANA service names)."""
    errs = []
    if len(value) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs
