"""`policy validate` against Cilium 1.19's own validator (cnp-oracle, ../shared/tools) on mutated policies it
has never seen: every verdict column must agree. A fixed seed, so a failure can be replayed; the longer run is
benchmarks/bench_validate_oracle.py. The oracle comes from the cnp_oracle fixture (tests/conftest.py): missing,
these tests fail under CI=true."""

import os

import pytest

from tests.oracle.differential import compare_files, run_cases
from tests.oracle.mutations import CORPUS, Generator, seed_documents

CASES = 3000
SEED = 20261204


@pytest.fixture(scope="module")
def corpus():
    if not CORPUS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"policy corpus missing at {CORPUS}: CI must provide ../shared beside the clone")
        pytest.skip(f"policy corpus not found at {CORPUS}")
    return CORPUS


def test_mutated_policies_get_cilium_s_verdict_in_all_three_columns(cnp_oracle, corpus, tmp_path):
    result = run_cases(str(cnp_oracle), tmp_path, cases=CASES, seed=SEED)
    assert result.cases >= CASES
    assert not result.disagreements, result.summary(samples=8)


def test_the_generator_is_deterministic_and_covers_the_reported_categories(corpus):
    seeds = seed_documents()
    assert len(seeds) >= 100
    first = Generator(seeds, seed=1).files(400, 20)
    assert first == Generator(seeds, seed=1).files(400, 20)
    text = "".join(t for _, t in first)
    for needle in ("family: IPv6", "nodeSelector", "endpointSelector: null", "world-ipv4", "---\n---\n",
                   "kind: List", "icmps", "toFQDNs", "rules:"):
        assert needle in text, needle


def test_a_disagreement_is_reported(cnp_oracle, tmp_path, monkeypatch):
    # the harness itself must be able to fail: a document the oracle refuses, against a validator made to
    # accept everything, shows up as a disagreement in each column
    from tests.oracle import differential

    (tmp_path / "bad.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\n"
        "spec: {endpointSelector: {}, egress: [{icmps: [{fields: [{type: PacketTooBig}]}]}]}\n")
    result = compare_files(str(cnp_oracle), tmp_path)
    assert result.cases == 1 and not result.disagreements  # ciliumctl refuses it too
    real = differential.our_verdicts
    monkeypatch.setattr(differential, "our_verdicts", lambda path: [
        (entry[0], entry[1], entry[2], dict.fromkeys(differential.COLUMNS, True), [], False, False)
        for entry in real(path)])
    result = compare_files(str(cnp_oracle), tmp_path)
    assert sorted(d.column for d in result.disagreements) == sorted(differential.COLUMNS)
