"""From the cluster cache to what the agent reconciles: local endpoints with their Kubernetes labels, remote
endpoints (ipcache entries), and the policy objects. Plain functions over cached dicts, no API calls.

Namespace labels travel inside Endpoint.labels under Cilium's own key prefix
(`io.cilium.k8s.namespace.labels.<key>`), so identities and namespaceSelector matching see them with no change
to the Endpoint model.
"""

from __future__ import annotations

from collections.abc import Callable

from ciliumctl.cluster.watch import ClusterCache
from ciliumctl.endpoints.model import Endpoint

NS_PREFIX = "io.cilium.k8s.namespace.labels."
POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy")


def namespace_labels(cache: ClusterCache, namespace: str) -> dict[str, str]:
    ns = cache.get("Namespace", namespace)
    labels = dict(((ns or {}).get("metadata") or {}).get("labels") or {})
    labels.setdefault("kubernetes.io/metadata.name", namespace)
    return labels


def pod_labels(pod: dict, ns_labels: dict[str, str]) -> dict[str, str]:
    out = dict((pod.get("metadata") or {}).get("labels") or {})
    out.update({NS_PREFIX + k: v for k, v in ns_labels.items()})
    return out


def _pod_is_endpoint(pod: dict) -> bool:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return not spec.get("hostNetwork") and status.get("phase") not in ("Succeeded", "Failed") and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


def pod_endpoint(pod: dict, ns_labels: dict[str, str]) -> Endpoint:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    return Endpoint(id=0, name=meta["name"], namespace=meta.get("namespace", "default"),
                    labels=pod_labels(pod, ns_labels), ipv4=status.get("podIP", ""),
                    service_account=spec.get("serviceAccountName") or "default", node=spec.get("nodeName", ""))


def local_pods(cache: ClusterCache, node: str) -> list[dict]:
    return sorted((p for p in cache.objects("Pod")
                   if (p.get("spec") or {}).get("nodeName") == node and _pod_is_endpoint(p)),
                  key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))


def enrich(endpoints: list[Endpoint], cache: ClusterCache, node: str) -> list[Endpoint]:
    """The node's endpoints (registry, made by the CNI plugin) with labels and service account from their pods,
    matched by namespace/name, else by address. Endpoints without a pod keep what they have."""
    pods = local_pods(cache, node)
    by_name = {(p["metadata"].get("namespace", ""), p["metadata"]["name"]): p for p in pods}
    by_ip = {(p.get("status") or {}).get("podIP"): p for p in pods if (p.get("status") or {}).get("podIP")}
    out = []
    for ep in endpoints:
        pod = by_name.get((ep.namespace, ep.name)) or by_ip.get(ep.ipv4)
        if pod is not None:
            fresh = pod_endpoint(pod, namespace_labels(cache, pod["metadata"].get("namespace", "default")))
            ep = Endpoint.from_dict({**ep.to_dict(), "labels": fresh.labels,
                                     "service_account": fresh.service_account, "node": node,
                                     "namespace": fresh.namespace, "name": fresh.name})
        out.append(ep)
    return out


def endpoints_from_pods(cache: ClusterCache, node: str) -> list[Endpoint]:
    """Endpoints straight from this node's pods (ids 0: the registry assigns them)."""
    return [pod_endpoint(p, namespace_labels(cache, p["metadata"].get("namespace", "default")))
            for p in local_pods(cache, node)]


def policy_objects(cache: ClusterCache) -> list[dict]:
    """Every policy object of the cluster, as dicts shaped like the YAML a user applies."""
    out = []
    for kind in POLICY_KINDS:
        for obj in cache.objects(kind):
            out.append(obj)
    return sorted(out, key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def node_labels(cache: ClusterCache, node: str) -> dict[str, str]:
    obj = cache.get("Node", node)
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def pod_label_lookup(cache: ClusterCache) -> Callable[[str, str], dict[str, str] | None]:
    """For ciliumctl.endpoints.cni_node.set_pod_label_source: (namespace, pod) -> the pod's labels with its
    namespace's labels, from the cache; None while the pod is not known yet (the CNI plugin falls back)."""
    def lookup(namespace: str, name: str) -> dict[str, str] | None:
        pod = cache.get("Pod", name, namespace)
        if pod is None:
            return None
        return pod_labels(pod, namespace_labels(cache, namespace))
    return lookup
