"""The C DNS parser (``_fastscan.parse_dns``) against the reference (``_dns.parse`` and
``_dns.parse_tcp_segment``, as ``_accel._parse_dns_python``), message for message.

``_dns.py`` defines the result; the C parser must give the same ``DnsMessage``s (same field
values and types: ``repr`` is compared too) or, where the reference raises ``DnsError``, the same
``()``:

* differential: every DNS message of the repository's captures (found by the decoder), and
  scapy-built ones, also cut at every length;
* hypothesis: valid messages built here (names with compression pointers, odd label bytes, A,
  AAAA with every run of zero hextets and IPv4-mapped forms, CNAME, other types, wrong record
  data lengths) over UDP and in TCP segments of several messages, a last one cut off;
* fuzz: those and the captures' messages with bytes changed, pointers written in (backwards,
  forwards, to themselves, loops), label types 0x40/0x80, names at and over 255 bytes, counts
  changed; random bytes; slice bounds outside the buffer; the buffer types the reader hands over.

Skipped (a failure in CI) when the extension was not built.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import mmap
import os
import random
import struct
import subprocess
import sys
from itertools import starmap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402

from netpol_learn._capture import _accel, _decode, _dns, _dnscount, _files  # noqa: E402

fastscan = pytest.importorskip("netpol_learn._capture._fastscan", reason="the C accelerator (_fastscan) was not built")

CAPTURES = sorted(p for p in (Path(__file__).parent.parent / "captures").rglob("*") if p.suffix in (".pcap", ".pcapng"))


# --------------------------------------------------------------------------------------------
# running both parsers


def c_parse(data, start, end, tcp, mapped_dotted=None):
    """``parse_dns_message`` in C, as ``_accel`` calls it."""
    dotted = _accel._MAPPED_DOTTED if mapped_dotted is None else mapped_dotted
    return tuple(starmap(_dns.DnsMessage, fastscan.parse_dns(data, start, end, tcp, _dns.QTYPES, _dns.RCODES, dotted)))


def parse_both(data, start=0, end=None, tcp=False):
    """The reference's result, after checking that the C parser gives the same."""
    end = len(data) if end is None else end
    ref = _accel._parse_dns_python(data, start, end, tcp)
    c = c_parse(data, start, end, tcp)
    assert c == ref and repr(c) == repr(ref), (bytes(data[start:end]).hex(), tcp, c, ref)
    return ref


def segment(*messages: bytes) -> bytes:
    """DNS over TCP: each message behind its 2-byte length."""
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def exact(data: bytes) -> np.ndarray:
    """The bytes in a buffer of exactly their size (a bytes object has a NUL after its end)."""
    return np.frombuffer(data, dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------
# building messages (with compression) by hand


class Writer:
    """A DNS message being written: names are compressed against the suffixes already written
    when ``compress`` says so."""

    def __init__(self, header: bytes, compress):
        self.buf = bytearray(header)
        self.suffixes: dict[tuple[bytes, ...], int] = {}
        self.compress = compress

    def name(self, labels: tuple[bytes, ...]) -> bytes:
        start = len(self.buf)
        for i in range(len(labels)):
            at = self.suffixes.get(labels[i:])
            if at is not None and self.compress():
                self.buf += struct.pack(">H", 0xC000 | at)
                return bytes(self.buf[start:])
            if len(self.buf) < 0x4000:
                self.suffixes[labels[i:]] = len(self.buf)
            self.buf += bytes([len(labels[i])]) + labels[i]
        self.buf += b"\x00"
        return bytes(self.buf[start:])


def build(qname, qtype, records, flags=0x8180, compress=lambda: True, trailer=b"", txid=7, counts=(0, 0)):
    """A message: ``records`` are (owner labels, type, rdata), rdata bytes or, for a name,
    a tuple of labels (written compressed, its length as the record's)."""
    w = Writer(struct.pack(">HHHHHH", txid, flags, 1, len(records), *counts), compress)
    w.name(qname)
    w.buf += struct.pack(">HH", qtype, 1)
    for owner, rtype, ttl, rdata in records:
        w.name(owner)
        at = len(w.buf)
        w.buf += struct.pack(">HHIH", rtype, 1, ttl, 0)
        data = w.name(rdata) if isinstance(rdata, tuple) else rdata
        if not isinstance(rdata, tuple):
            w.buf += data
        struct.pack_into(">H", w.buf, at + 8, len(data))
    return bytes(w.buf) + trailer


# label bytes: DNS-like text, upper case, and any byte at all (dots, NULs, backslashes, >= 0x80)
ldh = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=15)
label = st.one_of(ldh.map(str.encode), st.binary(min_size=1, max_size=15), st.sampled_from([b"\\", b".", b"\x00", b"\xff\xC3\xa9"]))
names = st.lists(label, min_size=0, max_size=4).map(tuple)
hextet = st.one_of(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0x64, 0xFF9B]), st.integers(0, 0xFFFF))
ipv6_bytes = st.one_of(
    st.lists(hextet, min_size=8, max_size=8).map(lambda h: struct.pack(">8H", *h)),
    st.binary(min_size=4, max_size=4).map(lambda v4: bytes(10) + b"\xff\xff" + v4),  # IPv4-mapped
    st.binary(min_size=4, max_size=4).map(lambda v4: bytes(12) + v4),  # IPv4-compatible
    st.binary(min_size=16, max_size=16),
)
ttls = st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


