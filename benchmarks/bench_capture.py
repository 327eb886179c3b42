#!/usr/bin/env python3
"""Benchmark `netpol-learn capture` on a synthetic capture of a busy Kubernetes node.

The script builds (once, cached) a classic pcap of about a million packets that looks like
`tcpdump -w` on a busy node, then times `netpol-learn capture FILE -o OUT` on it, next to
tshark, tcpdump and a bare Python walk over the pcap record headers for reference.

    python benchmarks/bench_capture.py                 # 1,000,000 packets
    python benchmarks/bench_capture.py --smoke         # 20,000 packets, a few seconds
    python benchmarks/bench_capture.py --json out.json --skip-tools

See benchmarks/README.md for what is measured and the targets.

The capture comes from tests/pcapgen_busy.py (``ensure_pcap``), which tests that need a big
file use too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from pcapgen_busy import DEFAULT_SEED, ensure_pcap  # noqa: E402

DEFAULT_PACKETS = 1_000_000
SMOKE_PACKETS = 20_000
DEFAULT_PCAP = "/tmp/netpol-bench/busy-node.pcap"
SMOKE_PCAP = "/tmp/netpol-bench/busy-node-smoke.pcap"

TARGET_PPS = 1_000_000
TARGET_RSS_MB = 150


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

def walk_pcap(path: str) -> int:
    """Counts records by walking the record headers only (the reference 'bare' reader)."""
    unpack = struct.Struct("<IIII").unpack_from
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = f.read(1 << 20)
        if len(buf) < 24 or buf[:4] != b"\xd4\xc3\xb2\xa1":
            raise SystemExit(f"{path}: not a little-endian microsecond pcap")
        pos = 24
        while True:
            end = len(buf)
            while pos + 16 <= end:
                incl = unpack(buf, pos)[2]
                if pos + 16 + incl > end:
                    break
                pos += 16 + incl
                n += 1
            more = f.read(1 << 20)
            if not more:
                break
            buf = buf[pos:] + more
            pos = 0
    return n


TIME = "/usr/bin/time"


def _has_gnu_time() -> bool:
    if not os.access(TIME, os.X_OK):
        return False
    try:
        r = subprocess.run([TIME, "-v", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "Maximum resident set size" in r.stderr


def run_measured(argv: list[str], stdout, env=None, use_time: bool = True) -> dict:
    """Runs argv once; wall time, peak RSS (MB), exit status and the tail of stderr."""
    with tempfile.TemporaryDirectory(prefix="netpol-bench-") as td:
        time_out = os.path.join(td, "time.txt")
        err_path = os.path.join(td, "stderr.txt")
        full = [TIME, "-v", "-o", time_out] + argv if use_time else argv
        with open(err_path, "wb") as err:
            t0 = time.perf_counter()
            try:
                p = subprocess.Popen(full, stdout=stdout, stderr=err, env=env)
            except OSError as e:
                return {"exit": None, "error": str(e)}
            if use_time:
                rc = p.wait()
                rusage = None
            else:
                # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the largest
                # of all children so far).
                _, status, rusage = os.wait4(p.pid, 0)
                p.returncode = rc = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
        stderr = Path(err_path).read_text(errors="replace")
        if use_time:
            txt = Path(time_out).read_text(errors="replace") if os.path.exists(time_out) else ""
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt)
            rss_kb = int(m.group(1)) if m else None
            m = re.search(r"Command exited with non-zero status (\d+)", txt)
            if m:
                rc = int(m.group(1))
        else:
            rss_kb = rusage.ru_maxrss  # kilobytes on Linux
    return {"exit": rc, "wall_s": wall, "peak_rss_mb": rss_kb / 1024 if rss_kb else None,
            "stderr_tail": stderr[-2000:]}


def repeat_measured(argv, repeat, stdout_factory, env=None, use_time=True) -> dict:
    runs = []
    for _ in range(repeat):
        stdout = stdout_factory()
        try:
            runs.append(run_measured(argv, stdout, env, use_time))
        finally:
            if stdout not in (None, subprocess.DEVNULL):
                stdout.close()
        if runs[-1].get("exit") != 0:
            break
    res = dict(runs[-1])
    walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    if walls:
        res["wall_s"] = statistics.median(walls)
        res["wall_runs_s"] = [round(w, 3) for w in walls]
    rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")]
    res["peak_rss_mb"] = max(rss) if rss else None
    return res


def capture_command(override: str | None) -> tuple[list[str], dict | None]:
    if override:
        return shlex.split(override), None
    exe = shutil.which("netpol-learn")
    if exe:
        return [exe], None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "netpol_learn"], env


def summarize_flow_log(path: Path) -> dict:
    kinds: dict[str, int] = {}
    stats = None
    lines = bad = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            kind = obj.get("kind") if isinstance(obj, dict) else None
            kinds[str(kind)] = kinds.get(str(kind), 0) + 1
            if kind == "stats":
                stats = obj
    return {"lines": lines, "flow_lines": kinds.get("flow", 0), "dns_lines": kinds.get("dns", 0),
            "lines_by_kind": kinds, "unparsable_lines": bad, "stats": stats,
            "bytes": path.stat().st_size}


def tool_version(argv: list[str]) -> str | None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0] if out else None


def _find_count(obj, word: str):
    """The first integer under a key containing `word` in the (possibly nested) stats line."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if word in str(k).lower() and isinstance(v, int) and not isinstance(v, bool):
                return v
        for v in obj.values():
            found = _find_count(v, word)
            if found is not None:
                return found
    return None


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=None,
                    help=f"packets in the generated capture (default {DEFAULT_PACKETS:,})")
    ap.add_argument("--pcap", default=None,
                    help=f"where the capture is cached (default {DEFAULT_PCAP}; "
                         f"{SMOKE_PCAP} with --smoke)")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the capture even if cached")
    ap.add_argument("--wide-flows", type=int, default=0, metavar="N",
                    help="add N distinct flows from local pods to outside addresses, which most TCP connections go to")
    ap.add_argument("--wide-names", type=int, default=0, metavar="M",
                    help="add M outside DNS names (an A and an AAAA line each), which most DNS lookups ask")
    ap.add_argument("--skip-tools", action="store_true",
                    help="measure only netpol-learn, not tshark, tcpdump or the Python walk")
    ap.add_argument("--smoke", action="store_true",
                    help=f"quick run on {SMOKE_PACKETS:,} packets (own cache file)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each command N times and report the median wall time")
    ap.add_argument("--capture-cmd", metavar="CMD",
                    help="command to run instead of netpol-learn (e.g. 'python -m netpol_learn')")
    ap.add_argument("--generate-only", action="store_true",
                    help="build (or reuse) the capture and stop")
    ap.add_argument("--walk", metavar="PCAP", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)

    if args.walk:
        print(walk_pcap(args.walk))
        return 0

    packets = args.packets or (SMOKE_PACKETS if args.smoke else DEFAULT_PACKETS)
    pcap = Path(args.pcap or (SMOKE_PCAP if args.smoke else DEFAULT_PCAP))
    meta, built = ensure_pcap(pcap, packets, args.seed, args.rebuild, args.wide_flows, args.wide_names)
    if args.generate_only:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0

    use_time = _has_gnu_time()
    rows = []
    failed = False

    def add(name, argv_, res, output=None):
        wall = res.get("wall_s")
        ok = res.get("exit") == 0
        rows.append({"name": name, "argv": argv_, "ok": ok, "exit": res.get("exit"),
                     "wall_s": round(wall, 4) if wall is not None else None,
                     "wall_runs_s": res.get("wall_runs_s"),
                     "packets_per_s": round(packets / wall) if ok and wall else None,
                     "peak_rss_mb": round(res["peak_rss_mb"], 1) if res.get("peak_rss_mb")
                     else None,
                     "output": output,
                     "error": None if ok else (res.get("error") or res.get("stderr_tail", ""))[-800:]})

    # The walk goes first: it also brings the file into the page cache for everyone else.
    if not args.skip_tools:
        argv_ = [sys.executable, os.path.abspath(__file__), "--walk", str(pcap)]
        with tempfile.NamedTemporaryFile("w+b") as out:
            res = repeat_measured(argv_, args.repeat, lambda: open(out.name, "wb"), None, use_time)
            out.seek(0)
            counted = out.read().decode().strip()
        add("python record walk", argv_, res, {"records": int(counted) if counted.isdigit()
                                               else counted})
    else:
        with open(pcap, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass

    cmd, env = capture_command(args.capture_cmd)
    with tempfile.TemporaryDirectory(prefix="netpol-bench-out-") as td:
        out_path = Path(td) / "flows.jsonl"
        argv_ = cmd + ["capture", str(pcap), "-o", str(out_path)]
        res = repeat_measured(argv_, args.repeat, lambda: subprocess.DEVNULL, env, use_time)
        output = summarize_flow_log(out_path) if res.get("exit") == 0 and out_path.exists() \
            else None
        add("netpol-learn capture", argv_, res, output)
        if res.get("exit") != 0:
            failed = True
        else:
            res = repeat_measured(cmd + ["--help"], 1, lambda: subprocess.DEVNULL, env, use_time)
            add("netpol-learn --help (startup)", cmd + ["--help"], res)
            rows[-1]["packets_per_s"] = None

    if not args.skip_tools:
        for name, tool, argv_ in [
            ("tshark fields", "tshark", ["tshark", "-r", str(pcap), "-T", "fields",
                                         "-e", "ip.src", "-e", "ip.dst",
                                         "-e", "tcp.srcport", "-e", "tcp.dstport"]),
            ("tcpdump -nn", "tcpdump", ["tcpdump", "-nn", "-r", str(pcap)]),
        ]:
            if not shutil.which(tool):
                rows.append({"name": name, "argv": argv_, "ok": False, "exit": None,
                             "error": "not installed"})
                continue
            res = repeat_measured(argv_, args.repeat, lambda: subprocess.DEVNULL, None, use_time)
            add(name, argv_, res)

    cap = next(r for r in rows if r["name"] == "netpol-learn capture")
    pps = cap.get("packets_per_s") if cap["ok"] else None
    rss = cap.get("peak_rss_mb") if cap["ok"] else None
    targets = {
        "packets_per_s": {"target": TARGET_PPS, "value": pps,
                          "met": None if pps is None else pps >= TARGET_PPS},
        "peak_rss_mb": {"target": TARGET_RSS_MB, "value": rss,
                        "met": None if rss is None else rss <= TARGET_RSS_MB,
                        "for_packets": DEFAULT_PACKETS},
    }
    report = {
        "benchmark": "netpol-learn capture",
        "pcap": {"path": str(pcap), "packets": meta["packets"], "bytes": meta["file_bytes"],
                 "built_now": built, "generation_s": meta["generation_s"]},
        "generator": meta,
        "results": rows,
        "targets": targets,
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "cpus": os.cpu_count(),
                 "rss_from": "/usr/bin/time -v" if use_time else "os.wait4 rusage",
                 "tshark": tool_version(["tshark", "--version"]) if shutil.which("tshark") else None,
                 "tcpdump": tool_version(["tcpdump", "--version"]) if shutil.which("tcpdump") else None},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    print(f"\nCapture: {pcap} - {meta['packets']:,} packets, {meta['file_bytes'] / 1e6:.0f} MB "
          f"({meta['duplicates']:,} duplicates; expected {meta['expected_flows']:,} flows, "
          f"{meta['expected_dns_lines']:,} dns lines)"
          + (f"; generated in {meta['generation_s']:.1f} s" if built else "; cached") + "\n")
    print("| what | wall (s) | packets/s | peak RSS (MB) | output |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        if r["ok"]:
            o = r.get("output") or {}
            if "flow_lines" in o:
                st = o.get("stats") or {}
                dup = _find_count(st, "dup")
                out = f"{o['flow_lines']:,} flow, {o['dns_lines']:,} dns lines" + (
                    f", {dup:,} duplicates dropped" if isinstance(dup, int) else "")
            elif "records" in o:
                out = f"{o['records']:,} records" if isinstance(o["records"], int) \
                    else str(o["records"])
            else:
                out = ""
            print(f"| {r['name']} | {fmt(r['wall_s'], '.2f')} | {fmt(r['packets_per_s'], ',')} "
                  f"| {fmt(r['peak_rss_mb'], '.1f')} | {out} |")
        else:
            err = (r.get("error") or "").strip().splitlines()
            why = err[-1][:100].replace("|", "\\|") if err else f"exit {r.get('exit')}"
            print(f"| {r['name']} | - | - | - | failed: {why} |")
    print()
    met = lambda b: "n/a" if b is None else "met" if b else "NOT met"  # noqa: E731
    print(f"Targets: >= {TARGET_PPS:,} packets/s: {met(targets['packets_per_s']['met'])}; "
          f"peak RSS <= {TARGET_RSS_MB} MB: {met(targets['peak_rss_mb']['met'])}"
          + ("" if packets == DEFAULT_PACKETS else
             f" (the targets are for the {DEFAULT_PACKETS:,}-packet file)"))

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if failed:
        print("\nnetpol-learn capture failed:\n" + (cap.get("error") or ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
