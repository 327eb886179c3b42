"""Capture files: pcap (both byte orders, micro- and nanosecond) and pcapng, plain or gzip.

Yields the packets in chunks of a few MiB: the raw bytes and numpy arrays of where each packet
starts, its captured length, timestamp and link type. Walking the record headers is written by hand
rather than with scapy's readers: it is the per-packet hot path, and a plain loop over
``struct.unpack_from`` walks several million records a second, while a reader that builds an
object per packet manages a few hundred thousand. For classic pcap that loop is
``_accel.walk_pcap``: the C accelerator when it was built (ten times faster again), else the
Python reference loop; everything around it (damage, resync, snap length) is here.
"""

from __future__ import annotations

import gzip
import mmap
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netpol_learn._errors import CaptureError
from netpol_learn.capture import _accel

#: Packets per chunk: enough to make numpy's per-call overhead small, few enough that the
#: per-packet arrays of one chunk stay at a few MB.
CHUNK_PACKETS = 32768
#: Bytes read at a time from a compressed file.
READ_BYTES = 8 << 20
#: Bytes readable past the end of every packet in a chunk, so header reads never need bounds.
PAD = 64
#: No link layer gives frames larger than this; a longer record is damage, not a packet.
MAX_RECORD = 262144
MAX_BLOCK = 16 << 20

LINKTYPE_NAMES = {
    0: "null/loopback",
    1: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "OpenBSD loopback",
    113: "Linux cooked v1",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

Warn = Callable[[str], None]


@dataclass
class Chunk:
    """Packets read from one stretch of a file. Packet i is data[off[i] : off[i] + caplen[i]],
    and at least ``PAD`` bytes are readable past the end of every packet. ``data`` may be the
    whole file (memory-mapped) and is only valid until the next chunk is asked for."""

    data: bytes
    off: np.ndarray  # int64
    caplen: np.ndarray  # int64
    ts: np.ndarray  # int64 nanoseconds since the epoch
    link: np.ndarray  # int32 link type

    def __len__(self) -> int:
        return len(self.off)


class _Source:
    """A capture file as windows of bytes: a plain file is memory-mapped whole (no copies), a
    gzip file is decompressed a few MiB at a time."""

    def __init__(self, path: Path):
        try:
            self.raw = open(path, "rb")
            self.size = path.stat().st_size
        except OSError as exc:
            raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        self.path = path
        head = self.raw.read(2)
        self.raw.seek(0)
        self.gzip = gzip.GzipFile(fileobj=self.raw, mode="rb") if head == GZIP_MAGIC else None
        self.map: mmap.mmap | None = None
        if self.gzip is None and self.size:
            self.map = mmap.mmap(self.raw.fileno(), 0, access=mmap.ACCESS_READ)
            self.map.madvise(mmap.MADV_SEQUENTIAL)
        self.error: str | None = None
        self.released = 0

    def head(self, n: int) -> bytes:
        if self.map is not None:
            return self.map[:n]
        if self.gzip is None:
            return b""  # an empty file
        data = self._read(n)
        self.pending = data
        return data

    def _read(self, n: int) -> bytes:
        if self.error:
            return b""
        try:
            return self.gzip.read(n)
        except (EOFError, OSError, zlib.error) as exc:
            # A cut-off or damaged gzip stream: keep what was decompressed so far.
            self.error = f"compressed data damaged or cut off ({exc})"
            return b""

    def windows(self, start: int):
        """Yield (buffer, base, n, final): buffer[0:n] holds file bytes from offset ``base``
        on, with PAD readable bytes beyond n (except at the very end of a mapped file). After
        each window, ``keep`` (set by the consumer) says from where its bytes are still needed."""
        if self.map is not None:
            self.keep = start
            # struct reads from a memoryview of the map cost less than from the map itself.
            view = memoryview(self.map)
            try:
                yield view, 0, self.size, True
            finally:
                view.release()
            return
        buf = self.pending[start:]
        base = start
        while True:
            data = self._read(READ_BYTES)
            final = not data
            buf = buf + data
            self.keep = 0
            yield buf + bytes(PAD), base, len(buf), final
            if final:
                return
            buf = buf[self.keep :]
            base += self.keep

    def release(self, upto: int) -> None:
        """Done with the mapped bytes before ``upto``: drop their pages from this process."""
        if self.map is None:
            return
        upto -= upto % mmap.PAGESIZE
        if upto > self.released:
            self.map.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)
            self.released = upto

    def progress(self, pos: int) -> int:
        if self.map is not None:
            return pos
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # a caller still holds a view; the map goes with it
                pass
        if self.gzip is not None:
            self.gzip.close()
        self.raw.close()


