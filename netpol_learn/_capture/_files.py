"""Capture files: pcap (both byte orders, micro- and nanosecond) and pcapng, plain or gzip.

Yields the packets in chunks of a few MiB: the raw bytes and numpy arrays of where each packet
starts, its captured length, timestamp and link type. Walking the record headers is written by hand
rather than with scapy's readers: it is the per-packet hot path, and a plain loop over
``struct.unpack_from`` walks several million records a second, while a reader that builds an
object per packet manages a few hundred thousand. For classic pcap that loop is
``_accel.walk_pcap``: the C accelerator when it was built (ten times faster again), else the
Python reference loop; everything around it (damage, resync, snap length) is here, in
``_PcapReader``. ``_PcapngReader`` walks pcapng blocks itself (sections, interfaces, packets).

Damage: a record or block whose length is implausible (pcap: a captured length over 256 KiB or
over the record's original length, or over the snap length with no record after it; pcapng: a
total length under the block type's least, not a multiple of 4, or not repeated at the block's
end) is skipped by looking for the next plausible record or block (``_pcap_resync``,
``_pcapng_resync``), with one warning naming its byte offset and how many bytes were skipped.
Only when nothing plausible follows does the reading end there ("cut off" when it is the last
record, its bytes running past the end of the file). ``check_capture_file`` is the cheap test
made of every input before any is read: it exists, is a file and starts like a capture.

Warnings are ``CaptureWarning`` values (path, byte offset, reason, detail); their text is what
the CLI prints and the flow log's stats record.
"""

from __future__ import annotations

import gzip
import mmap
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netpol_learn._errors import CaptureError
from netpol_learn._capture import _accel

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



@dataclass(frozen=True)
class CaptureWarning:
    """Damage found while reading a capture file (or something in it that is skipped).

    ``reason`` says what is wrong, ``detail`` what the reader did about it; ``offset`` is the
    byte offset (in the decompressed file) of the record or block concerned, None where the
    damage has no place (a gzip stream cut off). ``str()`` is the message as it is printed and
    recorded: ``"<path>: <reason>; <detail>"``."""

    path: Path
    offset: int | None
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; {self.detail}"


Warn = Callable[[CaptureWarning], None]


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
    """The packets of one capture file, in chunks; damage is reported through ``warn``, one
    ``CaptureWarning`` each."""
    src = _Source(path)
    try:
        head = src.head(24)
        if not head:
            raise CaptureError(f"{path}: empty file" + (f" ({src.error})" if src.error else ""))
        if head[:4] in PCAP_MAGIC:
            yield from _PcapReader(src, head, warn).chunks(progress)
        elif head[:4] == PCAPNG_SHB:
            yield from _PcapngReader(src, warn).chunks(progress)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (starts with {head[:4].hex()})")
        if src.error:
            warn(CaptureWarning(path, None, src.error, "kept the packets read before it"))
    finally:
        src.close()


