"""The DaemonSet's init step on a node (`python -m ciliumctl.node.cni.host_init`): put the CNI plugin, the IPAM and
loopback plugins and the network configuration on the host, with the node's pod CIDR as its address pool.

The plugin runs on the host, outside the agent's image, so it cannot be the venv launcher of cni_install: it is
the plugin's own module (standard library only) behind a shebang of the host's Python. host-local and loopback
come from the image (Debian's containernetworking-plugins), as Cilium's image ships its plugin to the host.
The pool: $CILIUMCTL_POOL, else the Node's spec.podCIDR (controller-manager --allocate-node-cidrs), else the
pool already configured on the node, else the default; it is saved in the node settings, where the agent reads it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ciliumctl.base.errors import CiliumctlError
from ciliumctl.endpoints import cni_plugin, ipam
from ciliumctl.node import settings
from ciliumctl.node.cni import install as cni_install

HOST_PLUGINS = ("host-local", "loopback")


def host_plugin_text(python: str) -> str:
    source = Path(cni_plugin.__file__).read_text()
    if source.startswith("#!"):
        source = source.split("\n", 1)[1]
    return f"#!{python} -S\n{cni_install.LAUNCHER_MARK}\n{source}"


def node_pod_cidr(node_name: str) -> str | None:
    from ciliumctl.cluster.kube import KINDS, Kube

    node = Kube.in_cluster().get(KINDS["Node"], node_name)
    return ((node or {}).get("spec") or {}).get("podCIDR") or None


def choose_pool(node_name: str | None) -> tuple[str, str]:
    """(pool, where it came from)."""
    if os.environ.get("CILIUMCTL_POOL"):
        return ipam.effective_pool(), "$CILIUMCTL_POOL"
    if node_name:
        cidr = node_pod_cidr(node_name)
        if cidr:
            return ipam.effective_pool(explicit=cidr), f"Node {node_name} spec.podCIDR"
    configured = settings.load_settings().pool
    if configured:
        return ipam.effective_pool(explicit=configured), "node settings"
    return ipam.effective_pool(), "default"


def install(conf_dir: str, bin_dir: str, python: str, plugins_from: str, node_name: str | None) -> list[str]:
    pool, source = choose_pool(node_name)
    s = settings.load_settings()
    if s.pool != pool:
        s.pool = pool
        settings.save_settings(s)
    done = [f"address pool {pool} ({source})"]
    os.makedirs(bin_dir, exist_ok=True)
    for name in HOST_PLUGINS:
        src, dst = Path(plugins_from) / name, Path(bin_dir) / name
        if not dst.exists():
            tmp = dst.with_name(f".{name}.tmp{os.getpid()}")
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dst)
            done.append(f"copied {name} to {bin_dir}")
    # host-local keeps cluster pods' addresses on the host (/var/lib/cni/networks) across agent restarts; the agent's
    # own pool (node mode) is not wired for the DaemonSet yet
    done += cni_install.install_cni(conf_dir, bin_dir, pool=pool, host_local=True)
    plugin = Path(bin_dir) / cni_install.PLUGIN_NAME
    tmp = plugin.with_name(f".{plugin.name}.tmp{os.getpid()}")
    tmp.write_text(host_plugin_text(python))
    os.chmod(tmp, 0o755)
    os.replace(tmp, plugin)     # the host's Python, not this image's venv
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ciliumctl.node.cni.host_init", description=__doc__.split("\n")[0])
    p.add_argument("--cni-conf-dir", default=cni_install.DEFAULT_CONF_DIR)
    p.add_argument("--cni-bin-dir", default=cni_install.DEFAULT_BIN_DIR)
    p.add_argument("--host-python", default="/usr/bin/python3", help="the node's Python 3 for the plugin")
    p.add_argument("--plugins-from", default="/usr/lib/cni", help="where host-local and loopback are")
    args = p.parse_args(argv)
    try:
        for line in install(args.cni_conf_dir, args.cni_bin_dir, args.host_python, args.plugins_from,
                            os.environ.get("CILIUMCTL_NODE_NAME")):
            print(line)
    except (CiliumctlError, OSError) as err:
        print(f"cni init: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
