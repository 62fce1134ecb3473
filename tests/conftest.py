"""Shared test configuration: root-only tests skip cleanly elsewhere; reference tools (the real hubble CLI, ...)
come from ../shared/tools, unpacked into .tools/bin."""

import fcntl
import functools
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS_BIN = REPO / ".tools" / "bin"
UNPACK = REPO.parent / "shared" / "tools" / "unpack.sh"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (BPF, netns, veth)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@functools.cache
def _unpacked(name: str) -> Path | None:
    """Unpack ../shared/tools into .tools/bin (idempotent, checksummed; one unpacker at a time, as several test
    runs share the directory). The tool's path, or None when neither it nor the shared copy exists."""
    if UNPACK.exists():
        TOOLS_BIN.mkdir(parents=True, exist_ok=True)
        with open(TOOLS_BIN.parent / ".unpack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run([str(UNPACK), str(TOOLS_BIN)], check=True, capture_output=True, timeout=600)
    path = TOOLS_BIN / name
    return path if os.access(path, os.X_OK) else None


def reference_tool(name: str) -> Path:
    """A reference tool of ../shared/tools. Missing, the test skips; under CI=true it fails: CI tests against it."""
    path = _unpacked(name)
    if path is None:
        why = f"reference tool {name} missing: no {TOOLS_BIN / name} and no {UNPACK}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="session")
def hubble() -> Path:
    """The real hubble CLI 1.19 (../shared/tools/hubble.xz)."""
    return reference_tool("hubble")