@st.composite
def records(draw, owners):
    owner = draw(st.one_of(st.sampled_from(owners), names))
    kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "other", "A-bad", "AAAA-bad", "CNAME-name-past-rdata"]))
    ttl = draw(ttls)
    if kind == "A":
        return owner, 1, ttl, draw(st.binary(min_size=4, max_size=4))
    if kind == "AAAA":
        return owner, 28, ttl, draw(ipv6_bytes)
    if kind == "CNAME":
        return owner, 5, ttl, draw(st.one_of(st.sampled_from(owners), names))
    if kind == "A-bad":  # a length other than 4: skipped
        return owner, 1, ttl, draw(st.binary(max_size=8).filter(lambda b: len(b) != 4))
    if kind == "AAAA-bad":
        return owner, 28, ttl, draw(st.binary(max_size=20).filter(lambda b: len(b) != 16))
    if kind == "CNAME-name-past-rdata":  # a CNAME's name is read to its end, whatever the length says
        return owner, 5, ttl, b""
    rtype = draw(st.sampled_from([2, 6, 12, 15, 16, 33, 41, 65, 99, 255, 0, 65535]))
    return owner, rtype, ttl, draw(st.binary(max_size=30))


@st.composite
def messages(draw):
    qname = draw(names)
    answers = draw(st.lists(records([qname]), max_size=6))
    rng = random.Random(draw(st.integers(0, 2**32)))
    compress = {"always": lambda: True, "never": lambda: False, "sometimes": lambda: rng.random() < 0.5}[
        draw(st.sampled_from(["always", "never", "sometimes"]))]
    qtype = draw(st.one_of(st.sampled_from(sorted(_dns.QTYPES)), st.integers(0, 65535)))
    trailer = draw(st.binary(max_size=6))
    if answers and answers[-1][1] == 5 and answers[-1][3] == b"":
        trailer = b"\x00" + trailer  # the name that CNAME reads past its data: the root
    return build(qname, qtype, answers, flags=draw(st.integers(0, 0xFFFF)), compress=compress,
                 trailer=trailer, txid=draw(st.integers(0, 0xFFFF)),
                 counts=(draw(st.integers(0, 3)), draw(st.integers(0, 3))))


# --------------------------------------------------------------------------------------------
# (a) differential: the captures' messages, scapy's


def _capture_messages(path):
    """(data, start, end, tcp) of every packet the decoder says carries DNS."""
    out = []
    for chunk in _files.read_chunks(path, lambda message: None):
        p = _decode.decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts)
        for i in np.flatnonzero(p.dns_at >= 0).tolist():
            out.append((chunk.data, int(p.dns_at[i]), int(p.dns_end[i]), bool(p.proto[i] == _decode.TCP)))
    return out


_MESSAGES = None


def capture_messages():
    """The DNS payloads of all the repository's captures: (bytes, tcp)."""
    global _MESSAGES
    if _MESSAGES is None:
        _MESSAGES = [(bytes(data[s:e]), tcp) for path in CAPTURES for data, s, e, tcp in _capture_messages(path)]
    return _MESSAGES


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_captures_parse_identically(path):
    for data, start, end, tcp in _capture_messages(path):
        parse_both(data, start, end, tcp)


