"""Prometheus metrics of the agent, in the text exposition format, named like Hubble's:
hubble_flows_processed_total{type,subtype,verdict}, hubble_drop_total{reason,protocol},
hubble_policy_verdicts_total{direction,match,action}, hubble_lost_events_total{source}; per service (Hubble has
no such metric: ours) ciliumctl_service_flows_total{namespace,service,verdict}, the flows of packets sent to a
service frontend (translated, or dropped: no backend, policy). Counted at ingestion from the store's per-key
counter (one C-level Counter.update per batch); a service is named by its id when the metrics are read."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ciliumctl.flows import names
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.store import FlowStore

_VERDICTS = {v.number: v.name for v in pb.Verdict.DESCRIPTOR.values}
_MATCH = {k: v.lower() for k, v in names.MATCH_TYPES.items()}   # lower-cased, as Hubble's policy metric labels
_DIRECTION = {1: "ingress", 2: "egress"}
_ACTION = {1: "forwarded", 2: "dropped", 4: "audit"}


def _labels(**kv) -> str:
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in kv.items())
    return "{" + inner + "}"


def _type_labels(typ: int, sub: int) -> tuple[str, str]:
    """type and subtype of hubble_flows_processed_total, as pkg/hubble/metrics/flow/handler.go names them."""
    if typ == names.MSG_TRACE:
        return "Trace", names.TRACE_POINTS.get(sub, "")
    if typ in names.MSG_TYPE_NAMES:
        return names.MSG_TYPE_NAMES[typ], ""
    return "Unknown", str(typ)


def render(store: FlowStore, extra: Callable[[], list[str]] | None = None,
           services: Callable[[], dict[int, tuple[str, str]]] | None = None) -> str:
    """services: service id -> (namespace, name), as the flows name them (flows.meta ServiceNames.by_id)."""
    with store.cond:
        keys = Counter(store.metric_keys)
        kernel_lost = store.lost_in_kernel
        seen = store.seen_flows
        held = store.num_entries()
    processed: Counter = Counter()
    drops: Counter = Counter()
    verdicts: Counter = Counter()
    per_service: Counter = Counter()
    for (_len, typ, sub, verdict, direction, proto, match, svc), n in keys.items():
        tname, subname = _type_labels(typ, sub)
        if typ == names.MSG_DROP:
            verdict = pb.DROPPED
        elif typ == names.MSG_TRACE:
            verdict = pb.FORWARDED   # as the flows say (convert.py)
        vname = _VERDICTS.get(verdict, str(verdict))
        processed[(tname, subname, vname)] += n
        if svc:
            per_service[(svc, vname)] += n
        if typ == names.MSG_DROP:
            rname = pb.DropReason.Name(sub) if sub in pb.DropReason.values() else str(sub)
            drops[(rname, names.PROTO_NAMES.get(proto, str(proto)))] += n
        if typ == names.MSG_POLICY_VERDICT:
            verdicts[(_DIRECTION.get(direction, "unknown"), _MATCH.get(match, str(match)),
                      _ACTION.get(verdict, str(verdict)))] += n
    out = ["# HELP hubble_flows_processed_total Total number of flows processed",
           "# TYPE hubble_flows_processed_total counter"]
    out += [f"hubble_flows_processed_total{_labels(type=t, subtype=s, verdict=v)} {n}"
            for (t, s, v), n in sorted(processed.items())]
    out += ["# HELP hubble_drop_total Number of drops", "# TYPE hubble_drop_total counter"]
    out += [f"hubble_drop_total{_labels(reason=r, protocol=p)} {n}" for (r, p), n in sorted(drops.items())]
    out += ["# HELP hubble_policy_verdicts_total Number of policy verdicts",
            "# TYPE hubble_policy_verdicts_total counter"]
    out += [f"hubble_policy_verdicts_total{_labels(direction=d, match=m, action=a)} {n}"
            for (d, m, a), n in sorted(verdicts.items())]
    out += ["# HELP hubble_lost_events_total Number of lost events",
            "# TYPE hubble_lost_events_total counter",
            f'hubble_lost_events_total{{source="perf_event_ring_buffer"}} {kernel_lost}',
            "# HELP hubble_seen_flows_total Flows taken in by the agent since it started",
            "# TYPE hubble_seen_flows_total counter",
            f"hubble_seen_flows_total {seen}",
            "# HELP hubble_flows_in_buffer Flows held in the agent's flow ring",
            "# TYPE hubble_flows_in_buffer gauge",
            f"hubble_flows_in_buffer {held}"]
    names_by_id = services() if services is not None and per_service else {}
    named: Counter = Counter()
    for (svc, vname), n in per_service.items():
        ns, name = names_by_id.get(svc, ("", f"id-{svc}"))   # deleted since: its id
        named[(ns, name, vname)] += n
    out += ["# HELP ciliumctl_service_flows_total Flows of packets sent to a service frontend, by service and "
            "verdict", "# TYPE ciliumctl_service_flows_total counter"]
    out += [f"ciliumctl_service_flows_total{_labels(namespace=ns, service=name, verdict=v)} {n}"
            for (ns, name, v), n in sorted(named.items())]
    if extra is not None:
        out += extra()
    return "\n".join(out) + "\n"


class MetricsServer:
    """Plain HTTP on host:port serving /metrics, in a daemon thread."""

    def __init__(self, listen: str, store: FlowStore, extra: Callable[[], list[str]] | None = None,
                 services: Callable[[], dict[int, tuple[str, str]]] | None = None):
        """extra: more lines in the text format (the agent's CPU budget); services: see render()."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        store_ref = store

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = render(store_ref, extra, services).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, int(port)), Handler)
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
