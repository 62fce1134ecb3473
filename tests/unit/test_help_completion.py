"""Shell completion through click's protocol (`_CILIUMCTL_COMPLETE=bash_complete`, COMP_WORDS, COMP_CWORD), as
the scripts call it: fixed values by option name, endpoint and policy names read from this node's state (here a
state directory of the test's own), nothing and no error on a broken state. Also the scripts that
`ciliumctl completion SHELL` prints: bash and fish complete with them, zsh parses them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.node_state import write_node_state

ROOT = Path(__file__).resolve().parents[2]


def complete(*words: str, env: dict | None = None, instruction: str = "bash_complete") -> list[str]:
    """What one <TAB> offers after `ciliumctl WORDS...` (the last word is the one being completed)."""
    run_env = dict(os.environ, _CILIUMCTL_COMPLETE=instruction, COMP_WORDS=" ".join(("ciliumctl", *words)),
                   COMP_CWORD=str(len(words)), **(env or {}))
    if words and words[-1] == "":
        run_env["COMP_WORDS"] += " "
    proc = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main"], env=run_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def node_state(tmp_path_factory):
    """A node with endpoints deathstar (default), xwing (rebels) and policies rule1 (default), other (prod)."""
    return write_node_state(tmp_path_factory.mktemp("state"))


def test_fixed_values_by_option_name():
    assert complete("observe", "--verdict", "") == ["FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED",
                                                    "TRACED", "TRANSLATED"]
    assert complete("observe", "--verdict", "dr") == ["DROPPED"]
    types = complete("observe", "-t", "")
    assert {"drop", "trace", "policy-verdict", "trace:to-endpoint", "trace:from-network"} <= set(types)
    assert complete("observe", "--traffic-direction", "") == ["ingress", "egress"]
    assert complete("install", "--enforcement-mode", "") == ["default", "always", "never"]
    assert set(complete("observe", "-o", "")) >= {"compact", "dict", "json", "jsonpb", "table"}
    assert set(complete("status", "--output", "")) == {"table", "json", "yaml"}
    assert complete("completion", "") == ["bash", "zsh", "fish"]


def test_commands_and_options_and_both_spellings_of_the_protocol():
    assert complete("pol") == ["policy"]
    assert "validate" in complete("policy", "")
    assert complete("--ver") == ["--version"]
    assert complete("observe", "--verdict", "", instruction="complete_bash") == complete("observe", "--verdict", "")


def test_endpoint_names_from_the_node(node_state):
    for command in ("get", "exec", "delete"):
        assert complete("endpoint", command, "", env=node_state) == ["deathstar", "xwing"]
    assert complete("endpoint", "get", "-n", "rebels", "", env=node_state) == ["xwing"]
    assert complete("endpoint", "get", "x", env=node_state) == ["xwing"]
    assert complete("endpoint", "get", "rebels/", env=node_state) == ["rebels/xwing"]
    assert complete("endpoint", "exec", "xwing", "", env=node_state) == []   # the command is not ours to guess
    assert complete("endpoint", "list", "-n", "", env=node_state) == ["default", "prod", "rebels"]


def test_policy_names_as_get_and_delete_look_them_up(node_state):
    assert complete("policy", "get", "", env=node_state) == ["rule1"]
    assert complete("policy", "delete", "-n", "prod", "", env=node_state) == ["other"]
    assert complete("policy", "get", "-A", "", env=node_state) == ["other", "rule1"]


def test_no_state_or_a_broken_one_offers_nothing_and_says_nothing(tmp_path):
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "1.json").write_text("{not json")
    (tmp_path / "policies").write_text("not a directory")
    assert complete("endpoint", "get", "", env={"CILIUMCTL_STATE_DIR": str(tmp_path)}) == []
    assert complete("policy", "get", "", env={"CILIUMCTL_STATE_DIR": str(tmp_path)}) == []
    assert complete("endpoint", "get", "", env={"CILIUMCTL_STATE_DIR": "/nonexistent/state"}) == []


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """`ciliumctl completion SHELL` for each shell, and a bin/ciliumctl that the scripts call for node values."""
    folder = tmp_path_factory.mktemp("completion")
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "completion", shell], capture_output=True,
                             text=True, check=True).stdout
        (folder / shell).write_text(out)
    launcher = folder / "bin" / "ciliumctl"
    launcher.parent.mkdir()
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m ciliumctl.cli.main \"$@\"\n")
    launcher.chmod(0o755)
    return folder


def test_completion_prints_what_docgen_generates(scripts):
    from ciliumctl.cli import write_docs

    files = write_docs.generated_files()
    assert (scripts / "bash").read_text() == files["completions/ciliumctl.bash"]
    assert (scripts / "zsh").read_text() == files["completions/_ciliumctl"]
    assert (scripts / "fish").read_text() == files["completions/ciliumctl.fish"]


def _bash(scripts, env, *words: str) -> list[str]:
    code = (f"source {scripts}/bash; COMP_WORDS=({' '.join(repr(w) for w in ('ciliumctl', *words))}); "
            f"COMP_CWORD={len(words)}; _ciliumctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    run_env = dict(os.environ, PATH=f"{scripts}/bin:{os.environ['PATH']}", **env)
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True, env=run_env).stdout
    return [w for w in out.splitlines() if w]


def test_bash_script_completes_values_and_node_names(scripts, node_state):
    assert "DROPPED" in _bash(scripts, {}, "observe", "--verdict", "")
    assert _bash(scripts, {}, "observe", "-t", "pol") == ["policy-verdict"]
    assert _bash(scripts, node_state, "endpoint", "delete", "") == ["deathstar", "xwing"]
    assert _bash(scripts, node_state, "policy", "get", "-n", "prod", "") == ["other"]
    assert "--namespace" in _bash(scripts, node_state, "endpoint", "get", "--")


def test_fish_script_completes_values(scripts):
    if not shutil.which("fish"):
        pytest.skip("fish not installed (scripts/setup.sh installs it)")
    out = subprocess.run(["fish", "-c", f"source {scripts}/fish; complete -C 'ciliumctl observe --verdict '"],
                         capture_output=True, text=True, check=True).stdout
    assert "DROPPED" in out.split()


def test_zsh_parses_its_script(scripts):
    if not shutil.which("zsh"):
        pytest.skip("zsh not installed (scripts/setup.sh installs it)")
    subprocess.run(["zsh", "-n", str(scripts / "zsh")], check=True)
