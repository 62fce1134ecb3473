"""Where ciliumctl keeps its state on a node. Overridable by environment for tests (each test run its own)."""

import os
from pathlib import Path


def _env_path(var: str, default: str) -> Path:
    return Path(os.environ.get(var, default))


def state_dir() -> Path:
    """Persistent node state: policy store, endpoint registry, identities."""
    return _env_path("CILIUMCTL_STATE_DIR", "/var/lib/ciliumctl")


def run_dir() -> Path:
    """Runtime files: agent pid, sockets, logs."""
    return _env_path("CILIUMCTL_RUN_DIR", "/var/run/ciliumctl")


def bpffs_dir() -> Path:
    """Pinned programs and maps, so enforcement survives the agent."""
    return _env_path("CILIUMCTL_BPFFS_DIR", "/sys/fs/bpf/ciliumctl")


def bpf_src_dir() -> Path:
    """The C sources of the datapath (bpf/ at the top of the source tree)."""
    package = Path(__file__).resolve().parents[1]   # ciliumctl/
    for candidate in (package.parent / "bpf", package / "bpf"):
        if candidate.is_dir():
            return candidate
    return package.parent / "bpf"


def hubble_socket() -> Path:
    return run_dir() / "hubble.sock"


def agent_socket() -> Path:
    return run_dir() / "agent.sock"
