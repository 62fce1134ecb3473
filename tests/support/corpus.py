"""The shared policy corpus (../shared/corpus/policies, README there): its documents with Cilium's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies"


def valid_policies() -> list[tuple[str, dict]]:
    """(file, document) of every policy document Cilium 1.19 accepts (`valid`), in the verdicts' order."""
    out = []
    docs_of: dict[str, list[dict]] = {}
    for line in (CORPUS / "verdicts.jsonl").read_text().splitlines():
        row = json.loads(line) if line.strip() else None
        if not row or not row["valid"]:
            continue
        if row["file"] not in docs_of:
            items: list[dict] = []
            for d in yaml.safe_load_all((CORPUS / row["file"]).read_text()):
                if d:
                    items.extend(d.get("items", []) if d.get("kind") == "List" else [d])
            docs_of[row["file"]] = items
        out.append((row["file"], docs_of[row["file"]][row["index"]]))
    return out
