"""What a CNI attachment means for the node: an endpoint in the registry, an identity, the datapath attached and
the policy reconciled. The CNI server calls these under the node lock.

Labels of a pod: from the API server when a cluster is configured (the agent installs a lookup with
set_pod_label_source()), else from the pod annotation `ciliumctl.io/labels: "k=v,k2=v2"` that containerd passes
when the conflist enables the `io.kubernetes.cri.pod-annotations` capability. The namespace comes from CNI_ARGS
K8S_POD_NAMESPACE."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.datapath import bpfsys
from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.node import endpoint_ops
from ciliumctl.node import reconcile as node_reconcile
from ciliumctl.node import settings as node_settings

if TYPE_CHECKING:
    from ciliumctl.datapath.loader import Datapath

LABELS_ANNOTATION = "ciliumctl.io/labels"


PodLabelSource = Callable[[str, str], "dict[str, str] | None"]
_pod_label_source: PodLabelSource | None = None


def set_pod_label_source(fn: PodLabelSource | None) -> None:
    """Cluster mode: the agent installs a lookup (namespace, pod name) -> the pod's labels from its API-server
    cache, or None when the pod is not (yet) known; the annotation is the fallback."""
    global _pod_label_source
    _pod_label_source = fn


def lock_path() -> Path:
    return node_settings.lock_path()


def parse_labels(text: str) -> dict[str, str]:
    try:
        return endpoint_ops.parse_labels(text or "")
    except UsageError as err:
        raise UsageError(f"pod annotation {LABELS_ANNOTATION}: {err}") from None


def pod_labels(namespace: str, name: str, annotations: dict) -> dict[str, str]:
    if _pod_label_source is not None:
        found = _pod_label_source(namespace, name)
        if found is not None:
            return dict(found)
    return parse_labels(str(annotations.get(LABELS_ANNOTATION, "")))


_open: tuple[str, Datapath] | None = None     # (pin dir, the datapath) kept open between requests


def _datapath() -> Datapath:
    """The pinned datapath, kept open between CNI requests (opening its ~20 pins is ~1 ms of every pod's ADD) and
    opened again when the pins changed: install, upgrade and uninstall replace the state map, whose id the kernel
    never hands out twice. The caller holds the node lock."""
    global _open
    pin_dir = str(paths.bpffs_dir())
    if _open is not None:
        where, dp = _open
        try:
            fd = bpfsys.obj_get(Path(pin_dir) / "state")
            try:
                same = where == pin_dir and bpfsys.map_info(fd).id == dp.maps["state"].id
            finally:
                os.close(fd)
        except OSError:
            same = False
        if same:
            return dp
        _open = None
        dp.close()
    dp = node_reconcile.open_datapath()
    _open = (pin_dir, dp)
    return dp


def register(*, name: str, namespace: str, annotations: dict, ipv4: str, netns: str, host_ifname: str,
             host_ifindex: int, container_id: str) -> Endpoint:
    """Save the endpoint, give it an identity, attach the datapath and put current policy in force
    (ciliumctl.endpoint_ops.attach_endpoint; the caller holds the node lock). Nothing stays registered on failure."""
    ep = Endpoint(id=registry.next_id(), name=name, namespace=namespace,
                  labels=pod_labels(namespace, name, annotations), ipv4=ipv4, netns=netns,
                  host_ifname=host_ifname, host_ifindex=host_ifindex, container_id=container_id,
                  node=node_settings.node_name(), state="waiting-for-identity")
    # not saved yet: attach_endpoint saves it (with its identity) before anything reads the registry, and the
    # node lock keeps its id ours meanwhile; one fsync less on every pod's start
    try:
        endpoint_ops.attach_endpoint(ep, _datapath(), defer_tcx=True)
    except BaseException:
        unregister(ep.id, container_id)
        raise
    return registry.load(ep.id) or ep


def finish_attach(host_ifindex: int) -> bool:
    """After register: the endpoint's programs from clsact filters onto tcx links (each link waits for an RCU
    grace period; the CNI server runs this after the ADD's answer, not under the node lock)."""
    from ciliumctl.datapath.loader import move_to_tcx

    return move_to_tcx(host_ifindex)


def unregister(ep_id: int, container_id: str = "") -> None:
    """Detach from the datapath, drop from the registry, re-program policy without it (node lock held)."""
    ep = registry.load(ep_id)
    if ep is None or (container_id and ep.container_id and ep.container_id != container_id):
        return
    pins = paths.bpffs_dir()
    dp = None
    if pins.is_dir() and any(pins.iterdir()):   # never compile a datapath just to take an endpoint out of it
        with contextlib.suppress(EnvironmentProblem):
            dp = _datapath()
    if dp is None:             # no datapath (uninstalled): only the registry entry is left to drop
        registry.remove(ep.id)
        return
    endpoint_ops.detach_endpoint(ep, dp)


def find(container_id: str, host_ifname: str) -> list[int]:
    """Endpoint ids of an attachment whose state record was lost (a crash between registry and record)."""
    return [ep.id for ep in registry.load_all()
            if ep.container_id == container_id and ep.host_ifname == host_ifname]


def address_of(ep_id: int) -> str | None:
    ep = registry.load(ep_id)
    return ep.ipv4.split("/")[0] if ep is not None and ep.ipv4 else None


def node_pool() -> str:
    """The node's address pool (settings, $CILIUMCTL_POOL or the default), whose upper half is the pods'."""
    from ciliumctl.endpoints import ipam

    return ipam.effective_pool(configured=node_settings.load_settings().pool or None)


def registered_addresses() -> list[str]:
    """The addresses of every readable endpoint record (a witness of addresses in use, node.cni.pool)."""
    good, _corrupt = registry.scan()
    return [ep.ipv4.split("/")[0] for ep in good if ep.ipv4]


def check(ep_id: int) -> list[str]:
    ep = registry.load(ep_id)
    if ep is None:
        return [f"endpoint {ep_id} is not registered"]
    if ep.state != "ready":
        return [f"endpoint {ep_id} is {ep.state}"]
    return []


def status() -> dict:
    """STATUS: can ADD be served? The registry must be writable."""
    d = registry.endpoints_dir()
    d.mkdir(parents=True, exist_ok=True)
    return {"endpoints": len(registry.load_all())}
