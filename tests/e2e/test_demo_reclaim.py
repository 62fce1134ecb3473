"""A demo killed before its cleanup leaves a sandbox; the next demo removes it, but never a kept or live one."""

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from ciliumctl.node import demo

pytestmark = pytest.mark.root


def _sandbox(tmp: Path, owner_pid: int, kept: bool = False) -> tuple[str, Path]:
    name = f"cctl-demo-{secrets.token_hex(2)}"
    workdir = tmp / f"{name}-x1"
    workdir.mkdir()
    (workdir / demo.OWNER_FILE).write_text(f"{owner_pid}\n")
    if kept:
        (workdir / demo.KEPT_FILE).touch()
    for ns in (name, f"{name}-ep1"):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    return name, workdir


def _netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def test_reclaims_only_sandboxes_whose_owner_died(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    made = []
    try:
        abandoned, abandoned_dir = _sandbox(tmp_path, dead.pid)
        live, live_dir = _sandbox(tmp_path, os.getpid())
        kept, kept_dir = _sandbox(tmp_path, dead.pid, kept=True)
        made = [abandoned, live, kept]
        assert demo.reclaim_abandoned(tmp_path) == [abandoned]
        assert not _netns_exists(abandoned) and not _netns_exists(f"{abandoned}-ep1") and not abandoned_dir.exists()
        assert _netns_exists(live) and live_dir.exists()
        assert _netns_exists(kept) and kept_dir.exists()
    finally:
        for name in made:
            for ns in (name, f"{name}-ep1"):
                subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
