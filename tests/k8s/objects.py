"""Objects the tests of the cluster-mode code put on a real API server that has no nodes: a pod as a kubelet
would report it (the spec through create, the status through the status subresource, as the kubelet writes it).
Its ServiceAccount is made if missing (the API server refuses the pod without it; no controller makes it here).
Also: a CRD removed (and waited for: the server finishes a CRD's deletion itself, no controller needed) and
kubeconfig variants of the admin's (another namespace, another server address)."""

from __future__ import annotations

import json
from pathlib import Path

from support.shell import wait_until

from ciliumctl.cluster.kube import KINDS


def add_pod(kube, name: str, node: str, ip: str = "", labels: dict | None = None, namespace: str = "default",
            host_network: bool = False, service_account: str = "default", status: dict | None = None) -> dict:
    """status: more of the pod's status (conditions, containerStatuses) beside phase Running and the address."""
    if kube.get(KINDS["ServiceAccount"], service_account, namespace) is None:
        kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": service_account, "namespace": namespace}})
    spec: dict = {"nodeName": node, "hostNetwork": host_network,
                  "containers": [{"name": "c", "image": "ciliumctl-test:local", "imagePullPolicy": "Never"}]}
    if service_account != "default":
        spec["serviceAccountName"] = service_account
    pod = kube.create({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec})
    pod["status"] = {"phase": "Running", **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}), **(status or {})}
    return kube.replace(pod, sub="status")


def remove_crds(kube, *kinds: str) -> None:
    """Delete the CRDs of cilium.io kinds and wait until the server no longer serves them (their objects go
    too; the CRD object goes a moment before its REST path, more so on a loaded machine)."""
    from ciliumctl.cluster.kube import ApiFailure

    crd = KINDS["CustomResourceDefinition"]
    for kind in kinds:
        kube.delete(crd, f"{KINDS[kind].plural}.{KINDS[kind].group}")

    def served(kind: str) -> bool:
        try:
            kube.list(KINDS[kind])
        except ApiFailure as err:
            if err.status == 404:
                return False
            raise
        return True

    assert wait_until(lambda: not any(served(k) for k in kinds), 30, 0.1), kinds
    assert wait_until(lambda: all(kube.get(crd, f"{KINDS[k].plural}.{KINDS[k].group}") is None for k in kinds),
                      30, 0.1), kinds


def kubeconfig_variant(src: str | Path, dst: Path, namespace: str | None = None, server: str | None = None) -> str:
    """A copy of kubeconfig src (tests/k8s/cluster.py writes JSON) with its context's namespace or its
    cluster's server address changed."""
    cfg = json.loads(Path(src).read_text())
    if namespace is not None:
        cfg["contexts"][0]["context"]["namespace"] = namespace
    if server is not None:
        cfg["clusters"][0]["cluster"]["server"] = server
    dst.write_text(json.dumps(cfg))
    return str(dst)
