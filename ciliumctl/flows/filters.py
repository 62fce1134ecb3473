"""Hubble's flow filters: matching a flow against FlowFilter lists (server side) and building those lists from
`observe` flags (client side), with Hubble's semantics:

- all fields set in one FlowFilter must match (AND); within a field, any listed value may match (OR);
- a list of filters matches when any filter matches (OR); a flow is returned when it matches the whitelist
  (or the whitelist is empty) and matches nothing in the blacklist;
- CLI flags: --pod/--ip/--label/--port/--namespace match either side (two filters, source and destination),
  --from-*/--to-* one side, other flags apply to every filter, --not sends the next filter flag to the
  blacklist instead.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from ciliumctl.base.errors import UsageError
from ciliumctl.flows import names
from ciliumctl.flows.pb.flow import flow_pb2 as pb

# ---------------------------------------------------------------- label selectors (Kubernetes syntax)

_REQ = re.compile(r"\s*(!?)\s*([A-Za-z0-9_.:/\-]+)\s*"
                  r"(?:(==|=|!=)\s*([A-Za-z0-9_.\-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_selector(text: str):
    """A label selector -> list of (source, key, op, values). A key without "source:" matches any source."""
    reqs: list[tuple[str | None, str, str, tuple[str, ...]]] = []
    for part in _split_selector(text):
        m = _REQ.match(part)
        if not m:
            raise UsageError(f"invalid label selector {text!r}: cannot parse {part.strip()!r}")
        neg, key, op, val, setop, setvals = m.groups()
        source = None
        if ":" in key:
            source, key = key.split(":", 1)
        if neg:
            if op or setop:
                raise UsageError(f"invalid label selector {text!r}: '!' only goes with a bare key")
            reqs.append((source, key, "!", ()))
        elif op:
            reqs.append((source, key, "!=" if op == "!=" else "=", (val,)))
        elif setop:
            reqs.append((source, key, setop, tuple(v.strip() for v in setvals.split(",") if v.strip())))
        else:
            reqs.append((source, key, "exists", ()))
    if not reqs:
        raise UsageError(f"invalid label selector {text!r}: empty")
    return reqs


def _flow_labels(labels) -> list[tuple[str, str, str]]:
    out = []
    for lbl in labels:
        source, _, rest = lbl.partition(":") if ":" in lbl else ("any", "", lbl)
        key, _, value = rest.partition("=")
        out.append((source, key, value))
    return out


def selector_matches(reqs, labels) -> bool:
    parsed = _flow_labels(labels)
    for source, key, op, values in reqs:
        found = [v for s, k, v in parsed if k == key and (source in (None, "any") or s == source)]
        if op == "exists":
            ok = bool(found)
        elif op == "!":
            ok = not found
        elif op == "=":
            ok = values[0] in found
        elif op == "!=":
            ok = values[0] not in found
        elif op == "in":
            ok = any(v in values for v in found)
        else:  # notin
            ok = not any(v in values for v in found)
        if not ok:
            return False
    return True


# ---------------------------------------------------------------- matching

def _ip_matches(patterns, ip: str) -> bool:
    if not ip:
        return False
    for p in patterns:
        if "/" in p:
            try:
                if ipaddress.ip_address(ip) in ipaddress.ip_network(p, strict=False):
                    return True
            except ValueError:
                continue
        elif p == ip:
            return True
    return False


def _split_ns_name(selector: str) -> tuple[str, str]:
    if "/" in selector:
        ns, name = selector.split("/", 1)
        return ns, name
    return "default", selector


def _pod_matches(patterns, ep) -> bool:
    ns, pod = ep.namespace, ep.pod_name
    if not ns and not pod:
        return False
    for p in patterns:
        want_ns, prefix = _split_ns_name(p)
        # an empty namespace ("/", from -A) is any namespace
        if (not want_ns or want_ns == ns) and (not prefix or pod.startswith(prefix)):
            return True
    return False


def _ports(flow) -> tuple[int | None, int | None]:
    l4 = flow.l4
    which = l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        p = getattr(l4, which)
        return p.source_port, p.destination_port
    return None, None


_PROTO_OF = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "ICMPv4": "icmpv4", "ICMPv6": "icmpv6"}


def _protocol_matches(patterns, flow) -> bool:
    which = flow.l4.WhichOneof("protocol")
    proto = _PROTO_OF.get(which or "", "")
    l7 = flow.l7.WhichOneof("record") or ""      # hubble's filters/protocol.go: "http", "dns", "kafka" are L7
    for p in patterns:
        p = p.lower()
        if p == proto or (p == "icmp" and proto.startswith("icmp")) or (l7 and p == l7):
            return True
    return False


def _workload_matches(wanted, ep) -> bool:
    for w in wanted:
        for have in ep.workloads:
            if (not w.name or w.name == have.name) and (not w.kind or w.kind == have.kind):
                return True
    return False


def _tcp_flags_match(wanted, flow) -> bool:
    if flow.l4.WhichOneof("protocol") != "TCP":
        return False
    have = flow.l4.TCP.flags
    for w in wanted:
        if all(getattr(have, f.name) for f, v in w.ListFields() if v):
            return True
    return False


def _node_matches(patterns, node: str) -> bool:
    for p in patterns:
        if "/" in p:
            _, p = p.split("/", 1)
            p = p or "*"
        if fnmatch.fnmatchcase(node, p):
            return True
    return False


def _regexp(what: str, text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as err:
        raise ValueError(f"invalid {what} regular expression {text!r}: {err}") from None


def _namespaced_names(values) -> list[tuple[str | None, str]]:
    """[namespace/]name-prefix -> (namespace or None for any namespace ("/x", from -A), prefix); no namespace is
    "default" (pkg/hubble/filters/k8s.go filterByNamespacedName)."""
    out: list[tuple[str | None, str]] = []
    for v in values:
        ns, name = _split_ns_name(v)
        out.append((ns or None, name))
    return out


def _namespaced_matches(patterns, ns: str, name: str) -> bool:
    if not ns and not name:
        return False
    return any((want is None or want == ns) and name.startswith(prefix) for want, prefix in patterns)


# pkg/hubble/filters/http.go: a full code (404) or a prefix of one or two digits and "+" (5+, 40+)
_HTTP_CODE = re.compile(r"^[1-5][0-9]{2}$")
_HTTP_CODE_PREFIX = re.compile(r"^[1-5][0-9]?\+$")
_MSG_ACCESS_LOG = 129   # pkg/monitor/api/types.go MessageTypeAccessLog: the l7 event type


def _http_checks(ff, checks) -> None:
    """HTTP fields of one FlowFilter, as pkg/hubble/filters/http.go and httpheader.go match them."""
    if not (ff.http_status_code or ff.http_method or ff.http_path or ff.http_url or ff.http_header):
        return
    if ff.event_type and not any(e.type == _MSG_ACCESS_LOG for e in ff.event_type):
        raise ValueError("filtering by http fields requires the event type filter to only match 'l7' events")

    def http(f):
        return f.l7.http if f.l7.HasField("http") else None

    if ff.http_status_code:
        full, prefix = [], []
        for code in ff.http_status_code:
            if _HTTP_CODE.match(code):
                full.append(code)
            elif _HTTP_CODE_PREFIX.match(code):
                prefix.append(code[:-1])
            else:
                raise ValueError(f"invalid http status code filter: {code!r} (e.g. 404, 5+)")
        checks.append(lambda f: (h := http(f)) is not None and h.code != 0
                      and (f"{h.code:03d}" in full or any(f"{h.code:03d}".startswith(p) for p in prefix)))
    if ff.http_method:
        methods = {m.lower() for m in ff.http_method}
        checks.append(lambda f: (h := http(f)) is not None and h.method != "" and h.method.lower() in methods)
    if ff.http_path:
        paths = [_regexp("http path", x) for x in ff.http_path]
        checks.append(lambda f: (h := http(f)) is not None and h.url != ""
                      and (p := _url_path(h.url)) is not None and any(r.search(p) for r in paths))
    if ff.http_url:
        urls = [_regexp("http url", x) for x in ff.http_url]
        checks.append(lambda f: (h := http(f)) is not None and h.url != "" and any(r.search(h.url) for r in urls))
    if ff.http_header:
        want = [(w.key, w.value) for w in ff.http_header]
        checks.append(lambda f: (h := http(f)) is not None and any(
            (not k or k == hd.key) and (not v or v == hd.value) for hd in h.headers for k, v in want))


def _url_path(url: str) -> str | None:
    """The path of a request URI, None where Go's url.ParseRequestURI fails (http.go drops such flows)."""
    from urllib.parse import urlsplit

    if not (url.startswith("/") or "://" in url):
        return None
    try:
        return urlsplit(url).path
    except ValueError:
        return None


