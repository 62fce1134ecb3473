"""The agent's CPU budget: its CPU per 10,000 new connections/s, the number that says whether watching the datapath
costs the node what its workloads need. The agent samples its own process CPU time (all threads) and the
datapath's count of new connections (the ct_created map) every few seconds and keeps the rates over the last
half minute; `status` reads them from a file in the run directory, metrics from the agent itself.

A connection between two endpoints of this node is tracked on both of their interfaces (once as egress, once as
ingress); new connections/s counts it once: the larger of the two directions' rates."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

from ciliumctl.base import paths

PERIOD = 2.0        # seconds between samples
WINDOW = 30.0       # rates over about this long
MIN_RATE = 50.0     # new connections/s below which a per-10k figure means nothing


def budget_file() -> Path:
    return paths.run_dir() / "agent-budget.json"


def _connections() -> tuple[int, int] | None:
    """(ingress, egress) new connections tracked by the pinned datapath so far, or None when it is not there."""
    from ciliumctl.datapath import bpfsys
    from ciliumctl.datapath.loader import new_connections

    try:
        m = bpfsys.Map.from_pin(paths.bpffs_dir() / "ct_created")
    except OSError:
        return None
    try:
        n = new_connections(m)
    except OSError:
        return None
    finally:
        m.close()
    return n["ingress"], n["egress"]


class CpuBudget:
    def __init__(self, period: float = PERIOD, window: float = WINDOW, write: bool = True):
        self.period, self.window, self.write = period, window, write
        self._samples: deque[tuple[float, float, tuple[int, int] | None]] = deque()
        self._next = 0.0
        self.current: dict = {}

    def tick(self) -> None:
        """Take a sample when one is due (cheap to call often: the agent calls it from its event loop)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.period
        self._samples.append((now, time.process_time(), _connections()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        self.current = self._rates()
        if self.write:
            _save(self.current)

    def _rates(self) -> dict:
        (t0, cpu0, c0), (t1, cpu1, c1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span <= 0:
            return {}
        cores = (cpu1 - cpu0) / span
        out: dict[str, float | None] = {"window_seconds": round(span, 3), "agent_cpu_cores": round(cores, 4)}
        if c0 is not None and c1 is not None and c1 >= c0:   # a reinstall resets the counters: skip that window
            conns = max(c1[0] - c0[0], c1[1] - c0[1]) / span
            out["new_connections_per_second"] = round(conns, 1)
            out["cores_per_10k_new_connections_per_second"] = (round(cores / (conns / 10000), 4)
                                                               if conns >= MIN_RATE else None)
        return out


def _save(data: dict) -> None:
    try:
        tmp = budget_file().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, budget_file())
    except OSError:
        pass   # a run directory gone (uninstall): the next sample tries again


def read() -> dict:
    """What the running agent measured last ({} when no agent wrote it)."""
    try:
        return json.loads(budget_file().read_text())
    except (OSError, ValueError):
        return {}


def metric_lines(budget: dict) -> list[str]:
    """The budget in the Prometheus text format (agent metrics endpoint)."""
    out = ["# HELP ciliumctl_agent_cpu_cores CPU of the agent process (cores), over the budget window",
           "# TYPE ciliumctl_agent_cpu_cores gauge",
           f"ciliumctl_agent_cpu_cores {budget.get('agent_cpu_cores', 0)}",
           "# HELP ciliumctl_datapath_new_connections_per_second New connections/s tracked by the datapath",
           "# TYPE ciliumctl_datapath_new_connections_per_second gauge",
           f"ciliumctl_datapath_new_connections_per_second {budget.get('new_connections_per_second', 0)}"]
    per10k = budget.get("cores_per_10k_new_connections_per_second")
    out += ["# HELP ciliumctl_agent_cpu_cores_per_10k_new_connections_per_second The agent's CPU budget: its cores "
            "per 10,000 new connections/s (NaN below 50 new connections/s)",
            "# TYPE ciliumctl_agent_cpu_cores_per_10k_new_connections_per_second gauge",
            f"ciliumctl_agent_cpu_cores_per_10k_new_connections_per_second {'NaN' if per10k is None else per10k}"]
    return out
