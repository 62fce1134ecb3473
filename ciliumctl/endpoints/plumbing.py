"""Sandbox endpoint plumbing: a named network namespace, a veth pair and routes, the way Cilium (and Calico)
wire a pod: the pod has its address as a /32 and a default route via 169.254.1.1 (onlink); the host side has
proxy_arp and a /32 route back to the pod. Everything host-side lives in the node network namespace
(ciliumctl.nodens); pod namespaces are peers under /run/netns.

Names are derived from a prefix so that uninstall can find leftovers: netns `<prefix>-ep<id>` (the prefix is the
node netns name when one is set, else `cctl`), host veth `cctlep<id>`."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ciliumctl.base import netns as nodens
from ciliumctl.base.errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_DIR = Path("/run/netns")
GATEWAY = "169.254.1.1"
HOST_IF_PREFIX = "cctlep"
POD_IFNAME = "eth0"


def netns_prefix() -> str:
    node = nodens.node_netns()
    return f"{os.path.basename(node)}-ep" if node else "cctl-ep"


def netns_name(ep_id: int) -> str:
    return f"{netns_prefix()}{ep_id}"


def host_ifname(ep_id: int) -> str:
    return f"{HOST_IF_PREFIX}{ep_id}"


@dataclass
class Plumbed:
    netns: str          # path, /run/netns/NAME
    host_ifname: str
    host_ifindex: int


def ip_netns(*args: str) -> None:
    proc = subprocess.run(["ip", "netns", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnvironmentProblem(f"ip netns {' '.join(args)}: {msg[-1] if msg else 'failed'} "
                                 "(needs root and iproute2)")


def _ipr() -> IPRoute:
    from pyroute2 import IPRoute

    nodens.enter_node_netns()
    return IPRoute()


def _write_sysctl(path: str, value: str) -> None:
    """A sysctl of the current (node) network namespace: /proc/sys/net follows the calling thread's netns."""
    try:
        with open(path) as fh:
            if fh.read().strip() == value:
                return
        with open(path, "w") as fh:
            fh.write(value)
    except OSError as err:
        raise EnvironmentProblem(f"cannot set {path} to {value}: {err.strerror} (needs root)") from None


def enable_forwarding() -> None:
    """Routing between endpoints happens in the node namespace: it must forward IPv4, and its loopback must be
    up (without a local routing table the kernel takes every neighbour for a broadcast address, NOARP, and TCP
    drops the frames it forwards)."""
    nodens.enter_node_netns()
    _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    with _ipr() as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo and not ipr.get_links(lo[0])[0]["flags"] & 1:
            ipr.link("set", index=lo[0], state="up")


def create(ep_id: int, ipv4: str) -> Plumbed:
    """Namespace + veth + addresses + routes for endpoint `ep_id`. Undone by remove() on any failure."""
    from pyroute2.netlink.exceptions import NetlinkError

    name = netns_name(ep_id)
    path = str(NETNS_DIR / name)
    host = host_ifname(ep_id)
    if os.path.exists(path):
        raise UsageError(f"network namespace {name} already exists; run `ciliumctl endpoint delete {ep_id}` "
                         "or `ip netns delete " + name + "`")
    enable_forwarding()
    ip_netns("add", name)
    try:
        with _ipr() as ipr:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": path})
            idx = ipr.link_lookup(ifname=host)[0]
            host_mac = ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            _write_sysctl(f"/proc/sys/net/ipv4/conf/{host}/proxy_arp", "1")
            _write_sysctl(f"/proc/sys/net/ipv4/conf/{host}/rp_filter", "0")
            ipr.link("set", index=idx, state="up")
            ipr.route("replace", dst=f"{ipv4}/32", oif=idx, scope="link")
        from pyroute2 import IPRoute

        with IPRoute(netns=path) as pod:
            lo = pod.link_lookup(ifname="lo")[0]
            pod.link("set", index=lo, state="up")
            eth = pod.link_lookup(ifname=POD_IFNAME)[0]
            pod.addr("add", index=eth, address=ipv4, prefixlen=32)
            pod.link("set", index=eth, state="up")
            # The gateway is answered by proxy ARP; a permanent neighbour makes it independent of the node's
            # own routes (a sandbox node has no route to 169.254.1.1 for proxy ARP to find).
            pod.neigh("replace", dst=GATEWAY, lladdr=host_mac, ifindex=eth, state="permanent")
            pod.route("replace", dst=f"{GATEWAY}/32", oif=eth, scope="link")
            pod.route("replace", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth, flags=["onlink"])
        return Plumbed(path, host, idx)
    except NetlinkError as err:
        remove(ep_id, ipv4)
        raise EnvironmentProblem(f"endpoint {ep_id}: netlink: {err.args[1] if len(err.args) > 1 else err} "
                                 "(is the node namespace usable? needs root)") from None
    except BaseException:
        remove(ep_id, ipv4)
        raise