class CompiledFilter:
    """One FlowFilter turned into a list of checks (each check is one set field)."""

    def __init__(self, ff: pb.FlowFilter):
        from google.protobuf.unknown_fields import UnknownFieldSet

        unknown = UnknownFieldSet(ff)
        if len(unknown):
            # a field this server does not know would otherwise be ignored and let every flow through
            raise ValueError(f"unsupported flow filter field (number {unknown[0].field_number})")
        checks = []
        if ff.uuid:
            s = set(ff.uuid)
            checks.append(lambda f: f.uuid in s)
        if ff.source_ip:
            v = list(ff.source_ip)
            checks.append(lambda f: _ip_matches(v, f.IP.source))
        if ff.destination_ip:
            v2 = list(ff.destination_ip)
            checks.append(lambda f: _ip_matches(v2, f.IP.destination))
        if ff.source_pod:
            sp = list(ff.source_pod)
            checks.append(lambda f: _pod_matches(sp, f.source))
        if ff.destination_pod:
            dp = list(ff.destination_pod)
            checks.append(lambda f: _pod_matches(dp, f.destination))
        if ff.source_label:
            sels = [parse_selector(x) for x in ff.source_label]
            checks.append(lambda f: any(selector_matches(r, f.source.labels) for r in sels))
        if ff.destination_label:
            dsels = [parse_selector(x) for x in ff.destination_label]
            checks.append(lambda f: any(selector_matches(r, f.destination.labels) for r in dsels))
        if ff.source_fqdn:
            sf = list(ff.source_fqdn)
            checks.append(lambda f: any(fnmatch.fnmatch(n, p) for p in sf for n in f.source_names))
        if ff.destination_fqdn:
            df = list(ff.destination_fqdn)
            checks.append(lambda f: any(fnmatch.fnmatch(n, p) for p in df for n in f.destination_names))
        if ff.source_service:
            ss = _namespaced_names(ff.source_service)
            checks.append(lambda f: _namespaced_matches(ss, f.source_service.namespace, f.source_service.name))
        if ff.destination_service:
            ds = _namespaced_names(ff.destination_service)
            checks.append(lambda f: _namespaced_matches(ds, f.destination_service.namespace,
                                                        f.destination_service.name))
        _http_checks(ff, checks)
        if ff.dns_query:
            dq = [_regexp("dns query", x) for x in ff.dns_query]
            checks.append(lambda f: f.l7.HasField("dns") and any(r.search(f.l7.dns.query) for r in dq))
        if ff.trace_id:
            checks.append(lambda f: False)  # ciliumctl records no trace context: nothing matches
        if ff.interface:
            ifs = [(i.index, i.name) for i in ff.interface]
            checks.append(lambda f: f.HasField("interface") and any(
                (not idx or idx == f.interface.index) and (not nm or nm == f.interface.name) for idx, nm in ifs))
        if ff.node_labels:
            nls = [parse_selector(x) for x in ff.node_labels]
            checks.append(lambda f: any(selector_matches(r, f.node_labels) for r in nls))
        if ff.experimental.cel_expression:
            raise ValueError("CEL expressions (--cel-expression) are not supported by ciliumctl")
        if ff.source_workload:
            sw = list(ff.source_workload)
            checks.append(lambda f: _workload_matches(sw, f.source))
        if ff.destination_workload:
            dw = list(ff.destination_workload)
            checks.append(lambda f: _workload_matches(dw, f.destination))
        if ff.traffic_direction:
            td = set(ff.traffic_direction)
            checks.append(lambda f: f.traffic_direction in td)
        if ff.verdict:
            vs = set(ff.verdict)
            checks.append(lambda f: f.verdict in vs)
        if ff.drop_reason_desc:
            dr = set(ff.drop_reason_desc)
            checks.append(lambda f: f.drop_reason_desc in dr)
        if ff.event_type:
            # type 0 matches every type (pkg/hubble/filters/event_type.go)
            ets = [(e.type, e.match_sub_type, e.sub_type) for e in ff.event_type]
            checks.append(lambda f: any((not t or f.event_type.type == t) and (not m or f.event_type.sub_type == s)
                                        for t, m, s in ets))
        if ff.protocol:
            pr = list(ff.protocol)
            checks.append(lambda f: _protocol_matches(pr, f))
        if ff.source_port:
            sports = {int(p) for p in ff.source_port if p.isdigit()}
            checks.append(lambda f: _ports(f)[0] in sports)
        if ff.destination_port:
            dports = {int(p) for p in ff.destination_port if p.isdigit()}
            checks.append(lambda f: _ports(f)[1] in dports)
        if ff.reply:
            # an unknown is_reply counts as false on drops only (pkg/hubble/filters/reply.go)
            rs = set(ff.reply)
            checks.append(lambda f: (f.HasField("is_reply") or f.verdict == pb.DROPPED) and f.is_reply.value in rs)
        if ff.source_identity:
            si = set(ff.source_identity)
            checks.append(lambda f: f.source.identity in si)
        if ff.destination_identity:
            di = set(ff.destination_identity)
            checks.append(lambda f: f.destination.identity in di)
        if ff.tcp_flags:
            tf = list(ff.tcp_flags)
            checks.append(lambda f: _tcp_flags_match(tf, f))
        if ff.node_name:
            nn = list(ff.node_name)
            checks.append(lambda f: _node_matches(nn, f.node_name))
        if ff.ip_version:
            iv = set(ff.ip_version)
            checks.append(lambda f: f.IP.ipVersion in iv)
        self.checks = checks

    def __call__(self, flow) -> bool:
        for c in self.checks:
            if not c(flow):
                return False
        return True


