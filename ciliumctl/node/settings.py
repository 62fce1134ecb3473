"""The node's settings (enforcement mode, audit, address pool, policy revision in `<state>/node.json`), the
node lock that every state-changing command holds from reading to programming the maps, and the guards every
node command shares.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import CiliumctlError, EnvironmentProblem, NotFound, UsageError
from ciliumctl.endpoints import ipam
from ciliumctl.policy.resolved import Enforcement


@dataclass
class Settings:
    enforcement_mode: str = Enforcement.DEFAULT.value
    audit: bool = False
    pool: str = ""              # "" = $CILIUMCTL_POOL or the default pool
    revision: int = 0           # policy revision, bumped by every reconcile that programs the maps
    installed: bool = False
    policy_source: str = "node"     # "cluster" while an agent in cluster mode programs the maps (node.cluster_sync)
    # how much the datapath traces (datapath/monitor.py; Cilium's --monitor-aggregation* and their defaults)
    monitor_aggregation: str = "medium"
    monitor_aggregation_interval: float = 5.0
    monitor_aggregation_flags: str = "syn,fin,rst"
    # where ClusterIP frontends come from (install --service-cidr; kube-apiserver's default range)
    service_cidr: str = "10.96.0.0/12"
    # the node's own interfaces that take NodePort traffic from outside (install --devices; Cilium's --devices)
    devices: str = ""
    # the host firewall (issue 13): nodeSelector policies on the node's own traffic (install --host-firewall,
    # Cilium's --enable-host-firewall); audit: would-be drops of the host reported as AUDIT, forwarded
    host_firewall: bool = False
    host_firewall_audit: bool = False
    node_labels: str = ""       # k=v,... the node's labels that nodeSelector rules match (install --node-labels)
    remote_nodes: str = ""      # addresses of the other nodes (remote-node, 6), comma-separated IPs or CIDRs
    # node mode: labels of other nodes (a --remote-nodes address or prefix, or one inside one -> "k=v,..."), their
    # identities' with --enable-node-selector-labels (install --remote-node-labels)
    remote_node_labels: dict[str, str] = field(default_factory=dict)
    # each other node's addresses get an identity of its labels (cluster mode: its Node's; node mode:
    # --remote-nodes with --remote-node-labels), which fromNodes/toNodes select (install
    # --enable-node-selector-labels, Cilium's flag of that name)
    node_selector_labels: bool = False

    @property
    def monitor(self):
        from ciliumctl.datapath.monitor import MonitorConfig

        return MonitorConfig(self.monitor_aggregation, self.monitor_aggregation_interval,
                             self.monitor_aggregation_flags)

    @property
    def mode(self) -> Enforcement:
        return Enforcement(self.enforcement_mode)


def settings_path() -> Path:
    return paths.state_dir() / "node.json"


def load_settings() -> Settings:
    data = statefile.read_json(settings_path(), default={}) or {}
    known = {k: v for k, v in data.items() if k in Settings.__dataclass_fields__}
    try:
        s = Settings(**known)
        Enforcement(s.enforcement_mode)   # ValueError on a mode that does not exist
        s.monitor.pack()
        return s
    except (TypeError, ValueError, KeyError):
        raise EnvironmentProblem(f"{settings_path()}: invalid node settings; fix or remove the file") from None


def save_settings(s: Settings) -> None:
    statefile.write_json(settings_path(), asdict(s))


def parse_mode(value: str) -> Enforcement:
    try:
        return Enforcement(value.lower())
    except ValueError:
        raise UsageError(f"enforcement mode {value!r}: use default, always or never") from None


@contextlib.contextmanager
def environment_errors(what: str):
    """Kernel and file-system failures (bpf(2), netlink, files) become one-line EnvironmentProblems."""
    try:
        yield
    except CiliumctlError:
        raise
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise EnvironmentProblem(f"{what}: {err.strerror or err}{where}; check that you are root and that "
                                 "`ciliumctl install` succeeded") from None
    except Exception as err:
        if type(err).__name__ != "NetlinkError":
            raise
        code, msg = (err.args + ("",))[:2] if err.args else (0, str(err))
        raise EnvironmentProblem(f"{what}: netlink error {code} {msg}".rstrip() + "; check that you are root and "
                                 "the node network namespace is usable") from None


def lock_path() -> Path:
    return paths.state_dir() / "node.lock"


def changing_path() -> Path:
    """Written by every holder of the node lock and removed when it is done. Found by the next holder, it tells
    that a command died (kill -9) or failed half way since the last repair: the kernel may not follow the stored
    state (node.verify compares and repairs)."""
    return paths.state_dir() / "node.changing"


_interrupted: list[bool] = []     # per held lock: a dead command's marker not repaired yet


@contextlib.contextmanager
def locked():
    """The node lock: held across read-modify-program of node state. Not re-entrant: take it once."""
    with statefile.locked(lock_path()):
        marker = changing_path()
        left = marker.exists()
        if not left:
            statefile.write_json(marker, {"pid": os.getpid()})
        _interrupted.append(left)
        done = False
        try:
            yield
            done = True
        except (UsageError, NotFound):      # a refusal, not a command failing half way
            done = True
            raise
        finally:
            unrepaired = _interrupted.pop()
            if done and not unrepaired:
                with contextlib.suppress(FileNotFoundError):
                    marker.unlink()


def interrupted() -> bool:
    """Under locked(): a command before this one died or failed half way, and nothing repaired since."""
    return bool(_interrupted) and _interrupted[-1]


def repaired() -> None:
    """Under locked(): the kernel follows the stored state again; the marker goes when this command is done."""
    if _interrupted:
        _interrupted[-1] = False


def pool() -> ipam.Pool:
    return ipam.Pool(ipam.effective_pool(configured=load_settings().pool or None))


def node_name() -> str:
    return os.environ.get("CILIUMCTL_NODE_NAME") or os.uname().nodename


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs root (network namespaces, veth, eBPF); run it with sudo")
