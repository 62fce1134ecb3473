"""Completions and man pages are generated from the Typer app: stale files, broken scripts or a command tree
that pulls heavy modules into start-up fail here, and so does a CNI plugin that needs more than the standard
library."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ciliumctl.cli import write_docs

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_current():
    stale = [rel for rel, content in write_docs.generated_files().items()
             if not (ROOT / rel).is_file() or (ROOT / rel).read_text() != content]
    assert not stale, f"run `make docs`: stale or missing {stale}"


def test_no_orphan_generated_files():
    expected = set(write_docs.generated_files())
    present = {f"{d}/{p.name}" for d in ("completions", "man") for p in (ROOT / d).iterdir()}
    assert present <= expected, f"run `make docs`: orphans {present - expected}"


def _bash_complete(*words: str) -> list[str]:
    script = (f"source {ROOT}/completions/ciliumctl.bash; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _ciliumctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return [w for w in out.splitlines() if w]


def test_bash_completes_commands_and_subcommands():
    assert "policy" in _bash_complete("ciliumctl", "pol")
    sub = _bash_complete("ciliumctl", "policy", "")
    assert {"validate", "trace"} <= set(sub)
    assert "endpoint" not in sub


@pytest.mark.parametrize("shell,flag,path", [("zsh", "-n", "completions/_ciliumctl"),
                                             ("fish", "--no-execute", "completions/ciliumctl.fish")])
def test_other_shells_parse_their_scripts(shell, flag, path):
    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed (scripts/setup.sh installs it)")
    subprocess.run([shell, flag, str(ROOT / path)], check=True)


def test_man_pages_render():
    if not shutil.which("man"):
        pytest.skip("man not installed")
    out = subprocess.run(["man", "-l", str(ROOT / "man/ciliumctl.1")], capture_output=True, text=True,
                         env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert "SYNOPSIS" in out and "policy" in out


def test_help_does_not_import_heavy_modules():
    code = ("import sys; sys.argv=['ciliumctl','--help']\n"
            "from ciliumctl.cli import main\n"
            "try:\n    main.app()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('bcc','grpc','kubernetes','pyroute2','yaml','google.protobuf') if m in sys.modules]\n"
            "print('HEAVY', ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY", out


def test_bash_offers_enum_choices_after_an_option():
    assert set(_bash_complete("ciliumctl", "policy", "validate", "-o", "")) == {"text", "json", "sarif"}


def test_cni_plugin_imports_only_the_standard_library():
    # the installed launcher runs `python -S` (no site-packages) once per pod ADD/DEL: ciliumctl/node/cni/install.py
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "import ciliumctl.endpoints.cni_plugin\n"
            "ours = {'__main__', 'ciliumctl', 'ciliumctl.endpoints', 'ciliumctl.endpoints.cni_plugin'}\n"
            "print('OTHER', sorted(m for m in sys.modules if m not in ours and m.split('.')[0] not in "
            "sys.stdlib_module_names))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "OTHER []", out


def test_bash_offers_the_choices_a_metavar_lists():
    assert set(_bash_complete("ciliumctl", "install", "--enforcement-mode", "")) == {"default", "always", "never"}
