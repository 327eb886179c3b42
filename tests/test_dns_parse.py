"""The hand-written DNS parser against messages built by scapy, and on malformed messages."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from netpol_learn._capture import _dns

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
name = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))


@settings(max_examples=60, deadline=None)
@given(qname=name, chain=st.lists(name, max_size=3), addresses=st.lists(ipv4, min_size=0, max_size=3), ttl=st.integers(0, 2**31 - 1))
def test_parses_what_scapy_builds(qname, chain, addresses, ttl):
    records = []
    owner = qname
    for target in chain:
        records.append(DNSRR(rrname=owner, type="CNAME", rdata=target, ttl=ttl))
        owner = target
    records += [DNSRR(rrname=owner, type="A", rdata=a, ttl=ttl) for a in addresses]
    msg = DNS(id=4242, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype="A"), an=records)
    parsed = _dns.parse(bytes(msg))
    assert parsed.response and parsed.rcode == "NOERROR"
    assert (parsed.qname, parsed.qtype) == (qname, "A")
    expected = []
    owner = qname
    for target in chain:
        expected.append((owner, "CNAME", target, ttl))
        owner = target
    expected += [(owner, "A", a, ttl) for a in addresses]
    assert list(parsed.answers) == expected


def test_aaaa_and_nxdomain():
    msg = DNS(id=1, qr=1, rcode=3, qd=DNSQR(qname="nope.example.", qtype="AAAA"))
    parsed = _dns.parse(bytes(msg))
    assert (parsed.rcode, parsed.qtype, parsed.answers) == ("NXDOMAIN", "AAAA", ())
    msg = DNS(id=1, qr=1, qd=DNSQR(qname="v6.example.", qtype="AAAA"), an=DNSRR(rrname="v6.example.", type="AAAA", rdata="2001:db8::1", ttl=30))
    assert _dns.parse(bytes(msg)).answers == (("v6.example", "AAAA", "2001:db8::1", 30),)


def _header(qd=1, an=0, flags=0x8180):
    return struct.pack(">HHHHHH", 7, flags, qd, an, 0, 0)


@pytest.mark.parametrize(
    "raw, problem",
    [
        (_header() + b"\xc0\x0c" + b"\x00\x01\x00\x01", "does not point backwards"),  # pointer to itself
        (_header() + b"\xc0\x0e\xc0\x0c" + b"\x00\x01\x00\x01", "does not point backwards"),  # a loop through a forward pointer
        (_header() + b"\x3fabc", "past the end"),  # label longer than the message
        (_header() + b"\x03abc", "past the end"),  # name never ends
        (_header() + b"\x03abc\x00\x00", "question cut off"),
        (_header(an=1) + b"\x03abc\x00\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x10\x00\x04\x01", "past the end"),
        (_header(qd=0), "0 questions"),
        (b"\x00\x01", "shorter than a DNS header"),
        (_header() + b"\x80abc\x00\x00\x01\x00\x01", "unknown label type"),
    ],
)
def test_malformed_messages_raise(raw, problem):
    with pytest.raises(_dns.DnsError, match=problem):
        _dns.parse(raw)


def test_tcp_segment_with_two_messages_and_a_cut_one():
    one = bytes(DNS(id=1, qd=DNSQR(qname="a.example.")))
    two = bytes(DNS(id=2, qd=DNSQR(qname="b.example.")))
    seg = struct.pack(">H", len(one)) + one + struct.pack(">H", len(two)) + two
    assert [m.qname for m in _dns.parse_tcp_segment(seg)] == ["a.example", "b.example"]
    assert [m.qname for m in _dns.parse_tcp_segment(seg[:-3])] == ["a.example"]
    with pytest.raises(_dns.DnsError):
        _dns.parse_tcp_segment(seg[:10])
