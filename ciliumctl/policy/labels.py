"""Cilium labels: `source:key=value` strings, the labels an endpoint carries, and which of them are security
relevant (part of its identity).

A label string is `source:key=value` (`source:key` when the value is empty), as Cilium prints them. Sources:
`k8s` (pod and namespace labels), `reserved` (host, world, ...), `cidr` (CIDR identities), `any` (only in
selectors: matches every source). A key without a source in a policy selector means `any`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

SOURCE_ANY = "any"
SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
SOURCE_UNSPEC = "unspec"
KNOWN_SOURCES = frozenset({SOURCE_ANY, SOURCE_K8S, SOURCE_RESERVED, SOURCE_CIDR, SOURCE_UNSPEC,
                           "container", "cilium-generated", "fqdn", "cidrgroup", "node", "nodes"})

POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels"
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"   # the API server puts it on every namespace
DEFAULT_CLUSTER = "default"


class Label(NamedTuple):
    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}" if self.value else f"{self.source}:{self.key}"


def split_source(key: str, default_source: str = SOURCE_ANY) -> tuple[str, str]:
    """`k8s:app` -> (k8s, app); `app` -> (default_source, app). Only a known source counts as a prefix."""
    src, sep, rest = key.partition(":")
    if sep and src in KNOWN_SOURCES:
        return src, rest
    return default_source, key


def parse_label(text: str, default_source: str = SOURCE_ANY) -> Label:
    """`k8s:app=web` -> Label(k8s, app, web); `reserved:host` -> Label(reserved, host, "")."""
    key, _, value = text.partition("=")
    src, key = split_source(key.strip(), default_source)
    return Label(src, key, value.strip())


def k8s(key: str, value: str) -> str:
    return str(Label(SOURCE_K8S, key, value))


def endpoint_all_labels(namespace: str, pod_labels: Mapping[str, str], service_account: str = "default",
                        namespace_labels: Mapping[str, str] | None = None,
                        cluster: str = DEFAULT_CLUSTER) -> frozenset[str]:
    """Every label Cilium attaches to a pod endpoint (before filtering for the identity)."""
    out = set()
    for k, v in pod_labels.items():
        # pod labels are always k8s-source: "k8s:app" given as a key is "app"; a pod can never claim reserved:*
        _, key = split_source(k, SOURCE_K8S)
        out.add(k8s(key, v))
    out.add(k8s(POD_NAMESPACE_LABEL, namespace))
    if service_account:
        out.add(k8s(SERVICE_ACCOUNT_LABEL, service_account))
    out.add(k8s(CLUSTER_LABEL, cluster))
    ns_labels = dict(namespace_labels or {})
    ns_labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
    out.update(k8s(f"{NAMESPACE_LABELS_PREFIX}.{k}", v) for k, v in ns_labels.items())
    return frozenset(out)


def endpoint_labels(ep, namespace_labels: Mapping[str, str] | None = None,
                    cluster: str = DEFAULT_CLUSTER) -> frozenset[str]:
    """The security-relevant labels of an Endpoint: what its identity is allocated by and selectors match."""
    return security_labels(endpoint_all_labels(ep.namespace, ep.labels, ep.service_account, namespace_labels,
                                               cluster))


def node_identity_labels(node_labels: Mapping[str, str] | None) -> frozenset[str]:
    """The host endpoint's labels: reserved:host plus the node's own labels (what nodeSelector matches)."""
    out = {"reserved:host"}
    out.update(k8s(k, v) for k, v in (node_labels or {}).items())
    return frozenset(out)


# Cilium's default label filter (pkg/labelsfilter): regular expressions anchored at the start of the key.
# A label is identity-relevant unless an ignore pattern matches, or an include pattern matches a longer part.
_INCLUDE = [(SOURCE_RESERVED, re.compile(r".*")),
            ("", re.compile(re.escape(POD_NAMESPACE_LABEL))),
            ("", re.compile(re.escape(NAMESPACE_LABELS_PREFIX))),
            ("", re.compile(re.escape("app.kubernetes.io"))),
            ("", re.compile(re.escape(CLUSTER_LABEL)))]
_IGNORE = [re.compile(p) for p in (
    r"io\.kubernetes", r"kubernetes\.io", re.escape("statefulset.kubernetes.io/pod-name"),
    re.escape("apps.kubernetes.io/pod-index"), re.escape("batch.kubernetes.io/job-completion-index"),
    r".*beta\.kubernetes\.io", r"k8s\.io", r"pod-template-generation", r"pod-template-hash",
    r"controller-revision-hash", r"annotation.*", r"etcd_node")]


def _match_len(expr: re.Pattern, key: str) -> int:
    m = expr.match(key)
    return m.end() if m else -1


def is_security_relevant(label: Label) -> bool:
    if label.source == SOURCE_CIDR:
        return True
    included = 0
    for source, expr in _INCLUDE:
        if source and source != label.source:
            continue
        n = _match_len(expr, label.key)
        if n > included:
            included = n
    ignored = 0
    for expr in _IGNORE:
        n = _match_len(expr, label.key)
        if n >= 0 and (ignored == 0 or n < ignored):
            ignored = max(n, 1)
    return ignored == 0 or included > ignored


def security_labels(labels: Iterable[str]) -> frozenset[str]:
    return frozenset(s for s in labels if is_security_relevant(parse_label(s)))


def parse_label_list(items: Iterable[str] | str | None) -> list[Label]:
    """`app=web,k8s:tier=db` or repeated flags -> labels (unprefixed keys keep source `any`)."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    out = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part:
                out.append(parse_label(part))
    return out
