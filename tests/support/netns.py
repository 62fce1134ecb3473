"""Network namespaces the tests create: every name starts with a unique `cctl<rand4>` prefix, so a test touches
only what it made, and removing by prefix also finds what the code under test created inside it."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ciliumctl.base import netns

from .shell import sh


def require_root() -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (netns, veth, BPF)")


def unique_prefix() -> str:
    return f"cctl{secrets.token_hex(2)}"


@contextlib.contextmanager
def in_netns(name: str):
    """Run the block in netns `name` (this thread only); sockets made here stay in that namespace."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with netns.in_netns(fd):
            yield
    finally:
        os.close(fd)


def named(prefix: str) -> list[str]:
    """The namespaces whose name starts with `prefix`."""
    return sorted(p.name for p in Path("/run/netns").glob(f"{prefix}*"))


def delete(*names: str) -> None:
    """Delete these namespaces, quietly skipping those already gone."""
    for name in names:
        sh("ip", "netns", "delete", name, check=False)
