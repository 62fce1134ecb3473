"""Where the endpoint registry, the address leases and the kernel disagree, and what a killed command left.

Three witnesses say which endpoints a node has: the registry (what `endpoint list` shows and policy is computed
from), the lease file (endpoints.ipam, which hands out addresses) and the kernel (sandbox namespaces, host veths,
/32 routes). A lost or emptied lease file, a removed or corrupt endpoint record, or an `endpoint add` killed half
way make them disagree. So:
- before an id or an address is handed out, all three are asked (taken_ids, in_use): never a live endpoint's;
- `endpoint list` and `status` report every disagreement (problems), read-only;
- `endpoint add`, under the node lock, removes what a killed add or delete left, restores the leases a lost
  lease file forgot and drops leases nothing uses any more (repair). Remains without a record are never
  removed on a guess: `endpoint delete ID` removes them (node.endpoint_ops).

Every state-changing endpoint command holds the node lock from its first write to its last, so an endpoint in a
transitional state (model.TRANSITIONAL) while the lock is free belongs to a command that died."""

from __future__ import annotations

from ciliumctl.base import statefile
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.endpoints import ipam, registry
from ciliumctl.endpoints.model import TRANSITIONAL, Endpoint
from ciliumctl.node.settings import lock_path

OWNER = "endpoint:"


def owner(ep_id: int) -> str:
    """The lease owner tag of a sandbox endpoint."""
    return f"{OWNER}{ep_id}"


def _owner_id(tag: str) -> int | None:
    tail = tag[len(OWNER):] if tag.startswith(OWNER) else ""
    return int(tail) if tail.isdigit() else None


def _is_sandbox(ep: Endpoint) -> bool:
    """Made by `endpoint add` (address from the lease file, plumbing by name), not by a container runtime."""
    return not ep.container_id


def in_use(endpoints: list[Endpoint]) -> dict[str, str]:
    """Addresses nobody may be given: the kernel's (routes and addresses of the node namespace) and every
    registered endpoint's. address -> who."""
    from ciliumctl.endpoints import plumbing

    out = plumbing.kernel_addresses()
    for ep in endpoints:
        if ep.ipv4:
            out[ep.ipv4] = f"endpoint {ep.id} ({ep.namespace}/{ep.name})"
    return out


def taken_ids(leases: dict[str, str]) -> set[int]:
    """Ids that have no record but still have a lease or plumbing: a new endpoint must not take them (its undo
    would release their lease, its plumbing would collide with theirs)."""
    from ciliumctl.endpoints import plumbing

    return {i for i in map(_owner_id, leases.values()) if i is not None} | set(plumbing.remains())


