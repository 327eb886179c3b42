"""Benchmark: learning in time (issue 11): the size of a week's flow log, and resolve + generate
over a week of pod churn.

1. **A week's log of a 500-pod namespace.** Simulates what the sniffer writes: hourly segments of
   a namespace of ~100 Deployments (steady calls between them, DNS, a few callers of an outside
   endpoint, hourly CronJobs that call a database, nightly batch bursts, a daily rolling update of
   10% of the Deployments with new pod addresses), each flow line's runs made by ``merge_runs``
   from its connections' ``(first, last, 1)``. Merges the segments with ``merge_logs``, writes the
   1-, 3- and 7-day logs with ``write_flow_log`` and reports their size; times the merge and
   ``read_flow_log`` with their peak memory.
2. **resolve + generate over a week of churn.** 10,000 pods (``bench_resolve.build``), 7 daily
   inventory snapshots with 10% of the pods replaced each day (half of the new pods take over
   addresses that replaced pods let go), and ~100,000 flow lines whose runs cover the week;
   times ``load_inventory``, ``resolve`` and ``generate`` with their peak RSS, beside one snapshot
   with flows of one moment (today's shape, ``bench_resolve.flows``) and a week of runs without
   churn; checks that flows across a handover resolve to both holders.

    python benchmarks/bench_time.py                  # the full run (a few minutes)
    python benchmarks/bench_time.py --quick          # small sizes: a smoke test, < 30 s
    python benchmarks/bench_time.py --only log --days 3 --ns-pods 200

Each part runs in a child process of its own (this script with ``--child``), so that one part's
memory does not count in another's; each phase's peak RSS is the process's high-water mark, reset
before the phase (``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import random
import resource
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_resolve  # noqa: E402

import netpol_learn as nl  # noqa: E402
from netpol_learn._flowlog import (  # noqa: E402
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    Translation,
    dumps_lines,
    flow_sort_key,
    merge_logs,
    merge_runs,
    read_flow_log,
    translation_sort_key,
    write_flow_log,
)
from netpol_learn._inventory import SNAPSHOT_ANNOTATION  # noqa: E402
from netpol_learn._time import format_time, parse_api_time, parse_time  # noqa: E402

SEC = 10**9
MINUTE = 60 * SEC
HOUR = 3600 * SEC
DAY = 24 * HOUR
#: Where the simulated week starts (a day after bench_resolve's pods started).
W0 = parse_time("2025-06-16T00:00:00.000000Z")
NAMESPACE = "shop"
DNS_SERVER = "10.96.0.10"
OUTSIDE = "203.0.113.10"
OUTSIDE_NAME = "api.partner.example"


# --- measuring ----------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PROCESS_PEAK = [0.0]


def _reset_peak() -> bool:
    """Reset the process's RSS high-water mark (Linux, ``clear_refs`` 5); False when it cannot."""
    _PROCESS_PEAK[0] = max(_PROCESS_PEAK[0], _status_mb("VmHWM"))
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def process_peak_mb() -> float:
    """The process's peak RSS over its whole life, across the resets."""
    return max(_PROCESS_PEAK[0], _status_mb("VmHWM"))


@contextmanager
def measured(out: dict, name: str):
    """Time the block and take its peak RSS into ``out[name]``; an exception inside (the library's
    unfinished work) is recorded as ``error`` and the benchmark goes on."""
    gc.collect()
    reset = _reset_peak()
    rec: dict = {"rss_before_mb": round(_status_mb("VmRSS"), 1)}
    out[name] = rec
    t0 = time.perf_counter()
    try:
        yield rec
    except Exception as exc:  # noqa: BLE001: report it and measure what can be measured
        frames = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames) if "netpol_learn" in f.filename), "")
        rec["error"] = f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")
        print(f"  {name}: FAILED: {rec['error']}", file=sys.stderr)
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rec["peak_mb"] = round(_status_mb("VmHWM") if reset else process_peak_mb(), 1)
        rec["peak_is_phase"] = reset


def _ip(n: int, prefix: str) -> str:
    return f"{prefix}.{n // 256 % 256}.{n % 256}"


# --- part 1: a week of sniffer segments of one namespace -----------------------------------


class _Dep:
    def __init__(self, i: int, name: str, svc_ip: str, port: int, target_port: int):
        self.i = i
        self.name = name
        self.svc_ip = svc_ip
        self.port = port
        self.target_port = target_port
        self.pods: list[list] = []  # [ip, start, end]
        self.fqdn = f"{name}.{NAMESPACE}.svc.cluster.local"

    def backends(self, lo: int, hi: int) -> list[str]:
        return [ip for ip, start, end in self.pods if start < hi and end > lo]


