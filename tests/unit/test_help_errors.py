"""One error style: every usage error of every command is one `Error: ...` line on stderr, with where help is,
exit 2, nothing on stdout and never a traceback. The invocations are built from the command tree (an unknown
option, an option without its value, a word where a number goes, a value outside a fixed set, a missing or an
extra argument), so commands and options added later are walked too; all fail in parsing, nothing runs."""

import sys

import pytest
import typer.main

from ciliumctl.cli import main


def _leaves(command, path=()):
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def _bad_invocations(path, command):
    yield [*path, "--no-such-flag"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.is_flag and not p.count
               and not p.hidden]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    for param in options[:3]:
        yield [*path, param.opts[0]]                   # no value
    numbers = [p for p in options if getattr(p.type_descriptor, "annotation", None) is int]
    for param in numbers[:1]:
        yield [*path, param.opts[0], "many"]
    enums = [p for p in options if p.type_descriptor.choices]
    for param in enums[:1]:
        yield [*path, param.opts[0], "no-such-choice"]
    if any(p.required for p in arguments):
        yield list(path)
    elif not arguments:
        yield [*path, "extra"]


CASES = [args for path, command in _leaves(typer.main.get_command(main.app))
         for args in _bad_invocations(path, command)] + [["no-such-command"], ["policy", "no-such-command"]]


def run(argv, monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["ciliumctl", *argv])
    with pytest.raises(SystemExit) as done:
        main.run()
    out, err = capsys.readouterr()
    return done.value.code, out, err


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a) for a in CASES])
def test_a_usage_error_is_one_line_and_exit_2(argv, monkeypatch, capsys):
    code, out, err = run(argv, monkeypatch, capsys)
    assert code == 2, (code, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err and "Usage:" not in err


def test_the_line_names_the_value_what_is_wrong_and_where_help_is(monkeypatch, capsys):
    expect = {
        ("status", "-o", "xml"): "Error: --output 'xml': one of table, json, yaml; see 'ciliumctl status --help'",
        ("observe", "--last", "many"): "Error: --last 'many': not a whole number; see 'ciliumctl observe --help'",
        ("policy", "delete"): "Error: missing argument NAME; see 'ciliumctl policy delete --help'",
        ("observe", "--last"): "Error: option --last needs a value; see 'ciliumctl observe --help'",
        ("version", "extra"): "Error: unexpected argument 'extra'; see 'ciliumctl version --help'",
        ("polcy",): "Error: no such command 'polcy' (did you mean 'policy'?); see 'ciliumctl --help'",
    }
    for argv, line in expect.items():
        assert run(list(argv), monkeypatch, capsys) == (2, "", line + "\n")


def test_version_flag_prints_what_version_prints(monkeypatch, capsys):
    from ciliumctl import __version__

    assert run(["--version"], monkeypatch, capsys) == (0, f"ciliumctl {__version__}\n", "")
    assert run(["version"], monkeypatch, capsys) == (0, f"ciliumctl {__version__}\n", "")
