"""The datapath's numbers are written twice, in bpf/lib/events.h and ciliumctl/datapath/events.py, and named once
more in ciliumctl/flows/names.py: all three must agree (the real hubble checks the names, test_hubble_cli.py)."""

import re
from pathlib import Path

from ciliumctl.datapath import events as ev
from ciliumctl.flows import names


def _defines() -> dict[str, int]:
    text = (Path(__file__).resolve().parents[2] / "bpf" / "lib" / "events.h").read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"^#define CTL_(\w+)\s+(\d+)\b", text, re.M)}


def test_events_h_and_events_py_agree():
    defines = _defines()
    assert {"EVENT_POLICY_VERDICT", "OBS_TO_ENDPOINT", "DROP_POLICY_DENY", "MATCH_L3_L4"} <= set(defines)
    assert {k: getattr(ev, k, None) for k in defines} == defines


def test_the_datapath_speaks_ciliums_monitor_numbers():
    assert (ev.EVENT_DROP, ev.EVENT_TRACE, ev.EVENT_POLICY_VERDICT) == \
        (names.MSG_DROP, names.MSG_TRACE, names.MSG_POLICY_VERDICT) == (1, 4, 5)
    assert names.TRACE_POINTS[ev.OBS_TO_ENDPOINT] == "to-endpoint"
    assert names.TRACE_POINTS[ev.OBS_FROM_ENDPOINT] == "from-endpoint"
    assert [names.DROP_REASONS[c] for c in (ev.DROP_POLICY, ev.DROP_UNKNOWN_L3, ev.DROP_POLICY_DENY)] == \
        ["Policy denied", "Unsupported L3 protocol", "Policy denied by denylist"]
    assert [names.DROP_REASONS[c] for c in (ev.DROP_NAT_NO_MAPPING, ev.DROP_NO_FIB)] == \
        ["No mapping for NAT masquerade", "FIB lookup failed"]
    assert [names.MATCH_TYPES[m] for m in (ev.MATCH_NONE, ev.MATCH_L3_ONLY, ev.MATCH_L3_L4, ev.MATCH_L4_ONLY,
                                           ev.MATCH_ALL, ev.MATCH_L3_PROTO, ev.MATCH_PROTO_ONLY)] == \
        ["none", "L3-Only", "L3-L4", "L4-Only", "all", "L3-Proto", "Proto-Only"]
