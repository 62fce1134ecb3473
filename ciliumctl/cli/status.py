"""`ciliumctl status`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("status")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl status")
