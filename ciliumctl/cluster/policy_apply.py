"""`ciliumctl policy apply|get|delete` against a cluster: validate locally first (the same check as node mode),
then server-side apply with field manager `ciliumctl`, reporting created / configured / unchanged like kubectl.

Nothing half-applied: after local validation every object goes through a server dry run first, so an object the
API server refuses (schema, namespace missing, a field-manager conflict) stops the whole set before any write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ciliumctl.base.errors import EnvironmentProblem, Finding, UsageError
from ciliumctl.cluster.install import FIELD_MANAGER, content_of
from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube

if TYPE_CHECKING:
    from ciliumctl.policy.load import Document

POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy")
KIND_ALIASES = {
    "cnp": "CiliumNetworkPolicy", "ciliumnetworkpolicy": "CiliumNetworkPolicy",
    "ciliumnetworkpolicies": "CiliumNetworkPolicy",
    "ccnp": "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicy": "CiliumClusterwideNetworkPolicy",
    "ciliumclusterwidenetworkpolicies": "CiliumClusterwideNetworkPolicy",
    "netpol": "NetworkPolicy", "networkpolicy": "NetworkPolicy", "networkpolicies": "NetworkPolicy",
}
DRY_RUN_MODES = ("none", "client", "server")


@dataclass
class PolicyResult:
    kind: str
    namespace: str
    name: str
    action: str   # created | configured | unchanged | deleted | not found, + " (dry run)" / " (server dry run)"

    @property
    def resource(self) -> str:
        k = KINDS[self.kind]
        return f"{k.kind.lower()}.{k.group}/{self.name}"

    def line(self) -> str:
        return f"{self.resource} {self.action}"

    def to_dict(self) -> dict:
        return asdict(self)


def kind_from_alias(text: str) -> str:
    kind = KIND_ALIASES.get(text.lower()) or next((k for k in POLICY_KINDS if k.lower() == text.lower()), None)
    if kind is None:
        raise UsageError(f"--kind {text!r}: use cnp, ccnp or netpol")
    return kind


def _connect(kube: Kube | None, kubeconfig: str | None, context: str | None) -> Kube:
    return kube if kube is not None else Kube.connect(kubeconfig, context)


def default_namespace(kube: Kube) -> str:
    """The kubeconfig context's namespace, as kubectl uses it; else `default`."""
    return getattr(kube, "namespace", None) or "default"


def load_valid(files: list[str], warnings: list | None = None) -> list[Document]:
    """Loaded documents, all valid policies, or checked.InvalidPolicies carrying the reports (nothing applied).
    Reports with warnings are appended to `warnings` when given (to print them as `policy validate` does)."""
    from ciliumctl.policy import checked

    docs, reports = checked.validate_paths(files)
    if warnings is not None:
        warnings.extend(r for r in reports if getattr(r, "warnings", None))
    for doc in docs:
        if doc.kind not in POLICY_KINDS:
            raise UsageError(f"{doc.file}: document {doc.index} is a {doc.kind or 'object without kind'}; "
                             f"policy apply takes {', '.join(POLICY_KINDS)}")
    return docs