def test_the_captures_reach_what_matters():
    parsed = [(tcp, parse_both(m, tcp=tcp)) for m, tcp in capture_messages()]
    msgs = [m for _, ms in parsed for m in ms]
    answers = {a[1] for m in msgs for a in m.answers}
    assert "A" in answers, answers  # (CNAME and AAAA answers: scapy's and hypothesis's below)
    assert any(tcp and ms for tcp, ms in parsed)
    assert any(m.response for m in msgs) and any(not m.response for m in msgs)


def test_capture_messages_cut_at_every_length():
    seen = set()
    for m, tcp in capture_messages():
        if (m, tcp) in seen:
            continue
        seen.add((m, tcp))
        for cut in range(len(m) + 1):
            parse_both(exact(m[:cut]), tcp=tcp)
            parse_both(m, 0, cut, tcp)


def test_scapy_messages():
    answers = [("a.example.com", "CNAME", 30, "b.example.com"), ("b.example.com", "A", 60, "1.2.3.4"),
               ("b.example.com", "AAAA", 60, "2001:db8::1"), ("b.example.com", "AAAA", 60, "::ffff:10.0.0.1"),
               ("b.example.com", "MX", 60, "mail.example.com"), ("b.example.com", "TXT", 60, "hello")]
    for qtype in ("A", "AAAA", "SRV", "HTTPS", 255, 99, 0):
        for rcode in range(16):
            q = bytes(g.dns_message(1, "A.Example.COM", qtype))
            r = bytes(g.dns_message(2, "A.Example.COM", qtype, True, answers, rcode))
            assert parse_both(q) and parse_both(r)
            assert len(parse_both(segment(q, r), tcp=True)) == 2
    for raw in (g.dns_pointer_loop_response(), g.dns_pointer_loop_query(), g.dns_label_past_end()):
        assert parse_both(raw) == () and parse_both(segment(raw), tcp=True) == ()


# --------------------------------------------------------------------------------------------
# (b) hypothesis: valid messages, alone and in TCP segments


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=messages())
def test_valid_messages(msg):
    assert parse_both(msg)  # valid: the reference parses it
    parse_both(exact(msg))
    assert len(parse_both(segment(msg), tcp=True)) == 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(messages(), min_size=1, max_size=4), tail=st.binary(max_size=40), cut=st.integers(0, 60))
def test_tcp_segments(msgs, tail, cut):
    seg = segment(*msgs)
    assert len(parse_both(seg, tcp=True)) == len(msgs)
    # a length prefix or a message cut off at the end: the ones before it, or () if it is the first
    parse_both(seg + tail, tcp=True)
    parse_both(seg + segment(msgs[0])[: max(1, cut)], tcp=True)
    parse_both(exact(seg[: len(seg) - cut]), tcp=True)
    parse_both(segment(b"x" * (cut % 12)) + seg, tcp=True)  # a first message under 12 bytes
    # a malformed message after good ones makes the whole segment malformed
    assert parse_both(seg + segment(g.dns_pointer_loop_query()), tcp=True) == ()


@settings(max_examples=200, deadline=None)
@given(address=ipv6_bytes)
def test_aaaa_text(address):
    """The AAAA text is ipaddress's, and the IPv4-mapped form is the one this Python writes; the
    other form (Python 3.13's ``::ffff:1.2.3.4``) on request."""
    msg = build((b"v6",), 28, [((b"v6",), 28, 60, address)])
    assert parse_both(msg)[0].answers[0][2] == ipaddress.IPv6Address(address).compressed
    mapped = ipaddress.IPv6Address(address).ipv4_mapped
    for dotted in (False, True):
        text = c_parse(msg, 0, len(msg), False, mapped_dotted=dotted)[0].answers[0][2]
        if mapped is not None:
            assert text == (f"::ffff:{mapped}" if dotted else "::ffff:{:x}:{:x}".format(*struct.unpack(">HH", address[12:])))
        else:
            assert text == ipaddress.IPv6Address(address).compressed


# --------------------------------------------------------------------------------------------
# (c) fuzz: damaged messages, random bytes


POINTERISH = np.array([0xC0, 0xC0, 0xFF, 0x3F, 0x40, 0x80, 0x00, 0x00, 0x01, 0x0C, 0x0D], dtype=np.uint8)


