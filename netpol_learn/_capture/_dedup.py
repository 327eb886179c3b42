"""Deduplication and NAT views: one packet seen twice is counted once, and the connections that
are views of one another through address translation are joined (docs/flow-log.md,
"Deduplication").

Per chunk, ``Deduplicator`` marks the copies among the packets and records an *alias edge*
between two connections whenever a copy shows other addresses or ports (a NAT view) or a TCP
segment answers one of another connection (the two halves of a connection seen through
different NAT). At the end, ``join_views`` joins each group of aliased connections into its
earliest one.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from netpol_learn._capture._decode import mix
from netpol_learn._capture._table import swap_sides_sent

#: (side A address hi, lo, port, side B address hi, lo, port) of one connection view.
View = tuple[int, int, int, int, int, int]


class Deduplicator:
    """Copies of a packet within ``window_ns`` of it, across chunks, and the NAT views found.

    ``alias_edges`` holds ``(key1, key2, same)``: connections ``key1`` and ``key2`` are views of
    one connection, with side A of one corresponding to side A of the other when ``same``.
    ``alias_views`` holds the sides of every connection named by an edge."""

    def __init__(self, window_ns: int):
        self.window = int(window_ns)
        self.carry: dict[str, np.ndarray] | None = None
        self.alias_edges: set[tuple[int, int, bool]] = set()
        self.alias_views: dict[int, View] = {}

    def __call__(self, cur: dict[str, np.ndarray]) -> np.ndarray:
        """Mark packets that copy one seen less than the window before, and record NAT views.

        ``cur`` holds per-packet arrays: fp, ts, key, a_is_src, strong, the directed endpoints
        (src_hi, src_lo, sport, dst_hi, ...), the sides (a_hi, ..., b_port), and TCP tokens.
        """
        n = len(cur["fp"])
        if self.carry is not None:
            allp = {k: np.concatenate((self.carry[k], cur[k]), axis=-1) for k in cur}
        else:
            allp = cur
        carried = len(allp["fp"]) - n
        fp, ts_all, key = allp["fp"], allp["ts"], allp["key"]
        # Packets arrive (nearly) in time order: a stable sort by fingerprint keeps that order.
        order = np.argsort(fp, kind="stable")
        sfp, sts = fp[order], ts_all[order]
        cand = np.flatnonzero(np.r_[False, (sfp[1:] == sfp[:-1]) & (np.abs(sts[1:] - sts[:-1]) <= self.window)])
        this, prev = order[cand], order[cand - 1]
        same_conn = key[this] == key[prev]
        # A copy with other addresses is a NAT view when the fingerprint is strong (TCP sequence
        # numbers, ICMP data) or one endpoint, address and port, is unchanged; otherwise it is
        # taken for a different packet that happens to look the same.
        # Compared only for the candidates: a few per chunk.
        src_same = np.ones(len(this), dtype=bool)
        dst_same = np.ones(len(this), dtype=bool)
        for name in ("src_hi", "src_lo", "sport"):
            src_same &= allp[name][this] == allp[name][prev]
        for name in ("dst_hi", "dst_lo", "dport"):
            dst_same &= allp[name][this] == allp[name][prev]
        nat = ~same_conn & (allp["strong"][this] | src_same | dst_same)
        dup = np.zeros(len(fp), dtype=bool)
        dup[this[same_conn | nat]] = True
        self._add_alias_edges(allp, prev[nat], this[nat], same_side=True)
        self._join_replies(allp)
        # Carry the packets of the last window into the next chunk.
        if n:
            tail = np.flatnonzero(ts_all >= int(cur["ts"].max()) - self.window)
            tail = tail[tail >= carried] if carried else tail
            self.carry = {k: v[..., tail] for k, v in allp.items()}
        return dup[carried:]

    def _join_replies(self, allp: dict[str, np.ndarray]) -> None:
        """Tie the two halves of a TCP connection that the capture saw through different NAT.

        On a node's loopback, a host-network client's packets to a ClusterIP show only after DNAT
        and the replies only before it: no packet is seen twice, but each segment's reply carries
        the (seq, ack) pair that the segment asked for. A packet whose (seq, ack) answers one on
        another connection, within the window, is on the same connection, seen from the other
        side."""
        # Only a connection seen in one direction can be half of another; most are seen in both
        # and are left out before the costlier matching.
        key, a_is_src = allp["key"], allp["a_is_src"]
        one_way = ~np.isin(mix(key, ~a_is_src), mix(key, a_is_src))
        tcp = np.flatnonzero(allp["tcp"] & one_way)
        if not tcp.size:
            return
        asked = mix(allp["tcp_ack"][tcp], allp["tcp_next"][tcp])
        carries = mix(allp["tcp_seq"][tcp], allp["tcp_ack"][tcp])
        order = np.argsort(asked, kind="stable")
        sorted_asked = asked[order]
        at = np.minimum(np.searchsorted(sorted_asked, carries), len(order) - 1)
        hit = np.flatnonzero(sorted_asked[at] == carries)
        question, answer = tcp[order[at[hit]]], tcp[hit]
        ts, key = allp["ts"], allp["key"]
        near = np.abs(ts[answer] - ts[question]) <= self.window
        other = near & (key[answer] != key[question])
        # The answer's source is the question's destination: opposite sides.
        self._add_alias_edges(allp, question[other], answer[other], same_side=False)

    def _add_alias_edges(self, allp, first: np.ndarray, second: np.ndarray, same_side: bool) -> None:
        if not first.size:
            return
        key, a_is_src = allp["key"], allp["a_is_src"]
        sides = [allp[name] for name in ("a_hi", "a_lo", "a_port", "b_hi", "b_lo", "b_port")]
        for i, j in zip(first.tolist(), second.tolist()):
            k1, k2 = int(key[i]), int(key[j])
            same = bool(a_is_src[i] == a_is_src[j]) == same_side
            self.alias_edges.add((k1, k2, same))
            for k, at in ((k1, i), (k2, j)):
                if k not in self.alias_views:
                    self.alias_views[k] = tuple(int(side[at]) for side in sides)


def join_views(t: dict[str, np.ndarray], alive: np.ndarray, alias_edges: set[tuple[int, int, bool]],
               alias_views: dict[int, View]) -> dict[int, list[tuple[View, bool]]]:
    """Join connections that are NAT views of one another into the earliest of them.

    ``t`` is the connection table sorted by ``key``; the joined rows' counts, last seen, evidence
    and what each side sent are added to the earliest row's (in place, side to matching side) and
    they are marked dead in ``alive``.
    Returns, per surviving row, the other views and whether each one's side A corresponds to the
    row's side B (parity)."""
    if not alias_edges:
        return {}
    adjacency = _adjacency(alias_edges)
    row_of = _rows_of(t["key"], adjacency)
    views: dict[int, list[tuple[View, bool]]] = {}
    seen: set[int] = set()
    for start in sorted(adjacency):
        if start in seen:
            continue
        parity = _component(adjacency, start)
        seen.update(parity)
        rows = [k for k in parity if k in row_of]
        if not rows:
            continue
        canon = min(rows, key=lambda k: (int(t["first"][row_of[k]]), k))
        ci = row_of[canon]
        base = parity[canon]
        for k in sorted(parity):
            if k == canon:
                continue
            flip = parity[k] ^ base
            views.setdefault(ci, []).append((alias_views[k], flip))
            if k in row_of:
                _absorb(t, alive, ci, row_of[k], flip)
    return views


