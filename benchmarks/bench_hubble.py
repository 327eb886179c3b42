"""Benchmark: reading Hubble's flow records (issue 14): records per second and peak memory of
``netpol-learn capture`` on a file of N records, as a whole process.

The records are the real ones of tests/data/hubble/basic-sample-400-tcp-flows.json and
basic-sample-400-udp-flows.json, repeated with their times shifted by a minute per copy and their
client ports changed per copy (so each copy's connections are new ones, as a busy cluster's are),
written as ``hubble observe -o json`` does. Then ``netpol-learn capture FILE -o OUT`` runs under
``/usr/bin/time``-like accounting (the child's peak RSS from ``wait4``), three times; the median
is printed.

    python benchmarks/bench_hubble.py [--records 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [ROOT / "tests" / "data" / "hubble" / n for n in ("basic-sample-400-tcp-flows.json", "basic-sample-400-udp-flows.json")]


def _shift(text: str, minutes: int) -> str:
    secs, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.fromisoformat(secs).replace(tzinfo=timezone.utc) + timedelta(minutes=minutes)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def build(path: Path, records: int) -> None:
    base = [json.loads(line) for p in SAMPLES for line in p.read_text().splitlines() if line.strip()]
    with open(path, "w") as out:
        written, copy = 0, 0
        while written < records:
            for obj in base:
                if written >= records:
                    break
                flow = json.loads(json.dumps(obj["flow"]))
                flow["time"] = _shift(flow["time"], copy)
                (l4,) = flow["l4"].values()
                # the client's port (the ephemeral one) differs per copy: new connections
                for side in ("source_port", "destination_port"):
                    if l4.get(side, 0) >= 32768:
                        l4[side] = 32768 + (l4[side] + copy * 7) % 28000
                out.write(json.dumps({"flow": flow, "node_name": obj.get("node_name"), "time": flow["time"]}) + "\n")
                written += 1
            copy += 1


def run(path: Path, out: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "netpol_learn", "capture", str(path), "-o", str(out)], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"capture failed: status {status}")
    return time.perf_counter() - t0, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "hubble.json", Path(tmp) / "flows.jsonl"
        build(path, args.records)
        size = path.stat().st_size
        results = [run(path, out) for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in results)
        rss = statistics.median(r[1] for r in results)
        flows = sum(1 for line in out.read_text().splitlines() if '"kind": "flow"' in line)
        print(f"| {args.records:,} records ({size / 1e6:.0f} MB) | {flows:,} flow lines | {seconds:.1f} s "
              f"({args.records / seconds:,.0f} records/s, with interpreter start) | {rss / 1e6:.0f} MB peak RSS |")


if __name__ == "__main__":
    main()
