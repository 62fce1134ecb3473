"""`ciliumctl policy ...`."""

import typer

from ciliumctl.errors import NotImplementedYet

app = typer.Typer(help="Validate, apply and trace network policies.", no_args_is_help=True)


@app.command("validate")
def validate() -> None:
    """Validate policy files."""
    raise NotImplementedYet("ciliumctl policy validate")
