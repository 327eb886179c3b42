"""Benchmark: generate, verify and diff on a large cluster, in this process and as the CLI.

Uses the cluster of bench_resolve.py (10,000 pods in 2,000 Deployments across 100 namespaces,
2,000 Services and EndpointSlices) and its 100,000 flows, and times, in this process:

- generate: resolve + synthesize + render of all policies (target: under 10 s);
- verify: the 100,000 flows against the generated policies (target: under 10 s for 500 policies);
- diff: 500 policies against the same 500 with 10 of them changed (target: under 30 s).

Then (issue 15, unless ``--no-cli``) it writes the generated policy directory, a copy of it with
1 policy in 40 changed, the flow log and the inventory into ``--dir``, and times ``verify`` and
``diff`` of all the policies both in this process (the library call on loaded objects) and as a
whole process (``python -m netpol_learn verify ...`` / ``diff ...``): medians of ``--repeat``
runs, the CLI's peak RSS from ``os.wait4`` (target: the CLI within 1.5x of in-process, ``diff``
under 10 s).

    python benchmarks/bench_policies.py [--pods 10000] [--flows 100000] [--repeat 3] [--dir DIR] [--no-cli] [--only verify|diff]

``--only diff`` (``verify``) times only that work, in both parts (generate still runs: it makes
the policies).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_resolve  # noqa: E402
import yaml  # noqa: E402

from netpol_learn._flowlog import write_flow_log  # noqa: E402
from netpol_learn._generate import generate  # noqa: E402
from netpol_learn._inventory import load_inventory  # noqa: E402
from netpol_learn._policy import PortSpec, Rule  # noqa: E402
from netpol_learn._render import write_directory  # noqa: E402
from netpol_learn._semantics import load_policies  # noqa: E402
from netpol_learn._verify import diff, verify  # noqa: E402

#: One policy in CHANGE_EVERY of the copy that ``diff`` compares with gets a changed port.
CHANGE_EVERY = 40


def _changed_copy(src: Path, dst: Path) -> int:
    """Copy the policy files of ``src`` into ``dst`` (re-dumped), the first ingress rule of every
    CHANGE_EVERY-th NetworkPolicy that has one now on TCP/9999; returns how many changed."""
    dst.mkdir(parents=True, exist_ok=True)
    n = changed = 0
    for f in sorted(src.glob("*.yaml")):
        docs = list(yaml.load_all(f.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "NetworkPolicy":
                n += 1
                ingress = doc.get("spec", {}).get("ingress")
                if n % CHANGE_EVERY == 0 and ingress:
                    ingress[0]["ports"] = [{"protocol": "TCP", "port": 9999}]
                    changed += 1
        (dst / f.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return changed


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


#: Runs one command and prints its wall time, peak RSS (os.wait4) and exit code as JSON. The
#: command is started from this small process, not from the benchmark's: a child's ru_maxrss
#: starts from its parent's at fork and survives exec.
_RUNNER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def _cli(args: list[str], repeat: int) -> tuple[float, float, int]:
    """Median wall time (s), median peak RSS (MB) and exit code of ``python -m netpol_learn ARGS``."""
    walls, rss, code = [], [], None
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", _RUNNER, sys.executable, "-m", "netpol_learn", *args],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
        wall, peak, code = json.loads(r.stdout.strip().splitlines()[-1])
        if code not in (0, 1):
            raise SystemExit(f"netpol-learn {' '.join(args)}: exit {code}")
        walls.append(wall)
        rss.append(peak)
    return statistics.median(walls), statistics.median(rss), code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_resolve.add_size_arguments(ap)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each timing; the median is reported (default 3)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench/policies"), help="where the CLI's input files are written")
    ap.add_argument("--no-cli", action="store_true", help="only the in-process figures of the first part")
    ap.add_argument("--only", choices=("verify", "diff"), help="time only verify or only diff (generate still runs)")
    args = ap.parse_args()

    raw = bench_resolve.build(args.pods, args.services, args.namespaces, 20)
    log = bench_resolve.flows(raw, args.flows)
    args.dir.mkdir(parents=True, exist_ok=True)
    inv_path = args.dir / "inventory.json"
    inv_path.write_text(json.dumps(raw))
    del raw
    inv = load_inventory([inv_path])

    t0 = time.perf_counter()
    g = generate(log, inv)
    t1 = time.perf_counter()
    policies = list(g.policies.policies)
    size = sum(len(t) for t in g.files.values())
    print(f"| generate {len(log.flows)} flows | {t1 - t0:.2f} s -> {len(policies)} policies, {len(g.files)} files, {size / 1e6:.1f} MB (target < 10 s) |")

    if args.only in (None, "verify"):
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
    if args.only in (None, "diff"):
        t0 = time.perf_counter()
        d = diff(workload, changed, inv)
        t1 = time.perf_counter()
        print(f"| diff 500 vs 500 policies (10 changed) over {len(inv.pods)} pods | {t1 - t0:.2f} s -> {len(d.added)} added, {len(d.removed)} removed (target < 30 s) |")
    if args.no_cli:
        return

    # --- issue 15: the CLI as a whole process against the same work in this process -------------
    base_dir, new_dir, flows_path = args.dir / "base", args.dir / "new", args.dir / "flows.jsonl"
    write_directory(base_dir, g.directory, force=True)
    n_changed = _changed_copy(base_dir, new_dir)
    write_flow_log(log, flows_path)
    base, new = load_policies([base_dir]), load_policies([new_dir])
    assert len(base) == len(policies), (len(base), len(policies))
    print()
    print(f"{len(base)} policies in {base_dir}, {n_changed} changed in {new_dir}; medians of {args.repeat} runs")
    print()
    print("| work | in-process | CLI (whole process) | CLI / in-process | CLI peak RSS |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        (f"`verify`, {len(inv.pods):,} pods / {len(log.flows):,} flows / {len(base):,} policies",
         lambda: verify(log, inv, base),
         ["verify", "--policies", str(base_dir), "--inventory", str(inv_path), "--flows", str(flows_path)]),
        (f"`diff`, {len(base):,} policies, {n_changed} changed",
         lambda: diff(base, new, inv),
         ["diff", str(base_dir), str(new_dir), "--inventory", str(inv_path)]),
    ]
    for what, fn, cli_args in (row for row in rows if args.only is None or row[2][0] == args.only):
        inproc, _ = _median_time(fn, args.repeat)
        wall, rss, _code = _cli(cli_args, args.repeat)
        print(f"| {what} | {inproc:.2f} s | {wall:.2f} s | {wall / inproc:.2f}x | {rss:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
