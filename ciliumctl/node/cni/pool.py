"""The agent's own IPAM for pods: an attachment whose network configuration has no "ipam" section gets its address
from the node's pool here, in the agent's process, as Cilium's agent does for its plugin (cilium/cilium
plugins/cilium-cni/cmd/cmd.go: allocateIPsWithCiliumAgent, unless the IPAM mode is a delegated plugin, which
runs the configuration's "ipam" type). No plugin to exec and no file per address: every pod's ADD saves a fork
and an exec (~5 ms on a busy 2-core node, which the ADD waited for).

The range is the upper half of the node pool (endpoints.ipam.cni_half; `ciliumctl endpoint add` keeps to the
lower half), without its broadcast address, the range host-local was given before. The addresses in use are held
in memory, as Cilium's are, and found again at the agent's start from what witnesses them: the CNI attachment
records and the endpoint registry (restore()), so an address is never handed to a second pod while the first
still has it. Addresses are handed out round robin from the last one, as host-local does, so a released address
is not reused at once (conntrack entries and flows of the old pod still name it for a while).

Not thread-safe by itself: the CNI server calls it under its lock."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ciliumctl.endpoints import ipam

E_TRY_AGAIN_LATER = 11


class PoolExhausted(Exception):
    pass


class AgentPool:
    """The pod range of one node pool and the addresses of it in use."""

    def __init__(self, cidr: str):
        net = ipam.parse_pool(cidr)
        half = ipam.cni_half(net)
        if half is None:
            raise ValueError(f"address pool {net}: pods need a pool of /29 or larger (its upper half is theirs)")
        self.cidr = str(net)
        self.first = int(half.network_address)
        self.last = int(half.broadcast_address) - 1
        self.used: set[int] = set()
        self._cursor = self.last   # the next address handed out follows this one

    def restore(self, addresses: Iterable[str | None]) -> None:
        """Mark what the records say is in use (addresses outside the range are not ours and are ignored)."""
        for addr in addresses:
            n = self._number(addr)
            if n is not None:
                self.used.add(n)

    def allocate(self) -> str:
        size = self.last - self.first + 1
        for step in range(1, size + 1):
            n = self.first + (self._cursor - self.first + step) % size
            if n not in self.used:
                self.used.add(n)
                self._cursor = n
                return str(ipaddress.IPv4Address(n))
        raise PoolExhausted(f"no free address for pods in {ipaddress.IPv4Address(self.first)}-"
                            f"{ipaddress.IPv4Address(self.last)} (the upper half of the node pool {self.cidr}): "
                            f"all {size} are in use")

    def release(self, addr: str | None) -> None:
        n = self._number(addr)
        if n is not None:
            self.used.discard(n)

    def holds(self, addr: str | None) -> bool:
        n = self._number(addr)
        return n is not None and n in self.used

    def in_use(self) -> list[str]:
        return [str(ipaddress.IPv4Address(n)) for n in sorted(self.used)]

    def _number(self, addr: str | None) -> int | None:
        if not addr:
            return None
        try:
            n = int(ipaddress.IPv4Address(str(addr).split("/")[0]))
        except ValueError:
            return None
        return n if self.first <= n <= self.last else None
