"""`install --monitor-aggregation*` on a sandbox node: Cilium's levels and defaults, kept across installs, shown by
`status`, written to the running datapath without a recompile; bad values are one line and exit 2."""

import json

import pytest

pytestmark = pytest.mark.root


def _monitor(node) -> dict:
    return json.loads(node.cli("status", "-o", "json").stdout)["datapath"]["monitor_aggregation"]


def test_levels_are_set_kept_and_shown(node):
    node.cli("install", "--no-agent")
    assert _monitor(node) == {"level": "medium", "interval_seconds": 5.0, "flags": "syn,fin,rst"}
    assert "medium (report flags syn,fin,rst, interval 5s)" in node.cli("status").stdout
    pins = (node.bpffs / "from_container").stat().st_ino
    out = node.cli("install", "--no-agent", "--monitor-aggregation", "1", "--monitor-aggregation-interval", "500ms",
                   "--monitor-aggregation-flags", "rst,SYN").stdout
    assert "monitor aggregation lowest" in out
    assert _monitor(node) == {"level": "lowest", "interval_seconds": 0.5, "flags": "syn,rst"}
    assert (node.bpffs / "from_container").stat().st_ino == pins        # the same programs: no recompile
    node.cli("install", "--no-agent")                                   # omitted flags keep the setting
    assert _monitor(node)["level"] == "lowest"
    node.cli("install", "--no-agent", "--monitor-aggregation", "max")
    assert _monitor(node)["level"] == "maximum"


@pytest.mark.parametrize("flag,value", [("--monitor-aggregation", "high"), ("--monitor-aggregation-interval", "5x"),
                                        ("--monitor-aggregation-flags", "syn,nope")])
def test_bad_values_are_one_line_exit_2(node, flag, value):
    res = node.cli("install", "--no-agent", flag, value, check=False)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and flag in res.stderr
    assert not node.bpffs.exists()          # refused before anything was changed
