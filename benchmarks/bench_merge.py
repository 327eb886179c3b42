"""Benchmark: ``netpol-learn merge`` of a cluster's node logs (issue 15), as a whole process.

One node's log comes from ``netpol-learn capture`` of a flow-heavy file of the busy-node
generator (tests/pcapgen_busy.py: ``--packets``, ``--wide-flows``, ``--wide-names``; about 5,700
flows and 6,500 DNS lines at the defaults). The cluster's other nodes are copies of it with the
node's own pod addresses: 10.244.X.y (X = 0..3, the node's pods and its VXLAN peer) becomes
10.<128 + i // 64>.<(i % 64) * 4 + X>.y on node i, and fd00:10:244: becomes fd00:10:<4096 + i>:;
Services, outside addresses and names stay the same. So each node's pods are its own, as in a
cluster, and what they reach is shared. Then ``netpol-learn merge`` of the first N logs runs,
with its wall time and its peak RSS from ``os.wait4`` (medians of ``--repeat`` runs).

    python benchmarks/bench_merge.py                      # 10, 100, 500 logs
    python benchmarks/bench_merge.py --logs 500 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

_V4 = re.compile(r'"10\.244\.([0-3])\.')
_V6 = re.compile(r'"fd00:10:244:')


def node_log(text: str, i: int, source: str) -> str:
    """The log ``text`` of node 0 as node ``i``'s: its pod addresses moved to the node's own."""
    hi, lo = 128 + i // 64, (i % 64) * 4
    text = _V4.sub(lambda m: f'"10.{hi}.{lo + int(m.group(1))}.', text)
    text = _V6.sub(f'"fd00:10:{4096 + i:x}:', text)
    return text.replace(f'"sources": ["{source}"]', f'"sources": ["node-{i:04d}.pcap"]', 1)


def build(args) -> list[Path]:
    from pcapgen_busy import ensure_pcap

    args.dir.mkdir(parents=True, exist_ok=True)
    pcap = args.dir / f"node-{args.packets}-{args.wide_flows}-{args.wide_names}.pcap"
    ensure_pcap(pcap, packets=args.packets, wide_flows=args.wide_flows, wide_names=args.wide_names)
    base = args.dir / (pcap.stem + ".jsonl")
    if not base.exists():
        subprocess.run([sys.executable, "-m", "netpol_learn", "capture", str(pcap), "-o", str(base)], check=True)
    text = base.read_text()
    logs_dir = args.dir / f"logs-{pcap.stem}"
    logs_dir.mkdir(exist_ok=True)
    paths = []
    for i in range(max(args.logs)):
        p = logs_dir / f"node-{i:04d}.jsonl"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            tmp.write_text(node_log(text, i, pcap.name))
            tmp.replace(p)
        paths.append(p)
    return paths


def run(argv: list[str]) -> dict:
    """Run ``argv``: its wall time, peak RSS (``os.wait4``) and the last line it wrote to stderr."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if status:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed: {err.strip()}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "summary": (err.strip().splitlines() or [""])[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=int, nargs="+", default=[10, 100, 500], help="numbers of node logs merged (default 10 100 500)")
    ap.add_argument("--packets", type=int, default=300_000, help="packets of the node's capture (default 300,000)")
    ap.add_argument("--wide-flows", type=int, default=2_500, help="--wide-flows of the node's capture (default 2,500)")
    ap.add_argument("--wide-names", type=int, default=2_000, help="--wide-names of the node's capture (default 2,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the median is reported (default 3)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench/merge"), help="where the logs are written")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = ap.parse_args()
    paths = build(args)
    out = args.dir / "merged.jsonl"
    rows = []
    print("| logs | input MB | flows, DNS lines | wall | peak RSS | bytes per line |")
    print("|---:|---:|---|---:|---:|---:|")
    for n in args.logs:
        argv = [sys.executable, "-m", "netpol_learn", "merge", *map(str, paths[:n]), "-o", str(out)]
        runs = [run(argv) for _ in range(args.repeat)]
        wall = statistics.median(r["wall_s"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        m = re.search(r"-> (\d+) flows, (\d+) DNS names", runs[0]["summary"])
        flows, dns = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        size = sum(p.stat().st_size for p in paths[:n]) / 1e6
        per_line = peak * 2**20 / max(1, flows + dns)
        rows.append({"logs": n, "input_mb": size, "flows": flows, "dns": dns, "wall_s": wall, "peak_mb": peak,
                     "bytes_per_line": per_line, "runs": runs})
        print(f"| {n} | {size:,.0f} | {flows:,} + {dns:,} | {wall:.1f} s | {peak:,.0f} MB | {per_line:,.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
