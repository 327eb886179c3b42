"""Hubble's flow records as capture input (issue 14, item 1): the real exports in tests/data/hubble
(their traps: replies, reserved identities, the L7 proxy's lost identity and its own upstream
connections, health traffic, the DNS proxy's forwarding), and records built here, at explicit
timestamps, for each rule of netpol_learn/_capture/_hubble.py."""

from __future__ import annotations

import fcntl
import gzip
import json
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path


from netpol_learn._capture import capture_files
from netpol_learn._flowlog import read_flow_log

DATA = Path(__file__).parent / "data" / "hubble"
T0 = "2026-05-04T10:00:00"


def flows_of(log):
    return sorted((f.src, f.src_pods or f.src_entity, f.dst, f.dst_pods or f.dst_entity, f.proto, f.port, f.evidence, f.connections)
                  for f in log.flows)


# --- the real exports, read by hand -----------------------------------------------------------


def test_ten_records_of_a_gke_cluster():
    log = capture_files([DATA / "basic-sample-10-flows.json"])
    # Ten records, five connections: every reply joined its request, never a flow of its own.
    assert flows_of(log) == [
        ("10.0.0.53", ("istio-system/istio-telemetry-85cf8ddf5f-kw64q",), "10.0.2.14", ("istio-system/istio-galley-7994d74d58-s2pwm",), "TCP", 9901, "established", 1),
        ("10.0.1.4", ("istio-system/prometheus-6655946b9f-hx9ln",), "10.0.2.16", ("bookinfo/reviews-v1-545db77b95-s6jb8",), "TCP", 15090, "established", 1),
        # kubelet probes from the node (reserved:host), one decided by its SYN, one by the reply flag
        ("10.0.2.1", "host", "10.0.2.12", ("kube-system/kube-dns-6c7b8dc9f9-gnxh2",), "TCP", 10054, "established", 1),
        ("10.0.2.1", "host", "10.0.2.16", ("bookinfo/reviews-v1-545db77b95-s6jb8",), "TCP", 15020, "established", 1),
        # reserved:world: outside, no entity of its own
        ("10.0.2.13", ("kube-system/event-exporter-gke-67986489c8-svnrf",), "35.246.31.234", "", "TCP", 443, "established", 1),
    ]
    by_port = {f.port: f for f in log.flows}
    assert dict(by_port[10054].direction) == {"syn": 1}
    assert dict(by_port[15020].direction) == {"flow-record": 1}  # FIN/ACK only: the reply flag decides
    assert log.stats["flow_records"] == 10 and log.stats["packets"] == 10
    assert all(f.bytes == 0 for f in log.flows)  # records carry no sizes
    host = [e for e in log.endpoints if e.entity == "host"]
    assert [(e.address, e.node) for e in host] == [("10.0.2.1", "gke-ilya-otel-demo-1-ilya-otel-demo-1-6114bb84-zr1l")]
    reviews = next(e for e in log.endpoints if e.pod == "reviews-v1-545db77b95-s6jb8")
    assert dict(reviews.labels) == {"app": "reviews", "security.istio.io/tlsMode": "istio", "version": "v1"}
    assert dict(reviews.namespace_labels) == {"istio-injection": "enabled", "kubernetes.io/metadata.name": "bookinfo"}


