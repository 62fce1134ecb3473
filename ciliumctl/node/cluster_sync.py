"""The agent's cluster mode on one node: watch the API server, and on every change program this node's datapath
from the cluster's view.

- policies: CNP / CCNP / NetworkPolicy objects; each is validated like `policy validate` and its `Valid`
  condition set (False with the finding on a rejected one, which is then left out; never silently), and its
  `Enforced` condition (False with the parts the datapath does not enforce, policy.enforcement_gaps);
- endpoints: the node's registry (made by the CNI plugin or `endpoint add`) with labels from their Pods and
  Namespaces; endpoints of other nodes come from their CiliumEndpoint objects (peers and ipcache entries only);
- CIDR groups: CiliumCIDRGroup objects, the prefixes that cidrGroupRef / cidrGroupSelector stand for
  (cluster.cidr_groups), expanded at every sync, so a changed group is programmed like a changed policy;
- identities: CiliumIdentity objects (ciliumctl.cluster.identity), so every node gives a label set the same id;
- services: Services and EndpointSlices (cluster.services) become the node's service table, in the same revision
  as the policies (ResolvedState.services); the service CIDR from the ServiceCIDR objects when the server has them,
  else install's setting. The node-mode service store is not used; the table programmed is kept for `service list`;
- the host firewall (install --host-firewall): this node's Node object's labels select the nodeSelector
  policies of the host endpoint (a label change re-resolves), the other Node objects' addresses are remote-node
  (node.hostfw.host.cluster_nodes);
- after programming: a CiliumEndpoint per local endpoint, so the other nodes learn this node's pods; and the
  other nodes' pods and the cluster's identities for this node's flows (flows.meta's peers file).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from ciliumctl.cluster import cidr_groups, policy_events, sources, status_conditions
from ciliumctl.cluster import endpoints as ceps
from ciliumctl.cluster import services as cluster_services
from ciliumctl.cluster.identity import CiliumIdentityBackend, from_security_labels
from ciliumctl.cluster.kube import Kube
from ciliumctl.cluster.watch import ClusterCache
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.flows import meta as flow_meta
from ciliumctl.node import reconcile as node_reconcile
from ciliumctl.node import settings as node_settings
from ciliumctl.node.cni import attach as cni_node
from ciliumctl.policy.resolved import ResolvedState

log = logging.getLogger("ciliumctl.node.cluster_sync")

WATCHED = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy", "Pod", "Namespace", "Node",
           "CiliumEndpoint", "CiliumIdentity", "CiliumCIDRGroup", "Service", "EndpointSlice")
OPTIONAL = ("ServiceCIDR",     # networking.k8s.io/v1, GA in 1.33: older servers do not serve it
            "CiliumLocalRedirectPolicy")   # a cluster installed before ciliumctl had its CRD
REMOTE_ID_BASE = 1 << 20  # resolve-time ids of other nodes' endpoints: never a local endpoint id (1..65535)
_SPECIAL = {"io.kubernetes.pod.namespace", "io.cilium.k8s.policy.serviceaccount", "io.cilium.k8s.policy.cluster"}


@dataclass
class SyncReport:
    revision: int = 0
    local: list[Endpoint] = field(default_factory=list)
    remote: list[Endpoint] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)   # kind/namespace/name of policies in force
    rejected: dict[str, str] = field(default_factory=dict)  # kind/namespace/name -> finding
    partially_enforced: dict[str, list[str]] = field(default_factory=dict)  # accepted ref -> what is not enforced
    published: dict[str, int] = field(default_factory=dict)
    state: ResolvedState | None = None  # what _program resolved and loaded
    services: cluster_services.ClusterServices | None = None   # the service table programmed, with its sources
    forced: set[str] = field(default_factory=set)     # accepted host policies the lock-out guard lets through
    held_back: dict[str, list[str]] = field(default_factory=dict)   # ref -> live connections it would cut


def policy_ref(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']}/{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"


def policy_input(obj: dict) -> dict:
    """The object as a user wrote it: what resolve parses (no status, no server metadata)."""
    meta = obj.get("metadata") or {}
    out = {k: obj[k] for k in ("apiVersion", "kind", "spec", "specs") if k in obj}
    out["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels") if k in meta}
    return out


def remote_endpoint(row: dict, index: int) -> Endpoint:
    """An endpoint of another node from its CiliumEndpoint row: its identity labels give back the pod labels,
    namespace and service account, so that resolution derives the same label set (and id) as its node did."""
    labels, namespace, service_account = {}, row["namespace"], "default"
    for text in row["labels"]:
        source, _, rest = text.partition(":")
        key, _, value = rest.partition("=")
        if source != "k8s":
            continue
        if key == "io.kubernetes.pod.namespace":
            namespace = value
        elif key == "io.cilium.k8s.policy.serviceaccount":
            service_account = value
        elif key not in _SPECIAL:
            labels[key] = value
    return Endpoint(id=REMOTE_ID_BASE + index, name=row["name"], namespace=namespace, labels=labels,
                    ipv4=row["ipv4"], identity=row["identity"], service_account=service_account, node=row["node"])


def _node_hook(cluster) -> None:
    """Hand node-local reconciles (CNI, endpoint add) and identity allocation to the cluster while it runs:
    obj.identities (IdentityBackend) and obj.reconcile_locked(dp, settings). Without it a local reconcile would
    program the node from the local store until the next sync."""
    node_reconcile.set_cluster(cluster)


class ClusterNode:
    """Run with start()/stop() inside the agent, or call sync() directly (tests, one-shot)."""

    def __init__(self, kube: Kube, node_name: str, datapath=None, mode: str | None = None,
                 audit: bool | None = None, resync_seconds: float = 30.0, watch_timeout: int = 300,
                 settle_seconds: float = 0.05, connections=None):
        """connections: the node's live connections for the host firewall's lock-out guard (default:
        node.hostfw.lockout.live_connections, the agent's network namespace)."""
        self.kube, self.node_name = kube, node_name
        self.connections = connections
        self._datapath = datapath
        self.mode, self.audit = mode, audit
        self.resync_seconds, self.settle_seconds = resync_seconds, settle_seconds
        self.cache = ClusterCache(kube, node_name, kinds=WATCHED, timeout_seconds=watch_timeout, optional=OPTIONAL)
        self._services: cluster_services.ClusterServices | None = None   # the last table: ids stay stable
        self._told: set[str] = set()     # skipped services already logged
        # the node's own table for CIDR identities (explicit path: never the cluster hook of node_reconcile.allocator())
        self.identities = CiliumIdentityBackend(kube, local=node_reconcile.allocator(node_reconcile.identities_path()))
        self.cache.listeners.append(self.identities.on_event)
        # (ref, spec, host firewall) -> (valid, message, enforcement gaps)
        self._verdicts: dict[tuple, tuple[bool, str, list]] = {}
        self._evented: set[tuple[str, str]] = set()   # verdicts told in an Event (cluster.policy_events)
        self._host_in_force: set[str] = set()   # host policies enforced by the last program: kept first by the guard
        self._held_told: dict[str, str] = {}    # ref -> message of the held-back condition this node wrote
        self._peers_saved: dict | None = None   # the last document of flows.meta.save_peers
        self._stop = threading.Event()
        self._kick = threading.Event()  # a local change (reconcile_locked) wants a full sync
        self._thread: threading.Thread | None = None
        self.last: SyncReport | None = None
        self.syncs = 0

    # ---- lifecycle

    def start(self, wait_synced: float = 30.0) -> ClusterNode:
        self.cache.start()
        self.cache.wait_synced(wait_synced)
        cni_node.set_pod_label_source(sources.pod_label_lookup(self.cache))
        _node_hook(self)
        self._thread = threading.Thread(target=self._loop, name="cluster-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.cache._cond:
            self.cache._cond.notify_all()
        if self._thread:
            self._thread.join(10)
        cni_node.set_pod_label_source(None)
        _node_hook(None)
        self.cache.stop()

    def _loop(self) -> None:
        seen = -1
        while not self._stop.is_set():
            gen = self.cache.generation
            if not self.cache.synced():  # never program from a partial view (e.g. policies not listed yet)
                self._stop.wait(0.2)
                continue
            try:
                if gen != seen or self._kick.is_set():
                    self._kick.clear()
                    self._stop.wait(self.settle_seconds)  # let a burst of events land: one reconcile for all
                    gen = self.cache.generation
                    self.sync()
                    seen = gen
            except Exception:  # keep running: the next change or resync tries again
                log.exception("cluster sync failed")
                self._stop.wait(1.0)
                continue
            deadline = time.monotonic() + self.resync_seconds
            while not self._stop.is_set() and self.cache.generation == seen and not self._kick.is_set() \
                    and time.monotonic() < deadline:
                self.cache.wait_change(seen, 0.5)
            if self.cache.generation == seen:
                seen = -1  # periodic resync: also repairs what changed outside the API (registry, pins)

    # ---- one reconcile

    def datapath(self):
        if self._datapath is None:
            self._datapath = node_reconcile.open_datapath()
        return self._datapath

    def _verdict(self, obj: dict, host=None) -> tuple[bool, str, list]:
        """host: the node's host firewall (enforcement_gaps.HostFirewall) when it runs one; fromNodes/toNodes are
        valid when it gives other nodes identities of their labels (--enable-node-selector-labels)."""
        key = (policy_ref(obj), repr((obj.get("spec"), obj.get("specs"))), host)
        if key not in self._verdicts:
            from ciliumctl.policy import enforcement_gaps, model

            by_labels = bool(host and host.node_identities)
            valid, message = status_conditions.validate_object(obj, node_selector_labels=by_labels)
            gaps: list = []
            if valid:  # what resolve will parse must parse: one odd policy must not stall the node
                try:
                    gaps = enforcement_gaps.find_gaps(model.parse_policy(policy_input(obj)), host)
                    # CIDR groups are read in cluster mode (cluster.cidr_groups): no gap here
                    gaps = [g for g in gaps if g.kind != "cidr-group"]
                except Exception as err:
                    valid, message = False, f"cannot be parsed: {err}"
            if valid and gaps:   # once per policy version, beside the Enforced condition on its status
                log.warning("policy %s is enforced partially: %s", policy_ref(obj),
                            "; ".join(f"{g.path_text}: {g.sentence()}" for g in gaps))
            self._verdicts[key] = (valid, message, gaps)
        return self._verdicts[key]

    def _policies(self, report: SyncReport, publish_status: bool) -> list[dict]:
        """The valid policy objects; each rejected one is named in the report (and on its status)."""
        from ciliumctl.node.hostfw import host as hostfw
        from ciliumctl.node.hostfw import lockout

        policies = []
        host = hostfw.gap_context(node_settings.load_settings(), self.nodes())
        for obj in sources.policy_objects(self.cache):
            valid, message, gaps = self._verdict(obj, host)
            if publish_status:
                try:
                    status_conditions.set_valid(self.kube, obj, valid, message, gaps=gaps)
                except Exception as err:  # status is a report: never block enforcement on it
                    log.warning("cannot set Valid/Enforced on %s: %s", policy_ref(obj), err)
                self._event(obj, valid, message, gaps)
            if valid:
                policies.append(cidr_groups.expand_policy(policy_input(obj), self.cache.objects("CiliumCIDRGroup")))
                report.accepted.append(policy_ref(obj))
                if lockout.forced(obj):
                    report.forced.add(policy_ref(obj))
                if gaps:
                    report.partially_enforced[policy_ref(obj)] = [f"{g.path_text}: {g.sentence()}" for g in gaps]
            else:
                report.rejected[policy_ref(obj)] = message
                if publish_status:
                    log.warning("policy %s rejected: %s", policy_ref(obj), message)
        current = {policy_ref(o) for o in sources.policy_objects(self.cache)}
        self._verdicts = {k: v for k, v in self._verdicts.items() if k[0] in current}
        self._evented &= {k[:2] for k in self._verdicts}
        return policies

    def _event(self, obj: dict, valid: bool, message: str, gaps: list) -> None:
        """A rejected or partly enforced policy: one Event per verdict (and node) that says why."""
        key = (policy_ref(obj), repr((obj.get("spec"), obj.get("specs"))))
        if key in self._evented or (valid and not gaps):
            return
        try:
            policy_events.record_verdict(self.kube, obj, self.node_name, valid, message, gaps)
            self._evented.add(key)
        except Exception as err:  # a report too: the next sync tries again
            log.warning("cannot record an event on %s: %s", policy_ref(obj), err)

    def nodes(self):
        """This node's labels and the other nodes' addresses from the Node objects (node.hostfw.host): a label
        change is a cache change, so the next sync re-resolves the host endpoint."""
        from ciliumctl.node.hostfw import host as hostfw

        return hostfw.cluster_nodes(self.cache.objects("Node"), self.node_name, self.cache.objects("EndpointSlice"))

    def _program(self, report: SyncReport, policies: list[dict], datapath=None, settings=None):
        """Resolve and load the datapath; the caller holds the node lock. Returns the datapath's report."""
        from ciliumctl.endpoints import registry
        from ciliumctl.node.dns_proxy.cache import learned_ips
        from ciliumctl.node.hostfw import host as hostfw
        from ciliumctl.policy.resolve import resolve

        rows = ceps.remote_endpoints(self.cache.objects("CiliumEndpoint"), self.node_name)
        report.remote = [remote_endpoint(r, i) for i, r in enumerate(rows)]
        ns_labels = {ns["metadata"]["name"]: sources.namespace_labels(self.cache, ns["metadata"]["name"])
                     for ns in self.cache.objects("Namespace")}
        settings = settings or node_settings.load_settings()
        mode = self.mode or settings.enforcement_mode
        audit = settings.audit if self.audit is None else self.audit
        local = sources.enrich(registry.load_all(), self.cache, self.node_name)
        dp = datapath or self.datapath()
        settings.revision = node_reconcile.next_revision(settings, dp)
        host_kwargs, fqdn_ips = hostfw.resolve_kwargs(settings, self.nodes()), learned_ips()

        def resolve_with(pols: list[dict], identities) -> ResolvedState:
            st = resolve(local + report.remote, pols, mode, identities, revision=settings.revision, audit=audit,
                         namespace_labels=ns_labels, fqdn_ips=fqdn_ips, **host_kwargs)
            hostfw.finish_state(st, settings)
            return st

        state = resolve_with(policies, self.identities)
        report.held_back = self._lockout_guard(report, policies, state, resolve_with, settings)
        if report.held_back:      # enforce the rest: what the node enforced of the held ones goes with them
            kept = [(ref, p) for ref, p in zip(report.accepted, policies) if ref not in report.held_back]
            report.accepted, policies = [ref for ref, _ in kept], [p for _, p in kept]
            state = resolve_with(policies, self.identities)
        for ep in report.remote:
            state.endpoints.pop(ep.id, None)
            state.dns.pop(ep.id, None)
            for d in (1, 2):
                state.http.pop((ep.id, d), None)
        node_reconcile.redirect_dns(state)
        node_reconcile.redirect_http(state, strict=False)
        node_reconcile.ensure_proxy_route(state)
        report.services = self.services(settings.service_cidr)
        state.services = report.services.table
        applied = dp.apply(state)
        self._services = report.services
        save_services(report.services)
        self._save_peers(rows)
        settings.policy_source = "cluster"      # node.verify compares the local store only in node mode
        node_settings.save_settings(settings)
        node_reconcile.save_enforcement(state)
        node_reconcile.save_dns_policy(state, local)
        node_reconcile.save_http_proxy(state, strict=False)
        for ep in local:
            pol = state.endpoints.get(ep.id)
            if pol is not None and pol.identity != ep.identity:
                ep.identity = pol.identity
                stored = registry.load(ep.id)
                if stored is not None:
                    stored.identity = pol.identity
                    registry.save(stored)
        report.revision, report.local, report.state = settings.revision, local, state
        from ciliumctl.node.hostfw import lockout

        self._host_in_force = {ref for ref, p in zip(report.accepted, policies) if lockout.is_host_policy(p)}
        return applied

    def _save_peers(self, rows: list[dict]) -> None:
        """The other nodes' pods and the cluster's identities for the flows of this node (flows.meta reads the
        file), written only when they changed."""
        identities = {}
        for obj in self.cache.objects("CiliumIdentity"):
            name = (obj.get("metadata") or {}).get("name", "")
            if name.isdigit():
                identities[int(name)] = sorted(from_security_labels(obj.get("security-labels") or {}))
        document = flow_meta.peers_document(rows, identities)
        if document != self._peers_saved:
            flow_meta.save_peers(document)
            self._peers_saved = document

    def _lockout_guard(self, report: SyncReport, policies: list[dict], state: ResolvedState, resolve_with,
                       settings) -> dict[str, list[str]]:
        """The host policies to hold back: those whose enforcement would cut a live connection of this node (the
        agent's own API-server connection included) that the other policies leave alone, unless forced (the
        annotation lockout.FORCE_ANNOTATION). As `policy apply` refuses in node mode; nothing to judge while the
        host firewall only audits or is off. Trial states are resolved with a scratch copy of the identities."""
        from ciliumctl.identity.allocator import MemoryAllocator
        from ciliumctl.node.hostfw import host as hostfw
        from ciliumctl.node.hostfw import lockout

        if not hostfw.enforces(settings) or not any(lockout.is_host_policy(p) for p in policies):
            return {}
        # the agent is this process: its API-server connection is named as the agent's own
        conns = self.connections() if self.connections else lockout.live_connections(agent_pid=os.getpid())
        if not lockout.would_cut(state, conns):
            return {}
        scratch = MemoryAllocator(self.identities.known())
        return lockout.hold_back(list(zip(report.accepted, policies)), report.forced, self._host_in_force,
                                 lambda pols: lockout.would_cut(resolve_with(pols, scratch), conns))

    def _tell_held_back(self, report: SyncReport) -> None:
        """This node's HostPolicyHeldBack condition on each held-back policy (removed once it is enforced again),
        an Event and a log line that say which connections it would cut and how to force it."""
        from ciliumctl.node.hostfw import lockout

        ctype = status_conditions.node_condition_type(status_conditions.HELD_BACK, self.node_name)
        objs = {policy_ref(o): o for o in sources.policy_objects(self.cache)}
        wanted = {ref: lockout.held_message(cut) for ref, cut in report.held_back.items()}
        # also what an earlier run of this agent left on a policy it enforces now
        shown = {ref for ref, o in objs.items() if status_conditions.condition(o, ctype) is not None}
        for ref in sorted(set(wanted) | set(self._held_told) | shown):
            obj, message = objs.get(ref), wanted.get(ref)
            told = self._held_told.get(ref)
            if obj is None or (message is None and ref not in shown) or (message == told and ref in shown):
                if message is None:
                    self._held_told.pop(ref, None)
                continue
            try:
                status_conditions.set_node_condition(self.kube, obj, ctype, None if message is None else {
                    "status": "True", "reason": status_conditions.REASON_HELD_BACK, "message": message})
                if message is None:
                    self._held_told.pop(ref, None)
                    continue
                if message != told:
                    log.warning("host policy %s held back: %s", ref, message)
                    policy_events.record(self.kube, obj, self.node_name, status_conditions.HELD_BACK, message)
                self._held_told[ref] = message
            except Exception as err:   # a report: never block enforcement on it; the next sync tries again
                log.warning("cannot report the held-back host policy %s: %s", ref, err)

    def services(self, fallback_cidr: str) -> cluster_services.ClusterServices:
        """The service table from the cache's Services and EndpointSlices (ids kept from the last one)."""
        cidrs = cluster_services.service_cidrs(self.cache.objects("ServiceCIDR"), fallback_cidr)
        node_ips = cluster_services.node_addresses(self.cache.get("Node", self.node_name))
        built = cluster_services.build(self.cache.objects("Service"), self.cache.objects("EndpointSlice"),
                                       self.node_name, node_ips, cidrs,
                                       self._services.table if self._services else None)
        self._redirect(built)
        for line in built.skipped:
            if line not in self._told:
                log.warning("service %s", line)
        self._told = set(built.skipped)
        return built

    def _redirect(self, built: cluster_services.ClusterServices) -> None:
        """The cluster's CiliumLocalRedirectPolicies over the table (node.services.local_redirect),
        to the Pods of this node; an invalid one is left out, with its one line among the skipped."""
        from ciliumctl.base.errors import UsageError
        from ciliumctl.node.services import local_redirect
        from ciliumctl.services.local_redirect import API_VERSION, KIND, parse

        lrps = []
        for obj in self.cache.objects(KIND):
            try:
                lrps.append(parse({**obj, "kind": KIND, "apiVersion": API_VERSION}))
            except UsageError as err:
                built.skipped.append(f"{err}: left out")
        if not lrps:
            return
        red = local_redirect.apply(built.table, lrps, local_redirect.from_pods(self.cache.objects("Pod"),
                                                                                self.node_name))
        built.table = red.table
        for sid, ref in red.by.items():
            built.names[sid] = f"{built.names.get(sid) or ref} (local redirect {ref})"
        built.skipped.extend(f"local redirect {line}" for line in red.skipped)

    def reconcile_locked(self, datapath=None, settings=None):
        """node_reconcile.reconcile() in cluster mode (the caller holds the node lock: CNI ADD/DEL, endpoint
        add/delete): program from the cluster's policies and identities, never from the local store. The sync loop then
        publishes the CiliumEndpoints."""
        if not self.cache.synced():
            from ciliumctl.base.errors import EnvironmentProblem

            raise EnvironmentProblem("the agent has not read the cluster's policies and pods yet (API server "
                                     f"{self.kube.host}); retry shortly")
        report = SyncReport()
        applied = self._program(report, self._policies(report, publish_status=False), datapath, settings)
        self._kick.set()
        with self.cache._cond:
            self.cache._cond.notify_all()
        return applied

    def sync(self) -> SyncReport:
        """One full round: statuses, datapath, CiliumEndpoints."""
        report = SyncReport()
        policies = self._policies(report, publish_status=True)
        with node_settings.locked():
            self._program(report, policies)
        self._tell_held_back(report)
        state = report.state
        assert state is not None   # _program sets it or raises
        published = [(ep, state.identities.get(ep.identity, frozenset())) for ep in report.local if ep.ipv4]
        report.published = ceps.sync_node(self.kube, self.node_name, published)
        self.last = report
        self.syncs += 1
        return report


def services_path():
    from ciliumctl.base import paths

    return paths.state_dir() / "cluster-services.json"


def save_services(services: cluster_services.ClusterServices) -> None:
    """What the agent last programmed: `service list` in cluster mode reads it (the agent's memory is not
    reachable from the command)."""
    from ciliumctl.base import statefile

    statefile.write_json(services_path(), services.to_dict(), compact=True)


def programmed_services() -> cluster_services.ClusterServices:
    from ciliumctl.base import statefile

    data = statefile.read_json(services_path(), default=None)
    return cluster_services.ClusterServices.from_dict(data) if data else cluster_services.ClusterServices()


def cluster_mode(kubeconfig: str | None = None) -> str | None:
    """How the agent reaches the cluster: "kubeconfig", "in-cluster" or None (node mode)."""
    import os

    if kubeconfig or os.environ.get("KUBECONFIG"):
        return "kubeconfig"
    if os.environ.get("CILIUMCTL_CLUSTER") == "in-cluster":
        return "in-cluster"
    return None


def start_for_agent(kubeconfig: str | None = None, context: str | None = None, node_name: str | None = None,
                    datapath=None) -> ClusterNode | None:
    """For the agent (call after entering the node namespace): a running ClusterNode in cluster mode, None in
    node mode. Stop it with .stop() at shutdown. datapath: the agent's open Datapath (default: opened lazily)."""
    import os
    import socket

    from ciliumctl.base.errors import UsageError

    mode = cluster_mode(kubeconfig)
    if mode is None:
        return None
    name = node_name or os.environ.get("CILIUMCTL_NODE_NAME") or socket.gethostname()
    if not name:
        raise UsageError("node name unknown: pass --node-name or set CILIUMCTL_NODE_NAME")
    kube = Kube.in_cluster() if mode == "in-cluster" else Kube.connect(kubeconfig, context)
    enforcement = os.environ.get("CILIUMCTL_ENFORCEMENT") or None
    audit_env = os.environ.get("CILIUMCTL_AUDIT")
    audit = None if audit_env is None else audit_env.lower() == "true"
    return ClusterNode(kube, name, datapath=datapath, mode=enforcement, audit=audit).start()


def run(kubeconfig: str | None = None, context: str | None = None, node_name: str | None = None) -> None:
    """Foreground cluster sync for one node (`python -m ciliumctl.cluster.node_sync`): what the agent runs in
    cluster mode beside its flow reader. SIGTERM / Ctrl-C stops it."""
    import signal

    from ciliumctl.base import netns as nodens
    from ciliumctl.base.errors import UsageError

    nodens.enter_node_netns()  # before any thread or socket: everything below lives in the node's namespace
    if cluster_mode(kubeconfig) is None:
        raise UsageError("no cluster: pass --kubeconfig, set KUBECONFIG, or CILIUMCTL_CLUSTER=in-cluster")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    agent = start_for_agent(kubeconfig, context, node_name)
    assert agent is not None   # cluster mode was checked above
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()


if __name__ == "__main__":
    import argparse
    import sys

    from ciliumctl.base.errors import CiliumctlError

    parser = argparse.ArgumentParser(prog="python -m ciliumctl.cluster.node_sync")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--node-name")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run(args.kubeconfig, args.context, args.node_name)
    except CiliumctlError as err:
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)
