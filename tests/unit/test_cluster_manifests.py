"""What a cluster install would apply, without a cluster: the manifests of `install --dry-run` (CRDs, RBAC, the
DaemonSet), the least-privilege ClusterRole, refused options; and how the agent merges its status conditions into
a policy's (the API server round trips are tested in tests/k8s/test_api_*.py)."""

import io
import json
from pathlib import Path

import pytest
import yaml

from ciliumctl.base.errors import UsageError
from ciliumctl.cluster import install as inst
from ciliumctl.cluster import status_conditions as sc

L7 = Path(__file__).resolve().parents[2] / "examples" / "policies" / "starwars-l7-kafka.yaml"


def dry_run(**kwargs) -> list[dict]:
    out = io.StringIO()
    inst.install(dry_run=True, output="yaml", out=out, kubeconfig="/nonexistent", **kwargs)
    return list(yaml.safe_load_all(out.getvalue()))


def test_dry_run_prints_every_manifest_sane():
    objs = dry_run(image="registry.local/ciliumctl:test", enforcement="always", audit=True, flow_buffer_size=8191)
    assert [o["kind"] for o in objs] == ["CustomResourceDefinition"] * 6 + [
        "Namespace", "ServiceAccount", "ResourceQuota", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "DaemonSet"]
    for obj in objs:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ciliumctl"
        assert (obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")) \
            == ("namespace" not in obj["metadata"])

    crds = {o["spec"]["names"]["kind"]: o for o in objs if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "CiliumIdentity",
                         "CiliumEndpoint", "CiliumCIDRGroup", "CiliumLocalRedirectPolicy"}
    assert crds["CiliumLocalRedirectPolicy"]["spec"]["scope"] == "Namespaced"
    assert crds["CiliumLocalRedirectPolicy"]["spec"]["names"]["shortNames"] == ["clrp"]
    skip = crds["CiliumLocalRedirectPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"]["properties"]["skipRedirectFromBackend"]
    assert skip["x-kubernetes-validations"] == [{"rule": "self == oldSelf"}] and skip["default"] is False
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
    for path in ("/sys/fs/bpf", "/var/run/ciliumctl", "/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni/networks"):
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


def test_nodeport_devices_are_the_configmaps_or_each_agents_detected_ones():
    """Cilium's `devices` option: named, every agent reads them from the ConfigMap; not named, the key is absent
    and each agent detects its node's (node.services.devices). The agent may read its own DaemonSet only, to
    tell an uninstall from a restart."""
    objs = inst.install(dry_run=True, devices=" eth0, eth1 ", out=io.StringIO())
    config = next(o for o in objs if o["kind"] == "ConfigMap")
    assert config["data"]["devices"] == "eth0,eth1"
    assert "devices" not in next(o for o in dry_run() if o["kind"] == "ConfigMap")["data"]
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    env = {e["name"]: e for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CILIUMCTL_DEVICES"]["valueFrom"]["configMapKeyRef"] == {"name": "ciliumctl-config", "key": "devices",
                                                                        "optional": True}
    assert env["CILIUMCTL_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    role = next(o for o in objs if o["kind"] == "ClusterRole")
    assert [r for r in role["rules"] if r["apiGroups"] == ["apps"]] == [
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": ["ciliumctl-agent"], "verbs": ["get"]}]
    for bad in ("eth0,a/b", "averyveryverylongname", "eth0:1", "lo 1"):
        with pytest.raises(UsageError, match="is no interface name"):
            inst.install(dry_run=True, devices=bad, out=io.StringIO())


def test_dry_run_json_and_bad_options():
    out = io.StringIO()
    inst.install(dry_run=True, output="json", out=out)
    data = json.loads(out.getvalue())
    assert data["kind"] == "List" and len(data["items"]) == 13
    with pytest.raises(UsageError, match="enforcement"):
        inst.install(dry_run=True, enforcement="sometimes", out=io.StringIO())
    with pytest.raises(UsageError, match="one less than a power of two"):
        inst.install(dry_run=True, flow_buffer_size=4096, out=io.StringIO())


def test_conditions_keep_others_and_transition_times():
    obj = {"kind": "CiliumNetworkPolicy", "metadata": {"name": "p", "generation": 3},
           "spec": yaml.safe_load(L7.read_text())["spec"],
           "status": {"conditions": [{"type": "Other", "status": "True"},
                                     {"type": "Valid", "status": "True", "reason": "PolicyAccepted",
                                      "message": "ok", "lastTransitionTime": "2020-01-01T00:00:00Z",
                                      "observedGeneration": 3}]}}
    conds = sc.desired_conditions(obj, sc.wanted_conditions(obj, True, "ok"))
    by_type = {c["type"]: c for c in conds}
    assert set(by_type) == {"Other", "Valid", "Enforced"}
    assert by_type["Valid"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"      # unchanged status keeps its time
    assert by_type["Enforced"]["status"] == "False" and by_type["Enforced"]["observedGeneration"] == 3
    obj["status"]["conditions"] = conds
    assert sc.desired_conditions(obj, sc.wanted_conditions(obj, True, "ok")) is None