def check_capture_file(path: Path) -> str | None:
    """Why ``path`` cannot be a capture file, as one message naming it, or None when it opens
    and starts like one: the magic number of pcap, pcapng or gzip (and, inside gzip, of pcap
    or pcapng). Reads at most the first few bytes. A FIFO or device is not read here (what was
    read would be gone): it is left to the reader."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: cannot open: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path}: is a directory, not a capture file"
    try:
        fh = open(path, "rb")
    except OSError as exc:
        return f"{path}: cannot open: {exc.strerror or exc}"
    with fh:
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            head = fh.read(4)
        except OSError as exc:
            return f"{path}: cannot read: {exc.strerror or exc}"
        if not head:
            return f"{path}: empty file, not a capture file"
        inside = ""
        if head[:2] == GZIP_MAGIC:
            fh.seek(0)
            try:
                with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                    head = gz.read(4)
            except (EOFError, OSError, zlib.error) as exc:
                return f"{path}: compressed data damaged or cut off before the capture header ({exc})"
            if not head:
                return f"{path}: compressed empty file, not a capture file"
            inside = "gzip-compressed, but "
        if head in PCAP_MAGIC or head == PCAPNG_SHB:
            return None
        return f"{path}: {inside}not a pcap or pcapng file (starts with {head.hex()})"


def _padded(buf, off: np.ndarray, caplen: np.ndarray, n: int, header: int):
    """At the end of a mapped file there is nothing to read past the last packet: copy that
    stretch with padding. Elsewhere, the buffer itself is returned."""
    if int(off[-1] + caplen[-1]) + PAD <= len(buf):
        return buf, off
    lo = int(off[0]) - header
    return bytes(buf[lo:n]) + bytes(PAD), off - lo


# --- pcap ----------------------------------------------------------------------------------


class _Records:
    """Room for one chunk's pcap records, filled by the walker: each record header's offset,
    seconds, fraction of a second and captured length. ``left`` is how many records (damaged
    ones included) the chunk may still take."""

    def __init__(self, size: int):
        self.offs, self.sec, self.frac, self.caplen = (np.empty(size, dtype=np.int64) for _ in range(4))
        self.count = 0
        self.left = size

    def free(self) -> tuple[np.ndarray, ...]:
        """The arrays' unfilled ends, for the walker to write into."""
        c = self.count
        return self.offs[c:], self.sec[c:], self.frac[c:], self.caplen[c:]

    def taken(self, got: int) -> None:
        self.count += got
        self.left -= got

    def add(self, pos: int, sec: int, frac: int, caplen: int) -> None:
        c = self.count
        self.offs[c], self.sec[c], self.frac[c], self.caplen[c] = pos, sec, frac, caplen
        self.taken(1)

    def last_sec(self) -> int | None:
        return int(self.sec[self.count - 1]) if self.count else None


