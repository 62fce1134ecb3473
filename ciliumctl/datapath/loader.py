"""Load, pin, attach and program the datapath.

Compile once with BCC, pin programs and maps under paths.bpffs_dir(); every later open() takes the pins (raw
bpf(2) through bpfsys, no BCC, no compile). Endpoints get the same two programs on their host-side veth (tcx
links or clsact, hooks.py); what differs per endpoint lives in maps. apply() writes a policy revision into the
inactive slot and flips the active slot last, so a packet sees either the old revision or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.datapath import bpfsys, build, hooks, maps
from ciliumctl.datapath.environment import check_bpf_syscall, check_root, ensure_bpffs
from ciliumctl.datapath.lbwrite import ServiceMaps
from ciliumctl.datapath.mapstate import compile_ipcache, compile_state, cookies_json
from ciliumctl.datapath.monitor import MonitorConfig
from ciliumctl.datapath.servicemap import compile_backends, names_json
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy.resolved import ResolvedState
from ciliumctl.services.model import ServiceTable

RECENT_SWITCH_NS = 100_000_000   # a tc program never runs this long


@dataclass
class ApplyReport:
    revision: int
    slot: int
    entries: dict[str, int]          # map -> entries of the new revision
    written: int                     # entries added or changed
    deleted: int                     # stale entries removed from the slot
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def uninstall_pins() -> list[str]:
    """Remove every pin (and the directory). tcx links go with their pins (the programs leave the interfaces);
    clsact filters keep their programs until detached or the veth goes away. Maps and programs are freed by the
    kernel when nothing references them any more."""
    pin_dir = paths.bpffs_dir()
    if not pin_dir.exists():
        return []
    removed = hooks.remove_link_pins(pin_dir) + build.remove_pins(pin_dir)
    try:
        pin_dir.rmdir()
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise EnvironmentProblem(f"{pin_dir} still holds files not made by ciliumctl: "
                                     f"{', '.join(sorted(os.listdir(pin_dir)))}; remove them by hand") from None
    return removed


def move_to_tcx(ifindex: int) -> bool:
    """Put an endpoint that attaching(defer_tcx=True) left on clsact filters on tcx links (each waits for an RCU
    grace period: background work). False when there was nothing to do: the interface or the pins are gone, or
    tcx is missing, or CILIUMCTL_TC_ATTACH chose one mechanism (attaching did not defer then). Call in the node
    network namespace."""
    if hooks.attach_mode() != "auto":
        return False
    pin_dir = paths.bpffs_dir()
    fds: dict[str, int] = {}
    try:
        for name in hooks.HOOK_PROGRAMS:
            fds[name] = bpfsys.obj_get(pin_dir / name)
        return hooks.move_to_tcx(pin_dir, ifindex, fds)
    except OSError:    # uninstalled meanwhile, or the interface went with its pod
        return False
    finally:
        for fd in fds.values():
            os.close(fd)


def new_connections(ct_created: bpfsys.Map) -> dict[str, int]:
    """The ct_created counters (per CPU, by CTL_DIR_*) of the datapath, summed."""
    out = {}
    for name, idx in (("ingress", 1), ("egress", 2)):
        raw = ct_created.lookup(idx.to_bytes(4, "little")) or b""
        out[name] = sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))
    return out


# ---------------------------------------------------------------------------------------------- the datapath

def _write_revision(mapset: dict[str, bpfsys.Map], state: ResolvedState,
                    services: ServiceMaps | None = None) -> ApplyReport:
    """Write `state` into the inactive slot of `mapset` (a diff against what it holds), then switch to it.
    services: what this Datapath wrote to the service maps before (lbwrite), else they are read back."""
    active, crc, revision, flip_ns = maps.DP_STATE.unpack(mapset["state"].lookup_array(0))
    active &= 1
    slot = 1 - active
    # A program reads the active slot once per packet. The slot written now was active until the last
    # switch: programs that read it before then must be done (a grace period; any longer ago, they are).
    if time.monotonic_ns() - flip_ns < RECENT_SWITCH_NS:
        bpfsys.wait_for_running_programs()
    want = compile_state(replace(state, services=ServiceTable()), slot)   # services: lbwrite
    wanted = {"ipcache": want.ipcache, "epcfg": want.epcfg, "policy": want.policy}
    services = services if services is not None else ServiceMaps()
    plan = None
    if "lb_services" in mapset:
        plan = services.plan(state.services, slot, active, revision, mapset["lb_services"].items,
                             mapset["lb_backends"].items)
    elif state.services.services:
        raise EnvironmentProblem("the pinned datapath predates services: run `ciliumctl install` again to upgrade "
                                 "it; nothing was switched")
    written = deleted = 0
    try:
        if plan is not None:
            # backends first (not per slot): the new slot may name them; stale ones go once nothing can (below)
            _write_entries(mapset["lb_backends"], "lb_backends", {}, {}, state.revision, plan.backend_updates,
                           needed=plan.backend_count)
            written += _write_entries(mapset["lb_services"], "lb_services", {}, {}, state.revision,
                                      plan.svc_updates, needed=plan.entries)
            mapset["lb_services"].delete_batch(plan.svc_deletes)
            deleted += len(plan.svc_deletes)
        for name, desired in wanted.items():
            m = mapset[name]
            current = {k: v for k, v in m.items().items() if maps.key_slot(name, k) == slot}
            written += _write_entries(m, name, desired, current, state.revision)
            stale = [k for k in current if k not in desired]
            m.delete_batch(stale)
            deleted += len(stale)
        # the switch: one array write; programs read only active_slot & 1, which one byte decides
        mapset["state"].update(b"\0" * 4, maps.DP_STATE.pack(slot, crc, state.revision, time.monotonic_ns()))
        if plan is not None and plan.backend_stale:
            bpfsys.wait_for_running_programs()    # a packet that read the old slot may still look its backend up
            mapset["lb_backends"].delete_batch(plan.backend_stale)
            deleted += len(plan.backend_stale)
    except BaseException:
        services.reset()     # the inactive slot may hold part of this revision: read back next time
        raise
    if plan is not None:
        services.commit(plan, slot, state.revision)
    Datapath._write_cookies(want.cookies, state.revision)
    if plan is None or plan.names_changed:
        Datapath._write_state_file("services.json", names_json(state.services))
    entries = {name: len(e) for name, e in wanted.items()}
    if plan is not None:
        entries["lb_services"] = plan.entries
    return ApplyReport(revision=state.revision, slot=slot, entries=entries, written=written, deleted=deleted,
                       seconds=0.0)


def _ep_of(name: str, key: bytes) -> int:
    """The endpoint id an epcfg or policy key belongs to."""
    return maps.EPCFG_KEY.unpack(key)[1] if name == "epcfg" else maps.POLICY_KEY.unpack(key)[3]


def _write_in_place(mapset: dict[str, bpfsys.Map], state: ResolvedState, fresh: frozenset[int],
                    services: ServiceMaps | None = None) -> ApplyReport | None:
    """Write `state` into the active slot itself, without a switch (and so without waiting for running programs),
    when it differs from the active revision only where no decision already made can change: the epcfg and policy
    entries of `fresh` endpoints, which have no epcfg entry yet (so their packets are default-denied by their
    endpoint entry's enforce flags, Datapath.attach), and ipcache entries added. None when it differs in more.

    Order: denies before allows (a fresh endpoint's partial policy is never more permissive than its whole one),
    ipcache, its epcfg entry last (from then on it decides by its own revision), then the revision number (same
    slot): connections tracked under the old number are decided again, as after a switch."""
    active, crc, revision, flip_ns = maps.DP_STATE.unpack(mapset["state"].lookup_array(0))
    active &= 1
    # the service maps as this Datapath wrote them, unchanged: nothing to compare there
    known = services is not None and "lb_services" in mapset and services.unchanged(state.services, active, revision)
    if "lb_services" not in mapset:
        if state.services.services:
            return None
    elif not known and compile_backends(state.services) != mapset["lb_backends"].items():
        return None
    want = compile_state(replace(state, services=ServiceTable()) if known else state, active)
    wanted = {"policy": want.policy, "ipcache": want.ipcache, "epcfg": want.epcfg}
    if "lb_services" in mapset and not known:
        wanted["lb_services"] = want.lb_services
    plan: dict[str, tuple[list[tuple[bytes, bytes]], list[bytes]]] = {}
    for name, desired in wanted.items():
        current = {k: v for k, v in mapset[name].items().items() if maps.key_slot(name, k) == active}
        changed = [(k, v) for k, v in desired.items() if current.get(k) != v]
        stale = [k for k in current if k not in desired]
        if name == "ipcache":
            ok = not stale and all(k not in current for k, _ in changed)
        elif name == "epcfg":
            ok = not stale and all(k not in current and _ep_of(name, k) in fresh for k, _ in changed)
        elif name == "policy":
            ok = all(_ep_of(name, k) in fresh for k in [k for k, _ in changed] + stale)
        else:
            ok = not changed and not stale
        if not ok:
            return None
        plan[name] = (changed, stale)
    policy_changed, policy_stale = plan["policy"]
    mapset["policy"].delete_batch(policy_stale)
    denies = [(k, v) for k, v in policy_changed if maps.POLICY_VAL.unpack(v)[0]]
    for part in (denies, [(k, v) for k, v in policy_changed if not maps.POLICY_VAL.unpack(v)[0]]):
        _write_entries(mapset["policy"], "policy", want.policy, {}, state.revision, part)
    for name in ("ipcache", "epcfg"):
        _write_entries(mapset[name], name, wanted[name], {}, state.revision, plan[name][0])
    mapset["state"].update(b"\0" * 4, maps.DP_STATE.pack(active, crc, state.revision, flip_ns))
    if services is not None:
        services.moved(active, state.revision)
    Datapath._write_cookies(want.cookies, state.revision)
    return ApplyReport(revision=state.revision, slot=active,
                       entries={name: len(entries) for name, entries in wanted.items()},
                       written=sum(len(c) for c, _ in plan.values()), deleted=len(policy_stale), seconds=0.0)


def _write_entries(m: bpfsys.Map, name: str, desired: dict[bytes, bytes], current: dict[bytes, bytes],
                   revision: int, updates: list[tuple[bytes, bytes]] | None = None, needed: int | None = None) -> int:
    """Write what differs (or `updates`); a full map is one line and leaves the active revision in force.
    needed: the entries the revision needs there (default: len(desired))."""
    if updates is None:
        updates = [(k, v) for k, v in desired.items() if current.get(k) != v]
    try:
        m.update_batch(updates)
    except bpfsys.BpfError as err:
        if err.errno in (errno.E2BIG, errno.ENOMEM, errno.ENOSPC):
            raise EnvironmentProblem(f"the {name} map is full ({m.max_entries} entries): revision "
                                     f"{revision} needs {len(desired) if needed is None else needed}; nothing was "
                                     "switched") from None
        raise
    return len(updates)


class _Lock:
    """Serialises install and apply between processes."""

    def __init__(self):
        d = paths.state_dir() / "datapath"
        d.mkdir(parents=True, exist_ok=True)
        self._f = open(d / "lock", "a+")

    def __enter__(self):
        fcntl.flock(self._f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


class Datapath:
    """The pinned datapath of this node.

    open() -> compile + load + pin when no pins exist, else reuse them (no BCC); attach(ep) / detach(ep);
    apply(state) -> ApplyReport (slot switch, no window); upgrade(state) when `outdated`; status() -> dict;
    drop_counts(); events_lost(). Module level: uninstall_pins(). Events: RingReader on <pins>/events."""

    def __init__(self, pin_dir: Path, compiled: bool):
        self.pin_dir = pin_dir
        self.compiled = compiled     # True when this open() compiled and pinned
        self.attach_mode: str | None = None   # tcx or clsact, once attach() ran
        self.service_maps = ServiceMaps()     # what apply() wrote to the service maps (lbwrite)
        self.maps: dict[str, bpfsys.Map] = {}
        self.prog_fds: dict[str, int] = {}
        try:
            for name in maps.MAPS:
                if name in maps.ADDED_MAPS and not (pin_dir / name).exists():
                    continue    # a datapath from before that map: outdated, upgrade() adds it
                self.maps[name] = bpfsys.Map.from_pin(pin_dir / name)
            for name in maps.PROGRAMS:
                if name in maps.ADDED_PROGRAMS and not (pin_dir / name).exists():
                    continue    # outdated: upgrade() adds it
                self.prog_fds[name] = bpfsys.obj_get(pin_dir / name)
        except OSError as err:   # removed by an uninstall running at the same time, or not ours
            self.close()
            raise EnvironmentProblem(f"cannot open the pinned datapath at {pin_dir} ({err.strerror}): "
                                     "run `ciliumctl install` again") from None

    @classmethod
    def open(cls) -> Datapath:
        check_root()
        check_bpf_syscall()
        pin_dir = paths.bpffs_dir()
        ensure_bpffs(pin_dir)
        compiled = False
        with _Lock():
            if not build.pins_present(pin_dir):
                build.refuse_if_endpoints_attached(pin_dir)
                build.remove_pins(pin_dir)   # a half-made install or one without endpoints: start over
                build.compile_and_pin(pin_dir)
                compiled = True
        dp = cls(pin_dir, compiled)
        dp._check_layout()
        return dp

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        for fd in self.prog_fds.values():
            os.close(fd)
        self.prog_fds = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_layout(self) -> None:
        for name, (ks, vs) in maps.SIZES.items():
            m = self.maps.get(name)
            if m is None:
                continue
            if (m.key_size, m.value_size) != (ks, vs):
                raise EnvironmentProblem(f"pinned map {self.pin_dir / name} has another layout than this "
                                         "ciliumctl: run `ciliumctl uninstall` and install again")

    # -------------------------------------------------------------------------------- endpoints

    def attach(self, ep: Endpoint, enforce: bool = False) -> None:
        """Both programs on the endpoint's host-side veth (hooks.py: tcx, else clsact) and its endpoint map entry.
        Until a revision names this endpoint id, `enforce` decides whether both directions default-deny: apply
        a revision with the endpoint before attaching and it is never without its policy."""
        idx = self._attach_entry(ep, enforce)
        self.attach_mode = hooks.attach(self.pin_dir, idx, self.prog_fds, ep.host_ifname)

    def _attach_entry(self, ep: Endpoint, enforce: bool) -> int:
        from ciliumctl.base.netns import enter_node_netns  # noqa: PLC0415

        if not ep.host_ifindex and not ep.host_ifname:
            raise UsageError(f"endpoint {ep.name}: no host-side interface to attach to")
        if not 1 <= ep.id <= 65535:
            raise UsageError(f"endpoint {ep.name}: id {ep.id} is outside 1-65535")
        enter_node_netns()
        idx = ep.host_ifindex or self._ifindex(ep.host_ifname)
        flags = (maps.EP_F_ENFORCE_INGRESS | maps.EP_F_ENFORCE_EGRESS) if enforce else 0
        # map entry first: the programs pass traffic of unknown interfaces
        self.maps["endpoints"].update(idx.to_bytes(4, "little"), maps.EP_INFO.pack(ep.id, flags, ep.identity))
        ep.host_ifindex = idx
        return idx

    @contextlib.contextmanager
    def attaching(self, ep: Endpoint, defer_tcx: bool = False):
        """attach(ep, enforce=True) beside the caller's block: the endpoint entry (default-deny both ways until a
        revision names the endpoint) before the block, the programs on the interface in a thread while it runs.
        Each tcx link waits for an RCU grace period in the kernel; the block (the reconcile that puts the
        endpoint's policy in force) overlaps them. Joined when the block ends; the thread's error is raised.
        defer_tcx (a long-running caller, attach mode auto): clsact filters now instead, and the caller runs
        move_to_tcx(ifindex) later, off its latency path."""
        import threading  # noqa: PLC0415

        idx = self._attach_entry(ep, True)
        if defer_tcx and hooks.attach_mode() == "auto":
            try:
                hooks.attach_clsact_now(idx, self.prog_fds, ep.host_ifname)
            except (OSError, EnvironmentProblem):
                pass    # no clsact or cls_bpf on this kernel: tcx links now, as below
            else:
                self.attach_mode = "clsact"
                yield
                return
        failed: list[BaseException] = []

        def links() -> None:
            try:
                self.attach_mode = hooks.attach(self.pin_dir, idx, self.prog_fds, ep.host_ifname)
            except BaseException as err:
                failed.append(err)

        worker = threading.Thread(target=links, name=f"attach-{ep.id}", daemon=True)
        worker.start()   # threads start in their creator's network namespace: the node's (_attach_entry)
        try:
            yield
        finally:
            worker.join()
        if failed:
            raise failed[0]

    def detach(self, ep: Endpoint) -> None:
        """Take the programs off the interface (if it still exists) and forget the endpoint's map entries."""
        from ciliumctl.base.netns import enter_node_netns  # noqa: PLC0415

        enter_node_netns()
        idx = ep.host_ifindex
        if not idx and ep.host_ifname:
            try:
                idx = self._ifindex(ep.host_ifname)
            except UsageError:
                idx = 0
        if idx:
            hooks.detach(self.pin_dir, idx)
            self.maps["endpoints"].delete(idx.to_bytes(4, "little"))
            self._flush_ct(idx)

    def attach_device(self, ifname: str) -> int:
        """The NodePort programs on one of the node's own interfaces (tc ingress and egress; lib/nodeport.h).
        Returns its ifindex. Call in the node network namespace (reconcile.open_datapath enters it)."""
        if "from_netdev" not in self.prog_fds:
            raise EnvironmentProblem("the pinned datapath predates NodePort devices: run `ciliumctl install` again "
                                     "to upgrade it")
        idx = self._ifindex(ifname)
        hooks.attach(self.pin_dir, idx, self.prog_fds, ifname, hooks.DEVICE_HOOKS)
        return idx

    def detach_device(self, ifindex: int) -> None:
        hooks.detach(self.pin_dir, ifindex, hooks.DEVICE_HOOKS)
        self._flush_ct(ifindex)

    def _flush_ct(self, ifindex: int) -> int:
        """Forget the connections tracked on an endpoint's interface (its ifindex may be reused)."""
        ct = self.maps["conntrack"]
        tail = ifindex.to_bytes(4, "little")
        stale = [k for k in ct.items() if k[16:20] == tail]
        ct.delete_batch(stale)
        return len(stale)

    @staticmethod
    def _ifindex(name: str) -> int:
        import socket  # noqa: PLC0415

        try:
            return socket.if_nametoindex(name)
        except OSError:
            raise UsageError(f"interface {name} does not exist in the node network namespace") from None

    def _read_state(self) -> tuple[int, int, int, int]:
        """(active slot, source crc, revision, time of the last switch)"""
        raw = self.maps["state"].lookup_array(0)
        active, crc, revision, flip_ns = maps.DP_STATE.unpack(raw)
        return active & 1, crc, revision, flip_ns

    def set_monitor(self, config: MonitorConfig) -> None:
        """How much the programs trace (datapath/monitor.py); read by them per packet, no recompile. A datapath
        from before the setting has no map for it: its programs trace as they always did until upgrade()."""
        if "monitor_config" in self.maps:
            self.maps["monitor_config"].update(b"\0" * 4, config.pack())

    def monitor(self) -> MonitorConfig | None:
        m = self.maps.get("monitor_config")
        return MonitorConfig.unpack(m.lookup_array(0)) if m is not None else None

    @property
    def revision(self) -> int:
        """The revision of the state the programs enforce now."""
        return self._read_state()[2]

    @property
    def outdated(self) -> bool:
        """The pinned programs were built from another version of bpf/*.c than this ciliumctl carries."""
        return self._read_state()[1] != build.source_crc()

    def apply(self, state: ResolvedState, fresh: frozenset[int] = frozenset()) -> ApplyReport:
        """Write `state` beside the active revision, then switch to it with one map write. fresh: endpoints just
        attached with enforce=True and not yet in any revision: when `state` adds only them (and their addresses),
        it goes into the active slot in place, without the switch's wait (_write_in_place)."""
        from ciliumctl.base.gcpause import paused

        t0 = time.perf_counter()
        with _Lock(), paused():     # the whole table's entries compiled at once (base.gcpause)
            report = ((_write_in_place(self.maps, state, fresh, self.service_maps) if fresh else None)
                      or _write_revision(self.maps, state, self.service_maps))
        report.seconds = time.perf_counter() - t0
        return report

    def add_ipcache(self, entries: dict[str, int], revision: int) -> bool:
        """Add ipcache entries (prefix -> identity) to the active revision in place, when it is still `revision`
        (the caller knows from that revision that the prefixes are not there: an LPM lookup cannot tell): what a
        learned DNS answer needs once its identity's policy is programmed (node.dns_proxy.policy). An added prefix
        changes no decision made (a connection denied before is decided again: conntrack revisits denials).
        False: nothing written, the caller reconciles."""
        with _Lock():
            active, _crc, current, _ns = maps.DP_STATE.unpack(self.maps["state"].lookup_array(0))
            if current != revision:
                return False
            active &= 1
            want = compile_ipcache(ResolvedState(revision, {}, dict(entries), {}), active)
            _write_entries(self.maps["ipcache"], "ipcache", want, {}, revision)
        return True

    def add_identities(self, state: ResolvedState, identities: set[int], ipcache: dict[str, int]) -> bool:
        """Identities new to the active revision, in place (Cilium's incremental policy update): their policy
        entries as `state` (the active revision resolved again with them) has them, denies first, then `ipcache`
        (the prefixes that map to them), without a switch. Only while the active revision is `state.revision` and
        `state` enforces every endpoint as it does: entries of an identity no address maps to yet change no
        decision made. False: nothing written, the caller reconciles (node.dns_proxy.policy)."""
        from ciliumctl.datapath.mapstate import compile_epcfg, compile_policy  # noqa: PLC0415

        with _Lock():
            active, _crc, current, _ns = maps.DP_STATE.unpack(self.maps["state"].lookup_array(0))
            active &= 1
            if current != state.revision or compile_epcfg(state, active) != {
                    k: v for k, v in self.maps["epcfg"].items().items() if maps.key_slot("epcfg", k) == active}:
                return False
            policy, cookies = compile_policy(state, active)
            new = [(k, v) for k, v in policy.items() if maps.POLICY_KEY.unpack(k)[4] in identities]
            for deny in (1, 0):
                _write_entries(self.maps["policy"], "policy", policy, {}, state.revision,
                               [(k, v) for k, v in new if maps.POLICY_VAL.unpack(v)[0] == deny])
            want = compile_ipcache(ResolvedState(state.revision, {}, dict(ipcache), {}), active)
            _write_entries(self.maps["ipcache"], "ipcache", want, {}, state.revision)
            Datapath._write_cookies(cookies, state.revision)
        return True

    def upgrade(self, state: ResolvedState) -> ApplyReport:
        """Replace outdated pinned programs and maps by ones built from this ciliumctl's sources, without a gap:
        the new maps get `state`, the attached endpoints and the connections tracked so far (when their layout
        did not change) before each endpoint's filters are swapped to the new programs."""
        from ciliumctl.base.netns import enter_node_netns  # noqa: PLC0415

        t0 = time.perf_counter()
        enter_node_netns()
        with _Lock():
            bpf, fns = build.compile_programs()
            try:
                new = {name: bpfsys.Map(os.dup(bpf[name.encode()].map_fd), name) for name in maps.MAPS}
                try:
                    report = _write_revision(new, state)
                    attached = self.maps["endpoints"].items()
                    new["endpoints"].update_batch(list(attached.items()))
                    if "monitor_config" in self.maps:    # else the compiled default until the next reconcile
                        new["monitor_config"].update(b"\0" * 4, self.maps["monitor_config"].lookup_array(0))
                    old_ct, new_ct = self.maps["conntrack"], new["conntrack"]
                    if (old_ct.key_size, old_ct.value_size) == (new_ct.key_size, new_ct.value_size):
                        new_ct.update_batch(list(old_ct.items().items()))
                    new_fds = {n: f.fd for n, f in fns.items()}
                    devices = set(hooks.device_links(self.pin_dir))   # the host endpoint's (host firewall): below
                    for key in attached:
                        idx = int.from_bytes(key, "little")
                        if idx in devices:
                            continue
                        try:
                            hooks.attach(self.pin_dir, idx, new_fds)    # tcx: the link swaps in place
                        except Exception:
                            pass    # the interface is gone; its endpoint entry goes with the next detach
                    for idx in hooks.device_links(self.pin_dir):
                        with contextlib.suppress(Exception):           # a device that went away
                            hooks.attach(self.pin_dir, idx, new_fds, hooks=hooks.DEVICE_HOOKS)
                    build.remove_pins(self.pin_dir)
                    build.pin_all(self.pin_dir, {n: m.fd for n, m in new.items()}, {n: f.fd for n, f in fns.items()})
                finally:
                    for m in new.values():
                        m.close()
            finally:
                bpf.cleanup()
        self.close()
        type(self).__init__(self, self.pin_dir, compiled=True)   # open the new pins in place
        report.seconds = time.perf_counter() - t0
        return report

    @staticmethod
    def _write_cookies(cookies, revision: int) -> None:
        Datapath._write_state_file("cookies.json", cookies_json(cookies, revision))

    @staticmethod
    def _write_state_file(name: str, text: str) -> None:
        """What the agent reads to name flows (cookies.json: policies, services.json: services)."""
        d = paths.state_dir() / "datapath"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, d / name)

    # -------------------------------------------------------------------------------- status

    def events_lost(self) -> int:
        raw = self.maps["events_lost"].lookup((0).to_bytes(4, "little"))
        return sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)) if raw else 0

    def new_connections(self) -> dict[str, int]:
        """Connections tracked so far, by the direction of the endpoint that saw them first (summed over CPUs)."""
        m = self.maps.get("ct_created")
        return new_connections(m) if m is not None else {}

    def drop_counts(self) -> list[dict]:
        """Drops by reason and direction, summed over CPUs; counted even when their event was lost."""
        out = []
        for key, raw in self.maps["drop_stats"].items().items():
            packets = sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 16))
            if not packets:
                continue
            nbytes = sum(int.from_bytes(raw[i + 8:i + 16], "little") for i in range(0, len(raw), 16))
            idx = int.from_bytes(key, "little")
            out.append({"reason": idx >> 2, "direction": "ingress" if idx & 3 == 1 else "egress",
                        "packets": packets, "bytes": nbytes})
        return sorted(out, key=lambda d: (d["reason"], d["direction"]))

    def status(self) -> dict:
        active, crc, revision, _ = self._read_state()
        progs = []
        for name, fd in self.prog_fds.items():
            info = bpfsys.prog_info(fd)
            progs.append({"name": name, "id": info.id, "type": bpfsys.PROG_TYPES.get(info.type, str(info.type)),
                          "tag": bytes(info.tag).hex(), "xlated_bytes": info.xlated_prog_len,
                          "pinned": str(self.pin_dir / name),
                          # counted only while the kernel's BPF run-time statistics are on (never by us)
                          "run_count": info.run_cnt, "run_time_ns": info.run_time_ns})
        map_rows = []
        for name, m in self.maps.items():
            row = {"name": name, "id": m.id, "type": bpfsys.MAP_TYPES.get(m.type, str(m.type)),
                   "capacity": m.max_entries, "pinned": str(self.pin_dir / name)}
            if name in ("ipcache", "epcfg", "policy", "lb_services"):
                items = m.items()
                row["entries"] = sum(1 for k in items if maps.key_slot(name, k) == active)
                row["entries_all_slots"] = len(items)
            elif name in ("endpoints", "conntrack", "lb_backends"):
                row["entries"] = len(m.items())
            map_rows.append(row)
        return {"pin_dir": str(self.pin_dir), "programs": progs, "maps": map_rows, "revision": revision,
                "active_slot": active, "events_lost": self.events_lost(), "outdated": crc != build.source_crc(),
                "drops": self.drop_counts(),
                "monitor_aggregation": mon.to_dict() if (mon := self.monitor()) is not None else None,
                "new_connections": self.new_connections(),
                "tcx_links": len(os.listdir(hooks.links_dir(self.pin_dir))) if hooks.links_dir(self.pin_dir).is_dir()
                else 0,
                # the host endpoint (host firewall) once, whatever the number of its devices
                "attached_endpoints": len({v[:2] for v in self.maps["endpoints"].items().values()})}
