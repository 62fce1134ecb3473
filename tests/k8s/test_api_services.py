"""Services without kube-proxy in cluster mode, on the real API server (the shared one of tests/k8s/conftest.py):
Services and EndpointSlices made by hand (no controllers run there: the API server allocates cluster IPs and
node ports, nothing makes slices) become the service table the node programs (a recorder here), with the
service CIDR read from the server's ServiceCIDR object. The pure mapping is tested in
tests/unit/test_cluster_services.py."""

import os

import pytest
from support.cli import cli_env, require_cli, run_cli
from support.recording import RecordingDatapath
from support.shell import wait_until

from ciliumctl.base.errors import UsageError
from ciliumctl.node import cluster_sync as node_sync
from k8s.cluster import SERVICE_CIDR

pytestmark = [pytest.mark.root]


def service(name, namespace, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, **spec}}


def endpoint_slice(service_name, namespace, endpoints, port=8080):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service_name}-1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "endpoints": endpoints, "ports": [{"name": "", "port": port, "protocol": "TCP"}]}


def backend(ip, node, **conditions):
    return {"addresses": [ip], "nodeName": node, "conditions": conditions}


def test_services_and_endpoint_slices_become_the_table_the_node_programs(installed, new_namespace, node_env, made):
    kube = installed
    ns = new_namespace("svc")
    node = f"svc-node-{os.urandom(3).hex()}"
    create = made.create
    obj = create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    obj["status"] = {"addresses": [{"type": "InternalIP", "address": "192.168.77.1"}]}
    kube.replace(obj, sub="status")
    web = create(service("web", ns, type="NodePort", externalTrafficPolicy="Local",
                         sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}},
                         ports=[{"port": 80, "protocol": "TCP", "targetPort": 8080}]))
    create(service("headless", ns, clusterIP="None", ports=[{"port": 80, "protocol": "TCP"}]))
    create(endpoint_slice("web", ns, [
        backend("10.1.0.5", node),
        backend("10.1.0.6", "other-node"),
        backend("10.1.0.7", node, ready=False, serving=True, terminating=True),
        backend("10.1.0.8", node, ready=False, serving=False, terminating=False)]))
    create(endpoint_slice("headless", ns, [backend("10.1.0.9", node)]))
    cluster_ip, node_port = web["spec"]["clusterIP"], web["spec"]["ports"][0]["nodePort"]

    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, node, datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert "ServiceCIDR" in agent.cache.reflectors      # served by this server (GA in 1.33)
        assert wait_until(lambda: len([s for s in agent.cache.objects("EndpointSlice")
                                       if s["metadata"]["namespace"] == ns]) == 2)
        report = agent.sync()
    finally:
        agent.cache.stop()

    assert report.services is not None and report.services.service_cidrs == (SERVICE_CIDR,)
    table = dp.states[-1].services
    mine = {str(s.frontend): s for s in table.services.values()
            if s.frontend.ip in (cluster_ip, "192.168.77.1")}
    assert set(mine) == {f"{cluster_ip}:80/TCP", f"192.168.77.1:{node_port}/TCP"}
    cluster = mine[f"{cluster_ip}:80/TCP"]
    assert [(str(b), b.state) for b in cluster.backends] == [
        ("10.1.0.5:8080", "active"), ("10.1.0.6:8080", "active"), ("10.1.0.7:8080", "terminating")]
    assert (cluster.affinity, cluster.affinity_timeout) == ("ClientIP", 30)
    local = mine[f"192.168.77.1:{node_port}/TCP"]   # externalTrafficPolicy Local: this node's backends only
    assert local.type == "NodePort" and [str(b) for b in local.backends] == ["10.1.0.5:8080", "10.1.0.7:8080"]
    assert not any(b.ip == "10.1.0.9" for s in table.services.values() for b in s.backends)   # headless
    assert report.services.names[cluster.id] == f"{ns}/web"

    # cluster mode: the node's store is not used; list shows what the agent programmed, update is refused
    from ciliumctl.node.services import ops as service_ops
    from ciliumctl.services.model import Frontend, Service

    with pytest.raises(UsageError, match="come from the cluster"):
        service_ops.update_service(Service(0, Frontend("10.96.0.50", 80)))
    require_cli()
    env = cli_env(**{k: v for k, v in os.environ.items() if k.startswith("CILIUMCTL_")})
    out = run_cli("service", "list", env=env, check=True).stdout
    assert out.startswith("cluster mode:") and f"{cluster_ip}:80/TCP" in out and f"{ns}/web" in out
    refused = run_cli("service", "update", "--frontend", "10.96.0.50:80", env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
