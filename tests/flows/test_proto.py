"""The wire interface with Hubble clients: package, service, message, field names and numbers of our .proto files
must be Hubble's (flow/flow.proto, observer/observer.proto, relay/relay.proto) for everything we serve. Kept as a
table of Hubble's numbers so that an edit of proto/ that would break `hubble observe` fails here."""

import re

import pytest

from ciliumctl.flows.pb.flow import flow_pb2
from ciliumctl.flows.pb.observer import observer_pb2
from ciliumctl.flows.pb.relay import relay_pb2

HUBBLE = {
    "flow.Flow": {"time": 1, "verdict": 2, "drop_reason": 3, "IP": 5, "l4": 6, "source": 8, "destination": 9,
                  "Type": 10, "node_name": 11, "source_names": 13, "destination_names": 14, "event_type": 19,
                  "traffic_direction": 22, "policy_match_type": 23, "trace_observation_point": 24,
                  "drop_reason_desc": 25, "is_reply": 26, "interface": 28, "uuid": 34,
                  "egress_allowed_by": 21001, "ingress_allowed_by": 21002, "egress_denied_by": 21004,
                  "ingress_denied_by": 21005, "Summary": 100000},
    "flow.Endpoint": {"ID": 1, "identity": 2, "namespace": 3, "labels": 4, "pod_name": 5, "workloads": 6},
    "flow.Workload": {"name": 1, "kind": 2},
    "flow.Policy": {"name": 1, "namespace": 2, "labels": 3, "revision": 4, "kind": 5},
    "flow.Layer4": {"TCP": 1, "UDP": 2, "ICMPv4": 3, "ICMPv6": 4, "SCTP": 5},
    "flow.TCP": {"source_port": 1, "destination_port": 2, "flags": 3},
    "flow.IP": {"source": 1, "destination": 2, "ipVersion": 3, "encrypted": 4},
    "flow.TCPFlags": {"FIN": 1, "SYN": 2, "RST": 3, "PSH": 4, "ACK": 5, "URG": 6, "ECE": 7, "CWR": 8, "NS": 9},
    "flow.CiliumEventType": {"type": 1, "sub_type": 2},
    "flow.EventTypeFilter": {"type": 1, "match_sub_type": 2, "sub_type": 3},
    "flow.LostEvent": {"source": 1, "num_events_lost": 2, "cpu": 3},
    "flow.FlowFilter": {"uuid": 29, "source_ip": 1, "source_pod": 2, "source_fqdn": 7, "source_label": 10,
                        "source_service": 16, "source_workload": 26, "destination_ip": 3, "destination_pod": 4,
                        "destination_fqdn": 8, "destination_label": 11, "destination_service": 17,
                        "destination_workload": 27, "traffic_direction": 30, "verdict": 5,
                        "drop_reason_desc": 33, "event_type": 6, "http_status_code": 9, "protocol": 12,
                        "source_port": 13, "destination_port": 14, "reply": 15, "dns_query": 18,
                        "source_identity": 19, "destination_identity": 20, "http_method": 21, "http_path": 22,
                        "tcp_flags": 23, "node_name": 24, "ip_version": 25, "trace_id": 28},
    "observer.GetFlowsRequest": {"number": 1, "first": 9, "follow": 3, "blacklist": 5, "whitelist": 6, "since": 7,
                                 "until": 8},
    "observer.GetFlowsResponse": {"flow": 1, "node_status": 2, "lost_events": 3, "node_name": 1000,
                                  "time": 1001},
    "observer.ServerStatusResponse": {"num_flows": 1, "max_flows": 2, "seen_flows": 3, "uptime_ns": 4,
                                      "num_connected_nodes": 5, "num_unavailable_nodes": 6,
                                      "unavailable_nodes": 7, "version": 8, "flows_rate": 9},
    "observer.Node": {"name": 1, "version": 2, "address": 3, "state": 4, "tls": 5, "uptime_ns": 6,
                      "num_flows": 7, "max_flows": 8, "seen_flows": 9},
    "observer.Namespace": {"cluster": 1, "namespace": 2},
    "relay.NodeStatusEvent": {"state_change": 1, "node_names": 2, "message": 3},
}
ENUMS = {
    "flow.Verdict": {"VERDICT_UNKNOWN": 0, "FORWARDED": 1, "DROPPED": 2, "ERROR": 3, "AUDIT": 4, "REDIRECTED": 5,
                     "TRACED": 6, "TRANSLATED": 7},
    "flow.TrafficDirection": {"TRAFFIC_DIRECTION_UNKNOWN": 0, "INGRESS": 1, "EGRESS": 2},
    "flow.TraceObservationPoint": {"TO_ENDPOINT": 101, "FROM_ENDPOINT": 5, "TO_STACK": 3},
    "flow.DropReason": {"POLICY_DENIED": 133, "POLICY_DENY": 181, "CT_UNKNOWN_L4_PROTOCOL": 137},
    "flow.LostEventSource": {"PERF_EVENT_RING_BUFFER": 1, "OBSERVER_EVENTS_QUEUE": 2, "HUBBLE_RING_BUFFER": 3},
    "flow.FlowType": {"L3_L4": 1},
    "relay.NodeState": {"NODE_CONNECTED": 1, "NODE_UNAVAILABLE": 2, "NODE_GONE": 3, "NODE_ERROR": 4},
}
POOL = observer_pb2.DESCRIPTOR.pool


