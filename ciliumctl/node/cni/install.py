"""Install and uninstall the CNI plugin on a node: the conflist in the runtime's CNI config directory and the
plugin executable in its CNI bin directory.

The executable is a three-line launcher, not pip's console script: it starts the venv's Python with -S (no site
packages: the plugin needs only the standard library) and imports the plugin from this source tree, so a pod's
ADD pays ~20 ms of interpreter start-up instead of ~80-440 ms. It is written as a file (not a symlink) so that it
also works when the bin directory is a host path mounted into the agent's container.

Addresses: pods get the upper half of the node pool; `ciliumctl endpoint add` (H4's Pool) must stay in the lower
half (cni_range() says where the line is). The conflist has no "ipam" section, so the agent allocates them itself
(node/cni/pool.py, as Cilium's conflist leaves IPAM to its agent); host_local=True writes a host-local section over
the same range instead (the cluster DaemonSet's, whose node keeps host-local's leases on a host path)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from pathlib import Path

import ciliumctl
from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError

CONFLIST_NAME = "05-ciliumctl.conflist"
PLUGIN_NAME = "ciliumctl-cni"
NETWORK_NAME = "ciliumctl"
LAUNCHER_MARK = "# ciliumctl CNI plugin launcher"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"


def cni_range(pool: str) -> tuple[str, str]:
    """The part of the node pool (upper half) that the CNI IPAM plugin allocates from."""
    try:
        net = ipaddress.ip_network(pool, strict=False)
    except ValueError:
        raise UsageError(f"address pool {pool!r} is not a CIDR; give one like 10.200.0.0/16") from None
    if net.version != 4 or net.prefixlen > 29:
        raise UsageError(f"address pool {pool}: the CNI plugin needs an IPv4 pool of /29 or larger")
    upper = list(net.subnets(prefixlen_diff=1))[1]
    return str(upper.network_address), str(upper.broadcast_address - 1)


def conflist(pool: str, agent_socket: str | None = None, ipam_data_dir: str | None = None,
             host_veth_prefix: str = "lxc", name: str = NETWORK_NAME, host_local: bool = False) -> dict:
    start, end = cni_range(pool)   # also checks the pool
    plugin: dict[str, object] = {
        "type": PLUGIN_NAME,
        # podman's cleanup process drops custom environment variables: the socket path travels in the file
        "agentSocket": str(agent_socket or paths.agent_socket()),
        "hostVethPrefix": host_veth_prefix,
        "capabilities": {"io.kubernetes.cri.pod-annotations": True},
    }
    if host_local:
        net = ipaddress.ip_network(pool, strict=False)
        ipam = {"type": "host-local", "ranges": [[{"subnet": str(net), "rangeStart": start, "rangeEnd": end}]]}
        if ipam_data_dir:
            ipam["dataDir"] = str(ipam_data_dir)
        plugin["ipam"] = ipam
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def launcher_text(python: str | None = None) -> str:
    src = Path(ciliumctl.__file__).resolve().parent.parent
    return (f"#!{python or sys.executable} -S\n{LAUNCHER_MARK}\nimport sys\n"
            f"sys.path.insert(0, {str(src)!r})\n"
            "from ciliumctl.endpoints.cni_plugin import main\nmain()\n")


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise EnvironmentProblem(f"cannot write {path}: {err.strerror} (run as root, or pass --cni-conf-dir/"
                                 "--cni-bin-dir pointing at writable directories)") from None


def install_cni(conf_dir: str = DEFAULT_CONF_DIR, bin_dir: str = DEFAULT_BIN_DIR, *, pool: str | None = None,
                agent_socket: str | None = None, ipam_data_dir: str | None = None,
                host_veth_prefix: str = "lxc", host_local: bool = False, dry_run: bool = False) -> list[str]:
    """Write the conflist and the plugin launcher (idempotent). Returns what was (or would be) done."""
    if pool is None:
        from ciliumctl.endpoints import ipam

        pool = ipam.effective_pool()
    conf_path = Path(conf_dir) / CONFLIST_NAME
    bin_path = Path(bin_dir) / PLUGIN_NAME
    text = json.dumps(conflist(pool, agent_socket, ipam_data_dir, host_veth_prefix, host_local=host_local),
                      indent=2) + "\n"
    actions = [f"write CNI network configuration {conf_path}", f"write CNI plugin {bin_path}"]
    if dry_run:
        return actions
    for d in (conf_dir, bin_dir):
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as err:
            raise EnvironmentProblem(f"cannot create {d}: {err.strerror} (run as root)") from None
    _write_atomic(bin_path, launcher_text(), 0o755)
    _write_atomic(conf_path, text, 0o644)
    return actions


def uninstall_cni(conf_dir: str = DEFAULT_CONF_DIR, bin_dir: str = DEFAULT_BIN_DIR, *,
                  dry_run: bool = False) -> list[str]:
    """Remove what install_cni wrote (only ours: a launcher not written by us is left alone)."""
    actions = []
    conf_path = Path(conf_dir) / CONFLIST_NAME
    bin_path = Path(bin_dir) / PLUGIN_NAME
    if conf_path.exists():
        actions.append(f"remove CNI network configuration {conf_path}")
        if not dry_run:
            conf_path.unlink()
    if bin_path.is_symlink() or bin_path.exists():
        try:
            ours = bin_path.is_symlink() or LAUNCHER_MARK in bin_path.read_text(errors="replace")[:400]
        except OSError:
            ours = False
        if ours:
            actions.append(f"remove CNI plugin {bin_path}")
            if not dry_run:
                bin_path.unlink()
    return actions


# --- `ciliumctl install` / `uninstall` step (ciliumctl/node/install.py) ---------------------------------------

def _record_path() -> Path:
    return paths.state_dir() / "cni-install.json"


def _wanted_dirs(options) -> tuple[str, str] | None:
    """Where to install: --cni-conf-dir/--cni-bin-dir (Options.extra), else $CILIUMCTL_CNI_CONF_DIR /
    $CILIUMCTL_CNI_BIN_DIR, else the defaults; None on a sandbox node (CILIUMCTL_NODE_NETNS) without explicit
    directories, where the machine's own runtimes must not be pointed at a namespace that is not the node."""
    extra = getattr(options, "extra", None) or {}
    conf_dir = extra.get("cni_conf_dir") or os.environ.get("CILIUMCTL_CNI_CONF_DIR")
    bin_dir = extra.get("cni_bin_dir") or os.environ.get("CILIUMCTL_CNI_BIN_DIR")
    if not (conf_dir or bin_dir) and os.environ.get("CILIUMCTL_NODE_NETNS"):
        return None
    return conf_dir or DEFAULT_CONF_DIR, bin_dir or DEFAULT_BIN_DIR


