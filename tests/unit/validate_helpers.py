"""Helpers for the policy-validation tests: build a policy from a YAML spec snippet and validate it."""

import textwrap

from ciliumctl.policy import load, validate

HEADERS = {
    "CiliumNetworkPolicy": "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: t\n"
                           "  namespace: default\n",
    "CiliumClusterwideNetworkPolicy": "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
                                      "metadata:\n  name: t\n",
}


def policy_text(spec: str, kind: str = "CiliumNetworkPolicy") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return HEADERS[kind] + "spec:\n" + body + "\n"


def check(spec: str, kind: str = "CiliumNetworkPolicy", **options):
    """The Report for one policy whose spec is `spec` (YAML, any indentation)."""
    docs = load.load_text(policy_text(spec, kind), "t.yaml")
    assert len(docs) == 1
    return validate.validate_document(docs[0], validate.Options(**options))


def check_text(text: str, **options):
    docs = load.load_text(textwrap.dedent(text), "t.yaml")
    return [validate.validate_document(d, validate.Options(**options)) for d in docs]


def errors(report) -> list[str]:
    return [f"{f.path}: {f.message}" for f in report.findings if f.severity == "error"]


def warnings(report) -> list[str]:
    return [f"{f.path}: {f.message}" for f in report.findings if f.severity == "warning"]
