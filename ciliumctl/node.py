"""The node without a cluster: settings, endpoints and stored policies, and the one path from them to the kernel.

    policy store + endpoint registry  ->  policy.resolve.resolve()  ->  Datapath.apply()

Every command that changes node state holds the node lock (`<state>/node.lock`) from reading to programming the
maps, so two ciliumctl processes never program a mix of two states. Settings (enforcement mode, audit, address
pool, policy revision) persist in `<state>/node.json`.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ciliumctl import paths, statefile
from ciliumctl.endpoints import ipam, registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.errors import CiliumctlError, EnvironmentProblem, Finding, UsageError
from ciliumctl.policy import store
from ciliumctl.policy.resolved import Enforcement, ResolvedState

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


# ----------------------------------------------------------------------------------------------- settings

@dataclass
class Settings:
    enforcement_mode: str = Enforcement.DEFAULT.value
    audit: bool = False
    pool: str = ""              # "" = $CILIUMCTL_POOL or the default pool
    revision: int = 0           # policy revision, bumped by every reconcile that programs the maps
    installed: bool = False

    @property
    def mode(self) -> Enforcement:
        return Enforcement(self.enforcement_mode)


def settings_path() -> Path:
    return paths.state_dir() / "node.json"


def load_settings() -> Settings:
    data = statefile.read_json(settings_path(), default={}) or {}
    known = {k: v for k, v in data.items() if k in Settings.__dataclass_fields__}
    try:
        s = Settings(**known)
        s.mode  # validates
        return s
    except (TypeError, ValueError):
        raise EnvironmentProblem(f"{settings_path()}: invalid node settings; fix or remove the file") from None


def save_settings(s: Settings) -> None:
    statefile.write_json(settings_path(), asdict(s))


def parse_mode(value: str) -> Enforcement:
    try:
        return Enforcement(value.lower())
    except ValueError:
        raise UsageError(f"enforcement mode {value!r}: use default, always or never") from None


@contextlib.contextmanager
def environment_errors(what: str):
    """Kernel and file-system failures (bpf(2), netlink, files) become one-line EnvironmentProblems."""
    try:
        yield
    except CiliumctlError:
        raise
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise EnvironmentProblem(f"{what}: {err.strerror or err}{where}; check that you are root and that "
                                 "`ciliumctl install` succeeded") from None
    except Exception as err:
        if type(err).__name__ != "NetlinkError":
            raise
        code, msg = (err.args + ("",))[:2] if err.args else (0, str(err))
        raise EnvironmentProblem(f"{what}: netlink error {code} {msg}".rstrip() + "; check that you are root and "
                                 "the node network namespace is usable") from None


def lock_path() -> Path:
    return paths.state_dir() / "node.lock"


@contextlib.contextmanager
def locked():
    """The node lock: held across read-modify-program of node state. Not re-entrant: take it once."""
    with statefile.locked(lock_path()):
        yield


def pool() -> ipam.Pool:
    return ipam.Pool(ipam.effective_pool(configured=load_settings().pool or None))


# ----------------------------------------------------------------------------------------------- identities

def identities_path() -> Path:
    return paths.state_dir() / "identities.json"


def allocator(path: Path | None = None):
    """The identity table: the cluster's while an agent runs in cluster mode (set_cluster), else the node's own
    file (or the one at `path`, always local)."""
    if path is None and _cluster is not None:
        return _cluster.identities
    from ciliumctl.identity import IdentityAllocator

    return IdentityAllocator(path or identities_path())


# In cluster mode the agent hands node-local reconciles and identity allocation to its cluster view, so that a
# CNI ADD or an `endpoint add` served by the agent programs the cluster's policies, not the local store.
_cluster = None


def set_cluster(cluster) -> None:
    """`cluster` has .identities (an IdentityBackend) and .reconcile_locked(datapath, settings); None resets."""
    global _cluster
    _cluster = cluster


def endpoint_labels(ep: Endpoint) -> frozenset[str]:
    """The security-relevant label set of an endpoint, as Cilium derives it for a pod (policy.labels)."""
    from ciliumctl.policy import labels

    return frozenset(labels.endpoint_labels(ep))


# ----------------------------------------------------------------------------------------------- datapath

def ensure_bpffs() -> bool:
    """Mount bpffs where pins go when it is not there yet. True when this call mounted it."""
    from ciliumctl import install_node

    return install_node.ensure_bpffs()


def open_datapath():
    """The pinned datapath (compiled, loaded and pinned on first use)."""
    from ciliumctl import nodens

    nodens.enter_node_netns()
    ensure_bpffs()
    try:
        from ciliumctl.datapath.loader import Datapath
    except ImportError:
        raise EnvironmentProblem("the eBPF datapath is not available in this build of ciliumctl "
                                 "(ciliumctl.datapath.loader missing)") from None
    return Datapath.open()


def parsed_policies(stored: list[store.StoredPolicy] | None = None) -> list:
    """Stored policies as the policy model (already validated when stored)."""
    from ciliumctl.policy import model

    out = []
    for p in store.load_all() if stored is None else stored:
        try:
            parsed = model.parse_policy(p.data)
        except Exception as err:  # a stored object that no longer parses: name it, never a traceback
            raise EnvironmentProblem(f"stored policy {p.resource} ({p.namespace or 'cluster-wide'}) cannot be "
                                     f"parsed: {err}; delete it with `ciliumctl policy delete {p.name}`") from None
        out.extend(parsed if isinstance(parsed, list) else [parsed])
    return out


def resolve_state(endpoints: list[Endpoint], stored: list[store.StoredPolicy], settings: Settings,
                  alloc=None, revision: int | None = None) -> ResolvedState:
    from ciliumctl.policy.resolve import resolve

    return resolve(endpoints, parsed_policies(stored), settings.mode, alloc if alloc is not None else allocator(),
                   revision=settings.revision if revision is None else revision, audit=settings.audit)


def reconcile(datapath=None, settings: Settings | None = None, upgrade: bool = False):
    """Program the kernel with the current store and registry (call under locked()). Returns the apply report.
    upgrade: also replace outdated pinned programs and maps (Datapath.upgrade) in the same switch."""
    if _cluster is not None:
        return _cluster.reconcile_locked(datapath, settings)
    settings = settings or load_settings()
    endpoints = registry.load_all()
    settings.revision += 1
    alloc = allocator()
    state = resolve_state(endpoints, store.load_all(), settings, alloc, settings.revision)
    _record_identities(endpoints, state)
    dp = datapath or open_datapath()
    report = dp.upgrade(state) if upgrade else dp.apply(state)
    save_settings(settings)
    statefile.write_json(enforcement_path(), {
        str(ep_id): {"ingress": pol.ingress.enforced, "egress": pol.egress.enforced, "identity": pol.identity}
        for ep_id, pol in state.endpoints.items()})
    return report


def enforcement_path() -> Path:
    return paths.state_dir() / "enforcement.json"


def enforcement_of(ep_id: int) -> dict:
    """{"ingress": bool, "egress": bool} as last programmed ({} when never programmed)."""
    data = statefile.read_json(enforcement_path(), default={}) or {}
    return data.get(str(ep_id), {})


def _record_identities(endpoints: list[Endpoint], state: ResolvedState) -> None:
    for ep in endpoints:
        pol = state.endpoints.get(ep.id)
        if pol is not None and pol.identity and pol.identity != ep.identity:
            ep.identity = pol.identity
            registry.save(ep)


# ----------------------------------------------------------------------------------------------- endpoints

def parse_labels(text: str | list[str] | None) -> dict[str, str]:
    """`k=v,k2=v2` (or a list of such) -> dict; keys and values checked like Kubernetes labels."""
    items: list[str] = []
    for chunk in ([text] if isinstance(text, str) else (text or [])):
        items.extend(s.strip() for s in chunk.split(",") if s.strip())
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if key.startswith("k8s:"):
            key = key[4:]
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value.strip()):
            raise UsageError(f"label {item!r}: expected key=value with Kubernetes label syntax, e.g. "
                             "--labels org=empire,class=deathstar")
        out[key] = value.strip()
    return out


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise UsageError(f"{kind} {value!r}: use lower-case letters, digits and '-' (at most 63), e.g. tiefighter")
    return value


def add_endpoint(name: str, labels: dict[str, str], namespace: str = "default", pool_cidr: str | None = None,
                 ipv4: str | None = None) -> Endpoint:
    """A sandbox endpoint, attached and with policy in force when this returns. Nothing is left on failure."""
    from ciliumctl import nodens
    from ciliumctl.endpoints import plumbing

    check_name("endpoint name", name)
    check_name("namespace", namespace)
    _require_root("endpoint add")
    nodens.enter_node_netns()
    with environment_errors(f"endpoint add {name}"), locked():
        if registry.find(name, namespace=namespace) is not None:
            raise UsageError(f"endpoint {namespace}/{name} already exists; delete it first or pick another name")
        settings = load_settings()
        ep_id = registry.next_id()
        addr_pool = ipam.Pool(ipam.effective_pool(explicit=pool_cidr, configured=settings.pool or None))
        owner = f"endpoint:{ep_id}"
        ep = Endpoint(id=ep_id, name=name, namespace=namespace, labels=dict(labels), node=_node_name(),
                      state="waiting-for-identity")
        done: list[str] = []
        try:
            dp = open_datapath()
            ep.ipv4 = addr_pool.allocate(owner, wanted=ipv4)
            done.append("lease")
            plumbed = plumbing.create(ep_id, ep.ipv4)
            done.append("plumbing")
            ep.netns, ep.host_ifname, ep.host_ifindex = plumbed.netns, plumbed.host_ifname, plumbed.host_ifindex
            ep.state = "waiting-for-identity"
            registry.save(ep)
            done.append("registry")
            attach_endpoint(ep, dp, settings)
            done.append("attach")
            return registry.load(ep_id) or ep
        except BaseException:
            _undo_endpoint(ep, done, addr_pool, owner)
            raise


def attach_endpoint(ep: Endpoint, datapath=None, settings: Settings | None = None) -> Endpoint:
    """Identity, policy and datapath for a registered, plumbed endpoint (the caller holds the node lock).

    The endpoint's policy is in the maps before its program runs on the veth, so it never passes traffic
    without enforcement. Used by `endpoint add` and by the CNI server."""
    dp = datapath or open_datapath()
    ep.identity = allocator().allocate(endpoint_labels(ep))
    ep.state = "waiting-for-policy"
    registry.save(ep)
    reconcile(dp, settings)
    dp.attach(ep)
    ep.state = "ready"
    registry.save(ep)
    return ep


def detach_endpoint(ep: Endpoint, datapath=None) -> None:
    """Take an endpoint out of the datapath and the registry, then re-program policy without it (caller holds
    the node lock). Plumbing (veth, netns, address) is the caller's."""
    dp = datapath
    if dp is None:
        with contextlib.suppress(EnvironmentProblem):
            dp = open_datapath()
    if dp is not None:
        with contextlib.suppress(Exception):
            dp.detach(ep)
    registry.remove(ep.id)
    if dp is not None:
        reconcile(dp)