class _PcapReader:
    """The records of a classic pcap file: its header, then chunks of records walked by
    ``_accel.walk_pcap``; a record the walker leaves (over the snap length, over its original
    length, past the end) is read anyway or is damage, skipped with a warning."""

    def __init__(self, src: _Source, head: bytes, warn: Warn):
        endian, self.frac_ns = PCAP_MAGIC[head[:4]]
        if len(head) < 24:
            raise CaptureError(f"{src.path}: pcap file header cut off after {len(head)} bytes")
        snaplen, linktype = struct.unpack_from(endian + "II", head, 16)
        linktype &= 0x0FFFFFFF  # the upper bits carry FCS information
        if linktype not in SUPPORTED_LINKTYPES:
            raise CaptureError(f"{src.path}: link type {linktype} is not supported (supported: {_supported_names()})")
        if not 0 < snaplen <= MAX_RECORD:
            snaplen = MAX_RECORD
        self.src, self.warn = src, warn
        self.snaplen, self.linktype = snaplen, linktype
        self.header_of = struct.Struct(endian + "IIII").unpack_from
        self.big_endian = endian == ">"
        self.frac_max = 1_000_000 if self.frac_ns == 1000 else 1_000_000_000
        self.warned_snaplen = False
        # The walker hands back every record over this captured length (and every record whose
        # captured length is over its original length): the snap length until the one warning
        # about it, then only what is too long to be a record at all (damage).
        self.walk_limit = snaplen
        self.last_sec: int | None = None  # of the last record of the chunks before
        self.stopped = False  # damage ended the reading

    def chunks(self, progress) -> Iterator[Chunk]:
        src = self.src
        for buf, base, n, final in src.windows(24):
            pos = 24 - base if base < 24 else 0
            full = True
            while full:
                out = _Records(CHUNK_PACKETS)
                pos, full = self._fill(out, buf, base, n, final, pos)
                if out.count:
                    c = out.count
                    self.last_sec = int(out.sec[c - 1])
                    yield _pcap_chunk(buf, n, out.offs[:c], out.sec[:c], out.frac[:c], out.caplen[:c], self.frac_ns,
                                      self.linktype)
                src.release(base + pos)
                if progress:
                    progress(src.progress(base + pos))
            if self.stopped:
                return
            if final:
                if pos < n:
                    self._warn(base + pos, f"last record at byte {base + pos} cut off ({n - pos} bytes of it present)",
                               "kept the packets before it")
                return
            src.keep = pos

    def _fill(self, out: _Records, buf, base: int, n: int, final: bool, pos: int) -> tuple[int, bool]:
        """Records of ``buf[0:n]`` (file bytes from ``base`` on) from ``pos`` into ``out``.
        Returns ``(pos, full)``: where it stopped, and whether because ``out`` is full (else more
        data is needed, or the reading ends: ``stopped``, or a record cut off at the end)."""
        while out.left:
            # Hot loop (C when built): walks records until the chunk is full, the buffered data
            # runs out, or a record is over walk_limit or over its original length.
            got, pos, reason = _accel.walk_pcap(buf, pos, n, self.big_endian, self.walk_limit, out.left, *out.free())
            out.taken(got)
            if reason == _accel.WALK_LIMIT:
                break
            if pos + 16 > n or (reason == _accel.WALK_NEED_DATA and not final):
                return pos, False  # more data needed, or (at the end) a record header cut off
            next_pos = self._odd_record(out, buf, base, n, final, pos)
            if next_pos is None:
                return pos, False
            pos = next_pos
        return pos, True

    def _odd_record(self, out: _Records, buf, base: int, n: int, final: bool, pos: int) -> int | None:
        """The record at ``pos``, which the walker did not take: it is over walk_limit or over
        its original length, or (at the end of the file) it runs past the end. Read it anyway,
        or find out it is damage and skip it. Returns where to go on, or None to end the chunk at
        ``pos`` (more data needed, or the reading ends there)."""
        rec_sec, rec_frac, incl, orig = self.header_of(buf, pos)
        end = pos + 16 + incl
        past_end = False
        if incl > MAX_RECORD:
            why = f"captured length {incl}"
        elif incl > orig:
            why = f"captured length {incl} over its original length {orig}"
        elif end > n:
            if not final:
                return None
            why = f"captured length {incl}, past the end of the file"
            past_end = True
        else:  # over the snap length only: a record when a plausible one follows it
            if end + 16 > n and not final:
                return None
            if end + 16 > n or _pcap_plausible(self.header_of(buf, end), MAX_RECORD, rec_sec, self.frac_max):
                if not self.warned_snaplen:
                    self._warn(base + pos, f"record at byte {base + pos} has captured length {incl} over the snap "
                               f"length {self.snaplen}", "read anyway")
                    self.warned_snaplen = True
                    self.walk_limit = MAX_RECORD
                out.add(pos, rec_sec, rec_frac, incl)
                return end
            why = f"captured length {incl} over the snap length {self.snaplen}, and no record after it"
        out.left -= 1
        return self._skip_damage(out, buf, base, n, final, pos, why, past_end)

    def _skip_damage(self, out: _Records, buf, base: int, n: int, final: bool, pos: int, why: str,
                     past_end: bool) -> int | None:
        """After a record with an implausible length at ``pos``: the next plausible record, with a
        warning; None when there is none (the reading stops there) or more data is needed."""
        prev = out.last_sec()
        prev = self.last_sec if prev is None else prev
        skip_to, need_data = _pcap_resync(buf, pos, n, self.big_endian, self.walk_limit, prev, self.frac_max, final)
        if need_data:
            return None  # not enough data buffered to look for the next record
        reason = f"record at byte {base + pos} has an implausible length ({why})"
        if skip_to is None:
            if not past_end:  # else: nothing whole after it, the last record, cut off (warned at the end)
                self._warn(base + pos, reason, "no plausible record after it, stopped there, kept the packets before it")
                self.stopped = True
            return None
        self._warn(base + pos, reason, f"skipped {skip_to - pos} bytes to the next plausible record, at byte {base + skip_to}")
        return skip_to

    def _warn(self, offset: int, reason: str, detail: str) -> None:
        self.warn(CaptureWarning(self.src.path, offset, reason, detail))


#: How far past damage the next record or block is looked for: a damaged stretch longer than this
#: ends the file's reading.
RESYNC_BYTES = 4 * MAX_RECORD
#: Records (pcap) this far apart in time are not neighbours: the header between them is damage.
MAX_GAP_SECONDS = 86400


def _pcap_plausible(header: tuple, limit: int, prev_sec: int | None, frac_max: int) -> bool:
    """Whether a pcap record header makes sense: a captured length from 1 to ``limit`` and at
    most its original length, a fraction of a second under one second, and (when known) within
    a day of the previous record."""
    sec, frac, incl, orig = header
    return (0 < incl <= limit and incl <= orig <= 4 * MAX_RECORD and frac < frac_max
            and (prev_sec is None or abs(sec - prev_sec) <= MAX_GAP_SECONDS))


