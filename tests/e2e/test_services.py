"""`ciliumctl service ...` on a sandbox node, through the real executable: a ClusterIP service from the service
CIDR set at install reaches its backend endpoints, `service list/get` in cilium-dbg's columns and as JSON/YAML,
bad input is one line with exit 2 and leaves the stored services and the datapath as they were, delete stops the
translation, and `policy trace` shows the translation of a frontend."""

import json
import sys

import pytest

pytestmark = pytest.mark.root

VIP = "10.100.0.10"


def _peer(node, endpoint: str, ip: str, port: int) -> str:
    """The address a connection from `endpoint` to ip:port is connected to, as the client sees it."""
    code = (f"import socket, sys\ntry:\n s = socket.create_connection(('{ip}', {port}), timeout=2)\n"
            " print(s.getpeername()[0])\nexcept OSError as e: print('ERR', e)")
    return node.cli("endpoint", "exec", endpoint, "--", sys.executable, "-c", code).stdout.strip()


def test_service_update_list_get_delete_and_traffic(node):
    node.cli("install", "--no-agent", "--service-cidr", "10.100.0.0/16")
    node.cli("endpoint", "add", "client", "-l", "app=client")          # 10.200.0.1
    node.cli("endpoint", "add", "web1", "-l", "app=web")               # 10.200.0.2
    node.cli("endpoint", "add", "web2", "-l", "app=web")               # 10.200.0.3
    node.serve("web1", "10.200.0.2", 8080)
    node.serve("web2", "10.200.0.3", 8080)

    # outside the service CIDR set at install: refused, one line, exit 2, nothing stored
    bad = node.cli("service", "update", "--frontend", "10.96.0.10:80", "--backends", "10.200.0.2:8080", check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "outside the service CIDR 10.100.0.0/16" in bad.stderr
    assert json.loads(node.cli("service", "list", "-o", "json").stdout) == []

    out = node.cli("service", "update", "--frontend", f"{VIP}:80", "--backends", "10.200.0.2:8080,10.200.0.3:8080")
    assert out.stdout.strip() == f"service 1 ({VIP}:80/TCP) created, 2 of 2 backend(s) active"
    assert node.connect("client", VIP, 80)
    assert _peer(node, "client", VIP, 80) == VIP          # the client sees the frontend, never the backend

    table = node.cli("service", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "Frontend", "Service", "Type", "Backend"]
    assert table[1].split() == ["1", f"{VIP}:80/TCP", "ClusterIP", "1", "=>", "10.200.0.2:8080/TCP", "(active)"]
    assert table[2].split() == ["2", "=>", "10.200.0.3:8080/TCP", "(active)"]

    # web1 terminating: kept in the list with its state
    node.cli("service", "update", "--id", "1", "--frontend", f"{VIP}:80", "--backends",
             "10.200.0.2:8080,10.200.0.3:8080", "--states", "terminating,active")
    got = json.loads(node.cli("service", "get", "1", "-o", "json").stdout)
    assert [(b["address"], b["state"]) for b in got["backends"]] == [("10.200.0.2:8080", "terminating"),
                                                                      ("10.200.0.3:8080", "active")]
    assert "terminating" in node.cli("service", "get", f"{VIP}:80", "-o", "yaml").stdout

    # bad input: one line each, exit 2, the stored service unchanged
    for args, needle in ((["--frontend", f"{VIP}:80", "--backends", "10.200.0.2:0"], "use 1-65535"),
                         (["--frontend", f"{VIP}:80", "--id", "2"], "belongs to service 1"),
                         (["--frontend", "10.100.0.11:80/sctp"], "not supported"),
                         (["--frontend", "10.100.0.11:80", "--type", "NodePort"], "NodePort range"),
                         (["--frontend", f"{VIP}:80", "--backends", "10.250.0.1:80"], "no route to it")):
        res = node.cli("service", "update", *args, check=False)
        assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res
    assert json.loads(node.cli("service", "get", "1", "-o", "json").stdout) == got
    assert node.connect("client", VIP, 80)

    # policy trace translates the frontend and traces to the backend
    trace = json.loads(node.cli("policy", "trace", "--live", "--src-ip", "10.200.0.1", "--dst-ip", VIP,
                                "--dport", "80/tcp", "-o", "json").stdout)
    assert trace["service"]["backend"] == "10.200.0.3:8080" and trace["destination"]["ip"] == "10.200.0.3"
    assert trace["port"] == 8080 and trace["verdict"] == "allowed"

    # a lost service entry: status --verify names it, --repair puts it back
    from ciliumctl.datapath import bpfsys, maps

    m = bpfsys.Map.from_pin(node.bpffs / "lb_services")
    try:
        key = next(k for k in m.keys() if maps.LB_SVC_KEY.unpack(k)[2] == 0 and
                   maps.LB_SVC_KEY.unpack(k)[0] == json.loads(node.cli("status", "-o", "json").stdout)
                   ["datapath"]["active_slot"])
        m.delete(key)
        verify = node.cli("status", "--verify", check=False)
        assert verify.returncode == 1 and f"lb_services: missing service {VIP}:80/TCP" in verify.stdout, verify
        node.cli("status", "--repair")
        assert node.cli("status", "--verify", check=False).returncode == 0
    finally:
        m.close()
    assert node.connect("client", VIP, 80)

    # no backend at all: refused at once
    node.cli("service", "update", "--frontend", f"{VIP}:80", "--backends", "")
    code = (f"import socket\ntry: socket.create_connection(('{VIP}', 80), timeout=5)\n"
            "except ConnectionRefusedError: print('refused')\nexcept OSError as e: print(e)")
    assert node.cli("endpoint", "exec", "client", "--", sys.executable, "-c", code).stdout.strip() == "refused"

    assert node.cli("service", "delete", "1").stdout.strip() == f"service 1 ({VIP}:80/TCP) deleted"
    assert node.cli("service", "get", "1", check=False).returncode == 1
    assert node.cli("service", "delete", "1", check=False).returncode == 1
    assert not node.connect("client", VIP, 80, timeout=0.5)


def test_nodeport_from_outside_through_install_devices(node):
    from support.shell import sh

    outside, dev = f"{node.name}-x", f"{node.name}d"
    sh("ip", "netns", "add", outside)
    sh("ip", "-n", node.name, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", outside)
    sh("ip", "-n", node.name, "addr", "add", "192.168.78.1/24", "dev", dev)
    sh("ip", "-n", node.name, "link", "set", dev, "up")
    sh("ip", "-n", outside, "addr", "add", "192.168.78.2/24", "dev", "eth0")
    sh("ip", "-n", outside, "link", "set", "eth0", "up")
    sh("ip", "-n", outside, "route", "add", "10.200.0.0/16", "via", "192.168.78.1")

    bad = node.cli("install", "--no-agent", "--devices", "nosuchdev0", check=False)
    assert bad.returncode == 2 and "nosuchdev0" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    node.cli("install", "--no-agent", "--devices", dev)
    node.cli("endpoint", "add", "web", "-l", "app=web")                 # 10.200.0.1
    node.serve("web", "10.200.0.1", 8080)
    res = node.cli("service", "update", "--type", "NodePort", "--frontend", "192.168.78.9:30080",
                   "--backends", "10.200.0.1:8080", check=False)
    assert res.returncode == 2 and "not an address of this node" in res.stderr
    bad = node.cli("service", "update", "--type", "NodePort", "--frontend", "192.168.78.1:30080",
                   "--backends", "10.200.0.1:8080", "--name", "Shop/Web", check=False)
    assert bad.returncode == 2 and "DNS-1035" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    node.cli("service", "update", "--type", "NodePort", "--frontend", "192.168.78.1:30080",
             "--backends", "10.200.0.1:8080", "--name", "shop/web")
    listed = node.cli("service", "list").stdout
    assert "NodePort" in listed and listed.splitlines()[0].split()[-1] == "Service" and "shop/web" in listed
    assert json.loads(node.cli("service", "get", "1", "-o", "json").stdout)["name"] == "web"
    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["services"] == {"services": 1, "backends": 1, "active": 1, "terminating": 0}
    assert "Services" in node.cli("status").stdout
    code = ("import socket\ns = socket.create_connection(('192.168.78.1', 30080), timeout=2)\n"
            "print(s.getpeername()[0], s.getpeername()[1])")
    got = sh("ip", "netns", "exec", outside, sys.executable, "-c", code, check=False)
    assert got.stdout.strip() == "192.168.78.1 30080", got
