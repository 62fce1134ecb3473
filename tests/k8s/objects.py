"""Objects the tests of the cluster-mode code put on a real API server that has no nodes: a pod as a kubelet
would report it (the spec through create, the status through the status subresource, as the kubelet writes it).
Its ServiceAccount is made if missing (the API server refuses the pod without it; no controller makes it here)."""

from __future__ import annotations

from ciliumctl.cluster.kube import KINDS


def add_pod(kube, name: str, node: str, ip: str = "", labels: dict | None = None, namespace: str = "default",
            host_network: bool = False, service_account: str = "default") -> dict:
    if kube.get(KINDS["ServiceAccount"], service_account, namespace) is None:
        kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": service_account, "namespace": namespace}})
    spec: dict = {"nodeName": node, "hostNetwork": host_network,
                  "containers": [{"name": "c", "image": "ciliumctl-test:local", "imagePullPolicy": "Never"}]}
    if service_account != "default":
        spec["serviceAccountName"] = service_account
    pod = kube.create({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec})
    pod["status"] = {"phase": "Running", **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {})}
    return kube.replace(pod, sub="status")
