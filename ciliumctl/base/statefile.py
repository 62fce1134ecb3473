"""Small helpers for node state files: atomic JSON writes (tmp + fsync + rename) and advisory file locks.

Every writer of files under paths.state_dir() goes through these, so a reader never sees half a file and two
ciliumctl processes never interleave a read-modify-write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

from ciliumctl.base.errors import EnvironmentProblem


def write_json(path: Path, value) -> None:
    """Write JSON so that readers see either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(value, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as err:
        raise EnvironmentProblem(f"{path}: unreadable state file ({err}); remove it or run "
                                 "`ciliumctl uninstall` to start afresh") from None


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive advisory lock held for the duration of the block (blocks until free)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise EnvironmentProblem(f"cannot open lock file {path}: {err.strerror} (run as root, or set "
                                 "CILIUMCTL_STATE_DIR to a writable directory)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