def test_the_l7_proxy_and_health_traffic_of_a_kind_cluster():
    log = capture_files([DATA / "basic-sample-400-tcp-flows.json"])
    assert flows_of(log) == [
        ("10.244.0.110", ("bookinfo/reviews-v2-7bf8c9648f-r7bs2",), "10.244.0.206", ("bookinfo/ratings-v1-b6994bb9-jgqxb",), "TCP", 9080, "established", 1),
        ("10.244.0.148", "host", "10.244.0.188", ("jaeger/jaeger-default-6f5845c4b7-7r5r6",), "TCP", 14269, "established", 1),
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.0.110", ("bookinfo/reviews-v2-7bf8c9648f-r7bs2",), "TCP", 9080, "established", 5),
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.1.109", ("bookinfo/reviews-v1-545db77b95-j2n72",), "TCP", 9080, "established", 2),
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.1.18", ("bookinfo/reviews-v3-84779c7bbc-6x8gl",), "TCP", 9080, "established", 3),
        # the L7 records name details' pod under reserved:world (the proxy lost the identity): still the pod
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.1.193", ("bookinfo/details-v1-79f774bdb9-m4j4k",), "TCP", 9080, "established", 9),
        ("10.244.0.206", ("bookinfo/ratings-v1-b6994bb9-jgqxb",), "10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "TCP", 9080, "established", 10),
        # the client's side only was recorded: no answer seen, no rule
        ("10.244.0.8", ("kube-system/otelcol-hubble-collector-fwc6m",), "10.244.0.188", ("jaeger/jaeger-default-6f5845c4b7-7r5r6",), "TCP", 14250, "unanswered", 1),
        ("10.244.0.8", ("kube-system/otelcol-hubble-collector-fwc6m",), "172.19.0.3", "host", "TCP", 4244, "established", 1),
        ("10.244.1.136", ("kube-system/otelcol-hubble-collector-2t8z4",), "10.244.0.188", ("jaeger/jaeger-default-6f5845c4b7-7r5r6",), "TCP", 14250, "established", 1),
    ]
    # 84 records of the proxy's own upstream connections (productpage's labels, no namespace, from
    # the node's 10.244.0.148) and the 29 replies to them; one health check (remote-node -> 4240).
    assert log.stats["flow_records_proxy"] == 113
    assert log.stats["flow_records_health"] == 1
    assert log.stats["packets"] == 400 - 113 - 1
    assert not any(f.src == "10.244.0.148" and f.port == 9080 for f in log.flows)


def test_dns_through_cilium_s_dns_proxy():
    log = capture_files([DATA / "basic-sample-400-udp-flows.json"])
    assert flows_of(log) == [
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.1.227", ("kube-system/coredns-558bd4d5db-w2m67",), "UDP", 53, "answered", 13),
        ("10.244.0.177", ("bookinfo/productpage-v1-6b746f74dc-9rcxx",), "10.244.1.80", ("kube-system/coredns-558bd4d5db-9grjv",), "UDP", 53, "answered", 11),
        ("10.244.0.206", ("bookinfo/ratings-v1-b6994bb9-jgqxb",), "10.244.1.227", ("kube-system/coredns-558bd4d5db-w2m67",), "UDP", 53, "answered", 9),
        ("10.244.0.206", ("bookinfo/ratings-v1-b6994bb9-jgqxb",), "10.244.1.80", ("kube-system/coredns-558bd4d5db-9grjv",), "UDP", 53, "answered", 4),
    ]
    # The proxy's forwarding of those lookups, from the node (remote-node, 10.244.0.148): not a workload's.
    assert log.stats["flow_records_dns_proxy"] == 74
    assert not any(f.src_entity for f in log.flows)
    names = {(d.client, d.resolver, d.qname, d.qtype): (d.queries, d.responses, tuple(a.data for a in d.answers), d.rcodes) for d in log.dns}
    assert names[("10.244.0.206", "10.244.1.227", "productpage.bookinfo.svc.cluster.local", "A")] == (9, 9, ("10.245.218.54",), ("NOERROR",))
    assert names[("10.244.0.177", "10.244.1.80", "details.bookinfo.svc.cluster.local", "AAAA")][2] == ()
    assert {q for _, _, q, _ in names} == {"details.bookinfo.svc.cluster.local", "reviews.bookinfo.svc.cluster.local",
                                        "productpage.bookinfo.svc.cluster.local"}


def test_node_local_dns_and_a_node_address_labelled_world():
    dns = capture_files([DATA / "basic-sample-5-dns-flows.json"])
    assert flows_of(dns) == [("10.156.2.2", ("kube-system/node-local-dns-88zrp",), "10.156.2.3", ("kube-system/kube-dns-b4f5c58c7-vnx5s",), "TCP", 53, "established", 1)]
    assert {d.rcodes for d in dns.dns} == {("NXDOMAIN",), ()}
    http = capture_files([DATA / "basic-sample-5-http-flows.json"])
    flows = flows_of(http)
    # 10.128.0.4 is a node address that Cilium labelled world: no entity, outside unless an inventory says otherwise
    assert ("10.156.2.7", ("istio-system/prometheus-6655946b9f-6xcpf",), "10.128.0.4", "", "TCP", 9990, "unanswered", 1) in flows
    # world with a pod name (the L7 proxy lost the identity): that pod
    assert ("10.156.2.7", ("istio-system/prometheus-6655946b9f-6xcpf",), "10.156.3.6", ("kube-system/kube-dns-b4f5c58c7-7qmtw",), "TCP", 10054, "unanswered", 1) in flows


# --- records built here ---------------------------------------------------------------------


def ep(ns=None, pod=None, labels=(), ident=None, local=False):
    out = {"labels": list(labels)}
    if ns:
        out["namespace"] = ns
        out["labels"] = [*out["labels"], f"k8s:io.kubernetes.pod.namespace={ns}"]
    if pod:
        out["pod_name"] = pod
    if ident:
        out["identity"] = ident
    if local:
        out["ID"] = 1234
    return out


API = ep(ns="shop", pod="api-7d9f8b6c5d-x2x2x", labels=["k8s:app=api"], local=True)
DB = ep(ns="shop", pod="db-0", labels=["k8s:app=db"])


def rec(t: float, src, dst, sport, dport, flags=None, proto="TCP", verdict="FORWARDED", reply=None, wrap=True, **extra):
    secs = int(t)
    flow = {
        "time": f"{T0[:-2]}{secs:02d}.{int(round((t - secs) * 1e9)):09d}Z" if secs < 60 else None,
        "verdict": verdict, "IP": {"source": src[0], "destination": dst[0], "ipVersion": "IPv4"},
        "l4": {proto: {"source_port": sport, "destination_port": dport, **({"flags": {f: True for f in flags}} if flags else {})}},
        "source": src[1], "destination": dst[1], "Type": "L3_L4", "node_name": "node-a",
        **extra,
    }
    if reply is not None:
        flow["is_reply"] = reply
    return json.dumps({"flow": flow, "node_name": "node-a", "time": flow["time"]} if wrap else flow)


def read(tmp_path, lines, name="flows.json", **kw):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return capture_files([path], **kw)


A = ("10.244.1.5", API)
D = ("10.244.2.9", DB)


def test_direction_from_the_reply_flag_flags_and_ports(tmp_path):
    # is_reply false/true (Cilium 1.10+), FIN/ACK only: the flag decides
    log = read(tmp_path, [rec(1, A, D, 41000, 5432, ["ACK", "PSH"], reply=False), rec(1.001, D, A, 5432, 41000, ["ACK"], reply=True)])
    assert [(f.src, f.port, dict(f.direction)) for f in log.flows] == [("10.244.1.5", 5432, {"flow-record": 1})]
    # Cilium 1.9: "reply": true, and no flag on the request that carries a traffic_direction
    log = read(tmp_path, [rec(1, D, A, 5432, 41000, ["ACK"], traffic_direction="EGRESS", **{"reply": True}),
                          rec(1.001, A, D, 41000, 5432, ["ACK"], traffic_direction="INGRESS")])
    assert [(f.src, f.port, dict(f.direction), f.evidence) for f in log.flows] == [("10.244.1.5", 5432, {"flow-record": 1}, "established")]
    # TO_OVERLAY: no flag, no direction: decided like a mid-stream packet (the ports)
    log = read(tmp_path, [rec(1, D, A, 5432, 41000, ["ACK"], trace_observation_point="TO_OVERLAY"),
                          rec(1.001, A, D, 41000, 5432, ["ACK"], trace_observation_point="TO_OVERLAY")])
    assert [(f.src, f.port, dict(f.direction)) for f in log.flows] == [("10.244.1.5", 5432, {"port-heuristic": 1})]
    # SYN and SYN-ACK
    log = read(tmp_path, [rec(1.001, D, A, 5432, 41000, ["SYN", "ACK"]), rec(1, A, D, 41000, 5432, ["SYN"])])
    assert [(f.src, dict(f.direction)) for f in log.flows] == [("10.244.1.5", {"syn": 1})]


def test_reserved_identities(tmp_path):
    host = ("10.0.0.1", ep(labels=["reserved:host"]))
    remote = ("10.0.0.2", ep(labels=["reserved:remote-node"]))
    apiserver = ("172.18.0.2", ep(labels=["reserved:kube-apiserver", "reserved:remote-node"]))
    world_pod = ("10.244.2.9", ep(ns="shop", pod="db-0", labels=["reserved:world"]))
    log = read(tmp_path, [
        rec(1, host, A, 50000, 8080, ["SYN"]), rec(1.1, A, host, 8080, 50000, ["SYN", "ACK"]),
        rec(2, remote, A, 50001, 8080, ["SYN"]), rec(2.1, A, remote, 8080, 50001, ["SYN", "ACK"]),
        rec(3, A, apiserver, 50002, 6443, ["SYN"]), rec(3.1, apiserver, A, 6443, 50002, ["SYN", "ACK"]),
        rec(4, A, world_pod, 50003, 5432, ["SYN"]), rec(4.1, world_pod, A, 5432, 50003, ["SYN", "ACK"]),
    ])
    assert flows_of(log) == [
        ("10.0.0.1", "host", "10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "TCP", 8080, "established", 1),
        ("10.0.0.2", "remote-node", "10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "TCP", 8080, "established", 1),
        ("10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "10.244.2.9", ("shop/db-0",), "TCP", 5432, "established", 1),
        ("10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "172.18.0.2", "kube-apiserver", "TCP", 6443, "established", 1),
    ]
    eps = {(e.address, e.entity): e for e in log.endpoints}
    assert eps[("10.0.0.1", "host")].node == "node-a"
    assert eps[("10.244.1.5", "pod")].node == "node-a"  # a local endpoint (it has an ID) of the observing node
    assert eps[("10.244.2.9", "pod")].node == ""  # seen from elsewhere
    assert ("10.0.0.2", "remote-node") in eps and ("172.18.0.2", "kube-apiserver") in eps


def test_health_checks_and_the_proxies_own_connections_are_left_out(tmp_path):
    health = ("10.244.3.3", ep(labels=["reserved:health"]))
    node = ("10.0.0.2", ep(labels=["reserved:remote-node"]))
    proxy = ("10.244.1.1", {"identity": 5, "labels": ["k8s:app=api", "k8s:io.kubernetes.pod.namespace=shop"]})
    coredns = ("10.244.4.4", ep(ns="kube-system", pod="coredns-1", labels=["k8s:k8s-app=kube-dns"]))
    lines = [
        rec(1, node, health, 40000, 4240, ["SYN"]), rec(1.1, health, node, 4240, 40000, ["SYN", "ACK"]),
        # the L7 proxy's upstream leg and its reply
        rec(2, proxy, D, 40001, 5432, ["ACK", "PSH"], reply=False), rec(2.1, D, ("10.244.1.1", ep(labels=["reserved:host"])), 5432, 40001, ["ACK"], reply=True),
        # the pod's own connection, through the proxy
        rec(2.2, A, D, 40002, 5432, ["SYN"], verdict="REDIRECTED", reply=False),
        rec(2.3, D, A, 5432, 40002, ["SYN", "ACK"], reply=True),
    ]
    log = read(tmp_path, lines)
    assert flows_of(log) == [("10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "10.244.2.9", ("shop/db-0",), "TCP", 5432, "established", 1)]
    assert log.stats["flow_records_health"] == 2 and log.stats["flow_records_proxy"] == 2
    # the DNS proxy's forwarding is left out only where the input shows the DNS proxy at work
    forwarded = [rec(3, node, coredns, 40003, 53, proto="UDP"), rec(3.1, coredns, node, 53, 40003, proto="UDP")]
    assert flows_of(read(tmp_path, forwarded))[0][:6] == ("10.0.0.2", "remote-node", "10.244.4.4", ("kube-system/coredns-1",), "UDP", 53)
    query = rec(2.9, A, coredns, 40004, 53, proto="UDP", reply=False, Type="L7",
                l7={"type": "REQUEST", "dns": {"query": "db.shop.svc.cluster.local.", "observation_source": "proxy", "qtypes": ["A"]}})
    log = read(tmp_path, [query, *forwarded])
    assert [f.src for f in log.flows] == ["10.244.1.5"] and log.stats["flow_records_dns_proxy"] == 2


def test_dropped_traffic_is_reported_not_allowed(tmp_path):
    lines = [rec(1, A, D, 41000, 5432, ["SYN"], verdict="DROPPED", reply=False, drop_reason_desc="POLICY_DENIED"),
             rec(2, A, D, 41000, 5432, ["SYN"], verdict="DROPPED", reply=False)]
    log = read(tmp_path, lines)
    assert [(f.evidence, f.connections, f.packets) for f in log.flows] == [("dropped", 1, 2)]
    assert log.stats["flow_records_dropped"] == 2
    included = read(tmp_path, lines, include_dropped=True)
    assert [f.evidence for f in included.flows] == ["unanswered"]  # counted as traffic: what its packets show


def test_l7_dns_records_become_dns_lines(tmp_path):
    coredns = ("10.96.0.10", ep(ns="kube-system", pod="coredns-1", labels=["k8s:k8s-app=kube-dns"]))
    q = {"query": "API.GitHub.com.", "qtypes": ["A"], "observation_source": "proxy"}
    lines = [
        rec(1, A, coredns, 40000, 53, proto="UDP", reply=False, Type="L7", l7={"type": "REQUEST", "dns": q}),
        rec(1.01, coredns, A, 53, 40000, proto="UDP", reply=True, Type="L7",
            l7={"type": "RESPONSE", "dns": {**q, "ips": ["140.82.112.3", "140.82.112.4"], "cnames": ["github.map.fastly.net."], "ttl": 60, "rcode": 0}}),
        rec(2, A, coredns, 40001, 53, proto="UDP", reply=False, Type="L7", l7={"type": "REQUEST", "dns": {"query": "nope.example.", "qtypes": ["AAAA"]}}),
        rec(2.01, coredns, A, 53, 40001, proto="UDP", reply=True, Type="L7", l7={"type": "RESPONSE", "dns": {"query": "nope.example.", "qtypes": ["AAAA"], "rcode": 3}}),
    ]
    log = read(tmp_path, lines)
    obs = {d.qname: d for d in log.dns}
    gh = obs["api.github.com"]
    assert (gh.client, gh.resolver, gh.qtype, gh.queries, gh.responses, gh.rcodes, gh.transports) == ("10.244.1.5", "10.96.0.10", "A", 1, 1, ("NOERROR",), ("udp",))
    assert [(a.name, a.type, a.data, a.ttl) for a in gh.answers] == [
        ("api.github.com", "A", "140.82.112.3", 60), ("api.github.com", "A", "140.82.112.4", 60), ("api.github.com", "CNAME", "github.map.fastly.net", 60)]
    assert obs["nope.example"].rcodes == ("NXDOMAIN",) and obs["nope.example"].qtype == "AAAA"
    assert [(f.port, f.evidence, dict(f.direction)) for f in log.flows] == [(53, "answered", {"dns": 2})]  # DNS is the stronger method


def test_bare_flow_objects_and_jsonpb(tmp_path):
    # -o jsonpb writes the flow objects themselves; 64-bit integers as strings
    lines = [rec(1, A, D, 41000, 5432, ["SYN"], wrap=False), rec(1.5, D, A, 5432, 41000, ["SYN", "ACK"], wrap=False)]
    lines = [line.replace('"destination_port": 5432', '"destination_port": "5432"') for line in lines]
    log = read(tmp_path, lines)
    assert flows_of(log) == [("10.244.1.5", ("shop/api-7d9f8b6c5d-x2x2x",), "10.244.2.9", ("shop/db-0",), "TCP", 5432, "established", 1)]
    gz = tmp_path / "flows.json.gz"
    gz.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    assert flows_of(capture_files([gz])) == flows_of(log)


def test_an_address_handed_over_between_two_pods_keeps_each_in_its_time(tmp_path):
    old = ("10.244.1.5", ep(ns="shop", pod="api-old", labels=["k8s:app=api"]))
    new = ("10.244.1.5", ep(ns="shop", pod="web-new", labels=["k8s:app=web"]))
    log = read(tmp_path, [rec(1, old, D, 41000, 5432, ["SYN"]), rec(1.1, D, old, 5432, 41000, ["SYN", "ACK"]),
                          rec(50, new, D, 42000, 5432, ["SYN"]), rec(50.1, D, new, 5432, 42000, ["SYN", "ACK"])])
    (flow,) = log.flows
    assert flow.src_pods == ("shop/api-old", "shop/web-new")  # both held it in the line's time ...
    spans = {e.pod: (e.first_seen, e.last_seen) for e in log.endpoints if e.address == "10.244.1.5"}
    assert spans["api-old"][1] < spans["web-new"][0]  # ... each in its own: resolution splits the runs by these
    assert [r[2] for r in flow.runs] == [2]  # 49 s apart: one run


def test_damaged_lines_are_warnings_and_bad_inputs_errors(tmp_path):
    lines = [rec(1, A, D, 41000, 5432, ["SYN"]), "{not json", json.dumps({"node_status": {}}),
             json.dumps({"lost_events": {"num_events_lost": 7}}), rec(1.1, D, A, 5432, 41000, ["SYN", "ACK"])]
    warnings = []
    log = read(tmp_path, lines, warn=warnings.append)
    assert len(log.flows) == 1 and log.stats["flow_records_lost"] == 7 and log.stats["flow_records_other"] == 2
    assert warnings == ["flows.json: line 2 is not JSON (Expecting property name enclosed in double quotes); skipped"]
    assert list(log.stats["warnings"]) == warnings


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "netpol_learn", *args], capture_output=True, text=True, **kw)


def test_cli_formats_and_errors(tmp_path):
    pcap = Path(__file__).resolve().parent.parent / "captures" / "guestbook" / "capture.pcap"
    r = _cli("capture", "--format", "hubble", str(pcap))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not Hubble flow records" in r.stderr
    (tmp_path / "x.json").write_text('{"a": 1}\n')
    r = _cli("capture", str(tmp_path / "x.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nor Hubble flow records" in r.stderr
    out = tmp_path / "out.jsonl"
    r = _cli("capture", str(DATA / "basic-sample-10-flows.json"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "10 flow records" in r.stderr
    r = _cli("capture", "-", "-o", str(tmp_path / "stdin.jsonl"), input=(DATA / "basic-sample-10-flows.json").read_text())
    assert r.returncode == 0, r.stderr
    a, b = out.read_text().splitlines(), (tmp_path / "stdin.jsonl").read_text().splitlines()
    assert a[1:] == b[1:] and json.loads(b[0])["sources"] == ["stdin"]  # the same log, but its source
    # a packet capture on standard input is read too (spooled to a temporary file)
    r = _cli("capture", "-", "-o", str(tmp_path / "pcap-stdin.jsonl"), stdin=open(pcap, "rb"))
    assert r.returncode == 0, r.stderr
    r = _cli("capture", str(pcap), "-o", str(tmp_path / "pcap.jsonl"))
    assert (tmp_path / "pcap-stdin.jsonl").read_text().splitlines()[1:] == (tmp_path / "pcap.jsonl").read_text().splitlines()[1:]


def _blocked_reading(pid: int) -> bool:
    return "pipe" in Path(f"/proc/{pid}/wchan").read_text()  # pipe_read, anon_pipe_read, pipe_wait


def test_stdin_streaming_is_written_on_sigterm(tmp_path):
    """hubble observe --follow | netpol-learn capture - : the log is written when SIGTERM comes."""
    out = tmp_path / "flows.jsonl"
    out.write_text("the previous log\n")
    proc = subprocess.Popen([sys.executable, "-m", "netpol_learn", "capture", "-", "-o", str(out)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = (DATA / "basic-sample-10-flows.json").read_text()
    proc.stdin.write(lines)
    proc.stdin.flush()
    # Wait until it has read everything sent (the pipe is empty) and sits blocked for more.
    deadline = time.monotonic() + 120
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, buf)
        if int.from_bytes(buf, sys.byteorder) == 0 and _blocked_reading(proc.pid):
            break
        time.sleep(0.05)
    assert out.read_text() == "the previous log\n"  # nothing written while it follows
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    log = read_flow_log(out)
    assert len(log.flows) == 5 and log.stats["flow_records"] == 10
    assert "10 flow records" in err
