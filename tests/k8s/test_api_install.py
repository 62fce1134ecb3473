"""install / uninstall / status / install --wait in cluster mode, on a real API server (the shared one of
tests/k8s/conftest.py: no controllers and no nodes, so the test plays the DaemonSet controller and the kubelets
where it needs agent pods). An install of the test's own gets a namespace of its own: without a namespace
controller a deleted namespace stays Terminating. The CLI's install / uninstall / status are in test_api_cli.py;
faults in test_api_faults.py; the agent DaemonSet on real nodes in test_cluster_e2e.py."""

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from support.shell import wait_until

from ciliumctl.base.errors import EnvironmentProblem, Finding
from ciliumctl.cluster import install as inst
from ciliumctl.cluster import manifests
from ciliumctl.cluster.kube import KINDS, ApiFailure, kind_of
from k8s.objects import add_pod

pytestmark = [pytest.mark.root]

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies"
OBJECTS = 13   # what an install applies (manifests.build())


def own_namespace() -> str:
    return f"cctl-inst-{os.urandom(3).hex()}"


def test_install_is_idempotent_through_server_side_apply_and_reports_like_kubectl(kube):
    ns = own_namespace()
    out = io.StringIO()
    first = inst.install(kube=kube, namespace=ns, out=out)
    assert len(first) == OBJECTS
    # the namespaced objects are new; cluster-wide ones (CRDs, RBAC) may be there from another install
    assert {r.action for r in first if r.namespace or r.kind == "Namespace"} == {"created"}
    assert "daemonset.apps/ciliumctl-agent created" in out.getvalue()
    for obj in manifests.build(manifests.InstallOptions(namespace=ns)):
        meta = obj["metadata"]
        stored = kube.get(kind_of(obj), meta["name"], meta.get("namespace"))
        managers = {(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]}
        assert ("ciliumctl", "Apply") in managers, (obj["kind"], managers)   # server-side apply, every object

    again = inst.install(kube=kube, namespace=ns, out=io.StringIO())
    assert {r.action for r in again} == {"unchanged"}
    changed = inst.install(kube=kube, namespace=ns, image="registry.local/other:1", out=io.StringIO())
    actions = {r.kind: r.action for r in changed}
    assert actions["DaemonSet"] == "configured" and actions["ConfigMap"] == "unchanged"
    ds = kube.get(KINDS["DaemonSet"], manifests.AGENT, ns)
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/other:1"
    # the CRDs serve their paths: a policy can be stored under cilium.io/v2
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                 "metadata": {"name": "p", "namespace": "default"}, "spec": {"endpointSelector": {}}})


def _play_daemonset_controller(kube, ns, nodes, stop):
    """What the DaemonSet controller and the kubelets would do: one ready agent pod per node, then the status."""
    while kube.get(KINDS["DaemonSet"], manifests.AGENT, ns) is None and not stop.is_set():
        time.sleep(0.05)
    time.sleep(0.3)
    ready = {"conditions": [{"type": "Ready", "status": "True"}],
             "containerStatuses": [{"name": "c", "image": "ciliumctl:local", "imageID": "", "ready": True,
                                    "restartCount": 1, "state": {"running": {}}}]}
    for node in nodes:
        add_pod(kube, f"ciliumctl-agent-{node}", node, labels=dict(manifests.AGENT_LABELS), namespace=ns,
                status=ready)
    ds = kube.get(KINDS["DaemonSet"], manifests.AGENT, ns)
    n = len(nodes)
    ds["status"] = {"desiredNumberScheduled": n, "currentNumberScheduled": n, "numberMisscheduled": 0,
                    "numberReady": 0, "updatedNumberScheduled": 0, "numberAvailable": 0}
    ds = kube.replace(ds, sub="status")
    time.sleep(0.3)
    ds["status"].update(numberReady=n, updatedNumberScheduled=n, numberAvailable=n)
    kube.replace(ds, sub="status")


def test_install_wait_shows_progress_until_ready_then_status(kube):
    from ciliumctl.cluster import endpoints as ceps
    from ciliumctl.endpoints.model import Endpoint

    ns = own_namespace()
    stop = threading.Event()
    controller = threading.Thread(target=_play_daemonset_controller, args=(kube, ns, ["node-a", "node-b"], stop))
    controller.start()
    lines = []
    try:
        inst.install(kube=kube, namespace=ns, wait=True, timeout=20, out=io.StringIO(), progress=lines.append)
    finally:
        stop.set()
        controller.join()
    assert lines[0].startswith("DaemonSet ciliumctl-agent: 0/0 ready")
    assert "DaemonSet ciliumctl-agent: 2/2 ready, 2 up to date" in lines
    assert lines[-1] == "ciliumctl is ready on every node"

    ceps.publish(kube, Endpoint(id=1, name="web", ipv4="10.1.0.5", identity=300), "node-b")
    st = inst.status(kube=kube, namespace=ns)
    assert st.healthy and st.missing_crds == []
    assert [(a.node, a.endpoints) for a in st.agents] == [("node-a", 0), ("node-b", 1)]
    assert [(a.node, a.ready, a.restarts) for a in st.agents] == [("node-a", True, 1), ("node-b", True, 1)]
    assert st.to_dict()["healthy"] is True


def test_wait_times_out_with_a_finding(installed):
    with pytest.raises(Finding, match=r"timed out after 1s with 0/0 agents ready"):
        inst.wait_ready(installed, timeout=1, progress=lambda _: None, interval=0.2)


