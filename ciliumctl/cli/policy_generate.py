"""`ciliumctl policy generate`: least-privilege CiliumNetworkPolicies from observed flows. The work is in
ciliumctl.connectivity.generate."""

import enum

import typer


class GenerateOutput(enum.StrEnum):
    yaml = "yaml"
    json = "json"


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        input_file: str | None = typer.Option(None, "--input-file", metavar="FILE|-",
                                                 help="Flows from `hubble observe -o jsonpb` output (- reads "
                                                      "stdin) instead of the agent's buffer."),
        server: str | None = typer.Option(None, "--server", metavar="ADDRESS",
                                             help="Observer API to read flows from (default: this node's agent)."),
        since: str | None = typer.Option(None, "--since", metavar="DURATION|RFC3339",
                                            help="Only flows since this time (the agent's buffer): 5m, 1h, or "
                                                 "RFC 3339."),
        from_audit: bool = typer.Option(False, "--from-audit",
                                        help="Only flows with verdict AUDIT: what audit mode saw the current "
                                             "policies would deny, i.e. what must be added."),
        fqdn: bool = typer.Option(True, "--fqdn/--no-fqdn",
                                  help="Destinations flows name by DNS become toFQDNs rules (default), else "
                                       "toCIDR of the addresses seen."),
        node: bool = typer.Option(False, "--node",
                                  help="Show a diff against this node's applied policies (and replay the "
                                       "flows with them too) instead of the policies."),
        output: GenerateOutput = typer.Option(GenerateOutput.yaml, "--output", "-o", help="Output format."),
    ) -> None:
        """Generate least-privilege policies from observed flows.

        One CiliumNetworkPolicy per workload (selected by its stable labels, not pod names), allowing what it
        was seen to receive and send. Each is checked by `policy validate` and every observed connection is
        replayed through the trace engine; the summary on stderr says whether all are allowed.

        Exit 0 when every connection replays as allowed, 1 when some would be denied (e.g. by a deny rule
        already applied), 2 on bad input (a flow file in another format included)."""
        import sys

        from ciliumctl.base.errors import UsageError
        from ciliumctl.connectivity import generate as gen

        if input_file is not None and (server or since):
            raise UsageError("--input-file reads flows from a file: --server and --since are for the agent's "
                             "buffer; give one or the other")
        if input_file is not None:
            flows = gen.read_file(input_file, sys.stdin)
        else:
            from ciliumctl.flows import client
            from ciliumctl.flows.filters import parse_time

            try:
                when = parse_time(since) if since else None
            except ValueError as err:
                raise UsageError(f"--since {since!r}: {err}") from None
            flows = gen.read_agent(server or client.default_server(), when)
        observed = gen.observe(flows, from_audit)
        if not observed.flows:
            from ciliumctl.base.errors import Finding

            raise Finding(f"no flows in the agent's buffer{' since ' + since if since else ''}: run traffic first, "
                          "or read a capture with --input-file")
        result = gen.generate(observed, use_fqdn=fqdn)
        gen.check_valid(result.policies)
        applied = []
        if node:
            from ciliumctl.node import view

            applied = view.live_view().stored
        replayed = gen.replay(result, [s.data for s in applied])
        if node:
            sys.stdout.write(_diff(result.policies, applied))
        elif output == GenerateOutput.json:
            from ciliumctl.cli.common import print_json

            print_json({"apiVersion": "v1", "kind": "List", "items": result.policies})
        else:
            sys.stdout.write(gen.to_yaml(result.policies))
        _summary(result, replayed)
        if not replayed.all_allowed:
            raise typer.Exit(1)


def _summary(result, replayed) -> None:
    import sys

    obs = result.observed
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(obs.skipped.items()))
    lines = [f"# {len(result.policies)} policies for {len(result.workloads)} workloads from {obs.flows} flows "
             f"({len(obs.conns)} connections" + (f"; skipped: {skipped}" if skipped else "") + ")",
             "# all validate (policy validate)", f"# {replayed.summary(obs.flows)}"]
    lines += [f"#   denied: {d}" for d in replayed.denied[:20]]
    lines += [f"# note: {n}" for n in result.notes]
    sys.stderr.write("\n".join(lines) + "\n")


def _diff(policies: list[dict], applied: list) -> str:
    """A unified diff per generated policy against the applied one of the same kind, namespace and name."""
    import difflib

    import yaml

    have = {(s.kind, s.namespace, s.name): s.data for s in applied}
    out: list[str] = []
    for p in policies:
        meta = p["metadata"]
        key = (p["kind"], meta["namespace"], meta["name"])
        old = have.get(key)
        old_text = "" if old is None else yaml.safe_dump(
            {"apiVersion": old.get("apiVersion"), "kind": old.get("kind"),
             "metadata": {k: v for k, v in (old.get("metadata") or {}).items()
                          if k in ("name", "namespace", "labels")}, "spec": old.get("spec")}, sort_keys=False)
        new_text = yaml.safe_dump(p, sort_keys=False)
        where = f"{meta['namespace']}/{meta['name']}"
        out.extend(difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                        f"applied/{where}" if old is not None else "/dev/null",
                                        f"generated/{where}"))
    return "".join(out) or "# no difference: the generated policies are applied as they are\n"