def _damage(rng, msg: bytes) -> bytes:
    b = bytearray(msg)
    for _ in range(int(rng.integers(1, 4))):
        if not b:
            break
        i = int(rng.integers(0, len(b)))
        what = rng.random()
        if what < 0.3:
            b[i] = int(rng.integers(0, 256))
        elif what < 0.5:
            b[i] = int(rng.choice(POINTERISH))
        elif what < 0.8 and i + 1 < len(b):  # a compression pointer: back, forward, to itself
            target = int(rng.choice([rng.integers(0, max(i, 1)), i, i + 1, rng.integers(i, len(b) + 3), 12]))
            b[i : i + 2] = struct.pack(">H", 0xC000 | (target & 0x3FFF))
        elif what < 0.9 and len(b) >= 8:  # the counts
            b[4 + 2 * int(rng.integers(0, 2))] ^= 1 << int(rng.integers(0, 8))
        else:
            del b[i]
    if rng.random() < 0.3:
        b = b[: int(rng.integers(0, len(b) + 1))]
    return bytes(b)


def _valid_corpus(rng, n):
    """Messages built here: deterministic, like hypothesis's but from a seeded generator."""
    out = []
    for _ in range(n):
        def name():
            return tuple(bytes(rng.integers(0x41, 0x7B, size=int(rng.integers(1, 8)), dtype=np.uint8))
                         for _ in range(int(rng.integers(0, 4))))
        qname = name()
        recs = []
        for _ in range(int(rng.integers(0, 5))):
            owner = qname if rng.random() < 0.6 else name()
            kind = int(rng.integers(0, 4))
            if kind == 0:
                recs.append((owner, 1, 60, bytes(rng.integers(0, 256, size=4, dtype=np.uint8))))
            elif kind == 1:
                recs.append((owner, 28, 60, bytes(rng.integers(0, 2, size=16, dtype=np.uint8))))
            elif kind == 2:
                recs.append((owner, 5, 60, name()))
            else:
                recs.append((owner, 16, 60, bytes(rng.integers(0, 256, size=int(rng.integers(0, 10)), dtype=np.uint8))))
        out.append(build(qname, int(rng.choice([1, 28, 5, 33])), recs, compress=lambda: rng.random() < 0.7))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_damaged_messages(seed):
    rng = np.random.default_rng(seed)
    corpus = [m for m, _ in capture_messages()] + _valid_corpus(rng, 300)
    for _ in range(6000):
        m = _damage(rng, corpus[int(rng.integers(0, len(corpus)))])
        parse_both(exact(m))
        if rng.random() < 0.3:
            parse_both(segment(corpus[int(rng.integers(0, len(corpus)))], m), tcp=True)
            parse_both(exact(struct.pack(">H", len(m)) + m), tcp=True)


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_random_bytes(seed):
    rng = np.random.default_rng(50 + seed)
    for _ in range(4000):
        size = int(rng.integers(0, 120))
        b = rng.integers(0, 256, size=size, dtype=np.uint8)
        hot = rng.integers(0, max(size, 1), size=size // 3)
        if size:
            b[hot] = rng.choice(POINTERISH, size=len(hot))
        if size >= 12 and rng.random() < 0.7:  # one question, a few answers: get past the header
            b[4:8] = (0, 1, 0, int(rng.integers(0, 4)))
        parse_both(exact(b.tobytes()))
        parse_both(b.tobytes(), tcp=True)
        if size >= 2:
            parse_both(exact(struct.pack(">H", size) + b.tobytes()), tcp=True)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=80), tcp=st.booleans())
def test_hypothesis_bytes(raw, tcp):
    parse_both(exact(raw), tcp=tcp)
    parse_both(exact(bytes(4) + b"\x00\x01\x00\x01" + bytes(4) + raw), tcp=tcp)


def _long_name(total: int) -> bytes:
    """A name of ``total`` bytes of labels and their length bytes (without the final zero)."""
    labels = []
    left = total
    while left > 0:
        size = min(63, left - 1)
        if left - (size + 1) == 1:  # never leave one byte: no label is that short
            size -= 1
        labels.append(bytes([size]) + b"A" * size)
        left -= size + 1
    name = b"".join(labels)
    assert len(name) == total
    return name + b"\x00"


