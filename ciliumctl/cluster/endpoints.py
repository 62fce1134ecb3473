"""CiliumEndpoint objects: the agent publishes one per local pod (its endpoint id, identity, address, node), so
that every node learns remote pods' identities and `endpoint list --all-nodes` can show the whole cluster."""

from __future__ import annotations

from collections.abc import Iterable

from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube
from ciliumctl.endpoints.model import Endpoint

KIND = KINDS["CiliumEndpoint"]
NODE_LABEL = "ciliumctl.io/node"  # on every CiliumEndpoint: list one node's endpoints by label selector
FIELD_MANAGER = "ciliumctl-agent"


def endpoint_object(ep: Endpoint, node: str, labels: Iterable[str] = ()) -> dict:
    """The CiliumEndpoint of one endpoint. `labels`: its identity labels (as in `cilium endpoint list`)."""
    status = {
        "id": ep.id,
        "state": ep.state or "ready",
        "identity": {"id": ep.identity, "labels": sorted(labels)},
        "networking": {"node": node, "addressing": [{"ipv4": ep.ipv4}] if ep.ipv4 else []},
    }
    return {"apiVersion": KIND.api_version, "kind": KIND.kind,
            "metadata": {"name": ep.name, "namespace": ep.namespace, "labels": {NODE_LABEL: node}},
            "status": status}


def publish(kube: Kube, ep: Endpoint, node: str, labels: Iterable[str] = (),
            attempts: int = 5) -> str:
    """Create or update the endpoint's CiliumEndpoint. Returns created | updated | unchanged."""
    want = endpoint_object(ep, node, labels)
    for _ in range(attempts):
        have = kube.get(KIND, ep.name, ep.namespace)
        try:
            if have is None:
                kube.create(want)
                return "created"
            if have.get("status") == want["status"] and \
                    (have["metadata"].get("labels") or {}).get(NODE_LABEL) == node:
                return "unchanged"
            body = dict(have)
            body["status"] = want["status"]
            body["metadata"] = {**have["metadata"],
                                "labels": {**(have["metadata"].get("labels") or {}), NODE_LABEL: node}}
            kube.replace(body, field_manager=FIELD_MANAGER)
            return "updated"
        except ApiFailure as err:
            if err.status not in (409,):  # conflict or lost create race: read again
                raise
    raise ApiFailure(409, "Conflict", f"CiliumEndpoint {ep.namespace}/{ep.name} keeps changing under us")


def unpublish(kube: Kube, namespace: str, name: str) -> bool:
    return kube.delete(KIND, name, namespace)


def sync_node(kube: Kube, node: str, endpoints: list[tuple[Endpoint, frozenset[str]]]) -> dict[str, int]:
    """Make this node's CiliumEndpoints exactly `endpoints`: publish each, delete the node's stale ones."""
    counts = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0}
    keep = set()
    for ep, labels in endpoints:
        counts[publish(kube, ep, node, labels)] += 1
        keep.add((ep.namespace, ep.name))
    items, _ = kube.list(KIND, label_selector=f"{NODE_LABEL}={node}")
    for item in items:
        key = (item["metadata"].get("namespace", ""), item["metadata"]["name"])
        if key not in keep and unpublish(kube, *key):
            counts["deleted"] += 1
    return counts


def row(item: dict) -> dict:
    status = item.get("status") or {}
    ident = status.get("identity") or {}
    addressing = (status.get("networking") or {}).get("addressing") or [{}]
    return {"node": (status.get("networking") or {}).get("node", ""),
            "namespace": item["metadata"].get("namespace", ""), "name": item["metadata"]["name"],
            "id": status.get("id", 0), "identity": ident.get("id", 0), "ipv4": addressing[0].get("ipv4", ""),
            "state": status.get("state", ""), "labels": ident.get("labels") or []}


def list_all_nodes(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
                   kube: Kube | None = None) -> list[dict]:
    """`endpoint list --all-nodes`: every endpoint of the cluster from CiliumEndpoint objects, sorted by node,
    namespace, name. Rows: node, namespace, name, id, identity, ipv4, state, labels."""
    kube = kube if kube is not None else Kube.connect(kubeconfig, context)
    try:
        items, _ = kube.list(KIND, namespace)
    except ApiFailure as err:
        if err.status == 404:
            from ciliumctl.base.errors import EnvironmentProblem

            raise EnvironmentProblem("the cluster has no CiliumEndpoint resource; run `ciliumctl install "
                                     "--kubeconfig ...` first") from None
        raise
    return sorted((row(i) for i in items), key=lambda r: (r["node"], r["namespace"], r["name"]))


def remote_endpoints(items: list[dict], node: str) -> list[dict]:
    """Rows of endpoints on other nodes: what fills the ipcache with remote pod addresses and identities."""
    return [r for r in (row(i) for i in items) if r["node"] != node and r["ipv4"] and r["identity"]]
