"""`ciliumctl install` / `uninstall` on one node (no cluster): an ordered list of steps.

Each step checks first and acts only when needed, so install is idempotent; `plan` (dry run) only checks. More
steps (the agent, the CNI plugin) are appended to STEPS by their owners: `STEPS.append(Step(...))` or
`register_step(...)`; uninstall runs every step's `undo` in reverse order.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ciliumctl import paths
from ciliumctl.errors import EnvironmentProblem

BPF_FS_MAGIC = 0xCAFE4A11


@dataclass
class Options:
    enforcement_mode: str | None = None   # None: keep the current setting
    audit: bool | None = None
    pool: str | None = None
    extra: dict = field(default_factory=dict)   # options of appended steps (agent, CNI)
    only: tuple[str, ...] | None = None          # run only these steps (e.g. CORE_STEPS for a sandbox node)


@dataclass
class Outcome:
    step: str
    status: str          # ok | done | would | skipped | removed
    detail: str = ""


@dataclass
class Step:
    name: str
    check: Callable[[Options], str | None]            # None = nothing to do; else what `run` would do
    run: Callable[[Options], str] | None = None       # does it; returns a short detail
    undo: Callable[[], str | None] | None = None      # for uninstall; returns a detail or None (nothing to do)


# ------------------------------------------------------------------------------------------------ checks

def _check_root(_o: Options) -> str | None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("install needs root (eBPF, tc, network namespaces); run it with sudo")
    return None


def _check_bpf_syscall(_o: Options) -> str | None:
    """Create and close a one-entry array map: proves bpf(2) exists and we may use it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    nr = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
    attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)      # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    fd = libc.syscall(nr, 0, ctypes.byref(attr), ctypes.sizeof(attr))   # BPF_MAP_CREATE
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise EnvironmentProblem("the kernel has no bpf() system call; use a kernel built with CONFIG_BPF_SYSCALL")
        raise EnvironmentProblem(f"bpf() refused: {os.strerror(err)}; run as root (CAP_BPF + CAP_NET_ADMIN) and "
                                 "check kernel.unprivileged_bpf_disabled / lockdown")
    os.close(fd)
    return None


def _check_btf(_o: Options) -> str | None:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise EnvironmentProblem("no kernel BTF at /sys/kernel/btf/vmlinux; use a kernel built with "
                                 "CONFIG_DEBUG_INFO_BTF=y")
    return None


def _check_clsact(_o: Options) -> str | None:
    """Add a clsact qdisc to the loopback of a throwaway network namespace (never the machine's interfaces)."""
    if shutil.which("unshare") is None or shutil.which("tc") is None:
        raise EnvironmentProblem("`unshare` and `tc` are needed to probe tc clsact; install util-linux and iproute2")
    proc = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "clsact"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"tc clsact is not available ({proc.stderr.strip() or 'failed'}); load the "
                                 "sch_ingress module (`modprobe sch_ingress`) or use a kernel with CONFIG_NET_SCH_INGRESS")
    return None


def kernel_headers_dir() -> Path:
    return Path("/lib/modules") / os.uname().release / "build"


def _check_headers(_o: Options) -> str | None:
    build = kernel_headers_dir()
    if not (build / "include").is_dir() and not (build / "Makefile").exists():
        raise EnvironmentProblem(
            f"no kernel headers at {build}: BCC compiles the datapath against them; run `make setup` (installs "
            "linux-headers-amd64 and links it there) or `apt-get install linux-headers-$(uname -r)`")
    return None


def _on_bpffs(path: Path) -> bool:
    p = path
    while not p.exists():
        p = p.parent
    try:
        out = subprocess.run(["stat", "-f", "-c", "%t", str(p)], capture_output=True, text=True)
        return int(out.stdout.strip() or "0", 16) == BPF_FS_MAGIC
    except (OSError, ValueError):
        return False


def _bpffs_mountpoint() -> Path:
    pins = paths.bpffs_dir()
    default = Path("/sys/fs/bpf")
    return default if pins == default or default in pins.parents else pins