def read_chunks(path: Path, warn: Warn, progress: Callable[[int], None] | None = None) -> Iterator[Chunk]:
    """The packets of one capture file, in chunks; damage is reported through ``warn``."""
    src = _Source(path)
    try:
        head = src.head(24)
        if not head:
            raise CaptureError(f"{path}: empty file" + (f" ({src.error})" if src.error else ""))
        if head[:4] in PCAP_MAGIC:
            yield from _pcap_chunks(src, head, warn, progress)
        elif head[:4] == PCAPNG_SHB:
            yield from _pcapng_chunks(src, warn, progress)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (starts with {head[:4].hex()})")
        if src.error:
            warn(f"{path}: {src.error}; kept the packets read before it")
    finally:
        src.close()


def _padded(buf, off: np.ndarray, caplen: np.ndarray, n: int, header: int):
    """At the end of a mapped file there is nothing to read past the last packet: copy that
    stretch with padding. Elsewhere, the buffer itself is returned."""
    if int(off[-1] + caplen[-1]) + PAD <= len(buf):
        return buf, off
    lo = int(off[0]) - header
    return bytes(buf[lo:n]) + bytes(PAD), off - lo


# --- pcap ----------------------------------------------------------------------------------


def _pcap_chunks(src: _Source, head: bytes, warn: Warn, progress) -> Iterator[Chunk]:
    endian, frac_ns = PCAP_MAGIC[head[:4]]
    if len(head) < 24:
        raise CaptureError(f"{src.path}: pcap file header cut off after {len(head)} bytes")
    snaplen, linktype = struct.unpack_from(endian + "II", head, 16)
    linktype &= 0x0FFFFFFF  # the upper bits carry FCS information
    if linktype not in SUPPORTED_LINKTYPES:
        raise CaptureError(f"{src.path}: link type {linktype} is not supported (supported: {_supported_names()})")
    if not 0 < snaplen <= MAX_RECORD:
        snaplen = MAX_RECORD
    incl_of = struct.Struct(endian + "I").unpack_from
    header_of = struct.Struct(endian + "IIII").unpack_from
    big_endian = endian == ">"
    warned_snaplen = False
    # The walker hands back every record over this captured length: the snap length until the
    # one warning about it, then only what is too long to be a record at all (damage).
    walk_limit = snaplen
    last_sec: int | None = None
    for buf, base, n, final in src.windows(24):
        pos = 24 - base if base < 24 else 0
        stopped = False
        while True:
            offs, sec, frac, caplen = (np.empty(CHUNK_PACKETS, dtype=np.int64) for _ in range(4))
            count = 0
            left = CHUNK_PACKETS  # records (or damaged records) this chunk may still take
            full = True
            while left:
                # Hot loop (C when built): walks records until the chunk is full, the buffered
                # data runs out, or a record is over walk_limit.
                got, pos, reason = _accel.walk_pcap(
                    buf, pos, n, big_endian, walk_limit, left, offs[count:], sec[count:], frac[count:], caplen[count:])
                count += got
                left -= got
                if reason == _accel.WALK_LIMIT:
                    break
                if reason == _accel.WALK_NEED_DATA:
                    full = False
                    break
                # The record at pos has a captured length over walk_limit.
                left -= 1
                incl = incl_of(buf, pos + 8)[0]
                if incl <= MAX_RECORD:
                    if not warned_snaplen:
                        warn(f"{src.path}: record at byte {base + pos} has captured length {incl} over the snap length {snaplen}; read anyway")
                        warned_snaplen = True
                        walk_limit = MAX_RECORD
                    end = pos + 16 + incl
                    if end > n:
                        full = False
                        break
                    offs[count] = pos
                    sec[count], frac[count], caplen[count], _orig = header_of(buf, pos)
                    count += 1
                    pos = end
                    continue
                prev = int(sec[count - 1]) if count else last_sec
                skip_to = _pcap_resync(buf, pos, n, header_of, snaplen, prev, final)
                if skip_to is None and not final and pos + MAX_RECORD * 4 > n:
                    full = False
                    break  # not enough data buffered to look for the next record
                if skip_to is None:
                    warn(f"{src.path}: damaged record at byte {base + pos} (captured length {incl}); stopped there, kept the packets before it")
                    stopped = True
                    full = False
                    break
                warn(f"{src.path}: damaged record at byte {base + pos} (captured length {incl}); skipped {skip_to - pos} bytes to the next record")
                pos = skip_to
            if count:
                last_sec = int(sec[count - 1])
                yield _pcap_chunk(buf, n, offs[:count], sec[:count], frac[:count], caplen[:count], frac_ns, linktype)
            src.release(base + pos)
            if progress:
                progress(src.progress(base + pos))
            if not full:
                break
        if stopped:
            return
        if final:
            if pos < n:
                warn(f"{src.path}: last record at byte {base + pos} cut off ({n - pos} bytes of it present); kept the packets before it")
            return
        src.keep = pos


