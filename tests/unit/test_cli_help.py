"""Every command's --help, as a user reads it at 80 columns: metavars say what to type (never a Python type),
flags take none, usage lines have no typer braces, nothing is cut off; the root lists its commands without
loading them, with the first line of each command's own help."""

import enum
import itertools
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from ciliumctl.cli import main

# What typer or click print when a metavar is left to them: the annotation (<str>, <list[str]>, STR, LIST ...).
PYTHON_TYPE_WORDS = {"STR", "TEXT", "INT", "INTEGER", "FLOAT", "BOOL", "BOOLEAN", "LIST", "DICT", "TUPLE",
                     "OPTIONAL", "NONE", "CHOICE"}
WIDTH = 80
BOX = re.compile("[\u2500-\u257f]")   # box drawing, as typer's rich panels and rich tables draw them


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(main.app)))


def _help(path) -> str:
    result = CliRunner().invoke(main.app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "NO_COLOR": "1"},
                                prog_name="ciliumctl")
    assert result.exit_code == 0, result.output
    return result.output


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    if f"{title}:" not in lines:
        return []
    body = lines[lines.index(f"{title}:") + 1:]
    return body[:body.index("")] if "" in body else body


def _option_rows(text: str) -> dict[str, str]:
    """Each option row of the help: each of its names -> what the row shows between the names and the help."""
    rows = {}
    for line in _section(text, "Options"):
        if not line.startswith("  -"):
            continue  # a continuation line of some help text
        column = re.split(r"\s{2,}", line.strip())[0]
        names, metavar = [], []
        for token in column.split():
            if token.startswith("-") and not metavar:
                names.append(token.rstrip(","))
            elif token != "/":
                metavar.append(token)
        rows.update((n, " ".join(metavar)) for n in names)
    return rows


def _python_type_names(param) -> set[str]:
    annotation = param.type_descriptor.annotation
    names = {getattr(annotation, "__name__", "").upper()}
    for arg in getattr(annotation, "__args__", ()):
        names.add(getattr(arg, "__name__", "").upper())
    return names - {""}


def _names_a_python_type(metavar: str) -> bool:
    if re.search(r"<[^>]*>|\b(list|dict|tuple|optional)\[", metavar, re.IGNORECASE):
        return True
    words = set(re.findall(r"[A-Za-z]+", metavar))
    return bool(words & PYTHON_TYPE_WORDS) or metavar == "VALUE"   # click's word for "anything"; NAME:VALUE says more


def _looks_like_a_python_type(metavar: str, param) -> bool:
    if _names_a_python_type(metavar):
        return True
    annotation = param.type_descriptor.annotation
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum) and (
        annotation.__name__.upper() in metavar.upper())


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) or "ciliumctl" for p, _ in ALL])
def test_options_show_what_to_type_and_flags_show_nothing(path, command):
    text = _help(path)
    rows = _option_rows(text)
    for param in command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        name = param.opts[0]
        assert all(n in rows for n in param.opts), f"{name} missing from the help of {' '.join(path)}:\n{text}"
        shown = rows[name]
        if param.is_flag:
            assert shown == "", f"flag {name} shows a metavar {shown!r}"
        else:
            assert shown, f"{name} takes a value but shows no metavar"
            assert not _looks_like_a_python_type(shown, param), f"{name} shows a Python type: {shown!r}"
    assert rows.get("-h") == "", "-h/--help is a flag"
    assert rows.get("-D") == rows.get("--debug") == "", "-D/--debug, the global flag, is on every command"


