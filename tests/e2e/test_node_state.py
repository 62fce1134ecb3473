"""The node's own state files broken, lost or left half-written (issue 17, items 4, 6 and 8): every case gives a
clear message naming the file and what to do, and never a wrong address, route or verdict.

The state files touched here are the address leases (`ipam.json`) and the endpoint records (`endpoints/<id>.json`);
commands are killed at random moments on a fixed seed."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

CLI = str(Path(sys.executable).parent / "ciliumctl")

ALLOW_A_FROM_B = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: a-from-b
spec:
  endpointSelector:
    matchLabels:
      app: a
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: {peer}
"""


def endpoints(node) -> list[dict]:
    return json.loads(node.cli("endpoint", "list", "-o", "json").stdout)


def assert_consistent(node) -> dict[str, dict]:
    """Every registered endpoint has its own address, the node routes that address to its veth, and the address
    is on its eth0. Returns the endpoints by name."""
    rows = endpoints(node)
    addrs = [r["ipv4"] for r in rows]
    assert len(addrs) == len(set(addrs)), f"duplicate addresses: {addrs}"
    for r in rows:
        route = node.ns("ip", "-4", "route", "show", f"{r['ipv4']}/32").stdout
        assert f"dev {r['host_ifname']} " in route, f"{r['ipv4']} routed as {route!r}, not to {r['host_ifname']}"
        eth0 = node.cli("endpoint", "exec", str(r["id"]), "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
        assert f"{r['ipv4']}/32" in eth0
    sandboxes = sorted(p.name for p in Path("/run/netns").glob(f"{node.name}-ep*"))
    assert sandboxes == sorted(f"{node.name}-ep{r['id']}" for r in rows), "a namespace without an endpoint"
    return {r["name"]: r for r in rows}


def ping_from(node, ep_id: int, ip: str) -> bool:
    """A ping from endpoint `ep_id`'s namespace, without asking ciliumctl (whose record of it may be broken)."""
    return subprocess.run(["ip", "netns", "exec", f"{node.name}-ep{ep_id}", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode == 0


def one_line(res) -> str:
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "DEBUG" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------ the address leases

LEASE_FILES = {
    "deleted": None,
    "emptied": '{"leases": {}}\n',
    "stale lease": '{"leases": {"10.200.0.3": "endpoint:9"}}\n',
    "truncated": '{"leases": {"10.200.0.1": "endp',
    "empty": "",
    "leases a list": '{"leases": []}\n',
    "not an object": "[1, 2]\n",
    "bad address": '{"leases": {"10.200.0.256": "endpoint:1"}}\n',
}
READABLE = ("deleted", "emptied", "stale lease")


def test_lost_or_corrupt_leases_never_hand_out_a_live_address(node):
    """Each way of losing ipam.json, on one node: a lost lease file is rebuilt from the registry with a warning
    (and no live address handed out), a corrupt one is refused naming itself until it is removed."""
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "a", "-l", "app=a")
    node.cli("endpoint", "add", "b", "-l", "app=b")
    ipam = node.state / "ipam.json"
    for kind, text in LEASE_FILES.items():
        if text is None:
            ipam.unlink()
        else:
            ipam.write_text(text)
        listed = node.cli("endpoint", "list", "-o", "json")
        assert [r["name"] for r in json.loads(listed.stdout)] == ["a", "b"], kind
        added = node.cli("endpoint", "add", "c", "-l", "app=c", check=False)
        if kind in READABLE:
            assert added.returncode == 0, (kind, added.stderr)
            assert "Warning:" in listed.stderr or kind == "stale lease"
            if kind == "stale lease":
                assert "released the lease of 10.200.0.3: endpoint:9 no longer exists" in added.stderr
            else:
                assert "restored the address lease(s) of 10.200.0.1, 10.200.0.2" in added.stderr, added.stderr
        else:
            err = one_line(added)
            assert added.returncode == 2 and str(ipam) in err and "corrupt address leases" in err, (kind, err)
            assert "remove the file" in err and str(ipam) in listed.stderr
            assert ipam.read_text() == text                                 # never rewritten on a guess
            ipam.unlink()                                                   # what the message says to do
            node.cli("endpoint", "add", "c", "-l", "app=c")
        eps = assert_consistent(node)
        assert eps["c"]["ipv4"] not in (eps["a"]["ipv4"], eps["b"]["ipv4"]), kind
        leases = json.loads(ipam.read_text())["leases"]
        assert {leases[eps[n]["ipv4"]] for n in "abc"} == {f"endpoint:{eps[n]['id']}" for n in "abc"}, kind
        assert node.ping("c", eps["a"]["ipv4"]) and node.ping("a", eps["b"]["ipv4"]), kind
        node.cli("endpoint", "delete", "c")
        eps = assert_consistent(node)                 # deleting c broke neither a nor b
        assert node.ping("a", eps["b"]["ipv4"]) and node.ping("b", eps["a"]["ipv4"]), kind


# ------------------------------------------------------------------------------------ the endpoint records

RECORDS = {
    "empty": "",
    "truncated": '{"id": 2, "name": "b", "namesp',
    "missing keys": '{"id": 2}',
    "a list": "[2]",
    "wrong type": None,           # the real record with "ipv4": 5
    "other id": None,             # the real record with "id": 7
}


def test_corrupt_endpoint_records_are_reported_and_deletable(node):
    """A corrupt record stops what would compute policy without it (no wrong verdict), is reported by list and
    status with the way out, and `endpoint delete ID` removes it with all its endpoint left in the kernel."""
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "a", "-l", "app=a")
    node.cli("endpoint", "add", "b", "-l", "app=b")
    node.cli("endpoint", "add", "c", "-l", "app=c")
    node.cli("policy", "apply", "-f", "-", input=ALLOW_A_FROM_B.format(peer="b"))
    for kind, text in RECORDS.items():
        eps = assert_consistent(node)
        a, b, c = eps["a"], eps["b"], eps["c"]
        assert b["id"] == 2, "b is re-added as endpoint 2 each round"
        record = node.state / "endpoints" / "2.json"
        good = json.loads(record.read_text())
        if text is None:
            text = json.dumps({**good, **({"ipv4": 5} if kind == "wrong type" else {"id": 7})})
        record.write_text(text)
        listed = node.cli("endpoint", "list", "-o", "json")
        assert sorted(r["name"] for r in json.loads(listed.stdout)) == ["a", "c"], kind
        assert str(record) in listed.stderr and "ciliumctl endpoint delete 2" in listed.stderr, kind
        status = node.cli("status", check=False)                  # problems listed: exit 1
        assert status.returncode == 1 and "Problem:" in status.stdout and str(record) in status.stdout, kind
        for args in (["endpoint", "add", "d"], ["endpoint", "delete", "b"],
                     ["policy", "apply", "-f", "-"]):
            res = node.cli(*args, check=False, input=ALLOW_A_FROM_B.format(peer="c"))
            err = one_line(res)
            assert res.returncode == 2 and str(record) in err and "endpoint delete 2" in err, (kind, args, err)
        # nothing was reprogrammed without b: b still reaches a, c still does not, the store still says b
        assert ping_from(node, 2, a["ipv4"]) and not ping_from(node, c["id"], a["ipv4"]), kind
        assert "app: b" in node.cli("policy", "get", "a-from-b", "-o", "yaml").stdout, kind
        deleted = node.cli("endpoint", "delete", "2")
        assert "endpoint 2 deleted" in deleted.stdout and f"{node.name}-ep2" in deleted.stderr, kind
        assert not record.exists() and b["ipv4"] not in node.ns("ip", "-4", "route").stdout
        node.cli("endpoint", "add", "b", "-l", "app=b")
        eps = assert_consistent(node)
        assert node.ping("b", eps["a"]["ipv4"]) and not node.ping("c", eps["a"]["ipv4"]), kind


def test_a_missing_record_hides_nothing_and_a_failed_add_takes_nothing(node):
    """rm endpoints/2.json while endpoint 2 lives: list and status say so, new endpoints get neither its id nor
    its address, a failing add does not release its lease, and `endpoint delete 2` removes what is left."""
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "a", "-l", "app=a")
    node.cli("endpoint", "add", "b", "-l", "app=b")
    b = {r["name"]: r for r in endpoints(node)}["b"]
    (node.state / "endpoints" / "2.json").unlink()
    listed = node.cli("endpoint", "list", "-o", "json")
    assert "endpoint 2 has no state file" in listed.stderr and "ciliumctl endpoint delete 2" in listed.stderr
    status = node.cli("status", check=False)
    assert status.returncode == 1 and "endpoint 2 has no state file" in status.stdout
    failed = node.cli("endpoint", "add", "c", "--ipv4", b["ipv4"], check=False)
    assert failed.returncode == 2 and f"address {b['ipv4']} is already leased to endpoint:2" in one_line(failed)
    failed = node.cli("endpoint", "add", "c", "--pool", "10.200.0.0/16", "--ipv4", "10.200.200.1", check=False)
    assert failed.returncode == 2 and "CNI plugin" in one_line(failed)
    leases = json.loads((node.state / "ipam.json").read_text())["leases"]
    assert leases[b["ipv4"]] == "endpoint:2"                   # the failed adds released nothing of b's
    c = json.loads(node.cli("endpoint", "add", "c", "-l", "app=c", "-o", "json").stdout)
    assert c["id"] == 3 and c["ipv4"] not in ("10.200.0.1", b["ipv4"])
    assert f"dev {b['host_ifname']}" in node.ns("ip", "-4", "route", "show", f"{b['ipv4']}/32").stdout
    node.cli("endpoint", "delete", "2")
    assert_consistent(node)
    assert "has no state file" not in node.cli("endpoint", "list").stderr
    missing = node.cli("endpoint", "delete", "2", check=False)
    assert missing.returncode == 1 and "not found" in one_line(missing)


