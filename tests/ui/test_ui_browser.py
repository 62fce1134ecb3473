"""The service map page in a real headless Chromium (tests/support/browser.py), served by the real `ciliumctl ui`:
hostile names and labels shown as text only; the demo's three workloads on a sandbox node with the real agent,
and the xwing -> deathstar edge turning red after a drop. Screenshots are saved in the test's tmp dir."""

import json

import pytest
from support import browser
from support.cli import cli_env, require_cli
from support.fake_hubble import FakeHubble, Peer, flow
from support.shell import wait_until, write
from support.ui import ui_process

from ciliumctl.node.demo import DEMO_POLICY, ENDPOINTS

HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">'
HOSTILE_NS = "<script>window.__pwned=2</script>"
HOSTILE_APP = '"><svg onload="window.__pwned=3">&amp;'
RED = "rgb(198,40,40)"   # app.js COLORS.dropped (#c62828)

# what the map shows, read from the page's cytoscape instance
NODE_LABELS = "return window.serviceMap.cy.nodes().not('.namespace').map(n => n.data('label')).sort()"
EDGE_COLOURS = ("return Object.fromEntries(window.serviceMap.cy.edges().map(e => "
                "[e.source().data('label') + '>' + e.target().data('label'), e.style('line-color')]))")


@pytest.fixture
def driver():
    browser.require()
    require_cli()
    with browser.chromium() as d:
        yield d


def js_wait(driver, script, pred, timeout=10.0):
    """The value of `script` once pred(value) holds (or the last one seen)."""
    seen = []

    def check():
        seen.append(driver.execute_script(script))
        return pred(seen[-1])

    wait_until(check, timeout=timeout, step=0.2)
    return seen[-1]


def test_hostile_names_and_labels_are_shown_as_text(driver, tmp_path):
    evil = Peer("10.9.9.9", HOSTILE_NAME, HOSTILE_NS, [f"k8s:app={HOSTILE_APP}"], 400)
    pod = Peer("10.9.9.10", HOSTILE_NAME, "default", ["k8s:org=evil"], 401)
    death = Peer("10.200.0.1", "deathstar", "default", ["k8s:org=empire"], 300)
    with FakeHubble() as hub, ui_process(cli_env(), "--server", hub.address) as (_, url):
        hub.put(flow(evil, death), flow(pod, death))
        driver.get(url)
        labels = js_wait(driver, NODE_LABELS, lambda v: len(v) == 3)
        assert labels == sorted([HOSTILE_APP, HOSTILE_NAME, "deathstar"])
        rows = js_wait(driver, "return [...document.querySelectorAll('#edges tbody tr')].map(r => r.cells[0]"
                               ".textContent).sort()", lambda v: len(v) == 2)
        assert rows == sorted([f"{HOSTILE_NS}/{HOSTILE_APP}", f"default/{HOSTILE_NAME}"])
        namespaces = driver.execute_script("return [...document.querySelectorAll('#f-namespace option')]"
                                           ".map(o => o.textContent).sort()")
        assert HOSTILE_NS in namespaces
        driver.execute_script("document.querySelector('#edges tbody tr').click()")
        sources = js_wait(driver, "return [...document.querySelectorAll('#flows tbody tr')].map(r => r.cells[1]"
                                  ".textContent)", lambda v: len(v) == 1)
        assert HOSTILE_NAME in sources[0] or HOSTILE_NS in sources[0]
        driver.save_screenshot(str(tmp_path / "hostile.png"))
        # everything the page loaded came from the ui server itself (no CDN: it works with no network)
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert loaded and all(u.startswith((url.partition("?")[0], "data:")) for u in loaded), loaded
        # nothing of it became markup or ran
        assert driver.execute_script("return window.__pwned") is None
        assert driver.execute_script("return document.querySelectorAll('img, svg, #flows script, "
                                     "#edges script').length") == 0


