"""Policies on this node: apply (store, then program; rolled back when the datapath refuses) and delete.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from ciliumctl.base.errors import NotFound, UsageError
from ciliumctl.endpoints import registry
from ciliumctl.node.reconcile import allocator, diff_states, reconcile, resolve_state
from ciliumctl.node.settings import Settings, environment_errors, load_settings, locked, require_root
from ciliumctl.node.verify import heal_if_interrupted
from ciliumctl.policy import enforcement_gaps, load, store
from ciliumctl.policy.checked import validate_paths


@dataclass
class PolicyChange:
    resource: str          # ciliumnetworkpolicy/NAME
    namespace: str
    verb: str              # created | configured | unchanged | deleted


@dataclass
class ApplyResult:
    changes: list[PolicyChange]
    revision: int
    map_changes: list[str] = field(default_factory=list)    # dry run: what the maps would gain and lose
    report: object = None                                   # the datapath's ApplyReport
    gaps: list = field(default_factory=list)                # enforcement_gaps.LocatedGap: what is not enforced
    notes: list[str] = field(default_factory=list)          # what a repair after an interrupted command did


def load_and_validate(paths_: list[str]):
    """Documents of `paths_`, all valid, or InvalidPolicies (nothing else happens then)."""
    return validate_paths(paths_)[0]


def _doc_data(doc) -> dict:
    return doc.data if hasattr(doc, "data") else doc


def _doc_source(doc) -> str:
    f = getattr(doc, "file", "")
    return f"{'<stdin>' if f == '-' else f}#{getattr(doc, 'index', 0)}" if f else ""


def unenforced_parts(docs) -> list:
    """What the datapath does not enforce of these documents (load.Document, or plain objects: no positions)."""
    from ciliumctl.node.hostfw import host as hostfw

    return enforcement_gaps.locate_all((d if hasattr(d, "pos") else load.from_data(d) for d in docs),
                                       hostfw.gap_context(load_settings()))


def apply_policies(docs, dry_run: bool = False, strict: bool = False, force: bool = False) -> ApplyResult:
    """Store validated policy objects and program the maps; with dry_run only report what would change.
    The result names every part the datapath does not enforce; strict refuses such a set before anything is
    stored (enforcement_gaps.UnenforcedPolicies, exit 1). With the host firewall on, a set whose host policy
    would cut a live connection of the node is refused unless force (node.hostfw.lockout, exit 1)."""
    gaps = unenforced_parts(docs)
    if strict and gaps:
        raise enforcement_gaps.UnenforcedPolicies(gaps)
    objects = [store.from_object(_doc_data(d), _doc_source(d)) for d in docs]
    seen: dict[tuple, str] = {}
    for o in objects:
        key = (o.kind, o.namespace, o.name)
        if key in seen:
            raise UsageError(f"{o.resource} in namespace {o.namespace or '(cluster)'} is given twice "
                             f"({seen[key]} and {o.source}); keep one")
        seen[key] = o.source
    if not dry_run:
        require_root("policy apply")
    with environment_errors("policy apply"), locked():
        changes = [PolicyChange(o.resource, o.namespace, store.change_of(o)) for o in objects]
        settings = load_settings()
        if dry_run:
            before = store.load_all()
            after = _merged(before, objects)
            return ApplyResult(changes, settings.revision, map_changes=_dry_run_diff(before, after, settings),
                               gaps=gaps)
        notes = heal_if_interrupted()       # a command killed half way: the kernel follows the store again
        if all(c.verb == "unchanged" for c in changes):
            return ApplyResult(changes, load_settings().revision, gaps=gaps, notes=notes)
        if settings.host_firewall and not force:
            _lockout_check(_merged(store.load_all(), objects), settings)
        with _store_rollback([(o.kind, o.namespace, o.name) for o in objects]):
            for o in objects:
                store.put(o)
            report = reconcile(settings=load_settings())
        return ApplyResult(changes, load_settings().revision, report=report, gaps=gaps, notes=notes)


@contextlib.contextmanager
def _store_rollback(keys: list[tuple[str, str, str]]):
    """Undo store changes of `keys` when the block fails (e.g. the datapath refused the new state, which then
    stays the old one): the store never describes policy that is not in force."""
    before = {k: store.get(*k) for k in keys}
    try:
        yield
    except BaseException:
        for k, old in before.items():
            if old is None:
                store.delete(*k)
            else:
                store.put(old)
        raise


def delete_policy(name: str, namespace: str | None = None, kind: str | None = None,
                  notes: list[str] | None = None, force: bool = False) -> list[PolicyChange]:
    """Delete a stored policy and reprogram without it; what a repair after an interrupted command did is appended
    to `notes`. With the host firewall on, refused when the policies left would cut a live connection of the node
    (an allow of a host policy removed), unless force."""
    require_root("policy delete")
    with environment_errors(f"policy delete {name}"), locked():
        (notes if notes is not None else []).extend(heal_if_interrupted())
        found = store.find(name, namespace if namespace is not None else "default", kind)
        if not found:
            raise NotFound(f"policy {name!r} not found in namespace {namespace or 'default'}; see "
                          "`ciliumctl policy get -A`")   # exit 1, as kubectl's NotFound
        if len(found) > 1:
            kinds = ", ".join(p.resource.split("/")[0] for p in found)
            raise UsageError(f"policy name {name!r} matches several kinds ({kinds}); pick one with --kind")
        p = found[0]
        settings = load_settings()
        if settings.host_firewall and not force:
            left = [q for q in store.load_all() if (q.kind, q.namespace, q.name) != (p.kind, p.namespace, p.name)]
            _lockout_check(left, settings, "policy delete")
        with _store_rollback([(p.kind, p.namespace, p.name)]):
            store.delete(p.kind, p.namespace, p.name)
            reconcile()
        return [PolicyChange(p.resource, p.namespace, "deleted")]


def _merged(before: list[store.StoredPolicy], new: list[store.StoredPolicy]) -> list[store.StoredPolicy]:
    keyed = {(p.kind, p.namespace, p.name): p for p in before}
    for p in new:
        keyed[(p.kind, p.namespace, p.name)] = p
    return list(keyed.values())


def _lockout_check(after: list[store.StoredPolicy], settings: Settings, what: str = "policy apply") -> None:
    """The host policy of `after` against the node's live connections (node.hostfw.lockout), without allocating."""
    from ciliumctl.node import agent
    from ciliumctl.node.hostfw import lockout

    lockout.check(resolve_state(registry.load_all(), after, settings, allocator().snapshot()), what,
                  agent.running_pid())


def _dry_run_diff(before, after, settings: Settings) -> list[str]:
    """Map entries gained (+) and lost (-), resolved against an in-memory copy of the identity table (a dry run
    allocates no identity in node state)."""
    endpoints = registry.load_all()
    scratch = allocator().snapshot()
    old = resolve_state(endpoints, before, settings, scratch)
    new = resolve_state(endpoints, after, settings, scratch)
    return diff_states(old, new)
