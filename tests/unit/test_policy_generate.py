"""`policy generate`: least-privilege policies from a hubble jsonpb flow file that `policy validate` accepts and
that allow every observed connection when traced with `policy trace`'s engine (checked here connection by
connection through trace.trace, not through generate's own replay), and one line, exit 2, for other formats."""

from __future__ import annotations

import json

import pytest
import yaml

from ciliumctl.connectivity import generate as gen
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy import model, trace
from tests.support import flowfile as ff
from tests.support.cli import cli_env, require_cli, run_cli
from tests.support.node_state import write_node_state


@pytest.fixture
def flows(tmp_path):
    path = tmp_path / "flows.json"
    path.write_text("".join(line.rstrip("\n") + "\n" for line in ff.demo_lines()))
    return path


def _generated(path, **kw) -> gen.Generated:
    return gen.generate(gen.observe(gen.read_file(str(path))), **kw)


def _by_name(result: gen.Generated) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in result.policies}


def test_one_policy_per_workload_from_stable_labels(flows):
    pols = _by_name(_generated(flows))
    assert set(pols) == {"deathstar-least-privilege", "tiefighter-least-privilege", "xwing-least-privilege",
                         "kube-dns-least-privilege"}
    text = yaml.safe_dump(list(pols.values()))
    assert "pod-template-hash" not in text and "6f87d5" not in text and "x2x9z" not in text   # not pod names
    assert pols["deathstar-least-privilege"]["spec"]["endpointSelector"] == {
        "matchLabels": {"class": "deathstar", "org": "empire"}}
    assert pols["kube-dns-least-privilege"]["metadata"]["namespace"] == "kube-system"


def test_rules_merge_ports_and_name_world_and_dns(flows):
    pols = _by_name(_generated(flows))
    death = pols["deathstar-least-privilege"]["spec"]
    from_tie = next(i for i in death["ingress"] if i.get("fromEndpoints") == [
        {"matchLabels": {"class": "tiefighter", "org": "empire"}}])
    assert from_tie["toPorts"] == [{"ports": [{"port": "80", "protocol": "TCP"},
                                              {"port": "8000", "protocol": "TCP", "endPort": 8003},
                                              {"port": "9090", "protocol": "TCP"}]}]
    assert {"fromEntities": ["host"], "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]} \
        in death["ingress"]
    assert any(i.get("fromCIDR") == ["203.0.113.9/32"] for i in death["ingress"])
    assert any(i.get("toFQDNs") == [{"matchName": "api.github.com"}] for i in death["egress"])
    dns = next(i for i in death["egress"] if "toEndpoints" in i)
    assert dns["toEndpoints"] == [{"matchLabels": {"k8s-app": "kube-dns",
                                                   "k8s:io.kubernetes.pod.namespace": "kube-system"}}]
    assert dns["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}     # toFQDNs learns from DNS answers
    tie = pols["tiefighter-least-privilege"]["spec"]
    assert any(i.get("toCIDR") == ["1.1.1.1/32"] for i in tie["egress"])
    assert any(i.get("icmps") == [{"fields": [{"type": 8, "family": "IPv4"}]}] for i in tie["egress"])
    # the reply and the dropped xwing -> deathstar flow gave nothing
    assert not any("alliance" in json.dumps(i) for i in death["ingress"])


def test_without_fqdn_world_is_cidr(flows):
    pols = _by_name(_generated(flows, use_fqdn=False))
    egress = pols["deathstar-least-privilege"]["spec"]["egress"]
    assert any(i.get("toCIDR") == ["140.82.112.3/32"] for i in egress)
    assert not any("toFQDNs" in i for i in egress)


def _trace_peer(p: gen.Peer, ip: str) -> trace.Peer:
    if p.kind == "entity":
        from ciliumctl.policy.labels import Label

        return trace.Peer([Label("reserved", p.value)], None, ip)
    return trace.Peer(ip=ip)


@pytest.mark.parametrize("fqdn", [True, False])
def test_policies_validate_and_every_connection_traces_allowed(flows, fqdn):
    result = _generated(flows, use_fqdn=fqdn)
    gen.check_valid(result.policies)
    policies = [model.parse_policy(p) for p in result.policies]
    eps = [Endpoint(i + 1, pod["name"], w.namespace, pod["labels"], ip, service_account=pod["sa"])
           for i, ((w, ip), pod) in enumerate(result.observed.pods.items())]
    traced = 0
    for c in result.observed.conns:
        if fqdn and c.dst.kind == "fqdn":
            continue                   # toFQDNs needs a DNS proxy: the trace engine selects nothing for it
        res = trace.trace(_trace_peer(c.src, c.src_ip), _trace_peer(c.dst, c.dst_ip), c.proto, c.port, policies,
                          "default", endpoints=eps)
        assert res.allowed, (c, res.egress.reason, res.ingress.reason)
        assert res.egress.kind != "not-enforced" or c.src.kind != "workload"   # the policies do enforce
        traced += 1
    assert traced == len(result.observed.conns) - (1 if fqdn else 0)
    replayed = gen.replay(result)
    assert replayed.all_allowed and replayed.allowed == traced
    # and anything not observed is denied: xwing may not reach the deathstar
    xwing, death = ff.XWING, ff.DEATHSTAR
    res = trace.trace(trace.Peer(ip=xwing.ip), trace.Peer(ip=death.ip), 6, 80, policies, "default", endpoints=eps)
    assert not res.allowed


def test_replay_reports_a_connection_an_applied_deny_blocks(flows):
    result = _generated(flows)
    deny = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                               "metadata": {"name": "no-9090", "namespace": "default"},
                               "spec": {"endpointSelector": {"matchLabels": {"class": "deathstar"}},
                                        "ingressDeny": [{"fromEntities": ["all"],
                                                         "toPorts": [{"ports": [{"port": "9090"}]}]}]}})
    replayed = gen.replay(result, [deny])
    assert not replayed.all_allowed and len(replayed.denied) == 1 and "9090" in replayed.denied[0]