@pytest.mark.root
def test_demo_workloads_and_a_red_edge_after_a_drop(node, driver, tmp_path):
    """The demo's endpoints on a sandbox node, the agent, `ciliumctl ui` on its socket: both ships land and the
    page shows the three workloads; then Cilium's rule1 is applied, xwing is dropped and its edge turns red."""
    ips = {}
    for name, labels in ENDPOINTS:
        out = node.cli("endpoint", "add", name, "-l", ",".join(f"{k}={v}" for k, v in labels.items()),
                       "-o", "json").stdout
        ips[name] = json.loads(out)["ipv4"].split("/")[0]
    deathstar = ips["deathstar"]
    node.serve("deathstar", deathstar, 80)
    node.cli("agent", "start", "--metrics-listen", "", "--no-cni")
    with ui_process(node.env) as (_, url):
        driver.get(url)
        assert node.connect("tiefighter", deathstar, 80) and node.connect("xwing", deathstar, 80)
        labels = js_wait(driver, NODE_LABELS, lambda v: {"deathstar", "tiefighter", "xwing"} <= set(v))
        assert {"deathstar", "tiefighter", "xwing"} <= set(labels), labels
        colours = js_wait(driver, EDGE_COLOURS, lambda v: "xwing>deathstar" in v)
        assert colours.get("xwing>deathstar") not in (None, RED), colours
        driver.save_screenshot(str(tmp_path / "demo-no-policy.png"))

        node.cli("policy", "apply", "-f", str(write(tmp_path / "rule1.yaml", DEMO_POLICY)))
        assert not node.connect("xwing", deathstar, 80, timeout=0.5)
        colours = js_wait(driver, EDGE_COLOURS, lambda v: v.get("xwing>deathstar") == RED)
        driver.save_screenshot(str(tmp_path / "demo-dropped.png"))
        assert colours["xwing>deathstar"] == RED, colours
        assert colours["tiefighter>deathstar"] != RED, colours
        # the edge table follows at its own pace (every 500 ms)
        drop_rows = js_wait(driver, "return [...document.querySelectorAll('#edges tbody tr')].filter(r => "
                                    "r.cells[0].textContent === 'default/xwing').map(r => r.cells[4].textContent)",
                            lambda v: v and int(v[0]) >= 1)
        assert drop_rows and int(drop_rows[0]) >= 1, drop_rows

        # the page's filters: without forwarded edges only the red one stays; its flows, only the drops
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        driver.find_element(By.ID, "f-forwarded").click()
        shown = js_wait(driver, "return window.serviceMap.cy.edges().not('.hidden').map(e => "
                                "e.source().data('label'))", lambda v: v == ["xwing"])
        assert shown == ["xwing"]
        clicked = js_wait(driver, "var r = [...document.querySelectorAll('#edges tbody tr')].filter(r => "
                                  "r.cells[0].textContent === 'default/xwing'); if (r.length) r[0].click(); "
                                  "return r.length", bool)
        assert clicked
        box = driver.find_element(By.ID, "flow-filter")
        box.send_keys("--verdict DROPPED --type drop" + Keys.ENTER)
        verdicts = js_wait(driver, "return [...document.querySelectorAll('#flows tbody tr')].map(r => "
                                   "r.cells[4].textContent + ' ' + r.cells[5].textContent)",
                           lambda v: v and all(x == "DROPPED POLICY_DENIED" for x in v))
        assert verdicts and set(verdicts) == {"DROPPED POLICY_DENIED"}, verdicts
        box.send_keys(" --bogus" + Keys.ENTER)
        error = js_wait(driver, "return document.getElementById('flow-error').textContent", bool)
        assert "unknown filter flag '--bogus'" in error
        driver.save_screenshot(str(tmp_path / "demo-filtered.png"))


def test_a_missing_browser_fails_under_ci(monkeypatch):
    """CI tests the page: there a missing Chromium is a failure, elsewhere a skip."""
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        browser.require()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        browser.require()