@pytest.mark.parametrize("message", sorted(HUBBLE))
def test_field_numbers_are_hubbles(message):
    desc = POOL.FindMessageTypeByName(message)
    assert {f.name: f.number for f in desc.fields if f.name in HUBBLE[message]} == HUBBLE[message]


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values_are_hubbles(enum):
    desc = POOL.FindEnumTypeByName(enum)
    assert {name: desc.values_by_name[name].number for name in ENUMS[enum]} == ENUMS[enum]


def test_service_and_files():
    svc = POOL.FindServiceByName("observer.Observer")
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming) for m in svc.methods}
    assert methods == {
        "GetFlows": ("observer.GetFlowsRequest", "observer.GetFlowsResponse", True),
        "ServerStatus": ("observer.ServerStatusRequest", "observer.ServerStatusResponse", False),
        "GetNodes": ("observer.GetNodesRequest", "observer.GetNodesResponse", False),
        "GetNamespaces": ("observer.GetNamespacesRequest", "observer.GetNamespacesResponse", False),
    }
    assert (flow_pb2.DESCRIPTOR.name, observer_pb2.DESCRIPTOR.name, relay_pb2.DESCRIPTOR.name) == \
        ("flow/flow.proto", "observer/observer.proto", "relay/relay.proto")


def test_generated_code_is_current(tmp_path):
    """proto/ and ciliumctl/flows/pb/ agree: regenerate into a temp dir and compare."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gen", root / "proto" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.OUT = tmp_path
    assert gen.main() == 0
    committed = root / "ciliumctl" / "flows" / "pb"
    for fresh in tmp_path.rglob("*_pb2*.py"):
        rel = fresh.relative_to(tmp_path)
        assert _unstamped((committed / rel).read_text()) == _unstamped(fresh.read_text()), \
            f"run `make proto`: {rel} is stale"


def _unstamped(code: str) -> str:
    """Generated code without the generator's version stamps: a new grpcio-tools release (it changes every few
    weeks) is not a change of proto/."""
    code = re.sub(r"GRPC_GENERATED_VERSION = '[^']*'", "GRPC_GENERATED_VERSION = ''", code)
    code = re.sub(r"# Protobuf Python Version: .*", "# Protobuf Python Version:", code)
    return re.sub(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,",
                  r"\1", code)


def _embedded_descriptor(binary: bytes, name: str):
    """The FileDescriptorProto of `name` compiled into a Go binary (protobuf-go keeps each file's raw descriptor
    as one byte string): found by its leading name field, cut where its top-level fields stop parsing."""
    from google.protobuf import descriptor_pb2

    def varint(i):
        n = shift = 0
        while True:
            b = binary[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n, i

    head = b"\n" + bytes([len(name)]) + name.encode()
    start = binary.find(head)
    while start >= 0:
        i = end = start
        while i < len(binary):
            key, j = varint(i)
            if not 1 <= key >> 3 <= 14 or key & 7 not in (0, 2):
                break
            n, j = varint(j)
            i = end = j + (n if key & 7 == 2 else 0)
        fd = descriptor_pb2.FileDescriptorProto.FromString(binary[start:end])
        if fd.message_type:
            return fd
        start = binary.find(head, start + 1)
    raise AssertionError(f"{name} is not in the binary")


def _numbers(fd) -> dict:
    """Every field (number, type) and enum value of a FileDescriptorProto, by full name."""
    out = {}

    def walk(prefix, msg):
        for f in msg.field:
            out[f"{prefix}{msg.name}.{f.name}"] = (f.number, f.type, f.type_name)
        for e in msg.enum_type:
            for v in e.value:
                out[f"{prefix}{msg.name}.{e.name}.{v.name}"] = v.number
        for m in msg.nested_type:
            walk(f"{prefix}{msg.name}.", m)

    for m in fd.message_type:
        walk(f"{fd.package}.", m)
    for e in fd.enum_type:
        for v in e.value:
            out[f"{fd.package}.{e.name}.{v.name}"] = v.number
    return out


@pytest.mark.parametrize("module", [flow_pb2, observer_pb2, relay_pb2], ids=lambda m: m.DESCRIPTOR.name)
def test_every_number_is_the_real_hubbles(hubble, module):
    """Each field and enum value of our .proto files has the number and type of the one in the real hubble
    binary (the descriptors compiled into it, Cilium 1.19.4's api/v1)."""
    from google.protobuf import descriptor_pb2

    ours = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(ours)
    theirs = _numbers(_embedded_descriptor(hubble.read_bytes(), module.DESCRIPTOR.name))
    mine = _numbers(ours)
    assert {k: v for k, v in mine.items() if theirs.get(k) != v} == {}
    if module is flow_pb2:   # every value of the enums we declare, none left out
        for enum in ("DropReason", "TraceObservationPoint", "Verdict", "TrafficDirection", "FlowType"):
            assert {k for k in theirs if k.startswith(f"flow.{enum}.")} == \
                {k for k in mine if k.startswith(f"flow.{enum}.")}, enum
