"""`policy draw`: the graph of the demo policy and the corpus, dot that the real Graphviz reads, an HTML page that
escapes hostile names, a matrix that agrees with `policy trace`, invalid policies drawn with their findings."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ciliumctl.connectivity import dot, graph, inputs, matrix, mermaid
from ciliumctl.connectivity import html as page_html
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.node.demo import DEMO_POLICY, ENDPOINTS
from ciliumctl.policy import trace
from ciliumctl.policy.resolved import PROTO_ICMP, PROTO_TCP, PROTO_UDP
from tests.support.cli import cli_env, require_cli, run_cli
from tests.support.node_state import write_node_state

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
HOSTILE = '<script>alert("x")</script>&\\N"'


@pytest.fixture(scope="module")
def dot_exe() -> str:
    exe = shutil.which("dot")
    if exe is None:
        why = "Graphviz's dot missing (apt-get install graphviz; scripts/setup.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return exe


def _pods_yaml(eps) -> str:
    out = []
    for name, labels, ns, ip in eps:
        lab = ", ".join(f"{k}: {v}" for k, v in labels.items())
        out.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{lab}}}}}\n"
                   f"status: {{podIP: {ip}}}\n")
    return "---\n".join(out)


DEMO_PODS = [(name, labels, "default", f"10.200.0.{i + 2}") for i, (name, labels) in enumerate(ENDPOINTS)]


@pytest.fixture
def demo_dir(tmp_path) -> Path:
    (tmp_path / "rule1.yaml").write_text(DEMO_POLICY)
    (tmp_path / "pods.yaml").write_text(_pods_yaml(DEMO_PODS))
    return tmp_path


def _demo_graph(demo_dir: Path) -> graph.Graph:
    return graph.build(inputs.from_paths([str(demo_dir)]))


def test_demo_graph_has_the_rule_its_line_and_its_members(demo_dir):
    g = _demo_graph(demo_dir)
    (edge,) = g.edges
    assert edge.ports == ["80/TCP"] and edge.section == "ingress" and not edge.deny
    line = next(i for i, text in enumerate(DEMO_POLICY.splitlines(), 1) if "- fromEndpoints" in text)
    assert edge.where == f"{demo_dir / 'rule1.yaml'}:{line}"
    assert g.nodes[edge.dst].members == ["default/deathstar"]
    assert g.nodes[edge.src].members == ["default/deathstar", "default/tiefighter"]
    grp = g.groups[edge.dst]
    assert grp.ingress.default_deny and grp.ingress.set_by == ["CiliumNetworkPolicy default/rule1"]
    assert not grp.egress.default_deny


def test_tree_names_groups_default_deny_and_rules(demo_dir):
    require_cli()
    r = run_cli("policy", "draw", str(demo_dir), env=cli_env(), check=True)
    assert "class=deathstar, org=empire" in r.stdout
    assert "ingress: default deny (set by CiliumNetworkPolicy default/rule1)" in r.stdout
    assert "ALLOW from org=empire" in r.stdout and "80/TCP" in r.stdout and "rule1.yaml:" in r.stdout
    assert "egress: no default deny" in r.stdout


def test_l7_rules_and_denies_are_drawn():
    g = graph.build(inputs.from_paths([str(EXAMPLES / "starwars-l7-http.yaml"),
                                       str(EXAMPLES / "cidr-with-except-and-deny.yaml")]))
    assert any(line.startswith("HTTP ") for e in g.edges for line in e.l7)
    assert any(e.deny for e in g.edges)


def test_dot_and_svg_are_read_by_graphviz(demo_dir, dot_exe, tmp_path):
    text = dot.render(_demo_graph(demo_dir))
    res = subprocess.run([dot_exe, "-Tplain"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\nedge ") == 1 and res.stdout.count("\nnode ") == 2
    svg = dot.svg(text)
    assert svg.lstrip().startswith("<?xml") and "80/TCP" in svg


def test_the_whole_corpus_draws_in_every_format(dot_exe, tmp_path):
    require_cli()
    for fmt in ("dot", "mermaid", "json", "html"):
        r = run_cli("policy", "draw", str(CORPUS / "real"), str(CORPUS / "valid-edge"), "-o", fmt, env=cli_env(),
                    check=True, timeout=120)
        assert r.stdout
        if fmt == "dot":
            res = subprocess.run([dot_exe, "-Tplain"], input=r.stdout, capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr


def _hostile_dir(tmp_path: Path) -> Path:
    esc = HOSTILE.replace("\\", "\\\\").replace('"', '\\"')
    (tmp_path / "evil.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n"
        f'  name: "{esc}"\n  namespace: "{esc}"\nspec:\n  endpointSelector:\n'
        f'    matchLabels: {{app: "{esc}"}}\n  ingress:\n  - fromEndpoints:\n'
        f'    - matchLabels: {{"{esc}": x}}\n    toPorts:\n    - ports: [{{port: "80"}}]\n'
        f'      rules: {{http: [{{path: "{esc}"}}]}}\n')
    return tmp_path


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"


def test_html_escapes_every_hostile_name(tmp_path, dot_exe):
    require_cli()
    r = run_cli("policy", "draw", str(_hostile_dir(tmp_path)), "-o", "html", env=cli_env())
    assert r.returncode == 1, r.stderr          # the names are invalid: drawn, with their findings
    page = r.stdout
    assert "<script>alert" not in page and 'alert("x")' not in page
    assert "&lt;script&gt;alert" in page
    p = _Scripts()
    p.feed(page)
    assert p.scripts == 2                       # ours: the JSON data and the filter code
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page   # no fetch at view
    assert 'id="edge-e0"' in page and 'href="#edge-e0"' in page   # the edge links to its rule's row


def test_mermaid_and_dot_keep_hostile_names_inside_their_strings(tmp_path, dot_exe):
    g = graph.build(inputs.from_paths([str(_hostile_dir(tmp_path))]))
    text = mermaid.render(g)
    assert "<script>" not in text and '"x"' not in text and "#60;script#62;" in text
    d = dot.render(g)
    res = subprocess.run([dot_exe, "-Tplain"], input=d, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert r"\N" not in res.stdout.replace("\\\\N", "")    # a literal backslash-N, not dot's node-name escape


def test_invalid_policies_are_drawn_with_their_findings():
    require_cli()
    r = run_cli("policy", "draw", str(CORPUS / "invalid"), env=cli_env())
    assert r.returncode == 1
    assert "invalid (drawn with their findings)" in r.stdout
    assert ": error: " in r.stdout and str(CORPUS / "invalid") in r.stdout
    g = graph.build(inputs.from_paths([str(CORPUS / "invalid")]))
    assert all(not p.valid for p in g.policies)
    drawn = {p.ref for n in g.nodes.values() for f in n.findings for p in g.policies if f in p.findings}
    assert len(drawn) == len({p.ref for p in g.policies})       # none dropped


def _trace_allows(src: Endpoint, dst: Endpoint, eps, policies, proto: int, port: int) -> bool:
    res = trace.trace(trace.Peer(ip=src.ipv4), trace.Peer(ip=dst.ipv4), proto, port, policies, "default",
                      endpoints=eps)
    return res.allowed


@pytest.mark.parametrize("files", [["demo"], ["cidr-with-except-and-deny.yaml", "starwars-l3-l4.yaml"],
                                   ["real/ccli_client-egress-icmp.yaml", "real/ccli_client-egress-only-dns.yaml"]])
def test_matrix_matches_trace(files, demo_dir):
    paths = [str(demo_dir / "rule1.yaml") if f == "demo" else
             str(EXAMPLES / f) if (EXAMPLES / f).exists() else str(CORPUS / f) for f in files]
    inp = inputs.from_paths(paths)
    labels = [{"org": "empire", "class": "deathstar"}, {"org": "empire", "class": "tiefighter"},
              {"org": "alliance", "class": "xwing"}, {"app": "web"}, {"kind": "client"}, {"kind": "echo"}]
    eps = [Endpoint(i + 1, f"w{i}", "default", lab, f"10.200.1.{i + 2}") for i, lab in enumerate(labels)]
    policies = [p.policy for p in inp.policies if p.valid]
    m = matrix.compute(eps, policies)
    states = set()
    for s in eps:
        for d in eps:
            if s is d:
                continue
            c = m.cells[(f"default/{s.name}", f"default/{d.name}")]
            states.add(c.state)
            for proto, port in ((PROTO_TCP, 80), (PROTO_TCP, 81), (PROTO_TCP, 443), (PROTO_UDP, 53),
                                (PROTO_TCP, 8080), (PROTO_ICMP, 8)):
                assert c.allows(proto, port) == _trace_allows(s, d, eps, policies, proto, port), \
                    (s.name, d.name, proto, port, c.text)
    assert len(states) > 1                      # the policies make a difference somewhere


def test_matrix_on_the_command_line(demo_dir):
    require_cli()
    r = run_cli("policy", "draw", str(demo_dir), "--matrix", "-o", "json", env=cli_env(), check=True)
    import json

    cells = {(c["source"], c["destination"]): c for c in json.loads(r.stdout)["matrix"]["cells"]}
    assert cells[("default/tiefighter", "default/deathstar")]["allowed"] == "80/TCP"
    assert cells[("default/xwing", "default/deathstar")]["verdict"] == "default-deny"
    assert cells[("default/deathstar", "default/xwing")]["verdict"] == "all"


def test_matrix_without_workloads_is_one_line_exit_2(tmp_path):
    require_cli()
    (tmp_path / "p.yaml").write_text(DEMO_POLICY)
    r = run_cli("policy", "draw", str(tmp_path / "p.yaml"), "--matrix", env=cli_env())
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--matrix needs" in r.stderr
    r = run_cli("policy", "draw", env=cli_env())
    assert r.returncode == 2 and "nothing to draw" in r.stderr


def test_node_store_and_endpoints(tmp_path):
    require_cli()
    env = cli_env(**write_node_state(tmp_path / "state"))
    r = run_cli("policy", "draw", "--node", "--matrix", env=env, check=True)
    assert "CiliumNetworkPolicy default/rule1" in r.stdout and "CiliumNetworkPolicy prod/other" in r.stdout
    assert "default/deathstar" in r.stdout and "rebels/xwing" in r.stdout
    assert "node store" in r.stdout                   # where the rules come from: no file


def test_html_page_holds_the_matrix(demo_dir, dot_exe):
    inp = inputs.from_paths([str(demo_dir)])
    g = graph.build(inp)
    m = matrix.compute(inp.endpoints, [p.policy for p in inp.policies])
    page = page_html.render(g, dot.svg(dot.render(g, links=True)), m)
    assert "Effective connectivity" in page and "default-deny" in page and "<svg" in page
    assert "<?xml" not in page


TWO_NAMESPACES = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: a, namespace: prod}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: b, namespace: dev}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: api}}]}]
"""


