"""`ciliumctl install|uninstall|status` in cluster mode: server-side apply of the manifests, waiting for the
DaemonSet, removing it all, and reporting DaemonSet readiness and per-node agent health."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TextIO

from ciliumctl.base.errors import EnvironmentProblem, Finding
from ciliumctl.cluster import manifests
from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube, kind_of

FIELD_MANAGER = "ciliumctl"


@dataclass
class Applied:
    kind: str
    name: str
    namespace: str
    action: str  # created | configured | unchanged | deleted | not found | (dry-run: "created (dry run)")

    def line(self) -> str:
        k = KINDS[self.kind]
        return f"{k.kind.lower()}{'.' + k.group if k.group else ''}/{self.name} {self.action}"


def _connect(kube: Kube | None, kubeconfig: str | None, context: str | None) -> Kube:
    return kube if kube is not None else Kube.connect(kubeconfig, context)


def apply_object(kube: Kube, obj: dict, dry_run: bool = False, force: bool = True) -> Applied:
    """Server-side apply one object; report created / configured / unchanged as kubectl does."""
    kind, meta = kind_of(obj), obj["metadata"]
    return _apply_over(kube, obj, kube.get(kind, meta["name"], meta.get("namespace")), dry_run, force)


def _apply_over(kube: Kube, obj: dict, before: dict | None, dry_run: bool = False, force: bool = True) -> Applied:
    """apply_object once the object as it was (`before`, None: not there) has been read."""
    kind, meta = kind_of(obj), obj["metadata"]
    after = kube.apply(obj, FIELD_MANAGER, force=force, dry_run=dry_run)
    if before is None:
        action = "created"
    elif after["metadata"].get("resourceVersion") != before["metadata"].get("resourceVersion") or \
            (dry_run and content_of(after) != content_of(before)):
        action = "configured"
    else:
        action = "unchanged"
    if dry_run:
        action += " (server dry run)"
    return Applied(kind.kind, meta["name"], meta.get("namespace", ""), action)


def content_of(obj: dict) -> dict:
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    meta = obj.get("metadata", {})
    out["metadata"] = {k: meta.get(k) for k in ("labels", "annotations")}
    return out


def render(objs: list[dict], output: str = "yaml") -> str:
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2) + "\n"
    import yaml

    return yaml.safe_dump_all(objs, sort_keys=False)


def install(kubeconfig: str | None = None, context: str | None = None, dry_run: bool = False,
            output: str | None = None, wait: bool = False, image: str = manifests.DEFAULT_IMAGE,
            enforcement: str | None = None, audit: bool | None = None, flow_buffer_size: int = 4095,
            namespace: str = manifests.NAMESPACE, timeout: float = 300.0, out: TextIO | None = None,
            progress: Callable[[str], None] | None = None, kube: Kube | None = None,
            enforcement_mode: str | None = None, image_pull_policy: str = "IfNotPresent",
            devices: str | None = None) -> list:
    """Deploy ciliumctl into the cluster. dry_run: print the manifests (output yaml|json) without touching a
    cluster and return them. Otherwise apply each object, print one kubectl-like line per object, and with
    wait block until the DaemonSet is ready (progress lines on stderr). Returns the manifests or [Applied].
    devices: the nodes' NodePort devices (None: each agent detects its node's, as Cilium's)."""
    out = out or sys.stdout
    if devices is not None:
        devices = ",".join(d.strip() for d in devices.split(",") if d.strip())
    opts = manifests.InstallOptions(image=image, namespace=namespace,
                                    enforcement=enforcement or enforcement_mode or "default", audit=bool(audit),
                                    flow_buffer_size=flow_buffer_size, image_pull_policy=image_pull_policy,
                                    devices=devices)
    objs = manifests.build(opts)
    if dry_run:
        out.write(render(objs, output or "yaml"))
        return objs
    kube = _connect(kube, kubeconfig, context)
    _wait_namespace_deleted(kube, namespace, timeout, progress or (lambda line: print(line, file=sys.stderr)))
    results: list[Applied] = []
    created: list[dict] = []
    for obj in objs:
        before: dict | None = {}   # {}: not read yet
        try:
            before = kube.get(kind_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace"))
            result = _apply_over(kube, obj, before)
        except ApiFailure as err:
            # RBAC: the user can do nothing about the object, only about who runs install
            hint = "; install with a user who may manage all of `ciliumctl install --dry-run`'s objects (such as " \
                   "cluster-admin)" if err.status == 403 else ""
            raise EnvironmentProblem(f"install: applying {obj['kind']} {obj['metadata']['name']} failed: "
                                     f"{err.api_message} ({err.status} {err.reason}){hint}; "
                                     f"{_roll_back(kube, created)}") from None
        except EnvironmentProblem as err:
            # the server stopped answering half-way: remove what this install made while it may still listen,
            # also the object whose create went unanswered (it may have been stored)
            in_flight = [obj] if before is None else []
            if not created and not in_flight:
                raise
            raise EnvironmentProblem(f"{err}; {_roll_back(kube, created, in_flight)}") from None
        results.append(result)
        if result.action == "created":
            created.append(obj)
        if output in ("json", "yaml"):
            continue
        out.write(result.line() + "\n")
    if output == "json":
        out.write(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    elif output == "yaml":
        out.write(render([asdict(r) for r in results]))
    if wait:
        wait_ready(kube, namespace, timeout, progress or (lambda line: print(line, file=sys.stderr)))
    return results


def _wait_namespace_deleted(kube: Kube, namespace: str, timeout: float, progress: Callable[[str], None]) -> None:
    """An install right after an uninstall finds the namespace Terminating, where the API server refuses new
    objects (403): wait for the namespace controller to finish, as an admin would, before creating anything."""
    try:
        ns = kube.get(KINDS["Namespace"], namespace)
    except ApiFailure:
        return      # may not read it (RBAC): applying it says so, with what to do
    if ns is None or not ns["metadata"].get("deletionTimestamp"):
        return
    progress(f"namespace {namespace} is being deleted (since {ns['metadata']['deletionTimestamp']}): waiting")
    deadline = time.monotonic() + timeout
    while kube.get(KINDS["Namespace"], namespace) is not None:
        if time.monotonic() > deadline:
            raise EnvironmentProblem(
                f"install: namespace {namespace} is still being deleted after {timeout:.0f}s, and a namespace "
                f"being deleted takes no new objects; see `kubectl get namespace {namespace} -o yaml` (status."
                f"conditions say what holds it) and install again once it is gone; nothing was installed")
        time.sleep(0.5)


def _roll_back(kube: Kube, created: list[dict], maybe: list[dict] | None = None) -> str:
    """Delete what this install created (and `maybe`: objects it may have created), newest first, so that a refused
    install leaves nothing half-installed (objects that were there before stay, as they were or as this install
    configured them). A delete without an answer ends it: the server has stopped listening. Says what it did."""
    todo = [(o, True) for o in maybe or []] + [(o, False) for o in reversed(created)]
    left, why, removed = [], "", 0
    for i, (obj, unsure) in enumerate(todo):
        kind, meta = kind_of(obj), obj["metadata"]
        try:
            removed += kube.delete(kind, meta["name"], meta.get("namespace")) or not unsure
        except ApiFailure as err:
            left.append(f"{obj['kind']} {meta['name']}")
            why = why or f"{err.status} {err.reason}"
        except EnvironmentProblem:
            left += [f"{o['kind']} {o['metadata']['name']}" for o, _ in todo[i:]]
            why = why or "no answer"
            break
    if left:
        return (f"could not remove the {len(left)} objects it had created again ({why}: {', '.join(left)}): run "
                "`ciliumctl uninstall` when fixed")
    if removed:
        return f"the {removed} objects it had created were removed again, nothing is installed"
    return "nothing was installed"


def uninstall(kubeconfig: str | None = None, context: str | None = None, namespace: str = manifests.NAMESPACE,
              out: TextIO | None = None, kube: Kube | None = None, keep_crds: bool = False,
              dry_run: bool = False, agents_timeout: float = 90.0) -> list[Applied]:
    """Delete every installed object, DaemonSet first, CRDs last (which also removes policies, identities and
    endpoints stored in them, as `kubectl delete crd` does). dry_run: the API server checks each deletion
    (dryRun=All) and nothing is removed. After the DaemonSet, its agent pods are given `agents_timeout` to stop
    before their RBAC goes: an agent that finds its DaemonSet gone takes its programs off the node's devices
    (node.services.devices), for which it still reads the API."""
    out = out or sys.stdout
    kube = _connect(kube, kubeconfig, context)
    objs = list(reversed(manifests.build(manifests.InstallOptions(namespace=namespace))))
    results = []
    for obj in objs:
        if keep_crds and obj["kind"] == "CustomResourceDefinition":
            continue
        kind, meta = kind_of(obj), obj["metadata"]
        gone = kube.delete(kind, meta["name"], meta.get("namespace"), dry_run=dry_run)
        action = ("deleted" + (" (server dry run)" if dry_run else "")) if gone else "not found"
        result = Applied(kind.kind, meta["name"], meta.get("namespace", ""), action)
        results.append(result)
        out.write(result.line() + "\n")
        if kind.kind == "DaemonSet" and gone and not dry_run:
            _wait_agents_gone(kube, namespace, agents_timeout)
    return results


def _wait_agents_gone(kube: Kube, namespace: str, timeout: float) -> None:
    """Until no agent pod is left (the garbage collector deletes them after their DaemonSet); past the timeout a
    line on stderr names them and uninstall goes on."""
    selector = ",".join(f"{k}={v}" for k, v in manifests.AGENT_LABELS.items())
    deadline = time.monotonic() + timeout
    while True:
        pods, _ = kube.list(KINDS["Pod"], namespace=namespace, label_selector=selector)
        if not pods:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{p['metadata']['name']} on {p['spec'].get('nodeName') or '?'}" for p in pods)
            print(f"uninstall: agent pods still stopping after {timeout:.0f}s ({names}); their nodes' devices may "
                  "keep the NodePort programs (pinned under /sys/fs/bpf/ciliumctl there)", file=sys.stderr)
            return
        time.sleep(0.5)


# ---------------------------------------------------------------- status

@dataclass
class NodeAgent:
    node: str
    pod: str
    phase: str
    ready: bool
    restarts: int
    message: str = ""
    endpoints: int = 0  # CiliumEndpoints the agent publishes for its node's pods


@dataclass
class ClusterStatus:
    installed: bool
    desired: int
    ready: int
    updated: int
    available: int
    image: str
    agents: list[NodeAgent]
    missing_crds: list[str]
    # kind/namespace/name of policies the agents report Enforced=False on (parts not enforced; not a health issue)
    partially_enforced: list[str] = field(default_factory=list)
    # "kind/name on node" of host policies an agent's lock-out guard holds back (HostPolicyHeldBack/<node>)
    held_back: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (self.installed and not self.missing_crds and self.desired > 0 and self.ready == self.desired
                and all(a.ready for a in self.agents))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["healthy"] = self.healthy
        return d


def partially_enforced_policies(kube: Kube) -> list[str]:
    """Policies whose Enforced condition the agents set to False for parts the datapath does not enforce."""
    from ciliumctl.cluster.status_conditions import WITH_STATUS, enforced_condition
    from ciliumctl.policy.enforcement_gaps import REASON_PARTIAL

    out = []
    for kind in WITH_STATUS:
        try:
            objs, _ = kube.list(KINDS[kind])
        except ApiFailure:  # CRD missing: reported as missing_crds
            continue
        for obj in objs:
            cond = enforced_condition(obj) or {}
            if cond.get("status") == "False" and cond.get("reason") == REASON_PARTIAL:
                meta = obj["metadata"]
                out.append(f"{kind}/{meta['namespace'] + '/' if meta.get('namespace') else ''}{meta['name']}")
    return sorted(out)


def held_back_policies(kube: Kube) -> list[str]:
    """Host policies an agent does not enforce because they would cut live connections of its node: their
    HostPolicyHeldBack/<node> conditions (node.cluster_sync), as "kind/name on node"."""
    from ciliumctl.cluster.status_conditions import HELD_BACK, WITH_STATUS

    out = []
    for kind in WITH_STATUS:
        try:
            objs, _ = kube.list(KINDS[kind])
        except ApiFailure:
            continue
        for obj in objs:
            meta = obj["metadata"]
            for cond in (obj.get("status") or {}).get("conditions") or []:
                held, _, node = str(cond.get("type", "")).partition("/")
                if held == HELD_BACK and cond.get("status") == "True":
                    out.append(f"{kind}/{meta['namespace'] + '/' if meta.get('namespace') else ''}{meta['name']} "
                               f"on {node}")
    return sorted(out)


def status(kubeconfig: str | None = None, context: str | None = None, namespace: str = manifests.NAMESPACE,
           kube: Kube | None = None, policies: bool = True) -> ClusterStatus:
    """DaemonSet readiness and one row per agent pod (its node, phase, Ready condition, restarts); with policies,
    the partially enforced ones."""
    kube = _connect(kube, kubeconfig, context)
    crd_kind = KINDS["CustomResourceDefinition"]
    missing = [c["metadata"]["name"] for c in manifests.crds()
               if kube.get(crd_kind, c["metadata"]["name"]) is None]
    ds = kube.get(KINDS["DaemonSet"], manifests.AGENT, namespace)
    partial = partially_enforced_policies(kube) if policies else []
    held = held_back_policies(kube) if policies else []
    if ds is None:
        return ClusterStatus(False, 0, 0, 0, 0, "", [], missing, partial, held)
    st = ds.get("status") or {}
    image = ds["spec"]["template"]["spec"]["containers"][0].get("image", "")
    selector = ",".join(f"{k}={v}" for k, v in manifests.AGENT_LABELS.items())
    pods, _ = kube.list(KINDS["Pod"], namespace, label_selector=selector)
    agents = []
    for pod in pods:
        pst = pod.get("status") or {}
        cond = {c.get("type"): c for c in pst.get("conditions") or []}
        ready = cond.get("Ready", {}).get("status") == "True"
        restarts = sum(int(c.get("restartCount", 0)) for c in pst.get("containerStatuses") or [])
        message = ""
        # why a container waits says more than the Ready condition ("containers with unready status"); the init
        # step first: while it waits (for its image, say), the agent container only says PodInitializing
        for c in (pst.get("initContainerStatuses") or []) + (pst.get("containerStatuses") or []):
            waiting = (c.get("state") or {}).get("waiting")
            if waiting and not message and waiting.get("reason") != "PodInitializing":
                message = f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
        if not ready and not message:
            message = cond.get("Ready", {}).get("message", "")
        agents.append(NodeAgent((pod.get("spec") or {}).get("nodeName", ""), pod["metadata"]["name"],
                                pst.get("phase", "Unknown"), ready, restarts, message))
    try:
        from ciliumctl.cluster.endpoints import KIND as CEP_KIND
        from ciliumctl.cluster.endpoints import NODE_LABEL

        ceps, _ = kube.list(CEP_KIND)
        per_node: dict[str, int] = {}
        for cep in ceps:
            node = (cep["metadata"].get("labels") or {}).get(NODE_LABEL, "")
            per_node[node] = per_node.get(node, 0) + 1
        for agent in agents:
            agent.endpoints = per_node.get(agent.node, 0)
    except ApiFailure:  # no CiliumEndpoint resource (CRDs missing): reported as missing_crds
        pass
    agents.sort(key=lambda a: a.node)
    return ClusterStatus(True, int(st.get("desiredNumberScheduled", 0)), int(st.get("numberReady", 0)),
                         int(st.get("updatedNumberScheduled", 0)), int(st.get("numberAvailable", 0)), image,
                         agents, missing, partial, held)


# waiting reasons no amount of waiting cures: the image cannot be had (kubelet's images.Err* and the CRI's)
HOPELESS = ("ErrImageNeverPull", "InvalidImageName", "ImagePullBackOff", "ErrImagePull",
            "CreateContainerConfigError")


def last_log_lines(kube: Kube, namespace: str, pod: str, lines: int = 5) -> str:
    """The agent container's last log lines (of its previous run when it restarted), or ""."""
    for previous in ("true", None):
        try:
            resp = kube.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                                {"container": "agent", "tailLines": str(lines), "previous": previous}, stream=True,
                                timeout=10)
        except (ApiFailure, EnvironmentProblem):
            continue
        try:
            text = resp.read().decode(errors="replace").strip()
        finally:
            resp.response.release_conn()
        if text:
            return text
    return ""


def _not_ready(kube: Kube, namespace: str, st: ClusterStatus) -> str:
    parts = []
    for a in st.agents:
        if a.ready:
            continue
        part = f"{a.pod} on {a.node or '?'} ({a.message or a.phase})"
        log = last_log_lines(kube, namespace, a.pod) if a.restarts or a.phase == "Running" else ""
        if log:
            part += "; its last log lines: " + " | ".join(log.splitlines())
        parts.append(part)
    return "; ".join(parts)


def wait_ready(kube: Kube, namespace: str = manifests.NAMESPACE, timeout: float = 300.0,
               progress: Callable[[str], None] = print, interval: float = 1.0) -> ClusterStatus:
    """Poll until every scheduled agent is ready and up to date; one progress line whenever the counts change."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = status(kube=kube, namespace=namespace, policies=False)
        line = f"DaemonSet {manifests.AGENT}: {st.ready}/{st.desired} ready, {st.updated} up to date"
        if line != last:
            progress(line)
            last = line
        if st.installed and st.desired > 0 and st.ready == st.desired and st.updated == st.desired:
            progress("ciliumctl is ready on every node")
            return st
        hopeless = [a for a in st.agents if not a.ready and a.message.split(":")[0] in HOPELESS]
        if hopeless:   # the --image given cannot run: bad input (exit 2), not a finding about the cluster
            a = hopeless[0]
            raise EnvironmentProblem(f"install --wait: agent pod {a.pod} on {a.node or '?'} cannot start: "
                                     f"{a.message}; check --image (and --image-pull-policy) and that every node "
                                     "has the image")
        if time.monotonic() >= deadline:
            not_ready = _not_ready(kube, namespace, st)
            raise Finding(f"install --wait: timed out after {timeout:.0f}s with {st.ready}/{st.desired} agents "
                          f"ready{': ' + not_ready if not_ready else ''}; see `ciliumctl status` and the agent "
                          "pod logs")
        time.sleep(interval)

