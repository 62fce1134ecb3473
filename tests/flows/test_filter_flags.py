"""The FlowFilter fields for L7, services, interfaces and node labels, matched server-side on synthetic flows
(ciliumctl emits no L7 or service flows yet), and the observe flags that build them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.flows import filters, raw_filters
from ciliumctl.flows.pb.flow import flow_pb2 as pb


def http_flow(method="GET", url="http://api.example/v1/items/42?x=1", code=0, headers=()):
    f = pb.Flow(verdict=pb.FORWARDED, event_type=pb.CiliumEventType(type=129))
    f.l7.type = pb.RESPONSE if code else pb.REQUEST
    f.l7.http.method, f.l7.http.url, f.l7.http.code = method, url, code
    f.l7.http.headers.extend(pb.HTTPHeader(key=k, value=v) for k, v in headers)
    return f


L4 = pb.Flow(verdict=pb.FORWARDED, event_type=pb.CiliumEventType(type=5))


def match(args, flow):
    white, black = filters.filters_from_args(args)
    return filters.FlowMatcher(white, black)(flow)


@pytest.mark.parametrize("args,flow,want", [
    (["--http-method", "get"], http_flow(), True),
    (["--http-method", "POST"], http_flow(), False),
    (["--http-method", "GET"], L4, False),
    (["--http-status", "5+"], http_flow(code=503), True),
    (["--http-status", "50+"], http_flow(code=512), False),
    (["--http-status", "404"], http_flow(code=404), True),
    (["--http-status", "4+"], http_flow(code=0), False),          # a request has no status
    (["--http-path", r"^/v1/items/\d+$"], http_flow(), True),      # the path only, not the query
    (["--http-path", "x=1"], http_flow(), False),
    (["--http-path", "items"], http_flow(url="not a uri"), False),
    (["--http-url", r"example/v1"], http_flow(), True),
    (["--http-header", "x-user:alice"], http_flow(headers=[("x-user", "alice")]), True),
    (["--http-header", "x-user:bob"], http_flow(headers=[("x-user", "alice")]), False),
    (["--not", "--http-method", "GET"], L4, True),
])
def test_http_fields(args, flow, want):
    assert match(args, flow) is want


def test_http_filter_needs_l7_event_type():
    with pytest.raises(UsageError, match="requires the event type filter to only match 'l7'"):
        filters.FlowMatcher(*filters.filters_from_args(["--http-method", "GET", "-t", "drop"]))
    assert match(["--http-method", "GET", "-t", "l7"], http_flow())


def test_services_workloads_namespaces_interfaces_node_labels():
    f = pb.Flow(source=pb.Endpoint(namespace="web", pod_name="client-1",
                                   workloads=[pb.Workload(kind="Deployment", name="client")]),
                destination=pb.Endpoint(namespace="kube-system", pod_name="coredns-x"),
                interface=pb.NetworkInterface(index=7, name="lxc123"), node_labels=["zone=a", "role=worker"])
    f.destination_service.namespace, f.destination_service.name = "kube-system", "kube-dns"
    assert match(["--service", "kube-system/kube"], f) and match(["--to-service", "kube-system/kube-dns"], f)
    assert not match(["--from-service", "kube-system/kube-dns"], f) and not match(["--service", "kube-dns"], f)
    assert match(["-n", "kube-system", "--service", "kube-dns"], f)
    assert match(["--from-workload", "Deployment/client"], f) and not match(["--to-workload", "client"], f)
    assert match(["-A"], f) and match(["--to-all-namespaces"], f)
    assert not match(["-A"], pb.Flow(source=pb.Endpoint(identity=2)))
    assert match(["--interface", "lxc123"], f) and not match(["--interface", "eth0"], f)
    assert match(["--node-label", "zone=a"], f) and not match(["--node-label", "zone in (b,c)"], f)
    v4 = pb.Flow(IP=pb.IP(ipVersion=pb.IPv4))
    assert match(["-4"], v4) and not match(["-6"], v4)


def test_dns_query_and_unknown_filter_fields():
    f = pb.Flow()
    f.l7.dns.query = "api.cilium.io."
    assert filters.FlowMatcher([pb.FlowFilter(dns_query=[r"cilium\.io\.$"])])(f)
    assert not filters.FlowMatcher([pb.FlowFilter(dns_query=["example"])])(f)
    # a field this server does not know (e.g. from a newer hubble) is refused, never ignored
    unknown = pb.FlowFilter.FromString(b"\xa8\x02\x01")   # field 37, varint 1
    with pytest.raises(UsageError, match="unsupported flow filter field"):
        filters.FlowMatcher([unknown])


def test_allowlist_json_and_conflicts():
    (ff,) = raw_filters.parse("--allowlist", ['{"source_pod":["a/"],"verdict":["DROPPED"]}'])
    assert list(ff.source_pod) == ["a/"] and list(ff.verdict) == [pb.DROPPED]
    with pytest.raises(UsageError, match=r"^invalid --denylist flag: failed to decode '\{\"bogus\":1\}'"):
        raw_filters.parse("--denylist", ['{"bogus":1}'])
    for args in (["-A", "-n", "x"], ["-A", "--fqdn", "x"], ["--from-all-namespaces", "--from-ip", "1.1.1.1"]):
        with pytest.raises(UsageError, match="cannot be combined"):
            filters.filters_from_args(args)
    filters.filters_from_args(["--to-all-namespaces", "--from-ip", "1.1.1.1"])


@pytest.mark.parametrize("args,message", [
    (["--last", "-5"], "Error: --last -5: a number of flows, 0 or more"),
    (["--first", "-1"], "Error: --first -1: a number of flows, 0 or more"),
    (["--color", "sometimes"], "Error: --color 'sometimes': one of auto, always, never"),
    (["--cel-expression", "true"], "Error: --cel-expression: ciliumctl has no CEL evaluator"),
    (["--http-status", "7"], "Error: invalid flow filter: invalid http status code filter: '7'"),
    (["--http-header", "foo"], "Error: --http-header 'foo': expected name:value"),
    (["--ip-version", "v5"], "Error: --ip-version 'v5': one of v4, v6, none"),
])
def test_bad_values_are_one_line_exit_2(args, message):
    r = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "observe", "--server", "unix:///nonexistent",
                        *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(message), r.stderr
