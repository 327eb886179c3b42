"""Synthetic packet captures for the capture-stage tests.

Everything here builds captures byte by byte so that each test controls exactly what the reader
sees: the classic pcap and pcapng headers are written with ``struct`` (both byte orders, micro- and
nanosecond precision, several interfaces of different link types), packets come from scapy
(``bytes(pkt)``) or are assembled by hand where scapy would "fix" them.

Conventions:

* A *record* is ``(timestamp, packet)`` or, for pcapng, ``(timestamp, interface, packet)``.
  Timestamps are seconds as ``int``/``float``/``str``/``Decimal``; they are converted through
  :func:`D` (floats rounded to the microsecond; Decimal/str/int exact, down to the nanosecond).
* Packet builders return lists of ``(timestamp, packet)`` where the packet is an IP/IPv6 scapy
  packet (layer 3) unless a builder says otherwise (VLAN builders return Ethernet frames, GRE
  carrying Ethernet returns the outer IP packet). :func:`frame` wraps a packet for a link type.
* Every IPv4 packet built here gets a fresh IP identification from a counter, so two different
  packets never share the deduplication fingerprint by accident. Copies made with
  :func:`nat_copy` / :func:`copy_on_interfaces` keep the identification on purpose.
"""

from __future__ import annotations

import gzip as _gzip
import ipaddress
import itertools
import struct
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Sequence

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, GRE
from scapy.layers.sctp import SCTP, SCTPChunkInit, SCTPChunkInitAck
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.packet import Packet, Raw

# --------------------------------------------------------------------------------------------
# constants

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

#: 2025-06-01T10:00:00Z
T0 = 1748772000
T0_ISO = "2025-06-01T10:00:00"

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_ISB = 0x00000005
PCAPNG_EPB = 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

# null/loopback address families (libpcap LINKTYPE_NULL)
AF_INET = 2
AF_INET6_BSD = 24  # NetBSD, OpenBSD
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30

_BO = {"<": "<", "little": "<", "le": "<", ">": ">", "big": ">", "be": ">"}

_ip_ids = itertools.count(0x1000)


def next_ip_id() -> int:
    """A fresh IPv4 identification (never 0)."""
    return (next(_ip_ids) % 0xFFFE) + 1


def _bo(byteorder: str) -> str:
    return _BO[byteorder]


def D(ts) -> Decimal:
    """A timestamp as an exact Decimal. Floats are rounded to the microsecond (a float cannot hold
    more at today's epoch values, and this keeps ``T0 + 0.25 + 1.000123`` equal to
    ``T0 + 1.250123``); ints, strings and Decimals are taken exactly."""
    if isinstance(ts, float):
        return Decimal(round(ts * 1_000_000)) / 1_000_000
    return Decimal(str(ts))


def ts_ns(ts) -> int:
    """Timestamp in integer nanoseconds."""
    return int(D(ts) * 1_000_000_000)


