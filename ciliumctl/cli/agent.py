"""`ciliumctl agent`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl agent")
