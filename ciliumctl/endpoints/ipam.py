"""Node-local IPv4 address pool for sandbox endpoints.

Leases live in one JSON file (`<state>/ipam.json`), rewritten atomically under a file lock so that concurrent
`endpoint add` runs (or a CNI plugin) never hand out the same address. The pool comes from, in order: an
explicit argument, $CILIUMCTL_POOL, the node settings, the default 10.200.0.0/16.

The upper half of a pool of /29 or more is left to pods of a container runtime (the agent's own IPAM,
node/cni/pool.py, or host-local over that range: node/cni/install.py), so they and sandbox endpoints never get the
same address.

The lease file is not the only witness of an address in use: allocate() also skips the addresses its caller
knows to be taken (the node passes the endpoint registry's and the kernel's, node.endpoint_check), so a lost or
emptied lease file never hands out a live endpoint's address. A lease file that is there but corrupt is refused
with a message, never read as "no leases"."""

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


def parse_address(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise UsageError(f"address {shown!r} is not an IPv4 address; give one like 10.200.0.7") from None


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
        try:
            data = statefile.read_json(self.path, default=None)
        except statefile.CorruptStateFile as err:
            raise self._corrupt(err.reason) from None
        if data is None:
            return {}
        leases = data.get("leases") if isinstance(data, dict) else None
        if not isinstance(leases, dict):
            raise self._corrupt("no object of leases" if not isinstance(data, dict) or "leases" not in data
                                else f"leases is a {type(leases).__name__}, not an object")
        for addr, owner in leases.items():
            try:
                ipaddress.IPv4Address(addr)
            except ValueError:
                raise self._corrupt(f"lease key {addr[:40]!r} is not an IPv4 address") from None
            if not isinstance(owner, str):
                raise self._corrupt(f"the owner of {addr} is not a string")
        return dict(leases)

    def _corrupt(self, reason: str) -> EnvironmentProblem:
        return EnvironmentProblem(f"{self.path}: corrupt address leases ({reason}); remove the file: the next "
                                  "`ciliumctl endpoint add` restores the leases of the registered endpoints and "
                                  "skips every address in use in the node namespace")

    def exists(self) -> bool:
        return self.path.exists()

    def _save(self, leases: dict[str, str]) -> None:
        statefile.write_json(self.path, {"pool": str(self.network), "leases": leases})

    def peek(self) -> dict[str, str]:
        """The leases without taking the lock (the file is replaced atomically): for readers and reports."""
        return self._load()

    def leases(self) -> dict[str, str]:
        with statefile.locked(self.lock_path):
            return self._load()

    def allocate(self, owner: str, wanted: str | None = None, in_use: dict[str, str] | None = None) -> str:
        """The lowest free address of the pool (or `wanted`, when free and inside the pool). An address is free
        when it has no lease and is not in `in_use` (address -> who uses it, as the caller knows)."""
        in_use = in_use or {}
        with statefile.locked(self.lock_path):
            leases = self._load()
            if wanted is not None:
                addr = parse_address(wanted)
                if addr not in self.network or addr in (self.network.network_address,
                                                        self.network.broadcast_address):
                    raise UsageError(f"address {wanted} is not a usable address of pool {self.network}")
                reserved = cni_half(self.network)
                if reserved is not None and addr in reserved:
                    raise UsageError(f"address {wanted} is in {reserved}, the part of pool {self.network} left to "
                                     "the CNI plugin; pick one from the lower half")
                if str(addr) in leases and leases[str(addr)] != owner:
                    raise UsageError(f"address {wanted} is already leased to {leases[str(addr)]}")
                if str(addr) in in_use:
                    raise UsageError(f"address {wanted} is in use by {in_use[str(addr)]}")
                leases[str(addr)] = owner
                self._save(leases)
                return str(addr)
            reserved = cni_half(self.network)
            for addr in self.network.hosts():
                if reserved is not None and addr in reserved:
                    break       # hosts() ascend: the rest of the pool is the CNI plugin's
                if str(addr) not in leases and str(addr) not in in_use:
                    leases[str(addr)] = owner
                    self._save(leases)
                    return str(addr)
        raise EnvironmentProblem(f"address pool {self.network} is exhausted ({len(leases)} leases); delete "
                                 "endpoints or configure a larger pool with --pool")

    def release(self, addr: str, owner: str | None = None) -> bool:
        """Drop the lease of `addr` (only when `owner` holds it, if given)."""
        with statefile.locked(self.lock_path):
            leases = self._load()
            if addr not in leases or (owner is not None and leases[addr] != owner):
                return False
            del leases[addr]
            self._save(leases)
            return True

    def restore(self, wanted: dict[str, str]) -> list[str]:
        """Lease each address of `wanted` (address -> owner) that has no lease: what a lost or emptied lease file
        forgot (the file holds the leases of every pool the node used). Returns the addresses restored."""
        with statefile.locked(self.lock_path):
            leases = self._load()
            back = [a for a in sorted(wanted, key=ipaddress.IPv4Address) if a not in leases]
            for a in back:
                leases[a] = wanted[a]
            if back:
                self._save(leases)
            return back

    def release_owner(self, owner: str) -> list[str]:
        with statefile.locked(self.lock_path):
            leases = self._load()
            gone = [a for a, o in leases.items() if o == owner]
            for a in gone:
                del leases[a]
            if gone:
                self._save(leases)
            return gone