def _pcap_resync(buf, pos: int, n: int, big_endian: bool, limit: int, prev_sec: int | None, frac_max: int,
                 final: bool) -> tuple[int | None, bool]:
    """After damage at ``pos``: the first offset within ``RESYNC_BYTES`` after it where a
    plausible record header is followed by another one (or by the end of the file).

    Returns ``(offset or None, need_data)``: ``need_data`` when the buffer does not yet hold
    everything the search may look at (never at the end of the file), so that a compressed file
    (read in windows) gives the same answer as a mapped one. The candidates' headers are checked
    all at once with numpy: this runs once per damaged stretch, never per packet.
    """
    if not final and n < pos + RESYNC_BYTES + MAX_RECORD + 32:
        return None, True
    lo, hi = pos + 1, min(pos + RESYNC_BYTES, n - 16)  # candidate header offsets, hi included
    if hi < lo:
        return None, False
    # Every offset of buf read as a 32-bit integer (stride 1, unaligned reads).
    u32 = np.ndarray(shape=(n - 3,), dtype=(">u4" if big_endian else "<u4"), buffer=buf, offset=0, strides=(1,))
    sec, frac = u32[lo : hi + 1].astype(np.int64), u32[lo + 4 : hi + 5]
    incl, orig = u32[lo + 8 : hi + 9].astype(np.int64), u32[lo + 12 : hi + 13].astype(np.int64)
    ok = (incl > 0) & (incl <= limit) & (incl <= orig) & (orig <= 4 * MAX_RECORD) & (frac < frac_max)
    if prev_sec is not None:
        ok &= np.abs(sec - prev_sec) <= MAX_GAP_SECONDS
    for i in np.flatnonzero(ok).tolist():
        p = lo + i
        nxt = p + 16 + int(incl[i])
        if nxt == n and final:
            return p, False
        if nxt + 16 <= n and _pcap_plausible((int(u32[nxt]), int(u32[nxt + 4]), int(u32[nxt + 8]), int(u32[nxt + 12])),
                                             limit, int(sec[i]), frac_max):
            return p, False
    return None, False


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
    """Every supported link type, by number: "0 (null/loopback), 1 (Ethernet), 12 (raw IP), ..."."""
    return ", ".join(f"{n} ({LINKTYPE_NAMES[n]})" for n in sorted(SUPPORTED_LINKTYPES))


# --- pcapng --------------------------------------------------------------------------------


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    tick_num: int  # nanoseconds = ticks * tick_num // tick_den
    tick_den: int


