"""`ciliumctl policy apply|get|delete` on this node (no cluster)."""

import enum

import typer

from ciliumctl.cli.common import Output


def _print_findings(reports) -> None:
    """Findings of an invalid set: `policy validate`'s renderer when it offers one, else file:line:col lines."""
    import sys

    try:
        from ciliumctl.cli import policy_validate

        render = getattr(policy_validate, "render_reports", None)
    except ImportError:
        render = None
    if render is not None:
        render(reports)
        return
    for r in reports:
        doc = r.document
        for f in getattr(r, "findings", []):
            where = f"{doc.file}:{getattr(f, 'line', 1)}:{getattr(f, 'column', 1)}"
            path = f" ({f.path})" if getattr(f, "path", "") else ""
            sys.stderr.write(f"{where}: {getattr(f, 'severity', 'error')}: {getattr(f, 'message', f)}{path}\n")


def _print_gaps(gaps, refused: bool = False) -> None:
    """One line per part the datapath does not enforce (policy.enforcement_gaps), on stderr."""
    import sys

    for g in gaps:
        sys.stderr.write((g.error() if refused else g.warning()) + "\n")


def _kubeconfig(flag: str | None) -> str | None:
    import os

    return flag or os.environ.get("KUBECONFIG") or None


def _cluster():
    """Cluster mode (a kubeconfig given) lives in ciliumctl.cluster.policy_apply."""
    from ciliumctl.base.errors import EnvironmentProblem

    try:
        from ciliumctl.cluster import policy_apply
    except ImportError:
        raise EnvironmentProblem("cluster mode not available in this build; unset KUBECONFIG/--kubeconfig to use "
                                 "this node's policy store") from None
    return policy_apply


_KUBECONFIG_HELP = "Use the cluster's policies (default: $KUBECONFIG; this node's store without one)."
_CONTEXT_HELP = "Kubeconfig context (cluster mode)."
_NAMESPACE_HELP = "Namespace (default: default, or the kubeconfig context's in cluster mode)."

# `-o name` as kubectl prints it: resource.group/NAME
_RESOURCE_NAMES = {"CiliumNetworkPolicy": "ciliumnetworkpolicy.cilium.io",
                   "CiliumClusterwideNetworkPolicy": "ciliumclusterwidenetworkpolicy.cilium.io",
                   "NetworkPolicy": "networkpolicy.networking.k8s.io"}


class GetOutput(enum.StrEnum):
    table = "table"
    wide = "wide"
    name = "name"
    json = "json"
    yaml = "yaml"


def _namespace(namespace: str | None) -> str | None:
    """-n as kubectl reads it: an empty value is no value (the default namespace)."""
    return namespace or None


def _no_context_without_cluster(context: str | None, kubeconfig: str | None) -> None:
    from ciliumctl.base.errors import UsageError

    if context and not kubeconfig:
        raise UsageError("--context selects a kubeconfig context: pass --kubeconfig or set KUBECONFIG (this "
                         "node's own store has no contexts)")


