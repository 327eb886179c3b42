"""The columnar ``DnsCounter`` against the per-message accumulation it replaced, as the oracle.

``DnsCounter.observations`` turns the counted (message, sender, receiver) rows into DNS lines
with numpy grouping. Before that it walked the rows in Python: per parsed message, a ``DnsAcc``
per (client, resolver, qname, qtype), the client being whoever sent the query; the accumulators
became observations, redirected (NAT views) and merged with ``merge_dns``. ``reference`` below is
that former algorithm; the tests compare the two, line for line, on seeded random counters (fed
as ``feed`` fills them after parsing), on packets read from synthetic captures (through
``DnsCounter.feed`` and through the whole ``Aggregator``), and on the repository's captures.

Also here: ``Aggregator.result`` builds its log without ``merge_logs`` on the claim that its flows
are distinct and sorted and its DNS lines distinct; ``merge_logs([log]) == log`` checks it on
every capture the other tests read.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g
import pcapgen_busy
from pcapgen import T0

from netpol_learn._capture import (
    DEFAULT_DEDUP_WINDOW,
    Aggregator,
    _dns,
    capture_file,
    decode,
)
from netpol_learn._capture import _decode as d
from netpol_learn._capture._addresses import AddressNames
from netpol_learn._capture._dns import DnsMessage
from netpol_learn._capture._dnscount import DnsAcc, DnsCounter
from netpol_learn._capture._files import read_chunks
from netpol_learn._capture._table import group
from netpol_learn._flowlog import dns_sort_key, merge_dns, merge_logs

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted(p for p in (ROOT / "captures").rglob("*") if p.suffix in (".pcap", ".pcapng"))
COLUMNS = ("msg", "src_hi", "src_lo", "dst_hi", "dst_lo", "count", "first", "last")


# --- the oracle: the former per-message accumulation ---------------------------------------


def reference(rows, messages, redirect):
    """The former ``DnsCounter.observations``: ``rows`` are (msg, src_hi, src_lo, dst_hi, dst_lo,
    count, first, last) of Python ints, ``messages[msg]`` is (over TCP, parsed messages; () when
    malformed). Its lines sorted by ``dns_sort_key``, and the malformed count."""
    accs = {}
    malformed = 0
    for msg_id, s_hi, s_lo, d_hi, d_lo, count, t0, t1 in rows:
        is_tcp, msgs = messages[msg_id]
        if not msgs:
            malformed += count
            continue
        src, dst = (s_hi, s_lo), (d_hi, d_lo)
        for msg in msgs:
            c, srv = (dst, src) if msg.response else (src, dst)
            acc = accs.get((c, srv, msg.qname, msg.qtype))
            if acc is None:
                acc = accs[(c, srv, msg.qname, msg.qtype)] = DnsAcc(first=t0, last=t1)
            acc.first, acc.last = min(acc.first, t0), max(acc.last, t1)
            acc.transports.add("tcp" if is_tcp else "udp")
            if msg.response:
                acc.responses += count
                acc.rcodes.add(msg.rcode)
                for name, typ, value, ttl in msg.answers:
                    acc.answer(name, typ, value, ttl)
            else:
                acc.queries += count
    names = AddressNames()
    merged = {}
    for key in sorted(accs):
        c, s, qname, qtype = key
        c2, s2 = redirect.get((c, s), (c, s))
        obs = accs[key].observation(names(*c2), names(*s2), qname, qtype)
        merged[obs.key] = merge_dns(merged[obs.key], obs) if obs.key in merged else obs
    return sorted(merged.values(), key=dns_sort_key), malformed


def counted(counter: DnsCounter, redirect) -> tuple[list, int]:
    out, malformed = counter.observations(redirect)
    return sorted(out, key=dns_sort_key), malformed


def assert_same(got, want):
    """Line by line, so that a failure names the first line that differs."""
    (got_lines, got_malformed), (want_lines, want_malformed) = got, want
    assert got_malformed == want_malformed
    assert [o.key for o in got_lines] == [o.key for o in want_lines]
    for a, b in zip(got_lines, want_lines):
        assert a == b
    assert got_lines == want_lines


# --- random counters -----------------------------------------------------------------------


def v4(text: str) -> tuple[int, int]:
    return 0, (0xFFFF << 32) | int(ipaddress.IPv4Address(text))


def v6(text: str) -> tuple[int, int]:
    n = int(ipaddress.IPv6Address(text))
    return n >> 64, n & ((1 << 64) - 1)


def address(text: str) -> tuple[int, int]:
    return v6(text) if ":" in text else v4(text)


# IPv4-mapped and IPv6 (high halves with the top bit set too: uint64, not int64).
ADDRESSES = [v4(a) for a in ("10.244.0.5", "10.244.0.6", "10.244.1.7", "10.96.0.10", "10.244.0.3", "169.254.20.10")]
ADDRESSES += [v6(a) for a in ("fd00:10:244::5", "fd00:10:96::a", "2001:db8::53", "ffff:ffff::1", "::2")]
QUESTIONS = [(n, t) for n in ("api.example.com", "kubernetes.default.svc.cluster.local", "x.example.org", "")
             for t in ("A", "AAAA", "SRV", "TYPE99")]
RCODES = ["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "7"]
TTLS = [0, 5, 30, 60, 300, 4294967295]


def answer_pool(qname: str) -> list[tuple[str, str, str]]:
    return [(qname, "A", "192.0.2.1"), (qname, "A", "192.0.2.2"), (qname, "AAAA", "2001:db8::42"),
            (qname, "CNAME", "real.example.net"), ("real.example.net", "A", "198.51.100.7")]


def random_message(rng: random.Random, response: bool | None = None, question=None) -> DnsMessage:
    qname, qtype = question or rng.choice(QUESTIONS)
    if response is None:
        response = rng.random() < 0.55
    # A query's rcode and answers must not count: give some queries either.
    rcode = rng.choice(RCODES) if response or rng.random() < 0.2 else "NOERROR"
    answers = ()
    if response or rng.random() < 0.1:
        pool = answer_pool(qname)
        answers = tuple((*rng.choice(pool), rng.choice(TTLS)) for _ in range(rng.choice((0, 1, 1, 2, 3, 5))))
    return DnsMessage(response=response, rcode=rcode, qname=qname, qtype=qtype, answers=answers)


def random_messages(rng: random.Random, n: int) -> list[tuple[bool, tuple]]:
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.1:
            out.append((rng.random() < 0.5, ()))  # malformed
        elif kind < 0.65:
            out.append((False, (random_message(rng),)))
        elif kind < 0.8 and out:
            out.append(rng.choice(out))  # another message id that parses the same
        else:
            # A TCP segment of several messages: query and response, or different questions.
            q = rng.choice(QUESTIONS)
            msgs = [random_message(rng, question=q if rng.random() < 0.5 else None) for _ in range(rng.randint(1, 4))]
            out.append((True, tuple(msgs)))
    return out


def random_rows(rng: random.Random, messages, nrows: int, npairs: int, t0: int) -> list[tuple]:
    pairs = [tuple(rng.sample(ADDRESSES, 2)) for _ in range(npairs)]
    rows = []
    for _ in range(nrows):
        msg = rng.randrange(len(messages))
        client, resolver = rng.choice(pairs)
        msgs = messages[msg][1]
        # A response is sent by the resolver; now and then either way round.
        src, dst = (resolver, client) if msgs and msgs[0].response else (client, resolver)
        if rng.random() < 0.1:
            src, dst = dst, src
        first = t0 + rng.randrange(10**10)
        last = first + rng.choice((0, 0, rng.randrange(10**9)))
        count = rng.choice((1, 1, 1, 2, 3, rng.randrange(1, 10**6)))
        rows.append((msg, *src, *dst, count, first, last))
    return rows


def random_redirect(rng: random.Random, rows, messages) -> dict:
    """Some (client, resolver) pairs of ``rows`` mapped onto other pairs of ``rows`` (so lines
    merge), onto themselves, or onto new ones; and a pair that never occurs."""
    seen = set()
    for msg, s_hi, s_lo, d_hi, d_lo, *_ in rows:
        for m in messages[msg][1]:
            seen.add(((d_hi, d_lo), (s_hi, s_lo)) if m.response else ((s_hi, s_lo), (d_hi, d_lo)))
    seen = sorted(seen)
    redirect = {}
    if not seen or rng.random() < 0.25:
        return redirect
    for pair in rng.sample(seen, rng.randint(1, len(seen))):
        r = rng.random()
        if r < 0.7:
            redirect[pair] = rng.choice(seen)
        elif r < 0.85:
            redirect[pair] = pair
        else:
            redirect[pair] = tuple(rng.sample(ADDRESSES, 2))
    redirect[((1, 2), (3, 4))] = seen[0]
    return redirect


def table(rows) -> dict[str, np.ndarray]:
    """Rows as a chunk of ``feed``: (message, sender, receiver) counted."""
    cols = {k: np.array([r[i] for r in rows], dtype=np.uint64 if k.endswith(("_hi", "_lo")) else np.int64)
            for i, k in enumerate(COLUMNS)}
    t = {"key": d.mix(cols["msg"], cols["src_hi"], cols["src_lo"], cols["dst_hi"], cols["dst_lo"]), **cols}
    return group(t, sums=("count",), mins=("first",), maxs=("last",))


def fill(counter: DnsCounter, messages, rows, rng: random.Random) -> list[tuple]:
    """What ``feed`` leaves in ``counter`` after parsing ``messages`` and counting ``rows``: the
    rows in a few chunks (a (message, sender, receiver) may recur in several, and some rows are
    counted twice), some of them already merged into the table. The rows counted."""
    for is_tcp, msgs in messages:
        counter._add_message(msgs, is_tcp)
    rows = rows[:]
    rng.shuffle(rows)
    if len(rows) > 1 and rng.random() < 0.5:
        rows += rng.sample(rows, rng.randint(1, len(rows) // 2 + 1))  # the same rows again, later
    cuts = sorted(rng.sample(range(1, len(rows)), min(len(rows) - 1, rng.randint(0, 4)))) if len(rows) > 1 else []
    chunks = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)])]
    for chunk in chunks:
        counter.pending.append(table(chunk))
        counter.pending_rows += len(counter.pending[-1]["key"])
        if rng.random() < 0.3:
            counter._flush()
    return rows


def random_case(seed: int):
    rng = random.Random(seed)
    messages = random_messages(rng, rng.randint(1, 25))
    rows = random_rows(rng, messages, rng.randint(1, 120), rng.randint(1, 6), 1748772000 * 10**9)
    return rng, messages, rows, random_redirect(rng, rows, messages)


@pytest.mark.parametrize("block", range(10))
def test_random_counters_match_the_former_accumulation(block):
    for seed in range(block * 40, block * 40 + 40):
        rng, messages, rows, redirect = random_case(seed)
        counter = DnsCounter()
        rows = fill(counter, messages, rows, rng)
        assert_same(counted(counter, redirect), reference(rows, messages, redirect))


def test_the_random_cases_cover_what_they_should():
    """The random cases hold what the comparison is about (else it would prove little)."""
    seen = set()
    for seed in range(400):
        _, messages, rows, redirect = random_case(seed)
        lines, malformed = reference(rows, messages, redirect)
        seen.add("malformed" if malformed else "")
        seen.add("redirect" if redirect else "")
        ids = {r[0] for r in rows}
        if any(len(messages[m][1]) > 1 for m in ids):
            seen.add("segments")
        if any({x.response for x in messages[m][1]} == {False, True} for m in ids):
            seen.add("query and response in a segment")
        for o in lines:
            seen.add(("transports", o.transports))
            seen.add("several rcodes" if len(o.rcodes) > 1 else "")
            seen.add("queries and responses" if o.queries and o.responses else "")
            if len({(a.name, a.type, a.data) for a in o.answers}) > 1:
                seen.add("answer sets")
            seen.add("v4" if "." in o.client else "v6")
        # A redirect that merges lines: two pairs redirected onto the same one.
        targets = [redirect.get(p, p) for p in {(k[0], k[1]) for k in _keys(rows, messages)}]
        if len(targets) > len(set(targets)):
            seen.add("merged by redirect")
    assert {"malformed", "redirect", "segments", "query and response in a segment", ("transports", ("tcp", "udp")),
            ("transports", ("tcp",)), ("transports", ("udp",)), "several rcodes", "queries and responses",
            "answer sets", "v4", "v6", "merged by redirect"} <= seen


def _keys(rows, messages):
    for msg, s_hi, s_lo, d_hi, d_lo, *_ in rows:
        for m in messages[msg][1]:
            c, s = ((d_hi, d_lo), (s_hi, s_lo)) if m.response else ((s_hi, s_lo), (d_hi, d_lo))
            yield c, s, m.qname, m.qtype


# --- hand-made counters --------------------------------------------------------------------

T = 1748772000 * 10**9
POD, POD6, SVC, COREDNS, SVC6 = v4("10.244.0.5"), v6("fd00:10:244::5"), v4("10.96.0.10"), v4("10.244.0.3"), v6("fd00:10:96::a")


def ans(name, typ, value, ttl):
    return (name, typ, value, ttl)


Q = DnsMessage(False, "NOERROR", "svc.example.com", "A", ())
R1 = DnsMessage(True, "NOERROR", "svc.example.com", "A",
                (ans("svc.example.com", "A", "192.0.2.5", 30), ans("svc.example.com", "A", "192.0.2.6", 60)))
R2 = DnsMessage(True, "NOERROR", "svc.example.com", "A",
                (ans("svc.example.com", "A", "192.0.2.5", 300), ans("svc.example.com", "A", "192.0.2.7", 5),
                 ans("svc.example.com", "A", "192.0.2.6", 10)))
NX = DnsMessage(True, "NXDOMAIN", "svc.example.com", "A", ())
Q6 = DnsMessage(False, "NOERROR", "svc.example.com", "AAAA", ())
R6 = DnsMessage(True, "NOERROR", "svc.example.com", "AAAA", (ans("svc.example.com", "AAAA", "2001:db8::5", 20),))

MESSAGES = [
    (False, (Q,)),          # 0
    (False, (R1,)),         # 1
    (False, (R2,)),         # 2
    (False, (NX,)),         # 3
    (True, (Q, Q6)),        # 4: two questions in one segment
    (True, (R2, R6)),       # 5
    (True, (Q, R1)),        # 6: a query and a response in one segment
    (False, ()),            # 7: malformed
    (True, ()),             # 8: malformed
    (False, (Q6,)),         # 9
    (False, (R6,)),         # 10
]
ROWS = [
    (0, *POD, *SVC, 3, T + 10, T + 50),
    (1, *SVC, *POD, 1, T + 11, T + 11),
    (2, *SVC, *POD, 2, T + 20, T + 60),
    (3, *SVC, *POD, 1, T + 5, T + 5),
    (4, *POD, *SVC, 1, T + 70, T + 70),
    (5, *SVC, *POD, 1, T + 71, T + 71),
    (6, *POD, *SVC, 1, T + 80, T + 80),
    (7, *POD, *SVC, 4, T + 1, T + 2),
    (8, *SVC, *POD, 1, T + 3, T + 3),
    (0, *POD, *COREDNS, 1, T + 1, T + 1),    # the NAT view: the resolver pod
    (2, *COREDNS, *POD, 1, T + 100, T + 100),
    (9, *POD6, *SVC6, 2, T + 7, T + 9),
    (10, *SVC6, *POD6, 2, T + 8, T + 90),
]


def hand_counter(rows=ROWS, messages=MESSAGES, chunks=1) -> DnsCounter:
    counter = DnsCounter()
    for is_tcp, msgs in messages:
        counter._add_message(msgs, is_tcp)
    for k in range(chunks):
        counter.pending.append(table(rows[k::chunks]))
    return counter


def test_an_empty_counter():
    assert DnsCounter().observations({}) == ([], 0)
    counter = DnsCounter()
    counter._add_message((Q,), False)  # parsed, never counted
    assert counter.observations({((0, 1), (0, 2)): ((0, 3), (0, 4))}) == ([], 0)


def test_observations_end_the_counting():
    """``observations`` frees what only feeding needs: a second call gives the same lines, and
    feeding afterwards is an error, not lines silently lost."""
    counter = hand_counter()
    first = counted(counter, {})
    assert first[0] and counted(counter, {}) == first
    with pytest.raises(RuntimeError, match="after observations"):
        counter.feed(b"", None, np.zeros(0, dtype=np.int64))


def test_only_malformed_messages():
    rows = [r for r in ROWS if r[0] in (7, 8)]
    assert counted(hand_counter(rows), {}) == ([], 5) == reference(rows, MESSAGES, {})


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("redirected", [False, True])
def test_hand_made_counter(chunks, redirected):
    redirect = {(POD, COREDNS): (POD, SVC)} if redirected else {}
    got = counted(hand_counter(chunks=chunks), redirect)
    assert_same(got, reference(ROWS, MESSAGES, redirect))
    lines, malformed = got
    assert malformed == 5
    line = {o.key: o for o in lines}[("10.244.0.5", "10.96.0.10", "svc.example.com", "A")]
    # Queries: 3 + 1 (segment 4) + 1 (segment 6), and the view's 1 when redirected; responses
    # 1 + 2 + 1 + 1 (segment 5), and the view's (segment 6's response was sent by the client: its
    # line is the other way round).
    assert (line.queries, line.responses) == (5 + redirected, 5 + redirected)
    assert line.rcodes == ("NOERROR", "NXDOMAIN")
    assert line.transports == ("tcp", "udp")
    assert (line.first_seen, line.last_seen) == ((T + 1, T + 100) if redirected else (T + 5, T + 80))
    # The largest TTL of each answer wins.
    assert [(a.data, a.ttl) for a in line.answers] == [("192.0.2.5", 300), ("192.0.2.6", 60), ("192.0.2.7", 5)]
    assert (("10.244.0.5", "10.244.0.3", "svc.example.com", "A") in {o.key for o in lines}) is not redirected
    six = {o.key: o for o in lines}[("fd00:10:244::5", "fd00:10:96::a", "svc.example.com", "AAAA")]
    assert (six.queries, six.responses, six.transports) == (2, 2, ("udp",))
    aaaa = {o.key: o for o in lines}[("10.244.0.5", "10.96.0.10", "svc.example.com", "AAAA")]
    assert (aaaa.queries, aaaa.responses, aaaa.transports, aaaa.rcodes) == (1, 1, ("tcp",), ("NOERROR",))


def test_redirect_onto_a_pair_that_answers_for_another_client():
    """Two views redirected onto one pair, one of them the other way round (the pair's client as
    the view's resolver)."""
    redirect = {(POD, COREDNS): (POD, SVC), (SVC, POD): (POD, SVC), (POD6, SVC6): (POD, SVC)}
    rows = ROWS + [(1, *POD, *SVC, 1, T + 200, T + 200)]  # a response sent by the client
    assert_same(counted(hand_counter(rows, chunks=2), redirect), reference(rows, MESSAGES, redirect))


def test_many_lines():
    """More lines than ``_rows`` converts at a time (65,536)."""
    rng = random.Random(7)
    messages = [(False, (DnsMessage(False, "NOERROR", f"n{i}.example.com", "A", ()),)) for i in range(300)]
    messages += [(False, (DnsMessage(True, "NOERROR", f"n{i}.example.com", "A",
                                     ((f"n{i}.example.com", "A", f"192.0.2.{i % 250}", i),)),)) for i in range(300)]
    clients = [v4(f"10.{a}.{b}.1") for a in range(1, 3) for b in range(120)]
    rows = []
    for c in clients:
        for i in range(0, 300, 1):
            rows.append((i, *c, *SVC, 1, T + i, T + i))
        for i in rng.sample(range(300), 10):
            rows.append((300 + i, *SVC, *c, 2, T + 1000 + i, T + 1000 + i))
    assert len(rows) > 65536 + 1000
    counter = DnsCounter()
    for is_tcp, msgs in messages:
        counter._add_message(msgs, is_tcp)
    counter.pending = [table(rows[:40000]), table(rows[40000:])]
    assert_same(counted(counter, {}), reference(rows, messages, {}))


# --- from packets --------------------------------------------------------------------------

POD_A, POD_B, V6_A, V6_DNS, SVC_DNS, CORE = "10.244.0.5", "10.244.0.6", "fd00:10:244::5", "fd00:10:96::a", "10.96.0.10", "10.244.0.3"


def tcp_dns(client, resolver, cport, t0, queries, responses):
    """A TCP connection whose request segment holds ``queries`` and response segment
    ``responses`` (DNS messages, each behind its length)."""
    seg = lambda ms: b"".join(struct.pack("!H", len(b)) + b for b in map(bytes, ms))
    return g.tcp_session(client, resolver, cport, 53, t0=t0, request=seg(queries), response=seg(responses))


def dns_records() -> list:
    a = [("api.example.com", "A", 60, "192.0.2.10"), ("api.example.com", "A", 30, "192.0.2.11")]
    recs = []
    # The same question asked again and again: answers overlapping, TTLs different.
    for k, ttl in enumerate((60, 300, 5)):
        recs += g.dns_udp(POD_A, SVC_DNS, "api.example.com", "A",
                          [("api.example.com", "A", ttl, "192.0.2.10"), ("api.example.com", "A", 30, f"192.0.2.{20 + k}")],
                          t0=T0 + k, txid=100 + k, cport=40000 + k)
    recs += g.dns_udp(POD_A, SVC_DNS, "api.example.com", "A", a, t0=T0 + 5, txid=100, cport=40000)  # same txid again
    recs += g.dns_udp(POD_B, SVC_DNS, "gone.example.com", "A", [], t0=T0 + 6, txid=7, cport=40100, rcode=3)
    recs += g.dns_udp(POD_B, SVC_DNS, "gone.example.com", "A", [], t0=T0 + 7, txid=8, cport=40101, rcode=2)
    # TCP: the same question as over UDP, and segments of two messages.
    recs += g.dns_tcp(POD_A, SVC_DNS, "api.example.com", "A", a, t0=T0 + 8, cport=41000)
    q = [g.dns_message(9, "api.example.com", "A"), g.dns_message(10, "api.example.com", "AAAA")]
    r = [g.dns_message(9, "api.example.com", "A", True, a),
         g.dns_message(10, "api.example.com", "AAAA", True, [("api.example.com", "AAAA", 40, "2001:db8::10")])]
    recs += tcp_dns(POD_B, SVC_DNS, 41001, T0 + 9, q, r)
    recs += tcp_dns(POD_B, SVC_DNS, 41002, T0 + 10, [q[1], r[0]], [r[1]])  # a query and a response in one
    # IPv6.
    recs += g.dns_udp(V6_A, V6_DNS, "v6.example.com", "AAAA", [("v6.example.com", "AAAA", 45, "2001:db8::42")],
                      t0=T0 + 11, cport=42000)
    # Malformed.
    recs += g.raw_dns_udp(POD_A, SVC_DNS, g.dns_pointer_loop_response(), t0=T0 + 12, to_resolver=False)
    recs += g.raw_dns_udp(POD_A, SVC_DNS, b"\x00\x01garbage", t0=T0 + 13)
    recs += g.raw_dns_udp(POD_A, SVC_DNS, g.dns_label_past_end(), t0=T0 + 13.5)
    # The query seen before and after DNAT to the resolver pod, the response only from the pod.
    orig = g.dns_udp(POD_A, SVC_DNS, "nat.example.com", "A", [("nat.example.com", "A", 30, "192.0.2.99")],
                     t0=T0 + 14, txid=55, cport=43000)
    view = g.nat_view(orig, POD_A, SVC_DNS, 43000, 53, new_server=CORE, delay=0.0001)
    recs += [orig[0], view[0], view[1]]
    # And the pod asked directly.
    recs += g.dns_udp(POD_A, CORE, "nat.example.com", "A", [("nat.example.com", "A", 10, "192.0.2.99")],
                      t0=T0 + 15, txid=56, cport=43001)
    return g.by_time(recs)


@pytest.fixture(scope="module")
def dns_pcap(tmp_path_factory):
    return g.write_pcap(tmp_path_factory.mktemp("dns") / "dns.pcap", dns_records())


def parsed(data, start: int, end: int, tcp: bool) -> tuple:
    """The reference parser's messages of a packet's DNS bytes, () when it raises."""
    try:
        body = bytes(data[start:end])
        return tuple(_dns.parse_tcp_segment(body)) if tcp else (_dns.parse(body),)
    except _dns.DnsError:
        return ()


class Recorder:
    """One row and one parsed message per packet a counter is fed (the reference's input)."""

    def __init__(self):
        self.rows, self.messages = [], []

    def add(self, data, p, idx) -> None:
        for i in idx.tolist():
            tcp = bool(p.proto[i] == d.TCP)
            self.messages.append((tcp, parsed(data, int(p.dns_at[i]), int(p.dns_end[i]), tcp)))
            ts = int(p.ts[i])
            self.rows.append((len(self.messages) - 1, int(p.src_hi[i]), int(p.src_lo[i]), int(p.dst_hi[i]),
                              int(p.dst_lo[i]), 1, ts, ts))


@pytest.mark.usefixtures("capture_engine")
def test_fed_packets_match_the_former_accumulation(dns_pcap):
    """``DnsCounter.feed`` on the packets, a few at a time, against the reference fed each packet
    as a row of its own."""
    counter, rec = DnsCounter(), Recorder()
    for chunk in read_chunks(dns_pcap, lambda w: pytest.fail(str(w))):
        p = decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts)
        idx = np.flatnonzero((p.status == d.OK) & (p.dns_at >= 0))
        for part in np.array_split(idx, 5):
            if part.size:
                rec.add(chunk.data, p, part)
                counter.feed(chunk.data, p, part)
    assert len(counter.malformed) < len(rec.messages)  # the same message recurs, parsed once
    for redirect in ({}, {(address(POD_A), address(CORE)): (address(POD_A), address(SVC_DNS)),
                          (address(V6_A), address(V6_DNS)): (address(POD_B), address(SVC_DNS))}):
        got = counted(counter, redirect)
        assert_same(got, reference(rec.rows, rec.messages, redirect))
    lines, malformed = got
    assert malformed == 3
    keys = {o.key: o for o in lines}
    api = keys[(POD_A, SVC_DNS, "api.example.com", "A")]
    assert api.transports == ("tcp", "udp")
    assert ("192.0.2.10", 300) in [(a.data, a.ttl) for a in api.answers]
    assert keys[(POD_B, SVC_DNS, "gone.example.com", "A")].rcodes == ("NXDOMAIN", "SERVFAIL")
    assert keys[(POD_B, SVC_DNS, "api.example.com", "AAAA")].queries == 2  # from two segments


