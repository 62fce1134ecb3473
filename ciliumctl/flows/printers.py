"""Printing GetFlowsResponse streams in hubble's output formats: compact (default), dict, table, json/jsonpb
(one JSON GetFlowsResponse per line), and counts aggregated by fields (--aggregate-by)."""

from __future__ import annotations

import sys
import time
from collections import Counter

from ciliumctl.flows import color, jsonpb, names
from ciliumctl.flows.pb.flow import flow_pb2 as pb

OUTPUTS = ("compact", "dict", "json", "jsonpb", "table")
AGGREGATE_FIELDS = ("source", "destination", "port", "verdict", "protocol", "type", "direction", "drop-reason",
                    "policy", "source-identity", "destination-identity")
DICT_SEPARATOR = "------------"

_VERDICT_NAMES = {v.number: v.name for v in pb.Verdict.DESCRIPTOR.values}
_DIRECTION_NAMES = {v.number: v.name for v in pb.TrafficDirection.DESCRIPTOR.values}
_LOST_SOURCES = {v.number: v.name for v in pb.LostEventSource.DESCRIPTOR.values}


def fmt_timestamp(ts) -> str:
    """Go's time.StampMilli ("Jan _2 15:04:05.000") in UTC, as hubble prints flow times."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "N/A"
    g = time.gmtime(ts.seconds)
    return f"{time.strftime('%b', g)} {g.tm_mday:2d} {time.strftime('%H:%M:%S', g)}.{ts.nanos // 1_000_000:03d}"


def ports(f) -> tuple[str, str]:
    which = f.l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        p = getattr(f.l4, which)
        return str(p.source_port), str(p.destination_port)
    return "", ""


def _hostname(ip: str, port: str, ep, svc, names_: list[str], translate: bool = True,
              paint: color.Colorer = color.PLAIN) -> str:
    """printer.go Hostname: the pod, else the service, else the DNS names, else the address; a service on the
    flow gives the namespace, also to the pod (GetHostNames)."""
    host = ip
    ns = svc.namespace if svc is not None else ep.namespace
    if translate and ep.pod_name:   # --numeric / --ip-translation=false: addresses, never names
        host = f"{ns}/{ep.pod_name}" if ns else ep.pod_name
    elif translate and svc is not None and svc.name:
        host = f"{ns}/{svc.name}" if ns else svc.name
    elif translate and names_:
        host = ",".join(names_)
    if port and port != "0":
        # printer.go Hostname: net.JoinHostPort(host, colour.port(port)), all of it coloured as the host
        host = f"[{host}]:{paint.port(port)}" if ":" in host else f"{host}:{paint.port(port)}"
    return paint.host(host)


def hostnames(f, translate: bool = True, paint: color.Colorer = color.PLAIN) -> tuple[str, str]:
    if not f.HasField("IP"):
        # no IPv4 addresses (e.g. an IPv6 drop): name what is known of the endpoints
        if not translate:
            return "", ""
        return (paint.host(endpoint_key(f.source, "") or "-"),
                paint.host(endpoint_key(f.destination, "") or "-"))
    sp, dp = ports(f)
    return (_hostname(f.IP.source, sp, f.source, f.source_service if f.HasField("source_service") else None,
                      list(f.source_names), translate, paint),
            _hostname(f.IP.destination, dp, f.destination,
                      f.destination_service if f.HasField("destination_service") else None,
                      list(f.destination_names), translate, paint))


def flow_type(f) -> str:
    """hubble's TYPE column (hubble/pkg/printer GetFlowType): the trace point, the drop reason, or
    policy-verdict:<match> <DIRECTION>; an L7 flow: <protocol>-<request|response>, DNS with its observation
    source ("dns-request proxy")."""
    if f.HasField("l7"):
        l7 = f.l7
        kind = pb.L7FlowType.Name(l7.type).lower()
        record = l7.WhichOneof("record")
        if record == "dns":
            kind += " " + l7.dns.observation_source
        return f"{record or 'l7'}-{kind}"
    et = f.event_type
    if et.type == names.MSG_TRACE:
        return names.trace_point(et.sub_type)
    if et.type == names.MSG_DROP:
        return names.drop_reason(et.sub_type)
    if et.type == names.MSG_POLICY_VERDICT:
        return (f"policy-verdict:{names.MATCH_TYPES.get(f.policy_match_type, 'unknown')} "
                f"{_DIRECTION_NAMES.get(f.traffic_direction, str(f.traffic_direction))}")
    return "UNKNOWN"


def verdict_text(f, policy_names: bool = False) -> str:
    """hubble's VERDICT column (hubble/pkg/printer getVerdict): policy verdicts read ALLOWED / DENIED / AUDITED,
    with --print-policy-names followed by " BY name (Kind), ..." of the rules on the flow's side."""
    v = f.verdict
    pv = f.event_type.type == names.MSG_POLICY_VERDICT
    text = _VERDICT_NAMES.get(v, str(v))
    if pv and v in (pb.FORWARDED, pb.REDIRECTED, pb.DROPPED, pb.ERROR):
        allowed = v in (pb.FORWARDED, pb.REDIRECTED)
        text = "ALLOWED" if allowed else "DENIED"
        if policy_names:
            if f.traffic_direction == pb.EGRESS:
                text += _by(f.egress_allowed_by if allowed else f.egress_denied_by)
            elif f.traffic_direction == pb.INGRESS:
                text += _by(f.ingress_allowed_by if allowed else f.ingress_denied_by)
    elif pv and v == pb.AUDIT:
        text = "AUDITED"
    return text


