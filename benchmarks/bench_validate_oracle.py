"""Differential run of `policy validate` against Cilium 1.19's own validator (cnp-oracle): mutated policies
from the shared corpus and the examples, every verdict column compared. Prints the agreement, the time each
side took, and samples of any disagreement.

Run: .venv/bin/python benchmarks/bench_validate_oracle.py [--cases 100000] [--seed 1] [--samples 10]
Target: no disagreement in 100,000 cases."""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def oracle_path() -> str:
    unpack = REPO.parent / "shared" / "tools" / "unpack.sh"
    if not unpack.exists():
        raise SystemExit(f"cnp-oracle not found: no {unpack}")
    out = subprocess.run([str(unpack), str(REPO / ".tools" / "bin")], capture_output=True, text=True, check=True)
    return os.path.join(out.stdout.strip(), "cnp-oracle")


def main() -> None:
    from tests.oracle.differential import ORACLE_BLIND, run_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--samples", type=int, default=10, help="disagreements to print in full")
    args = ap.parse_args()
    oracle = oracle_path()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ciliumctl-oracle-") as work:
        result = run_cases(oracle, Path(work), cases=args.cases, seed=args.seed)
    wall = time.perf_counter() - t0
    agree = result.cases - result.disagreeing_cases
    print(f"seed {args.seed}: {result.cases} cases, {agree} agree in all three columns "
          f"({100.0 * agree / max(result.cases, 1):.3f}%), {result.disagreeing_cases} disagree "
          f"({len(result.disagreements)} verdicts)")
    by_column = collections.Counter(d.column for d in result.disagreements)
    if by_column:
        print("disagreements by column: " + ", ".join(f"{c} {n}" for c, n in by_column.most_common()))
    print(f"apart: {len(result.oracle_blind)} strict verdicts where {ORACLE_BLIND}")
    print(f"time: cnp-oracle {result.oracle_seconds:.1f} s, ciliumctl {result.ours_seconds:.1f} s (in process, "
          f"three columns), wall {wall:.1f} s")
    for d in result.disagreements[:args.samples]:
        print("\n" + str(d))
    verdict = "OK" if not result.disagreements else "DISAGREEMENTS"
    print(f"\ntarget: no disagreement in {args.cases} cases -> {verdict}")


if __name__ == "__main__":
    main()