def aggregate(path: Path):
    """``Aggregator`` on a capture, as ``capture_file`` runs it, with what its DNS counter was
    fed recorded, and the redirect it was asked to apply."""
    agg, rec, asked = Aggregator(int(DEFAULT_DEDUP_WINDOW * 1e9)), Recorder(), []
    feed, observations = agg.dns.feed, agg.dns.observations

    def recording_feed(data, p, idx):
        rec.add(data, p, idx)
        feed(data, p, idx)

    def recording_observations(redirect):
        asked.append(dict(redirect))
        return observations(redirect)

    agg.dns.feed, agg.dns.observations = recording_feed, recording_observations
    for chunk in read_chunks(path, lambda w: None):
        agg.feed(chunk.data, decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts))
    log = agg.result(path.name)
    assert len(asked) == 1
    return log, rec, asked[0]


@pytest.mark.usefixtures("capture_engine")
def test_the_aggregator_s_dns_lines_match_the_former_accumulation(dns_pcap):
    log, rec, redirect = aggregate(dns_pcap)
    assert redirect  # the response seen only from the resolver pod
    want, malformed = reference(rec.rows, rec.messages, redirect)
    assert log.dns == tuple(want)
    assert log.stats.get("dns_malformed", 0) == malformed == 3
    assert (address(POD_A), address(CORE)) in redirect
    nat = {o.key: o for o in log.dns}[(POD_A, SVC_DNS, "nat.example.com", "A")]
    assert nat.responses >= 1 and not any(o.resolver == CORE for o in log.dns)
    assert log == capture_file(dns_pcap)


