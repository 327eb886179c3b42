"""Learning in time: each connection judged by who held each address when it happened.

Every case is a capture built with scapy at explicit timestamps (tests/pcapgen.py; T0 is
2025-06-01T10:00:00Z, the inventories' BASE in tests/k8s.py), one or more inventory snapshots (and,
where the case says so, a watch history), run through capture -> resolve -> generate, and the
written policies judged by network-config-analyzer (tests/policy_judge.py), an engine this project
did not write: what must be allowed is allowed, what must not is denied, and the report says why.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.packet import Raw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import k8s  # noqa: E402
import pcapgen as g  # noqa: E402
from policy_judge import judge  # noqa: E402

from netpol_learn import GenerateOptions, ResolveOptions, capture_files, generate, load_inventory, write_directory  # noqa: E402

NS = "shop"
API_IP, FE_IP, HANDOVER_IP = "10.244.2.30", "10.244.1.20", "10.244.1.50"
API, FE = f"{NS}/Pod/api", f"{NS}/Pod/frontend"
A, B = f"{NS}/Pod/batch-a", f"{NS}/Pod/batch-b"


def base() -> list[dict]:
    return [
        k8s.namespace(NS),
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.node("node-b", "172.18.0.3", "10.244.2.0/24"),
        k8s.pod("api", NS, API_IP, labels={"app": "api"}, node="node-b", ports=[("http", 8080, "TCP")]),
        k8s.pod("frontend", NS, FE_IP, labels={"app": "frontend"}),
    ]


def batch_a(**kw) -> dict:
    return k8s.pod("batch-a", NS, HANDOVER_IP, labels={"app": "batch-a"}, **kw)


def batch_b(**kw) -> dict:
    return k8s.pod("batch-b", NS, HANDOVER_IP, labels={"app": "batch-b"}, **kw)


def at(seconds: float) -> Decimal:
    return Decimal(g.T0) + Decimal(str(seconds))


def call(client: str, server: str, at_s: float, cport: int, sport: int = 8080, **kw) -> list:
    """A whole TCP connection (SYN ... FIN) from client to server at ``at_s`` seconds after T0."""
    return g.tcp_session(client, server, cport, sport, t0=at(at_s), **kw)


def packet(at_s: float, src: str, dst: str, sport: int, dport: int, flags: str, seq: int = 1, ack: int = 1, payload: bytes = b""):
    p = g.ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
    return (at(at_s), p / Raw(payload) if payload else p)


@dataclass
class Learned:
    log: object
    generated: object
    policies: list[Path]
    objects: list[dict]

    @property
    def report(self):
        return self.generated.resolution.report

    def allowed(self, ports=(("TCP", 8080),), external=None) -> set[tuple]:
        verdict = judge(self.policies, self.objects, sorted(ports), external=external)
        assert not verdict.partial, sorted(verdict.partial)
        return {tuple(c) for c in verdict.allowed}


def learn(tmp_path: Path, records: list, snapshots: list[tuple[float, list[dict]]], *,
          options: ResolveOptions = ResolveOptions(), history: Path | None = None) -> Learned:
    """capture -> generate (library calls, as the CLI makes them) -> a policy directory."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = records if records and isinstance(records[0], list) else [records]  # one capture file, or several
    log = capture_files([g.write_pcap(tmp_path / f"capture-{i}.pcap", g.by_time(r)) for i, r in enumerate(files)])
    paths = [k8s.write_list(tmp_path, items, f"snapshot-{i}.yaml", snapshot_time=t) for i, (t, items) in enumerate(snapshots)]
    if history is not None:
        paths.append(history)
    inventory = load_inventory(paths)
    generated = generate(log, inventory, GenerateOptions(), None, options)
    out = tmp_path / "policies"
    write_directory(out, generated.files)
    objects = {}
    for _, items in snapshots:  # every object once (the judge models each pod once)
        for o in items:
            objects[(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])] = o
    return Learned(log, generated, sorted(p for p in out.glob("*.yaml") if p.name != "kustomization.yaml"), list(objects.values()))


def unresolved(learned: Learned, address: str) -> list[str]:
    r = learned.report
    return [why for a, why, _ in (*r.unresolved, *r.ambiguous) if a == address]