def _visible(driver, g) -> set[str]:
    ids = dot.node_ids(g)
    return {g.nodes[nid].labels[0] for nid in g.nodes
            if driver.find_element("id", ids[nid]).value_of_css_property("display") != "none"}


def test_html_filters_in_a_real_browser(tmp_path, dot_exe):
    """The page's own script in headless Chromium (tests/support/browser.py): the filter from the address, then
    chosen and typed as a user does; edges go with their nodes, and the rule table with them."""
    from selenium.webdriver.support.ui import Select

    from tests.support import browser

    browser.require()
    (tmp_path / "p.yaml").write_text(TWO_NAMESPACES)
    g = graph.build(inputs.from_paths([str(tmp_path / "p.yaml")]))
    page = tmp_path / "page.html"
    page.write_text(page_html.render(g, dot.svg_of(g, links=True)))
    everyone = {"app=web", "app=client", "app=db", "app=api"}
    with browser.chromium() as driver:
        driver.get(f"file://{page}#ns=prod")
        assert _visible(driver, g) == {"app=web", "app=client"}
        hidden = [e.id for e in g.edges if driver.find_element("id", e.id).value_of_css_property("display") == "none"]
        assert [g.edges[int(h[1:])].policy for h in hidden] == ["CiliumNetworkPolicy dev/b"]
        assert not driver.find_element("id", f"edge-{hidden[0]}").is_displayed()
        Select(driver.find_element("id", "f-ns")).select_by_value("")
        assert _visible(driver, g) == everyone
        driver.find_element("id", "f-label").send_keys("db")
        assert _visible(driver, g) == {"app=db"}
        assert driver.current_url.endswith("#label=db")          # the view can be linked
        assert not [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]


