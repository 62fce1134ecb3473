"""Security identities: a numeric id per distinct set of security-relevant labels.

- reserved identities have fixed ids (host 1, world 2, unmanaged 3, health 4, init 5, remote-node 6,
  kube-apiserver 7, ingress 8, world-ipv4 9, world-ipv6 10);
- cluster identities (pods) are 256..65535;
- CIDR identities (label sets holding a `cidr:` label) are node-local, from 16777217 (1<<24 | 1) up, as Cilium's
  local-scope identities.

`IdentityAllocator` keeps the mapping in one JSON file under the node's state directory, written atomically under
a file lock, so every ciliumctl process on the node agrees. `IdentityBackend` is the interface: a cluster backend
(CiliumIdentity objects) implements the same methods.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem

HOST, WORLD, UNMANAGED, HEALTH, INIT, REMOTE_NODE, KUBE_APISERVER, INGRESS, WORLD_IPV4, WORLD_IPV6 = range(1, 11)
RESERVED = {"host": HOST, "world": WORLD, "unmanaged": UNMANAGED, "health": HEALTH, "init": INIT,
            "remote-node": REMOTE_NODE, "kube-apiserver": KUBE_APISERVER, "ingress": INGRESS,
            "world-ipv4": WORLD_IPV4, "world-ipv6": WORLD_IPV6}
RESERVED_NAMES = {v: k for k, v in RESERVED.items()}
MIN_CLUSTER, MAX_CLUSTER = 256, 65535
MIN_LOCAL, MAX_LOCAL = (1 << 24) | 1, (1 << 24) | 0xFFFFFF
FILE_VERSION = 1


def reserved_labels(identity: int) -> frozenset[str]:
    return frozenset({f"reserved:{RESERVED_NAMES[identity]}"})


def is_cidr_labels(labels: Iterable[str]) -> bool:
    """Node-local label sets: CIDR prefixes, also those learned for DNS names (fqdn:), as Cilium's local scope."""
    return any(s.startswith(("cidr:", "fqdn:")) for s in labels)


def reserved_id_of(labels: frozenset[str]) -> int | None:
    """The fixed id of a reserved label set. The host keeps id 1 whatever node labels come with it."""
    if "reserved:host" in labels:
        return HOST
    if is_cidr_labels(labels):
        return None
    for s in labels:
        if s.startswith("reserved:"):
            ident = RESERVED.get(s[len("reserved:"):].partition("=")[0])
            if ident is not None and len(labels) == 1:
                return ident
    return None


def scope_of(identity: int) -> str:
    if identity in RESERVED_NAMES:
        return "reserved"
    if MIN_CLUSTER <= identity <= MAX_CLUSTER:
        return "cluster"
    if MIN_LOCAL <= identity <= MAX_LOCAL:
        return "local"
    return "unknown"


class IdentityBackend(abc.ABC):
    """Label sets -> identities. Same labels always give the same id; ids are never reused for other labels."""

    @abc.abstractmethod
    def allocate_many(self, label_sets: list[frozenset[str]]) -> list[int]:
        """Ids for every label set, allocating the missing ones in one step."""

    @abc.abstractmethod
    def known(self) -> dict[int, frozenset[str]]:
        """Every allocated (non-reserved) identity and its labels."""

    def allocate(self, labels: frozenset[str]) -> int:
        return self.allocate_many([frozenset(labels)])[0]

    def lookup(self, identity: int) -> frozenset[str] | None:
        if identity in RESERVED_NAMES:
            return reserved_labels(identity)
        return self.known().get(identity)


def _assign(table: dict[frozenset[str], int], wanted: list[frozenset[str]]) -> bool:
    """Fill in ids for wanted label sets missing from table. True when something was added."""
    used = set(table.values())
    added = False
    next_cluster, next_local = MIN_CLUSTER, MIN_LOCAL
    for labels in wanted:
        if labels in table or reserved_id_of(labels) is not None:
            continue
        if is_cidr_labels(labels):
            while next_local in used:
                next_local += 1
            if next_local > MAX_LOCAL:
                raise EnvironmentProblem("no free local (CIDR) identity left; remove unused CIDR policies")
            ident = next_local
        else:
            while next_cluster in used:
                next_cluster += 1
            if next_cluster > MAX_CLUSTER:
                raise EnvironmentProblem("no free cluster identity left (256..65535 all in use)")
            ident = next_cluster
        table[labels] = ident
        used.add(ident)
        added = True
    return added


class MemoryAllocator(IdentityBackend):
    """Identities held in memory only: what-if runs (policy trace) that must not touch node state."""

    def __init__(self, seed: dict[int, frozenset[str]] | None = None):
        self._table: dict[frozenset[str], int] = {frozenset(v): k for k, v in (seed or {}).items()}

    def allocate_many(self, label_sets: list[frozenset[str]]) -> list[int]:
        wanted = [frozenset(s) for s in label_sets]
        _assign(self._table, wanted)
        return [reserved_id_of(s) or self._table[s] for s in wanted]

    def known(self) -> dict[int, frozenset[str]]:
        return {v: k for k, v in self._table.items()}


class IdentityAllocator(IdentityBackend):
    """Identities persisted as JSON at `path` (default `<state>/identities.json`), shared by all processes."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else paths.state_dir() / "identities.json"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._cache: dict[frozenset[str], int] = {}

    def _read(self) -> dict[frozenset[str], int]:
        data = statefile.read_json(self.path, default=None)
        if data is None:
            return {}
        try:
            return {frozenset(labels): int(ident) for ident, labels in data["identities"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise EnvironmentProblem(f"{self.path}: not an identity table; remove it to start afresh "
                                     "(endpoints get new identities)") from None

    def _write(self, table: dict[frozenset[str], int]) -> None:
        statefile.write_json(self.path, {"version": FILE_VERSION, "identities": {
            str(ident): sorted(labels) for labels, ident in sorted(table.items(), key=lambda kv: kv[1])}})

    def allocate_many(self, label_sets: list[frozenset[str]]) -> list[int]:
        wanted = [frozenset(s) for s in label_sets]
        missing = [s for s in wanted if s not in self._cache and reserved_id_of(s) is None]
        if missing:
            with statefile.locked(self.lock_path):
                table = self._read()
                if _assign(table, missing):
                    self._write(table)
                self._cache = table
        return [reserved_id_of(s) or self._cache[s] for s in wanted]

    def known(self) -> dict[int, frozenset[str]]:
        with statefile.locked(self.lock_path):
            self._cache = self._read()
        return {v: k for k, v in self._cache.items()}

    def snapshot(self) -> MemoryAllocator:
        """An in-memory copy: allocate hypothetical label sets without writing the node's table."""
        return MemoryAllocator(self.known())
