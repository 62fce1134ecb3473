"""A node's stored state without a node: endpoint records and stored policies in a state directory of the test's
own, written through ciliumctl's own registry and store (in a child process, so that CILIUMCTL_STATE_DIR is read
as the CLI reads it). What completion and the listing commands read; nothing here needs root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_WRITE = """
from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy import store
registry.save(Endpoint(1, 'deathstar', 'default', {'org': 'empire', 'class': 'deathstar'}, '10.200.0.2'))
registry.save(Endpoint(2, 'xwing', 'rebels', {'org': 'alliance'}, '10.200.0.3'))
for ns, name in (('default', 'rule1'), ('prod', 'other')):
    store.put(store.from_object({'apiVersion': 'cilium.io/v2', 'kind': 'CiliumNetworkPolicy',
        'metadata': {'name': name, 'namespace': ns},
        'spec': {'endpointSelector': {'matchLabels': {'app': name}}, 'ingress': [{}]}}))
"""


def write_node_state(state: Path) -> dict[str, str]:
    """Endpoints deathstar (default) and xwing (rebels), policies rule1 (default) and other (prod), under `state`;
    the environment that points the CLI there."""
    env = {"CILIUMCTL_STATE_DIR": str(state)}
    subprocess.run([sys.executable, "-c", _WRITE], env={**os.environ, **env}, check=True, timeout=60)
    return env
