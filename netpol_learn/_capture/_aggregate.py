"""From decoded packets to connections, and from connections to flows.

Per chunk: copies of the same packet are dropped (deduplication), the rest are reduced to one
record per connection (5-tuple) and merged into a table of numpy arrays, so memory grows with the
number of connections, not packets. At the end, connections that are views of each other through
NAT are joined, each connection's client side is decided from its evidence, and connections are
summed into flows keyed by (client, server, protocol, server port).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from netpol_learn._capture import _decode as d
from netpol_learn._capture import _dns
from netpol_learn._flowlog import (
    DIRECTION_METHODS,
    HEURISTIC_METHODS,
    MAX_CLIENT_PORTS,
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    Translation,
    flow_sort_key,
    merge_answers,
    merge_dns,
    merge_logs,
    translation_sort_key,
)

#: Ports that a server listens on even though they are not below 1024.
COMMON_SERVER_PORTS = np.array(
    [1433, 1521, 2181, 2379, 2380, 3000, 3306, 4222, 5000, 5432, 5601, 5672, 6379, 6443, 7000,
     8000, 8080, 8081, 8443, 8888, 9000, 9042, 9090, 9092, 9093, 9100, 9200, 9300, 9411, 9443,
     10250, 10255, 10256, 11211, 15672, 27017],
    dtype=np.int64,
)
EPHEMERAL_LOW = 32768
PORTED = (d.TCP, d.UDP, d.SCTP)
PROTO_NAMES = {d.TCP: "TCP", d.UDP: "UDP", d.SCTP: "SCTP", d.ICMP: "ICMP", d.ICMPV6: "ICMPv6"}
_FRAGMENT_MEMORY = 65536

_CONN_FIELDS = ("key", "a_hi", "a_lo", "b_hi", "b_lo", "a_port", "b_port", "proto",
                "packets", "bytes", "first", "last", "ev", "first_from_a")


def _empty_table() -> dict[str, np.ndarray]:
    t = {k: np.zeros(0, dtype=np.int64) for k in _CONN_FIELDS}
    for k in ("key", "a_hi", "a_lo", "b_hi", "b_lo"):
        t[k] = np.zeros(0, dtype=np.uint64)
    t["first_from_a"] = np.zeros(0, dtype=bool)
    return t


def _group(t: dict[str, np.ndarray], sums=(), mins=(), maxs=(), ors=(), then=()) -> dict[str, np.ndarray]:
    """One row per distinct ``key``: ``sums`` add, ``mins``/``maxs``/``ors`` reduce, every other
    column is taken from the group's first row in the order of ``key`` and then the ``then``
    arrays (lexicographic; the first of ``then`` decides first)."""
    if not len(t["key"]):
        return t
    order = np.lexsort((*reversed(then), t["key"])) if then else np.argsort(t["key"], kind="stable")
    key = t["key"][order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    out = {}
    for name, col in t.items():
        col = col[order]
        if name in sums:
            out[name] = np.add.reduceat(col, starts)
        elif name in mins:
            out[name] = np.minimum.reduceat(col, starts)
        elif name in maxs:
            out[name] = np.maximum.reduceat(col, starts)
        elif name in ors:
            out[name] = np.bitwise_or.reduceat(col, starts)
        else:
            out[name] = col[starts]
    return out


def _reduce(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One record per connection: counts add, last seen takes the max, evidence ORs, and the
    first seen and the direction of the earliest packet come from the earliest record."""
    return _group(t, sums=("packets", "bytes"), maxs=("last",), ors=("ev",), then=(t["first"], ~t["first_from_a"]))


