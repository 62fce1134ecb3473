"""hubble observe --time-format: the named Go layouts hubble offers (hubble/pkg/time/time.go FormatNames),
rendered in UTC for a protobuf Timestamp. Go's ".999" fractions drop trailing zeros (and the dot if none left)."""

from __future__ import annotations

import time

from ciliumctl.base.errors import UsageError

NAMES = ("StampMilli", "YearMonthDay", "YearMonthDayHour", "YearMonthDayHourMinute", "RFC3339", "RFC3339Milli",
         "RFC3339Micro", "RFC3339Nano", "RFC1123Z")


def _fraction(nanos: int, digits: int) -> str:
    frac = f"{nanos:09d}"[:digits].rstrip("0")
    return f".{frac}" if frac else ""


def formatter(name: str):
    """A function Timestamp -> text for the layout called name; one line, exit 2 for an unknown name."""
    if name not in NAMES:
        raise UsageError(f"--time-format {name!r}: one of {', '.join(NAMES)}")

    def fmt(ts) -> str:
        if ts.seconds == 0 and ts.nanos == 0:
            return "N/A"
        g = time.gmtime(ts.seconds)
        date = time.strftime("%Y-%m-%d", g)
        if name == "StampMilli":
            clock = time.strftime("%H:%M:%S", g)
            return f"{time.strftime('%b', g)} {g.tm_mday:2d} {clock}.{ts.nanos // 1_000_000:03d}"
        if name == "YearMonthDay":
            return date
        if name == "YearMonthDayHour":
            return f"{date}T{g.tm_hour:02d}Z"
        if name == "YearMonthDayHourMinute":
            return f"{date}T{time.strftime('%H:%M', g)}Z"
        if name == "RFC1123Z":
            return time.strftime("%a, %d %b %Y %H:%M:%S +0000", g)
        digits = {"RFC3339": 0, "RFC3339Milli": 3, "RFC3339Micro": 6, "RFC3339Nano": 9}[name]
        return f"{date}T{time.strftime('%H:%M:%S', g)}{_fraction(ts.nanos, digits)}Z"

    return fmt
