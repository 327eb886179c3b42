"""DNS messages: the question and the A, AAAA and CNAME answers, nothing else.

Written by hand because it runs once per DNS packet in a capture, where a general DNS library
(scapy's or dnspython's, which build an object per record) costs several times more. It is strict:
every length is checked against the end of the message, and compression pointers must point
backwards, which makes loops impossible; anything else raises ``DnsError``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 65: "HTTPS", 255: "ANY"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
ANSWER_TYPES = {1, 5, 28}
MAX_NAME = 255


class DnsError(ValueError):
    """A message that is not valid DNS."""


@dataclass(frozen=True)
class DnsMessage:
    response: bool
    rcode: str
    qname: str
    qtype: str
    answers: tuple[tuple[str, str, str, int], ...]  # (name, type, data, ttl)


def _name(msg: bytes, at: int) -> tuple[str, int]:
    """The name at ``at`` and the offset just past it in the record."""
    labels: list[str] = []
    end_of_record = -1
    length = 0
    n = len(msg)
    pos = at
    while True:
        if pos >= n:
            raise DnsError("name runs past the end of the message")
        size = msg[pos]
        if size == 0:
            pos += 1
            break
        kind = size & 0xC0
        if kind == 0xC0:
            if pos + 2 > n:
                raise DnsError("compression pointer cut off")
            target = ((size & 0x3F) << 8) | msg[pos + 1]
            if target >= pos:
                raise DnsError("compression pointer does not point backwards")
            if end_of_record < 0:
                end_of_record = pos + 2
            pos = target
            continue
        if kind:
            raise DnsError(f"unknown label type 0x{kind:02x}")
        if pos + 1 + size > n:
            raise DnsError("label runs past the end of the message")
        length += size + 1
        if length > MAX_NAME:
            raise DnsError("name longer than 255 bytes")
        labels.append(msg[pos + 1 : pos + 1 + size].decode("ascii", "backslashreplace").lower())
        pos += 1 + size
    return ".".join(labels), (end_of_record if end_of_record >= 0 else pos)


def parse(msg: bytes) -> DnsMessage:
    if len(msg) < 12:
        raise DnsError("shorter than a DNS header")
    _txid, flags, qdcount, ancount, _ns, _ar = struct.unpack_from(">HHHHHH", msg)
    if qdcount != 1:
        raise DnsError(f"{qdcount} questions")
    qname, pos = _name(msg, 12)
    if pos + 4 > len(msg):
        raise DnsError("question cut off")
    qtype, _qclass = struct.unpack_from(">HH", msg, pos)
    pos += 4
    answers = []
    for _ in range(ancount):
        name, pos = _name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsError("answer record cut off")
        rtype, _rclass, ttl, rdlen = struct.unpack_from(">HHIH", msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsError("record data runs past the end of the message")
        if rtype == 1 and rdlen == 4:
            answers.append((name, "A", str(ipaddress.IPv4Address(msg[pos : pos + 4])), ttl))
        elif rtype == 28 and rdlen == 16:
            answers.append((name, "AAAA", ipaddress.IPv6Address(msg[pos : pos + 16]).compressed, ttl))
        elif rtype == 5:
            target, _ = _name(msg, pos)
            answers.append((name, "CNAME", target, ttl))
        pos += rdlen
    return DnsMessage(
        response=bool(flags & 0x8000),
        rcode=RCODES.get(flags & 0xF, str(flags & 0xF)),
        qname=qname,
        qtype=QTYPES.get(qtype, f"TYPE{qtype}"),
        answers=tuple(answers),
    )


def parse_tcp_segment(segment: bytes) -> list[DnsMessage]:
    """The complete DNS messages in a TCP segment (each behind its 2-byte length)."""
    out = []
    pos = 0
    while pos + 2 <= len(segment):
        (size,) = struct.unpack_from(">H", segment, pos)
        if size < 12 or pos + 2 + size > len(segment):
            if not out:
                raise DnsError("DNS over TCP message cut off or split across segments")
            break
        out.append(parse(segment[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return out
