"""`ciliumctl policy validate` end to end: exit codes, -o json/sarif shapes, text output, stdin, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "policies"

GOOD = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: good
spec:
  endpointSelector:
    matchLabels: {app: web}
  ingress:
  - fromEndpoints: [{matchLabels: {app: fe}}]
"""
BAD = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bad
  namespace: prod
spec:
  endpointSelector: {}
  egress:
  - toPorts:
    - ports:
      - port: "80"
      - port: "99999"
"""


def run(*args, stdin: str | None = None, cwd=REPO):
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "policy", "validate", *args],
                          input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "good.yaml").write_text(GOOD)
    (tmp_path / "pol" / "sub").mkdir()
    (tmp_path / "pol" / "sub" / "bad.yaml").write_text(GOOD + "---\n" + BAD)
    return tmp_path


def test_examples_are_valid_exit_0():
    proc = run(str(EXAMPLES.relative_to(REPO)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 invalid" in proc.stdout.splitlines()[-1]
    assert "examples/policies/starwars-l3-l4.yaml#0" in proc.stdout


def test_json_output_is_one_array_with_exact_keys(files):
    proc = run("-o", "json", "pol", cwd=files)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert [(d["file"], d["index"], d["name"], d["valid"]) for d in out] == [
        ("pol/good.yaml", 0, "good", True), ("pol/sub/bad.yaml", 0, "good", True),
        ("pol/sub/bad.yaml", 1, "bad", False)]
    bad = out[2]
    assert set(bad) == {"file", "index", "kind", "name", "namespace", "valid", "findings"}
    assert bad["kind"] == "CiliumNetworkPolicy" and bad["namespace"] == "prod"
    assert out[0]["namespace"] == "default"
    errors = [f for f in bad["findings"] if f["severity"] == "error"]
    assert errors == [{"severity": "error", "path": "spec.egress[0].toPorts[0].ports[1].port",
                       "line": 22, "column": 15,
                       "message": errors[0]["message"]}]
    assert "99999" in errors[0]["message"] and "out of range" in errors[0]["message"]
    assert all(set(f) == {"severity", "message", "path", "line", "column"} for f in bad["findings"])


def test_text_output_names_file_line_col_and_summary(files):
    proc = run("pol", cwd=files)
    assert proc.returncode == 1
    assert "pol/sub/bad.yaml:22:15: error: spec.egress[0].toPorts[0].ports[1].port:" in proc.stdout
    assert "3 policies checked: 2 valid, 1 invalid" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour when not a terminal


def test_quiet_shows_only_documents_with_findings(files):
    proc = run("-q", "pol/good.yaml", cwd=files)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["1 policy checked: 1 valid, 0 invalid, 0 warnings"]


def test_sarif_output(files):
    proc = run("-o", "sarif", "pol", cwd=files)
    assert proc.returncode == 1
    sarif = json.loads(proc.stdout)
    assert sarif["version"] == "2.1.0"
    run0 = sarif["runs"][0]
    assert run0["tool"]["driver"]["name"] == "ciliumctl"
    result = [r for r in run0["results"] if r["level"] == "error"][0]
    loc = result["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "pol/sub/bad.yaml"
    assert loc["region"] == {"startLine": 22, "startColumn": 15}
    assert {r["id"] for r in run0["tool"]["driver"]["rules"]} >= {result["ruleId"]}


def test_stdin_dash():
    proc = run("-o", "json", "-", stdin=BAD)
    assert proc.returncode == 1
    [doc] = json.loads(proc.stdout)
    assert doc["file"] == "-" and doc["index"] == 0 and not doc["valid"]


def test_missing_file_is_one_line_exit_2(tmp_path):
    proc = run(str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_a_yaml_syntax_error_is_a_finding_in_every_format_and_the_rest_is_checked(tmp_path, fmt):
    (tmp_path / "a-broken.yaml").write_text(GOOD + "---\nspec:\n  ingress: [\n  - a\n")
    (tmp_path / "b-bad.yaml").write_text(BAD)
    proc = run("-o", fmt, str(tmp_path))
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    broken = str(tmp_path / "a-broken.yaml")
    if fmt == "text":
        assert f"{broken}:13:3: error: not valid YAML" in proc.stdout
        assert "b-bad.yaml" in proc.stdout and "3 policies checked: 1 valid, 2 invalid" in proc.stdout
    elif fmt == "json":
        reports = json.loads(proc.stdout)
        assert [(r["file"], r["index"], r["valid"]) for r in reports] == [
            (broken, 0, True), (broken, 1, False), (str(tmp_path / "b-bad.yaml"), 0, False)]
        finding = reports[1]["findings"][0]
        assert (finding["line"], finding["column"]) == (13, 3) and "not valid YAML" in finding["message"]
    else:
        results = json.loads(proc.stdout)["runs"][0]["results"]
        syntax = [r for r in results if r["ruleId"] == "decode/yaml"]
        assert len(syntax) == 1 and syntax[0]["locations"][0]["physicalLocation"] == {
            "artifactLocation": {"uri": broken}, "region": {"startLine": 13, "startColumn": 3}}
        assert any(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("b-bad.yaml")
                   for r in results)


def test_no_policy_files_at_all_is_exit_2_not_zero_checked(tmp_path):
    (tmp_path / "notes.txt").write_text("not a policy")
    proc = run(str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no policy files in" in proc.stderr


def test_strict_and_agent_flags_change_verdicts(tmp_path):
    (tmp_path / "p.yaml").write_text(GOOD.replace("ingress:", "ingres: []\n  egress: [{}]\n  ingress:"))
    assert run(str(tmp_path / "p.yaml")).returncode == 0
    assert run("--strict", str(tmp_path / "p.yaml")).returncode == 1
    (tmp_path / "n.yaml").write_text(GOOD.replace("fromEndpoints: [{matchLabels: {app: fe}}]", "fromNodes: [{}]"))
    assert run(str(tmp_path / "n.yaml")).returncode == 1
    assert run("--enable-node-selector-labels", str(tmp_path / "n.yaml")).returncode == 0


def test_help_lists_the_flags():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--strict", "--enable-node-selector-labels", "--enable-extended-ip-protocols",
                 "--disable-l7-proxy", "--disable-icmp-rules", "--output"):
        assert flag in proc.stdout


def test_render_reports_for_other_commands_writes_findings_to_stderr(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    from ciliumctl.cli import policy_validate
    from ciliumctl.policy import load, validate

    docs = load.load_text(GOOD + "---\n" + BAD, "set.yaml")
    policy_validate.render_reports(validate.validate_documents(docs))
    out, err = capsys.readouterr()
    assert out == ""
    assert "set.yaml:22:15: error: spec.egress[0].toPorts[0].ports[1].port" in err
    assert "✗ invalid  set.yaml#1  CiliumNetworkPolicy prod/bad" in err
    assert "set.yaml#0" not in err  # quiet: the valid document has no findings


def test_a_document_that_is_not_an_object_is_reported(tmp_path):
    (tmp_path / "s.yaml").write_text("just a string\n")
    proc = run(str(tmp_path / "s.yaml"))
    assert proc.returncode == 1 and "(no kind)" in proc.stdout and "not a Kubernetes object" in proc.stdout


# ------------------------------------------------------------------------- the path without Typer

def test_fast_path_parses_the_common_forms_and_leaves_the_rest_to_typer():
    from ciliumctl.cli.policy_validate import parse_fast

    assert parse_fast(["a.yaml", "-o", "json", "--strict", "b/"]) == (["a.yaml", "b/"],
                                                                       {"output": "json", "strict": True})
    assert parse_fast(["--output=sarif", "-q", "--no-schema", "-", "--", "-odd.yaml"]) == (
        ["-", "-odd.yaml"], {"output": "sarif", "quiet": True, "schema": False})
    assert parse_fast(["--enable-node-selector-labels", "--enable-extended-ip-protocols", "--disable-l7-proxy",
                       "--disable-icmp-rules", "x"])[1] == {
        "node_selector_labels": True, "extended_ip_protocols": True, "disable_l7_proxy": True,
        "disable_icmp_rules": True}
    for args in ([], ["--help"], ["-h", "x"], ["-o", "xml", "x"], ["x", "-o"], ["--strict", "--strict", "x"],
                 ["--strict=yes", "x"], ["-ojson", "x"], ["--bogus", "x"], ["-qo", "json", "x"]):
        assert parse_fast(args) is None, args


@pytest.mark.parametrize("args", [["-o", "json"], ["-o", "sarif"], [], ["--strict", "-q"], ["--no-schema"]])
def test_fast_path_prints_what_the_typer_command_prints(files, args, capsys, monkeypatch):
    from typer.testing import CliRunner

    from ciliumctl.cli import main, policy_validate

    monkeypatch.setenv("NO_COLOR", "1")
    argv = ["policy", "validate", str(files / "pol"), *args]
    code = policy_validate.fast_main(argv)
    fast = capsys.readouterr().out
    result = CliRunner().invoke(main.app, argv)
    assert (code, fast) == (result.exit_code, result.stdout)
    assert code == 1


def test_policy_validate_does_not_import_typer():
    code = (f"import sys; sys.argv = ['ciliumctl', 'policy', 'validate', '-o', 'json', {str(EXAMPLES)!r}]\n"
            "from ciliumctl.cli import main\n"
            "try:\n    main.run()\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('LOADED', sorted(m for m in ('typer', 'click', 'rich', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.splitlines()
    assert out[-2:] == ["EXIT 0", "LOADED []"], out[-5:]
