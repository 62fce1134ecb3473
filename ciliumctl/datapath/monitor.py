"""Monitor aggregation: how much the datapath traces, with Cilium's meaning and names (the agent's
--monitor-aggregation, --monitor-aggregation-interval, --monitor-aggregation-flags; levels in
pkg/option/monitor.go, their effect in bpf/lib/trace.h and bpf/lib/conntrack.h). The programs read it from the
`monitor_config` map for every packet, so a new level takes effect at once, without a recompile.

none     every packet, at both observation points (from-endpoint and to-endpoint)
lowest, low   no trace on receive (from-endpoint): one trace per packet
medium   (default) per connection: its first packet per direction, the first sight of a report flag (default
         syn, fin, rst), every closing packet (FIN/RST), and again after the report interval (default 5 s)
maximum  as medium (trace.h treats every level from medium up alike)
Drops and policy verdicts are sent at every level."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ciliumctl.base.errors import UsageError

# pkg/option/monitor.go: MonitorAggregationLevelNone 0, Lowest 1, Low 2, Medium 3, Max 4
LEVELS = {"none": 0, "lowest": 1, "low": 2, "medium": 3, "maximum": 4}
_ALIASES = {"": "none", "disabled": "none", "max": "maximum"}   # monitorAggregationOption's other spellings
# pkg/option/config.go TCPFlags (the ns bit is not in the TCP flags byte the datapath sees)
TCP_FLAGS = {"syn": 0x02, "fin": 0x01, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ece": 0x40,
             "cwr": 0x80}
DEFAULT_LEVEL = "medium"          # the agent's --monitor-aggregation default
DEFAULT_INTERVAL = 5.0            # --monitor-aggregation-interval 5s
DEFAULT_FLAGS = "syn,fin,rst"     # defaults.MonitorAggregationFlagsDefault


@dataclass(frozen=True)
class MonitorConfig:
    level: str = DEFAULT_LEVEL
    interval: float = DEFAULT_INTERVAL   # seconds
    flags: str = DEFAULT_FLAGS

    def pack(self) -> bytes:
        from ciliumctl.datapath.maps import MONITOR_CONFIG

        return MONITOR_CONFIG.pack(LEVELS[self.level], flag_mask(self.flags), int(self.interval * 1e9))

    @classmethod
    def unpack(cls, raw: bytes) -> MonitorConfig:
        from ciliumctl.datapath.maps import MONITOR_CONFIG

        level, mask, interval_ns = MONITOR_CONFIG.unpack(raw)
        name = next((k for k, v in LEVELS.items() if v == level), DEFAULT_LEVEL)
        flags = ",".join(k for k, v in TCP_FLAGS.items() if mask & v)
        return cls(name, interval_ns / 1e9, flags)

    def to_dict(self) -> dict:
        return {"level": self.level, "interval_seconds": self.interval, "flags": self.flags}


def parse_level(value: str) -> str:
    """A level name or number, as ParseMonitorAggregationLevel accepts it; the canonical name."""
    v = str(value).strip().lower()
    v = _ALIASES.get(v, v)
    if v in LEVELS:
        return v
    if v.isdigit() and int(v) in LEVELS.values():
        return next(k for k, n in LEVELS.items() if n == int(v))
    raise UsageError(f"--monitor-aggregation {value!r}: use none, lowest, low, medium or maximum (or 0-4)")


def parse_interval(value: str | float) -> float:
    """Seconds, from a number of seconds or a duration such as 5s, 500ms, 1m."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", str(value))
    if not m:
        raise UsageError(f"--monitor-aggregation-interval {value!r}: use a duration such as 5s, 500ms or 1m")
    secs = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not 0 < secs <= 3600:
        raise UsageError(f"--monitor-aggregation-interval {value!r}: must be above 0 and at most 1h")
    return secs


def parse_flags(value: str) -> str:
    """A comma-separated list of TCP flag names (or `all`); canonical order."""
    names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
    if names == ["all"]:
        names = list(TCP_FLAGS)
    bad = [n for n in names if n not in TCP_FLAGS]
    if bad or not names:
        raise UsageError(f"--monitor-aggregation-flags {value!r}: use TCP flag names ({', '.join(TCP_FLAGS)}) "
                         "separated by commas, or all")
    return ",".join(k for k in TCP_FLAGS if k in names)


def flag_mask(flags: str) -> int:
    return sum(TCP_FLAGS[n] for n in flags.split(",") if n)
