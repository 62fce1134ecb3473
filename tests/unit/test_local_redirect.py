"""CiliumLocalRedirectPolicy, pure: the object's checks (one line each) and what it does to a service table
(services.local_redirect, node.services.local_redirect's selection). Packets: tests/e2e/test_local_redirect.py."""

import copy

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.node.services.local_redirect import Candidate, apply, from_pods
from ciliumctl.services.local_redirect import parse
from ciliumctl.services.model import Backend, Frontend, Service, ServiceTable

CIDR = "10.96.0.0/12"
DNS = {"apiVersion": "cilium.io/v2", "kind": "CiliumLocalRedirectPolicy",
       "metadata": {"name": "nodelocaldns", "namespace": "kube-system"},
       "spec": {"redirectFrontend": {"serviceMatcher": {"serviceName": "kube-dns", "namespace": "kube-system"}},
                "redirectBackend": {"localEndpointSelector": {"matchLabels": {"k8s-app": "node-local-dns"}},
                                    "toPorts": [{"port": "53", "name": "dns", "protocol": "UDP"},
                                                {"port": "53", "name": "dns-tcp", "protocol": "TCP"}]}}}
ADDR = {"apiVersion": "cilium.io/v2", "kind": "CiliumLocalRedirectPolicy",
        "metadata": {"name": "meta", "namespace": "default"},
        "spec": {"redirectFrontend": {"addressMatcher": {"ip": "169.254.169.254",
                                                         "toPorts": [{"port": "80", "protocol": "TCP"}]}},
                 "redirectBackend": {"localEndpointSelector": {"matchExpressions": [
                     {"key": "app", "operator": "In", "values": ["proxy"]}]},
                     "toPorts": [{"port": "8080", "protocol": "TCP"}]}}}
LOCAL = [Candidate("kube-system", {"k8s-app": "node-local-dns"}, "10.200.0.5"),
         Candidate("default", {"app": "proxy"}, "10.200.0.6"),
         Candidate("default", {"k8s-app": "node-local-dns"}, "10.200.0.7")]     # another namespace: never picked


def _table() -> ServiceTable:
    t = ServiceTable()
    for proto in ("udp", "tcp"):
        t = t.update(Service(0, Frontend("10.96.0.10", 53, proto), backends=(Backend("10.1.0.1", 53),),
                             name="kube-dns", namespace="kube-system"), CIDR)
    return t


def _bad(path: list, value):
    obj = copy.deepcopy(ADDR)
    node = obj
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


@pytest.mark.parametrize(("obj", "needle"), [
    (_bad(["apiVersion"], "cilium.io/v1"), "use cilium.io/v2"),
    (_bad(["spec", "redirectFrontend"], {}), "redirectFrontend is required"),
    (_bad(["spec", "redirectFrontend", "serviceMatcher"], {"serviceName": "x", "namespace": "default"}),
     "exactly one of addressMatcher and serviceMatcher"),
    (_bad(["spec", "redirectFrontend", "addressMatcher", "ip"], "1.2.3"), "not an IP address"),
    (_bad(["spec", "redirectFrontend", "addressMatcher", "ip"], "fd00::1"), "only IPv4"),
    (_bad(["spec", "redirectFrontend", "addressMatcher", "toPorts"], []), "toPorts is required"),
    (_bad(["spec", "redirectBackend", "toPorts"], [{"port": "0", "protocol": "TCP"}]), "port '0'"),
    (_bad(["spec", "redirectBackend", "toPorts"], [{"port": "53", "protocol": "SCTP"}]), "use TCP or UDP"),
    (_bad(["spec", "redirectBackend", "toPorts"], [{"port": "53", "protocol": "UDP"},
                                                   {"port": "54", "protocol": "UDP"}]), "needs a name"),
    (_bad(["spec", "redirectBackend", "localEndpointSelector"], None), "localEndpointSelector is required"),
    (_bad(["spec", "skipRedirectFromBackend"], "yes"), "use true or false"),
    ({**DNS, "spec": {**DNS["spec"], "redirectFrontend": {"serviceMatcher": {"serviceName": "kube-dns",
                                                                             "namespace": "default"}}}},
     "must be the policy's namespace"),
])
def test_bad_objects_are_one_line(obj, needle):
    with pytest.raises(UsageError) as err:
        parse(obj, "f.yaml")
    assert needle in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("f.yaml")


