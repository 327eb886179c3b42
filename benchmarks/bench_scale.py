"""Benchmark: ``netpol-learn resolve`` and ``generate`` as whole processes at three flow-log sizes
over one 10,000-pod inventory, and the growth exponent between sizes (issue 15 item 2).

The inventory and flows are bench_resolve.py's cluster (10,000 pods in 2,000 Deployments across
100 namespaces, 2,000 Services; flows pod to Service, pod to pod, pod to outside, node to pod).
For each size the flow log is written to ``--dir`` and each command runs once as a subprocess;
its wall time and peak RSS (``os.wait4``) are printed, and between consecutive sizes the
exponent ``log(t2 / t1) / log(n2 / n1)`` (1.0: linear in flows).

    python benchmarks/bench_scale.py                          # 100,000, 300,000, 1,000,000 flows
    python benchmarks/bench_scale.py --sizes 30000 100000 300000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_merge import run as run_measured  # noqa: E402
from bench_resolve import build, flows  # noqa: E402

from netpol_learn._flowlog import write_flow_log  # noqa: E402


def run(argv: list[str]) -> tuple[float, float]:
    r = run_measured(argv)
    return r["wall_s"], r["peak_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000], help="flow lines of each log")
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench/scale"))
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    inv = build(args.pods, args.pods // 5, 100, 20)
    inventory = args.dir / f"inventory-{args.pods}.json"
    inventory.write_text(json.dumps(inv))
    rows = []
    print("| flows | resolve | resolve peak | generate | generate peak |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        log = args.dir / f"flows-{n}.jsonl"
        if not log.exists():
            write_flow_log(flows(inv, n), log)
        py = [sys.executable, "-m", "netpol_learn"]
        r = run([*py, "resolve", "--flows", str(log), "--inventory", str(inventory), "-o", str(args.dir / "resolved.txt")])
        g = run([*py, "generate", "--flows", str(log), "--inventory", str(inventory), "-o", str(args.dir / f"policies-{n}")])
        rows.append({"flows": n, "resolve_s": r[0], "resolve_mb": r[1], "generate_s": g[0], "generate_mb": g[1]})
        print(f"| {n:,} | {r[0]:.1f} s | {r[1]:,.0f} MB | {g[0]:.1f} s | {g[1]:,.0f} MB |", flush=True)
    for a, b in zip(rows, rows[1:]):
        k = math.log(b["flows"] / a["flows"])
        print(f"exponent {a['flows']:,} -> {b['flows']:,}: resolve {math.log(b['resolve_s'] / a['resolve_s']) / k:.2f}, "
              f"generate {math.log(b['generate_s'] / a['generate_s']) / k:.2f}; memory: resolve "
              f"{math.log(b['resolve_mb'] / a['resolve_mb']) / k:.2f}, generate {math.log(b['generate_mb'] / a['generate_mb']) / k:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
