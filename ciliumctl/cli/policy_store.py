"""`ciliumctl policy apply|get|delete` on this node (no cluster)."""

from typing import List, Optional

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


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply(
        files: List[str] = typer.Option(..., "--filename", "-f", help="Policy file or directory (repeatable)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the map changes; change nothing."),
    ) -> None:
        """Validate, store and enforce policies on this node; an invalid set changes nothing."""
        from ciliumctl import node

        try:
            docs, reports = node.validate_paths(files)
        except node.InvalidPolicies as err:
            _print_findings(err.reports)
            raise
        warned = [r for r in reports if getattr(r, "warnings", None)]
        if warned:
            _print_findings(warned)
        result = node.apply_policies(docs, dry_run=dry_run)
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
        name: Optional[str] = typer.Argument(None, help="Policy name (all when omitted)."),
        namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Namespace (default: all)."),
        output: Output = typer.Option(Output.table, "--output", "-o", help="table|json|yaml"),
        no_headers: bool = typer.Option(False, "--no-headers", help="Omit the table header."),
    ) -> None:
        """List stored policies, or show one (-o yaml for the whole object)."""
        from ciliumctl.cli.common import print_data
        from ciliumctl.errors import UsageError
        from ciliumctl.policy import store

        found = store.find(name, namespace) if name else [
            p for p in store.load_all() if namespace is None or p.namespace in (namespace, "")]
        if name and not found:
            raise UsageError(f"policy {name!r} not found; see `ciliumctl policy get`")
        if output != Output.table:
            objs = [p.data for p in found]
            print_data(objs[0] if name and len(objs) == 1 else objs, output)
            return
        rows = [] if no_headers else [["KIND", "NAMESPACE", "NAME", "SOURCE"]]
        rows += [[p.kind, p.namespace or "-", p.name, p.source or "-"] for p in found]
        if rows:
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
            for r in rows:
                typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())

    @app.command("delete")
    def delete(
        name: str = typer.Argument(..., help="Policy name."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of the policy."),
        kind: Optional[str] = typer.Option(None, "--kind", help="cnp, ccnp or netpol when the name is ambiguous."),
    ) -> None:
        """Delete a stored policy and stop enforcing it."""
        from ciliumctl import node
        from ciliumctl.policy import store

        for c in node.delete_policy(name, namespace, store.kind_of(kind) if kind else None):
            typer.echo(f"{c.resource} {c.verb}")
