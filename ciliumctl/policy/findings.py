"""What validation reports: findings (error or warning, where, what to do) per document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ciliumctl.base.errors import shorten

ERROR = "error"
WARNING = "warning"


def format_path(path, prefix: str = "") -> str:
    """("spec", "egress", 0, "toPorts") -> "spec.egress[0].toPorts" (with an optional "items[2]" prefix)."""
    out = prefix
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Finding:
    severity: str          # "error" | "warning"
    message: str           # what is wrong and how to fix it
    path: str              # spec.egress[0].toPorts[0].ports[1].port
    line: int
    column: int
    rule: str = "cilium"   # a stable id for SARIF: cilium/..., decode/..., strict/..., schema/..., lint/...

    def as_dict(self) -> dict:
        return {"severity": self.severity, "message": self.message, "path": self.path,
                "line": self.line, "column": self.column}


@dataclass
class Report:
    """The verdict for one document: valid unless some finding is an error."""

    document: Any          # a load.Document (load imports this module, so it is not named here)
    findings: list = field(default_factory=list)
    checked: bool = True   # False for objects that are not network policies (skipped)
    namespace: str | None = None  # the effective namespace: "default" for a namespaced policy without one
    object: dict | None = None    # the object as the API server would store it: unknown fields and nulls pruned

    def __post_init__(self):
        if self.namespace is None:
            self.namespace = getattr(self.document, "namespace", None)

    @property
    def valid(self) -> bool:
        return not any(f.severity == ERROR for f in self.findings)

    @property
    def errors(self) -> list:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list:
        return [f for f in self.findings if f.severity == WARNING]

    def as_dict(self) -> dict:
        doc = self.document
        out = {"file": doc.file, "index": doc.index, "kind": doc.kind, "name": doc.name,
               "namespace": self.namespace, "valid": self.valid,
               "findings": [f.as_dict() for f in self.findings]}
        if getattr(doc, "path_prefix", ""):
            out["item"] = doc.path_prefix  # "items[2]": the items of a List share its document index
        return out


class Collector:
    """Gathers the findings of one document, turning data paths into file positions."""

    def __init__(self, doc):
        self.doc = doc
        self.findings: list[Finding] = []
        self._seen: set = set()
        self.error_paths: set = set()  # data paths with an error: later checks do not pile on "missing" errors

    def add(self, severity: str, path, message: str, rule: str = "cilium", key: bool = False) -> None:
        path = tuple(path)
        message = shorten(message)      # a 1 MB value in a policy is not echoed whole
        ident = (severity, path, message)
        if ident in self._seen:
            return
        self._seen.add(ident)
        if severity == ERROR:
            self.error_paths.add(path)
        line, column = self.doc.pos(path, key=key)
        self.findings.append(Finding(severity, message, format_path(path, self.doc.path_prefix),
                                     line, column, rule))

    def error(self, path, message: str, rule: str = "cilium", key: bool = False) -> None:
        self.add(ERROR, path, message, rule, key)

    def warn(self, path, message: str, rule: str = "lint", key: bool = False) -> None:
        self.add(WARNING, path, message, rule, key)
