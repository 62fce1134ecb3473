"""The plugin against the CNI spec, driven like cnitool drives it: exec with CNI_* variables and the network
configuration on stdin, against namespaces the test creates. Addresses come from the agent's own pool (the
installed conflist has no "ipam" section), or from Debian's host-local where a configuration delegates to it."""

import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ciliumctl.node.cni import install as cni_install

REPO = Path(__file__).resolve().parents[2]


def exec_plugin(env: dict, stdin: str = "") -> tuple[int, dict | None]:
    full = {"PATH": "/usr/bin:/bin", **env}
    proc = subprocess.run([sys.executable, "-S", "-c",
                           f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                           "from ciliumctl.endpoints.cni_plugin import main; main()"],
                          input=stdin, env=full, capture_output=True, text=True, timeout=30)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def assert_error(code: int, out: dict, want: int) -> None:
    assert code != 0
    assert out["code"] == want, out
    assert out["msg"] and "cniVersion" in out


# --- without root: input handling ------------------------------------------------------------------------

def test_version_reports_supported_versions():
    code, out = exec_plugin({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "0.4.0"}')
    assert code == 0
    assert out["cniVersion"] == "0.4.0"
    assert {"0.3.1", "0.4.0", "1.0.0", "1.1.0"} <= set(out["supportedVersions"])


def test_version_with_empty_stdin():
    code, out = exec_plugin({"CNI_COMMAND": "VERSION"})
    assert code == 0 and out["cniVersion"] == "1.0.0"


def test_missing_command_is_error_4():
    code, out = exec_plugin({})
    assert_error(code, out, 4)
    assert "CNI_COMMAND" in out["msg"]


def test_missing_variables_are_named():
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "ciliumctl-cni", "ipam": {"type": "host-local"}})
    code, out = exec_plugin({"CNI_COMMAND": "ADD", "CNI_IFNAME": "eth0"}, conf)
    assert_error(code, out, 4)
    assert "CNI_CONTAINERID" in out["msg"] and "CNI_NETNS" in out["msg"] and "CNI_IFNAME" not in out["msg"]


def test_bad_json_is_error_6():
    code, out = exec_plugin({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x",
                             "CNI_IFNAME": "eth0"}, "{not json")
    assert_error(code, out, 6)


def test_unsupported_version_is_error_1():
    conf = json.dumps({"cniVersion": "9.9.9", "name": "n", "type": "ciliumctl-cni", "ipam": {"type": "host-local"}})
    code, out = exec_plugin({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/proc/self/ns/net",
                             "CNI_IFNAME": "eth0"}, conf)
    assert_error(code, out, 1)


def test_an_ipam_section_without_type_is_error_7(tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "ciliumctl-cni", "agentSocket": str(tmp_path / "nobody.sock")}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0"}
    code, out = exec_plugin(env, json.dumps(dict(conf, ipam={"subnet": "10.1.0.0/24"})))
    assert_error(code, out, 7)
    # no "ipam" section at all: the agent's own IPAM, so the request goes to the agent (down here)
    code, out = exec_plugin(env, json.dumps(conf))
    assert_error(code, out, 11)


def test_bad_cni_args_is_error_4():
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "ciliumctl-cni", "ipam": {"type": "host-local"}})
    code, out = exec_plugin({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/proc/self/ns/net",
                             "CNI_IFNAME": "eth0", "CNI_ARGS": "novalue"}, conf)
    assert_error(code, out, 4)