def _by(policies) -> str:
    named = [f"{p.name} ({p.kind})" for p in policies if p.kind and p.name]
    return " BY " + ", ".join(named) if named else ""


def _policy_name(p) -> str:
    return f"{p.namespace}/{p.name}" if p.namespace else p.name


def policy_names(f) -> str:
    """The policies that decided the flow: "allowed by a/b, c" / "denied by ..."; "" when none are known."""
    allowed = list(f.ingress_allowed_by) + list(f.egress_allowed_by)
    denied = list(f.ingress_denied_by) + list(f.egress_denied_by)
    parts = []
    if allowed:
        parts.append("allowed by " + ", ".join(sorted({_policy_name(p) for p in allowed})))
    if denied:
        parts.append("denied by " + ", ".join(sorted({_policy_name(p) for p in denied})))
    return "; ".join(parts)


def endpoint_key(ep, ip: str) -> str:
    if ep.pod_name:
        return f"{ep.namespace}/{ep.pod_name}" if ep.namespace else ep.pod_name
    if ep.labels and ep.labels[0].startswith("reserved:") and len(ep.labels) == 1:
        return f"{ip} ({ep.labels[0].split(':', 1)[1]})"
    return ip


def aggregate_key(f, field: str) -> str:
    if field == "source":
        return endpoint_key(f.source, f.IP.source)
    if field == "destination":
        return endpoint_key(f.destination, f.IP.destination)
    if field == "port":
        which = f.l4.WhichOneof("protocol") or ""
        _, dp = ports(f)
        if which.startswith("ICMP"):
            return f"{which} {getattr(f.l4, which).type}"
        return f"{dp}/{which}" if dp else which or "-"
    if field == "verdict":
        return _VERDICT_NAMES.get(f.verdict, str(f.verdict))
    if field == "protocol":
        return f.l4.WhichOneof("protocol") or "-"
    if field == "type":
        return flow_type(f)
    if field == "direction":
        return _DIRECTION_NAMES.get(f.traffic_direction, "-")
    if field == "drop-reason":
        return pb.DropReason.Name(f.drop_reason_desc) if f.drop_reason_desc else "-"
    if field == "policy":
        return policy_names(f) or "-"
    if field == "source-identity":
        return str(f.source.identity)
    if field == "destination-identity":
        return str(f.destination.identity)
    raise ValueError(field)


