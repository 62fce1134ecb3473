"""`cidrGroupRef` and `cidrGroupSelector` in fromCIDRSet / toCIDRSet, resolved from CiliumCIDRGroup objects.

Cilium's semantics (pkg/policy/api/cidr.go, pkg/policy/k8s/cidr_group.go applyCIDRGroup,
pkg/policy/types/selector.go newCIDRRuleSelector):
- every prefix of a group's spec.externalCIDRs is labelled `cidrgroup:io.cilium.policy.cidrgroupname/<name>`
  and with the group's own metadata labels in the `cidrgroup` source;
- cidrGroupRef: NAME selects the prefixes of the group of that name (none while it does not exist);
- cidrGroupSelector selects the prefixes of every group whose labels it matches (keys without a source are
  `cidrgroup.` keys: NewESFromK8sLabelSelector(LabelSourceCIDRGroupKeyPrefix, ...));
- `except` removes what lies inside an excepted CIDR (a DoesNotExist requirement on its cidr: label, which every
  prefix inside it carries).
Here a rule's group entries become the plain `cidr` entries they stand for, before resolution, so the datapath
needs nothing new; a change to a group is a change of the cluster cache, and the next sync expands again."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable

from ciliumctl.policy.model import parse_selector
from ciliumctl.policy.selectors import LabelSet, compile_selector

NAME_LABEL_PREFIX = "io.cilium.policy.cidrgroupname"   # pkg/policy/api/cidr.go LabelPrefixGroupName
SOURCE = "cidrgroup"                                  # pkg/labels LabelSourceCIDRGroup
_SECTIONS = (("ingress", "fromCIDRSet"), ("ingressDeny", "fromCIDRSet"), ("egress", "toCIDRSet"),
             ("egressDeny", "toCIDRSet"))
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def group_labels(group: dict) -> LabelSet:
    meta = group.get("metadata") or {}
    # RemoveCiliumLabels: the io.cilium.k8s.* labels of an object are not its identity's
    own = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith("io.cilium.k8s")}
    return LabelSet([f"{SOURCE}:{k}={v}" for k, v in own.items()] +
                    [f"{SOURCE}:{NAME_LABEL_PREFIX}/{meta.get('name', '')}="])


def group_prefixes(group: dict) -> list[Net]:
    out = []
    for text in ((group.get("spec") or {}).get("externalCIDRs") or []):
        try:
            out.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:   # Cilium skips a CIDR it cannot parse ("CIDRGroup has invalid CIDR")
            continue
    return out


def selected_groups(entry: dict, groups: Iterable[dict]) -> list[dict]:
    """The groups a CIDRRule with cidrGroupRef or cidrGroupSelector names."""
    ref = entry.get("cidrGroupRef")
    if ref:
        return [g for g in groups if (g.get("metadata") or {}).get("name") == ref]
    selector = compile_selector(parse_selector(entry.get("cidrGroupSelector")), default_source=SOURCE)
    return [g for g in groups if selector.matches(group_labels(g))]


def expand_entry(entry: dict, groups: Iterable[dict]) -> list[dict]:
    """A CIDRRule with a group reference -> the plain CIDRRules of the prefixes it selects, each with the
    excepted CIDRs that lie inside it; a prefix inside an excepted CIDR is left out."""
    excepts = []
    for text in entry.get("except") or []:
        try:
            excepts.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            continue
    out, seen = [], set()
    for group in selected_groups(entry, groups):
        for prefix in group_prefixes(group):
            same = [e for e in excepts if e.version == prefix.version]
            if prefix in seen or any(prefix.subnet_of(e) for e in same):  # type: ignore[arg-type]
                continue
            seen.add(prefix)
            rule: dict = {"cidr": prefix.with_prefixlen}
            inside = [e.with_prefixlen for e in same if e.subnet_of(prefix)]  # type: ignore[arg-type]
            if inside:
                rule["except"] = inside
            out.append(rule)
    return out


def uses_groups(policy: dict) -> bool:
    return any("cidrGroupRef" in e or "cidrGroupSelector" in e for e in _cidr_entries(policy))


def _rules(policy: dict) -> list[dict]:
    rules = [policy["spec"]] if isinstance(policy.get("spec"), dict) else []
    return rules + [r for r in policy.get("specs") or [] if isinstance(r, dict)]


def _cidr_entries(policy: dict) -> Iterable[dict]:
    for rule in _rules(policy):
        for section, field in _SECTIONS:
            for item in rule.get(section) or []:
                if isinstance(item, dict):
                    yield from (e for e in item.get(field) or [] if isinstance(e, dict))


def expand_policy(policy: dict, groups: Iterable[dict]) -> dict:
    """The policy with every group entry of its CIDR sets replaced by plain CIDR entries (a copy; the
    policy itself when it names no group)."""
    if not uses_groups(policy):
        return policy
    groups = list(groups)
    out = copy.deepcopy(policy)
    for rule in _rules(out):
        for section, field in _SECTIONS:
            for item in rule.get(section) or []:
                if not isinstance(item, dict) or not isinstance(item.get(field), list):
                    continue
                entries = []
                for e in item[field]:
                    if isinstance(e, dict) and ("cidrGroupRef" in e or "cidrGroupSelector" in e):
                        entries.extend(expand_entry(e, groups))
                    else:
                        entries.append(e)
                item[field] = entries   # empty: selects nothing, as a group that selects no prefix
    return out
