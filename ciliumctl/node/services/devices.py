"""The NodePort devices of a node in cluster mode, where no `install` runs on the node: the agent puts bpf_host.c's
programs (from_netdev / to_netdev, lib/nodeport.h) on them when it starts, and takes them off when it stops
because ciliumctl was uninstalled.

Which devices: Cilium's `devices` option (pkg/option/config.go Devices, "List of devices facing cluster/external
network (used for BPF NodePort, BPF masquerading and host firewall)", daemon/cmd/daemon_main.go), here the
`devices` key of the install's ConfigMap ($CILIUMCTL_DEVICES); without it the agent detects the node's native
devices as Cilium's does (pkg/datapath/linux/devices_controller.go; node.hostfw.devices). An empty value names
none. The devices are stored in the node settings (`status` shows them, the host firewall marks them).

An agent restart or a rolling update keeps them (the programs are pinned, NodePort keeps working while the agent
is away); only an agent whose DaemonSet is gone or being deleted detaches them (cluster.install's uninstall waits
for the agents to stop before their RBAC goes)."""

from __future__ import annotations

import logging
import os

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError

log = logging.getLogger("ciliumctl.node.services.devices")

ENV = "CILIUMCTL_DEVICES"


def wanted() -> tuple[list[str], str]:
    """(device names, where they came from): the configured ones, else the detected native devices."""
    configured = os.environ.get(ENV)
    if configured is not None:
        return [d.strip() for d in configured.split(",") if d.strip()], "configured (devices)"
    from ciliumctl.node.hostfw import devices as native

    return native.detect(), "detected"


def program(names: list[str]) -> list[int]:
    """The device programs on exactly `names` in the node namespace (others detached), the host endpoint's mark
    on them while the host firewall is on, and the settings' devices; returns their ifindexes."""
    from ciliumctl.datapath import hooks
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node.hostfw import host as hostfw

    with node_settings.locked():
        dp = node_reconcile.open_datapath()     # enters the node namespace; pins the datapath on first use
        try:
            try:
                wanted_idx = [dp.attach_device(name) for name in names]
            except UsageError as err:
                raise EnvironmentProblem(f"NodePort devices {','.join(names)} ({ENV}): {err}; fix the `devices` "
                                         "key of the ConfigMap (`install --devices`)") from None
            stale = set(hooks.device_links(paths.bpffs_dir())) - set(wanted_idx)
            for idx in stale:
                dp.detach_device(idx)
            hostfw.program_devices(dp, wanted_idx, stale)
        finally:
            dp.close()
        s = node_settings.load_settings()
        if s.devices != ",".join(names):
            s.devices = ",".join(names)
            node_settings.save_settings(s)
    return wanted_idx


def start() -> list[str]:
    """At the agent's start in cluster mode: attach the wanted devices; returns their names."""
    names, source = wanted()
    program(names)
    log.info("NodePort devices (%s): %s", source, ", ".join(names) or "none")
    return names


def uninstalled(kube, namespace: str | None) -> bool:
    """Whether the agent's DaemonSet is gone or being deleted (False when that cannot be read: a restart keeps
    the devices)."""
    from ciliumctl.cluster.kube import KINDS, ApiFailure
    from ciliumctl.cluster.manifests import AGENT

    if not namespace:
        return False
    try:
        ds = kube.get(KINDS["DaemonSet"], AGENT, namespace)
    except (ApiFailure, EnvironmentProblem, OSError) as err:
        log.warning("cannot read DaemonSet %s/%s, NodePort devices kept: %s", namespace, AGENT, err)
        return False
    return ds is None or bool(ds["metadata"].get("deletionTimestamp"))


def stop(kube, namespace: str | None) -> None:
    """At the agent's stop in cluster mode: after an uninstall, the device programs come off."""
    if uninstalled(kube, namespace):
        program([])
        log.info("ciliumctl was uninstalled: NodePort programs taken off the devices")
