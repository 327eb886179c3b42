"""One interface's packet socket and its mmap'd ``TPACKET_V3`` receive ring (``PacketRing``), and
the packets drained from the rings in the capture stage's chunk form (``Batch``)."""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct

import numpy as np

from netpol_learn._capture import PAD
from netpol_learn._sniff._filter import attach
from netpol_learn._sniff._interfaces import ifindex

# Linux constants (linux/if_packet.h, linux/if_ether.h).
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
LINK_RAW = 101  # the decoder's link type for raw IP
#: The kernel hands over a block that is not full after this many milliseconds.
RETIRE_MS = 50
#: Packets younger than this wait for the next batch: every ring has handed them over by then.
HOLD_MS = 3 * RETIRE_MS

_BLOCK = struct.Struct("<III")  # tpacket_hdr_v1: num_pkts, offset_to_first_pkt, blk_len (at +12)
_FRAME = struct.Struct("<IIIIIIH")  # tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac
_U32 = struct.Struct("<I")
_MREQ = struct.Struct("@iHH8s")  # packet_mreq: ifindex, type, alen, address


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
            attach(self.sock, program)
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame = 2048  # V3 packets take the room they need; this only has to divide a block
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                                 struct.pack("7I", block_size, blocks, frame, block_size // frame * blocks, RETIRE_MS, 0, 0))
            self.map = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self.index = 0
            if name != "any":
                # Bound only now, with the filter and ring in place: no packet arrives unfiltered.
                self.sock.bind((name, ETH_P_ALL))
                index = ifindex(name)
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
