"""The node's CiliumLocalRedirectPolicy store (node mode): `<state>/local-redirects.json`, the objects as applied
(checked then), written atomically and root-only (base.statefile). Callers hold the node lock around
read-modify-program."""

from __future__ import annotations

from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.services.local_redirect import LocalRedirect, parse


def store_path() -> Path:
    return paths.state_dir() / "local-redirects.json"


def load() -> list[LocalRedirect]:
    data = statefile.read_json(store_path(), default=None)
    if not data:
        return []
    try:
        return [parse(obj) for obj in data["items"]]
    except Exception as err:   # a file ciliumctl did not write this way: name it, never a traceback
        raise EnvironmentProblem(f"{store_path()}: not a local redirect store ({err}); fix or remove the file "
                                 "(its redirects are then gone)") from None


def save(lrps: list[LocalRedirect]) -> None:
    items = [lrp.obj for lrp in sorted(lrps, key=lambda x: (x.namespace, x.name))]
    statefile.write_json(store_path(), {"version": 1, "items": items}, compact=True)
