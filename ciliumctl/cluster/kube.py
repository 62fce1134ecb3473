"""Thin access to the Kubernetes API through the official `kubernetes` client (its ApiClient, configuration,
authentication and TLS), with plain dicts in and out.

Why not the typed APIs or the dynamic client: we handle a dozen kinds, CRDs among them, generically (apply,
get, delete, watch), and the dynamic client needs discovery plus an on-disk discovery cache. A fixed table of
the kinds we use gives the REST paths with no round trip.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ciliumctl.base.errors import CiliumctlError, EnvironmentProblem, UsageError

# how long one request may wait for the API server (kubectl waits forever unless --request-timeout): a server
# that accepts and never answers must end in one line, not a hang. CILIUMCTL_REQUEST_TIMEOUT overrides it.
REQUEST_TIMEOUT = 30.0


def request_timeout() -> float:
    try:
        value = float(os.environ.get("CILIUMCTL_REQUEST_TIMEOUT", REQUEST_TIMEOUT))
    except ValueError:
        raise UsageError("CILIUMCTL_REQUEST_TIMEOUT must be a number of seconds") from None
    if value <= 0:
        raise UsageError("CILIUMCTL_REQUEST_TIMEOUT must be a number of seconds above 0")
    return value


def _client_configuration() -> Any:
    from kubernetes import client
    from urllib3.util.retry import Retry

    cfg = client.Configuration()
    # connection errors are retried twice; a request the server took but did not answer is not sent again
    # (urllib3's default re-sends it three times: four timeouts before the user hears anything). An overloaded
    # server's 429 (or 503) with Retry-After refused the request before doing anything: any verb is tried again,
    # after the time it asks, three times (client-go retries these too, rest/request.go checkWait); then the
    # server's own answer stands (raise_on_status=False), not urllib3's "too many 429 error responses"
    cfg.retries = Retry(total=5, connect=2, read=0, other=0, redirect=0, status=3, allowed_methods=None,
                        raise_on_status=False)
    return cfg


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """kubectl's name for it: plural.group (core: plural)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


CILIUM_GROUP = "cilium.io"
KINDS = {k.kind: k for k in [
    Kind("", "v1", "namespaces", "Namespace", False),
    Kind("", "v1", "pods", "Pod", True),
    Kind("", "v1", "nodes", "Node", False),
    Kind("", "v1", "configmaps", "ConfigMap", True),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True),
    Kind("", "v1", "resourcequotas", "ResourceQuota", True),
    Kind("", "v1", "events", "Event", True),
    Kind("", "v1", "services", "Service", True),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Kind("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", False),   # GA in Kubernetes 1.33
    Kind("apps", "v1", "daemonsets", "DaemonSet", True),
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
    Kind(CILIUM_GROUP, "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", True),
    Kind(CILIUM_GROUP, "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", False),
    Kind(CILIUM_GROUP, "v2", "ciliumidentities", "CiliumIdentity", False),
    Kind(CILIUM_GROUP, "v2", "ciliumendpoints", "CiliumEndpoint", True),
    Kind(CILIUM_GROUP, "v2", "ciliumcidrgroups", "CiliumCIDRGroup", False),
    Kind(CILIUM_GROUP, "v2", "ciliumlocalredirectpolicies", "CiliumLocalRedirectPolicy", True),
]}


