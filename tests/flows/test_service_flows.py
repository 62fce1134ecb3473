"""Flows name the service of a translated connection (issue 12): destination_service / source_service as
Cilium's Hubble fills them, the real hubble CLI and `ciliumctl observe` filtering on them (--to-service,
--from-service, --service) against our server, and the per-service metric. Synthetic records as the datapath
writes them (lib/lb.h puts the service id on a translated packet's event); the real datapath's in
tests/datapath/test_services.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ciliumctl.datapath.servicemap import names_json
from ciliumctl.flows import metrics
from ciliumctl.flows.meta import _parse_services
from ciliumctl.flows.store import FlowStore
from ciliumctl.services.model import Backend, Frontend, Service, ServiceTable

from .flowdata import SNAP, ip, rec
from .test_hubble_cli import SEC, observe_ciliumctl, observe_hubble, serve

TABLE = ServiceTable({
    1: Service(1, Frontend("10.96.0.10", 80), backends=(Backend("10.200.0.13", 80, id=1),), name="web",
               namespace="empire"),
    2: Service(2, Frontend("10.96.0.11", 53, "udp")),    # unnamed: its frontend IP:PORT in "default"
    3: Service(3, Frontend("10.96.0.10", 80, "udp"), name="web-udp", namespace="empire"),
})
SVC_SNAP = dataclasses.replace(SNAP, services=_parse_services(json.loads(names_json(TABLE))))

FLOWS = [
    # tiefighter -> web, translated to deathstar:80 (the event names the backend and the service's id)
    ("to-web", dict(direction=2, ep_id=12, svc_id=1)),
    # the reply, its source the frontend again (named by address, as Hubble does)
    ("from-web", dict(type=4, subtype=0, direction=2, ep_id=12, saddr=ip("10.96.0.10"), daddr=ip("10.200.0.12"),
                      src_identity=301, dst_identity=300, sport=80, dport=40000, is_reply=1, tcp_flags=0x12)),
    # no backend: dropped before translation, the frontend still the destination
    ("no-backend", dict(type=1, subtype=158, verdict=2, direction=2, ep_id=12, proto=17, daddr=ip("10.96.0.11"),
                        dport=53, dst_identity=2, svc_id=2, rule_cookie=0, match_type=0)),
    ("plain", {}),
]
NAMES = [n for n, _ in FLOWS]


@pytest.fixture
def served(tmp_path):
    server, store, address = serve(tmp_path, [rec(ts_ns=i * SEC, **kw) for i, (_, kw) in enumerate(FLOWS)],
                                   snap=SVC_SNAP)
    yield store, address
    server.stop()


def _by_name(out: str) -> dict[str, dict]:
    flows = [json.loads(line)["flow"] for line in out.splitlines()]
    return dict(zip(NAMES, flows))


def test_flows_carry_the_service(served, hubble):
    _, address = served
    flows = _by_name(observe_hubble(hubble, address, "--all", "-o", "jsonpb"))
    assert flows["to-web"]["destination_service"] == {"name": "web", "namespace": "empire"}
    assert "source_service" not in flows["to-web"]
    assert flows["from-web"]["source_service"] == {"name": "web", "namespace": "empire"}   # TCP before UDP
    assert "destination_service" not in flows["from-web"]
    assert flows["no-backend"]["destination_service"] == {"name": "10.96.0.11:53", "namespace": "default"}
    assert "destination_service" not in flows["plain"] and "source_service" not in flows["plain"]
    # ours prints what hubble prints, in every format (compact names hosts by their service)
    for output in ("compact", "json", "dict"):
        args = ["--all", "-o", output]
        assert observe_ciliumctl(address, *args) == observe_hubble(hubble, address, *args), output


FILTERS = [
    (["--to-service", "empire/web"], ["to-web"]),
    (["--to-service", "web"], []),                      # no namespace: "default"
    (["--to-service", "empire/we"], ["to-web"]),        # a name prefix, as Hubble
    (["--from-service", "empire/web"], ["from-web"]),
    (["--service", "empire/web"], ["to-web", "from-web"]),
    (["--to-service", "10.96.0.11"], ["no-backend"]),   # an unnamed service by its frontend
    (["--not", "--to-service", "empire/web"], ["from-web", "no-backend", "plain"]),
]


@pytest.mark.parametrize("args, expected", FILTERS, ids=[" ".join(a) for a, _ in FILTERS])
def test_service_filters_select_the_same_flows_as_hubble(served, hubble, args, expected):
    _, address = served
    uuids = {f["uuid"]: n for n, f in _by_name(observe_hubble(hubble, address, "--all", "-o", "jsonpb")).items()}
    for out in (observe_hubble(hubble, address, "--all", "-o", "jsonpb", *args),
                observe_ciliumctl(address, "--all", "-o", "jsonpb", *args)):
        assert [uuids[json.loads(line)["flow"]["uuid"]] for line in out.splitlines()] == expected


def test_metrics_count_flows_per_service():
    store = FlowStore(100)
    recs = [rec(**kw) for _, kw in FLOWS] + [rec(direction=2, ep_id=12, svc_id=1), rec(svc_id=9)]
    store.add_records(b"".join(recs), len(recs), SVC_SNAP)
    text = metrics.render(store, services=lambda: SVC_SNAP.services.by_id)
    lines = [line for line in text.splitlines() if line.startswith("ciliumctl_service_flows_total{")]
    assert lines == [
        'ciliumctl_service_flows_total{namespace="",service="id-9",verdict="FORWARDED"} 1',
        'ciliumctl_service_flows_total{namespace="default",service="10.96.0.11:53",verdict="DROPPED"} 1',
        'ciliumctl_service_flows_total{namespace="empire",service="web",verdict="FORWARDED"} 2',
    ]
