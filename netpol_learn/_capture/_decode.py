"""Header decoding for a chunk of packets, all packets at once, with numpy.

This is the per-packet hot path, written by hand on purpose: full dissection with scapy runs at
about 6,000 packets/s, while reading each needed header field for a whole chunk as one numpy
gather keeps the cost per packet to a few tens of nanoseconds. Every field read is a gather over
a byte view of the chunk (``_Bytes``); every branch of the protocol tree is a boolean mask.

Layers: link (Ethernet with 802.1Q/QinQ, Linux cooked v1/v2, raw IP, null/loopback) ->
IPv4 (options, fragments) / IPv6 (extension headers) -> TCP, UDP, SCTP, ICMP, ICMPv6.
Tunnels (VXLAN 4789/8472, Geneve 6081, flannel UDP 8285, IP-in-IP, IPv6-in-IPv4, GRE) are
decoded again from their inner header, so the fields describe the innermost packet and
``tunnel`` names the outermost encapsulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Status of a decoded packet.
OK = 0
NON_IP = 1
TRUNCATED = 2
LOOPBACK = 3
ICMP_CONTROL = 4  # ICMP errors, neighbour discovery, MLD: not application traffic
FRAGMENT = 5  # a non-first fragment: no transport header; ports come from its first fragment
TUNNEL_TOO_DEEP = 6

STATUS_NAMES = {
    NON_IP: "non_ip",
    TRUNCATED: "truncated",
    LOOPBACK: "loopback",
    ICMP_CONTROL: "icmp_control",
    FRAGMENT: "fragments_orphaned",  # those left after joining fragments to their first
    TUNNEL_TOO_DEEP: "tunnel_too_deep",
}

TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58

# Tunnel kinds, by the outermost encapsulation.
TUNNEL_NAMES = {1: "vxlan", 2: "geneve", 3: "flannel-udp", 4: "ipip", 5: "ip6ip", 6: "gre"}
VXLAN_PORTS = (4789, 8472)  # 8472: flannel and Cilium (tcpdump calls it OTV)
GENEVE_PORT = 6081
FLANNEL_UDP_PORT = 8285
MAX_TUNNEL_DEPTH = 3

# Direction evidence, per packet: the methods by which its source (ev_src) or its
# destination (ev_dst) is the client. Bit order is the strength order of docs/flow-log.md.
EV_SYN, EV_SYNACK, EV_SCTP, EV_ICMP, EV_DNS = 1, 2, 4, 8, 16
#: A flow record's own direction (Hubble's reply flag): never a decoded packet's.
EV_FLOW_RECORD = 32
EVIDENCE_METHODS = ("syn", "syn-ack", "sctp-init", "icmp-echo", "dns", "flow-record")

LINK_ETHERNET = 1
LINK_RAW = 101
_RAW_LINKS = (12, 14, 101, 228, 229)
_IPV6_EXTENSIONS = (0, 43, 44, 51, 60, 135, 139, 140)
_IPV4_MAPPED = np.uint64(0xFFFF00000000)
_M64 = np.uint64(0x9E3779B97F4A7C15)


class _Bytes:
    """Big-endian integer views at every byte offset of a chunk's buffer, without copying it.
    Reads a little past a packet's end land in the buffer's padding (``_files.PAD``) and the
    masks throw such values away."""

    def __init__(self, data):
        self.raw = data
        n = len(data)
        self.u8 = np.frombuffer(self.raw, dtype=np.uint8)
        self.u16 = np.ndarray((n - 1,), ">u2", self.raw, 0, (1,))
        self.u32 = np.ndarray((n - 3,), ">u4", self.raw, 0, (1,))
        self.u64 = np.ndarray((n - 7,), ">u8", self.raw, 0, (1,))
        self.u32le = np.ndarray((n - 3,), "<u4", self.raw, 0, (1,))
        # Offsets computed from damaged headers can point anywhere: clamp them into the buffer.
        self.limit = n - 8

    def b(self, at):
        return self.u8[np.minimum(at, self.limit)].astype(np.int64)

    def w(self, at):
        return self.u16[np.minimum(at, self.limit)].astype(np.int64)

    def d(self, at):
        return self.u32[np.minimum(at, self.limit)].astype(np.int64)

    def q(self, at):
        return self.u64[np.minimum(at, self.limit)]

    def d_unsigned(self, at):
        return self.u32[np.minimum(at, self.limit)].astype(np.uint64)


@dataclass
class Packets:
    """Decoded fields of the innermost packet, one array element per captured packet."""

    status: np.ndarray  # int8
    ts: np.ndarray  # int64 ns
    src_hi: np.ndarray  # uint64: addresses as 128 bits, IPv4 as ::ffff:a.b.c.d
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray  # int64
    sport: np.ndarray  # int64; ICMP echo: the identifier
    dport: np.ndarray
    iplen: np.ndarray  # int64: IP bytes of the innermost packet
    ipid: np.ndarray  # int64: IPv4 identification, IPv6 fragment identification, else 0
    frag: np.ndarray  # int64: fragment offset (units of 8 bytes); -1 marks a first fragment with more to come
    ev_src: np.ndarray  # int64 evidence bits
    ev_dst: np.ndarray
    fingerprint: np.ndarray  # uint64, independent of addresses and ports
    tcp_seq: np.ndarray  # int64; TCP only, else 0
    tcp_ack: np.ndarray
    tcp_next: np.ndarray  # the acknowledgement number that answers this segment
    tcp_flags: np.ndarray  # int64: the TCP header's flags byte (FIN 1, SYN 2, RST 4, ...); 0 for other protocols
    dns_at: np.ndarray  # int64: offset of a DNS message (TCP: of its length prefix), -1 if none
    dns_end: np.ndarray  # int64
    tunnel: np.ndarray  # int8, TUNNEL_NAMES key of the outermost encapsulation, 0 if none
    outer: tuple[np.ndarray, ...]  # (src_hi, src_lo, dst_hi, dst_lo) of the outermost IP header

    def __len__(self) -> int:
        return len(self.status)


def decode(data: bytes, off: np.ndarray, caplen: np.ndarray, link: np.ndarray, ts: np.ndarray) -> Packets:
    view = _Bytes(data)
    n = len(off)
    end = off + caplen
    z64 = lambda: np.zeros(n, dtype=np.int64)  # noqa: E731
    zu = lambda: np.zeros(n, dtype=np.uint64)  # noqa: E731
    p = Packets(
        status=np.full(n, NON_IP, dtype=np.int8),
        ts=ts,
        src_hi=zu(), src_lo=zu(), dst_hi=zu(), dst_lo=zu(),
        proto=z64(), sport=z64(), dport=z64(), iplen=z64(), ipid=z64(), frag=z64(),
        ev_src=z64(), ev_dst=z64(),
        fingerprint=zu(), tcp_seq=z64(), tcp_ack=z64(), tcp_next=z64(), tcp_flags=z64(),
        dns_at=np.full(n, -1, dtype=np.int64), dns_end=z64(),
        tunnel=np.zeros(n, dtype=np.int8),
        outer=(zu(), zu(), zu(), zu()),
    )
    active = np.arange(n)
    cur_off, cur_link, cur_end = off, link.astype(np.int64), end
    for depth in range(MAX_TUNNEL_DEPTH + 1):
        if not active.size:
            break
        layer = _decode_layer(view, cur_off, cur_end, cur_link)
        _store(p, active, layer)
        tun = layer.tunnel > 0
        if not tun.any():
            break
        sel = active[tun]
        if depth == 0:
            p.tunnel[sel] = layer.tunnel[tun]
            for dst, src in zip(p.outer, (layer.src_hi, layer.src_lo, layer.dst_hi, layer.dst_lo)):
                dst[sel] = src[tun]
        if depth == MAX_TUNNEL_DEPTH:
            p.status[sel] = TUNNEL_TOO_DEEP
            break
        active, cur_off, cur_link, cur_end = sel, layer.inner_off[tun], layer.inner_link[tun], cur_end[tun]
    return p


@dataclass
class _Layer:
    status: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    iplen: np.ndarray
    ipid: np.ndarray
    frag: np.ndarray
    ev_src: np.ndarray
    ev_dst: np.ndarray
    fingerprint: np.ndarray
    tcp_seq: np.ndarray
    tcp_ack: np.ndarray
    tcp_next: np.ndarray
    tcp_flags: np.ndarray
    dns_at: np.ndarray
    dns_end: np.ndarray
    tunnel: np.ndarray
    inner_off: np.ndarray
    inner_link: np.ndarray


_STORED = ("status", "src_hi", "src_lo", "dst_hi", "dst_lo", "proto", "sport", "dport", "iplen", "ipid",
           "frag", "ev_src", "ev_dst", "fingerprint", "tcp_seq", "tcp_ack", "tcp_next", "tcp_flags", "dns_at",
           "dns_end")


def _store(p: Packets, at: np.ndarray, layer: _Layer) -> None:
    for name in _STORED:
        getattr(p, name)[at] = getattr(layer, name)


def _link_layer(v: _Bytes, off, link):
    """(l3 offset, ethertype) per packet; ethertype 0 where the link layer carries no IP."""
    m = len(off)
    l3 = off.copy()
    et = np.zeros(m, dtype=np.int64)

    eth = link == LINK_ETHERNET
    if eth.any():
        o = off[eth]
        e = v.w(o + 12)
        at = o + 14
        for _ in range(2):  # 802.1Q, QinQ (802.1ad and the older 0x9100)
            tagged = (e == 0x8100) | (e == 0x88A8) | (e == 0x9100)
            if not tagged.any():
                break
            e[tagged] = v.w(at[tagged] + 2)
            at[tagged] += 4
        et[eth], l3[eth] = e, at
    sll = link == 113
    if sll.any():
        et[sll], l3[sll] = v.w(off[sll] + 14), off[sll] + 16
    sll2 = link == 276
    if sll2.any():
        et[sll2], l3[sll2] = v.w(off[sll2]), off[sll2] + 20
    raw = np.isin(link, _RAW_LINKS)
    if raw.any():
        version = v.b(off[raw]) >> 4
        et[raw] = np.where(version == 4, 0x0800, np.where(version == 6, 0x86DD, 0))
    null = link == 0
    if null.any():
        # DLT_NULL stores the address family in the writer's byte order; families are small numbers.
        fam = v.u32le[np.minimum(off[null], v.limit)].astype(np.int64)
        fam = np.where(fam > 0xFFFF, v.d(off[null]), fam)
        et[null] = _family_to_ethertype(fam)
        l3[null] = off[null] + 4
    loop = link == 108
    if loop.any():
        et[loop] = _family_to_ethertype(v.d(off[loop]))
        l3[loop] = off[loop] + 4
    return l3, et


def _family_to_ethertype(fam):
    return np.where(fam == 2, 0x0800, np.where(np.isin(fam, (10, 24, 28, 30)), 0x86DD, 0))


def _decode_layer(v: _Bytes, off, end, link) -> _Layer:
    """One layer of every packet: link, network and transport headers from ``off`` to ``end``;
    where a tunnel header follows, ``inner_off`` and ``inner_link`` say where its packet starts."""
    l3, et = _link_layer(v, off, link)
    net = _network_layer(v, l3, et, end)
    ipend = np.minimum(l3 + net.iplen, end)
    _set_aside(net)
    tr = _transport_layer(v, net, l3, ipend)
    tunnel, inner_off, inner_link = _tunnels(v, net, tr, end)
    dns_at, dns_end = _dns_messages(v, net, tr, tunnel, ipend)
    proto, seq = net.proto, tr.seq
    return _Layer(
        status=net.status, src_hi=net.src_hi, src_lo=net.src_lo, dst_hi=net.dst_hi, dst_lo=net.dst_lo,
        proto=proto, sport=tr.sport, dport=tr.dport, iplen=net.iplen, ipid=net.ipid, frag=net.frag,
        ev_src=tr.ev_src, ev_dst=tr.ev_dst, fingerprint=_fingerprint(v, net, tr, ipend), dns_at=dns_at, dns_end=dns_end,
        tcp_seq=np.where(proto == TCP, seq, 0), tcp_ack=np.where(proto == TCP, tr.ack, 0), tcp_next=tr.tcp_next,
        tcp_flags=tr.flags,  # set for the TCP headers read, 0 elsewhere
        tunnel=tunnel, inner_off=inner_off, inner_link=inner_link,
    )


@dataclass
class _Network:
    """The network layer of one layer's packets. ``status`` is OK where an IP header was read
    (later steps set it to why a packet does not count); ``l4`` is where its transport header
    starts."""

    status: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray
    iplen: np.ndarray
    ipid: np.ndarray
    frag: np.ndarray
    l4: np.ndarray


def _network_layer(v: _Bytes, l3, et, end) -> _Network:
    """IPv4 and IPv6 headers at ``l3`` (of ethertype ``et``); NON_IP for other ethertypes,
    TRUNCATED where the header is cut off or not a header of its version."""
    m = len(l3)
    z = lambda: np.zeros(m, dtype=np.int64)  # noqa: E731
    zu = lambda: np.zeros(m, dtype=np.uint64)  # noqa: E731
    net = _Network(status=np.full(m, NON_IP, dtype=np.int8), src_hi=zu(), src_lo=zu(), dst_hi=zu(), dst_lo=zu(),
                   proto=z(), iplen=z(), ipid=z(), frag=z(), l4=z())
    net.status[l3 >= end] = TRUNCATED
    _ipv4(v, net, l3, et, end)
    _ipv6(v, net, l3, et, end)
    return net


def _ipv4(v: _Bytes, net: _Network, l3, et, end) -> None:
    v4 = (et == 0x0800) & (l3 + 20 <= end)
    net.status[(et == 0x0800) & (l3 + 20 > end)] = TRUNCATED
    if not v4.any():
        return
    o = l3[v4]
    b0 = v.b(o)
    ihl = (b0 & 15) * 4
    total = v.w(o + 2)
    good = (b0 >> 4 == 4) & (ihl >= 20) & (o + ihl <= end[v4]) & (total >= ihl)
    fragword = v.w(o + 6)
    offset = fragword & 0x1FFF
    more = (fragword & 0x2000) != 0
    idx = np.flatnonzero(v4)
    net.status[idx] = np.where(good, OK, TRUNCATED)
    net.src_lo[idx] = _IPV4_MAPPED | v.d_unsigned(o + 12)
    net.dst_lo[idx] = _IPV4_MAPPED | v.d_unsigned(o + 16)
    net.proto[idx] = v.b(o + 9)
    net.iplen[idx] = total
    net.ipid[idx] = v.w(o + 4)
    net.frag[idx] = np.where(offset > 0, offset, np.where(more, -1, 0))
    net.l4[idx] = o + ihl


def _ipv6(v: _Bytes, net: _Network, l3, et, end) -> None:
    """The IPv6 header and its extension headers (the fragment header's offset and id)."""
    v6 = (et == 0x86DD) & (l3 + 40 <= end)
    net.status[(et == 0x86DD) & (l3 + 40 > end)] = TRUNCATED
    if not v6.any():
        return
    status, frag, ipid = net.status, net.frag, net.ipid
    idx = np.flatnonzero(v6)
    o = l3[idx]
    good = v.b(o) >> 4 == 6
    status[idx] = np.where(good, OK, TRUNCATED)
    plen = v.w(o + 4)
    net.iplen[idx] = np.where(plen > 0, plen + 40, end[idx] - o)  # 0: jumbogram
    net.src_hi[idx], net.src_lo[idx] = v.q(o + 8), v.q(o + 16)
    net.dst_hi[idx], net.dst_lo[idx] = v.q(o + 24), v.q(o + 32)
    nh = v.b(o + 6)
    at = o + 40
    for _ in range(8):
        ext = np.isin(nh, _IPV6_EXTENSIONS) & (status[idx] == OK)
        if not ext.any():
            break
        e_at = at[ext]
        short = e_at + 8 > end[idx[ext]]
        status[idx[ext][short]] = TRUNCATED
        fragment = nh[ext] == 44
        fw = v.w(e_at + 2)
        fidx = idx[ext][fragment]
        frag[fidx] = np.where(fw[fragment] >> 3 > 0, fw[fragment] >> 3, np.where(fw[fragment] & 1, -1, 0))
        ipid[fidx] = v.d(e_at[fragment] + 4)
        size = np.where(fragment, 8, np.where(nh[ext] == 51, (v.b(e_at + 1) + 2) * 4, (v.b(e_at + 1) + 1) * 8))
        nh[ext] = v.b(e_at)
        at[ext] = e_at + size
    net.proto[idx] = nh
    net.l4[idx] = at


def _set_aside(net: _Network) -> None:
    """LOOPBACK for the node talking to itself (never a policy matter), FRAGMENT for non-first
    fragments (no transport header: the aggregator gives them their first fragment's ports)."""
    status, src_hi, src_lo, dst_hi, dst_lo = net.status, net.src_hi, net.src_lo, net.dst_hi, net.dst_lo
    ok = status == OK
    is_v4 = src_hi == 0
    lo_v4 = ((src_lo >> np.uint64(24)) & np.uint64(0xFFFFFF)) == 0xFFFF7F
    lo_v4 |= ((dst_lo >> np.uint64(24)) & np.uint64(0xFFFFFF)) == 0xFFFF7F
    lo_v6 = ((src_hi == 0) & (src_lo == 1)) | ((dst_hi == 0) & (dst_lo == 1))
    status[ok & ((is_v4 & lo_v4) | lo_v6)] = LOOPBACK
    ok = status == OK
    status[ok & (net.frag > 0)] = FRAGMENT


@dataclass
class _Transport:
    """Transport header fields; ``pay`` is where the transport payload starts."""

    sport: np.ndarray
    dport: np.ndarray
    ev_src: np.ndarray
    ev_dst: np.ndarray
    seq: np.ndarray  # TCP sequence number, SCTP verification tag, ICMP sequence number and type
    ack: np.ndarray
    flags: np.ndarray
    tcp_next: np.ndarray
    pay: np.ndarray


def _transport_layer(v: _Bytes, net: _Network, l3, ipend) -> _Transport:
    """TCP, UDP, SCTP and ICMP/ICMPv6 headers of the packets still OK: ports, direction
    evidence and the fields of the fingerprint. TRUNCATED where the header is cut off,
    ICMP_CONTROL for ICMP other than echo."""
    m = len(l3)
    z = lambda: np.zeros(m, dtype=np.int64)  # noqa: E731
    tr = _Transport(sport=z(), dport=z(), ev_src=z(), ev_dst=z(), seq=z(), ack=z(), flags=z(), tcp_next=z(),
                    pay=net.l4.copy())
    ok, proto = net.status == OK, net.proto
    _tcp(v, net, tr, l3, _whole(net, ok & (proto == TCP), 20, ipend))
    _udp(v, net, tr, _whole(net, ok & (proto == UDP), 8, ipend))
    _sctp(v, net, tr, ipend, _whole(net, ok & (proto == SCTP), 12, ipend))
    _icmp(v, net, tr, _whole(net, ok & ((proto == ICMP) | (proto == ICMPV6)), 8, ipend))
    return tr


def _whole(net: _Network, mask, length: int, ipend):
    """``mask`` without the packets whose transport header (``length`` bytes) is cut off; those
    are TRUNCATED."""
    short = mask & (net.l4 + length > ipend)
    net.status[short] = TRUNCATED
    return mask & ~short


def _tcp(v: _Bytes, net: _Network, tr: _Transport, l3, tcp) -> None:
    if not tcp.any():
        return
    o = net.l4[tcp]
    tr.sport[tcp], tr.dport[tcp] = v.w(o), v.w(o + 2)
    tr.seq[tcp], tr.ack[tcp] = v.d(o + 4), v.d(o + 8)
    fl = v.b(o + 13)
    tr.flags[tcp] = fl
    tr.pay[tcp] = o + (v.b(o + 12) >> 4) * 4
    syn = (fl & 0x12) == 0x02
    synack = (fl & 0x12) == 0x12
    # SYN and FIN each take one sequence number.
    seglen = (l3[tcp] + net.iplen[tcp]) - tr.pay[tcp] + (fl & 0x02 != 0) + (fl & 0x01)
    tr.tcp_next[tcp] = (tr.seq[tcp] + seglen) & 0xFFFFFFFF
    tr.ev_src[tcp] |= np.where(syn, EV_SYN, 0)
    tr.ev_dst[tcp] |= np.where(synack, EV_SYNACK, 0)


def _udp(v: _Bytes, net: _Network, tr: _Transport, udp) -> None:
    if not udp.any():
        return
    o = net.l4[udp]
    tr.sport[udp], tr.dport[udp] = v.w(o), v.w(o + 2)
    tr.pay[udp] = o + 8


def _sctp(v: _Bytes, net: _Network, tr: _Transport, ipend, sctp) -> None:
    if not sctp.any():
        return
    o = net.l4[sctp]
    tr.sport[sctp], tr.dport[sctp] = v.w(o), v.w(o + 2)
    chunk = np.where(o + 13 <= ipend[sctp], v.b(o + 12), 0)
    tr.ev_src[sctp] |= np.where(chunk == 1, EV_SCTP, 0)  # INIT
    tr.ev_dst[sctp] |= np.where(chunk == 2, EV_SCTP, 0)  # INIT ACK
    tr.seq[sctp] = v.d(o + 4)  # verification tag
    tr.pay[sctp] = o + 12


def _icmp(v: _Bytes, net: _Network, tr: _Transport, icmp) -> None:
    if not icmp.any():
        return
    o = net.l4[icmp]
    typ = v.b(o)
    v6msg = net.proto[icmp] == ICMPV6
    request = np.where(v6msg, typ == 128, typ == 8)
    reply = np.where(v6msg, typ == 129, typ == 0)
    echo = request | reply
    ident = v.w(o + 4)
    tr.sport[icmp] = np.where(echo, ident, 0)
    tr.dport[icmp] = np.where(echo, ident, 0)
    tr.ev_src[icmp] |= np.where(request, EV_ICMP, 0)
    tr.ev_dst[icmp] |= np.where(reply, EV_ICMP, 0)
    # NAT may rewrite the echo identifier; the sequence number and the data it keeps.
    tr.seq[icmp] = v.w(o + 6) | (typ << 16)
    tr.pay[icmp] = o + 8
    idx = np.flatnonzero(icmp)
    net.status[idx[~echo]] = ICMP_CONTROL


def _tunnels(v: _Bytes, net: _Network, tr: _Transport, end):
    """``(tunnel, inner_off, inner_link)``: the TUNNEL_NAMES kind of a tunnel header after the
    transport (UDP) or network header (IP-in-IP, GRE), where its packet starts and its link type.
    GRE carrying something other than IP is NON_IP."""
    m = len(end)
    ok, proto, dport, pay, l4 = net.status == OK, net.proto, tr.dport, tr.pay, net.l4
    tunnel = np.zeros(m, dtype=np.int8)
    inner_off = np.zeros(m, dtype=np.int64)
    inner_link = np.zeros(m, dtype=np.int64)
    udp_ok = ok & (proto == UDP)
    vx = udp_ok & np.isin(dport, VXLAN_PORTS) & (pay + 8 + 14 <= end)
    if vx.any():
        vx[vx] = (v.b(pay[vx]) & 0x08) != 0  # the "VNI present" flag
        tunnel[vx], inner_off[vx], inner_link[vx] = 1, pay[vx] + 8, LINK_ETHERNET
    gv = udp_ok & (dport == GENEVE_PORT) & (pay + 8 <= end)
    if gv.any():
        g0 = v.b(pay[gv])
        ptype = v.w(pay[gv] + 2)
        sub = np.flatnonzero(gv)
        good = (g0 >> 6 == 0) & np.isin(ptype, (0x6558, 0x0800, 0x86DD))
        sub = sub[good]
        tunnel[sub] = 2
        inner_off[sub] = pay[sub] + 8 + (g0[good] & 0x3F) * 4
        inner_link[sub] = np.where(ptype[good] == 0x6558, LINK_ETHERNET, LINK_RAW)
    fl = udp_ok & (dport == FLANNEL_UDP_PORT) & (pay + 20 <= end)
    if fl.any():
        fl[fl] = np.isin(v.b(pay[fl]) >> 4, (4, 6))
        tunnel[fl], inner_off[fl], inner_link[fl] = 3, pay[fl], LINK_RAW
    ipip = ok & ((proto == 4) | (proto == 41)) & (l4 + 20 <= end)
    if ipip.any():
        tunnel[ipip] = np.where(proto[ipip] == 4, 4, 5)
        inner_off[ipip], inner_link[ipip] = l4[ipip], LINK_RAW
    gre = ok & (proto == 47) & (l4 + 4 <= end)
    if gre.any():
        gf = v.w(l4[gre])
        ptype = v.w(l4[gre] + 2)
        hl = 4 + 4 * (((gf >> 15) | (gf >> 14)) & 1) + 4 * ((gf >> 13) & 1) + 4 * ((gf >> 12) & 1)
        good = ((gf & 7) == 0) & np.isin(ptype, (0x6558, 0x0800, 0x86DD))
        sub = np.flatnonzero(gre)[good]
        tunnel[sub] = 6
        inner_off[sub] = l4[sub] + hl[good]
        inner_link[sub] = np.where(ptype[good] == 0x6558, LINK_ETHERNET, LINK_RAW)
    net.status[(ok & (proto == 47)) & (tunnel == 0)] = NON_IP  # GRE carrying something other than IP
    return tunnel, inner_off, inner_link


def _dns_messages(v: _Bytes, net: _Network, tr: _Transport, tunnel, ipend):
    """``(dns_at, dns_end)``: where a DNS message (over TCP: its length prefix) starts and the
    packet ends, -1 where there is none; the QR bit of each message is direction evidence."""
    dns_at = np.full(len(ipend), -1, dtype=np.int64)
    dns_end = ipend.copy()
    proto, sport, dport, pay = net.proto, tr.sport, tr.dport, tr.pay
    dns = (net.status == OK) & (tunnel == 0) & ((proto == UDP) | (proto == TCP)) & ((sport == 53) | (dport == 53))
    if dns.any():
        idx = np.flatnonzero(dns & (pay < ipend))  # a bare SYN, ACK or FIN carries no message
        dns_at[idx] = pay[idx]  # too short to be DNS, the message still counts as malformed DNS
        at = pay[idx] + np.where(proto[idx] == TCP, 2, 0)
        has_header = at + 12 <= ipend[idx]
        idx, at = idx[has_header], at[has_header]
        qr = v.b(at + 2) >> 7
        tr.ev_src[idx] |= np.where(qr == 0, EV_DNS, 0)
        tr.ev_dst[idx] |= np.where(qr == 1, EV_DNS, 0)
    return dns_at, dns_end


def _fingerprint(v: _Bytes, net: _Network, tr: _Transport, ipend):
    """What stays the same when the packet is seen again elsewhere, even after NAT rewrote its
    addresses and ports (those are deliberately left out)."""
    word = _payload_word(v, tr.pay, ipend)
    word2 = _payload_word(v, tr.pay + 8, ipend)
    return _mix(net.proto.astype(np.uint64), net.iplen, net.ipid, net.frag, tr.seq, tr.ack, tr.flags, word, word2)


_POWERS = np.cumprod(np.full(8192, 0x100000001B3, dtype=np.uint64), dtype=np.uint64)
_MAX_MESSAGE = 8 * len(_POWERS)


def message_hash(data, start: np.ndarray, end: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte range [start, end) of ``data``, ignoring the two bytes at
    ``skip`` (a DNS query ID, at most 6 bytes after ``start``), for all ranges at once: a
    polynomial over the range's big-endian 64-bit words, the last one cut to the range."""
    v = _Bytes(data)
    lens = np.clip(end - start, 0, _MAX_MESSAGE)
    nwords = (lens + 7) // 8
    total = int(nwords.sum())
    if not total:
        return mix(lens)
    first = np.r_[0, np.cumsum(nwords)[:-1]]
    k = np.arange(total) - np.repeat(first, nwords)
    words = v.q(np.repeat(start, nwords) + 8 * k)
    left = np.minimum(np.repeat(lens, nwords) - 8 * k, 8).astype(np.uint64)
    keep = np.where(left == 8, ~np.uint64(0), ~(~np.uint64(0) >> (left * np.uint64(8))))
    at_skip = (k == 0) & np.repeat(skip - start <= 6, nwords)
    rel = np.repeat(np.clip(skip - start, 0, 6), nwords).astype(np.uint64)
    keep[at_skip] &= ~(np.uint64(0xFFFF) << (np.uint64(48) - rel[at_skip] * np.uint64(8)))
    with np.errstate(over="ignore"):
        terms = (words & keep) * _POWERS[k]
    h = np.zeros(len(start), dtype=np.uint64)
    nonempty = nwords > 0
    h[nonempty] = np.add.reduceat(terms, first[nonempty])
    return mix(h, lens)


def _payload_word(v: _Bytes, at, ipend):
    """Up to 8 payload bytes at ``at`` as an integer, zero where the packet has fewer."""
    avail = np.clip(ipend - at, 0, 8).astype(np.uint64)
    shift = (np.uint64(8) - avail) * np.uint64(8)
    word = np.where(avail > 0, v.q(at) >> np.minimum(shift, np.uint64(56)), np.uint64(0))
    return word


def _mix(h: np.ndarray, *values: np.ndarray) -> np.ndarray:
    """A 64-bit hash of several integer arrays (multiply-xorshift; wraps around on purpose)."""
    h = h.astype(np.uint64)
    with np.errstate(over="ignore"):
        for x in values:
            h = (h ^ x.astype(np.uint64)) * _M64
            h ^= h >> np.uint64(29)
    return h


def mix(*values: np.ndarray) -> np.ndarray:
    return _mix(np.zeros(len(values[0]), dtype=np.uint64), *values)