def iso(ts) -> str:
    """The RFC 3339 UTC form with microseconds the flow log uses, e.g. 2025-06-01T10:00:00.250000Z."""
    import datetime

    ns = ts_ns(ts)
    sec, rem = divmod(ns, 1_000_000_000)
    d = datetime.datetime.fromtimestamp(sec, tz=datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (rem // 1000)


def pbytes(pkt) -> bytes:
    return pkt if isinstance(pkt, (bytes, bytearray)) else bytes(pkt)


# --------------------------------------------------------------------------------------------
# link-layer framing

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


def _ethertype_for(pkt) -> int:
    data = pbytes(pkt)
    if data and data[0] >> 4 == 6:
        return 0x86DD
    return 0x0800


def _is_ether(pkt) -> bool:
    return isinstance(pkt, Packet) and isinstance(pkt, Ether)


def frame(pkt, linktype: int, byteorder: str = "<", ifindex: int = 1, outgoing: bool = False) -> bytes:
    """The bytes of ``pkt`` as a record of ``linktype``.

    ``pkt`` is a layer-3 packet (scapy IP/IPv6 or raw bytes of one) or, for Ethernet only, an
    Ethernet frame (passed through). For LINKTYPE_NULL the 4-byte address family is written in
    ``byteorder`` (the byte order of the capture file, i.e. of the host that wrote it).
    """
    if linktype == LINKTYPE_ETHERNET:
        if _is_ether(pkt):
            return bytes(pkt)
        l3 = pbytes(pkt)
        return bytes(Ether(src=MAC_A, dst=MAC_B, type=_ethertype_for(l3))) + l3
    if _is_ether(pkt):
        raise ValueError("an Ethernet frame can only be written with LINKTYPE_ETHERNET")
    l3 = pbytes(pkt)
    etype = _ethertype_for(l3)
    if linktype == LINKTYPE_RAW:
        return l3
    if linktype == LINKTYPE_NULL:
        af = AF_INET if etype == 0x0800 else AF_INET6_DARWIN
        return struct.pack(_bo(byteorder) + "I", af) + l3
    if linktype == LINKTYPE_LINUX_SLL:
        hdr = CookedLinux(pkttype=4 if outgoing else 0, lladdrtype=1, lladdrlen=6,
                          src=bytes.fromhex("02000000000a") + b"\x00\x00", proto=etype)
        return bytes(hdr) + l3
    if linktype == LINKTYPE_LINUX_SLL2:
        hdr = CookedLinuxV2(proto=etype, ifindex=ifindex, lladdrtype=1, pkttype=4 if outgoing else 0,
                            lladdrlen=6, src=bytes.fromhex("02000000000a") + b"\x00\x00")
        return bytes(hdr) + l3
    raise ValueError(f"cannot frame for link type {linktype}")


def null_frame(l3, af: int, byteorder: str = "<") -> bytes:
    """A LINKTYPE_NULL record with an explicit address family value."""
    return struct.pack(_bo(byteorder) + "I", af) + pbytes(l3)


# --------------------------------------------------------------------------------------------
# classic pcap


def pcap_header(linktype: int, byteorder: str = "<", nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    bo = _bo(byteorder)
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    return struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts, data: bytes, byteorder: str = "<", nanosecond: bool = False,
                caplen: int | None = None, origlen: int | None = None) -> bytes:
    bo = _bo(byteorder)
    ns = ts_ns(ts)
    sec, rem = divmod(ns, 1_000_000_000)
    frac = rem if nanosecond else rem // 1000
    caplen = len(data) if caplen is None else caplen
    origlen = len(data) if origlen is None else origlen
    return struct.pack(bo + "IIII", sec, frac, caplen, origlen) + data


def pcap_bytes(records: Iterable, linktype: int = LINKTYPE_ETHERNET, byteorder: str = "<",
               nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    """Classic pcap file contents for ``[(ts, pkt), ...]`` (packets framed for ``linktype``)."""
    out = [pcap_header(linktype, byteorder, nanosecond, snaplen)]
    for ts, pkt in records:
        out.append(pcap_record(ts, frame(pkt, linktype, byteorder), byteorder, nanosecond))
    return b"".join(out)


def write_pcap(path, records: Iterable, linktype: int = LINKTYPE_ETHERNET, byteorder: str = "<",
               nanosecond: bool = False, snaplen: int = 262144, gzip: bool = False) -> Path:
    data = pcap_bytes(records, linktype, byteorder, nanosecond, snaplen)
    return write_bytes(path, data, gzip=gzip)


def write_bytes(path, data: bytes, gzip: bool = False) -> Path:
    path = Path(path)
    if gzip:
        # mtime=0: the same input always gives the same file
        data = _gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------
# pcapng


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def pcapng_block(btype: int, body: bytes, byteorder: str = "<") -> bytes:
    bo = _bo(byteorder)
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(bo + "II", btype, total) + body + struct.pack(bo + "I", total)


def pcapng_option(code: int, value: bytes, byteorder: str = "<") -> bytes:
    return struct.pack(_bo(byteorder) + "HH", code, len(value)) + _pad4(value)


def pcapng_shb(byteorder: str = "<") -> bytes:
    bo = _bo(byteorder)
    body = struct.pack(bo + "IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1)
    return pcapng_block(PCAPNG_SHB, body, byteorder)


def pcapng_idb(linktype: int, byteorder: str = "<", snaplen: int = 262144, tsresol: int | None = None,
               name: str | None = None) -> bytes:
    """Interface Description Block. ``tsresol`` is the raw if_tsresol byte (6 = µs, 9 = ns,
    0x80|n = 2^-n); None leaves the option out (default µs)."""
    bo = _bo(byteorder)
    body = struct.pack(bo + "HHI", linktype, 0, snaplen)
    opts = b""
    if name is not None:
        opts += pcapng_option(2, name.encode(), byteorder)
    if tsresol is not None:
        opts += pcapng_option(9, bytes([tsresol]), byteorder)
    if opts:
        opts += struct.pack(bo + "HH", 0, 0)
    return pcapng_block(PCAPNG_IDB, body + opts, byteorder)


def _tsresol_units(tsresol: int | None) -> tuple[int, int]:
    """(numerator, denominator) so that units = ns * num // den."""
    if tsresol is None:
        tsresol = 6
    if tsresol & 0x80:
        return (1 << (tsresol & 0x7F), 1_000_000_000)
    exp = tsresol
    return (10 ** exp, 1_000_000_000)


def pcapng_epb(iface: int, ts, data: bytes, byteorder: str = "<", tsresol: int | None = None,
               caplen: int | None = None, origlen: int | None = None) -> bytes:
    bo = _bo(byteorder)
    num, den = _tsresol_units(tsresol)
    units = ts_ns(ts) * num // den
    caplen = len(data) if caplen is None else caplen
    origlen = len(data) if origlen is None else origlen
    body = struct.pack(bo + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, caplen, origlen) + _pad4(data)
    return pcapng_block(PCAPNG_EPB, body, byteorder)


def pcapng_isb(iface: int, ts, byteorder: str = "<", tsresol: int | None = None) -> bytes:
    bo = _bo(byteorder)
    num, den = _tsresol_units(tsresol)
    units = ts_ns(ts) * num // den
    body = struct.pack(bo + "III", iface, units >> 32, units & 0xFFFFFFFF)
    return pcapng_block(PCAPNG_ISB, body, byteorder)


class Iface:
    """One pcapng interface: link type, if_tsresol byte (None = default µs), snap length."""

    def __init__(self, linktype: int = LINKTYPE_ETHERNET, tsresol: int | None = None, snaplen: int = 262144,
                 name: str | None = None):
        self.linktype = linktype
        self.tsresol = tsresol
        self.snaplen = snaplen
        self.name = name


def pcapng_bytes(records: Iterable, interfaces: Sequence = (LINKTYPE_ETHERNET,), byteorder: str = "<",
                 trailing_isb: bool = False) -> bytes:
    """pcapng contents. ``records`` are ``(ts, iface_index, pkt)`` or ``(ts, pkt)`` (interface 0);
    ``interfaces`` are :class:`Iface` or plain link types."""
    ifaces = [i if isinstance(i, Iface) else Iface(i) for i in interfaces]
    out = [pcapng_shb(byteorder)]
    for i in ifaces:
        out.append(pcapng_idb(i.linktype, byteorder, i.snaplen, i.tsresol, i.name))
    last_ts = None
    for rec in records:
        if len(rec) == 2:
            ts, pkt = rec
            idx = 0
        else:
            ts, idx, pkt = rec
        i = ifaces[idx]
        data = frame(pkt, i.linktype, byteorder, ifindex=idx + 1)
        out.append(pcapng_epb(idx, ts, data, byteorder, i.tsresol))
        last_ts = ts
    if trailing_isb and last_ts is not None:
        for idx, i in enumerate(ifaces):
            out.append(pcapng_isb(idx, last_ts, byteorder, i.tsresol))
    return b"".join(out)


def write_pcapng(path, records: Iterable, interfaces: Sequence = (LINKTYPE_ETHERNET,), byteorder: str = "<",
                 gzip: bool = False, trailing_isb: bool = False) -> Path:
    return write_bytes(path, pcapng_bytes(records, interfaces, byteorder, trailing_isb), gzip=gzip)


def pcap_record_offsets(data: bytes) -> list[int]:
    """Where each record header of a well-formed classic pcap file starts."""
    bo = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    at, out = 24, []
    while at + 16 <= len(data):
        out.append(at)
        at += 16 + struct.unpack_from(bo + "I", data, at + 8)[0]
    return out


def pcapng_block_offsets(data: bytes, byteorder: str = "<") -> list[tuple[int, int]]:
    """``(offset, type)`` of each block of a well-formed pcapng file (one byte order)."""
    bo = _bo(byteorder)
    at, out = 0, []
    while at + 12 <= len(data):
        btype, blen = struct.unpack_from(bo + "II", data, at)
        out.append((at, btype))
        at += blen
    return out


# --------------------------------------------------------------------------------------------
# layer 3 helpers


def is_v6(addr: str) -> bool:
    return ipaddress.ip_address(addr).version == 6


def ip(src: str, dst: str, **kw):
    """An IPv4 or IPv6 header (by the address family) with a fresh identification."""
    if is_v6(src):
        kw.pop("id", None)
        kw.pop("flags", None)
        kw.pop("options", None)
        if "ttl" in kw:
            kw["hlim"] = kw.pop("ttl")
        return IPv6(src=src, dst=dst, **kw)
    kw.setdefault("id", next_ip_id())
    kw.setdefault("flags", "DF")
    return IP(src=src, dst=dst, **kw)


def l3len(pkt) -> int:
    """IP bytes (header included) of a layer-3 packet."""
    return len(pbytes(pkt))


def total_l3(records) -> int:
    return sum(l3len(r[-1]) for r in records)


def shift(records, dt) -> list:
    """Move records by ``dt`` seconds."""
    d = D(dt)
    return [(D(r[0]) + d, *r[1:]) for r in records]


# --------------------------------------------------------------------------------------------
# TCP


def tcp_session(client: str, server: str, cport: int, sport: int, t0=T0, request: bytes = b"GET / HTTP/1.1\r\n\r\n",
                response: bytes = b"HTTP/1.1 200 OK\r\n\r\nhello", start: str = "syn", fin: bool = True,
                rtt: float = 0.001, client_isn: int = 1000, server_isn: int = 5000, syn_retransmits: int = 0,
                ttl: int = 64) -> list:
    """A TCP connection: SYN, SYN-ACK, ACK, request, response, ACK, FIN/ACK both ways.

    ``start``: ``"syn"`` (whole connection), ``"syn-ack"`` (capture starts at the SYN-ACK),
    ``"mid"`` (no SYN or SYN-ACK: mid-stream; the first packet is the *server's* response so that
    "first packet" would guess the roles wrong). ``syn_retransmits``: the SYN is sent again that
    many times, 1 s apart (same sequence number, new IP id), before the SYN-ACK.
    """
    t = D(t0)
    r = D(rtt)
    c, s = client, server
    cseq, sseq = client_isn, server_isn
    pk = []

    def add(dt, src, dst, sp, dp, flags, seq, ack, payload=b""):
        nonlocal t
        t += dt
        p = ip(src, dst, ttl=ttl) / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=64240)
        if payload:
            p = p / Raw(payload)
        pk.append((t, p))

    add(0, c, s, cport, sport, "S", cseq, 0)
    for _ in range(syn_retransmits):
        add(1, c, s, cport, sport, "S", cseq, 0)
    cseq += 1
    add(r / 2, s, c, sport, cport, "SA", sseq, cseq)
    sseq += 1
    add(r / 2, c, s, cport, sport, "A", cseq, sseq)
    add(Decimal("0.0001"), c, s, cport, sport, "PA", cseq, sseq, request)
    cseq += len(request)
    add(r, s, c, sport, cport, "PA", sseq, cseq, response)
    sseq += len(response)
    add(r / 2, c, s, cport, sport, "A", cseq, sseq)
    if fin:
        add(Decimal("0.01"), c, s, cport, sport, "FA", cseq, sseq)
        cseq += 1
        add(r / 2, s, c, sport, cport, "FA", sseq, cseq)
        sseq += 1
        add(r / 2, c, s, cport, sport, "A", cseq, sseq)
    if start == "syn":
        return pk
    first_synack = 1 + syn_retransmits
    if start == "syn-ack":
        return pk[first_synack:]
    if start == "mid":
        # drop SYN, SYN-ACK, the handshake ACK and the request: start with the server's response
        return pk[first_synack + 3:]
    raise ValueError(start)


def tcp_data_exchange(first_sender: str, other: str, first_port: int, other_port: int, t0=T0, n: int = 3,
                      seq_a: int = 70000, seq_b: int = 90000, gap: float = 0.002) -> list:
    """Mid-stream TCP: ``n`` data segments alternating, starting with ``first_sender``; no SYN."""
    t = D(t0)
    pk = []
    a, b = (first_sender, first_port, seq_a), (other, other_port, seq_b)
    for i in range(n):
        (src, sp, sseq), (dst, dp, dseq) = (a, b) if i % 2 == 0 else (b, a)
        payload = b"x" * (10 + i)
        p = ip(src, dst) / TCP(sport=sp, dport=dp, flags="PA", seq=sseq, ack=dseq) / Raw(payload)
        pk.append((t, p))
        if i % 2 == 0:
            a = (a[0], a[1], a[2] + len(payload))
        else:
            b = (b[0], b[1], b[2] + len(payload))
        t += D(gap)
    return pk


# --------------------------------------------------------------------------------------------
# UDP, DNS


def udp_exchange(client: str, server: str, cport: int, sport: int, t0=T0, request: bytes = b"ping-request",
                 response: bytes | None = b"pong-response", rtt: float = 0.001) -> list:
    t = D(t0)
    pk = [(t, ip(client, server) / UDP(sport=cport, dport=sport) / Raw(request))]
    if response is not None:
        pk.append((t + D(rtt), ip(server, client) / UDP(sport=sport, dport=cport) / Raw(response)))
    return pk


def _rr(name, rtype, ttl, data):
    if rtype == "CNAME":
        return DNSRR(rrname=name, type="CNAME", ttl=ttl, rdata=data)
    return DNSRR(rrname=name, type=rtype, ttl=ttl, rdata=data)


def dns_message(txid: int, qname: str, qtype: str = "A", response: bool = False, answers: Sequence = (),
                rcode: int = 0) -> DNS:
    """A DNS message; ``answers`` are ``(name, type, ttl, data)``."""
    ans = [_rr(*a) for a in answers]
    kw = {}
    if ans:
        kw["an"] = ans
    return DNS(id=txid, qr=int(response), rd=1, ra=int(response), rcode=rcode,
               qd=DNSQR(qname=qname, qtype=qtype), **kw)


def dns_udp(client: str, resolver: str, qname: str, qtype: str = "A", answers: Sequence = (), t0=T0,
            txid: int = 0x1234, cport: int = 40000, rcode: int = 0, query: bool = True, response: bool = True,
            rtt: float = 0.002, resolver_port: int = 53) -> list:
    """DNS query and/or response over UDP."""
    t = D(t0)
    pk = []
    if query:
        pk.append((t, ip(client, resolver) / UDP(sport=cport, dport=resolver_port)
                   / dns_message(txid, qname, qtype)))
    if response:
        pk.append((t + D(rtt), ip(resolver, client) / UDP(sport=resolver_port, dport=cport)
                   / dns_message(txid, qname, qtype, True, answers, rcode)))
    return pk


def dns_tcp(client: str, resolver: str, qname: str, qtype: str = "A", answers: Sequence = (), t0=T0,
            txid: int = 0x4321, cport: int = 41000, rcode: int = 0) -> list:
    """A whole TCP connection carrying one DNS query and its response (2-byte length prefixes)."""
    q = bytes(dns_message(txid, qname, qtype))
    r = bytes(dns_message(txid, qname, qtype, True, answers, rcode))
    return tcp_session(client, resolver, cport, 53, t0=t0, request=struct.pack("!H", len(q)) + q,
                       response=struct.pack("!H", len(r)) + r)


def raw_dns_udp(client: str, resolver: str, payload: bytes, t0=T0, cport: int = 40000, to_resolver: bool = True):
    """One UDP packet to/from port 53 with an arbitrary (e.g. malformed) DNS payload."""
    if to_resolver:
        return [(D(t0), ip(client, resolver) / UDP(sport=cport, dport=53) / Raw(payload))]
    return [(D(t0), ip(resolver, client) / UDP(sport=53, dport=cport) / Raw(payload))]


def dns_pointer_loop_response(txid: int = 0x7777) -> bytes:
    """A response whose question is fine but whose answer name is a compression pointer to itself."""
    hdr = struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0)
    q = b"\x04loop\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    ans_off = 12 + len(q)
    ans = struct.pack("!H", 0xC000 | ans_off) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 0, 0, 1])
    return hdr + q + ans