# --- handovers ---------------------------------------------------------------------------------


def test_handover_with_both_pods_calling_the_same_server_gives_each_its_own_rule(tmp_path):
    # batch-a holds 10.244.1.50 until it is deleted at 100; batch-b gets it at 300. Both call api.
    records = [*call(HANDOVER_IP, API_IP, 50, 40001), *call(HANDOVER_IP, API_IP, 60, 40002),
               *call(HANDOVER_IP, API_IP, 350, 40003), *call(HANDOVER_IP, API_IP, 360, 40004)]
    snapshots = [(100, [*base(), batch_a(start=0)]), (400, [*base(), batch_b(start=300)])]
    learned = learn(tmp_path, records, snapshots)
    flow = next(f for f in learned.log.flows if f.src == HANDOVER_IP)
    assert [n for _, _, n in flow.runs] == [2, 2], "two runs of activity, one per holder"
    allowed = learned.allowed()
    assert {(A, API, "TCP", 8080), (B, API, "TCP", 8080)} <= allowed
    assert (FE, API, "TCP", 8080) not in allowed
    assert unresolved(learned, HANDOVER_IP) == []


def test_handover_with_only_a_final_snapshot_does_not_give_the_new_pod_the_old_ones_traffic(tmp_path):
    # Only the snapshot at 400 exists: batch-b (from 300) is known, batch-a is not. batch-a's calls
    # at 50 are unresolved; batch-b's at 350 are its own.
    records = [*call(HANDOVER_IP, API_IP, 50, 40001), *call(HANDOVER_IP, API_IP, 350, 40003)]
    learned = learn(tmp_path, records, [(400, [*base(), batch_b(start=300)])])
    assert (B, API, "TCP", 8080) in learned.allowed()
    reasons = unresolved(learned, HANDOVER_IP)
    assert len(reasons) == 1 and reasons[0].startswith("no pod held it at that time (held by shop/batch-b"), reasons
    c = next(c for c in learned.generated.resolution.connections if c.client.workload == "Pod/batch-b")
    assert c.connections == 1 and c.first_seen >= k8s.ns(350), "batch-b's rule is made of batch-b's traffic only"


# --- evidence ----------------------------------------------------------------------------------


STALE_SNAPSHOTS = [(90, [*base(), batch_a(start=0, deleted=100)]), (400, [*base(), batch_b(start=120)])]


def stale_records() -> tuple[list, list]:
    """batch-a called api and was killed mid-connection at 100; batch-b holds the address from
    120. At 150 api sends the rest of its answer to the old connection; batch-b answers with RST."""
    return ([*call(HANDOVER_IP, API_IP, 50, 40001, fin=False)],
            [packet(150, API_IP, HANDOVER_IP, 8080, 40001, "PA", seq=9000, ack=2000, payload=b"rest of the answer"),
             packet(150.001, HANDOVER_IP, API_IP, 40001, 8080, "R", seq=2000, ack=0)])


def test_a_stale_connection_answered_by_rst_from_the_new_holder_belongs_to_neither(tmp_path):
    # Two capture files (tcpdump -G, or two sniffer segments): the old connection in the first,
    # its stale tail in the second, which is a connection of its own: stale.
    learned = learn(tmp_path, list(stale_records()), STALE_SNAPSHOTS)
    allowed = learned.allowed(ports=(("TCP", 8080), ("TCP", 40001)))
    assert (A, API, "TCP", 8080) in allowed
    assert (B, API, "TCP", 8080) not in allowed and (API, B, "TCP", 40001) not in allowed
    stale = [row for row in learned.report.attempts if row[4] == "stale"]
    assert stale == [(B, API, "TCP", 8080, "stale", 1)], learned.report.attempts


def test_a_stale_tail_in_the_same_capture_ends_the_connection_where_both_sides_last_spoke(tmp_path):
    # One file: the tail is the same 5-tuple as batch-a's connection. The connection lasts while
    # both sides spoke (until batch-a's last ACK at 50): the RST at 150 does not make it batch-b's.
    old, tail = stale_records()
    learned = learn(tmp_path, old + tail, STALE_SNAPSHOTS)
    (flow,) = learned.log.flows
    assert flow.evidence == "established" and flow.last_seen < k8s.ns(51)
    allowed = learned.allowed(ports=(("TCP", 8080), ("TCP", 40001)))
    assert (A, API, "TCP", 8080) in allowed
    assert (B, API, "TCP", 8080) not in allowed and (API, B, "TCP", 40001) not in allowed


