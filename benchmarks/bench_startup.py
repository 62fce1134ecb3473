"""Start-up: `ciliumctl --help` against a one-command Typer app, and the CNI plugin against a bare interpreter,
all measured in this run, interleaved round by round so that load from other processes hits every command alike.

The ratios use the CPU time (user + system) of each child process: on a shared machine the wall time mostly
measures the neighbours (it is printed too). The one-command app is measured twice: as Typer renders help by
default (rich boxes) and with plain help, as ciliumctl renders it, so that the like-for-like ratio shows what our
command tree costs and not what the help style saves.

The CNI plugin is exec'd once per pod ADD/DEL, with `python -S` (ciliumctl/node/cni/install.py): its floor is
an interpreter that imports what any plugin speaking JSON over a unix socket needs (json, os, socket, sys).

Targets: ciliumctl --help <= 1.2x both one-command apps; ciliumctl-cni VERSION <= 1.2x that floor.
Run: .venv/bin/python benchmarks/bench_startup.py [-n ROUNDS]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_COMMAND_APP = '''
import typer
app = typer.Typer({options})
@app.command()
def hello(name: str = "world"):
    """Say hello."""
    print(name)
app()
'''
CNI_PLUGIN = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"   # what the installed launcher runs
              "from ciliumctl.endpoints.cni_plugin import main\nmain()\n")
HELP_TARGET = 1.2
CNI_TARGET = 1.2


def run_once(argv: list[str], env: dict, stdin: bytes) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of argv."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    proc.stdin.write(stdin)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=20)
    args = parser.parse_args()
    py = sys.executable
    env = dict(os.environ, COLUMNS="80")
    cni_env = dict(env, CNI_COMMAND="VERSION")
    cni_conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "ciliumctl-cni"}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        rich_app, plain_app = Path(tmp, "rich_app.py"), Path(tmp, "plain_app.py")
        rich_app.write_text(ONE_COMMAND_APP.format(options=""))
        plain_app.write_text(ONE_COMMAND_APP.format(options="rich_markup_mode=None"))
        commands = {
            "python -c pass": ([py, "-c", "pass"], env, b""),
            "one-command Typer app --help": ([py, str(rich_app), "--help"], env, b""),
            "  same, plain help": ([py, str(plain_app), "--help"], env, b""),
            "ciliumctl --help": ([py, "-m", "ciliumctl.cli.main", "--help"], env, b""),
            "python -S -c pass": ([py, "-S", "-c", "pass"], env, b""),
            "python -S, import json os socket sys": ([py, "-S", "-c", "import json, os, socket, sys"], env, b""),
            "ciliumctl-cni VERSION (python -S)": ([py, "-S", "-c", CNI_PLUGIN], cni_env, cni_conf),
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, run_env, stdin) in commands.items():
                samples[name].append(run_once(argv, run_env, stdin))
    cpu = {name: statistics.median(c for c, _ in s) for name, s in samples.items()}
    wall = {name: statistics.median(w for _, w in s) for name, s in samples.items()}

    print(f"{args.rounds} rounds, medians; ratios of CPU time")
    print(f"{'what':38} {'cpu s':>7} {'wall s':>7} {'ratio':>6}")
    base_of = {"ciliumctl --help": "  same, plain help", "ciliumctl-cni VERSION (python -S)":
               "python -S, import json os socket sys"}
    for name in commands:
        base = base_of.get(name)
        ratio = f"{cpu[name] / cpu[base]:6.2f}" if base else ""
        print(f"{name:38} {cpu[name]:7.3f} {wall[name]:7.3f} {ratio}")
    vs_default = cpu["ciliumctl --help"] / cpu["one-command Typer app --help"]
    vs_plain = cpu["ciliumctl --help"] / cpu["  same, plain help"]
    cni = cpu["ciliumctl-cni VERSION (python -S)"] / cpu["python -S, import json os socket sys"]
    print(f"ciliumctl --help: {vs_default:.2f}x the one-command Typer app, {vs_plain:.2f}x it with plain help "
          f"(target <= {HELP_TARGET})")
    print(f"ciliumctl-cni VERSION: {cni:.2f}x python -S importing json, os, socket, sys (target <= {CNI_TARGET})")
    return 0 if max(vs_default, vs_plain) <= HELP_TARGET and cni <= CNI_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
