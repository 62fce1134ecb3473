"""`ciliumctl policy validate`: flags in, reports out. The checks live in ciliumctl.policy.validate.

The command is registered with Typer for help, completion and errors; `fast_main` runs the common forms of
it without importing Typer at all (what a CI job or a pre-commit hook calls many times), and hands anything
unusual (help, an unknown flag, a bad value) to Typer."""

import enum


class ValidateOutput(enum.StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


def register(app) -> None:
    import typer

    @app.command("validate")
    def validate_cmd(
        paths: list[str] = typer.Argument(..., metavar="PATH",
                                          help="Policy files or folders (searched recursively for .yaml, .yml, "
                                               ".json); - reads stdin."),
        output: ValidateOutput = typer.Option(ValidateOutput.text, "--output", "-o", help="Output format."),
        strict: bool = typer.Option(False, "--strict",
                                    help="Also refuse what `kubectl apply` refuses: unknown or duplicate fields, "
                                         "names the API server rejects, and the CRD schema's checks."),
        schema: bool | None = typer.Option(None, "--schema/--no-schema",
                                              help="Treat CRD schema violations (enums, patterns, max items) as "
                                                   "errors. Default: on with --strict, warnings otherwise."),
        node_selector_labels: bool = typer.Option(False, "--enable-node-selector-labels",
                                                  help="Agent option: allow fromNodes/toNodes."),
        extended_ip_protocols: bool = typer.Option(False, "--enable-extended-ip-protocols",
                                                   help="Agent option: ports may be left out (VRRP/IGMP traffic)."),
        disable_l7_proxy: bool = typer.Option(False, "--disable-l7-proxy",
                                              help="Agent option: the L7 proxy is off, so L7 rules are rejected."),
        disable_icmp_rules: bool = typer.Option(False, "--disable-icmp-rules",
                                                help="Agent option: ICMP rules are rejected."),
        quiet: bool = typer.Option(False, "--quiet", "-q",
                                   help="Text output: only documents with findings, and the summary."),
        max_size: str = typer.Option("1536Ki", "--max-size", metavar="SIZE",
                                     help="Largest policy object (as JSON); a file or stdin may hold 16 times "
                                          "that."),
    ) -> None:
        """Check policies as Cilium 1.19's agent would import them.

        Every finding has its file:line:col. Kinds: CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
        NetworkPolicy (also inside List objects).

        Exit 0 when all are valid (warnings allowed), 1 when some are invalid, 2 on usage or read errors."""
        code = validate_paths(paths, output.value, strict=strict, schema=schema,
                              node_selector_labels=node_selector_labels,
                              extended_ip_protocols=extended_ip_protocols, disable_l7_proxy=disable_l7_proxy,
                              disable_icmp_rules=disable_icmp_rules, quiet=quiet, max_size=max_size)
        if code:
            raise typer.Exit(code)


def validate_paths(paths: list, output: str = "text", *, strict: bool = False, schema: bool | None = None,
                   node_selector_labels: bool = False, extended_ip_protocols: bool = False,
                   disable_l7_proxy: bool = False, disable_icmp_rules: bool = False, quiet: bool = False,
                   max_size: str | None = None) -> int:
    """Validate, print in the chosen format, and return the exit code (1 when some policy is invalid)."""
    import sys

    from ciliumctl.policy import load, validate

    options = validate.Options(
        enable_node_selector_labels=node_selector_labels, enable_extended_ip_protocols=extended_ip_protocols,
        enable_l7_proxy=not disable_l7_proxy, enable_icmp_rules=not disable_icmp_rules,
        strict=strict, schema=schema)
    limit = load.parse_size(max_size) if max_size else load.DEFAULT_MAX_SIZE
    docs = load.load_paths(paths, stdin=sys.stdin, max_size=limit, keep_going=True)
    reports = validate.validate_documents(docs, options)
    checked = [r for r in reports if r.checked]
    if output == "json":
        from ciliumctl.cli.common import print_json

        print_json([r.as_dict() for r in checked])
    elif output == "sarif":
        from ciliumctl import __version__
        from ciliumctl.cli.common import print_json
        from ciliumctl.policy.sarif import to_sarif

        print_json(to_sarif(checked, __version__))
    else:
        _print_text(reports, quiet)
    return 1 if any(not r.valid for r in checked) else 0


# flag -> (keyword, value); a flag that takes a value has value None
_FLAGS = {
    "--strict": ("strict", True), "--schema": ("schema", True), "--no-schema": ("schema", False),
    "--enable-node-selector-labels": ("node_selector_labels", True),
    "--enable-extended-ip-protocols": ("extended_ip_protocols", True),
    "--disable-l7-proxy": ("disable_l7_proxy", True), "--disable-icmp-rules": ("disable_icmp_rules", True),
    "--quiet": ("quiet", True), "-q": ("quiet", True), "--output": ("output", None), "-o": ("output", None),
}


def parse_fast(args: list) -> tuple | None:
    """(paths, keyword arguments) for `validate_paths` from the arguments after `policy validate`, or None
    when they need Typer: --help, an unknown or repeated flag, a bad output format, no path."""
    paths: list = []
    kwargs: dict = {}
    i = 0
    only_paths = False
    while i < len(args):
        arg = args[i]
        i += 1
        if only_paths or arg == "-" or not arg.startswith("-"):
            paths.append(arg)
            continue
        if arg == "--":
            only_paths = True
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = _FLAGS.get(name)
        if flag is None or flag[0] in kwargs:
            return None
        key, const = flag
        if const is None:
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            if value not in ("text", "json", "sarif"):
                return None
            kwargs[key] = value
        elif eq:
            return None
        else:
            kwargs[key] = const
    if not paths:
        return None
    return paths, kwargs


def fast_main(argv: list) -> int | None:
    """Run `policy validate` from the command line's arguments (after the program name) without Typer; None
    when argv is not a `policy validate` that parse_fast takes."""
    if argv[:2] != ["policy", "validate"]:
        return None
    parsed = parse_fast(argv[2:])
    if parsed is None:
        return None
    paths, kwargs = parsed
    return validate_paths(paths, kwargs.pop("output", "text"), **kwargs)


def render_reports(reports, quiet: bool = True, stderr: bool = True) -> None:
    """Text rendering for other commands (policy apply shows why a set was refused), on stderr by default."""
    _print_text(reports, quiet, stderr)


def _print_text(reports, quiet: bool, stderr: bool = False) -> None:
    import os
    import sys

    from ciliumctl.base.errors import shorten

    stream = sys.stderr if stderr else sys.stdout
    # same rule as common.console(); off a terminal the text is plain, so rich is not even imported
    colour = stream.isatty() and "NO_COLOR" not in os.environ
    if colour:
        from rich.markup import escape

        from ciliumctl.cli.common import console

        out = console(stderr=stderr)

        def paint(text: str, style: str = "") -> str:
            return f"[{style}]{escape(text)}[/]" if style else escape(text)
    else:  # plain text needs no rich rendering: write it directly (hundreds of lines stay fast)
        def paint(text: str, style: str = "") -> str:
            return text

    lines = []
    checked = [r for r in reports if r.checked]
    skipped = [r for r in reports if not r.checked]
    for r in checked:
        doc = r.document
        if quiet and not r.findings:
            continue
        who = shorten(f"{r.namespace}/{doc.name}" if r.namespace else (doc.name or "<no name>"))
        mark = paint("✓ valid", "green") if r.valid else paint("✗ invalid", "bold red")
        kind = doc.kind or "(no kind)"
        item = f" {doc.path_prefix}" if doc.path_prefix else ""
        lines.append(f"{mark}  {paint(f'{doc.file}#{doc.index}{item}  {kind} {who}')}")
        for f in r.findings:
            sev = paint("error", "red") if f.severity == "error" else paint("warning", "yellow")
            where = f"{f.path}: " if f.path else ""
            lines.append(f"    {paint(f'{doc.file}:{f.line}:{f.column}:')} {sev}: {paint(where + f.message)}")
    invalid = sum(1 for r in checked if not r.valid)
    warnings = sum(len(r.warnings) for r in checked)
    summary = (f"{len(checked)} polic{'y' if len(checked) == 1 else 'ies'} checked: "
               f"{len(checked) - invalid} valid, {invalid} invalid, {warnings} warning{'s' * (warnings != 1)}")
    if skipped:
        kinds = sorted({str(r.document.kind) for r in skipped})
        summary += f"; {len(skipped)} other object{'s' * (len(skipped) != 1)} skipped ({', '.join(kinds)})"
    lines.append(paint(summary, "bold red" if invalid else "bold green"))
    if colour:
        out.print("\n".join(lines))
    else:
        stream.write("\n".join(lines) + "\n")