def _undo_endpoint(ep: Endpoint, done: list[str], addr_pool: ipam.Pool, owner: str) -> None:
    from ciliumctl.endpoints import plumbing

    with contextlib.suppress(Exception):
        if "attach" in done:
            open_datapath().detach(ep)
    if "registry" in done:
        registry.remove(ep.id)
        with contextlib.suppress(Exception):
            reconcile()
    if "plumbing" in done:
        with contextlib.suppress(Exception):
            plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)
    if "lease" in done:
        addr_pool.release_owner(owner)


def get_endpoint(ref: str, namespace: str | None = None) -> Endpoint:
    ep = registry.find(ref, namespace=namespace)
    if ep is None:
        raise UsageError(f"endpoint {ref!r} not found; see `ciliumctl endpoint list`")
    return ep


def delete_endpoint(ref: str, namespace: str | None = None) -> Endpoint:
    """Detach, unplumb, release the address and forget the endpoint; then re-program policy without it."""
    from ciliumctl import nodens
    from ciliumctl.endpoints import plumbing

    _require_root("endpoint delete")
    nodens.enter_node_netns()
    with environment_errors(f"endpoint delete {ref}"), locked():
        ep = get_endpoint(ref, namespace)
        ep.state = "disconnecting"
        registry.save(ep)
        plumbing.remove(ep.id, ep.ipv4, ep.netns, ep.host_ifname)   # the veth goes, and its tc programs with it
        pool().release_owner(f"endpoint:{ep.id}")
        detach_endpoint(ep)
        return ep


