"""`ciliumctl endpoint ...`."""

import typer

from ciliumctl.errors import NotImplementedYet

app = typer.Typer(help="Manage and inspect endpoints on this node.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List endpoints."""
    raise NotImplementedYet("ciliumctl endpoint list")