def test_status_reports_an_unhealthy_agent_and_a_missing_install(installed):
    st = inst.status(kube=installed, namespace="no-such-install")
    assert not st.installed and not st.healthy and st.missing_crds == []
    add_pod(installed, "agent-x", "node-x", labels=dict(manifests.AGENT_LABELS), namespace=manifests.NAMESPACE,
            status={"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "c", "image": "ciliumctl:local", "imageID": "", "ready": False,
                                           "restartCount": 4, "state": {"waiting": {
                                               "reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]})
    st = inst.status(kube=installed)
    assert st.installed and not st.healthy
    assert st.agents[0].node == "node-x" and not st.agents[0].ready
    assert st.agents[0].message == "CrashLoopBackOff: back-off 40s" and st.agents[0].restarts == 4


def test_uninstall_removes_everything_and_a_second_one_finds_nothing(kube):
    ns = own_namespace()
    inst.install(kube=kube, namespace=ns, out=io.StringIO())
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity", "metadata": {"name": "300"},
                 "security-labels": {"k8s:app": "a"}})
    out = io.StringIO()
    results = inst.uninstall(kube=kube, namespace=ns, out=out)
    assert {r.action for r in results} == {"deleted"} and len(results) == OBJECTS
    assert out.getvalue().splitlines()[0] == "daemonset.apps/ciliumctl-agent deleted"
    # the server removes a CRD, and its objects, once it has emptied it (no controller needed)
    assert wait_until(lambda: inst.status(kube=kube, namespace=ns).missing_crds == [
        c["metadata"]["name"] for c in manifests.crds()], 30, 0.2)
    with pytest.raises(ApiFailure, match="ciliumidentities.cilium.io is not served"):
        kube.list(KINDS["CiliumIdentity"])
    assert kube.get(KINDS["ClusterRole"], manifests.AGENT) is None
    namespace = kube.get(KINDS["Namespace"], ns)     # Terminating here: no namespace controller empties it
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    again = inst.uninstall(kube=kube, namespace=ns, out=io.StringIO())
    assert {r.action for r in again if r.kind != "Namespace"} == {"not found"}


def _terminating_namespace(kube) -> str:
    """A namespace left Terminating (this server has no namespace controller to empty it), as one is for a while
    after `ciliumctl uninstall`."""
    ns = own_namespace()
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.delete(KINDS["Namespace"], ns)
    assert kube.get(KINDS["Namespace"], ns)["metadata"]["deletionTimestamp"]
    return ns


def _finalize(kube, ns: str) -> None:
    """The namespace controller's last step: clear spec.finalizers, and the server removes the namespace."""
    body = kube.get(KINDS["Namespace"], ns)
    body["spec"]["finalizers"] = []
    kube.request("PUT", f"/api/v1/namespaces/{ns}/finalize", body=body)


def test_install_into_a_namespace_still_being_deleted_waits_for_it_to_go(kube):
    ns = _terminating_namespace(kube)
    lines = []
    finisher = threading.Timer(1.0, _finalize, args=(kube, ns))
    finisher.start()
    try:
        results = inst.install(kube=kube, namespace=ns, out=io.StringIO(), progress=lines.append, timeout=30)
    finally:
        finisher.join()
    assert lines[0].startswith(f"namespace {ns} is being deleted (since ") and lines[0].endswith("): waiting")
    assert {r.action for r in results if r.namespace or r.kind == "Namespace"} == {"created"}
    assert not kube.get(KINDS["Namespace"], ns)["metadata"].get("deletionTimestamp")


def test_install_gives_up_on_a_namespace_that_stays_terminating_and_creates_nothing(kube):
    ns = _terminating_namespace(kube)
    with pytest.raises(EnvironmentProblem) as err:
        inst.install(kube=kube, namespace=ns, out=io.StringIO(), progress=lambda _: None, timeout=1)
    assert str(err.value).startswith(f"install: namespace {ns} is still being deleted after 1s")
    assert str(err.value).endswith("nothing was installed")
    assert kube.get(KINDS["ServiceAccount"], manifests.AGENT, ns) is None
    _finalize(kube, ns)


def _corpus_docs(strict_valid: bool):
    rows = [json.loads(line) for line in (CORPUS / "verdicts.jsonl").read_text().splitlines()]
    for row in rows:
        if row["valid_strict"] == strict_valid:
            docs = list(yaml.safe_load_all((CORPUS / row["file"]).read_text()))
            yield row, docs[row["index"]]


@pytest.mark.skipif(not CORPUS.is_dir() and os.environ.get("CI") != "true", reason="policy corpus not present")
def test_crd_schema_accepts_every_valid_corpus_policy_without_pruning(installed):
    count = 0
    for row, doc in _corpus_docs(True):
        if row["file"] == "valid-edge/protocol-lowercase.yaml":
            # the agent upper-cases it, but Cilium's CRD enumerates protocols in upper case: the server refuses
            with pytest.raises(ApiFailure, match="Unsupported value: \"udp\""):
                installed.apply({**doc, "metadata": {**doc["metadata"], "namespace": "default"}}, "test")
            continue
        doc = dict(doc)
        if doc["kind"] == "CiliumNetworkPolicy":
            doc["metadata"] = {**doc["metadata"], "namespace": "default"}
        stored = installed.apply(doc, "test", force=True)
        for key in ("spec", "specs"):
            assert stored.get(key) == doc.get(key), f"{row['file']}#{row['index']}: {key} changed by the schema"
        count += 1
    assert count >= 100
