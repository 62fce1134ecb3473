"""observe --input-file: flows from `hubble observe -o jsonpb` output (a file, or "-" for stdin) instead of a
server, with the request's filters, time range and first/last applied here as the server would apply them."""

from __future__ import annotations

import sys
from collections import deque

from google.protobuf import json_format

from ciliumctl.base.errors import UsageError
from ciliumctl.flows.filters import FlowMatcher
from ciliumctl.flows.pb.observer import observer_pb2 as opb

_BATCH = 256


def _responses(stream, name: str):
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        resp = opb.GetFlowsResponse()
        try:
            # fields of Cilium's flow that ciliumctl does not model (ethernet, tunnel, ...) are skipped
            json_format.Parse(line, resp, ignore_unknown_fields=True)
        except json_format.ParseError as err:
            raise UsageError(f"{name}:{lineno}: not a hubble jsonpb line: {str(err).splitlines()[0]}") from None
        yield resp


def _selected(resps, req: opb.GetFlowsRequest):
    match = FlowMatcher(req.whitelist, req.blacklist)
    since = req.since.ToNanoseconds() if req.HasField("since") else None
    until = req.until.ToNanoseconds() if req.HasField("until") else None
    for resp in resps:
        if resp.WhichOneof("response_types") != "flow":
            continue
        t = resp.flow.time.ToNanoseconds()
        if (since is not None and t < since) or (until is not None and t > until):
            continue
        if match(resp.flow):
            yield resp


def flow_batches(path: str, req: opb.GetFlowsRequest):
    """Lists of GetFlowsResponse, as client.stream_batches yields them. Without --first/--last: every flow."""
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--input-file {path}: {err.strerror}") from None
    with stream:
        flows = _selected(_responses(stream, "stdin" if path == "-" else path), req)
        if req.number and not req.first:
            flows = iter(deque(flows, maxlen=req.number))
        batch = []
        for n, resp in enumerate(flows, 1):
            batch.append(resp)
            if len(batch) == _BATCH:
                yield batch
                batch = []
            if req.first and n == req.number:
                break
        if batch:
            yield batch