def _pcap_resync(buf: bytes, pos: int, n: int, header_of, snaplen: int, prev_ts: int | None, final: bool) -> int | None:
    """Find the next plausible record after damage at ``pos``: two headers in a row that make sense.

    A header is plausible when its lengths fit the snap length and its seconds are within a day of
    the last good record's.
    """

    def plausible(p: int) -> bool:
        if p + 16 > n:
            return False
        sec, usec, incl, orig = header_of(buf, p)
        if incl > snaplen or orig < incl or orig > MAX_RECORD * 4:
            return False
        return prev_ts is None or abs(sec - prev_ts) <= 86400

    def followed(p: int) -> bool:
        nxt = p + 16 + header_of(buf, p)[2]
        return nxt == n and final or plausible(nxt)

    # A linear scan, bounded to a few records' worth of bytes: damage is rare and this runs once per damaged stretch.
    for p in range(pos + 1, min(n, pos + 4 * MAX_RECORD) - 15):
        if plausible(p) and followed(p):
            return p
    return None


def _pcap_chunk(buf, n: int, off: np.ndarray, sec: np.ndarray, frac: np.ndarray, caplen: np.ndarray, frac_ns: int,
                linktype: int) -> Chunk:
    data, off = _padded(buf, off + 16, caplen, n, 16)
    return Chunk(
        data=data,
        off=off,
        caplen=caplen,
        ts=sec * 1_000_000_000 + frac * frac_ns,
        link=np.full(len(off), linktype, dtype=np.int32),
    )


def _supported_names() -> str:
    return ", ".join(sorted({f"{n} ({LINKTYPE_NAMES[n]})" for n in (0, 1, 101, 113, 228, 229, 276)}))


# --- pcapng --------------------------------------------------------------------------------


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tick_num: int  # nanoseconds = ticks * tick_num // tick_den
    tick_den: int


