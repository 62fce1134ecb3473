"""`ciliumctl ui` as a user starts it: the real executable on 127.0.0.1 (any free port), its URL read from the
line it prints; stopped with SIGTERM when the block ends, also on failure."""

from __future__ import annotations

import re
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .cli import CLI
from .shell import stop


@contextmanager
def ui_process(env: dict[str, str], *args: str, stderr: Path | None = None):
    """Yields (process, url): the URL it printed, with its token. Its stderr goes to `stderr` when given."""
    # a file, not a pipe: gRPC's log lines never block the server
    err = stderr.open("w+") if stderr else tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([CLI, "ui", "--listen", "127.0.0.1:0", *args], env=env, stdout=subprocess.PIPE,
                            stderr=err, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
        if not m:
            stop(proc)
            err.seek(0)
            raise AssertionError(f"ciliumctl ui did not start: {line}{err.read()}")
        yield proc, m.group(1)
    finally:
        stop(proc)
        err.close()


def at(url: str, path: str) -> str:
    """`path` (e.g. api/map, api/flows?edge=...) on the server of `url`, with its token."""
    base, _, token = url.partition("?")
    return f"{base}{path}{'&' if '?' in path else '?'}{token}"