def dns_pointer_loop_query(txid: int = 0x7778) -> bytes:
    """A query whose qname is two compression pointers pointing at each other."""
    hdr = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    # offset 12: pointer to 14; offset 14: pointer to 12
    q = struct.pack("!HH", 0xC000 | 14, 0xC000 | 12) + struct.pack("!HH", 1, 1)
    return hdr + q


def dns_label_past_end(txid: int = 0x7779) -> bytes:
    """A query whose first label claims 63 bytes but the packet ends after 5."""
    hdr = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    return hdr + b"\x3fabcde"


# --------------------------------------------------------------------------------------------
# SCTP, ICMP


def sctp_init(client: str, server: str, cport: int, sport: int, t0=T0, rtt: float = 0.001,
              start: str = "init") -> list:
    """SCTP INIT and INIT ACK; ``start="init-ack"`` leaves the INIT out."""
    t = D(t0)
    init = ip(client, server) / SCTP(sport=cport, dport=sport, tag=0) / SCTPChunkInit(
        init_tag=0x11111111, a_rwnd=106496, n_out_streams=10, n_in_streams=65535, init_tsn=0x1000)
    ack = ip(server, client) / SCTP(sport=sport, dport=cport, tag=0x11111111) / SCTPChunkInitAck(
        init_tag=0x22222222, a_rwnd=106496, n_out_streams=10, n_in_streams=10, init_tsn=0x2000)
    pk = [(t, init), (t + D(rtt), ack)]
    return pk if start == "init" else pk[1:]


