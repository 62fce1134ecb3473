"""Nothing the project runs switches on the kernel's BPF run-time statistics: BPF_ENABLE_STATS has the effect of
the kernel.bpf_stats_enabled sysctl for every program on the machine (a cost on every run of every program, not
only ours). Benchmarks time programs with BPF_PROG_TEST_RUN (benchmarks/bpf_test_run.py) instead."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWITCHES = {"enable_run_time_stats", "BPF_ENABLE_STATS"}     # what ciliumctl.datapath.bpfsys once had
SYSCTL = "bpf_stats_enabled"


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def switches_in(path: Path, root: Path = ROOT) -> list[str]:
    """Lines of `path` that use the statistics switch (a name or attribute read) or name the sysctl in a string
    that is not a docstring."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in SWITCHES and isinstance(node.ctx, ast.Load) or \
                isinstance(node, ast.Attribute) and node.attr in SWITCHES:
            found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SYSCTL in node.value \
                and id(node) not in docs:
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_code_switches_on_bpf_run_time_statistics():
    paths = [p for top in ("ciliumctl", "benchmarks", "tests", "scripts") for p in sorted((ROOT / top).rglob("*.py"))]
    found = [hit for path in paths if path.resolve() != Path(__file__).resolve() for hit in switches_in(path)]
    assert not found, "switches on the kernel's BPF statistics (time programs with BPF_PROG_TEST_RUN): " + \
        ", ".join(found)


def test_the_check_finds_a_switch(tmp_path):
    """The check itself: a call of the switch, and the sysctl written, are found; a mention in a docstring is not."""
    bench = tmp_path / "bench.py"
    bench.write_text('"""Never kernel.bpf_stats_enabled."""\nfrom ciliumctl.datapath import bpfsys\n'
                     'fd = bpfsys.enable_run_time_stats()\n'
                     'open("/proc/sys/kernel/bpf_stats_enabled", "w").write("1")\n')
    assert switches_in(bench, tmp_path) == ["bench.py:3", "bench.py:4"]
