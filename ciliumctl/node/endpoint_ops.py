"""Endpoints on this node: add (address, plumbing, identity, policy), attach, detach, delete, exec.
"""

from __future__ import annotations

import contextlib
import re

from ciliumctl.base.errors import EnvironmentProblem, NotFound, UsageError
from ciliumctl.endpoints import ipam, registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.node import endpoint_check
from ciliumctl.node.reconcile import allocator, endpoint_labels, open_datapath, reconcile
from ciliumctl.node.settings import Settings, environment_errors, load_settings, locked, node_name, pool, require_root

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def parse_labels(text: str | list[str] | None) -> dict[str, str]:
    """`k=v,k2=v2` (or a list of such) -> dict; keys and values checked like Kubernetes labels."""
    items: list[str] = []
    for chunk in ([text] if isinstance(text, str) else (text or [])):
        items.extend(s.strip() for s in chunk.split(",") if s.strip())
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if key.startswith("k8s:"):
            key = key[4:]
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value.strip()):
            raise UsageError(f"label {item!r}: expected key=value with Kubernetes label syntax, e.g. "
                             "--labels org=empire,class=deathstar")
        out[key] = value.strip()
    return out


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise UsageError(f"{kind} {value!r}: use lower-case letters, digits and '-' (at most 63), e.g. tiefighter")
    return value


def add_endpoint(name: str, labels: dict[str, str], namespace: str = "default", pool_cidr: str | None = None,
                 ipv4: str | None = None, notes: list[str] | None = None) -> Endpoint:
    """A sandbox endpoint, attached and with policy in force when this returns. Nothing is left on failure.

    The record is written first and removed last, so that a killed add always leaves a record in a transitional
    state, which the next add removes (endpoint_check.repair; what it did is appended to `notes`)."""
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import plumbing

    check_name("endpoint name", name)
    check_name("namespace", namespace)
    if ipv4 is not None:
        ipam.parse_address(ipv4)
    require_root("endpoint add")
    nodens.enter_node_netns()
    notes = [] if notes is None else notes
    with environment_errors(f"endpoint add {name}"), locked():
        settings = load_settings()
        addr_pool = ipam.Pool(ipam.effective_pool(explicit=pool_cidr, configured=settings.pool or None))
        endpoint_check.repair(addr_pool, notes)
        if registry.find(name, namespace=namespace) is not None:
            raise UsageError(f"endpoint {namespace}/{name} already exists; delete it first or pick another name")
        endpoints = registry.load_all()
        ep_id = registry.next_id(taken=endpoint_check.taken_ids(addr_pool.peek()))
        owner = endpoint_check.owner(ep_id)
        ep = Endpoint(id=ep_id, name=name, namespace=namespace, labels=dict(labels), node=node_name(),
                      state="waiting-for-identity")
        done: list[str] = []
        try:
            dp = open_datapath()
            registry.save(ep)
            done.append("registry")
            ep.ipv4 = addr_pool.allocate(owner, wanted=ipv4, in_use=endpoint_check.in_use(endpoints))
            done.append("lease")
            registry.save(ep)
            plumbed = plumbing.create(ep_id, ep.ipv4)
            done.append("plumbing")
            ep.netns, ep.host_ifname, ep.host_ifindex = plumbed.netns, plumbed.host_ifname, plumbed.host_ifindex
            registry.save(ep)
            attach_endpoint(ep, dp, settings)
            done.append("attach")
            return registry.load(ep_id) or ep
        except BaseException:
            _undo_endpoint(ep, done, addr_pool, owner)
            raise


def attach_endpoint(ep: Endpoint, datapath=None, settings: Settings | None = None,
                    defer_tcx: bool = False) -> Endpoint:
    """Identity, policy and datapath for a registered, plumbed endpoint (the caller holds the node lock).

    Its endpoint entry default-denies both directions until the revision with its policy is in force, so it
    never passes traffic without enforcement; its programs go on the veth while that revision is written (the
    kernel's waits for the tcx links overlap the reconcile). Used by `endpoint add` and by the CNI server, which
    passes defer_tcx (clsact filters now, tcx links later: Datapath.attaching)."""
    dp = datapath or open_datapath()
    ep.identity = allocator().allocate(endpoint_labels(ep))
    ep.state = "waiting-for-policy"
    registry.save(ep)
    with dp.attaching(ep, defer_tcx):
        reconcile(dp, settings, fresh=frozenset({ep.id}))
    ep.state = "ready"
    registry.save(ep)
    return ep