class _PcapngReader:
    """The packets of a pcapng file, block by block: section headers (their byte order),
    interface descriptions (link type, snap length, timestamp resolution), enhanced, obsolete
    and simple packet blocks; other blocks are stepped over. A block whose length is implausible
    is damage, skipped with a warning."""

    def __init__(self, src: _Source, warn: Warn):
        self.src, self.warn = src, warn
        self.endian = "<"  # of the current section
        self.interfaces: list[_Interface] = []  # of the current section
        self.unsupported_warned: set[int] = set()
        self.stopped = False  # damage ended the reading

    def chunks(self, progress) -> Iterator[Chunk]:
        src = self.src
        for buf, base, n, final in src.windows(0):
            pos = 0
            full = True
            while full:
                out: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])  # offs, caps, ticks, ifaces
                pos, full = self._fill(out, buf, base, n, final, pos)
                if out[0]:
                    yield _pcapng_chunk(buf, n, *out, self.interfaces)
                src.release(base + pos)
                if progress:
                    progress(src.progress(base + pos))
            if self.stopped:
                return
            if final:
                if pos < n:
                    self._warn(base + pos, f"last block at byte {base + pos} cut off ({n - pos} bytes of it present)",
                               "kept the packets before it")
                return
            src.keep = pos

    def _fill(self, out, buf, base: int, n: int, final: bool, pos: int) -> tuple[int, bool]:
        """Blocks of ``buf[0:n]`` (file bytes from ``base`` on) from ``pos``, their packets into
        ``out``. Returns ``(pos, full)``: where it stopped, and whether because ``out`` holds
        ``CHUNK_PACKETS`` packets (else more data is needed, or the reading ends)."""
        offs, caps, ticks, ifaces = out
        # The loop runs once per packet: the checks of a packet block stay inline, and the
        # section's byte order and interfaces are locals (``_other_block`` changes them).
        endian, interfaces = self.endian, self.interfaces
        while pos + 12 <= n:
            if len(offs) >= CHUNK_PACKETS:
                return pos, True
            btype, blen = struct.unpack_from(endian + "II", buf, pos)
            e = endian
            why = None
            past_end = False
            if btype == SHB_TYPE:  # the same in both byte orders; its own says which
                e = _BYTE_ORDER.get(bytes(buf[pos + 8 : pos + 12]))
                if e is None:
                    why = "bad section header"
                else:
                    blen = struct.unpack_from(e + "I", buf, pos + 4)[0]
            end = pos + blen
            if why is None:
                # Plausible: at least the type's least length, a multiple of 4, the same total
                # length at the end of the block as at its start.
                if blen < _BLOCK_MIN.get(btype, 12) or blen & 3 or blen > MAX_BLOCK:
                    why = f"length {blen}"
                elif end > n:
                    if not final:
                        break  # more data needed
                    why = f"length {blen}, past the end of the file"
                    past_end = True
                else:
                    (trailing,) = struct.unpack_from(e + "I", buf, end - 4)
                    if trailing != blen:
                        why = f"length {blen}, but {trailing} at its end"
            if why is not None:
                skip_to = self._skip_damage(buf, base, n, final, pos, why, past_end)
                if skip_to is None:
                    break
                pos = skip_to
                continue
            if btype == 6 or btype == 2:  # enhanced / obsolete packet block
                if btype == 6:
                    iface, hi, lo, cap, _orig = struct.unpack_from(endian + "IIIII", buf, pos + 8)
                else:
                    iface, _drops, hi, lo, cap, _orig = struct.unpack_from(endian + "HHIIII", buf, pos + 8)
                if iface >= len(interfaces) or cap > blen - 28:
                    self._warn(base + pos, f"damaged packet block at byte {base + pos}", "skipped")
                elif interfaces[iface].linktype in SUPPORTED_LINKTYPES:
                    offs.append(pos + 28)
                    caps.append(cap)
                    ticks.append((hi << 32) | lo)
                    ifaces.append(iface)
            elif btype == SHB_TYPE and offs:
                return pos, True  # a new section: its packets go in chunks of their own (its interfaces)
            elif btype == 3 or btype == 1 or btype == SHB_TYPE:
                self._other_block(out, buf, base, pos, btype, blen, e)
                endian, interfaces = self.endian, self.interfaces
            pos = end
        return pos, False

    def _other_block(self, out, buf, base: int, pos: int, btype: int, blen: int, e: str) -> None:
        """A simple packet block, interface description or section header (in byte order ``e``)."""
        if btype == 3:  # simple packet block: no timestamp, interface 0
            interfaces = self.interfaces
            if interfaces and interfaces[0].linktype in SUPPORTED_LINKTYPES:
                offs, caps, ticks, ifaces = out
                (orig,) = struct.unpack_from(self.endian + "I", buf, pos + 8)
                offs.append(pos + 12)
                caps.append(min(orig, blen - 16, interfaces[0].snaplen or MAX_RECORD))
                ticks.append(0)
                ifaces.append(0)
        elif btype == 1:
            iface = _parse_idb(buf, pos, blen, self.endian)
            self.interfaces.append(iface)
            if iface.linktype not in SUPPORTED_LINKTYPES and iface.linktype not in self.unsupported_warned:
                self.unsupported_warned.add(iface.linktype)
                self._warn(base + pos, f"interface {len(self.interfaces) - 1} has link type {iface.linktype}, which is "
                           "not supported", "its packets are skipped")
        else:  # a new section: its byte order, no interfaces yet
            self.endian = e
            self.interfaces = []

    def _skip_damage(self, buf, base: int, n: int, final: bool, pos: int, why: str, past_end: bool) -> int | None:
        """After a damaged block at ``pos``: the next block, with a warning; None when there is
        none (the reading stops there) or more data is needed."""
        skip_to, need_data = _pcapng_resync(buf, pos, n, self.endian, final)
        if need_data:
            return None  # not enough data buffered to look for the next block
        if why == "bad section header":
            reason = (f"section header at byte {base + pos} has an unknown byte-order magic "
                      f"({bytes(buf[pos + 8 : pos + 12]).hex()})")
        else:
            reason = f"block at byte {base + pos} has an implausible length ({why})"
        if skip_to is None:
            if not past_end:  # else: nothing whole after it, the last block, cut off (warned at the end)
                self._warn(base + pos, reason, "no block after it, stopped there, kept the packets before it")
                self.stopped = True
            return None
        self._warn(base + pos, reason, f"skipped {skip_to - pos} bytes to the next block, at byte {base + skip_to}")
        return skip_to

    def _warn(self, offset: int, reason: str, detail: str) -> None:
        self.warn(CaptureWarning(self.src.path, offset, reason, detail))