def test_default_deny_set_by_another_selector_is_named(demo_dir):
    (demo_dir / "lockdown.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: lockdown}\nspec:\n"
        "  endpointSelector: {}\n  enableDefaultDeny: {egress: true}\n  egress: [{toEntities: [kube-apiserver]}]\n")
    g = _demo_graph(demo_dir)
    death = next(grp for gid, grp in g.groups.items() if g.nodes[gid].members == ["default/deathstar"])
    assert not death.egress.default_deny
    assert death.egress.also_by == ["CiliumClusterwideNetworkPolicy lockdown"] and death.egress.also_on == 1
    everyone = next(grp for gid, grp in g.groups.items() if len(g.nodes[gid].members) == 3)
    assert everyone.ingress.also_by == ["CiliumNetworkPolicy default/rule1"] and everyone.ingress.also_on == 1


def test_hostile_names_stay_text_in_a_real_browser(tmp_path, dot_exe):
    from selenium.common.exceptions import NoAlertPresentException

    from tests.support import browser

    browser.require()
    g = graph.build(inputs.from_paths([str(_hostile_dir(tmp_path))]))
    page = tmp_path / "page.html"
    page.write_text(page_html.render(g, dot.svg_of(g, links=True)))
    with browser.chromium() as driver:
        driver.get(f"file://{page}")
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text        # noqa: B018 (the script in the name never ran)
        assert '<script>alert("x")</script>' in driver.find_element("tag name", "table").text
        assert len(driver.find_elements("tag name", "script")) == 2
