"""policy apply / get / delete against a real API server (the shared one of tests/k8s/conftest.py), and the Valid
status condition."""

import textwrap

import pytest
from support.policies import allow_ingress

from ciliumctl.base.errors import Finding, UsageError
from ciliumctl.cluster import policy_apply as pa
from ciliumctl.cluster import status_conditions as sc
from ciliumctl.cluster.kube import KINDS
from k8s.objects import kubeconfig_variant

pytestmark = [pytest.mark.root]

ALLOW_WEB = allow_ingress("allow-web", {"app": "web"}, {"app": "client"}, port=80) + """\
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: deny-world
spec:
  endpointSelector: {}
  egressDeny:
  - toEntities: [world]
"""

INVALID = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: broken
spec:
  endpointSelector: {}
  ingress:
  - fromCIDR: ["10.0.0.0/33"]
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def actions(results):
    return [(r.kind, r.name, r.action) for r in results]


def test_apply_reports_created_configured_unchanged(installed, tmp_path):
    f = write(tmp_path, "p.yaml", ALLOW_WEB)
    assert actions(pa.apply_policies([f], kube=installed)) == [
        ("CiliumNetworkPolicy", "allow-web", "created"), ("CiliumClusterwideNetworkPolicy", "deny-world", "created")]
    assert actions(pa.apply_policies([f], kube=installed)) == [
        ("CiliumNetworkPolicy", "allow-web", "unchanged"),
        ("CiliumClusterwideNetworkPolicy", "deny-world", "unchanged")]
    f2 = write(tmp_path, "p2.yaml", ALLOW_WEB.replace('port: "80"', 'port: "8080"'))
    assert actions(pa.apply_policies([f2], kube=installed))[0] == ("CiliumNetworkPolicy", "allow-web", "configured")
    stored = installed.get(KINDS["CiliumNetworkPolicy"], "allow-web", "default")
    assert stored["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] == "8080"
    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
    assert managers == {"ciliumctl"}
    lines = [r.line() for r in pa.apply_policies([f2], kube=installed)]
    assert lines[0] == "ciliumnetworkpolicy.cilium.io/allow-web unchanged"


def test_validation_warnings_are_handed_back(installed, tmp_path):
    warnings = []
    pa.apply_policies([write(tmp_path, "p.yaml", ALLOW_WEB)], kube=installed, warnings=warnings)
    assert [r.document.name for r in warnings] == ["deny-world"]  # endpointSelector {} selects everything
    assert "selects every endpoint" in warnings[0].warnings[0].message


def test_invalid_policy_changes_nothing(installed, tmp_path):
    from ciliumctl.policy import checked

    good = write(tmp_path, "good.yaml", ALLOW_WEB)
    bad = write(tmp_path, "bad.yaml", INVALID)
    with pytest.raises(checked.InvalidPolicies) as err:
        pa.apply_policies([good, bad], kube=installed)
    assert err.value.exit_code == 1
    bad_reports = [r for r in err.value.reports if not r.valid]
    assert [r.document.name for r in bad_reports] == ["broken"]
    assert [f.line for f in bad_reports[0].errors] == [8]  # the line of the offending node
    assert pa.get_policies(kube=installed, all_namespaces=True) == []    # not even the valid one


def test_server_refusal_stops_the_whole_set_before_any_write(installed, tmp_path):
    # valid for the agent, but Cilium's CRD schema enumerates protocols upper-case: the server says no
    f = write(tmp_path, "p.yaml", ALLOW_WEB + "---\n" + ALLOW_WEB.split("---")[0].replace(
        "allow-web", "lower").replace("protocol: TCP", "protocol: tcp"))
    with pytest.raises(Finding, match=r"CiliumNetworkPolicy lower: the API server refuses it: .*nothing applied"):
        pa.apply_policies([f], kube=installed)
    assert installed.get(KINDS["CiliumNetworkPolicy"], "allow-web", "default") is None


def test_dry_run_client_and_server_write_nothing(installed, tmp_path):
    f = write(tmp_path, "p.yaml", ALLOW_WEB)
    assert [r.action for r in pa.apply_policies([f], kube=installed, dry_run="client")] == ["created (dry run)"] * 2
    assert [r.action for r in pa.apply_policies([f], kube=installed, dry_run="server")] == [
        "created (server dry run)"] * 2
    assert installed.get(KINDS["CiliumNetworkPolicy"], "allow-web", "default") is None
    pa.apply_policies([f], kube=installed)
    f2 = write(tmp_path, "p2.yaml", ALLOW_WEB.replace("app: client", "app: other"))
    assert pa.apply_policies([f2], kube=installed, dry_run="server")[0].action == "configured (server dry run)"
    stored = installed.get(KINDS["CiliumNetworkPolicy"], "allow-web", "default")
    assert stored["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"] == {"app": "client"}
    with pytest.raises(UsageError, match="--dry-run=maybe"):
        pa.apply_policies([f], kube=installed, dry_run="maybe")


def test_get_and_delete(installed, tmp_path):
    f = write(tmp_path, "p.yaml", ALLOW_WEB)
    pa.apply_policies([f], kube=installed)
    objs = pa.get_policies(kube=installed)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == [
        ("CiliumClusterwideNetworkPolicy", "deny-world"), ("CiliumNetworkPolicy", "allow-web")]
    assert [o["metadata"]["name"] for o in pa.get_policies(kind="cnp", name="allow-web", kube=installed)] == [
        "allow-web"]
    assert [o["metadata"]["namespace"] for o in pa.get_policies(name="allow-web", all_namespaces=True,
                                                                 kube=installed)] == ["default"]
    rows = pa.policy_rows(objs)
    assert {r["valid"] for r in rows} == {"Unknown"}  # no agent has looked at them yet
    with pytest.raises(Finding, match="not found"):
        pa.get_policies(kind="cnp", name="nope", kube=installed)

    results = pa.delete_policies(["allow-web", "nope"], kind="cnp", kube=installed)
    assert [(r.name, r.action) for r in results] == [("allow-web", "deleted"), ("nope", "not found")]
    assert [r.action for r in pa.delete_policies(files=[f], kube=installed)] == ["not found", "deleted"]
    assert pa.get_policies(kube=installed) == []


def test_valid_condition_false_with_reason_then_true_when_fixed(installed):
    kind = KINDS["CiliumNetworkPolicy"]
    import yaml

    obj = installed.create({**yaml.safe_load(INVALID), "metadata": {"name": "broken", "namespace": "default"}})
    valid, message = sc.report(installed, obj)
    assert not valid
    stored = installed.get(kind, "broken", "default")
    cond = sc.valid_condition(stored)
    assert cond["status"] == "False" and cond["reason"] == sc.REASON_INVALID
    assert "spec.ingress[0].fromCIDR[0]" in cond["message"] and cond["message"] == message
    assert pa.policy_rows([stored])[0]["valid"] == "False"

    rv = stored["metadata"]["resourceVersion"]
    sc.report(installed, stored)  # same verdict: no write
    assert installed.get(kind, "broken", "default")["metadata"]["resourceVersion"] == rv

    stored["spec"]["ingress"][0]["fromCIDR"] = ["10.0.0.0/8"]
    fixed = installed.replace(stored)
    assert sc.report(installed, fixed)[0] is True
    cond = sc.valid_condition(installed.get(kind, "broken", "default"))
    assert cond["status"] == "True" and cond["observedGeneration"] == 2
    assert fixed["spec"]["ingress"][0]["fromCIDR"] == ["10.0.0.0/8"]


def test_valid_condition_survives_a_conflicting_writer(installed):
    kind = KINDS["CiliumClusterwideNetworkPolicy"]
    obj = installed.create({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                            "metadata": {"name": "c"}, "spec": {"endpointSelector": {}, "ingress": [{}]}})
    stale = dict(obj)
    other = dict(obj, metadata={**obj["metadata"], "labels": {"touched": "yes"}})
    installed.replace(other)  # someone else wrote after we read: our resourceVersion is stale
    assert sc.set_valid(installed, stale, False, "x: broken") is True
    cond = sc.valid_condition(installed.get(kind, "c"))
    assert cond["status"] == "False" and cond["message"] == "x: broken"


def test_namespace_comes_from_the_kubeconfig_context(installed, kubeconfig, new_namespace, tmp_path):
    from ciliumctl.cluster.kube import Kube

    shop = new_namespace("shop")
    kc = kubeconfig_variant(kubeconfig, tmp_path / "kc-shop", namespace=shop)
    f = write(tmp_path, "p.yaml", ALLOW_WEB)
    results = pa.apply_policies([f], kubeconfig=kc)
    assert [(r.kind, r.namespace) for r in results] == [("CiliumNetworkPolicy", shop),
                                                        ("CiliumClusterwideNetworkPolicy", "")]
    assert Kube.connect(kc).namespace == shop
    assert [o["metadata"]["name"] for o in pa.get_policies(kind="cnp", kubeconfig=kc)] == ["allow-web"]