def exec_in_endpoint(ref: str, argv: list[str], namespace: str | None = None) -> None:
    from ciliumctl.endpoints import plumbing

    _require_root("endpoint exec")
    ep = get_endpoint(ref, namespace)
    plumbing.exec_in(ep.netns, argv)


def _node_name() -> str:
    return os.environ.get("CILIUMCTL_NODE_NAME") or os.uname().nodename


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs root (network namespaces, veth, eBPF); run it with sudo")


# ----------------------------------------------------------------------------------------------- policies

@dataclass
class PolicyChange:
    resource: str          # ciliumnetworkpolicy/NAME
    namespace: str
    verb: str              # created | configured | unchanged | deleted


@dataclass
class ApplyResult:
    changes: list[PolicyChange]
    revision: int
    map_changes: list[str] = field(default_factory=list)    # dry run: what the maps would gain and lose
    report: object = None                                   # the datapath's ApplyReport


class InvalidPolicies(Finding):
    """Validation findings: the reports are attached for the command layer to render like `policy validate`."""

    def __init__(self, reports, message: str):
        super().__init__(message)
        self.reports = reports


def load_and_validate(paths_: list[str]):
    """Documents of `paths_`, all valid, or InvalidPolicies (nothing else happens then)."""
    return validate_paths(paths_)[0]


