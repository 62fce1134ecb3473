"""What <TAB> offers for values: fixed sets (verdicts, event types, the choices an option declares) and values that
live on this node (endpoint and policy names, namespaces). Attached by option name and command path, not in the
command modules: typer_app's parameter classes call option_values / argument_values, and docgen embeds the fixed
ones in the scripts, so an option added later gets its values by its name alone. Best effort: completion never
prints an error, it offers nothing instead."""

from __future__ import annotations

from collections.abc import Callable

from ciliumctl.cli.params import choices_of, command_path


# ---------------------------------------------------------------- fixed values (the scripts embed them)
def _verdicts() -> list[str]:
    from ciliumctl.flows.pb.flow import flow_pb2 as pb  # flow.proto's Verdict, as hubble observe --verdict

    return [v for v in pb.Verdict.keys() if v != "VERDICT_UNKNOWN"]


def _event_types() -> list[str]:
    from ciliumctl.flows import names  # hubble observe -t TYPE[:SUBTYPE]: names.TYPE_FLAG, names.TRACE_POINTS

    trace = next(t for t, code in names.TYPE_FLAG.items() if code == names.MSG_TRACE)
    return [*names.TYPE_FLAG, *(f"{trace}:{point}" for point in names.TRACE_POINTS.values())]


def _protocols() -> list[str]:
    from ciliumctl.flows.pb.flow import flow_pb2 as pb  # Layer4's oneof; "icmp" matches both ICMP versions

    return ["icmp", *(f.name.lower() for f in pb.Layer4.DESCRIPTOR.oneofs_by_name["protocol"].fields)]


def _drop_reasons() -> list[str]:
    from ciliumctl.flows.pb.flow import flow_pb2 as pb

    return [r for r in pb.DropReason.keys() if r != "DROP_REASON_UNKNOWN"]


FIXED: dict[str, Callable[[], list[str]]] = {
    "--verdict": _verdicts,
    "--type": _event_types,
    "--protocol": _protocols,
    "--drop-reason-desc": _drop_reasons,
    "--traffic-direction": lambda: ["ingress", "egress"],
}


# ---------------------------------------------------------------- values of this node (asked at <TAB>)
def _endpoints() -> list:
    from ciliumctl.endpoints import registry

    return registry.scan()[0]


def _policies() -> list:
    from ciliumctl.policy import store

    return store.load_all()


def _namespaces(ctx) -> list[str]:
    found = {ep.namespace for ep in _safe(_endpoints)} | {p.namespace for p in _safe(_policies) if p.namespace}
    return sorted(found)


def _pods(ctx) -> list[str]:
    return sorted({f"{ep.namespace}/{ep.name}" for ep in _safe(_endpoints) if ep.name})


def endpoint_names(ctx, incomplete: str = "") -> list[str]:
    """NAME (or NAMESPACE/NAME once a / is typed) of this node's endpoints, in -n's namespace when given."""
    namespace = ctx.params.get("namespace")
    endpoints = [ep for ep in _safe(_endpoints) if ep.name and (not namespace or ep.namespace == namespace)]
    if "/" in incomplete:
        return sorted({f"{ep.namespace}/{ep.name}" for ep in endpoints})
    return sorted({ep.name for ep in endpoints})


def policy_names(ctx, incomplete: str = "") -> list[str]:
    """Names of stored policies as `policy get/delete` look them up: -n's namespace (default: default) and the
    cluster-wide ones, or every namespace with -A."""
    everywhere = ctx.params.get("all_namespaces")
    namespace = ctx.params.get("namespace") or "default"
    return sorted({p.name for p in _safe(_policies)
                   if everywhere or not p.namespace or p.namespace == namespace})


FROM_NODE: dict[str, Callable] = {
    "--namespace": _namespaces, "--from-namespace": _namespaces, "--to-namespace": _namespaces,
    "--src-namespace": _namespaces, "--dst-namespace": _namespaces,
    "--pod": _pods, "--from-pod": _pods, "--to-pod": _pods,
}

# the first argument of these commands names an endpoint or a policy of this node
ARGUMENTS: dict[str, Callable] = {
    "endpoint get": endpoint_names, "endpoint exec": endpoint_names, "endpoint delete": endpoint_names,
    "policy get": policy_names, "policy delete": policy_names,
}


def _safe(read: Callable[[], list]) -> list:
    try:
        return read()
    except Exception:   # no state yet, not root, a corrupt record: offer nothing, say nothing
        return []


def _names(param) -> list[str]:
    return [*param.opts, *param.secondary_opts]


def fixed_values(param) -> list[str]:
    """The fixed values of an option: from FIXED by its name, else the set it accepts ({a,b} or an Enum)."""
    for name in _names(param):
        if name in FIXED:
            return _safe(FIXED[name])
    return choices_of(param)


def from_node(param) -> bool:
    """Whether an option's values are read from this node at <TAB>."""
    return any(name in FROM_NODE for name in _names(param))


def completes_first_argument(path: str) -> bool:
    return path in ARGUMENTS


def _matching(values: list[str], incomplete: str) -> list[str]:
    return [v for v in values if v.lower().startswith(incomplete.lower())]


def option_values(param, ctx, incomplete: str) -> list[str] | None:
    """Candidates for an option's value; None when completion has no opinion (files, free text)."""
    read = next((FROM_NODE[name] for name in _names(param) if name in FROM_NODE), None)
    if read is not None:
        return _matching(_safe(lambda: read(ctx)), incomplete)
    values = fixed_values(param)
    return _matching(values, incomplete) if values else None


def argument_values(param, ctx, incomplete: str) -> list[str] | None:
    read = ARGUMENTS.get(" ".join(command_path(ctx)))
    first = next((p for p in ctx.command.params if p.param_type_name == "argument"), None)
    if read is None or param is not first:
        return None
    return _matching(_safe(lambda: read(ctx, incomplete)), incomplete)
