"""Small helpers for node state files: atomic JSON writes (tmp + fsync + rename) and advisory file locks.

Every writer of files under paths.state_dir() goes through these, so a reader never sees half a file and two
ciliumctl processes never interleave a read-modify-write."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ciliumctl.base.errors import EnvironmentProblem


def write_json(path: Path, value: object, compact: bool = False, durable: bool = True) -> None:
    """Write JSON so that readers see either the old or the new content, never a mix. compact: one line, by the C
    encoder (json.dump with indent runs in Python: seconds for a file of 100,000 entries). durable=False skips the
    fsync before the rename (~1 ms, more on a busy disk): the content survives the process, but an OS crash may
    leave the old, the new or an empty file, so only for records whose owner recovers from their loss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            if compact:
                fh.write(json.dumps(value, separators=(",", ":")))
            else:
                json.dump(value, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class CorruptStateFile(EnvironmentProblem):
    """A state file that is there but is not what ciliumctl wrote (truncated, not JSON, wrong shape). Owners of a
    file catch it to say what removing the file would mean for their state."""

    def __init__(self, path: Path, reason: str, remedy: str = "remove it or run `ciliumctl uninstall` to start "
                                                                "afresh"):
        super().__init__(f"{path}: corrupt state file ({reason}); {remedy}")
        self.path, self.reason = path, reason


def permission_problem(path: Path, err: OSError) -> EnvironmentProblem:
    """Node state is root's: a permission error says so, and never advises removing anything."""
    return EnvironmentProblem(f"{path}: {err.strerror or 'permission denied'}; {needs_root(path)}")


def needs_root(path: Path) -> str:
    """Advice for a permission error on node state, a pin or a socket: never "remove it", which would destroy
    state that is only not ours to read. Names the group that would do too when `path` grants its group access."""
    import grp

    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and st.st_gid != 0 and st.st_mode & 0o060:
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        return f"this needs root (or membership of group {group}); run it with sudo"
    return "this needs root; run it with sudo"


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON value of `path`, `default` when it does not exist. CorruptStateFile when it is not JSON,
    EnvironmentProblem (needs root) when it may not be read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return default
    except PermissionError as err:
        raise permission_problem(path, err) from None
    except OSError as err:
        raise CorruptStateFile(path, f"unreadable: {err.strerror or err}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as err:     # also UnicodeDecodeError
        reason = "empty" if not raw.strip() else f"not JSON: {err}"
        raise CorruptStateFile(path, reason) from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the duration of the block (blocks until free)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError as err:
        raise permission_problem(path, err) from None
    except OSError as err:
        raise EnvironmentProblem(f"cannot open lock file {path}: {err.strerror} (run as root, or set "
                                 "CILIUMCTL_STATE_DIR to a writable directory)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """The lock of locked() if it is free right now: yields True while holding it, False when another process
    holds it (or it cannot be opened). Tells a reader whether a half-done change still has a live owner."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
