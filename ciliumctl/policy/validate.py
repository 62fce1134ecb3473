"""Validate loaded policy documents: the verdict Cilium 1.19's agent import would give, plus API-server checks.

    docs = load.load_paths(["policies/"])
    reports = validate.validate_documents(docs, validate.Options(strict=True))
    bad = [r for r in reports if not r.valid]

Levels:
- always: what the agent's import rejects (Go decoding + Parse + rule validation) -> errors, and likely
  mistakes it accepts (dropped fields, deny rules with L7 parts, select-all selectors, octal ports) -> warnings;
- strict (`kubectl apply --validate=strict`): unknown and duplicate fields, names the API server refuses -> errors;
- schema (on with strict unless turned off): the CRD's OpenAPI checks (enums, patterns, max items) -> errors,
  otherwise reported as warnings.

The shared corpus' verdict columns are Options() for `valid`, Options(strict=True, schema=False) for
`valid_strict`, and Options(enable_node_selector_labels=True, enable_extended_ip_protocols=True) for the third.
Each Report has the findings, the effective namespace and, when the object decodes, `object`: the object as the
API server would store it (unknown fields and nulls pruned).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ciliumctl.policy.checks_cilium import AgentOptions, RuleChecker
from ciliumctl.policy.checks_k8s import check_network_policy, check_object_meta
from ciliumctl.policy.findings import ERROR, WARNING, Collector, Finding, Report  # noqa: F401 (re-exported)

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
NP = "NetworkPolicy"
API_VERSIONS = {CNP: "cilium.io/v2", CCNP: "cilium.io/v2", NP: "networking.k8s.io/v1"}
POLICY_KINDS = tuple(API_VERSIONS)
LRP = "CiliumLocalRedirectPolicy"   # not a network policy: checked here, applied by `service redirect apply`


@dataclass(frozen=True)
class Options:
    enable_node_selector_labels: bool = False
    enable_extended_ip_protocols: bool = False
    enable_l7_proxy: bool = True
    enable_icmp_rules: bool = True
    strict: bool = False          # unknown/duplicate fields and refused names are errors
    schema: bool | None = None    # CRD schema violations are errors (None: same as strict)

    @property
    def agent(self) -> AgentOptions:
        return AgentOptions(self.enable_node_selector_labels, self.enable_extended_ip_protocols,
                            self.enable_l7_proxy, self.enable_icmp_rules)

    @property
    def strict_schema(self) -> bool:
        return self.strict if self.schema is None else self.schema


def is_policy(doc) -> bool:
    return doc.kind in POLICY_KINDS


def validate_document(doc, options: Options | None = None) -> Report:
    from ciliumctl.policy import decode, schema_cilium, schema_k8s

    options = options or Options()
    col = Collector(doc)
    report = Report(doc, col.findings)
    data = doc.data
    syntax = [i for i in doc.issues if i.kind == "syntax"]
    if syntax:   # a file that is not valid YAML (load.load_paths with keep_going): its own finding
        col.error((), syntax[0].message, rule="decode/yaml")
        return report
    if not isinstance(data, dict):
        col.error((), "not a Kubernetes object: expected a mapping with apiVersion, kind and metadata",
                  rule="decode/object")
        return report
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        col.error((), "kind is missing: set kind: CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or "
                      "NetworkPolicy", rule="decode/object")
        return report
    if kind == LRP:
        return _validate_local_redirect(col, report, data)
    if kind not in POLICY_KINDS:
        close = difflib.get_close_matches(kind, POLICY_KINDS, n=1, cutoff=0.85)
        if close:
            col.error(("kind",), f"unknown kind {kind!r}: did you mean {close[0]!r}?", rule="decode/object")
            return report
        report.checked = False
        return report
    for issue in doc.issues:
        if issue.kind == "duplicate-key":
            col.add(ERROR if options.strict else WARNING, issue.path, issue.message, rule="strict/duplicate-key",
                    key=True)
        else:
            col.error(issue.path, issue.message, rule="decode/value")
    want = API_VERSIONS[kind]
    api = data.get("apiVersion")
    if api != want:
        col.error(("apiVersion",), f'no matches for kind "{kind}" in version "{api}": use apiVersion: {want}'
                  if api else f"apiVersion is missing: set apiVersion: {want}", rule="decode/object")
    if kind == CCNP and doc.namespace:
        col.warn(("metadata", "namespace"), "a CiliumClusterwideNetworkPolicy is cluster-scoped: "
                                            "metadata.namespace is ignored", rule="lint/namespace")
    if kind in (CNP, NP) and not doc.namespace:
        report.namespace = "default"  # what the API server assigns (kubectl's default namespace)
    schema = {CNP: schema_cilium.CNP, CCNP: schema_cilium.CCNP, NP: schema_k8s.NETWORK_POLICY}[kind]
    decoder = decode.Decoder(col, strict_fields=options.strict, strict_schema=options.strict_schema)
    obj = decoder.decode(data, schema, ())
    if obj is decode.INVALID:
        return report
    report.object = obj
    check_object_meta(col, obj.get("metadata") or {}, namespaced=kind != CCNP,
                      severity=ERROR if options.strict else WARNING)
    if kind == NP:
        check_network_policy(col, obj)
    else:
        RuleChecker(col, options.agent, kind).check_policy(obj)
    _drop_shadowed_schema_warnings(col.findings)
    col.findings.sort(key=lambda f: (f.line, f.column, f.severity != ERROR))
    return report


def _validate_local_redirect(col: Collector, report: Report, data: dict) -> Report:
    """A CiliumLocalRedirectPolicy: the checks `service redirect apply` makes (services.local_redirect.parse)."""
    from ciliumctl.base.errors import UsageError
    from ciliumctl.services.local_redirect import parse

    try:
        parse(data)
    except UsageError as err:
        col.error((), str(err), rule="cilium/local-redirect")
        return report
    report.object = data
    return report


def _drop_shadowed_schema_warnings(findings: list) -> None:
    """A CRD-schema warning on a node that already has an error adds nothing: keep the error only."""
    error_paths = {f.path for f in findings if f.severity == ERROR}
    findings[:] = [f for f in findings if not (f.rule == "schema" and f.severity == WARNING
                                               and f.path in error_paths)]


def validate_documents(docs, options: Options | None = None) -> list[Report]:
    """One Report per document; documents that are not network policies come back with checked=False."""
    return [validate_document(doc, options) for doc in docs]
