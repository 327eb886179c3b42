"""Benchmark: generate, verify and diff on a large cluster.

Uses the cluster of bench_resolve.py (10,000 pods in 2,000 Deployments across 100 namespaces,
2,000 Services and EndpointSlices) and its 100,000 flows, and times, in this process:

- generate: resolve + synthesize + render of all policies (target: under 10 s);
- verify: the 100,000 flows against the generated policies (target: under 10 s for 500 policies);
- diff: 500 policies against the same 500 with 10 of them changed (target: under 30 s).

    python benchmarks/bench_policies.py [--pods 10000] [--flows 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_resolve  # noqa: E402

from netpol_learn._generate import generate  # noqa: E402
from netpol_learn._policy import PortSpec, Rule  # noqa: E402
from netpol_learn._verify import diff, verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_resolve.add_size_arguments(ap)
    args = ap.parse_args()
    log, inv = bench_resolve.cluster(args)

    t0 = time.perf_counter()
    g = generate(log, inv)
    t1 = time.perf_counter()
    policies = list(g.policies.policies)
    size = sum(len(t) for t in g.files.values())
    print(f"| generate {len(log.flows)} flows | {t1 - t0:.2f} s -> {len(policies)} policies, {len(g.files)} files, {size / 1e6:.1f} MB (target < 10 s) |")

    t0 = time.perf_counter()
    r = verify(log, inv, policies)
    t1 = time.perf_counter()
    print(f"| verify {len(log.flows)} flows against {len(policies)} policies | {t1 - t0:.2f} s -> {len(r.denied)} denied, {r.allowed} allowed (target < 10 s for 500) |")

    workload = [p for p in policies if p.name not in ("default-deny", "allow-dns")][:500]
    changed = []
    for i, p in enumerate(workload):
        if i % 50 == 0 and p.ingress:
            rule = p.ingress[0]
            p = replace(p, ingress=(Rule(rule.peers, (PortSpec("TCP", 9999),)), *p.ingress[1:]))
        changed.append(p)
    t0 = time.perf_counter()
    d = diff(workload, changed, inv)
    t1 = time.perf_counter()
    print(f"| diff 500 vs 500 policies (10 changed) over {len(inv.pods)} pods | {t1 - t0:.2f} s -> {len(d.added)} added, {len(d.removed)} removed (target < 30 s) |")


if __name__ == "__main__":
    main()