def dead_transitional(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Endpoints stuck half added or half deleted by a command that was killed. Empty while another command holds
    the node lock (it may be the one still working on them)."""
    stuck = [ep for ep in endpoints if ep.state in TRANSITIONAL]
    if not stuck:
        return []
    with statefile.try_locked(lock_path()) as free:
        return stuck if free else []


def stuck(ep: Endpoint) -> str:
    """What a dead transitional endpoint is, one line (without what to do)."""
    return (f"endpoint {ep.id} ({ep.namespace}/{ep.name}) is stuck in state {ep.state}: the command changing it "
            "was killed")


def problems(pool: ipam.Pool) -> list[str]:
    """Every disagreement between registry, leases and kernel, one line each with what to do. Read-only."""

    endpoints, bad = registry.scan()
    out = [str(rec.problem()) for rec in bad]
    for ep in dead_transitional(endpoints):
        out.append(f"{stuck(ep)}; `ciliumctl endpoint delete {ep.id}` removes it (so does the next "
                   "`ciliumctl endpoint add`)")
    holders: dict[str, list[Endpoint]] = {}
    for ep in endpoints:
        if ep.ipv4:
            holders.setdefault(ep.ipv4, []).append(ep)
    for addr, eps in sorted(holders.items()):
        if len(eps) > 1:
            out.append(f"endpoints {', '.join(str(ep.id) for ep in eps)} all have address {addr} (only one of them "
                       f"is routed); delete all but one with `ciliumctl endpoint delete ID`")
    try:
        leases = pool.peek()
    except EnvironmentProblem as err:
        out.append(str(err))
        leases = None
    if leases is not None:
        sandbox = [ep for ep in endpoints if _is_sandbox(ep) and ep.ipv4]
        forgotten = [ep for ep in sandbox if leases.get(ep.ipv4) != owner(ep.id) and len(holders[ep.ipv4]) == 1]
        if forgotten:
            what = "is missing" if not pool.exists() else "has no lease for"
            out.append(f"{pool.path} {what} " + ", ".join(f"{ep.ipv4} (endpoint {ep.id})" for ep in forgotten)
                       + "; the next `ciliumctl endpoint add` restores the leases (no address in use is handed "
                       "out meanwhile)")
    known = {ep.id for ep in endpoints} | {rec.id for rec in bad}
    orphans: dict[int, list[str]] = {}
    for addr, tag in (leases or {}).items():
        i = _owner_id(tag)
        if i is not None and i not in known:
            orphans.setdefault(i, []).append(f"lease {addr}")
    try:
        for i, names in unrecorded_remains(known).items():
            orphans.setdefault(i, []).extend(names)
    except (EnvironmentProblem, OSError):
        pass            # the kernel side needs root; the lease file still tells
    for i, remains in sorted(orphans.items()):
        out.append(f"endpoint {i} has no state file ({registry.endpoints_dir() / f'{i}.json'}) but its "
                   f"{', '.join(remains)} remain; `ciliumctl endpoint delete {i}` removes them")
    return out


def unrecorded_remains(known: set[int]) -> dict[int, list[str]]:
    """Sandbox namespaces and host veths of endpoint ids not in `known` (ids with a record): id -> their names.
    Never removed on a guess: `endpoint delete ID` does."""
    from ciliumctl.endpoints import plumbing

    return {i: names for i, names in sorted(plumbing.remains().items()) if i not in known}


def repair(pool: ipam.Pool, notes: list[str]) -> None:
    """Under the node lock: remove endpoints a killed command left half done, restore forgotten leases, drop
    leases nobody uses. What was done is appended to `notes` (one line each)."""
    from ciliumctl.endpoints import plumbing

    endpoints, bad = registry.scan()
    for ep in [e for e in endpoints if e.state in TRANSITIONAL and _is_sandbox(e)]:
        remove_remains(ep.id, pool, ep)
        notes.append(f"removed endpoint {ep.id} ({ep.namespace}/{ep.name}): it was left {ep.state} by a command "
                     "that was killed")
        endpoints.remove(ep)
    back = pool.restore({ep.ipv4: owner(ep.id) for ep in endpoints if _is_sandbox(ep) and ep.ipv4})
    if back:
        notes.append(f"restored the address lease(s) of {', '.join(back)} in {pool.path}, which had lost them")
    known = {ep.id for ep in endpoints} | {rec.id for rec in bad}
    leases = pool.peek()
    stale = {a: t for a, t in leases.items() if _owner_id(t) is not None and _owner_id(t) not in known}
    if stale:
        busy = plumbing.kernel_addresses()
        leftover = plumbing.remains()
        for addr, tag in sorted(stale.items()):
            if addr not in busy and _owner_id(tag) not in leftover and pool.release(addr, tag):
                notes.append(f"released the lease of {addr}: {tag} no longer exists")


def remove_remains(ep_id: int, pool: ipam.Pool, ep: Endpoint | None = None) -> list[str]:
    """Take endpoint `ep_id` out of the datapath and the kernel, release its leases and drop its record, with or
    without a readable record (`ep`). Caller holds the node lock and reconciles afterwards. Returns what went."""
    from ciliumctl.endpoints import plumbing

    gone = []
    ep = ep or Endpoint(id=ep_id, name="", host_ifname=plumbing.host_ifname(ep_id))
    _detach(ep)
    names = plumbing.remains().get(ep_id, [])
    if _is_sandbox(ep):
        plumbing.remove(ep_id, ep.ipv4, ep.netns, ep.host_ifname)
        gone += names
    gone += [f"lease {a}" for a in pool.release_owner(owner(ep_id))]
    if registry.remove(ep_id):
        gone.append("state file")
    return gone


def datapath_pinned() -> bool:
    from ciliumctl.base import paths

    pins = paths.bpffs_dir()
    return pins.is_dir() and any(pins.iterdir())


def _detach(ep: Endpoint) -> None:
    """Programs and map entries of the endpoint's interface, when a datapath is pinned (never compile one)."""
    from ciliumctl.node.reconcile import open_datapath

    if not datapath_pinned():
        return
    try:
        dp = open_datapath()
    except EnvironmentProblem:
        return
    with dp:
        try:
            dp.detach(ep)
        except Exception:   # noqa: BLE001 - the interface may be gone; the reconcile after us drops its entries
            pass
