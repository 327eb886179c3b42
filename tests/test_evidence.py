"""What the server answered (evidence) and when connections happened (runs), as `capture` records
them in flow log version 2 (DESIGN rule 14; docs/flow-log.md, "Evidence" and "Runs").

The captures are built with scapy at explicit timestamps (tests/pcapgen.py). The evidence cases
run through `netpol-learn capture` in a fresh process under each capture engine; the runs and the
properties go through the library (both engines: the ``capture_engine`` fixture).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402
from conftest import CAPTURE_ENGINES  # noqa: E402
from fresh_process import SEEDS, netpol_learn  # noqa: E402
from pcapgen import ICMP, T0, TCP, UDP, Raw  # noqa: E402

from netpol_learn import capture_file, capture_files, merge_logs, read_flow_log, write_flow_log  # noqa: E402
from netpol_learn._capture import _dedup, _evidence, _files, _table  # noqa: E402
from netpol_learn._capture._decode import EV_SYN, EV_SYNACK  # noqa: E402
from netpol_learn._flowlog import EVIDENCE, RUN_GAP, merge_runs  # noqa: E402

D = g.D
ns = g.ts_ns


def syn(c, s, cport, sport, t, seq=1000):
    return (D(t), g.ip(c, s) / TCP(sport=cport, dport=sport, flags="S", seq=seq))


def rst(src, dst, sport, dport, t, seq=0, ack=0, flags="RA"):
    return (D(t), g.ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack))


def data(src, dst, sport, dport, t, seq, ack, payload=b"old-stream-data"):
    return (D(t), g.ip(src, dst) / TCP(sport=sport, dport=dport, flags="PA", seq=seq, ack=ack) / Raw(payload))


def udp(src, dst, sport, dport, t, payload):
    return (D(t), g.ip(src, dst) / UDP(sport=sport, dport=dport) / Raw(payload))


# --------------------------------------------------------------------------------------------
# evidence: one capture of every case, each on addresses of its own

#: name -> (records, {(src, dst, proto, port): [(evidence, connections, packets, direction)]})
CASES: dict[str, tuple[list, dict]] = {}


def case(name, records, expected):
    CASES[name] = (records, expected)


def _cases():
    t = T0
    est = g.tcp_session("10.244.0.10", "10.244.1.10", 40001, 8080, t0=t)  # SYN, SYN-ACK, ACK, data, FIN
    case("established", est, {("10.244.0.10", "10.244.1.10", "TCP", 8080): [("established", 1, len(est), {"syn": 1})]})
    case("refused", [syn("10.244.0.11", "10.244.1.11", 40002, 8080, t + 1, seq=500),
                     rst("10.244.1.11", "10.244.0.11", 8080, 40002, t + 1.0004, seq=0, ack=501)],
         {("10.244.0.11", "10.244.1.11", "TCP", 8080): [("refused", 1, 2, {"syn": 1})]})
    case("refused-ipv6", [syn("fd00:10:244::11", "fd00:10:244:1::11", 40002, 443, t + 1, seq=500),
                          rst("fd00:10:244:1::11", "fd00:10:244::11", 443, 40002, t + 1.0004, seq=0, ack=501)],
         {("fd00:10:244::11", "fd00:10:244:1::11", "TCP", 443): [("refused", 1, 2, {"syn": 1})]})
    case("unanswered-syn", [syn("10.244.0.12", "10.244.1.12", 40003, 8080, t + 2 + k, seq=900) for k in (0, 1, 3)],
         {("10.244.0.12", "10.244.1.12", "TCP", 8080): [("unanswered", 1, 3, {"syn": 1})]})
    # An old connection's packet, answered by an RST from the address's new holder. The port
    # heuristic makes the RST's sender the server here ...
    case("stale-server-resets", [data("10.244.0.13", "10.244.1.13", 41000, 8080, t + 3, 7000, 9000),
                                 rst("10.244.1.13", "10.244.0.13", 8080, 41000, t + 3.0003, seq=9000, flags="R")],
         {("10.244.0.13", "10.244.1.13", "TCP", 8080): [("stale", 1, 2, {"port-heuristic": 1})]})
    # ... and here the client: the old server's data reaches a new pod on the client's address.
    case("stale-client-resets", [data("10.244.1.14", "10.244.0.14", 8080, 41001, t + 4, 3000, 4000),
                                 data("10.244.1.14", "10.244.0.14", 8080, 41001, t + 4.2, 3015, 4000),
                                 rst("10.244.0.14", "10.244.1.14", 41001, 8080, t + 4.0003, seq=4000, flags="R")],
         {("10.244.0.14", "10.244.1.14", "TCP", 8080): [("stale", 1, 3, {"port-heuristic": 1})]})
    # Mid-stream, the server's data first (first-packet would guess wrong), data both ways.
    mid = g.tcp_data_exchange("10.244.1.15", "10.244.0.15", 8080, 40005, t0=t + 5, n=4)
    case("server-first-mid-stream", mid,
         {("10.244.0.15", "10.244.1.15", "TCP", 8080): [("established", 1, 4, {"port-heuristic": 1})]})
    # Only the server's side of a connection in the capture (the other direction took another path).
    half = [p for p in g.tcp_session("10.244.0.16", "10.244.1.16", 40006, 5432, t0=t + 6) if p[1].src == "10.244.1.16"]
    case("only-the-server-seen", half,
         {("10.244.0.16", "10.244.1.16", "TCP", 5432): [("established", 1, len(half), {"syn-ack": 1})]})
    # One flow's connections of different evidence: a line each.
    mixed = g.tcp_session("10.244.0.17", "10.244.1.17", 40007, 8080, t0=t + 7)
    mixed += [syn("10.244.0.17", "10.244.1.17", 40008, 8080, t + 8, seq=10),
              rst("10.244.1.17", "10.244.0.17", 8080, 40008, t + 8.0002, ack=11)]
    case("established-and-refused", mixed,
         {("10.244.0.17", "10.244.1.17", "TCP", 8080): [("established", 1, len(mixed) - 2, {"syn": 1}),
                                                        ("refused", 1, 2, {"syn": 1})]})
    udp_answered = g.udp_exchange("10.244.0.20", "10.244.1.20", 40020, 9000, t0=t + 10)
    case("udp-answered", udp_answered,
         {("10.244.0.20", "10.244.1.20", "UDP", 9000): [("answered", 1, 2, {"port-heuristic": 1})]})
    case("udp-repeated", [udp("10.244.0.21", "10.244.1.21", 40021, 9000, t + 11, b"hello-1"),
                          udp("10.244.0.21", "10.244.1.21", 40021, 9000, t + 12, b"hello-2")],
         {("10.244.0.21", "10.244.1.21", "UDP", 9000): [("repeated", 1, 2, {"port-heuristic": 1})]})
    case("udp-unanswered", [udp("10.244.0.22", "10.244.1.22", 40022, 9000, t + 13, b"hello")],
         {("10.244.0.22", "10.244.1.22", "UDP", 9000): [("unanswered", 1, 1, {"port-heuristic": 1})]})
    # The server answers from the well-known port: the answer alone is answered traffic.
    case("udp-only-the-answer", [udp("10.244.1.23", "10.244.0.23", 9000, 40023, t + 14, b"late-answer")],
         {("10.244.0.23", "10.244.1.23", "UDP", 9000): [("answered", 1, 1, {"port-heuristic": 1})]})
    case("icmp-echo-answered", g.icmp_echo("10.244.0.24", "10.244.1.24", ident=7, t0=t + 15),
         {("10.244.0.24", "10.244.1.24", "ICMP", None): [("answered", 1, 4, {"icmp-echo": 1})]})
    pings = [(D(t + 17 + k), g.ip("10.244.0.25", "10.244.1.25") / ICMP(type=8, id=9, seq=k) / Raw(b"ping" * 4))
             for k in (1, 2, 3)]
    case("icmp-echo-repeated", pings, {("10.244.0.25", "10.244.1.25", "ICMP", None): [("repeated", 1, 3, {"icmp-echo": 1})]})
    case("sctp-answered", g.sctp_init("10.244.0.26", "10.244.1.26", 40026, 38412, t0=t + 20),
         {("10.244.0.26", "10.244.1.26", "SCTP", 38412): [("answered", 1, 2, {"sctp-init": 1})]})


_cases()


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """The log of all cases, from `netpol-learn capture` in a fresh process, per engine (each
    engine with another hash seed): engine -> (bytes, flow lines)."""
    d = tmp_path_factory.mktemp("evidence")
    path = g.write_pcap(d / "cases.pcap", g.by_time([r for records, _ in CASES.values() for r in records]))
    out = {}
    for engine, seed in zip(CAPTURE_ENGINES, SEEDS):
        log = d / f"{engine}.jsonl"
        result = netpol_learn(["capture", path, "-o", log], seed, engine=engine)
        assert result.returncode == 0, result.stderr
        flows = read_flow_log(log).flows
        out[engine] = (log.read_bytes(), flows)
    return out


@pytest.mark.parametrize("engine", CAPTURE_ENGINES)
@pytest.mark.parametrize("name", list(CASES))
def test_evidence(captured, engine, name):
    _, expected = CASES[name]
    flows = captured[engine][1]
    for key, lines in expected.items():
        got = [(f.evidence, f.connections, f.packets, dict(f.direction)) for f in flows
               if (f.src, f.dst, f.proto, f.port) == key]
        assert got == lines, (name, key)


@pytest.mark.parametrize("engine", CAPTURE_ENGINES)
def test_the_cases_are_all_the_flows(captured, engine):
    """No flow line besides the cases' (no side of a case taken for a flow of its own)."""
    expected = sorted((*key, line[0]) for _, exp in CASES.values() for key, lines in exp.items() for line in lines)
    flows = captured[engine][1]
    assert sorted((f.src, f.dst, f.proto, f.port, f.evidence) for f in flows) == expected
    assert all(e in EVIDENCE for *_, e in expected)


