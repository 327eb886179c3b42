"""The engine for the capture stage's per-packet hot path: the C accelerator or the reference code.

Two loops run once per packet: walking the pcap record headers (``walk_pcap``, used by
``_files``) and decoding each packet's headers (``decode``); a third runs once per distinct DNS
message (``parse_dns_message``, used by ``_dnscount``). Each exists twice:

* the reference implementation, in Python/numpy: ``_decode.decode``, ``_walk_pcap_python`` below
  and ``_dns.parse``/``_dns.parse_tcp_segment`` (``_parse_dns_python`` below). They define what
  the results are.
* ``_fastscan`` (``_fastscan.c``), an optional C extension built at install time when a compiler
  is available, which gives bit for bit the same results about ten times faster
  (tests/test_fastscan.py and tests/test_dns_fastscan.py compare the two, also on random bytes).

The C engine is used when it was built and the environment variable ``NETPOL_LEARN_PURE_PYTHON``
is not set (or is empty or ``0``). ``ENGINE`` says which one is in use; tests switch it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
import warnings
from itertools import repeat, starmap

import numpy as np

from netpol_learn._capture import _decode, _dns

ENV_PURE_PYTHON = "NETPOL_LEARN_PURE_PYTHON"

_fastscan = None
if os.environ.get(ENV_PURE_PYTHON, "") in ("", "0"):
    try:
        from netpol_learn._capture import _fastscan  # type: ignore[attr-defined,no-redef]
    except ImportError:  # not built (no compiler at install time): the reference code is used
        _fastscan = None

# Why walk_pcap stopped (the same codes as _fastscan's).
WALK_LIMIT = 0  # max_records records walked
WALK_NEED_DATA = 1  # the next record header or record does not fit in n bytes
WALK_OVER_SNAPLEN = 2  # the record at the returned position has a captured length over snaplen or
#                        over its own original length (not a whole record: the caller decides)

# The C decoder's output arrays, in its order: (name, dtype).
_OUTPUTS = (
    ("status", np.int8), ("src_hi", np.uint64), ("src_lo", np.uint64), ("dst_hi", np.uint64),
    ("dst_lo", np.uint64), ("proto", np.int64), ("sport", np.int64), ("dport", np.int64),
    ("iplen", np.int64), ("ipid", np.int64), ("frag", np.int64), ("ev_src", np.int64),
    ("ev_dst", np.int64), ("fingerprint", np.uint64), ("tcp_seq", np.int64), ("tcp_ack", np.int64),
    ("tcp_next", np.int64), ("tcp_flags", np.int64), ("dns_at", np.int64), ("dns_end", np.int64),
    ("tunnel", np.int8),
    ("outer_src_hi", np.uint64), ("outer_src_lo", np.uint64), ("outer_dst_hi", np.uint64),
    ("outer_dst_lo", np.uint64),
)
if _fastscan is not None and (
    getattr(_fastscan, "OUTPUTS", None) != tuple(name for name, _ in _OUTPUTS)
    or (getattr(_fastscan, "WALK_LIMIT", None), getattr(_fastscan, "WALK_NEED_DATA", None),
        getattr(_fastscan, "WALK_OVER_SNAPLEN", None)) != (WALK_LIMIT, WALK_NEED_DATA, WALK_OVER_SNAPLEN)
    or getattr(_fastscan, "DNS_FIELDS", None) != tuple(f.name for f in dataclasses.fields(_dns.DnsMessage))
):
    # A compiled module left over from another version of this file: never use it.
    warnings.warn(f"{_fastscan.__file__} does not match this version of netpol-learn; using the "
                  "pure Python code (reinstall to rebuild it)", RuntimeWarning, stacklevel=1)
    _fastscan = None

#: ``"c"`` when the C accelerator is in use, ``"python"`` for the reference implementation.
ENGINE = "c" if _fastscan is not None else "python"


def decode(data, off: np.ndarray, caplen: np.ndarray, link: np.ndarray, ts: np.ndarray) -> _decode.Packets:
    """``_decode.decode``, in C when the accelerator is in use. Same arguments, same result."""
    if ENGINE != "c":
        return _decode.decode(data, off, caplen, link, ts)
    try:
        return _decode_c(_fastscan, data, off, caplen, link, ts)
    except ValueError:
        # Outside the C code's domain (negative or huge offsets, a buffer under 8 bytes): the
        # reference decides what happens.
        return _decode.decode(data, off, caplen, link, ts)


def _decode_c(module, data, off: np.ndarray, caplen: np.ndarray, link: np.ndarray, ts: np.ndarray) -> _decode.Packets:
    """``module.decode`` (the C decoder) with freshly allocated outputs, as a ``Packets``."""
    n = len(off)
    out = [np.empty(n, dtype=dtype) for _, dtype in _OUTPUTS]
    module.decode(
        data,
        np.ascontiguousarray(off, dtype=np.int64),
        np.ascontiguousarray(caplen, dtype=np.int64),
        np.ascontiguousarray(link, dtype=np.int64),
        out,
    )
    f = dict(zip((name for name, _ in _OUTPUTS), out))
    outer = (f.pop("outer_src_hi"), f.pop("outer_src_lo"), f.pop("outer_dst_hi"), f.pop("outer_dst_lo"))
    return _decode.Packets(ts=ts, outer=outer, **f)


def walk_pcap(buf, pos: int, n: int, big_endian: bool, snaplen: int, max_records: int, out: np.ndarray,
              out_sec: np.ndarray | None = None, out_frac: np.ndarray | None = None,
              out_caplen: np.ndarray | None = None) -> tuple[int, int, int]:
    """Walk classic pcap record headers in ``buf[0:n]`` from ``pos``.

    Writes the offset of each record's header to ``out`` (int64, at least ``max_records``
    long) and, when given, the header's seconds, fraction of a second and captured length to
    ``out_sec``, ``out_frac``, ``out_caplen`` (int64, as long). Returns ``(count, pos, reason)``:
    ``pos`` is where the walk stopped and ``reason`` why: ``WALK_LIMIT`` (``max_records``
    walked), ``WALK_NEED_DATA`` (the next header or record does not fit in ``n``) or
    ``WALK_OVER_SNAPLEN`` (the record at ``pos`` has a captured length over ``snaplen`` or over
    its original length; it is left to the caller).
    """
    if ENGINE == "c":
        return _fastscan.walk_pcap(buf, pos, n, big_endian, snaplen, max_records, out, out_sec, out_frac, out_caplen)
    return _walk_pcap_python(buf, pos, n, big_endian, snaplen, max_records, out, out_sec, out_frac, out_caplen)


_LENGTHS_OF = {False: struct.Struct("<II").unpack_from, True: struct.Struct(">II").unpack_from}


def _walk_pcap_python(buf, pos: int, n: int, big_endian: bool, snaplen: int, max_records: int, out: np.ndarray,
                      out_sec: np.ndarray | None = None, out_frac: np.ndarray | None = None,
                      out_caplen: np.ndarray | None = None) -> tuple[int, int, int]:
    """The reference ``walk_pcap``: a plain loop over ``struct.unpack_from``, one unpack and three
    comparisons per record (several million records a second); the header fields are then read
    for all records at once with numpy."""
    big_endian = bool(big_endian)
    lengths_of = _LENGTHS_OF[big_endian]
    offs: list[int] = []
    append = offs.append
    reason = WALK_LIMIT
    for _ in repeat(None, max_records):
        if pos + 16 > n:
            reason = WALK_NEED_DATA
            break
        incl, orig = lengths_of(buf, pos + 8)
        if incl > snaplen or incl > orig:
            reason = WALK_OVER_SNAPLEN
            break
        end = pos + 16 + incl
        if end > n:
            reason = WALK_NEED_DATA
            break
        append(pos)
        pos = end
    count = len(offs)
    out[:count] = offs
    if count and (out_sec is not None or out_frac is not None or out_caplen is not None):
        # Every offset of buf read as a 32-bit integer (stride 1, unaligned reads).
        u32 = np.ndarray(shape=(len(buf) - 3,), dtype=(">u4" if big_endian else "<u4"), buffer=buf, offset=0, strides=(1,))
        at = out[:count]
        for dst, field in ((out_sec, 0), (out_frac, 4), (out_caplen, 8)):
            if dst is not None:
                dst[:count] = u32[at + field]
    return count, pos, reason


# How this Python's ipaddress writes an IPv4-mapped IPv6 address: ``::ffff:102:304`` up to 3.12,
# ``::ffff:1.2.3.4`` from 3.13 on. The C parser writes the same as the reference does here.
_MAPPED_DOTTED = ipaddress.IPv6Address(bytes(10) + b"\xff\xff\x01\x02\x03\x04").compressed == "::ffff:1.2.3.4"


def parse_dns_message(data, start: int, end: int, tcp: bool) -> tuple[_dns.DnsMessage, ...]:
    """The DNS messages in ``data[start:end]`` (TCP: a segment of length-prefixed messages), or
    () when they cannot be parsed (the reference raises ``DnsError``); in C when the accelerator
    is in use. Same arguments, same result."""
    if ENGINE == "c":
        return tuple(starmap(_dns.DnsMessage, _fastscan.parse_dns(data, start, end, tcp, _dns.QTYPES, _dns.RCODES,
                                                                  _MAPPED_DOTTED)))
    return _parse_dns_python(data, start, end, tcp)


def _parse_dns_python(data, start: int, end: int, tcp: bool) -> tuple[_dns.DnsMessage, ...]:
    """The reference ``parse_dns_message``: ``_dns``'s parser, its ``DnsError`` as ()."""
    try:
        if tcp:
            return tuple(_dns.parse_tcp_segment(bytes(data[start:end])))
        return (_dns.parse(bytes(data[start:end])),)
    except _dns.DnsError:
        return ()
