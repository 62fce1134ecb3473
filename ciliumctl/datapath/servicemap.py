"""A service table -> the exact entries of lb_services (one revision slot) and lb_backends. Pure: no BPF.

lb_services, after Cilium's lb4_services map (bpf/lib/lb.h): backend slot 0 is the service (how many backends
take new connections, its id, type and affinity), slots 1..count its active backends in a stable order.
Terminating backends have no slot (no new connections) but stay in lb_backends, so the connections that have
them keep them."""

from __future__ import annotations

import json
import socket

from ciliumctl.datapath import maps
from ciliumctl.services.model import PROTOCOLS, Service, ServiceTable


def compile_services(table: ServiceTable, slot: int) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for svc in table.services.values():
        compile_service(svc, slot, out)
    return out


def compile_service(svc: Service, slot: int, out: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """One service's lb_services entries of `slot`, added to `out`. A local redirect with skipRedirectFromBackend
    also has an entry per backend whose own traffic skips it and the service it replaced (lib/lb.h
    lb_skip_from_backend), kinds marked in the key's protocol byte."""
    _compile_one(svc, slot, 0, out)
    if svc.skip_from:
        fe = svc.frontend
        vip, proto = socket.inet_aton(fe.ip), PROTOCOLS[fe.protocol] | maps.LB_KIND_SKIP
        for ip in svc.skip_from:
            a = socket.inet_aton(ip)
            out[maps.LB_SKIP_KEY.pack(slot, proto, a[:2], vip, fe.port, a[2:])] = maps.LB_SVC_VAL.pack(0, svc.id, 0,
                                                                                                       0, 0)
        if svc.original is not None:
            _compile_one(svc.original, slot, maps.LB_KIND_ORIGINAL, out)
    return out


def _compile_one(svc: Service, slot: int, kind: int, out: dict[bytes, bytes]) -> None:
    key, val = maps.LB_SVC_KEY.pack, maps.LB_SVC_VAL.pack
    fe, sid = svc.frontend, svc.id
    vip, proto = socket.inet_aton(fe.ip), PROTOCOLS[fe.protocol] | kind
    flags = ((maps.LB_F_NODEPORT if svc.type == "NodePort" else 0)
             | (maps.LB_F_AFFINITY if svc.affinity == "ClientIP" else 0)
             | (maps.LB_F_SKIP_FROM_BACKEND if svc.skip_from else 0))
    active = svc.active
    out[key(slot, proto, 0, vip, fe.port)] = val(0, sid, len(active), flags, svc.affinity_timeout)
    for i, b in enumerate(active, 1):
        out[key(slot, proto, i, vip, fe.port)] = val(b.id, sid, 0, flags, svc.affinity_timeout)


def compile_backends(table: ServiceTable) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for svc in table.services.values():
        compile_service_backends(svc, out)
    return out


def compile_service_backends(svc: Service, out: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """One service's lb_backends entries (and those of the service a redirect replaced), added to `out`."""
    proto = PROTOCOLS[svc.frontend.protocol]
    for b in svc.backends + (svc.original.backends if svc.original is not None else ()):
        state = maps.LB_BACKEND_ACTIVE if b.state == "active" else maps.LB_BACKEND_TERMINATING
        out[b.id.to_bytes(4, "little")] = maps.LB_BACKEND.pack(socket.inet_aton(b.ip), b.port, proto, state)
    return out


def names_json(table: ServiceTable) -> str:
    """What the agent names flows by (flows.meta reads it): [id, namespace, name, frontend IP, port, protocol]
    per service translated."""
    rows = [[sid, *svc.flow_name, svc.frontend.ip, svc.frontend.port, svc.frontend.protocol]
            for sid, svc in sorted(table.services.items())]
    return json.dumps({"services": rows}, separators=(",", ":"))
