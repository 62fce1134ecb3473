"""`ciliumctl policy validate`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl policy validate")
