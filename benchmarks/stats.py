"""Small statistics the benchmarks share."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank (p90 of 20 samples is the 18th smallest)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]