def remove(ep_id: int, ipv4: str = "", netns: str = "", host: str = "") -> None:
    """Best effort and idempotent: route, veth (both ends go with either) and namespace."""
    host = host or host_ifname(ep_id)
    with _ipr() as ipr:
        if ipv4:
            try:
                ipr.route("del", dst=f"{ipv4}/32")
            except Exception:
                pass
        for idx in ipr.link_lookup(ifname=host):
            try:
                ipr.link("del", index=idx)
            except Exception:
                pass
    path = netns or str(NETNS_DIR / netns_name(ep_id))
    if is_sandbox_netns(path) and os.path.exists(path):
        _kill_inside(os.path.basename(path))
        ip_netns("delete", os.path.basename(path))


def is_sandbox_netns(path: str) -> bool:
    """Only namespaces this module made (named with our prefix) are ever deleted: never a runtime's."""
    return os.path.dirname(path) == str(NETNS_DIR) and os.path.basename(path).startswith(netns_prefix())


def _kill_inside(name: str) -> None:
    """A sandbox's processes (servers started with `endpoint exec`) go with it."""
    import signal

    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in proc.stdout.split():
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


def leftovers() -> tuple[list[str], list[str]]:
    """Namespaces and host veths with our prefixes (for uninstall): names only."""
    prefix = netns_prefix()
    spaces = sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.is_dir() else []
    with _ipr() as ipr:
        links = sorted(l.get_attr("IFLA_IFNAME") for l in ipr.get_links()
                       if (l.get_attr("IFLA_IFNAME") or "").startswith(HOST_IF_PREFIX))
    return spaces, links


def remove_leftovers() -> tuple[list[str], list[str]]:
    spaces, links = leftovers()
    with _ipr() as ipr:
        for name in links:
            for idx in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=idx)
                except Exception:
                    pass
    for name in spaces:
        _kill_inside(name)
        ip_netns("delete", name)
    return spaces, links


def kernel_addresses() -> dict[str, str]:
    """IPv4 addresses in use in the node namespace, as the kernel sees them: /32 routes (every endpoint's route
    back) and interface addresses. address -> what uses it."""
    import socket

    with _ipr() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        out: dict[str, str] = {}
        for r in ipr.get_routes(family=socket.AF_INET):
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"] == 32:
                out.setdefault(dst, f"a route to {names.get(r.get_attr('RTA_OIF'), 'an interface')} in the node "
                                    "network namespace")
        for a in ipr.get_addr(family=socket.AF_INET):
            out.setdefault(a.get_attr("IFA_ADDRESS"), f"an address of {names.get(a['index'], 'an interface')} in "
                                                      "the node network namespace")
    return out


def remains() -> dict[int, list[str]]:
    """Sandbox namespaces and host veths by the endpoint id in their name: endpoint id -> names."""
    import socket

    prefix = netns_prefix()
    nodens.enter_node_netns()
    # names only, without netlink: `endpoint list` and `status` ask this every time
    spaces = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)) if NETNS_DIR.is_dir() else []
    links = sorted(name for _, name in socket.if_nameindex() if name.startswith(HOST_IF_PREFIX))
    out: dict[int, list[str]] = {}
    for name, lead in [(n, prefix) for n in spaces] + [(n, HOST_IF_PREFIX) for n in links]:
        tail = name[len(lead):]
        if tail.isdigit():
            out.setdefault(int(tail), []).append(name)
    return out


def exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


def setns(netns: str) -> None:
    """Move the calling thread into an endpoint's `netns` (a path). Also runs as a preexec_fn."""
    nodens.enter(netns, "network namespace", "the endpoint's sandbox is gone, delete and re-add the endpoint")


def exec_in(netns: str, argv: list[str]) -> None:
    """Replace this process with `argv` running inside `netns`: its exit code becomes ours."""
    if not argv:
        raise UsageError("no command given; use `ciliumctl endpoint exec NAME -- CMD [ARGS...]`")
    setns(netns)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise UsageError(f"command not found: {argv[0]}", exit_code=127) from None
    except PermissionError:
        raise UsageError(f"command not executable: {argv[0]}", exit_code=126) from None


def popen_in(netns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start `argv` inside `netns` (a path) as a child process."""
    return subprocess.Popen(argv, preexec_fn=lambda: setns(netns), **kwargs)


def run_in(netns: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, preexec_fn=lambda: setns(netns), **kwargs)
