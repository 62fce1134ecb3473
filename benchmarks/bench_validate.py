"""`ciliumctl policy validate` over the whole shared policy corpus, wall time per run, against Cilium's own
validator (cnp-oracle, ../shared/tools) on the same files, bare Python start-up (`python -c pass`) and
`ciliumctl --help`, all measured in the same run (ciliumctl and the oracle alternate, run by run).

Targets: at most 3x cnp-oracle's wall time; the whole corpus under 0.5 s wall.
Run: .venv/bin/python benchmarks/bench_validate.py [-n 15]
The corpus is ../shared/corpus/policies beside the repository (or --corpus PATH)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 0.5
TARGET_RATIO = 3.0


def oracle_path() -> str | None:
    unpack = REPO.parent / "shared" / "tools" / "unpack.sh"
    if not unpack.exists():
        return None
    out = subprocess.run([str(unpack), str(REPO / ".tools" / "bin")], capture_output=True, text=True, check=True)
    return os.path.join(out.stdout.strip(), "cnp-oracle")


def alternating(a: list[str], b: list[str], n: int) -> tuple[list[float], list[float]]:
    """Wall times of a and b, run in turn so that both see the same machine load."""
    ta, tb = [], []
    for _ in range(n):
        ta += wall(a, 1)
        tb += wall(b, 1)
    return ta, tb


def wall(argv: list[str], n: int, ok_codes=(0, 1)) -> list[float]:
    env = {**os.environ, "NO_COLOR": "1"}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in ok_codes:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
    return times


def in_process(corpus: Path, n: int) -> tuple[float, float, int]:
    """Median ms for loading and for validating the corpus inside one process (no start-up)."""
    sys.path.insert(0, str(REPO))
    from ciliumctl.policy import load, validate

    loads, checks = [], []
    docs = []
    for _ in range(n):
        t0 = time.perf_counter()
        docs = load.load_paths([str(corpus)])
        t1 = time.perf_counter()
        validate.validate_documents(docs)
        t2 = time.perf_counter()
        loads.append((t1 - t0) * 1000)
        checks.append((t2 - t1) * 1000)
    return statistics.median(loads), statistics.median(checks), len(docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=15, help="runs per measurement (median reported)")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus" / "policies")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"corpus not found at {args.corpus}: pass --corpus PATH")
    py = sys.executable
    cli = [py, "-m", "ciliumctl.cli.main"]
    script = Path(py).parent / "ciliumctl"   # the console script, what a user runs
    user_cli = [str(script)] if script.exists() else cli
    wall([py, "-c", "pass"], 2)  # warm the page cache
    wall(cli + ["policy", "validate", "-o", "json", str(args.corpus)], 2)
    oracle = oracle_path()
    if oracle:
        wall([oracle, str(args.corpus)], 2)
        ours_t, oracle_t = alternating(user_cli + ["policy", "validate", str(args.corpus)],
                                       [oracle, str(args.corpus)], args.n)
    bare = statistics.median(wall([py, "-c", "pass"], args.n))
    helpt = statistics.median(wall(cli + ["--help"], args.n))
    runs = {fmt: wall(cli + ["policy", "validate", "-o", fmt, str(args.corpus)], args.n)
            for fmt in ("json", "text", "sarif")}
    load_ms, check_ms, ndocs = in_process(args.corpus, args.n)

    print(f"corpus: {args.corpus} ({ndocs} documents), median of {args.n} runs")
    print(f"{'measurement':<40}{'wall ms':>10}{'x python -c pass':>18}")
    print(f"{'python -c pass (baseline)':<40}{bare * 1000:>10.1f}{1.0:>18.2f}")
    print(f"{'ciliumctl --help':<40}{helpt * 1000:>10.1f}{helpt / bare:>18.2f}")
    for fmt, times in runs.items():
        med = statistics.median(times)
        print(f"{'policy validate corpus -o ' + fmt:<40}{med * 1000:>10.1f}{med / bare:>18.2f}"
              f"   (max {max(times) * 1000:.0f} ms)")
    print(f"in process: load {load_ms:.1f} ms, validate {check_ms:.1f} ms "
          f"({(load_ms + check_ms) / max(ndocs, 1) * 1000:.0f} us per document)")
    if oracle:
        ours_m, oracle_m = statistics.median(ours_t), statistics.median(oracle_t)
        ratio = ours_m / oracle_m
        print(f"{' '.join(Path(a).name for a in user_cli[:1])} policy validate corpus: {ours_m * 1000:.1f} ms, "
              f"cnp-oracle corpus: {oracle_m * 1000:.1f} ms -> ratio {ratio:.2f}x "
              f"(target <= {TARGET_RATIO:.1f}x: {'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'})")
    else:
        print("cnp-oracle not found (../shared/tools): ratio not measured")
    worst = max(statistics.median(t) for t in runs.values())
    verdict = "OK" if worst < TARGET_S else "OVER TARGET"
    print(f"target: whole corpus < {TARGET_S * 1000:.0f} ms wall -> {verdict} ({worst * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
