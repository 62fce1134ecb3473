"""What `policy draw` draws: policy documents with their findings and YAML positions, and the workloads that
exist (endpoints), from files, the node's store or the cluster. An invalid policy is kept with its findings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy import model


@dataclass
class PolicySource:
    """One policy document: parsed when it parses, its validation findings, and where it was written."""

    ref: str                                   # "CiliumNetworkPolicy default/rule1"
    kind: str
    name: str
    namespace: str
    policy: model.Policy | None                # None: the document does not parse as a policy at all
    findings: list[str] = field(default_factory=list)    # "file:line:col: error: ..."
    valid: bool = True
    file: str = ""                             # "" when it comes from a store or the cluster
    origin: str = ""                           # "file", "node store", "cluster"
    document: Any = None                       # load.Document: line numbers of every node

    def line_of(self, path: tuple) -> int:
        return self.document.pos(path)[0] if self.document is not None else 0

    def where(self, path: tuple) -> str:
        """file:line of a path inside the object; the origin when there is no file."""
        if self.document is None or not self.file:
            return self.origin
        return f"{self.file}:{self.line_of(path)}"


@dataclass
class DrawInput:
    policies: list[PolicySource] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)


def _ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _parse(data) -> model.Policy | None:
    try:
        return model.parse_policy(data)
    except Exception:           # an invalid document may break parsing anywhere: drawn with its findings only
        return None


def _pod_endpoint(obj: Mapping, next_id: int) -> Endpoint:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return Endpoint(id=next_id, name=str(meta.get("name") or f"pod-{next_id}"),
                    namespace=str(meta.get("namespace") or "default"), labels=labels,
                    ipv4=str(status.get("podIP") or ""), service_account=str(spec.get("serviceAccountName")
                                                                             or "default"))


def from_documents(docs: list, origin: str = "file") -> DrawInput:
    """Documents (load.Document) -> policies with findings; Pod and Namespace objects among them become the
    workloads that exist (so a `kubectl get pods -A -o yaml` beside the policies gives the matrix its rows)."""
    from ciliumctl.policy import validate

    out = DrawInput()
    reports = validate.validate_documents(docs, validate.Options())
    for rep in reports:
        doc = rep.document
        data = doc.data if isinstance(doc.data, Mapping) else {}
        if not rep.checked:
            if data.get("kind") == "Pod":
                out.endpoints.append(_pod_endpoint(data, len(out.endpoints) + 1))
            elif data.get("kind") == "Namespace":
                meta = data.get("metadata") or {}
                out.namespace_labels[str(meta.get("name"))] = {str(k): str(v)
                                                               for k, v in (meta.get("labels") or {}).items()}
            continue
        kind = str(data.get("kind") or doc.kind or "(no kind)")
        namespace = "" if kind == model.CCNP else (rep.namespace or doc.namespace or "")
        name = str(doc.name or "<no name>")
        pol = _parse(data) if data else None
        findings = [f"{doc.file}:{f.line}:{f.column}: {f.severity}: {f.path + ': ' if f.path else ''}{f.message}"
                    for f in rep.findings]
        out.policies.append(PolicySource(_ref(kind, namespace, name), kind, name, namespace, pol, findings,
                                         rep.valid, doc.file, origin, doc))
    return out


def from_paths(paths: list[str], stdin=None) -> DrawInput:
    from ciliumctl.base.errors import UsageError
    from ciliumctl.policy import load

    docs = load.load_paths([str(p) for p in paths], stdin=stdin, keep_going=True)
    got = from_documents(docs)
    if not got.policies and not got.endpoints:
        raise UsageError(f"no policy documents in {', '.join(paths)}; give CiliumNetworkPolicy, "
                         "CiliumClusterwideNetworkPolicy or NetworkPolicy YAML files or folders")
    return got


def from_objects(objects: Iterable[Mapping], origin: str) -> list[PolicySource]:
    """Policies already accepted by a store or an API server (their objects, no file): validated again, so
    that what the agent would refuse still shows its findings."""
    from ciliumctl.policy import load

    docs = [load.from_data(dict(o), file=origin, index=i) for i, o in enumerate(objects)]
    got = from_documents(docs, origin)
    for p in got.policies:      # no file: a line:col would point nowhere
        p.file = ""
        p.findings = [f"{p.ref}: {f.split(': ', 1)[1]}" for f in p.findings]
    return got.policies


def from_cluster(kubeconfig: str | None, context: str | None) -> DrawInput:
    """The cluster's policies (all namespaces), pods and namespace labels, through the one API client."""
    from ciliumctl.cluster import policy_apply, sources
    from ciliumctl.cluster.kube import KINDS, Kube

    kube = Kube.connect(kubeconfig, context)
    objs = policy_apply.get_policies(all_namespaces=True, kube=kube)
    out = DrawInput(policies=from_objects(objs, "cluster"))
    namespaces, _ = kube.list(KINDS["Namespace"])
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        out.namespace_labels[meta["name"]] = dict(meta.get("labels") or {})
    pods, _ = kube.list(KINDS["Pod"])
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"])):
        if (pod.get("spec") or {}).get("hostNetwork") or (pod.get("status") or {}).get("phase") in \
                ("Succeeded", "Failed"):
            continue
        ep = sources.pod_endpoint(pod, {})
        ep.id = len(out.endpoints) + 1
        out.endpoints.append(ep)
    return out
