"""Who may do what on a node (issue 17, items 7 and 8): an unprivileged user is told that a command needs root,
exit 2, and is never advised to remove state or to start an agent that runs; `agent start` is idempotent, also
when several run at once."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

CLI = str(Path(sys.executable).parent / "ciliumctl")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-web
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - {}
"""


@pytest.fixture
def open_node(node):
    """The sandbox node with its state and run directories where an unprivileged user can reach them (so that
    the files' and the socket's own modes decide, as on a real node), its agent running."""
    root = Path(tempfile.mkdtemp(prefix=f"{node.name}-"))
    root.chmod(0o755)
    env = dict(node.env, CILIUMCTL_STATE_DIR=str(root / "state"), CILIUMCTL_RUN_DIR=str(root / "run"))
    try:
        yield node, env
    finally:
        subprocess.run([CLI, "uninstall"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def run(env, *args, user=(), input=None):
    return subprocess.run([*user, CLI, *args], env=env, capture_output=True, text=True, timeout=60, input=input)


def test_unprivileged_users_are_told_it_needs_root(open_node):
    node, env = open_node
    probe = run(env, "version", user=NOBODY)
    if probe.returncode != 0:
        pytest.skip(f"the checkout/venv is not usable by an unprivileged user here: {probe.stderr.strip()[:200]}")
    assert run(env, "install", "--no-agent").returncode == 0
    assert run(env, "endpoint", "add", "web", "-l", "app=web").returncode == 0
    assert run(env, "policy", "apply", "-f", "-", input=POLICY).returncode == 0
    started = run(env, "agent", "start", "--metrics-listen", "")
    assert started.returncode == 0, started.stderr
    assert run(env, "agent", "status").returncode == 0

    for args in (["endpoint", "list"], ["endpoint", "get", "web"], ["status"], ["policy", "get"],
                 ["policy", "trace", "--live", "-s", "app=web", "-d", "app=web"],
                 ["observe", "--last", "1"], ["agent", "status"], ["agent", "stop"], ["endpoint", "add", "x"]):
        res = run(env, *args, user=NOBODY)
        err = res.stderr.strip()
        assert res.returncode == 2, (args, res.returncode, err)
        assert "needs root" in err and len(err.splitlines()) == 1, (args, err)
        for wrong in ("remove it", "uninstall", "start the agent", "DEBUG", "Traceback"):
            assert wrong not in err, (args, err)
    assert run(env, "agent", "status").returncode == 0        # nobody's stop stopped nothing
    assert run(env, "endpoint", "get", "web").returncode == 0


def test_parallel_agent_starts_all_succeed_with_one_agent(open_node):
    node, env = open_node
    procs = [subprocess.Popen([CLI, "agent", "start", "--metrics-listen", ""], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e for _, e in outs]
    pids = {re.search(r"pid (\d+)", out).group(1) for out, _ in outs}
    assert len(pids) == 1, outs
    status = run(env, "agent", "status", "-o", "json")
    assert status.returncode == 0 and f'"pid": {pids.pop()}' in status.stdout
    assert run(env, "agent", "stop").returncode == 0
    assert run(env, "agent", "status").returncode == 1
    assert not any(p.pid for p in procs if p.poll() is None)
    assert os.path.exists(env["CILIUMCTL_RUN_DIR"])
