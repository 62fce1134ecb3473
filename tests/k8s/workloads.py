"""Workloads and checks shared by the tests on the real two-node cluster (test_cluster_*.py): test pods pinned to a
node, kubectl apply of objects, a connection attempt from inside a pod, the agent pod of a node."""

from __future__ import annotations

import contextlib
import json

from support.cli import run_cli

NS = "ciliumctl-system"     # where `ciliumctl install --kubeconfig` puts the agent
CONNECT = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
           " print('connected')\nexcept OSError as e:\n print('failed', e)\n")


@contextlib.contextmanager
def agent_installed(k8s, env):
    """The agent DaemonSet as an admin installs it (`ciliumctl install --kubeconfig --wait`), uninstalled on leaving."""
    res = run_cli("install", "--kubeconfig", str(k8s.kubeconfig), "--image", "ciliumctl:local",
                  "--image-pull-policy", "Never", "--wait", env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        yield
    finally:
        run_cli("uninstall", "--kubeconfig", str(k8s.kubeconfig), env=env, timeout=300)


def pod(name: str, node: str, command: list[str], app: str | None = None) -> dict:
    """A pod of the test image on `node`, labelled app=<app or its name>."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app or name}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "ciliumctl-test:local", "imagePullPolicy": "Never", "command": command}]}}


def apply(k8s, *objs: dict) -> None:
    k8s.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def kubectl_json(k8s, *args) -> dict:
    return json.loads(k8s.kubectl(*args, "-o", "json").stdout)


def connects(k8s, src: str, ip: str, port: int = 8080) -> bool:
    """Whether pod `src` can open a TCP connection to ip:port (2 s)."""
    out = k8s.kubectl("exec", src, "--", "python3", "-c", CONNECT, ip, str(port), timeout=30).stdout
    assert out.startswith(("connected", "failed")), out
    return out.startswith("connected")


def agent_pod(k8s, node: str) -> str:
    """The name of the running agent pod on `node`."""
    pods = kubectl_json(k8s, "get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=ciliumctl-agent")["items"]
    running = [p["metadata"]["name"] for p in pods
               if not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName") == node]
    assert len(running) == 1, pods
    return running[0]
