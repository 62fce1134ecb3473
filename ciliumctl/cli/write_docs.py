"""`python -m ciliumctl.cli.write_docs completions man` (`make docs`) rewrites completions/ and man/ from the
app's command tree (ciliumctl.cli.docgen renders them)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def generated_files() -> dict[str, str]:
    """Relative path -> content of every generated file, as `make docs` writes them."""
    import typer.main

    from ciliumctl.cli import docgen
    from ciliumctl.cli.main import app

    return docgen.render_all(typer.main.get_command(app))


def main(argv: list[str]) -> int:
    wanted = set(argv) or {"completions", "man"}
    files = generated_files()
    for rel, content in files.items():
        if rel.split("/")[0] not in wanted:
            continue
        path = ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for folder in wanted:
        for stale in (ROOT / folder).glob("*"):
            if f"{folder}/{stale.name}" not in files and stale.is_file():
                stale.unlink()
    print(f"wrote {sum(1 for r in files if r.split('/')[0] in wanted)} files "
          f"({datetime.date.today().isoformat()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