def test_agent_not_running_is_try_again_later(tmp_path):
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "ciliumctl-cni",
                       "agentSocket": str(tmp_path / "nobody.sock"),
                       "ipam": {"type": "host-local", "subnet": "10.231.9.0/24", "dataDir": str(tmp_path / "ipam")}})
    code, out = exec_plugin({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net",
                             "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}, conf)
    assert_error(code, out, 11)
    assert "agent is not running" in out["msg"] and "nobody.sock" in out["msg"]
    assert not (tmp_path / "ipam").exists(), "no address may be allocated when the agent is down"
    code, out = exec_plugin({"CNI_COMMAND": "STATUS"}, conf)
    assert_error(code, out, 50)


def test_conflist_carries_agent_socket_and_leaves_ipam_to_the_agent():
    cl = cni_install.conflist("10.200.0.0/16", agent_socket="/x/agent.sock")
    plugin = cl["plugins"][0]
    assert cl["cniVersion"] == "1.0.0" and plugin["type"] == "ciliumctl-cni"
    assert plugin["agentSocket"] == "/x/agent.sock"
    assert "ipam" not in plugin              # as Cilium's conflist: the agent allocates
    # the cluster DaemonSet's: host-local over the pool's upper half
    r = cni_install.conflist("10.200.0.0/16", host_local=True)["plugins"][0]["ipam"]["ranges"][0][0]
    assert (r["subnet"], r["rangeStart"], r["rangeEnd"]) == ("10.200.0.0/16", "10.200.128.0", "10.200.255.254")


def test_install_and_uninstall(tmp_path):
    conf_dir, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    assert cni_install.install_cni(str(conf_dir), str(bin_dir), pool="10.9.0.0/24", dry_run=True)
    assert not conf_dir.exists()
    cni_install.install_cni(str(conf_dir), str(bin_dir), pool="10.9.0.0/24")
    cni_install.install_cni(str(conf_dir), str(bin_dir), pool="10.9.0.0/24")   # idempotent
    launcher = bin_dir / "ciliumctl-cni"
    assert os.access(launcher, os.X_OK)
    assert json.loads((conf_dir / "05-ciliumctl.conflist").read_text())["plugins"][0]["agentSocket"]
    proc = subprocess.run([str(launcher)], env={"CNI_COMMAND": "VERSION"}, input="", capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "1.0.0" in json.loads(proc.stdout)["supportedVersions"]
    (bin_dir / "other").write_text("x")
    done = cni_install.uninstall_cni(str(conf_dir), str(bin_dir))
    assert len(done) == 2
    assert sorted(os.listdir(bin_dir)) == ["other"] and os.listdir(conf_dir) == []
    assert cni_install.uninstall_cni(str(conf_dir), str(bin_dir)) == []


def test_uninstall_leaves_a_foreign_plugin(tmp_path):
    (tmp_path / "ciliumctl-cni").write_text("#!/bin/sh\necho someone else\n")
    assert cni_install.uninstall_cni(str(tmp_path), str(tmp_path)) == []
    assert (tmp_path / "ciliumctl-cni").exists()


# --- as root: real namespaces, veths, host-local ---------------------------------------------------------

def pod_addr(node, ns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("inet ")[1].split()[0]


def ping(ns: str, addr: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", addr],
                          capture_output=True).returncode == 0


@pytest.mark.root
def test_add_check_del_lifecycle(cni_node):
    ns1, ns2 = cni_node.new_pod_ns(1), cni_node.new_pod_ns(2)
    conf = cni_node.conf()
    results = {}
    for i, ns in ((1, ns1), (2, ns2)):
        code, out, err = cni_node.plugin("ADD", conf, f"ctr{i}", f"/run/netns/{ns}",
                                         args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=team;K8S_POD_NAME=pod{i}")
        assert code == 0, (out, err)
        results[i] = out
    r1 = results[1]
    assert r1["cniVersion"] == "1.0.0"
    assert r1["ips"][0]["address"].endswith("/32") and r1["ips"][0]["gateway"] == "169.254.1.1"
    assert r1["interfaces"][r1["ips"][0]["interface"]]["sandbox"] == f"/run/netns/{ns1}"
    assert "version" not in r1["ips"][0]
    ip1, ip2 = (results[i]["ips"][0]["address"].split("/")[0] for i in (1, 2))
    assert pod_addr(cni_node, ns1) == f"{ip1}/32"
    assert ip1 != ip2 and ip1.startswith("10.231.0.1")            # the upper half of the /24 pool
    routes = subprocess.run(["ip", "netns", "exec", ns1, "ip", "-4", "route"], capture_output=True, text=True).stdout
    assert "default via 169.254.1.1 dev eth0" in routes
    assert len(cni_node.host_links()) == 2 and len(cni_node.host_routes()) == 2
    hostif = r1["interfaces"][0]["name"]
    assert cni_node.node_exec("cat", f"/proc/sys/net/ipv4/conf/{hostif}/proxy_arp").stdout.strip() == "1"
    eps = {e["name"]: e for e in cni_node.endpoints()}
    assert eps["pod1"]["namespace"] == "team" and eps["pod1"]["ipv4"] == ip1
    assert eps["pod1"]["container_id"] == "ctr1" and eps["pod1"]["host_ifname"] == hostif
    assert ping(ns1, ip2) and ping(ns2, ip1)

    code, out, err = cni_node.plugin("CHECK", dict(conf, prevResult=r1), "ctr1", f"/run/netns/{ns1}")
    assert code == 0 and out is None, (out, err)
    # a broken attachment fails CHECK
    cni_node.node_exec("ip", "link", "set", hostif, "down")
    code, out, _ = cni_node.plugin("CHECK", dict(conf, prevResult=r1), "ctr1", f"/run/netns/{ns1}")
    assert code != 0 and "down" in out["msg"]
    cni_node.node_exec("ip", "link", "set", hostif, "up")

    # containerd's sequence: DEL with netns and prevResult, then DELs with neither
    code, out, err = cni_node.plugin("DEL", dict(conf, prevResult=r1), "ctr1", f"/run/netns/{ns1}")
    assert code == 0 and out is None, (out, err)
    for _ in range(2):
        code, out, err = cni_node.plugin("DEL", conf, "ctr1", "")
        assert code == 0, (out, err)
    assert len(cni_node.host_links()) == 1 and len(cni_node.host_routes()) == 1
    assert cni_node.leases() == [ip2]
    assert [e["name"] for e in cni_node.endpoints()] == ["pod2"]
    code, out, _ = cni_node.plugin("CHECK", dict(conf, prevResult=r1), "ctr1", f"/run/netns/{ns1}")
    assert code != 0 and out["code"] == 3

    code, out, err = cni_node.plugin("DEL", conf, "ctr2", f"/run/netns/{ns2}")
    assert code == 0, (out, err)
    assert cni_node.host_links() == [] and cni_node.host_routes() == [] and cni_node.leases() == []
    assert cni_node.endpoints() == []


@pytest.mark.root
def test_old_result_versions_carry_ip_version(cni_node):
    ns = cni_node.new_pod_ns(1)
    code, out, err = cni_node.plugin("ADD", cni_node.conf(cniVersion="0.4.0"), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    assert out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"


@pytest.mark.root
def test_del_of_unknown_container_succeeds(cni_node):
    code, out, err = cni_node.plugin("DEL", cni_node.conf(), "never-added", "")
    assert code == 0 and out is None, (out, err)


@pytest.mark.root
def test_existing_interface_name_is_an_error_and_releases_the_address(cni_node):
    ns = cni_node.new_pod_ns(1)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"],
                   check=True)
    code, out, _ = cni_node.plugin("ADD", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code != 0 and "eth0 already exists" in out["msg"]
    assert cni_node.leases() == [] and cni_node.host_links() == [] and cni_node.endpoints() == []


@pytest.mark.root
def test_agent_runs_the_ipam_plugin_as_the_plugins_delegate(cni_node):
    """CNI SPEC.md, "Delegated plugin execution procedure": the runtime's environment, the whole configuration,
    its stderr on ours; a failed ADD runs it again with DEL; one not in CNI_PATH is error 7 saying where."""
    calls = cni_node.tmp / "ipam-calls"
    (cni_node.bin_dir / "noisy-ipam").write_text(
        "#!/bin/sh\n"
        f'echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $CNI_ARGS" >> {calls}\n'
        'echo "noisy-ipam was here" >&2\n'
        'if [ "$CNI_CONTAINERID" = fail ] && [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion": "1.0.0", "code": 11, "msg": "pool exhausted"}\'; exit 1\nfi\n'
        f"exec {cni_node.bin_dir}/host-local\n")
    (cni_node.bin_dir / "noisy-ipam").chmod(0o755)
    conf = cni_node.conf(ipam=cni_node.host_local(type="noisy-ipam"))
    ns = cni_node.new_pod_ns(1)
    code, out, err = cni_node.plugin("ADD", conf, "ctr1", f"/run/netns/{ns}", args="IgnoreUnknown=1;K8S_POD_NAME=p")
    assert code == 0, (out, err)
    assert "noisy-ipam was here" in err
    assert calls.read_text().splitlines() == [f"ADD ctr1 eth0 /run/netns/{ns} IgnoreUnknown=1;K8S_POD_NAME=p"]
    assert cni_node.leases() == [out["ips"][0]["address"].split("/")[0]]
    code, out, err = cni_node.plugin("DEL", conf, "ctr1", f"/run/netns/{ns}")
    assert code == 0 and "noisy-ipam was here" in err, (out, err)
    assert cni_node.leases() == [] and cni_node.host_links() == []

    calls.unlink()
    ns2 = cni_node.new_pod_ns(2)
    code, out, err = cni_node.plugin("ADD", conf, "fail", f"/run/netns/{ns2}")
    assert code == 1 and out["code"] == 11 and "pool exhausted" in out["msg"], (out, err)
    assert [c.split()[0] for c in calls.read_text().splitlines()] == ["ADD", "DEL"]
    assert cni_node.host_links() == [] and cni_node.endpoints() == []

    conf["ipam"]["type"] = "no-such-ipam"
    code, out, _ = cni_node.plugin("ADD", conf, "ctr3", f"/run/netns/{ns2}")
    assert code == 1 and out["code"] == 7 and "no-such-ipam" in out["msg"] and "CNI_PATH" in out["msg"]
    assert cni_node.host_links() == [] and cni_node.endpoints() == []


@pytest.mark.root
def test_missing_netns_is_an_error_before_allocating(cni_node):
    code, out, _ = cni_node.plugin("ADD", cni_node.conf(), "ctr1", "/run/netns/does-not-exist-cctl")
    assert code != 0 and out["code"] == 4 and "does-not-exist" in out["msg"]
    assert cni_node.leases() == []


@pytest.mark.root
def test_concurrent_adds_get_distinct_addresses_and_ids(cni_node):
    n = 8
    nss = [cni_node.new_pod_ns(i) for i in range(n)]
    conf = cni_node.conf()

    def add(i):
        return cni_node.plugin("ADD", conf, f"ctr{i}", f"/run/netns/{nss[i]}",
                               args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i}")

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(add, range(n)))
    assert all(code == 0 for code, _, _ in outs), outs
    addrs = {out["ips"][0]["address"] for _, out, _ in outs}
    assert len(addrs) == n
    eps = cni_node.endpoints()
    assert len({e["id"] for e in eps}) == n and len(eps) == n
    assert len(cni_node.host_links()) == n
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        dels = list(pool.map(lambda i: cni_node.plugin("DEL", conf, f"ctr{i}", f"/run/netns/{nss[i]}"), range(n)))
    assert all(code == 0 for code, _, _ in dels), dels
    assert cni_node.host_links() == [] and cni_node.leases() == [] and cni_node.endpoints() == []


@pytest.mark.root
def test_agent_down_then_up(cni_node):
    ns = cni_node.new_pod_ns(1)
    cni_node.stop_server()
    code, out, _ = cni_node.plugin("ADD", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code != 0 and out["code"] == 11
    assert cni_node.leases() == []
    cni_node.start_server()
    code, out, err = cni_node.plugin("ADD", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    # DEL while the agent is down: try again later, and the address stays leased (the endpoint still has it)
    cni_node.stop_server()
    code, out, _ = cni_node.plugin("DEL", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code != 0 and out["code"] == 11
    assert len(cni_node.leases()) == 1 and len(cni_node.endpoints()) == 1
    cni_node.start_server()
    code, out, err = cni_node.plugin("DEL", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    assert cni_node.leases() == [] and cni_node.endpoints() == [] and cni_node.host_links() == []


@pytest.fixture
def small_node():
    """A node whose pool is a /29: its pods' half holds three addresses (.4, .5, .6; .7 is the broadcast)."""
    from support.cni_node import CniNode, require_stack

    require_stack()
    with CniNode(pool="10.231.7.0/29") as n:
        yield n


@pytest.mark.root
def test_the_agents_own_ipam_hands_out_frees_and_remembers_addresses(small_node):
    node = small_node
    nss = [node.new_pod_ns(i) for i in range(5)]
    got = []
    for i in range(3):
        code, out, err = node.plugin("ADD", node.conf(), f"ctr{i}", f"/run/netns/{nss[i]}")
        assert code == 0, (out, err)
        got.append(out["ips"][0]["address"])
    assert sorted(got) == ["10.231.7.4/32", "10.231.7.5/32", "10.231.7.6/32"]
    code, out, _ = node.plugin("ADD", node.conf(), "ctr3", f"/run/netns/{nss[3]}")
    assert code == 1 and out["code"] == 11 and "no free address" in out["msg"] and "10.231.7.0/29" in out["msg"]
    assert len(node.host_links()) == 3 and len(node.endpoints()) == 3
    # a restarted agent finds the addresses in use again (attachment records, endpoint registry)
    node.stop_server()
    node.start_server()
    code, out, _ = node.plugin("ADD", node.conf(), "ctr3", f"/run/netns/{nss[3]}")
    assert code == 1 and out["code"] == 11, out
    # DEL frees the address for the next pod
    code, out, err = node.plugin("DEL", node.conf(), "ctr1", f"/run/netns/{nss[1]}")
    assert code == 0, (out, err)
    code, out, err = node.plugin("ADD", node.conf(), "ctr3", f"/run/netns/{nss[3]}")
    assert code == 0 and out["ips"][0]["address"] == got[1], (out, err)
    code, out, err = node.plugin("CHECK", dict(node.conf(), prevResult=out), "ctr3", f"/run/netns/{nss[3]}")
    assert code == 0, (out, err)
    for i in (0, 2, 3):
        assert node.plugin("DEL", node.conf(), f"ctr{i}", "")[0] == 0
    assert node.leases() == [] and node.endpoints() == [] and node.host_links() == []


@pytest.mark.root
def test_del_releases_where_the_address_came_from_after_the_conflist_changed(cni_node):
    """An attachment made through host-local is released there by a DEL whose configuration no longer names it
    (the node's conflist switched to the agent's own IPAM meanwhile)."""
    ns = cni_node.new_pod_ns(1)
    code, out, err = cni_node.plugin("ADD", cni_node.conf(ipam=cni_node.host_local()), "old", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    lease = out["ips"][0]["address"].split("/")[0]
    assert (cni_node.ipam_dir / "ciliumctl" / lease).exists()
    code, out, err = cni_node.plugin("DEL", cni_node.conf(), "old", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    assert not (cni_node.ipam_dir / "ciliumctl" / lease).exists() and cni_node.leases() == []


@pytest.mark.root
def test_status_and_gc(cni_node):
    conf = dict(cni_node.conf(), cniVersion="1.1.0")
    code, out, err = cni_node.plugin("STATUS", conf)
    assert code == 0 and out is None, (out, err)
    nss = [cni_node.new_pod_ns(i) for i in range(2)]
    for i in range(2):
        code, out, err = cni_node.plugin("ADD", conf, f"ctr{i}", f"/run/netns/{nss[i]}")
        assert code == 0, (out, err)
    gc_conf = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "eth0"}]})
    code, out, err = cni_node.plugin("GC", gc_conf)
    assert code == 0, (out, err)
    assert len(cni_node.host_links()) == 1 and len(cni_node.endpoints()) == 1
    assert cni_node.endpoints()[0]["container_id"] == "ctr1" and len(cni_node.leases()) == 1


def test_install_step_writes_records_and_undoes(tmp_path, monkeypatch):
    from ciliumctl.node.install import Options

    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CILIUMCTL_NODE_NETNS", raising=False)
    monkeypatch.delenv("CILIUMCTL_CNI_CONF_DIR", raising=False)
    monkeypatch.delenv("CILIUMCTL_CNI_BIN_DIR", raising=False)
    step = cni_install.install_step()
    opts = Options(pool="10.77.0.0/16", extra={"cni_conf_dir": str(tmp_path / "net.d"),
                                               "cni_bin_dir": str(tmp_path / "bin")})
    assert "05-ciliumctl.conflist" in step.check(opts)
    step.run(opts)
    assert step.check(opts) is None                      # idempotent: nothing left to do
    plugin = json.loads((tmp_path / "net.d" / "05-ciliumctl.conflist").read_text())["plugins"][0]
    assert plugin["type"] == "ciliumctl-cni" and "ipam" not in plugin   # the agent allocates from the node pool
    assert "removed" in step.undo()
    assert not (tmp_path / "bin" / "ciliumctl-cni").exists()
    assert step.undo() is None


def test_install_step_leaves_the_machine_alone_on_a_sandbox_node(tmp_path, monkeypatch):
    from ciliumctl.node.install import Options

    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CILIUMCTL_NODE_NETNS", "cctl0000node")
    monkeypatch.delenv("CILIUMCTL_CNI_CONF_DIR", raising=False)
    monkeypatch.delenv("CILIUMCTL_CNI_BIN_DIR", raising=False)
    step = cni_install.install_step()
    assert step.check(Options()) is None
    assert "skipped" in step.run(Options())


@pytest.mark.root
@pytest.mark.parametrize("loss", ["missing", "torn"])
def test_del_cleans_up_after_a_lost_state_record(cni_node, loss):
    ns = cni_node.new_pod_ns(1)
    code, out, err = cni_node.plugin("ADD", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    for record in (cni_node.state / "cni").glob("*.json"):
        if loss == "missing":   # as if the agent died before writing it
            record.unlink()
        else:                   # written without fsync: what an OS crash may leave
            record.write_bytes(b"")
    code, out, err = cni_node.plugin("DEL", cni_node.conf(), "ctr1", "")
    assert code == 0, (out, err)
    assert cni_node.host_links() == [] and cni_node.host_routes() == [] and cni_node.leases() == []
    assert cni_node.endpoints() == []


@pytest.mark.root
def test_always_mode_pod_is_enforced_when_add_returns(cni_node):
    from ciliumctl.datapath import events as ev

    set_mode = ("from ciliumctl.node import settings as node_settings; s = node_settings.load_settings(); "
                "s.enforcement_mode = 'always'; node_settings.save_settings(s)")
    subprocess.run([sys.executable, "-c", set_mode], env=cni_node.env(), check=True, cwd=REPO)
    ns1, ns2 = cni_node.new_pod_ns(1), cni_node.new_pod_ns(2)
    ips = []
    for i, ns in ((1, ns1), (2, ns2)):
        code, out, err = cni_node.plugin("ADD", cni_node.conf(), f"ctr{i}", f"/run/netns/{ns}")
        assert code == 0, (out, err)
        ips.append(out["ips"][0]["address"].split("/")[0])
    eps = {e["ipv4"]: e for e in cni_node.endpoints()}
    assert not ping(ns1, ips[1]), "always mode with no policy: nothing may pass"
    with cni_node.ring() as ring:
        seen = ring.events()
    drops = [e for e in seen if e.type == ev.EVENT_DROP and e.saddr == ips[0] and e.daddr == ips[1]]
    assert drops and drops[0].subtype == ev.DROP_POLICY, seen
    assert {d.ep_id for d in drops} <= {eps[ips[0]]["id"], eps[ips[1]]["id"]}


@pytest.mark.parametrize("var,value", [("CNI_IFNAME", "a-very-long-ifname0"), ("CNI_IFNAME", "eth/0"),
                                       ("CNI_IFNAME", ".."), ("CNI_CONTAINERID", "-bad"),
                                       ("CNI_CONTAINERID", "bad id")])
def test_invalid_attachment_names_are_error_4(var, value):
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "ciliumctl-cni", "ipam": {"type": "host-local"}})
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0"}
    code, out = exec_plugin(dict(env, **{var: value}), conf)
    assert_error(code, out, 4)
    assert var in out["msg"]


@pytest.mark.root
def test_agent_does_not_leak_descriptors(cni_node):
    ns = cni_node.new_pod_ns(1)
    conf = cni_node.conf()

    def cycle():
        code, out, err = cni_node.plugin("ADD", conf, "ctr1", f"/run/netns/{ns}")
        assert code == 0, (out, err)
        code, out, err = cni_node.plugin("DEL", conf, "ctr1", f"/run/netns/{ns}")
        assert code == 0, (out, err)

    cycle()
    before = len(os.listdir(f"/proc/{cni_node.server.pid}/fd"))
    for _ in range(5):
        cycle()
    assert len(os.listdir(f"/proc/{cni_node.server.pid}/fd")) <= before + 2


@pytest.mark.root
def wait_for_tcx(node, hostif: str) -> None:
    """Until the server moved the interface's programs from clsact filters onto tcx links (after the ADD's
    answer: each link waits for an RCU grace period) and removed the qdisc."""
    import time

    deadline = time.monotonic() + 60
    while True:
        idx = node.node_exec("cat", f"/sys/class/net/{hostif}/ifindex").stdout.strip()
        links = node.bpffs / "links"
        pins = {p.name for p in links.iterdir()} if links.is_dir() else set()
        qdiscs = node.node_exec("tc", "qdisc", "show", "dev", hostif).stdout
        if {f"{idx}-ingress", f"{idx}-egress"} <= pins and "clsact" not in qdiscs:
            return
        assert time.monotonic() < deadline, (pins, qdiscs)
        time.sleep(0.05)


def test_add_polices_on_clsact_then_tcx_links_take_over(cni_node):
    """ADD answers with the programs on clsact filters (no grace period on the pod's start-up path); the server
    then moves them onto tcx links and removes the qdisc; DEL leaves no link pin."""
    set_mode = ("from ciliumctl.node import settings as node_settings; s = node_settings.load_settings(); "
                "s.enforcement_mode = 'always'; node_settings.save_settings(s)")
    subprocess.run([sys.executable, "-c", set_mode], env=cni_node.env(), check=True, cwd=REPO)
    nss = [cni_node.new_pod_ns(i) for i in (1, 2)]
    outs = []
    for i, ns in enumerate(nss):
        code, out, err = cni_node.plugin("ADD", cni_node.conf(), f"ctr{i}", f"/run/netns/{ns}")
        assert code == 0, (out, err)
        outs.append(out)
    ips = [o["ips"][0]["address"].split("/")[0] for o in outs]
    assert not ping(nss[0], ips[1])
    for out in outs:
        wait_for_tcx(cni_node, out["interfaces"][0]["name"])
    assert not ping(nss[0], ips[1]), "still enforced on tcx links"
    for i, ns in enumerate(nss):
        code, out, err = cni_node.plugin("DEL", cni_node.conf(), f"ctr{i}", f"/run/netns/{ns}")
        assert code == 0, (out, err)
    assert list((cni_node.bpffs / "links").iterdir()) == []


def test_del_after_the_datapath_was_removed(cni_node):
    import shutil

    ns = cni_node.new_pod_ns(1)
    code, out, err = cni_node.plugin("ADD", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    wait_for_tcx(cni_node, out["interfaces"][0]["name"])    # the agent is done with the pins
    pins = cni_node.bpffs
    shutil.rmtree(pins)                                   # what `ciliumctl uninstall` leaves
    code, out, err = cni_node.plugin("DEL", cni_node.conf(), "ctr1", f"/run/netns/{ns}")
    assert code == 0, (out, err)
    assert not pins.exists(), "DEL must not compile and pin a datapath again"
    assert cni_node.endpoints() == [] and cni_node.leases() == [] and cni_node.host_links() == []
