"""`ciliumctl policy apply|get|delete`."""

import typer

from ciliumctl.errors import NotImplementedYet


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply() -> None:
        """Not implemented yet."""
        raise NotImplementedYet("ciliumctl policy apply")
