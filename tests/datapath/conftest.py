"""Fixtures of the datapath suite, over the shared in-process sandbox (`sandbox`, `sandbox4` in tests/conftest.py;
tests/support/pods.py): the datapath loaded into the sandbox's pin directory, and its event ring."""

from __future__ import annotations

import os

import pytest

# test_enforcement.py and test_monitor_aggregation.py import these two from here
from support.netns import in_netns  # noqa: F401
from support.pods import entry  # noqa: F401


@pytest.fixture
def datapath(sandbox):
    """The datapath loaded into the sandbox's pin dir, all pods attached (nothing enforced yet)."""
    from ciliumctl.datapath.loader import Datapath

    dp = Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    yield dp
    dp.close()


@pytest.fixture
def events(datapath, sandbox):
    from ciliumctl.datapath.ringbuf import RingReader

    reader = RingReader(os.path.join(sandbox.pin_dir, "events"))
    yield reader
    reader.close()
