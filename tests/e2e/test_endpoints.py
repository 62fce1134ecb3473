"""`ciliumctl endpoint add|list|get|exec|delete` through the real executable on a sandbox node."""

import json
import subprocess

import pytest
from support.cli import CLI
from support.shell import sh

pytestmark = pytest.mark.root


def test_endpoint_lifecycle(node):
    out = node.cli("endpoint", "add", "web", "--labels", "app=web,tier=front").stdout
    assert "endpoint/web created (id 1" in out
    node.cli("endpoint", "add", "client", "-l", "app=client", "--namespace", "prod")

    rows = json.loads(node.cli("endpoint", "list", "-o", "json").stdout)
    by_name = {r["name"]: r for r in rows}
    web, client = by_name["web"], by_name["client"]
    assert web["ipv4"] == "10.200.0.1" and client["ipv4"] == "10.200.0.2"
    assert client["namespace"] == "prod" and web["state"] == client["state"] == "ready"
    assert "k8s:app=web" in web["labels_full"] and web["identity"] >= 256
    assert web["identity"] != client["identity"]
    assert web["policy_enforcement"] == {"ingress": "disabled", "egress": "disabled"}

    # one line per endpoint within 80 columns, with the name get/exec/delete take; labels under -o wide
    table = node.cli("endpoint", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "IDENTITY", "IPv4", "POLICY", "STATUS"]
    assert table[1].split() == ["1", "default/web", str(web["identity"]), "10.200.0.1", "none", "ready"]
    assert len(table) == 3 and max(map(len, table)) <= 80, table
    wide = node.cli("endpoint", "list", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:4] == ["ENDPOINT", "NAME", "POLICY", "(ingress)"] and "IPv4" in wide[0]
    assert "STATUS" in wide[0] and "ENFORCEMENT" in wide[1]
    assert any(line.startswith("1 ") and "default/web" in line and "k8s:app=web" in line and "10.200.0.1" in line
               and "ready" in line for line in wide)
    headless = node.cli("endpoint", "list", "--no-headers").stdout
    assert "NAME" not in headless and "10.200.0.2" in headless
    name = node.cli("endpoint", "list", "--no-headers").stdout.splitlines()[1].split()[1]
    assert name == "prod/client" and "name: client" in node.cli("endpoint", "get", name).stdout

    assert json.loads(node.cli("endpoint", "get", "2", "-o", "json").stdout)["name"] == "client"
    assert "name: web" in node.cli("endpoint", "get", "web").stdout

    # Real plumbing: the pod has its /32 and the default route via 169.254.1.1; the host side routes back.
    addr = node.cli("endpoint", "exec", "web", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "10.200.0.1/32" in addr
    assert "default via 169.254.1.1" in node.cli("endpoint", "exec", "web", "--", "ip", "route").stdout
    assert "10.200.0.1 dev cctlep1" in node.ns("ip", "route").stdout
    # Exit codes pass through exec, and unknown commands say so.
    assert node.cli("endpoint", "exec", "web", "--", "sh", "-c", "exit 7", check=False).returncode == 7
    bad = node.cli("endpoint", "exec", "web", "--", "no-such-cmd-xyz", check=False)
    assert bad.returncode == 127 and "command not found" in bad.stderr

    # Traffic between endpoints flows (no policy).
    node.serve("web", "10.200.0.1", 8080)
    assert node.connect("prod/client", "10.200.0.1", 8080)
    assert node.ping("prod/client", "10.200.0.1")

    # Errors are one line, exit 2.
    dup = node.cli("endpoint", "add", "web", "-l", "app=web", check=False)
    assert dup.returncode == 2 and "already exists" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1
    badlab = node.cli("endpoint", "add", "x", "-l", "novalue", check=False)
    assert badlab.returncode == 2 and "key=value" in badlab.stderr
    missing = node.cli("endpoint", "get", "nope", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr            # NotFound is 1, as kubectl

    # Delete removes netns, veth, route, lease and registry entry; the address is handed out again.
    node.cli("endpoint", "delete", "web")
    left = node.leftovers()
    assert left["netns"] == [f"{node.name}-ep2"] and left["veths"] == ["cctlep2"]
    assert "10.200.0.1" not in node.ns("ip", "route").stdout
    assert not (node.state / "endpoints" / "1.json").exists()
    assert json.loads((node.state / "ipam.json").read_text())["leases"] == {"10.200.0.2": "endpoint:2"}
    node.cli("endpoint", "delete", "2")
    assert node.leftovers()["netns"] == [] and node.leftovers()["veths"] == []
    again = json.loads(node.cli("endpoint", "add", "again", "-o", "json").stdout)
    assert again["ipv4"] == "10.200.0.1" and again["id"] == 1
    # A sandbox removed behind our back: exec says so and what to do, one line, exit 2.
    subprocess.run(["ip", "netns", "delete", f"{node.name}-ep1"], check=True)
    gone = node.cli("endpoint", "exec", "again", "--", "true", check=False)
    assert gone.returncode == 2 and "sandbox is gone, delete and re-add" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_pool_is_configurable(node):
    node.cli("install", "--no-agent", "--pool", "10.77.3.0/29")
    ep = json.loads(node.cli("endpoint", "add", "a", "-o", "json").stdout)
    assert ep["ipv4"] == "10.77.3.1"
    ep = json.loads(node.cli("endpoint", "add", "b", "--pool", "10.88.0.0/30", "-o", "json").stdout)
    assert ep["ipv4"] == "10.88.0.1"
    assert node.ping("a", "10.88.0.1")


def test_concurrent_adds_get_distinct_ids_and_addresses(node):
    node.cli("install", "--no-agent")
    procs = [subprocess.Popen([CLI, "endpoint", "add", f"ep{i}", "-l", f"n={i}"], env=node.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    rows = json.loads(node.cli("endpoint", "list", "-o", "json").stdout)
    assert sorted(r["id"] for r in rows) == [1, 2, 3, 4]
    assert sorted(r["ipv4"] for r in rows) == [f"10.200.0.{i}" for i in range(1, 5)]
    assert all(r["state"] == "ready" for r in rows)
    ips = {r["name"]: r["ipv4"] for r in rows}
    assert node.ping("ep0", ips["ep3"]) and node.ping("ep3", ips["ep0"])


def test_failed_add_leaves_nothing_and_touches_no_foreign_netns(node):
    node.cli("install", "--no-agent")
    squatter = f"{node.name}-ep1"
    sh("ip", "netns", "add", squatter)
    try:
        # an id whose namespace name is taken is skipped (and reported), the namespace left alone
        added = json.loads(node.cli("endpoint", "add", "a", "-l", "x=y", "-o", "json").stdout)
        assert added["id"] == 2 and added["ipv4"] == "10.200.0.1"
        assert "endpoint 1 has no state file" in node.cli("endpoint", "list").stderr
        # an add that fails half way (its address is taken) leaves nothing behind
        res = node.cli("endpoint", "add", "b", "--ipv4", "10.200.0.1", check=False)
        assert res.returncode == 2 and "already leased to endpoint:2" in res.stderr
        assert [r["name"] for r in json.loads(node.cli("endpoint", "list", "-o", "json").stdout)] == ["a"]
        assert json.loads((node.state / "ipam.json").read_text())["leases"] == {"10.200.0.1": "endpoint:2"}
        assert node.leftovers()["veths"] == ["cctlep2"] and not (node.state / "endpoints" / "3.json").exists()
        assert sh("ip", "netns", "pids", squatter).returncode == 0
    finally:
        sh("ip", "netns", "delete", squatter, check=False)