def _adjacency(alias_edges) -> dict[int, list[tuple[int, bool]]]:
    """Per connection key, the keys it is aliased to and whether the sides swap."""
    adjacency: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for k1, k2, same in sorted(alias_edges):
        adjacency[k1].append((k2, not same))
        adjacency[k2].append((k1, not same))
    return adjacency


def _rows_of(keys: np.ndarray, adjacency) -> dict[int, int]:
    """The table row of each aliased key that has one (``keys`` sorted)."""
    row_of = {}
    member_keys = np.array(sorted(adjacency), dtype=np.uint64)
    pos = np.searchsorted(keys, member_keys)
    for k, i in zip(member_keys.tolist(), pos.tolist()):
        if i < len(keys) and int(keys[i]) == k:
            row_of[k] = i
    return row_of


def _component(adjacency, start: int) -> dict[int, bool]:
    """The keys connected to ``start``, each with its parity relative to it (sides swapped)."""
    parity = {start: False}
    queue = [start]
    while queue:
        k = queue.pop()
        for other, flip in adjacency[k]:
            if other not in parity:
                parity[other] = parity[k] ^ flip
                queue.append(other)
    return parity


def _absorb(t: dict[str, np.ndarray], alive: np.ndarray, into: int, row: int, flip: bool) -> None:
    """Add connection ``row`` to connection ``into`` (its sides swapped when ``flip``)."""
    ev, sent = int(t["ev"][row]), int(t["sent"][row])
    a_packets = int(t["a_packets"][row])
    if flip:
        ev = ((ev & 0xFF) << 8) | (ev >> 8)
        sent = swap_sides_sent(sent)
        a_packets = int(t["packets"][row]) - a_packets  # its side B is the row's side A
    a_spoke, b_spoke = int(t["a_spoke"][row]), int(t["b_spoke"][row])
    if flip:
        a_spoke, b_spoke = b_spoke, a_spoke
    t["a_spoke"][into] = max(int(t["a_spoke"][into]), a_spoke)
    t["b_spoke"][into] = max(int(t["b_spoke"][into]), b_spoke)
    t["ev"][into] |= ev
    t["sent"][into] |= sent
    t["a_packets"][into] += a_packets
    t["packets"][into] += t["packets"][row]
    t["bytes"][into] += t["bytes"][row]
    t["last"][into] = max(t["last"][into], t["last"][row])
    alive[row] = False
