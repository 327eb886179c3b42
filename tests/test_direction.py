"""The direction decision by itself: ``_direction.decide_direction`` on small hand-made
connection tables (docs/flow-log.md, "Direction methods"). Each row below is one connection: the
evidence bits of side A (the lower endpoint) and side B, the protocol, the two ports and who sent
the first packet; the expectation is the method and which side is the client."""

from __future__ import annotations

import numpy as np
import pytest

from netpol_learn._capture import _decode, _direction
from netpol_learn._flowlog import DIRECTION_METHODS

EV_SYN, EV_SYNACK, EV_SCTP, EV_ICMP, EV_DNS = _decode.EV_SYN, _decode.EV_SYNACK, _decode.EV_SCTP, _decode.EV_ICMP, _decode.EV_DNS
TCP, UDP, SCTP, ICMP, ICMPV6 = _decode.TCP, _decode.UDP, _decode.SCTP, _decode.ICMP, _decode.ICMPV6

A, B = "A", "B"


def ev(a: int = 0, b: int = 0) -> int:
    """Evidence bits: ``a`` says side A is the client, ``b`` side B."""
    return a | (b << 8)


def decide(rows):
    """rows: (ev, proto, a_port, b_port, first_from_a) -> [(method name, client side)]."""
    cols = list(zip(*rows))
    args = [np.array(cols[0], dtype=np.int64), np.array(cols[1], dtype=np.int64), np.array(cols[2], dtype=np.int64),
            np.array(cols[3], dtype=np.int64), np.array(cols[4], dtype=bool)]
    copies = [a.copy() for a in args]
    method, client_a = _direction.decide_direction(*args)
    for before, after in zip(copies, args):  # pure: the inputs are left as they were
        assert np.array_equal(before, after)
    assert method.dtype == np.int64 and client_a.dtype == bool and len(method) == len(rows)
    return [(DIRECTION_METHODS[m], A if c else B) for m, c in zip(method.tolist(), client_a.tolist())]


