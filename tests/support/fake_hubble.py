"""A Hubble-compatible Observer server on 127.0.0.1 that streams the flows a test or benchmark hands it, as a real
Hubble serves them: only observer.Observer (GetFlows one flow per message, ServerStatus), no ciliumctl batch
methods. For `ciliumctl ui --server` with flows no datapath makes: hostile names and labels, 1,000 flows/s."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb
from ciliumctl.flows.pb.observer import observer_pb2_grpc


@dataclass
class Peer:
    ip: str
    pod: str = ""
    namespace: str = ""
    labels: list[str] = field(default_factory=list)
    identity: int = 0


def flow(src: Peer, dst: Peer, port: int = 80, verdict: int = pb.FORWARDED, drop_reason: int = 0,
         event_type: int = 5, reply: bool = False, time_ns: int | None = None) -> pb.Flow:
    """A TCP flow src -> dst:port (event_type 5: a policy verdict, 1: a drop)."""
    f = pb.Flow(verdict=verdict, drop_reason_desc=drop_reason,
                IP=pb.IP(source=src.ip, destination=dst.ip, ipVersion=pb.IPv4),
                l4=pb.Layer4(TCP=pb.TCP(source_port=40000, destination_port=port, flags=pb.TCPFlags(SYN=True))),
                source=pb.Endpoint(identity=src.identity, namespace=src.namespace, labels=src.labels,
                                   pod_name=src.pod),
                destination=pb.Endpoint(identity=dst.identity, namespace=dst.namespace, labels=dst.labels,
                                        pod_name=dst.pod),
                Type=pb.L3_L4, node_name="fake-node",
                event_type=pb.CiliumEventType(type=event_type, sub_type=drop_reason if event_type == 1 else 0),
                traffic_direction=pb.INGRESS, Summary="TCP Flags: SYN")
    f.is_reply.value = reply
    f.time.FromNanoseconds(time_ns or time.time_ns())
    return f


class FakeHubble:
    def __init__(self, port: int = 0):
        """port: 0 for any free one; an earlier server's port to play that server restarted."""
        self._flows: list[pb.Flow] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        observer_pb2_grpc.add_ObserverServicer_to_server(_Servicer(self), self._server)
        port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> FakeHubble:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._server.stop(grace=None)

    def put(self, *flows: pb.Flow) -> None:
        with self._cond:
            self._flows.extend(flows)
            self._cond.notify_all()

    @property
    def sent(self) -> int:
        return len(self._flows)


class _Servicer(observer_pb2_grpc.ObserverServicer):
    def __init__(self, hub: FakeHubble):
        self.hub = hub

    def ServerStatus(self, request, context):  # noqa: N802  (gRPC's name)
        return opb.ServerStatusResponse(num_flows=self.hub.sent, max_flows=1 << 20, seen_flows=self.hub.sent)

    def GetFlows(self, request, context):  # noqa: N802
        hub = self.hub
        with hub._cond:
            start = max(0, len(hub._flows) - request.number) if request.number else len(hub._flows)
            if request.HasField("since"):
                since = request.since.ToNanoseconds()
                start = next((i for i, f in enumerate(hub._flows) if f.time.ToNanoseconds() >= since),
                             len(hub._flows))
        i = start
        while context.is_active():
            with hub._cond:
                while i >= len(hub._flows) and not hub._stopped and request.follow:
                    hub._cond.wait(0.5)
                    if not context.is_active():
                        return
                if hub._stopped:   # as a server that goes away: the stream breaks, it does not end
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
                if i >= len(hub._flows) and not request.follow:
                    return
                batch = hub._flows[i:]
            i += len(batch)
            for f in batch:
                yield opb.GetFlowsResponse(flow=f, node_name=f.node_name, time=f.time)
