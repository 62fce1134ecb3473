"""CiliumLocalRedirectPolicy in cluster mode, on the real API server (the shared one of tests/k8s/conftest.py, its
CRD installed by `install`): the agent's watch turns a policy into LocalRedirect entries of the table the node
programs (a recorder here), with this node's Ready pods of the policy's namespace as backends; a pod on another node
is never one; skipRedirectFromBackend keeps the Service for the local pod's own traffic; when the local pod goes,
the Service's own backends are back; an invalid policy is left out with its one line. As test_api_services.py,
objects made by hand (no controllers run there)."""

import os

import pytest
from support.recording import RecordingDatapath
from support.shell import wait_until

from ciliumctl.cluster.kube import KINDS, ApiFailure
from ciliumctl.node import cluster_sync as node_sync
from k8s.objects import add_pod
from k8s.test_api_services import backend, endpoint_slice, service

pytestmark = [pytest.mark.root]

READY = {"conditions": [{"type": "Ready", "status": "True"}]}


def lrp(name, namespace, frontend):
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumLocalRedirectPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"redirectFrontend": frontend,
                     "redirectBackend": {"localEndpointSelector": {"matchLabels": {"app": "cache"}},
                                         "toPorts": [{"port": "9090", "protocol": "TCP"}]}}}


def test_local_redirect_policies_become_local_redirect_entries(installed, new_namespace, node_env, made):
    kube = installed
    ns = new_namespace("lrp")
    node = f"lrp-node-{os.urandom(3).hex()}"
    create = made.create
    web = create(service("web", ns, ports=[{"port": 80, "protocol": "TCP", "targetPort": 8080}]))
    create(endpoint_slice("web", ns, [backend("10.1.0.5", "other-node")]))
    add_pod(kube, "cache", node, "10.1.0.20", {"app": "cache"}, ns, status=READY)
    made.track("Pod", "cache", ns)
    add_pod(kube, "cache-elsewhere", "other-node", "10.1.0.21", {"app": "cache"}, ns, status=READY)
    made.track("Pod", "cache-elsewhere", ns)
    skipping = lrp("web-local", ns, {"serviceMatcher": {"serviceName": "web", "namespace": ns}})
    skipping["spec"]["skipRedirectFromBackend"] = True
    stored = create(skipping)
    # fixed once created, as Cilium's CRD (x-kubernetes-validations self == oldSelf): the API server refuses
    stored["spec"]["skipRedirectFromBackend"] = False
    with pytest.raises(ApiFailure) as refused:
        kube.replace(stored)
    assert refused.value.status == 422 and "self == oldSelf" in refused.value.api_message
    create(lrp("meta", ns, {"addressMatcher": {"ip": "169.254.169.254",
                                               "toPorts": [{"port": "80", "protocol": "TCP"}]}}))
    # valid for the CRD's schema, refused by the agent's checks: left out, named
    create(lrp("bad", ns, {"serviceMatcher": {"serviceName": "web", "namespace": "elsewhere"}}))
    cluster_ip = web["spec"]["clusterIP"]

    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, node, datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert "CiliumLocalRedirectPolicy" in agent.cache.reflectors
        assert wait_until(lambda: len([o for o in agent.cache.objects("CiliumLocalRedirectPolicy")
                                       if o["metadata"]["namespace"] == ns]) == 3)
        assert wait_until(lambda: agent.cache.get("Pod", "cache", ns) is not None)
        report = agent.sync()

        table = dp.states[-1].services
        mine = {str(s.frontend): s for s in table.services.values()
                if s.frontend.ip in (cluster_ip, "169.254.169.254")}
        assert set(mine) == {f"{cluster_ip}:80/TCP", "169.254.169.254:80/TCP"}
        for svc in mine.values():
            assert svc.type == "LocalRedirect" and [str(b) for b in svc.backends] == ["10.1.0.20:9090"]
        # skipRedirectFromBackend: the local pod's own traffic keeps the Service's backends
        skip = mine[f"{cluster_ip}:80/TCP"]
        assert skip.skip_from == ("10.1.0.20",) and skip.original is not None
        assert [str(b) for b in skip.original.backends] == ["10.1.0.5:8080"]
        assert mine["169.254.169.254:80/TCP"].skip_from == ()
        assert report.services is not None
        named = report.services.names[mine[f"{cluster_ip}:80/TCP"].id]
        assert named == f"{ns}/web (local redirect {ns}/web-local)"
        assert any(f"{ns}/bad" in line and "must be the policy's namespace" in line
                   for line in report.services.skipped), report.services.skipped

        # the local pod goes: the Service's own backend again, the address no longer translated
        kube.delete(KINDS["Pod"], "cache", ns)     # no kubelet: it stays, terminating (deletionTimestamp)
        assert wait_until(lambda: (agent.cache.get("Pod", "cache", ns) or {"metadata": {"deletionTimestamp": 1}})
                          ["metadata"].get("deletionTimestamp"))
        agent.sync()
        table = dp.states[-1].services
        again = {str(s.frontend): s for s in table.services.values()
                 if s.frontend.ip in (cluster_ip, "169.254.169.254")}
        assert set(again) == {f"{cluster_ip}:80/TCP"}
        assert again[f"{cluster_ip}:80/TCP"].type == "ClusterIP"
        assert [str(b) for b in again[f"{cluster_ip}:80/TCP"].backends] == ["10.1.0.5:8080"]
    finally:
        agent.cache.stop()
