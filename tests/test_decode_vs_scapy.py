"""The vectorized header decoder against scapy's full dissection, on random packets.

scapy is the independent engine here: hypothesis builds packets with scapy (random addresses,
ports, protocols, VLAN tags, IPv4 options, IPv6 extension headers, tunnels, link types), and the
innermost IP/transport fields that scapy reads back must equal what ``decode`` reads.
"""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP, SCTPChunkInit
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from netpol_learn._capture import _decode as d
from netpol_learn._capture import PAD  # decode's contract: PAD readable bytes after every packet

v4 = st.integers(min_value=0x0B000000, max_value=0x7EFFFFFF).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(min_value=1 << 120, max_value=(1 << 128) - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(min_value=1, max_value=65535)


@st.composite
def transport(draw):
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp"]))
    sport, dport = draw(ports), draw(ports)
    payload = Raw(draw(st.binary(min_size=0, max_size=40)))
    if kind == "tcp":
        flags = draw(st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA", "FPAU", "SEC"]))
        return kind, TCP(sport=sport, dport=dport, flags=flags, seq=draw(st.integers(0, 2**32 - 1))) / payload, sport, dport
    if kind == "udp":
        if dport in (53, 4789, 8472, 6081, 8285) or sport == 53:
            dport = 9999
        return kind, UDP(sport=sport, dport=dport) / payload, sport, dport
    if kind == "sctp":
        return kind, SCTP(sport=sport, dport=dport) / SCTPChunkInit(), sport, dport
    ident = draw(st.integers(0, 65535))
    return kind, ident, ident, ident


@st.composite
def packet(draw):
    ipv6 = draw(st.booleans())
    kind, l4, sport, dport = draw(transport())
    src, dst = (draw(v6), draw(v6)) if ipv6 else (draw(v4), draw(v4))
    if kind == "icmp":
        l4 = (ICMPv6EchoRequest if draw(st.booleans()) else ICMPv6EchoReply)(id=l4) if ipv6 else ICMP(type=draw(st.sampled_from([0, 8])), id=l4)
    proto = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 58 if ipv6 else 1}[kind]
    if ipv6:
        ext = draw(st.lists(st.sampled_from([IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting]), max_size=3))
        ip = IPv6(src=src, dst=dst)
        for hdr in ext:
            ip = ip / hdr()
        inner = ip / l4
    else:
        opts = [IPOption_RR()] if draw(st.booleans()) else []
        inner = IP(src=src, dst=dst, options=opts, id=draw(st.integers(0, 65535))) / l4
    wrap = draw(st.sampled_from(["none", "vlan", "qinq", "vxlan", "ipip", "gre", "cooked"]))
    link = 1
    if wrap == "none":
        frame = Ether() / inner
    elif wrap == "vlan":
        frame = Ether() / Dot1Q(vlan=draw(st.integers(1, 4094))) / inner
    elif wrap == "qinq":
        frame = Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / inner
    elif wrap == "vxlan":
        frame = Ether() / IP(src="172.18.0.2", dst="172.18.0.3") / UDP(sport=40000, dport=draw(st.sampled_from([4789, 8472]))) / VXLAN(vni=1) / Ether() / inner
    elif wrap == "ipip":
        frame = Ether() / IP(src="172.18.0.2", dst="172.18.0.3") / inner
    elif wrap == "gre":
        frame = Ether() / IP(src="172.18.0.2", dst="172.18.0.3") / GRE(key_present=1, key=7) / inner
    else:
        frame, link = CookedLinux(proto=0x86DD if ipv6 else 0x0800) / inner, 113
    flags = int(l4[TCP].flags) if kind == "tcp" else 0
    return bytes(frame), link, src, dst, proto, sport, dport, wrap, flags


def _addr(hi, lo) -> str:
    hi, lo = int(hi), int(lo)
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet(), min_size=1, max_size=6))
def test_decoder_reads_what_scapy_reads(packets):
    data = b"".join(p[0] for p in packets) + bytes(PAD)
    sizes = [len(p[0]) for p in packets]
    off = np.cumsum([0] + sizes[:-1]).astype(np.int64)
    out = d.decode(data, off, np.array(sizes, dtype=np.int64), np.array([p[1] for p in packets], dtype=np.int32), np.zeros(len(packets), dtype=np.int64))
    for i, (_raw, _link, src, dst, proto, sport, dport, wrap, flags) in enumerate(packets):
        assert out.status[i] == d.OK, (wrap, proto)
        assert _addr(out.src_hi[i], out.src_lo[i]) == str(ipaddress.ip_address(src))
        assert _addr(out.dst_hi[i], out.dst_lo[i]) == str(ipaddress.ip_address(dst))
        assert out.proto[i] == proto
        assert (out.sport[i], out.dport[i]) == (sport, dport)
        assert bool(out.tunnel[i]) == (wrap in ("vxlan", "ipip", "gre"))
        assert out.tcp_flags[i] == flags  # the TCP header's flags byte; 0 for every other protocol


def test_truncated_and_garbage_never_crash():
    """Cut every packet at every length: the decoder marks them, never reads out of bounds."""
    frame = bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / TCP(sport=1, dport=2))
    cuts = list(range(len(frame) + 1))
    data = b"".join(frame[:c] for c in cuts) + bytes(PAD)
    off = np.cumsum([0] + cuts[:-1]).astype(np.int64)
    out = d.decode(data, off, np.array(cuts, dtype=np.int64), np.ones(len(cuts), dtype=np.int32), np.zeros(len(cuts), dtype=np.int64))
    assert (out.status[:-1] != d.OK).all()
    assert out.status[-1] == d.OK
    rng = np.random.default_rng(7)
    junk = rng.integers(0, 256, size=64 * 200, dtype=np.uint8).tobytes() + bytes(PAD)
    off = np.arange(0, len(junk) - PAD, 64, dtype=np.int64)
    for link in (0, 1, 101, 113, 276):
        d.decode(junk, off, np.full(len(off), 64, dtype=np.int64), np.full(len(off), link, dtype=np.int32), np.zeros(len(off), dtype=np.int64))
