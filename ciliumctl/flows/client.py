"""The client side of `ciliumctl observe`: a GetFlows request from options, and a stream of GetFlowsResponse
messages from the server, over ciliumctl's batched method when the server has it (observer.Observer/GetFlows
otherwise, e.g. a real Hubble), reconnecting in follow mode when the agent restarts."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.flows.pb.batch import batch_pb2
from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2 as opb

DEFAULT_LAST = 20
_BATCH_METHOD = "/ciliumctl.batch.FlowBatches/GetFlowBatches"
_LINES_METHOD = "/ciliumctl.batch.FlowBatches/GetFlowLines"
_FLOWS_METHOD = "/observer.Observer/GetFlows"


def default_server() -> str:
    return f"unix://{paths.hubble_socket()}"


def grpc_target(server: str) -> str:
    """hubble's --server forms: unix:///path, host:port, or a bare socket path."""
    if server.startswith(("unix://", "unix:", "dns:", "ipv4:", "ipv6:")):
        return server
    if server.startswith("/"):
        return f"unix://{server}"
    if ":" in server:
        return server
    raise UsageError(f"--server {server!r}: use unix:///path/to/hubble.sock or HOST:PORT")


@dataclass
class Query:
    last: int | None = None
    first: int | None = None
    all: bool = False
    follow: bool = False
    since: datetime | None = None
    until: datetime | None = None
    whitelist: list = field(default_factory=list)
    blacklist: list = field(default_factory=list)

    def request(self) -> opb.GetFlowsRequest:
        if self.first is not None and self.follow:
            raise UsageError("--first cannot be combined with --follow")
        if self.first is not None and self.last is not None:
            raise UsageError("--first cannot be combined with --last")
        req = opb.GetFlowsRequest(follow=self.follow, whitelist=self.whitelist, blacklist=self.blacklist)
        if self.first is not None:
            req.first = True
            req.number = self.first
        elif self.last is not None:
            req.number = self.last
        elif not (self.all or self.follow or self.since or self.until):
            req.number = DEFAULT_LAST
        if self.since:
            req.since.FromDatetime(self.since)
        if self.until:
            req.until.FromDatetime(self.until)
        return req


def _stream_once(channel, req, mode: str):
    """Per stream message: a list of responses (many with the batched method, one otherwise), or with the lines
    method (text bytes, the last flow's time ns)."""
    if mode == "lines":
        call = channel.unary_stream(_LINES_METHOD, request_serializer=opb.GetFlowsRequest.SerializeToString,
                                    response_deserializer=batch_pb2.FlowLines.FromString)
        for lines in call(req):
            yield lines.text, lines.last_flow_time_ns
    elif mode == "batches":
        call = channel.unary_stream(_BATCH_METHOD, request_serializer=opb.GetFlowsRequest.SerializeToString,
                                    response_deserializer=batch_pb2.FlowBatch.FromString)
        for batch in call(req):
            yield batch.responses
    else:
        call = channel.unary_stream(_FLOWS_METHOD, request_serializer=opb.GetFlowsRequest.SerializeToString,
                                    response_deserializer=opb.GetFlowsResponse.FromString)
        for r in call(req):
            yield (r,)


def _unreachable(server: str) -> EnvironmentProblem:
    denied = _permission_problem(server)
    if denied is not None:
        return denied
    return EnvironmentProblem(f"cannot reach the Hubble API at {server}; start the agent with "
                              "`ciliumctl agent start` (or pass --server)")


def _permission_problem(server: str) -> EnvironmentProblem | None:
    """A unix socket that is there but not ours to connect to: the agent runs, the caller lacks the rights."""
    import errno
    import socket
    from pathlib import Path

    from ciliumctl.base.statefile import needs_root

    target = grpc_target(server)
    if not target.startswith("unix:"):
        return None
    path = target[len("unix://"):] if target.startswith("unix://") else target[len("unix:"):]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return None
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM):
            return None
        return EnvironmentProblem(f"cannot connect to the Hubble API at {server}: {err.strerror}; "
                                  f"{needs_root(Path(path))}")
    finally:
        s.close()


def stream(server: str, req: opb.GetFlowsRequest, reconnect: bool | None = None, status=sys.stderr):
    """GetFlowsResponse messages, one by one (see stream_batches)."""
    for batch in stream_batches(server, req, reconnect, status):
        yield from batch


def stream_batches(server: str, req: opb.GetFlowsRequest, reconnect: bool | None = None, status=sys.stderr,
                   json_lines: bool = False):
    """GetFlowsResponse messages in the groups they arrived in. With json_lines, from a server that offers it
    (ciliumctl's agent), a group is instead the bytes of its JSON lines as `hubble observe -o json` prints them.
    In follow mode a lost connection is retried (the request resumes after the last flow seen), unless
    reconnect=False."""
    target = grpc_target(server)
    reconnect = req.follow if reconnect is None else reconnect
    modes = ["lines", "batches", "flows"] if json_lines else ["batches", "flows"]
    received_any = False   # since the last (re)connect: say "reconnecting" once per lost connection
    last_time_ns = None
    started_ns = time.time_ns()
    connected_once = False
    while True:
        channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        try:
            if reconnect:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0 if connected_once else 3.0)
                except grpc.FutureTimeoutError:
                    if not connected_once:
                        raise _unreachable(server) from None
                    continue  # the agent is not back yet: a fresh channel (no growing backoff), try again
                connected_once = True
            mode = modes[0]
            for batch in _stream_once(channel, req, mode):
                received_any = True
                if mode == "lines":
                    text, last = batch
                    if last:
                        last_time_ns = last
                    yield text
                    continue
                for resp in reversed(batch):
                    if resp.HasField("flow"):
                        last_time_ns = resp.flow.time.ToNanoseconds()
                        break
                yield batch
            return
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.UNIMPLEMENTED and len(modes) > 1:
                modes.pop(0)  # an older ciliumctl agent, or a plain Hubble server: one flow per message
                continue
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise UsageError(f"the server refused the request: {err.details()}") from None
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
                            grpc.StatusCode.INTERNAL):
                raise EnvironmentProblem(f"{server}: {code.name}: {err.details()}") from None
            if not reconnect:
                raise _unreachable(server) from None
            if received_any and status is not None:
                status.write(f"connection to {server} lost; reconnecting\n")
                status.flush()
            received_any = False
            # resume: what the (restarted) agent has after the last flow we printed, then follow
            resumed = opb.GetFlowsRequest()
            resumed.CopyFrom(req)
            resumed.ClearField("number")
            resumed.first = False
            # nothing printed yet: everything since we started asking
            resumed.since.FromNanoseconds(last_time_ns + 1 if last_time_ns is not None else started_ns)
            req = resumed
            time.sleep(0.5)
        finally:
            channel.close()


def server_status(server: str, timeout: float = 5.0) -> opb.ServerStatusResponse:
    from ciliumctl.flows.pb.observer import observer_pb2_grpc

    with grpc.insecure_channel(grpc_target(server)) as ch:
        try:
            return observer_pb2_grpc.ObserverStub(ch).ServerStatus(opb.ServerStatusRequest(), timeout=timeout)
        except grpc.RpcError:
            raise _unreachable(server) from None


__all__ = ["Query", "stream", "server_status", "default_server", "grpc_target", "flow_pb2"]
