"""The pure service model: parsing, the checks every desired service passes, id allocation, the table's lookups,
and the map entries the datapath gets (datapath/servicemap.py)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.datapath import maps
from ciliumctl.datapath.servicemap import compile_backends, compile_services
from ciliumctl.services.model import (
    DEFAULT_SERVICE_CIDR,
    Backend,
    Frontend,
    Service,
    ServiceTable,
    parse_backends,
    parse_cidr,
    parse_frontend,
    parse_name,
    translate,
)

CIDR = DEFAULT_SERVICE_CIDR


def test_parse_frontend_and_backends():
    assert parse_frontend("10.96.0.10:80") == Frontend("10.96.0.10", 80, "tcp")
    assert parse_frontend("10.96.0.10:53/UDP") == Frontend("10.96.0.10", 53, "udp")
    assert str(parse_frontend("10.96.0.10:53/udp")) == "10.96.0.10:53/UDP"
    assert parse_backends("10.0.0.1:8080, 10.0.0.2:8080", "active,terminating") == [
        Backend("10.0.0.1", 8080), Backend("10.0.0.2", 8080, "terminating")]
    assert parse_backends("") == []


@pytest.mark.parametrize("text, needle", [
    ("10.96.0.10", "use IP:PORT"),
    ("10.96.0.10:0", "use 1-65535"),
    ("10.96.0.10:http", "not a number"),
    ("10.96.0.10:80/sctp", "not supported"),
    ("fd00::1:80", "only IPv4"),
    ("nonsense:80", "not an IP address"),
])
def test_bad_frontends_are_one_line(text, needle):
    with pytest.raises(UsageError) as err:
        parse_frontend(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_backends_are_one_line():
    with pytest.raises(UsageError, match="use 1-65535"):
        parse_backends("10.0.0.1:0")          # backend port 0
    with pytest.raises(UsageError, match="one per backend"):
        parse_backends("10.0.0.1:80,10.0.0.2:80", "active")
    with pytest.raises(UsageError, match="is not one of"):
        parse_backends("10.0.0.1:80", "draining")
    with pytest.raises(UsageError, match="not an IP prefix|host bits|e.g."):
        parse_cidr("10.96.0.1/12")


def test_frontend_outside_the_service_cidr_is_refused_and_nothing_changes():
    t = ServiceTable()
    with pytest.raises(UsageError, match="outside the service CIDR 10.96.0.0/12"):
        t.update(Service(0, Frontend("10.200.0.1", 80)), CIDR)
    assert t == ServiceTable()
    t2 = t.update(Service(0, Frontend("10.200.0.1", 80)), "10.200.0.0/16")
    assert t2.services[1].frontend.ip == "10.200.0.1"


def test_nodeport_frontends_are_node_addresses_in_the_nodeport_range():
    t = ServiceTable()
    nodes = frozenset({"192.168.5.1"})
    with pytest.raises(UsageError, match="30000-32767"):
        t.update(Service(0, Frontend("192.168.5.1", 8080), "NodePort"), CIDR, nodes)
    with pytest.raises(UsageError, match="not an address of this node"):
        t.update(Service(0, Frontend("192.168.5.2", 30080), "NodePort"), CIDR, nodes)
    t = t.update(Service(0, Frontend("192.168.5.1", 30080), "NodePort", (Backend("10.0.0.1", 80),)), CIDR, nodes)
    entries = compile_services(t, 0)
    (val,) = [maps.LB_SVC_VAL.unpack(v) for k, v in entries.items() if maps.LB_SVC_KEY.unpack(k)[2] == 0]
    assert val[3] & maps.LB_F_NODEPORT


def test_ids_duplicates_and_backend_ids_are_stable():
    t = ServiceTable()
    t = t.update(Service(0, Frontend("10.96.0.10", 80), backends=(Backend("10.0.0.1", 80), Backend("10.0.0.2", 80))),
                 CIDR)
    t = t.update(Service(0, Frontend("10.96.0.11", 80)), CIDR)
    assert sorted(t.services) == [1, 2]
    ids = {str(b): b.id for b in t.services[1].backends}
    assert ids == {"10.0.0.1:80": 1, "10.0.0.2:80": 2}
    # the same frontend without --id updates its service; a kept backend keeps its id, a new one gets a new id
    t = t.update(Service(0, Frontend("10.96.0.10", 80), backends=(Backend("10.0.0.2", 80, "terminating"),
                                                                   Backend("10.0.0.3", 80))), CIDR)
    assert {str(b): b.id for b in t.services[1].backends} == {"10.0.0.2:80": 2, "10.0.0.3:80": 3}
    with pytest.raises(UsageError, match="belongs to service 1"):
        t.update(Service(7, Frontend("10.96.0.10", 80)), CIDR)
    with pytest.raises(UsageError, match="listed twice"):
        t.update(Service(0, Frontend("10.96.0.12", 80), backends=(Backend("10.0.0.1", 80),) * 2), CIDR)
    t, gone = t.delete("10.96.0.11:80")
    assert gone is not None and gone.id == 2 and sorted(t.services) == [1]
    assert t.delete("99")[1] is None
    assert ServiceTable.from_dict(t.to_dict()) == t


def test_translation_names_the_backends_that_take_new_connections():
    t = ServiceTable().update(Service(0, Frontend("10.96.0.10", 80), backends=(
        Backend("10.0.0.1", 8080, "terminating"), Backend("10.0.0.2", 8080))), CIDR)
    tr = translate(t, "10.96.0.10", 80, "tcp")
    assert tr is not None and [str(b) for b in tr.backends] == ["10.0.0.2:8080"]
    assert translate(t, "10.96.0.10", 80, "udp") is None


def test_map_entries():
    t = ServiceTable().update(Service(0, Frontend("10.96.0.10", 80), backends=(
        Backend("10.0.0.1", 8080), Backend("10.0.0.2", 8080, "terminating"), Backend("10.0.0.3", 8080)),
        affinity="ClientIP", affinity_timeout=30), CIDR)
    entries = {maps.LB_SVC_KEY.unpack(k): maps.LB_SVC_VAL.unpack(v) for k, v in compile_services(t, 1).items()}
    vip = socket.inet_aton("10.96.0.10")
    assert entries[(1, 6, 0, vip, 80)] == (0, 1, 2, maps.LB_F_AFFINITY, 30)     # two take new connections
    assert {entries[(1, 6, i, vip, 80)][0] for i in (1, 2)} == {1, 3}           # the terminating one has no slot
    backends = {int.from_bytes(k, "little"): maps.LB_BACKEND.unpack(v) for k, v in compile_backends(t).items()}
    assert backends[2] == (socket.inet_aton("10.0.0.2"), 8080, 6, maps.LB_BACKEND_TERMINATING)
    assert len(backends) == 3
    assert all(maps.key_slot("lb_services", k) == 1 for k in compile_services(t, 1))


def test_service_is_frozen():
    svc = Service(1, Frontend("10.96.0.10", 80))
    with pytest.raises(dataclasses.FrozenInstanceError):
        svc.id = 2    # type: ignore[misc]


def test_policy_trace_follows_the_translation_to_the_backends():
    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.policy import model, trace
    from ciliumctl.policy.labels import parse_label_list

    eps = [Endpoint(id=1, name="client", labels={"app": "client"}, ipv4="10.200.0.1"),
           Endpoint(id=2, name="web1", labels={"app": "web"}, ipv4="10.200.0.2"),
           Endpoint(id=3, name="db", labels={"app": "db"}, ipv4="10.200.0.3")]
    pol = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                              "metadata": {"name": "web", "namespace": "default"},
                              "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                                       "ingress": [{"toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]}})
    pols = pol if isinstance(pol, list) else [pol]
    table = ServiceTable().update(Service(0, Frontend("10.96.0.10", 80), backends=(Backend("10.200.0.2", 8080),)),
                                  CIDR)
    src = trace.Peer(parse_label_list(["app=client"]))
    res = trace.trace(src, trace.Peer(ip="10.96.0.10"), 6, 80, pols, endpoints=eps, services=table)
    assert res.allowed and res.port == 8080 and res.destination.ip == "10.200.0.2"
    assert res.to_dict()["service"]["backend"] == "10.200.0.2:8080"
    # a second backend port the policy does not allow: the verdict is per backend, the denied one shown
    table = table.update(Service(1, Frontend("10.96.0.10", 80), backends=(Backend("10.200.0.2", 8080),
                                                                          Backend("10.200.0.2", 9090))), CIDR)
    res = trace.trace(src, trace.Peer(ip="10.96.0.10"), 6, 80, pols, endpoints=eps, services=table)
    assert not res.allowed and res.service["backend"] == "10.200.0.2:9090" and res.notes
    # no backend: denied with the datapath's reason
    table = table.update(Service(1, Frontend("10.96.0.10", 80)), CIDR)
    res = trace.trace(src, trace.Peer(ip="10.96.0.10"), 6, 80, pols, endpoints=eps, services=table)
    assert not res.allowed and "158" in res.egress.reason
    # not a frontend (another port): traced as given
    res = trace.trace(src, trace.Peer(ip="10.96.0.10"), 6, 81, pols, endpoints=eps, services=table)
    assert res.service is None and res.port == 81


@pytest.mark.parametrize("content", ['{"version": 1, "services": [[1, "10.96.0.10", 80, "tcp", "ClusterIP", "", 10,'
                                     ' [["10.0.0.1", "80", "active", 1]]]]}',
                                     '{"version": 7, "services": []}', '{"services": [[1, 2]]}', "[1, 2"])
def test_a_malformed_store_is_one_line(node_env, content):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.services import store

    store.store_path().write_text(content)
    with pytest.raises(EnvironmentProblem) as err:
        store.load()
    assert str(store.store_path()) in str(err.value) and "\n" not in str(err.value)


def test_the_store_keeps_a_table_as_it_was(node_env):
    from ciliumctl.services import store

    t = ServiceTable().update(Service(0, Frontend("10.96.0.10", 53, "udp"), backends=(
        Backend("10.0.0.1", 53, "terminating"),), affinity="ClientIP", affinity_timeout=60), CIDR)
    store.save(t)
    assert store.load() == t
    assert oct(store.store_path().stat().st_mode & 0o777) == "0o600"     # root-only


def test_the_store_is_parsed_again_only_when_the_file_changed(node_env):
    """A process gets back the table it saved or loaded (reconcile after `service update` parsed 10,000 services
    again), until another writer replaces the file."""
    import json
    import os

    from ciliumctl.services import store

    t = ServiceTable().update(Service(0, Frontend("10.96.0.10", 80), backends=(Backend("10.0.0.1", 80),)), CIDR)
    store.save(t)
    assert store.load() is t and store.load() is t
    other = t.update(Service(0, Frontend("10.96.0.11", 80)), CIDR)
    tmp = store.store_path().with_suffix(".other")           # another process's atomic write
    tmp.write_text(json.dumps(other.to_dict()))
    os.replace(tmp, store.store_path())
    assert store.load() == other


def test_names_what_flows_call_a_service():
    assert parse_name("web") == ("web", "default")
    assert parse_name("shop/web") == ("web", "shop")
    for bad in ("Web", "1web", "shop/", "sh_op/web", "a" * 64):
        with pytest.raises(UsageError, match="service name|namespace"):
            parse_name(bad)
    unnamed = Service(0, Frontend("10.96.0.10", 80, "udp"))
    assert unnamed.flow_name == ("default", "10.96.0.10:80")       # by its frontend, where hubble looks
    t = ServiceTable().update(dataclasses.replace(unnamed, name="dns", namespace="kube-system"), CIDR)
    # an update without a name keeps it; the store keeps it; records from before names still load
    t = t.update(dataclasses.replace(unnamed, backends=(Backend("10.0.0.1", 53),)), CIDR)
    assert t.services[1].flow_name == ("kube-system", "dns") and len(t.services[1].backends) == 1
    assert ServiceTable.from_dict(t.to_dict()) == t
    old = t.services[1].to_record()[:8]
    assert Service.from_record(old).flow_name == ("default", "10.96.0.10:80")
    assert t.counts() == {"services": 1, "backends": 1, "active": 1, "terminating": 0}