CASES = {
    # evidence, one method at a time, on ports that would say the opposite
    "syn from A": ((ev(a=EV_SYN), TCP, 80, 40000, False), ("syn", A)),
    "syn from B": ((ev(b=EV_SYN), TCP, 40000, 80, True), ("syn", B)),
    "syn-ack to A": ((ev(a=EV_SYNACK), TCP, 80, 40000, False), ("syn-ack", A)),
    "syn-ack to B": ((ev(b=EV_SYNACK), TCP, 40000, 80, True), ("syn-ack", B)),
    "sctp init": ((ev(b=EV_SCTP), SCTP, 40000, 38412, True), ("sctp-init", B)),
    "icmp echo": ((ev(a=EV_ICMP), ICMP, 7, 7, False), ("icmp-echo", A)),
    "icmpv6 echo": ((ev(b=EV_ICMP), ICMPV6, 7, 7, True), ("icmp-echo", B)),
    "dns query from A": ((ev(a=EV_DNS), UDP, 53, 40000, False), ("dns", A)),
    "dns over tcp": ((ev(b=EV_DNS), TCP, 40000, 53, True), ("dns", B)),
    # the strongest method that tells the sides apart decides
    "syn beats syn-ack": ((ev(a=EV_SYN, b=EV_SYNACK), TCP, 80, 443, False), ("syn", A)),
    "syn beats dns": ((ev(a=EV_DNS, b=EV_SYN), TCP, 53, 40000, True), ("syn", B)),
    "syn-ack beats dns": ((ev(a=EV_SYNACK, b=EV_DNS), TCP, 53, 40000, False), ("syn-ack", A)),
    "sctp beats icmp bits": ((ev(a=EV_SCTP | EV_ICMP, b=EV_ICMP), SCTP, 5000, 5000, False), ("sctp-init", A)),
    # both sides with the same evidence say nothing (simultaneous open): the next method decides
    "syn from both, syn-ack to B": ((ev(a=EV_SYN, b=EV_SYN | EV_SYNACK), TCP, 80, 40000, True), ("syn-ack", B)),
    "syn from both, then ports": ((ev(a=EV_SYN, b=EV_SYN), TCP, 40000, 443, True), ("port-heuristic", A)),
    "dns both ways, then ports": ((ev(a=EV_DNS, b=EV_DNS), UDP, 53, 53000, True), ("port-heuristic", B)),
    # mid-stream: a well-known port is the server
    "port below 1024 on B": ((0, TCP, 50000, 443, False), ("port-heuristic", A)),
    "port below 1024 on A": ((0, TCP, 22, 50000, True), ("port-heuristic", B)),
    "port 1023 is well-known": ((0, UDP, 1023, 1024, True), ("port-heuristic", B)),
    "common server port on B": ((0, TCP, 30000, 5432, False), ("port-heuristic", A)),
    "common server port on A": ((0, TCP, 6443, 12000, True), ("port-heuristic", B)),
    "common server port against an ephemeral one": ((0, TCP, 50000, 10250, False), ("port-heuristic", A)),
    "sctp ports count": ((0, SCTP, 2905, 80, True), ("port-heuristic", A)),
    # both well-known or neither: the one side on an ephemeral port is the client
    "both well-known": ((0, TCP, 80, 443, False), ("first-packet", B)),
    "neither well-known, A ephemeral": ((0, TCP, 40000, 20000, False), ("port-heuristic", A)),
    "neither well-known, B ephemeral": ((0, UDP, 20000, 32768, True), ("port-heuristic", B)),
    "32767 is not ephemeral": ((0, UDP, 32767, 20000, False), ("first-packet", B)),
    "both common server ports": ((0, TCP, 9090, 5000, True), ("first-packet", A)),
    # nothing else: the first packet's sender is the client
    "both ephemeral": ((0, TCP, 40000, 50000, False), ("first-packet", B)),
    "both ephemeral, A first": ((0, TCP, 40000, 50000, True), ("first-packet", A)),
    "same port": ((0, UDP, 8080, 8080, True), ("first-packet", A)),
    # ports mean nothing for protocols without them
    "icmp without echo evidence": ((0, ICMP, 0, 40000, False), ("first-packet", B)),
    "other protocol": ((0, 50, 0, 0, True), ("first-packet", A)),
    "gre with port-like numbers": ((0, 47, 80, 40000, True), ("first-packet", A)),
    # evidence of methods the table does not know (bits above the evidence methods) is ignored
    # a flow record's own direction (Hubble's reply flag, bit 5) beats the ports
    "flow record": ((ev(a=1 << 5), TCP, 80, 40000, False), ("flow-record", A)),
    "unknown evidence bit": ((ev(a=1 << 6), TCP, 80, 40000, False), ("port-heuristic", B)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_connection(name):
    row, expected = CASES[name]
    assert decide([row]) == [expected]


def test_every_rule_in_one_table_row_by_row():
    """The rows do not influence one another: the whole table at once gives each row's answer."""
    names = sorted(CASES)
    assert decide([CASES[n][0] for n in names]) == [CASES[n][1] for n in names]


def test_swapping_the_sides_swaps_the_client():
    """The decision does not prefer side A: the same connection with its sides swapped (ports,
    evidence bytes, who sent first) has the same method and the other client."""
    rows = [row for row, _ in CASES.values()]
    swapped = [(((e & 0xFF) << 8) | (e >> 8), proto, bp, ap, not first) for e, proto, ap, bp, first in rows]
    flip = {A: B, B: A}
    assert decide(swapped) == [(m, flip[c]) for m, c in decide(rows)]


def test_an_empty_table():
    method, client_a = _direction.decide_direction(*(np.zeros(0, dtype=np.int64) for _ in range(4)), np.zeros(0, dtype=bool))
    assert method.shape == client_a.shape == (0,)


def test_every_common_server_port_is_a_server_port():
    ports = _direction.COMMON_SERVER_PORTS.tolist()
    rows = [(0, TCP, p, 40001, False) for p in ports] + [(0, UDP, 33000, p, True) for p in ports]
    assert decide(rows) == [("port-heuristic", B)] * len(ports) + [("port-heuristic", A)] * len(ports)
    assert {2379, 3306, 5432, 6379, 6443, 8080, 9090, 10250} <= set(ports)  # the examples docs/flow-log.md names


def test_method_indexes_follow_the_flow_log():
    assert DIRECTION_METHODS[_direction.PORT_HEURISTIC] == "port-heuristic"
    assert DIRECTION_METHODS[_direction.FIRST_PACKET] == "first-packet"
