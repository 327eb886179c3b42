"""The sniffer's spool: the segments that wait to be sent to the learning service, one gzip file
per segment in a directory (the DaemonSet's ``/tmp`` emptyDir), bounded in bytes.

A file's name is its segment's id and what a full spool counts when it drops it:
``<boot>.<seq>.<cut>.<flows>.<node>.ndjson.gz`` (``boot`` is ``<start ns>-<pid>`` of the sniffer
process that cut it, ``seq`` its number within that process, ``cut`` when it was cut, ns since the
epoch, ``flows`` its flow lines, ``node`` percent-encoded), so a later process sends an earlier
one's leftovers with their original ids, oldest first, without reading them. Each file is written
whole through ``netpol_learn._output`` (a temporary file beside it, fsync'd, renamed into place):
a reader (the sender, a later process) sees a whole segment or none. A temporary file that a
killed process left half-written is removed when the spool is opened.

**Bound.** The files together stay within ``size`` bytes (their compressed sizes): to make room
for a new segment, the oldest are deleted, and counted in the stats line of the new segment
(``spool_dropped_segments``, ``spool_dropped_flows``). A segment larger than the whole spool is
itself dropped and counted in the next one. The file being sent at that moment is dropped last,
and only counted if that send fails. Segments the server refused (400, 413, 422) are counted as
``server_rejected_segments`` and ``server_rejected_flows`` in the next segment.

One process at a time: the directory is locked (``flock``) while a sniffer uses it.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote

from netpol_learn._errors import OutputError, SniffError
from netpol_learn._flowlog import FlowLog, dumps_lines, merge_stats
from netpol_learn._output import make_directory, write_data

Warn = Callable[[str], None]

DEFAULT_SPOOL = "/tmp/netpol-learn-spool"
DEFAULT_SPOOL_SIZE = 48 * 1024 * 1024
SUFFIX = ".ndjson.gz"

DROPPED_SEGMENTS = "spool_dropped_segments"
DROPPED_FLOWS = "spool_dropped_flows"
REJECTED_SEGMENTS = "server_rejected_segments"
REJECTED_FLOWS = "server_rejected_flows"

_NAME = re.compile(r"(?P<start>\d+)-(?P<pid>\d+)\.(?P<seq>\d+)\.(?P<cut>\d+)\.(?P<flows>\d+)\.(?P<node>[^/]+)\.ndjson\.gz\Z")


@dataclass(frozen=True)
class Spooled:
    """One segment in the spool: its id (``node``, ``boot``, ``seq``), when it was cut (ns since
    the epoch), its flow lines, and its file's name and size."""

    name: str
    node: str
    boot: str
    seq: int
    cut: int
    flows: int
    size: int

    @property
    def order(self) -> tuple[int, int, int]:
        """Oldest first: by the start of the process that cut it, then its number."""
        start, pid = self.boot.split("-")
        return int(start), int(pid), self.seq

    @property
    def id(self) -> str:
        return f"{self.node}/{self.boot}/{self.seq}"


def spool_name(node: str, boot: str, seq: int, cut: int, flows: int) -> str:
    """The file name of a segment in the spool."""
    if not re.fullmatch(r"\d+-\d+", boot):
        raise ValueError(f"boot id {boot!r} is not <start ns>-<pid>")
    return f"{boot}.{seq}.{cut}.{flows}.{quote(node, safe='')}{SUFFIX}"


def parse_spool_name(name: str, size: int = 0) -> Spooled | None:
    """The segment a spool file's name describes; None when it is not such a name."""
    m = _NAME.match(name)
    if m is None:
        return None
    return Spooled(name, unquote(m["node"]), f"{int(m['start'])}-{int(m['pid'])}", int(m["seq"]), int(m["cut"]),
                   int(m["flows"]), size)


