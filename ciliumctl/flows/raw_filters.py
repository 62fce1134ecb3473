"""Raw FlowFilter lists as the hubble CLI reads and prints them: --allowlist/--denylist take one FlowFilter as
JSON each, --print-raw-filters prints both lists as YAML of one-line JSON strings (hubble/cmd/observe/flows.go)."""

from __future__ import annotations

import json

from google.protobuf import json_format

from ciliumctl.base.errors import UsageError
from ciliumctl.flows.pb.flow import flow_pb2 as pb


def parse(flag: str, values: list[str]) -> list[pb.FlowFilter]:
    out = []
    for text in values:
        ff = pb.FlowFilter()
        try:
            json_format.Parse(text, ff)
        except json_format.ParseError as err:
            raise UsageError(f"invalid {flag} flag: failed to decode {text!r}: {str(err).splitlines()[0]}") from None
        out.append(ff)
    return out


def _ordered(msg) -> dict:
    """proto3 JSON with proto field names, in the .proto's declaration order as Go's protojson writes it."""
    plain = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    out = {}
    for field in msg.DESCRIPTOR.fields:
        if field.name not in plain:
            continue
        value = plain[field.name]
        if field.message_type is not None and field.message_type.full_name.startswith("flow."):
            sub = getattr(msg, field.name)
            value = [_ordered(m) for m in sub] if field.is_repeated else _ordered(sub)
        out[field.name] = value
    return out


def to_json(ff: pb.FlowFilter) -> str:
    return json.dumps(_ordered(ff), separators=(",", ":"), ensure_ascii=False)


def render(allow: list[pb.FlowFilter], deny: list[pb.FlowFilter]) -> str:
    """What `hubble observe --print-raw-filters` prints: `{}` for no filters at all."""
    lines = []
    for name, filters in (("allowlist", allow), ("denylist", deny)):
        if filters:
            lines.append(f"{name}:")
            lines += ["    - '" + to_json(f).replace("'", "''") + "'" for f in filters]
    return "\n".join(lines) + "\n" if lines else "{}\n"