class Printer:
    def __init__(self, output: str = "compact", out=None, err=None, colour: bool = False,
                 node_name: bool = False, print_policy_names: bool = False, follow: bool = False,
                 time_format: str | None = None, ip_translation: bool = True):
        from ciliumctl.flows import timefmt

        self._ts = timefmt.formatter(time_format) if time_format else fmt_timestamp
        self.translate = ip_translation
        self.output = output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.paint = color.Colorer(colour and output in color.OUTPUTS)
        self.node_name = node_name
        self.policies = print_policy_names
        self.follow = follow
        self.line = 0
        self._rows: list[list[str]] = []

    def write_many(self, resps) -> None:
        """A list of GetFlowsResponse, or (json/jsonpb output) the bytes of their JSON lines as the agent
        rendered them (client.stream_batches(json_lines=True)), written out unchanged."""
        if isinstance(resps, bytes):
            buf = getattr(self.out, "buffer", None)
            if buf is None:
                self.out.write(resps.decode())
            else:
                self.out.flush()   # what went out as text first
                buf.write(resps)
                if self.follow:    # a reader at the other end of a pipe sees each batch as it comes
                    buf.flush()
            self.line += resps.count(b"\n")
            return
        if self.output in ("json", "jsonpb"):
            # one write per batch: the JSON path is what scripts pipe at high rates
            enc = jsonpb.encode
            self.out.write("".join([enc(r) + "\n" for r in resps]))
            self.line += len(resps)
        else:
            for r in resps:
                self.write(r)
        if self.follow:
            self.out.flush()

    # ---- one response

    def write(self, resp) -> None:
        which = resp.WhichOneof("response_types")
        if which == "flow":
            self._flow(resp)
        elif which == "lost_events":
            self._lost(resp)
        elif which == "node_status" and self.output in ("json", "jsonpb"):
            self.err.write(jsonpb.encode(resp) + "\n")

    def _lost(self, resp) -> None:
        """As hubble 1.19's WriteLostEvent: a line, dict entry or table row of its own on stdout."""
        le = resp.lost_events
        if self.output in ("json", "jsonpb"):
            self.out.write(jsonpb.encode(resp) + "\n")
            return
        ts, source = self._ts(resp.time), _LOST_SOURCES.get(le.source, str(le.source))
        node = resp.node_name or "-"
        if self.output == "compact":
            self.out.write(f"{ts} EVENTS LOST: {source} CPU({le.cpu.value}) {le.num_events_lost}\n")
        elif self.output == "dict":
            lines = [DICT_SEPARATOR] if self.line else []
            lines.append(f"  TIMESTAMP: {ts}")
            if self.node_name:
                lines.append(f"       NODE: {node}")
            lines += [f"     SOURCE: {source}", "       TYPE: EVENTS LOST", "    VERDICT: -",
                      f"    SUMMARY: CPU({le.cpu.value}) - {le.num_events_lost}"]
            self.out.write("\n".join(lines) + "\n")
        elif self.output == "table":
            self._rows.append([ts] + ([node] if self.node_name else []) +
                              [source, "-", "EVENTS LOST", "-", f"CPU({le.cpu.value}) - {le.num_events_lost}"])
            if self.follow:
                self._flush_table()
        self.line += 1

    def _verdict(self, f) -> str:
        return self.paint.verdict(f.verdict, verdict_text(f, self.policies))

    def _flow(self, resp) -> None:
        f = resp.flow
        out = self.output
        if out in ("json", "jsonpb"):
            self.out.write(jsonpb.encode(resp) + "\n")
        elif out == "compact":
            src, dst = hostnames(f, self.translate, self.paint)
            sid = self.paint.identity(names.identity_label(f.source.identity))
            did = self.paint.identity(names.identity_label(f.destination.identity))
            arrow = "->"
            if not f.HasField("is_reply"):
                arrow = "<>"
            elif f.is_reply.value:
                src, dst, sid, did, arrow = dst, src, did, sid, "<-"
            node = f" [{f.node_name}]" if self.node_name else ""
            verdict = self._verdict(f)
            self.out.write(f"{self._ts(f.time)}{node}: {src} {sid} {arrow} {dst} {did} {flow_type(f)} "
                           f"{verdict} ({f.Summary})\n")
        elif out == "dict":
            src, dst = hostnames(f, self.translate, self.paint)
            lines = []
            if self.line:
                lines.append(DICT_SEPARATOR)
            lines.append(f"  TIMESTAMP: {self._ts(f.time)}")
            if self.node_name:
                lines.append(f"       NODE: {f.node_name}")
            lines += [f"     SOURCE: {src}", f"DESTINATION: {dst}", f"       TYPE: {flow_type(f)}",
                      f"    VERDICT: {self._verdict(f)}", f"    SUMMARY: {f.Summary}"]
            self.out.write("\n".join(lines) + "\n")
        elif out == "table":
            src, dst = hostnames(f, self.translate)
            row = [self._ts(f.time)] + ([f.node_name] if self.node_name else []) + \
                [src, dst, flow_type(f), self._verdict(f), f.Summary]
            self._rows.append(row)
            if self.follow:
                self._flush_table()
        self.line += 1

    def _flush_table(self) -> None:
        if not self._rows:
            return
        header = ["TIMESTAMP"] + (["NODE"] if self.node_name else []) + \
            ["SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
        rows = self._rows
        if not getattr(self, "_header_done", False):
            rows = [header] + rows
            self._header_done = True
        # like Go's tabwriter(minwidth 2, padding 3): every column but the last padded to its widest cell + 3
        widths = [max(2, max(len(r[i]) for r in rows)) + 3 for i in range(len(header) - 1)]
        for r in rows:
            self.out.write("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1] + "\n")
        self._rows = []

    def close(self) -> None:
        if self.output == "table":
            self._flush_table()
        self.out.flush()


class Aggregator:
    """Counts of flows per combination of the chosen fields (--aggregate-by source,destination,port,verdict)."""

    def __init__(self, fields: list[str]):
        bad = [f for f in fields if f not in AGGREGATE_FIELDS]
        if bad or not fields:
            from ciliumctl.base.errors import UsageError

            raise UsageError(f"--aggregate-by {','.join(fields)}: fields are {', '.join(AGGREGATE_FIELDS)}")
        self.fields = fields
        self.counts: Counter = Counter()
        self.lost = 0

    def write_many(self, resps) -> None:
        for r in resps:
            self.write(r)

    def write(self, resp) -> None:
        which = resp.WhichOneof("response_types")
        if which == "flow":
            f = resp.flow
            self.counts[tuple(aggregate_key(f, k) for k in self.fields)] += 1
        elif which == "lost_events":
            self.lost += resp.lost_events.num_events_lost

    def rows(self) -> list[dict]:
        return [dict(zip(self.fields, key), count=n) for key, n in
                sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def print(self, output: str, out=None, err=None) -> None:
        out = out or sys.stdout
        err = err or sys.stderr
        rows = self.rows()
        if output in ("json", "jsonpb"):
            import json

            out.write(json.dumps(rows, indent=2) + "\n")
        else:
            header = [f.upper() for f in self.fields] + ["FLOWS"]
            cells = [header] + [[r[f] for f in self.fields] + [str(r["count"])] for r in rows]
            widths = [max(len(c[i]) for c in cells) + 3 for i in range(len(header) - 1)]
            for c in cells:
                out.write("".join(x.ljust(w) for x, w in zip(c, widths)) + c[-1] + "\n")
        if self.lost:
            err.write(f"EVENTS LOST: {self.lost}\n")
        out.flush()