def test_a_refused_syn_is_a_reported_attempt_and_never_a_rule(tmp_path):
    # frontend tries batch-b on 9000 twice: batch-b does not listen there and resets.
    records = []
    for i, t in enumerate((200, 230)):
        records += [packet(t, FE_IP, HANDOVER_IP, 41000 + i, 9000, "S", seq=100),
                    packet(t + 0.001, HANDOVER_IP, FE_IP, 9000, 41000 + i, "RA", seq=0, ack=101)]
    records += call(FE_IP, API_IP, 210, 42000)
    learned = learn(tmp_path, records, [(400, [*base(), batch_b(start=100, ports=[("http", 8080, "TCP")])])])
    allowed = learned.allowed(ports=(("TCP", 8080), ("TCP", 9000)))
    assert (FE, API, "TCP", 8080) in allowed
    assert (FE, B, "TCP", 9000) not in allowed
    assert learned.report.attempts == ((FE, B, "TCP", 9000, "refused", 2),)
    assert "refused" in learned.generated.files["REPORT.md"]


# --- direction from what the cluster declares ----------------------------------------------------


def test_a_server_first_mid_stream_flow_on_a_high_declared_port_is_turned_around(tmp_path):
    # stream declares containerPort 40000; consumer's connection from 45678 was open before the
    # capture, and the server spoke first: the capture's first-packet guess is the wrong way round.
    stream = k8s.pod("stream", NS, "10.244.2.40", labels={"app": "stream"}, node="node-b", ports=[("feed", 40000, "TCP")])
    consumer = k8s.pod("consumer", NS, "10.244.1.41", labels={"app": "consumer"})
    records = g.tcp_data_exchange("10.244.2.40", "10.244.1.41", 40000, 45678, t0=at(100), n=6)
    learned = learn(tmp_path, records, [(400, [*base(), stream, consumer])])
    (flow,) = learned.log.flows
    assert (flow.src, flow.port) == ("10.244.2.40", 45678), "the capture alone guesses from the first packet"
    allowed = learned.allowed(ports=(("TCP", 40000), ("TCP", 45678)))
    assert (f"{NS}/Pod/consumer", f"{NS}/Pod/stream", "TCP", 40000) in allowed
    assert (f"{NS}/Pod/stream", f"{NS}/Pod/consumer", "TCP", 45678) not in allowed
    (c,) = learned.generated.resolution.connections
    assert c.mid_stream and c.port == 40000


def test_a_mid_stream_flow_to_an_undeclared_ephemeral_port_is_reported_not_written(tmp_path):
    one = k8s.pod("one", NS, "10.244.2.40", labels={"app": "one"}, node="node-b")
    two = k8s.pod("two", NS, "10.244.1.41", labels={"app": "two"})
    # frontend's call to api puts the namespace under default-deny.
    records = [*g.tcp_data_exchange("10.244.2.40", "10.244.1.41", 41000, 45678, t0=at(100), n=4), *call(FE_IP, API_IP, 120, 42000)]
    learned = learn(tmp_path, records, [(400, [*base(), one, two])])
    assert [(c.client.workload, c.server.workload) for c in learned.generated.resolution.connections] == [("Pod/frontend", "Pod/api")]
    assert learned.report.not_written == ((f"{NS}/Pod/one", f"{NS}/Pod/two", "TCP", 45678,
                                           "seen only mid-stream, to an ephemeral port the server's pods do not declare"),)
    allowed = learned.allowed(ports=(("TCP", 8080), ("TCP", 41000), ("TCP", 45678)))
    assert allowed == {(FE, API, "TCP", 8080)}


# --- pods gone before the snapshot -----------------------------------------------------------------


def cron_pod(**kw) -> dict:
    return k8s.pod("report-28000000-x7k2p", NS, "10.244.1.77", labels={"app": "report", **k8s.job_labels("report-28000000", NS)},
                   owner=("Job", "report-28000000"), **kw)