class FlowMatcher:
    """whitelist - blacklist, as GetFlows applies them."""

    def __init__(self, whitelist=(), blacklist=()):
        try:
            self.white = [CompiledFilter(f) for f in whitelist]
            self.black = [CompiledFilter(f) for f in blacklist]
        except UsageError:
            raise
        except (ValueError, TypeError) as err:
            raise UsageError(f"invalid flow filter: {err}") from None

    def __call__(self, flow) -> bool:
        if self.white and not any(f(flow) for f in self.white):
            return False
        return not any(f(flow) for f in self.black)


# ---------------------------------------------------------------- building filters from flags

# flag -> (side, field): side "both" = source field on the left filter and destination field on the right one;
# "any" = the field on every filter.
FILTER_FLAGS = {
    "--pod": ("both", "pod"), "--from-pod": ("from", "pod"), "--to-pod": ("to", "pod"),
    "--ip": ("both", "ip"), "--from-ip": ("from", "ip"), "--to-ip": ("to", "ip"),
    "--label": ("both", "label"), "-l": ("both", "label"), "--from-label": ("from", "label"),
    "--to-label": ("to", "label"),
    "--port": ("both", "port"), "--from-port": ("from", "port"), "--to-port": ("to", "port"),
    "--namespace": ("both", "namespace"), "-n": ("both", "namespace"),
    "--from-namespace": ("from", "namespace"), "--to-namespace": ("to", "namespace"),
    "--identity": ("both", "identity"), "--from-identity": ("from", "identity"),
    "--to-identity": ("to", "identity"),
    "--protocol": ("any", "protocol"), "--verdict": ("any", "verdict"),
    "--drop-reason-desc": ("any", "drop_reason_desc"), "--traffic-direction": ("any", "traffic_direction"),
    "--type": ("any", "type"), "-t": ("any", "type"), "--node-name": ("any", "node_name"),
    "--uuid": ("any", "uuid"), "--tcp-flags": ("any", "tcp_flags"),
    "-A": ("both", "namespace"), "--all-namespaces": ("both", "namespace"),
    "--from-all-namespaces": ("from", "namespace"), "--to-all-namespaces": ("to", "namespace"),
    "--service": ("both", "service"), "--from-service": ("from", "service"), "--to-service": ("to", "service"),
    "--workload": ("both", "workload"), "--from-workload": ("from", "workload"),
    "--to-workload": ("to", "workload"),
    "--fqdn": ("both", "fqdn"), "--from-fqdn": ("from", "fqdn"), "--to-fqdn": ("to", "fqdn"),
    "--http-status": ("any", "http_status"), "--http-method": ("any", "http_method"),
    "--http-path": ("any", "http_path"), "--http-url": ("any", "http_url"), "--http-header": ("any", "http_header"),
    "--ip-version": ("any", "ip_version"), "-4": ("any", "ip_version"), "--ipv4": ("any", "ip_version"),
    "-6": ("any", "ip_version"), "--ipv6": ("any", "ip_version"),
    "--interface": ("any", "interface"), "--node-label": ("any", "node_label"),
    "--cel-expression": ("any", "cel_expression"),
}
# flags without a value (hubble's boolean filter flags) -> the value they stand for
NO_VALUE_FLAGS = {"-A": "", "--all-namespaces": "", "--from-all-namespaces": "", "--to-all-namespaces": "",
                  "-4": "v4", "--ipv4": "v4", "-6": "v6", "--ipv6": "v6"}
