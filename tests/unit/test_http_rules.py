"""rules.http in resolve (ResolvedState.http: per endpoint and direction, the proxy's rules by peer and port) and
the HAProxy configuration made from them (node/http_proxy/config.py): what the proxy gets, and what it refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import MemoryAllocator
from ciliumctl.node.http_proxy import config as cfg
from ciliumctl.policy import model
from ciliumctl.policy.resolve import resolve
from ciliumctl.policy.resolved import PROTO_TCP, Direction, PortRange

TIEFIGHTER = Endpoint(1, "tiefighter", "default", {"org": "empire", "class": "tiefighter"}, ipv4="10.200.0.1")
DEATHSTAR = Endpoint(2, "deathstar", "default", {"org": "empire", "class": "deathstar"}, ipv4="10.200.0.2")
XWING = Endpoint(3, "xwing", "default", {"org": "alliance", "class": "xwing"}, ipv4="10.200.0.3")

# Cilium's Star Wars demo, sw_l3_l4_l7_policy.yaml
RULE1 = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
         "metadata": {"name": "rule1", "namespace": "default"}, "spec": yaml.safe_load("""
endpointSelector: {matchLabels: {org: empire, class: deathstar}}
ingress:
- fromEndpoints: [{matchLabels: {org: empire}}]
  toPorts:
  - ports: [{port: "80", protocol: TCP}]
    rules:
      http: [{method: POST, path: /v1/request-landing}]
""")}


def _state(*policies):
    return resolve([TIEFIGHTER, DEATHSTAR, XWING], list(policies), "default", MemoryAllocator())


def test_http_rules_become_the_proxys_rules_by_peer_and_port():
    state = _state(RULE1)
    allows = state.http[(2, int(Direction.INGRESS))]
    empire = {state.endpoints[1].identity, state.endpoints[2].identity}
    assert {a.identity for a in allows} == empire
    assert {a.ports for a in allows} == {PortRange(PROTO_TCP, 80, 80)}
    assert allows[0].rules == (model.HTTPRule(method="POST", path="/v1/request-landing"),)
    assert allows[0].origins[0].name == "rule1"
    assert (1, int(Direction.EGRESS)) not in state.http and (2, int(Direction.EGRESS)) not in state.http


def test_redirect_marks_only_the_entries_with_http_rules():
    state = _state(RULE1)
    cfg.redirect(state, 15080)
    entries = state.endpoints[2].ingress.entries
    assert entries and all(e.proxy_port == 15080 for e in entries)
    assert all(e.proxy_port == 0 for e in state.endpoints[1].egress.entries + state.endpoints[1].ingress.entries)


def test_an_l4_allow_of_the_same_peer_and_port_widens_to_every_request():
    plain = {**RULE1, "metadata": {"name": "plain", "namespace": "default"},
             "spec": yaml.safe_load("""
