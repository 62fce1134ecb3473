"""The `Valid` and `Enforced` conditions on CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy status.

`Valid` (Cilium's own, pkg/k8s/apis/cilium.io/v2/cnp_types.go): the agent sets it to False with the validation
finding on a policy it rejects and True on one it enforces, so that a policy is never ignored silently
(cilium#23152). `Enforced` (ours, same NetworkPolicyCondition shape): True when the datapath enforces all of the
policy, False with the parts it does not (policy.enforcement_gaps) or when the policy is invalid. Written through
the status subresource, only when one of them changes."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube
from ciliumctl.policy import enforcement_gaps

VALID = "Valid"
ENFORCED = enforcement_gaps.ENFORCED
REASON_OK = "PolicyAccepted"
REASON_INVALID = "PolicyInvalid"
WITH_STATUS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
MAX_MESSAGE = 1024


def condition(obj: dict, ctype: str) -> dict | None:
    for cond in ((obj.get("status") or {}).get("conditions") or []):
        if cond.get("type") == ctype:
            return cond
    return None


def valid_condition(obj: dict) -> dict | None:
    return condition(obj, VALID)


def enforced_condition(obj: dict) -> dict | None:
    return condition(obj, ENFORCED)


def wanted_conditions(obj: dict, valid: bool, message: str, gaps: list | None = None) -> list[dict]:
    """The Valid and Enforced conditions (type, status, reason, message) a verdict gives. gaps: the policy's
    enforcement_gaps (found from `obj` when not given)."""
    out = [{"type": VALID, "status": "True" if valid else "False", "reason": REASON_OK if valid else REASON_INVALID,
            "message": message}]
    if not valid:
        out.append({"type": ENFORCED, "status": "False", "reason": REASON_INVALID,
                    "message": "the policy is invalid: no agent enforces any of it"})
    else:
        out.append(enforcement_gaps.condition(enforcement_gaps.gaps_of_data(obj) if gaps is None else gaps,
                                              MAX_MESSAGE))
    return out


def validate_object(obj: dict, node_selector_labels: bool = False) -> tuple[bool, str]:
    """The same verdict as `policy validate` (H1's validator) for an object from the API server.
    Returns (valid, message): the message lists the errors as `path: what is wrong`. node_selector_labels: the
    agent runs with --enable-node-selector-labels (fromNodes/toNodes are valid then, as in Cilium)."""
    import yaml

    from ciliumctl.policy import load, validate

    kind, meta = obj.get("kind", ""), obj.get("metadata") or {}
    data = {k: v for k, v in obj.items() if k != "status"}
    data["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    ns = meta.get("namespace")
    where = f"{kind}/{ns + '/' if ns else ''}{meta.get('name', '')}"
    docs = load.load_text(yaml.safe_dump(data, sort_keys=False), file=where)
    options = None
    for name in ("ValidateOptions", "Options", "ValidationOptions"):
        cls = getattr(validate, name, None)
        if cls is not None:
            options = cls(enable_node_selector_labels=True) if node_selector_labels else cls()
            break
    reports = validate.validate_documents(docs, options)
    errors = [f for r in reports for f in r.findings if getattr(f, "severity", "error") == "error"]
    if not errors and all(r.valid for r in reports):
        return True, "Policy validation succeeded"
    text = "; ".join(f"{f.path}: {f.message}" if getattr(f, "path", "") else f.message for f in errors)
    return False, (text or "invalid policy")[:MAX_MESSAGE]


def desired_conditions(obj: dict, wanted: list[dict]) -> list[dict] | None:
    """The new conditions list, or None when the current conditions already say all of `wanted`."""
    generation = (obj.get("metadata") or {}).get("generation")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fresh, changed = [], False
    for want in wanted:
        current = condition(obj, want["type"])
        if not (current and all(current.get(k) == want[k] for k in ("status", "reason", "message")) and
                current.get("observedGeneration") == generation):
            changed = True
        since = (current.get("lastTransitionTime") if current is not None and current.get("status") == want["status"]
                 else None)
        cond = {**want, "lastTransitionTime": since or now}
        if generation is not None:
            cond["observedGeneration"] = generation
        fresh.append(cond)
    if not changed:
        return None
    types = {w["type"] for w in wanted}
    others = [c for c in ((obj.get("status") or {}).get("conditions") or []) if c.get("type") not in types]
    return others + fresh


def set_valid(kube: Kube, obj: dict, valid: bool, message: str, attempts: int = 5, gaps: list | None = None) -> bool:
    """Write the Valid and Enforced conditions if they differ; retry on resourceVersion conflicts (several agents
    write them). True when a write happened. NetworkPolicy has no such status: nothing to do."""
    wanted = wanted_conditions(obj, valid, message, gaps) if obj.get("kind") in WITH_STATUS else []
    return _write_conditions(kube, obj, lambda current: desired_conditions(current, wanted), attempts)


def report(kube: Kube, obj: dict) -> tuple[bool, str]:
    """Validate a policy object and publish the verdict (Valid, Enforced) on its status. Returns (valid, message)."""
    valid, message = validate_object(obj)
    set_valid(kube, obj, valid, message)
    return valid, message


# One node's own condition on a policy, beside the cluster-wide Valid and Enforced: what only that node's agent
# knows (the host firewall's lock-out guard holds a host policy back there). Its type names the node, so that agents
# never overwrite each other's; the agent removes it once it no longer applies.
HELD_BACK = "HostPolicyHeldBack"
REASON_HELD_BACK = "WouldCutLiveConnections"


def node_condition_type(kind: str, node: str) -> str:
    return f"{kind}/{node}"


def set_node_condition(kube: Kube, obj: dict, ctype: str, wanted: dict | None, attempts: int = 5) -> bool:
    """Write this node's condition `ctype` ({status, reason, message}), or remove it (None); retry on conflicts.
    True when a write happened."""
    def conditions(current: dict) -> list[dict] | None:
        if wanted is not None:
            return desired_conditions(current, [{"type": ctype, **wanted}])
        if condition(current, ctype) is None:
            return None
        return [c for c in (current.get("status") or {}).get("conditions") or [] if c.get("type") != ctype]
    return _write_conditions(kube, obj, conditions, attempts)


def _write_conditions(kube: Kube, obj: dict, conditions_of: Callable[[dict], list[dict] | None],
                      attempts: int) -> bool:
    """Replace the policy's status conditions with conditions_of(the object) unless that is None (nothing to
    change); on a resourceVersion conflict read the object again and retry. True when a write happened."""
    if obj.get("kind") not in WITH_STATUS:
        return False
    kind, meta = KINDS[obj["kind"]], obj["metadata"]
    for _ in range(attempts):
        conditions = conditions_of(obj)
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
