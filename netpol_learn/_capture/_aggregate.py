"""From decoded packets to connections, and from connections to flows.

Per chunk: copies of the same packet are dropped (deduplication, ``_dedup``), the rest are
reduced to one record per connection (5-tuple) and merged into a table of numpy arrays
(``_table``), so memory grows with the number of connections, not packets; DNS messages are
counted on the side (``_dnscount``). At the end, connections that are views of each other through
NAT are joined (``_dedup.join_views``), each connection's client side is decided from its
evidence (``_direction``), then what the server answered (``_evidence``), and connections are
summed into flows keyed by (client, server, protocol, server port, evidence), each with its runs
of activity: its connections' (first, last) intervals united where they overlap or lie within
``RUN_GAP`` of each other (``_flowlog.merge_runs``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from netpol_learn._capture import _decode as d
from netpol_learn._capture._addresses import AddressNames
from netpol_learn._capture._dedup import Deduplicator, join_views
from netpol_learn._capture._direction import PORT_HEURISTIC, decide_direction, is_ported
from netpol_learn._capture._dnscount import DnsCounter
from netpol_learn._capture._evidence import decide_evidence
from netpol_learn._capture._table import (
    SENT_B_SHIFT,
    SENT_PLAIN,
    SENT_RST,
    NEVER,
    concat,
    empty_table,
    reduce_connections,
)
from netpol_learn._flowlog import (
    DIRECTION_METHODS,
    EVIDENCE,
    HEURISTIC_METHODS,
    MAX_CLIENT_PORTS,
    RUN_GAP,
    Flow,
    FlowLog,
    Translation,
    dns_sort_key,
    flow_sort_key,
    merge_stats,
    translation_sort_key,
)

PROTO_NAMES = {d.TCP: "TCP", d.UDP: "UDP", d.SCTP: "SCTP", d.ICMP: "ICMP", d.ICMPV6: "ICMPv6"}
TCP_RST = 0x04
#: A reset connection's packets more than this after both of its sides last spoke are a stale tail.
STALE_AFTER = 10**9
_FRAGMENT_MEMORY = 65536


class Aggregator:
    """Accumulates the packets of one capture file (or one interval of the sniffer):
    ``feed`` each chunk, then ``result`` once."""

    def __init__(self, dedup_window_ns: int):
        self.window = int(dedup_window_ns)
        self.conns = empty_table()
        self.pending: list[dict] = []
        self.pending_rows = 0
        self.dedup = Deduplicator(self.window)
        self.first_fragments: dict[tuple, tuple[int, int]] = {}
        self.dns = DnsCounter()
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

        dup = self.dedup({
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
        # What the sender sent (a packet without RST, or an RST), as side A's or side B's bits.
        spoke = (p.tcp_flags[ok] & TCP_RST) == 0
        sent = np.where(spoke, SENT_PLAIN, SENT_RST) << np.where(a_is_src, 0, SENT_B_SHIFT)
        rows = {
            "key": key[keep], "a_hi": a_hi[keep], "a_lo": a_lo[keep], "b_hi": b_hi[keep], "b_lo": b_lo[keep],
            "a_port": a_port[keep], "b_port": b_port[keep], "proto": proto[keep],
            "packets": np.ones(int(keep.sum()), dtype=np.int64), "bytes": p.iplen[ok][keep],
            "first": ts[keep], "last": ts[keep], "ev": ev[keep], "first_from_a": a_is_src[keep],
            "sent": sent[keep], "a_packets": a_is_src[keep].astype(np.int64),
            "a_spoke": np.where(spoke & a_is_src, ts, NEVER)[keep], "b_spoke": np.where(spoke & ~a_is_src, ts, NEVER)[keep],
        }
        self._add_rows(reduce_connections(rows))

        dns_rows = np.flatnonzero(keep & (p.dns_at[ok] >= 0))
        if dns_rows.size:
            self.dns.feed(data, p, ok[dns_rows])

    def _add_rows(self, rows: dict) -> None:
        # Merging a chunk's connections into the table costs a sort of the whole table; batch
        # small chunks so that cost stays proportional to the data.
        self.pending.append(rows)
        self.pending_rows += len(rows["key"])
        if self.pending_rows > max(65536, len(self.conns["key"]) // 2):
            self._flush()

    def _flush(self) -> None:
        self.conns = reduce_connections(concat([self.conns, *self.pending]))
        self.pending, self.pending_rows = [], 0

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

    # --- at the end --------------------------------------------------------------------

    def result(self, source: str) -> FlowLog:
        """The flow log of everything fed so far, its ``sources`` ``(source,)``."""
        self._flush()
        # Joining NAT views changes the rows it joins in place: then on a copy (the rest of the
        # way only makes new columns), so that the table fed so far stays as it was.
        t = {k: v.copy() for k, v in self.conns.items()} if self.dedup.alias_edges else dict(self.conns)
        alive = np.ones(len(t["key"]), dtype=bool)
        views = join_views(t, alive, self.dedup.alias_edges, self.dedup.alias_views)
        stats = dict(self.stats)
        if self.dedup.alias_edges:
            stats["nat_views"] = sum(len(v) for v in views.values())
        flows, redirect = _flows(t, alive, views)
        dns, malformed = self.dns.observations(redirect)
        stats["dns_malformed"] = stats.get("dns_malformed", 0) + malformed
        stats = {k: int(v) for k, v in sorted(stats.items()) if v}
        stats["tunnels"] = self._tunnel_stats()
        # What ``merge_logs([log])`` would give, without its per-line Python work: the flows are
        # distinct and sorted already, the DNS lines distinct (tests/test_dnscount.py).
        return FlowLog(flows=tuple(flows), dns=tuple(sorted(dns, key=dns_sort_key)), stats=merge_stats(stats, {}), sources=(source,))

    def _tunnel_stats(self) -> dict:
        names = AddressNames()
        out: dict[str, dict] = {}
        for (kind, s_hi, s_lo, d_hi, d_lo), count in sorted(self.tunnels.items()):
            entry = out.setdefault(d.TUNNEL_NAMES[kind], {"packets": 0, "endpoints": {}})
            entry["packets"] += count
            pair = f"{names(s_hi, s_lo)} > {names(d_hi, d_lo)}"
            entry["endpoints"][pair] = entry["endpoints"].get(pair, 0) + count
        return out


# --- connections to flows ------------------------------------------------------------------


@dataclass
class _Ends:
    """Per connection, its ends oriented client to server (``s_port`` -1 where no ports)."""

    c_hi: np.ndarray
    c_lo: np.ndarray
    s_hi: np.ndarray
    s_lo: np.ndarray
    c_port: np.ndarray
    s_port: np.ndarray
    client_a: np.ndarray
    ported: np.ndarray

    @classmethod
    def orient(cls, t: dict[str, np.ndarray], client_a: np.ndarray) -> _Ends:
        ported = is_ported(t["proto"])
        a_port, b_port = t["a_port"], t["b_port"]
        return cls(
            c_hi=np.where(client_a, t["a_hi"], t["b_hi"]),
            c_lo=np.where(client_a, t["a_lo"], t["b_lo"]),
            s_hi=np.where(client_a, t["b_hi"], t["a_hi"]),
            s_lo=np.where(client_a, t["b_lo"], t["a_lo"]),
            c_port=np.where(client_a, a_port, b_port),
            s_port=np.where(ported, np.where(client_a, b_port, a_port), -1),
            client_a=client_a,
            ported=ported,
        )


@dataclass
class _FlowSums:
    """Connections ``rows`` summed per flow: flow ``j`` holds the rows where ``inverse == j``."""

    rows: np.ndarray
    inverse: np.ndarray
    packets: np.ndarray
    nbytes: np.ndarray
    connections: np.ndarray
    first: np.ndarray
    last: np.ndarray
    by_method: np.ndarray  # (flows, len(DIRECTION_METHODS)): connections per direction method
    rep: np.ndarray  # a row of each flow (its first)
    evidence: np.ndarray  # index in EVIDENCE, per flow

    def __len__(self) -> int:
        return len(self.rep)


def _flows(t: dict, alive: np.ndarray, views: dict) -> tuple[list[Flow], dict[tuple, tuple]]:
    """The flows of the live connections of ``t``, sorted, and the DNS redirects of the NAT
    views (``_translations``)."""
    _until_both_spoke(t)
    method, client_a = decide_direction(t["ev"], t["proto"], t["a_port"], t["b_port"], t["first_from_a"])
    evidence = decide_evidence(t["proto"], t["ev"], t["sent"], t["packets"], t["a_packets"], client_a)
    ends = _Ends.orient(t, client_a)
    sums = _sum_flows(t, ends, np.flatnonzero(alive), method, evidence)
    runs = _flow_runs(t, sums)
    client_ports = _heuristic_client_ports(sums, ends, method)
    names = AddressNames()
    translations, redirect = _translations(views, ends, sums, names)
    flows = []
    # Each column as Python values once, not a numpy scalar per field per flow.
    rep = sums.rep
    src_names = [names(hi, lo) for hi, lo in zip(ends.c_hi[rep].tolist(), ends.c_lo[rep].tolist())]
    dst_names = [names(hi, lo) for hi, lo in zip(ends.s_hi[rep].tolist(), ends.s_lo[rep].tolist())]
    ports = np.where(ends.ported[rep], ends.s_port[rep], -1).tolist()
    method_counts = [tuple((DIRECTION_METHODS[k], c) for k, c in enumerate(row) if c) for row in sums.by_method.tolist()]
    columns = zip(src_names, dst_names, t["proto"][rep].tolist(), ports, sums.packets.astype(np.int64).tolist(),
                  sums.nbytes.astype(np.int64).tolist(), sums.connections.tolist(), sums.first.tolist(), sums.last.tolist(),
                  method_counts, sums.evidence.tolist(), runs)
    for j, (src, dst, p, port, packets, nbytes, connections, first, last, methods, ev, flow_runs) in enumerate(columns):
        heuristic_used = any(mth in HEURISTIC_METHODS for mth, _ in methods)
        flows.append(
            Flow(
                src=src,
                dst=dst,
                proto=PROTO_NAMES.get(p, f"IP-{p}"),
                port=None if port < 0 else port,
                packets=packets,
                bytes=nbytes,
                connections=connections,
                first_seen=first,
                last_seen=last,
                direction=methods,
                client_ports=tuple(sorted(client_ports[j]))[:MAX_CLIENT_PORTS] if heuristic_used else (),
                translated=tuple(sorted(translations.get(j, ()), key=translation_sort_key)),
                evidence=EVIDENCE[ev],
                runs=flow_runs,
            )
        )
    flows.sort(key=flow_sort_key)
    return flows, redirect


def _until_both_spoke(t: dict) -> None:
    """A TCP connection that was reset lasts, for its runs, while both of its sides spoke (sent
    packets without RST): what follows (the other side's packets of an old connection, answered
    by the RSTs of the address's new holder) is not traffic of the pods that held the addresses
    then. Changes ``t["last"]`` in place."""
    reset = (t["sent"] & (SENT_RST | (SENT_RST << SENT_B_SHIFT))) != 0
    both = np.maximum(t["first"], np.minimum(t["a_spoke"], t["b_spoke"]))
    # A reset that closes a live connection comes within moments; a stale tail after its pod died.
    tcp = (t["proto"] == d.TCP) & reset & (t["a_spoke"] != NEVER) & (t["b_spoke"] != NEVER) & (t["last"] - both > STALE_AFTER)
    t["last"] = np.where(tcp, both, t["last"])


def _sum_flows(t: dict, ends: _Ends, rows: np.ndarray, method: np.ndarray, evidence: np.ndarray) -> _FlowSums:
    """Connections ``rows`` of ``t`` summed by flow (client, server, protocol, server port,
    evidence)."""
    fkey = d.mix(ends.c_hi[rows], ends.c_lo[rows], ends.s_hi[rows], ends.s_lo[rows], t["proto"][rows],
                 ends.s_port[rows], evidence[rows])
    uniq, inverse = np.unique(fkey, return_inverse=True)
    m = len(uniq)
    first = np.full(m, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, t["first"][rows])
    last = np.full(m, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, inverse, t["last"][rows])
    nmethods = len(DIRECTION_METHODS)
    by_method = np.bincount(inverse * nmethods + method[rows], minlength=m * nmethods).reshape(m, nmethods)
    rep = np.full(m, -1, dtype=np.int64)
    rep[inverse[::-1]] = rows[::-1]  # first row of each flow
    return _FlowSums(
        rows=rows,
        inverse=inverse,
        packets=np.bincount(inverse, weights=t["packets"][rows], minlength=m),
        nbytes=np.bincount(inverse, weights=t["bytes"][rows], minlength=m),
        connections=np.bincount(inverse, minlength=m),
        first=first,
        last=last,
        by_method=by_method,
        rep=rep,
        evidence=evidence[rep],
    )


def _flow_runs(t: dict, sums: _FlowSums, gap: int = RUN_GAP) -> list[tuple[tuple[int, int, int], ...]]:
    """Per flow, its runs of activity: ``merge_runs`` of its connections' ``(first, last, 1)``,
    computed for all connections at once.

    The connections are sorted by flow, then first seen; one starts a new run when it is a flow's
    first or starts more than ``gap`` after the latest end of the flow's connections before it
    (a running maximum per flow: the ends are ranked, and the rank is offset by the flow's index
    so that one running maximum over all rows never crosses into the next flow)."""
    if not len(sums):
        return []
    flow = sums.inverse
    order = np.lexsort((t["first"][sums.rows], flow))
    flow, first, last = flow[order], t["first"][sums.rows][order], t["last"][sums.rows][order]
    ends, rank = np.unique(last, return_inverse=True)
    stride = np.int64(len(ends))
    offset = flow.astype(np.int64) * stride
    latest = ends[np.maximum.accumulate(offset + rank) - offset]
    new = np.ones(len(first), dtype=bool)
    new[1:] = (flow[1:] != flow[:-1]) | (first[1:] > latest[:-1] + gap)
    starts = np.flatnonzero(new)
    stops = np.r_[starts[1:], len(first)]
    run_first, run_last, run_n = first[starts].tolist(), latest[stops - 1].tolist(), (stops - starts).tolist()
    bounds = np.searchsorted(flow[starts], np.arange(len(sums) + 1)).tolist()
    return [tuple(zip(run_first[a:b], run_last[a:b], run_n[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]


def _heuristic_client_ports(sums: _FlowSums, ends: _Ends, method: np.ndarray) -> dict[int, set[int]]:
    """Per flow, the client ports of its connections whose direction came from a heuristic."""
    client_ports: dict[int, set[int]] = defaultdict(set)
    rows = sums.rows
    heur = np.flatnonzero(method[rows] >= PORT_HEURISTIC)
    for j, port in zip(sums.inverse[heur].tolist(), ends.c_port[rows][heur].tolist()):
        client_ports[j].add(port)
    return client_ports


def _translations(views: dict, ends: _Ends, sums: _FlowSums, names: AddressNames
                  ) -> tuple[dict[int, set[Translation]], dict[tuple, tuple]]:
    """Per flow, the other views of its connections (``translated``); and, per (client, server)
    pair of a view, the pair of the connection it is a view of.

    A DNS message seen only on a NAT view (the resolver pod answering, before the reply is
    translated back to the Service address) belongs to the connection it is a view of: the
    second result redirects it."""
    translations: dict[int, set[Translation]] = defaultdict(set)
    redirect: dict[tuple, tuple] = {}
    row_flow = dict(zip(sums.rows.tolist(), sums.inverse.tolist()))
    c_hi, c_lo, s_hi, s_lo, ported = ends.c_hi, ends.c_lo, ends.s_hi, ends.s_lo, ends.ported
    for ci, others in views.items():
        flow_j = row_flow[ci]
        own = (names(c_hi[ci], c_lo[ci]), names(s_hi[ci], s_lo[ci]), int(ends.s_port[ci]) if ported[ci] else None)
        for (va_hi, va_lo, va_port, vb_hi, vb_lo, vb_port), flip in others:
            view_client_a = bool(ends.client_a[ci]) ^ flip
            vc, vs = ((va_hi, va_lo), (vb_hi, vb_lo)) if view_client_a else ((vb_hi, vb_lo), (va_hi, va_lo))
            server_port = (vb_port if view_client_a else va_port) if ported[ci] else None
            view = (names(*vc), names(*vs), server_port)
            redirect.setdefault((vc, vs), ((int(c_hi[ci]), int(c_lo[ci])), (int(s_hi[ci]), int(s_lo[ci]))))
            if view != own:
                translations[flow_j].add(Translation(*view))
    return translations, redirect
