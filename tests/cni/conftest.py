import os

import pytest

from cni_harness import CniNode, require_stack


@pytest.fixture
def cni_node():
    if os.geteuid() != 0:
        pytest.skip("needs root (netns, veth)")
    require_stack()
    with CniNode() as node:
        yield node
