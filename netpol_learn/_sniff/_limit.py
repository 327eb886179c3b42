"""The bound on connections per interval: ``ConnectionLimit``."""

from __future__ import annotations

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


class ConnectionLimit:
    """Admits at most ``limit`` distinct connections; packets of any other are dropped and counted."""

    def __init__(self, limit: int):
        self.limit = limit
        self.known = np.zeros(0, dtype=np.uint64)
        self.rejected = np.zeros(0, dtype=np.uint64)  # remembered up to ``limit``, to count each once
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
        fresh = rejected[~_in_sorted(rejected, self.rejected)]
        self.dropped_connections += len(fresh)
        if len(self.rejected) < self.limit:
            self.rejected = np.union1d(self.rejected, fresh[: self.limit - len(self.rejected)])
        drop = _in_sorted(key, rejected)
        self.dropped_packets += int(drop.sum())
        keep = np.ones(len(p), dtype=bool)
        keep[ok[drop]] = False
        return _subset(p, keep)