def test_both_engines_write_the_same_bytes(captured):
    logs = {engine: raw for engine, (raw, _) in captured.items()}
    assert len(set(logs.values())) == 1, list(logs)


def test_the_log_says_evidence_and_runs(captured):
    raw = captured[CAPTURE_ENGINES[0]][0].decode()
    line = next(line for line in raw.splitlines() if '"10.244.1.11"' in line)
    assert '"evidence": "refused"' in line
    assert f'"runs": [["{g.iso(T0 + 1)}", "{g.iso(T0 + 1.0004)}", 1]]' in line


# --------------------------------------------------------------------------------------------
# evidence as a pure function, and carried through NAT views


def test_decide_evidence_every_rule():
    """(protocol, client sent, server sent, client SYN, client packets) -> evidence, with side A as
    the client and with side B as the client."""
    P, R = _table.SENT_PLAIN, _table.SENT_RST
    cases = [
        (6, P, P, True, 3, "established"),  # SYN, SYN-ACK
        (6, P, P | R, True, 3, "established"),  # accepted, then reset
        (6, 0, P, False, 0, "established"),  # only the server's packets seen
        (6, P | R, P, False, 2, "established"),  # the client's data and its RST
        (6, R, P, False, 1, "stale"),  # the client answers the server's data with RSTs only
        (6, R, P | R, True, 1, "stale"),
        (6, P, R, True, 2, "refused"),  # SYN -> RST
        (6, P | R, R, True, 3, "refused"),
        (6, P, R, False, 1, "stale"),  # data -> RST, no SYN
        (6, 0, R, False, 0, "stale"),  # a lone RST from the server
        (6, R, 0, False, 1, "stale"),  # a lone RST from the client
        (6, P, 0, True, 3, "unanswered"),  # SYNs, nothing back
        (6, P, 0, False, 1, "unanswered"),
        (17, P, P, False, 1, "answered"),
        (17, 0, P, False, 0, "answered"),
        (17, P, 0, False, 2, "repeated"),
        (17, P, 0, False, 1, "unanswered"),
        (1, P, P, False, 1, "answered"),
        (58, P, 0, False, 5, "repeated"),
        (132, P, P, False, 1, "answered"),
        (50, P, 0, False, 1, "unanswered"),
    ]
    for client_a in (True, False):
        proto = np.array([c[0] for c in cases], dtype=np.int64)
        c_sent = np.array([c[1] for c in cases], dtype=np.int64)
        s_sent = np.array([c[2] for c in cases], dtype=np.int64)
        c_syn = np.array([c[3] for c in cases]) * 1
        c_packets = np.array([c[4] for c in cases], dtype=np.int64)
        s_packets = np.where(s_sent != 0, 2, 0)
        # the client's byte of the direction evidence: its SYN, and the server's SYN-ACK where it sent one
        client_ev = c_syn * EV_SYN | np.where((proto == 6) & (s_sent & P != 0), EV_SYNACK, 0)
        if client_a:
            sent, ev, a_packets = c_sent | (s_sent << 2), client_ev, c_packets
        else:
            sent, ev, a_packets = s_sent | (c_sent << 2), client_ev << 8, s_packets
        got = _evidence.decide_evidence(proto, ev, sent, c_packets + s_packets, a_packets,
                                        np.full(len(cases), client_a))
        assert [EVIDENCE[i] for i in got] == [c[5] for c in cases], client_a


