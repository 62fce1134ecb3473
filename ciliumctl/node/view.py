"""Read-only views of the node: its endpoints and policies for `policy trace --live`, and `status`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.endpoints import ipam, registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity.allocator import IdentityBackend
from ciliumctl.node.reconcile import allocator, parsed_policies
from ciliumctl.node.settings import load_settings
from ciliumctl.policy import enforcement_gaps, store
from ciliumctl.policy.resolved import Enforcement


@dataclass
class NodeView:
    """What `policy trace --live` and status need: this node's endpoints and policies, parsed, plus settings."""

    endpoints: list[Endpoint]
    stored: list[store.StoredPolicy]
    policies: list                     # model.parse_policy() of every stored policy
    mode: Enforcement
    audit: bool
    revision: int
    allocator: IdentityBackend         # the node's identity table (the cluster's in cluster mode)


def live_view() -> NodeView:
    """This node's endpoints, policies and settings for `policy trace --live`. Read-only and lock-free (every
    state file is replaced atomically), so it needs no write access to the state directory."""
    settings = load_settings()
    stored = store.load_all()
    return NodeView(registry.load_all(), stored, parsed_policies(stored), settings.mode, settings.audit,
                    settings.revision, allocator())


def trace_inputs():
    """This node's endpoints, stored policies and mode for `policy trace --live`. Identities are read from the
    node's table and copied: hypothetical trace endpoints never get identities allocated in node state."""
    from ciliumctl.identity.allocator import MemoryAllocator
    from ciliumctl.policy.trace import LiveInputs

    view = live_view()
    alloc = view.allocator
    snapshot = alloc.snapshot() if hasattr(alloc, "snapshot") else MemoryAllocator(alloc.known())
    from ciliumctl.node.hostfw import host as hostfw

    settings = load_settings()
    host = hostfw.gap_context(settings)
    return LiveInputs(view.endpoints, list(view.policies), view.mode, snapshot, bool(view.audit),
                      hostfw.parse_node_labels(settings.node_labels) if host else None, host)


def policy_enforcements(stored: list[store.StoredPolicy]) -> list[enforcement_gaps.PolicyEnforcement]:
    """How much of each stored policy the datapath enforces (`policy get`'s ENFORCED, `status`), with this node's
    host firewall."""
    from ciliumctl.node.hostfw import host as hostfw

    host = hostfw.gap_context(load_settings())
    return [enforcement_gaps.PolicyEnforcement(
        f"{p.kind} {p.namespace}/{p.name}" if p.namespace else f"{p.kind} {p.name}",
        enforcement_gaps.gaps_of_data(p.data, host)) for p in stored]


def _service_counts() -> dict:
    """The services in force (the node's store, or in cluster mode what the agent programmed)."""
    from ciliumctl.node.services import ops as service_ops

    try:
        return service_ops.services().counts()
    except EnvironmentProblem as err:     # an unreadable store: said in the row, not a failed status
        return {"error": str(err)}


def status() -> dict:
    """Node status: datapath programs and maps, endpoints, revision, mode, lost events."""
    from ciliumctl.node import endpoint_check
    from ciliumctl.node import settings as node_settings

    settings = load_settings()
    stored = store.load_all()
    eps, corrupt = registry.scan()      # a corrupt record is reported below, not a failed status
    try:
        pinned = paths.bpffs_dir().is_dir() and any(paths.bpffs_dir().iterdir())
    except OSError:       # bpffs is root-only
        pinned = False
    out: dict = {
        "installed": settings.installed or pinned,    # `endpoint add` loads the datapath on first use too
        "enforcement_mode": settings.enforcement_mode,
        "audit": settings.audit,
        "policy_revision": settings.revision,
        "policies": len(stored),
        # policies with parts the datapath does not enforce (policy.enforcement_gaps)
        "partially_enforced": [e.to_dict() for e in policy_enforcements(stored) if e.gaps],
        "endpoints": {"total": len(eps) + len(corrupt), "ready": sum(1 for e in eps if e.state == "ready")},
        "problems": endpoint_check.problems(node_settings.pool()),
        "address_pool": ipam.effective_pool(configured=settings.pool or None),
        "services": _service_counts(),
        # the host firewall (node.hostfw.host): off unless install --host-firewall
        "host_firewall": {"enabled": settings.host_firewall, "audit": settings.host_firewall_audit,
                          "devices": [d for d in settings.devices.split(",") if d],
                          "node_labels": settings.node_labels, "remote_nodes": settings.remote_nodes,
                          "remote_node_labels": settings.remote_node_labels,
                          "node_selector_labels": settings.node_selector_labels},
        "bpffs": str(paths.bpffs_dir()),
        "datapath": None,
    }
    if os.geteuid() != 0:
        out["datapath"] = {"error": "needs root to read the pinned maps"}
        return out
    if not pinned:
        out["datapath"] = {"error": "not installed; run `ciliumctl install`"}
        return out
    try:
        from ciliumctl.datapath.loader import Datapath

        dp = Datapath.open()
        out["datapath"] = dp.status()
    except ImportError:
        out["datapath"] = {"error": "datapath module missing from this build"}
    except EnvironmentProblem as err:
        out["datapath"] = {"error": str(err)}
    return out