# ------------------------------------------------------------------------------------ killed commands

def test_killed_adds_and_deletes_leave_honest_state(node):
    """kill -9 of `endpoint add` / `endpoint delete` at random moments (fixed seed): list never shows a dead
    command's transitional state as if it were in progress, and the next add cleans up after it."""
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "a", "-l", "app=a")
    rng = random.Random(17)
    iterations = 10
    for i in range(iterations):
        name = f"k{i}"
        kill_delete = i % 3 == 2
        if kill_delete:
            node.cli("endpoint", "add", name, "-l", f"app={name}")
        args = ["endpoint", "delete", name] if kill_delete else ["endpoint", "add", name, "-l", f"app={name}"]
        proc = subprocess.Popen([CLI, *args], env=node.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        states = {r["name"]: r["state"] for r in endpoints(node)}
        assert set(states.values()) <= {"ready", "interrupted"}, (i, states)
        # the next add removes what the killed command left; the same name can be added again
        node.cli("endpoint", "add", f"n{i}", "-l", "app=n")
        eps = assert_consistent(node)
        assert all(r["state"] == "ready" for r in eps.values()), (i, eps)
        if name not in eps:
            node.cli("endpoint", "add", name, "-l", f"app={name}")
        node.cli("endpoint", "delete", name)
        node.cli("endpoint", "delete", f"n{i}")
        leases = json.loads((node.state / "ipam.json").read_text())["leases"]
        assert list(leases.values()) == ["endpoint:1"], (i, leases)
        assert_consistent(node)
    assert node.ping("a", "10.200.0.1")


# ------------------------------------------------------------------------------------ input that was the catch-all

def test_bad_input_gets_its_own_message(node, tmp_path):
    bad_ip = node.cli("endpoint", "add", "x", "--ipv4", "999.1.1.1", check=False)
    assert bad_ip.returncode == 2 and "address '999.1.1.1' is not an IPv4 address" in one_line(bad_ip)
    for args in (["policy", "validate", "-"], ["policy", "apply", "-f", "-"]):
        res = subprocess.run([CLI, *args], input=b"kind: \xff\xfe\n", capture_output=True, env=node.env)
        err = res.stderr.decode()
        assert res.returncode == 2 and err.strip() == "Error: standard input: not UTF-8 text (byte 6); send UTF-8 " \
                                                      "text", err
    huge = "a" * 120_000                 # the longest single argument Linux passes is 128 KiB
    res = node.cli("endpoint", "add", "x", "-l", f"app={huge}", check=False)
    assert res.returncode == 2 and len(one_line(res)) < 400 and "characters]" in res.stderr
    res = node.cli("endpoint", "list", "-o", huge, check=False)            # click's own usage error, capped too
    assert res.returncode == 2 and len(res.stderr) < 600
    assert "': one of table, wide, json, yaml; see 'ciliumctl endpoint list --help'" in one_line(res)
    policy = tmp_path / "big.yaml"
    policy.write_text(ALLOW_A_FROM_B.replace("app: {peer}", "app: " + "b" * 1_000_000))
    res = node.cli("policy", "validate", str(policy), check=False)
    assert res.returncode == 1 and len(res.stdout) < 2000 and "characters]" in res.stdout


def test_exec_takes_its_options_after_the_name(node):
    node.cli("install", "--no-agent")
    node.cli("endpoint", "add", "web", "-n", "prod", "-l", "app=web")
    for form in (["web", "-n", "prod", "--"], ["web", "--namespace", "prod", "--"], ["web", "--namespace=prod", "--"],
                 ["-n", "prod", "web", "--"], ["prod/web", "--"]):
        res = node.cli("endpoint", "exec", *form, "sh", "-c", 'printf "%s\\n" "$*"', "sh", "-n", "x")
        assert res.stdout == "-n x\n", form             # what follows -- is the command's, -n included
    bad = node.cli("endpoint", "exec", "web", "-x", "--", "true", check=False)
    assert bad.returncode == 2 and "no such option '-x'" in one_line(bad)
    wrong_ns = node.cli("endpoint", "exec", "web", "-n", "default", "--", "true", check=False)
    assert wrong_ns.returncode == 1 and "not found" in one_line(wrong_ns)           # NotFound is 1, as kubectl
