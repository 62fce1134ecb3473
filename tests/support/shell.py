"""Small helpers every suite needs: run a command, wait for a condition, write a file."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """A command with its output captured; with check, a non-zero exit fails the test with its stderr."""
    res = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {res.returncode}: {res.stderr.strip()}")
    return res


def stop(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """End a process we started: SIGTERM, and SIGKILL when it has not exited within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """True as soon as `predicate()` holds, else its value after `timeout` seconds (a last look)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
