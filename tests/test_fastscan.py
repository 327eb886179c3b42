"""The C accelerator (``_fastscan``) against the reference code, bit for bit.

``_decode.decode`` (numpy) and ``_accel._walk_pcap_python`` define the results; the C decoder and
walker must give exactly the same arrays for every input:

* differential: the real captures, and scapy-built packets covering every link type, VLAN/QinQ,
  IPv4 options and fragments, IPv6 extension headers and fragments, TCP/UDP/SCTP/ICMP/ICMPv6,
  every tunnel kind and nesting depth, DNS over UDP and TCP, each also cut at every length;
* fuzz (seeded, plus hypothesis): random bytes, damaged and truncated packets, random link types,
  packets running past the end of the buffer; outputs identical and no crash;
* the walker: same offsets and headers on the real captures and on damaged files, and the whole
  reader (``read_chunks``: chunks and warnings) the same under both engines.

These tests use the C module directly, so they run whatever ``NETPOL_LEARN_PURE_PYTHON`` says; they
are skipped (a failure in CI) when the extension was not built.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402

from netpol_learn._capture import _accel, _decode, _files  # noqa: E402
from netpol_learn._capture import PAD  # noqa: E402

fastscan = pytest.importorskip("netpol_learn._capture._fastscan", reason="the C accelerator (_fastscan) was not built")

REAL = Path(__file__).parent.parent / "captures" / "real"
REAL_CAPTURES = sorted(p for p in REAL.iterdir() if p.suffix in (".pcap", ".pcapng"))

#: Every link type the reader accepts, and a few it does not.
LINKS = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276)
ODD_LINKS = (2, 105, 147, 0x7FFFFFFF, -1)


# --------------------------------------------------------------------------------------------
# running both decoders


def c_decode(data, off, caplen, link, ts=None):
    ts = np.zeros(len(off), dtype=np.int64) if ts is None else ts
    return _accel._decode_c(fastscan, data, off, caplen, link, ts)


def ref_decode(data, off, caplen, link, ts=None):
    ts = np.zeros(len(off), dtype=np.int64) if ts is None else ts
    return _decode.decode(data, off, caplen, link, ts)


def assert_same(c: _decode.Packets, ref: _decode.Packets, context=None) -> None:
    """Every field of every packet equal, with the same dtype."""
    assert len(c) == len(ref)
    for f in dataclasses.fields(_decode.Packets):
        a, b = getattr(c, f.name), getattr(ref, f.name)
        pairs = zip((f"outer[{i}]" for i in range(4)), a, b) if f.name == "outer" else [(f.name, a, b)]
        for name, x, y in pairs:
            assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
            if not np.array_equal(x, y):
                bad = np.flatnonzero(x != y)[:5]
                where = [context[i] for i in bad] if context is not None else bad.tolist()
                raise AssertionError(f"{name} differs at {where}: C {x[bad].tolist()} != reference {y[bad].tolist()}")


def decode_both(data, off, caplen, link, context=None) -> _decode.Packets:
    off = np.asarray(off, dtype=np.int64)
    caplen = np.asarray(caplen, dtype=np.int64)
    link = np.asarray(link, dtype=np.int32)
    ts = np.arange(len(off), dtype=np.int64)
    ref = ref_decode(data, off, caplen, link, ts)
    c = c_decode(data, off, caplen, link, ts)
    assert_same(c, ref, context)
    assert c.ts is ts
    return ref


def exact(data: bytes) -> np.ndarray:
    """The bytes in a buffer of exactly their size (a bytes object has a NUL byte after its end,
    which would hide a one-byte over-read from AddressSanitizer)."""
    return np.frombuffer(data, dtype=np.uint8).copy()


def decode_frames(frames, pad=PAD, context=None) -> _decode.Packets:
    """``frames``: (bytes, link) pairs, laid out back to back with ``pad`` bytes after the last."""
    sizes = [len(f) for f, _ in frames]
    off = np.cumsum([0] + sizes[:-1])
    data = b"".join(f for f, _ in frames) + bytes(pad)
    if len(data) < 8:
        data += bytes(8 - len(data))
    if pad < 8:
        data = exact(data)
    return decode_both(data, off, sizes, [link for _, link in frames], context)


# --------------------------------------------------------------------------------------------
# the corpus: packets of every kind, framed for every link type

V4A, V4B, V4C = "10.244.0.5", "10.96.0.10", "172.18.0.2"
V6A, V6B = "fd00:10:244::5", "fd00:10:96::a"
NODE_A, NODE_B = "172.18.0.2", "172.18.0.3"


def _raw_ipv6(nh_chain, final_nh=6, payload=b"", plen=None, version=6):
    """An IPv6 packet with the given extension headers (list of (type, bytes)) before a TCP
    header; built by hand so that scapy does not fix anything."""
    body = b""
    types = [t for t, _ in nh_chain] + [final_nh]
    for (t, hdr), nxt in zip(nh_chain, types[1:]):
        body += bytes([nxt]) + hdr[1:]
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 0x50, 0x02, 1024, 0, 0) + payload
    body += tcp
    first = types[0]
    src = bytes.fromhex("fd00001002440000000000000000000" + "5")
    dst = bytes.fromhex("fd00001000960000000000000000000" + "a")
    length = len(body) if plen is None else plen
    return struct.pack("!IHBB", version << 28, length, first, 64) + src + dst + body


def _ext(kind, n=0):
    """An IPv6 extension header of ``kind`` with length field ``n`` (next header patched later)."""
    if kind == 44:  # fragment: 8 bytes
        return (44, bytes([0, 0]) + struct.pack("!HI", n, 0xABCDEF))
    if kind == 51:  # AH: (n + 2) * 4 bytes
        return (51, bytes([0, n]) + bytes((n + 2) * 4 - 2))
    return (kind, bytes([0, n]) + bytes((n + 1) * 8 - 2))


def l3_packets():
    """(name, layer-3 packet) pairs: every protocol and header variant the decoder handles."""
    out = []

    def add(name, records):
        for i, r in enumerate(records):
            out.append((f"{name}#{i}", r[-1]))

    for a, b, fam in ((V4A, V4B, "v4"), (V6A, V6B, "v6")):
        add(f"tcp-{fam}", g.tcp_session(a, b, 40000, 443))
        add(f"tcp-mid-{fam}", g.tcp_data_exchange(a, b, 40001, 8080))
        add(f"udp-{fam}", g.udp_exchange(a, b, 40002, 9999))
        add(f"udp-empty-{fam}", g.udp_exchange(a, b, 40003, 9998, request=b"", response=b"x"))
        add(f"dns-udp-{fam}", g.dns_udp(a, b, "api.example.com", answers=[("api.example.com", "A", 60, "1.2.3.4")]))
        add(f"dns-udp-aaaa-{fam}", g.dns_udp(a, b, "svc.cluster.local", "AAAA", answers=[("svc.cluster.local", "AAAA", 30, "fd00::1")]))
        add(f"dns-tcp-{fam}", g.dns_tcp(a, b, "db.shop.svc.cluster.local", answers=[("db.shop.svc.cluster.local", "A", 5, "10.96.3.4")]))
        add(f"dns-short-{fam}", g.raw_dns_udp(a, b, b"\x12\x34\x01"))
        add(f"dns-short-reply-{fam}", g.raw_dns_udp(a, b, b"\x12\x34\x81\x80" + bytes(8), to_resolver=False))
        add(f"sctp-{fam}", g.sctp_init(a, b, 40004, 3868))
        add(f"icmp-{fam}", g.icmp_echo(a, b))
        add(f"esp-{fam}", g.other_protocol(a, b))
    add("loopback-v4", g.tcp_session("127.0.0.1", "127.0.0.53", 40005, 53))
    add("loopback-v4-dst", g.udp_exchange(V4A, "127.0.0.1", 40006, 53))
    add("loopback-v6", g.tcp_session("::1", "::1", 40007, 8080))
    add("icmp-control", g.icmp_control_messages())
    add("ipv4-options", g.ipv4_with_options(V4A, V4B, 40008, 443))
    add("ipv6-ext", g.ipv6_with_ext_headers(V6A, V6B, 40009, 443))
    add("ipv4-frag", g.ipv4_fragments(V4A, V4B, 40010, 5000))
    add("ipv6-frag", g.ipv6_fragments(V6A, V6B, 40011, 5000))
    add("ipv4-frag-small", g.ipv4_fragments(V4A, V4B, 40012, 5000, size=60, fragsize=16))
    # by hand: what scapy would not build
    out += [
        ("ipv6-ah", _raw_ipv6([_ext(0), _ext(51, 4), _ext(60, 1)])),
        ("ipv6-frag-then-dest", _raw_ipv6([_ext(44, (185 << 3) | 1), _ext(60)])),
        ("ipv6-first-frag", _raw_ipv6([_ext(44, 1)], payload=b"abcdefghijklmnopqrst")),
        ("ipv6-frag-offset-only", _raw_ipv6([_ext(44, 7 << 3)])),
        ("ipv6-two-frag-headers", _raw_ipv6([_ext(44, 1), _ext(44, 9 << 3)])),
        ("ipv6-nine-ext", _raw_ipv6([_ext(60)] * 9)),
        ("ipv6-eight-ext", _raw_ipv6([_ext(43)] * 8)),
        ("ipv6-ext-kinds", _raw_ipv6([_ext(k) for k in (0, 43, 60, 135, 139, 140)])),
        ("ipv6-long-ext", _raw_ipv6([_ext(60, 30)])),
        ("ipv6-jumbo", _raw_ipv6([], payload=b"x" * 20, plen=0)),
        ("ipv6-plen-short", _raw_ipv6([], payload=b"x" * 20, plen=10)),
        ("ipv6-plen-long", _raw_ipv6([], payload=b"x" * 20, plen=4000)),
        ("ipv6-bad-version", _raw_ipv6([], version=4)),
        ("ipv6-no-next", _raw_ipv6([_ext(0)], final_nh=59)),
        ("ipv4-bad-version", b"\x65" + bytes(g.ip(V4A, V4B) / g.TCP())[1:]),
        ("ipv4-ihl-4", b"\x44" + bytes(g.ip(V4A, V4B) / g.TCP())[1:]),
        ("ipv4-ihl-15", b"\x4f" + bytes(g.ip(V4A, V4B) / g.TCP())[1:]),
        ("ipv4-total-short", bytes(g.ip(V4A, V4B, len=12) / g.TCP())),
        ("ipv4-total-long", bytes(g.ip(V4A, V4B, len=3000) / g.TCP())),
        ("ipv4-mf-zero-offset", bytes(g.ip(V4A, V4B, flags="MF") / g.UDP(sport=1, dport=2) / g.Raw(b"q" * 30))),
        ("ipv4-icmpv6-proto", bytes(g.ip(V4A, V4B, proto=58) / g.Raw(bytes([128, 0, 0, 0, 0, 7, 0, 1]) + b"z" * 12))),
        ("ipv4-icmp-short", bytes(g.ip(V4A, V4B, proto=1) / g.Raw(b"\x08\x00\x00"))),
        ("tcp-doff-15", bytes(g.ip(V4A, V4B) / g.TCP(sport=1, dport=2, dataofs=15, flags="S"))),
        ("tcp-doff-0", bytes(g.ip(V4A, V4B) / g.TCP(sport=1, dport=2, dataofs=0, flags="SA") / g.Raw(b"x" * 30))),
        ("tcp-fin-syn", bytes(g.ip(V4A, V4B) / g.TCP(sport=1, dport=53, flags="FS", seq=0xFFFFFFFF) / g.Raw(b"\x00\x0c" + bytes(12)))),
        ("tcp-short", bytes(g.ip(V4A, V4B, proto=6) / g.Raw(b"\x00\x01\x00\x02" + bytes(10)))),
        ("tcp-rst", bytes(g.ip(V4A, V4B) / g.TCP(sport=8080, dport=40001, flags="R", seq=7))),
        ("tcp-rst-ack", bytes(g.ip(V6A, V6B) / g.TCP(sport=8080, dport=40001, flags="RA", seq=0, ack=1001))),
        ("tcp-all-flags", bytes(g.ip(V4A, V4B) / g.TCP(sport=1, dport=2, flags=0xFF))),
        ("sctp-header-only", bytes(g.ip(V4A, V4B, proto=132) / g.Raw(bytes(12)))),
        ("sctp-init-ack", bytes(g.ip(V4A, V4B, proto=132) / g.Raw(bytes(12) + b"\x02" + bytes(15)))),
        ("udp-sport-53-query", bytes(g.ip(V4A, V4B) / g.UDP(sport=53, dport=53) / g.Raw(bytes(12)))),
        ("udp-short", bytes(g.ip(V4A, V4B, proto=17) / g.Raw(b"\x00\x35\x00"))),
        ("gre-no-ip", bytes(g.ip(V4A, V4B, proto=47) / g.Raw(struct.pack("!HH", 0, 0x0806) + bytes(28)))),
        ("proto-0", bytes(g.ip(V4A, V4B, proto=0) / g.Raw(b"x" * 8))),
        ("ipv4-mapped-v6-loopback", bytes(g.IPv6(src="::ffff:127.0.0.1", dst=V6B) / g.UDP(sport=1, dport=2))),
    ]
    return out


def _tunnelled():
    """(name, outer packet) pairs: every encapsulation, nested up to five deep, and almost-tunnels."""
    tcp4 = g.tcp_session(V4A, "10.244.1.7", 40020, 8080)[0][1]
    tcp6 = g.tcp_session(V6A, V6B, 40021, 8080)[1][1]
    dns4 = g.dns_udp(V4A, V4B, "x.example.com")[0][1]
    out = []
    for name, inner in (("tcp4", tcp4), ("tcp6", tcp6), ("dns4", dns4)):
        out += [
            (f"vxlan-{name}", g.vxlan(inner, NODE_A, NODE_B)),
            (f"vxlan8472-{name}", g.vxlan(inner, NODE_A, NODE_B, port=8472)),
            (f"vxlan-v6-outer-{name}", g.vxlan(inner, "fd00::a", "fd00::b")),
            (f"geneve-{name}", g.geneve(inner, NODE_A, NODE_B)),
            (f"flannel-{name}", g.flannel_udp(inner, NODE_A, NODE_B)),
            (f"gre-key-{name}", g.gre(inner, NODE_A, NODE_B)),
            (f"gre-nokey-{name}", g.gre(inner, NODE_A, NODE_B, key=None)),
            (f"gre-eth-{name}", g.gre(inner, NODE_A, NODE_B, ethernet=True)),
        ]
    out += [
        ("ipip", g.ipip(tcp4, NODE_A, NODE_B)),
        ("ip6in4", g.ip6in4(tcp6, NODE_A, NODE_B)),
        ("ipip-v6-outer", g.ip(V6A, V6B, nh=4) / g.Raw(bytes(tcp4))),
    ]
    # nesting: 2..5 levels (more than MAX_TUNNEL_DEPTH = 3 tunnels is "too deep")
    wraps = [lambda p: g.vxlan(p, NODE_A, NODE_B), lambda p: g.gre(p, "10.0.0.1", "10.0.0.2"),
             lambda p: g.ipip(p, "10.1.0.1", "10.1.0.2"), lambda p: g.geneve(p, "10.2.0.1", "10.2.0.2"),
             lambda p: g.flannel_udp(p, "10.3.0.1", "10.3.0.2")]
    p = tcp4
    for depth, wrap in enumerate(wraps, 1):
        p = wrap(p)
        out.append((f"nested-{depth}", p))
    # almost tunnels
    eth = bytes(g.Ether(src=g.MAC_A, dst=g.MAC_B) / tcp4)
    out += [
        ("vxlan-no-vni-flag", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=4789) / g.Raw(bytes(8) + eth)),
        ("vxlan-too-short", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=4789) / g.Raw(g.vxlan_header(1) + eth[:13])),
        ("geneve-v1", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=6081) / g.Raw(struct.pack("!BBHI", 0x40, 0, 0x6558, 0) + eth)),
        ("geneve-raw-ip", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=6081) / g.Raw(struct.pack("!BBHI", 0, 0, 0x0800, 0) + bytes(tcp4))),
        ("geneve-raw-ip6", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=6081) / g.Raw(struct.pack("!BBHI", 0, 0, 0x86DD, 0) + bytes(tcp6))),
        ("geneve-options-63", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=6081) / g.Raw(struct.pack("!BBHI", 63, 0, 0x6558, 0) + bytes(252) + eth)),
        ("geneve-bad-type", g.ip(NODE_A, NODE_B) / g.UDP(sport=1, dport=6081) / g.Raw(struct.pack("!BBHI", 0, 0, 0x0806, 0) + eth)),
        ("flannel-not-ip", g.ip(NODE_A, NODE_B) / g.UDP(sport=8285, dport=8285) / g.Raw(b"\x20" + bytes(40))),
        ("flannel-short", g.ip(NODE_A, NODE_B) / g.UDP(sport=8285, dport=8285) / g.Raw(bytes(tcp4)[:19])),
        ("ipip-short", g.ip(NODE_A, NODE_B, proto=4) / g.Raw(bytes(tcp4)[:19])),
        ("gre-short", g.ip(NODE_A, NODE_B, proto=47) / g.Raw(b"\x00\x00\x08")),
    ]
    for flags in (0x8000, 0x4000, 0x1000, 0xB000, 0x0001, 0x0004, 0x2007):
        out.append((f"gre-flags-{flags:04x}", g.ip(NODE_A, NODE_B, proto=47) / g.Raw(struct.pack("!HH", flags, 0x0800) + bytes(12) + bytes(tcp4))))
    return out


def _framings(name, pkt):
    """The packet framed for every link type that can carry it: (name, bytes, link)."""
    l3 = bytes(pkt)
    v6 = l3[:1] and l3[0] >> 4 == 6
    out = [(f"{name}/eth", g.frame(l3, g.LINKTYPE_ETHERNET), 1)]
    for link in (12, 14, 101, 228, 229):
        out.append((f"{name}/raw{link}", l3, link))
    for af, order in ((2, "<"), (2, ">"), (10, "<"), (24, "<"), (28, ">"), (30, "<"), (30, ">"), (7, "<")):
        if (af == 2) != bool(v6) or af == 7:
            out.append((f"{name}/null-af{af}{order}", g.null_frame(l3, af, order), 0))
    out.append((f"{name}/loop108", struct.pack(">I", 24 if v6 else 2) + l3, 108))
    out.append((f"{name}/loop108-le", struct.pack("<I", 24 if v6 else 2) + l3, 108))
    out.append((f"{name}/sll", g.frame(l3, g.LINKTYPE_LINUX_SLL), 113))
    out.append((f"{name}/sll2", g.frame(l3, g.LINKTYPE_LINUX_SLL2), 276))
    out.append((f"{name}/vlan", bytes(g.vlan(l3, 100)), 1))
    for tpid in (0x88A8, 0x8100, 0x9100):
        out.append((f"{name}/qinq-{tpid:04x}", bytes(g.qinq(l3, outer_tpid=tpid)), 1))
    triple = g.Ether(src=g.MAC_A, dst=g.MAC_B, type=0x8100) / g.Dot1Q(vlan=1, type=0x8100) / g.Dot1Q(vlan=2, type=0x8100) / g.Dot1Q(vlan=3, type=0x0800) / g.Raw(l3)
    out.append((f"{name}/triple-tag", bytes(triple), 1))
    out.append((f"{name}/link147", l3, 147))
    return out


_CORPUS = None


def corpus():
    """(name, frame bytes, link) for every packet in every framing; built once."""
    global _CORPUS
    if _CORPUS is None:
        frames = []
        for name, pkt in l3_packets():
            frames += _framings(name, pkt)
        for name, pkt in _tunnelled():
            frames += [(f"{name}/eth", g.frame(bytes(pkt), 1), 1), (f"{name}/raw", bytes(pkt), 101),
                       (f"{name}/sll2", g.frame(bytes(pkt), 276), 276)]
        for _, pkt in g.arp_noise():
            frames.append(("arp", bytes(pkt), 1))
        frames.append(("lldp", bytes(g.Ether(src=g.MAC_A, dst="01:80:c2:00:00:0e", type=0x88CC) / g.Raw(bytes(40))), 1))
        _CORPUS = frames
    return _CORPUS


# --------------------------------------------------------------------------------------------
# (a) differential


@pytest.mark.parametrize("path", REAL_CAPTURES, ids=lambda p: p.name)
def test_real_captures_decode_identically(path):
    chunks = list(_files.read_chunks(path, lambda message: None))
    assert chunks
    for chunk in chunks:
        decode_both(bytes(chunk.data), chunk.off, chunk.caplen, chunk.link)


def test_every_kind_of_packet_decodes_identically():
    frames = corpus()
    ref = decode_frames([(f, link) for _, f, link in frames], context=[name for name, _, _ in frames])
    # the corpus does reach every outcome
    assert set(np.unique(ref.status)) == set(range(7)), np.unique(ref.status)
    assert set(np.unique(ref.tunnel)) == {0, 1, 2, 3, 4, 5, 6}
    assert (ref.dns_at >= 0).any() and (ref.frag == -1).any() and (ref.frag > 0).any()
    # TCP flags: RST and every other bit reached, and 0 for every packet without a TCP header read
    assert (ref.tcp_flags == 0xFF).any() and (ref.tcp_flags == 0x04).any() and (ref.tcp_flags == 0x14).any()
    tcp_read = (ref.proto == _decode.TCP) & (ref.status == _decode.OK)
    assert (ref.tcp_flags[~tcp_read] == 0).all() and (ref.tcp_flags[tcp_read] != 0).all()
    for bit in (_decode.EV_SYN, _decode.EV_SYNACK, _decode.EV_SCTP, _decode.EV_ICMP, _decode.EV_DNS):
        assert (ref.ev_src & bit).any() or (ref.ev_dst & bit).any(), bit


def test_every_packet_cut_at_every_length_decodes_identically():
    frames, names = [], []
    for name, f, link in corpus():
        cuts = range(len(f)) if len(f) <= 200 else [*range(200), *range(200, len(f), 97)]
        for c in cuts:
            frames.append((f[:c], link))
            names.append(f"{name}[:{c}]")
    decode_frames(frames, context=names)


def test_packets_at_the_very_end_of_the_buffer():
    """No padding after the last packet: reads are clamped to len(buffer) - 8 in both."""
    frames = corpus()
    for name, f, link in frames[::7]:
        for pad in (0, 1, 7):
            decode_frames([(f, link)], pad=pad, context=[name])
            decode_frames([(f, link), (f[:20], link)], pad=pad, context=[name, name + "[:20]"])


def test_empty_chunk_and_tiny_buffers():
    decode_both(bytes(8), [], [], [])
    decode_both(bytes(64), [], [], [])
    decode_both(b"\x45" * 8, [0, 3, 8], [8, 5, 0], [101, 1, 0])
    # the contract: at least 8 bytes in the buffer (numpy raises too); _accel falls back
    with pytest.raises(ValueError):
        fastscan.decode(bytes(7), *(np.zeros(1, dtype=np.int64) for _ in range(3)),
                        [np.zeros(1, dtype=d) for _, d in _accel._OUTPUTS])


# --------------------------------------------------------------------------------------------
# (b) fuzz


def _mutate(rng, frame: bytes) -> bytes:
    b = bytearray(frame)
    if b:
        for _ in range(int(rng.integers(1, 5))):
            # mostly in the headers, where the decoder looks
            i = int(rng.integers(0, min(len(b), 96))) if rng.random() < 0.85 else int(rng.integers(0, len(b)))
            b[i] = int(rng.integers(0, 256)) if rng.random() < 0.7 else b[i] ^ (1 << int(rng.integers(0, 8)))
    if rng.random() < 0.5:
        b = b[: int(rng.integers(0, len(b) + 1))]
    return bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_damaged_packets(seed):
    """Valid packets with random bytes changed, cut at random, framed with random link types."""
    rng = np.random.default_rng(seed)
    frames = corpus()
    batch, names = [], []
    for _ in range(6000):
        name, f, link = frames[int(rng.integers(0, len(frames)))]
        if rng.random() < 0.1:
            link = int(rng.choice(LINKS + ODD_LINKS))
        batch.append((_mutate(rng, f), link))
        names.append(name)
    decode_frames(batch, pad=int(rng.choice([0, 3, PAD])), context=names)


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_random_bytes(seed):
    """Random bytes, random offsets and lengths (also past the end of the buffer), random links."""
    rng = np.random.default_rng(100 + seed)
    for size in (8, 9, 15, 40, 100, 700, 5000):
        data = rng.integers(0, 256, size=size, dtype=np.uint8)
        # make the bytes that select branches likely: IP versions, ethertypes, protocols, ports
        hot = rng.integers(0, size, size=size // 4)
        data[hot] = rng.choice(np.array([0x45, 0x46, 0x4F, 0x60, 0x08, 0x00, 0x86, 0xDD, 0x81, 0x88, 0xA8,
                                         0x91, 6, 17, 132, 1, 58, 4, 41, 47, 44, 0, 43, 51, 60, 0x12, 0x35,
                                         0x12, 0xB5, 0x17, 0xC1, 0x20, 0x65, 0x58], dtype=np.uint8), size=len(hot))
        n = 400
        off = rng.integers(0, size + 1, size=n)
        caplen = rng.integers(0, 300, size=n)
        caplen[rng.random(n) < 0.1] = size + 50  # past the end of the buffer
        link = rng.choice(np.array(LINKS + ODD_LINKS), size=n)
        decode_both(data, off, caplen, link)
        decode_both(data.tobytes(), off, caplen, link)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=8, max_size=200),
    packets=st.lists(st.tuples(st.integers(0, 220), st.integers(-4, 240), st.sampled_from(LINKS + ODD_LINKS)), max_size=12),
)
def test_fuzz_hypothesis(data, packets):
    off = [min(o, len(data)) for o, _, _ in packets]
    decode_both(exact(data), off, [c for _, c, _ in packets], [link for _, _, link in packets])


def test_offsets_outside_the_c_domain_fall_back_to_the_reference(monkeypatch):
    """Negative offsets are not something the reader produces; the C decoder refuses them and
    ``_accel.decode`` hands them to the reference, so the two engines still agree."""
    monkeypatch.setattr(_accel, "ENGINE", "c")
    monkeypatch.setattr(_accel, "_fastscan", fastscan)
    data = bytes(range(200))
    args = (np.array([-5, 3]), np.array([40, 40]), np.array([101, 1], dtype=np.int32), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError):
        c_decode(data, *args)
    assert_same(_accel.decode(data, *args), ref_decode(data, *args))


# --------------------------------------------------------------------------------------------
# (c) the pcap record walker


def _walk_both(buf, pos, n, big, snaplen, max_records):
    results = []
    for walk in (fastscan.walk_pcap, _accel._walk_pcap_python):
        outs = [np.full(max_records + 1, -7, dtype=np.int64) for _ in range(4)]
        count, end, reason = walk(buf, pos, n, big, snaplen, max_records, *outs)
        results.append((count, end, reason, [o.tolist() for o in outs]))
    assert results[0] == results[1], (pos, n, big, snaplen, max_records)
    return results[0]


def _pcap_files():
    """Classic pcap files: the real ones and synthetic ones in both byte orders."""
    files = [(p.name, p.read_bytes()) for p in REAL_CAPTURES if p.suffix == ".pcap"]
    recs = g.tcp_session(V4A, V4B, 40000, 443) + g.dns_udp(V4A, V4B, "a.example.com") + g.icmp_echo(V6A, V6B)
    for order in ("<", ">"):
        for ns in (False, True):
            files.append((f"synthetic{order}{'ns' if ns else 'us'}", g.pcap_bytes(recs, byteorder=order, nanosecond=ns)))
    return files


@pytest.mark.parametrize("name,data", _pcap_files(), ids=[n for n, _ in _pcap_files()])
def test_walker_same_offsets(name, data):
    big = data[:4] in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")
    count, end, reason, (offs, sec, frac, caplen) = _walk_both(data, 24, len(data), big, 262144, 100000)
    assert reason == _accel.WALK_NEED_DATA and end == len(data) and count > 0
    # the walk in pieces: every limit, every stopping point
    for max_records in (0, 1, 2, 3):
        _walk_both(data, 24, len(data), big, 262144, max_records)
    for n in range(0, min(len(data), 600)):
        _walk_both(data, 24, n, big, 262144, 3)
    # snap lengths around the records' own captured lengths: stops exactly at the ones over it
    lengths = sorted(set(caplen[:count]))
    for snaplen in {0, 60, 100, 1000, *lengths[:3], *(x - 1 for x in lengths[:3]), lengths[-1], lengths[-1] - 1}:
        result = _walk_both(data, 24, len(data), big, snaplen, 100000)
        assert result[2] == (_accel.WALK_NEED_DATA if snaplen >= lengths[-1] else _accel.WALK_OVER_SNAPLEN)


def test_walker_on_random_bytes():
    rng = np.random.default_rng(5)
    for _ in range(300):
        size = int(rng.integers(0, 400))
        data = rng.integers(0, 256, size=size, dtype=np.uint8)
        # small captured lengths so that walks go on for a while
        for at in range(8, size - 3, 16):
            if rng.random() < 0.8:
                data[at : at + 4] = np.frombuffer(struct.pack("<I", int(rng.integers(0, 40))), dtype=np.uint8)
        n = int(rng.integers(0, size + 1))
        pos = int(rng.integers(0, size + 20))
        _walk_both(data.tobytes(), pos, n, bool(rng.integers(0, 2)), int(rng.choice([0, 20, 40, 262144, 2**32 - 1])),
                   int(rng.integers(0, 30)))


def test_walker_rejects_bad_arguments():
    buf = bytes(100)
    out = np.zeros(4, dtype=np.int64)
    for args in ((buf, -1, 100, False, 10, 4, out), (buf, 0, 101, False, 10, 4, out), (buf, 0, 100, False, 10, 5, out),
                 (buf, 0, 100, False, 10, -1, out)):
        with pytest.raises(ValueError):
            fastscan.walk_pcap(*args)
    with pytest.raises(TypeError):
        fastscan.walk_pcap(buf, 0, 100, False, 10, 4, np.zeros(4, dtype=np.float64))
    with pytest.raises(ValueError, match="not C-contiguous"):  # numpy refuses PyBUF_C_CONTIGUOUS
        fastscan.walk_pcap(buf, 0, 100, False, 10, 4, np.zeros(8, dtype=np.int64)[::2])
    with pytest.raises(BufferError, match="not writable"):  # bytes refuse PyBUF_WRITABLE
        fastscan.walk_pcap(buf, 0, 100, False, 10, 4, np.zeros(4, dtype=np.int64), bytes(32))  # read-only


# the whole reader (chunks and warnings) under both engines, on damaged files

def _damaged_files():
    recs = g.by_time(g.tcp_session(V4A, V4B, 40000, 443) + g.dns_udp(V4A, V4B, "a.example.com", t0=g.T0 + 0.0005)
                     + g.tcp_session(V4A, "10.244.9.9", 40009, 9000, t0=g.T0 + 0.0007, request=b"x" * 400))
    good = g.pcap_bytes(recs)
    body = good[24:]
    files = {"good": good}
    # an absurd captured length in the middle: the reader resyncs after it
    rec_at = [24]
    while rec_at[-1] < len(good):
        rec_at.append(rec_at[-1] + 16 + struct.unpack_from("<I", good, rec_at[-1] + 8)[0])
    rec_at.pop()
    mid = rec_at[len(rec_at) // 2]
    bogus = struct.pack("<IIII", g.T0 + 1, 0, 0x7FFFFFF0, 0x7FFFFFF0) + b"\x00" * 64
    files["corrupt-middle"] = good[:mid] + bogus + good[mid:]
    files["corrupt-last"] = good + bogus
    files["corrupt-first"] = good[:24] + bogus + body
    files["caplen-garbled"] = good[:mid + 8] + b"\xff\xff\x00\x01" + good[mid + 12:]
    files["cut-header"] = good[: rec_at[-1] + 7]
    files["cut-data"] = good[: rec_at[-1] + 30]
    files["over-snaplen"] = g.pcap_header(1, snaplen=64) + body
    files["over-snaplen-and-corrupt"] = g.pcap_header(1, snaplen=64) + body[: mid - 24] + bogus + body[mid - 24:]
    files["snaplen-zero"] = g.pcap_header(1, snaplen=0) + body
    files["header-only"] = good[:24]
    files["big-endian-corrupt"] = (lambda b: b[:mid] + struct.pack(">IIII", g.T0, 0, 0x7FFFFFF0, 1) + bytes(40) + b[mid:])(
        g.pcap_bytes(recs, byteorder=">"))
    rng = np.random.default_rng(11)
    for i in range(12):
        b = bytearray(good)
        for _ in range(3):
            at = rec_at[int(rng.integers(1, len(rec_at)))] + int(rng.integers(0, 16))
            b[at] = int(rng.integers(0, 256))
        files[f"random-header-damage-{i}"] = bytes(b)
    return files


def _read_all(path, engine, monkeypatch):
    monkeypatch.setattr(_accel, "ENGINE", engine)
    monkeypatch.setattr(_accel, "_fastscan", fastscan)
    warnings = []
    chunks = []
    progress = []
    try:
        for c in _files.read_chunks(path, warnings.append, progress.append):
            data = bytes(c.data)
            chunks.append(([data[o : o + n] for o, n in zip(c.off.tolist(), c.caplen.tolist())],
                           c.caplen.tolist(), c.ts.tolist(), c.link.tolist(), c.off.dtype, c.caplen.dtype, c.ts.dtype))
    except Exception as exc:  # noqa: BLE001 - the same error under both engines is what counts
        warnings.append(f"raised {type(exc).__name__}: {exc}")
    return chunks, warnings, progress


@pytest.mark.parametrize("chunk_packets", [3, 32768])
@pytest.mark.parametrize("compressed", [False, True])
def test_reader_same_under_both_engines(tmp_path, monkeypatch, chunk_packets, compressed):
    monkeypatch.setattr(_files, "CHUNK_PACKETS", chunk_packets)
    if compressed:
        monkeypatch.setattr(_files, "READ_BYTES", 100)  # many small windows
    files = _damaged_files()
    files.update({p.name: p.read_bytes() for p in REAL_CAPTURES})
    for name, data in files.items():
        path = tmp_path / (name + (".gz" if compressed else ""))
        path.write_bytes(gzip.compress(data) if compressed else data)
        c = _read_all(path, "c", monkeypatch)
        py = _read_all(path, "python", monkeypatch)
        assert c == py, name
    # the damage is really there (warnings), and the good file reads without one
    assert _read_all(tmp_path / ("good" + (".gz" if compressed else "")), "c", monkeypatch)[1] == []
    assert _read_all(tmp_path / ("corrupt-middle" + (".gz" if compressed else "")), "c", monkeypatch)[1]


# --------------------------------------------------------------------------------------------
# the engine switch


def test_engine_chosen_by_the_environment():
    code = "from netpol_learn._capture import _accel; print(_accel.ENGINE)"
    env = {k: v for k, v in os.environ.items() if k != _accel.ENV_PURE_PYTHON}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "c"
    for value, engine in (("1", "python"), ("0", "c")):
        env[_accel.ENV_PURE_PYTHON] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == engine, value