def _pcapng_chunks(src: _Source, warn: Warn, progress) -> Iterator[Chunk]:
    endian = "<"
    interfaces: list[_Interface] = []
    unsupported_warned: set[int] = set()
    for buf, base, n, final in src.windows(0):
        pos = 0
        stopped = False
        while True:
            offs: list[int] = []
            caps: list[int] = []
            ticks: list[int] = []
            ifaces: list[int] = []
            full = False
            while pos + 12 <= n:
                if len(offs) >= CHUNK_PACKETS:
                    full = True
                    break
                if buf[pos : pos + 4] == PCAPNG_SHB:
                    bom = buf[pos + 8 : pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        endian = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        endian = ">"
                    else:
                        warn(f"{src.path}: damaged section header at byte {base + pos}; stopped there, kept the packets before it")
                        stopped = True
                        break
                    interfaces = []
                btype, blen = struct.unpack_from(endian + "II", buf, pos)
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    warn(f"{src.path}: damaged block at byte {base + pos} (length {blen}); stopped there, kept the packets before it")
                    stopped = True
                    break
                end = pos + blen
                if end > n:
                    break
                if btype == 6 or btype == 2:  # enhanced / obsolete packet block
                    if btype == 6:
                        iface, hi, lo, cap, _orig = struct.unpack_from(endian + "IIIII", buf, pos + 8)
                    else:
                        iface, _drops, hi, lo, cap, _orig = struct.unpack_from(endian + "HHIIII", buf, pos + 8)
                    if iface >= len(interfaces) or cap > blen - 28:
                        warn(f"{src.path}: damaged packet block at byte {base + pos}; skipped")
                    elif interfaces[iface].linktype in SUPPORTED_LINKTYPES:
                        offs.append(pos + 28)
                        caps.append(cap)
                        ticks.append((hi << 32) | lo)
                        ifaces.append(iface)
                elif btype == 3:  # simple packet block: no timestamp, interface 0
                    if interfaces and interfaces[0].linktype in SUPPORTED_LINKTYPES:
                        (orig,) = struct.unpack_from(endian + "I", buf, pos + 8)
                        offs.append(pos + 12)
                        caps.append(min(orig, blen - 16, interfaces[0].snaplen or MAX_RECORD))
                        ticks.append(0)
                        ifaces.append(0)
                elif btype == 1:
                    iface = _parse_idb(buf, pos, blen, endian)
                    interfaces.append(iface)
                    if iface.linktype not in SUPPORTED_LINKTYPES and iface.linktype not in unsupported_warned:
                        unsupported_warned.add(iface.linktype)
                        warn(f"{src.path}: interface {len(interfaces) - 1} has link type {iface.linktype}, which is not supported; its packets are skipped")
                pos = end
            if offs:
                yield _pcapng_chunk(buf, n, offs, caps, ticks, ifaces, interfaces)
            src.release(base + pos)
            if progress:
                progress(src.progress(base + pos))
            if not full:
                break
        if stopped:
            return
        if final:
            if pos < n:
                warn(f"{src.path}: last block at byte {base + pos} cut off ({n - pos} bytes of it present); kept the packets before it")
            return
        src.keep = pos


def _parse_idb(buf: bytes, pos: int, blen: int, endian: str) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    num, den = 1000, 1  # default resolution: microseconds
    p, end = pos + 16, pos + blen - 4
    while p + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, p)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            res = buf[p + 4]
            if res & 0x80:
                num, den = 1_000_000_000, 1 << (res & 0x7F)
            else:
                exp = res & 0x7F
                num, den = (10 ** (9 - exp), 1) if exp <= 9 else (1, 10 ** (exp - 9))
        p += 4 + ((length + 3) & ~3)
    return _Interface(linktype, snaplen, num, den)


def _pcapng_chunk(buf, n, offs, caps, ticks, ifaces, interfaces: list[_Interface]) -> Chunk:
    iface = np.array(ifaces, dtype=np.int64)
    num = np.array([i.tick_num for i in interfaces], dtype=np.int64)[iface]
    den = np.array([i.tick_den for i in interfaces], dtype=np.int64)[iface]
    t = np.array(ticks, dtype=np.uint64)
    # ticks * num can overflow 64 bits for nanosecond ticks; split the multiplication.
    ts = (t // den.astype(np.uint64)) * num.astype(np.uint64) + (t % den.astype(np.uint64)) * num.astype(np.uint64) // den.astype(np.uint64)
    caplen = np.array(caps, dtype=np.int64)
    data, off = _padded(buf, np.array(offs, dtype=np.int64), caplen, n, 28)
    return Chunk(
        data=data,
        off=off,
        caplen=caplen,
        ts=ts.astype(np.int64),
        link=np.array([i.linktype for i in interfaces], dtype=np.int32)[iface],
    )
