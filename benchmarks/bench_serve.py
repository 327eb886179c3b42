"""Benchmark: the learning service (`netpol-learn serve`) under load from many sniffers.

`netpol-learn serve --no-watch` runs as a process of its own on loopback with a fresh SQLite store
(in ``--dir``, a real file system: every answered segment is fsync'd) and a tokens file. Simulated
sniffers post gzip flow-log segments to ``POST /v1/segments`` as `sniff --server` does (urllib3,
keep-alive, one segment at a time per node, the next only after the answer); the sniffers live in
``--clients`` processes of their own (multiprocessing, a thread per node), which build every
segment of a level before it starts, so that during a level they only send.

**The segments.** Each simulated node has pods of its own (distinct addresses, ``10.128.0.0/9``, a
/24 per node), and a fixed set of edges that its segments draw from, as a real node repeats its
traffic: its pods calling cluster Services (with the backends behind them under ``translated``),
pods of other nodes, outside addresses; pods of other nodes, the node and Prometheus calling its
pods; refused and unanswered attempts; each pod's DNS lookups (UDP and TCP to the cluster DNS,
and a node-local cache) and their DNS lines (Service names through the search path, most of them
NXDOMAIN, outside names with a CNAME). A segment of M flow lines draws about 19% of them from the
DNS flows and the rest from a pool 2.7 times its size, so a line recurs in about one segment in
three (the busy-node capture's shape, below); now and then a line with a new client address (a
CronJob's pod) is added. The DNS lines are ``--dns-per-flow`` times M. Everything is built with
``netpol_learn._flowlog`` (``Flow``, ``DnsObservation``, ``merge_logs`` as the sniffer cuts a
segment, ``dumps_lines``) and gzip'd as the sniffer's spool does (level 6). Segment ``k`` of a node
covers the 30 s ``[base + 30k s, base + 30(k+1) s)``, ``base`` a week before now, cut at its end.

**Time is compressed.** A node posts every ``--period`` seconds (default 10) instead of the
DaemonSet's 30: what the service sees is the arrival rate and how many requests overlap, not which
node sends them, so a level offering R segments/s runs ``R x period`` simulated nodes (at most
``--nodes``; beyond that the period shrinks to nodes/R), each at a random phase. At the real
interval the same rate is ``R x 30`` nodes. The segments' own times stay 30 s apart.

**The ramp.** One node first posts a few segments back to back (the service time of one segment,
L). Then levels of rising offered rate, from ``--start`` x 1/L by ``--step``, each ``--level-seconds``
long (and at least ``--min-posts`` posts), until a level is not held: POST latency p99 over
``--p99`` seconds, an achieved rate (201 answers / the level's time) under 95% of the offered one,
or any answer other than 201. The highest level held is the result: segments/s, flow lines/s,
and nodes one instance serves at 30 s intervals. Per level: client-side POST latency p50/p95/p99/
max, the service's CPU (``/proc/PID/stat``) and peak RSS (``VmHWM``, reset with
``/proc/PID/clear_refs`` before the level), and the clients' own CPU.

**After the ramp**, on the store it left: its bytes (the file and its ``-wal`` after
``PRAGMA wal_checkpoint(TRUNCATE)``) per flow line and per segment; ``GET /v1/flows`` (the merge of
every segment) the first time, again with nothing new (the merge is cached in memory), after 64
more segments (folded in, and the merge checkpointed in the store), and after a restart of the
service on the same store (from the checkpoint); ``GET /metrics`` and ``GET /readyz``.

    python benchmarks/bench_serve.py                          # the full run: about 20 minutes
    python benchmarks/bench_serve.py --smoke                  # about 15 s
    python benchmarks/bench_serve.py --flows 1600 --level-seconds 30 --json out.json
    python benchmarks/bench_serve.py --profile --flows 1600   # cProfile of the service in-process

``--profile`` runs the service in a child process through ``netpol_learn._serve.make_app`` on
uvicorn instead (the event loop's thread and the pool threads that take segments and merge each
under cProfile), posts segments at 60% of one segment's service time, reads ``GET /v1/flows``,
and prints where the time goes; and it times the steps of taking one segment on their own.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import ipaddress
import json
import math
import multiprocessing as mp
import os
import random
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netpol_learn._flowlog import (
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    Translation,
    dumps_lines,
    merge_logs,
)

SEC = 10**9
INTERVAL = 30  # the DaemonSet's --interval, seconds
WRITE = "bench-write-token-0123456789abcdef"
READ = "bench-read-token-0123456789abcdef0"
RESOLVER, NODE_LOCAL_DNS = "10.96.0.10", "169.254.20.10"
#: A busy node's 30 s segment (the busy-node capture of bench_capture.py cut in 30 s windows,
#: 1,511 to 1,710 flow lines and 1,736 to 2,224 DNS lines each; see benchmarks/README.md).
BUSY_FLOWS = 1600
DNS_PER_FLOW = 1.3
DNS_FLOW_SHARE = 0.19  # of the flow lines: lookups (port 53)
POOL_FACTOR = 2.7  # a node's edges / the flow lines of one segment: a line recurs every ~3 segments
CLUSTER_NODES = 1000  # nodes the remote pod addresses are drawn from
NAMESPACES = [f"ns-{i}" for i in range(20)]


# --- what a node's sniffer sees -------------------------------------------------------------


def pod_ip(node: int, host: int) -> str:
    return f"10.{128 + node // 256}.{node % 256}.{host}"


def _services(seed: int) -> list[tuple]:
    """The cluster's Services: (ClusterIP, port, target port, FQDN, backend addresses)."""
    rng = random.Random(f"{seed}/services")
    out = []
    for i in range(200):
        port, target = rng.choice([(80, 8080), (443, 8443), (5432, 5432), (6379, 6379), (9090, 9090), (50051, 50051)])
        backends = [pod_ip(rng.randrange(CLUSTER_NODES), rng.randrange(2, 112)) for _ in range(rng.randint(1, 4))]
        out.append((f"10.96.{1 + i // 250}.{1 + i % 250}", port, target, f"svc-{i}.{NAMESPACES[i % 20]}.svc.cluster.local", backends))
    return out