# --- the repository's captures -------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_pcap(tmp_path_factory):
    """The busy node of tests/test_capture_busy_node.py (several chunks, many DNS names)."""
    path = tmp_path_factory.mktemp("busy") / "busy-node.pcap"
    pcapgen_busy.ensure_pcap(path, 40_000)
    return path


def test_there_are_captures():
    names = {p.relative_to(ROOT).as_posix() for p in CAPTURES}
    assert {"captures/guestbook/capture.pcap", "captures/real/dns-over-tcp-srv.pcap",
            "captures/real/kind-antrea-node-any.pcap", "captures/real/antrea-syn-egress.pcapng"} <= names


@pytest.mark.parametrize("name", [p.relative_to(ROOT).as_posix() for p in CAPTURES] + ["busy"])
def test_a_capture_s_log_is_what_merge_logs_makes_of_it(name, request):
    path = request.getfixturevalue("busy_pcap") if name == "busy" else ROOT / name
    log = capture_file(path)
    assert merge_logs([log]) == log
    # And its DNS lines are the former accumulation's.
    agg_log, rec, redirect = aggregate(path)
    assert agg_log == log
    want, malformed = reference(rec.rows, rec.messages, redirect)
    assert log.dns == tuple(want)
    assert log.stats.get("dns_malformed", 0) == malformed


@pytest.mark.parametrize("name", [p.relative_to(ROOT).as_posix() for p in CAPTURES] + ["dns"])
def test_result_leaves_the_connection_table_as_it_was(name, request):
    """``result`` works on the connection table without changing it (joining NAT views, which
    changes the rows it joins, on a copy): a second ``result`` gives the same log."""
    path = request.getfixturevalue("dns_pcap") if name == "dns" else ROOT / name
    agg = Aggregator(int(DEFAULT_DEDUP_WINDOW * 1e9))
    for chunk in read_chunks(path, lambda w: None):
        agg.feed(chunk.data, decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts))
    agg._flush()
    before = {k: v.copy() for k, v in agg.conns.items()}
    log = agg.result(path.name)
    assert all(np.array_equal(before[k], agg.conns[k]) for k in before)
    assert agg.result(path.name) == log
    if name == "dns":
        assert agg.dedup.alias_edges  # the NAT view: the copy is taken
