"""`agent stop` and `uninstall` say the agent stopped only once it is gone (node.agent.stop_background): a real
process that ignores SIGTERM is killed and waited for; one that outlives SIGKILL too is reported, not "stopped"."""

import os
import signal
import subprocess

import pytest

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.node import agent


@pytest.fixture
def fake_agent(node_env):
    """A process whose command line reads as the agent's (`... agent run`), ignoring SIGTERM, in the pid file."""
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", "agent", "run"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"   # SIGTERM is ignored from here on
    agent.pid_file().parent.mkdir(parents=True, exist_ok=True)
    agent.pid_file().write_text(str(proc.pid))
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_an_agent_ignoring_sigterm_is_killed_and_gone_before_stop_returns(fake_agent):
    assert agent.running_pid() == fake_agent.pid
    assert agent.stop_background(timeout=0.3) == fake_agent.pid
    assert fake_agent.poll() == -signal.SIGKILL and not agent.pid_file().exists()


def test_an_agent_that_outlives_sigkill_is_reported_not_stopped(fake_agent, monkeypatch):
    # A process stuck in the kernel cannot be made on demand: signals that do nothing stand in for it.
    with monkeypatch.context() as patched, pytest.raises(
            EnvironmentProblem, match=rf"the agent \(pid {fake_agent.pid}\) still runs 0.5s after SIGTERM and SIGKILL"):
        patched.setattr(agent.os, "kill", lambda pid, sig: None)
        agent.stop_background(timeout=0.3, kill_wait=0.2)
    assert fake_agent.poll() is None and agent.pid_file().exists() and os.path.exists(f"/proc/{fake_agent.pid}")
