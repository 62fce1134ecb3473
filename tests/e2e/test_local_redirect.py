"""CiliumLocalRedirectPolicy on a sandbox node, with real packets through the real executable: a serviceMatcher
sends the service's connections to the selected endpoint (on its own port), an addressMatcher translates an address
outside the service CIDR; `service list` marks both LocalRedirect; when the local backend goes away the service's
own backend answers again and the address is no longer translated (Cilium's no-target-pods behaviour); bad input is
one line with exit 2 and changes nothing; `policy validate` checks the kind."""

import json
import subprocess
import sys

import pytest
from support.cli import CLI

pytestmark = pytest.mark.root

VIP = "10.100.0.10"
ADDR = "169.254.20.10"

WHOAMI = ("import socket, sys\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n"
          "while True:\n c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()")


def _whoami(node, endpoint: str, ip: str, port: int) -> None:
    """A TCP server in `endpoint` that answers each connection with its own address."""
    node.servers.append(subprocess.Popen([CLI, "endpoint", "exec", endpoint, "--", sys.executable, "-c", WHOAMI,
                                          ip, str(port)], env=node.env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))


def _who(node, endpoint: str, ip: str, port: int) -> str:
    """Who answers a connection from `endpoint` to ip:port ('ERR ...' when none does)."""
    code = (f"import socket, time\nfor i in range(50):\n try:\n  s = socket.create_connection(('{ip}', {port}), "
            "timeout=1)\n  print(s.recv(64).decode()); break\n except ConnectionRefusedError:\n  time.sleep(0.1)\n"
            " except OSError as e:\n  print('ERR', e); break\nelse: print('ERR refused')")
    return node.cli("endpoint", "exec", endpoint, "--", sys.executable, "-c", code).stdout.strip()


def _lrp(name: str, frontend: dict, port: str = "9090") -> str:
    return json.dumps({"apiVersion": "cilium.io/v2", "kind": "CiliumLocalRedirectPolicy",
                       "metadata": {"name": name, "namespace": "default"},
                       "spec": {"redirectFrontend": frontend,
                                "redirectBackend": {"localEndpointSelector": {"matchLabels": {"app": "cache"}},
                                                    "toPorts": [{"port": port, "protocol": "TCP"}]}}})


def _web_and_cache(node) -> None:
    """A node with endpoints client (10.200.0.1), web (10.200.0.2, answering on 8080) and cache (10.200.0.3, on
    9090), and the service web at VIP:80 with web as its backend."""
    node.cli("install", "--no-agent", "--service-cidr", "10.100.0.0/16")
    node.cli("endpoint", "add", "client", "-l", "app=client")          # 10.200.0.1
    node.cli("endpoint", "add", "web", "-l", "app=web")                # 10.200.0.2
    node.cli("endpoint", "add", "cache", "-l", "app=cache")            # 10.200.0.3
    _whoami(node, "web", "10.200.0.2", 8080)
    _whoami(node, "cache", "10.200.0.3", 9090)
    node.cli("service", "update", "--frontend", f"{VIP}:80", "--backends", "10.200.0.2:8080", "--name", "web")


