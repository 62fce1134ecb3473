"""The service maps of a revision as a difference (issue 12: one backend added at 10,000 services in < 10 ms).

apply() writes a revision into the inactive slot as the difference to what that slot holds. For lb_services and
lb_backends finding it by reading both back and compiling the whole table took ~2 s at 10,000 services x 10
backends. A ServiceMaps object, which a long-lived Datapath keeps (the agent's), remembers what it wrote: per slot
the Service each service id's entries were compiled from (a reference into the table: ~1 MB at 10,000 services
where the entries themselves took ~45 MB; raw entries only for what was read back and differs), the table of the
last revision (lb_backends is compiled from it) and which services each slot has not got yet (changed while the
other slot was written). The next revision then compiles and writes only the services that
differ from the last table or that the slot missed. Trusted only while nobody else wrote: the state map must still
show the slot and revision this object switched to; otherwise (another process applied, an upgrade) the maps are
read back once, as before. Planning is pure; the caller writes the plan (loader) and commits it once written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ciliumctl.datapath.servicemap import (
    compile_backends,
    compile_service,
    compile_service_backends,
    compile_services,
)
from ciliumctl.services.model import Service, ServiceTable

Entries = dict[bytes, bytes]
Held = Service | Entries      # what a slot holds for a service id: compiled from that Service, or these entries


def _sid(val: bytes) -> int:
    return int.from_bytes(val[4:8], "little")     # lb_svc_val.svc_id (maps.LB_SVC_VAL)


def _entries(svc: Service | None, slot: int) -> Entries:
    """A service's lb_services entries of `slot`, keyed without the slot byte (key[0], maps.key_slot)."""
    if svc is None:
        return {}
    return {k[1:]: v for k, v in compile_service(svc, slot, {}).items()}


def _held(h: Held | None, slot: int) -> Entries:
    return _entries(h, slot) if h is None or isinstance(h, Service) else h


def _named(a: Service | None, b: Service | None) -> bool:
    """Whether flows would name a frontend differently (datapath/services.json must be written again)."""
    return a is None or b is None or a.frontend != b.frontend or a.flow_name != b.flow_name


@dataclass
class Plan:
    slot: int
    table: ServiceTable
    svc_updates: list[tuple[bytes, bytes]]          # lb_services, the slot's keys
    svc_deletes: list[bytes]
    backend_updates: list[tuple[bytes, bytes]]      # before the switch: the new slot may name them
    backend_stale: list[bytes]                      # after the switch and a grace period
    entries: int                                    # lb_services entries of the slot once written
    backend_count: int                              # lb_backends entries once written
    names_changed: bool
    incremental: bool
    # bookkeeping to take over once written (commit)
    slot_sids: dict[int, Service | None] = field(default_factory=dict)   # the services rewritten in the slot
    slot_full: bool = False                        # slot_sids is the whole slot
    other: dict[int, Held] | None = None           # the other slot as read back (full plans)
    other_missing: set[int] = field(default_factory=set)
    other_count: int = 0


