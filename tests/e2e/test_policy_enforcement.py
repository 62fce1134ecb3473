"""Never silently enforce less than the policy says, on a sandbox node: `policy apply` names every part the datapath
does not enforce (file:line:col, what is enforced instead), `--dry-run` too, `--strict-enforcement` refuses the
set with exit 1 and stores nothing, `policy get` and `status` mark the policy. With Cilium's Star Wars L7 policy,
PUT /v1/exhaust-port really does reach the deathstar: the warning tells the truth."""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
L7 = str(EXAMPLES / "starwars-l7-kafka.yaml")
L4 = str(EXAMPLES / "starwars-l3-l4.yaml")
WARNING = (f"{L7}:22:9: warning: the L7 Kafka rule (rules.kafka) is not enforced: all traffic on 80/TCP with the "
           "rule's peers is allowed at L4 (no L7 proxy) (--strict-enforcement refuses it)")


def http_put(node, endpoint: str, ip: str, path: str) -> int:
    """The HTTP status of a PUT from inside `endpoint`; 0 when no answer came (the connection was dropped)."""
    code = (f"import http.client, sys\nc = http.client.HTTPConnection('{ip}', 80, timeout=1)\n"
            f"try: c.request('PUT', '{path}', body=b'x'); print(c.getresponse().status)\n"
            "except OSError: print(0)")
    return int(node.cli("endpoint", "exec", endpoint, "--", sys.executable, "-c", code).stdout.strip() or 0)


def test_l7_policy_is_applied_with_a_warning_and_strict_refuses_it(node):
    node.cli("endpoint", "add", "deathstar", "-l", "org=empire,class=deathstar")    # 10.200.0.1
    node.cli("endpoint", "add", "tiefighter", "-l", "org=empire,class=tiefighter")
    node.cli("endpoint", "add", "xwing", "-l", "org=alliance,class=xwing")
    node.serve("deathstar", "10.200.0.1", 80)

    strict = node.cli("policy", "apply", "-f", L7, "-f", L4, "--strict-enforcement", check=False)
    assert strict.returncode == 1 and strict.stdout == ""
    assert strict.stderr.splitlines()[0] == WARNING.replace("warning:", "error:").replace(
        "(--strict-enforcement refuses it)", "(refused by --strict-enforcement)")
    assert "nothing applied" in strict.stderr
    assert json.loads(node.cli("policy", "get", "-o", "json").stdout)["items"] == []   # the L4 policy neither
    assert http_put(node, "xwing", "10.200.0.1", "/v1/exhaust-port") != 0        # nothing enforced

    dry = node.cli("policy", "apply", "-f", L7, "--dry-run")
    assert dry.stdout.startswith("ciliumnetworkpolicy/rule1-l7 created (dry run)")
    assert WARNING in dry.stderr.splitlines()

    res = node.cli("policy", "apply", "-f", L7)
    assert res.stdout.strip() == "ciliumnetworkpolicy/rule1-l7 created"
    assert res.stderr.splitlines() == [WARNING]
    # What the warning says: the L7 rule would refuse this PUT, the datapath lets it reach the server (which
    # answers it); the L3/L4 part is enforced.
    assert http_put(node, "tiefighter", "10.200.0.1", "/v1/exhaust-port") != 0
    assert http_put(node, "xwing", "10.200.0.1", "/v1/request-landing") == 0

    node.cli("policy", "apply", "-f", L4)
    table = node.cli("policy", "get").stdout.splitlines()
    assert table[0].split()[:4] == ["KIND", "NAMESPACE", "NAME", "ENFORCED"]
    enforced = {line.split()[2]: line.split()[3] for line in table[1:]}
    assert enforced == {"rule1": "full", "rule1-l7": "partial"}
    obj = json.loads(node.cli("policy", "get", "rule1-l7", "-o", "json").stdout)
    cond = obj["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Enforced", "False", "PartiallyEnforced")
    assert cond["message"].startswith("spec.ingress[0].toPorts[0].rules.kafka: the L7 Kafka rule")

    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["policies"] == 2 and [p["policy"] for p in st["partially_enforced"]] == [
        "CiliumNetworkPolicy default/rule1-l7"]
    assert st["partially_enforced"][0]["unenforced"][0]["kind"] == "l7-kafka"
    line = next(x for x in node.cli("status").stdout.splitlines() if x.startswith("Policies:"))
    assert "2 (1 partially enforced: CiliumNetworkPolicy default/rule1-l7;" in line
