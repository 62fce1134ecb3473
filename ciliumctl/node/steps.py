"""The shape of an install step, shared by the install sequence and the steps other node parts add (agent, CNI)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Options:
    enforcement_mode: str | None = None   # None: keep the current setting
    audit: bool | None = None
    pool: str | None = None
    monitor_aggregation: str | None = None            # none|lowest|low|medium|maximum; None: keep
    monitor_aggregation_interval: str | None = None   # a duration (5s); None: keep
    monitor_aggregation_flags: str | None = None      # syn,fin,rst; None: keep
    service_cidr: str | None = None                   # where ClusterIP frontends come from; None: keep
    devices: str | None = None                        # NodePort devices, comma-separated; None: keep, "": none
    host_firewall: bool | None = None                 # the host firewall on/off; None: keep
    host_firewall_audit: bool | None = None
    node_labels: str | None = None                    # k=v,...; None: keep
    remote_nodes: str | None = None                   # IP/CIDR,...; None: keep
    remote_node_labels: list[str] | None = None       # ADDR:k=v,... per node; None: keep
    node_selector_labels: bool | None = None          # identities of other nodes' labels; None: keep
    force: bool = False                               # enforce the host firewall even if it cuts live connections
    extra: dict = field(default_factory=dict)   # options of appended steps (agent, CNI)
    only: tuple[str, ...] | None = None          # run only these steps (e.g. CORE_STEPS for a sandbox node)


@dataclass
class Outcome:
    step: str
    status: str          # ok | done | would | skipped | removed
    detail: str = ""


@dataclass
class Step:
    name: str
    check: Callable[[Options], str | None]            # None = nothing to do; else what `run` would do
    run: Callable[[Options], str] | None = None       # does it; returns a short detail
    undo: Callable[[], str | None] | None = None      # for uninstall; returns a detail or None (nothing to do)