class Spool:
    """The bounded directory of segments waiting to be sent (see the module's docstring).

    ``open`` creates and locks the directory and finds an earlier process's leftovers; ``put``
    adds a segment (making room); the sender ``claim``s the oldest, sends it, and says how it went
    with ``done``. Thread-safe: the capture's segment thread puts, the sender claims."""

    def __init__(self, directory: str | os.PathLike, size: int = DEFAULT_SPOOL_SIZE, *, warn: Warn,
                 info: Warn | None = None):
        self.directory = Path(directory)
        self.size = size
        self.warn = warn
        self.info = info or (lambda message: None)
        self.changed = threading.Condition()
        self.items: list[Spooled] = []  # oldest first
        self.total = 0  # bytes of the files in ``items``
        self.pending: dict[str, int] = {}  # counters for the next segment's stats line
        self.in_flight: Spooled | None = None
        self.doomed = False  # the one in flight was dropped meanwhile: counted unless its send succeeds
        self.dropped = {"segments": 0, "flows": 0}  # in all, this process
        self.leftovers = 0
        self._fd: int | None = None

    # --- opening ---

    def open(self) -> None:
        """Create (when missing) and lock the directory, remove half-written temporary files and
        list an earlier process's segments, oldest first. ``SniffError`` when it cannot be used."""
        where = f"--spool {self.directory}"
        try:
            make_directory(self.directory)
        except OutputError as exc:
            raise SniffError(f"--spool {exc}") from exc
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise SniffError(f"{where}: not writable")
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SniffError(f"{where}: cannot open it ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SniffError(f"{where}: in use by another sniffer (the directory is locked)") from exc
            raise SniffError(f"{where}: cannot lock it ({exc.strerror or exc})") from exc
        self._fd = fd
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _scan(self) -> None:
        found: list[Spooled] = []
        removed = 0
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError as exc:
            raise SniffError(f"--spool {self.directory}: cannot list it ({exc.strerror or exc})") from exc
        for entry in entries:
            try:
                regular = entry.is_file(follow_symlinks=False)
                size = entry.stat(follow_symlinks=False).st_size if regular else 0
            except OSError:
                continue  # gone meanwhile
            if regular and entry.name.startswith(".") and entry.name.endswith(".tmp") and SUFFIX in entry.name:
                # A segment an earlier process was writing when it was killed: never complete.
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
                continue
            item = parse_spool_name(entry.name, size) if regular else None
            if item is None:
                self.warn(f"spool {self.directory}: {entry.name} is not a spool file; left alone")
                continue
            found.append(item)
        found.sort(key=lambda s: s.order)
        self.items = found
        self.total = sum(s.size for s in found)
        self.leftovers = len(found)
        if removed:
            self.info(f"spool {self.directory}: removed {removed} segment file{'' if removed == 1 else 's'} "
                      "an earlier run left half-written")
        if found:
            self.info(f"spool {self.directory}: {len(found)} segment{'' if len(found) == 1 else 's'} of an earlier run "
                      "to send first")
        with self.changed:
            while self.total > self.size and self._drop_oldest():
                pass

    def close(self) -> None:
        """Unlock the directory (the files stay, for the next process)."""
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    # --- adding ---

    def put(self, log: FlowLog, *, node: str, boot: str, seq: int, cut: int) -> FlowLog:
        """Spool one segment, its stats line carrying the counters of what was dropped or refused
        since the last one (also what is dropped now to make room for it). Returns the segment as
        spooled, or ``log`` as it was when it could not be (too large for the spool, or not
        written: a warning, and counted in the next one)."""
        flows = len(log.flows)
        with self.changed:
            while True:
                stamped = replace(log, stats=merge_stats(log.stats, self.pending)) if self.pending else log
                data = gzip.compress("".join(dumps_lines(stamped)).encode("utf-8"), compresslevel=6, mtime=0)
                if len(data) > self.size:
                    self._count(DROPPED_SEGMENTS, DROPPED_FLOWS, flows)
                    self.warn(f"spool {self.directory}: segment {node}/{boot}/{seq} ({flows} flow lines, {len(data)} bytes "
                              f"compressed) is larger than the whole spool (--spool-size {self.size}); dropped")
                    return log
                if self.total + len(data) <= self.size or not self._drop_oldest():
                    break
            name = spool_name(node, boot, seq, cut, flows)
            try:
                write_data(self.directory / name, data)
            except OutputError as exc:
                self._count(DROPPED_SEGMENTS, DROPPED_FLOWS, flows)
                self.warn(f"spool: {exc}; segment {node}/{boot}/{seq} ({flows} flow lines) dropped")
                return log
            self.pending = {}
            self.items.append(Spooled(name, node, boot, seq, cut, flows, len(data)))
            self.total += len(data)
            self.changed.notify_all()
        return stamped

    def _count(self, segments_key: str, flows_key: str, flows: int) -> None:
        self.pending[segments_key] = self.pending.get(segments_key, 0) + 1
        if flows:
            self.pending[flows_key] = self.pending.get(flows_key, 0) + flows
        if segments_key == DROPPED_SEGMENTS:
            self.dropped["segments"] += 1
            self.dropped["flows"] += flows

    def _drop_oldest(self) -> bool:
        """Delete the oldest segment (the one being sent only when no other is left); False when
        there is none to delete. Holding ``changed``."""
        victims = [s for s in self.items if s is not self.in_flight] or self.items
        if not victims:
            return False
        victim = victims[0]
        self._unlink(victim)
        self.items.remove(victim)
        self.total -= victim.size
        if victim is self.in_flight:
            self.doomed = True  # counted when its send ends, unless it got through
        else:
            self._count(DROPPED_SEGMENTS, DROPPED_FLOWS, victim.flows)
            self._dropped_warning(victim)
        return True

    def _dropped_warning(self, victim: Spooled) -> None:
        self.warn(f"spool {self.directory} full (--spool-size {self.size}): dropped the oldest segment, "
                  f"{victim.id} ({victim.flows} flow lines), unsent")

    def _unlink(self, item: Spooled) -> None:
        try:
            os.unlink(self.directory / item.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.warn(f"spool {self.directory}: cannot delete {item.name} ({exc.strerror or exc})")

    # --- sending ---

    def claimable(self) -> bool:
        """Whether a segment waits and none is being sent. Holding ``changed``."""
        return bool(self.items) and self.in_flight is None

    def claim(self) -> tuple[Spooled, bytes] | None:
        """The oldest segment and its file's bytes, marked as being sent; None when there is none
        (or one is being sent)."""
        with self.changed:
            while self.claimable():
                item = self.items[0]
                try:
                    data = (self.directory / item.name).read_bytes()
                except OSError as exc:
                    self.warn(f"spool {self.directory}: cannot read {item.name} ({exc.strerror or exc}); left out")
                    self.items.remove(item)
                    self.total -= item.size
                    continue
                self.in_flight = item
                return item, data
        return None

    def done(self, item: Spooled, outcome: str) -> None:
        """The send of ``item`` (claimed) ended: ``sent`` (stored, or already stored), ``rejected``
        (never accepted: deleted and counted) or ``retry`` (kept, to be sent again)."""
        if outcome not in ("sent", "rejected", "retry"):
            raise ValueError(f"outcome {outcome!r}")
        with self.changed:
            if self.in_flight is not item:
                raise ValueError(f"{item.name} is not being sent")
            self.in_flight = None
            if self.doomed:  # dropped while it was being sent: already deleted
                self.doomed = False
                if outcome == "retry":
                    self._count(DROPPED_SEGMENTS, DROPPED_FLOWS, item.flows)
                    self._dropped_warning(item)
                elif outcome == "rejected":
                    self._count(REJECTED_SEGMENTS, REJECTED_FLOWS, item.flows)
            elif outcome != "retry":
                self._unlink(item)
                self.items.remove(item)
                self.total -= item.size
                if outcome == "rejected":
                    self._count(REJECTED_SEGMENTS, REJECTED_FLOWS, item.flows)
            self.changed.notify_all()

    def wait(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds) until ``until()``, evaluated holding ``changed``;
        ``notify`` wakes the waiter to evaluate it again."""
        with self.changed:
            return self.changed.wait_for(until, timeout)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def __len__(self) -> int:
        with self.changed:
            return len(self.items)
