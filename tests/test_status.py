"""Learning status: per workload its edges, when the last new one appeared, and a verdict
(learning, stabilizing, stable); workloads never seen, partial ones, attempts, inferences, outside
names whose addresses changed; text, markdown and JSON; the chart (a deterministic PNG); the
`status` command; REPORT.md's section and the chart beside it in a policy directory.

The traffic is a simulated capture of four days, built with the library: one flow-log segment a
day (flows with runs of activity), merged as `merge` would. Times are seconds after k8s.BASE.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import k8s
from fresh_process import SEEDS, netpol_learn
from netpol_learn import (
    DEFAULT_STABLE_AFTER,
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    learning_chart,
    learning_status,
    load_inventory,
    merge_logs,
    resolve,
    status_markdown,
    status_text,
    status_to_json,
    write_flow_log,
)
from netpol_learn._chart import CHART, is_chart, unit_of
from netpol_learn._generate import generate
from netpol_learn._status import LEARNING, STABILIZING, STABLE, capture_window, verdict_of

H = 3600
DAY = 24 * H
END = 4 * DAY  # the capture: from 0 to four days later


# --- the cluster and four days of its traffic --------------------------------------------------


def _deployment(name: str, namespace: str, ip: str, *, ports=(), start: float = -H, host_network: bool = False) -> list[dict]:
    rs = f"{name}-6d8f9c"
    labels = {"app": name, "pod-template-hash": "6d8f9c"}
    return [
        k8s.deployment(name, namespace),
        k8s.replicaset(rs, namespace, {"app": name}, owner=("Deployment", name)),
        k8s.pod(f"{rs}-x1", namespace, ip, labels=labels, owner=("ReplicaSet", rs), ports=ports, start=start, host_network=host_network),
    ]


def cluster_items(*, idle_start: float = -H) -> list[dict]:
    return [
        k8s.namespace("shop"), k8s.namespace("web"), k8s.namespace("kube-system"),
        k8s.node("node-a", "172.18.0.2", "10.244.0.0/24", created=-DAY),
        *_deployment("ui", "web", "10.244.0.10"),
        *_deployment("api", "shop", "10.244.0.20", ports=[("http", 8080, "TCP")]),
        k8s.statefulset("db", "shop"),
        k8s.pod("db-0", "shop", "10.244.0.30", labels={"app": "db"}, owner=("StatefulSet", "db"), ports=[("pg", 5432, "TCP")], start=-H),
        *_deployment("worker", "shop", "10.244.0.40"),
        *_deployment("report", "shop", "10.244.0.50"),
        *_deployment("idle", "shop", "10.244.0.60", start=idle_start),
        *_deployment("late", "shop", "10.244.0.70", start=2 * DAY),  # started mid-capture, never seen: not "never seen"
        *_deployment("hostagent", "shop", None, host_network=True),  # its traffic is the node's
        *_deployment("coredns", "kube-system", "10.244.0.2", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        k8s.service("api", "shop", "10.96.0.50", ports=[("http", 80, "http", "TCP")], selector={"app": "api"}),
        k8s.endpoint_slice("api", "shop", ports=[("http", 8080, "TCP")], endpoints=[("10.244.0.20", "api-6d8f9c-x1", "node-a")]),
        k8s.service("kube-dns", "kube-system", "10.96.0.10", ports=[("dns", 53, 53, "UDP")], selector={"app": "coredns"}),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns", 53, "UDP")], endpoints=[("10.244.0.2", "coredns-6d8f9c-x1", "node-a")]),
    ]


def inventory(tmp_path: Path, **kw):
    return load_inventory([k8s.write_list(tmp_path, cluster_items(**kw))])


def flow(src: str, dst: str, port: int, runs, proto: str = "TCP") -> Flow:
    """A flow with runs of activity: (from s, until s, connections)."""
    runs = tuple((k8s.ns(a), k8s.ns(b), n) for a, b, n in runs)
    n = sum(r[2] for r in runs)
    return Flow(src=src, dst=dst, proto=proto, port=port, packets=10 * n, bytes=1000 * n, connections=n,
                first_seen=runs[0][0], last_seen=runs[-1][1], direction=(("syn" if proto == "TCP" else "dns", n),),
                evidence="established" if proto == "TCP" else "answered", runs=runs)


def dns(client: str, qname: str, addresses, at_s: float) -> DnsObservation:
    return DnsObservation(client=client, resolver="10.96.0.10", qname=qname, qtype="A", queries=1, responses=1,
                          first_seen=k8s.ns(at_s), last_seen=k8s.ns(at_s + 1),
                          answers=tuple(DnsAnswer(qname, "A", a, 60) for a in addresses), rcodes=("NOERROR",), transports=("udp",))


def day_segment(d: int, days: int) -> FlowLog:
    """What the sniffer wrote on day d (0-based) of a capture of ``days`` days."""
    t = d * DAY
    flows = [
        # ui -> api through its Service, every day, all day
        flow("10.244.0.10", "10.96.0.50", 80, [(t, t + H, 50), (t + 23 * H, t + DAY, 10)]),
        # api: db, DNS and downloads.example.com's first address on day 1; api.github.com and
        # downloads' new address on day 2; nothing new after: stable
        flow("10.244.0.20", "10.244.0.30", 5432, [(t + 600, t + 1200, 20)]),
        flow("10.244.0.20", "10.96.0.10", 53, [(t + 300, t + 400, 4)], "UDP"),
        # worker: a new outside address every day, the last one 4 h before the end: learning
        flow("10.244.0.40", f"203.0.113.{10 + d}", 443, [(t + 20 * H, t + 20 * H + 60, 3)]),
        # report: db from day 1, a new edge 18 h before the end: stabilizing
        flow("10.244.0.50", "10.244.0.30", 5432, [(t + 1200, t + 1300, 2)]),
    ]
    observations = [dns("10.244.0.20", "api.github.com", ["140.82.112.3"], t + 7190)] if d >= 1 else []
    if d == 0:
        flows.append(flow("10.244.0.20", "198.51.100.20", 443, [(t + H, t + H + 600, 5)]))
        observations.append(dns("10.244.0.20", "downloads.example.com", ["198.51.100.20"], t + H - 10))
    else:
        flows.append(flow("10.244.0.20", "140.82.112.3", 443, [(t + 2 * H, t + 2 * H + 60, 2)]))
        flows.append(flow("10.244.0.20", "198.51.100.21", 443, [(t + 3 * H, t + 3 * H + 600, 5)]))
        observations.append(dns("10.244.0.20", "downloads.example.com", ["198.51.100.21"], t + 3 * H - 10))
    if d == days - 1 == 3:
        flows.append(flow("10.244.0.50", "192.0.2.7", 443, [(END - 18 * H, END - 18 * H + 60, 1)]))
    return FlowLog(flows=tuple(flows), dns=tuple(observations), stats={"packets": 100}, sources=(f"sniff:node-a:day{d}",))


def four_days(days: int = 4) -> FlowLog:
    return merge_logs(day_segment(d, days) for d in range(days))


@pytest.fixture
def scene(tmp_path):
    log, inv = four_days(), inventory(tmp_path)
    res = resolve(log, inv)
    return log, inv, res, learning_status(log, inv, res)


def by_name(status):
    return {w.label: w for w in status.workloads}


# --- verdicts ----------------------------------------------------------------------------------


def test_the_simulated_days_merge_into_runs():
    log = four_days()
    ui = next(f for f in log.flows if f.src == "10.244.0.10")
    assert len(ui.runs) == 8 - 3  # each day's last run touches the next day's first: within RUN_GAP, one run
    assert capture_window(log) == (k8s.ns(0), k8s.ns(END))


def test_verdicts_follow_the_last_new_edge(scene):
    log, inv, res, status = scene
    w = by_name(status)
    assert {label: s.verdict for label, s in w.items()} == {
        "kube-system/Deployment/coredns": STABLE,
        "shop/Deployment/api": STABLE,
        "shop/Deployment/report": STABILIZING,
        "shop/Deployment/worker": LEARNING,
        "shop/StatefulSet/db": STABLE,
        "web/Deployment/ui": STABLE,
    }
    api = w["shop/Deployment/api"]
    assert api.last_new_edge == k8s.ns(DAY + 3 * H)  # downloads' new address, day 2
    assert api.quiet == k8s.ns(END) - k8s.ns(DAY + 3 * H)
    assert [(e.direction, e.peer, e.protocol, e.port) for e in api.edges] == [
        ("egress", "external 140.82.112.3", "TCP", 443),
        ("egress", "external 198.51.100.20", "TCP", 443),
        ("egress", "external 198.51.100.21", "TCP", 443),
        ("egress", "kube-system/Deployment/coredns", "UDP", 53),
        ("egress", "shop/StatefulSet/db", "TCP", 5432),
        ("ingress", "web/Deployment/ui", "TCP", 8080),  # the Service's target port
    ]
    assert api.connections == 4 * 20 + 4 * 4 + 5 + 3 * (2 + 5) + 4 * 60
    assert (api.first_seen, api.last_seen) == (k8s.ns(0), k8s.ns(END))
    assert w["shop/Deployment/worker"].quiet == k8s.ns(END) - k8s.ns(3 * DAY + 20 * H)
    assert len(w["shop/Deployment/worker"].edges) == 4
    assert w["shop/Deployment/report"].quiet == k8s.ns(END) - k8s.ns(END - 18 * H)
    assert status.verdict == LEARNING  # the least settled workload's
    assert status.namespaces == {"kube-system": STABLE, "shop": LEARNING, "web": STABLE}
    assert status.counts() == {LEARNING: 1, STABILIZING: 1, STABLE: 4}
    assert status.stable_after == DEFAULT_STABLE_AFTER == 24 * H * 10**9


def test_a_longer_stable_after_unsettles_the_workloads(scene):
    log, inv, res, _ = scene
    status = learning_status(log, inv, res, 3 * DAY * 10**9)
    w = by_name(status)
    assert w["shop/Deployment/api"].verdict == STABILIZING  # 2d 21h quiet: over half of 3 days, under 3
    assert w["web/Deployment/ui"].verdict == STABLE  # its only edge is from the first second
    assert w["shop/Deployment/report"].verdict == LEARNING
    with pytest.raises(ValueError, match="longer than 0"):
        learning_status(log, inv, res, 0)


def test_the_verdict_thresholds():
    day = DAY * 10**9
    assert verdict_of(day, day) == STABLE
    assert verdict_of(day - 1, day) == STABILIZING
    assert verdict_of(day // 2, day) == STABILIZING
    assert verdict_of(day // 2 - 1, day) == LEARNING
    assert verdict_of(0, day) == LEARNING


def test_two_days_of_capture_are_not_enough_for_the_daily_newcomer(tmp_path):
    log, inv = four_days(2), inventory(tmp_path)
    status = learning_status(log, inv, resolve(log, inv))
    w = by_name(status)
    assert capture_window(log) == (k8s.ns(0), k8s.ns(2 * DAY))
    assert w["shop/Deployment/api"].verdict == STABILIZING  # last new edge at 1d 3h: 21 h before the end
    assert w["shop/Deployment/worker"].verdict == LEARNING
    assert "shop/Deployment/report" in w and w["shop/Deployment/report"].verdict == STABLE


def test_the_capture_window_counts_dns_lines_too():
    log = FlowLog(flows=(flow("10.244.0.20", "10.244.0.30", 5432, [(100, 200, 1)]),),
                  dns=(dns("10.244.0.20", "a.example", ["192.0.2.1"], 50), dns("10.244.0.21", "a.example", ["192.0.2.1"], 900)))
    assert capture_window(log) == (k8s.ns(50), k8s.ns(901))
    assert capture_window(FlowLog()) is None


def test_no_traffic_is_learning_not_begun(tmp_path):
    inv = inventory(tmp_path)
    status = learning_status(FlowLog(), inv, resolve(FlowLog(), inv))
    assert status.verdict == LEARNING and status.workloads == () and status.capture_start is None
    assert status.never_seen == ()  # without a capture window nothing "ran the whole capture"
    assert "no traffic in the flow logs" in status_text(status)
    assert status_to_json(status)["capture"] is None


# --- never seen, partial, attempts, inferred ---------------------------------------------------


def test_a_workload_never_seen(scene):
    *_, status = scene
    # idle ran the whole capture and never talked; late started mid-capture; hostagent is host-network
    assert status.never_seen == (("shop", "Deployment/idle"),)


def test_a_workload_that_started_during_the_capture_is_not_never_seen(tmp_path):
    log, inv = four_days(), inventory(tmp_path, idle_start=DAY)
    assert learning_status(log, inv, resolve(log, inv)).never_seen == ()


def _involving(c, label: str) -> bool:
    return any(p.kind == "pod" and f"{p.namespace}/{p.workload}" == label for p in (c.client, c.server))


def test_a_partial_workload(scene):
    """Pods older than the capture, every connection seen only mid-stream: partial."""
    log, inv, res, _ = scene
    mid = replace(res, connections=tuple(replace(c, mid_stream=True) if _involving(c, "shop/Deployment/report") else c
                                         for c in res.connections))
    w = by_name(learning_status(log, inv, mid))
    assert w["shop/Deployment/report"].partial
    assert all(e.mid_stream for e in w["shop/Deployment/report"].edges)
    # db has report's connections open before the capture, but also api's that it saw begin
    assert not w["shop/StatefulSet/db"].partial
    assert [e.mid_stream for e in w["shop/StatefulSet/db"].edges] == [False, True]
    assert not w["shop/Deployment/api"].partial


def test_a_workload_whose_pods_started_during_the_capture_is_not_partial(tmp_path):
    items = [i for i in cluster_items() if i["metadata"]["name"] != "report-6d8f9c-x1"]
    items += [k8s.pod("report-6d8f9c-x1", "shop", "10.244.0.50", labels={"app": "report", "pod-template-hash": "6d8f9c"},
                      owner=("ReplicaSet", "report-6d8f9c"), start=0.5)]
    log = four_days()
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    res = resolve(log, inv)
    mid = replace(res, connections=tuple(replace(c, mid_stream=True) if _involving(c, "shop/Deployment/report") else c
                                         for c in res.connections))
    report = by_name(learning_status(log, inv, mid))["shop/Deployment/report"]
    assert not report.partial


def test_attempts_and_inferences_come_from_the_report(scene):
    log, inv, res, _ = scene
    report = replace(res.report,
                     attempts=(("shop/Deployment/worker", "external 203.0.113.99", "TCP", 443, "refused", 7),
                               ("shop/Deployment/api", "shop/StatefulSet/db", "TCP", 5433, "unanswered", 2)),
                     inferred=(("shop/Deployment/report", "10.244.0.50", 3),))
    inferred = replace(res, report=report, connections=tuple(
        replace(c, inferred=True) if _involving(c, "shop/Deployment/report") and c.server.kind == "external" else c
        for c in res.connections))
    status = learning_status(log, inv, inferred)
    assert status.attempts == (("shop/Deployment/api", "shop/StatefulSet/db", "TCP", 5433, "unanswered", 2),
                               ("shop/Deployment/worker", "external 203.0.113.99", "TCP", 443, "refused", 7))
    assert status.inferred == (("shop/Deployment/report", "10.244.0.50", 3),)
    report_edges = by_name(status)["shop/Deployment/report"].edges
    assert [(e.peer, e.inferred) for e in report_edges] == [("external 192.0.2.7", True), ("shop/StatefulSet/db", False)]
    text = status_text(status)
    assert "  shop/Deployment/worker -> external 203.0.113.99 TCP/443  refused  7 connections\n" in text
    assert "  shop/Deployment/report  10.244.0.50  3 flows\n" in text
    doc = status_to_json(status)
    assert doc["attempts"][1] == {"client": "shop/Deployment/worker", "server": "external 203.0.113.99", "protocol": "TCP",
                                  "port": 443, "evidence": "refused", "connections": 7}
    assert doc["inferred"] == [{"peer": "shop/Deployment/report", "address": "10.244.0.50", "flows": 3}]


def test_unresolved_probe_and_icmp_traffic_are_no_edge(tmp_path):
    inv = inventory(tmp_path)
    log = FlowLog(flows=(
        flow("10.244.0.40", "10.244.0.99", 8080, [(0, 10, 1)]),  # held by no pod: unresolved
        flow("10.244.0.1", "10.244.0.40", 8080, [(0, 10, 1)]),  # the node's bridge address: a kubelet probe
        replace(flow("10.244.0.40", "8.8.8.8", None, [(0, 10, 1)]), proto="ICMP", direction=(("icmp-echo", 1),)),
    ))
    worker = by_name(learning_status(log, inv, resolve(log, inv)))["shop/Deployment/worker"]
    assert worker.edges == () and worker.last_new_edge is None and worker.connections == 3


# --- outside names whose addresses changed ------------------------------------------------------


def test_a_dns_name_whose_address_changed(scene):
    *_, status = scene
    assert [c.name for c in status.dns_changes] == ["downloads.example.com"]  # api.github.com kept its address
    change = status.dns_changes[0]
    assert [(a.address, a.type) for a in change.addresses] == [("198.51.100.20", "A"), ("198.51.100.21", "A")]
    old, new = change.addresses
    assert old.used == (k8s.ns(H), k8s.ns(H + 600))
    assert new.used == (k8s.ns(DAY + 3 * H), k8s.ns(3 * DAY + 3 * H + 600))
    # merged, the name's one DNS line holds both answers: answered over the whole of it
    assert old.answered == new.answered == (k8s.ns(H - 10), k8s.ns(3 * DAY + 3 * H - 9))
    text = status_text(status)
    assert ("Outside names whose addresses changed (an ipBlock for them goes stale) (1):\n"
            "  downloads.example.com\n"
            "    198.51.100.20 (A): answered 2025-06-01 10:59:50 .. 2025-06-04 12:59:51; traffic 2025-06-01 11:00:00 .. 2025-06-01 11:10:00\n"
            "    198.51.100.21 (A): answered 2025-06-01 10:59:50 .. 2025-06-04 12:59:51; traffic 2025-06-02 13:00:00 .. 2025-06-04 13:10:00\n") in text


def test_dns_lines_that_disagree_are_a_change_too(tmp_path):
    """Two clients told different addresses for one name (the lines do not merge): changed, even
    though the traffic to both overlapped."""
    inv = inventory(tmp_path)
    log = FlowLog(
        flows=(flow("10.244.0.20", "192.0.2.1", 443, [(0, 1000, 1)]), flow("10.244.0.40", "192.0.2.2", 443, [(500, 1500, 1)]),
               flow("10.244.0.20", "192.0.2.8", 443, [(0, 1000, 1)]), flow("10.244.0.40", "192.0.2.8", 443, [(500, 1500, 1)])),
        dns=(dns("10.244.0.20", "cdn.example", ["192.0.2.1"], 0), dns("10.244.0.40", "cdn.example", ["192.0.2.2"], 500),
             dns("10.244.0.20", "same.example", ["192.0.2.8"], 0), dns("10.244.0.40", "same.example", ["192.0.2.8"], 500),
             dns("10.244.0.20", "unused.example", ["192.0.2.50"], 0), dns("10.244.0.40", "unused.example", ["192.0.2.51"], 500)),
    )
    status = learning_status(log, inv, resolve(log, inv))
    # same.example answered the same address to both; unused.example changed but no traffic went there: no ipBlock
    assert [(c.name, [a.address for a in c.addresses]) for c in status.dns_changes] == [("cdn.example", ["192.0.2.1", "192.0.2.2"])]


# --- formats -----------------------------------------------------------------------------------


def test_json_has_stable_keys_and_values(scene):
    *_, status = scene
    doc = json.loads(json.dumps(status_to_json(status), sort_keys=True))
    assert sorted(doc) == ["attempts", "capture", "counts", "dns_changes", "edges", "inferred", "namespaces", "never_seen",
                           "stable_after_seconds", "verdict"]
    assert doc["verdict"] == "learning" and doc["stable_after_seconds"] == 86400 and doc["edges"] == status.edges == 16
    assert doc["capture"] == {"start": "2025-06-01T10:00:00.000000Z", "end": "2025-06-05T10:00:00.000000Z", "seconds": END}
    assert doc["counts"] == {"learning": 1, "stabilizing": 1, "stable": 4}
    assert [(n["namespace"], n["verdict"]) for n in doc["namespaces"]] == [("kube-system", "stable"), ("shop", "learning"), ("web", "stable")]
    shop = {w["workload"]: w for w in doc["namespaces"][1]["workloads"]}
    assert sorted(shop) == ["Deployment/api", "Deployment/report", "Deployment/worker", "StatefulSet/db"]
    worker = shop["Deployment/worker"]
    assert sorted(worker) == ["connections", "edges", "first_seen", "last_new_edge", "last_seen", "partial", "quiet_seconds",
                              "seconds_after_capture_start", "seconds_before_capture_end", "verdict", "workload"]
    assert worker["verdict"] == "learning" and worker["quiet_seconds"] == 4 * H and worker["partial"] is False
    assert worker["last_new_edge"] == "2025-06-05T06:00:00.000000Z"
    assert worker["seconds_after_capture_start"] == 20 * H and worker["seconds_before_capture_end"] == 4 * H - 60
    assert worker["edges"][0] == {"direction": "egress", "peer": "external 203.0.113.10", "protocol": "TCP", "port": 443,
                                  "first_seen": "2025-06-02T06:00:00.000000Z", "last_seen": "2025-06-02T06:01:00.000000Z",
                                  "connections": 3, "mid_stream": False, "inferred": False}
    assert doc["never_seen"] == [{"namespace": "shop", "workload": "Deployment/idle"}]
    assert doc["dns_changes"][0]["name"] == "downloads.example.com"
    assert doc["dns_changes"][0]["addresses"][0] == {
        "address": "198.51.100.20", "type": "A",
        "answered": {"first": "2025-06-01T10:59:50.000000Z", "last": "2025-06-04T12:59:51.000000Z"},
        "traffic": {"first": "2025-06-01T11:00:00.000000Z", "last": "2025-06-01T11:10:00.000000Z"}}


def test_markdown(scene):
    *_, status = scene
    md = status_markdown(status)
    lines = md.splitlines()
    assert lines[0] == "# Learning status"
    assert "**learning**: 6 workloads (1 learning, 1 stabilizing, 4 stable), 16 edges; stable after 1d without a new edge." in lines
    assert "| Namespace | Workload | Verdict | Observed | Edges | Connections | Last new edge | Quiet for |" in lines
    assert "| shop | Deployment/worker | learning | start+20h .. end-3h 59m | 4 | 12 | 2025-06-05 06:00 | 4h |" in lines
    assert "| shop | Deployment/report | stabilizing | start+20m .. end-17h 59m | 2 | 9 | 2025-06-04 16:00 | 18h |" in lines
    assert "| web | Deployment/ui | stable | whole capture | 1 | 240 | 2025-06-01 10:00 | 4d |" in lines
    assert "## Workloads never seen in traffic (their pods ran the whole capture)" in lines
    assert lines[lines.index("## Workloads never seen in traffic (their pods ran the whole capture)") + 2] == "- shop/Deployment/idle"
    assert "- downloads.example.com" in lines and "  - 198.51.100.21 (A): answered 2025-06-01 10:59:50 .. 2025-06-04 12:59:51; traffic 2025-06-02 13:00:00 .. 2025-06-04 13:10:00" in lines
    assert "![New edges over time](chart.png)" in status_markdown(status, chart="chart.png").splitlines()
    nested = status_markdown(status, level=2).splitlines()
    assert nested[0] == "## Learning status" and "### Attempts that are no need (refused, unanswered, stale, dropped: never a rule)" in nested


def test_text(scene):
    *_, status = scene
    text = status_text(status)
    lines = text.splitlines()
    assert lines[0] == "Learning status: learning  (6 workloads (1 learning, 1 stabilizing, 4 stable), 16 edges; stable after 1d without a new edge)"
    assert lines[1] == "Capture: 2025-06-01 10:00:00 .. 2025-06-05 10:00:00 UTC (4d)"
    rows = [line.split() for line in lines if line.startswith(("shop ", "web ", "kube-system "))]
    assert [r[:3] for r in rows] == [["kube-system", "Deployment/coredns", "stable"], ["shop", "Deployment/api", "stable"],
                                     ["shop", "Deployment/report", "stabilizing"], ["shop", "Deployment/worker", "learning"],
                                     ["shop", "StatefulSet/db", "stable"], ["web", "Deployment/ui", "stable"]]
    assert "\x1b[" not in text
    assert [r[3:] for r in rows if r[1] == "Deployment/worker"] == [["start+20h", "..", "end-3h", "59m", "4", "12", "2025-06-05", "06:00", "4h"]]
    narrow = status_text(status, width=80).splitlines()
    assert max(len(line) for line in narrow if not line.startswith(("Learning", "Capture", "  ", "Partial", "Attempts", "Outside", "Workloads"))) <= 80
    assert "Workloads never seen in traffic (their pods ran the whole capture) (1):\n  shop/Deployment/idle\n" in text
    assert "Attempts that are no need (refused, unanswered, stale, dropped: never a rule): none\n" in text
    coloured = status_text(status, color=True)
    assert "\x1b[" in coloured and "learning" in coloured
    assert status_text(status) == text  # the same status, the same text


# --- the chart -----------------------------------------------------------------------------------


def _png_text_chunks(data: bytes) -> dict[bytes, bytes]:
    out, at = {}, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"tEXt":
            key, _, value = data[at + 8:at + 8 + length].partition(b"\0")
            out[key] = value
        at += 12 + length
    return out


def test_the_chart_is_a_png_of_fixed_size_and_deterministic(scene):
    *_, status = scene
    png = learning_chart(status)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1000, 450)
    assert learning_chart(status) == png
    assert _png_text_chunks(png) == {b"Software": b"netpol-learn"}  # no time, no version
    assert is_chart(png) and is_chart(png[:200])
    pillow = io.BytesIO()
    image.save(pillow, format="PNG")
    assert not is_chart(pillow.getvalue()) and not is_chart(b"# Generated by netpol-learn\n")
    broken = bytearray(png)
    at = png.index(b"tEXtSoftware")
    broken[at + 4 + len("Software\0")] ^= 0x20  # the text changed, its CRC not: not ours
    assert not is_chart(bytes(broken))


def test_the_chart_bins_by_hour_or_day(tmp_path):
    from netpol_learn._chart import bins

    log, inv = four_days(), inventory(tmp_path)
    status = learning_status(log, inv, resolve(log, inv))
    width, starts, new = bins(status)
    assert unit_of(status)[1] == "day" and width == DAY * 10**9  # four days: more than three
    assert len(starts) == 5 and sum(new) == status.edges  # the fifth day holds only the capture's last instant
    assert starts[0] == k8s.ns(-10 * H)  # 2025-06-01T00:00Z: whole UTC days
    two = four_days(2)
    status = learning_status(two, inv, resolve(two, inv))
    width, starts, new = bins(status)
    assert width == H * 10**9 and len(starts) == 49 and sum(new) == status.edges
    short = FlowLog(flows=(flow("10.244.0.20", "10.244.0.30", 5432, [(0, 1800, 1)]),))
    assert unit_of(learning_status(short, inv, resolve(short, inv)))[1] == "minute"
    image = Image.open(io.BytesIO(learning_chart(learning_status(FlowLog(), inv, resolve(FlowLog(), inv)))))
    assert image.size == (1000, 450)  # no traffic: an empty chart, still a chart


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    log_path = tmp_path / "flows.jsonl"
    write_flow_log(four_days(), log_path)
    return log_path, k8s.write_list(tmp_path, cluster_items())


def test_the_status_command_in_fresh_processes(tmp_path, files):
    flows, inv = files
    runs = []
    for seed in SEEDS:
        out, chart = tmp_path / f"status-{seed}.json", tmp_path / f"chart-{seed}.png"
        r = netpol_learn(["status", "--flows", flows, "--inventory", inv, "--format", "json", "-o", out, "--chart", chart], seed)
        assert r.returncode == 0, r.stderr
        assert r.stderr == f"learning status: learning (6 workloads, 16 edges) -> {out}, {chart}\n"
        runs.append((out.read_bytes(), chart.read_bytes()))
    assert runs[0] == runs[1]
    doc = json.loads(runs[0][0])
    assert doc["verdict"] == "learning" and doc["counts"] == {"learning": 1, "stabilizing": 1, "stable": 4}
    assert Image.open(io.BytesIO(runs[0][1])).size == (1000, 450)
    # markdown and text to stdout; another --stable-after
    r = netpol_learn(["status", "--flows", flows, "--inventory", inv, "--format", "markdown", "--stable-after", "3d"], "1")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("# Learning status\n\n**learning**: 6 workloads (2 learning, 1 stabilizing, 3 stable), 16 edges; stable after 3d")
    r = netpol_learn(["status", "--flows", flows, "--inventory", inv, "--stable-after", "30s"], "1")
    assert r.returncode == 0 and r.stdout.startswith("Learning status: stable  ("), r.stdout


@pytest.mark.parametrize("value", ["banana", "0", "-5m", "24x"])
def test_a_bad_stable_after_is_one_line_and_exit_2(files, value):
    flows, inv = files
    r = netpol_learn(["status", "--flows", flows, "--inventory", inv, "--stable-after", value], "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: netpol-learn status: ") and "--stable-after" in r.stderr, r.stderr


def test_a_bad_flow_log_is_one_line_and_exit_2(tmp_path, files):
    _, inv = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = netpol_learn(["status", "--flows", bad, "--inventory", inv], "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr


# --- REPORT.md and the chart in a policy directory -----------------------------------------------


def test_generate_writes_the_section_and_the_chart_and_a_second_run_replaces_them(tmp_path, files):
    flows, inv = files
    out = tmp_path / "policies"
    r = netpol_learn(["generate", "--flows", flows, "--inventory", inv, "-o", out], "1")
    assert r.returncode == 0, r.stderr
    report = (out / "REPORT.md").read_text()
    assert "- learning: learning (see Learning status below)\n" in report
    assert "\n## Learning status\n\n**learning**: 6 workloads" in report
    assert "\n![New edges over time](learning.png)\n" in report
    assert "\n### Outside names whose addresses changed (an ipBlock for them goes stale)\n\n- downloads.example.com\n" in report
    assert report.index("## Learning status") < report.index("## Resolution")
    first = (out / CHART).read_bytes()
    assert is_chart(first) and Image.open(out / CHART).size == (1000, 450)
    g = generate(four_days(), load_inventory([inv]))
    assert g.directory == {**g.files, CHART: first} and g.files["REPORT.md"] == report  # the library's, byte for byte
    # the first two days only: another status, another chart
    shorter = tmp_path / "two-days.jsonl"
    write_flow_log(four_days(2), shorter)
    r = netpol_learn(["generate", "--flows", shorter, "--inventory", inv, "-o", out], "2")
    assert r.returncode == 0, r.stderr  # the chart of the first run is recognised as netpol-learn's own
    assert (out / CHART).read_bytes() != first and is_chart((out / CHART).read_bytes())
    assert (out / "REPORT.md").read_text() != report and "**learning**: 6 workloads (1 learning, 1 stabilizing, 4 stable)" in (out / "REPORT.md").read_text()
    # files netpol-learn did not write: refused, and with --force left alone
    (out / "notes.txt").write_text("mine\n")
    Image.new("RGB", (4, 4)).save(out / "diagram.png")
    diagram = (out / "diagram.png").read_bytes()
    r = netpol_learn(["generate", "--flows", flows, "--inventory", inv, "-o", out], "1")
    assert r.returncode == 2 and "did not write (diagram.png, notes.txt)" in r.stderr, r.stderr
    r = netpol_learn(["generate", "--flows", flows, "--inventory", inv, "-o", out, "--force"], "1")
    assert r.returncode == 0, r.stderr
    assert (out / CHART).read_bytes() == first and (out / "REPORT.md").read_text() == report
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "diagram.png").read_bytes() == diagram
    # no edge left to draw: the chart of the earlier run is removed as stale, the foreign files stay
    icmp = tmp_path / "icmp.jsonl"
    write_flow_log(FlowLog(flows=(replace(flow("10.244.0.40", "8.8.8.8", None, [(0, 10, 1)]), proto="ICMP",
                                          direction=(("icmp-echo", 1),), evidence="answered"),)), icmp)
    r = netpol_learn(["generate", "--flows", icmp, "--inventory", inv, "-o", out, "--force"], "1")
    assert r.returncode == 0, r.stderr
    assert "removed 3 files of an earlier run" in r.stderr  # shop.yaml, web.yaml and learning.png
    assert not (out / CHART).exists() and "learning.png" not in (out / "REPORT.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "diagram.png", "kustomization.yaml", "notes.txt"]


def test_a_chart_that_is_not_ours_is_never_overwritten(tmp_path, files):
    flows, inv = files
    out = tmp_path / "policies"
    out.mkdir()
    Image.new("RGB", (4, 4)).save(out / CHART)
    r = netpol_learn(["generate", "--flows", flows, "--inventory", inv, "-o", out, "--force"], "1")
    assert r.returncode == 2 and "learning.png: exists and netpol-learn did not write it" in r.stderr, r.stderr
    assert Image.open(out / CHART).size == (4, 4)


def test_the_png_chunk_layout_is_what_is_chart_reads():
    """A PNG built by hand with the chunk after another text chunk is still recognised."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"Title\0x")
    assert is_chart(head + chunk(b"tEXt", b"Software\0netpol-learn") + chunk(b"IDAT", b""))
    assert not is_chart(head + chunk(b"IDAT", b"") + chunk(b"tEXt", b"Software\0netpol-learn"))  # after the image: no
    assert not is_chart(head + chunk(b"tEXt", b"Software\0netpol-learner"))