def _two_row_table(sent, a_packets, packets, ev):
    t = {k: np.zeros(2, dtype=np.int64) for k in _table.CONN_FIELDS}
    for k in ("key", "a_hi", "a_lo", "b_hi", "b_lo"):
        t[k] = np.zeros(2, dtype=np.uint64)
    t["key"] = np.array([1, 2], dtype=np.uint64)
    t["first"] = np.array([10, 20], dtype=np.int64)
    t["last"] = np.array([30, 40], dtype=np.int64)
    t["sent"], t["a_packets"] = np.array(sent, dtype=np.int64), np.array(a_packets, dtype=np.int64)
    t["packets"], t["ev"] = np.array(packets, dtype=np.int64), np.array(ev, dtype=np.int64)
    t["first_from_a"] = np.array([True, True])
    return t


@pytest.mark.parametrize("same", [True, False])
def test_joined_views_carry_what_each_side_sent(same):
    """A view whose sides are the other way round (``same`` False) gives its side A's sends and
    packets to the joined connection's side B."""
    # row 0: side A sent 3 packets (no RST); row 1: side A sent 2 packets, one an RST, side B 1
    t = _two_row_table(sent=[1, 1 | 2 | 4], a_packets=[3, 2], packets=[3, 3], ev=[1, 2 << 8])
    alive = np.ones(2, dtype=bool)
    views = {1: (0, 0, 0, 0, 0, 0), 2: (0, 0, 0, 0, 0, 0)}
    _dedup.join_views(t, alive, {(1, 2, same)}, views)
    assert alive.tolist() == [True, False]
    if same:
        assert (t["sent"][0], t["a_packets"][0], t["ev"][0]) == (1 | 2 | 4, 5, 1 | (2 << 8))
    else:
        assert (t["sent"][0], t["a_packets"][0], t["ev"][0]) == (1 | 1 | 4 | 8, 4, 1 | 2)
    assert (t["packets"][0], t["last"][0]) == (6, 40)


