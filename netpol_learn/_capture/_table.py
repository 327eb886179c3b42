"""Tables of numpy columns, and the connection table the aggregator keeps.

A table is a dict of equally long numpy arrays, one per column. The connection table has one row
per connection (5-tuple), its sides in canonical order: side A is the lower (address, port)
endpoint, side B the other (``CONN_FIELDS`` below). ``group`` reduces rows that share a ``key``;
``reduce_connections`` is that reduction for connection rows.
"""

from __future__ import annotations

import numpy as np

#: The connection table's columns:
#:
#: ``key``                    uint64 hash of (protocol, side A, side B), one per connection
#: ``a_hi a_lo b_hi b_lo``    uint64: the sides' addresses as 128 bits (IPv4 as ::ffff:a.b.c.d)
#: ``a_port b_port proto``    int64 (ICMP echo: the identifier as both ports)
#: ``packets bytes``          int64 sums
#: ``first last``             int64 nanoseconds: first and last packet seen
#: ``ev``                     int64 direction evidence: bit i of the low byte says side A is the
#:                            client by ``EVIDENCE_METHODS[i]``, of the high byte side B
#: ``first_from_a``           bool: the earliest packet was sent by side A
#: ``sent``                   int64 bits, ORed: what each side sent (``SENT_*`` below): side A a
#:                            packet without RST (1), an RST (2); side B the same (4, 8)
#: ``a_packets``              int64 sum: the packets side A sent (side B sent the rest)
#: ``a_spoke b_spoke``        int64 max: the last packet without RST that side A (B) sent, ns;
#:                            ``NEVER`` when none: a TCP connection lasts while both sides speak
CONN_FIELDS = ("key", "a_hi", "a_lo", "b_hi", "b_lo", "a_port", "b_port", "proto",
               "packets", "bytes", "first", "last", "ev", "first_from_a", "sent", "a_packets", "a_spoke", "b_spoke")
NEVER = np.iinfo(np.int64).min

#: ``sent`` bits of side A; side B's are these shifted left by ``SENT_B_SHIFT``.
SENT_PLAIN, SENT_RST = 1, 2
SENT_B_SHIFT = 2


def empty_table() -> dict[str, np.ndarray]:
    """A connection table without rows."""
    t = {k: np.zeros(0, dtype=np.int64) for k in CONN_FIELDS}
    for k in ("key", "a_hi", "a_lo", "b_hi", "b_lo"):
        t[k] = np.zeros(0, dtype=np.uint64)
    t["first_from_a"] = np.zeros(0, dtype=bool)
    return t


def group(t: dict[str, np.ndarray], sums=(), mins=(), maxs=(), ors=(), then=()) -> dict[str, np.ndarray]:
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


def reduce_connections(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One record per connection: counts add, last seen takes the max, evidence and what each side
    sent OR, and the first seen and the direction of the earliest packet come from the earliest
    record."""
    return group(t, sums=("packets", "bytes", "a_packets"), maxs=("last", "a_spoke", "b_spoke"), ors=("ev", "sent"),
                 then=(t["first"], ~t["first_from_a"]))


def swap_sides_sent(sent):
    """``sent`` bits (int or array) of a connection seen with its sides the other way round."""
    side = SENT_PLAIN | SENT_RST
    return ((sent & side) << SENT_B_SHIFT) | ((sent >> SENT_B_SHIFT) & side)


def concat(tables: list[dict | None]) -> dict | None:
    """Tables of the same columns, one after the other, in one copy; None where there are none."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    return tables[0] if len(tables) == 1 else {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