_IP_VERSIONS = {"v4": pb.IPv4, "v6": pb.IPv6, "none": pb.IP_NOT_USED}
_TRACE_SUBTYPES = {v: k for k, v in names.TRACE_POINTS.items()}


def _verdict(value: str) -> int:
    try:
        return pb.Verdict.Value(value.upper())
    except ValueError:
        raise UsageError(f"--verdict {value!r}: one of "
                         + ", ".join(n for n in pb.Verdict.keys() if n != "VERDICT_UNKNOWN")) from None


def _drop_reason(value: str) -> int:
    try:
        return pb.DropReason.Value(value.upper())
    except ValueError:
        raise UsageError(f"--drop-reason-desc {value!r}: not a drop reason (e.g. POLICY_DENIED, POLICY_DENY)") \
            from None


def _direction(value: str) -> int:
    v = value.lower()
    if v not in ("ingress", "egress"):
        raise UsageError(f"--traffic-direction {value!r}: ingress or egress")
    return pb.INGRESS if v == "ingress" else pb.EGRESS


def _event_type(value: str) -> pb.EventTypeFilter:
    """-t TYPE[:SUBTYPE] as the hubble CLI reads it (hubble/cmd/observe/flows_filter.go): a type name or number,
    a trace point name or a number as subtype."""
    typ, _, sub = value.partition(":")
    if typ in names.TYPE_FLAG:
        code = names.TYPE_FLAG[typ]
    elif typ.isdigit():
        code = int(typ)
    else:
        raise UsageError(f"--type {value!r}: one of {', '.join(names.TYPE_FLAG)} or a number "
                         "(with a subtype, e.g. trace:to-endpoint)")
    et = pb.EventTypeFilter(type=code)
    if sub:
        if code == names.MSG_TRACE and sub in _TRACE_SUBTYPES:
            et.sub_type = _TRACE_SUBTYPES[sub]
        elif sub.isdigit():
            et.sub_type = int(sub)
        else:
            raise UsageError(f"--type {value!r}: unknown subtype {sub!r}")
        et.match_sub_type = True
    return et