@pytest.mark.usefixtures("capture_engine")
@pytest.mark.parametrize("answer", ["established", "refused"])
def test_half_views_through_nat_keep_the_servers_answer(tmp_path, answer):
    """A host-network client to a ClusterIP on a node's loopback: the client's packets are seen
    only after DNAT, the answers only before (their sides the other way round in the table): the
    joined connection is the server's answer, established or refused."""
    client, cluster_ip, backend = "172.18.0.2", "10.96.0.1", "172.18.0.3"
    if answer == "established":
        orig = g.tcp_session(client, cluster_ip, 45000, 443)
    else:
        orig = [syn(client, cluster_ip, 45000, 443, T0, seq=1000), rst(cluster_ip, client, 443, 45000, T0 + 0.001, ack=1001)]
    dnat = g.nat_view(orig, client, cluster_ip, 45000, 443, new_server=backend, new_sport=6443, delay=0)
    recs = [(d[0], d[1]) if o[1].src == client else o for o, d in zip(orig, dnat)]
    log = capture_file(g.write_pcap(tmp_path / "c.pcap", recs))
    assert [(f.src, f.dst, f.port, f.evidence, f.connections, f.packets, dict(f.direction)) for f in log.flows] == [
        (client, backend, 6443, answer, 1, len(orig), {"syn": 1})]
    assert [(t.src, t.dst, t.port) for t in log.flows[0].translated] == [(client, cluster_ip, 443)]


