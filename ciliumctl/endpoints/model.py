"""An endpoint (a pod or a sandbox) as the core sees it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    state: str = "ready"                      # ready | waiting-for-identity | disconnecting

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Endpoint":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
