"""DNS counting: from the DNS messages of the packets to DNS observations.

A busy node repeats the same few thousand questions and answers: each distinct message (its bytes
without the query ID) is parsed once, into numbers (its question, rcode and answer set as indexes
of tables that keep each distinct one once). Per chunk, counting messages by (message, sender,
receiver) is numpy work only (a table like the connection table, batched the same way); at the
end, numpy expands the counted rows to one per parsed message, turns them to (client, resolver),
applies the NAT redirects and groups them into DNS lines. Python work runs once per distinct
message and once per DNS line, never per packet or per counted row (``tests/test_dnscount.py``
holds it to the per-message accumulation it replaced).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from itertools import starmap

import numpy as np

from netpol_learn._capture import _accel
from netpol_learn._capture import _decode as d
from netpol_learn._capture._addresses import AddressNames
from netpol_learn._capture._table import concat, group
from netpol_learn._flowlog import DnsAnswer, DnsObservation, merge_answers

Address = tuple[int, int]


@dataclass
class DnsAcc:
    """What one (client, resolver, qname, qtype) was seen to ask and get: the DNS lines of a
    capture and of Hubble's flow records are counted in these."""

    queries: int = 0
    responses: int = 0
    first: int = 0
    last: int = 0
    answers: dict = field(default_factory=dict)  # (name, type, data) -> the largest TTL
    rcodes: set = field(default_factory=set)
    transports: set = field(default_factory=set)

    def saw(self, at: int, transport: str) -> None:
        self.first, self.last = min(self.first, at), max(self.last, at)
        self.transports.add(transport)

    def answer(self, name: str, typ: str, value: str, ttl: int) -> None:
        k = (name, typ, value)
        if self.answers.get(k, -1) < ttl:
            self.answers[k] = ttl

    def observation(self, client: str, resolver: str, qname: str, qtype: str) -> DnsObservation:
        return DnsObservation(
            client=client, resolver=resolver, qname=qname, qtype=qtype, queries=self.queries, responses=self.responses,
            first_seen=self.first, last_seen=self.last,
            answers=merge_answers(DnsAnswer(n, ty, v, ttl) for (n, ty, v), ttl in self.answers.items()),
            rcodes=tuple(sorted(self.rcodes)), transports=tuple(sorted(self.transports)),
        )


