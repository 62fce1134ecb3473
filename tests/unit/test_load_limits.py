"""Policy input is bounded: merge keys and aliases share one node budget, files and stdin have a size limit,
one policy object has a size limit (--max-size raises both), and folders are read for regular files only."""

import io
import os
import subprocess
import sys

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.policy import load

CNP = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: big}\n"
       "spec:\n  endpointSelector: {}\n  ingress: [{}]\n  description: \"%s\"\n")


def merge_bomb(levels: int) -> str:
    """Each level merges the one before twice: 2**levels values from a few hundred bytes."""
    lines = ["a0: &a0 {x: 1, y: 2}"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i}\n  <<: [*a{i - 1}, *a{i - 1}]\n  k{i}: [*a{i - 1}, *a{i - 1}]")
    return "\n".join(lines) + "\n"


def test_merge_keys_share_the_node_budget(monkeypatch):
    monkeypatch.setattr(load, "MAX_NODES", 20_000)
    with pytest.raises(UsageError, match="expands to more than 20000 values"):
        load.load_text(merge_bomb(40), "bomb.yaml")


def test_a_small_merge_still_works():
    doc, = load.load_text("base: &b {x: 1}\nkind: CiliumNetworkPolicy\nmetadata: {name: m, <<: *b}\n")
    assert doc.data["metadata"] == {"name": "m", "x": 1}


def test_an_endless_file_is_cut_at_the_limit():
    with pytest.raises(UsageError, match=r"/dev/zero: more than 24 MiB of policies .*raise --max-size"):
        load.load_paths(["/dev/zero"])


def test_stdin_has_the_same_limit():
    with pytest.raises(UsageError, match=r"standard input: more than 16 KiB"):
        load.load_paths(["-"], stdin=io.BytesIO(b"#" * (16 * 1024 + 1)), max_size=1024)


def test_one_policy_over_max_size_is_refused_and_the_flag_raises_it(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(CNP % ("x" * 2_000_000))
    with pytest.raises(UsageError, match=r"document 0 \(CiliumNetworkPolicy big\) is 1.91 MiB as JSON, more than "
                                         r"--max-size 1.5 MiB"):
        load.load_paths([str(f)])
    assert [d.name for d in load.load_paths([str(f)], max_size=load.parse_size("4Mi"))] == ["big"]


def test_a_fifo_in_a_folder_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(UsageError, match="pipe.yaml: not a regular file"):
        load.load_paths([str(tmp_path)])


@pytest.mark.parametrize("text", ["", "0", "1.5Mi", "2 MB", "-1", "Mi"])
def test_bad_sizes_are_one_clear_line(text):
    with pytest.raises(UsageError, match="give bytes with an optional suffix"):
        load.parse_size(text)


def test_sizes():
    assert load.parse_size("1536Ki") == load.DEFAULT_MAX_SIZE
    assert load.parse_size("2M") == 2_000_000 and load.parse_size("1Gi") == 1 << 30


def test_cli_refuses_with_exit_2_and_one_line(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(CNP % ("x" * 3000))
    run = [sys.executable, "-m", "ciliumctl.cli.main", "policy", "validate", str(f)]
    small = subprocess.run(run + ["--max-size", "2Ki"], capture_output=True, text=True)
    assert small.returncode == 2 and small.stderr.count("\n") == 1 and "--max-size" in small.stderr
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
