"""`observe --kubeconfig`: the flows of the cluster's agents, read through the API server (cluster.portforward)
from each agent pod's Hubble API and merged (flows.merge), or of one node's agent with --node."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.cluster import portforward
from ciliumctl.cluster.kube import Kube
from ciliumctl.flows import client, merge
from ciliumctl.flows.pb.observer import observer_pb2 as opb


def _check(forwarder: portforward.PodPortForwarder) -> None:
    """One request through the port-forward before streaming: an agent that cannot be reached is one line."""
    try:
        client.server_status(forwarder.address, timeout=10)
    except EnvironmentProblem:
        pod = forwarder.pod
        why = forwarder.last_error or "no answer"
        raise EnvironmentProblem(f"cannot reach the Hubble API of agent pod {pod.namespace}/{pod.name} on node "
                                 f"{pod.node} (port {forwarder.port}, through the API server's port-forward): "
                                 f"{why}") from None


def flow_batches(req: opb.GetFlowsRequest, kubeconfig: str | None = None, context: str | None = None,
                 node: str | None = None, status=sys.stderr) -> Iterator[list]:
    """GetFlowsResponse messages in groups, from every agent pod of the cluster (or the one on `node`)."""
    kube = Kube.connect(kubeconfig, context)
    pods = portforward.agent_pods(kube, node)
    with contextlib.ExitStack() as stack:
        forwarders = [stack.enter_context(portforward.PodPortForwarder(kube, pod)) for pod in pods]
        for f in forwarders:
            _check(f)
        try:
            yield from merge.merged_batches([f.address for f in forwarders], req, status=status)
        except EnvironmentProblem as err:   # a stream cut half-way: name the pod, not our local end
            lost = next((f for f in forwarders if f.address in str(err)), None)
            if lost is None:
                raise
            raise EnvironmentProblem(f"lost the Hubble API of agent pod {lost.pod.namespace}/{lost.pod.name} on "
                                     f"node {lost.pod.node} (through the API server's port-forward): "
                                     f"{lost.last_error or 'the stream was closed'}") from None
