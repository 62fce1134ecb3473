"""Policy resolution time: N policies (one CIDR rule + one L4 rule each) over 50 endpoints -> ResolvedState,
against a baseline measured in the same run: only parsing the same N policies into the model (parse_policy),
the least any resolution must do. Prints seconds and the ratio resolve/parse.

Run: .venv/bin/python benchmarks/bench_resolve.py [-n 1000 10000]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ciliumctl.endpoints.model import Endpoint  # noqa: E402
from ciliumctl.identity.allocator import MemoryAllocator  # noqa: E402
from ciliumctl.policy.model import parse_policy  # noqa: E402
from ciliumctl.policy.resolve import resolve  # noqa: E402


def policies(n: int) -> list[dict]:
    return [{"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
             "metadata": {"name": f"p{i}", "namespace": "default"},
             "spec": {"endpointSelector": {"matchLabels": {"app": f"a{i % 5}"}},
                      "egress": [{"toCIDR": [f"172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32"]},
                                 {"toEndpoints": [{"matchLabels": {"app": f"a{(i + 1) % 5}"}}],
                                  "toPorts": [{"ports": [{"port": str(1000 + i % 60000), "protocol": "TCP"}]}]}]}}
            for i in range(n)]


def best_of(fn, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    eps = [Endpoint(i, f"e{i}", "default", {"app": f"a{i % 5}"}, ipv4=f"10.200.0.{i}") for i in range(1, 51)]
    print(f"{'policies':>9} {'parse s':>9} {'resolve s':>10} {'ratio':>6} {'entries':>9}")
    for n in args.n:
        docs = policies(n)
        parse_s = best_of(lambda docs=docs: [parse_policy(d) for d in docs])
        holder: dict = {}
        resolve_s = best_of(lambda docs=docs, holder=holder: holder.update(
            st=resolve(eps, docs, "default", MemoryAllocator())))
        entries = sum(len(p.ingress.entries) + len(p.egress.entries) for p in holder["st"].endpoints.values())
        print(f"{n:>9} {parse_s:>9.3f} {resolve_s:>10.3f} {resolve_s / parse_s:>6.1f} {entries:>9}")


if __name__ == "__main__":
    main()
