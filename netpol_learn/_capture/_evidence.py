"""What the server answered: each connection's evidence class, as a pure function.

``decide_evidence`` takes columns of the connection table (``_table.CONN_FIELDS``) and, once the
direction is decided, which side is the client, and returns per connection the index of its class
in ``EVIDENCE`` (docs/flow-log.md, "Evidence"; DESIGN rule 14: only answered traffic is a need).

TCP, by what each side sent (a packet without RST, or an RST) and whether the client sent a SYN:

* ``established``: the server sent a packet without RST (a SYN-ACK, data, a FIN), and the client
  did not answer with only RSTs; also when the capture shows only the server's packets;
* ``refused``: the client sent a SYN and the server answered only with RSTs;
* ``stale``: no SYN from the client and one side sent only RSTs: a packet of an old connection,
  answered by an RST from the address's new holder (whichever side the direction made the
  server); also a client that sent only RSTs to a silent server;
* ``unanswered``: the server sent nothing.

UDP, SCTP, ICMP echo and every other protocol: ``answered`` when the server sent anything, else
``repeated`` when the client sent two packets or more, else ``unanswered``.
"""

from __future__ import annotations

import numpy as np

from netpol_learn._capture._decode import EV_SYN, TCP
from netpol_learn._capture._table import SENT_B_SHIFT, SENT_PLAIN, SENT_RST
from netpol_learn._flowlog import EVIDENCE

ESTABLISHED, ANSWERED, REPEATED, REFUSED, UNANSWERED, STALE = (
    EVIDENCE.index(e) for e in ("established", "answered", "repeated", "refused", "unanswered", "stale"))


def decide_evidence(proto: np.ndarray, ev: np.ndarray, sent: np.ndarray, packets: np.ndarray,
                    a_packets: np.ndarray, client_a: np.ndarray) -> np.ndarray:
    """Per connection, the index in ``EVIDENCE`` of its class (int64).

    ``proto`` is the IP protocol, ``ev`` the direction evidence bits (low byte side A's, high
    byte side B's), ``sent`` what each side sent (``_table``: side A a packet without RST 1, an
    RST 2; side B 4, 8), ``packets`` and ``a_packets`` the packets in all and from side A, and
    ``client_a`` whether side A is the client."""
    shift_c = np.where(client_a, 0, SENT_B_SHIFT)
    shift_s = SENT_B_SHIFT - shift_c
    c_bits, s_bits = (sent >> shift_c) & 3, (sent >> shift_s) & 3
    s_plain = (s_bits & SENT_PLAIN) != 0
    s_rst_only = s_bits == SENT_RST
    s_silent = s_bits == 0
    c_rst_only = c_bits == SENT_RST
    c_syn = (np.where(client_a, ev, ev >> 8) & EV_SYN) != 0
    c_packets = np.where(client_a, a_packets, packets - a_packets)
    tcp = proto == TCP

    out = np.full(len(proto), UNANSWERED, dtype=np.int64)
    other = ~tcp
    out[other & ~s_silent] = ANSWERED
    out[other & s_silent & (c_packets >= 2)] = REPEATED
    out[tcp & s_plain] = ESTABLISHED
    out[tcp & s_plain & c_rst_only] = STALE
    out[tcp & s_rst_only] = np.where(c_syn[tcp & s_rst_only], REFUSED, STALE)
    out[tcp & s_silent & c_rst_only] = STALE
    return out
