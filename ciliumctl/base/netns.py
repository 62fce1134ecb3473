"""The network namespace that plays "the node".

Normally the node is the root network namespace. With CILIUMCTL_NODE_NETNS set (a name under /run/netns or a
path), the process moves into that namespace before touching links, routes or tc, so that a sandbox node (tests,
a second simulated node) keeps everything it creates away from the machine's own interfaces and routes.
Only the network namespace is changed: bpffs and /run stay those of the caller.
"""

import contextlib
import ctypes
import os
from collections.abc import Iterator

from ciliumctl.base.errors import EnvironmentProblem

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_entered: str | None = None


def node_netns() -> str | None:
    value = os.environ.get("CILIUMCTL_NODE_NETNS", "").strip()
    if not value:
        return None
    return value if "/" in value else f"/run/netns/{value}"


def setns_fd(fd: int, what: str = "setns") -> None:
    """Move the calling thread into the network namespace open at `fd`; OSError on failure."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)


def setns_path(path: str) -> None:
    """Move the calling thread into the network namespace at `path`; OSError on failure."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd, path)
    finally:
        os.close(fd)


def enter(path: str, what: str, if_missing: str) -> None:
    """Move the calling thread into the namespace at `path`, or one clear line: `what` names it, `if_missing` says
    what to do when it is gone. Also runs as a subprocess's preexec_fn (after fork): imports nothing."""
    try:
        setns_path(path)
    except FileNotFoundError as err:
        raise EnvironmentProblem(f"{what} {path}: {err.strerror}; {if_missing}") from None
    except OSError as err:
        raise EnvironmentProblem(f"cannot enter {what} {path}: {err.strerror} (needs root)") from None


@contextlib.contextmanager
def in_netns(fd: int) -> Iterator[None]:
    """Run the block in the namespace open at `fd` (this thread only), then return to the thread's own."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_fd(fd)
        try:
            yield
        finally:
            setns_fd(own)
    finally:
        os.close(own)


def enter_node_netns() -> None:
    """Idempotent. Threads started before this call stay in the old namespace: call it early."""
    global _entered
    path = node_netns()
    if path is None or _entered == path:
        return
    enter(path, "node network namespace", "create it or unset CILIUMCTL_NODE_NETNS")
    _entered = path