class ServiceMaps:
    """What this process wrote to lb_services and lb_backends; see the module's doc."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._stamp: tuple[int, int] | None = None             # (active slot, revision) after our last switch
        self._slots: dict[int, dict[int, Held]] = {0: {}, 1: {}}
        self._missing: dict[int, set[int]] = {0: set(), 1: set()}   # services a slot holds an older form of
        self._backends = 0                                       # lb_backends entries: compile_backends(_last)
        self._last = ServiceTable()
        self._count: dict[int, int] = {0: 0, 1: 0}

    def current(self, active: int, revision: int) -> bool:
        return self._stamp == (active, revision)

    def unchanged(self, table: ServiceTable, active: int, revision: int) -> bool:
        """The maps hold exactly `table` in the active slot (known without reading them)."""
        return self.current(active, revision) and not self._missing[active] and not self._changed(table)

    def moved(self, active: int, revision: int) -> None:
        """The revision number changed in place (loader._write_in_place), the service maps did not."""
        if self._stamp is not None:
            self._stamp = (active, revision)

    def _changed(self, table: ServiceTable) -> set[int]:
        known = table.changed_since(self._last)
        if known is not None:
            return known
        old, new = self._last.services, table.services
        if old is new:
            return set()
        out = {sid for sid in old if sid not in new}
        for sid, svc in new.items():
            prev = old.get(sid)
            if prev is not svc and prev != svc:
                out.add(sid)
        return out

    def plan(self, table: ServiceTable, slot: int, active: int, revision: int, read_services, read_backends) -> Plan:
        """What to write for `table` into `slot`. read_*: callables returning the map's items (full plans only)."""
        if not self.current(active, revision):
            return self._full(table, slot, read_services(), read_backends())
        changed = self._changed(table)
        todo = changed | self._missing[slot]
        held = self._slots[slot]
        old_flat: Entries = {}
        new_flat: Entries = {}
        new_sids: dict[int, Service | None] = {}
        old_count = 0
        for sid in todo:
            old = _held(held.get(sid), slot)
            old_flat.update(old)
            old_count += len(old)
            new_sids[sid] = svc = table.services.get(sid)
            new_flat.update(_entries(svc, slot))
        prefix = bytes([slot])
        svc_updates = [(prefix + k, v) for k, v in new_flat.items() if old_flat.get(k) != v]
        svc_deletes = [prefix + k for k in old_flat if k not in new_flat]
        old_b: Entries = {}
        new_b: Entries = {}
        names = False
        for sid in changed:
            prev, svc = self._last.services.get(sid), table.services.get(sid)
            if prev is not None:
                compile_service_backends(prev, old_b)
            if svc is not None:
                compile_service_backends(svc, new_b)
            names = names or _named(prev, svc)
        # lb_backends is compile_backends(self._last): the changed services' part of it is old_b (a backend id
        # belongs to one service: ServiceTable allocates it per service and never reuses it)
        backend_updates = [(k, v) for k, v in new_b.items() if old_b.get(k) != v]
        backend_stale = [k for k in old_b if k not in new_b]
        count = self._count[slot] + len(new_flat) - old_count
        nb = self._backends + sum(1 for k in new_b if k not in old_b) - len(backend_stale)
        return Plan(slot, table, svc_updates, svc_deletes, backend_updates, backend_stale, count, nb, names, True,
                    slot_sids=new_sids, other_missing=changed)

    def _full(self, table: ServiceTable, slot: int, items: Entries, current_b: Entries) -> Plan:
        """Against the maps as read back (first apply of this object, or someone else wrote)."""
        new = compile_services(table, slot)
        backends = compile_backends(table)
        prefix = bytes([slot])
        cur: Entries = {k: v for k, v in items.items() if k[0] == slot}
        # the other slot, keyed as this one (its slot byte swapped)
        read: Entries = {prefix + k[1:]: v for k, v in items.items() if k[0] != slot}
        # the other slot against the table, per service id: where it differs, the entries read back are kept
        # (the same table in both slots, a command's usual case, is one comparison in C)
        missing: set[int] = set()
        if read != new:
            for k, v in read.items():
                nv = new.get(k)
                if nv != v:
                    missing.add(_sid(v))
                    if nv is not None:
                        missing.add(_sid(nv))
            missing.update(_sid(v) for k, v in new.items() if k not in read)
        other: dict[int, Held] = {sid: svc for sid, svc in table.services.items() if sid not in missing}
        if missing:
            for k, v in read.items():
                sid = _sid(v)
                if sid in missing:
                    e = other.setdefault(sid, {})
                    assert isinstance(e, dict)
                    e[k[1:]] = v
        return Plan(slot, table,
                    [] if cur == new else [(k, v) for k, v in new.items() if cur.get(k) != v],
                    [k for k in cur if k not in new],
                    [(k, v) for k, v in backends.items() if current_b.get(k) != v],
                    [k for k in current_b if k not in backends],
                    len(new), len(backends), True, False,
                    slot_sids=dict(table.services), slot_full=True, other=other, other_missing=missing,
                    other_count=len(read))

    def commit(self, plan: Plan, active: int, revision: int) -> None:
        """The plan is written and (active, revision) is what the state map says now."""
        slot, other = plan.slot, 1 - plan.slot
        if plan.slot_full:
            self._slots[slot] = {sid: s for sid, s in plan.slot_sids.items() if s is not None}
            assert plan.other is not None
            self._slots[other] = plan.other
            self._count[other] = plan.other_count
            self._missing[other] = set(plan.other_missing)
        else:
            held = self._slots[slot]
            for sid, s in plan.slot_sids.items():
                if s is not None:
                    held[sid] = s
                else:
                    held.pop(sid, None)
            self._missing[other] |= plan.other_missing
        self._missing[slot] = set()
        self._count[slot] = plan.entries
        self._backends = plan.backend_count
        self._last = plan.table
        self._stamp = (active, revision)
