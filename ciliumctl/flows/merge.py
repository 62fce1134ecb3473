"""One stream of flows from the Hubble APIs of several nodes, the way hubble-relay merges its peers: without
--follow every node answers the same request and the answers are put in time order, --last N / --first N then
count over all nodes; with --follow the flows of all nodes are passed on as they arrive."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator

from ciliumctl.flows import client
from ciliumctl.flows.pb.observer import observer_pb2 as opb

_DONE = object()


def _time_ns(resp: opb.GetFlowsResponse) -> int:
    if resp.HasField("time"):
        return resp.time.ToNanoseconds()
    return resp.flow.time.ToNanoseconds() if resp.HasField("flow") else 0


def _pump(server: str, req: opb.GetFlowsRequest, out: queue.Queue) -> None:
    try:
        for batch in client.stream_batches(server, req, reconnect=False, status=None):
            out.put(list(batch))
    except BaseException as err:   # handed to the reader, which raises it
        out.put(err)
    finally:
        out.put(_DONE)


def merged_batches(servers: list[str], req: opb.GetFlowsRequest, status=sys.stderr) -> Iterator[list]:
    """GetFlowsResponse messages of every server in `servers` (HOST:PORT or unix:// addresses), in groups."""
    if len(servers) == 1:
        yield from client.stream_batches(servers[0], req, reconnect=False, status=status)
        return
    out: queue.Queue = queue.Queue(maxsize=256)
    for server in servers:
        threading.Thread(target=_pump, args=(server, req, out), daemon=True).start()
    running, collected = len(servers), []
    while running:
        item = out.get()
        if item is _DONE:
            running -= 1
        elif isinstance(item, BaseException):
            raise item
        elif req.follow:
            yield item
        else:
            collected.extend(item)
    if req.follow:
        return
    collected.sort(key=_time_ns)
    if req.number:   # each node gave its first / last N: N of them all
        collected = collected[:req.number] if req.first else collected[-req.number:]
    yield collected