def _check_bpffs(_o: Options) -> str | None:
    if _on_bpffs(paths.bpffs_dir()):
        return None
    return f"mount bpffs at {_bpffs_mountpoint()}"


def ensure_bpffs() -> bool:
    """Mount bpffs for the pins when missing (a mount, not a network change). True when mounted now."""
    if _on_bpffs(paths.bpffs_dir()):
        return False
    where = _bpffs_mountpoint()
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "bpf", "bpf", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"cannot mount bpffs at {where}: {proc.stderr.strip() or 'failed'} (needs root)")
    return True


def _run_bpffs(_o: Options) -> str:
    ensure_bpffs()
    return f"mounted at {_bpffs_mountpoint()}"


def _check_forwarding(_o: Options) -> str | None:
    from ciliumctl import nodens

    nodens.enter_node_netns()
    from pyroute2 import IPRoute

    with open("/proc/sys/net/ipv4/ip_forward") as fh:
        forwarding = fh.read().strip() == "1"
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")
        lo_up = bool(lo) and bool(ipr.get_links(lo[0])[0]["flags"] & 1)
    return None if forwarding and lo_up else "enable IPv4 forwarding (and loopback) in the node network namespace"


def _run_forwarding(_o: Options) -> str:
    from ciliumctl.endpoints import plumbing

    plumbing.enable_forwarding()
    return "net.ipv4.ip_forward=1, lo up"


def _pins_present() -> bool:
    """Every program and map pinned (a half-made install is not installed: open() starts it over)."""
    from ciliumctl.datapath import maps

    d = paths.bpffs_dir()
    return all((d / name).exists() for name in maps.MAPS + maps.PROGRAMS)


def _check_datapath(_o: Options) -> str | None:
    if not _pins_present():
        return f"compile, load and pin the datapath under {paths.bpffs_dir()}"
    from ciliumctl import node

    dp = node.open_datapath()
    try:
        if getattr(dp, "outdated", False):
            return "upgrade the pinned datapath (built from other sources) without a gap in enforcement"
    finally:
        dp.close()
    return None


def _run_datapath(_o: Options) -> str:
    from ciliumctl import node

    if not _pins_present():
        node.open_datapath().close()
        return f"pinned under {paths.bpffs_dir()}"
    with node.locked():
        node.reconcile(upgrade=True)
    return f"upgraded under {paths.bpffs_dir()}"


def _undo_datapath() -> str | None:
    try:
        from ciliumctl.datapath import loader
    except ImportError:
        loader = None
    detail = None
    if loader is not None:
        fn = getattr(loader, "uninstall_pins", None) or getattr(getattr(loader, "Datapath", None),
                                                               "uninstall_pins", None)
        if fn is not None:
            fn()
            detail = f"programs, maps and pins under {paths.bpffs_dir()}"
    d = paths.bpffs_dir()
    if d.exists() and _on_bpffs(d):
        shutil.rmtree(d, ignore_errors=True)  # pins: unlinking drops the kernel objects with their last user
        detail = detail or f"pins under {d}"
    return detail


def _check_settings(o: Options) -> str | None:
    from ciliumctl import node

    s = node.load_settings()
    want = _wanted_settings(s, o)
    return None if (want == s and s.installed) else (
        f"save enforcement {want.enforcement_mode}, audit {'on' if want.audit else 'off'}, "
        f"pool {want.pool or 'default'}; program policy revision {s.revision + 1}")


def _wanted_settings(s, o: Options):
    from dataclasses import replace

    from ciliumctl import node
    from ciliumctl.endpoints import ipam

    mode = node.parse_mode(o.enforcement_mode).value if o.enforcement_mode else s.enforcement_mode
    pool = str(ipam.parse_pool(o.pool)) if o.pool else s.pool
    audit = s.audit if o.audit is None else o.audit
    return replace(s, enforcement_mode=mode, audit=audit, pool=pool, installed=True)


def _run_settings(o: Options) -> str:
    from ciliumctl import node

    with node.locked():
        s = _wanted_settings(node.load_settings(), o)
        node.reconcile(settings=s)      # saves the settings once the datapath has taken them
        s = node.load_settings()
    return f"enforcement {s.enforcement_mode}, audit {'on' if s.audit else 'off'}, revision {s.revision}"


