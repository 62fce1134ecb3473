"""`ciliumctl ui` as a server, through the real executable and a Hubble-compatible server on 127.0.0.1 (no root,
no browser): loopback only, its own Host only, the map, its changes as Server-Sent Events, the flow table's
filters, an unreachable Hubble server shown on the page."""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from support.cli import cli_env, require_cli, run_cli
from support.fake_hubble import FakeHubble, Peer, flow
from support.shell import wait_until
from support.ui import at, ui_process

from ciliumctl.base.errors import UsageError
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.node.ui_server import parse_listen

DEATH = Peer("10.200.0.1", "deathstar", "default", ["k8s:org=empire"], 300)
XWING = Peer("10.200.0.3", "xwing", "default", ["k8s:org=alliance"], 302)


def get(url: str, host: str | None = None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def api(url: str, path: str):
    status, _, body = get(at(url, path))
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("listen", ["0.0.0.0:12000", "192.0.2.1:80", ":12000", "[::]:1", "example.com:80"])
def test_listen_beyond_loopback_is_refused_in_one_line(listen):
    require_cli()
    res = run_cli("ui", "--listen", listen, env=cli_env())
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "loopback only" in res.stderr and "SSH tunnel" in res.stderr


def test_listen_forms():
    assert parse_listen("127.0.0.1:12000") == ("127.0.0.1", 12000)
    assert parse_listen("localhost:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("127.0.0.2:1") == ("127.0.0.2", 1)
    for bad in ("12000", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(UsageError, match="HOST:PORT"):
            parse_listen(bad)


def test_a_malformed_server_address_is_one_line():
    require_cli()
    res = run_cli("ui", "--server", "nowhere", "--listen", "127.0.0.1:0", env=cli_env())
    assert res.returncode == 2 and "--server 'nowhere'" in res.stderr and res.stderr.count("\n") == 1


def test_map_events_and_flow_table_from_a_hubble_server():
    require_cli()
    with FakeHubble() as hub, ui_process(cli_env(), "--server", hub.address) as (_, url):
        hub.put(flow(XWING, DEATH))
        assert wait_until(lambda: api(url, "api/map")["stats"]["flows"] == 1, timeout=15)
        snapshot = api(url, "api/map")
        assert snapshot["status"]["state"] == "connected"
        assert [e["verdict"] for e in snapshot["edges"]] == ["forwarded"]

        # the page's stream: a drop arrives as a change of the same edge, now red
        port = urllib.parse.urlsplit(url).port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        conn.request("GET", at(url, f"api/events?since={snapshot['version']}").split(str(port), 1)[1])
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        hub.put(flow(XWING, DEATH, verdict=pb.DROPPED, drop_reason=133, event_type=1))
        edges = []
        while not edges:
            line = resp.readline().decode()
            if line.startswith("data: "):
                edges = json.loads(line[6:])["edges"]
        conn.close()
        assert [(e["verdict"], e["counts"]["dropped"], e["drop_reasons"]) for e in edges] == \
            [("dropped", 1, ["POLICY_DENIED"])]

        edge = urllib.parse.quote(edges[0]["id"])
        rows = api(url, f"api/flows?edge={edge}&filter=--verdict%20DROPPED")["flows"]
        assert [(r["source"], r["verdict"]) for r in rows] == [("default/xwing:40000", "DROPPED")]
        status, _, body = get(at(url, "api/flows?filter=--verdict%20MAYBE"))
        assert status == 400 and "MAYBE" in json.loads(body)["error"]
        status, _, body = get(at(url, "api/flows?filter=%22--verdict"))
        assert status == 400 and "quotation" in json.loads(body)["error"]
        status, _, body = get(at(url, "api/flows?limit=many"))
        assert status == 400 and "many" in json.loads(body)["error"]


def test_page_headers_token_and_requests_for_another_host():
    require_cli()
    with FakeHubble() as hub, ui_process(cli_env(), "--server", hub.address) as (_, url):
        base, port = url.partition("?")[0], urllib.parse.urlsplit(url).port
        # the printed address sets the token as a cookie and goes on to the page, which then needs no token
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", url.split(str(port), 1)[1])
        resp = conn.getresponse()
        cookie = resp.getheader("Set-Cookie").split(";")[0]
        assert resp.status == 303 and resp.getheader("Location") == "/" and "HttpOnly" in resp.getheader("Set-Cookie")
        resp.read()
        conn.request("GET", "/", headers={"Cookie": cookie})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and b"/static/vendor/cytoscape.min.js" in body
        assert "script-src 'self'" in resp.getheader("Content-Security-Policy")
        conn.close()
        assert get(at(url, "static/vendor/cytoscape.min.js"))[0] == 200
        # another user of the machine, without the token: nothing
        for path in ("", "api/map", "api/flows", "api/events", "static/app.js"):
            status, _, body = get(base + path)
            assert status == 403 and "token" in json.loads(body)["error"], path
        assert get(base + "api/map?token=guess")[0] == 403
        assert get(base + "api/map", host=f"127.0.0.1:{port}")[0] == 403
        # DNS rebinding: a name that resolves to 127.0.0.1 in someone's page must not read the flows
        assert get(at(url, "api/map"), host=f"evil.example:{port}")[0] == 403
        assert get(at(url, "static/../../etc/passwd"))[0] == 404


def test_an_unreachable_hubble_server_is_shown_on_the_page_and_the_terminal(tmp_path):
    require_cli()
    err = tmp_path / "stderr"
    with ui_process(cli_env(), "--server", "127.0.0.1:1", stderr=err) as (proc, url):
        assert wait_until(lambda: api(url, "api/map")["status"]["state"].startswith("error"), timeout=20)
        assert "cannot reach the Hubble API at 127.0.0.1:1" in api(url, "api/map")["status"]["state"]
        assert proc.poll() is None   # it keeps trying
    warning = [line for line in err.read_text().splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "cannot reach the Hubble API at 127.0.0.1:1" in warning[0]


def test_assets_missing_from_the_package_are_one_line(monkeypatch, tmp_path):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.node import ui_server

    (tmp_path / "ui_static").mkdir()
    monkeypatch.setattr(ui_server.resources, "files", lambda _: tmp_path)
    with pytest.raises(EnvironmentProblem, match="index.html is missing .* scripts/build_ui.sh"):
        ui_server.load_assets()


def test_a_restarted_hubble_server_is_followed_again_without_counting_a_flow_twice():
    require_cli()
    with FakeHubble() as hub, ui_process(cli_env(), "--server", hub.address) as (_, url):
        port = int(hub.address.rsplit(":", 1)[1])
        hub.put(flow(XWING, DEATH))
        assert wait_until(lambda: api(url, "api/map")["stats"]["flows"] == 1, timeout=15)
        hub.__exit__(None, None, None)
        assert wait_until(lambda: "reconnecting" in api(url, "api/map")["status"]["state"], timeout=15)
        with FakeHubble(port) as again:
            again.put(flow(XWING, DEATH, verdict=pb.DROPPED, drop_reason=133, event_type=1))
            assert wait_until(lambda: api(url, "api/map")["stats"]["flows"] == 2, timeout=15)
            snapshot = api(url, "api/map")
            assert snapshot["status"]["state"] == "connected"
            assert [(e["counts"]["forwarded"], e["counts"]["dropped"]) for e in snapshot["edges"]] == [(1, 1)]