def _pool_of(options) -> str:
    from ciliumctl.endpoints import ipam
    from ciliumctl.node import settings as node_settings

    return ipam.effective_pool(explicit=getattr(options, "pool", None) or None,
                               configured=node_settings.load_settings().pool or None)


def _expected(options) -> tuple[Path, str, Path, str] | None:
    dirs = _wanted_dirs(options)
    if dirs is None:
        return None
    conf_dir, bin_dir = dirs
    text = json.dumps(conflist(_pool_of(options)), indent=2) + "\n"
    return Path(conf_dir) / CONFLIST_NAME, text, Path(bin_dir) / PLUGIN_NAME, launcher_text()


def step_check(options) -> str | None:
    want = _expected(options)
    if want is None:
        return None
    conf_path, conf_text, bin_path, bin_text = want
    try:
        same = conf_path.read_text() == conf_text and bin_path.read_text() == bin_text
    except OSError:
        same = False
    return None if same else f"write {conf_path} and {bin_path}"


def step_run(options) -> str:
    dirs = _wanted_dirs(options)
    if dirs is None:
        return "skipped on a sandbox node (pass --cni-conf-dir/--cni-bin-dir to install there)"
    conf_dir, bin_dir = dirs
    install_cni(conf_dir, bin_dir, pool=_pool_of(options))
    from ciliumctl.base import statefile

    statefile.write_json(_record_path(), {"conf_dir": conf_dir, "bin_dir": bin_dir})
    return f"{Path(conf_dir) / CONFLIST_NAME}, {Path(bin_dir) / PLUGIN_NAME}"


def step_undo() -> str | None:
    from ciliumctl.base import statefile

    record = statefile.read_json(_record_path())
    if not record:
        return None
    done = uninstall_cni(record["conf_dir"], record["bin_dir"])
    with contextlib.suppress(FileNotFoundError):
        _record_path().unlink()
    return "removed " + ", ".join(a.split(" ", 1)[1] for a in done) if done else None


def install_step():
    """The step `ciliumctl install` runs: install.register_step(cni_install.install_step())."""
    from ciliumctl.node.steps import Step

    return Step("cni plugin", step_check, step_run, step_undo)
