"""SARIF 2.1.0 for validation reports, for GitHub code scanning (`ciliumctl policy validate -o sarif`)."""

from __future__ import annotations

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

RULES = {
    "cilium": "The Cilium agent rejects the policy on import",
    "cilium/selector": "A label selector the Cilium agent rejects",
    "decode/type": "A value of the wrong JSON type: the agent cannot decode the policy",
    "decode/object": "Not a valid network-policy object (kind, apiVersion)",
    "decode/value": "A YAML value that cannot become JSON",
    "k8s/networkpolicy": "The Kubernetes API server rejects the NetworkPolicy",
    "schema": "The CRD's OpenAPI schema rejects the value (kubectl apply fails)",
    "strict/unknown-field": "An unknown field: dropped by the API server, refused by strict field validation",
    "strict/duplicate-key": "A duplicate mapping key",
    "strict/name": "A name, namespace or metadata label the API server refuses",
    "lint/dropped-field": "A field Cilium ignores in this place",
    "lint/select-all": "A selector that selects everything",
    "lint/octal-port": "A port the agent reads as an octal number",
    "lint/port-format": "A port written in an unusual form",
    "lint/icmp-type": "An ICMP type that does not exist",
    "lint/namespace": "A namespace that is ignored",
    "lint/except": "An except prefix that removes the whole CIDR",
    "lint/extended-protocol": "A protocol the datapath drops unless an agent option is on",
}


def _uri(file: str) -> str:
    return "stdin" if file == "-" else file.replace("\\", "/").removeprefix("./")


def to_sarif(reports, version: str) -> dict:
    used = sorted({f.rule for r in reports for f in r.findings})
    rule_index = {rule: i for i, rule in enumerate(used)}
    results = []
    for report in reports:
        doc = report.document
        for f in report.findings:
            results.append({
                "ruleId": f.rule,
                "ruleIndex": rule_index[f.rule],
                "level": "error" if f.severity == "error" else "warning",
                "message": {"text": f"{f.path}: {f.message}" if f.path else f.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(doc.file)},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    },
                    "logicalLocations": [{"fullyQualifiedName": f.path or "(document)", "kind": "member"}],
                }],
                "partialFingerprints": {
                    "ciliumctl/v1": f"{_uri(doc.file)}#{doc.index}:{f.rule}:{f.path}",
                },
            })
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "ciliumctl",
                "version": version,
                "rules": [{"id": rule, "shortDescription": {"text": RULES.get(rule, rule)},
                           "defaultConfiguration": {"level": "error" if not rule.startswith("lint")
                                                    else "warning"}} for rule in used],
            }},
            "results": results,
        }],
    }
