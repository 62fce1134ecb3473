"""`ciliumctl version`."""

import typer


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version() -> None:
        """Print the ciliumctl version."""
        from ciliumctl import __version__

        typer.echo(f"ciliumctl {__version__}")