def test_pointers_loops_and_long_names():
    header = struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    q = b"\x01a\x00" + struct.pack(">HH", 1, 1)
    a_rec = struct.pack(">HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"
    cases = {
        "pointer to the question": header + q + b"\xc0\x0c" + a_rec,
        "pointer to itself": header + q + b"\xc0\x13" + a_rec,
        "pointer forward": header + q + b"\xc0\x20" + a_rec,
        "pointer past the end": header + q + b"\xff\xff" + a_rec,
        "pointer cut off": header + q + b"\xc0",
        # answer 1 is b.a (labels, then a pointer to the question), answer 2 a pointer to it
        "pointer chain backwards": struct.pack(">HHHHHH", 7, 0x8180, 1, 2, 0, 0) + q + b"\x01b\xc0\x0c" + a_rec + b"\xc0\x13" + a_rec,
        "two pointers in a loop": header[:6] + b"\x00\x00" + bytes(4) + b"\xc0\x0e\xc0\x0c" + struct.pack(">HH", 1, 1),
        "label type 0x40": header + b"\x41a\x00" + q[3:],
        "label type 0x80": header + b"\x81a\x00" + q[3:],
        # answer 2's name points at the pointer inside answer 1's name (offset 23)
        "pointer to a pointer": struct.pack(">HHHHHH", 7, 0x8180, 1, 2, 0, 0) + b"\x03abc\x00" + q[3:] + b"\x01x\xc0\x0c"
                                + a_rec + b"\xc0\x17" + a_rec,
        "rdata past the end": header + q + b"\xc0\x0c" + a_rec[:-1],
        "CNAME name past the end": header + q + b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, 2) + b"\x05ab",
        "zero questions": struct.pack(">HHHHHH", 7, 0x8180, 0, 0, 0, 0),
        "two questions": struct.pack(">HHHHHH", 7, 0x8180, 2, 0, 0, 0) + q + q,
        "65535 answers": struct.pack(">HHHHHH", 7, 0x8180, 1, 65535, 0, 0) + q + b"\xc0\x0c" + a_rec,
    }
    # a qname of 255 bytes of labels parses, 256 does not; also when reached through a pointer
    for total in (253, 254, 255, 256, 257, 300):
        name = _long_name(total)
        cases[f"name of {total}"] = struct.pack(">HHHHHH", 7, 0x8180, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
        cases[f"pointer to a name of {total}"] = (
            struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0) + name + struct.pack(">HH", 1, 1) + b"\xc0\x0c" + a_rec)
        cases[f"name of {total} by a pointer and labels"] = (
            struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0) + name + struct.pack(">HH", 1, 1) + b"\x01b\xc0\x0c" + a_rec)
    results = {what: parse_both(exact(raw)) for what, raw in cases.items()}
    for raw in cases.values():
        parse_both(segment(raw), tcp=True)
    assert results["pointer to the question"][0].answers == (("a", "A", "1.2.3.4", 60),)
    assert [a[0] for a in results["pointer chain backwards"][0].answers] == ["b.a", "b.a"]
    assert [a[0] for a in results["pointer to a pointer"][0].answers] == ["x.abc", "abc"]
    assert results["name of 255"] and not results["name of 256"]
    assert results["pointer to a name of 255"] and not results["pointer to a name of 256"]
    assert results["name of 253 by a pointer and labels"] and not results["name of 254 by a pointer and labels"]
    for bad in ("pointer to itself", "pointer forward", "two pointers in a loop", "label type 0x40", "label type 0x80"):
        assert results[bad] == (), bad


def test_non_ascii_and_upper_case_names():
    msg = build((b"Caf\xc3\xa9", b"\x00.\\", b"EXAMPLE", bytes(range(0x7E, 0x84))), 1, [])
    (parsed,) = parse_both(msg)
    assert parsed.qname == b"Caf\xc3\xa9".decode("ascii", "backslashreplace").lower() + ".\x00.\\.example.~\x7f\\x80\\x81\\x82\\x83"
    # every byte value in a label
    for b in range(256):
        parse_both(build((bytes([b]), bytes([b]) * 3), b, [((bytes([b]),), 5, b, (bytes([b, b]),))]))


