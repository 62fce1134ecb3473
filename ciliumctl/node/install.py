"""`ciliumctl install` / `uninstall` on one node (no cluster): an ordered list of steps.

Each step checks first and acts only when needed, so install is idempotent; `plan` (dry run) only checks. More
steps (the agent, the CNI plugin) are appended to STEPS by their owners: `STEPS.append(Step(...))` or
`register_step(...)`; uninstall runs every step's `undo` in reverse order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import environment
from ciliumctl.node import agent
from ciliumctl.node.cni import install as cni_install
from ciliumctl.node.steps import Options, Outcome, Step

# ------------------------------------------------------------------------------------------------ checks
# Each check returns None (nothing to do) or what its step would do; the machine checks live in datapath/.


def _check_root(_o: Options) -> str | None:
    environment.check_root()
    return None


def _check_bpf_syscall(_o: Options) -> str | None:
    environment.check_bpf_syscall()
    return None


def _check_btf(_o: Options) -> str | None:
    environment.check_btf()
    return None


def _check_clsact(_o: Options) -> str | None:
    environment.check_clsact()
    return None


def _check_headers(_o: Options) -> str | None:
    environment.check_headers()
    return None


def _check_bpffs(_o: Options) -> str | None:
    pins = paths.bpffs_dir()
    return None if environment.on_bpffs(pins) else f"mount bpffs at {pins.parent}"


def _run_bpffs(_o: Options) -> str:
    pins = paths.bpffs_dir()
    environment.ensure_bpffs(pins)
    return f"mounted at {pins.parent}"


def _check_forwarding(_o: Options) -> str | None:
    from ciliumctl.base import netns as nodens

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
    return all((d / name).exists() for name in maps.REQUIRED_MAPS + maps.REQUIRED_PROGRAMS)


def _check_datapath(_o: Options) -> str | None:
    if not _pins_present():
        return f"compile, load and pin the datapath under {paths.bpffs_dir()}"
    from ciliumctl.node import reconcile as node_reconcile

    dp = node_reconcile.open_datapath()
    try:
        if getattr(dp, "outdated", False):
            return "upgrade the pinned datapath (built from other sources) without a gap in enforcement"
    finally:
        dp.close()
    return None


def _run_datapath(_o: Options) -> str:
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings

    if not _pins_present():
        node_reconcile.open_datapath().close()
        return f"pinned under {paths.bpffs_dir()}"
    with node_settings.locked():
        node_reconcile.reconcile(upgrade=True)
    return f"upgraded under {paths.bpffs_dir()}"


def _undo_datapath() -> str | None:
    detail = None
    try:
        from ciliumctl.datapath import loader
    except ImportError:
        pass                # no datapath module: the pins only
    else:
        fn = getattr(loader, "uninstall_pins", None) or getattr(getattr(loader, "Datapath", None),
                                                               "uninstall_pins", None)
        if fn is not None:
            fn()
            detail = f"programs, maps and pins under {paths.bpffs_dir()}"
    d = paths.bpffs_dir()
    if d.exists() and environment.on_bpffs(d):
        shutil.rmtree(d, ignore_errors=True)  # pins: unlinking drops the kernel objects with their last user
        detail = detail or f"pins under {d}"
    return detail


def _check_settings(o: Options) -> str | None:
    from ciliumctl.node import settings as node_settings

    s = node_settings.load_settings()
    want = _wanted_settings(s, o)
    return None if (want == s and s.installed) else (
        f"save enforcement {want.enforcement_mode}, audit {'on' if want.audit else 'off'}, "
        f"pool {want.pool or 'default'}, monitor aggregation {want.monitor_aggregation}, service CIDR "
        f"{want.service_cidr}; "
        f"program policy revision {s.revision + 1}")


def _wanted_settings(s, o: Options):
    from dataclasses import replace

    from ciliumctl.endpoints import ipam
    from ciliumctl.node import settings as node_settings

    mode = node_settings.parse_mode(o.enforcement_mode).value if o.enforcement_mode else s.enforcement_mode
    pool = str(ipam.parse_pool(o.pool)) if o.pool else s.pool
    audit = s.audit if o.audit is None else o.audit
    from ciliumctl.datapath import monitor

    level = monitor.parse_level(o.monitor_aggregation) if o.monitor_aggregation else s.monitor_aggregation
    interval = (monitor.parse_interval(o.monitor_aggregation_interval) if o.monitor_aggregation_interval
                else s.monitor_aggregation_interval)
    flags = (monitor.parse_flags(o.monitor_aggregation_flags) if o.monitor_aggregation_flags
             else s.monitor_aggregation_flags)
    cidr = _service_cidr(o.service_cidr) if o.service_cidr else s.service_cidr
    from ciliumctl.node.hostfw import devices as native_devices
    from ciliumctl.node.hostfw import host as hostfw

    devices = native_devices.wanted(s, o)

    return replace(s, enforcement_mode=mode, audit=audit, pool=pool, installed=True, monitor_aggregation=level,
                   monitor_aggregation_interval=interval, monitor_aggregation_flags=flags, service_cidr=cidr,
                   devices=devices, **hostfw.wanted(s, o))


def _service_cidr(text: str) -> str:
    """A new service CIDR, refused while a stored ClusterIP frontend lies outside it."""
    import ipaddress

    from ciliumctl.base.errors import UsageError
    from ciliumctl.services import model, store

    cidr = model.parse_cidr(text)
    net = ipaddress.ip_network(cidr)
    for svc in store.load().services.values():
        if svc.type == "ClusterIP" and ipaddress.ip_address(svc.frontend.ip) not in net:
            raise UsageError(f"--service-cidr {cidr}: service {svc.id} ({svc.frontend}) lies outside it; delete or "
                             "move that service first")
    return cidr


def _lockout_check(s) -> None:
    from ciliumctl.endpoints import registry
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node.hostfw import lockout
    from ciliumctl.policy import store

    state = node_reconcile.resolve_state(registry.load_all(), store.load_all(), s,
                                         node_reconcile.allocator().snapshot())
    lockout.check(state, "install", agent.running_pid())


def _run_settings(o: Options) -> str:
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node.hostfw import host as hostfw

    with node_settings.locked():
        before = node_settings.load_settings()
        s = _wanted_settings(before, o)
        # turning the host firewall on for real, or changing what its policies select: the guard of policy apply
        if hostfw.enforces(s) and (not hostfw.enforces(before) or hostfw.view_changed(before, s)) and not o.force:
            _lockout_check(s)
        node_reconcile.reconcile(settings=s)      # saves the settings once the datapath has taken them
        s = node_settings.load_settings()
    return (f"enforcement {s.enforcement_mode}, audit {'on' if s.audit else 'off'}, monitor aggregation "
            f"{s.monitor_aggregation}, revision {s.revision}")


def _check_state(_o: Options) -> str | None:
    """Differences between the stored state and the kernel (a command killed half way, a lost entry)."""
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node import verify

    if not (verify.pinned() and verify.node_mode()):
        return None
    with node_settings.locked():
        found = verify.run(fix=False).found.differences
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"make the kernel follow the stored state: {found[0].what}{more}"


def _run_state(_o: Options) -> str:
    from ciliumctl.node import verify

    lines = verify.heal()
    return "; ".join(x for x in lines if not x.startswith("found: ")) or "nothing left to repair"


def _device_plan(o: Options) -> tuple[list[str], list[int], list[int]]:
    """(devices wanted, their ifindexes, ifindexes carrying the device programs now) in the node namespace."""
    import socket

    from ciliumctl.base import netns as nodens
    from ciliumctl.base.errors import UsageError
    from ciliumctl.datapath import hooks
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node.hostfw import devices as native_devices

    s = node_settings.load_settings()
    names = [d for d in native_devices.wanted(s, o).split(",") if d.strip()]
    nodens.enter_node_netns()
    wanted = []
    for name in names:
        try:
            wanted.append(socket.if_nametoindex(name.strip()))
        except OSError:
            raise UsageError(f"--devices: interface {name.strip()!r} does not exist in the node network namespace; "
                             "name an existing one (ip link)") from None
    return names, wanted, hooks.device_links(paths.bpffs_dir())


def _check_devices(o: Options) -> str | None:
    from ciliumctl.node.hostfw import host as hostfw

    names, wanted, have = _device_plan(o)
    if sorted(wanted) == have and hostfw.devices_follow(wanted):
        return None
    return f"NodePort programs on {', '.join(names) or 'no device'}{hostfw.device_plan_text()}"


def _run_devices(o: Options) -> str:
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node.hostfw import host as hostfw

    names, wanted, have = _device_plan(o)
    dp = node_reconcile.open_datapath()
    try:
        for name in names:
            dp.attach_device(name.strip())
        for idx in set(have) - set(wanted):
            dp.detach_device(idx)
        host = hostfw.program_devices(dp, wanted, set(have) - set(wanted))
    finally:
        dp.close()
    return (f"NodePort on {', '.join(names)}" if names else "no NodePort device") + host


def _undo_endpoints() -> str | None:
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import plumbing, registry

    nodens.enter_node_netns()
    eps = registry.scan()[0]          # a corrupt record must not stop uninstall: its namespace goes by prefix below
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
    Step("datapath state", _check_state, _run_state),
    Step("nodeport devices", _check_devices, _run_devices),
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
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import ipam
    from ciliumctl.node import settings as node_settings

    if options.enforcement_mode:          # bad flags fail before anything is changed
        node_settings.parse_mode(options.enforcement_mode)
    if options.pool:
        ipam.parse_pool(options.pool)
    from ciliumctl.datapath import monitor

    if options.monitor_aggregation:
        monitor.parse_level(options.monitor_aggregation)
    if options.monitor_aggregation_interval:
        monitor.parse_interval(options.monitor_aggregation_interval)
    if options.monitor_aggregation_flags:
        monitor.parse_flags(options.monitor_aggregation_flags)
    nodens.enter_node_netns()
    out = []
    for step in STEPS:
        if options.only is not None and step.name not in options.only:
            continue
        if starting:
            starting(step.name)
        with node_settings.environment_errors(f"install step {step.name}"):
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
    from ciliumctl.base import netns as nodens
    from ciliumctl.node import settings as node_settings

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
            with node_settings.environment_errors(f"uninstall step {step.name}"):
                detail = step.undo()
            res = Outcome(step.name, "removed" if detail else "ok", detail or "nothing to remove")
        out.append(res)
        if progress:
            progress(res)
    return out


# The CNI plugin (skipped on a sandbox node unless its directories are given) and the agent, in that order,
# after the node's own steps.
register_step(cni_install.install_step())
register_step(agent.install_step())