class Node:
    """One node's traffic: its pods, the edges and lookups its segments draw from."""

    def __init__(self, index: int, flows: int, dns_per_flow: float, seed: int):
        self.index = index
        self.name = f"node-{index:04d}"
        self.rng = random.Random(f"{seed}/{index}")
        self.flows = flows
        self.n_dns_flows = round(flows * DNS_FLOW_SHARE)
        self.n_other = flows - self.n_dns_flows
        self.n_dns = round(flows * dns_per_flow)
        self.services = _services(seed)
        self.pods = [pod_ip(index, h) for h in range(2, 2 + min(110, max(4, flows // 12)))]
        self.node_ip = f"172.18.{index // 250}.{2 + index % 250}"
        self.prometheus = pod_ip((index + 1) % CLUSTER_NODES, 3)
        self.fresh = 0
        self.dns_flow_pool = sorted({(p, r, proto) for p in self.pods for r, proto in
                                     ((RESOLVER, "UDP"), (RESOLVER, "TCP"), (NODE_LOCAL_DNS, "UDP"))},
                                    key=lambda k: (k[2] != "UDP", k[1] != RESOLVER, k[0]))
        self.dns_flow_pool = self.dns_flow_pool[:max(self.n_dns_flows, math.ceil(1.2 * self.n_dns_flows))]
        edges: dict[tuple, tuple] = {}
        want = math.ceil(POOL_FACTOR * self.n_other)
        while len(edges) < want:
            key, extra = self._edge()
            edges.setdefault(key, extra)
        self.edges = sorted(edges.items())
        lookups: dict[tuple, tuple] = {}
        want = math.ceil(POOL_FACTOR * self.n_dns)
        while len(lookups) < want:
            key, extra = self._lookup()
            lookups.setdefault(key, extra)
        self.lookups = sorted(lookups.items())

    def _edge(self) -> tuple[tuple, tuple]:
        """((src, dst, proto, port, evidence), (translated backends, target port))."""
        rng = self.rng
        pod = rng.choice(self.pods)
        x = rng.random()
        if x < 0.45:
            ip, port, target, _, backends = rng.choice(self.services)
            return (pod, ip, "TCP", port, "established"), (tuple(rng.sample(backends, min(len(backends), rng.randint(1, 2)))), target)
        if x < 0.65:
            return (pod, pod_ip(rng.randrange(CLUSTER_NODES), rng.randrange(2, 112)), "TCP",
                    rng.choice([8080, 9090, 5432, 6379, 50051]), "established"), ((), None)
        if x < 0.80:
            return (pod_ip(rng.randrange(CLUSTER_NODES), rng.randrange(2, 112)), pod, "TCP", rng.choice([8080, 8443, 50051]),
                    "established"), ((), None)
        if x < 0.88:
            return (pod, f"{rng.choice(['203.0.113', '198.51.100', '192.0.2'])}.{rng.randrange(1, 255)}", "TCP",
                    rng.choice([443, 443, 443, 80]), "established"), ((), None)
        if x < 0.93:
            return (self.node_ip, pod, "TCP", rng.choice([8080, 8081]), "established"), ((), None)
        if x < 0.97:
            return (self.prometheus, pod, "TCP", 9102, "established"), ((), None)
        return (pod, pod_ip(rng.randrange(CLUSTER_NODES), rng.randrange(2, 112)), "TCP", rng.choice([8080, 9000, 3306]),
                rng.choice(["refused", "unanswered"])), ((), None)

    def _lookup(self) -> tuple[tuple, tuple]:
        """((client, resolver, qname, qtype), (answers, rcode))."""
        rng = self.rng
        pod = rng.choice(self.pods)
        qtype = rng.choice(["A", "AAAA"])
        ns = rng.choice(NAMESPACES)
        x = rng.random()
        if x < 0.7:  # a Service name through the search path: the wrong suffixes are NXDOMAIN
            ip, _, _, fqdn, _ = rng.choice(self.services)
            short = fqdn.split(".svc.")[0]
            suffix = rng.choice([f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local", ""])
            name = f"{short}.{suffix}".rstrip(".") if suffix else fqdn
            if name == fqdn:
                return (pod, RESOLVER, name, qtype), (((name, "A", ip, 30),) if qtype == "A" else (), "NOERROR")
            return (pod, RESOLVER, name, qtype), ((), "NXDOMAIN")
        host = f"api.partner-{rng.randrange(50)}.example"
        if x < 0.85:
            return (pod, RESOLVER, f"{host}.{ns}.svc.cluster.local", qtype), ((), "NXDOMAIN")
        edge = f"edge-{rng.randrange(20)}.cdn.example"
        answers = ((host, "CNAME", edge, 300),) + (((edge, "A", f"203.0.113.{rng.randrange(1, 255)}", 60),) if qtype == "A" else ())
        return (pod, rng.choice([RESOLVER, NODE_LOCAL_DNS]), host, qtype), (answers, "NOERROR")

    def segment(self, seq: int, base: int, churn: float) -> FlowLog:
        """Segment ``seq``: the 30 s from ``base + 30 seq`` s."""
        rng = random.Random(f"{self.index}/{seq}")
        w0 = base + seq * INTERVAL * SEC
        flows = []

        def times() -> tuple[int, int]:
            first = w0 + rng.randrange(0, (INTERVAL - 1) * SEC)
            return first, min(w0 + INTERVAL * SEC - 1, first + rng.randrange(1_000_000, 8 * SEC))

        for src, dst, proto in rng.sample(self.dns_flow_pool, min(self.n_dns_flows, len(self.dns_flow_pool))):
            n = rng.randint(1, 4)
            first, last = times()
            flows.append(Flow(src, dst, proto, 53, 2 * n if proto == "UDP" else 8 * n, 180 * n if proto == "UDP" else 700 * n,
                              n, first, last, (("dns" if proto == "UDP" else "syn", n),),
                              evidence="answered" if proto == "UDP" else "established"))
        picked = rng.sample(self.edges, self.n_other)
        while rng.random() < churn:  # a new client address: a CronJob's pod, a rolled pod
            self.fresh += 1
            address = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + self.index * 50_000 + self.fresh))
            picked.append(((address, rng.choice(self.services)[0], "TCP", 5432, "established"), ((), None)))
            churn /= 2
        for (src, dst, proto, port, evidence), (backends, target) in picked:
            n = rng.choice([1, 1, 1, 1, 2, 2, 3, 5, 8, 20]) if evidence == "established" else rng.randint(1, 3)
            first, last = times()
            packets = n * (rng.randint(6, 40) if evidence == "established" else 2)
            heuristic = evidence == "established" and rng.random() < 0.15
            flows.append(Flow(
                src, dst, proto, port, packets, packets * rng.randint(60, 900), n, first, last,
                (("port-heuristic", n),) if heuristic else (("syn", n),),
                client_ports=tuple(sorted(rng.sample(range(32768, 61000), rng.randint(1, 3)))) if heuristic else (),
                translated=tuple(sorted(Translation(src, b, target) for b in backends)), evidence=evidence))
        dns = []
        for (client, resolver, qname, qtype), (answers, rcode) in rng.sample(self.lookups, self.n_dns):
            n = rng.randint(1, 6)
            first, last = times()
            dns.append(DnsObservation(client, resolver, qname, qtype, n, n, first, last,
                                      tuple(DnsAnswer(*a) for a in answers), (rcode,), ("udp",)))
        packets = sum(f.packets for f in flows) + 2 * sum(d.queries for d in dns)
        stats = {"decoded": packets, "duplicates": packets // 50, "packets": packets + packets // 50}
        # As the sniffer cuts a segment: merge_logs of the interval (sorted, keys united).
        return merge_logs([FlowLog(tuple(flows), tuple(dns), stats, (f"sniff:{self.name}",))])


def body_of(log: FlowLog) -> bytes:
    """The request body, as the sniffer's spool writes it."""
    return gzip.compress("".join(dumps_lines(log)).encode("utf-8"), compresslevel=6, mtime=0)


# --- the simulated sniffers (client processes) --------------------------------------------


def client_main(conn, host: str, port: int, flows: int, dns_per_flow: float, seed: int, base: int, churn: float) -> None:
    """A client process: builds the segments of its nodes for a level, then posts them on time."""
    import urllib3

    nodes: dict[int, Node] = {}
    seqs: dict[int, int] = {}
    pools: dict[int, urllib3.HTTPConnectionPool] = {}
    boot = f"{base}-{os.getpid()}"
    headers = {"Authorization": f"Bearer {WRITE}", "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            return
        _, plan = msg  # [(node index, [offsets from the level's start])]
        t = time.perf_counter()
        work = []
        for index, offsets in plan:
            node = nodes.get(index) or nodes.setdefault(index, Node(index, flows, dns_per_flow, seed))
            posts = []
            for offset in offsets:
                seq = seqs.get(index, 0)
                seqs[index] = seq + 1
                log = node.segment(seq, base, churn)
                cut = base + (seq + 1) * INTERVAL * SEC
                posts.append((offset, seq, cut, len(log.flows), len(log.dns), body_of(log)))
            if index not in pools:
                pools[index] = urllib3.HTTPConnectionPool(host, port, maxsize=1, retries=False, timeout=urllib3.Timeout(connect=5, read=300))
            work.append((index, node.name, posts))
        built = time.perf_counter() - t
        conn.send(("ready", built, sum(len(p[5]) for w in work for p in w[2]), sum(len(w[2]) for w in work)))
        msg = conn.recv()
        start = msg[1]  # time.monotonic() (CLOCK_MONOTONIC: the same clock in every process)
        records: list[tuple] = []
        lock = threading.Lock()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        threads = [threading.Thread(target=send_posts, args=(pools[index], name, boot, headers, posts, start, records, lock))
                   for index, name, posts in work]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        conn.send(("done", records, cpu))


def send_posts(pool, name: str, boot: str, headers: dict, posts: list, start: float, records: list, lock) -> None:
    """One sniffer: its posts one after the other, each when due (or after the answer to the one
    before, when that came later), each (due, sent, answered, status, flow lines, dns lines)."""
    out = []
    for offset, seq, cut, n_flows, n_dns, body in posts:
        due = start + offset
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        try:
            r = pool.urlopen("POST", f"/v1/segments?node={name}&boot={boot}&seq={seq}&cut={cut}", body=body,
                             headers=headers, retries=False, redirect=False)
            status = r.status
        except Exception as exc:  # noqa: BLE001 - counted as a failure of the level
            status = f"{type(exc).__name__}: {exc}"
        out.append((due, t0, time.monotonic(), status, n_flows, n_dns))
    with lock:
        records.extend(out)


class Clients:
    """``count`` client processes; node ``i`` belongs to process ``i % count``."""

    def __init__(self, count: int, host: str, port: int, args, base: int):
        ctx = mp.get_context("fork")
        self.pipes, self.procs = [], []
        for _ in range(count):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=client_main, args=(child, host, port, args.flows_now, args.dns_per_flow, args.seed, base, args.churn),
                            daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def run(self, plan: list[tuple[int, list[float]]], before=None) -> dict:
        """Build the plan's segments in the clients, then (``before()`` called) post them, all
        starting together."""
        shares = [[] for _ in self.pipes]
        for index, offsets in plan:
            shares[index % len(self.pipes)].append((index, offsets))
        for pipe, share in zip(self.pipes, shares):
            pipe.send(("plan", share))
        ready = [pipe.recv() for pipe in self.pipes]
        if before is not None:
            before()
        start = time.monotonic() + 0.3
        for pipe in self.pipes:
            pipe.send(("go", start))
        done = [pipe.recv() for pipe in self.pipes]
        return {"start": start, "records": [r for d in done for r in d[1]], "client_cpu": sum(d[2] for d in done),
                "build_s": max(r[1] for r in ready), "body_bytes": sum(r[2] for r in ready), "posts": sum(r[3] for r in ready)}

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("quit",))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(10)


# --- the service process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`netpol-learn serve --no-watch` as a process on 127.0.0.1."""

    def __init__(self, store: Path, tokens: Path, log: Path, port: int | None = None):
        import urllib3

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netpol_learn", "serve", "--store", str(store), "--listen", f"127.0.0.1:{self.port}",
                 "--tokens-file", str(tokens), "--no-watch"], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        self.log = log
        self.http = urllib3.PoolManager(retries=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited {self.proc.returncode}: {log.read_text()}")
            try:
                if self.http.request("GET", self.url + "/healthz", timeout=1).status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.05)
        self.proc.kill()
        raise SystemExit(f"serve did not answer within 60 s: {log.read_text()}")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak(self) -> None:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def get(self, path: str, token: str = READ, timeout: float = 3600):
        t0 = time.monotonic()
        r = self.http.request("GET", self.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        return r, time.monotonic() - t0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


# --- measuring ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def level_plan(rate: float, args, rng: random.Random) -> tuple[list, dict]:
    """Which nodes post when, for an offered ``rate`` (segments/s)."""
    nodes = min(args.nodes, max(1, round(rate * args.period)))
    period = nodes / rate
    posts = max(1, round(args.level_seconds / period), math.ceil(args.min_posts / nodes))
    plan = []
    for i in range(nodes):
        phase = rng.uniform(0, period)
        plan.append((i, [phase + k * period for k in range(posts)]))
    return plan, {"nodes": nodes, "period_s": round(period, 3), "posts_per_node": posts, "span_s": round(posts * period, 2),
                  "compression": round(INTERVAL / period, 2)}


def run_level(server: Server, clients: Clients, rate: float, args, rng: random.Random) -> dict:
    plan, shape = level_plan(rate, args, rng)
    # The clients build first (the service idle); its CPU and peak are taken around the posts.
    before = {}

    def measure():
        server.reset_peak()
        before["cpu"] = server.cpu()

    res = clients.run(plan, measure)
    cpu1 = server.cpu()
    start = res["start"]
    records = res["records"]
    ok = [r for r in records if r[3] == 201]
    bad = [r for r in records if r[3] != 201]
    latencies = [r[2] - r[1] for r in records]
    waited = [r[1] - r[0] for r in records]
    last_end = max(r[2] for r in records)
    lat = {f"p{q}": round(pct(latencies, q), 4) for q in (50, 95, 99)}
    # Achieved: the segments stored over the time from the level's start to its last answer, less
    # the median latency (what the last one takes even when the service keeps up).
    span = max(shape["span_s"], last_end - start - lat["p50"])
    achieved = len(ok) / span
    wall = last_end - start
    lat["max"] = round(max(latencies), 4)
    lat["mean"] = round(statistics.fmean(latencies), 4)
    flows = sum(r[4] for r in ok)
    row = {
        "offered_segments_s": round(rate, 3), **shape, "posts": len(records), "stored": len(ok),
        "errors": sorted({str(r[3]) for r in bad})[:5], "error_count": len(bad),
        "achieved_segments_s": round(achieved, 3), "achieved_flows_s": round(flows / span, 1),
        "latency_s": lat, "late_start_p99_s": round(pct(waited, 99), 4),
        "server_cpu_s": round(cpu1 - before["cpu"], 2), "server_cores": round((cpu1 - before["cpu"]) / wall, 3),
        "server_cpu_ms_per_segment": round(1000 * (cpu1 - before["cpu"]) / max(1, len(records)), 1),
        "server_peak_mb": round(server.status_mb("VmHWM"), 1), "server_rss_mb": round(server.status_mb("VmRSS"), 1),
        "client_cores": round(res["client_cpu"] / wall, 3), "build_s": round(res["build_s"], 2),
        "body_bytes_per_segment": round(res["body_bytes"] / max(1, res["posts"])),
        "load_avg": os.getloadavg()[0],
    }
    row["held"] = (not bad) and lat["p99"] <= args.p99 and achieved >= 0.95 * rate
    return row


def store_size(store: Path) -> dict:
    """The store's tables and bytes, after a checkpoint that empties the WAL into the file."""
    db = sqlite3.connect(store, timeout=60)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        segments, flows, dns, body = db.execute(
            "SELECT count(*), coalesce(sum(flows), 0), coalesce(sum(dns), 0), coalesce(sum(size), 0) FROM segments").fetchone()
        merged = db.execute("SELECT coalesce(sum(length(body)), 0) FROM merged").fetchone()[0]
    finally:
        db.close()
    sizes = {s: (os.stat(f"{store}{s}").st_size if os.path.exists(f"{store}{s}") else 0) for s in ("", "-wal")}
    total = sizes[""] + sizes["-wal"]
    return {"checkpoint_busy": busy, "file_bytes": sizes[""], "wal_bytes": sizes["-wal"], "bytes": total,
            "segments": segments, "flow_lines": flows, "dns_lines": dns, "segment_bodies_bytes": body, "checkpoint_bytes": merged,
            "bytes_per_flow_line": round(total / max(1, flows), 1), "bytes_per_line": round(total / max(1, flows + dns), 1),
            "bytes_per_segment": round(total / max(1, segments))}


def timed_get(server: Server, path: str) -> dict:
    server.reset_peak()
    cpu0 = server.cpu()
    r, took = server.get(path)
    lines = r.data.count(b"\n")
    return {"status": r.status, "seconds": round(took, 3), "bytes": len(r.data), "lines": lines,
            "sha256": hashlib.sha256(r.data).hexdigest(),
            "flow_lines": r.data.count(b'"kind": "flow"'), "dns_lines": r.data.count(b'"kind": "dns"'),
            "server_cpu_s": round(server.cpu() - cpu0, 2), "server_peak_mb": round(server.status_mb("VmHWM"), 1)}


def one_size(flows: int, args, workdir: Path) -> dict:
    """The ramp for segments of ``flows`` flow lines, then the reads on the store it left."""
    args.flows_now = flows
    store = workdir / f"store-{flows}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    tokens = workdir / "tokens.txt"
    tokens.write_text(f"{WRITE} write\n{READ} read\n")
    log = workdir / f"serve-{flows}.err"
    log.write_text("")
    base = (time.time_ns() // SEC - 7 * 86400) * SEC
    server = Server(store, tokens, log)
    clients = Clients(args.clients, "127.0.0.1", server.port, args, base)
    rng = random.Random(args.seed)
    out: dict = {"flows_per_segment": flows, "dns_lines_per_segment": round(flows * args.dns_per_flow)}
    try:
        out["server_start_mb"] = round(server.status_mb("VmHWM"), 1)
        # The service time of one segment: one node, back to back (node index past the ramp's).
        calib = []
        for i in range(args.calibrate):  # a node of its own each: a new connection, as a sniffer every 30 s has
            res = clients.run([(args.nodes + 1 + i, [0.0])])
            calib.extend(r[2] - r[1] for r in res["records"] if r[3] == 201)
        one = statistics.median(calib)
        out["one_segment_s"] = round(one, 4)
        print(f"\n{flows:,} flow lines (+{out['dns_lines_per_segment']:,} dns lines) a segment, "
              f"{res['body_bytes'] / max(1, res['posts']) / 1024:.0f} KiB gzip: one segment alone takes {one * 1000:.0f} ms "
              f"(median of {len(calib)})")
        print(f"{'offered/s':>9} {'nodes':>5} {'every':>6} {'posts':>5} {'achieved/s':>10} {'flows/s':>8} "
              f"{'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} {'srv cores':>9} {'ms/seg':>6} {'peak MB':>7} {'cli cores':>9}  held")
        rate = args.start / one if args.start_rate is None else args.start_rate
        levels = []
        for _ in range(args.max_levels):
            row = run_level(server, clients, rate, args, rng)
            if not row["held"] and args.confirm:  # the machine is shared: a level not held is tried once more
                again = run_level(server, clients, rate, args, rng)
                again["first_try"] = row
                row = again
            levels.append(row)
            lat = row["latency_s"]
            if "first_try" in row:
                f = row["first_try"]
                print(f"{f['offered_segments_s']:>9.2f}  not held (p99 {f['latency_s']['p99']:.3f} s, achieved {f['achieved_segments_s']:.2f}/s): once more")
            print(f"{row['offered_segments_s']:>9.2f} {row['nodes']:>5} {row['period_s']:>5.1f}s {row['posts']:>5} "
                  f"{row['achieved_segments_s']:>10.2f} {row['achieved_flows_s']:>8,.0f} {lat['p50']:>6.3f} {lat['p95']:>6.3f} "
                  f"{lat['p99']:>6.3f} {lat['max']:>6.3f} {row['server_cores']:>9.2f} {row['server_cpu_ms_per_segment']:>6.0f} "
                  f"{row['server_peak_mb']:>7.0f} {row['client_cores']:>9.2f}  {'yes' if row['held'] else 'NO'}"
                  + (f"  errors: {row['error_count']} {row['errors']}" if row["error_count"] else ""))
            if not row["held"]:
                break
            rate *= args.step
        out["levels"] = levels
        held = [r for r in levels if r["held"]]
        best_row = max(held, key=lambda r: r["offered_segments_s"]) if held else None
        best = best_row
        out["held"] = None if best is None else {
            "segments_s": best["offered_segments_s"], "flows_s": round(best["offered_segments_s"] * flows),
            "nodes_at_30s": math.floor(best["offered_segments_s"] * INTERVAL), "p99_s": best["latency_s"]["p99"]}
        out["first_not_held"] = next(({"segments_s": r["offered_segments_s"], "p99_s": r["latency_s"]["p99"],
                                       "achieved_segments_s": r["achieved_segments_s"]} for r in levels if not r["held"]), None)
        out["ramp_server_peak_mb"] = max(r["server_peak_mb"] for r in levels)
        out["ramp_server_cpu_s"] = round(sum(r["server_cpu_s"] for r in levels), 1)

        # The store the ramp left, and the reads on it.
        out["store"] = store_size(store)
        st = out["store"]
        print(f"store: {st['segments']:,} segments, {st['flow_lines']:,} flow + {st['dns_lines']:,} dns lines: "
              f"{st['bytes'] / 1e6:.1f} MB ({st['file_bytes']:,} file + {st['wal_bytes']:,} wal after a checkpoint): "
              f"{st['bytes_per_flow_line']:,.0f} bytes a flow line ({st['bytes_per_line']:,.0f} a flow or dns line), "
              f"{st['bytes_per_segment'] / 1024:,.1f} KiB a segment")
        reads = {}
        reads["flows_first"] = timed_get(server, "/v1/flows")
        reads["flows_repeat"] = timed_get(server, "/v1/flows")
        more = 64
        per = max(1, more // min(args.nodes, 8))
        res = clients.run([(i, [k * 0.05 for k in range(per)]) for i in range(min(args.nodes, 8))])
        reads["posted_more"] = len([r for r in res["records"] if r[3] == 201])
        reads["flows_after_more"] = timed_get(server, "/v1/flows")
        reads["flows_cached_again"] = timed_get(server, "/v1/flows")
        reads["metrics"] = timed_get(server, "/metrics")
        reads["readyz"] = timed_get(server, "/readyz")
        out["server_cpu_total_s"] = round(server.cpu(), 1)
        out["server_peak_mb_life"] = max(out["ramp_server_peak_mb"], *(v["server_peak_mb"] for v in reads.values() if isinstance(v, dict)))
        # The service again on the same store (and port): its merge starts from the checkpoint.
        server.stop()
        server = Server(store, tokens, log, server.port)
        reads["restart_ready_mb"] = round(server.status_mb("VmHWM"), 1)
        reads["flows_after_restart"] = timed_get(server, "/v1/flows")
        reads["restart_same_bytes"] = reads["flows_after_restart"]["sha256"] == reads["flows_cached_again"]["sha256"]
        # A merge the cache does not serve (?since= merges from the store every time) while
        # sniffers go on posting at half the rate held: what a reader costs the writers.
        since_line = ""
        if best is not None:
            half = best["offered_segments_s"] / 2
            plan, _ = level_plan(half, args, rng)
            plan = [(i + args.nodes + 100, offsets) for i, offsets in plan]
            got = {}
            reader = threading.Thread(target=lambda: got.update(timed_get(server, "/v1/flows?since=30d")))

            def start_reader():
                reader.start()

            res = clients.run(plan, start_reader)
            reader.join()
            lat = [r[2] - r[1] for r in res["records"]]
            reads["flows_since_during_posts"] = {
                **got, "posts": len(lat), "posted_segments_s": round(half, 3),
                "post_latency_s": {"p50": round(pct(lat, 50), 4), "p99": round(pct(lat, 99), 4), "max": round(max(lat), 4)},
                "posts_not_201": sum(1 for r in res["records"] if r[3] != 201)}
            d = reads["flows_since_during_posts"]
            since_line = (f"GET /v1/flows?since=30d (no cache) while {half:.2f} segments/s are posted: {d['seconds']:.1f} s; "
                  f"POST latency meanwhile p50 {d['post_latency_s']['p50']:.3f} s, p99 {d['post_latency_s']['p99']:.3f} s, "
                  f"max {d['post_latency_s']['max']:.3f} s (held level: p50 {best_row['latency_s']['p50']:.3f} s, "
                  f"p99 {best_row['latency_s']['p99']:.3f} s)")
        clients.close()
        clients = None
        out["reads"] = reads
        out["store_after_reads"] = store_size(store)
        for name in ("flows_first", "flows_repeat", "flows_after_more", "flows_cached_again", "flows_after_restart", "metrics", "readyz"):
            r = reads[name]
            print(f"GET {'/v1/flows' if name.startswith('flows') else '/' + name:<9} {name:<20} {r['seconds']:>8.3f} s  "
                  f"{r['bytes'] / 1e6:>7.2f} MB  {r['flow_lines']:>7,} flow lines  service CPU {r['server_cpu_s']:>6.2f} s, "
                  f"peak {r['server_peak_mb']:>5.0f} MB  (HTTP {r['status']})")
        print(f"the merge after the restart (from the checkpoint) is byte for byte the one before: "
              f"{'yes' if reads['restart_same_bytes'] else 'NO'}")
        if since_line:
            print(since_line)
    finally:
        if clients is not None:
            clients.close()
        if server.proc.poll() is None:
            server.stop()
    return out


# --- the reads that scan the segments table ------------------------------------------------


def scan_part(args, workdir: Path) -> dict:
    """/readyz, /metrics and the service's start on a store of ``--scan-rows`` segments.

    The rows are written by the store's own ``SqliteStore.add_segment`` (one transaction each,
    as the service writes them), all with the body of one segment of ``--scan-flows`` flow lines
    (small, so that the store fills in a minute or two), under ``--scan-nodes`` nodes."""
    from netpol_learn._serve import SegmentId, SqliteStore

    rows, nodes = args.scan_rows, args.scan_nodes
    store = workdir / "scan.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    base = (time.time_ns() // SEC - 30 * 86400) * SEC
    log = Node(0, args.scan_flows, args.dns_per_flow, args.seed).segment(0, base, 0.0)
    canonical = "".join(dumps_lines(log))
    blob = zlib.compress(canonical.encode("utf-8"), 6)
    connections = sum(f.connections for f in log.flows)
    t0 = time.monotonic()
    filling = SqliteStore(store)
    try:
        for i in range(rows):
            cut = base + (i // nodes) * INTERVAL * SEC
            filling.add_segment(SegmentId(f"node-{i % nodes:04d}", "b", i // nodes), cut, cut + SEC, len(log.flows), len(log.dns),
                                connections, canonical)
    finally:
        filling.close()
    filled = time.monotonic() - t0
    size = store_size(store)
    print(f"\nscan: a store of {rows:,} segments ({args.scan_flows} flow lines each, {len(blob) / 1024:.1f} KiB stored) from {nodes} nodes: "
          f"{size['bytes'] / 1e9:.2f} GB, filled in {filled:.0f} s")
    tokens = workdir / "tokens.txt"
    tokens.write_text(f"{WRITE} write\n{READ} read\n")
    t0 = time.monotonic()
    server = Server(store, tokens, workdir / "serve-scan.err")
    started = time.monotonic() - t0
    out = {"rows": rows, "nodes": nodes, "flows_per_segment": args.scan_flows, "stored_body_bytes": len(blob), "store": size,
           "fill_s": round(filled, 1), "serve_start_s": round(started, 3)}
    try:
        for path in ("/readyz", "/metrics"):
            times = []
            for _ in range(3):
                r = timed_get(server, path)
                times.append(r["seconds"])
            out[path] = {"seconds": times, "status": r["status"], "server_cpu_s_last": r["server_cpu_s"]}
            print(f"GET {path:<9} {', '.join(f'{t:.3f}' for t in times)} s (three calls; the store's pages in the page cache; "
                  f"service CPU of the last {r['server_cpu_s']:.2f} s)")
        r, _ = server.get("/metrics")
        said = [line.split()[-1] for line in r.data.decode().splitlines() if line.startswith("netpol_learn_store_segments ")]
        out["metrics_store_segments"] = float(said[0]) if said else None
        print(f"/metrics says netpol_learn_store_segments {said[0] if said else '(missing)'} (the store holds {rows:,})")
        print(f"serve's start (to /healthz answering): {started:.2f} s")
    finally:
        server.stop()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
    return out


# --- the in-process profile ----------------------------------------------------------------


def profile_child(store: str, tokens: str, port: int, out: str, conn) -> None:
    """The service in this process (make_app on uvicorn), its threads under cProfile."""
    import cProfile
    import pstats

    import uvicorn

    from netpol_learn._serve import Limits, Service, SqliteStore, TokenFile, make_app

    profiles: list[cProfile.Profile] = []
    local = threading.local()
    lock = threading.Lock()

    def profiled(fn):
        def call(*a, **k):
            p = getattr(local, "p", None)
            if p is None:
                p = local.p = cProfile.Profile()
                with lock:
                    profiles.append(p)
            p.enable()
            try:
                return fn(*a, **k)
            finally:
                p.disable()
        return call

    # Whatever runs in the thread pool (the sync endpoints, take_segment, authorize), each pool
    # thread under a profiler of its own: starlette's and _app's name for run_in_threadpool, in
    # this process only.
    import starlette.concurrency
    import starlette.routing

    import netpol_learn._serve._app as app_module

    original = starlette.concurrency.run_in_threadpool

    async def run_profiled(func, *a, **k):
        return await original(profiled(func), *a, **k)

    starlette.routing.run_in_threadpool = run_profiled
    app_module.run_in_threadpool = run_profiled
    service = Service(SqliteStore(store), TokenFile(tokens), None, Limits())
    config = uvicorn.Config(make_app(service), host="127.0.0.1", port=port, log_config=None, log_level="warning",
                            access_log=False, lifespan="off", limit_concurrency=1000)
    server = uvicorn.Server(config)
    loop_profile = cProfile.Profile()

    def stop_when_told():  # not a signal: uvicorn raises a signal it caught again after its shutdown
        conn.recv()
        server.should_exit = True

    threading.Thread(target=stop_when_told, daemon=True).start()
    conn.send("ready")
    loop_profile.enable()
    server.run()
    loop_profile.disable()
    service.store.close()
    loop_profile.dump_stats(out)
    workers = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        workers.add(p)
    workers.dump_stats(out + ".workers")


def steps_of_one_segment(body: bytes, store: Path, repeat: int) -> dict:
    """The steps of Service.take_segment, timed on their own (the best of ``repeat``)."""
    from netpol_learn._flowlog import read_segment
    from netpol_learn._serve import SegmentId, SqliteStore

    s = SqliteStore(store)
    best: dict[str, float] = {}
    try:
        for i in range(repeat):
            t = {}
            t0 = time.perf_counter()
            text = zlib.decompressobj(wbits=31).decompress(body).decode("utf-8")
            t1 = time.perf_counter()
            log = read_segment(text, "segment")
            t2 = time.perf_counter()
            max([0] + [f.last_seen for f in log.flows] + [d.last_seen for d in log.dns])
            canonical = "".join(dumps_lines(log))
            t3 = time.perf_counter()
            connections = sum(f.connections for f in log.flows)
            blob = zlib.compress(canonical.encode("utf-8"), 6)
            t4 = time.perf_counter()
            s.add_segment(SegmentId("steps", "b", i), 0, 0, len(log.flows), len(log.dns), connections, canonical)
            t5 = time.perf_counter()
            t = {"gunzip+decode": t1 - t0, "read_segment (parse, check)": t2 - t1, "dumps_lines (canonical text)": t3 - t2,
                 "zlib.compress (level 6)": t4 - t3, "add_segment (compress + INSERT + COMMIT, synchronous=FULL)": t5 - t4}
            for k, v in t.items():
                best[k] = min(best.get(k, v), v)
        best["(compressed body bytes)"] = len(blob)
    finally:
        s.close()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in best.items()}


def run_profile(args, workdir: Path) -> dict:
    import pstats

    flows = args.flows[0]
    args.flows_now = flows
    store = workdir / "profile.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    tokens = workdir / "tokens.txt"
    tokens.write_text(f"{WRITE} write\n{READ} read\n")
    base = (time.time_ns() // SEC - 7 * 86400) * SEC
    node = Node(0, flows, args.dns_per_flow, args.seed)
    body = body_of(node.segment(0, base, 0.0))
    steps_store = workdir / "steps.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{steps_store}{suffix}").unlink(missing_ok=True)
    steps = steps_of_one_segment(body, steps_store, 5)
    print(f"\nthe steps of taking one segment of {flows:,} flow lines ({len(body) / 1024:.0f} KiB gzip), best of 5:")
    for k, v in steps.items():
        print(f"  {k:<62} {v * 1000:>8.1f} ms" if isinstance(v, float) else f"  {k:<62} {v:>8,}")

    port = free_port()
    out = str(workdir / "serve.prof")
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=profile_child, args=(str(store), str(tokens), port, out, child))
    proc.start()
    parent.recv()
    import urllib3

    http = urllib3.PoolManager(retries=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            http.request("GET", f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except urllib3.exceptions.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    clients = Clients(args.clients, "127.0.0.1", port, args, base)
    res = clients.run([(args.nodes + 1, [0.0])])
    one = res["records"][0][2] - res["records"][0][1]
    rate = 0.6 / one
    nodes = max(1, min(args.nodes, round(rate * args.period)))
    period = nodes / rate
    posts = max(2, round(args.level_seconds / period))
    res = clients.run([(i, [random.Random(i).uniform(0, period) + k * period for k in range(posts)]) for i in range(nodes)])
    ok = [r for r in res["records"] if r[3] == 201]
    lat = sorted(r[2] - r[1] for r in ok)
    clients.close()
    t0 = time.monotonic()
    http.request("GET", f"http://127.0.0.1:{port}/v1/flows", headers={"Authorization": f"Bearer {READ}"}, timeout=3600)
    first_get = time.monotonic() - t0
    t0 = time.monotonic()
    http.request("GET", f"http://127.0.0.1:{port}/v1/flows", headers={"Authorization": f"Bearer {READ}"}, timeout=3600)
    repeat_get = time.monotonic() - t0
    parent.send("stop")
    proc.join(120)
    print(f"\nprofiled service: {len(ok)} segments posted at {rate:.2f}/s (p50 {pct(lat, 50):.3f} s, p99 {pct(lat, 99):.3f} s); "
          f"GET /v1/flows {first_get:.2f} s, again {repeat_get:.2f} s")
    top = []
    for name, path in (("the event loop's thread (uvicorn, h11, starlette; epoll's wait is idle time)", out),
                       ("the pool threads (the endpoints' work: take_segment, merged_log, get_flows)", out + ".workers")):
        stats = pstats.Stats(path)
        total = stats.total_tt
        rows = []
        for (file, line, fn), (cc, nc, tt, ct, callers) in stats.stats.items():
            rows.append((tt, ct, nc, f"{Path(file).name}:{line}({fn})"))
        rows.sort(reverse=True)
        print(f"\n{name}: {total:.2f} s profiled; by own time:")
        for tt, ct, nc, where in rows[:args.profile_top]:
            print(f"  {tt:>7.2f} s own {ct:>7.2f} s cumulative {nc:>9,} calls  {where}")
        top.append({"threads": name, "total_s": round(total, 2),
                    "top": [{"own_s": round(tt, 3), "cumulative_s": round(ct, 3), "calls": nc, "function": w} for tt, ct, nc, w in rows[:args.profile_top]]})
    by_cum = sorted(((ct, f"{Path(f).name}:{l}({fn})") for (f, l, fn), (cc, nc, tt, ct, c) in pstats.Stats(out + ".workers").stats.items()), reverse=True)
    print("\npool threads, by cumulative time:")
    for ct, where in by_cum[:args.profile_top]:
        print(f"  {ct:>7.2f} s  {where}")
    return {"flows_per_segment": flows, "steps_of_one_segment_s": steps, "posted": len(ok), "rate": round(rate, 3),
            "latency_p50_s": round(pct(lat, 50), 4), "latency_p99_s": round(pct(lat, 99), 4),
            "get_flows_first_s": round(first_get, 3), "get_flows_repeat_s": round(repeat_get, 3), "profile": top,
            "workers_by_cumulative": [{"cumulative_s": round(c, 3), "function": w} for c, w in by_cum[:args.profile_top]]}


# --- main -----------------------------------------------------------------------------------


def code_state() -> dict:
    """The commit measured, and the package's files changed since it (others work beside)."""
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "netpol_learn").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD") or "unknown", "changed": changed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default=f"{BUSY_FLOWS},200",
                    help=f"flow lines a segment, comma-separated: a ramp each (default {BUSY_FLOWS} (a busy node's 30 s), 200)")
    ap.add_argument("--dns-per-flow", type=float, default=DNS_PER_FLOW, help=f"DNS lines a segment per flow line (default {DNS_PER_FLOW})")
    ap.add_argument("--busy-flows", type=int, default=BUSY_FLOWS, help=f"flow lines of a busy node's 30 s segment, for the nodes one instance serves (default {BUSY_FLOWS})")
    ap.add_argument("--churn", type=float, default=0.3, help="chance that a segment has a line with a new client address (default 0.3)")
    ap.add_argument("--nodes", type=int, default=300, help="simulated sniffers at most (default 300)")
    ap.add_argument("--period", type=float, default=10.0, help="seconds between a node's posts: the 30 s interval compressed (default 10)")
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--level-seconds", type=float, default=25.0, help="how long each offered rate is held (default 25)")
    ap.add_argument("--min-posts", type=int, default=30, help="posts in a level at least (default 30)")
    ap.add_argument("--start", type=float, default=0.4, help="first offered rate, times 1/(one segment's service time) (default 0.4)")
    ap.add_argument("--start-rate", type=float, help="first offered rate in segments/s (instead of --start)")
    ap.add_argument("--step", type=float, default=1.25, help="each level offers this times the last (default 1.25)")
    ap.add_argument("--max-levels", type=int, default=14, help="levels at most (default 14)")
    ap.add_argument("--p99", type=float, default=2.0, help="the POST latency p99 a held level stays within, seconds (default 2)")
    ap.add_argument("--no-confirm", dest="confirm", action="store_false", help="stop at the first level not held (default: try it once more)")
    ap.add_argument("--calibrate", type=int, default=5, help="segments posted back to back for one segment's service time (default 5)")
    ap.add_argument("--scan-rows", type=int, default=100_000, help="segments of the store /readyz and /metrics are timed on (default 100,000; 0: not)")
    ap.add_argument("--scan-nodes", type=int, default=100, help="nodes of that store (default 100)")
    ap.add_argument("--scan-flows", type=int, default=20, help="flow lines of each of its segments (default 20)")
    ap.add_argument("--seed", type=int, default=12, help="seed of the simulated traffic (default 12)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench/serve"), help="where the store and the service's log go")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and short levels: checks the benchmark itself in a few seconds")
    ap.add_argument("--profile", action="store_true", help="instead of the ramp: cProfile of the service run in-process (make_app + uvicorn)")
    ap.add_argument("--profile-top", type=int, default=25, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    args = ap.parse_args()
    # SIGTERM ends the run like Ctrl-C: the service and the client processes are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    if args.smoke:
        args.flows = "50"
        args.scan_rows, args.scan_nodes = min(args.scan_rows, 1000), min(args.scan_nodes, 10)
        args.nodes, args.clients, args.level_seconds, args.min_posts = 4, 2, 1.0, 4
        args.max_levels, args.calibrate, args.period = 2, 2, 1.0
        args.start_rate = args.start_rate or 4.0
        args.step = 2.0
    try:
        args.flows = [int(x) for x in str(args.flows).split(",")]
    except ValueError:
        ap.error("--flows: whole numbers, comma-separated")
    if min(args.flows) < 10 or args.nodes < 1 or args.clients < 1 or args.period <= 0 or args.step <= 1:
        ap.error("--flows at least 10, --nodes and --clients at least 1, --period above 0, --step above 1")
    args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=args.dir))
    figures: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "python": sys.version.split()[0],
                                 "store_dir": str(workdir), "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}}
    figures["code"] = code_state()
    print(f"code: {figures['code']['commit'][:12]}" + (f" with uncommitted changes to {', '.join(figures['code']['changed'])}"
                                                       if figures["code"]["changed"] else ""))
    t0 = time.monotonic()
    if args.profile:
        figures["profile"] = run_profile(args, workdir)
    else:
        print(f"`netpol-learn serve` on loopback, store in {workdir}; {args.clients} client processes; POST p99 bound {args.p99:g} s; "
              f"a node posts every {args.period:g} s at most (the {INTERVAL} s interval compressed)")
        figures["sizes"] = [one_size(f, args, workdir) for f in args.flows]
        print()
        for size in figures["sizes"]:
            h = size["held"]
            if h is None:
                print(f"{size['flows_per_segment']:,} flow lines a segment: not even the first level held")
                continue
            print(f"{size['flows_per_segment']:,} flow lines a segment: held {h['segments_s']:.2f} segments/s = {h['flows_s']:,} flow lines/s "
                  f"(p99 {h['p99_s']:.3f} s): {h['nodes_at_30s']:,} nodes at {INTERVAL} s intervals")
        if args.scan_rows > 0:
            figures["scan"] = scan_part(args, workdir)
        busy = [s for s in figures["sizes"] if s["flows_per_segment"] == args.busy_flows and s["held"]]
        if busy:
            figures["nodes_one_instance_serves"] = busy[0]["held"]["nodes_at_30s"]
            print(f"busy nodes ({args.busy_flows:,} flow lines a 30 s segment) one instance serves: {figures['nodes_one_instance_serves']:,}")
    figures["machine"]["load_avg_end"] = os.getloadavg()
    figures["seconds"] = round(time.monotonic() - t0, 1)
    print(f"\n(total {figures['seconds']:.0f} s; load average at the start {figures['machine']['load_avg_start'][0]:.2f}, "
          f"at the end {figures['machine']['load_avg_end'][0]:.2f}, {os.cpu_count()} CPUs{'; --smoke sizes' if args.smoke else ''})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