# --------------------------------------------------------------------------------------------
# runs


def _runs_of(log, dst):
    flows = [f for f in log.flows if f.dst == dst]
    assert len(flows) == 1, flows
    return flows[0]


def _last(records):
    return max(D(r[0]) for r in records)


@pytest.mark.usefixtures("capture_engine")
def test_two_bursts_ten_minutes_apart_are_two_runs(tmp_path):
    burst1 = [g.tcp_session("10.244.0.30", "10.244.1.30", 41000 + k, 8080, t0=T0 + 5 * k) for k in range(3)]
    burst2 = [g.tcp_session("10.244.0.30", "10.244.1.30", 42000 + k, 8080, t0=T0 + 600 + 5 * k) for k in range(2)]
    recs = [r for s in burst1 + burst2 for r in s]
    f = _runs_of(capture_file(g.write_pcap(tmp_path / "c.pcap", g.by_time(recs))), "10.244.1.30")
    assert f.runs == ((ns(T0), ns(_last(burst1[-1])), 3), (ns(T0 + 600), ns(_last(burst2[-1])), 2))
    assert (f.connections, f.first_seen, f.last_seen, f.evidence) == (5, ns(T0), ns(_last(burst2[-1])), "established")


@pytest.mark.usefixtures("capture_engine")
def test_a_connection_every_30_seconds_for_an_hour_is_one_run(tmp_path):
    sessions = [g.udp_exchange("10.244.0.31", "10.244.1.31", 30000 + k, 9000, t0=T0 + 30 * k, request=b"q%d" % k)
                for k in range(120)]
    recs = [r for s in sessions for r in s]
    f = _runs_of(capture_file(g.write_pcap(tmp_path / "c.pcap", recs)), "10.244.1.31")
    assert f.runs == ((ns(T0), ns(_last(sessions[-1])), 120),)
    assert ns(_last(sessions[-1])) - ns(T0) > 3500 * 10**9


