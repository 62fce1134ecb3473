"""The containerd configuration every suite that runs a real containerd uses (CNI tests, the test cluster's
nodes): its state under one directory, the CRI plugin set up as this machine needs it (../shared/MACHINE.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

_CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{dir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


def containerd_config(dir: Path, pause: str, sock: Path, cni_bin: Path | str = "/opt/cni/bin",
                      cni_conf: Path | str = "/etc/cni/net.d") -> str:
    """containerd's config.toml: its root, state, opt and runc state below `dir`, its API on `sock`, `pause` as the
    sandbox image; the plugins this machine lacks are off, restrict_oom_score_adj since root lacks
    CAP_SYS_RESOURCE, runc (crun refuses this cgroup layout)."""
    return _CONFIG.format(dir=dir, sock=sock, pause=pause, runc=shutil.which("runc"), cni_bin=cni_bin,
                          cni_conf=cni_conf)
