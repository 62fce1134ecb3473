"""observe --field-mask: only the listed flow fields are kept (hubble's field mask; applied by ciliumctl on the
flows it receives, since its server sends whole flows)."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from ciliumctl.base.errors import UsageError
from ciliumctl.flows.pb.flow import flow_pb2 as pb


def parse(text: str, output: str) -> field_mask_pb2.FieldMask:
    if output not in ("json", "jsonpb", "yaml"):
        # hubble/cmd/observe/flows.go refuses the same
        raise UsageError(f"{output} output format is not compatible with custom field mask")
    paths = [p.strip() for p in text.split(",") if p.strip()]
    mask = field_mask_pb2.FieldMask(paths=paths)
    if not paths or not mask.IsValidForDescriptor(pb.Flow.DESCRIPTOR):
        raise UsageError(f"--field-mask {text!r}: not fields of a flow (e.g. time,verdict,IP,source.pod_name)")
    return mask


def masked(batches, mask: field_mask_pb2.FieldMask):
    for batch in batches:
        for resp in batch:
            if resp.WhichOneof("response_types") == "flow":
                kept = pb.Flow()
                mask.MergeMessage(resp.flow, kept)
                resp.flow.CopyFrom(kept)
        yield batch