class _Week:
    """The traffic of one namespace over ``days``, as hourly sniffer segments."""

    def __init__(self, pods: int, days: int, seed: int = 5):
        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        self.days = days
        self.hours = days * 24
        self.end = W0 + days * DAY
        self.bounds = np.array([W0 + h * HOUR for h in range(self.hours + 1)], dtype=np.int64)
        self.flows: list[list[Flow]] = [[] for _ in range(self.hours)]
        self.dns: list[list[DnsObservation]] = [[] for _ in range(self.hours)]
        self.connections = np.zeros(self.hours, dtype=np.int64)
        self.wire = np.zeros(self.hours, dtype=np.int64)
        self.kept = np.zeros(self.hours, dtype=np.int64)
        self.category: dict[tuple, str] = {}
        self._addresses = itertools.count(10)
        self.model: dict = {}
        self._build(pods)

    def _address(self) -> str:
        return _ip(next(self._addresses), "10.244")

    # The cluster: Deployments, their pods over the week, who calls whom.
    def _build(self, pods: int) -> None:
        rng = self.rng
        n_deps = max(5, pods // 5)
        per = max(1, pods // n_deps)
        n_db = max(1, n_deps // 33)
        deps = []
        for i in range(n_deps):
            db = i >= n_deps - n_db
            deps.append(_Dep(i, f"db-{i}" if db else f"svc-{i}", _ip(256 + i + 1, "10.96"), 5432 if db else 80, 5432 if db else 8080))
        self.deps = deps
        apps = [d for d in deps if d.port != 5432]
        dbs = [d for d in deps if d.port == 5432]
        for d in deps:
            for _ in range(per):
                d.pods.append([self._address(), W0 - DAY, self.end])
        # The daily rolling update: 10% of the Deployments, one pod every 30 s, each new pod (a
        # new address) ready 5 s before the old one goes.
        rolled = 0
        for day in range(self.days):
            for k, d in enumerate(rng.sample(apps, max(1, n_deps // 10))):
                t0 = W0 + day * DAY + 10 * HOUR + k * 3 * MINUTE
                for j, pod in enumerate([p for p in d.pods if p[2] == self.end]):
                    t = t0 + j * 30 * SEC
                    d.pods.append([self._address(), t, self.end])
                    pod[2] = t + 5 * SEC
                    rolled += 1
        storage, warehouse = apps[0], dbs[-1]
        self.batch = rng.sample(apps[1:], max(1, n_deps // 20))
        self.outside_callers = {d.i: rng.uniform(60, 300) for d in rng.sample(apps, max(1, n_deps // 12))}
        self.targets = {}
        for d in apps:
            others = [t for t in deps if t is not d and not (d in self.batch and t is warehouse)]
            self.targets[d.i] = [(t, rng.uniform(5, 60)) for t in rng.sample(others, rng.randint(2, 4))]
        self.storage, self.warehouse, self.dbs = storage, warehouse, dbs
        self.n_cron = max(1, n_deps // 10)
        self.model = {
            "deployments": n_deps, "pods": n_deps * per, "databases": n_db, "edges": sum(len(t) for t in self.targets.values()),
            "outside_callers": len(self.outside_callers), "cronjobs": self.n_cron, "batch_deployments": len(self.batch),
            "pods_rolled": rolled,
        }

    # Connection times: a steady stream from lo to hi, gaps uniform in [period/2, 3 period/2].
    def _times(self, lo: int, hi: int, period: float) -> np.ndarray:
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        p = int(period * SEC)
        n = int((hi - lo) // (p // 2)) + 2
        gaps = self.np.integers(p // 2, p + p // 2 + 1, n, dtype=np.int64)
        t = lo + int(self.np.integers(0, p)) + np.cumsum(gaps) - gaps[0]
        return t[t < hi]

    def generate(self) -> None:
        for d in self.deps:
            if d.port == 5432:
                continue  # databases only answer
            for ip, start, end in d.pods:
                self._pod(d, ip, max(start, W0), min(end, self.end))
        self._cronjobs()

    def _pod(self, d: _Dep, ip: str, lo: int, hi: int) -> None:
        acts: dict[tuple, list] = defaultdict(list)  # flow key -> [(starts, ends, wire packets)]
        lookups = []  # (qname, answers, times)
        rng = self.np
        for t, period in self.targets[d.i]:
            s = self._times(lo, hi, period)
            key = (ip, t.svc_ip, "TCP", t.port)
            acts[key].append((s, s + rng.integers(5_000_000, 500_000_000, len(s)), rng.integers(8, 41, len(s)), t))
            self.category.setdefault(key, "steady call to a Service")
            q = self._times(lo, hi, max(period, 30.0))
            lookups.append((t.fqdn, (DnsAnswer(t.fqdn, "A", t.svc_ip, 30),), q))
        if d.i in self.outside_callers:
            s = self._times(lo, hi, self.outside_callers[d.i])
            key = (ip, OUTSIDE, "TCP", 443)
            acts[key].append((s, s + rng.integers(50_000_000, 2 * SEC, len(s)), rng.integers(12, 61, len(s)), None))
            self.category[key] = "call to the outside endpoint"
            answers = (DnsAnswer(OUTSIDE_NAME, "CNAME", "edge.partner-cdn.example", 300), DnsAnswer("edge.partner-cdn.example", "A", OUTSIDE, 60))
            lookups.append((OUTSIDE_NAME, answers, np.maximum(s - 20_000_000, lo)))
        if d in self.batch:
            for day in range(self.days):
                a, b = max(lo, W0 + day * DAY + HOUR), min(hi, W0 + day * DAY + HOUR + 20 * MINUTE)
                for t, port in ((self.storage, 9000), (self.warehouse, 5432)):
                    s = self._times(a, b, 1.0)
                    if len(s):
                        key = (ip, t.svc_ip, "TCP", port)
                        acts[key].append((s, s + rng.integers(100_000_000, 3 * SEC, len(s)), rng.integers(20, 201, len(s)), (t, port)))
                        self.category[key] = "nightly batch burst"
        dns_key = (ip, DNS_SERVER, "UDP", 53)
        for qname, answers, q in lookups:
            acts[dns_key].append((q, q + 2_000_000, np.full(len(q), 4, dtype=np.int64), None))
            self._dns_lines(ip, qname, answers, q)
        self.category[dns_key] = "DNS lookups"
        for key, parts in acts.items():
            self._flow_lines(key, parts)

    def _cronjobs(self) -> None:
        rng = self.rng
        for h in range(self.hours):
            for j in range(self.n_cron):
                ip = self._address()  # a new pod, a new address, every run
                db = self.dbs[j % len(self.dbs)]
                t = W0 + h * HOUR + (j * 5 % 60) * MINUTE + rng.randrange(10) * SEC
                run = rng.randrange(40, 81) * SEC
                starts = np.array(sorted(t + rng.randrange(run - 5 * SEC) for _ in range(rng.randint(1, 5))), dtype=np.int64)
                ends = np.minimum(starts + self.np.integers(5 * SEC, 30 * SEC, len(starts)), t + run)
                key = (ip, db.svc_ip, "TCP", db.port)
                self.category[key] = "CronJob run calling a database"
                self._flow_lines(key, [(starts, ends, self.np.integers(10, 200, len(starts)), db)])
                q = starts - 5_000_000
                dns_key = (ip, DNS_SERVER, "UDP", 53)
                self.category[dns_key] = "DNS lookups"
                self._flow_lines(dns_key, [(q, q + 2_000_000, np.full(len(q), 4, dtype=np.int64), None)])
                self._dns_lines(ip, db.fqdn, (DnsAnswer(db.fqdn, "A", db.svc_ip, 30),), q)

    def _flow_lines(self, key: tuple, parts: list) -> None:
        """One flow line per hourly segment that holds some of the key's connections."""
        src, dst, proto, port = key
        target = parts[0][3]
        starts = np.concatenate([p[0] for p in parts])
        ends = np.concatenate([p[1] for p in parts])
        wire = np.concatenate([p[2] for p in parts])
        if len(parts) > 1:
            order = np.argsort(starts, kind="stable")
            starts, ends, wire = starts[order], ends[order], wire[order]
        cut = np.searchsorted(starts, self.bounds)
        tcp = proto == "TCP"
        for h in np.nonzero(cut[1:] > cut[:-1])[0]:
            a, b = cut[h], cut[h + 1]
            n = int(b - a)
            s, e = starts[a:b], ends[a:b]
            runs = merge_runs(zip(s.tolist(), e.tolist(), itertools.repeat(1)))
            translated = ()
            if target is not None:
                dep, tport = target if isinstance(target, tuple) else (target, target.target_port)
                backends = dep.backends(int(self.bounds[h]), int(self.bounds[h + 1]))
                chosen = np.unique(self.np.integers(0, len(backends), n))
                translated = tuple(sorted((Translation(src, backends[i], tport) for i in chosen.tolist()), key=translation_sort_key))
            self.flows[h].append(Flow(
                src, dst, proto, port, 4 * n, 4 * n * (70 if tcp else 90), n, runs[0][0], max(r[1] for r in runs),
                (("syn" if tcp else "dns", n),), translated=translated, evidence="established" if tcp else "answered", runs=runs,
            ))
            self.connections[h] += n
            self.wire[h] += int(wire[a:b].sum())
            self.kept[h] += 4 * n

    def _dns_lines(self, client: str, qname: str, answers: tuple, q: np.ndarray) -> None:
        cut = np.searchsorted(q, self.bounds)
        for h in np.nonzero(cut[1:] > cut[:-1])[0]:
            a, b = cut[h], cut[h + 1]
            n = int(b - a)
            first, last = int(q[a]), int(q[b - 1]) + 2_000_000
            for qtype, ans in (("A", answers), ("AAAA", ())):
                self.dns[h].append(DnsObservation(client, DNS_SERVER, qname, qtype, n, n, first, last, ans, ("NOERROR",), ("udp",)))

    def segments(self) -> list[FlowLog]:
        """The hourly segments, each as the sniffer writes it: lines sorted, its own stats."""
        out = []
        for h in range(self.hours):
            flows = tuple(sorted(self.flows[h], key=flow_sort_key))
            dns = tuple(sorted(self.dns[h], key=lambda d: (d.client, d.qname, d.qtype)))
            kept = int(self.kept[h])
            out.append(FlowLog(flows, dns, {"packets": kept, "decoded": kept}, ("sniff:bench",)))
        return out


def _log_figures(log: FlowLog) -> dict:
    return {"flow_lines": len(log.flows), "runs": sum(len(f.runs) for f in log.flows), "dns_lines": len(log.dns),
            "connections": sum(f.connections for f in log.flows)}


def child_log(args) -> dict:
    """Part 1, in its own process."""
    out: dict = {"phases": {}}
    ph = out["phases"]
    t0 = time.perf_counter()
    week = _Week(args.ns_pods, args.days)
    week.generate()
    segments = week.segments()
    category = week.category
    out["model"] = week.model
    out["simulate_seconds"] = round(time.perf_counter() - t0, 1)
    out["raw"] = {"segments": len(segments), "flow_lines": sum(len(s.flows) for s in segments),
                  "dns_lines": sum(len(s.dns) for s in segments)}
    sizes = sorted({d for d in (1, 3, 7) if d < args.days} | {args.days})
    out["sizes"] = []
    for days in sizes:
        n = days * 24
        if days == args.days:
            with measured(ph, "merge"):
                log = merge_logs(segments[:n])
            full = log
        else:
            log = merge_logs(segments[:n])
        path = args.dir / f"namespace-{days}d.jsonl"
        if days == args.days:
            with measured(ph, "write"):
                write_flow_log(log, path)
        else:
            write_flow_log(log, path)
        fig = _log_figures(log)
        fig.update(days=days, segments=n, bytes=path.stat().st_size, path=str(path),
                   simulated_connections=int(week.connections[:n].sum()), wire_packets=int(week.wire[:n].sum()),
                   kept_packets=int(week.kept[:n].sum()))
        out["sizes"].append(fig)
        del log
    # What kinds of traffic the lines and runs of the whole log come from.
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for f in full.flows:
        row = kinds[category[(f.src, f.dst, f.proto, f.port)]]
        row[0] += 1
        row[1] += len(f.runs)
        row[2] += f.connections
    out["by_kind"] = dict(sorted(kinds.items()))
    out["run_bytes"] = _run_bytes(full)
    # The sniffer's own file: every segment one after the other, as `sniff -o FILE` appends them.
    raw = args.dir / f"namespace-{args.days}d-segments.jsonl"
    with open(raw, "w", encoding="utf-8") as fh:
        for seg in segments:
            fh.writelines(dumps_lines(seg))
    out["raw"]["bytes"] = raw.stat().st_size
    out["raw"]["path"] = str(raw)
    out["merged_sha256"] = hashlib.sha256(Path(out["sizes"][-1]["path"]).read_bytes()).hexdigest()
    out["process_peak_mb"] = round(process_peak_mb(), 1)
    return out


def _run_bytes(log: FlowLog) -> int:
    """Bytes the runs take in the written log: each ``["<time>", "<time>", n]`` and its separator."""
    total = 0
    for f in log.flows:
        total += sum(64 + len(str(n)) for _, _, n in f.runs) + 2 * len(f.runs)
    return total


def child_read(args) -> dict:
    """Read a flow log (``read_flow_log``), in its own process: its time and peak memory."""
    out: dict = {"phases": {}}
    with measured(out["phases"], "read"):
        log = read_flow_log(args.path)
    out.update(_log_figures(log))
    out["sha256"] = hashlib.sha256("".join(dumps_lines(log)).encode()).hexdigest()
    return out


# --- part 2: a cluster over a week of churn -------------------------------------------------


class _Holder:
    __slots__ = ("item", "ip", "start", "end", "dep", "slot")

    def __init__(self, item: dict, ip: str, start: int, end: int | None, dep: str, slot: int):
        self.item, self.ip, self.start, self.end, self.dep, self.slot = item, ip, start, end, dep, slot


def build_cluster(pods: int) -> dict:
    """bench_resolve's cluster of ``pods`` pods (a Service and an EndpointSlice per 5 pods, 100
    pods a namespace, 20 nodes). bench_resolve numbers Service ClusterIPs ``10.96.<d // 256>.<d %
    256 + 1>``, which gives ``10.96.0.256`` for the 256th: the loader refuses such a file, so those
    few Services get an address of their own in 10.97.0.0/16."""
    raw = bench_resolve.build(pods, max(1, pods // 5), max(1, pods // 100), 20)
    fixed = 0
    for o in raw["items"]:
        if o["kind"] == "Service" and int(o["spec"]["clusterIP"].rsplit(".", 1)[1]) > 255:
            fixed += 1
            ip = f"10.97.{fixed // 256}.{fixed % 256}"
            o["spec"]["clusterIP"], o["spec"]["clusterIPs"] = ip, [ip]
    return raw


def _pod_ip(n: int) -> str:
    """The ``n``-th pod address, as bench_resolve.build numbers them."""
    return f"10.{100 + n // 65536}.{n // 256 % 256}.{n % 256}"


def _api_time(ns: int) -> str:
    return format_time(ns)[:19] + "Z"


class _Cluster:
    """bench_resolve's cluster over ``days``: daily snapshots, ``churn`` of the pods replaced a day."""

    def __init__(self, pods: int, days: int, churn: float, seed: int = 3):
        self.rng = random.Random(seed)
        self.days = days
        self.end = W0 + days * DAY
        self.raw = build_cluster(pods)
        items = self.raw["items"]
        self.static = [o for o in items if o["kind"] not in ("Pod", "EndpointSlice")]
        self.slices = {o["metadata"]["labels"]["kubernetes.io/service-name"]: o for o in items if o["kind"] == "EndpointSlice"}
        self.services = [(o["metadata"]["namespace"], o["metadata"]["name"], o["spec"]["clusterIP"]) for o in items if o["kind"] == "Service"]
        self.node_ips = [o["status"]["addresses"][0]["address"] for o in items if o["kind"] == "Node"]
        pod_items = [o for o in items if o["kind"] == "Pod"]
        start = parse_api_time(pod_items[0]["status"]["startTime"])
        self.slots: list[list[_Holder]] = [
            [_Holder(o, o["status"]["podIP"], start, None, o["metadata"]["labels"]["app"], i)] for i, o in enumerate(pod_items)
        ]
        self.by_dep: dict[str, list[int]] = defaultdict(list)
        for i, o in enumerate(pod_items):
            self.by_dep[o["metadata"]["labels"]["app"]].append(i)
        self.handovers: list[tuple[str, _Holder, _Holder]] = []  # (address, let go by, taken by)
        self._fresh = itertools.count(pods)
        self._names = itertools.count(1 << 16)
        for day in range(1, days):
            if churn:
                self._churn(day, churn)
        self.snapshot_times = [W0 + (k + 1) * DAY - 30 * MINUTE for k in range(days)]

    def _replacement(self, a: _Holder, ip: str, start: int) -> _Holder:
        o = a.item
        rs = o["metadata"]["ownerReferences"][0]["name"]
        name = f"{rs}-{next(self._names):05x}"
        ts = _api_time(start)
        item = {**o, "metadata": {**o["metadata"], "name": name, "creationTimestamp": ts},
                "status": {**o["status"], "podIP": ip, "podIPs": [{"ip": ip}], "startTime": ts}}
        return _Holder(item, ip, start, None, a.dep, a.slot)

    def _churn(self, day: int, churn: float) -> None:
        """Replace ``churn`` of the pods during ``day``: each old pod goes at some time between
        01:00 and 22:00; its replacement starts 5-60 s after; half of the replacements take the
        address of the replaced pod that went next (so the address changes hands within a minute),
        the other half get fresh addresses."""
        rng = self.rng
        chosen = rng.sample(range(len(self.slots)), int(len(self.slots) * churn))
        for s in chosen:
            self.slots[s][-1].end = W0 + day * DAY + rng.randrange(HOUR // SEC, 22 * HOUR // SEC) * SEC
        half = len(chosen) // 2
        reuse = sorted(chosen[:half], key=lambda s: self.slots[s][-1].end)
        new: list[_Holder] = []
        for k, s in enumerate(reuse):
            a = self.slots[s][-1]
            if k + 1 < len(reuse):
                c = self.slots[reuse[k + 1]][-1]
                b = self._replacement(a, c.ip, c.end + rng.randrange(5, 61) * SEC)
                self.handovers.append((c.ip, c, b))
            else:
                b = self._replacement(a, _pod_ip(next(self._fresh)), a.end + rng.randrange(5, 61) * SEC)
            new.append(b)
        for s in chosen[half:]:
            a = self.slots[s][-1]
            new.append(self._replacement(a, _pod_ip(next(self._fresh)), a.end + rng.randrange(5, 61) * SEC))
        for b in new:
            self.slots[b.slot].append(b)

    def snapshot(self, k: int) -> dict:
        """The kubectl-style List of the cluster at snapshot ``k``, with its time annotated."""
        t = self.snapshot_times[k]
        present = [h for slot in self.slots for h in slot if h.start <= t and (h.end is None or h.end > t)]
        by_dep: dict[str, list[_Holder]] = defaultdict(list)
        for h in present:
            by_dep[h.dep].append(h)
        slices = []
        for dep, o in self.slices.items():
            eps = [{"addresses": [h.ip], "targetRef": {"kind": "Pod", "name": h.item["metadata"]["name"], "namespace": h.item["metadata"]["namespace"]},
                    "conditions": {"ready": True}} for h in by_dep.get(dep, ())]
            slices.append({**o, "endpoints": eps})
        return {"apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": "", "annotations": {SNAPSHOT_ANNOTATION: format_time(t)}},
                "items": [*self.static, *(h.item for h in present), *slices]}

    def pods_ever(self) -> int:
        return sum(len(s) for s in self.slots)

    def timeline(self, slot: int, rng: random.Random) -> list[tuple[str, int, int]]:
        """(address, first traffic, last traffic) of each holder of the slot within the week: a
        pod's traffic starts a few seconds after it does and stops a few seconds before it goes."""
        out = []
        for h in self.slots[slot]:
            lo = max(h.start + rng.randrange(1, 21) * SEC, W0 + rng.randrange(0, 300) * SEC)
            hi = min(self.end, h.end) - rng.randrange(1, 21) * SEC if h.end is not None else self.end - rng.randrange(0, 300) * SEC
            if hi > lo:
                out.append((h.ip, lo, hi))
        return out


def _pattern_runs(rng: random.Random, lo: int, hi: int, days: int) -> list[tuple[int, int, int]]:
    """Runs of one edge from ``lo`` to ``hi``: steady (one run, 60% of the edges), daily (10 to 60
    minutes at one time of day, 25%) or every 2, 4, 6 or 12 hours (1 to 5 minutes, 15%)."""
    r = rng.random()
    if r < 0.6:
        period = rng.uniform(5, 60) * SEC
        return [(lo, hi, max(1, int((hi - lo) // period)))]
    if r < 0.85:
        every, length = DAY, rng.randrange(10, 61) * MINUTE
    else:
        every, length = rng.choice((2, 4, 6, 12)) * HOUR, rng.randrange(1, 6) * MINUTE
    phase = rng.randrange(every // SEC) * SEC
    runs = []
    for k in range(int(days * DAY // every) + 1):
        a = max(lo, W0 + k * every + phase)
        b = min(hi, W0 + k * every + phase + length)
        if b > a:
            runs.append((a, b, max(1, int((b - a) // (10 * SEC)))))
    return runs


def week_flows(cluster: _Cluster, count: int, seed: int = 11) -> tuple[FlowLog, list[tuple]]:
    """About ``count`` flow lines over the cluster's week, each edge's addresses those of whichever
    pods held its ends at the time; first, one flow across each address handover (a client that
    calls an outside address of its own steadily, so its run goes on from the old holder to the
    new one): returned with (outside address, old holder's workload, new holder's workload, kind)."""
    rng = random.Random(seed)
    lines: dict[tuple, list] = defaultdict(list)
    checks = []
    for i, (ip, c, b) in enumerate(cluster.handovers):
        dst = f"198.18.{i // 250}.{i % 250 + 1}"
        # Even: the run began while the old pod was certainly there (a snapshot showed it then);
        # odd: half an hour before it went, after the last snapshot that showed it (inference).
        lo = max(c.start, W0) + rng.randrange(1, 21) * SEC if i % 2 == 0 else c.end - 30 * MINUTE
        n1 = max(1, (c.end - lo) // (20 * SEC))
        lines[(ip, dst, 443)] += [(lo, c.end - rng.randrange(1, 21) * SEC, n1), (b.start + rng.randrange(1, 21) * SEC, b.start + 30 * MINUTE, 90)]
        checks.append((dst, f"{c.item['metadata']['namespace']}/Deployment/{c.dep}", f"{b.item['metadata']['namespace']}/Deployment/{b.dep}",
                       "certain" if i % 2 == 0 else "inferred"))
    slots = len(cluster.slots)
    timelines: dict[int, list] = {}

    def tl(slot: int):
        if slot not in timelines:
            timelines[slot] = cluster.timeline(slot, rng)
        return timelines[slot]

    edges = 0
    while len(lines) < count:
        edges += 1
        r = rng.random()
        client = [(cluster.node_ips[rng.randrange(len(cluster.node_ips))], W0, cluster.end)] if r >= 0.95 else tl(rng.randrange(slots))
        if r < 0.5:
            _, _, cip = cluster.services[rng.randrange(len(cluster.services))]
            server, port = [(cip, W0, cluster.end)], 80
        elif r < 0.8 or r >= 0.95:
            server, port = tl(rng.randrange(slots)), 8080
        else:
            server, port = [(f"203.0.113.{rng.randrange(1, 255)}", W0, cluster.end)], 443
        for src, lo_c, hi_c in client:
            for dst, lo_s, hi_s in server:
                lo, hi = max(lo_c, lo_s), min(hi_c, hi_s)
                if hi > lo and src != dst:
                    runs = _pattern_runs(rng, lo, hi, cluster.days)
                    if runs:
                        lines[(src, dst, port)] += runs
    flows = []
    for (src, dst, port), runs in lines.items():
        runs = merge_runs(runs)
        n = sum(r[2] for r in runs)
        flows.append(Flow(src, dst, "TCP", port, 10 * n, 2000 * n, n, runs[0][0], runs[-1][1], (("syn", n),),
                          evidence="established", runs=runs))
    return FlowLog(flows=tuple(sorted(flows, key=flow_sort_key)), sources=("bench_time",)), checks


def _resolution_figures(res, checks: list[tuple]) -> dict:
    rep = res.report
    clients = Counter(c.client.kind for c in res.connections)
    out = {
        "connections": len(res.connections),
        "connections_by_client": dict(sorted(clients.items())),
        "flows_by_kind": rep.flows_by_kind,
        "unresolved_addresses": len(rep.unresolved),
        "unresolved_flows": sum(n for *_, n in rep.unresolved),
        "ambiguous_addresses": len(rep.ambiguous),
        "ambiguous_flows": sum(n for *_, n in rep.ambiguous),
        "inferred": len(getattr(rep, "inferred", ()) or ()),
        "unresolved_reasons": dict(Counter(_reason(why) for _, why, _ in rep.unresolved).most_common(4)),
        "clock_warning": getattr(rep, "clock_warning", None),
    }
    if checks:
        found: dict[str, set] = defaultdict(set)
        wanted = {dst for dst, *_ in checks}
        for c in res.connections:
            if c.server.address in wanted:
                found[c.server.address].add(f"{c.client.namespace}/{c.client.workload}" if c.client.kind == "pod" else c.client.kind)
        tally: dict[str, Counter] = defaultdict(Counter)
        for dst, old, new, kind in checks:
            got = found.get(dst, set())
            if old == new:
                tally[kind]["same workload"] += 1
            elif {old, new} <= got:
                tally[kind]["both holders"] += 1
            elif new in got:
                tally[kind]["new holder only"] += 1
            elif old in got:
                tally[kind]["old holder only"] += 1
            else:
                tally[kind]["neither"] += 1
        out["handovers"] = {k: dict(sorted(v.items())) for k, v in sorted(tally.items())}
    return out


def _reason(why: str | None) -> str:
    why = why or ""
    return why.split(" (")[0] if why.startswith("no pod held it") else why[:60]


def child_resolve(args) -> dict:
    """Part 2, one scenario, in its own process."""
    out: dict = {"phases": {}, "scenario": args.scenario}
    ph = out["phases"]
    t0 = time.perf_counter()
    args.dir.mkdir(parents=True, exist_ok=True)
    checks: list = []
    if args.scenario == "today":
        raw = build_cluster(args.pods)
        path = args.dir / f"today-{args.pods}.json"
        path.write_text(json.dumps(raw))
        files = [path]
        log = bench_resolve.flows(raw, args.flows)
        out["pods_in_inventory"] = sum(1 for o in raw["items"] if o["kind"] == "Pod")
        del raw
    else:
        cluster = _Cluster(args.pods, args.days, 0.1 if args.scenario == "churn" else 0.0)
        files = []
        snaps = range(args.days) if args.scenario == "churn" else [args.days - 1]
        for k in snaps:
            path = args.dir / f"{args.scenario}-{args.pods}-day{k}.json"
            path.write_text(json.dumps(cluster.snapshot(k)))
            files.append(path)
        log, checks = week_flows(cluster, args.flows)
        out["pods_in_inventory"] = cluster.pods_ever()
        out["handovers"] = len(cluster.handovers)
        del cluster
    out["snapshots"] = len(files)
    out["inventory_bytes"] = sum(p.stat().st_size for p in files)
    flow_path = args.dir / f"{args.scenario}-{args.pods}-flows.jsonl"
    write_flow_log(log, flow_path)
    out["flow_log_bytes"] = flow_path.stat().st_size
    out.update(flow_lines=len(log.flows), runs=sum(len(f.runs) for f in log.flows))
    out["build_seconds"] = round(time.perf_counter() - t0, 1)
    gc.collect()

    inv = None
    with measured(ph, "load_inventory"):
        inv = nl.load_inventory(files, warn=lambda message: print(f"  warning: {message}", file=sys.stderr))
    if inv is None:
        out["process_peak_mb"] = round(process_peak_mb(), 1)
        return out
    out["inventory"] = {"pods": len(inv.pods), "services": len(inv.services), "slices": len(inv.endpoint_slices),
                        "workloads": len(inv.workloads)}
    res = None
    with measured(ph, "resolve"):
        res = nl.resolve(log, inv)
    if res is not None:
        out["resolution"] = _resolution_figures(res, checks)
    del res
    gen = None
    with measured(ph, "generate"):
        gen = nl.generate(log, inv)
    if gen is not None:
        out["generated"] = {"policies": len(gen.policies.policies), "files": len(gen.files),
                            "bytes": sum(len(t) for t in gen.files.values())}
    out["process_peak_mb"] = round(process_peak_mb(), 1)
    return out


# --- the parent: run the children, print the tables ------------------------------------------


def _child(argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"{' '.join(argv[:2])}: exit status {proc.returncode}"}
    return json.loads(proc.stdout)


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _phase(rec: dict | None) -> str:
    if not rec:
        return "|  |  |"
    if "error" in rec:
        return f"| FAILED after {rec['seconds']:.2f} s: {rec['error']} |  |"
    return f"| {rec['seconds']:.2f} | {rec['peak_mb']:.0f} (from {rec['rss_before_mb']:.0f}) |"


def report_log(out: dict, read: dict, read_raw: dict) -> None:
    m = out["model"]
    print(f"\n## {out['sizes'][-1]['days']} days of flow log of a {m['pods']}-pod namespace ({m['deployments']} Deployments)\n")
    print(f"{m['edges']} steady edges between Deployments (a connection every 5-60 s), {m['outside_callers']} Deployment(s) calling an "
          f"outside endpoint every 1-5 min, {m['cronjobs']} hourly CronJob(s) calling a database, {m['batch_deployments']} Deployment(s) in "
          f"a nightly 20-min batch burst, {m['pods_rolled']} pods given new addresses by daily rolling updates. "
          f"Simulated in {out['simulate_seconds']:.0f} s.\n")
    print("| log | segments | flow lines | runs | runs per line | dns lines | bytes | connections | packets on the wire | packets kept by the sniffer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sizes = out["sizes"]
    for s in sizes:
        print(f"| {s['days']} day{'s' if s['days'] > 1 else ''} | {s['segments']} | {s['flow_lines']:,} | {s['runs']:,} | {s['runs'] / max(1, s['flow_lines']):.1f} | "
              f"{s['dns_lines']:,} | {_mb(s['bytes'])} | {s['simulated_connections']:,} | {s['wire_packets']:,} | {s['kept_packets']:,} |")
    for a, b in zip(sizes, sizes[1:]):
        d = b["days"] - a["days"]
        print(f"| per day, days {a['days']} to {b['days']} | {24:d} | +{(b['flow_lines'] - a['flow_lines']) / d:,.0f} | +{(b['runs'] - a['runs']) / d:,.0f} |  | "
              f"+{(b['dns_lines'] - a['dns_lines']) / d:,.0f} | +{_mb((b['bytes'] - a['bytes']) / d)} | +{(b['simulated_connections'] - a['simulated_connections']) / d:,.0f} | "
              f"+{(b['wire_packets'] - a['wire_packets']) / d:,.0f} | +{(b['kept_packets'] - a['kept_packets']) / d:,.0f} |")
    last = sizes[-1]
    print(f"\nRuns take {_mb(out['run_bytes'])} of the {_mb(last['bytes'])} of the {last['days']}-day log. Its flow lines by kind of traffic:\n")
    print("| traffic | flow lines | runs | runs per line | connections |")
    print("|---|---:|---:|---:|---:|")
    for kind, (lines, runs, conns) in out["by_kind"].items():
        print(f"| {kind} | {lines:,} | {runs:,} | {runs / lines:.1f} | {conns:,} |")
    raw = out["raw"]
    print(f"\nThe sniffer's own output, the {raw['segments']} segments one after the other: {raw['flow_lines']:,} flow lines, "
          f"{raw['dns_lines']:,} dns lines, {_mb(raw['bytes'])}.\n")
    print("| step | wall (s) | peak RSS, MB (RSS before) |")
    print("|---|---:|---:|")
    ph = out["phases"]
    print(f"| `merge_logs` of the {raw['segments']} segments (in memory) {_phase(ph.get('merge'))}")
    print(f"| `write_flow_log` of the merged log {_phase(ph.get('write'))}")
    print(f"| `read_flow_log` of the merged log ({_mb(last['bytes'])}), a process of its own {_phase(read.get('phases', {}).get('read'))}")
    print(f"| `read_flow_log` of the {raw['segments']}-segment file ({_mb(raw['bytes'])}; reads and merges, as `merge` does) {_phase(read_raw.get('phases', {}).get('read'))}")
    same = read.get("sha256") == out["merged_sha256"] == read_raw.get("sha256")
    print(f"\nRead back, the merged log and the segment file give the same log, byte for byte, as the one written: {'yes' if same else 'NO'}.")


def report_resolve(rows: dict, days: int) -> None:
    names = {"churn": f"{days} days, 10% churn a day", "steady": f"{days} days, no churn", "today": "one moment (today's shape)"}
    print("\n## resolve and generate over a week\n")
    print("| scenario | snapshots | pods | flow lines | runs | load_inventory s | peak MB | resolve s | peak MB | generate s | peak MB | connections | policies |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, r in rows.items():
        if "error" in r and "phases" not in r:
            print(f"| {names[key]} | FAILED: {r['error']} |")
            continue
        cells = []
        for phase in ("load_inventory", "resolve", "generate"):
            p = r["phases"].get(phase)
            if not p:
                cells += ["-", "-"]
            elif "error" in p:
                cells += ["FAILED", f"{p['peak_mb']:.0f}"]
            else:
                cells += [f"{p['seconds']:.2f}", f"{p['peak_mb']:.0f}"]
        res = r.get("resolution", {})
        gen = r.get("generated", {})
        print(f"| {names[key]} | {r['snapshots']} | {r['pods_in_inventory']:,} | {r['flow_lines']:,} | {r['runs']:,} | {' | '.join(cells)} | "
              f"{_n(res.get('connections'))} | {_n(gen.get('policies'))} |")
    for key, r in rows.items():
        if "phases" not in r:
            continue
        print(f"\n{names[key]}: inventory {_mb(r['inventory_bytes'])} in {r['snapshots']} file(s), flow log {_mb(r['flow_log_bytes'])} "
              f"(inputs built in {r['build_seconds']:.0f} s); process peak {r.get('process_peak_mb', 0):.0f} MB.")
        for phase, p in r["phases"].items():
            if "error" in p:
                print(f"- {phase} FAILED: {p['error']}")
        res = r.get("resolution")
        if res:
            print(f"- connections by client kind: {res['connections_by_client']}; flows by kind: {res['flows_by_kind']}")
            print(f"- unresolved: {res['unresolved_flows']:,} flows at {res['unresolved_addresses']:,} addresses {res['unresolved_reasons']}; "
                  f"ambiguous: {res['ambiguous_flows']:,} flows at {res['ambiguous_addresses']:,} addresses; inferred attributions: {res['inferred']:,}")
            if res.get("clock_warning"):
                print(f"- clock warning: {res['clock_warning']}")
            if "handovers" in res:
                print(f"- {r['handovers']:,} address handovers; the flow across each, by who it resolved to: {res['handovers']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=7, help="days simulated (default 7)")
    ap.add_argument("--pods", type=int, default=10_000, help="pods of the cluster of part 2 (default 10,000)")
    ap.add_argument("--flows", type=int, default=100_000, help="flow lines of part 2 (default 100,000)")
    ap.add_argument("--ns-pods", type=int, default=500, help="pods of the namespace of part 1 (default 500)")
    ap.add_argument("--quick", action="store_true", help="small sizes (2 days, 50 + 1,000 pods, 5,000 flows): a smoke test")
    ap.add_argument("--only", choices=("log", "resolve"), help="run only part 1 (log) or part 2 (resolve)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench/time"), help="where the inputs and logs are written")
    ap.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    ap.add_argument("--child", choices=("log", "read", "resolve"), help=argparse.SUPPRESS)
    ap.add_argument("--scenario", choices=("churn", "steady", "today"), help=argparse.SUPPRESS)
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.days, args.pods, args.flows, args.ns_pods = min(args.days, 2), 1_000, 5_000, 50
    if args.days < 1 or args.pods < 10 or args.flows < 1 or args.ns_pods < 5:
        ap.error("--days must be at least 1, --pods at least 10, --ns-pods at least 5, --flows at least 1")
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.child:
        result = {"log": child_log, "read": child_read, "resolve": child_resolve}[args.child](args)
        json.dump(result, sys.stdout)
        return

    sizes = ["--days", str(args.days), "--pods", str(args.pods), "--flows", str(args.flows), "--ns-pods", str(args.ns_pods), "--dir", str(args.dir)]
    figures: dict = {}
    t0 = time.perf_counter()
    if args.only in (None, "log"):
        out = _child(["--child", "log", *sizes])
        if "error" in out:
            print(f"part 1 FAILED: {out['error']}")
        else:
            read = _child(["--child", "read", "--path", out["sizes"][-1]["path"], *sizes])
            read_raw = _child(["--child", "read", "--path", out["raw"]["path"], *sizes])
            figures["log"] = {**out, "read": read, "read_segments": read_raw}
            report_log(out, read, read_raw)
    if args.only in (None, "resolve"):
        rows = {s: _child(["--child", "resolve", "--scenario", s, *sizes]) for s in ("churn", "steady", "today")}
        figures["resolve"] = rows
        report_resolve(rows, args.days)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; {'--quick sizes' if args.quick else 'sizes as given'})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
