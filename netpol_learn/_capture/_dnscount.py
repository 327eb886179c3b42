"""DNS counting: from the DNS messages of the packets to DNS observations.

A busy node repeats the same few thousand questions and answers: each distinct message (its bytes
without the query ID) is parsed once; per chunk, counting messages by (message, sender,
receiver) is numpy work only (a table like the connection table, batched the same way), and the
Python work that turns the counts into ``DnsObservation``s runs once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netpol_learn._capture import _accel
from netpol_learn._capture import _decode as d
from netpol_learn._capture._addresses import AddressNames
from netpol_learn._capture._table import concat, group
from netpol_learn._flowlog import DnsAnswer, DnsObservation, merge_answers, merge_dns

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
    """The DNS messages of one capture, counted by (message, sender, receiver)."""

    def __init__(self):
        self.message_ids: dict[int, int] = {}
        self.messages: list[tuple[bool, tuple]] = []  # (over TCP, parsed messages; () if malformed)
        self.table: dict[str, np.ndarray] | None = None
        self.pending: list[dict] = []
        self.pending_rows = 0

    def feed(self, data, p: d.Packets, idx: np.ndarray) -> None:
        """Count the DNS messages of packets ``idx`` of ``p`` (each with ``dns_at >= 0``)."""
        tcp = p.proto[idx] == d.TCP
        start, end = p.dns_at[idx], p.dns_end[idx]
        body_hash = d.message_hash(data, start, end, np.where(tcp, start + 2, start))
        body_hash = d.mix(body_hash, tcp)
        uniq, rep, inverse = np.unique(body_hash, return_index=True, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int64)
        for j, (h, i) in enumerate(zip(uniq.tolist(), idx[rep].tolist())):
            msg_id = self.message_ids.get(h)
            if msg_id is None:
                msg_id = self.message_ids[h] = len(self.messages)
                is_tcp = bool(p.proto[i] == d.TCP)
                self.messages.append((is_tcp, _parse_message(data, int(p.dns_at[i]), int(p.dns_end[i]), is_tcp)))
            ids[j] = msg_id
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

    def _flush(self) -> None:
        # Batched like the connection table: re-sorting the whole table every chunk would cost
        # more than the chunk itself.
        table = concat([self.table, *self.pending])
        if table is not None:
            self.table = group(table, sums=("count",), mins=("first",), maxs=("last",))
        self.pending, self.pending_rows = [], 0

    def observations(self, redirect: dict[tuple[Address, Address], tuple[Address, Address]]
                     ) -> tuple[list[DnsObservation], int]:
        """The DNS observations counted so far, and how many messages were malformed.

        ``redirect`` maps a (client, resolver) pair seen only on a NAT view to the connection's
        own pair (the earliest view, as the flows report it)."""
        accs, malformed = self._accumulate()
        names = AddressNames()
        merged: dict[tuple, DnsObservation] = {}
        for key in sorted(accs):
            (c, s, qname, qtype), acc = key, accs.pop(key)  # each freed once it is an observation
            c2, s2 = redirect.get((c, s), (c, s))
            obs = acc.observation(names(*c2), names(*s2), qname, qtype)
            k = obs.key
            merged[k] = merge_dns(merged[k], obs) if k in merged else obs
        return list(merged.values()), malformed

    def _accumulate(self) -> tuple[dict[tuple, DnsAcc], int]:
        """Per (client, resolver, qname, qtype): queries, responses, times, answers, rcodes and
        transports; and the count of malformed messages."""
        self._flush()
        accs: dict[tuple, DnsAcc] = {}
        malformed = 0
        t = self.table
        if t is None:
            return accs, malformed
        for msg_id, s_hi, s_lo, d_hi, d_lo, count, t0, t1 in _rows(t, ("msg", "src_hi", "src_lo", "dst_hi", "dst_lo", "count", "first", "last")):
            is_tcp, messages = self.messages[msg_id]
            if not messages:
                malformed += count
                continue
            src, dst = (s_hi, s_lo), (d_hi, d_lo)
            for msg in messages:
                # The client is whoever sent the query: the destination of a response.
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
        return accs, malformed


def _rows(table: dict[str, np.ndarray], columns: tuple[str, ...], size: int = 1 << 16):
    """The rows of ``table``'s ``columns`` as tuples of Python values, ``size`` rows converted at a
    time (all of them as Python lists at once: 8 MB more at the peak of a 1 M-packet capture
    with 108,000 DNS names; freeing each accumulator once it is an observation, 31 MB)."""
    for at in range(0, len(table[columns[0]]), size):
        yield from zip(*(table[k][at:at + size].tolist() for k in columns))


def _parse_message(data, start: int, end: int, tcp: bool) -> tuple:
    """The DNS messages in ``data[start:end]`` (TCP: a segment of length-prefixed messages), or
    () when they cannot be parsed."""
    return _accel.parse_dns_message(data, start, end, tcp)