def icmp_echo(client: str, server: str, ident: int = 0x42, seqs: Iterable[int] = (1, 2), t0=T0,
              interval: float = 1.0, rtt: float = 0.0005, reply_only: bool = False) -> list:
    """ICMP (IPv4) or ICMPv6 echo request/reply pairs (the family follows the addresses)."""
    t = D(t0)
    pk = []
    v6 = is_v6(client)
    for s in seqs:
        data = b"abcdefgh" + struct.pack("!H", s) * 8
        if v6:
            req = ip(client, server) / ICMPv6EchoRequest(id=ident, seq=s, data=data)
            rep = ip(server, client) / ICMPv6EchoReply(id=ident, seq=s, data=data)
        else:
            req = ip(client, server) / ICMP(type=8, id=ident, seq=s) / Raw(data)
            rep = ip(server, client) / ICMP(type=0, id=ident, seq=s) / Raw(data)
        if not reply_only:
            pk.append((t, req))
        pk.append((t + D(rtt), rep))
        t += D(interval)
    return pk


def icmp_control_messages(host: str = "10.244.0.5", router: str = "10.244.0.1", host6: str = "fd00:10:244::5",
                          router6: str = "fd00:10:244::1", t0=T0) -> list:
    """ICMP that is not application traffic: a port unreachable (with the offending UDP packet
    inside), a time exceeded, an ICMPv6 packet too big, neighbour solicitation and advertisement,
    router solicitation and advertisement, and an MLDv2 report."""
    from scapy.layers.inet import IPerror, UDPerror
    from scapy.layers.inet6 import (ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6ND_RS,
                                     ICMPv6PacketTooBig, IPerror6, TCPerror)

    t = D(t0)
    step = D("0.01")
    msgs = [
        ip(router, host) / ICMP(type=3, code=3) / IPerror(src=host, dst=router, id=77) / UDPerror(sport=40000, dport=9999),
        ip(router, host) / ICMP(type=11, code=0) / IPerror(src=host, dst="8.8.8.8", id=78) / UDPerror(sport=40001, dport=33434),
        IPv6(src=router6, dst=host6) / ICMPv6PacketTooBig(mtu=1280) / IPerror6(src=host6, dst="2001:db8::9") / TCPerror(sport=40002, dport=443),
        IPv6(src=host6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=router6),
        IPv6(src=router6, dst=host6, hlim=255) / ICMPv6ND_NA(tgt=router6, R=1, S=1),
        IPv6(src=host6, dst="ff02::2", hlim=255) / ICMPv6ND_RS(),
        IPv6(src=router6, dst="ff02::1", hlim=255) / ICMPv6ND_RA(),
        IPv6(src=host6, dst="ff02::16", hlim=1) / ICMPv6MLReport2(),
    ]
    return [(t + step * i, m) for i, m in enumerate(msgs)]