def cron_owners() -> list[dict]:
    return [k8s.cronjob("report", NS), k8s.job("report-28000000", NS, owner=("CronJob", "report"))]


def test_a_cronjob_pod_gone_before_the_only_snapshot_is_unresolved_and_reported(tmp_path):
    records = call("10.244.1.77", API_IP, 120, 40100)
    learned = learn(tmp_path, records, [(400, [*base(), *cron_owners()])])
    assert not [c for c in learned.generated.resolution.connections if c.client.kind == "pod" and c.server.kind == "pod"]
    assert unresolved(learned, "10.244.1.77") == ["in the pod range 10.244.1.0/24, held by no known pod"]


def test_a_cronjob_pod_gone_before_the_snapshot_resolves_with_the_watch_history(tmp_path):
    # What `netpol-learn inventory --watch` writes (docs/resolution.md, "Watch history"): the
    # listing at 0, then the CronJob's pod added at 90 and deleted at 170, watched until 400.
    import json

    from netpol_learn._time import format_time

    pod = cron_pod(start=90)
    history = {
        "apiVersion": "v1", "kind": "List", "items": [*base(), *cron_owners()],
        "metadata": {"annotations": {"netpol-learn.io/snapshot-time": format_time(k8s.ns(0)),
                                     "netpol-learn.io/watched-until": format_time(k8s.ns(400))}, "resourceVersion": ""},
        "history": [{"time": format_time(k8s.ns(90)), "type": "ADDED", "object": pod},
                    {"time": format_time(k8s.ns(170)), "type": "DELETED", "object": pod}],
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "watch.json"
    path.write_text(json.dumps(history))
    records = [*call("10.244.1.77", API_IP, 120, 40100), *call("10.244.1.77", API_IP, 300, 40101)]
    learned = learn(tmp_path, records, [(400, [*base(), *cron_owners()])], history=path)
    learned.objects.append(pod)  # the judge models the CronJob's pod too
    cron = f"{NS}/CronJob/report"
    assert (cron, API, "TCP", 8080) in learned.allowed()
    assert learned.report.inferred == ()
    # The call at 300 came after the pod was deleted: no pod held the address then.
    assert unresolved(learned, "10.244.1.77") == [
        "no pod held it at that time (held by shop/report-28000000-x7k2p 2025-06-01T10:01:30.000000Z..2025-06-01T10:02:50.000000Z)"]


def test_a_pod_two_snapshots_bracket_is_attributed_by_inference_unless_refused(tmp_path):
    # The snapshot at 100 shows the CronJob's pod, the one at 400 does not: it held its address at
    # least until 100, and by inference until 400. Its call at 120 is inferred; --no-inference refuses it.
    records = call("10.244.1.77", API_IP, 120, 40100)
    snapshots = [(100, [*base(), *cron_owners(), cron_pod(start=90)]), (400, [*base(), *cron_owners()])]
    learned = learn(tmp_path / "inferred", records, snapshots)
    cron = f"{NS}/CronJob/report"
    assert (cron, API, "TCP", 8080) in learned.allowed()
    assert learned.report.inferred == ((cron, "10.244.1.77", 1),)
    assert "inference" in learned.generated.files["REPORT.md"]
    refused = learn(tmp_path / "refused", records, snapshots, options=ResolveOptions(inference=False))
    assert (cron, API, "TCP", 8080) not in refused.allowed()
    (why,) = unresolved(refused, "10.244.1.77")
    assert "refused by --no-inference" in why


# --- clocks --------------------------------------------------------------------------------------


def skewed_world():
    """The capture clock runs 30 s behind the API's. batch-a let 10.244.1.50 go at 200 and batch-b
    took it at 205; batch-b's first call, at 210 by the API's clock, carries the capture time 180.
    Two fresh pods started at 300 and 310 called api at once: their traffic appears 30 s before
    they existed."""
    fresh = [k8s.pod(f"fresh-{i}", NS, f"10.244.1.{60 + i}", labels={"app": f"fresh-{i}"}, start=300 + 10 * i) for i in range(2)]
    records = [*call(HANDOVER_IP, API_IP, 210 - 30, 40001),
               *call("10.244.1.60", API_IP, 301 - 30, 40010), *call("10.244.1.61", API_IP, 312 - 30, 40011)]
    snapshots = [(150, [*base(), batch_a(start=0)]), (400, [*base(), batch_a(start=0, deleted=200), batch_b(start=205), *fresh])]
    return records, snapshots


def test_a_skewed_clock_is_noticed_and_a_wide_enough_tolerance_refuses_the_handover_traffic(tmp_path):
    records, snapshots = skewed_world()
    default = learn(tmp_path / "default", records, snapshots)
    warning = default.report.clock_warning
    assert warning and "about 29 s behind" in warning, warning
    wide = learn(tmp_path / "wide", records, snapshots, options=ResolveOptions(clock_skew=40 * 10**9))
    allowed = wide.allowed()
    assert (A, API, "TCP", 8080) not in allowed and (B, API, "TCP", 8080) not in allowed
    (why,) = unresolved(wide, HANDOVER_IP)
    assert why.startswith("ambiguous: held by shop/batch-a, shop/batch-b at that time (within the clock tolerance of 40 s)")


def test_resolve_warns_on_stderr_when_the_capture_clock_looks_off(tmp_path):
    from click.testing import CliRunner

    from netpol_learn._cli import main

    records, snapshots = skewed_world()
    pcap = g.write_pcap(tmp_path / "c.pcap", g.by_time(records))
    inventories = [k8s.write_list(tmp_path, items, f"s{i}.yaml", snapshot_time=t) for i, (t, items) in enumerate(snapshots)]
    runner = CliRunner()
    assert runner.invoke(main, ["capture", str(pcap), "-o", str(tmp_path / "f.jsonl")]).exit_code == 0
    args = ["resolve", "--flows", str(tmp_path / "f.jsonl"), *[a for p in inventories for a in ("--inventory", str(p))]]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "capture clock" in line] == [
        "warning: traffic of 2 addresses began about 29 s before the API says their pods existed: the capture clock looks about "
        "29 s behind the API's (traffic near an address handover may be given to the wrong pod; fix the clock, or set "
        "--clock-skew above it so such traffic is reported as ambiguous)"]
    bad = runner.invoke(main, [*args, "--clock-skew", "soon"])
    assert bad.exit_code == 2 and "'soon' is not a duration" in bad.stderr


