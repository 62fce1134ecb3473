"""Run the real `ciliumctl` executable the way a user does, in an environment that points only where the test
says (no KUBECONFIG or CILIUMCTL_* of the caller leaks in) and without colours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "ciliumctl")


def cli_env(**settings: str) -> dict[str, str]:
    """This process's environment without KUBECONFIG and CILIUMCTL_*, NO_COLOR=1, then `settings`."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("CILIUMCTL_")}
    env["NO_COLOR"] = "1"
    env.update(settings)
    return env


def run_cli(*args: str, env: dict[str, str], check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
    """`ciliumctl ARGS`; with check, a non-zero exit fails the test with the output. Never a traceback."""
    res = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise AssertionError(f"ciliumctl {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
    assert "Traceback" not in res.stderr, res.stderr
    return res


def require_cli() -> None:
    """Skip when the executable is not installed (make setup installs it)."""
    import pytest

    if not Path(CLI).exists():
        pytest.skip(f"{CLI} missing (run make setup)")
