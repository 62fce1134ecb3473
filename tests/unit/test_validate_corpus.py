"""Every document of the shared corpus gets Cilium 1.19's verdict, in all three verdict columns."""

import json
import os
from pathlib import Path

import pytest

from ciliumctl.policy import load, validate

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "policies"

COLUMNS = {
    "valid": validate.Options(),
    # what `kubectl apply` refuses beyond the agent, without the CRD schema (the corpus does not cover it)
    "valid_strict": validate.Options(strict=True, schema=False),
    "valid_with_node_selector_and_extended_protocols": validate.Options(enable_node_selector_labels=True,
                                                                        enable_extended_ip_protocols=True),
}


def _corpus():
    if not (CORPUS / "verdicts.jsonl").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"policy corpus missing at {CORPUS}: CI must provide ../shared beside the clone")
        pytest.skip(f"policy corpus not found at {CORPUS}")
    rows = [json.loads(line) for line in (CORPUS / "verdicts.jsonl").read_text().splitlines() if line.strip()]
    docs = {}
    for row in rows:
        if row["file"] not in docs:
            docs[row["file"]] = {d.index: d for d in load.load_paths([str(CORPUS / row["file"])])}
    return rows, docs


@pytest.mark.parametrize("column", list(COLUMNS))
def test_corpus_agreement_is_total(column):
    rows, docs = _corpus()
    assert len(rows) >= 100
    wrong = []
    for row in rows:
        doc = docs[row["file"]][row["index"]]
        assert doc.kind == row["kind"] and doc.name == row["name"], row
        report = validate.validate_document(doc, COLUMNS[column])
        if report.valid != row[column]:
            wrong.append(f"{row['file']}#{row['index']}: want {row[column]}, got {report.valid}: "
                         f"{[f.message for f in report.errors]} (cilium: {row['error']})")
    assert not wrong, "\n".join(wrong)


def test_corpus_invalid_documents_point_at_a_line_inside_the_file():
    rows, docs = _corpus()
    for row in rows:
        if row["valid"]:
            continue
        doc = docs[row["file"]][row["index"]]
        report = validate.validate_document(doc)
        lines = (CORPUS / row["file"]).read_text().count("\n") + 1
        assert report.errors, row
        for f in report.errors:
            assert 1 <= f.line <= lines and f.column >= 1, (row, f)


def test_corpus_has_no_documents_outside_the_verdicts():
    rows, _ = _corpus()
    listed = {(r["file"], r["index"]) for r in rows}
    docs = load.load_paths([str(CORPUS)])
    for doc in docs:
        if validate.is_policy(doc):
            rel = str(Path(doc.file).relative_to(CORPUS))
            assert (rel, doc.index) in listed, (rel, doc.index)


def test_cli_json_over_the_corpus_matches_the_valid_column():
    import subprocess
    import sys

    rows, _ = _corpus()
    proc = subprocess.run([sys.executable, "-m", "ciliumctl.cli.main", "policy", "validate", "-o", "json", "."],
                          cwd=CORPUS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    got = {(d["file"].removeprefix("./"), d["index"]): d["valid"] for d in json.loads(proc.stdout)}
    want = {(r["file"], r["index"]): r["valid"] for r in rows}
    assert got == want
