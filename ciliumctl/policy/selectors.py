"""Label selectors as Cilium evaluates them: matchLabels and matchExpressions (In, NotIn, Exists,
DoesNotExist) over label sets with sources, and the namespace scoping Cilium adds to CNP/CCNP selectors
(pkg/k8s/apis/cilium.io/utils: ParseToCiliumRule, getEndpointSelector)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ciliumctl.policy.labels import (
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    SOURCE_ANY,
    SOURCE_K8S,
    SOURCE_RESERVED,
    parse_label,
    split_source,
)

IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "In", "NotIn", "Exists", "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    source: str                 # "any" matches every source
    key: str
    op: str                     # In | NotIn | Exists | DoesNotExist
    values: frozenset[str] = frozenset()

    def __str__(self) -> str:
        k = f"{self.source}:{self.key}"
        if self.op == IN and len(self.values) == 1:
            return f"{k}={next(iter(self.values))}"
        if self.op in (EXISTS, DOES_NOT_EXIST):
            return f"{k} {self.op}"
        return f"{k} {self.op} ({','.join(sorted(self.values))})"


class LabelSet:
    """A label set indexed for selector matching."""

    __slots__ = ("labels", "_by_key")

    def __init__(self, labels: Iterable[str]):
        self.labels = frozenset(labels)
        self._by_key: dict[str, list[tuple[str, str]]] = {}
        for s in self.labels:
            lab = parse_label(s, default_source="unspec")
            self._by_key.setdefault(lab.key, []).append((lab.source, lab.value))

    def values(self, source: str, key: str) -> list[str]:
        return [v for src, v in self._by_key.get(key, ()) if source == SOURCE_ANY or src == source]


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements. No requirements = selects everything (a wildcard)."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def is_wildcard(self) -> bool:
        return not self.requirements

    def matches(self, labels: LabelSet) -> bool:
        for r in self.requirements:
            vals = labels.values(r.source, r.key)
            if r.op == IN:
                ok = any(v in r.values for v in vals)
            elif r.op == NOT_IN:
                ok = not any(v in r.values for v in vals)
            elif r.op == EXISTS:
                ok = bool(vals)
            elif r.op == DOES_NOT_EXIST:
                ok = not vals
            else:
                ok = False
            if not ok:
                return False
        return True

    def has_key(self, source: str, key: str) -> bool:
        return any(r.source == source and r.key == key for r in self.requirements)

    def has_key_prefix(self, source: str, prefix: str = "") -> bool:
        return any(r.source == source and r.key.startswith(prefix) for r in self.requirements)

    def with_requirement(self, req: Requirement, replace_match: bool = False) -> Selector:
        reqs = self.requirements
        if replace_match:  # like AddMatch: a matchLabels entry on the same key is overwritten
            reqs = tuple(r for r in reqs if not (r.source == req.source and r.key == req.key and r.op == IN
                                                 and len(r.values) == 1))
        return Selector(reqs + (req,))

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.requirements) or "(all)"


def compile_selector(sel, default_source: str = SOURCE_ANY, key_prefix: str = "") -> Selector:
    """model.LabelSelector -> Selector. Keys without a source get `default_source`; key_prefix is put in
    front of every key (NetworkPolicy namespaceSelector keys become namespace-label keys)."""
    if sel is None:
        return Selector()
    reqs = []
    for key, value in sel.match_labels:
        src, k = split_source(key, default_source)
        reqs.append(Requirement(src, key_prefix + k, IN, frozenset({value})))
    for e in sel.match_expressions:
        src, k = split_source(e.key, default_source)
        reqs.append(Requirement(src, key_prefix + k, e.operator, frozenset(e.values)))
    return Selector(tuple(reqs))


def _has_namespace_key(s: Selector) -> bool:
    return s.has_key(SOURCE_K8S, POD_NAMESPACE_LABEL) or s.has_key(SOURCE_ANY, POD_NAMESPACE_LABEL)


def subject_selector(sel, namespace: str) -> Selector:
    """A CNP's endpointSelector always applies in the policy's own namespace (CCNP: namespace "")."""
    s = compile_selector(sel)
    if namespace:
        s = s.with_requirement(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, IN, frozenset({namespace})),
                               replace_match=True)
    return s


def peer_selector(sel, namespace: str, subject_matches_init: bool = False) -> Selector:
    """fromEndpoints/toEndpoints: confined to the policy's namespace unless the selector names the namespace
    (or namespace labels, or reserved labels); in a CCNP confined to pods (namespace label exists)."""
    s = compile_selector(sel)
    if s.has_key_prefix(SOURCE_RESERVED):
        return s
    if _has_namespace_key(s):
        return s
    if not namespace:
        if subject_matches_init:
            return s
        return s.with_requirement(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, EXISTS))
    if s.has_key_prefix(SOURCE_K8S, NAMESPACE_LABELS_PREFIX) or s.has_key_prefix(SOURCE_ANY, NAMESPACE_LABELS_PREFIX):
        return s
    return s.with_requirement(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, IN, frozenset({namespace})))


def selects_init(sel) -> bool:
    """The subject selector names reserved:init (Cilium then leaves peer selectors unscoped)."""
    return sel is not None and compile_selector(sel).has_key(SOURCE_RESERVED, "init")


def knp_peer_selector(pod_selector, namespace_selector, namespace: str) -> Selector | None:
    """A NetworkPolicy peer as Cilium translates it (pkg/k8s/network_policy.go parseNetworkPolicyPeer)."""
    if namespace_selector is not None:
        ns = compile_selector(namespace_selector, SOURCE_K8S, key_prefix=NAMESPACE_LABELS_PREFIX + ".")
        if ns.is_wildcard:
            ns = Selector((Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, EXISTS),))
        pod = compile_selector(pod_selector, SOURCE_K8S)
        return Selector(ns.requirements + pod.requirements)
    if pod_selector is not None:
        pod = compile_selector(pod_selector, SOURCE_K8S)
        return pod.with_requirement(Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, IN, frozenset({namespace})),
                                    replace_match=True)
    return None


def knp_subject_selector(pod_selector, namespace: str) -> Selector:
    """A NetworkPolicy's podSelector: k8s-source keys, always in the policy's namespace."""
    return compile_selector(pod_selector, SOURCE_K8S).with_requirement(
        Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, IN, frozenset({namespace})), replace_match=True)