def _long_connection(c, s, cport, sport, t0, seconds, every):
    """A TCP connection open for ``seconds``: handshake, a request and its answer every ``every``
    seconds, FIN."""
    recs = g.tcp_session(c, s, cport, sport, t0=t0, fin=False)
    cseq, sseq = 2000, 6000
    for k in range(1, int(seconds // every) + 1):
        at = t0 + k * every
        recs.append(data(c, s, cport, sport, at, cseq + k * 10, sseq + k * 10, b"req"))
        recs.append(data(s, c, sport, cport, at + 0.001, sseq + k * 10, cseq + k * 10 + 3, b"answer"))
    recs.append((D(t0 + seconds + 1), g.ip(c, s) / TCP(sport=cport, dport=sport, flags="FA", seq=9, ack=9)))
    recs.append((D(t0 + seconds + 1.001), g.ip(s, c) / TCP(sport=sport, dport=cport, flags="FA", seq=9, ack=10)))
    return recs


@pytest.mark.usefixtures("capture_engine")
def test_a_long_connection_covering_later_short_ones_is_one_run(tmp_path):
    """The short connections start long after the one before them ended, but inside the long one:
    one run (the run's end is the latest end so far, not the previous connection's)."""
    c, s = "10.244.0.32", "10.244.1.32"
    long = _long_connection(c, s, 43000, 8080, T0, 1800, 300)
    shorts = [g.tcp_session(c, s, 43001, 8080, t0=T0 + 700), g.tcp_session(c, s, 43002, 8080, t0=T0 + 1500)]
    # after the long one's end: exactly RUN_GAP later still joins; a microsecond more starts a new run
    end = _last(long)
    joins = g.tcp_session(c, s, 43003, 8080, t0=end + Decimal(RUN_GAP) / 10**9)
    apart = g.tcp_session(c, s, 43004, 8080, t0=_last(joins) + Decimal(RUN_GAP) / 10**9 + Decimal("0.000001"))
    recs = long + [r for x in shorts + [joins, apart] for r in x]
    f = _runs_of(capture_file(g.write_pcap(tmp_path / "c.pcap", g.by_time(recs))), s)
    assert f.runs == ((ns(T0), ns(_last(joins)), 4), (ns(apart[0][0]), ns(_last(apart)), 1))
    assert f.runs == merge_runs([(ns(x[0][0]), ns(_last(x)), 1) for x in [long, *shorts, joins, apart]])


# --------------------------------------------------------------------------------------------
# properties: runs are merge_runs of the connections; two files captured = their logs merged

SERVERS = ("10.244.1.40", "10.244.1.41", "fd00:10:244:1::42")

#: (server, start in 10 s steps, duration s, answered): durations around RUN_GAP and steps of 10 s
#: make connections meet exactly at the gap's edge.
connection = st.tuples(st.sampled_from(range(len(SERVERS))), st.integers(0, 60),
                       st.sampled_from([0, 1, 10, 60, 110, 119, 120, 121, 300]), st.booleans())


def _connection_records(i, server, start, duration, answered):
    """Connection ``i`` over UDP: a request at ``start`` and the answer (``answered``) or the
    request again (repeated; none when ``duration`` is 0: unanswered) ``duration`` s later."""
    c = "fd00:10:244::40" if ":" in server else "10.244.0.40"
    t0 = T0 + 10 * start
    recs = [udp(c, server, 20000 + i, 9000, t0, b"request-%d" % i)]
    if answered:
        recs.append(udp(server, c, 9000, 20000 + i, t0 + duration + Decimal("0.0005"), b"answer-%d" % i))
    elif duration:
        recs.append(udp(c, server, 20000 + i, 9000, t0 + duration, b"again-%d" % i))
    evidence = "answered" if answered else "repeated" if duration else "unanswered"
    return recs, evidence


@pytest.mark.usefixtures("capture_engine")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(conns=st.lists(connection, min_size=1, max_size=25), in_b=st.lists(st.booleans(), min_size=25, max_size=25),
       chunk=st.sampled_from([3, 32768]))
def test_runs_are_merge_runs_and_two_files_merge_like_one(tmp_path_factory, conns, in_b, chunk):
    d = tmp_path_factory.mktemp("prop")
    expected: dict[tuple, list] = {}
    files: dict[bool, list] = {False: [], True: []}
    for i, (srv, start, duration, answered) in enumerate(conns):
        recs, evidence = _connection_records(i, SERVERS[srv], start, duration, answered)
        files[in_b[i]] += recs
        expected.setdefault((SERVERS[srv], evidence), []).append((ns(recs[0][0]), ns(_last(recs)), 1))
    every = g.write_pcap(d / "all.pcap", g.by_time(files[False] + files[True]))
    paths = [g.write_pcap(d / f"{name}.pcap", g.by_time(files[b])) for name, b in (("a", False), ("b", True)) if files[b]]
    saved, _files.CHUNK_PACKETS = _files.CHUNK_PACKETS, chunk
    try:
        one = capture_file(every)
        both = capture_files(paths)
        logs = [capture_file(p) for p in paths]
    finally:
        _files.CHUNK_PACKETS = saved
    got = {(f.dst, f.evidence): f for f in one.flows}
    assert sorted(got) == sorted(expected)
    for key, runs in expected.items():
        f = got[key]
        assert f.runs == merge_runs(runs), key
        assert (f.connections, f.first_seen, f.last_seen) == (len(runs), min(r[0] for r in runs), max(r[1] for r in runs))
    # capturing the two files = merging their two logs, written and read back = one file of both
    for i, log in enumerate(logs):
        write_flow_log(log, d / f"log{i}.jsonl")
    merged = merge_logs(read_flow_log(d / f"log{i}.jsonl") for i in range(len(logs)))
    assert both.flows == merged.flows == one.flows
