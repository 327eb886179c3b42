"""The bound on connections per interval: ``ConnectionLimit``."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from netpol_learn._capture import OK, Packets, mix


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    if not len(table):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


def _subset(p: Packets, keep: np.ndarray) -> Packets:
    parts = {f.name: getattr(p, f.name) for f in fields(p)}
    return Packets(**{k: (tuple(a[keep] for a in v) if k == "outer" else v[keep]) for k, v in parts.items()})


#: Distinct dropped connections counted exactly (their keys kept, 8 bytes each: 512 KiB at most).
EXACT_DROPPED = 1 << 16
#: Beyond that, the count is estimated from a map of this many bits (1 MiB, allocated when the
#: exact count is exceeded): linear counting, one standard error under 0.1% up to about 50 M
#: distinct connections an interval, a lower bound once the map is full (about 130 M). A key is
#: ``mix``'s 64-bit hash already: its high bits are the map's index as they are.
DROPPED_MAP_BITS = 1 << 23
_MAP_SHIFT = np.uint64(64 - 23)


class ConnectionLimit:
    """Admits at most ``limit`` distinct connections; packets of any other are dropped and counted.

    ``dropped_connections`` counts each dropped connection once however many of its packets come
    (and in however many batches): exactly up to ``EXACT_DROPPED`` of them, beyond that estimated
    by linear counting over ``DROPPED_MAP_BITS`` bits (the high bits of the connection's key), so
    that the counting too is bounded in memory. ``dropped_packets`` is exact."""

    def __init__(self, limit: int):
        self.limit = limit
        self.known = np.zeros(0, dtype=np.uint64)
        self.rejected: np.ndarray | None = np.zeros(0, dtype=np.uint64)  # sorted; None once past EXACT_DROPPED
        self.seen_map: np.ndarray | None = None  # DROPPED_MAP_BITS bits, once past EXACT_DROPPED
        self.map_ones = 0
        self.dropped_connections = 0
        self.dropped_packets = 0

    def __call__(self, p: Packets) -> Packets:
        ok = np.flatnonzero(p.status == OK)
        if not ok.size:
            return p
        end_a = mix(p.src_hi[ok], p.src_lo[ok], p.sport[ok])
        end_b = mix(p.dst_hi[ok], p.dst_lo[ok], p.dport[ok])
        key = mix(p.proto[ok], np.minimum(end_a, end_b), np.maximum(end_a, end_b))
        known = _in_sorted(key, self.known)
        if known.all():
            return p
        new, first = np.unique(key[~known], return_index=True)
        room = max(self.limit - len(self.known), 0)
        if len(new) <= room:
            self.known = np.union1d(self.known, new)
            return p
        by_arrival = new[np.argsort(first, kind="stable")]
        self.known = np.union1d(self.known, by_arrival[:room])
        rejected = np.sort(by_arrival[room:])
        self._count(rejected)
        drop = _in_sorted(key, rejected)
        self.dropped_packets += int(drop.sum())
        keep = np.ones(len(p), dtype=bool)
        keep[ok[drop]] = False
        return _subset(p, keep)

    def _count(self, rejected: np.ndarray) -> None:
        """Count the distinct connections of ``rejected`` (sorted, unique) not counted before."""
        if self.rejected is not None:
            merged = np.union1d(self.rejected, rejected)
            if len(merged) <= EXACT_DROPPED:
                self.rejected = merged
                self.dropped_connections = len(merged)
                return
            # Past the exact count: the map's estimate from here on, of every key so far.
            self.rejected, rejected = None, merged
            self.seen_map = np.zeros(DROPPED_MAP_BITS // 8, dtype=np.uint8)
        at = np.unique(rejected >> _MAP_SHIFT)
        byte, bit = at >> np.uint64(3), np.left_shift(1, (at & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        unset = (self.seen_map[byte] & bit) == 0  # distinct bits: the map as it was is enough
        self.map_ones += int(unset.sum())
        np.bitwise_or.at(self.seen_map, byte[unset], bit[unset])
        ones = min(self.map_ones, DROPPED_MAP_BITS - 1)
        self.dropped_connections = round(-DROPPED_MAP_BITS * math.log1p(-ones / DROPPED_MAP_BITS))
