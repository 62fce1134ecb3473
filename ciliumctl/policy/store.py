"""The node's policy store (no cluster): one JSON file per policy at
`<state>/policies/<kind>/<namespace or _cluster>/<name>.json`, keyed like the API server keys objects.

Writes are atomic. Callers hold the node lock (ciliumctl.node) around a whole apply, so a set of policies is
stored all or nothing from the point of view of other ciliumctl commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import Finding, UsageError
from ciliumctl.policy.goparse import dns1123_label, dns1123_subdomain

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KNP = "NetworkPolicy"
KINDS = (CNP, CCNP, KNP)
RESOURCE = {CNP: "ciliumnetworkpolicy", CCNP: "ciliumclusterwidenetworkpolicy", KNP: "networkpolicy"}
_ALIASES = {
    "cnp": CNP, "ciliumnetworkpolicy": CNP, "ciliumnetworkpolicies": CNP,
    "ccnp": CCNP, "ciliumclusterwidenetworkpolicy": CCNP, "ciliumclusterwidenetworkpolicies": CCNP,
    "netpol": KNP, "networkpolicy": KNP, "networkpolicies": KNP,
}
CLUSTER_DIR = "_cluster"


@dataclass(frozen=True)
class StoredPolicy:
    kind: str
    namespace: str           # "" for cluster-wide
    name: str
    data: dict               # the whole object as applied
    source: str = ""         # file it came from (for messages)

    @property
    def resource(self) -> str:
        return f"{RESOURCE[self.kind]}/{self.name}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "source": self.source,
                "data": self.data}


def kind_of(alias: str) -> str:
    k = _ALIASES.get(alias.lower().split(".")[0])
    if k is None:
        raise UsageError(f"unknown policy kind {alias!r}; use cnp, ccnp or netpol")
    return k


def from_object(data: dict, source: str = "") -> StoredPolicy:
    """Key an already-validated policy object: namespaced kinds default to namespace `default` like kubectl."""
    kind = data.get("kind", "")
    if kind not in KINDS:
        raise UsageError(f"{source or 'policy'}: a {kind or 'document without kind'} is not a network policy; "
                         f"policy apply takes {', '.join(KINDS)}"
                         + (" (apply it with `ciliumctl service redirect apply`)"
                            if kind == "CiliumLocalRedirectPolicy" else ""))
    meta = data.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise UsageError(f"{source or 'policy'}: metadata.name is required to store a {kind}")
    namespace = "" if kind == CCNP else str(meta.get("namespace") or "default")
    problem = _key_problem(namespace, name)
    if problem:
        raise Finding(f"{source or 'policy'}: {problem}; the API server refuses it too: nothing applied")
    # status is the agent's to write (a status subresource: the API server drops it from what apply sends), so
    # that `policy get -o yaml | policy apply -f -` changes nothing
    data = {k: v for k, v in data.items() if k != "status"}
    return StoredPolicy(kind, namespace, name, data, source)


def _key_problem(namespace: str, name: str) -> str | None:
    """Why a name or namespace cannot key a policy (the API server's rules: a DNS subdomain, a DNS label)."""
    errs = dns1123_subdomain(name)
    if errs:
        return f"metadata.name {name[:80]!r} is not a valid name: {errs[0]}"
    if namespace:
        errs = dns1123_label(namespace)
        if errs:
            return f"metadata.namespace {namespace[:80]!r} is not a valid namespace: {errs[0]}"
    return None


def policies_dir() -> Path:
    return paths.state_dir() / "policies"


def _path(kind: str, namespace: str, name: str) -> Path:
    """Where a policy is kept; never built from a name or namespace the API server would refuse (so never
    outside the store, whatever a command line or a file says)."""
    problem = _key_problem(namespace, name)
    if problem or kind not in KINDS:
        raise UsageError(f"{problem or f'unknown policy kind {kind!r}'}; see `ciliumctl policy get`")
    return policies_dir() / kind / (namespace or CLUSTER_DIR) / f"{name}.json"


def load_all() -> list[StoredPolicy]:
    """Every stored policy, in a stable order (kind, namespace, name)."""
    found = []
    base = policies_dir()
    for kind in KINDS:
        for p in sorted((base / kind).glob("*/*.json")):
            rec = statefile.read_json(p)
            if rec:
                found.append(StoredPolicy(rec["kind"], rec["namespace"], rec["name"], rec["data"],
                                          rec.get("source", "")))
    return found


def get(kind: str, namespace: str, name: str) -> StoredPolicy | None:
    rec = statefile.read_json(_path(kind, namespace, name))
    return StoredPolicy(rec["kind"], rec["namespace"], rec["name"], rec["data"], rec.get("source", "")) if rec else None


def change_of(policy: StoredPolicy) -> str:
    """What put() would do: created, configured or unchanged."""
    old = get(policy.kind, policy.namespace, policy.name)
    if old is None:
        return "created"
    return "unchanged" if old.data == policy.data else "configured"


def put(policy: StoredPolicy) -> str:
    verb = change_of(policy)
    if verb != "unchanged":
        statefile.write_json(_path(policy.kind, policy.namespace, policy.name), policy.to_dict())
    return verb


def delete(kind: str, namespace: str, name: str) -> bool:
    try:
        _path(kind, namespace, name).unlink()
        return True
    except FileNotFoundError:
        return False


def find(name: str, namespace: str | None = None, kind: str | None = None) -> list[StoredPolicy]:
    """Stored policies called `name` (any kind unless given; namespaced kinds within `namespace` when given)."""
    out = []
    for p in load_all():
        if p.name != name or (kind and p.kind != kind):
            continue
        if namespace is not None and p.kind != CCNP and p.namespace != namespace:
            continue
        out.append(p)
    return out