def _print_objects(objs: list[dict], output: "GetOutput", one: bool) -> None:
    """-o json|yaml: one object as itself, several as a `kind: List` (what `policy apply -f -` reads back), as
    kubectl prints them; -o name: resource.group/NAME lines."""
    from ciliumctl.cli.common import print_data

    if output == GetOutput.name:
        for o in objs:
            typer.echo(f"{_RESOURCE_NAMES.get(o.get('kind', ''), str(o.get('kind', '')).lower())}/"
                       f"{(o.get('metadata') or {}).get('name', '')}")
        return
    value = objs[0] if one else {"apiVersion": "v1", "kind": "List", "items": objs, "metadata": {"resourceVersion": ""}}
    print_data(value, Output(output.value))


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply(
        files: list[str] = typer.Option(..., "--filename", "-f", metavar="FILE|DIR",
                                        help="Policy file or directory (repeatable)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the map changes; change nothing."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE", help=_KUBECONFIG_HELP),
        context: str | None = typer.Option(None, "--context", metavar="NAME", help=_CONTEXT_HELP),
        max_size: str = typer.Option("1536Ki", "--max-size", metavar="SIZE",
                                     help="Largest policy object (as JSON); a file or stdin may hold 16 times "
                                          "that."),
        strict: bool = typer.Option(False, "--strict-enforcement",
                                    help="Refuse policies with parts the datapath does not enforce yet (L7 rules, "
                                         "toFQDNs, host policies, ...): exit 1, nothing applied."),
        force: bool = typer.Option(False, "--force",
                                   help="With the host firewall on: apply a host policy even when it would cut "
                                        "live connections of this node (refused otherwise, naming them)."),
    ) -> None:
        """Validate, store and enforce policies on this node.

        An invalid set changes nothing. Parts the datapath does not enforce yet are named on stderr
        (file:line:col); --strict-enforcement refuses them."""
        from ciliumctl.node import policy_ops
        from ciliumctl.policy import checked, enforcement_gaps, load

        limit = load.parse_size(max_size)
        kc = _kubeconfig(kubeconfig)
        _no_context_without_cluster(context, kc)
        if kc:
            from ciliumctl.cli.common import refuse_unused

            refuse_unused("in cluster mode (the host firewall's guard is node mode's)", {"--force": force})
            warned: list = []
            gaps: list = []
            try:
                results = _cluster().apply_policies(files, kubeconfig=kc, context=context,
                                                    dry_run="client" if dry_run else "none",
                                                    warnings=warned, strict=strict, gaps=gaps)
            except checked.InvalidPolicies as err:
                _print_findings(err.reports)
                raise
            except enforcement_gaps.UnenforcedPolicies as err:
                _print_gaps(err.gaps, refused=True)
                raise
            if warned:
                _print_findings(warned)
            _print_gaps(gaps)
            for r in results:
                typer.echo(r.line())
            return
        from ciliumctl.node.hostfw import host as hostfw

        try:
            docs, reports = checked.validate_paths(files, max_size=limit,
                                                   node_selector_labels=hostfw.selector_labels_on())
        except checked.InvalidPolicies as err:
            _print_findings(err.reports)
            raise
        warned = [r for r in reports if getattr(r, "warnings", None)]
        if warned:
            _print_findings(warned)
        try:
            result = policy_ops.apply_policies(docs, dry_run=dry_run, strict=strict, force=force)
        except enforcement_gaps.UnenforcedPolicies as err:
            _print_gaps(err.gaps, refused=True)
            raise
        _print_gaps(result.gaps)
        _print_repairs(result.notes)
        suffix = " (dry run)" if dry_run else ""
        for c in result.changes:
            typer.echo(f"{c.resource} {c.verb}{suffix}")
        if dry_run:
            if result.map_changes:
                typer.echo("map changes:")
                for line in result.map_changes:
                    typer.echo(f"  {line}")
            else:
                typer.echo("map changes: none")

    @app.command("get")
    def get(
        name: str | None = typer.Argument(None, help="Policy name (all when omitted)."),
        namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
        all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Policies of every namespace."),
        output: GetOutput = typer.Option(GetOutput.table, "--output", "-o",
                                         help="Output format: wide adds columns, name prints "
                                              "resource.group/NAME."),
        no_headers: bool = typer.Option(False, "--no-headers", help="Omit the table header."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE", help=_KUBECONFIG_HELP),
        context: str | None = typer.Option(None, "--context", metavar="NAME", help=_CONTEXT_HELP),
    ) -> None:
        """List stored policies, or show one.

        As kubectl: the default namespace unless -n or -A (cluster-wide policies always). -o json|yaml prints
        the whole objects, several as a List that `policy apply -f -` reads back. A missing NAME is exit 1."""
        from ciliumctl.base.errors import NotFound, UsageError
        from ciliumctl.node.view import policy_enforcements
        from ciliumctl.policy import enforcement_gaps, store

        namespace = _namespace(namespace)
        if all_namespaces and namespace:
            raise UsageError("-n and -A (--all-namespaces) exclude each other: drop one")
        kc = _kubeconfig(kubeconfig)
        _no_context_without_cluster(context, kc)
        if kc:
            cl = _cluster()
            objs = cl.get_policies(name=name, namespace=namespace, all_namespaces=all_namespaces, kubeconfig=kc,
                                   context=context)
            if output not in (GetOutput.table, GetOutput.wide):
                _print_objects(objs, output, one=bool(name) and len(objs) == 1)
                return
            head = ["KIND", "NAMESPACE", "NAME", "VALID", "ENFORCED", "MESSAGE"]
            table = [] if no_headers else [head]
            table += [[r["kind"], r["namespace"] or "-", r["name"], r["valid"], r["enforced"], r["message"]]
                      for r in cl.policy_rows(objs)]
            _echo_table(table)
            return

        ns = None if all_namespaces else (namespace or "default")
        found = store.find(name, ns) if name else [
            p for p in store.load_all() if ns is None or p.kind == store.CCNP or p.namespace == ns]
        if name and not found:
            where = "" if all_namespaces else f" in namespace {ns}"
            raise NotFound(f"policy {name!r} not found{where}; see `ciliumctl policy get -A`")
        enforced = policy_enforcements(found)
        if output not in (GetOutput.table, GetOutput.wide):
            # the Enforced condition as the agent puts it on the policy's status in cluster mode
            objs = [{**p.data, "status": {"conditions": [enforcement_gaps.condition(e.gaps)]}}
                    for p, e in zip(found, enforced)]
            _print_objects(objs, output, one=bool(name) and len(objs) == 1)
            return
        head = ["KIND", "NAMESPACE", "NAME", "ENFORCED", "SOURCE"]
        rows = [[p.kind, p.namespace or "-", p.name, e.enforced, p.source or "-"] for p, e in zip(found, enforced)]
        if output == GetOutput.wide:   # what the datapath does not enforce, one gap per policy shown
            head += ["NOT ENFORCED"]
            for row, e in zip(rows, enforced):
                more = f" (+{len(e.gaps) - 1} more)" if len(e.gaps) > 1 else ""
                row.append(f"{e.gaps[0].what}{more}" if e.gaps else "-")
        _echo_table(([] if no_headers else [head]) + rows)

    @app.command("delete")
    def delete(
        name: str = typer.Argument(..., help="Policy name."),
        namespace: str | None = typer.Option(None, "--namespace", "-n", help=_NAMESPACE_HELP),
        kind: str | None = typer.Option(None, "--kind", metavar="{cnp,ccnp,netpol}",
                                        help="The kind, when the name is ambiguous."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE", help=_KUBECONFIG_HELP),
        context: str | None = typer.Option(None, "--context", metavar="NAME", help=_CONTEXT_HELP),
        force: bool = typer.Option(False, "--force",
                                   help="With the host firewall on: delete even when the host policy left would "
                                        "cut live connections of this node (refused otherwise, naming them)."),
    ) -> None:
        """Delete a stored policy and stop enforcing it.

        A missing policy is exit 1, as kubectl."""
        from ciliumctl.base.errors import Finding
        from ciliumctl.node import policy_ops
        from ciliumctl.policy import store

        namespace = _namespace(namespace)
        kc = _kubeconfig(kubeconfig)
        _no_context_without_cluster(context, kc)
        if kc:
            from ciliumctl.cli.common import refuse_unused

            refuse_unused("in cluster mode (the host firewall's guard is node mode's)", {"--force": force})
            results = _cluster().delete_policies(names=[name], kind=kind, namespace=namespace, kubeconfig=kc,
                                                 context=context)
            for r in results:
                typer.echo(r.line())
            if any(r.action.startswith("not found") for r in results):
                raise Finding(f"policy {name!r} not found in the cluster")
            return
        notes: list[str] = []
        changes = policy_ops.delete_policy(name, namespace or "default", store.kind_of(kind) if kind else None,
                                           notes=notes, force=force)
        _print_repairs(notes)
        for c in changes:
            typer.echo(f"{c.resource} {c.verb}")


def _print_repairs(notes: list[str]) -> None:
    """What the repair after an interrupted command found and did (node.verify.heal_if_interrupted)."""
    if notes:
        typer.echo("Warning: a command that changed this node was interrupted; the kernel now follows the stored "
                   "state again:", err=True)
    for line in notes:
        typer.echo(f"  {line}", err=True)


def _echo_table(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