def test_local_redirect_by_service_and_address(node, tmp_path):
    _web_and_cache(node)
    assert _who(node, "client", VIP, 80) == "10.200.0.2"

    by_service = tmp_path / "svc.yaml"
    by_service.write_text(_lrp("web-local", {"serviceMatcher": {"serviceName": "web", "namespace": "default"}}))
    by_address = tmp_path / "addr.yaml"
    by_address.write_text(_lrp("meta", {"addressMatcher": {"ip": ADDR, "toPorts": [{"port": "80",
                                                                                     "protocol": "TCP"}]}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(_lrp("bad", {"serviceMatcher": {"serviceName": "web", "namespace": "other"}}))
    port0 = tmp_path / "port0.yaml"
    port0.write_text(_lrp("port0", {"addressMatcher": {"ip": ADDR, "toPorts": [{"port": "81", "protocol": "TCP"}]}},
                          port="0"))

    # policy validate knows the kind: the good ones pass, the bad one is named
    assert node.cli("policy", "validate", str(by_service), str(by_address), check=False).returncode == 0
    res = node.cli("policy", "validate", str(bad), check=False)
    assert res.returncode == 1 and "must be the policy's namespace" in res.stdout + res.stderr, res

    # bad input: one line, exit 2, nothing stored (a good document beside a bad one is not applied either)
    for files, needle in (([bad], "must be the policy's namespace 'default'"), ([by_address, port0], "port '0'"),
                          ([tmp_path / "none.yaml"], "cannot read it")):
        res = node.cli("service", "redirect", "apply", *[a for f in files for a in ("-f", str(f))], check=False)
        assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res
    assert json.loads(node.cli("service", "redirect", "list", "-o", "json").stdout) == []
    res = node.cli("policy", "apply", "-f", str(by_service), check=False)
    assert res.returncode == 2 and "service redirect apply" in res.stderr, res

    out = node.cli("service", "redirect", "apply", "-f", str(by_service), "-f", str(by_address)).stdout
    assert out.splitlines() == ["ciliumlocalredirectpolicy/default/web-local created",
                                "ciliumlocalredirectpolicy/default/meta created"]
    assert _who(node, "client", VIP, 80) == "10.200.0.3"         # the service's traffic: the local endpoint
    assert _who(node, "client", ADDR, 80) == "10.200.0.3"        # an address outside the service CIDR too
    listed = {s["frontend"]: s for s in json.loads(node.cli("service", "list", "-o", "json").stdout)}
    assert listed[f"{VIP}:80/TCP"]["type"] == "LocalRedirect" and listed[f"{ADDR}:80/TCP"]["type"] == "LocalRedirect"
    assert [b["address"] for b in listed[f"{VIP}:80/TCP"]["backends"]] == ["10.200.0.3:9090"]
    table = node.cli("service", "list").stdout
    assert any(line.split()[1:3] == [f"{VIP}:80/TCP", "LocalRedirect"] for line in table.splitlines()), table
    rows = json.loads(node.cli("service", "redirect", "list", "-o", "json").stdout)
    assert [(r["name"], r["backends"]) for r in rows] == [("default/meta", ["10.200.0.3:9090/TCP"]),
                                                         ("default/web-local", ["10.200.0.3:9090/TCP"])]
    assert node.cli("status", "--verify", check=False).returncode == 0
    clash = tmp_path / "clash.yaml"      # an address that is a service's frontend: left to a serviceMatcher, said so
    clash.write_text(_lrp("clash", {"addressMatcher": {"ip": VIP, "toPorts": [{"port": "80", "protocol": "TCP"}]}}))
    res = node.cli("service", "redirect", "apply", "-f", str(clash))
    assert "not redirected: default/clash: 10.100.0.10:80/TCP is service 1's frontend" in res.stderr, res
    node.cli("service", "redirect", "delete", "clash")
    trace = json.loads(node.cli("policy", "trace", "--live", "--src-ip", "10.200.0.1", "--dst-ip", VIP,
                                "--dport", "80/tcp", "-o", "json").stdout)
    assert trace["service"]["backend"] == "10.200.0.3:9090" and trace["port"] == 9090

    # the local backend goes: the service's own backend again, the address untranslated (nothing answers there)
    node.cli("endpoint", "delete", "cache")
    assert _who(node, "client", VIP, 80) == "10.200.0.2"
    assert _who(node, "client", ADDR, 80).startswith("ERR")
    listed = {s["frontend"]: s for s in json.loads(node.cli("service", "list", "-o", "json").stdout)}
    assert listed[f"{VIP}:80/TCP"]["type"] == "ClusterIP" and f"{ADDR}:80/TCP" not in listed
    assert "none (not redirected)" in node.cli("service", "redirect", "list").stdout

    # back: the redirect takes over again; deleted: the service keeps its own backend
    ip = node.add_pod("cache2", "cache")
    _whoami(node, "cache2", ip, 9090)
    assert _who(node, "client", VIP, 80) == ip
    assert node.cli("service", "redirect", "delete", "web-local").stdout.strip() == \
        "ciliumlocalredirectpolicy/default/web-local deleted"
    assert _who(node, "client", VIP, 80) == "10.200.0.2"
    res = node.cli("service", "redirect", "delete", "web-local", check=False)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1


def test_skip_redirect_from_backend(node, tmp_path):
    """skipRedirectFromBackend: the redirect's own backend reaching its frontend is not sent back to itself (as it
    is without the flag: hairpin) but goes where the frontend went before, the service's own backend; an address
    that was no service stays untranslated for it (nothing answers here). Everyone else is redirected."""
    _web_and_cache(node)

    def lrps(skip: bool) -> list[str]:
        files = []
        for name, fe in (("web-local", {"serviceMatcher": {"serviceName": "web", "namespace": "default"}}),
                         ("meta", {"addressMatcher": {"ip": ADDR, "toPorts": [{"port": "80", "protocol": "TCP"}]}})):
            obj = json.loads(_lrp(name, fe))
            obj["spec"]["skipRedirectFromBackend"] = skip
            path = tmp_path / f"{name}-{skip}.yaml"
            path.write_text(json.dumps(obj))
            files += ["-f", str(path)]
        return files

    node.cli("service", "redirect", "apply", *lrps(False))
    assert _who(node, "cache", VIP, 80) == "10.200.0.3"            # without the flag: back to itself
    assert _who(node, "cache", ADDR, 80) == "10.200.0.3"
    res = node.cli("service", "redirect", "apply", *lrps(True), check=False)    # immutable, as Cilium's CRD
    assert res.returncode == 2 and "cannot change" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    node.cli("service", "redirect", "delete", "web-local")
    node.cli("service", "redirect", "delete", "meta")

    node.cli("service", "redirect", "apply", *lrps(True))
    assert _who(node, "client", VIP, 80) == "10.200.0.3"           # everyone else: the local backend
    assert _who(node, "client", ADDR, 80) == "10.200.0.3"
    assert _who(node, "cache", VIP, 80) == "10.200.0.2"            # the backend itself: the service's own backend
    assert _who(node, "cache", ADDR, 80).startswith("ERR")          # ... and the address as it is: no one there
    listed = {s["frontend"]: s for s in json.loads(node.cli("service", "list", "-o", "json").stdout)}
    assert listed[f"{VIP}:80/TCP"]["skipRedirectFromBackend"] == {"from": ["10.200.0.3"], "to": 1}
    assert node.cli("status", "--verify", check=False).returncode == 0
    trace = json.loads(node.cli("policy", "trace", "--live", "--src-ip", "10.200.0.3", "--dst-ip", VIP,
                                "--dport", "80/tcp", "-o", "json").stdout)
    assert trace["service"]["backend"] == "10.200.0.2:8080"      # policy trace shows what the backend gets

    # the service's backends change under the redirect: the backend's own traffic follows them
    _whoami(node, "client", "10.200.0.1", 8080)
    node.cli("service", "update", "--frontend", f"{VIP}:80", "--backends", "10.200.0.1:8080", "--name", "web")
    assert _who(node, "cache", VIP, 80) == "10.200.0.1"
    assert _who(node, "web", VIP, 80) == "10.200.0.3"
