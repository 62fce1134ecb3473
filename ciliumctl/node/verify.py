"""Does the kernel follow the stored state? Compare, and repair.

The stored state (policy store, endpoint registry, identities, settings) is resolved read-only (an in-memory copy
of the identity table: nothing is allocated) and compiled for the active slot (datapath.mapstate); the active
slot's ipcache, epcfg and policy entries must be exactly those. Every ready endpoint must have its host-side
interface, its endpoints-map entry and both pinned programs on that interface; no other interface may have
either. An endpoint in a transitional state while we hold the node lock belongs to a command that died: repair
removes it as the next `endpoint add` would (node.endpoint_check).

repair() (under the node lock) rolls back endpoints a killed command left half added or half deleted, reprograms
from the stored state (node.reconcile: a full diff of the slot, then one switch), re-attaches endpoints and takes
the datapath off interfaces no endpoint owns. A command that dies leaves the lock's marker behind
(settings.locked); `policy apply` / `delete` then check and repair first, and `install` and the agent's start
always do, so the kernel follows the store again whatever died where. Node mode only: in cluster mode the agent
reprograms the node from the cluster at every resync.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field

from ciliumctl.base import paths
from ciliumctl.base.errors import UsageError
from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import TRANSITIONAL, Endpoint
from ciliumctl.node import endpoint_check
from ciliumctl.node import reconcile as node_reconcile
from ciliumctl.node.settings import interrupted, load_settings, locked, pool, repaired
from ciliumctl.policy import store


@dataclass
class Difference:
    what: str                      # one readable line
    repairable: bool = True
    hint: str = ""                 # what to do when repair cannot


@dataclass
class Report:
    revision: int = 0              # the datapath's
    slot: int = 0                  # its active slot
    differences: list[Difference] = field(default_factory=list)
    checked: dict = field(default_factory=dict)   # what was compared: entries per map, endpoints, policies
    # for repair: endpoints to attach again (their interface index now) and interfaces no endpoint owns
    reattach: list[tuple[Endpoint, int]] = field(default_factory=list)
    stray: list[int] = field(default_factory=list)
    stuck: list[Endpoint] = field(default_factory=list)     # left half added or half deleted: rolled back
    outdated: bool = False

    def to_dict(self) -> dict:
        return {"revision": self.revision, "active_slot": self.slot, "checked": self.checked,
                "differences": [asdict(d) for d in self.differences]}


def node_mode() -> bool:
    """The maps were last programmed from the local store, not by an agent from a cluster."""
    return load_settings().policy_source != "cluster"


def pinned() -> bool:
    from ciliumctl.datapath import build

    try:
        return build.pins_present(paths.bpffs_dir())
    except OSError:
        return False


def check(dp=None) -> Report:
    """Every difference between the stored state and the kernel (call under locked(): a consistent view)."""
    settings = load_settings()
    if settings.policy_source == "cluster":
        raise UsageError("this node is programmed from a cluster by its agent, which reprograms it at every "
                         "resync; --verify and --repair compare node-mode state with the local store only")
    endpoints = registry.load_all()
    stored = store.load_all()
    report = Report(checked={"policies": len(stored), "endpoints": len(endpoints)})
    if dp is None:
        if pinned():
            with node_reconcile.open_datapath() as own:
                return _compare(own, settings, endpoints, stored, report)
        if endpoints or stored or settings.installed:
            report.differences.append(Difference(f"the datapath is not loaded (no pins under {paths.bpffs_dir()})"))
        return report
    return _compare(dp, settings, endpoints, stored, report)


def _compare(dp, settings, endpoints: list[Endpoint], stored: list, report: Report) -> Report:
    from ciliumctl.datapath import readback
    from ciliumctl.datapath.mapstate import compile_state

    report.slot, _crc, report.revision, _ = readback.state_of(dp.maps)
    if dp.outdated:
        report.outdated = True
        report.differences.append(Difference("the pinned programs were built from other sources than this "
                                             "ciliumctl's"))
    # what reconcile would program, resolved without allocating (a missing identity shows as a difference)
    scratch = node_reconcile.allocator().snapshot()
    state = node_reconcile.resolve_state(endpoints, stored, settings, scratch, report.revision)
    want = compile_state(state, report.slot)
    have = readback.slot_entries(dp.maps, report.slot)
    report.checked.update({name: len(getattr(want, name)) for name in readback.SLOTTED})
    names = {ident: _label_text(labels) for ident, labels in state.identities.items()}
    report.differences += [Difference(line) for line in readback.compare(want, have, names)]
    report.differences += [Difference(line) for line in readback.compare_cookies(want)]
    _check_endpoints(dp, endpoints, report)
    return report


def _label_text(labels) -> str:
    shown = sorted(lab.split(":", 1)[-1] for lab in labels if not lab.split(":", 1)[-1].startswith("io."))
    return ",".join(shown or sorted(labels))


def _check_endpoints(dp, endpoints: list[Endpoint], report: Report) -> None:
    from ciliumctl.datapath import hooks, readback

    on_map = readback.endpoint_entries(dp.maps)
    progs = readback.program_ids(dp.prog_fds)
    owned: set[int] = set()
    for ep in endpoints:
        who = f"endpoint {ep.id} ({ep.namespace}/{ep.name})"
        idx = _ifindex(ep.host_ifname) if ep.host_ifname else 0
        if idx:
            owned.add(idx)
        if ep.host_ifindex:
            owned.add(ep.host_ifindex)
        if ep.state in TRANSITIONAL:            # the lock is ours: the command changing it is dead
            sandbox = not ep.container_id       # `endpoint add`'s; a runtime's is its CNI plugin's to retry
            report.differences.append(Difference(
                endpoint_check.stuck(ep), repairable=sandbox,
                hint="" if sandbox else f"`ciliumctl endpoint delete {ep.id}` removes it"))
            if sandbox:
                report.stuck.append(ep)
            continue
        if not idx:
            report.differences.append(Difference(
                f"{who}: its interface {ep.host_ifname or '(none)'} is missing from the node network namespace",
                repairable=False, hint=f"`ciliumctl endpoint delete {ep.id}` removes it"))
            continue
        wrong = []
        if on_map.get(idx) != ep.id:
            wrong.append("not in the endpoints map" if idx not in on_map
                         else f"in the endpoints map as endpoint {on_map[idx]}")
        missing = readback.missing_programs(idx, progs)
        if missing:
            wrong.append(f"without the datapath program on {' and '.join(missing)}")
        if wrong:
            report.differences.append(Difference(f"{who}: interface {ep.host_ifname} (ifindex {idx}) is "
                                                 f"{'; '.join(wrong)}"))
            report.reattach.append((ep, idx))
    _check_remains(endpoints, report)
    owned.update(hooks.device_links(dp.pin_dir))   # the node's devices (install --devices, the host firewall)
    links = readback.link_pin_ifindexes(dp.pin_dir)
    for idx in sorted((set(on_map) | links) - owned):
        name = _ifname(idx)
        where = f"interface {name} (ifindex {idx})" if name else f"interface {idx} (gone)"
        what = [w for w, present in (("an endpoints-map entry", idx in on_map), ("tcx link pins", idx in links))
                if present]
        report.differences.append(Difference(f"{where} belongs to no endpoint but has {' and '.join(what)}"))
        report.stray.append(idx)


def _check_remains(endpoints: list[Endpoint], report: Report) -> None:
    """Sandbox namespaces and host veths of endpoint ids without a record (node.endpoint_check)."""
    for ep_id, names in endpoint_check.unrecorded_remains({ep.id for ep in endpoints}).items():
        report.differences.append(Difference(
            f"endpoint {ep_id} has no record but its {', '.join(names)} remain", repairable=False,
            hint=f"`ciliumctl endpoint delete {ep_id}` removes them"))


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _ifname(idx: int) -> str:
    try:
        return socket.if_indextoname(idx)
    except OSError:
        return ""


def repair(report: Report, dp=None) -> list[str]:
    """Make the kernel follow the stored state (call under locked(), with a check() made under it). Returns what
    was done, one line each. What cannot be repaired shows in the next check()."""
    done: list[str] = []
    if not any(d.repairable for d in report.differences):
        repaired()
        return done
    if dp is None:
        with node_reconcile.open_datapath() as own:       # compiles and pins when nothing is pinned
            if own.compiled:
                done.append(f"loaded the datapath under {own.pin_dir}")
                report = check(own)                       # now the endpoints can be compared too
            return done + repair(report, own)
    for ep in report.stuck:
        gone = endpoint_check.remove_remains(ep.id, pool(), ep)
        done.append(f"removed endpoint {ep.id} ({ep.namespace}/{ep.name}), left {ep.state} by a killed command"
                    + (f": {', '.join(gone)}" if gone else ""))
    applied = node_reconcile.reconcile(dp, upgrade=report.outdated)
    done.append(f"{'upgraded the programs and ' if report.outdated else ''}reprogrammed the maps from the stored "
                f"state as revision {applied.revision} ({applied.written} entries written, {applied.deleted} "
                "removed)")
    for idx in report.stray:
        dp.detach(Endpoint(id=0, name="", host_ifindex=idx))
        done.append(f"took the datapath off interface {_ifname(idx) or idx} (no endpoint owns it)")
    for ep, idx in report.reattach:
        ep.host_ifindex = idx
        dp.attach(ep)
        if (registry.load(ep.id) or ep).host_ifindex != idx:
            registry.save(ep)
        done.append(f"attached the datapath to endpoint {ep.id} ({ep.namespace}/{ep.name}) on {ep.host_ifname}")
    repaired()
    return done


@dataclass
class Outcome:
    found: Report
    done: list[str] = field(default_factory=list)
    remaining: Report | None = None      # after a repair

    @property
    def clean(self) -> bool:
        return not (self.remaining or self.found).differences

    def lines(self) -> list[str]:
        """found / repaired / not repaired, one line each ([] when nothing differed)."""
        left = self.remaining.differences if self.remaining is not None else []
        return ([f"found: {d.what}" for d in self.found.differences] + [f"repaired: {x}" for x in self.done]
                + [f"not repaired: {d.what}" + (f" ({d.hint})" if d.hint else "") for d in left])

    def to_dict(self) -> dict:
        out = self.found.to_dict()
        if self.remaining is not None:
            out["repaired"] = self.done
            out["remaining"] = [asdict(d) for d in self.remaining.differences]
        return out


def run(fix: bool, dp=None) -> Outcome:
    """Under locked(): check, and with fix repair and check again. No difference found also ends what a dead
    command's marker said (settings.repaired). Closes a datapath it opened."""
    own = dp is None and pinned()
    if own:
        dp = node_reconcile.open_datapath()
    try:
        found = check(dp)
        if not found.differences:
            repaired()          # whatever a dead command left, the kernel follows the store
        if not fix:
            return Outcome(found)
        if not found.differences:
            return Outcome(found, [], found)
        done = repair(found, dp)
        return Outcome(found, done, check(dp))
    finally:
        if own:
            dp.close()


def verify(fix: bool = False) -> Outcome:
    """`ciliumctl status --verify [--repair]`: the differences, and with fix what repair did and what remains."""
    from ciliumctl.base import netns as nodens

    nodens.enter_node_netns()
    with locked():
        return run(fix)


def heal_if_interrupted(dp=None) -> list[str]:
    """Under locked(): when a command died or failed half way since the last repair, check and repair. Returns
    what was found and done, one line each ([] when nothing differed)."""
    if not interrupted() or not pinned() or not node_mode():
        return []            # not pinned: nothing programmed yet, the caller's reconcile loads it all
    return run(True, dp).lines()


def heal() -> list[str]:
    """The agent's start and `install`: check and repair under the node lock, whether or not a command died."""
    from ciliumctl.base import netns as nodens

    if not pinned() or not node_mode():
        return []
    nodens.enter_node_netns()
    with locked():
        return run(True).lines()