def _concat(tables: list[dict | None]) -> dict | None:
    """Tables of the same columns, one after the other, in one copy; None where there are none."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


@dataclass
class _DnsAcc:
    queries: int = 0
    responses: int = 0
    first: int = 0
    last: int = 0
    answers: dict = field(default_factory=dict)
    rcodes: set = field(default_factory=set)
    transports: set = field(default_factory=set)


class Aggregator:
    """Accumulates the packets of one capture file."""

    def __init__(self, dedup_window_ns: int):
        self.window = int(dedup_window_ns)
        self.conns = _empty_table()
        self.pending: list[dict] = []
        self.pending_rows = 0
        self.carry: dict[str, np.ndarray] | None = None
        self.alias_edges: set[tuple[int, int, bool]] = set()
        self.alias_views: dict[int, tuple[int, int, int, int, int, int, int]] = {}
        self.first_fragments: dict[tuple, tuple[int, int]] = {}
        self.dns: dict[tuple, _DnsAcc] = {}
        self.dns_table: dict[str, np.ndarray] | None = None
        self.dns_pending: list[dict] = []
        self.dns_pending_rows = 0
        self.message_ids: dict[int, int] = {}
        self.messages: list[tuple[bool, tuple]] = []
        self.stats: dict[str, int] = defaultdict(int)
        self.tunnels: dict[tuple, int] = defaultdict(int)

    # --- per chunk ---------------------------------------------------------------------

    def feed(self, data: bytes, p: d.Packets) -> None:
        self.stats["packets"] += len(p)
        self._count_tunnels(p)
        if (p.frag != 0).any():
            self._join_fragments(p)
        ok = np.flatnonzero(p.status == d.OK)
        for status, n in enumerate(np.bincount(p.status, minlength=len(d.STATUS_NAMES) + 1)):
            if status != d.OK and n:
                self.stats[d.STATUS_NAMES[status]] += int(n)
        if not ok.size:
            return
        src_hi, src_lo, dst_hi, dst_lo = p.src_hi[ok], p.src_lo[ok], p.dst_hi[ok], p.dst_lo[ok]
        sport, dport, proto = p.sport[ok], p.dport[ok], p.proto[ok]
        # Canonical connection key: the lower (address, port) endpoint is side A.
        a_is_src = (src_hi < dst_hi) | ((src_hi == dst_hi) & ((src_lo < dst_lo) | ((src_lo == dst_lo) & (sport <= dport))))
        a_hi = np.where(a_is_src, src_hi, dst_hi)
        a_lo = np.where(a_is_src, src_lo, dst_lo)
        b_hi = np.where(a_is_src, dst_hi, src_hi)
        b_lo = np.where(a_is_src, dst_lo, src_lo)
        a_port = np.where(a_is_src, sport, dport)
        b_port = np.where(a_is_src, dport, sport)
        # 64-bit hashes stand for connections; a collision needs billions of connections.
        key = d.mix(proto, a_hi, a_lo, a_port, b_hi, b_lo, b_port)
        ts = p.ts[ok]

        dup = self._dedup({
            "fp": p.fingerprint[ok], "ts": ts, "key": key, "a_is_src": a_is_src,
            "strong": (proto == d.TCP) | (proto == d.ICMP) | (proto == d.ICMPV6),
            "src_hi": src_hi, "src_lo": src_lo, "sport": sport, "dst_hi": dst_hi, "dst_lo": dst_lo, "dport": dport,
            "a_hi": a_hi, "a_lo": a_lo, "a_port": a_port, "b_hi": b_hi, "b_lo": b_lo, "b_port": b_port,
            "tcp": proto == d.TCP, "tcp_seq": p.tcp_seq[ok], "tcp_ack": p.tcp_ack[ok], "tcp_next": p.tcp_next[ok],
        })
        keep = ~dup
        self.stats["duplicates"] += int(dup.sum())
        self.stats["decoded"] += int(keep.sum())

        ev_src, ev_dst = p.ev_src[ok], p.ev_dst[ok]
        ev = np.where(a_is_src, ev_src | (ev_dst << 8), ev_dst | (ev_src << 8))
        rows = {
            "key": key[keep], "a_hi": a_hi[keep], "a_lo": a_lo[keep], "b_hi": b_hi[keep], "b_lo": b_lo[keep],
            "a_port": a_port[keep], "b_port": b_port[keep], "proto": proto[keep],
            "packets": np.ones(int(keep.sum()), dtype=np.int64), "bytes": p.iplen[ok][keep],
            "first": ts[keep], "last": ts[keep], "ev": ev[keep], "first_from_a": a_is_src[keep],
        }
        self._add_rows(_reduce(rows))

        dns_rows = np.flatnonzero(keep & (p.dns_at[ok] >= 0))
        if dns_rows.size:
            self._parse_dns(data, p, ok[dns_rows])

    def _add_rows(self, rows: dict) -> None:
        # Merging a chunk's connections into the table costs a sort of the whole table; batch
        # small chunks so that cost stays proportional to the data.
        self.pending.append(rows)
        self.pending_rows += len(rows["key"])
        if self.pending_rows > max(65536, len(self.conns["key"]) // 2):
            self._flush()

    def _flush(self) -> None:
        self.conns = _reduce(_concat([self.conns, *self.pending]))
        self.pending, self.pending_rows = [], 0

    def _dedup(self, cur: dict[str, np.ndarray]) -> np.ndarray:
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
        one_way = ~np.isin(d.mix(key, ~a_is_src), d.mix(key, a_is_src))
        tcp = np.flatnonzero(allp["tcp"] & one_way)
        if not tcp.size:
            return
        asked = d.mix(allp["tcp_ack"][tcp], allp["tcp_next"][tcp])
        carries = d.mix(allp["tcp_seq"][tcp], allp["tcp_ack"][tcp])
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

    def _join_fragments(self, p: d.Packets) -> None:
        """Give non-first fragments the ports of their first fragment (rare: a Python loop)."""
        idx = np.flatnonzero(((p.frag == -1) & (p.status == d.OK)) | (p.status == d.FRAGMENT))
        for i in idx.tolist():
            fkey = (int(p.src_hi[i]), int(p.src_lo[i]), int(p.dst_hi[i]), int(p.dst_lo[i]), int(p.proto[i]), int(p.ipid[i]))
            if p.status[i] == d.OK:
                if len(self.first_fragments) >= _FRAGMENT_MEMORY:
                    self.first_fragments.pop(next(iter(self.first_fragments)))
                self.first_fragments[fkey] = (int(p.sport[i]), int(p.dport[i]))
            elif fkey in self.first_fragments:
                p.sport[i], p.dport[i] = self.first_fragments[fkey]
                p.status[i] = d.OK
                self.stats["fragments_joined"] += 1

    def _count_tunnels(self, p: d.Packets) -> None:
        t = np.flatnonzero(p.tunnel > 0)
        if not t.size:
            return
        o = p.outer
        columns = (p.tunnel[t].astype(np.uint64), o[0][t], o[1][t], o[2][t], o[3][t])
        _, first, counts = np.unique(d.mix(*columns), return_index=True, return_counts=True)
        for row, c in zip(zip(*(col[first].tolist() for col in columns)), counts.tolist()):
            self.tunnels[row] += c

    def _parse_dns(self, data, p: d.Packets, idx: np.ndarray) -> None:
        """Count DNS messages by (sender, receiver, message without its query ID).

        A busy node repeats the same few thousand questions and answers: each distinct message
        is parsed once (``self.messages``); per chunk, counting is numpy work only, and the
        Python work that turns counts into DNS observations runs once at the end."""
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
                self.messages.append((is_tcp, self._parse_message(data, int(p.dns_at[i]), int(p.dns_end[i]), is_tcp)))
            ids[j] = msg_id
        msg = ids[inverse]
        ts = p.ts[idx]
        rows = {
            "key": d.mix(msg, p.src_hi[idx], p.src_lo[idx], p.dst_hi[idx], p.dst_lo[idx]),
            "msg": msg, "src_hi": p.src_hi[idx], "src_lo": p.src_lo[idx], "dst_hi": p.dst_hi[idx], "dst_lo": p.dst_lo[idx],
            "count": np.ones(len(idx), dtype=np.int64), "first": ts, "last": ts,
        }
        self.dns_pending.append(_group(rows, sums=("count",), mins=("first",), maxs=("last",)))
        self.dns_pending_rows += len(self.dns_pending[-1]["key"])
        if self.dns_pending_rows > max(65536, len(self.dns_table["key"]) if self.dns_table else 0):
            self._flush_dns()

    def _flush_dns(self) -> None:
        # Batched like the connection table: re-sorting the whole table every chunk would cost
        # more than the chunk itself.
        table = _concat([self.dns_table, *self.dns_pending])
        if table is not None:
            self.dns_table = _group(table, sums=("count",), mins=("first",), maxs=("last",))
        self.dns_pending, self.dns_pending_rows = [], 0

    @staticmethod
    def _parse_message(data, start: int, end: int, tcp: bool) -> tuple:
        try:
            if tcp:
                return tuple(_dns.parse_tcp_segment(bytes(data[start:end])))
            return (_dns.parse(bytes(data[start:end])),)
        except _dns.DnsError:
            return ()

    def _dns_accumulate(self) -> None:
        self._flush_dns()
        t = self.dns_table
        if t is None:
            return
        cols = [t[k].tolist() for k in ("msg", "src_hi", "src_lo", "dst_hi", "dst_lo", "count", "first", "last")]
        for msg_id, s_hi, s_lo, d_hi, d_lo, count, t0, t1 in zip(*cols):
            is_tcp, messages = self.messages[msg_id]
            if not messages:
                self.stats["dns_malformed"] += count
                continue
            src, dst = (s_hi, s_lo), (d_hi, d_lo)
            for msg in messages:
                # The client is whoever sent the query: the destination of a response.
                c, srv = (dst, src) if msg.response else (src, dst)
                acc = self.dns.get((c, srv, msg.qname, msg.qtype))
                if acc is None:
                    acc = self.dns[(c, srv, msg.qname, msg.qtype)] = _DnsAcc(first=t0, last=t1)
                acc.first, acc.last = min(acc.first, t0), max(acc.last, t1)
                acc.transports.add("tcp" if is_tcp else "udp")
                if msg.response:
                    acc.responses += count
                    acc.rcodes.add(msg.rcode)
                    for name, typ, value, ttl in msg.answers:
                        k = (name, typ, value)
                        if acc.answers.get(k, -1) < ttl:
                            acc.answers[k] = ttl
                else:
                    acc.queries += count

    # --- at the end --------------------------------------------------------------------

    def result(self, source: str) -> FlowLog:
        self._flush()
        t = {k: v.copy() for k, v in self.conns.items()}
        alive = np.ones(len(t["key"]), dtype=bool)
        self._dns_accumulate()
        views = self._join_aliases(t, alive)
        flows, redirect = self._flows(t, alive, views)
        dns = self._dns_observations(redirect)
        stats = {k: int(v) for k, v in sorted(self.stats.items()) if v}
        stats["tunnels"] = self._tunnel_stats()
        log = FlowLog(flows=tuple(flows), dns=tuple(dns), stats=stats, sources=(source,))
        return merge_logs([log])

    def _join_aliases(self, t: dict, alive: np.ndarray) -> dict[int, list[tuple[tuple, bool]]]:
        """Join connections that are NAT views of one another into the earliest of them.

        Returns, per surviving row, the other views and whether each one's side A corresponds to
        the row's side B (parity)."""
        if not self.alias_edges:
            return {}
        adjacency: dict[int, list[tuple[int, bool]]] = defaultdict(list)
        for k1, k2, same in sorted(self.alias_edges):
            adjacency[k1].append((k2, not same))
            adjacency[k2].append((k1, not same))
        keys = t["key"]
        row_of = {}
        member_keys = np.array(sorted(adjacency), dtype=np.uint64)
        pos = np.searchsorted(keys, member_keys)
        for k, i in zip(member_keys.tolist(), pos.tolist()):
            if i < len(keys) and int(keys[i]) == k:
                row_of[k] = i
        views: dict[int, list[tuple[tuple, bool]]] = {}
        seen: set[int] = set()
        for start in sorted(adjacency):
            if start in seen:
                continue
            parity = {start: False}
            queue = [start]
            while queue:
                k = queue.pop()
                for other, flip in adjacency[k]:
                    if other not in parity:
                        parity[other] = parity[k] ^ flip
                        queue.append(other)
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
                views.setdefault(ci, []).append((self.alias_views[k], flip))
                if k in row_of:
                    i = row_of[k]
                    ev = int(t["ev"][i])
                    if flip:
                        ev = ((ev & 0xFF) << 8) | (ev >> 8)
                    t["ev"][ci] |= ev
                    t["packets"][ci] += t["packets"][i]
                    t["bytes"][ci] += t["bytes"][i]
                    t["last"][ci] = max(t["last"][ci], t["last"][i])
                    alive[i] = False
        self.stats["nat_views"] = sum(len(v) for v in views.values())
        return views

    def _flows(self, t: dict, alive: np.ndarray, views: dict) -> tuple[list[Flow], dict[tuple, tuple]]:
        n = len(t["key"])
        ev = t["ev"]
        a_bits, b_bits = ev & 0xFF, (ev >> 8) & 0xFF
        method = np.full(n, -1, dtype=np.int64)
        client_a = np.zeros(n, dtype=bool)
        for i in range(len(d.EVIDENCE_METHODS)):
            bit = 1 << i
            a, b = (a_bits & bit) != 0, (b_bits & bit) != 0
            decided = (method < 0) & (a ^ b)
            method[decided] = i
            client_a[decided] = a[decided]
        proto = t["proto"]
        ported = np.isin(proto, PORTED)
        a_port, b_port = t["a_port"], t["b_port"]
        a_known = (a_port < 1024) | np.isin(a_port, COMMON_SERVER_PORTS)
        b_known = (b_port < 1024) | np.isin(b_port, COMMON_SERVER_PORTS)
        heuristic = len(d.EVIDENCE_METHODS)
        decided = (method < 0) & ported & (a_known ^ b_known)
        method[decided], client_a[decided] = heuristic, b_known[decided]
        a_eph, b_eph = a_port >= EPHEMERAL_LOW, b_port >= EPHEMERAL_LOW
        decided = (method < 0) & ported & (a_eph ^ b_eph)
        method[decided], client_a[decided] = heuristic, a_eph[decided]
        rest = method < 0
        method[rest], client_a[rest] = heuristic + 1, t["first_from_a"][rest]

        c_hi = np.where(client_a, t["a_hi"], t["b_hi"])
        c_lo = np.where(client_a, t["a_lo"], t["b_lo"])
        s_hi = np.where(client_a, t["b_hi"], t["a_hi"])
        s_lo = np.where(client_a, t["b_lo"], t["a_lo"])
        c_port = np.where(client_a, a_port, b_port)
        s_port = np.where(ported, np.where(client_a, b_port, a_port), -1)

        rows = np.flatnonzero(alive)
        fkey = d.mix(c_hi[rows], c_lo[rows], s_hi[rows], s_lo[rows], proto[rows], s_port[rows])
        uniq, inverse = np.unique(fkey, return_inverse=True)
        m = len(uniq)
        packets = np.bincount(inverse, weights=t["packets"][rows], minlength=m)
        nbytes = np.bincount(inverse, weights=t["bytes"][rows], minlength=m)
        conns = np.bincount(inverse, minlength=m)
        first = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, inverse, t["first"][rows])
        last = np.full(m, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, inverse, t["last"][rows])
        nmethods = len(DIRECTION_METHODS)
        by_method = np.bincount(inverse * nmethods + method[rows], minlength=m * nmethods).reshape(m, nmethods)
        rep = np.full(m, -1, dtype=np.int64)
        rep[inverse[::-1]] = rows[::-1]  # first row of each flow

        extras_ports: dict[int, set[int]] = defaultdict(set)
        heur = np.flatnonzero(method[rows] >= heuristic)
        for j, port in zip(inverse[heur].tolist(), c_port[rows][heur].tolist()):
            extras_ports[j].add(port)
        translations: dict[int, set[Translation]] = defaultdict(set)
        # A DNS message seen only on a NAT view (the resolver pod answering, before the reply is
        # translated back to the Service address) belongs to the connection it is a view of.
        redirect: dict[tuple, tuple] = {}
        names = _AddressNames()
        row_flow = dict(zip(rows.tolist(), inverse.tolist()))
        for ci, others in views.items():
            flow_j = row_flow[ci]
            own = (names(c_hi[ci], c_lo[ci]), names(s_hi[ci], s_lo[ci]), int(s_port[ci]) if ported[ci] else None)
            for (va_hi, va_lo, va_port, vb_hi, vb_lo, vb_port), flip in others:
                view_client_a = bool(client_a[ci]) ^ flip
                vc, vs = ((va_hi, va_lo), (vb_hi, vb_lo)) if view_client_a else ((vb_hi, vb_lo), (va_hi, va_lo))
                server_port = (vb_port if view_client_a else va_port) if ported[ci] else None
                view = (names(*vc), names(*vs), server_port)
                redirect.setdefault((vc, vs), ((int(c_hi[ci]), int(c_lo[ci])), (int(s_hi[ci]), int(s_lo[ci]))))
                if view != own:
                    translations[flow_j].add(Translation(*view))

        flows = []
        for j in range(m):
            r = int(rep[j])
            p = int(proto[r])
            methods = tuple((DIRECTION_METHODS[k], int(c)) for k, c in enumerate(by_method[j]) if c)
            heuristic_used = any(mth in HEURISTIC_METHODS for mth, _ in methods)
            flows.append(
                Flow(
                    src=names(c_hi[r], c_lo[r]),
                    dst=names(s_hi[r], s_lo[r]),
                    proto=PROTO_NAMES.get(p, f"IP-{p}"),
                    port=int(s_port[r]) if ported[r] else None,
                    packets=int(packets[j]),
                    bytes=int(nbytes[j]),
                    connections=int(conns[j]),
                    first_seen=int(first[j]),
                    last_seen=int(last[j]),
                    direction=methods,
                    client_ports=tuple(sorted(extras_ports[j]))[:MAX_CLIENT_PORTS] if heuristic_used else (),
                    translated=tuple(sorted(translations.get(j, ()), key=translation_sort_key)),
                )
            )
        flows.sort(key=flow_sort_key)
        return flows, redirect

    def _dns_observations(self, redirect: dict[tuple, tuple]) -> list[DnsObservation]:
        names = _AddressNames()
        merged: dict[tuple, DnsObservation] = {}
        for (c, s, qname, qtype), acc in sorted(self.dns.items()):
            c2, s2 = redirect.get((c, s), (c, s))
            obs = DnsObservation(
                client=names(*c2),
                resolver=names(*s2),
                qname=qname,
                qtype=qtype,
                queries=acc.queries,
                responses=acc.responses,
                first_seen=acc.first,
                last_seen=acc.last,
                answers=merge_answers(DnsAnswer(n, ty, v, ttl) for (n, ty, v), ttl in acc.answers.items()),
                rcodes=tuple(sorted(acc.rcodes)),
                transports=tuple(sorted(acc.transports)),
            )
            k = obs.key
            merged[k] = merge_dns(merged[k], obs) if k in merged else obs
        return list(merged.values())

    def _tunnel_stats(self) -> dict:
        names = _AddressNames()
        out: dict[str, dict] = {}
        for (kind, s_hi, s_lo, d_hi, d_lo), count in sorted(self.tunnels.items()):
            entry = out.setdefault(d.TUNNEL_NAMES[kind], {"packets": 0, "endpoints": {}})
            entry["packets"] += count
            pair = f"{names(s_hi, s_lo)} > {names(d_hi, d_lo)}"
            entry["endpoints"][pair] = entry["endpoints"].get(pair, 0) + count
        return out


class _AddressNames:
    """128-bit (hi, lo) addresses to text, IPv4-mapped ones as dotted quads; cached."""

    def __init__(self):
        self.cache: dict[tuple[int, int], str] = {}

    def __call__(self, hi, lo) -> str:
        k = (int(hi), int(lo))
        text = self.cache.get(k)
        if text is None:
            if k[0] == 0 and k[1] >> 32 == 0xFFFF:
                text = str(ipaddress.IPv4Address(k[1] & 0xFFFFFFFF))
            else:
                text = ipaddress.IPv6Address((k[0] << 64) | k[1]).compressed
            self.cache[k] = text
        return text