class ApiFailure(CiliumctlError):
    """The API server refused a request. `status`/`reason` as in the Kubernetes Status object."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"API server: {message} ({status} {reason})")
        self.status, self.reason, self.api_message = status, reason, message


def kind_of(obj: dict) -> Kind:
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    k = KINDS.get(kind)
    if k is None or k.api_version != api_version:
        raise UsageError(f"kind {kind or '?'} ({api_version or '?'}) is not one ciliumctl manages")
    return k


def _kubeconfig_path(kubeconfig: str | None) -> tuple[str, str]:
    """The file(s) the client reads and who chose them: the flag, $KUBECONFIG (the CLI passes its value on, or
    the client reads it itself), or the client's default (kubernetes/config/kube_config.py,
    KUBE_CONFIG_DEFAULT_LOCATION)."""
    env = os.environ.get("KUBECONFIG")
    if kubeconfig and kubeconfig != env:
        return kubeconfig, "from --kubeconfig"
    if kubeconfig or env:
        return kubeconfig or env or "", "from $KUBECONFIG"
    return os.path.expanduser("~/.kube/config"), "the default: no --kubeconfig, no $KUBECONFIG"


def _kubeconfig_named(kubeconfig: str | None) -> str:
    path, origin = _kubeconfig_path(kubeconfig)
    return f"kubeconfig {path} ({origin})"


def _missing(kubeconfig: str | None) -> str:
    """"no such file" when none of the files exist (the client says "No configuration found")."""
    paths = [p for p in _kubeconfig_path(kubeconfig)[0].split(os.pathsep) if p]
    return "" if any(os.path.exists(os.path.expanduser(p)) for p in paths) else "no such file"


class Kube:
    def __init__(self, api_client: Any, namespace: str = "default"):   # a kubernetes.client.ApiClient
        self.api = api_client
        self.namespace = namespace  # the kubeconfig context's namespace: the default for namespaced objects
        self.timeout = request_timeout()  # seconds per request, unless the caller gives its own

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        import yaml
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context,
                                                client_configuration=_client_configuration())
            contexts, active = config.list_kube_config_contexts(kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
            return cls(api, ((chosen or {}).get("context") or {}).get("namespace") or "default")
        except ConfigException as err:
            raise UsageError(f"{_kubeconfig_named(kubeconfig)}: {_missing(kubeconfig) or str(err).rstrip('.')}; "
                             "pass --kubeconfig/--context of a reachable cluster") from None
        except (OSError, ValueError, yaml.YAMLError) as err:   # a file that is not YAML: one line
            reason = " ".join(str(err).split())
            raise UsageError(f"{_kubeconfig_named(kubeconfig)}: {reason}; fix it or pass another --kubeconfig") \
                from None

    @property
    def host(self) -> str:
        return self.api.configuration.host

    # ---- paths

    @staticmethod
    def path(kind: Kind, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
        if kind.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{kind.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base

    # ---- raw request

    def request(self, method: str, path: str, query: dict | None = None, body: object = None,
                content_type: str = "application/json", stream: bool = False,
                timeout: float | tuple[float, float] | None = None) -> Any:
        import urllib3

        q = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=q, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            limit = timeout if timeout is not None else self.timeout
            resp = self.api.call_api(method_, url, header_params=headers, body=body, _request_timeout=limit)
        except urllib3.exceptions.HTTPError as err:
            cause = getattr(err, "reason", None) or err
            # urllib3 2.x makes a refused connection (NewConnectionError) a ConnectTimeoutError: not a timeout
            refused = isinstance(cause, urllib3.exceptions.NewConnectionError) and "timed out" not in str(cause)
            if not refused and (isinstance(cause, urllib3.exceptions.TimeoutError) or "timed out" in str(cause)):
                seconds = limit[1] if isinstance(limit, tuple) else limit
                raise EnvironmentProblem(f"the Kubernetes API server at {self.host} did not answer {method} {path} "
                                         f"within {seconds:g}s; check that it is up and not overloaded "
                                         "(CILIUMCTL_REQUEST_TIMEOUT sets the limit)") from None
            reason = str(cause)
            reason = reason.split("): ", 1)[-1]  # drop urllib3's "HTTPConnection(host=..., port=...)" prefix
            raise EnvironmentProblem(f"cannot reach the Kubernetes API server at {self.host}: {reason}; check "
                                     "--kubeconfig/--context and that the cluster is up") from None
        if not 200 <= resp.status <= 299:
            data = resp.read()
            try:
                status = json.loads(data)
                message, reason = status.get("message", ""), status.get("reason", "")
            except ValueError:   # not a Status: the real server's "404 page not found" for an unserved type
                message, reason = data.decode(errors="replace").strip()[:200], resp.reason or ""
                if resp.status == 404 and f"/{CILIUM_GROUP}/" in path:
                    resource = path.rstrip("/").split("/")[-1] if "/namespaces/" not in path else \
                        path.split("/namespaces/", 1)[1].split("/")[1]
                    message = (f"{resource}.{CILIUM_GROUP} is not served: the CRDs are not installed (run "
                               "`ciliumctl install --kubeconfig ...`)")
            resp.response.release_conn()
            raise ApiFailure(resp.status, reason or "", message or f"{method} {path} failed")
        if stream:
            return resp
        return json.loads(resp.read() or b"{}")

    # ---- verbs on dicts

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.request("GET", self.path(kind, namespace, name))
        except ApiFailure as err:
            if err.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], str]:
        data = self.request("GET", self.path(kind, namespace),
                            {"labelSelector": label_selector, "fieldSelector": field_selector})
        items = data.get("items") or []
        for item in items:  # the real server leaves these out of list items
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items, data.get("metadata", {}).get("resourceVersion", "")

    def create(self, obj: dict, dry_run: bool = False) -> dict:
        kind = kind_of(obj)
        ns = obj.get("metadata", {}).get("namespace")
        return self.request("POST", self.path(kind, ns), {"dryRun": "All" if dry_run else None}, obj)

    def replace(self, obj: dict, sub: str | None = None, field_manager: str | None = None) -> dict:
        kind, meta = kind_of(obj), obj.get("metadata", {})
        return self.request("PUT", self.path(kind, meta.get("namespace"), meta["name"], sub),
                            {"fieldManager": field_manager}, obj)

    def apply(self, obj: dict, field_manager: str, force: bool = False, dry_run: bool = False,
              sub: str | None = None) -> dict:
        """Server-side apply (PATCH application/apply-patch+yaml)."""
        kind, meta = kind_of(obj), obj.get("metadata", {})
        query = {"fieldManager": field_manager, "force": "true" if force else None,
                 "dryRun": "All" if dry_run else None}
        return self.request("PATCH", self.path(kind, meta.get("namespace"), meta["name"], sub), query, obj,
                            content_type="application/apply-patch+yaml")

    def delete(self, kind: Kind, name: str, namespace: str | None = None, dry_run: bool = False) -> bool:
        """True if it existed."""
        try:
            # with a body the API server takes DeleteOptions from it and ignores the query: dryRun goes in both
            options: dict[str, object] = {"kind": "DeleteOptions", "apiVersion": "v1",
                                          "propagationPolicy": "Background"}
            if dry_run:
                options["dryRun"] = ["All"]
            self.request("DELETE", self.path(kind, namespace, name), {"dryRun": "All" if dry_run else None},
                         options)
            return True
        except ApiFailure as err:
            if err.status == 404:
                return False
            raise

    @classmethod
    def in_cluster(cls) -> Kube:
        """The agent's own service account, inside a pod of the DaemonSet."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        try:
            config.load_incluster_config()
        except ConfigException as err:
            raise EnvironmentProblem(f"in-cluster Kubernetes config: {err}; run the agent in the DaemonSet or "
                                     "give --kubeconfig") from None
        return cls(client.ApiClient())

    def watch(self, kind: Kind, resource_version: str, namespace: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int = 300, holder: builtins.list | None = None) -> Iterator[tuple[str, dict]]:
        """(type, object) events from resource_version on; ends when the server closes the stream.
        An ERROR event (e.g. 410 Gone) is raised as ApiFailure. `holder` receives the open response so that
        another thread can cut the stream (Reflector.stop)."""
        from kubernetes.watch.watch import iter_resp_lines

        query = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds), "labelSelector": label_selector,
                 "fieldSelector": field_selector}
        resp = self.request("GET", self.path(kind, namespace), query, stream=True,
                            timeout=(10, timeout_seconds + 15))
        if holder is not None:
            holder[:] = [resp.response]
        try:
            for line in iter_resp_lines(resp.response):
                if not line:
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise ApiFailure(int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", ""))
                yield event.get("type", ""), obj
        finally:  # close, not release: a half-read stream must not go back to the pool
            resp.response.close()
            resp.response.release_conn()
