"""install / uninstall / status in cluster mode, against the fake API server."""

import io
import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from ciliumctl.base.errors import Finding, UsageError
from ciliumctl.cluster import install as inst
from ciliumctl.cluster import manifests
from ciliumctl.cluster.kube import KINDS, ApiFailure

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies"


def dry_run(**kwargs) -> list[dict]:
    out = io.StringIO()
    inst.install(dry_run=True, output="yaml", out=out, kubeconfig="/nonexistent", **kwargs)
    return list(yaml.safe_load_all(out.getvalue()))


def test_dry_run_prints_every_manifest_sane():
    objs = dry_run(image="registry.local/ciliumctl:test", enforcement="always", audit=True, flow_buffer_size=8191)
    assert [o["kind"] for o in objs] == ["CustomResourceDefinition"] * 5 + [
        "Namespace", "ServiceAccount", "ResourceQuota", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "DaemonSet"]
    for obj in objs:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ciliumctl"
        assert (obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")) \
            == ("namespace" not in obj["metadata"])

    crds = {o["spec"]["names"]["kind"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "CiliumIdentity",
                         "CiliumEndpoint", "CiliumCIDRGroup"}
    assert crds["CiliumNetworkPolicy"]["spec"]["names"]["shortNames"][0] == "cnp"
    assert crds["CiliumClusterwideNetworkPolicy"]["spec"]["names"]["shortNames"] == ["ccnp"]
    for kind in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
        version = crds[kind]["spec"]["versions"][0]
        assert version["name"] == "v2" and version["subresources"] == {"status": {}}
        cond = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
        assert set(cond["items"]["properties"]) >= {"type", "status", "reason", "message", "lastTransitionTime"}

    config = next(o for o in objs if o["kind"] == "ConfigMap")
    assert config["data"] == {"enforcement-mode": "always", "audit-mode": "true", "flow-buffer-size": "8191"}

    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    container = pod["containers"][0]
    assert container["image"] == "registry.local/ciliumctl:test"
    assert container["command"] == ["ciliumctl", "agent", "run", "--hubble-listen", "127.0.0.1:4244"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/sys/fs/bpf", "/var/run/ciliumctl", "/etc/cni/net.d", "/opt/cni/bin"):
        assert volumes[mounts[path]] == path
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    quota = next(o for o in objs if o["kind"] == "ResourceQuota")
    assert [pod["priorityClassName"]] == quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CILIUMCTL_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_rbac_is_least_privilege():
    role = next(o for o in dry_run() if o["kind"] == "ClusterRole")
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
              for v in rule["verbs"]}
    assert all("*" not in grant for grant in grants)
    resources = {r for _, r, _ in grants}
    assert "secrets" not in resources
    assert ("", "pods", "watch") in grants and ("", "pods", "update") not in grants
    assert ("cilium.io", "ciliumnetworkpolicies/status", "update") in grants
    assert ("cilium.io", "ciliumnetworkpolicies", "update") not in grants  # never rewrites user policies
    assert ("cilium.io", "ciliumidentities", "create") in grants
    assert ("cilium.io", "ciliumidentities", "delete") not in grants
    assert {v for g, r, v in grants if r == "ciliumendpoints"} >= {"create", "update", "delete"}


def test_dry_run_json_and_bad_options():
    out = io.StringIO()
    inst.install(dry_run=True, output="json", out=out)
    data = json.loads(out.getvalue())
    assert data["kind"] == "List" and len(data["items"]) == 12
    with pytest.raises(UsageError, match="enforcement"):
        inst.install(dry_run=True, enforcement="sometimes", out=io.StringIO())
    with pytest.raises(UsageError, match="one less than a power of two"):
        inst.install(dry_run=True, flow_buffer_size=4096, out=io.StringIO())


def test_install_is_idempotent_and_reports_like_kubectl(kube, fake):
    out = io.StringIO()
    first = inst.install(kube=kube, out=out)
    assert {r.action for r in first} == {"created"}
    assert "daemonset.apps/ciliumctl-agent created" in out.getvalue()
    assert "customresourcedefinition.apiextensions.k8s.io/ciliumnetworkpolicies.cilium.io created" in out.getvalue()
    assert fake.count("PATCH", query_key="fieldManager") == 12  # every object through server-side apply

    again = inst.install(kube=kube, out=io.StringIO())
    assert {r.action for r in again} == {"unchanged"}

    changed = inst.install(kube=kube, image="registry.local/other:1", out=io.StringIO())
    actions = {r.kind: r.action for r in changed}
    assert actions["DaemonSet"] == "configured" and actions["ConfigMap"] == "unchanged"
    ds = kube.get(KINDS["DaemonSet"], manifests.AGENT, manifests.NAMESPACE)
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/other:1"

    # the CRDs serve their paths: a policy can be stored under cilium.io/v2
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                 "metadata": {"name": "p", "namespace": "default"}, "spec": {"endpointSelector": {}}})


