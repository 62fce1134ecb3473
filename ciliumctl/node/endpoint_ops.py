"""Endpoints on this node: add (address, plumbing, identity, policy), attach, detach, delete, exec.
"""

from __future__ import annotations

import contextlib
import re

from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.endpoints import ipam, registry
from ciliumctl.endpoints.model import Endpoint
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
                 ipv4: str | None = None) -> Endpoint:
    """A sandbox endpoint, attached and with policy in force when this returns. Nothing is left on failure."""
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import plumbing

    check_name("endpoint name", name)
    check_name("namespace", namespace)
    require_root("endpoint add")
    nodens.enter_node_netns()
    with environment_errors(f"endpoint add {name}"), locked():
        if registry.find(name, namespace=namespace) is not None:
            raise UsageError(f"endpoint {namespace}/{name} already exists; delete it first or pick another name")
        settings = load_settings()
        ep_id = registry.next_id()
        addr_pool = ipam.Pool(ipam.effective_pool(explicit=pool_cidr, configured=settings.pool or None))
        owner = f"endpoint:{ep_id}"
        ep = Endpoint(id=ep_id, name=name, namespace=namespace, labels=dict(labels), node=node_name(),
                      state="waiting-for-identity")
        done: list[str] = []
        try:
            dp = open_datapath()
            ep.ipv4 = addr_pool.allocate(owner, wanted=ipv4)
            done.append("lease")
            plumbed = plumbing.create(ep_id, ep.ipv4)
            done.append("plumbing")
            ep.netns, ep.host_ifname, ep.host_ifindex = plumbed.netns, plumbed.host_ifname, plumbed.host_ifindex
            ep.state = "waiting-for-identity"
            registry.save(ep)
            done.append("registry")
            attach_endpoint(ep, dp, settings)
            done.append("attach")
            return registry.load(ep_id) or ep
        except BaseException:
            _undo_endpoint(ep, done, addr_pool, owner)
            raise


def attach_endpoint(ep: Endpoint, datapath=None, settings: Settings | None = None) -> Endpoint:
    """Identity, policy and datapath for a registered, plumbed endpoint (the caller holds the node lock).

    The endpoint's policy is in the maps before its program runs on the veth, so it never passes traffic
    without enforcement. Used by `endpoint add` and by the CNI server."""
    dp = datapath or open_datapath()
    ep.identity = allocator().allocate(endpoint_labels(ep))
    ep.state = "waiting-for-policy"
    registry.save(ep)
    reconcile(dp, settings)
    dp.attach(ep)
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
    from ciliumctl.endpoints import plumbing

    with contextlib.suppress(Exception):
        if "attach" in done:
            open_datapath().detach(ep)
    if "registry" in done:
        registry.remove(ep.id)
        with contextlib.suppress(Exception):
            reconcile()
    if "plumbing" in done:
        with contextlib.suppress(Exception):
            plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)
    if "lease" in done:
        addr_pool.release_owner(owner)


def get_endpoint(ref: str, namespace: str | None = None) -> Endpoint:
    ep = registry.find(ref, namespace=namespace)
    if ep is None:
        raise UsageError(f"endpoint {ref!r} not found; see `ciliumctl endpoint list`")
    return ep


def delete_endpoint(ref: str, namespace: str | None = None) -> Endpoint:
    """Detach, unplumb, release the address and forget the endpoint; then re-program policy without it."""
    from ciliumctl.base import netns as nodens
    from ciliumctl.endpoints import plumbing

    require_root("endpoint delete")
    nodens.enter_node_netns()
    with environment_errors(f"endpoint delete {ref}"), locked():
        ep = get_endpoint(ref, namespace)
        ep.state = "disconnecting"
        registry.save(ep)
        plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)   # the veth goes, and its tc programs with it
        pool().release_owner(f"endpoint:{ep.id}")
        detach_endpoint(ep)
        return ep


def exec_in_endpoint(ref: str, argv: list[str], namespace: str | None = None) -> None:
    from ciliumctl.endpoints import plumbing

    require_root("endpoint exec")
    ep = get_endpoint(ref, namespace)
    plumbing.exec_in(ep.netns, argv)