def _tcp_flags(value: str) -> pb.TCPFlags:
    tf = pb.TCPFlags()
    for name in value.split(","):
        name = name.strip().upper()
        if name not in pb.TCPFlags.DESCRIPTOR.fields_by_name:
            raise UsageError(f"--tcp-flags {value!r}: flags are SYN, ACK, FIN, RST, PSH, URG, ECE, CWR, NS")
        setattr(tf, name, True)
    return tf


def _apply(ff: pb.FlowFilter, field: str, side: str, value: str) -> None:
    """side is "source" or "destination" for sided fields, ignored for the others."""
    if field == "pod":
        getattr(ff, f"{side}_pod").append(value)
    elif field == "ip":
        getattr(ff, f"{side}_ip").append(value)
    elif field == "label":
        parse_selector(value)  # refuse a bad selector on the client, with the flag in the message
        getattr(ff, f"{side}_label").append(value)
    elif field == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise UsageError(f"port {value!r}: a number 1..65535")
        getattr(ff, f"{side}_port").append(value)
    elif field == "identity":
        if not value.isdigit():
            raise UsageError(f"identity {value!r}: a number")
        getattr(ff, f"{side}_identity").append(int(value))
    elif field == "protocol":
        ff.protocol.append(value.lower())
    elif field == "verdict":
        ff.verdict.append(_verdict(value))
    elif field == "drop_reason_desc":
        ff.drop_reason_desc.append(_drop_reason(value))
    elif field == "traffic_direction":
        ff.traffic_direction.append(_direction(value))
    elif field == "type":
        ff.event_type.append(_event_type(value))
    elif field == "node_name":
        ff.node_name.append(value)
    elif field == "uuid":
        ff.uuid.append(value)
    elif field == "tcp_flags":
        ff.tcp_flags.append(_tcp_flags(value))
    elif field in ("service", "fqdn"):
        getattr(ff, f"{side}_{field}").append(value)
    elif field == "workload":
        kind, _, name = value.partition("/") if "/" in value else ("", "", value)
        getattr(ff, f"{side}_workload").append(pb.Workload(kind=kind, name=name))
    elif field in ("http_status", "http_method", "http_path", "http_url"):
        getattr(ff, "http_status_code" if field == "http_status" else field).append(value)
    elif field == "http_header":
        key, colon, val = value.partition(":")
        if not colon:
            raise UsageError(f"--http-header {value!r}: expected name:value")
        ff.http_header.append(pb.HTTPHeader(key=key, value=val))
    elif field == "ip_version":
        if value.lower() not in _IP_VERSIONS:
            raise UsageError(f"--ip-version {value!r}: one of v4, v6, none")
        ff.ip_version.append(_IP_VERSIONS[value.lower()])
    elif field == "interface":
        ff.interface.append(pb.NetworkInterface(name=value))
    elif field == "node_label":
        parse_selector(value)
        ff.node_labels.append(value)
    elif field == "cel_expression":
        raise UsageError("--cel-expression: ciliumctl has no CEL evaluator; use the other filter flags")
    elif field == "reply":
        ff.reply.append(value.lower() in ("true", "1", "yes"))


