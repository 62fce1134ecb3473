"""Shell completion: `ciliumctl completion bash|zsh|fish` prints the script, and what <TAB> offers for values.

The scripts are generated from the command tree (ciliumctl.cli.docgen; completions/ holds the same files) and
complete commands, options and fixed values without starting Python. Only values that live on this node
(endpoint and policy names, namespaces) ask ciliumctl itself, through click's completion protocol:
`_CILIUMCTL_COMPLETE=bash_complete COMP_WORDS=... COMP_CWORD=N ciliumctl` prints one candidate a line.

What <TAB> offers for values is ciliumctl.cli.completion_values."""

import enum

SHELLS = ("bash", "zsh", "fish")


class Shell(enum.StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def register(app) -> None:
    import typer

    @app.command("completion")
    def completion(ctx: typer.Context,
                   shell: Shell = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish.")) -> None:
        """Print the shell completion script for bash, zsh or fish.

        Commands, options and their fixed values complete without starting ciliumctl; endpoint and policy names
        and namespaces are read from this node's state when <TAB> asks for them."""
        root = ctx.find_root().command
        typer.echo(script(shell.value, root), nl=False)


def script(shell: str, root) -> str:
    """The completion script of `root` (the click command of the whole app) for one shell."""
    from ciliumctl.cli import docgen

    return docgen.RENDERERS[shell](docgen.command_tree(root))



def respond(cli, ctx_args, prog_name: str, complete_var: str, instruction: str) -> int:
    """Answer `_CILIUMCTL_COMPLETE=<instruction>`: click's `bash_complete` / `bash_source` spelling and typer's
    `complete_bash` / `source_bash` alike; `source` prints the same script as `ciliumctl completion SHELL`."""
    import sys

    first, _, second = instruction.partition("_")
    shell, action = (first, second) if first in SHELLS else (second, first)
    if shell not in SHELLS or action not in ("complete", "source"):
        sys.stderr.write(f"Error: {complete_var}={instruction!r}: use bash_complete, zsh_complete, fish_complete "
                         "or *_source\n")
        return 2
    if action == "source":
        sys.stdout.write(script(shell, cli))
        return 0
    import os

    from typer._click.shell_completion import split_arg_string
    from typer._completion_classes import BashComplete

    # one protocol for the three scripts, click's: the words up to the cursor and the cursor's index
    words = split_arg_string(os.environ.get("COMP_WORDS", ""))
    try:
        cword = int(os.environ.get("COMP_CWORD", ""))
    except ValueError:
        cword = len(words)
    incomplete = words[cword] if cword < len(words) else ""
    try:
        items = BashComplete(cli, ctx_args, prog_name, complete_var).get_completions(words[1:cword], incomplete)
    except Exception:   # a half-typed command line that does not parse: offer nothing
        items = []
    for item in items:
        if item.type == "plain":   # "file" and "dir" items mean: let the shell complete paths
            sys.stdout.write(f"{item.value}\n")
    return 0
