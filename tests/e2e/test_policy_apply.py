"""`ciliumctl policy apply|get|delete` on a sandbox node: validated first, stored, enforced on real traffic."""

import json

import pytest
from support.policies import allow_ingress
from support.shell import write

from ciliumctl.datapath import events as E

pytestmark = pytest.mark.root

ALLOW_FRONTEND = allow_ingress("web-ingress", {"app": "web"}, {"role": "frontend"}, port=8080)

INVALID = allow_ingress("broken", {"app": "web"}, {"role": "frontend"}, port=99999)   # no such port


def test_apply_enforces_and_invalid_set_changes_nothing(node, tmp_path):
    node.cli("endpoint", "add", "web", "-l", "app=web")
    node.cli("endpoint", "add", "frontend", "-l", "role=frontend")
    node.cli("endpoint", "add", "other", "-l", "role=other")
    node.serve("web", "10.200.0.1", 8080)
    assert node.connect("frontend", "10.200.0.1", 8080) and node.connect("other", "10.200.0.1", 8080)

    good = write(tmp_path / "p" / "allow.yaml", ALLOW_FRONTEND)
    dry = node.cli("policy", "apply", "-f", str(good), "--dry-run").stdout
    assert "ciliumnetworkpolicy/web-ingress created (dry run)" in dry
    assert "+ endpoint 1 ingress enforcement enabled" in dry and "tcp/8080" in dry
    assert json.loads(node.cli("policy", "get", "-o", "json").stdout)["items"] == []   # dry run stored nothing
    assert node.connect("other", "10.200.0.1", 8080)                              # ... and enforced nothing

    res = node.cli("policy", "apply", "-f", str(good))
    assert res.stdout.strip() == "ciliumnetworkpolicy/web-ingress created"
    with node.ring() as ring:
        ring.drain()
        assert node.connect("frontend", "10.200.0.1", 8080)
        assert not node.connect("other", "10.200.0.1", 8080, timeout=0.5)
        evs = ring.events()
    drops = [e for e in evs if e.type == E.EVENT_DROP and e.saddr == "10.200.0.3"]
    assert drops and drops[0].subtype == E.DROP_POLICY and drops[0].daddr == "10.200.0.1" and drops[0].dport == 8080
    assert any(e.type == E.EVENT_POLICY_VERDICT and e.verdict == E.VERDICT_FORWARDED and e.saddr == "10.200.0.2"
               for e in evs)
    assert not node.ping("frontend", "10.200.0.1")          # only TCP/8080 is allowed
    lst = {r["name"]: r for r in json.loads(node.cli("endpoint", "list", "-o", "json").stdout)}
    assert lst["web"]["policy_enforcement"]["ingress"] == "enabled"
    assert lst["frontend"]["policy_enforcement"]["ingress"] == "disabled"
    assert node.cli("policy", "apply", "-f", str(good)).stdout.strip() == "ciliumnetworkpolicy/web-ingress unchanged"

    # A set with one invalid policy (and a changed valid one) changes nothing: exit 1, findings printed.
    stored = node.cli("policy", "get", "-o", "json").stdout
    status_before = json.loads(node.cli("status", "-o", "json").stdout)["policy_revision"]
    write(tmp_path / "p" / "allow.yaml", ALLOW_FRONTEND.replace("role: frontend", "role: other"))
    write(tmp_path / "p" / "broken.yaml", INVALID)
    bad = node.cli("policy", "apply", "-f", str(tmp_path / "p"), check=False)
    assert bad.returncode == 1, bad
    assert "broken.yaml" in bad.stderr + bad.stdout and "nothing applied" in bad.stderr
    assert node.cli("policy", "get", "-o", "json").stdout == stored
    assert json.loads(node.cli("status", "-o", "json").stdout)["policy_revision"] == status_before
    assert node.connect("frontend", "10.200.0.1", 8080) and not node.connect("other", "10.200.0.1", 8080, 0.5)

    # get and delete; after delete the endpoint is open again.
    table = node.cli("policy", "get").stdout
    assert "CiliumNetworkPolicy" in table and "web-ingress" in table
    assert "name: web-ingress" in node.cli("policy", "get", "web-ingress", "-o", "yaml").stdout
    assert node.cli("policy", "delete", "web-ingress").stdout.strip() == "ciliumnetworkpolicy/web-ingress deleted"
    assert node.connect("other", "10.200.0.1", 8080)
    gone = node.cli("policy", "delete", "web-ingress", check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_enforcement_mode_always_and_new_endpoint_gets_policy(node, tmp_path):
    node.cli("install", "--no-agent", "--enforcement-mode", "always")
    node.cli("endpoint", "add", "web", "-l", "app=web")
    node.cli("endpoint", "add", "frontend", "-l", "role=frontend")
    node.serve("web", "10.200.0.1", 8080)
    assert not node.connect("frontend", "10.200.0.1", 8080, 0.5)      # always: no policy means deny
    node.cli("policy", "apply", "-f", str(write(tmp_path / "a.yaml", ALLOW_FRONTEND)))
    # The frontend's egress is enforced too (always): allowing web's ingress is not enough.
    assert not node.connect("frontend", "10.200.0.1", 8080, 0.5)
    node.cli("install", "--no-agent", "--enforcement-mode", "default")
    assert node.connect("frontend", "10.200.0.1", 8080)
    # An endpoint added after the policy is selected by it at once.
    node.cli("endpoint", "add", "other", "-l", "role=other")
    assert not node.connect("other", "10.200.0.1", 8080, 0.5)
    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["enforcement_mode"] == "default" and st["endpoints"]["total"] == 3
    # Audit: would-be drops pass and are reported with verdict AUDIT.
    node.cli("install", "--no-agent", "--audit")
    with node.ring() as ring:
        ring.drain()
        assert node.connect("other", "10.200.0.1", 8080)
        evs = ring.events()
    assert any(e.type == E.EVENT_POLICY_VERDICT and e.verdict == E.VERDICT_AUDIT and e.saddr == "10.200.0.3"
               for e in evs)
    web = json.loads(node.cli("endpoint", "get", "web", "-o", "json").stdout)
    assert web["policy_enforcement"]["ingress"] == "disabled (audit)"
    node.cli("install", "--no-agent", "--no-audit")
    assert not node.connect("other", "10.200.0.1", 8080, 0.5)


def test_namespaced_policy_selects_only_its_namespace(node, tmp_path):
    node.cli("endpoint", "add", "web", "-l", "app=web")                       # default
    node.cli("endpoint", "add", "web", "-l", "app=web", "-n", "prod")          # 10.200.0.2
    node.cli("endpoint", "add", "frontend", "-l", "role=frontend", "-n", "prod")
    node.serve("default/web", "10.200.0.1", 8080)
    node.serve("prod/web", "10.200.0.2", 8080)
    prod_only = allow_ingress("web-ingress", {"app": "web"}, {"role": "frontend"}, port=8080, namespace="prod")
    out = node.cli("policy", "apply", "-f", str(write(tmp_path / "prod.yaml", prod_only))).stdout
    assert out.strip() == "ciliumnetworkpolicy/web-ingress created"
    # The prod policy selects prod/web only, and fromEndpoints means prod's frontend (its own namespace).
    assert node.connect("prod/frontend", "10.200.0.2", 8080)
    assert not node.connect("default/web", "10.200.0.2", 8080, 0.5)
    assert node.connect("prod/frontend", "10.200.0.1", 8080)          # default/web is not selected
    rows = {(r["namespace"], r["name"]): r for r in json.loads(node.cli("endpoint", "list", "-o", "json").stdout)}
    assert rows[("prod", "web")]["policy_enforcement"]["ingress"] == "enabled"
    assert rows[("default", "web")]["policy_enforcement"]["ingress"] == "disabled"
    # -n and -A as kubectl reads them: no -n (or an empty one) is the default namespace, for get and delete alike
    assert "web-ingress" not in node.cli("policy", "get").stdout
    assert "web-ingress" not in node.cli("policy", "get", "-n", "").stdout
    assert node.cli("policy", "get", "-n", "prod", "-o", "name").stdout == "ciliumnetworkpolicy.cilium.io/web-ingress\n"
    assert node.cli("policy", "get", "-A", "--no-headers").stdout.split()[:3] == [
        "CiliumNetworkPolicy", "prod", "web-ingress"]
    assert node.cli("policy", "get", "-A", "-o", "wide").stdout.splitlines()[0].split()[-2:] == ["NOT", "ENFORCED"]
    # -o yaml is a kind: List that apply reads back unchanged
    listed = node.cli("policy", "get", "-A", "-o", "yaml").stdout
    assert listed.startswith("apiVersion: v1\nkind: List\nitems:\n")
    assert node.cli("policy", "apply", "-f", "-", input=listed).stdout.strip() == \
        "ciliumnetworkpolicy/web-ingress unchanged"
    for ns in ([], ["-n", ""]):     # not found is exit 1, as kubectl's NotFound
        missing = node.cli("policy", "delete", "web-ingress", *ns, check=False)
        assert missing.returncode == 1 and "not found in namespace default" in missing.stderr
    assert node.cli("policy", "get", "web-ingress", check=False).returncode == 1
    assert node.cli("policy", "delete", "web-ingress", "-n", "prod").stdout.strip().endswith("deleted")
    assert node.connect("default/web", "10.200.0.2", 8080)
