"""What the kernel holds, read back and compared with what is wanted: the entries of a slot of the ipcache, epcfg
and policy maps against mapstate.compile_state() of the desired state, and the programs on an interface. Each
difference is one readable line (no bytes), for `ciliumctl status --verify`.
"""

from __future__ import annotations

from ciliumctl.datapath import bpfsys, hooks, maps
from ciliumctl.datapath.mapstate import MapState
from ciliumctl.policy.resolved import Direction

SLOTTED = ("ipcache", "epcfg", "policy", "lb_services")
_PROTO = {0: "any", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_DIR = {int(d): d.name.lower() for d in Direction}


def state_of(mapset: dict) -> tuple[int, int, int, int]:
    """(active slot, source crc, revision, time of the last switch) from the state map."""
    active, crc, revision, flip_ns = maps.DP_STATE.unpack(mapset["state"].lookup(b"\0" * 4))
    return active & 1, crc, revision, flip_ns


def slot_entries(mapset: dict, slot: int) -> dict[str, dict[bytes, bytes]]:
    """map name -> {key: value} of the entries of `slot` in the slotted maps."""
    return {name: {k: v for k, v in mapset[name].items().items() if maps.key_slot(name, k) == slot}
            for name in SLOTTED if name in mapset}     # a datapath from before services: upgrade adds the map


def compare(want: MapState, have: dict[str, dict[bytes, bytes]],
            names: dict[int, str] | None = None) -> list[str]:
    """Every entry missing from, unexpected in or different in `have`, one line each (policy, ipcache, epcfg)."""
    names = names or {}
    out = []
    for name in SLOTTED:
        wanted: dict[bytes, bytes] = getattr(want, name)
        held = have.get(name, {})
        for k in sorted(wanted.keys() - held.keys()):
            out.append(f"{name}: missing {describe(name, k, wanted[k], names)}")
        for k in sorted(held.keys() - wanted.keys()):
            out.append(f"{name}: unexpected {describe(name, k, held[k], names)}")
        for k in sorted(k for k in wanted.keys() & held.keys() if wanted[k] != held[k]):
            out.append(f"{name}: {describe_key(name, k, names)} is {describe_value(name, held[k], names)} in the "
                       f"kernel, {describe_value(name, wanted[k], names)} wanted")
    return out


def describe(name: str, key: bytes, value: bytes, names: dict[int, str] | None = None) -> str:
    """An entry in a line; a policy entry shows its verdict only (describe_value has the rest)."""
    if name == "policy":
        return f"{describe_key(name, key, names)}: {'deny' if maps.POLICY_VAL.unpack(value)[0] else 'allow'}"
    return f"{describe_key(name, key, names)}: {describe_value(name, value, names)}"


def describe_key(name: str, key: bytes, names: dict[int, str] | None = None) -> str:
    if name == "policy":
        plen, _slot, direction, ep_id, identity, proto, port = maps.POLICY_KEY.unpack(key)
        peer = _identity(identity, names) if identity else "any identity"
        l4 = _l4(plen, proto, int.from_bytes(port, "big"))
        return f"endpoint {ep_id} {_DIR.get(direction, direction)} {peer} {l4}"
    if name == "ipcache":
        plen, _slot, addr = maps.IPCACHE_KEY.unpack(key)
        return f"{'.'.join(map(str, addr))}/{plen - maps.IPCACHE_BASE_BITS}"
    if name == "epcfg":
        return f"endpoint {maps.EPCFG_KEY.unpack(key)[1]}"
    if name == "lb_services":
        _slot, proto, bslot, vip, port = maps.LB_SVC_KEY.unpack(key)
        kind, proto = proto & (maps.LB_KIND_ORIGINAL | maps.LB_KIND_SKIP), proto & 0x3f
        frontend = f"{'.'.join(map(str, vip))}:{port}/{_PROTO.get(proto, str(proto)).upper()}"
        if kind == maps.LB_KIND_SKIP:
            return f"redirect skipped from {'.'.join(map(str, key[2:4] + key[10:12]))} to {frontend}"
        where = "service" if bslot == 0 else f"backend slot {bslot} of"
        return f"{where} {'the service redirected at ' if kind else ''}{frontend}"
    return key.hex()


def describe_value(name: str, value: bytes, names: dict[int, str] | None = None) -> str:
    if name == "policy":
        deny, match_type, _pad, cookie = maps.POLICY_VAL.unpack(value)
        return f"{'deny' if deny else 'allow'} (match type {match_type}, rule cookie {cookie})"
    if name == "ipcache":
        return _identity(maps.IPCACHE_VAL.unpack(value)[0], names)
    if name == "epcfg":
        identity, flags = maps.EPCFG_VAL.unpack(value)
        return f"{_identity(identity, names)}, {enforcement_text(flags)}"
    if name == "lb_services":
        backend_id, svc_id, count, flags, timeout = maps.LB_SVC_VAL.unpack(value)
        if count or not backend_id:
            return f"service {svc_id}, {count} active backend(s), flags {flags}, affinity timeout {timeout}s"
        return f"backend {backend_id} of service {svc_id}"
    return value.hex()


def enforcement_text(flags: int) -> str:
    sides = [s for s, bit in (("ingress", maps.EP_F_ENFORCE_INGRESS), ("egress", maps.EP_F_ENFORCE_EGRESS))
             if flags & bit]
    text = f"enforcing {' and '.join(sides)}" if sides else "not enforcing"
    return text + (", audit" if flags & maps.EP_F_AUDIT else "")


def _identity(identity: int, names: dict[int, str] | None) -> str:
    label = (names or {}).get(identity)
    return f"identity {identity} ({label})" if label else f"identity {identity}"


def _l4(plen: int, proto: int, port: int) -> str:
    """The packets an LPM policy key matches: any protocol, a protocol with any port, a port or a port range."""
    if proto == 0 or plen <= maps.POLICY_FIXED_BITS:
        return "any protocol"
    text = _PROTO.get(proto, str(proto))
    if plen <= maps.POLICY_PORT_BASE:
        return f"{text}/any port"
    bits = plen - maps.POLICY_PORT_BASE
    hi = port + (1 << (16 - bits)) - 1
    return f"{text}/{port}" if hi == port else f"{text}/{port}-{hi}"


def cookie_table_path():
    """The cookie -> policy rules table written beside each switch (loader; flows.meta reads it for flow names)."""
    from ciliumctl.base import paths

    return paths.state_dir() / "datapath" / "cookies.json"


def compare_cookies(want: MapState) -> list[str]:
    """The cookie table must name the rules of every cookie the policy entries carry, and only those."""
    import json

    path = cookie_table_path()
    try:
        held = set(map(int, json.loads(path.read_text()).get("cookies", {})))
    except (OSError, ValueError, AttributeError):
        held = set()
    wanted = set(want.cookies)
    if held == wanted:
        return []
    return [f"cookies: {path} (policy names of flows) lacks {len(wanted - held)} and has {len(held - wanted)} "
            "unexpected rule cookie(s)"]


# ------------------------------------------------------------------------------------------- interfaces

def endpoint_entries(mapset: dict) -> dict[int, int]:
    """ifindex -> endpoint id, from the endpoints map (the interfaces the programs act on)."""
    return {int.from_bytes(k, "little"): maps.EP_INFO.unpack(v)[0] for k, v in mapset["endpoints"].items().items()}


def program_ids(prog_fds: dict[str, int]) -> dict[str, int]:
    """program name -> kernel id of the pinned programs."""
    return {name: bpfsys.prog_info(fd).id for name, fd in prog_fds.items()}


def programs_on(ifindex: int) -> dict[str, list[int]]:
    """side (ingress, egress) -> ids of the programs attached to the interface: tcx links, else clsact filters.
    The caller is in the node network namespace."""
    ids = hooks.attached_prog_ids(ifindex)
    if any(ids.values()):
        return ids
    return _clsact_prog_ids(ifindex)


def _clsact_prog_ids(ifindex: int) -> dict[str, list[int]]:
    from pyroute2 import IPRoute  # noqa: PLC0415

    out: dict[str, list[int]] = {"ingress": [], "egress": []}
    parents = {hooks.PARENT_INGRESS: "ingress", hooks.PARENT_EGRESS: "egress"}
    with IPRoute() as ipr:
        for parent, side in parents.items():
            try:
                filters = ipr.get_filters(index=ifindex, parent=int(parent.replace(":", ""), 16))
            except Exception:       # noqa: BLE001 - no qdisc, or the interface is gone: nothing attached
                continue
            for f in filters:
                opts = f.get_attr("TCA_OPTIONS")
                prog_id = opts.get_attr("TCA_BPF_ID") if opts is not None and hasattr(opts, "get_attr") else None
                if prog_id:
                    out[side].append(prog_id)
    return out


def missing_programs(ifindex: int, wanted: dict[str, int]) -> list[str]:
    """Sides of the interface that do not run the wanted program (from_container on ingress, to_container on
    egress): e.g. ["ingress (from_container)"]."""
    on = programs_on(ifindex)
    return [f"{side} ({prog})" for prog, side, _type, _parent in hooks.HOOKS
            if wanted.get(prog) not in on.get(side, [])]


def link_pin_ifindexes(pin_dir) -> set[int]:
    """ifindexes that have tcx link pins under <pins>/links."""
    d = hooks.links_dir(pin_dir)
    if not d.is_dir():
        return set()
    out = set()
    for p in d.iterdir():
        head = p.name.partition("-")[0]
        if head.isdigit():
            out.add(int(head))
    return out
