"""Policy documents -> policy.resolve.resolve() -> Datapath.apply() -> real packets.

Pods 1 and 2 are endpoints; in `sandbox4`, pods 3 and 4 are not endpoints (no programs, not in the registry):
to the datapath they are hosts outside the cluster (world, or a CIDR identity)."""

from __future__ import annotations

import time

import pytest

from ciliumctl.datapath import events as ev
from ciliumctl.identity.allocator import IdentityAllocator
from ciliumctl.policy.resolve import resolve

pytestmark = pytest.mark.root


def _cnp(name, selector, ingress=None, egress=None, ingress_deny=None, spec_extra=None, namespace="default"):
    spec = {"endpointSelector": {"matchLabels": selector}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if ingress_deny is not None:
        spec["ingressDeny"] = ingress_deny
    spec.update(spec_extra or {})
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _tcp(port):
    return [{"ports": [{"port": str(port), "protocol": "TCP"}]}]


class Node:
    """Endpoints of the sandbox resolved with H2's resolver and programmed into the datapath."""

    def __init__(self, sandbox, datapath, endpoints, tmp_path):
        self.sb, self.dp, self.eps = sandbox, datapath, endpoints
        self.alloc = IdentityAllocator(tmp_path / "identities.json")
        self.revision = 0

    def apply(self, policies, mode="default", audit=False):
        self.revision += 1
        state = resolve([p.ep for p in self.eps], policies, mode, self.alloc, revision=self.revision, audit=audit)
        for p in self.eps:
            p.ep.identity = state.endpoints[p.ep.id].identity
        self.dp.apply(state)
        return state


@pytest.fixture
def node(sandbox, tmp_path):
    from ciliumctl.datapath.loader import Datapath

    dp = Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    yield Node(sandbox, dp, sandbox.pods, tmp_path)
    dp.close()


@pytest.fixture
def node4(sandbox4, tmp_path):
    from ciliumctl.datapath.loader import Datapath

    dp = Datapath.open()
    eps = sandbox4.pods[:2]
    for pod in eps:
        dp.attach(pod.ep)
    yield Node(sandbox4, dp, eps, tmp_path)
    dp.close()


def test_getting_started_l3_l4(node):
    a, b, c = node.sb.pods
    a.ep.labels, b.ep.labels, c.ep.labels = {"org": "empire"}, {"org": "empire", "class": "deathstar"}, \
        {"org": "alliance"}
    node.sb.tcp_server(b, 80)
    node.apply([])
    assert a.tcp_ok(b, 80) and c.tcp_ok(b, 80)
    node.apply([_cnp("rule1", {"org": "empire", "class": "deathstar"},
                     ingress=[{"fromEndpoints": [{"matchLabels": {"org": "empire"}}], "toPorts": _tcp(80)}])])
    assert a.tcp_ok(b, 80)
    assert not c.tcp_ok(b, 80, timeout=0.5)
    assert not a.ping(b.ip)          # L4 rule: ICMP is not allowed


def test_namespaces_scope_endpoint_selectors(node):
    a, b, c = node.sb.pods
    c.ep.namespace = "other"
    node.sb.tcp_server(b, 8080)
    node.apply([_cnp("same-ns", {"app": "pod2"}, ingress=[{"fromEndpoints": [{}]}])])
    assert a.tcp_ok(b, 8080)
    assert not c.tcp_ok(b, 8080, timeout=0.5)
    node.apply([_cnp("from-other", {"app": "pod2"}, ingress=[{"fromEndpoints": [
        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "other"}}]}])])
    assert c.tcp_ok(b, 8080)
    assert not a.tcp_ok(b, 8080, timeout=0.5)


def test_entities_world_and_cluster(node4):
    a, b, out1, _ = node4.sb.pods
    node4.sb.tcp_server(b, 8080)
    node4.sb.tcp_server(out1, 8080)
    node4.apply([_cnp("to-world", {"app": "pod1"}, egress=[{"toEntities": ["world"]}])])
    assert a.tcp_ok(out1, 8080)
    assert not a.tcp_ok(b, 8080, timeout=0.5)
    node4.apply([_cnp("to-cluster", {"app": "pod1"}, egress=[{"toEntities": ["cluster"]}])])
    assert a.tcp_ok(b, 8080)
    assert not a.tcp_ok(out1, 8080, timeout=0.5)
    node4.apply([_cnp("to-all", {"app": "pod1"}, egress=[{"toEntities": ["all"]}])])
    assert a.tcp_ok(b, 8080) and a.tcp_ok(out1, 8080)


def test_cidr_with_except(node4):
    a, b, out1, out2 = node4.sb.pods
    for pod in (b, out1, out2):
        node4.sb.tcp_server(pod, 8080)
    node4.apply([_cnp("cidr", {"app": "pod1"}, egress=[
        {"toCIDRSet": [{"cidr": "10.11.0.0/24", "except": [f"{out2.ip}/32"]}], "toPorts": _tcp(8080)}])])
    assert a.tcp_ok(out1, 8080)
    assert not a.tcp_ok(out2, 8080, timeout=0.5)     # the except
    assert not a.tcp_ok(b, 8080, timeout=0.5)        # an endpoint has its own identity, not the CIDR's


def test_deny_policy_and_drop_reason(node, sandbox):
    from ciliumctl.datapath.ringbuf import RingReader

    a, b, c = node.sb.pods
    node.sb.tcp_server(b, 8080)
    node.apply([_cnp("allow-all", {"app": "pod2"}, ingress=[{"fromEntities": ["all"]}],
                     ingress_deny=[{"fromEndpoints": [{"matchLabels": {"app": "pod1"}}], "toPorts": _tcp(8080)}])])
    with RingReader(f"{sandbox.pin_dir}/events") as reader:
        reader.drain()
        assert c.tcp_ok(b, 8080)
        assert not a.tcp_ok(b, 8080, timeout=0.5)
        time.sleep(0.1)
        drops = [e for e in reader.events() if e.type == ev.EVENT_DROP]
    assert drops and {(d.saddr, d.subtype) for d in drops} == {(a.ip, ev.DROP_POLICY_DENY)}


def test_enforcement_modes_and_default_deny_off(node):
    a, b, _ = node.sb.pods
    node.sb.tcp_server(b, 8080)
    node.apply([], mode="always")
    assert not a.tcp_ok(b, 8080, timeout=0.5)
    node.apply([], mode="default")
    assert a.tcp_ok(b, 8080)
    only_c = _cnp("only-c", {"app": "pod2"}, ingress=[{"fromEndpoints": [{"matchLabels": {"app": "pod3"}}]}])
    node.apply([only_c], mode="never")
    assert a.tcp_ok(b, 8080)
    node.apply([only_c], mode="default")
    assert not a.tcp_ok(b, 8080, timeout=0.5)
    # enableDefaultDeny false: the rule adds allows but does not turn enforcement on
    only_c["spec"]["enableDefaultDeny"] = {"ingress": False}
    node.apply([only_c], mode="default")
    assert a.tcp_ok(b, 8080)