def detach_endpoint(ep: Endpoint, datapath=None) -> None:
    """Take an endpoint out of the datapath and the registry, then re-program policy without it (caller holds
    the node lock). Plumbing (veth, netns, address) is the caller's."""
    dp = datapath
    if dp is None:
        with contextlib.suppress(EnvironmentProblem):
            dp = open_datapath()
    if dp is not None:
        with contextlib.suppress(Exception):
            dp.detach(ep)
    registry.remove(ep.id)
    if dp is not None:
        reconcile(dp)


def _undo_endpoint(ep: Endpoint, done: list[str], addr_pool: ipam.Pool, owner: str) -> None:
    """Undo a failed add, record last; only what this add made (never another endpoint's lease)."""
    from ciliumctl.endpoints import plumbing

    if "plumbing" in done:
        with contextlib.suppress(Exception):
            open_datapath().detach(ep)
        with contextlib.suppress(Exception):
            plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)
    if "lease" in done:
        addr_pool.release(ep.ipv4, owner)
    if "registry" in done:
        registry.remove(ep.id)
        with contextlib.suppress(Exception):
            reconcile()


def get_endpoint(ref: str, namespace: str | None = None) -> Endpoint:
    ep = registry.find(ref, namespace=namespace)
    if ep is None:
        raise NotFound(f"endpoint {ref!r} not found; see `ciliumctl endpoint list`")   # exit 1, as kubectl
    return ep


def delete_endpoint(ref: str, namespace: str | None = None, notes: list[str] | None = None) -> Endpoint:
    """Detach, unplumb, release the address and forget the endpoint; then re-program policy without it.

    An id whose record is corrupt or missing while its lease or plumbing remain (endpoint_check.problems) is
    removed too: `endpoint delete ID` is the one way to clean up after a lost or broken record."""
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import plumbing

    require_root("endpoint delete")
    nodens.enter_node_netns()
    with environment_errors(f"endpoint delete {ref}"), locked():
        addr_pool = pool()
        try:
            ep = registry.find(ref, namespace=namespace)
        except EnvironmentProblem:
            if not ref.strip().isdigit() or int(ref) not in registry.ids():
                raise
            ep = None                        # this id's own record is corrupt: remove what it left
        if ep is None:
            return _delete_remains(ref, addr_pool, [] if notes is None else notes)
        ep.state = "disconnecting"
        registry.save(ep)
        plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)   # the veth goes, and its tc programs with it
        addr_pool.release_owner(endpoint_check.owner(ep.id))
        detach_endpoint(ep)
        return ep


def _delete_remains(ref: str, addr_pool: ipam.Pool, notes: list[str]) -> Endpoint:
    """`endpoint delete ID` for an id without a readable record: its lease, namespace, veth and record go."""
    ref = ref.strip()
    missing = NotFound(f"endpoint {ref!r} not found; see `ciliumctl endpoint list`")
    if not ref.isdigit() or not 1 <= int(ref) <= registry.MAX_ID:
        raise missing
    ep_id = int(ref)
    if ep_id not in endpoint_check.taken_ids(addr_pool.peek()) | registry.ids():
        raise missing
    gone = endpoint_check.remove_remains(ep_id, addr_pool)
    notes.append(f"removed what endpoint {ep_id} left without a readable state file: {', '.join(gone)}")
    if endpoint_check.datapath_pinned():
        reconcile()
    return Endpoint(id=ep_id, name="")


def exec_in_endpoint(ref: str, argv: list[str], namespace: str | None = None) -> None:
    from ciliumctl.endpoints import plumbing

    require_root("endpoint exec")
    ep = get_endpoint(ref, namespace)
    plumbing.exec_in(ep.netns, argv)
