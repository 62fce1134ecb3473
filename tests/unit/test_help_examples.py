"""Every command has examples in its --help, and every `ciliumctl ...` in them is a real command line: it resolves
to a command whose options and arguments click's parser accepts (nothing is run)."""

import shlex

import pytest
import typer
import typer.main
from typer._click.exceptions import UsageError
from typer.core import TyperGroup as ClickGroup
from typer.testing import CliRunner

from ciliumctl.cli import examples, main

ROOT = typer.main.get_command(main.app)


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ALL = list(_commands(ROOT))
IDS = [" ".join(p) or "ciliumctl" for p, _ in ALL]
LINES = [(path, line) for path, found in examples.EXAMPLES.items() for _, line in found]


def ciliumctl_commands(line: str) -> list[list[str]]:
    """The argument lists of each `ciliumctl ...` in a shell line (pipes, `;`, `&`, `<(...)` and redirections
    end one)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    found, current, at_start = [], None, True
    for token in lex:
        if token and set(token) <= set("();<>|&"):
            if current is not None:
                found.append(current)
            current, at_start = None, not token.startswith(">")
            continue
        if current is not None:
            current.append(token)
        elif at_start and token == "ciliumctl":
            current = []
        at_start = False
    if current is not None:
        found.append(current)
    return found


def parse(args: list[str]) -> list[str]:
    """The command path `ciliumctl ARGS` resolves to, after click parsed every option and argument."""
    try:
        ctx = ROOT.make_context("ciliumctl", list(args))
    except typer.Exit as done:   # --version prints and stops, as it should
        assert done.exit_code == 0
        return []
    command, path = ROOT, []
    while isinstance(command, ClickGroup):
        rest = ctx._protected_args + ctx.args
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return path


def test_the_shell_line_reader_finds_each_ciliumctl_command():
    assert ciliumctl_commands("kubectl get cnp -o yaml | ciliumctl policy validate - > out.sarif") == [
        ["policy", "validate", "-"]]
    assert ciliumctl_commands("source <(ciliumctl completion bash)") == [["completion", "bash"]]
    assert ciliumctl_commands("ciliumctl status --verify || ciliumctl status --repair") == [
        ["status", "--verify"], ["status", "--repair"]]


def test_parse_refuses_what_click_refuses():
    for bad in (["policy", "trace", "--dport"], ["status", "-o", "xml"], ["policy", "delete"], ["nope"]):
        with pytest.raises(UsageError):
            parse(bad)


@pytest.mark.parametrize("path,command", ALL, ids=IDS)
def test_every_command_has_examples_in_its_help(path, command):
    assert examples.examples_of(path), f"add examples for `{' '.join(('ciliumctl', *path))}` to cli/examples.py"
    text = CliRunner().invoke(main.app, [*path, "--help"], env={"COLUMNS": "80"}, prog_name="ciliumctl").output
    section = text.split("\nExamples:\n", 1)[1]
    for what, line in examples.examples_of(path):
        assert f"# {what}" in section
        assert line.split()[-1] in section


def test_no_examples_for_commands_that_do_not_exist():
    known = {" ".join(p) for p, _ in ALL}
    assert set(examples.EXAMPLES) <= known, set(examples.EXAMPLES) - known


@pytest.mark.parametrize("path,line", LINES, ids=[line for _, line in LINES])
def test_each_example_is_a_command_line_that_parses(path, line):
    commands = ciliumctl_commands(line)
    assert commands or not line.startswith("ciliumctl"), line
    for args in commands:
        resolved = parse(args)
        assert resolved or args == ["--version"], line


def test_long_examples_wrap_with_continuations():
    lines = examples.wrap_command("ciliumctl policy trace -f a.yaml --src-labels org=alliance --dst-labels "
                                  "org=empire,class=deathstar --dport 80/tcp", 50)
    assert all(len(x) <= 50 for x in lines) and all(x.endswith(" \\") for x in lines[:-1])
    assert "    --src-labels org=alliance \\" in lines   # an option keeps its value
