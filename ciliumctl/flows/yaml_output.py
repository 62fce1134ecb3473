"""observe -o yaml: each GetFlowsResponse as a YAML document with the fields of its jsonpb form (hubble has no
yaml output; this is kubectl's convention, the same data as -o jsonpb)."""

from __future__ import annotations

import json
import sys

import yaml

from ciliumctl.flows import jsonpb


class YamlPrinter:
    def __init__(self, out=None):
        self.out = out or sys.stdout

    def write_many(self, resps) -> None:
        for resp in resps:
            if resp.WhichOneof("response_types") in ("flow", "lost_events"):
                doc = json.loads(jsonpb.encode(resp))
                self.out.write(yaml.safe_dump(doc, explicit_start=True, sort_keys=False, allow_unicode=True))

    def close(self) -> None:
        self.out.flush()