def to_object(data: dict, namespace: str) -> dict:
    """What goes to the server: the document without server-owned metadata or status, namespace filled in."""
    obj = {k: v for k, v in data.items() if k != "status"}
    meta = {k: v for k, v in (data.get("metadata") or {}).items()
            if k not in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")}
    if KINDS[obj["kind"]].namespaced:
        meta["namespace"] = meta.get("namespace") or namespace
    else:
        meta.pop("namespace", None)
    obj["metadata"] = meta
    return obj


def _action(before: dict | None, after: dict | None, dry: bool) -> str:
    if before is None:
        return "created"
    if after is None:
        return "configured"
    if after["metadata"].get("resourceVersion") != before["metadata"].get("resourceVersion") or \
            (dry and content_of(after) != content_of(before)):
        return "configured"
    return "unchanged"


def apply_policies(files: list[str], kubeconfig: str | None = None, context: str | None = None,
                   dry_run: str = "none", namespace: str | None = None, force_conflicts: bool = False,
                   kube: Kube | None = None, warnings: list | None = None, strict: bool = False,
                   gaps: list | None = None) -> list[PolicyResult]:
    """Validate `files` locally, then apply every policy; one result per object in file order.
    dry_run: none | client (validate, compare with the server, write nothing) | server (dryRun=All).
    warnings: a list that receives the validation reports carrying warnings.
    gaps: a list that receives the parts the agents' datapath does not enforce (enforcement_gaps.LocatedGap);
    strict: refuse a set with such parts before anything reaches the server (UnenforcedPolicies, exit 1)."""
    from ciliumctl.policy import enforcement_gaps

    if dry_run not in DRY_RUN_MODES:
        raise UsageError(f"--dry-run={dry_run}: use client or server")
    docs = load_valid(files, warnings)
    unenforced = enforcement_gaps.locate_all(docs)
    if gaps is not None:
        gaps.extend(unenforced)
    if strict and unenforced:
        raise enforcement_gaps.UnenforcedPolicies(unenforced)
    kube = _connect(kube, kubeconfig, context)
    ns = namespace or default_namespace(kube)
    objs = [to_object(doc.data, ns) for doc in docs]
    seen: dict[tuple, str] = {}
    for obj, doc in zip(objs, docs):
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key in seen:
            raise UsageError(f"{obj['kind']} {key[2]} is given twice ({seen[key]} and {doc.file}#{doc.index}); "
                             "keep one")
        seen[key] = f"{doc.file}#{doc.index}"

    befores = [kube.get(KINDS[o["kind"]], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs]
    planned = []
    for obj, doc in zip(objs, docs):  # the server's verdict on every object before any write
        try:
            planned.append(kube.apply(obj, FIELD_MANAGER, force=force_conflicts, dry_run=True))
        except ApiFailure as err:
            # invalid (400/422) is a finding about the policy; not served (404: no CRD), forbidden, ... are not
            error = Finding if err.status in (400, 422) else EnvironmentProblem
            raise error(f"{doc.file}: {obj['kind']} {obj['metadata']['name']}: the API server refuses it: "
                        f"{err.api_message}; nothing applied") from None

    results = []
    for obj, before, dry in zip(objs, befores, planned):
        meta = obj["metadata"]
        if dry_run in ("client", "server"):
            suffix = " (dry run)" if dry_run == "client" else " (server dry run)"
            action = _action(before, dry, True) + suffix
        else:
            after = kube.apply(obj, FIELD_MANAGER, force=force_conflicts)
            action = _action(before, after, False)
        results.append(PolicyResult(obj["kind"], meta.get("namespace", ""), meta["name"], action))
    return results


def get_policies(kind: str | None = None, name: str | None = None, namespace: str | None = None,
                 all_namespaces: bool = False, kubeconfig: str | None = None, context: str | None = None,
                 kube: Kube | None = None) -> list[dict]:
    """Policy objects from the cluster (all three kinds unless `kind`). A missing named policy is a Finding."""
    kube = _connect(kube, kubeconfig, context)
    kinds = [kind_from_alias(kind)] if kind else list(POLICY_KINDS)
    ns = None if all_namespaces else (namespace or default_namespace(kube))
    out = []
    for k in kinds:
        kd = KINDS[k]
        try:
            if name and (ns or not kd.namespaced):
                obj = kube.get(kd, name, ns if kd.namespaced else None)
                items = [obj] if obj else []
            elif name:  # a name in every namespace
                items = [o for o in kube.list(kd)[0] if o["metadata"]["name"] == name]
            else:
                items, _ = kube.list(kd, ns if kd.namespaced else None)
        except ApiFailure as err:
            if err.status == 404 and k != "NetworkPolicy":  # CRD not installed: no such policies
                continue
            raise
        for item in items:
            item.setdefault("apiVersion", kd.api_version)
            item.setdefault("kind", k)
        out.extend(items)
    if name and not out:
        raise Finding(f"policy {name!r} not found in namespace {ns or '(all)'}; see `ciliumctl policy get`")
    return out


def policy_rows(objs: list[dict]) -> list[dict]:
    """Table rows: KIND NAMESPACE NAME VALID ENFORCED MESSAGE (from the agents' `Valid` and `Enforced` conditions;
    ENFORCED full | partial | Unknown, the message then says what is not enforced)."""
    from ciliumctl.cluster.status_conditions import enforced_condition, valid_condition

    rows = []
    for obj in objs:
        cond = valid_condition(obj) or {}
        enforced = enforced_condition(obj) or {}
        message = cond.get("message", "") if cond.get("status") == "False" else ""
        if cond.get("status") == "True" and enforced.get("status") == "False":
            message = enforced.get("message", "")
        rows.append({"kind": obj["kind"], "namespace": obj["metadata"].get("namespace", ""),
                     "name": obj["metadata"]["name"], "valid": cond.get("status", "Unknown"),
                     "enforced": {"True": "full", "False": "partial"}.get(enforced.get("status", ""), "Unknown")
                     if cond.get("status") != "False" else "none",
                     "message": message})
    return rows


def delete_policies(names: list[str] | None = None, files: list[str] | None = None, kind: str | None = None,
                    namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None,
                    dry_run: bool = False, kube: Kube | None = None) -> list[PolicyResult]:
    """Delete by name (with kind, default CiliumNetworkPolicy) or every policy in `files`.
    Results say deleted or not found; the caller exits 1 when some were not found, like kubectl."""
    kube = _connect(kube, kubeconfig, context)
    ns = namespace or default_namespace(kube)
    targets: list[tuple[str, str, str]] = []
    if files:
        from ciliumctl.policy import load

        for doc in load.load_paths(files):
            if doc.kind not in POLICY_KINDS:
                raise UsageError(f"{doc.file}: document {doc.index} is a {doc.kind or 'object without kind'}; "
                                 f"policy delete takes {', '.join(POLICY_KINDS)}")
            obj = to_object(doc.data, ns)
            targets.append((obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
    k = kind_from_alias(kind) if kind else "CiliumNetworkPolicy"
    for name in names or []:
        targets.append((k, ns if KINDS[k].namespaced else "", name))
    if not targets:
        raise UsageError("policy delete: give policy names or -f FILE")
    results = []
    for kind_, ns_, name in targets:
        gone = kube.delete(KINDS[kind_], name, ns_ or None, dry_run=dry_run)
        action = ("deleted" if gone else "not found") + (" (server dry run)" if dry_run and gone else "")
        results.append(PolicyResult(kind_, ns_, name, action))
    return results
