"""The node namespace's routing for packets the datapath hands to a local proxy (bpf/lib/proxy.h).

A packet assigned to a proxy socket by bpf_sk_assign is still routed: its destination is a pod's or the world's
address, so without a local route the stack would forward it (and drop it: a forwarded packet may not carry a
socket). Cilium's rule and table (pkg/datapath/linux/linux_defaults: MagicMarkIsToProxy 0x0200 under
MagicMarkHostMask 0x0F00, RouteTableToProxy 2004, RulePriorityToProxyIngress 9): packets with the mark are
delivered locally, nothing else changes. Set up in the node namespace only (CILIUMCTL_NODE_NETNS in tests).
"""

from __future__ import annotations

import subprocess

from ciliumctl.base import netns
from ciliumctl.base.errors import EnvironmentProblem

MARK, MASK = 0x0200, 0x0F00        # bpf/lib/proxy.h CTL_MARK_TO_PROXY, CTL_MARK_HOST_MASK
TABLE = 2004
PRIORITY = 9


def _enter_node() -> None:
    path = netns.node_netns()
    if path is not None:
        netns.enter(path, "node network namespace", "create it or unset CILIUMCTL_NODE_NETNS")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, preexec_fn=_enter_node)
    if check and proc.returncode != 0:
        raise EnvironmentProblem(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'} (needs root and iproute2)")
    return proc


def installed() -> bool:
    rules = _ip("-4", "rule", "show", "priority", str(PRIORITY), check=False).stdout
    routes = _ip("-4", "route", "show", "table", str(TABLE), check=False).stdout
    return f"lookup {TABLE}" in rules and "local default dev lo" in routes


def ensure() -> None:
    """Idempotent: the rule and the local route of marked packets."""
    _ip("-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", str(TABLE))
    if f"lookup {TABLE}" not in _ip("-4", "rule", "show", "priority", str(PRIORITY), check=False).stdout:
        _ip("-4", "rule", "add", "priority", str(PRIORITY), "fwmark", f"{MARK:#x}/{MASK:#x}", "lookup", str(TABLE))


def remove() -> None:
    """Idempotent."""
    while f"lookup {TABLE}" in _ip("-4", "rule", "show", "priority", str(PRIORITY), check=False).stdout:
        _ip("-4", "rule", "del", "priority", str(PRIORITY))
    _ip("-4", "route", "flush", "table", str(TABLE), check=False)
