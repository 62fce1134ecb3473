"""Kubernetes Events on a policy the agent rejects or enforces only in part, beside its status conditions.

What Cilium 1.19 writes: the `Valid` condition (operator/pkg/networkpolicy/validator.go, "Policy validation
succeeded" or the Sanitize error) and an agent log line; the per-node `status.nodes[<node>]` (ok, error,
enforcing) of older agents is no longer written (CiliumNetworkPolicyStatus keeps derivativePolicies and
conditions). status_conditions writes that `Valid` condition and our `Enforced` one. The Event is the kubelet's
way of saying why on an object (Warning, a CamelCase reason, source = component and node), so that
`kubectl describe cnp NAME` and `kubectl get events` show what this node's agent did with the policy.

One Event per node, policy version and verdict: its name is derived from them, so an agent restart that finds the
same verdict creates nothing new (409 AlreadyExists)."""

from __future__ import annotations

import datetime
import hashlib

from ciliumctl.cluster.kube import ApiFailure, Kube

COMPONENT = "ciliumctl-agent"
REASON_INVALID = "PolicyInvalid"
REASON_PARTIAL = "PolicyPartiallyEnforced"
MAX_MESSAGE = 1024
_CLUSTER_SCOPED_NAMESPACE = "default"   # where Kubernetes puts the events of cluster-scoped objects (Nodes, ...)


def event_for(obj: dict, node: str, reason: str, message: str) -> dict:
    meta = obj.get("metadata") or {}
    key = "\0".join([node, meta.get("uid", ""), str(meta.get("generation", "")), reason, message])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "name": meta.get("name", ""),
                "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")}
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta.get('name', 'policy')}.{hashlib.sha256(key.encode()).hexdigest()[:16]}",
                     "namespace": meta.get("namespace") or _CLUSTER_SCOPED_NAMESPACE},
        "involvedObject": involved, "reason": reason, "type": "Warning",
        "message": f"node {node}: {message}"[:MAX_MESSAGE],
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT, "reportingInstance": node,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def record(kube: Kube, obj: dict, node: str, reason: str, message: str) -> bool:
    """Create the Event; False when it exists already (the same verdict was reported before)."""
    try:
        kube.create(event_for(obj, node, reason, message))
        return True
    except ApiFailure as err:
        if err.status == 409:
            return False
        raise


def record_verdict(kube: Kube, obj: dict, node: str, valid: bool, message: str, gaps: list) -> bool:
    """The Event a verdict calls for: rejected (why), enforced in part (what is not), else none."""
    if not valid:
        return record(kube, obj, node, REASON_INVALID, f"policy not imported: {message}")
    if gaps:
        parts = "; ".join(f"{g.path_text}: {g.sentence()}" for g in gaps)
        return record(kube, obj, node, REASON_PARTIAL, f"policy imported partially, not enforced: {parts}")
    return False
