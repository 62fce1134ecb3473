"""List + watch, the way client-go's reflector does it: list to get the state and a resourceVersion, watch from
that resourceVersion, follow bookmarks; after a dropped stream or an error watch again from the last
resourceVersion seen (with backoff), after 410 Gone list again. A relist reports the difference to the cache as
events, so consumers never miss a deletion that happened while disconnected."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ciliumctl.cluster.kube import KINDS, ApiFailure, Kind, Kube

log = logging.getLogger("ciliumctl.cluster.watch")

Key = tuple[str, str]  # (namespace, name)
OnEvent = Callable[[str, str, dict], None]  # (kind, ADDED|MODIFIED|DELETED, object)


def key_of(obj: dict) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


@dataclass
class ReflectorStats:
    lists: int = 0
    watches: int = 0
    gone: int = 0
    errors: int = 0
    events: int = 0


class Reflector:
    """Keeps `items` equal to the server's objects of one kind. Run in a thread: `start()`, `stop()`."""

    def __init__(self, kube: Kube, kind: Kind, on_event: OnEvent | None = None, namespace: str | None = None,
                 field_selector: str | None = None, label_selector: str | None = None,
                 timeout_seconds: int = 300, backoff: tuple[float, float] = (0.1, 5.0)):
        self.kube, self.kind, self.on_event = kube, kind, on_event
        self.namespace, self.field_selector, self.label_selector = namespace, field_selector, label_selector
        self.timeout_seconds, self.backoff = timeout_seconds, backoff
        self.items: dict[Key, dict] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self.stats = ReflectorStats()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._holder: list = []
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> Reflector:
        self._thread = threading.Thread(target=self.run, name=f"reflector-{self.kind.plural}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for resp in list(self._holder):  # interrupt a blocking read of the watch stream
            shutdown = getattr(resp, "shutdown", None)
            if shutdown:
                try:
                    shutdown()
                except Exception:  # already closed
                    pass
        if self._thread:
            self._thread.join(timeout)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.items.values())

    # ---- the loop

    def run(self) -> None:
        delay = self.backoff[0]
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self.relist()
                    need_list = False
                self.watch_once()
                delay = self.backoff[0]  # a stream that ended normally (timeout): watch again at once
            except ApiFailure as err:
                if err.status == 410:
                    self.stats.gone += 1
                    log.info("%s: resourceVersion %s is too old, listing again", self.kind.plural,
                             self.resource_version)
                    need_list = True
                    continue
                need_list = need_list or not self.resource_version
                delay = self._pause(err, delay)
            except Exception as err:  # stream cut, server unreachable, bad JSON: try again later
                need_list = need_list or not self.resource_version
                delay = self._pause(err, delay)

    def _pause(self, err: Exception, delay: float) -> float:
        if self._stop.is_set():
            return delay
        self.stats.errors += 1
        log.warning("%s watch failed (%s); retrying in %.1fs", self.kind.plural, err, delay)
        self._stop.wait(delay)
        return min(delay * 2, self.backoff[1])

    def relist(self) -> None:
        items, rv = self.kube.list(self.kind, self.namespace, self.label_selector, self.field_selector)
        self.stats.lists += 1
        fresh = {key_of(o): o for o in items}
        with self.lock:
            old = self.items
            self.items = fresh
            self.resource_version = rv
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit("ADDED", obj)
            elif prev.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get("resourceVersion"):
                self._emit("MODIFIED", obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)
        self.synced.set()

    def watch_once(self) -> None:
        self.stats.watches += 1
        for type_, obj in self.kube.watch(self.kind, self.resource_version, self.namespace, self.label_selector,
                                          self.field_selector, self.timeout_seconds, holder=self._holder):
            if self._stop.is_set():
                return
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if type_ == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            obj.setdefault("apiVersion", self.kind.api_version)
            obj.setdefault("kind", self.kind.kind)
            with self.lock:
                if type_ == "DELETED":
                    self.items.pop(key_of(obj), None)
                else:
                    self.items[key_of(obj)] = obj
                if rv:
                    self.resource_version = rv
            self._emit(type_, obj)

    def _emit(self, type_: str, obj: dict) -> None:
        self.stats.events += 1
        if self.on_event:
            try:
                self.on_event(self.kind.kind, type_, obj)
            except Exception:  # a consumer bug must not stop the watch
                log.exception("%s event handler failed", self.kind.kind)


@dataclass
class ClusterCache:
    """What the agent reconciles from: one reflector per kind it watches, plus a change counter to wait on."""

    kube: Kube
    node_name: str = ""
    kinds: tuple[str, ...] = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy",
                              "Pod", "Namespace", "Node")
    timeout_seconds: int = 300
    backoff: tuple[float, float] = (0.1, 5.0)
    reflectors: dict[str, Reflector] = field(default_factory=dict)
    generation: int = 0
    listeners: list[OnEvent] = field(default_factory=list)
    # kinds watched only if the server serves them (and lets us list them): e.g. ServiceCIDR, GA in 1.33
    optional: tuple[str, ...] = ()
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _served(self, name: str) -> bool:
        try:
            self.kube.list(KINDS[name])
        except ApiFailure as err:
            if err.status not in (403, 404):
                raise
            log.info("%s: not watched (%s)", KINDS[name].resource, err)
            return False
        return True

    def start(self) -> ClusterCache:
        for name in self.kinds + tuple(n for n in self.optional if n not in self.kinds and self._served(n)):
            kind = KINDS[name]
            # pods: only this node's, as the kubelet and Cilium's agent do (less to hold, less to wake up for)
            selector = f"spec.nodeName={self.node_name}" if name == "Pod" and self.node_name else None
            self.reflectors[name] = Reflector(self.kube, kind, self._on_event, field_selector=selector,
                                              timeout_seconds=self.timeout_seconds, backoff=self.backoff).start()
        return self

    def stop(self) -> None:
        for r in self.reflectors.values():
            r._stop.set()
        for r in self.reflectors.values():
            r.stop()

    def synced(self) -> bool:
        """Every kind listed at least once: only then is the cache a view of the cluster, not a part of it."""
        return bool(self.reflectors) and all(r.synced.is_set() for r in self.reflectors.values())

    def wait_synced(self, timeout: float = 30.0) -> bool:
        return all(r.synced.wait(timeout) for r in self.reflectors.values())

    def _on_event(self, kind: str, type_: str, obj: dict) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()
        for listener in list(self.listeners):
            listener(kind, type_, obj)

    def wait_change(self, seen: int, timeout: float) -> int:
        """Block until the generation moves past `seen` (or timeout); returns the current generation."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != seen, timeout)
            return self.generation

    def objects(self, kind: str) -> list[dict]:
        r = self.reflectors.get(kind)
        return r.snapshot() if r else []

    def get(self, kind: str, name: str, namespace: str = "") -> dict | None:
        r = self.reflectors.get(kind)
        if r is None:
            return None
        with r.lock:
            return r.items.get((namespace, name))
