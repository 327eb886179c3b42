#!/usr/bin/env python3
"""Record the example scenarios with the namespace test bed (tests/testbed.py), and check them.

    sudo python captures/record.py                    # record every scenario, then check it
    sudo python captures/record.py guestbook ingress  # only these
    python captures/record.py --check                 # check the recorded files only (no root)

Recording a scenario builds its bed (network namespaces imitating one node), runs
`tcpdump -i any` in the node namespace while the scenario's clients run, and writes
`captures/<scenario>/`:

- `capture.pcap`: the capture;
- `inventory.yaml`: the bed in `kubectl get ... -A -o yaml` format, stamped with the
  `netpol-learn.io/snapshot-time` annotation (taken after the traffic);
- `expected.yaml`: what talked to what, written from the scenario's definition below (the
  `EXPECTED` tables), never from the capture. Recording also checks that the bed's own reading of
  its declarations (`TestBed.truth()`) gives the same table, and that every request succeeded.

Files are written to a temporary folder first and moved into place only when the run succeeded.

Checking runs `netpol-learn capture` and `netpol-learn resolve --format json` on the recorded files
and compares the resolved connections with `expected.yaml`; it also fails on unresolved or
ambiguous addresses. Needs root, iproute2, nftables and tcpdump to record; only netpol-learn to check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from testbed import NODE_IP, Call, Lookup, Port, Serve, ServicePort, TestBed  # noqa: E402

MAX_BYTES = 1_000_000
DNS = "kube-system/Deployment/coredns"


def http(host: str, path: str = "/") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: testbed\r\nConnection: close\r\n\r\n"


# --- scenarios -------------------------------------------------------------------------------
# Each returns the bed, and the README/expected.yaml description.


def guestbook() -> tuple[TestBed, str]:
    bed = TestBed("guestbook")
    ns = "guestbook"
    db = {"app": "guestbook", "tier": "db"}
    api = {"app": "guestbook", "tier": "api"}
    ui = {"app": "guestbook", "tier": "ui"}
    bed.statefulset(ns, "db", replicas=1, service_name="db", labels=db, ports=[Port("postgres", 5432)],
                    serve=[Serve(5432, reply="ROW 1 'hello'")])
    bed.service(ns, "db", db, [ServicePort(5432, "postgres", name="postgres")])
    bed.deployment(ns, "api", replicas=2, labels=api, ports=[Port("http", 8080)],
                   serve=[Serve(8080, calls=[Call("db", 5432, count=1, request="SELECT * FROM entries;\n")])])
    bed.service(ns, "api", api, [ServicePort(80, "http", name="http")])
    bed.deployment(ns, "ui", replicas=2, labels=ui, ports=[Port("http", 8080)], serve=[Serve(8080)],
                   calls=[Call("api", 80, count=5, interval=0.5, request=http("api", "/entries"))])
    return bed, (
        "Namespace guestbook: Deployment ui (2 replicas) -> Service api (80 -> targetPort http = 8080) -> "
        "Deployment api (2 replicas) -> Service db (5432 -> targetPort postgres = 5432) -> StatefulSet db (1 replica). "
        "Every pod resolves the short Service name through cluster DNS (10.96.0.10) first; api queries db once per "
        "request it serves. All pods share app=guestbook and differ by tier."
    )


def ingress() -> tuple[TestBed, str]:
    bed = TestBed("ingress")
    web = {"app": "web"}
    bed.deployment("shop", "web", replicas=2, labels=web, ports=[Port("http", 8080)], serve=[Serve(8080)])
    bed.service("shop", "web", web, [ServicePort(80, "http", name="http")])
    web_ips = [p.ip for p in bed.pods_of("shop", "web")]
    ctrl = {"app.kubernetes.io/component": "controller", "app.kubernetes.io/instance": "ingress-nginx",
            "app.kubernetes.io/name": "ingress-nginx"}
    bed.namespace("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    # Like ingress-nginx, the controller proxies to the Service's endpoints (pod addresses) directly.
    bed.deployment("ingress-nginx", "ingress-nginx-controller", labels=ctrl,
                   ports=[Port("http", 80), Port("https", 443), Port("webhook", 8443)],
                   serve=[Serve(80, calls=[Call(web_ips, 8080, count=1, request=http("shop.example.com"))])])
    bed.service("ingress-nginx", "ingress-nginx-controller", ctrl,
                [ServicePort(80, "http", name="http", node_port=30080), ServicePort(443, "https", name="https", node_port=30443)],
                type="NodePort", external_traffic_policy="Local")
    bed.outside("203.0.113.50", calls=[Call(NODE_IP, 30080, count=6, interval=0.4, request=http("shop.example.com"))])
    return bed, (
        f"An outside client 203.0.113.50 sends HTTP requests to the node address {NODE_IP} on NodePort 30080 of Service "
        "ingress-nginx/ingress-nginx-controller (type NodePort, externalTrafficPolicy Local, so kube-proxy only DNATs it "
        "to the controller pod's port 80 and the client address is kept). The controller Deployment proxies each request "
        "to the endpoints of Service shop/web, the pods of Deployment web (2 replicas) on 8080, round robin, as "
        "ingress-nginx does (pod addresses, not the ClusterIP; no DNS)."
    )


def cross_namespace() -> tuple[TestBed, str]:
    bed = TestBed("cross-namespace")
    bed.deployment("namespace-a", "web", replicas=2, ports=[Port("http", 8080)], serve=[Serve(8080)])
    bed.service("namespace-a", "web", {"app": "web"}, [ServicePort(80, "http", name="http")])
    bed.deployment("namespace-a", "admin", ports=[Port("admin", 9000)], serve=[Serve(9000)])
    bed.service("namespace-a", "admin", {"app": "admin"}, [ServicePort(9000, "admin", name="admin")])
    bed.deployment("namespace-b", "client", calls=[Call("web.namespace-a", 80, count=5, interval=0.5,
                                                        request=http("web.namespace-a"))])
    return bed, (
        "Deployment client in namespace-b resolves web.namespace-a (its search list first tries "
        "web.namespace-a.namespace-b.svc.cluster.local: NXDOMAIN) and calls Service web (80 -> http = 8080) of "
        "namespace-a, backed by Deployment web (2 replicas). Deployment admin in namespace-a (Service admin, "
        "port 9000) listens but is never contacted: a policy learned from this capture must not let namespace-b "
        "reach it."
    )


def monitoring() -> tuple[TestBed, str]:
    bed = TestBed("monitoring")
    metrics = Port("metrics", 9100)
    bed.deployment("team-a", "frontend", replicas=2, ports=[Port("http", 8080), metrics],
                   serve=[Serve(8080), Serve(9100)],
                   calls=[Call("backend", 80, count=3, interval=0.6, delay=0.2, request=http("backend", "/api/items"))])
    bed.service("team-a", "backend", {"app": "backend"}, [ServicePort(80, "http", name="http")])
    bed.deployment("team-a", "backend", replicas=2, ports=[Port("http", 8080), metrics],
                   serve=[Serve(8080, calls=[Call("cache-0.cache.team-b", 6379, count=1, request="GET items\r\n")]), Serve(9100)],
                   calls=[Call("log-agent.team-b", 5140, "UDP", count=2, interval=0.5, request="<14>backend: started")])
    bed.statefulset("team-b", "cache", replicas=2, service_name="cache", ports=[Port("redis", 6379), metrics],
                    serve=[Serve(6379, reply="$5\r\nitems"), Serve(9100)])
    bed.service("team-b", "cache", {"app": "cache"}, [ServicePort(6379, "redis", name="redis")], headless=True)
    bed.daemonset("team-b", "log-agent", ports=[Port("syslog", 5140, "UDP"), metrics],
                  serve=[Serve(5140, "UDP"), Serve(9100)])
    bed.service("team-b", "log-agent", {"app": "log-agent"}, [ServicePort(5140, "syslog", "UDP", name="syslog")])
    targets = [p.ip for ns, name in (("team-a", "frontend"), ("team-a", "backend"), ("team-b", "cache"), ("team-b", "log-agent"))
               for p in bed.pods_of(ns, name)]
    bed.deployment("monitoring", "prometheus", ports=[Port("web", 9090)], serve=[Serve(9090)],
                   calls=[Call(ip, 9100, count=2, interval=1.5, request=http(f"{ip}:9100", "/metrics")) for ip in targets])
    return bed, (
        "Deployment prometheus in namespace monitoring scrapes every pod of team-a and team-b on its metrics port "
        "(9100, named metrics) twice, by pod address as Prometheus' pod discovery does (no DNS): frontend (2 replicas), "
        "backend (2), the StatefulSet cache (2, headless Service cache) and the DaemonSet log-agent (1 pod: one node). "
        "The apps talk a little: frontend -> Service backend (80 -> 8080); backend -> cache-0.cache.team-b (the "
        "headless name of the StatefulSet pod, TCP 6379) for each request it serves; backend -> Service "
        "log-agent.team-b (UDP 5140 -> syslog = 5140), through the UDP DNAT. frontend and backend resolve names through "
        "cluster DNS."
    )


def dns_egress() -> tuple[TestBed, str]:
    bed = TestBed("dns-egress")
    bed.outside("203.0.113.10", serve=[Serve(443, reply="\x16\x03\x03 server hello (not really TLS)")])
    bed.dns_name("api.example.com", "203.0.113.10")
    bed.dns_name("mirrors.example.com", *[f"203.0.113.{i}" for i in range(100, 140)])
    bed.deployment("payments", "checkout", ports=[Port("http", 8080)], serve=[Serve(8080)],
                   calls=[Call("api.example.com", 443, count=3, interval=0.6, request="\x16\x03\x01 client hello api.example.com"),
                          Lookup("mirrors.example.com", count=1)])
    return bed, (
        "Deployment checkout in namespace payments resolves api.example.com through cluster DNS (with ndots:5 the "
        "search list comes first: api.example.com.payments.svc.cluster.local, .svc.cluster.local and .cluster.local "
        "answer NXDOMAIN, then api.example.com -> 203.0.113.10) and opens three TCP connections to 203.0.113.10:443 "
        "(a plain TCP server; the bytes only look like TLS). The node masquerades them to its address 172.18.0.2 on the "
        "way out, so the capture also shows them after SNAT. It also looks up mirrors.example.com, whose 40 A records "
        "(203.0.113.100-139) do not fit in 512 bytes: the UDP answer comes back truncated (TC) and the query is repeated "
        "over TCP to 10.96.0.10:53. No connection is made to the mirrors."
    )


SCENARIOS = {
    "guestbook": guestbook,
    "ingress": ingress,
    "cross-namespace": cross_namespace,
    "monitoring": monitoring,
    "dns-egress": dns_egress,
}


def _c(frm: str, to: str, protocol: str, port: int) -> dict:
    return {"from": frm, "to": to, "protocol": protocol, "port": port}


# The truth tables, written by hand from the definitions above (recording checks them against the
# bed's own derivation).
EXPECTED = {
    "guestbook": [
        _c("guestbook/Deployment/api", DNS, "UDP", 53),
        _c("guestbook/Deployment/api", "guestbook/StatefulSet/db", "TCP", 5432),
        _c("guestbook/Deployment/ui", DNS, "UDP", 53),
        _c("guestbook/Deployment/ui", "guestbook/Deployment/api", "TCP", 8080),
    ],
    "ingress": [
        _c("ingress-nginx/Deployment/ingress-nginx-controller", "shop/Deployment/web", "TCP", 8080),
        _c("outside:203.0.113.50", "ingress-nginx/Deployment/ingress-nginx-controller", "TCP", 80),
    ],
    "cross-namespace": [
        _c("namespace-b/Deployment/client", DNS, "UDP", 53),
        _c("namespace-b/Deployment/client", "namespace-a/Deployment/web", "TCP", 8080),
    ],
    "monitoring": [
        _c("monitoring/Deployment/prometheus", "team-a/Deployment/backend", "TCP", 9100),
        _c("monitoring/Deployment/prometheus", "team-a/Deployment/frontend", "TCP", 9100),
        _c("monitoring/Deployment/prometheus", "team-b/DaemonSet/log-agent", "TCP", 9100),
        _c("monitoring/Deployment/prometheus", "team-b/StatefulSet/cache", "TCP", 9100),
        _c("team-a/Deployment/backend", DNS, "UDP", 53),
        _c("team-a/Deployment/backend", "team-b/DaemonSet/log-agent", "UDP", 5140),
        _c("team-a/Deployment/backend", "team-b/StatefulSet/cache", "TCP", 6379),
        _c("team-a/Deployment/frontend", DNS, "UDP", 53),
        _c("team-a/Deployment/frontend", "team-a/Deployment/backend", "TCP", 8080),
    ],
    "dns-egress": [
        _c("payments/Deployment/checkout", DNS, "TCP", 53),
        _c("payments/Deployment/checkout", DNS, "UDP", 53),
        _c("payments/Deployment/checkout", "outside:203.0.113.10", "TCP", 443),
    ],
}

NOT_CONTACTED = {
    "cross-namespace": ["namespace-a/Deployment/admin (Service admin, TCP 9000): nobody connects to it"],
    "ingress": ["shop/Deployment/web is never called through its ClusterIP; ingress-nginx-controller's https (443) and "
                "webhook (8443) ports are never contacted"],
    "guestbook": ["guestbook/Deployment/ui listens on 8080 (http) but no one calls it"],
    "monitoring": ["monitoring/Deployment/prometheus listens on 9090 (web) but no one calls it"],
    "dns-egress": ["payments/Deployment/checkout listens on 8080 (http) but no one calls it; no connection to the "
                   "mirrors.example.com addresses"],
}


def _key(c: dict) -> tuple:
    return (c["from"], c["to"], c["protocol"], c["port"])


def expected_yaml(name: str, description: str) -> str:
    rows = sorted(EXPECTED[name], key=_key)
    lines = [f"# Scenario {name}: what talked to what, written from the scenario's definition in record.py,",
             "# not from the capture. from/to: namespace/Kind/name of the workload, or outside:<address>;",
             "# port: the server pod's own port (a Service's target port), protocol: TCP or UDP.", "#"]
    words, line = description.split(), "#"
    for w in words:
        if len(line) + len(w) + 1 > 100:
            lines.append(line)
            line = "#"
        line += " " + w
    lines.append(line)
    for note in NOT_CONTACTED.get(name, ()):
        lines.append(f"# Not contacted: {note}.")
    return "\n".join(lines) + "\n" + yaml.safe_dump(rows, sort_keys=False, default_flow_style=False)


# --- recording -------------------------------------------------------------------------------


def record(name: str) -> None:
    bed, description = SCENARIOS[name]()
    derived = sorted(bed.truth(), key=_key)
    written = sorted(EXPECTED[name], key=_key)
    if derived != written:
        raise SystemExit(f"{name}: EXPECTED differs from the bed's declarations:\n  written {written}\n  derived {derived}")
    out = HERE / name
    with tempfile.TemporaryDirectory(prefix=f"record-{name}-") as tmp:
        tmp = Path(tmp)
        with bed:
            result = bed.run(capture=tmp / "capture.pcap")
            snapshot = datetime.now(timezone.utc)
            bed.write_inventory(tmp / "inventory.yaml", snapshot)
        if bed.leftover_namespaces():
            raise SystemExit(f"{name}: namespaces left behind: {bed.leftover_namespaces()}")
        if result.failures:
            raise SystemExit(f"{name}: {len(result.failures)} request(s) failed: {json.dumps(result.failures[:5], indent=1)}")
        size = (tmp / "capture.pcap").stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(f"{name}: capture is {size} bytes, over {MAX_BYTES}")
        (tmp / "expected.yaml").write_text(expected_yaml(name, description))
        out.mkdir(exist_ok=True)
        for f in ("capture.pcap", "inventory.yaml", "expected.yaml"):
            shutil.move(str(tmp / f), out / f)
    calls = len(result.calls)
    took = (result.stopped - result.started).total_seconds()
    print(f"{name}: recorded {size} bytes, {calls} requests ok, {took:.1f} s of traffic -> {out.relative_to(HERE.parent)}/")


# --- checking --------------------------------------------------------------------------------


def _peer(p: dict) -> str:
    if p["kind"] == "pod":
        return f"{p['namespace']}/{p['workload']}"
    if p["kind"] == "external":
        return f"outside:{p['address']}"
    if p["kind"] == "node":
        return f"node:{p.get('node') or p.get('address')}"
    return f"{p['kind']}:{p.get('address', '')}"


def check(name: str, *, env: dict | None = None, verbose: bool = False) -> bool:
    """netpol-learn capture + resolve on a recorded scenario, compared with expected.yaml."""
    d = HERE / name
    expected = {_key(c) for c in yaml.safe_load((d / "expected.yaml").read_text())}
    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp) / "flows.jsonl"
        cap = subprocess.run([sys.executable, "-m", "netpol_learn", "capture", str(d / "capture.pcap"), "-o", str(flows)],
                             capture_output=True, text=True, env=env)
        if cap.returncode != 0:
            print(f"{name}: capture failed: {cap.stderr.strip()}")
            return False
        lines = [json.loads(x) for x in flows.read_text().splitlines()]
        res = subprocess.run([sys.executable, "-m", "netpol_learn", "resolve", "--flows", str(flows), "--inventory",
                              str(d / "inventory.yaml"), "--format", "json"], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(f"{name}: resolve failed: {res.stderr.strip()}")
            return False
    doc = json.loads(res.stdout)
    report = doc["report"]
    got = {(_peer(c["client"]), _peer(c["server"]), c["protocol"], c["port"]) for c in doc["connections"]}
    n_flows = sum(1 for x in lines if x["kind"] == "flow")
    n_dns = sum(1 for x in lines if x["kind"] == "dns")
    stats = next(x for x in lines if x["kind"] == "stats")
    ok = True
    problems = []
    if report["unresolved"] or report["ambiguous"]:
        ok = False
        problems += [f"unresolved {u['address']} ({u['reason']}, {u['flows']} flows)" for u in report["unresolved"]]
        problems += [f"ambiguous {u['address']} ({u['reason']})" for u in report["ambiguous"]]
    for k in sorted(got - expected):
        ok = False
        problems.append(f"unexpected {k[0]} -> {k[1]} {k[2]}/{k[3]}")
    for k in sorted(expected - got):
        ok = False
        problems.append(f"missing {k[0]} -> {k[1]} {k[2]}/{k[3]}")
    if report["workloads_not_unique"] or report["workloads_unselectable"] or report["workloads_inferred"]:
        problems.append(f"selector notes: {report['workloads_not_unique']} {report['workloads_unselectable']} {report['workloads_inferred']}")
    size = (d / "capture.pcap").stat().st_size
    status = "OK" if ok else "MISMATCH"
    stat_text = ", ".join(f"{k} {v}" for k, v in stats.items() if k not in ("kind", "tunnels") and v)
    print(f"{name}: {status}  {size} bytes; {n_flows} flows, {n_dns} dns lines ({stat_text}); "
          f"{len(got)} connections resolved, {len(expected)} expected; flows by kind {report['flows_by_kind']}")
    for p in problems:
        print(f"  {p}")
    if verbose:
        for c in doc["connections"]:
            print(f"    {_peer(c['client'])} -> {_peer(c['server'])} {c['protocol']}/{c['port']} via {c['via']} "
                  f"({c['flows']} flows, {c['connections']} connections)")
    return ok


def main() -> int:
    # A plain SIGTERM would skip the beds' teardown; as an exit it runs like any other error.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help=f"default: all ({', '.join(SCENARIOS)})")
    ap.add_argument("--check", action="store_true", help="only check the recorded files with netpol-learn")
    ap.add_argument("--no-check", action="store_true", help="record without checking")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the resolved connections")
    args = ap.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if not args.check:
        for name in names:
            record(name)
    if args.no_check:
        return 0
    results = [check(name, verbose=args.verbose) for name in names]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