def test_service_matcher_sends_the_service_to_local_endpoints_by_port():
    red = apply(_table(), [parse(DNS)], LOCAL)
    got = {str(s.frontend): s for s in red.table.services.values()}
    for proto in ("UDP", "TCP"):
        svc = got[f"10.96.0.10:53/{proto}"]
        assert svc.type == "LocalRedirect" and [(b.ip, b.port) for b in svc.backends] == [("10.200.0.5", 53)]
        assert (svc.name, svc.namespace) == ("kube-dns", "kube-system")     # flows still name the service
    assert sorted(red.by) == [1, 2] and set(red.by.values()) == {"kube-system/nodelocaldns"}
    # ids are the service's; backend ids the same on every reconcile and apart from the store's
    again = apply(_table(), [parse(DNS)], LOCAL)
    assert again.table == red.table and all(b.id >= 1 << 31 for s in red.table.services.values()
                                            for b in s.backends)


def test_no_local_endpoint_leaves_the_service_and_the_address_alone():
    table = _table()
    red = apply(table, [parse(DNS), parse(ADDR)], [c for c in LOCAL if c.ip == "10.200.0.7"])
    assert red.table is table and red.by == {}


def test_address_matcher_adds_a_local_redirect_frontend():
    red = apply(_table(), [parse(ADDR)], LOCAL)
    (sid,) = red.by
    svc = red.table.services[sid]
    assert str(svc.frontend) == "169.254.169.254:80/TCP" and svc.type == "LocalRedirect"
    assert [(b.ip, b.port) for b in svc.backends] == [("10.200.0.6", 8080)] and sid not in _table().services


def test_an_address_that_is_a_service_frontend_is_left_to_a_service_matcher():
    obj = _bad(["spec", "redirectFrontend", "addressMatcher", "ip"], "10.96.0.10")
    obj["spec"]["redirectFrontend"]["addressMatcher"]["toPorts"] = [{"port": "53", "protocol": "TCP"}]
    red = apply(_table(), [parse(obj)], LOCAL)
    assert red.by == {} and "use a serviceMatcher" in red.skipped[0]


def _skipping(obj: dict) -> dict:
    return {**obj, "spec": {**obj["spec"], "skipRedirectFromBackend": True}}


def test_skip_redirect_from_backend_keeps_the_replaced_service_for_the_backends_own_traffic():
    table = _table()
    red = apply(table, [parse(_skipping(DNS))], LOCAL)
    for sid, orig in table.services.items():
        svc = red.table.services[sid]
        assert svc.type == "LocalRedirect" and svc.skip_from == ("10.200.0.5",) and svc.original == orig
    plain = apply(table, [parse(DNS)], LOCAL).table.services[1]
    assert plain.skip_from == () and plain.original is None


def test_skip_redirect_from_backend_of_an_address_leaves_it_untranslated_for_the_backend():
    red = apply(_table(), [parse(_skipping(ADDR))], LOCAL)
    (sid,) = red.by
    svc = red.table.services[sid]
    assert svc.skip_from == ("10.200.0.6",) and svc.original is None


def test_skip_redirect_from_backend_in_the_maps():
    """lb_services gets, beside the redirect's entries, one per backend that skips it and the replaced service's
    own (kinds in the key's protocol byte, lib/lb.h lb_skip_from_backend); lb_backends both services' backends."""
    from ciliumctl.datapath import maps
    from ciliumctl.datapath.servicemap import compile_service, compile_service_backends

    table = _table()
    svc = apply(table, [parse(_skipping(DNS))], LOCAL).table.services[1]
    entries = compile_service(svc, 1, {})
    protos = sorted(k[1] for k in entries)
    assert protos == sorted([17, 17, 17 | maps.LB_KIND_SKIP, 17 | maps.LB_KIND_ORIGINAL, 17 | maps.LB_KIND_ORIGINAL])
    (skip,) = [k for k in entries if k[1] & maps.LB_KIND_SKIP]
    assert skip[0] == 1 and skip[2:4] + skip[10:12] == bytes([10, 200, 0, 5])
    head = maps.LB_SVC_VAL.unpack(entries[maps.LB_SVC_KEY.pack(1, 17, 0, bytes([10, 96, 0, 10]), 53)])
    assert head[3] & maps.LB_F_SKIP_FROM_BACKEND
    backends = compile_service_backends(svc, {})
    assert {int.from_bytes(k, "little") for k in backends} == {b.id for b in svc.backends + table.services[1].backends}


def test_pods_of_this_node_that_are_running_and_ready():
    def pod(name, node, phase="Running", ready="True", ip="10.1.0.9"):
        return {"metadata": {"name": name, "namespace": "default", "labels": {"app": "proxy"}},
                "spec": {"nodeName": node},
                "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}

    got = from_pods([pod("a", "n1"), pod("b", "n2"), pod("c", "n1", phase="Pending"), pod("d", "n1", ready="False"),
                     pod("e", "n1", ip="fd00::1")], "n1")
    assert got == [Candidate("default", {"app": "proxy"}, "10.1.0.9")]