# The flag groups whose members the hubble CLI refuses together (hubble/cmd/observe/flows_filter.go,
# newFlowFilter's conflicts), in its order: the first pair found names the error, as hubble's checkConflict.
_CONFLICTS = (
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-namespace", "namespace", "from-all-namespaces", "all-namespaces"),
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-namespace", "namespace", "to-all-namespaces", "all-namespaces"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"),
    ("to-pod", "namespace", "all-namespaces"),
    ("from-pod", "namespace", "all-namespaces"),
    ("to-service", "namespace", "all-namespaces"),
    ("from-service", "namespace", "all-namespaces"),
    ("label", "from-label"), ("label", "to-label"),
    ("service", "from-service"), ("service", "to-service"),
    ("port", "to-port"), ("port", "from-port"),
    ("identity", "to-identity"), ("identity", "from-identity"),
    ("workload", "to-workload"), ("workload", "from-workload"),
)
_SHORT_FLAGS = {"-n": "namespace", "-A": "all-namespaces", "-l": "label", "-t": "type", "-4": "ipv4", "-6": "ipv6"}


def _check_conflicts(changed: list[str]) -> None:
    for group in _CONFLICTS:
        for flag in group:
            if flag in changed:
                for other in group:
                    if other != flag and other in changed:
                        raise UsageError(f"filters --{flag} and --{other} cannot be combined")


