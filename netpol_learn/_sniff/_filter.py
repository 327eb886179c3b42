"""The kernel filter: what each packet socket lets through (``FILTER``), compiled to classic BPF.

scapy compiles the libpcap expression (``scapy.arch.common.compile_filter``, which calls libpcap's
``pcap_compile`` through ctypes) for raw IP (``DLT_RAW``, what cooked sockets see); without
libpcap the same program, compiled ahead of time and kept below (``FALLBACK_PROGRAM``), is used.
tests/test_sniff.py checks that the two agree.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from netpol_learn._errors import SniffError

#: Bytes kept of each packet: every header, and DNS messages up to 4 KiB.
SNAPLEN = 4096

#: What the kernel keeps, for raw IP packets (cooked sockets start at the IP header).
FILTER = (
    "(ip and (udp"
    " or (tcp and (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 or port 53))"
    " or (sctp and (sctp[12] == 1 or sctp[12] == 2))"
    " or ip proto 4 or ip proto 41 or ip proto 47))"
    " or (ip6 and (udp or ip6 proto 44"
    " or (ip6 proto 6 and (ip6[53] & 7 != 0 or port 53))"
    " or ip6 proto 132 or ip6 proto 4 or ip6 proto 41 or ip6 proto 47))"
)
#: ``FILTER`` as libpcap 1.10 compiles it for DLT_RAW: (code, jt, jf, k) per instruction.
FALLBACK_PROGRAM = (
    (48, 0, 0, 0), (84, 0, 0, 240), (21, 0, 19, 64), (48, 0, 0, 9), (21, 34, 0, 17), (21, 0, 9, 6),
    (40, 0, 0, 6), (69, 32, 0, 8191), (177, 0, 0, 0), (80, 0, 0, 13), (69, 28, 0, 7), (72, 0, 0, 0),
    (21, 26, 0, 53), (72, 0, 0, 2), (21, 24, 25, 53), (21, 0, 20, 132), (40, 0, 0, 6), (69, 22, 0, 8191),
    (177, 0, 0, 0), (80, 0, 0, 12), (21, 18, 0, 1), (21, 17, 18, 2), (48, 0, 0, 0), (84, 0, 0, 240),
    (21, 0, 15, 96), (48, 0, 0, 6), (21, 12, 0, 17), (21, 11, 0, 44), (21, 0, 6, 6), (48, 0, 0, 53),
    (69, 8, 0, 7), (40, 0, 0, 40), (21, 6, 0, 53), (40, 0, 0, 42), (21, 4, 5, 53), (21, 3, 0, 132),
    (21, 2, 0, 4), (21, 1, 0, 41), (21, 0, 1, 47), (6, 0, 0, 65535), (6, 0, 0, 0),
)

# Linux constants (linux/filter.h) and libpcap's.
SO_ATTACH_FILTER = 26
DLT_RAW = 12
BPF_RET_K = 0x06


def compile_program(expression: str = FILTER, snaplen: int = SNAPLEN) -> tuple[tuple[int, int, int, int], ...]:
    """The classic BPF program of ``expression`` for raw IP, accepting ``snaplen`` bytes.

    Compiled by scapy with libpcap; without libpcap the built-in program for ``FILTER`` is used
    (another expression then is an error)."""
    try:
        program = _libpcap_compile(expression)
    except ImportError:
        if expression != FILTER:
            raise SniffError("compiling a capture filter needs libpcap (apt-get install libpcap0.8), which is not installed")
        program = FALLBACK_PROGRAM
    # Accepting instructions return how many bytes to keep: libpcap says 65535 or 262144.
    return tuple((c, jt, jf, min(k, snaplen) if c == BPF_RET_K else k) for c, jt, jf, k in program)


def _libpcap_compile(expression: str) -> tuple[tuple[int, int, int, int], ...]:
    try:
        from scapy.arch.common import compile_filter
        from scapy.error import Scapy_Exception
    except OSError as exc:  # scapy's libpcap bindings load the library at import time
        raise ImportError(str(exc)) from exc
    try:
        bpf = compile_filter(expression, linktype=DLT_RAW)
    except OSError as exc:
        raise ImportError(str(exc)) from exc
    except Scapy_Exception as exc:
        raise SniffError(f"bad capture filter: {exc}") from exc
    return tuple((bpf.bf_insns[i].code, bpf.bf_insns[i].jt, bpf.bf_insns[i].jf, bpf.bf_insns[i].k) for i in range(bpf.bf_len))


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


def attach(sock: socket.socket, program) -> None:
    """Attach the classic BPF ``program`` to ``sock`` (before it is bound: no packet unfiltered)."""
    insns = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = struct.pack("@HP", len(program), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
