"""The state of the fake API server: a resource-keyed object store with a global resourceVersion and an event
history for watches. Generic on purpose: every resource (built-in or from a CRD) is stored the same way.

Semantics kept from the real API server because product code depends on them: resourceVersion conflicts on
update, AlreadyExists on create, status subresources that the main resource cannot write, generation bumps on
spec changes, no write (no new resourceVersion) for a no-op update, server-side apply with field ownership
per manager, dryRun, and 410 Gone for a watch from a compacted resourceVersion.
Simplified: lists are atomic in apply and merge patches, strategic merge = JSON merge patch, no finalizers,
namespace and CRD deletion cascade at once.
"""

from __future__ import annotations

import copy
import datetime
import re
import threading
import uuid
from dataclasses import dataclass, field


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False
    short_names: tuple[str, ...] = ()
    schema: dict | None = None  # openAPIV3Schema of a CRD version

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def discovery(self) -> dict:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        return {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": verbs, "shortNames": list(self.short_names)}


BUILTIN = [
    ResourceType("", "v1", "namespaces", "Namespace", False, True, ("ns",)),
    ResourceType("", "v1", "pods", "Pod", True, True, ("po",)),
    ResourceType("", "v1", "nodes", "Node", False, True, ("no",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, False, ("cm",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, False, ("sa",)),
    ResourceType("", "v1", "services", "Service", True, True, ("svc",)),
    ResourceType("", "v1", "secrets", "Secret", True),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, True, ("quota",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, True, ("ds",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, True, ("deploy",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, False, ("netpol",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 False, True, ("crd",)),
]

# Fields the server owns: never part of a manager's field set, never taken from a client's apply.
_SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- selectors

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(selector: str | None):
    """labelSelector: a=b, a==b, a!=b, a, !a, a in (x,y), a notin (x,y)."""
    if not selector:
        return lambda labels: True
    tests = []
    for term in _split_selector(selector):
        m = _SET_RE.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda l, k=key, vs=values: l.get(k) in vs)
            else:
                tests.append(lambda l, k=key, vs=values: l.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda l, k=key, v=value: l.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda l, k=key, v=value: l.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda l, k=term[1:].strip(): k not in l)
        else:
            tests.append(lambda l, k=term: k in l)
    return lambda labels: all(t(labels or {}) for t in tests)


def _get_path(obj: dict, dotted: str):
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_matcher(selector: str | None):
    """fieldSelector: dotted.path=value / dotted.path!=value (e.g. spec.nodeName=node1)."""
    if not selector:
        return lambda obj: True
    tests = []
    for term in _split_selector(selector):
        neg = "!=" in term
        path, value = (s.strip() for s in term.replace("==", "=").split("!=" if neg else "=", 1))

        def test(obj, p=path, v=value, n=neg):
            got = _get_path(obj, p)
            got = "" if got is None else str(got)
            return (got != v) if n else (got == v)
        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


# ---------------------------------------------------------------- merge helpers

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (also used for strategic merge: lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _leaf_paths(obj, prefix=()) -> set[tuple]:
    """Field paths of an object as server-side apply tracks them (maps recurse; lists and scalars are leaves)."""
    if isinstance(obj, dict) and obj:
        out = set()
        for k, v in obj.items():
            out |= _leaf_paths(v, prefix + (k,))
        return out
    return {prefix} if prefix else set()


def _tracked(obj: dict, status_subresource: bool, for_status: bool = False) -> dict:
    """The part of an object whose fields managers own."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items()
            if k not in _SERVER_META and k not in ("name", "namespace")}
    if meta:
        body["metadata"] = meta
    else:
        body.pop("metadata", None)
    if for_status:
        return {"status": body["status"]} if "status" in body else {}
    if status_subresource:
        body.pop("status", None)
    return body


def _lookup(obj, path):
    cur = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return False, None
        cur = cur[p]
    return True, cur


def _delete_path(obj, path):
    cur = obj
    for p in path[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)


def _to_fields_v1(paths: set[tuple]) -> dict:
    tree: dict = {}
    for path in paths:
        cur = tree
        for p in path:
            cur = cur.setdefault(f"f:{p}", {})
    return tree


def _from_fields_v1(tree: dict, prefix=()) -> set[tuple]:
    if not tree:
        return {prefix} if prefix else set()
    out = set()
    for k, v in tree.items():
        out |= _from_fields_v1(v, prefix + (k[2:] if k.startswith("f:") else k,))
    return out


def _strip_for_compare(obj: dict) -> dict:
    out = copy.deepcopy(obj)
    for entry in (out.get("metadata") or {}).get("managedFields") or []:
        entry.pop("time", None)
    return out


# ---------------------------------------------------------------- schema (structural subset)

def validate_schema(value, schema: dict | None, path: str, errors: list[str]):
    """Type / required / enum checks and pruning of unknown fields, like the API server does for CRs."""
    if not schema:
        return value
    if value is None:
        if schema.get("nullable"):
            return None
        errors.append(f"{path}: Invalid value: \"null\": {path} in body must be of type {schema.get('type')}")
        return None
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: Invalid value: must be an integer or a string")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            errors.append(f"{path}: Invalid value: \"{type(value).__name__}\": {path} in body must be of type object")
            return value
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path + '.' if path else ''}{req}: Required value")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        out = {}
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if props is not None and k in props:
                out[k] = validate_schema(v, props[k], sub, errors)
            elif isinstance(extra, dict):
                out[k] = validate_schema(v, extra, sub, errors)
            elif preserve or (props is None and extra is None) or extra is True:
                out[k] = v
            # else: pruned, as the API server drops unknown fields
        return out
    if kind == "array":
        if not isinstance(value, list):
            errors.append(f"{path}: Invalid value: {path} in body must be of type array")
            return value
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        return [validate_schema(v, schema.get("items"), f"{path}[{i}]", errors) for i, v in enumerate(value)]
    checks = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind in checks:
        ok = isinstance(value, checks[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: Invalid value: \"{value}\": {path} in body must be of type {kind}")
        elif "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(f'"{e}"' for e in schema["enum"])
            errors.append(f"{path}: Unsupported value: \"{value}\": supported values: {allowed}")
        elif kind == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: Invalid value: \"{value}\": {path} in body should match '{schema['pattern']}'")
        elif kind == "integer" and "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be greater than or equal to "
                          f"{schema['minimum']}")
        elif kind == "integer" and "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: Invalid value: {value}: {path} in body should be less than or equal to "
                          f"{schema['maximum']}")
    return value


# ---------------------------------------------------------------- the store

@dataclass
class Event:
    rv: int
    key: tuple[str, str]
    type: str
    obj: dict


@dataclass
class Store:
    types: dict[tuple[str, str], ResourceType] = field(default_factory=dict)   # (group, plural) -> type
    versions: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)  # (group, version, plural)
    objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    rv: int = 1
    floor: int = 0          # watches from a resourceVersion below this get 410 Gone
    max_history: int = 0    # 0 = keep every event
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self):
        for rt in BUILTIN:
            self.register(rt)
        for ns in ("default", "kube-system", "kube-public"):
            self.create(self.resource_type("", "v1", "namespaces"), "", {"metadata": {"name": ns}})

    # ---- types

    def register(self, rt: ResourceType) -> None:
        self.types[rt.key] = rt
        self.versions[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.versions.get((group, version, plural))
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({gv} {plural})")
        return rt

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for (group, version, _plural) in self.versions:
            if version not in out.setdefault(group, []):
                out[group].append(version)
        return out

    def _crd_types(self, crd: dict) -> list[ResourceType]:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        out = []
        for ver in spec.get("versions") or []:
            if not ver.get("served", True):
                continue
            out.append(ResourceType(
                spec.get("group", ""), ver["name"], names.get("plural", ""), names.get("kind", ""),
                spec.get("scope", "Namespaced") == "Namespaced",
                "status" in (ver.get("subresources") or {}), tuple(names.get("shortNames") or ()),
                ((ver.get("schema") or {}).get("openAPIV3Schema"))))
        return out

    def _on_crd_stored(self, crd: dict) -> None:
        for rt in self._crd_types(crd):
            self.register(rt)
        names = (crd.get("spec") or {}).get("names") or {}
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")],
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "lastTransitionTime": now(), "message": "no conflicts found"},
                           {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "lastTransitionTime": now(), "message": "the initial names have been accepted"}]}

    # ---- history

    def _record(self, rt: ResourceType, type_: str, obj: dict) -> None:
        self.events.append(Event(int(obj["metadata"]["resourceVersion"]), rt.key, type_, copy.deepcopy(obj)))
        if self.max_history and len(self.events) > self.max_history:
            dropped = self.events[: len(self.events) - self.max_history]
            self.events = self.events[len(dropped):]
            self.floor = dropped[-1].rv
        self.cond.notify_all()

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def compact(self) -> int:
        """Forget the event history: watches from any older resourceVersion now get 410 Gone."""
        with self.cond:
            self.events.clear()
            self.floor = self.rv
            return self.rv

    # ---- helpers

    def _bucket(self, rt):
        return self.objects[rt.key]

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                              "sent on the request")
        if ("", namespace) not in self.objects[("", "namespaces")]:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _not_found(self, rt, name):
        return ApiError(404, "NotFound", f'{rt.plural}{"." + rt.group if rt.group else ""} "{name}" not found',
                        {"name": name, "group": rt.group, "kind": rt.plural})

    def _validate(self, rt: ResourceType, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        if not name:
            raise ApiError(422, "Invalid", f"{rt.kind} \"\" is invalid: metadata.name: Required value: name or "
                                           "generateName is required")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            raise ApiError(422, "Invalid", f"{rt.kind}.{rt.group} \"{name}\" is invalid: metadata.name: Invalid "
                                           f"value: \"{name}\": a lowercase RFC 1123 subdomain must consist of "
                                           "lower case alphanumeric characters, '-' or '.'")
        if rt.schema:
            errors: list[str] = []
            body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            top = ("apiVersion", "kind", "metadata")  # the server checks these itself
            schema = {**rt.schema,
                      "properties": {k: v for k, v in (rt.schema.get("properties") or {}).items() if k not in top},
                      "required": [r for r in rt.schema.get("required", []) if r not in top]}
            pruned = validate_schema(body, schema, "", errors)
            if errors:
                raise ApiError(422, "Invalid", f"{rt.kind}.{rt.group} \"{name}\" is invalid: " + ", ".join(errors),
                               {"name": name, "group": rt.group, "kind": rt.kind,
                                "causes": [{"message": e} for e in errors]})
            obj = {**{k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}, **pruned}
        return obj

    def _managed(self, obj: dict) -> list[dict]:
        return obj.setdefault("metadata", {}).setdefault("managedFields", [])

    def _set_owner(self, obj: dict, manager: str, operation: str, paths: set[tuple], rt: ResourceType,
                   subresource: str = "") -> None:
        entries = [e for e in self._managed(obj)
                   if not (e["manager"] == manager and e["operation"] == operation
                           and e.get("subresource", "") == subresource)]
        for e in entries:  # a field has one owner per value: take it from the others
            rest = _from_fields_v1(e.get("fieldsV1") or {}) - paths
            e["fieldsV1"] = _to_fields_v1(rest)
        entries = [e for e in entries if e["fieldsV1"]]
        if paths:
            entry = {"manager": manager, "operation": operation, "apiVersion": rt.group_version,
                     "time": now(), "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(paths)}
            if subresource:
                entry["subresource"] = subresource
            entries.append(entry)
        obj["metadata"]["managedFields"] = entries

    def _changed_paths(self, old: dict, new: dict) -> set[tuple]:
        out = set()
        for p in _leaf_paths(new):
            found, value = _lookup(old, p)
            if not found or value != _lookup(new, p)[1]:
                out.add(p)
        return out

    # ---- verbs

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict:
        with self.cond:
            obj = self._bucket(rt).get((namespace if rt.namespaced else "", name))
            if obj is None:
                raise self._not_found(rt, name)
            return copy.deepcopy(obj)

    def list(self, rt: ResourceType, namespace: str = "", label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], str]:
        labels_ok, fields_ok = label_matcher(label_selector), field_matcher(field_selector)
        with self.cond:
            items = [copy.deepcopy(o) for (ns, _), o in sorted(self._bucket(rt).items())
                     if (not namespace or ns == namespace)
                     and labels_ok((o["metadata"].get("labels")) or {}) and fields_ok(o)]
            return items, str(self.rv)

    def create(self, rt: ResourceType, namespace: str, body: dict, dry_run: bool = False,
               manager: str | None = None, operation: str = "Update") -> dict:
        with self.cond:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            if rt.namespaced:
                namespace = namespace or meta.get("namespace", "")
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                      "namespace sent on the request")
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            self._check_namespace(rt, namespace)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
            if rt.status and rt.key != ("", "pods"):
                obj.pop("status", None)
            obj = self._validate(rt, obj)
            meta = obj["metadata"]
            key = (namespace if rt.namespaced else "", meta["name"])
            if key in self._bucket(rt):
                raise ApiError(409, "AlreadyExists",
                               f'{rt.plural}{"." + rt.group if rt.group else ""} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": rt.group, "kind": rt.plural})
            for k in _SERVER_META:
                meta.pop(k, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            self._set_owner(obj, manager or "unknown", operation, _leaf_paths(_tracked(obj, rt.status)), rt)
            if dry_run:
                meta["resourceVersion"] = str(self.rv)
                return obj
            meta["resourceVersion"] = self._next_rv()
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._on_crd_stored(obj)
            self._bucket(rt)[key] = obj
            self._record(rt, "ADDED", obj)
            return copy.deepcopy(obj)

    def _write(self, rt: ResourceType, old: dict, new: dict, dry_run: bool) -> dict:
        """Store `new` in place of `old` unless nothing changed (then no new resourceVersion, like etcd)."""
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "resourceVersion", "generation"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        else_ = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        now_ = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        if else_ != now_:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if _strip_for_compare(old) == _strip_for_compare(new):
            return copy.deepcopy(old)
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._on_crd_stored(new)
        self._bucket(rt)[key] = new
        self._record(rt, "MODIFIED", new)
        return copy.deepcopy(new)

    def update(self, rt: ResourceType, namespace: str, name: str, body: dict, subresource: str = "",
               dry_run: bool = False, manager: str | None = None) -> dict:
        with self.cond:
            old = self._bucket(rt).get((namespace if rt.namespaced else "", name))
            if old is None:
                raise self._not_found(rt, name)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {rt.plural}{"." + rt.group if rt.group else ""} '
                               f'"{name}": the object has been modified; please apply your changes to the latest '
                               "version and try again", {"name": name, "group": rt.group, "kind": rt.plural})
            if (body.get("metadata") or {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            new = self._merge_subresource(rt, old, copy.deepcopy(body), subresource)
            new = self._validate(rt, new)
            self._take_changed(rt, old, new, manager or "unknown", "Update", subresource)
            return self._write(rt, old, new, dry_run)

    def _merge_subresource(self, rt, old: dict, new: dict, subresource: str) -> dict:
        """The status subresource writes only status; the main resource never writes status."""
        new["apiVersion"], new["kind"] = rt.group_version, rt.kind
        new.setdefault("metadata", {})
        new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields", []))
        if rt.namespaced:
            new["metadata"]["namespace"] = old["metadata"]["namespace"]
        if subresource == "status":
            out = copy.deepcopy(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            return out
        if subresource:
            raise ApiError(404, "NotFound", f"subresource {subresource} not supported")
        if rt.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        return new

    def _take_changed(self, rt, old, new, manager, operation, subresource):
        if subresource == "status":
            changed = self._changed_paths(_tracked(old, False, True), _tracked(new, False, True))
        else:
            changed = self._changed_paths(_tracked(old, rt.status), _tracked(new, rt.status))
        mine = set()
        for e in new["metadata"].get("managedFields", []):
            if e["manager"] == manager and e["operation"] == operation and e.get("subresource", "") == subresource:
                mine = _from_fields_v1(e.get("fieldsV1") or {})
        current = _leaf_paths(_tracked(new, rt.status, subresource == "status"))
        self._set_owner(new, manager, operation, (mine & current) | changed, rt, subresource)

    def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str, body, subresource: str = "",
              dry_run: bool = False, manager: str | None = None, force: bool = False) -> tuple[dict, bool]:
        """Returns (object, created)."""
        if patch_type == "apply":
            return self.apply(rt, namespace, name, body, subresource, dry_run, manager, force)
        if patch_type not in ("merge", "strategic"):
            raise ApiError(415, "UnsupportedMediaType", f"patch type {patch_type} is not supported here")
        with self.cond:
            old = self._bucket(rt).get((namespace if rt.namespaced else "", name))
            if old is None:
                raise self._not_found(rt, name)
            want_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": the object '
                                                "has been modified", {"name": name, "kind": rt.plural})
            merged = merge_patch(old, body)
            new = self._merge_subresource(rt, old, merged, subresource)
            new = self._validate(rt, new)
            self._take_changed(rt, old, new, manager or "unknown", "Update", subresource)
            return self._write(rt, old, new, dry_run), False

    def apply(self, rt: ResourceType, namespace: str, name: str, body: dict, subresource: str = "",
              dry_run: bool = False, manager: str | None = None, force: bool = False) -> tuple[dict, bool]:
        if not manager:
            raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                                           "is required for apply patch")
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "apply patch body must be an object")
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        if body.get("kind") != rt.kind or body.get("apiVersion") != rt.group_version:
            raise ApiError(400, "BadRequest", f"apply body must have apiVersion {rt.group_version} and kind "
                                              f"{rt.kind}")
        with self.cond:
            old = self._bucket(rt).get((namespace if rt.namespaced else "", name))
            if old is None:
                if subresource:
                    raise self._not_found(rt, name)
                created = copy.deepcopy(body)
                created.setdefault("metadata", {})["name"] = name
                return self.create(rt, namespace, created, dry_run, manager, "Apply"), True
            for_status = subresource == "status"
            applied = _tracked(body, rt.status and not for_status, for_status)
            applied_paths = _leaf_paths(applied)
            entries = old["metadata"].get("managedFields", [])
            previous = set()
            others: dict[tuple, str] = {}
            for e in entries:
                paths = _from_fields_v1(e.get("fieldsV1") or {})
                if e["manager"] == manager and e["operation"] == "Apply" and \
                        e.get("subresource", "") == subresource:
                    previous = paths
                else:
                    for p in paths:
                        others[p] = e["manager"]
            conflicts = []
            for p in applied_paths:
                owner = others.get(p)
                if owner and _lookup(old, p) != _lookup(body, p):
                    conflicts.append(f'conflict with "{owner}": .{".".join(p)}')
            if conflicts and not force:
                raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): "
                               + "; ".join(sorted(conflicts)), {"causes": [{"reason": "FieldManagerConflict",
                                                                            "message": c} for c in conflicts]})
            new = copy.deepcopy(old)
            for p in previous - applied_paths:
                if p not in others:
                    _delete_path(new, p)
            new = merge_patch(new, applied)
            new = self._merge_subresource(rt, old, new, subresource)
            new = self._validate(rt, new)
            self._set_owner(new, manager, "Apply", applied_paths, rt, subresource)
            return self._write(rt, old, new, dry_run), False

    def delete(self, rt: ResourceType, namespace: str, name: str, dry_run: bool = False) -> dict:
        with self.cond:
            key = (namespace if rt.namespaced else "", name)
            obj = self._bucket(rt).get(key)
            if obj is None:
                raise self._not_found(rt, name)
            if dry_run:
                return copy.deepcopy(obj)
            if rt.key == ("", "namespaces"):
                for other in self.types.values():
                    if other.namespaced:
                        for okey in [k for k in self._bucket(other) if k[0] == name]:
                            self._remove(other, okey)
            if rt.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                for crt in self._crd_types(obj):
                    for okey in list(self.objects.get(crt.key, {})):
                        self._remove(crt, okey)
                    self.versions.pop((crt.group, crt.version, crt.plural), None)
                    self.types.pop(crt.key, None)
            return self._remove(rt, key)

    def _remove(self, rt, key) -> dict:
        obj = self._bucket(rt).pop(key)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record(rt, "DELETED", obj)
        return copy.deepcopy(obj)

    def events_since(self, rv: int, key: tuple[str, str]) -> list[Event]:
        """Events after rv for one resource; ApiError 410 if rv is older than the history kept."""
        if rv < self.floor:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.floor})")
        return [e for e in self.events if e.rv > rv and e.key == key]
