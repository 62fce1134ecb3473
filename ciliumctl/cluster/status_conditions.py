"""The `Valid` condition on CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy status: the agent sets it to
False with the validation finding on a policy it rejects and True on one it enforces, so that a policy is never
ignored silently (cilium#23152). Written through the status subresource, only when it changes."""

from __future__ import annotations

import datetime

from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube

VALID = "Valid"
REASON_OK = "PolicyAccepted"
REASON_INVALID = "PolicyInvalid"
WITH_STATUS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
MAX_MESSAGE = 1024


def valid_condition(obj: dict) -> dict | None:
    for cond in ((obj.get("status") or {}).get("conditions") or []):
        if cond.get("type") == VALID:
            return cond
    return None


def validate_object(obj: dict) -> tuple[bool, str]:
    """The same verdict as `policy validate` (H1's validator) for an object from the API server.
    Returns (valid, message): the message lists the errors as `path: what is wrong`."""
    import yaml

    from ciliumctl.policy import load, validate

    kind, meta = obj.get("kind", ""), obj.get("metadata") or {}
    data = {k: v for k, v in obj.items() if k != "status"}
    data["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    where = f"{kind}/{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta.get('name', '')}"
    docs = load.load_text(yaml.safe_dump(data, sort_keys=False), file=where)
    options = None
    for name in ("ValidateOptions", "Options", "ValidationOptions"):
        cls = getattr(validate, name, None)
        if cls is not None:
            options = cls()
            break
    reports = validate.validate_documents(docs, options)
    errors = [f for r in reports for f in r.findings if getattr(f, "severity", "error") == "error"]
    if not errors and all(r.valid for r in reports):
        return True, "Policy validation succeeded"
    text = "; ".join(f"{f.path}: {f.message}" if getattr(f, "path", "") else f.message for f in errors)
    return False, (text or "invalid policy")[:MAX_MESSAGE]


def desired_conditions(obj: dict, valid: bool, message: str) -> list[dict] | None:
    """The new conditions list, or None when the current Valid condition already says this."""
    status = "True" if valid else "False"
    reason = REASON_OK if valid else REASON_INVALID
    generation = (obj.get("metadata") or {}).get("generation")
    current = valid_condition(obj)
    if current and current.get("status") == status and current.get("message") == message and \
            current.get("reason") == reason and current.get("observedGeneration") == generation:
        return None
    changed_at = current.get("lastTransitionTime") if current and current.get("status") == status else None
    cond = {"type": VALID, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": changed_at or datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}
    if generation is not None:
        cond["observedGeneration"] = generation
    others = [c for c in ((obj.get("status") or {}).get("conditions") or []) if c.get("type") != VALID]
    return others + [cond]


def set_valid(kube: Kube, obj: dict, valid: bool, message: str, attempts: int = 5) -> bool:
    """Write the Valid condition if it differs; retry on resourceVersion conflicts (several agents write it).
    True when a write happened. NetworkPolicy has no such status: nothing to do."""
    if obj.get("kind") not in WITH_STATUS:
        return False
    kind, meta = KINDS[obj["kind"]], obj["metadata"]
    for _ in range(attempts):
        conditions = desired_conditions(obj, valid, message)
        if conditions is None:
            return False
        body = dict(obj)
        body["status"] = {**(obj.get("status") or {}), "conditions": conditions}
        try:
            kube.replace(body, sub="status", field_manager="ciliumctl-agent")
            return True
        except ApiFailure as err:
            if err.status == 404:
                return False  # deleted meanwhile
            if err.status != 409:
                raise
        fresh = kube.get(kind, meta["name"], meta.get("namespace"))
        if fresh is None:
            return False
        obj = fresh
    return False


def report(kube: Kube, obj: dict) -> tuple[bool, str]:
    """Validate a policy object and publish the verdict on its status. Returns (valid, message)."""
    valid, message = validate_object(obj)
    set_valid(kube, obj, valid, message)
    return valid, message
