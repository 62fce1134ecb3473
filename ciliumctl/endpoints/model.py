"""An endpoint (a pod or a sandbox) as the core sees it."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

# Keys every endpoint record has had since the registry existed; a record without one was not written by ciliumctl.
REQUIRED = ("id", "name", "namespace", "labels", "ipv4", "netns", "host_ifname", "host_ifindex", "state")
# States of an endpoint that is still being added or removed: only a live command may hold one (see
# node.endpoint_check for what happens when its command was killed).
TRANSITIONAL = ("waiting-for-identity", "waiting-for-policy", "disconnecting")


@dataclass
class Endpoint:
    id: int                                   # node-local endpoint id, 1..65535
    name: str                                 # pod name or sandbox name
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)   # the pod's own labels (k8s source)
    ipv4: str = ""                            # the endpoint's /32
    netns: str = ""                           # path of the network namespace (/run/netns/NAME or /proc/PID/ns/net)
    host_ifname: str = ""                     # host side of the veth
    host_ifindex: int = 0
    identity: int = 0                         # security identity, filled in by identity allocation
    service_account: str = "default"
    node: str = ""
    container_id: str = ""                    # set when a runtime created it through CNI
    state: str = "ready"                      # ready | waiting-for-identity | waiting-for-policy | disconnecting

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Endpoint:
        """The endpoint of a record; ValueError saying what is wrong when the record is not a valid one."""
        if not isinstance(data, dict):
            raise ValueError(f"{_json_kind(data)}, not an object")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name, f in cls.__dataclass_fields__.items():
            if name in known:
                _check_type(name, known[name], str(f.type))   # already a string: postponed annotations
        if not 1 <= known["id"] <= 65535:
            raise ValueError(f"id {known['id']} out of range 1..65535")
        if not known["name"]:
            raise ValueError("empty name")
        if known["ipv4"]:
            try:
                ipaddress.IPv4Address(known["ipv4"])
            except ValueError:
                raise ValueError(f"ipv4 {_short(known['ipv4'])} is not an IPv4 address") from None
        return cls(**known)


def _check_type(name: str, value: object, annotation: str) -> None:
    want, what = {"int": (int, "an integer"), "str": (str, "a string"),
                  "dict[str, str]": (dict, "an object")}[annotation]
    if not isinstance(value, want) or isinstance(value, bool):
        raise ValueError(f"{name} is {_json_kind(value)}, not {what}")
    if isinstance(value, dict) and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{name} has a value that is not a string")


def _json_kind(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")