def _undo_endpoints() -> str | None:
    from ciliumctl import nodens
    from ciliumctl.endpoints import plumbing, registry

    nodens.enter_node_netns()
    eps = registry.load_all()
    for ep in eps:
        plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)
    spaces, links = plumbing.remove_leftovers()
    n = len({ep.netns.rsplit("/", 1)[-1] for ep in eps} | set(spaces))
    return f"{n} endpoint namespace(s) with their veths and routes" if (eps or spaces or links) else None


def _undo_state() -> str | None:
    gone = []
    for d in (paths.state_dir(), paths.run_dir()):
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            gone.append(str(d))
    return ", ".join(gone) if gone else None


STEPS: list[Step] = [
    Step("root", _check_root),
    Step("bpf syscall", _check_bpf_syscall),
    Step("kernel BTF", _check_btf),
    Step("tc clsact", _check_clsact),
    Step("kernel headers", _check_headers),
    Step("bpffs", _check_bpffs, _run_bpffs),
    Step("ip forwarding", _check_forwarding, _run_forwarding),
    Step("datapath", _check_datapath, _run_datapath, _undo_datapath),
    Step("node settings", _check_settings, _run_settings),
]

# The node's own steps; appended ones (agent, CNI plugin) come after them.
CORE_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS)

# Uninstall also tears down what endpoints made; it comes before the datapath goes and state last.
UNDO_FIRST: list[Step] = [Step("endpoints", lambda o: None, None, _undo_endpoints)]
UNDO_LAST: list[Step] = [Step("state", lambda o: None, None, _undo_state)]


def register_step(step: Step, before: str | None = None) -> None:
    """Append a step (or insert it before the step named `before`)."""
    if before is None:
        STEPS.append(step)
        return
    names = [s.name for s in STEPS]
    STEPS.insert(names.index(before), step)


def install(options: Options, plan_only: bool = False, progress: Callable[[Outcome], None] | None = None,
            starting: Callable[[str], None] | None = None) -> list[Outcome]:
    """Run (or with plan_only, only check) every step in order; stops at the first problem (raised).
    `starting(name)` is called before each step, `progress(outcome)` after it."""
    from ciliumctl import node, nodens
    from ciliumctl.endpoints import ipam

    if options.enforcement_mode:          # bad flags fail before anything is changed
        node.parse_mode(options.enforcement_mode)
    if options.pool:
        ipam.parse_pool(options.pool)
    nodens.enter_node_netns()
    out = []
    for step in STEPS:
        if options.only is not None and step.name not in options.only:
            continue
        if starting:
            starting(step.name)
        with node.environment_errors(f"install step {step.name}"):
            todo = step.check(options)
            if todo is None:
                res = Outcome(step.name, "ok")
            elif plan_only or step.run is None:
                res = Outcome(step.name, "would", todo)
            else:
                res = Outcome(step.name, "done", step.run(options))
        out.append(res)
        if progress:
            progress(res)
    return out


def uninstall(plan_only: bool = False, progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    from ciliumctl import node, nodens

    if os.geteuid() != 0:
        raise EnvironmentProblem("uninstall needs root (eBPF pins, network namespaces); run it with sudo")
    nodens.enter_node_netns()
    out = []
    for step in UNDO_FIRST + list(reversed(STEPS)) + UNDO_LAST:
        if step.undo is None:
            continue
        if plan_only:
            res = Outcome(step.name, "would", "remove")
        else:
            with node.environment_errors(f"uninstall step {step.name}"):
                detail = step.undo()
            res = Outcome(step.name, "removed" if detail else "ok", detail or "nothing to remove")
        out.append(res)
        if progress:
            progress(res)
    return out


def _append_default_steps() -> None:
    """The CNI plugin (skipped on a sandbox node unless its directories are given) and the agent, in that order,
    after the node's own steps. Imported here rather than at the top: both modules import this one."""
    from ciliumctl import agent
    from ciliumctl.endpoints import cni_install

    register_step(cni_install.install_step())
    register_step(agent.install_step())


_append_default_steps()