def truncate_records(records, linktype: int, snaplen: int, byteorder: str = "<") -> bytes:
    """Classic pcap contents as ``tcpdump -s snaplen`` writes them: each record cut to ``snaplen``
    bytes, its original length kept."""
    out = [pcap_header(linktype, byteorder, snaplen=snaplen)]
    for ts, pkt in records:
        data = frame(pkt, linktype, byteorder)
        out.append(pcap_record(ts, data[:snaplen], byteorder, origlen=len(data)))
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# IP options, IPv6 extension headers, fragments


def ipv4_with_options(client: str, server: str, cport: int, sport: int, t0=T0) -> list:
    """A TCP connection whose every packet carries IPv4 options (Router Alert + NOPs: IHL 7)."""
    pk = tcp_session(client, server, cport, sport, t0=t0)
    out = []
    for ts, p in pk:
        q = p.copy()
        q[IP].options = [IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]
        del q[IP].ihl, q[IP].len, q[IP].chksum
        q = IP(bytes(q))
        assert q.ihl > 5
        out.append((ts, q))
    return out


def ipv6_with_ext_headers(client: str, server: str, cport: int, sport: int, t0=T0) -> list:
    """A TCP connection over IPv6 with hop-by-hop, routing (type 0, segments left 0) and
    destination options headers before the TCP header."""
    pk = tcp_session(client, server, cport, sport, t0=t0)
    out = []
    for ts, p in pk:
        tcp = p[TCP]
        q = (IPv6(src=p[IPv6].src, dst=p[IPv6].dst)
             / IPv6ExtHdrHopByHop()
             / IPv6ExtHdrRouting(type=0, segleft=0, addresses=[])
             / IPv6ExtHdrDestOpt()
             / tcp.copy())
        out.append((ts, IPv6(bytes(q))))
    return out


