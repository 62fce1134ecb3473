"""The e2e tests use the shared sandbox node: the `node` fixture of tests/conftest.py (tests/support/node.py).
This file only keeps `node` and `write` importable from here for tests/flows/test_e2e.py, until it imports them
from tests/support."""

from conftest import node  # noqa: F401  (tests/conftest.py)
from support.shell import write  # noqa: F401
