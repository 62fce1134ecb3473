"""Node-local IPv4 address pool for sandbox endpoints.

Leases live in one JSON file (`<state>/ipam.json`), rewritten atomically under a file lock so that concurrent
`endpoint add` runs (or a CNI plugin) never hand out the same address. The pool comes from, in order: an
explicit argument, $CILIUMCTL_POOL, the node settings, the default 10.200.0.0/16.

The upper half of a pool of /29 or more is left to the CNI plugin's host-local IPAM (endpoints/cni_install.py
hands it that range), so sandbox endpoints and pods of a container runtime never get the same address."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem, UsageError

DEFAULT_POOL = "10.200.0.0/16"


def parse_pool(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise UsageError(f"address pool {cidr!r} is not a CIDR; give one like 10.200.0.0/16") from None
    if net.version != 4:
        raise UsageError(f"address pool {cidr}: only IPv4 pools are supported; give one like 10.200.0.0/16")
    if net.prefixlen > 30:
        raise UsageError(f"address pool {cidr} is too small; give a /30 or larger, e.g. 10.200.0.0/16")
    return net


def cni_half(net: ipaddress.IPv4Network) -> ipaddress.IPv4Network | None:
    """The part of the pool reserved for the CNI plugin (None for pools too small to split)."""
    return list(net.subnets(prefixlen_diff=1))[1] if net.prefixlen <= 29 else None


def effective_pool(explicit: str | None = None, configured: str | None = None) -> str:
    for candidate in (explicit, os.environ.get("CILIUMCTL_POOL"), configured):
        if candidate:
            return str(parse_pool(candidate))
    return DEFAULT_POOL


class Pool:
    """Leases of one node. `owner` is a free-form tag (e.g. "endpoint:5") that release_owner() matches."""

    def __init__(self, cidr: str = DEFAULT_POOL, state_dir: Path | None = None):
        self.network = parse_pool(cidr)
        base = state_dir if state_dir is not None else paths.state_dir()
        self.path = base / "ipam.json"
        self.lock_path = base / "ipam.lock"

    def _load(self) -> dict[str, str]:
        data = statefile.read_json(self.path, default={}) or {}
        return dict(data.get("leases", {}))

    def _save(self, leases: dict[str, str]) -> None:
        statefile.write_json(self.path, {"pool": str(self.network), "leases": leases})

    def leases(self) -> dict[str, str]:
        with statefile.locked(self.lock_path):
            return self._load()

    def allocate(self, owner: str, wanted: str | None = None) -> str:
        """The lowest free address of the pool (or `wanted`, when free and inside the pool)."""
        with statefile.locked(self.lock_path):
            leases = self._load()
            if wanted is not None:
                addr = ipaddress.ip_address(wanted)
                if addr not in self.network or addr in (self.network.network_address,
                                                        self.network.broadcast_address):
                    raise UsageError(f"address {wanted} is not a usable address of pool {self.network}")
                reserved = cni_half(self.network)
                if reserved is not None and addr in reserved:
                    raise UsageError(f"address {wanted} is in {reserved}, the part of pool {self.network} left to "
                                     "the CNI plugin; pick one from the lower half")
                if str(addr) in leases and leases[str(addr)] != owner:
                    raise UsageError(f"address {wanted} is already leased to {leases[str(addr)]}")
                leases[str(addr)] = owner
                self._save(leases)
                return str(addr)
            reserved = cni_half(self.network)
            for addr in self.network.hosts():
                if reserved is not None and addr in reserved:
                    break       # hosts() ascend: the rest of the pool is the CNI plugin's
                if str(addr) not in leases:
                    leases[str(addr)] = owner
                    self._save(leases)
                    return str(addr)
        raise EnvironmentProblem(f"address pool {self.network} is exhausted ({len(leases)} leases); delete "
                                 "endpoints or configure a larger pool with --pool")

    def release(self, addr: str) -> bool:
        with statefile.locked(self.lock_path):
            leases = self._load()
            if leases.pop(addr, None) is None:
                return False
            self._save(leases)
            return True

    def release_owner(self, owner: str) -> list[str]:
        with statefile.locked(self.lock_path):
            leases = self._load()
            gone = [a for a, o in leases.items() if o == owner]
            for a in gone:
                del leases[a]
            if gone:
                self._save(leases)
            return gone
