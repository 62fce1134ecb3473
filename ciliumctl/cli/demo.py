"""`ciliumctl demo`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl demo")
