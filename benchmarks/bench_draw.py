"""`policy draw` and `policy generate` at size, as a user runs them (the CLI in a child process, output to a
file), against baselines measured in the same run:

- draw 1,000 policies over 500 workloads (Pod objects beside them), terminal tree and -o svg; baseline:
  `policy validate` of the same files (loading and validating is the least draw must do), and for svg also
  Graphviz's dot alone on the same dot text (the layout);
- generate from 100,000 flows (a hubble jsonpb file of 500 workloads talking); baseline: reading the file's
  lines with json.loads in the same interpreter (the least any reader must do).

Targets (issue 16): terminal < 2 s, svg < 5 s, generate < 5 s.

Run: .venv/bin/python benchmarks/bench_draw.py [--policies 1000] [--workloads 500] [--flows 100000]"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import flowfile as ff  # noqa: E402

CLI = str(Path(sys.executable).parent / "ciliumctl")
NAMESPACES = 10


def workload(i: int) -> tuple[str, dict[str, str]]:
    return f"ns{i % NAMESPACES}", {"app": f"a{i}", "tier": ("web", "api", "db")[i % 3]}


def write_inputs(d: Path, n_pol: int, n_wl: int) -> None:
    rnd = random.Random(16)
    docs = []
    for i in range(n_pol):
        ns, labels = workload(i % n_wl)
        peer_ns, peer = workload(rnd.randrange(n_wl))
        spec = {"endpointSelector": {"matchLabels": labels},
                "ingress": [{"fromEndpoints": [{"matchLabels": {**peer, "k8s:io.kubernetes.pod.namespace": peer_ns}}],
                             "toPorts": [{"ports": [{"port": str(8000 + i % 100), "protocol": "TCP"}],
                                          **({"rules": {"http": [{"method": "GET", "path": "/v1/.*"}]}}
                                             if i % 4 == 0 else {})}]}],
                "egress": [{"toCIDR": [f"172.16.{i // 256 % 256}.{i % 256}/32"],
                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
                           {"toEntities": ["kube-apiserver"]}]}
        if i % 10 == 0:
            spec["egressDeny"] = [{"toEntities": ["world"], "toPorts": [{"ports": [{"port": "25"}]}]}]
        docs.append({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                     "metadata": {"name": f"p{i}", "namespace": ns}, "spec": spec})
    (d / "policies.json").write_text("\n".join(json.dumps(x) for x in docs))
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"a{i}-5d78c9869d-x{i}", "namespace": ns,
                                                             "labels": labels},
             "status": {"podIP": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}}
            for i in range(n_wl) for ns, labels in [workload(i)]]
    (d / "pods.json").write_text("\n".join(json.dumps(x) for x in pods))


def write_flows(path: Path, n_flows: int, n_wl: int) -> None:
    rnd = random.Random(17)
    sides = []
    for i in range(n_wl):
        ns, labels = workload(i)
        sides.append(ff.pod(f"a{i}-5d78c9869d-x{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", ns, 256 + i,
                            pod_template_hash="5d78c9869d", **labels))
    world = [ff.world(f"93.184.{i // 256}.{i % 256}", f"svc{i}.example.com") for i in range(50)]
    # 2,000 distinct connections, repeated: a real capture sees the same connections again and again
    conns = []
    for _ in range(2000):
        src = rnd.choice(sides)
        dst = rnd.choice(world) if rnd.random() < 0.1 else rnd.choice(sides)
        conns.append((src, dst, rnd.choice(("TCP", "TCP", "UDP")), rnd.choice((80, 443, 8080, 8081, 8082, 5432))))
    lines = [ff.flow_line(*c) for c in conns]
    with path.open("w") as fh:
        for k in range(n_flows):
            line = lines[k % len(lines)]
            fh.write(line if line.endswith("\n") else line + "\n")


def run(*args: str, out: Path) -> float:
    t = time.perf_counter()
    with out.open("w") as fh:
        res = subprocess.run([CLI, *args], stdout=fh, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"ciliumctl {' '.join(args)}: exit {res.returncode}: {res.stderr}")
    return took


def best(fn, runs: int) -> float:
    return min(fn() for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--workloads", type=int, default=500)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    dot = shutil.which("dot")
    if dot is None:
        raise SystemExit("Graphviz's dot is missing: apt-get install graphviz (scripts/setup.sh does)")
    with tempfile.TemporaryDirectory(prefix="cctlbench-draw-") as tmp:
        d = Path(tmp)
        inputs = d / "in"
        inputs.mkdir()
        write_inputs(inputs, args.policies, args.workloads)
        flows = d / "flows.json"
        write_flows(flows, args.flows, args.workloads)
        out = d / "out"
        rows = []

        validate_s = best(lambda: run("policy", "validate", "-q", str(inputs), out=out), args.runs)
        tree_s = best(lambda: run("policy", "draw", str(inputs), out=out), args.runs)
        rows.append(("draw, terminal tree", tree_s, "policy validate", validate_s, 2.0))
        dot_s = best(lambda: run("policy", "draw", str(inputs), "-o", "dot", out=d / "g.dot"), 1)
        t = time.perf_counter()
        subprocess.run([dot, "-Tsvg", "-o", str(d / "g.svg"), str(d / "g.dot")], check=True)
        layout_s = time.perf_counter() - t
        svg_s = best(lambda: run("policy", "draw", str(inputs), "-o", "svg", out=out), 1)
        rows.append(("draw -o svg", svg_s, "validate + dot -Tsvg", validate_s + layout_s, 5.0))
        rows.append(("draw -o dot", dot_s, "policy validate", validate_s, None))

        def read_only() -> float:
            t = time.perf_counter()
            with flows.open() as fh:
                for line in fh:
                    json.loads(line)
            return time.perf_counter() - t

        read_s = best(read_only, args.runs)
        gen_s = best(lambda: run("policy", "generate", "--input-file", str(flows), out=out), args.runs)
        rows.append((f"generate, {args.flows:,} flows", gen_s, "json.loads of each line", read_s, 5.0))

        print(f"{args.policies:,} policies over {args.workloads:,} workloads; {args.flows:,} flows "
              f"(best of {args.runs}; svg and dot: one run)")
        print(f"{'what':<28} {'seconds':>8} {'baseline':<24} {'seconds':>8} {'ratio':>6}  target")
        for what, s, base, bs, target in rows:
            verdict = "-" if target is None else f"< {target:g} s: {'meets' if s < target else 'MISSES'}"
            print(f"{what:<28} {s:>8.2f} {base:<24} {bs:>8.2f} {s / bs:>6.2f}  {verdict}")


if __name__ == "__main__":
    main()
