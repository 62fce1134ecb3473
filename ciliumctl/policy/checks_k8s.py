"""Kubernetes API-server validation: label selectors, object names, and networking.k8s.io/v1 NetworkPolicy."""

from __future__ import annotations

from ciliumctl.policy import goparse
from ciliumctl.policy.findings import ERROR, WARNING, Collector

SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def extend_key(key: str) -> str:
    """Cilium's labels.GetExtendedKeyFrom: `k8s:app` -> `k8s.app`, `app` -> `any.app`, `$host` -> `reserved.host`.

    Cilium validates selector keys in this extended form, so a key must stay a qualified name with the
    source prefix added (a 60-character key is too long once `any.` is in front)."""
    if not key:
        src, rest = "", ""
    elif key[0] == "$":
        src, rest = "reserved", key[1:]
    else:
        i = key.find(":")
        src, rest = ("", key) if i < 0 else (key[:i], key[i + 1:])
    eq = rest.find("=")
    if eq >= 0:
        rest = rest[:eq]
    return (src or "any") + "." + rest


def check_label_selector(col: Collector, sel: dict, path: tuple, cilium_keys: bool | str,
                         what: str = "label selector",
                         severity: str = ERROR, rule: str = "cilium/selector") -> None:
    """metav1 validation.ValidateLabelSelector (label values validated), optionally on Cilium-extended keys."""

    def key_errors(key: str) -> str:
        # True: Cilium's default key extender; a string: a source prefix put in front (cidrgroup.)
        ext = (cilium_keys + key if isinstance(cilium_keys, str) else extend_key(key)) if cilium_keys else key
        errs = goparse.qualified_name(ext)
        if not errs:
            return ""
        shown = f"{key!r}" + (f" (checked as {ext!r})" if ext != key else "")
        return f"invalid key {shown}: {'; '.join(errs)}"

    for key, value in (sel.get("matchLabels") or {}).items():
        problem = key_errors(key)
        if problem:
            col.add(severity, path + ("matchLabels", key), f"invalid {what}: matchLabels: {problem}", rule, key=True)
        errs = goparse.label_value(value)
        if errs:
            col.add(severity, path + ("matchLabels", key),
                    f"invalid {what}: matchLabels: value {value!r}: {'; '.join(errs)}", rule)
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        epath = path + ("matchExpressions", i)
        op = expr.get("operator", "")
        values = expr.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                col.add(severity, epath, f"invalid {what}: matchExpressions[{i}].values must be specified when "
                                         f"`operator` is 'In' or 'NotIn': add values, or use Exists", rule)
        elif op in ("Exists", "DoesNotExist"):
            if values:
                col.add(severity, epath + ("values",), f"invalid {what}: matchExpressions[{i}].values may not be "
                                                       f"specified when `operator` is 'Exists' or 'DoesNotExist'", rule)
        else:
            col.add(severity, epath + ("operator",),
                    f"invalid {what}: {op!r} is not a valid selector operator: use one of "
                    f"{', '.join(SELECTOR_OPERATORS)} (case-sensitive)", rule)
        problem = key_errors(expr.get("key", ""))
        if problem:
            col.add(severity, epath + ("key",), f"invalid {what}: matchExpressions[{i}]: {problem}", rule)
        for j, value in enumerate(values):
            errs = goparse.label_value(value)
            if errs:
                col.add(severity, epath + ("values", j),
                        f"invalid {what}: matchExpressions[{i}].values[{j}] {value!r}: {'; '.join(errs)}", rule)


def check_object_meta(col: Collector, meta: dict, namespaced: bool, severity: str) -> None:
    """What the API server's ValidateObjectMeta refuses: bad names, namespaces, labels and annotation keys."""
    name = meta.get("name", "")
    if name:
        errs = goparse.dns1123_subdomain(name)
        if errs:
            col.add(severity, ("metadata", "name"), f"name {name!r} is refused by the API server: "
                                                    f"{'; '.join(errs)}", rule="strict/name")
    ns = meta.get("namespace", "")
    if ns and namespaced:
        errs = goparse.dns1123_label(ns)
        if errs:
            col.add(severity, ("metadata", "namespace"), f"namespace {ns!r} is refused by the API server: "
                                                         f"{'; '.join(errs)}", rule="strict/name")
    for key, value in (meta.get("labels") or {}).items():
        errs = goparse.qualified_name(key) + goparse.label_value(value)
        if errs:
            col.add(severity, ("metadata", "labels", key), f"metadata label {key}={value!r} is refused by the API "
                                                           f"server: {'; '.join(errs)}", rule="strict/name", key=True)
    for key in meta.get("annotations") or {}:
        errs = goparse.qualified_name(key.lower())
        if errs:
            col.add(severity, ("metadata", "annotations", key), f"annotation key {key!r} is refused by the API "
                                                                f"server: {'; '.join(errs)}", rule="strict/name",
                    key=True)


# ---------------------------------------------------------------------------------------- NetworkPolicy

