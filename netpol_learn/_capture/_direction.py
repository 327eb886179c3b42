"""Which end of a connection is the client: the direction decision, as a pure function.

``decide_direction`` takes columns of the connection table (``_table.CONN_FIELDS``) and returns,
per connection, the method that decided (an index into ``DIRECTION_METHODS``) and whether side A
is the client. It reads nothing else and changes none of its inputs. The rules, strongest first
(docs/flow-log.md, "Direction methods"):

1. evidence, method by method in ``EVIDENCE_METHODS`` order (SYN, SYN-ACK, SCTP INIT, ICMP echo,
   DNS QR bit): the first method for which exactly one side has evidence decides (both sides with
   the same evidence, as in a TCP simultaneous open, say nothing);
2. for TCP, UDP and SCTP, ``port-heuristic``: the one side on a well-known port (below 1024 or in
   ``COMMON_SERVER_PORTS``) is the server; else the one side on an ephemeral port
   (``EPHEMERAL_LOW`` and up) is the client;
3. ``first-packet``: the sender of the earliest packet is the client.
"""

from __future__ import annotations

import numpy as np

from netpol_learn._capture._decode import EVIDENCE_METHODS, SCTP, TCP, UDP
from netpol_learn._flowlog import DIRECTION_METHODS

#: Ports that a server listens on even though they are not below 1024.
COMMON_SERVER_PORTS = np.array(
    [1433, 1521, 2181, 2379, 2380, 3000, 3306, 4222, 5000, 5432, 5601, 5672, 6379, 6443, 7000,
     8000, 8080, 8081, 8443, 8888, 9000, 9042, 9090, 9092, 9093, 9100, 9200, 9300, 9411, 9443,
     10250, 10255, 10256, 11211, 15672, 27017],
    dtype=np.int64,
)
#: The lowest port of the ephemeral range (Linux: 32768-60999; IANA: 49152-65535).
EPHEMERAL_LOW = 32768
#: Protocols with ports: the ones a port can tell the server of.
PORTED = (TCP, UDP, SCTP)

#: Method indexes after the evidence methods, in ``DIRECTION_METHODS`` (``listen`` between them
#: is the sniffer's socket scan's, never a packet's).
PORT_HEURISTIC = DIRECTION_METHODS.index("port-heuristic")
FIRST_PACKET = DIRECTION_METHODS.index("first-packet")
assert DIRECTION_METHODS[: len(EVIDENCE_METHODS)] == EVIDENCE_METHODS


def is_ported(proto: np.ndarray) -> np.ndarray:
    """Per connection: its protocol has ports (TCP, UDP, SCTP)."""
    return np.isin(proto, PORTED)


def decide_direction(ev: np.ndarray, proto: np.ndarray, a_port: np.ndarray, b_port: np.ndarray,
                     first_from_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(method, client_a)`` per connection: the index in ``DIRECTION_METHODS`` of the rule
    that decided (int64), and whether side A is the client (bool).

    ``ev`` holds the evidence bits (low byte: side A is the client by ``EVIDENCE_METHODS[i]``,
    bit i; high byte: side B), ``proto`` the IP protocol, ``a_port``/``b_port`` the sides' ports
    and ``first_from_a`` whether side A sent the earliest packet."""
    n = len(ev)
    a_bits, b_bits = ev & 0xFF, (ev >> 8) & 0xFF
    method = np.full(n, -1, dtype=np.int64)
    client_a = np.zeros(n, dtype=bool)
    for i in range(len(EVIDENCE_METHODS)):
        bit = 1 << i
        a, b = (a_bits & bit) != 0, (b_bits & bit) != 0
        decided = (method < 0) & (a ^ b)
        method[decided] = i
        client_a[decided] = a[decided]
    ported = is_ported(proto)
    a_known = (a_port < 1024) | np.isin(a_port, COMMON_SERVER_PORTS)
    b_known = (b_port < 1024) | np.isin(b_port, COMMON_SERVER_PORTS)
    decided = (method < 0) & ported & (a_known ^ b_known)
    method[decided], client_a[decided] = PORT_HEURISTIC, b_known[decided]
    a_eph, b_eph = a_port >= EPHEMERAL_LOW, b_port >= EPHEMERAL_LOW
    decided = (method < 0) & ported & (a_eph ^ b_eph)
    method[decided], client_a[decided] = PORT_HEURISTIC, a_eph[decided]
    rest = method < 0
    method[rest], client_a[rest] = FIRST_PACKET, first_from_a[rest]
    return method, client_a
