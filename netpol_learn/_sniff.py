"""Live capture on a node: packet sockets -> the capture stage's decoder and aggregator -> a
flow-log segment every interval.

    PacketRing (one per interface)  ->  Batch  ->  decode  ->  ConnectionLimit  ->  Aggregator
        every --interval seconds, and on SIGTERM/SIGINT:  Aggregator.result  ->  one segment

**Sockets.** Each interface gets an ``AF_PACKET`` socket in cooked mode (``SOCK_DGRAM``: the
kernel hands over the packet from its IP header on, whatever the link layer: Ethernet veths,
bridges, tunnel devices, ``any``) with a ``TPACKET_V3`` receive ring mapped into this process:
the kernel fills blocks of packets, and reading a block costs one copy and no system call per
packet. Each socket makes its interface promiscuous for as long as it is open (a bridge hands its
packet sockets the frames it forwards between its ports only then). scapy's own sockets build a
Python object per packet (a few thousand packets/s); here a block's packets go straight into the
same chunk form that ``capture._files`` makes from pcap files (bytes, offsets, captured lengths,
timestamps, link type, ``PAD`` bytes of padding), and the rest of the pipeline is the capture
stage's, unchanged.

**The kernel filter** (``FILTER``, a libpcap expression) keeps only what learning needs: TCP
segments with SYN, FIN or RST (the handshake decides the direction; FIN and RST show connections
that were open before the sniffer started, when they close), all of TCP port 53 (DNS over TCP),
UDP (DNS answers, UDP services, VXLAN/Geneve/flannel tunnels), SCTP INIT/INIT ACK, and IP-in-IP,
IPv6-in-IPv4 and GRE tunnels. scapy compiles it (``scapy.arch.common.compile_filter``, which calls
libpcap's ``pcap_compile`` through ctypes) for raw IP (``DLT_RAW``, what cooked sockets see);
without libpcap the same program, compiled ahead of time and kept below (``FALLBACK_PROGRAM``), is
used. tests/test_sniff.py checks that the two agree.

**Bounds.** At most ``max_connections`` distinct connections (5-tuples, both directions as one)
per interval: packets of further connections are dropped before aggregation and counted
(``dropped_connections``, ``dropped_packets``). Each interval starts a fresh aggregator, so
memory never grows with time. Kernel drops (ring full) are counted as ``dropped_by_kernel``.

**Interfaces.** Named ones, glob patterns, or by default the pod-facing ones (``veth*``,
``cali*``, ``lxc*``, ``cni0``, ``flannel*``, ``vxlan*``, ``genev*``). A netlink socket reports
links as they come and go: an interface that appears (a pod created) and matches is captured at
once; one that vanishes (a pod deleted) is a warning, its ring is drained first, and capture goes
on elsewhere.

**Start and output.** ``Sniffer.start`` opens every socket before the output: a start that fails
(no capability, no such interface, no memory for a ring) creates no output file and leaves an
existing one untouched. ``SegmentWriter`` appends to a regular file (also through a symlink),
which alone it checks, cuts back and fsyncs, or writes into a FIFO (waiting for its reader) or a
character device.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import fnmatch
import mmap
import os
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace

import numpy as np

from netpol_learn._errors import OutputError, SniffError
from netpol_learn._output import open_append
from netpol_learn._capture import DEFAULT_DEDUP_WINDOW
from netpol_learn._capture import _decode as d
from netpol_learn._capture._aggregate import Aggregator
from netpol_learn._capture._files import PAD
from netpol_learn._flowlog import FORMAT, FlowLog, dumps_lines

try:  # the C accelerator's dispatcher, when the capture stage has it
    from netpol_learn._capture._accel import decode
except ImportError:  # pragma: no cover
    from netpol_learn._capture._decode import decode

__all__ = ["DEFAULT_INTERFACES", "FILTER", "Sniffer", "SegmentWriter", "compile_program", "discover"]

#: The node's pod-facing interfaces (veth pairs of bridge CNIs, Calico, Cilium; bridges; tunnels).
DEFAULT_INTERFACES = ("veth*", "cali*", "lxc*", "cni0", "flannel*", "vxlan*", "genev*")
DEFAULT_INTERVAL = 60.0
DEFAULT_MAX_CONNECTIONS = 200_000
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

# Linux constants (linux/if_packet.h, linux/filter.h, linux/rtnetlink.h).
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
DLT_RAW = 12
LINK_RAW = 101  # the decoder's link type for raw IP
BPF_RET_K = 0x06
RTMGRP_LINK = 1
SIOCGIFFLAGS = 0x8913
#: The kernel hands over a block that is not full after this many milliseconds.
RETIRE_MS = 50
#: Packets younger than this wait for the next batch: every ring has handed them over by then.
HOLD_MS = 3 * RETIRE_MS

_BLOCK = struct.Struct("<III")  # tpacket_hdr_v1: num_pkts, offset_to_first_pkt, blk_len (at +12)
_FRAME = struct.Struct("<IIIIIIH")  # tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac
_U32 = struct.Struct("<I")
_MREQ = struct.Struct("@iHH8s")  # packet_mreq: ifindex, type, alen, address

Warn = Callable[[str], None]


# --- the kernel filter ----------------------------------------------------------------------


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


def _attach(sock: socket.socket, program) -> None:
    insns = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    fprog = struct.pack("@HP", len(program), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# --- interfaces -----------------------------------------------------------------------------


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def discover(patterns: Iterable[str]) -> dict[str, int]:
    """Interfaces of this network namespace whose names match any of ``patterns``: name -> index."""
    patterns = tuple(patterns)
    return {name: index for index, name in socket.if_nameindex() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def _is_up(name: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", name.encode()[:15], 0)), 16)[0]
    except OSError:
        return False
    return bool(flags & 1)  # IFF_UP


def _ifindex(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


# --- one interface --------------------------------------------------------------------------


class PacketRing:
    """A cooked packet socket on one interface (or ``any``) with a TPACKET_V3 receive ring, the
    interface in promiscuous mode while the socket is open.

    Promiscuous, as tcpdump makes it: a bridge hands its own packet sockets only the frames it
    delivers to itself (routed traffic, broadcasts), not those it forwards from one port to
    another (two pods on the bridge talking over the link, not through the node), unless it is
    promiscuous. The membership (PACKET_MR_PROMISC) belongs to the socket: the kernel counts it
    in the interface's promiscuity and takes it back when the socket closes, also when the
    process dies. ``promisc_error`` is why the interface could not be made promiscuous, if so
    (capture goes on without)."""

    def __init__(self, name: str, program, block_size: int, blocks: int):
        self.name = name
        self.block_size, self.blocks = block_size, blocks
        self.next = 0
        self.closing_at: float | None = None  # vanished: drain until then, then close
        self.down_since: float | None = None  # the kernel said ENETDOWN
        self.down_warned = False
        self.promisc_error: str | None = None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL) if name == "any" else 0)
        try:
            _attach(self.sock, program)
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 2048  # V3 packets take the room they need; this only has to divide a block
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                                 struct.pack("7I", block_size, blocks, frame, block_size // frame * blocks, RETIRE_MS, 0, 0))
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.index = 0
            if name != "any":
                # Bound only now, with the filter and ring in place: no packet arrives unfiltered.
                self.sock.bind((name, ETH_P_ALL))
                index = _ifindex(name)
                if index is None:
                    raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
                self.index = index
                self._promiscuous()
        except BaseException:
            self.sock.close()
            raise

    def _promiscuous(self) -> None:
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(self.index, PACKET_MR_PROMISC, 0, b""))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise  # gone meanwhile
            self.promisc_error = exc.strerror or str(exc)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, batch: Batch) -> int:
        """Move every block the kernel has handed over into ``batch``; the number of packets."""
        got = 0
        m = self.map
        while True:
            base = self.next * self.block_size
            if not _U32.unpack_from(m, base + 8)[0] & TP_STATUS_USER:
                return got
            num, first, length = _BLOCK.unpack_from(m, base + 12)
            block = m[base : base + length]
            m[base + 8 : base + 12] = b"\0\0\0\0"  # back to the kernel
            self.next = (self.next + 1) % self.blocks
            batch.add(block, first, num)
            got += num

    def error(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) since the last call: packets that passed the filter, and those the
        kernel dropped because the ring was full."""
        packets, drops, _freeze = struct.unpack("III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        return packets - drops, drops

    def close(self) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass
        self.sock.close()


class Batch:
    """Packets drained from the rings, in the chunk form of ``capture._files``; ``held`` are the
    packets an earlier batch kept back (their bytes back to back, offsets, lengths, timestamps)."""

    def __init__(self, held: tuple[bytes, np.ndarray, np.ndarray, np.ndarray] | None = None):
        self.held = held
        self.blocks: list[bytes] = [held[0]] if held else []
        self.size = len(held[0]) if held else 0
        self.off: list[int] = []
        self.cap: list[int] = []
        self.sec: list[int] = []
        self.nsec: list[int] = []

    def __len__(self) -> int:
        return len(self.off) + (len(self.held[1]) if self.held else 0)

    def add(self, block: bytes, first: int, num: int) -> None:
        base = self.size
        off_append, cap_append, sec_append, nsec_append = self.off.append, self.cap.append, self.sec.append, self.nsec.append
        unpack = _FRAME.unpack_from
        at = first
        for _ in range(num):
            nxt, sec, nsec, snap, _len, _status, mac = unpack(block, at)
            off_append(base + at + mac)
            cap_append(snap)
            sec_append(sec)
            nsec_append(nsec)
            at += nxt
        self.blocks.append(block)
        self.size += len(block)

    def take(self, upto: int | None):
        """((data, off, caplen, link, ts) of the packets up to time ``upto`` in time order, the
        Batch of those after it). The rings hand over blocks up to RETIRE_MS late, each on its
        own timer: packets of the last moments are held back so that every copy of a packet (a
        veth and the bridge; before and after DNAT) reaches the aggregator in time order."""
        data = b"".join(self.blocks) + bytes(PAD)
        ts = np.array(self.sec, dtype=np.int64) * 1_000_000_000 + np.array(self.nsec, dtype=np.int64)
        off = np.array(self.off, dtype=np.int64)
        cap = np.array(self.cap, dtype=np.int64)
        if self.held:
            _, held_off, held_cap, held_ts = self.held
            off, cap, ts = np.concatenate((held_off, off)), np.concatenate((held_cap, cap)), np.concatenate((held_ts, ts))
        order = np.argsort(ts, kind="stable")
        off, cap, ts = off[order], cap[order], ts[order]
        n = len(ts) if upto is None else int(np.searchsorted(ts, upto, side="right"))
        rest = Batch(_compact(data, off[n:], cap[n:], ts[n:])) if n < len(ts) else Batch()
        return (data, off[:n], cap[:n], np.full(n, LINK_RAW, dtype=np.int32), ts[:n]), rest


def _compact(data: bytes, off: np.ndarray, cap: np.ndarray, ts: np.ndarray):
    """The packets' bytes copied back to back, with their new offsets."""
    total = int(cap.sum())
    starts = np.r_[0, np.cumsum(cap)[:-1]].astype(np.int64)
    at = np.arange(total, dtype=np.int64) + np.repeat(off - starts, cap)
    return np.frombuffer(data, dtype=np.uint8)[at].tobytes(), starts, cap, ts


# --- bounds ---------------------------------------------------------------------------------


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    if not len(table):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


def _subset(p: d.Packets, keep: np.ndarray) -> d.Packets:
    parts = {f.name: getattr(p, f.name) for f in fields(p)}
    return d.Packets(**{k: (tuple(a[keep] for a in v) if k == "outer" else v[keep]) for k, v in parts.items()})


class ConnectionLimit:
    """Admits at most ``limit`` distinct connections; packets of any other are dropped and counted."""

    def __init__(self, limit: int):
        self.limit = limit
        self.known = np.zeros(0, dtype=np.uint64)
        self.rejected = np.zeros(0, dtype=np.uint64)  # remembered up to ``limit``, to count each once
        self.dropped_connections = 0
        self.dropped_packets = 0

    def __call__(self, p: d.Packets) -> d.Packets:
        ok = np.flatnonzero(p.status == d.OK)
        if not ok.size:
            return p
        end_a = d.mix(p.src_hi[ok], p.src_lo[ok], p.sport[ok])
        end_b = d.mix(p.dst_hi[ok], p.dst_lo[ok], p.dport[ok])
        key = d.mix(p.proto[ok], np.minimum(end_a, end_b), np.maximum(end_a, end_b))
        known = _in_sorted(key, self.known)
        if known.all():
            return p
        new, first = np.unique(key[~known], return_index=True)
        room = max(self.limit - len(self.known), 0)
        if len(new) <= room:
            self.known = np.union1d(self.known, new)
            return p
        by_arrival = new[np.argsort(first, kind="stable")]
        self.known = np.union1d(self.known, by_arrival[:room])
        rejected = np.sort(by_arrival[room:])
        fresh = rejected[~_in_sorted(rejected, self.rejected)]
        self.dropped_connections += len(fresh)
        if len(self.rejected) < self.limit:
            self.rejected = np.union1d(self.rejected, fresh[: self.limit - len(self.rejected)])
        drop = _in_sorted(key, rejected)
        self.dropped_packets += int(drop.sum())
        keep = np.ones(len(p), dtype=bool)
        keep[ok[drop]] = False
        return _subset(p, keep)


# --- output ---------------------------------------------------------------------------------


class SegmentWriter:
    """Writes whole segments: to stdout, or appended to ``path`` (``O_APPEND``).

    ``path`` may be a regular file (created if missing, each segment one write call and fsync'd),
    a symlink (to where it points), a FIFO (opened once something reads it, waiting until then)
    or a character device. Only a regular file is looked into: one that is not a flow log is
    refused, and one whose last segment was cut off (the machine lost power mid-write) is cut
    back to its last complete segment first, with a warning. A FIFO or a device is only written.

    ``cancelled`` (a callable) ends the wait for a FIFO's reader with an error when it says so;
    ``info`` is told once that the wait began."""

    def __init__(self, path: str | None, warn: Warn, *, info: Warn | None = None,
                 cancelled: Callable[[], bool] | None = None):
        self.path = None if path in (None, "-") else path
        self.regular = False
        if self.path is None:
            self.fd = sys.stdout.fileno()
            return
        self.fd = self._open(info, cancelled)
        try:
            st = os.fstat(self.fd)
            self.regular = stat.S_ISREG(st.st_mode)
            if self.regular:
                self._repair(warn, st)
        except BaseException:
            os.close(self.fd)
            raise

    def _open(self, info: Warn | None, cancelled: Callable[[], bool] | None) -> int:
        try:
            return open_append(self.path, cancelled=cancelled, info=info)
        except OutputError as exc:
            raise SniffError(str(exc)) from exc

    def _repair(self, warn: Warn, st: os.stat_result) -> None:
        size = st.st_size
        if not size:
            return
        with open(self.path, "rb") as fh:
            opened = os.fstat(fh.fileno())
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise SniffError(f"{self.path} was replaced while it was being opened; not appending to it")
            head = fh.readline(4096)
            if not head.startswith(b"{") or f'"format": "{FORMAT}"'.encode() not in head:
                raise SniffError(f"{self.path} exists and is not a flow log; not appending to it")
            keep = _last_complete_segment_end(fh, size)
        if keep < size:
            os.ftruncate(self.fd, keep)
            warn(f"{self.path}: removed {size - keep} bytes of a segment left incomplete by an earlier run")

    def write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8"))
        try:
            # One write call for a file (O_APPEND: the segment lands whole, after the last one);
            # a pipe can take less, so the rest follows until all is written.
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
            if self.regular:  # a FIFO or a device cannot be synced (EINVAL)
                os.fsync(self.fd)
        except BrokenPipeError as exc:
            if self.path is None:
                raise SniffError("stdout was closed: nobody reads the flow log") from exc
            raise SniffError(f"cannot write {self.path}: its reader went away (broken pipe)") from exc
        except OSError as exc:
            raise SniffError(f"cannot write {self.path or 'stdout'}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self.path is not None:
            os.close(self.fd)


def _last_complete_segment_end(fh, size: int) -> int:
    """The offset just after the last complete stats line (which ends a segment)."""
    marker = b'"kind": "stats"'
    pos = size
    tail = b""
    while pos > 0:
        start = max(0, pos - (1 << 20))
        fh.seek(start)
        buf = fh.read(pos - start) + tail
        at = buf.rfind(marker)
        while at >= 0:
            # Only a stats line holds the marker; it is whole when its newline was written.
            end = buf.find(b"\n", at)
            if end >= 0:
                return start + end + 1
            at = buf.rfind(marker, 0, at)
        tail = buf[: buf.find(b"\n") + 1] if b"\n" in buf else buf
        pos = start
    return 0


# --- the sniffer ----------------------------------------------------------------------------


@dataclass
class Options:
    interfaces: tuple[str, ...] = ()  # names and glob patterns; empty: DEFAULT_INTERFACES
    interval: float = DEFAULT_INTERVAL
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    output: str | None = None  # None or '-': stdout
    source: str = "sniff"
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    buffer_kib: int | None = None  # ring per interface; None: 1 MiB for a pod's own interface, 8 MiB else
    batch_seconds: float = 0.1  # decode and aggregate at least this often


_PER_POD = ("veth*", "cali*", "lxc*")
NO_PERMISSION = ("no permission to capture: packet sockets need CAP_NET_RAW (run as root, or grant the capability; "
                 "in a pod: securityContext.capabilities.add [NET_RAW])")


class Sniffer:
    """Captures until ``stop()`` (or SIGTERM/SIGINT when run by ``run``), writing a segment per interval."""

    def __init__(self, options: Options, *, warn: Warn, pods=None, info: Warn | None = None):
        self.o = options
        self.warn = warn
        self.info = info or (lambda message: None)
        self.pods = pods  # a PodWatcher, or None
        patterns = options.interfaces or DEFAULT_INTERFACES
        self.names = tuple(n for n in patterns if not _is_pattern(n))
        self.patterns = tuple(n for n in patterns if _is_pattern(n))
        self.program = compile_program()
        self.rings: dict[str, PacketRing] = {}
        self.poller = select.poll()
        self.by_fd: dict[int, PacketRing] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self.wake_r, select.POLLIN)
        self.netlink: socket.socket | None = None
        self.stopping = threading.Event()
        self.writer: SegmentWriter | None = None
        self.flusher: threading.Thread | None = None
        self.flush_error: BaseException | None = None
        self.segments = 0
        self.totals = {"packets": 0, "flows": 0}
        self._new_interval()

    # --- set-up ---

    def _new_interval(self) -> None:
        self.agg = Aggregator(int(self.o.dedup_window * 1e9))
        self.limit = ConnectionLimit(self.o.max_connections)
        self.kernel_drops = 0

    def _ring_size(self, name: str) -> tuple[int, int]:
        kib = self.o.buffer_kib or (1024 if any(fnmatch.fnmatchcase(name, p) for p in _PER_POD) else 8192)
        block = 256 * 1024 if kib >= 1024 else 64 * 1024
        return block, max(2, kib * 1024 // block)

    def _open(self, name: str) -> bool:
        try:
            ring = PacketRing(name, self.program, *self._ring_size(name))
        except PermissionError as exc:
            raise SniffError(NO_PERMISSION) from exc
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ENETDOWN) or _ifindex(name) is None:
                return False  # gone between listing and opening
            if exc.errno == errno.ENOMEM:
                raise SniffError(f"{name}: no memory for the capture ring ({exc.strerror}); try a smaller --buffer-size") from exc
            raise SniffError(f"cannot capture on {name}: {exc.strerror or exc}") from exc
        if ring.promisc_error is not None:
            self.warn(f"{name}: cannot make it promiscuous ({ring.promisc_error}); traffic a bridge forwards between its "
                      "ports is not seen on it")
        self.rings[name] = ring
        self.by_fd[ring.fileno()] = ring
        self.poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
        return True

    def _close(self, ring: PacketRing, batch: Batch) -> None:
        ring.drain(batch)
        self._count_kernel(ring)
        self.poller.unregister(ring.fileno())
        del self.by_fd[ring.fileno()]
        del self.rings[ring.name]
        ring.close()

    def _scan(self, first: bool = False) -> None:
        """Open rings on interfaces that appeared; notice those that vanished."""
        now = time.monotonic()
        wanted = discover(self.patterns) if self.patterns else {}
        for name in self.names:
            index = _ifindex(name) if name != "any" else 0
            if index is not None:
                wanted[name] = index
            elif first:
                raise SniffError(f"interface {name} not found (interfaces here: {', '.join(sorted(n for _, n in socket.if_nameindex()))})")
        for name, ring in list(self.rings.items()):
            if ring.closing_at is not None or name == "any":
                continue
            if _ifindex(name) != ring.index:
                self._vanished(ring, now)
            elif ring.down_since is not None and now - ring.down_since >= 0.5:
                up = _is_up(name)
                if not up and not ring.down_warned:
                    self.warn(f"interface {name} went down; capture on it goes on when it is up again")
                    ring.down_warned = True
                elif up:
                    ring.down_since, ring.down_warned = None, False
        for name in sorted(wanted):
            if name not in self.rings:
                if self._open(name):
                    if not first:
                        self.info(f"capturing on {name} too")

    def _vanished(self, ring: PacketRing, now: float) -> None:
        # The kernel hands over the last block after RETIRE_MS: drain until then, then close.
        ring.closing_at = now + 3 * RETIRE_MS / 1000
        others = sum(1 for r in self.rings.values() if r.closing_at is None)
        self.warn(f"interface {ring.name} vanished (pod deleted?); its packets so far are kept, capture goes on "
                  f"on {others} other interface{'' if others == 1 else 's'}")

    def _open_netlink(self) -> None:
        try:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
            nl.bind((0, RTMGRP_LINK))
        except OSError:
            return  # without link events, interfaces are rescanned every second
        self.netlink = nl
        self.poller.register(nl.fileno(), select.POLLIN)

    # --- running ---

    def start(self) -> None:
        """Open the sockets, then the output: whatever can fail fails before the output file is
        created or changed (a failed start leaves none, and an existing one as it was)."""
        try:  # before anything else: without the capability nothing below can work
            socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0).close()
        except PermissionError as exc:
            raise SniffError(NO_PERMISSION) from exc
        try:
            self._open_netlink()
            self._scan(first=True)
            self.writer = SegmentWriter(self.o.output, self.warn, info=self.info, cancelled=self.stopping.is_set)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        """Close the sockets of a start that failed."""
        for ring in list(self.rings.values()):
            self.poller.unregister(ring.fileno())
            ring.close()
        self.rings.clear()
        self.by_fd.clear()
        if self.netlink is not None:
            self.poller.unregister(self.netlink.fileno())
            self.netlink.close()
            self.netlink = None

    def stop(self) -> None:
        """Ask the capture loop to stop (safe from a signal handler or another thread)."""
        self.stopping.set()
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        """Capture until stopped; every interval and at the end, write a segment."""
        if self.writer is None:
            self.start()
        if not self.rings:
            self.warn(f"no interface matches {' '.join(self.patterns + self.names)} yet; waiting for one")
        batch = Batch()
        hold = HOLD_MS * 1_000_000
        now = time.monotonic()
        next_segment = now + self.o.interval
        next_batch = now + self.o.batch_seconds
        next_scan = now + 1.0
        rescan = False
        while not self.stopping.is_set():
            now = time.monotonic()
            wait = max(0.0, min(next_segment, next_batch, next_scan) - now)
            for fd, events in self.poller.poll(wait * 1000):
                ring = self.by_fd.get(fd)
                if ring is not None:
                    if events & select.POLLERR:
                        rescan |= self._ring_error(ring)
                    ring.drain(batch)
                elif self.netlink is not None and fd == self.netlink.fileno():
                    self._drain_netlink()
                    rescan = True
                elif fd == self.wake_r:
                    _drain_fd(self.wake_r)
            now = time.monotonic()
            if len(batch) >= 65536 or now >= next_batch:
                for ring in list(self.rings.values()):
                    ring.drain(batch)
                    if ring.closing_at is not None and now >= ring.closing_at:
                        self._close(ring, batch)
                batch = self._feed(batch, time.time_ns() - hold)
                next_batch = now + self.o.batch_seconds
            if rescan or now >= next_scan:
                self._scan()
                rescan = False
                next_scan = now + 1.0
            if now >= next_segment:
                batch = self._feed(batch, time.time_ns() - hold)
                self._end_segment(background=True)
                next_segment += self.o.interval * max(1, int((now - next_segment) // self.o.interval) + 1)
        # Stopping: the kernel hands over its partly filled blocks after RETIRE_MS.
        time.sleep(HOLD_MS / 1000)
        for ring in list(self.rings.values()):
            self._close(ring, batch)
        self._feed(batch, None)
        self._end_segment(background=False)
        if self.netlink is not None:
            self.netlink.close()
        self.writer.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _ring_error(self, ring: PacketRing) -> bool:
        err = ring.error()
        if err == errno.ENETDOWN:
            # Down, or on its way out (a deleted veth goes down first): a scan a little later
            # tells which.
            if ring.down_since is None:
                ring.down_since = time.monotonic()
            return True
        if err:
            self.warn(f"interface {ring.name}: {os.strerror(err)}")
        return False

    def _drain_netlink(self) -> None:
        try:
            while self.netlink.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # ENOBUFS: events were lost; the rescan looks at everything anyway
            pass

    def _feed(self, batch: Batch, upto: int | None) -> Batch:
        """Aggregate the packets of ``batch`` up to time ``upto`` (all: None); the rest, held back."""
        if not len(batch):
            return batch
        (data, off, cap, link, ts), rest = batch.take(upto)
        if len(off):
            self.agg.feed(data, self.limit(decode(data, off, cap, link, ts)))
        return rest

    def _count_kernel(self, ring: PacketRing) -> None:
        try:
            _packets, drops = ring.kernel_stats()
        except OSError:
            return
        self.kernel_drops += drops

    def _end_segment(self, background: bool) -> None:
        for ring in self.rings.values():
            self._count_kernel(ring)
        agg, limit, drops = self.agg, self.limit, self.kernel_drops
        self._new_interval()
        self._join_flusher()
        if background:
            self.flusher = threading.Thread(target=self._flush, args=(agg, limit, drops), name="segment-writer", daemon=True)
            self.flusher.start()
        else:
            self._flush(agg, limit, drops)
            if self.flush_error is not None:
                raise self.flush_error

    def _join_flusher(self) -> None:
        if self.flusher is not None:
            self.flusher.join()
            self.flusher = None
        if self.flush_error is not None:
            raise self.flush_error

    def _flush(self, agg: Aggregator, limit: ConnectionLimit, kernel_drops: int) -> None:
        try:
            log = self.segment(agg, limit, kernel_drops)
            self.writer.write("".join(dumps_lines(log)))
            self.segments += 1
            self.totals["packets"] += log.stats.get("packets", 0)
            self.totals["flows"] += len(log.flows)
        except BaseException as exc:  # noqa: BLE001 - raised again in the capture loop
            self.flush_error = exc
            self.stop()

    def segment(self, agg: Aggregator, limit: ConnectionLimit, kernel_drops: int) -> FlowLog:
        log = agg.result(self.o.source)
        stats = dict(log.stats)
        for name, value in (("dropped_connections", limit.dropped_connections), ("dropped_packets", limit.dropped_packets),
                            ("dropped_by_kernel", kernel_drops)):
            if value:
                stats[name] = value
        flows = log.flows
        if self.pods is not None:
            flows = tuple(self.pods.annotate(f) for f in flows)
            # What no later segment can ask about any more: addresses let go of long ago.
            self.pods.prune(time.time_ns() - int((self.o.interval + 60) * 1e9))
        return replace(log, flows=flows, stats=dict(sorted(stats.items())))


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def run_until_signalled(sniffer: Sniffer, started: Callable[[], None] | None = None) -> None:
    """Start ``sniffer`` and run it, SIGTERM and SIGINT asking it to stop and write its last
    segment; ``started`` is called once it listens."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: sniffer.stop())
    try:
        sniffer.start()
        if started is not None:
            started()
        sniffer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