def _check_np_port(col: Collector, port: dict, path: tuple) -> None:
    proto = port.get("protocol")
    if proto is not None and proto not in ("TCP", "UDP", "SCTP"):
        col.error(path + ("protocol",), f"protocol {proto!r} is not supported: use TCP, UDP or SCTP "
                                        f"(case-sensitive)", rule="k8s/networkpolicy")
    value = port.get("port")
    end = port.get("endPort")
    if value is None:
        if end is not None:
            col.error(path + ("endPort",), "endPort may not be specified when `port` is not specified",
                      rule="k8s/networkpolicy")
        return
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            col.error(path + ("port",), f"port {value} must be between 1 and 65535, inclusive",
                      rule="k8s/networkpolicy")
        if end is not None:
            if end < value:
                col.error(path + ("endPort",), f"endPort {end} must be greater than or equal to `port` ({value})",
                          rule="k8s/networkpolicy")
            if not 1 <= end <= 65535:
                col.error(path + ("endPort",), f"endPort {end} must be between 1 and 65535, inclusive",
                          rule="k8s/networkpolicy")
        return
    if end is not None:
        col.error(path + ("endPort",), "endPort may not be specified when `port` is a name (non-numeric)",
                  rule="k8s/networkpolicy")
    errs = goparse.port_name(value)
    if errs:
        hint = "; a number must not be quoted here" if value.strip().isdigit() else ""
        col.error(path + ("port",), f"port {value!r} is not a valid port name: {'; '.join(errs)}{hint}",
                  rule="k8s/networkpolicy")


def _check_ip_block(col: Collector, block: dict, path: tuple) -> None:
    cidr = block.get("cidr", "")
    if not cidr:
        col.error(path + ("cidr",), "ipBlock.cidr is required", rule="k8s/networkpolicy")
        return
    parsed = _parse_k8s_cidr(cidr)
    if parsed is None:
        col.error(path + ("cidr",), f"{cidr!r} is not a valid CIDR (like 10.0.0.0/8)", rule="k8s/networkpolicy")
    for i, exc in enumerate(block.get("except") or []):
        sub = _parse_k8s_cidr(exc)
        if sub is None:
            col.error(path + ("except", i), f"{exc!r} is not a valid CIDR (like 10.1.0.0/16)",
                      rule="k8s/networkpolicy")
            continue
        if parsed is not None and (not goparse.prefix_contains(parsed, sub[0]) or parsed[1] >= sub[1]):
            col.error(path + ("except", i), f"except {exc!r} must be a strict subset of `cidr` {cidr!r}",
                      rule="k8s/networkpolicy")


def _parse_k8s_cidr(value: str):
    if not goparse.is_k8s_cidr(value):
        return None
    parsed, _ = goparse.parse_prefix(value)
    return parsed


def _check_np_peer(col: Collector, peer: dict, path: tuple) -> None:
    count = 0
    for key in ("podSelector", "namespaceSelector"):
        if key in peer:
            count += 1
            check_label_selector(col, peer[key], path + (key,), cilium_keys=False, rule="k8s/networkpolicy")
    if "ipBlock" in peer:
        count += 1
        _check_ip_block(col, peer["ipBlock"], path + ("ipBlock",))
    if count == 0:
        col.error(path, "a peer must specify podSelector, namespaceSelector or ipBlock", rule="k8s/networkpolicy")
    elif count > 1 and "ipBlock" in peer:
        col.error(path, "a peer may not specify both ipBlock and another peer: use separate list entries",
                  rule="k8s/networkpolicy")


def check_network_policy(col: Collector, obj: dict) -> None:
    """The API server's ValidateNetworkPolicy (networking.k8s.io/v1)."""
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        col.error(("metadata",), "metadata.name is required", rule="k8s/networkpolicy")
    spec = obj.get("spec")
    if spec is None:
        col.error((), "spec is required: add spec.podSelector ({} selects every pod in the namespace)",
                  rule="k8s/networkpolicy")
        return
    check_label_selector(col, spec.get("podSelector") or {}, ("spec", "podSelector"), cilium_keys=False,
                         rule="k8s/networkpolicy")
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            rpath = ("spec", direction, i)
            for j, port in enumerate(rule.get("ports") or []):
                _check_np_port(col, port, rpath + ("ports", j))
            for j, peer in enumerate(rule.get(peers) or []):
                _check_np_peer(col, peer, rpath + (peers, j))
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        col.error(("spec", "policyTypes"), "may not specify more than two policyTypes", rule="k8s/networkpolicy")
        return
    for i, ptype in enumerate(types):
        if ptype not in ("Ingress", "Egress"):
            col.error(("spec", "policyTypes", i), f"policy type {ptype!r} is not supported: use Ingress or Egress",
                      rule="k8s/networkpolicy")
    if "podSelector" in spec and not spec["podSelector"].get("matchLabels") \
            and not spec["podSelector"].get("matchExpressions"):
        col.add(WARNING, ("spec", "podSelector"), "podSelector {} selects every pod in the namespace",
                rule="lint/select-all")