def ipv4_fragments(client: str, server: str, cport: int, sport: int, t0=T0, size: int = 3000,
                   fragsize: int = 1480, fake_ports: tuple[int, int] = (7777, 8888)) -> list:
    """One UDP datagram split into IPv4 fragments. The first fragment carries the UDP header; the
    data of each later fragment starts with two 16-bit numbers (``fake_ports``) so that a reader
    that parses a non-first fragment as UDP sees bogus ports."""
    fake = struct.pack("!HH", *fake_ports)
    body = bytearray(b"f" * size)
    for off in range(fragsize - 8, size, fragsize):
        body[off:off + 4] = fake  # the start of each later fragment (after the 8-byte UDP header)
    ident = next_ip_id()
    whole = IP(src=client, dst=server, id=ident) / UDP(sport=cport, dport=sport) / Raw(bytes(body))
    payload = bytes(whole)[20:]
    out = []
    t = D(t0)
    for i, off in enumerate(range(0, len(payload), fragsize)):
        chunk = payload[off:off + fragsize]
        more = off + fragsize < len(payload)
        f = IP(src=client, dst=server, id=ident, proto=17, flags="MF" if more else 0, frag=off // 8) / Raw(chunk)
        out.append((t + Decimal(i) * Decimal("0.00001"), IP(bytes(f))))
    return out


def ipv6_fragments(client: str, server: str, cport: int, sport: int, t0=T0, size: int = 3000,
                   fragsize: int = 1456, fake_ports: tuple[int, int] = (7777, 8888)) -> list:
    """One UDP datagram over IPv6 split with fragment headers (same bogus-port trap as v4)."""
    fake = struct.pack("!HH", *fake_ports)
    body = bytearray(b"f" * size)
    for off in range(fragsize - 8, size, fragsize):
        body[off:off + 4] = fake
    whole = IPv6(src=client, dst=server) / UDP(sport=cport, dport=sport) / Raw(bytes(body))
    payload = bytes(whole)[40:]
    out = []
    t = D(t0)
    for i, off in enumerate(range(0, len(payload), fragsize)):
        chunk = payload[off:off + fragsize]
        more = off + fragsize < len(payload)
        f = IPv6(src=client, dst=server) / IPv6ExtHdrFragment(nh=17, offset=off // 8, m=int(more), id=0xABCDEF) / Raw(chunk)
        out.append((t + Decimal(i) * Decimal("0.00001"), IPv6(bytes(f))))
    return out


def other_protocol(client: str, server: str, proto: int = 50, t0=T0, n: int = 2) -> list:
    """``n`` packets of an IP protocol the flow log has no name for (default ESP, 50), all from
    ``client`` to ``server``."""
    t = D(t0)
    out = []
    for i in range(n):
        payload = struct.pack("!II", 0x1000, i + 1) + b"\x00" * 32  # ESP: SPI, sequence number
        if is_v6(client):
            p = IPv6(src=client, dst=server, nh=proto) / Raw(payload)
        else:
            p = ip(client, server, proto=proto) / Raw(payload)
        out.append((t + D("0.01") * i, p))
    return out


# --------------------------------------------------------------------------------------------
# encapsulations (each returns the outer packet)


def vxlan_header(vni: int) -> bytes:
    """RFC 7348 header: flags 0x08 (VNI valid), VNI, reserved bytes zero."""
    return struct.pack("!BBBBI", 0x08, 0, 0, 0, vni << 8)


def vxlan(inner, outer_src: str, outer_dst: str, port: int = 4789, vni: int = 1, sport: int = 51000):
    eth = Ether(src=MAC_A, dst=MAC_B, type=_ethertype_for(inner)) / inner
    return ip(outer_src, outer_dst) / UDP(sport=sport, dport=port) / Raw(vxlan_header(vni) + bytes(eth))


def geneve(inner, outer_src: str, outer_dst: str, vni: int = 3, sport: int = 52000):
    """Geneve on UDP 6081 carrying Ethernet (0x6558), with one 4-byte option (OVN-like)."""
    eth = Ether(src=MAC_A, dst=MAC_B, type=_ethertype_for(inner)) / inner
    g = GENEVE(vni=vni, proto=0x6558, options=[GeneveOptions(classid=0x0102, type=0x80, data=b"\x00\x01\x00\x02")])
    return ip(outer_src, outer_dst) / UDP(sport=sport, dport=6081) / Raw(bytes(g) + bytes(eth))


def ipip(inner, outer_src: str, outer_dst: str):
    """IP-in-IP (IPv4 protocol 4)."""
    return ip(outer_src, outer_dst, proto=4) / Raw(pbytes(inner))


def ip6in4(inner6, outer_src: str, outer_dst: str):
    """IPv6 in IPv4 (protocol 41, 'sit')."""
    return ip(outer_src, outer_dst, proto=41) / Raw(pbytes(inner6))


def gre(inner, outer_src: str, outer_dst: str, key: int | None = 0x2A, ethernet: bool = False):
    """GRE (protocol 47), with a key when ``key`` is not None, carrying IP (0x0800/0x86DD) or,
    with ``ethernet=True``, an Ethernet frame (transparent Ethernet bridging, 0x6558)."""
    if ethernet:
        payload = bytes(Ether(src=MAC_A, dst=MAC_B, type=_ethertype_for(inner)) / inner)
        proto = 0x6558
    else:
        payload = pbytes(inner)
        proto = _ethertype_for(inner)
    if key is None:
        hdr = struct.pack("!HH", 0, proto)
    else:
        hdr = struct.pack("!HHI", 0x2000, proto, key)
    return ip(outer_src, outer_dst, proto=47) / Raw(hdr + payload)


def flannel_udp(inner, outer_src: str, outer_dst: str):
    """flannel's UDP backend: the raw inner IP packet in UDP 8285."""
    return ip(outer_src, outer_dst) / UDP(sport=8285, dport=8285) / Raw(pbytes(inner))


def encapsulate(records, how, *args, **kw) -> list:
    """Apply an encapsulation function to each record's packet."""
    return [(r[0], *r[1:-1], how(r[-1], *args, **kw)) for r in records]


def vlan(pkt, vid: int = 100):
    """An Ethernet frame with one 802.1Q tag."""
    return Ether(src=MAC_A, dst=MAC_B, type=0x8100) / Dot1Q(vlan=vid, type=_ethertype_for(pkt)) / Raw(pbytes(pkt))


def qinq(pkt, outer: int = 200, inner: int = 100, outer_tpid: int = 0x88A8):
    """An Ethernet frame with two tags: an outer S-tag (0x88A8, or 0x8100 for the old double
    tagging / 0x9100) and an inner 802.1Q C-tag."""
    return (Ether(src=MAC_A, dst=MAC_B, type=outer_tpid)
            / Dot1Q(vlan=outer, type=0x8100)
            / Dot1Q(vlan=inner, type=_ethertype_for(pkt))
            / Raw(pbytes(pkt)))


def arp_noise(t0=T0, n: int = 2) -> list:
    """Ethernet ARP frames (non-IP)."""
    t = D(t0)
    return [(t + Decimal(i) * Decimal("0.1"),
             Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.%d" % (i + 2)))
            for i in range(n)]


# --------------------------------------------------------------------------------------------
# duplicates


def nat_copy(pkt, src: str | None = None, dst: str | None = None, sport: int | None = None,
             dport: int | None = None, ttl_decrement: int = 1):
    """The same packet after address translation: addresses/ports rewritten, checksums and TTL
    updated, IP identification, TCP sequence/acknowledgement, flags and payload unchanged."""
    q = pkt.copy()
    l3 = q[IP] if IP in q else q[IPv6]
    if src is not None:
        l3.src = src
    if dst is not None:
        l3.dst = dst
    if isinstance(l3, IP):
        l3.ttl = max(1, l3.ttl - ttl_decrement)
        del l3.chksum
    else:
        l3.hlim = max(1, l3.hlim - ttl_decrement)
    l4 = None
    for layer in (TCP, UDP, SCTP):
        if layer in q:
            l4 = q[layer]
            break
    if l4 is not None:
        if sport is not None:
            l4.sport = sport
        if dport is not None:
            l4.dport = dport
        if hasattr(l4, "chksum"):
            del l4.chksum
    return type(l3)(bytes(l3))


def nat_view(records, client: str, server: str, cport: int, sport: int, new_client: str | None = None,
             new_cport: int | None = None, new_server: str | None = None, new_sport: int | None = None,
             delay: float = 0.0002) -> list:
    """For each record of the connection client:cport <-> server:sport, the copy as seen on the
    other side of a NAT, ``delay`` seconds later (rewrites applied in both directions)."""
    out = []
    d = D(delay)
    for r in records:
        ts, pkt = r[0], r[-1]
        l3 = pkt[IP] if IP in pkt else pkt[IPv6]
        if l3.src == client:
            c = nat_copy(pkt, src=new_client, dst=new_server, sport=new_cport, dport=new_sport)
        else:
            c = nat_copy(pkt, src=new_server, dst=new_client, sport=new_sport, dport=new_cport)
        out.append((D(ts) + d, *r[1:-1], c))
    return out


def copy_on_interfaces(records, ifaces: Sequence[int] = (0, 1), delay: float = 0.00002) -> list:
    """pcapng records: each packet on every interface in ``ifaces``, ``delay`` apart (as a
    ``tcpdump -i any`` sees a packet on the pod's veth and on the bridge)."""
    out = []
    d = D(delay)
    for r in records:
        ts, pkt = D(r[0]), r[-1]
        for k, i in enumerate(ifaces):
            out.append((ts + d * k, i, pkt))
    return out


def on_iface(records, iface: int) -> list:
    return [(r[0], iface, r[-1]) for r in records]


def by_time(records) -> list:
    """Records sorted by timestamp (stable)."""
    return sorted(records, key=lambda r: D(r[0]))
