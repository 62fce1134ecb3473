"""`ciliumctl policy trace`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("trace")
    def _cmd() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl policy trace")
