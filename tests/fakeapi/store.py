"""The state of the fake API server: a resource-keyed object store with a global resourceVersion and an event
history for watches, for the watch faults a real API server does not give on demand (tests/cluster).

Kept from the real API server: resourceVersion conflicts on update, AlreadyExists on create, no write (no new
resourceVersion) for a no-op update, label and field selectors, namespace deletion that takes its objects, and
410 Gone for a watch from a compacted resourceVersion. Everything else (CRDs, apply, patches, subresources) is
tested on the real server (tests/k8s).
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

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


BUILTIN = [
    ResourceType("", "v1", "namespaces", "Namespace", False),
    ResourceType("", "v1", "pods", "Pod", True),
    ResourceType("", "v1", "configmaps", "ConfigMap", True),
]


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
            self.types[rt.key] = rt
            self.versions[(rt.group, rt.version, rt.plural)] = rt
            self.objects.setdefault(rt.key, {})
        for ns in ("default", "kube-system"):
            self.create(self.resource_type("", "v1", "namespaces"), "", {"metadata": {"name": ns}})

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.versions.get((group, version, plural))
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({gv} {plural})")
        return rt

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

    def events_since(self, rv: int, key: tuple[str, str]) -> list[Event]:
        """Events after rv for one resource; ApiError 410 if rv is older than the history kept."""
        if rv < self.floor:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.floor})")
        return [e for e in self.events if e.rv > rv and e.key == key]

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

    def create(self, rt: ResourceType, namespace: str, body: dict) -> dict:
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
            name = meta.get("name", "")
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
                raise ApiError(422, "Invalid", f"{rt.kind} \"{name}\" is invalid: metadata.name: Invalid value")
            obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
            key = (namespace if rt.namespaced else "", name)
            if key in self._bucket(rt):
                raise ApiError(409, "AlreadyExists",
                               f'{rt.plural}{"." + rt.group if rt.group else ""} "{name}" already exists',
                               {"name": name, "group": rt.group, "kind": rt.plural})
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=self._next_rv())
            self._bucket(rt)[key] = obj
            self._record(rt, "ADDED", obj)
            return copy.deepcopy(obj)

    def update(self, rt: ResourceType, namespace: str, name: str, body: dict) -> dict:
        with self.cond:
            key = (namespace if rt.namespaced else "", name)
            old = self._bucket(rt).get(key)
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
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = rt.group_version, rt.kind
            meta = new.setdefault("metadata", {})
            for k in ("namespace", "uid", "creationTimestamp", "resourceVersion"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
            if new == old:       # like etcd: no write, no new resourceVersion
                return copy.deepcopy(old)
            meta["resourceVersion"] = self._next_rv()
            self._bucket(rt)[key] = new
            self._record(rt, "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> dict:
        with self.cond:
            key = (namespace if rt.namespaced else "", name)
            if key not in self._bucket(rt):
                raise self._not_found(rt, name)
            if rt.key == ("", "namespaces"):
                for other in self.types.values():
                    if other.namespaced:
                        for okey in [k for k in self._bucket(other) if k[0] == name]:
                            self._remove(other, okey)
            return self._remove(rt, key)

    def _remove(self, rt, key) -> dict:
        obj = self._bucket(rt).pop(key)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record(rt, "DELETED", obj)
        return copy.deepcopy(obj)