def test_from_audit_takes_only_audit_verdicts(tmp_path):
    path = tmp_path / "audit.json"
    path.write_text("\n".join([ff.flow_line(ff.TIEFIGHTER, ff.DEATHSTAR, port=80),
                               ff.flow_line(ff.XWING, ff.DEATHSTAR, port=80, verdict="AUDIT")]) + "\n")
    result = gen.generate(gen.observe(gen.read_file(str(path)), from_audit=True))
    text = json.dumps(result.policies)
    assert "alliance" in text and "tiefighter" not in text


def test_cli_writes_yaml_that_policy_validate_accepts(flows, tmp_path):
    require_cli()
    r = run_cli("policy", "generate", "--input-file", str(flows), env=cli_env(), check=True)
    assert "all allowed" in r.stderr and "all validate" in r.stderr
    out = tmp_path / "generated.yaml"
    out.write_text(r.stdout)
    v = run_cli("policy", "validate", str(out), env=cli_env())
    assert v.returncode == 0, v.stdout
    piped = run_cli("policy", "generate", "--input-file", "-", "-o", "json", env=cli_env(), check=True,
                    input=flows.read_text())
    assert len(json.loads(piped.stdout)["items"]) == 4


def test_diff_against_the_node(flows, tmp_path):
    require_cli()
    env = cli_env(**write_node_state(tmp_path / "state"))
    r = run_cli("policy", "generate", "--input-file", str(flows), "--node", env=env, check=True)
    assert "+++ generated/default/deathstar-least-privilege" in r.stdout and "--- /dev/null" in r.stdout


@pytest.mark.parametrize("content,what", [
    ("kind: CiliumNetworkPolicy\n", "not a JSON line"),
    ('{"foo": 1}\n', 'without "flow"'),
    ("", "no flows in it"),
    ("[1, 2]\n", "not a flow response"),
])
def test_other_formats_are_one_line_exit_2(tmp_path, content, what):
    require_cli()
    path = tmp_path / "flows.txt"
    path.write_text(content)
    r = run_cli("policy", "generate", "--input-file", str(path), env=cli_env())
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and "hubble observe -o jsonpb" in lines[0]
    assert not r.stdout


@pytest.fixture
def observer(tmp_path):
    """The agent's Observer server (in process, unix socket in the test's dir) holding records of tiefighter ->
    deathstar:80 (every third one dropped), as flows/ converts them."""
    from ciliumctl.flows.server import FlowSource, ObserverServer
    from ciliumctl.flows.store import FlowStore
    from tests.flows.flowdata import SNAP, rec

    store = FlowStore(100)
    recs = [rec(ts_ns=i * 10**9, sport=1000 + i, **({"type": 1, "subtype": 133, "verdict": 2} if i % 3 == 0
                                                    else {})) for i in range(30)]
    store.add_records(b"".join(recs), len(recs), SNAP)
    srv = ObserverServer(FlowSource(store, node_name="node-a"), tmp_path / "hubble.sock")
    srv.start()
    yield f"unix://{tmp_path / 'hubble.sock'}"
    srv.stop()


def test_from_the_agents_buffer(observer):
    require_cli()
    r = run_cli("policy", "generate", "--server", observer, "-o", "json", env=cli_env(), check=True)
    pols = {p["metadata"]["name"]: p for p in json.loads(r.stdout)["items"]}
    assert set(pols) == {"deathstar-least-privilege", "empire-least-privilege"}     # tiefighter: org=empire only
    death = pols["deathstar-least-privilege"]
    assert death["metadata"]["namespace"] == "empire"
    assert death["spec"]["ingress"] == [{
        "fromEndpoints": [{"matchLabels": {"org": "empire", "k8s:io.kubernetes.pod.namespace": "default"}}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]
    assert "from 30 flows" in r.stderr and "10 verdict DROPPED" in r.stderr and "all allowed" in r.stderr
    r = run_cli("policy", "generate", "--server", observer, "--since", "1m", env=cli_env())
    assert r.returncode == 1 and "no flows in the agent's buffer since 1m" in r.stderr   # the records are from 1970