class DnsCounter:
    """The DNS messages of one capture, counted by (message, sender, receiver).

    Each distinct message is parsed once, into numbers: its parsed messages (a TCP segment may
    hold several) are rows of the ``sub_*`` arrays, ``starts[m]:starts[m + 1]`` those of message
    ``m``, with the question, rcode and answer set as indexes into ``questions``, ``rcodes`` and
    ``answer_sets`` (each distinct one kept once, its answers already merged). What is counted
    per chunk is a numpy table; at the end the rows become DNS lines with numpy grouping, and
    Python work runs once per line, not per message or per packet."""

    def __init__(self):
        self.known_hashes = np.zeros(0, dtype=np.uint64)  # sorted: the hash of every message seen ...
        self.known_ids = np.zeros(0, dtype=np.int64)  # ... and its message index
        self.starts = array("q", [0])
        self.malformed = bytearray()  # per message: 1 when it could not be parsed
        self.sub_response, self.sub_tcp = bytearray(), bytearray()
        self.sub_question, self.sub_rcode, self.sub_answers = array("q"), array("q"), array("q")
        self.question_ids: dict[tuple[str, str], int] = {}
        self.questions: list[tuple[str, str]] = []  # (qname, qtype)
        self.rcode_ids: dict[str, int] = {}
        self.rcodes: list[str] = []
        self.answer_ids: dict[tuple, int] = {(): 0}  # answer set 0 is none: ``observations`` skips it
        self.answer_sets: list[tuple[DnsAnswer, ...]] = [()]
        self.table: dict[str, np.ndarray] | None = None
        self.pending: list[dict] = []
        self.pending_rows = 0

    def feed(self, data, p: d.Packets, idx: np.ndarray) -> None:
        """Count the DNS messages of packets ``idx`` of ``p`` (each with ``dns_at >= 0``); not
        after ``observations``."""
        if self.question_ids is None:
            raise RuntimeError("DnsCounter.feed after observations: counting is over")
        tcp = p.proto[idx] == d.TCP
        start, end = p.dns_at[idx], p.dns_end[idx]
        body_hash = d.message_hash(data, start, end, np.where(tcp, start + 2, start))
        body_hash = d.mix(body_hash, tcp)
        uniq, rep, inverse = np.unique(body_hash, return_index=True, return_inverse=True)
        # The messages seen before, looked up in the sorted hashes of all so far; only new ones
        # are parsed, one Python step each.
        if len(self.known_hashes):
            at = np.minimum(np.searchsorted(self.known_hashes, uniq), len(self.known_hashes) - 1)
            seen = self.known_hashes[at] == uniq
            ids = np.where(seen, self.known_ids[at], -1)
        else:
            seen, ids = np.zeros(len(uniq), dtype=bool), np.full(len(uniq), -1, dtype=np.int64)
        new = np.flatnonzero(~seen)
        if new.size:
            ids[new] = np.arange(len(self.malformed), len(self.malformed) + new.size)
            first = rep[new]  # (tcp, start and end are the chunk's, computed above)
            for is_tcp, at_, end_ in zip(tcp[first].tolist(), start[first].tolist(), end[first].tolist()):
                self._add_message(_parse_message(data, at_, end_, is_tcp), is_tcp)
            hashes, known = np.concatenate([self.known_hashes, uniq[new]]), np.concatenate([self.known_ids, ids[new]])
            order = np.argsort(hashes, kind="stable")  # two sorted runs: merged in linear time
            self.known_hashes, self.known_ids = hashes[order], known[order]
        msg = ids[inverse]
        ts = p.ts[idx]
        rows = {
            "key": d.mix(msg, p.src_hi[idx], p.src_lo[idx], p.dst_hi[idx], p.dst_lo[idx]),
            "msg": msg, "src_hi": p.src_hi[idx], "src_lo": p.src_lo[idx], "dst_hi": p.dst_hi[idx], "dst_lo": p.dst_lo[idx],
            "count": np.ones(len(idx), dtype=np.int64), "first": ts, "last": ts,
        }
        self.pending.append(group(rows, sums=("count",), mins=("first",), maxs=("last",)))
        self.pending_rows += len(self.pending[-1]["key"])
        if self.pending_rows > max(65536, len(self.table["key"]) if self.table else 0):
            self._flush()

    def _add_message(self, messages: tuple, is_tcp: bool) -> None:
        self.malformed.append(0 if messages else 1)
        for msg in messages:
            q = self.question_ids.get((msg.qname, msg.qtype))
            if q is None:
                q = self.question_ids[(msg.qname, msg.qtype)] = len(self.questions)
                self.questions.append((msg.qname, msg.qtype))
            rc = self.rcode_ids.get(msg.rcode)
            if rc is None:
                rc = self.rcode_ids[msg.rcode] = len(self.rcodes)
                self.rcodes.append(msg.rcode)
            ans = self.answer_ids.get(msg.answers)
            if ans is None:
                ans = self.answer_ids[msg.answers] = len(self.answer_sets)
                self.answer_sets.append(merge_answers(starmap(DnsAnswer, msg.answers)))
            self.sub_response.append(msg.response)
            self.sub_tcp.append(is_tcp)
            self.sub_question.append(q)
            self.sub_rcode.append(rc)
            self.sub_answers.append(ans)
        self.starts.append(len(self.sub_question))

    def _flush(self) -> None:
        # Batched like the connection table: re-sorting the whole table every chunk would cost
        # more than the chunk itself.
        table = concat([self.table, *self.pending])
        if table is not None:
            self.table = group(table, sums=("count",), mins=("first",), maxs=("last",))
        self.pending, self.pending_rows = [], 0

    def observations(self, redirect: dict[tuple[Address, Address], tuple[Address, Address]]
                     ) -> tuple[list[DnsObservation], int]:
        """The DNS observations counted (one per client, resolver, qname and qtype, in no
        particular order), and how many messages were malformed: at the end, counting is over
        (``feed`` raises afterwards; this gives the same again).

        ``redirect`` maps a (client, resolver) pair seen only on a NAT view to the connection's
        own pair (the earliest view, as the flows report it)."""
        self._flush()
        t = self.table
        if t is None:
            return [], 0
        malformed = int(t["count"][np.frombuffer(self.malformed, dtype=np.uint8)[t["msg"]] == 1].sum())
        # Counting is over (``Aggregator.result`` runs once): what only feeding needs goes before
        # the lines are made, and so do the expanded rows once they are grouped.
        self.known_hashes = self.known_ids = self.question_ids = self.rcode_ids = self.answer_ids = None
        lines = self._lines(t, redirect)
        if lines is None:
            return [], malformed
        names = AddressNames()
        questions, rcodes, answer_sets = self.questions, self.rcodes, self.answer_sets
        rcode_sets = _sets_per_line(lines["line"], lines["rcode"], lines["response"], len(rcodes))
        answer_ids = _sets_per_line(lines["line"], lines["answers"], lines["response"] & (lines["answers"] != 0), len(answer_sets))
        grouped = lines["out"]
        del lines
        transports = {1: ("tcp",), 2: ("udp",), 3: ("tcp", "udp")}
        out = []
        columns = ("c_hi", "c_lo", "r_hi", "r_lo", "question", "queries", "responses", "first", "last", "transport")
        for j, (c_hi, c_lo, r_hi, r_lo, q, queries, responses, first, last, tr) in enumerate(_rows(grouped, columns)):
            qname, qtype = questions[q]
            rc = rcode_sets.get(j, ())
            ans = answer_ids.get(j, ())
            out.append(DnsObservation(
                client=names(c_hi, c_lo), resolver=names(r_hi, r_lo), qname=qname, qtype=qtype, queries=queries,
                responses=responses, first_seen=first, last_seen=last,
                answers=answer_sets[ans[0]] if len(ans) == 1 else merge_answers(a for i in ans for a in answer_sets[i]),
                rcodes=tuple(sorted(rcodes[i] for i in rc)), transports=transports[tr],
            ))
        return out, malformed

    def _lines(self, t: dict[str, np.ndarray], redirect: dict) -> dict | None:
        """The counted rows expanded to one row per parsed message, turned to (client, resolver)
        (the client is whoever sent the query: the destination of a response), redirected, and
        grouped into DNS lines: ``out`` holds a row per line; ``line`` (the line of each
        expanded row), ``response``, ``rcode`` and ``answers`` a row per expanded row."""
        starts = np.frombuffer(self.starts, dtype=np.int64)
        nsub = np.diff(starts)[t["msg"]]
        total = int(nsub.sum())
        if not total:
            return None
        row = np.repeat(np.arange(len(nsub)), nsub)
        sub = np.repeat(starts[:-1][t["msg"]] - (np.cumsum(nsub) - nsub), nsub) + np.arange(total)
        response = np.frombuffer(self.sub_response, dtype=np.uint8)[sub] == 1
        s_hi, s_lo, d_hi, d_lo = (t[k][row] for k in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
        c_hi, c_lo = np.where(response, d_hi, s_hi), np.where(response, d_lo, s_lo)
        r_hi, r_lo = np.where(response, s_hi, d_hi), np.where(response, s_lo, d_lo)
        if redirect:
            c_hi, c_lo, r_hi, r_lo = _redirected(redirect, c_hi, c_lo, r_hi, r_lo)
        question = np.frombuffer(self.sub_question, dtype=np.int64)[sub]
        count = t["count"][row]
        tcp = np.frombuffer(self.sub_tcp, dtype=np.uint8)[sub] == 1
        expanded = {
            "key": d.mix(c_hi, c_lo, r_hi, r_lo, question), "c_hi": c_hi, "c_lo": c_lo, "r_hi": r_hi, "r_lo": r_lo,
            "question": question, "queries": np.where(response, 0, count), "responses": np.where(response, count, 0),
            "first": t["first"][row], "last": t["last"][row], "transport": np.where(tcp, 1, 2),
        }
        _, line = np.unique(expanded["key"], return_inverse=True)
        return {
            "out": group(expanded, sums=("queries", "responses"), mins=("first",), maxs=("last",), ors=("transport",)),
            "line": line, "response": response,
            "rcode": np.frombuffer(self.sub_rcode, dtype=np.int64)[sub],
            "answers": np.frombuffer(self.sub_answers, dtype=np.int64)[sub],
        }


def _redirected(redirect: dict, c_hi, c_lo, r_hi, r_lo):
    """The (client, resolver) columns with each pair of ``redirect`` replaced: a Python step per
    distinct pair (a node's pods times its resolvers), not per row."""
    pair = d.mix(c_hi, c_lo, r_hi, r_lo)
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    cols = [c_hi[first], c_lo[first], r_hi[first], r_lo[first]]
    for j, (a, b, e, f) in enumerate(zip(*(c.tolist() for c in cols))):
        to = redirect.get(((a, b), (e, f)))
        if to is not None:
            (cols[0][j], cols[1][j]), (cols[2][j], cols[3][j]) = to
    return tuple(c[inverse] for c in cols)


def _sets_per_line(line: np.ndarray, value: np.ndarray, where: np.ndarray, n: int) -> dict[int, tuple[int, ...]]:
    """Per line, the distinct ``value``s (ascending) of its rows where ``where`` holds."""
    n = max(n, 1)
    pairs = np.unique(line[where].astype(np.int64) * n + value[where])
    out: dict[int, tuple[int, ...]] = {}
    for j, v in zip((pairs // n).tolist(), (pairs % n).tolist()):
        out[j] = (*out[j], v) if j in out else (v,)
    return out


def _rows(table: dict[str, np.ndarray], columns: tuple[str, ...], size: int = 1 << 16):
    """The rows of ``table``'s ``columns`` as tuples of Python values, ``size`` rows converted at a
    time (not all of them as Python lists at once)."""
    for at in range(0, len(table[columns[0]]), size):
        yield from zip(*(table[k][at:at + size].tolist() for k in columns))


def _parse_message(data, start: int, end: int, tcp: bool) -> tuple:
    """The DNS messages in ``data[start:end]`` (TCP: a segment of length-prefixed messages), or
    () when they cannot be parsed."""
    return _accel.parse_dns_message(data, start, end, tcp)
