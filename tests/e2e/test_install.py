"""`ciliumctl install|uninstall|status` on a sandbox node: idempotent install, nothing left after uninstall."""

import json
import os

import pytest
from support.cli import CLI
from support.shell import sh

pytestmark = pytest.mark.root


def test_install_idempotent_status_and_uninstall_leaves_nothing(node):
    plan = node.cli("install", "--dry-run").stdout
    assert "datapath: would" in plan and "dry run:" in plan
    assert not node.bpffs.exists()                                  # dry run changed nothing

    first = node.cli("install", "--enforcement-mode", "default").stdout
    assert "datapath: done" in first and "ciliumctl is installed" in first
    pins = sorted(os.listdir(node.bpffs))
    assert {"events", "from_container", "to_container", "policy", "ipcache"} <= set(pins)
    second = node.cli("install").stdout
    assert "done" not in second.replace("installed", "") and "datapath: ok" in second
    assert sorted(os.listdir(node.bpffs)) == pins
    assert "already installed" in node.cli("install", "--dry-run").stdout

    node.cli("endpoint", "add", "a", "-l", "app=a")
    node.cli("endpoint", "add", "b", "-l", "app=b")
    node.serve("a", "10.200.0.1", 8080)
    st = json.loads(node.cli("status", "-o", "json").stdout)
    assert st["installed"] and st["endpoints"] == {"total": 2, "ready": 2}
    dp = st["datapath"]
    assert {p["name"] for p in dp["programs"]} == {"from_container", "to_container", "from_netdev", "to_netdev"}
    assert dp["events_lost"] == 0 and dp["attached_endpoints"] == 2
    assert st["policy_revision"] >= 3
    text = node.cli("status").stdout          # exit 0: installed, nothing to report
    assert "Enforcement mode:" in text and "Endpoints:" in text and "2/2 ready" in text and "Events lost:" in text
    values = [line.split(":", 1)[1].strip() for line in text.splitlines()]
    assert not {"True", "False", "None"} & set(values), text             # no Python in what a person reads
    keys = [line.split(":", 1)[0] for line in text.splitlines()]
    assert len(keys) == len(set(keys)) and "Pin dir" not in keys, text    # no row twice (Pins is the pin dir)

    assert "would" in node.cli("uninstall", "--dry-run").stdout and node.bpffs.exists()
    out = node.cli("uninstall").stdout
    assert "uninstalled" in out
    assert node.leftovers() == {"netns": [], "veths": [], "pins": False, "state": False}
    assert node.ns("tc", "qdisc", "show").stdout.count("clsact") == 0
    assert "10.200.0" not in node.ns("ip", "route").stdout
    assert "uninstalled" in node.cli("uninstall").stdout              # idempotent too


def test_cluster_mode_seam_and_bad_flags(node, tmp_path):
    bad = node.cli("install", "--enforcement-mode", "sometimes", check=False)
    assert bad.returncode == 2 and "default, always or never" in bad.stderr
    bad = node.cli("install", "--pool", "fd00::/64", check=False)
    assert bad.returncode == 2 and "IPv4" in bad.stderr
    assert not node.bpffs.exists()


def test_needs_root_message(node):
    res = sh("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", CLI, "endpoint", "add", "x",
             check=False, env=node.env)
    if res.returncode in (126, 127) or "failed to execute" in res.stderr or "Permission denied" in res.stderr:
        pytest.skip("the checkout/venv is not readable by an unprivileged user here")
    assert res.returncode == 2 and "needs root" in res.stderr and "Traceback" not in res.stderr
    res = sh("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", CLI, "demo", check=False, env=node.env)
    assert res.returncode == 2 and "demo needs root" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_install_upgrades_an_outdated_datapath_in_place(node):
    from ciliumctl.datapath import bpfsys, maps

    node.cli("install")
    node.cli("endpoint", "add", "a", "-l", "app=a")
    node.cli("endpoint", "add", "b", "-l", "app=b")
    node.serve("a", "10.200.0.1", 8080)
    # Pretend the pinned programs were built from other sources (the state map records the sources' CRC).
    state = bpfsys.Map.from_pin(node.bpffs / "state")
    key = (0).to_bytes(4, "little")
    fields = list(maps.DP_STATE.unpack(state.lookup(key)))
    fields[1] ^= 0xFFFF
    state.update(key, maps.DP_STATE.pack(*fields))
    state.close()
    assert "datapath: would upgrade" in node.cli("install", "--dry-run").stdout
    assert "datapath: done upgraded" in node.cli("install").stdout
    assert json.loads(node.cli("status", "-o", "json").stdout)["datapath"]["outdated"] is False
    assert node.connect("b", "10.200.0.1", 8080)
    assert "datapath: ok" in node.cli("install").stdout