def validate_paths(paths_: list[str]):
    """(documents, reports) of `paths_` when every policy is valid (reports carry any warnings);
    InvalidPolicies otherwise."""
    from ciliumctl.policy import load, validate

    docs = load.load_paths([str(p) for p in paths_])
    if not docs:
        raise UsageError(f"no policy documents found in {', '.join(map(str, paths_))}; give YAML files or a "
                         "directory of them")
    reports = validate.validate_documents(docs, _validate_options())
    bad = [r for r in reports if not r.valid]
    if bad:
        raise InvalidPolicies(reports, f"{len(bad)} of {len(reports)} policies invalid: nothing applied")
    return docs, reports


def _validate_options():
    """The agent's default options, as `policy validate` uses them without flags."""
    from ciliumctl.policy import validate

    return validate.Options()


def _doc_data(doc) -> dict:
    return doc.data if hasattr(doc, "data") else doc


def _doc_source(doc) -> str:
    f = getattr(doc, "file", "")
    return f"{'<stdin>' if f == '-' else f}#{getattr(doc, 'index', 0)}" if f else ""


def apply_policies(docs, dry_run: bool = False) -> ApplyResult:
    """Store validated policy objects and program the maps; with dry_run only report what would change."""
    objects = [store.from_object(_doc_data(d), _doc_source(d)) for d in docs]
    seen: dict[tuple, str] = {}
    for o in objects:
        key = (o.kind, o.namespace, o.name)
        if key in seen:
            raise UsageError(f"{o.resource} in namespace {o.namespace or '(cluster)'} is given twice "
                             f"({seen[key]} and {o.source}); keep one")
        seen[key] = o.source
    if not dry_run:
        _require_root("policy apply")
    with environment_errors("policy apply"), locked():
        changes = [PolicyChange(o.resource, o.namespace, store.change_of(o)) for o in objects]
        settings = load_settings()
        if dry_run:
            before = store.load_all()
            after = _merged(before, objects)
            return ApplyResult(changes, settings.revision, map_changes=_dry_run_diff(before, after, settings))
        if all(c.verb == "unchanged" for c in changes):
            return ApplyResult(changes, settings.revision)
        with _store_rollback([(o.kind, o.namespace, o.name) for o in objects]):
            for o in objects:
                store.put(o)
            report = reconcile(settings=settings)
        return ApplyResult(changes, load_settings().revision, report=report)


