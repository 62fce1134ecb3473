"""The one path from the node's desired state to the kernel:

    policy store + endpoint registry  ->  policy.resolve.resolve()  ->  Datapath.apply()
    service store (services.store)    ----------------------------^  (the same revision carries both)

In cluster mode the agent hands reconciles and identity allocation to its cluster view (set_cluster).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import CiliumctlError, EnvironmentProblem
from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.node.settings import Settings, load_settings, save_settings
from ciliumctl.policy import store
from ciliumctl.policy.resolved import ResolvedState

log = logging.getLogger("ciliumctl.node.reconcile")


def identities_path() -> Path:
    return paths.state_dir() / "identities.json"


def allocator(path: Path | None = None):
    """The identity table: the cluster's while an agent runs in cluster mode (set_cluster), else the node's own
    file (or the one at `path`, always local)."""
    if path is None and _cluster is not None:
        return _cluster.identities
    from ciliumctl.identity.allocator import IdentityAllocator

    return IdentityAllocator(path or identities_path())


# In cluster mode the agent hands node-local reconciles and identity allocation to its cluster view, so that a
# CNI ADD or an `endpoint add` served by the agent programs the cluster's policies, not the local store.
_cluster = None


def cluster_mode() -> bool:
    """An agent's cluster view decides reconciles (set_cluster)."""
    return _cluster is not None


def set_cluster(cluster) -> None:
    """`cluster` has .identities (an IdentityBackend) and .reconcile_locked(datapath, settings); None resets."""
    global _cluster
    _cluster = cluster


def endpoint_labels(ep: Endpoint) -> frozenset[str]:
    """The security-relevant label set of an endpoint, as Cilium derives it for a pod (policy.labels)."""
    from ciliumctl.policy import labels

    return frozenset(labels.endpoint_labels(ep))


def open_datapath():
    """The pinned datapath (compiled, loaded and pinned on first use)."""
    from ciliumctl.base import netns as nodens

    nodens.enter_node_netns()
    try:
        from ciliumctl.datapath.loader import Datapath
    except ImportError:
        raise EnvironmentProblem("the eBPF datapath is not available in this build of ciliumctl "
                                 "(ciliumctl.datapath.loader missing)") from None
    return Datapath.open()


def parsed_policies(stored: list[store.StoredPolicy] | None = None) -> list:
    """Stored policies as the policy model (already validated when stored)."""
    from ciliumctl.policy import model

    out: list[model.Policy] = []
    for p in store.load_all() if stored is None else stored:
        try:
            parsed = model.parse_policy(p.data)
        except Exception as err:  # a stored object that no longer parses: name it, never a traceback
            raise EnvironmentProblem(f"stored policy {p.resource} ({p.namespace or 'cluster-wide'}) cannot be "
                                     f"parsed: {err}; delete it with `ciliumctl policy delete {p.name}`") from None
        out.extend(parsed if isinstance(parsed, list) else [parsed])
    return out


def resolve_state(endpoints: list[Endpoint], stored: list[store.StoredPolicy], settings: Settings,
                  alloc=None, revision: int | None = None, fqdn_ips: dict | None = None) -> ResolvedState:
    """fqdn_ips: the learned addresses to resolve with (default: the DNS cache's)."""
    from ciliumctl.node.dns_proxy.cache import learned_ips
    from ciliumctl.node.hostfw import host as hostfw
    from ciliumctl.node.services import local_redirect
    from ciliumctl.policy.resolve import resolve
    from ciliumctl.services import store as service_store

    state = resolve(endpoints, parsed_policies(stored), settings.mode, alloc if alloc is not None else allocator(),
                    revision=settings.revision if revision is None else revision, audit=settings.audit,
                    fqdn_ips=learned_ips() if fqdn_ips is None else fqdn_ips, **hostfw.resolve_kwargs(settings))
    hostfw.finish_state(state, settings)
    state.services = local_redirect.in_force(service_store.load(), endpoints).table
    redirect_dns(state)
    redirect_http(state)
    return state


def redirect_dns(state: ResolvedState) -> None:
    """Endpoints with rules.dns: their DNS goes to the agent's DNS proxy (node.dns_proxy.policy.redirect), on the port
    the last agent bound (node.dns_proxy.policy.proxy_port): with no proxy there, the datapath drops it."""
    if state.dns:
        from ciliumctl.node.dns_proxy import policy as dns_policy

        dns_policy.redirect(state, dns_policy.proxy_port())


def redirect_http(state: ResolvedState, strict: bool = True) -> None:
    """Ports with rules.http go to the agent's HAProxy (node.http_proxy.service.prepare); a rule it cannot carry or no
    haproxy binary: one line, before anything is applied. Not strict (cluster mode: the objects are applied
    already): logged, and the ports are redirected all the same, so that they refuse (fail closed)."""
    if state.http:
        from ciliumctl.node.http_proxy import service as http_agent

        try:
            http_agent.prepare(state)
        except CiliumctlError as err:
            if strict:
                raise
            log.error("HTTP proxy: %s; the ports with HTTP rules refuse connections until this is fixed", err)
            http_agent.redirect_only(state)