def _fake_daemonset_controller(kube, nodes, stop):
    """What the DaemonSet controller and kubelets would do: one ready agent pod per node, then the status."""
    while kube.get(KINDS["DaemonSet"], manifests.AGENT, manifests.NAMESPACE) is None and not stop.is_set():
        time.sleep(0.05)
    time.sleep(0.3)
    for node in nodes:
        kube.create({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"ciliumctl-agent-{node}", "namespace": manifests.NAMESPACE,
                                  "labels": dict(manifests.AGENT_LABELS)},
                     "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "x"}]},
                     "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                                "containerStatuses": [{"name": "agent", "restartCount": 1}]}})
    ds = kube.get(KINDS["DaemonSet"], manifests.AGENT, manifests.NAMESPACE)
    ds["status"] = {"desiredNumberScheduled": len(nodes), "numberReady": 0, "updatedNumberScheduled": 0,
                    "numberAvailable": 0}
    ds = kube.replace(ds, sub="status")
    time.sleep(0.3)
    n = len(nodes)
    ds["status"] = {"desiredNumberScheduled": n, "numberReady": n, "updatedNumberScheduled": n, "numberAvailable": n}
    kube.replace(ds, sub="status")


def test_install_wait_shows_progress_until_ready_then_status(kube):
    stop = threading.Event()
    controller = threading.Thread(target=_fake_daemonset_controller, args=(kube, ["node-a", "node-b"], stop))
    controller.start()
    lines = []
    try:
        inst.install(kube=kube, wait=True, timeout=20, out=io.StringIO(), progress=lines.append)
    finally:
        stop.set()
        controller.join()
    assert lines[0].startswith("DaemonSet ciliumctl-agent: 0/0 ready")
    assert "DaemonSet ciliumctl-agent: 2/2 ready, 2 up to date" in lines
    assert lines[-1] == "ciliumctl is ready on every node"

    from ciliumctl.cluster import endpoints as ceps
    from ciliumctl.endpoints.model import Endpoint

    ceps.publish(kube, Endpoint(id=1, name="web", ipv4="10.1.0.5", identity=300), "node-b")
    st = inst.status(kube=kube)
    assert st.healthy and st.missing_crds == []
    assert [(a.node, a.endpoints) for a in st.agents] == [("node-a", 0), ("node-b", 1)]
    assert [(a.node, a.ready, a.restarts) for a in st.agents] == [("node-a", True, 1), ("node-b", True, 1)]
    assert st.to_dict()["healthy"] is True


def test_wait_times_out_with_a_finding(installed):
    with pytest.raises(Finding, match=r"timed out after 1s with 0/0 agents ready"):
        inst.wait_ready(installed, timeout=1, progress=lambda _: None, interval=0.2)


def test_status_reports_unhealthy_agent_and_missing_install(kube):
    st = inst.status(kube=kube)
    assert not st.installed and not st.healthy and len(st.missing_crds) == 5
    inst.install(kube=kube, out=io.StringIO())
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "agent-x", "namespace": manifests.NAMESPACE,
                              "labels": dict(manifests.AGENT_LABELS)},
                 "spec": {"nodeName": "node-x", "containers": [{"name": "agent", "image": "x"}]},
                 "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                            "containerStatuses": [{"name": "agent", "restartCount": 4, "state": {
                                "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}})
    st = inst.status(kube=kube)
    assert st.installed and not st.healthy
    assert st.agents[0].node == "node-x" and not st.agents[0].ready
    assert st.agents[0].message == "CrashLoopBackOff: back-off 40s" and st.agents[0].restarts == 4


def test_uninstall_removes_everything(kube, fake):
    inst.install(kube=kube, out=io.StringIO())
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity", "metadata": {"name": "300"},
                 "security-labels": {"k8s:app": "a"}})
    dry = inst.uninstall(kube=kube, out=io.StringIO(), dry_run=True)
    assert {r.action for r in dry} == {"deleted (server dry run)"}
    assert kube.get(KINDS["DaemonSet"], manifests.AGENT, manifests.NAMESPACE) is not None
    out = io.StringIO()
    results = inst.uninstall(kube=kube, out=out)
    assert {r.action for r in results} == {"deleted"} and len(results) == 12
    assert out.getvalue().splitlines()[0] == "daemonset.apps/ciliumctl-agent deleted"
    for kind in ("customresourcedefinitions", "clusterroles", "clusterrolebindings"):
        assert not any(fake.store.objects[(g, p)] for (g, p) in fake.store.objects if p == kind)
    assert kube.get(KINDS["Namespace"], manifests.NAMESPACE) is None
    assert ("cilium.io", "ciliumidentities") not in fake.store.types  # CRD gone: its objects and paths too
    assert {r.action for r in inst.uninstall(kube=kube, out=io.StringIO())} == {"not found"}


def _corpus_docs(strict_valid: bool):
    rows = [json.loads(line) for line in (CORPUS / "verdicts.jsonl").read_text().splitlines()]
    for row in rows:
        if row["valid_strict"] == strict_valid:
            docs = list(yaml.safe_load_all((CORPUS / row["file"]).read_text()))
            yield row, docs[row["index"]]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="policy corpus not present")
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


def test_kubeconfig_and_connection_errors_are_one_line(fake, tmp_path):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.cluster.kube import Kube

    with pytest.raises(UsageError, match=r"^kubeconfig /nonexistent/kc: .*pass --kubeconfig/--context"):
        inst.install(kubeconfig="/nonexistent/kc", out=io.StringIO())
    config = fake.write_kubeconfig(tmp_path / "kc")
    with pytest.raises(UsageError, match="kubeconfig"):
        Kube.connect(str(config), context="no-such-context")
    fake.stop()  # nothing listens there any more
    with pytest.raises(EnvironmentProblem, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1:"):
        inst.status(kubeconfig=str(config))