def test_man_pages_show_what_to_type_too():
    """The man pages (what `make docs` writes) name options and arguments as --help does."""
    from ciliumctl.cli import write_docs

    pages = {rel: text for rel, text in write_docs.generated_files().items() if rel.startswith("man/")}
    assert len(pages) == len(ALL)
    for rel, text in pages.items():
        synopsis = text.split(".SH SYNOPSIS\n.B ", 1)[1].splitlines()[0]
        assert not re.search(r"[{}<>]", synopsis.split("[OPTIONS]")[-1]), (rel, synopsis)
        for row in re.findall(r"^\.TP\n\\fB(\\-.*)\\fR$", text, re.MULTILINE):   # an option's row
            words = [w for w in row.replace("\\-", "-").replace(", ", " ").split() if not w.startswith("-")]
            assert not _names_a_python_type(" ".join(words)), f"{rel}: {row!r} shows a Python type"
            assert not any(w.islower() and not re.search(r"[{|]", w) for w in words), \
                f"{rel}: {row!r}: a metavar in lower case (only fixed values are)"


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) or "ciliumctl" for p, _ in ALL])
def test_usage_and_arguments_name_what_to_type(path, command):
    text = _help(path)
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: ciliumctl {' '.join(path)}".rstrip()), usage
    after = usage.split("[OPTIONS]", 1)[1]
    assert not re.search(r"[{}<>]|[a-z]", after), f"usage line: {usage!r}"
    for line in _section(text, "Arguments"):
        if line.startswith("  ") and not line.startswith("   "):
            name = re.split(r"\s{2,}", line.strip())[0]
            assert not re.search(r"[{}<>]|[a-z]", name), f"argument shown as {name!r}"


@pytest.mark.parametrize("path,command", ALL, ids=[" ".join(p) or "ciliumctl" for p, _ in ALL])
def test_help_fits_80_columns_and_nothing_is_cut_off(path, command):
    text = _help(path)
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, f"lines wider than {WIDTH} columns: {long}"
    cut = [line for line in _section(text, "Commands") if line.rstrip().endswith("...")]
    assert not cut, f"command summaries cut off (make the first line of their help shorter): {cut}"
    # every line of option help keeps 44 columns or more to be read (typer's boxes left ~19): on the row of its
    # option or, after a long option, on lines of its own; a list inside some help text may indent by two
    for line in filter(str.strip, _section(text, "Options")):
        found = re.match(r"(  -\S.*?\s{2,}|\s+)\S", line)
        assert found and len(found.group(1)) <= WIDTH - 44, f"help text squeezed to the right: {line!r}"
    assert not BOX.search(text), f"a box in the help:\n{text}"


def test_root_lists_each_command_with_the_first_line_of_its_own_help():
    for name, (_, line) in main.COMMANDS.items():
        own = (main.load_command(name).help or "").strip().splitlines()[0]
        assert line == own, f"main.COMMANDS[{name!r}] says {line!r}, the command's help says {own!r}"


def test_root_help_loads_no_command_module():
    code = ("import sys; sys.argv = ['ciliumctl', '--help']\n"
            "from ciliumctl.cli import main\n"
            "try:\n    main.run()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('ciliumctl.') and m not in "
            "('ciliumctl.cli', 'ciliumctl.cli.main', 'ciliumctl.cli.typer_app', 'ciliumctl.base', "
            "'ciliumctl.base.errors', 'ciliumctl.cli.examples', 'ciliumctl.cli.params')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "LOADED []", out
    assert "Commands:" in out and all(name in out for name in main.COMMANDS)


def test_unknown_command_is_one_error_line_with_a_suggestion():
    result = CliRunner().invoke(main.app, ["polcy"], prog_name="ciliumctl")
    assert result.exit_code == 2
    assert result.output == "Error: no such command 'polcy' (did you mean 'policy'?); see 'ciliumctl --help'\n"


def test_observe_type_help_lists_hubbles_types_and_subtypes(hubble):
    """`-t` says what it takes, as `hubble observe --help` lists it: every event type and trace subtype."""
    theirs = subprocess.run([str(hubble), "observe", "--help"], capture_output=True, text=True, check=True,
                            env={"COLUMNS": "200", "HOME": "/nonexistent"}).stdout
    block = theirs.split("Available types and subtypes:", 1)[1].split("\n      -", 1)[0]
    names = {word for word in block.split() if word not in ("TYPE", "SUBTYPE", "n/a")}
    assert {"drop", "trace", "trace-sock", "from-endpoint", "to-crypto"} <= names   # the parse works
    rows = _section(_help(["observe"]), "Options")
    start = next(i for i, line in enumerate(rows) if line.startswith("  -t, --type"))
    own = rows[start:start + 1] + list(itertools.takewhile(lambda line: not line.startswith("  -"), rows[start + 1:]))
    ours = set(" ".join(own).replace(",", " ").split())
    assert names <= ours, f"missing from -t's help: {sorted(names - ours)}"