def save_http_proxy(state: ResolvedState, strict: bool = True) -> None:
    """What the agent's HAProxy runs from now on (node.http_proxy.service.save)."""
    from ciliumctl.node.http_proxy import service as http_agent

    try:
        http_agent.save(state)
    except CiliumctlError as err:
        if strict:
            raise
        log.error("HTTP proxy: %s", err)


_proxy_route = False


def ensure_proxy_route(state: ResolvedState) -> None:
    """The node namespace's local route for packets handed to a proxy (datapath.proxyroute), once per process,
    when the revision redirects anything."""
    global _proxy_route
    if _proxy_route or not (state.dns or state.http):
        return
    from ciliumctl.datapath import proxyroute

    proxyroute.ensure()
    _proxy_route = True


def reconcile(datapath=None, settings: Settings | None = None, upgrade: bool = False,
              fresh: frozenset[int] = frozenset()):
    """Program the kernel with the current store and registry (call under locked()). Returns the apply report.
    upgrade: also replace outdated pinned programs and maps (Datapath.upgrade) in the same switch.
    fresh: endpoints attached with enforce=True that no revision names yet (Datapath.apply)."""
    if _cluster is not None:
        return _cluster.reconcile_locked(datapath, settings)
    from ciliumctl.base.gcpause import paused

    with paused():      # tens of thousands of service and policy entries built at once (base.gcpause)
        return _reconcile(datapath, settings or load_settings(), upgrade, fresh)


def _reconcile(datapath, settings: Settings, upgrade: bool, fresh: frozenset[int]):
    endpoints = registry.load_all()
    dp = datapath or open_datapath()
    settings.revision = next_revision(settings, dp)
    alloc = allocator()
    state = resolve_state(endpoints, store.load_all(), settings, alloc, settings.revision)
    _record_identities(endpoints, state)
    ensure_proxy_route(state)
    report = dp.upgrade(state) if upgrade else dp.apply(state, fresh)
    settings.policy_source = "node"
    dp.set_monitor(settings.monitor)
    save_settings(settings)
    save_enforcement(state)
    save_dns_policy(state, endpoints)
    save_http_proxy(state)
    return report


def save_dns_policy(state: ResolvedState, endpoints: list[Endpoint]) -> None:
    """The DNS proxy's view of the revision just programmed (node.dns_proxy.policy)."""
    from ciliumctl.node.dns_proxy import policy as dns_policy

    dns_policy.save(state, {ep.id: ep.ipv4 for ep in endpoints if ep.ipv4})


def next_revision(settings: Settings, dp) -> int:
    """The number of the state about to be programmed: past the stored one and past the kernel's too (a command
    killed after its switch never saved the number, which must not name a second state: connections are decided
    again only when the revision changes)."""
    return max(settings.revision, dp.revision) + 1


def save_enforcement(state: ResolvedState) -> None:
    """Which endpoints enforce which direction, as just programmed (enforcement_of reads it). Without fsync (one
    wait less on every reconcile, so on every pod's ADD): it describes what the kernel holds, and an OS crash that
    could tear it takes that away too, so a torn file reads as "never programmed", which is then the truth."""
    statefile.write_json(enforcement_path(), {
        str(ep_id): {"ingress": pol.ingress.enforced, "egress": pol.egress.enforced, "identity": pol.identity}
        for ep_id, pol in state.endpoints.items()}, durable=False)


def enforcement_path() -> Path:
    return paths.state_dir() / "enforcement.json"


def enforcement_of(ep_id: int) -> dict:
    """{"ingress": bool, "egress": bool} as last programmed ({} when never programmed)."""
    try:
        data = statefile.read_json(enforcement_path(), default={}) or {}
    except statefile.CorruptStateFile:   # torn by an OS crash (save_enforcement): nothing is programmed
        data = {}
    return data.get(str(ep_id), {})


def _record_identities(endpoints: list[Endpoint], state: ResolvedState) -> None:
    for ep in endpoints:
        pol = state.endpoints.get(ep.id)
        if pol is not None and pol.identity and pol.identity != ep.identity:
            ep.identity = pol.identity
            registry.save(ep)


def map_entries(state: ResolvedState) -> set[str]:
    """A ResolvedState as readable map entries (policy per endpoint and direction, ipcache)."""
    names = {"ingress": "ingress", "egress": "egress"}
    out = set()
    for ep_id, pol in state.endpoints.items():
        for d in names:
            dp = getattr(pol, d)
            out.add(f"endpoint {ep_id} {d} enforcement {'enabled' if dp.enforced else 'disabled'}")
            for e in dp.entries:
                out.add(f"endpoint {ep_id} {d} {'deny' if e.deny else 'allow'} identity {e.identity or 'any'} "
                        f"{_ports(e.ports)}")
    for prefix, ident in state.ipcache.items():
        out.add(f"ipcache {prefix} -> identity {ident}")
    return out


def diff_states(old: ResolvedState, new: ResolvedState) -> list[str]:
    a, b = map_entries(old), map_entries(new)
    return [f"- {x}" for x in sorted(a - b)] + [f"+ {x}" for x in sorted(b - a)]


def _ports(p) -> str:
    proto = {0: "any", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}.get(p.proto, str(p.proto))
    if p.proto == 0:
        return "any protocol"
    if p.any_port:
        return f"{proto}/any"
    return f"{proto}/{p.lo}" if p.lo == p.hi else f"{proto}/{p.lo}-{p.hi}"
