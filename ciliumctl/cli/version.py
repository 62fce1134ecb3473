"""`ciliumctl version` and `ciliumctl --version`: one line, the same for both (as `hubble --version` prints
`hubble 1.19.4`)."""

import typer


def version_line() -> str:
    from ciliumctl import __version__

    return f"ciliumctl {__version__}"


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version() -> None:
        """Print the ciliumctl version."""
        typer.echo(version_line())