@contextlib.contextmanager
def _store_rollback(keys: list[tuple[str, str, str]]):
    """Undo store changes of `keys` when the block fails (e.g. the datapath refused the new state, which then
    stays the old one): the store never describes policy that is not in force."""
    before = {k: store.get(*k) for k in keys}
    try:
        yield
    except BaseException:
        for k, old in before.items():
            if old is None:
                store.delete(*k)
            else:
                store.put(old)
        raise


def delete_policy(name: str, namespace: str | None = None, kind: str | None = None) -> list[PolicyChange]:
    _require_root("policy delete")
    with environment_errors(f"policy delete {name}"), locked():
        found = store.find(name, namespace if namespace is not None else "default", kind)
        if not found:
            raise UsageError(f"policy {name!r} not found in namespace {namespace or 'default'}; see "
                             "`ciliumctl policy get`")
        if len(found) > 1:
            kinds = ", ".join(p.resource.split("/")[0] for p in found)
            raise UsageError(f"policy name {name!r} matches several kinds ({kinds}); pick one with --kind")
        p = found[0]
        with _store_rollback([(p.kind, p.namespace, p.name)]):
            store.delete(p.kind, p.namespace, p.name)
            reconcile()
        return [PolicyChange(p.resource, p.namespace, "deleted")]


def _merged(before: list[store.StoredPolicy], new: list[store.StoredPolicy]) -> list[store.StoredPolicy]:
    keyed = {(p.kind, p.namespace, p.name): p for p in before}
    for p in new:
        keyed[(p.kind, p.namespace, p.name)] = p
    return list(keyed.values())


def _dry_run_diff(before, after, settings: Settings) -> list[str]:
    """Map entries gained (+) and lost (-), resolved against an in-memory copy of the identity table (a dry run
    allocates no identity in node state)."""
    endpoints = registry.load_all()
    scratch = allocator().snapshot()
    old = resolve_state(endpoints, before, settings, scratch)
    new = resolve_state(endpoints, after, settings, scratch)
    return diff_states(old, new)


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


# ----------------------------------------------------------------------------------------------- views

@dataclass
class NodeView:
    """What `policy trace --live` and status need: this node's endpoints and policies, parsed, plus settings."""

    endpoints: list[Endpoint]
    stored: list[store.StoredPolicy]
    policies: list                     # model.parse_policy() of every stored policy
    mode: Enforcement
    audit: bool
    revision: int
    allocator: object                  # identity.IdentityAllocator over this node's identities


def live_view() -> NodeView:
    """This node's endpoints, policies and settings for `policy trace --live`. Read-only and lock-free (every
    state file is replaced atomically), so it needs no write access to the state directory."""
    settings = load_settings()
    stored = store.load_all()
    return NodeView(registry.load_all(), stored, parsed_policies(stored), settings.mode, settings.audit,
                    settings.revision, allocator())


def status() -> dict:
    """Node status: datapath programs and maps, endpoints, revision, mode, lost events."""
    settings = load_settings()
    eps = registry.load_all()
    try:
        pinned = paths.bpffs_dir().is_dir() and any(paths.bpffs_dir().iterdir())
    except OSError:       # bpffs is root-only
        pinned = False
    out: dict = {
        "installed": settings.installed or pinned,    # `endpoint add` loads the datapath on first use too
        "enforcement_mode": settings.enforcement_mode,
        "audit": settings.audit,
        "policy_revision": settings.revision,
        "policies": len(store.load_all()),
        "endpoints": {"total": len(eps), "ready": sum(1 for e in eps if e.state == "ready")},
        "address_pool": ipam.effective_pool(configured=settings.pool or None),
        "bpffs": str(paths.bpffs_dir()),
        "datapath": None,
    }
    if os.geteuid() != 0:
        out["datapath"] = {"error": "needs root to read the pinned maps"}
        return out
    if not pinned:
        out["datapath"] = {"error": "not installed; run `ciliumctl install`"}
        return out
    try:
        from ciliumctl.datapath.loader import Datapath

        dp = Datapath.open()
        out["datapath"] = dp.status()
    except ImportError:
        out["datapath"] = {"error": "datapath module missing from this build"}
    except EnvironmentProblem as err:
        out["datapath"] = {"error": str(err)}
    return out
