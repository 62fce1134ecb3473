"""`ciliumctl --help` start-up against a one-command Typer app, both measured in this run.

Target: ratio <= 1.2 (the command tree must not import bcc, grpc, kubernetes, pyroute2 at start-up).
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 15
MINIMAL_APP = '''
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "world"):
    """Say hello."""
    print(name)
app()
'''


def timed(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        minimal = Path(tmp, "minimal.py")
        minimal.write_text(MINIMAL_APP)
        bare = timed([sys.executable, "-c", "pass"])
        baseline = timed([sys.executable, str(minimal), "--help"])
        ours = timed([sys.executable, "-m", "ciliumctl.cli.main", "--help"])
    print(f"{'what':38} {'median s':>9} {'ratio':>7}")
    print(f"{'python -c pass':38} {bare:9.3f} {bare / baseline:7.2f}")
    print(f"{'one-command Typer app --help':38} {baseline:9.3f} {1.0:7.2f}")
    print(f"{'ciliumctl --help':38} {ours:9.3f} {ours / baseline:7.2f}   target <= 1.20")
    return 0 if ours / baseline <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
