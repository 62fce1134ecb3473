"""Policy files taken as one unit, as `policy apply` takes them: every document valid, or nothing at all."""

from __future__ import annotations

from ciliumctl.base.errors import Finding, UsageError
from ciliumctl.policy import load, validate


class InvalidPolicies(Finding):
    """Validation findings: the reports are attached for the command layer to render like `policy validate`."""

    def __init__(self, reports, message: str):
        super().__init__(message)
        self.reports = reports


def validate_paths(paths_: list[str], max_size: int = load.DEFAULT_MAX_SIZE, node_selector_labels: bool = False):
    """(documents, reports) of `paths_` when every policy is valid under the agent's default options (reports
    carry any warnings); InvalidPolicies otherwise. node_selector_labels: the node runs with Cilium's
    --enable-node-selector-labels (fromNodes/toNodes valid)."""
    docs = load.load_paths([str(p) for p in paths_], max_size=max_size)
    if not docs:
        raise UsageError(f"no policy documents found in {', '.join(map(str, paths_))}; give YAML files or a "
                         "directory of them")
    reports = validate.validate_documents(docs, validate.Options(enable_node_selector_labels=node_selector_labels))
    bad = [r for r in reports if not r.valid]
    if bad:
        raise InvalidPolicies(reports, f"{len(bad)} of {len(reports)} policies invalid: nothing applied")
    return docs, reports
