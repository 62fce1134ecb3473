"""The service maps written as a difference (datapath/lbwrite.py), against maps simulated as dicts: after every
revision, however it was planned (incremental, or read back after someone else wrote), the slot written holds
exactly compile_services() of the table and lb_backends exactly compile_backends(), and the other slot is left
alone."""

from __future__ import annotations

import dataclasses

from ciliumctl.datapath.lbwrite import ServiceMaps
from ciliumctl.datapath.servicemap import compile_backends, compile_services
from ciliumctl.services.model import Backend, Frontend, Service, ServiceTable

CIDR = "10.96.0.0/12"


class Maps:
    """lb_services and lb_backends as dicts, the state map as (active slot, revision)."""

    def __init__(self):
        self.services: dict[bytes, bytes] = {}
        self.backends: dict[bytes, bytes] = {}
        self.active, self.revision = 0, 0

    def apply(self, writer: ServiceMaps, table: ServiceTable):
        slot = 1 - self.active
        other = {k: v for k, v in self.services.items() if k[0] == self.active}
        plan = writer.plan(table, slot, self.active, self.revision, lambda: dict(self.services),
                           lambda: dict(self.backends))
        self.backends.update(plan.backend_updates)
        self.services.update(plan.svc_updates)
        for k in plan.svc_deletes:
            del self.services[k]           # a key that is not there would fail (ENOENT)
        self.active, self.revision = slot, self.revision + 1
        for k in plan.backend_stale:
            del self.backends[k]
        writer.commit(plan, self.active, self.revision)
        assert {k: v for k, v in self.services.items() if k[0] == slot} == compile_services(table, slot)
        assert {k: v for k, v in self.services.items() if k[0] != slot} == other
        assert self.backends == compile_backends(table)
        assert plan.entries == len(compile_services(table, slot))
        assert plan.backend_count == len(self.backends)
        return plan


def _svc(i: int, n: int = 3, **kw) -> Service:
    return Service(0, Frontend(f"10.96.0.{i}", 80), backends=tuple(Backend(f"10.200.{i}.{j}", 8080)
                                                                      for j in range(1, n + 1)), **kw)


def test_every_revision_is_written_exactly_whichever_way_it_was_planned():
    t = ServiceTable()
    for i in range(1, 30):
        t = t.update(_svc(i), CIDR)
    maps, agent = Maps(), ServiceMaps()
    maps.services[bytes([0]) + b"\xff" * 11] = b"\0" * 16     # something stale in the slot written first
    assert not maps.apply(agent, t).incremental                # first: read back
    catch_up = maps.apply(agent, t)                            # the other slot never held them: all written
    assert catch_up.incremental and len(catch_up.svc_updates) == 29 * 4
    t = t.update(_svc(5, 4), CIDR)                             # one backend more: its service only
    plan = maps.apply(agent, t)
    assert plan.incremental and len(plan.svc_updates) == 2 and len(plan.backend_updates) == 1
    t = t.update(dataclasses.replace(_svc(7), backends=(Backend("10.200.7.1", 8080, "terminating"),)), CIDR)
    plan = maps.apply(agent, t)                                # this slot missed service 5: written too
    assert plan.incremental and len(plan.svc_updates) == 1 + 2 and len(plan.svc_deletes) == 3
    t, _ = t.delete("3")
    t = t.update(_svc(40, name="web"), CIDR)                   # a new frontend takes the lowest free id (3)
    plan = maps.apply(agent, t)
    assert plan.incremental and plan.names_changed
    same = maps.apply(agent, t)
    assert same.incremental and not same.names_changed and not same.backend_updates
    # someone else applies (another process): the next plan reads back
    other = ServiceTable(t.services, t.next_backend_id).update(_svc(8, 1), CIDR)
    maps.apply(ServiceMaps(), other)
    t = t.update(_svc(9, 5), CIDR)
    assert not maps.apply(agent, t).incremental
    for _ in range(3):                                         # and then goes on by difference
        t = t.update(_svc(11, len(t.services[11].backends) + 1), CIDR)
        assert maps.apply(agent, t).incremental
    # a failed write resets: read back again
    agent.reset()
    assert not maps.apply(agent, ServiceTable()).incremental
    assert maps.services == {k: v for k, v in maps.services.items() if k[0] != maps.active}


def test_unchanged_is_known_without_reading_the_maps():
    t = ServiceTable().update(_svc(1), CIDR)
    maps, agent = Maps(), ServiceMaps()
    assert not agent.unchanged(t, maps.active, maps.revision)
    maps.apply(agent, t)
    assert agent.unchanged(t, maps.active, maps.revision)       # the active slot holds it
    assert not agent.unchanged(t.update(_svc(2), CIDR), maps.active, maps.revision)
    agent.moved(maps.active, maps.revision + 1)                 # an in-place revision
    assert agent.unchanged(t, maps.active, maps.revision + 1)
    assert not agent.unchanged(t, maps.active, maps.revision)


def test_what_changed_is_found_by_the_tables_lineage_or_by_comparing():
    t = ServiceTable()
    for i in range(1, 6):
        t = t.update(_svc(i), CIDR)
    maps, agent = Maps(), ServiceMaps()
    maps.apply(agent, t)
    maps.apply(agent, t)
    grown = t.update(_svc(2, 4), CIDR)
    gone, _ = grown.delete("4")
    assert gone.changed_since(t) == {2, 4} and t.changed_since(gone) is None
    plan = maps.apply(agent, gone)
    assert plan.incremental and len(plan.backend_updates) == 1 and len(plan.backend_stale) == 3
    # the same table read from the store: no lineage, equal services found by comparing them
    same = ServiceTable.from_dict(gone.to_dict())
    assert same.derived is None and same == gone
    plan = maps.apply(agent, same)
    assert plan.incremental and not plan.backend_updates and not plan.backend_stale
