"""Services and EndpointSlices -> this node's service table (cluster.services), pure: the objects are written as
the API server returns them (core/v1 Service, discovery.k8s.io/v1 EndpointSlice)."""

from __future__ import annotations

from ciliumctl.cluster.services import backend_state, build, node_addresses, service_cidrs

CIDRS = ("10.96.0.0/24",)
NODE_IPS = frozenset({"192.168.7.1"})


def svc(name, cluster_ip="10.96.0.10", ports=None, namespace="shop", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                     "ports": ports or [{"port": 80, "protocol": "TCP", "targetPort": 8080}], **spec}}


def ep(ip, node="node-a", **conditions):
    return {"addresses": [ip], "nodeName": node, "conditions": conditions}


def eps(service, endpoints, ports=None, namespace="shop", name=None, address_type="IPv4"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name or f"{service}-x", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": endpoints, "ports": ports or [{"name": "", "port": 8080, "protocol": "TCP"}]}


def rows(result):
    return {str(s.frontend): (s.type, [(str(b), b.state) for b in s.backends])
            for s in result.table.services.values()}


def test_conditions_as_discovery_v1_defines_them():
    assert backend_state(None) == "active"                     # ready nil: true
    assert backend_state({"ready": True}) == "active"
    assert backend_state({"ready": False, "serving": True, "terminating": True}) == "terminating"
    assert backend_state({"ready": False, "terminating": True}) == "terminating"   # serving nil: true
    assert backend_state({"ready": False, "serving": False, "terminating": True}) is None
    assert backend_state({"ready": False, "serving": True}) is None                # terminating nil: false


def test_cluster_ip_each_port_and_protocol_with_ready_and_terminating_backends():
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    slice_ports = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
    result = build([svc("web", ports=ports)],
                   [eps("web", [ep("10.1.0.5"), ep("10.1.0.6", ready=False, serving=True, terminating=True),
                                ep("10.1.0.7", ready=False)], slice_ports)], "node-a", NODE_IPS, CIDRS)
    assert rows(result) == {
        "10.96.0.10:80/TCP": ("ClusterIP", [("10.1.0.5:8080", "active"), ("10.1.0.6:8080", "terminating")]),
        "10.96.0.10:53/UDP": ("ClusterIP", [("10.1.0.5:5353", "active"), ("10.1.0.6:5353", "terminating")])}
    assert sorted(result.names.values()) == ["shop/web (dns)", "shop/web (http)"]
    # flows name the Kubernetes Service (flow.proto Service {name, namespace})
    assert {s.flow_name for s in result.table.services.values()} == {("shop", "web")}


def test_node_port_traffic_policies_and_affinity():
    port = [{"port": 80, "protocol": "TCP", "nodePort": 30080}]
    affinity = {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}
    objs = [svc("all", "10.96.0.11", port, type="NodePort", externalTrafficPolicy="Cluster", **affinity),
            svc("mine", "10.96.0.12", [{**port[0], "nodePort": 30081}], type="NodePort",
                externalTrafficPolicy="Local")]
    slices = [eps(n, [ep("10.1.0.5"), ep("10.2.0.5", node="node-b")]) for n in ("all", "mine")]
    result = build(objs, slices, "node-a", NODE_IPS, CIDRS)
    both = [("10.1.0.5:8080", "active"), ("10.2.0.5:8080", "active")]
    assert rows(result) == {"10.96.0.11:80/TCP": ("ClusterIP", both), "192.168.7.1:30080/TCP": ("NodePort", both),
                            "10.96.0.12:80/TCP": ("ClusterIP", both),
                            "192.168.7.1:30081/TCP": ("NodePort", [("10.1.0.5:8080", "active")])}
    sticky = result.table.lookup("192.168.7.1", 30080, "tcp")
    assert sticky is not None and (sticky.affinity, sticky.affinity_timeout) == ("ClientIP", 60)
    assert result.table.lookup("10.96.0.12", 80, "tcp").affinity == ""


def test_skipped_headless_external_name_sctp_ipv6_and_outside_the_cidr():
    objs = [svc("headless", "None"), {"metadata": {"name": "ext", "namespace": "shop"},
                                      "spec": {"type": "ExternalName", "externalName": "example.org"}},
            svc("sctp", "10.96.0.13", [{"port": 9, "protocol": "SCTP"}]), svc("v6", "fd00::10"),
            svc("outside", "10.97.0.1")]
    slices = [eps("headless", [ep("10.1.0.5")]), eps("sctp", [ep("10.1.0.5")]),
              eps("outside", [ep("10.1.0.5")], address_type="IPv6")]
    result = build(objs, slices, "node-a", NODE_IPS, CIDRS)
    assert rows(result) == {}
    assert [s.split(":")[0] for s in result.skipped] == ["shop/outside", "shop/sctp", "shop/v6"]


def test_ids_stay_with_their_frontends_and_backends_across_builds():
    first = build([svc("a", "10.96.0.20"), svc("b", "10.96.0.21")],
                  [eps("a", [ep("10.1.0.5")]), eps("b", [ep("10.1.0.6")])], "node-a", NODE_IPS, CIDRS)
    b_id = first.table.lookup("10.96.0.21", 80, "tcp").id
    b_backend = first.table.lookup("10.96.0.21", 80, "tcp").backends[0].id
    second = build([svc("b", "10.96.0.21")], [eps("b", [ep("10.1.0.6"), ep("10.1.0.7")])], "node-a", NODE_IPS,
                   CIDRS, previous=first.table)
    b = second.table.lookup("10.96.0.21", 80, "tcp")
    assert list(second.table.services) == [b_id] and b.backends[0].id == b_backend and len(b.backends) == 2


def test_service_cidrs_and_node_addresses():
    cidrs = [{"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/24", "fd00::/108"]}}]
    assert service_cidrs(cidrs, "10.96.0.0/12") == ("10.96.0.0/24",)
    assert service_cidrs([], "10.96.0.0/12") == ("10.96.0.0/12",)
    node = {"status": {"addresses": [{"type": "InternalIP", "address": "192.168.7.1"},
                                     {"type": "Hostname", "address": "node-a"}]}}
    assert node_addresses(node) == frozenset({"192.168.7.1"}) and node_addresses(None) == frozenset()


def test_a_freed_id_goes_to_a_new_frontend_and_backend_ids_are_never_reused():
    first = build([svc("a", "10.96.0.20"), svc("b", "10.96.0.21")],
                  [eps("a", [ep("10.1.0.5")]), eps("b", [ep("10.1.0.6")])], "node-a", NODE_IPS, CIDRS)
    a = first.table.lookup("10.96.0.20", 80, "tcp")
    second = build([svc("b", "10.96.0.21"), svc("c", "10.96.0.22")],
                   [eps("b", [ep("10.1.0.6")]), eps("c", [ep("10.1.0.5")])], "node-a", NODE_IPS, CIDRS,
                   previous=first.table)
    c = second.table.lookup("10.96.0.22", 80, "tcp")
    assert c.id == a.id and c.backends[0].id not in {b.id for s in first.table.services.values() for b in s.backends}
    assert second.names == {c.id: "shop/c", second.table.lookup("10.96.0.21", 80, "tcp").id: "shop/b"}


def test_two_services_with_one_frontend_the_second_is_left_out():
    result = build([svc("a", "10.96.0.20"), svc("b", "10.96.0.20")], [], "node-a", NODE_IPS, CIDRS)
    assert list(result.names.values()) == ["shop/a"]
    assert result.skipped == ["shop/b: frontend 10.96.0.20:80/TCP is shop/a's already"]