class _Builder:
    """hubble's filterTracker (hubble/cmd/observe/flows_filter.go): a left filter (sources of the either-side
    flags) and a right one (their destinations); namespaces are kept apart and folded into the pod and service
    names at the end, so `-n ns --pod a` means ns/a and `-n ns` alone any pod of ns."""

    def __init__(self):
        self.left: pb.FlowFilter | None = None
        self.right: pb.FlowFilter | None = None
        self.namespaces: dict[str, list[str]] = {"both": [], "from": [], "to": []}

    def add(self, flag: str, value: str) -> None:
        side, field = FILTER_FLAGS[flag]
        if field == "namespace":
            self.namespaces[side].append(value)
            return
        if self.left is None:
            self.left = pb.FlowFilter()
        if side == "both":
            # either side: the left filter looks at sources, the right one at destinations
            if self.right is None:
                self.right = pb.FlowFilter()
                self.right.CopyFrom(self.left)
            _apply(self.left, field, "source", value)
            _apply(self.right, field, "destination", value)
            return
        targets = [self.left] + ([self.right] if self.right is not None else [])
        for ff in targets:
            _apply(ff, field, "destination" if side == "to" else "source", value)

    def build(self) -> list[pb.FlowFilter]:
        if self.left is None and not any(self.namespaces.values()):
            return []
        left = self.left or pb.FlowFilter()
        right = pb.FlowFilter()
        right.CopyFrom(self.right or left)
        for ff in (left, right):
            _with_namespaces(ff, "destination", self.namespaces["to"])
            _with_namespaces(ff, "source", self.namespaces["from"])
        _with_namespaces(left, "source", self.namespaces["both"])
        _with_namespaces(right, "destination", self.namespaces["both"])
        return [left] if left == right else [left, right]


def _with_namespaces(ff: pb.FlowFilter, side: str, namespaces: list[str]) -> None:
    """hubble's namespaceModifier: names without a namespace get each one; no name at all is any pod there."""
    if not namespaces:
        return
    pods, services = getattr(ff, f"{side}_pod"), getattr(ff, f"{side}_service")
    if not pods and not services:
        pods.append("")
    for names_ in (pods, services):
        named: list[str] = []
        for name in names_:
            named += [name] if "/" in name else [f"{ns}/{name}" for ns in namespaces]
        del names_[:]
        names_.extend(named)


def filters_from_args(args: list[str]) -> tuple[list[pb.FlowFilter], list[pb.FlowFilter]]:
    """(whitelist, blacklist) from the command line in its original order (--not applies to the next filter)."""
    changed: dict[bool, list[str]] = {False: [], True: []}
    for negate, flag, _ in _filter_tokens(args):
        name = _SHORT_FLAGS.get(flag, flag.lstrip("-"))
        if name not in changed[negate]:
            changed[negate].append(name)
            _check_conflicts(changed[negate])
    white, black = _Builder(), _Builder()
    for negate, flag, value in _filter_tokens(args):
        (black if negate else white).add(flag, value)
    return white.build(), black.build()


def _filter_tokens(args: list[str]) -> Iterator[tuple[bool, str, str]]:
    """(negated, flag, value) of each filter flag; other arguments are skipped."""
    negate = False
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            break
        if tok == "--not":
            negate = True
            i += 1
            continue
        flag, eq, value = tok.partition("=")
        if flag not in FILTER_FLAGS:
            i += 1
            continue
        if flag in NO_VALUE_FLAGS:
            if eq and value.lower() in ("false", "0"):
                i += 1
                continue
            value = NO_VALUE_FLAGS[flag]
        elif not eq:
            if i + 1 >= len(args):
                raise UsageError(f"{flag} needs a value")
            value = args[i + 1]
            i += 1
        yield negate, flag, value
        negate = False
        i += 1
    if negate:
        raise UsageError("--not must be followed by a filter flag, e.g. --not --verdict DROPPED")


# ---------------------------------------------------------------- --since / --until

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_time(value: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (2024-05-01T10:00:00Z), a date-time without zone (UTC), or a duration ago: 30s, 5m, 1h30m."""
    now = now or datetime.now(UTC)
    v = value.strip()
    parts = _DUR.findall(v)
    if parts and "".join(n + u for n, u in parts) == v:
        mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
        return now - timedelta(seconds=sum(float(n) * mult[u] for n, u in parts))
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"time {value!r}: use RFC 3339 (2024-05-01T10:00:00Z) or a duration ago (30s, 5m, 1h)") \
            from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
