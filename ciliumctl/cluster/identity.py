"""Cluster-wide security identities through CiliumIdentity objects (cilium.io/v2, cluster-scoped), as Cilium's
CRD identity backend stores them: the object's name is the numeric id, `security-labels` maps "source:key" to
value, metadata.labels carries the k8s-source labels for selection.

How agents agree without a lock: every agent walks the same probe sequence of ids for a label set (a hash of
the sorted labels, then the following ids). At each id it creates the object if absent; the API server lets
exactly one create win (409 AlreadyExists for the others). An agent that loses reads the winner: same labels
-> that is the identity; other labels -> next id in the sequence. Since ids are never reused for other labels
(identities are not garbage-collected here), two agents, racing or not, end at the same id for the same labels.
A lookup in the known identities comes first, so the common case is one list and no write.

Reserved identities keep their fixed ids; CIDR identities are node-local (Cilium does the same), delegated to
the node's own allocator.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube
from ciliumctl.identity.allocator import (
    MAX_CLUSTER,
    MIN_CLUSTER,
    IdentityBackend,
    MemoryAllocator,
    is_cidr_labels,
    reserved_id_of,
)

KIND = KINDS["CiliumIdentity"]
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def to_security_labels(labels: frozenset[str]) -> dict[str, str]:
    """{"k8s:app=web", ...} -> {"k8s:app": "web", ...} (the CiliumIdentity `security-labels` map)."""
    out = {}
    for label in labels:
        key, _, value = label.partition("=")
        out[key] = value
    return out


def from_security_labels(data: dict) -> frozenset[str]:
    return frozenset(f"{k}={v}" for k, v in (data or {}).items())


def identity_object(ident: int, labels: frozenset[str]) -> dict:
    security = to_security_labels(labels)
    meta_labels = {}
    for key, value in security.items():  # k8s-source labels double as object labels, when they are legal ones
        source, _, name = key.partition(":")
        if source == "k8s" and _LABEL_KEY.match(name) and len(name) <= 316 and _LABEL_VALUE.match(value) \
                and len(value) <= 63:
            meta_labels[name] = value
    return {"apiVersion": KIND.api_version, "kind": KIND.kind,
            "metadata": {"name": str(ident), "labels": meta_labels}, "security-labels": security}


def probe_sequence(labels: frozenset[str]) -> Iterator[int]:
    """The ids every agent tries, in order, for one label set."""
    span = MAX_CLUSTER - MIN_CLUSTER + 1
    digest = hashlib.sha256("\n".join(sorted(labels)).encode()).digest()
    start = int.from_bytes(digest[:8], "big") % span
    for i in range(span):
        yield MIN_CLUSTER + (start + i) % span


class CiliumIdentityBackend(IdentityBackend):
    """The IdentityBackend of ciliumctl.identity, cluster-wide. `local` takes the node-local (CIDR) identities."""

    def __init__(self, kube: Kube, local: IdentityBackend | None = None):
        self.kube = kube
        self.local = local or MemoryAllocator()
        self._by_labels: dict[frozenset[str], set[int]] = {}
        self._by_id: dict[int, frozenset[str]] = {}
        self._lock = threading.Lock()
        self.creates = 0  # objects this allocator created (for tests and status)

    def _remember(self, ident: int, labels: frozenset[str]) -> None:
        self._by_id[ident] = labels
        self._by_labels.setdefault(labels, set()).add(ident)

    def refresh(self) -> None:
        """Load every CiliumIdentity (the lookup by label set before any allocation)."""
        try:
            items, _ = self.kube.list(KIND)
        except ApiFailure as err:
            if err.status == 404:
                raise EnvironmentProblem("the cluster has no CiliumIdentity resource; run `ciliumctl install "
                                         "--kubeconfig ...` first") from None
            raise
        with self._lock:
            for item in items:
                self._observe(item)

    def _observe(self, item: dict) -> None:
        try:
            ident = int(item["metadata"]["name"])
        except (KeyError, ValueError):
            return  # not one of ours
        self._remember(ident, from_security_labels(item.get("security-labels") or {}))

    def on_event(self, kind: str, type_: str, obj: dict) -> None:
        """Feed from a CiliumIdentity reflector (optional): keeps the lookup table current without lists."""
        if kind == KIND.kind and type_ != "DELETED":
            with self._lock:
                self._observe(obj)

    def _claim(self, labels: frozenset[str]) -> int:
        for ident in probe_sequence(labels):
            held = self._by_id.get(ident)
            if held is not None:
                if held == labels:
                    return ident
                continue
            try:
                self.kube.create(identity_object(ident, labels))
                self.creates += 1
                self._remember(ident, labels)
                return ident
            except ApiFailure as err:
                if err.status != 409:
                    raise EnvironmentProblem(f"cannot create CiliumIdentity {ident}: {err.api_message} "
                                             f"({err.status}); check the agent's RBAC and the CRDs "
                                             "(ciliumctl install)") from None
            winner = self.kube.get(KIND, str(ident))
            if winner is None:  # deleted between our create and get: try the same id again later
                continue
            self._observe(winner)
            if from_security_labels(winner.get("security-labels") or {}) == labels:
                return ident
        raise EnvironmentProblem("no free cluster identity left (256..65535 all in use)")

    def allocate_many(self, label_sets: list[frozenset[str]]) -> list[int]:
        wanted = [frozenset(s) for s in label_sets]
        out: list[int] = []
        cidr = [s for s in wanted if is_cidr_labels(s) and reserved_id_of(s) is None]
        local_ids = dict(zip(cidr, self.local.allocate_many(cidr))) if cidr else {}
        with self._lock:
            missing = [s for s in wanted if reserved_id_of(s) is None and not is_cidr_labels(s)
                       and s not in self._by_labels]
        if missing:
            self.refresh()
        with self._lock:
            for s in wanted:
                reserved = reserved_id_of(s)
                if reserved is not None:
                    out.append(reserved)
                elif s in local_ids:
                    out.append(local_ids[s])
                elif len(self._by_labels.get(s, ())) == 1:
                    out.append(next(iter(self._by_labels[s])))
                else:  # unknown, or duplicates made elsewhere: the probe walk picks the same one everywhere
                    out.append(self._claim(s))
        return out

    def known(self) -> dict[int, frozenset[str]]:
        self.refresh()
        with self._lock:
            table = dict(self._by_id)
        table.update(self.local.known())
        return table