endpointSelector: {matchLabels: {class: deathstar}}
ingress:
- fromEndpoints: [{matchLabels: {class: tiefighter}}]
  toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""")}
    state = _state(RULE1, plain)
    by_peer = {a.identity: a.rules for a in state.http[(2, int(Direction.INGRESS))]}
    assert by_peer[state.endpoints[1].identity] == ()          # tiefighter: every request (Cilium's wildcard)
    assert by_peer[state.endpoints[2].identity] != ()          # deathstar itself: still the rule


def test_render_names_ports_and_anchored_regexes_and_the_identities_go_to_acl_files():
    state = _state(RULE1)
    paths = cfg.Paths("/run/l7")
    text = cfg.render(state, 15080, paths)
    ds, tie = state.endpoints[2].identity, state.endpoints[1].identity
    assert "bind 0.0.0.0:15080 transparent" in text
    assert f"{{ var(txn.in_pair) -m str -f {paths.acl('group0')} }} {{ dst_port 80 }}" in text
    # whom the rules concern is data the runtime API changes (no reload): not in the configuration's text
    assert not [ln for ln in text.splitlines() if "var(" in ln and (str(ds) in ln or str(tie) in ln)]
    acls = cfg.acl_entries(state)
    assert f"{ds}:{tie}" in acls["group0"] and str(ds) in acls["local"]
    assert "{ method -m reg '^(?:POST)$' }" in text and "{ pathq -m reg '^(?:/v1/request-landing)$' }" in text
    assert 'string "Access denied\\r\\n"' in text
    assert cfg.map_entries(state.ipcache)["10.200.0.1"] == str(state.endpoints[1].identity)


def test_haproxy_accepts_the_rendered_configuration(tmp_path):
    state = _state(RULE1)
    paths = cfg.Paths(str(tmp_path))
    (tmp_path / "ipcache.map").write_text(cfg.map_text(cfg.map_entries(state.ipcache)))
    for name, lines in cfg.acl_entries(state).items():
        Path(paths.acl(name)).write_text("".join(f"{x}\n" for x in lines))
    (tmp_path / "haproxy.cfg").write_text(cfg.render(state, 15080, paths))
    proc = subprocess.run(["haproxy", "-c", "-f", paths.config], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("rule,match", [
    (model.HTTPRule(path="/it's"), "quote"),
    (model.HTTPRule(header_matches=(model.HTTPHeaderMatch("X-Token", secret={"name": "s"}),)), "secret"),
    (model.HTTPRule(headers=("bad name: x",)), "header name"),
])
def test_rules_haproxy_cannot_carry_are_one_clear_line(rule, match):
    with pytest.raises(cfg.Unexpressible, match=match) as err:
        cfg.rule_condition(rule, "default/rule1 ingress[0]")
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_trace_gives_the_l7_verdict():
    from ciliumctl.policy.labels import parse_label_list
    from ciliumctl.policy.trace import HTTPRequest, Peer, trace

    pols = [model.parse_policy(RULE1)]
    tie = Peer(parse_label_list(["org=empire,class=tiefighter"]))
    ds = Peer(parse_label_list(["org=empire,class=deathstar"]))
    land = trace(tie, ds, PROTO_TCP, 80, pols, http=HTTPRequest("POST", "/v1/request-landing"))
    assert land.allowed and "allowed by the rules.http of" in land.ingress.reason
    port = trace(tie, ds, PROTO_TCP, 80, pols, http=HTTPRequest("PUT", "/v1/exhaust-port"))
    assert not port.allowed and port.ingress.kind == "l7-denied" and "403 Access denied" in port.ingress.reason
    assert port.to_dict()["http"] == {"method": "PUT", "path": "/v1/exhaust-port"}
    # the anchored path: a longer one is another path
    assert not trace(tie, ds, PROTO_TCP, 80, pols, http=HTTPRequest("POST", "/v1/request-landing/x")).allowed
    # without a request: the L4 verdict, and no gap left to report for rules.http
    l4 = trace(tie, ds, PROTO_TCP, 80, pols)
    assert l4.allowed and l4.ingress.unenforced == []


def test_trace_cli_http_flags(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "rule1.yaml"
    f.write_text(yaml.safe_dump(RULE1))
    base = [sys.executable, "-m", "ciliumctl.cli.main", "policy", "trace", "-f", str(f), "-s",
            "org=empire,class=tiefighter", "-d", "org=empire,class=deathstar", "--dport", "80/tcp"]
    ok = subprocess.run(base + ["--http-method", "POST", "--http-path", "/v1/request-landing"], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and "Request:     HTTP POST /v1/request-landing" in ok.stdout
    no = subprocess.run(base + ["--http-method", "PUT", "--http-path", "/v1/exhaust-port"], capture_output=True,
                        text=True)
    assert no.returncode == 1 and "403 Access denied" in no.stdout
    bad = subprocess.run(base[:-1] + ["53/udp", "--http-method", "GET"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "TCP" in bad.stderr


def test_no_haproxy_binary_is_one_clear_line_before_anything_is_applied(monkeypatch, tmp_path):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.node.http_proxy import service as http_agent

    monkeypatch.setenv("PATH", str(tmp_path))
    state = _state(RULE1)
    with pytest.raises(EnvironmentProblem, match="haproxy binary is missing") as err:
        http_agent.prepare(state)
    assert "\n" not in str(err.value)
    assert all(e.proxy_port == 0 for e in state.endpoints[2].ingress.entries)     # nothing redirected


def test_cluster_mode_without_haproxy_fails_closed(monkeypatch, tmp_path, caplog):
    """Cluster mode cannot refuse objects already applied: it logs and redirects anyway (the ports refuse)."""
    from ciliumctl.node import reconcile

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path / "state"))
    state = _state(RULE1)
    reconcile.redirect_http(state, strict=False)
    assert all(e.proxy_port == 15080 for e in state.endpoints[2].ingress.entries)
    assert "haproxy binary is missing" in caplog.text