# --- Services ------------------------------------------------------------------------------------


def test_a_service_whose_backends_changed_sends_each_call_to_the_backend_it_had_then(tmp_path):
    web = k8s.service("web", NS, "10.96.100.10", ports=[("http", 80, 8080, "TCP")], selector={"tier": "web"})
    v1 = k8s.pod("web-v1", NS, "10.244.2.10", labels={"tier": "web", "app": "web-v1"}, node="node-b", ports=[("http", 8080, "TCP")])
    v2 = k8s.pod("web-v2", NS, "10.244.2.20", labels={"tier": "web", "app": "web-v2"}, node="node-b", ports=[("http", 8080, "TCP")], start=200)
    slice_v1 = k8s.endpoint_slice("web", NS, ports=[("http", 8080, "TCP")], endpoints=[("10.244.2.10", "web-v1", "node-b")])
    slice_v2 = k8s.endpoint_slice("web", NS, ports=[("http", 8080, "TCP")], endpoints=[("10.244.2.20", "web-v2", "node-b")])
    # The capture saw the calls before kube-proxy's DNAT: only the ClusterIP.
    records = [*call(FE_IP, "10.96.100.10", 50, 43000, sport=80), *call(FE_IP, "10.96.100.10", 350, 43001, sport=80)]
    snapshots = [(100, [*base(), web, v1, slice_v1]), (400, [*base(), web, v1, v2, slice_v2])]
    learned = learn(tmp_path, records, snapshots)
    c = {(c.server.workload, c.first_seen // 10**9 - g.T0) for c in learned.generated.resolution.connections}
    assert c == {("Pod/web-v1", 50), ("Pod/web-v2", 350)}
    assert {(FE, f"{NS}/Pod/web-v1", "TCP", 8080), (FE, f"{NS}/Pod/web-v2", "TCP", 8080)} <= learned.allowed()
