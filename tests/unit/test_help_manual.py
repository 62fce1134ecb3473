"""The man pages' EXIT STATUS and ENVIRONMENT: each claim of an exit 1 that needs no root is run here, every
environment variable the code reads is documented (and nothing it no longer reads), and the sections render."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ciliumctl.cli import docgen, manual, write_docs

ROOT = Path(__file__).resolve().parents[2]
STARWARS = str(ROOT / "examples/policies/starwars-l3-l4.yaml")
# variables of the CNI specification, read by ciliumctl-cni (a plugin the runtime starts, not a command)
NOT_OURS = re.compile(r"^CNI_")


def _read_by_the_code() -> set[str]:
    found = set()
    reads = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\(|envvar=|_env_path\()\s*["']([A-Z][A-Z0-9_]+)["']"""
                       r"""|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+os\.environ""")
    for path in (ROOT / "ciliumctl").rglob("*.py"):
        if "/pb/" in str(path):
            continue
        for match in reads.finditer(path.read_text()):
            found.add(match.group(1) or match.group(2))
    return {name for name in found if not NOT_OURS.match(name)}


def test_every_variable_the_code_reads_is_documented_and_only_those():
    documented = {name for name, _, _ in manual.ENVIRONMENT}
    read = _read_by_the_code()
    assert {"CILIUMCTL_STATE_DIR", "KUBECONFIG", "NO_COLOR", "HUBBLE_SERVER"} <= read   # the scan works
    assert read <= documented, f"document in cli/manual.py ENVIRONMENT: {sorted(read - documented)}"
    assert documented <= read, f"no longer read by the code: {sorted(documented - read)}"


def _run(args, tmp_path, stdin=""):
    env = dict(os.environ, CILIUMCTL_STATE_DIR=str(tmp_path / "state"), CILIUMCTL_RUN_DIR=str(tmp_path / "run"),
               CILIUMCTL_BPFFS_DIR=str(tmp_path / "bpffs"), NO_COLOR="1")
    env.pop("KUBECONFIG", None)
    return subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120).returncode


INVALID = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {}\n"
# command -> an invocation that must end in its documented exit 1 (no root, no cluster needed)
EXIT_1 = {
    "policy validate": ["policy", "validate", "-"],
    "policy trace": ["policy", "trace", "-f", STARWARS, "-s", "org=alliance", "-d", "org=empire,class=deathstar",
                     "--dport", "80/tcp"],
    "policy apply": ["policy", "apply", "-f", "-", "--dry-run"],
    "policy get": ["policy", "get", "no-such-policy"],
    "policy delete": ["policy", "delete", "no-such-policy"],
    "status": ["status"],
    "agent status": ["agent", "status"],
}


@pytest.mark.parametrize("path", sorted(EXIT_1))
def test_each_documented_exit_1_is_what_the_command_returns(path, tmp_path):
    assert 1 in manual.exit_status_of(path.split())
    assert _run(EXIT_1[path], tmp_path, stdin=INVALID) == 1


def test_every_exit_1_claim_has_a_probe_or_needs_root():
    needs_root_or_cluster = {"demo"}
    claimed = {path for path, codes in manual.EXIT_STATUS.items() if 1 in codes}
    assert claimed <= set(EXIT_1) | needs_root_or_cluster


def test_allowed_trace_and_valid_policies_are_exit_0(tmp_path):
    assert _run(["policy", "validate", STARWARS], tmp_path) == 0
    assert _run(["policy", "trace", "-f", STARWARS, "-s", "org=empire", "-d", "org=empire,class=deathstar",
                 "--dport", "80/tcp"], tmp_path) == 0


def test_man_pages_have_examples_exit_status_and_environment():
    files = write_docs.generated_files()
    for rel, text in files.items():
        if rel.startswith("man/"):
            assert ".SH EXAMPLES" in text and ".SH EXIT STATUS" in text, rel
    root = files["man/ciliumctl.1"]
    assert all(f"\\fB{docgen._roff(name)}\\fR" in root for name, _, _ in manual.ENVIRONMENT)
    assert "\\fBHUBBLE_SERVER\\fR" in files["man/ciliumctl-observe.1"]


def test_man_page_sections_render_within_80_columns(tmp_path):
    if not shutil.which("man"):
        pytest.skip("man not installed")
    page = tmp_path / "ciliumctl-policy-trace.1"
    page.write_text(write_docs.generated_files()["man/ciliumctl-policy-trace.1"])
    out = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, check=True,
                         env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"}).stdout
    assert "EXAMPLES" in out and "EXIT STATUS" in out and "ENVIRONMENT" in out
    assert max(len(line) for line in out.splitlines()) <= 80