def test_rcodes_and_qtypes():
    for flags in range(0, 0x10000, 0x0701):
        for qtype in (*_dns.QTYPES, 0, 3, 254, 256, 65535):
            parse_both(build((b"x",), qtype, [], flags=flags))
    (m,) = parse_both(build((b"x",), 4242, [], flags=0x800F))
    assert (m.response, m.rcode, m.qtype) == (True, "15", "TYPE4242")


# --------------------------------------------------------------------------------------------
# the call: slice bounds, buffer types, the wiring


def test_slice_bounds_and_buffer_types(tmp_path):
    msg = build((b"a", b"example"), 1, [((b"a", b"example"), 1, 5, b"\x01\x02\x03\x04")])
    data = b"\xc0" * 5 + segment(msg) + msg + b"\xff" * 3
    tcp_at, udp_at = 5, 5 + 2 + len(msg)
    path = tmp_path / "buf"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for buf in (data, bytearray(data), memoryview(data), exact(data), mapped):
            assert parse_both(buf, udp_at, udp_at + len(msg)) and parse_both(buf, tcp_at, udp_at, tcp=True)
            for start in (-1000, -len(msg) - 3, -3, 0, 4, tcp_at, udp_at, len(data), len(data) + 5, 2**62):
                for end in (-1000, -3, 0, udp_at, udp_at + len(msg), len(data), len(data) + 5, 2**62, -(2**62)):
                    for tcp in (False, True):
                        parse_both(buf, start, end, tcp)
    parse_both(data, np.int64(udp_at), np.int64(udp_at + len(msg)), np.bool_(False))
    parse_both(data, 2**70, -(2**70), True)  # ints beyond Py_ssize_t clamp like a slice's
    with pytest.raises(TypeError):
        fastscan.parse_dns(data, 0, 10, False, _dns.QTYPES, _dns.RCODES)
    with pytest.raises(TypeError):
        fastscan.parse_dns("text", 0, 10, False, _dns.QTYPES, _dns.RCODES, False)
    for start, end in (("0", 10), (0, 1.5)):
        with pytest.raises(TypeError):
            fastscan.parse_dns(data, start, end, False, _dns.QTYPES, _dns.RCODES, False)
    with pytest.raises(TypeError):
        fastscan.parse_dns(data, 0, 10, False, list(_dns.QTYPES), _dns.RCODES, False)


def test_the_engines_and_the_counter_use_it(monkeypatch):
    msg = build((b"a",), 1, [((b"a",), 1, 5, b"\x01\x02\x03\x04")])
    expected = parse_both(msg)
    monkeypatch.setattr(_accel, "_fastscan", fastscan)
    for engine in ("c", "python"):
        monkeypatch.setattr(_accel, "ENGINE", engine)
        assert _accel.parse_dns_message(msg, 0, len(msg), False) == expected
        assert _dnscount._parse_message(msg, 0, len(msg), False) == expected
        assert _dnscount._parse_message(msg, 0, 5, False) == ()
    monkeypatch.setattr(_accel, "ENGINE", "c")
    monkeypatch.setattr(fastscan, "parse_dns", lambda *args: (("c", "was", "called", "", ()),), raising=True)
    assert _dnscount._parse_message(msg, 0, len(msg), False) == (_dns.DnsMessage("c", "was", "called", "", ()),)


def test_a_module_without_the_dns_parser_is_not_used():
    """A compiled module from before parse_dns (no DNS_FIELDS) is refused as a whole."""
    code = """
import sys, types, warnings, importlib
import netpol_learn._capture as pkg
from netpol_learn._capture import _fastscan as real, _accel
stale = types.ModuleType(real.__name__)
stale.__file__ = "stale.so"
for k in ("OUTPUTS", "WALK_LIMIT", "WALK_NEED_DATA", "WALK_OVER_SNAPLEN", "decode", "walk_pcap"):
    setattr(stale, k, getattr(real, k))
sys.modules[real.__name__] = stale
pkg._fastscan = stale
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    importlib.reload(_accel)
print(_accel.ENGINE, any("does not match" in str(w.message) for w in caught))
"""
    env = {k: v for k, v in os.environ.items() if k != _accel.ENV_PURE_PYTHON}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["python", "True"]
    assert fastscan.DNS_FIELDS == tuple(f.name for f in dataclasses.fields(_dns.DnsMessage))
