"""What the datapath needs from the machine, checked with one clear line each: root, bpf(2), BTF, tc clsact,
bpffs, kernel headers, BCC."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
from pathlib import Path

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import bpfsys

BPF_FS_MAGIC = 0xCAFE4A11


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]


def fs_type(path: Path) -> int | None:
    buf = _StatFs()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None
    return buf.f_type & 0xFFFFFFFF


def check_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the datapath needs root (BPF maps and programs, tc, network namespaces): "
                                 "run ciliumctl as root")


def check_bpf_syscall() -> None:
    # BPF_MAP_CREATE of a one-entry array proves bpf(2) works and is permitted
    attr = (ctypes.c_uint32 * 8)(2, 4, 4, 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(bpfsys._SYS_BPF, 0, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise EnvironmentProblem("the kernel has no bpf() system call; use a kernel built with CONFIG_BPF_SYSCALL")
        raise EnvironmentProblem(f"the bpf() system call failed ({os.strerror(err)}): the kernel needs "
                                 "CONFIG_BPF_SYSCALL and the caller CAP_BPF/CAP_SYS_ADMIN")
    os.close(fd)


def on_bpffs(path: Path) -> bool:
    """Whether `path` (or, while it does not exist, its nearest existing parent) is on a bpf filesystem."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return fs_type(existing) == BPF_FS_MAGIC


def check_btf() -> None:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise EnvironmentProblem("no kernel BTF at /sys/kernel/btf/vmlinux; use a kernel built with "
                                 "CONFIG_DEBUG_INFO_BTF=y")


def check_clsact() -> None:
    """Add a clsact qdisc to the loopback of a throwaway network namespace (never the machine's interfaces)."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        raise EnvironmentProblem("`unshare` and `tc` are needed to probe tc clsact; install util-linux and iproute2")
    proc = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "clsact"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"tc clsact is not available ({proc.stderr.strip() or 'failed'}); load the "
                                 "sch_ingress module (`modprobe sch_ingress`) or use a kernel with "
                                 "CONFIG_NET_SCH_INGRESS")


def ensure_bpffs(pin_dir: Path) -> None:
    """The pin directory must be on a bpf filesystem; mount one at its parent when there is none."""
    parent = pin_dir.parent
    if on_bpffs(parent):      # inside a bpf filesystem already: directories will do
        pin_dir.mkdir(parents=True, exist_ok=True)
        return
    if fs_type(parent) != BPF_FS_MAGIC:
        parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["mount", "-t", "bpf", "bpf", str(parent)], capture_output=True, text=True)
        if res.returncode != 0 or fs_type(parent) != BPF_FS_MAGIC:
            raise EnvironmentProblem(f"no bpf filesystem at {parent} and mounting one failed "
                                     f"({res.stderr.strip() or 'unknown error'}): "
                                     f"run `mount -t bpf bpf {parent}` as root")
    pin_dir.mkdir(exist_ok=True)


def check_headers() -> None:
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise EnvironmentProblem(f"kernel headers for {os.uname().release} not found at {build}: "
                                 "run scripts/setup.sh (installs linux-headers-amd64 and links them there)")


def import_bcc():
    try:
        from bcc import BPF  # noqa: PLC0415
    except ImportError:
        raise EnvironmentProblem("BCC's Python bindings are missing: apt-get install python3-bpfcc "
                                 "(scripts/setup.sh) and use a venv made with --system-site-packages") from None
    return BPF