SHB_TYPE = 0x0A0D0D0A
_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
#: The block types resynchronisation looks for, with the least total length each can have: section
#: header, interface description, (obsolete) packet, simple packet, name resolution, interface
#: statistics, enhanced packet, decryption secrets. Another type is read when it is met in order,
#: never searched for.
_BLOCK_MIN = {SHB_TYPE: 28, 1: 20, 2: 32, 3: 16, 4: 16, 5: 24, 6: 32, 0x0A: 20}
_RESYNC_TYPES = np.array(sorted(t for t in _BLOCK_MIN if t != SHB_TYPE), dtype=np.uint32)
#: The longest block resynchronisation accepts as the first one after damage.
RESYNC_MAX_BLOCK = 2 * MAX_RECORD


def _pcapng_header_ok(buf, q: int, n: int, endian: str, limit: int) -> tuple[int, str] | None:
    """(total length, byte order) of a block starting at ``q`` whose type is one resync knows and
    whose total length is plausible (from the type's least length to ``limit``, a multiple of 4),
    else None. Reads 12 bytes."""
    if q + 12 > n:
        return None
    btype = struct.unpack_from(endian + "I", buf, q)[0]
    if btype == SHB_TYPE:
        endian = _BYTE_ORDER.get(bytes(buf[q + 8 : q + 12]))
        if endian is None:
            return None
    elif btype not in _BLOCK_MIN:
        return None
    blen = struct.unpack_from(endian + "I", buf, q + 4)[0]
    if blen < _BLOCK_MIN[btype] or blen & 3 or blen > limit:
        return None
    return blen, endian


def _pcapng_resync(buf, pos: int, n: int, endian: str, final: bool) -> tuple[int | None, bool]:
    """After a damaged block at ``pos``: the first 4-byte aligned offset within ``RESYNC_BYTES``
    after it where a block of a known type starts whose leading and trailing total lengths agree,
    and which is followed by the header of another known block (or by the end of the file).

    Returns ``(offset or None, need_data)`` as ``_pcap_resync`` does. The block types and lengths
    are screened all at once with numpy; the few candidates left are checked one by one.
    """
    if not final and n < pos + RESYNC_BYTES + RESYNC_MAX_BLOCK + 12:
        return None, True
    last = min(pos + RESYNC_BYTES, n - 12)  # the last candidate offset
    if last < pos + 4:
        return None, False
    words = np.frombuffer(buf, dtype=endian + "u4", count=(last - pos) // 4 + 2, offset=pos)
    types, lengths = words[1:-1], words[2:]
    screen = (np.isin(types, _RESYNC_TYPES) & (lengths >= 12) & (lengths & 3 == 0) & (lengths <= RESYNC_MAX_BLOCK)) | (
        types == SHB_TYPE)
    for k in (np.flatnonzero(screen) + 1).tolist():
        q = pos + 4 * k
        found = _pcapng_header_ok(buf, q, n, endian, RESYNC_MAX_BLOCK)
        if found is None:
            continue
        blen, e = found
        end = q + blen
        if end > n or struct.unpack_from(e + "I", buf, end - 4)[0] != blen:
            continue
        if (end == n and final) or _pcapng_header_ok(buf, end, n, e, MAX_BLOCK) is not None:
            return q, False
    return None, False


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
