"""Putting the two programs on an endpoint's host-side interface: tc hooks, both directions.

tcx links (kernel 6.6+) are preferred: no qdisc on the path (a trivial program through clsact costs ~4% of a
UDP packet rate here, through tcx nothing measurable). A link lives as long as its pin, so each one is pinned
under <pins>/links/<ifindex>-<side>; re-attaching swaps the program in place (BPF_LINK_UPDATE). Where tcx is
missing, a clsact qdisc with cls_bpf filters (pyroute2) does the same job. CILIUMCTL_TC_ATTACH=tcx|clsact
forces one; the default tries tcx first. Creating a tcx link waits for an RCU grace period (~10-15 ms here, under
the RTNL lock): the CNI server attaches clsact filters by plain rtnetlink first (attach_clsact_now) and moves them
onto tcx links after the pod's ADD has its answer (move_to_tcx). Call in the node network namespace.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import bpfsys

TC_PRIO = 1
TC_HANDLE = 1
PARENT_INGRESS = "ffff:fff2"
PARENT_EGRESS = "ffff:fff3"
ENOTSUPP = 524

# program, side of the host interface, tcx attach type, clsact parent
HOOKS = (("from_container", "ingress", bpfsys.BPF_TCX_INGRESS, PARENT_INGRESS),
         ("to_container", "egress", bpfsys.BPF_TCX_EGRESS, PARENT_EGRESS))
HOOK_PROGRAMS = tuple(h[0] for h in HOOKS)
# the node's own devices (install --devices: NodePort from outside, lib/nodeport.h); link pins <ifindex>-netdev-*
DEVICE_HOOKS = (("from_netdev", "netdev-ingress", bpfsys.BPF_TCX_INGRESS, PARENT_INGRESS),
                ("to_netdev", "netdev-egress", bpfsys.BPF_TCX_EGRESS, PARENT_EGRESS))


def attach_mode() -> str:
    mode = os.environ.get("CILIUMCTL_TC_ATTACH", "auto").strip() or "auto"
    if mode not in ("auto", "tcx", "clsact"):
        raise EnvironmentProblem(f"CILIUMCTL_TC_ATTACH={mode!r}: use tcx, clsact or auto")
    return mode


def links_dir(pin_dir: Path) -> Path:
    return pin_dir / "links"


def _link_pin(pin_dir: Path, ifindex: int, side: str) -> Path:
    return links_dir(pin_dir) / f"{ifindex}-{side}"


def attach(pin_dir: Path, ifindex: int, prog_fds: dict[str, int], ifname: str = "", hooks=HOOKS) -> str:
    """Both programs on the interface; returns the mechanism used ("tcx" or "clsact")."""
    mode = attach_mode()
    if mode != "clsact":
        try:
            _attach_tcx(pin_dir, ifindex, prog_fds, hooks)
            return "tcx"
        except bpfsys.BpfError as err:
            if mode == "tcx" or err.errno not in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                raise EnvironmentProblem(f"cannot attach the datapath to {ifname or ifindex} with tcx: "
                                         f"{err.strerror}") from None
    _attach_clsact(ifindex, prog_fds, ifname, hooks)
    return "clsact"


def attach_clsact_now(ifindex: int, prog_fds: dict[str, int], ifname: str = "", hooks=HOOKS) -> None:
    """Both programs as clsact filters through plain rtnetlink: ~1 ms, where a tcx link waits for an RCU grace
    period in the kernel (under the RTNL lock, one link after the other). For a pod's start-up path; move_to_tcx()
    then puts the interface on tcx links off that path."""
    from ciliumctl.endpoints.rtnl import Rtnl  # noqa: PLC0415

    with Rtnl() as r:
        try:
            r.add_clsact(ifindex)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise EnvironmentProblem(f"cannot add clsact qdisc to {ifname or ifindex}: {err.strerror}") from None
        for prog, _side, _type, parent in hooks:
            r.bpf_filter(ifindex, parent == PARENT_EGRESS, prog_fds[prog], prog, TC_PRIO, TC_HANDLE)


def move_to_tcx(pin_dir: Path, ifindex: int, prog_fds: dict[str, int], hooks=HOOKS) -> bool:
    """tcx links for an interface attach_clsact_now() attached, then its clsact qdisc goes. No packet goes
    unprocessed in between: the programs always return a verdict (never TC_ACT_UNSPEC), and once a tcx program
    gave one the kernel skips the clsact filters behind it (net/core/dev.c, sch_handle_ingress/egress); both run
    the same programs on the same maps. False where tcx is missing (the filters stay)."""
    from ciliumctl.endpoints.rtnl import Rtnl  # noqa: PLC0415

    try:
        _attach_tcx(pin_dir, ifindex, prog_fds, hooks)
    except bpfsys.BpfError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
            return False
        raise
    with Rtnl() as r:
        r.del_clsact(ifindex)
    return True


def device_links(pin_dir: Path) -> list[int]:
    """Interfaces that carry the device programs through tcx links (their ifindexes)."""
    d = links_dir(pin_dir)
    if not d.is_dir():
        return []
    return sorted({int(n.split("-", 1)[0]) for n in os.listdir(d) if n.split("-", 1)[1].startswith("netdev-")})


def _attach_tcx(pin_dir: Path, ifindex: int, prog_fds: dict[str, int], hooks=HOOKS) -> None:
    links_dir(pin_dir).mkdir(exist_ok=True)
    for prog, side, attach_type, _parent in hooks:
        pin = _link_pin(pin_dir, ifindex, side)
        if pin.exists():
            fd = bpfsys.obj_get(pin)
            try:
                bpfsys.link_update(fd, prog_fds[prog])     # attached already: swap the program in place
                continue
            except bpfsys.BpfError as err:
                if err.errno != errno.ENOLINK:
                    raise
                os.unlink(pin)                             # its interface went away: a stale pin
            finally:
                os.close(fd)
        fd = bpfsys.link_create_tcx(prog_fds[prog], ifindex, attach_type)
        try:
            bpfsys.obj_pin(fd, pin)
        finally:
            os.close(fd)


def _attach_clsact(ifindex: int, prog_fds: dict[str, int], ifname: str, hooks=HOOKS) -> None:
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except Exception as err:
            if getattr(err, "code", None) != errno.EEXIST:
                raise EnvironmentProblem(f"cannot add clsact qdisc to {ifname or ifindex}: {err}") from None
        for prog, _side, _type, parent in hooks:
            ipr.tc("replace-filter", "bpf", ifindex, TC_HANDLE, fd=prog_fds[prog], name=prog, parent=parent,
                   prio=TC_PRIO, classid=1, direct_action=True, protocol=0x0003)


def detach(pin_dir: Path, ifindex: int, hooks=HOOKS) -> None:
    """Take both programs off the interface, whichever way they were attached (gone interfaces are fine)."""
    had_links = False
    for _prog, side, _type, _parent in hooks:
        try:
            os.unlink(_link_pin(pin_dir, ifindex, side))   # the last reference: the kernel detaches the link
            had_links = True
        except FileNotFoundError:
            pass
    if had_links:
        return
    from pyroute2 import IPRoute  # noqa: PLC0415

    with IPRoute() as ipr:
        for _prog, _side, _type, parent in hooks:
            try:
                ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=parent, prio=TC_PRIO, protocol=0x0003)
            except Exception:
                pass    # interface or filter already gone


def attached_prog_ids(ifindex: int) -> dict[str, list[int]]:
    """Program ids on the interface per side, tcx only (clsact filters: see `tc filter show`)."""
    return {side: bpfsys.tcx_prog_ids(ifindex, attach_type) for _prog, side, attach_type, _parent in HOOKS}


def remove_link_pins(pin_dir: Path) -> list[str]:
    d = links_dir(pin_dir)
    if not d.is_dir():
        return []
    removed = []
    for name in sorted(os.listdir(d)):
        os.unlink(d / name)
        removed.append(f"links/{name}")
    d.rmdir()
    return removed
