"""What a CNI attachment means for the node: an endpoint in the registry, an identity, the datapath attached and
the policy reconciled. The CNI server calls these under the node lock.

Labels of a pod: from the API server when a cluster is configured (ciliumctl.cluster, when present), else from
the pod annotation `ciliumctl.io/labels: "k=v,k2=v2"` that containerd passes when the conflist enables the
`io.kubernetes.cri.pod-annotations` capability. The namespace comes from CNI_ARGS K8S_POD_NAMESPACE."""

from __future__ import annotations

import importlib
from pathlib import Path

from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.errors import UsageError

LABELS_ANNOTATION = "ciliumctl.io/labels"


def _optional(module: str):
    """A module of another part of ciliumctl that may not exist in this build yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            return None
        raise


def lock_path() -> Path:
    from ciliumctl import node

    return node.lock_path()


def parse_labels(text: str) -> dict[str, str]:
    from ciliumctl import node

    try:
        return node.parse_labels(text or "")
    except UsageError as err:
        raise UsageError(f"pod annotation {LABELS_ANNOTATION}: {err}") from None


def pod_labels(namespace: str, name: str, annotations: dict) -> dict[str, str]:
    cluster = _optional("ciliumctl.cluster.pods")
    if cluster is not None and hasattr(cluster, "pod_labels"):
        found = cluster.pod_labels(namespace, name)   # None: no cluster configured
        if found is not None:
            return dict(found)
    return parse_labels(str(annotations.get(LABELS_ANNOTATION, "")))


def register(*, name: str, namespace: str, annotations: dict, ipv4: str, netns: str, host_ifname: str,
             host_ifindex: int, container_id: str) -> Endpoint:
    """Save the endpoint, give it an identity, attach the datapath and put current policy in force
    (ciliumctl.node.attach_endpoint; the caller holds the node lock). Nothing stays registered on failure."""
    from ciliumctl import node

    ep = Endpoint(id=registry.next_id(), name=name, namespace=namespace,
                  labels=pod_labels(namespace, name, annotations), ipv4=ipv4, netns=netns,
                  host_ifname=host_ifname, host_ifindex=host_ifindex, container_id=container_id,
                  node=node._node_name(), state="waiting-for-identity")
    registry.save(ep)
    try:
        node.attach_endpoint(ep)
    except BaseException:
        unregister(ep.id, container_id)
        raise
    return registry.load(ep.id) or ep


def unregister(ep_id: int, container_id: str = "") -> None:
    """Detach from the datapath, drop from the registry, re-program policy without it (node lock held)."""
    from ciliumctl import node

    ep = registry.load(ep_id)
    if ep is None or (container_id and ep.container_id and ep.container_id != container_id):
        return
    node.detach_endpoint(ep)


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
