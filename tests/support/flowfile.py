"""Flow files as `hubble observe -o jsonpb` writes them: GetFlowsResponse messages built with the generated
protobuf classes and encoded by ciliumctl's jsonpb encoder (the one `observe -o jsonpb` prints with, compared
with the real hubble's in tests/flows). For `policy generate` tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ciliumctl.flows import jsonpb
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.pb.observer import observer_pb2 as opb


@dataclass
class Side:
    ip: str
    namespace: str = ""
    labels: list[str] = field(default_factory=list)
    pod: str = ""
    identity: int = 0
    names: list[str] = field(default_factory=list)    # DNS names (destination_names / source_names)


def pod(name: str, ip: str, namespace: str = "default", identity: int = 300, **labels: str) -> Side:
    lab = [f"k8s:{k.rstrip('_').replace('_', '-')}={v}" for k, v in labels.items()]   # class_: a keyword
    lab += [f"k8s:io.kubernetes.pod.namespace={namespace}", "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.cilium.k8s.policy.serviceaccount=default"]
    return Side(ip, namespace, sorted(lab), name, identity)


def world(ip: str, *names: str) -> Side:
    return Side(ip, labels=["reserved:world"], identity=2, names=list(names))


def host(ip: str) -> Side:
    return Side(ip, labels=["reserved:host"], identity=1)


def flow_line(src: Side, dst: Side, proto: str = "TCP", port: int = 80, verdict: str = "FORWARDED",
              reply: bool = False, seconds: int = 1_764_150_000) -> str:
    f = pb.Flow(verdict=pb.Verdict.Value(verdict), Type=pb.FlowType.L3_L4, node_name="node1")
    f.time.FromSeconds(seconds)
    f.IP.source, f.IP.destination, f.IP.ipVersion = src.ip, dst.ip, pb.IPVersion.IPv4
    for side, ep in ((src, f.source), (dst, f.destination)):
        ep.identity = side.identity
        ep.namespace = side.namespace
        ep.labels.extend(side.labels)
        ep.pod_name = side.pod
    f.source_names.extend(src.names)
    f.destination_names.extend(dst.names)
    if proto == "TCP":
        f.l4.TCP.source_port, f.l4.TCP.destination_port = 40000, port
        f.l4.TCP.flags.SYN = True
    elif proto == "UDP":
        f.l4.UDP.source_port, f.l4.UDP.destination_port = 40000, port
    elif proto == "ICMPv4":
        f.l4.ICMPv4.type = port
    f.is_reply.value = reply
    f.traffic_direction = pb.TrafficDirection.EGRESS
    resp = opb.GetFlowsResponse(flow=f, node_name="node1")
    resp.time.CopyFrom(f.time)
    return jsonpb.encode(resp)


# The Star Wars demo's workloads (node/demo.py) plus a DNS server, the world and the host.
DEATHSTAR = pod("deathstar-6f87d5-x2x9z", "10.200.0.2", "default", 301, org="empire", class_="deathstar",
                pod_template_hash="6f87d5")
TIEFIGHTER = pod("tiefighter", "10.200.0.3", "default", 302, org="empire", class_="tiefighter")
XWING = pod("xwing", "10.200.0.4", "default", 303, org="alliance", class_="xwing")
KUBEDNS = pod("coredns-5d78c9869d-abcde", "10.200.0.10", "kube-system", 304, k8s_app="kube-dns",
              pod_template_hash="5d78c9869d")


def demo_lines() -> list[str]:
    lines = [flow_line(TIEFIGHTER, DEATHSTAR, "TCP", 80)]
    lines += [flow_line(TIEFIGHTER, DEATHSTAR, "TCP", p) for p in (8000, 8001, 8002, 8003, 9090)]
    lines.append(flow_line(DEATHSTAR, TIEFIGHTER, "TCP", 80, reply=True))          # a reply: not a connection
    lines.append(flow_line(XWING, DEATHSTAR, "TCP", 80, verdict="DROPPED"))       # dropped: not wanted traffic
    lines.append(flow_line(DEATHSTAR, KUBEDNS, "UDP", 53))
    lines.append(flow_line(DEATHSTAR, world("140.82.112.3", "api.github.com."), "TCP", 443))
    lines.append(flow_line(TIEFIGHTER, world("1.1.1.1"), "TCP", 443))
    lines.append(flow_line(world("203.0.113.9"), DEATHSTAR, "TCP", 80))
    lines.append(flow_line(host("10.0.0.1"), DEATHSTAR, "TCP", 8080))
    lines.append(flow_line(TIEFIGHTER, XWING, "ICMPv4", 8))
    return lines
