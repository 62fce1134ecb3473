"""Differential runs: the same policy files through Cilium's own validator (cnp-oracle) and through ciliumctl,
verdict by verdict in the oracle's three columns.

    result = run_cases(oracle, tmp_dir, cases=3000, seed=1)
    assert not result.disagreements, result.summary()

The columns map onto ciliumctl's options as in tests/unit/test_validate_corpus.py: `valid` is the default,
`valid_strict` is strict fields and names without the CRD schema (the oracle does not check it), and the third
turns on node-selector labels and extended IP protocols.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ciliumctl.base.errors import UsageError
from ciliumctl.policy import load, validate

# Where the oracle is blind, by construction: its strict decoder (sigs.k8s.io/json UnmarshalStrict) reports
# unknown fields of plain structs only. EndpointSelector, ICMPField and Label have their own UnmarshalJSON
# (encoding/json inside), so an unknown field there passes the oracle's strict column, while the API server,
# which checks every field against the CRD's schema, refuses it under `kubectl apply` (--validate=strict).
# ciliumctl refuses it with --strict. A strict verdict that differs only by such findings is counted apart.
CUSTOM_DECODED = re.compile(r"(endpointSelector|nodeSelector|(from|to)(Endpoints|Nodes)\[\d+\]|cidrGroupSelector|"
                            r"fields\[\d+\]|labels\[\d+\])\.")
ORACLE_BLIND = "unknown field inside a type with its own UnmarshalJSON (the oracle's strict decoder cannot see it)"

COLUMNS = {
    "valid": validate.Options(),
    "valid_strict": validate.Options(strict=True, schema=False),
    "valid_with_node_selector_and_extended_protocols": validate.Options(enable_node_selector_labels=True,
                                                                        enable_extended_ip_protocols=True),
}
POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


@dataclass
class Disagreement:
    file: str
    index: int
    kind: str | None
    name: str | None
    column: str
    oracle: object       # the oracle's verdict (None: the oracle printed no line for the document)
    ours: object
    oracle_error: str
    our_errors: list
    text: str = ""       # the document's YAML, for reading

    def __str__(self) -> str:
        return (f"{self.file}#{self.index} {self.kind} {self.name}: {self.column}: oracle {self.oracle}, "
                f"ciliumctl {self.ours}\n  oracle: {self.oracle_error}\n  ciliumctl: {self.our_errors}\n"
                + "\n".join("  | " + line for line in self.text.splitlines()[:60]))


@dataclass
class Result:
    cases: int = 0
    disagreements: list = field(default_factory=list)
    oracle_blind: list = field(default_factory=list)   # strict verdicts apart (see ORACLE_BLIND)
    oracle_seconds: float = 0.0
    ours_seconds: float = 0.0

    @property
    def disagreeing_cases(self) -> int:
        return len({(d.file, d.index, d.name) for d in self.disagreements})

    def summary(self, samples: int = 5) -> str:
        lines = [f"{self.cases} cases, {self.disagreeing_cases} disagreeing "
                 f"({len(self.disagreements)} verdicts); {len(self.oracle_blind)} strict verdicts apart: "
                 f"{ORACLE_BLIND}"]
        lines += [str(d) for d in self.disagreements[:samples]]
        return "\n".join(lines)


def run_oracle(oracle: str, paths: list[str]) -> list[dict]:
    proc = subprocess.run([oracle, *paths], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"cnp-oracle failed ({proc.returncode}): {proc.stderr[-500:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _fold(name: str) -> str:
    return name.lower()


def head_decodes(data) -> bool:
    """Whether cnp-oracle's first look at an object succeeds: encoding/json (names case-insensitive) into
    {apiVersion, kind string; metadata {name string}; items list}. When it fails the oracle prints nothing."""
    if not isinstance(data, dict):
        return False
    want = {"apiversion": str, "kind": str, "metadata": dict, "items": list}
    for key, value in data.items():
        kind = want.get(_fold(key))
        if kind is None or value is None:
            continue
        if not isinstance(value, kind):
            return False
        if kind is dict:
            for mkey, mvalue in value.items():
                if _fold(mkey) == "name" and mvalue is not None and not isinstance(mvalue, str):
                    return False
    return True


def _strict_only_blind(strict_report, plain_report) -> bool:
    """Whether every error only the strict run has is an unknown field inside a custom-decoded type."""
    plain = {(f.path, f.message) for f in plain_report.errors}
    extra = [f for f in strict_report.errors if (f.path, f.message) not in plain]
    return bool(extra) and all(f.rule == "strict/unknown-field" and CUSTOM_DECODED.search(f.path) for f in extra)


def our_verdicts(path: str) -> list[tuple]:
    """(index, kind, name, {column: valid}, errors, strict-only-blind) of every CNP/CCNP document of one file,
    in file order."""
    try:
        docs = load.load_paths([path])
    except UsageError as err:
        return [(-1, None, None, None, [str(err)], False, False)]
    out = []
    for doc in docs:
        if doc.kind not in POLICY_KINDS:
            continue
        silent = not head_decodes(doc.data)
        reports = {column: validate.validate_document(doc, options) for column, options in COLUMNS.items()}
        verdicts = {column: report.valid for column, report in reports.items()}
        errors = [f"{f.path}: {f.message}" for f in reports["valid"].errors]
        blind = _strict_only_blind(reports["valid_strict"], reports["valid"])
        out.append((doc.index, doc.kind, doc.name, verdicts, errors, blind, silent))
    return out


def _document_text(text: str, index: int) -> str:
    import re

    chunks = re.split(r"(?m)^---[ \t]*(?:#.*)?$", text)
    if len(chunks) > 1 and all(not line.strip() or line.strip().startswith("#") for line in chunks[0].splitlines()):
        chunks = chunks[1:]
    return chunks[index] if 0 <= index < len(chunks) else ""


def compare_files(oracle: str, directory: Path) -> Result:
    """Run both validators over every file in `directory` and compare them document by document."""
    result = Result()
    t0 = time.perf_counter()
    rows = run_oracle(oracle, [str(directory)])
    result.oracle_seconds = time.perf_counter() - t0
    by_doc: dict = {}
    for row in rows:
        by_doc.setdefault((os.path.basename(row["file"]), row["index"]), []).append(row)
    t0 = time.perf_counter()
    ours: dict = {}
    for path in sorted(directory.iterdir()):
        for entry in our_verdicts(str(path)):
            ours.setdefault((path.name, entry[0]), []).append(entry)
    result.ours_seconds = time.perf_counter() - t0
    texts: dict = {}

    def text(file: str, index: int) -> str:
        if file not in texts:
            texts[file] = (directory / file).read_text()
        return _document_text(texts[file], index)

    for key in sorted(set(by_doc) | set(ours), key=lambda k: (k[0], k[1])):
        file, index = key
        theirs, mine = by_doc.get(key, []), ours.get(key, [])
        # documents the oracle is silent on: Cilium could not decode them either, so only "invalid" agrees
        for entry in [e for e in mine if e[-1]]:
            result.cases += 1
            if any(entry[3].values()):
                result.disagreements.append(Disagreement(file, index, entry[1], entry[2], "document", None,
                                                         entry[3], "(no line: head does not decode)", entry[4],
                                                         text(file, index)))
        mine = [e for e in mine if not e[-1]]
        if index == -1:  # our loader refused the whole file
            result.cases += 1
            result.disagreements.append(Disagreement(file, -1, None, None, "file", "read", "refused", "",
                                                     mine[0][4], (directory / file).read_text()[:2000]))
            continue
        for i in range(max(len(theirs), len(mine))):
            result.cases += 1
            row = theirs[i] if i < len(theirs) else None
            entry = mine[i] if i < len(mine) else None
            if entry is None:
                result.disagreements.append(Disagreement(file, index, row["kind"], row["name"], "document",
                                                         "policy", None, row["error"], [], text(file, index)))
                continue
            _, kind, name, verdicts, errors, blind, _ = entry
            if row is None:
                # the oracle prints nothing when the object's head (kind, metadata.name, items) does not decode:
                # Cilium could not take it either, so only an invalid verdict agrees
                if any(verdicts.values()):
                    result.disagreements.append(Disagreement(file, index, kind, name, "document", None,
                                                             verdicts, "(no line: head does not decode)", errors,
                                                             text(file, index)))
                continue
            for column in COLUMNS:
                if row[column] != verdicts[column]:
                    found = Disagreement(file, index, kind, name, column, row[column], verdicts[column],
                                         row["error"], errors, text(file, index))
                    if column == "valid_strict" and row[column] and blind:
                        result.oracle_blind.append(found)
                    else:
                        result.disagreements.append(found)
    return result


def run_cases(oracle: str, work: Path, cases: int, seed: int, docs_per_file: int = 25,
              files_per_batch: int = 200) -> Result:
    """Generate `cases` mutated documents from the seed policies and compare verdicts, in batches of files."""
    from tests.oracle.mutations import Generator, seed_documents

    gen = Generator(seed_documents(), seed=seed)
    total = Result()
    made = 0
    batch = 0
    while made < cases:
        folder = work / f"batch-{batch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in gen.files(min(cases - made, docs_per_file * files_per_batch), docs_per_file):
            (folder / name).write_text(text)
        part = compare_files(oracle, folder)
        made += max(part.cases, 1)
        total.cases += part.cases
        total.disagreements += part.disagreements
        total.oracle_blind += part.oracle_blind
        total.oracle_seconds += part.oracle_seconds
        total.ours_seconds += part.ours_seconds
        batch += 1
    return total
