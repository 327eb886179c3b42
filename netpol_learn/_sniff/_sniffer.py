"""The capture loop: ``Sniffer`` (rings -> batches -> decode -> bound -> aggregate -> a segment every
interval) and ``run_until_signalled``."""

from __future__ import annotations

import errno
import fnmatch
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from netpol_learn._capture import DEFAULT_DEDUP_WINDOW, Aggregator, decode
from netpol_learn._errors import SniffError
from netpol_learn._signals import on_stop
from netpol_learn._flowlog import FlowLog, dumps_lines, merge_logs
# The defaults and the memory model (the command line shows them without importing the sniffer).
from netpol_learn._sniff._defaults import DEFAULT_INTERVAL, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROC, MEMORY_FIXED, MEMORY_PER_CONNECTION
from netpol_learn._sniff._filter import compile_program
from netpol_learn._sniff._interfaces import (
    DEFAULT_INTERFACES,
    discover,
    drain_link_events,
    ifindex,
    is_pattern,
    is_up,
    open_link_events,
)
from netpol_learn._sniff._limit import ConnectionLimit
from netpol_learn._sniff._ring import HOLD_MS, RETIRE_MS, Batch, PacketRing
from netpol_learn._sniff._sender import DEFAULT_DRAIN, Sender, check_token_file, segments_url
from netpol_learn._sniff._sockets import BackgroundScans, Scan, SocketScanner, SocketState, correct, opened_keys
from netpol_learn._sniff._spool import DEFAULT_SPOOL, DEFAULT_SPOOL_SIZE, Spool
from netpol_learn._sniff._writer import SegmentWriter


Warn = Callable[[str], None]


def peak_memory(max_connections: int) -> int:
    """Bytes of resident memory ``sniff`` peaks at with ``max_connections`` (the model above)."""
    return MEMORY_FIXED + max_connections * MEMORY_PER_CONNECTION


@dataclass
class Options:
    interfaces: tuple[str, ...] = ()  # names and glob patterns; empty: DEFAULT_INTERFACES
    interval: float = DEFAULT_INTERVAL
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    output: str | None = None  # None or '-': stdout
    source: str = "sniff"
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    buffer_size: int | None = None  # KiB of ring per interface; None: 1 MiB for a pod's own interface, 8 MiB else
    batch_seconds: float = 0.1  # decode and aggregate at least this often
    proc: str | None = DEFAULT_PROC  # the proc root whose processes' socket tables are scanned; None: no scan
    # The learning service (docs/sniffer.md): with ``server``, segments are spooled and sent there,
    # and ``output`` None means no local output (else stdout, as without a server).
    server: str | None = None  # http[s]://host:port
    token_file: str | None = None  # None: the pod's service account token
    ca_file: str | None = None  # the CA bundle of an https:// server; None: the system's
    spool: str = DEFAULT_SPOOL
    spool_size: int = DEFAULT_SPOOL_SIZE  # bytes
    node: str | None = None  # in the segments' ids; None: $NODE_NAME, else the host name
    drain: float = DEFAULT_DRAIN  # seconds the sender gets at stop to send what is left


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
        self.names = tuple(n for n in patterns if not is_pattern(n))
        self.patterns = tuple(n for n in patterns if is_pattern(n))
        self.program = compile_program()
        self.rings: dict[str, PacketRing] = {}
        self.poller = select.poll()
        self.by_fd: dict[int, PacketRing] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self.wake_r, select.POLLIN)
        self.netlink: socket.socket | None = None
        self.stopping = threading.Event()
        self.writer: SegmentWriter | None = None
        self.spool: Spool | None = None
        self.sender: Sender | None = None
        self.started = False
        self.boot = ""  # this process's start, in the segments' ids: "<start ns>-<pid>"
        self.seq = 0  # the next segment's number
        self.node = options.node or os.environ.get("NODE_NAME") or socket.gethostname()
        self.flusher: threading.Thread | None = None
        self.flush_error: BaseException | None = None
        self.segments = 0
        self.totals = {"packets": 0, "flows": 0}
        self.scans = BackgroundScans(SocketScanner(options.proc, warn)) if options.proc else None
        self.sockets = SocketState()  # the flush thread's only
        self._new_interval()

    # --- set-up ---

    def _new_interval(self) -> None:
        self.agg = Aggregator(int(self.o.dedup_window * 1e9))
        self.limit = ConnectionLimit(self.o.max_connections)
        self.kernel_drops = 0
        self.opened: list[np.ndarray] = []  # keys of the connections whose SYN the interval's packets show

    def _ring_size(self, name: str) -> tuple[int, int]:
        kib = self.o.buffer_size or (1024 if any(fnmatch.fnmatchcase(name, p) for p in _PER_POD) else 8192)
        block = 256 * 1024 if kib >= 1024 else 64 * 1024
        return block, max(2, kib * 1024 // block)

    def _open(self, name: str) -> bool:
        try:
            ring = PacketRing(name, self.program, *self._ring_size(name))
        except PermissionError as exc:
            raise SniffError(NO_PERMISSION) from exc
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ENETDOWN) or ifindex(name) is None:
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
            index = ifindex(name) if name != "any" else 0
            if index is not None:
                wanted[name] = index
            elif first:
                raise SniffError(f"interface {name} not found (interfaces here: {', '.join(sorted(n for _, n in socket.if_nameindex()))})")
        for name, ring in list(self.rings.items()):
            if ring.closing_at is not None or name == "any":
                continue
            if ifindex(name) != ring.index:
                self._vanished(ring, now)
            elif ring.down_since is not None and now - ring.down_since >= 0.5:
                up = is_up(name)
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
        nl = open_link_events()
        if nl is None:
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
            if self.o.server is not None:  # before anything opens: a bad URL or token is no capture
                url, token_file = segments_url(self.o.server), check_token_file(self.o.token_file)
                if self.o.ca_file is not None and not os.path.isfile(self.o.ca_file):
                    raise SniffError(f"--ca-file {self.o.ca_file}: no such file")
            if self.scans is not None:
                self.scans.scanner.check()
            self._open_netlink()
            self._scan(first=True)
            if self.scans is not None:
                # Once the rings are open: what opens from now on, the packets show.
                self.scans.start()
                self.scans.request()
            if self.o.server is not None:
                self.boot = f"{time.time_ns()}-{os.getpid()}"
                self.spool = Spool(self.o.spool, self.o.spool_size, warn=self.warn, info=self.info)
                self.spool.open()
                self.sender = Sender(self.spool, url, token_file, warn=self.warn, info=self.info, ca_file=self.o.ca_file)
            if self.o.server is None or self.o.output is not None:
                self.writer = SegmentWriter(self.o.output, self.warn, info=self.info, cancelled=self.stopping.is_set)
        except BaseException:
            self._release()
            raise
        if self.sender is not None:
            self.sender.start()  # an earlier run's leftovers first
        self.started = True

    def _release(self) -> None:
        """Close the sockets of a start that failed."""
        if self.scans is not None:
            self.scans.stop()
        for ring in list(self.rings.values()):
            self.poller.unregister(ring.fileno())
            ring.close()
        self.rings.clear()
        self.by_fd.clear()
        if self.netlink is not None:
            self.poller.unregister(self.netlink.fileno())
            self.netlink.close()
            self.netlink = None
        if self.spool is not None:
            self.spool.close()
            self.spool = self.sender = None

    def stop(self) -> None:
        """Ask the capture loop to stop (safe from a signal handler or another thread)."""
        self.stopping.set()
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        """Capture until stopped; every interval and at the end, write a segment."""
        if not self.started:
            self.start()
        if not self.rings:
            self.warn(f"no interface matches {' '.join(self.patterns + self.names)} yet; waiting for one")
        batch = Batch()
        hold = HOLD_MS * 1_000_000
        now = time.monotonic()
        next_segment = now + self.o.interval
        next_batch = now + self.o.batch_seconds
        next_scan = now + 1.0
        next_sockets = next_segment - self._socket_lead() if self.scans is not None else float("inf")
        rescan = False
        while not self.stopping.is_set():
            now = time.monotonic()
            wait = max(0.0, min(next_segment, next_batch, next_scan, next_sockets) - now)
            for fd, events in self.poller.poll(wait * 1000):
                ring = self.by_fd.get(fd)
                if ring is not None:
                    if events & select.POLLERR:
                        rescan |= self._ring_error(ring)
                    ring.drain(batch)
                elif self.netlink is not None and fd == self.netlink.fileno():
                    drain_link_events(self.netlink)
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
            if now >= next_sockets:
                # Shortly before the segment ends, so that the scan is in it (see _end_segment).
                self.scans.request()
                next_sockets = float("inf")
            if now >= next_segment:
                horizon = time.time_ns() - hold
                batch = self._feed(batch, horizon)
                self._end_segment(background=True, horizon=horizon)
                next_segment += self.o.interval * max(1, int((now - next_segment) // self.o.interval) + 1)
                if self.scans is not None:
                    next_sockets = next_segment - self._socket_lead()
        # Stopping: the kernel hands over its partly filled blocks after RETIRE_MS.
        time.sleep(HOLD_MS / 1000)
        for ring in list(self.rings.values()):
            self._close(ring, batch)
        self._feed(batch, None)
        if self.scans is not None:
            self.scans.stop()  # a scan in progress ends first, and is in the last segment
        try:
            self._end_segment(background=False, horizon=None)
        finally:
            self._finish_sending()
        if self.netlink is not None:
            self.netlink.close()
        if self.writer is not None:
            self.writer.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _finish_sending(self) -> None:
        """Give the sender its drain time to send what is left; the rest stays in the spool."""
        if self.sender is None:
            return
        if not self.sender.finish(self.o.drain):
            left = len(self.spool)
            self.info(f"{left} segment{'' if left == 1 else 's'} not sent yet, kept in the spool {self.spool.directory} "
                      "for the next start")
        self.spool.close()

    def _socket_lead(self) -> float:
        """How long before a segment ends its socket scan starts: the scan must end, and the
        packets up to its end be aggregated (HOLD_MS), before the segment is cut."""
        margin = 2 * HOLD_MS / 1000
        return min(self.o.interval / 2, margin + 1.5 * self.scans.last_seconds)

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

    def _feed(self, batch: Batch, upto: int | None) -> Batch:
        """Aggregate the packets of ``batch`` up to time ``upto`` (all: None); the rest, held back."""
        if not len(batch):
            return batch
        (data, off, cap, link, ts), rest = batch.take(upto)
        if len(off):
            packets = self.limit(decode(data, off, cap, link, ts))
            if self.scans is not None:
                self.opened.append(opened_keys(packets))
            self.agg.feed(data, packets)
        return rest

    def _count_kernel(self, ring: PacketRing) -> None:
        try:
            _packets, drops = ring.kernel_stats()
        except OSError:
            return
        self.kernel_drops += drops

    def _end_segment(self, background: bool, horizon: int | None = None) -> None:
        """Cut the interval (its packets fed up to ``horizon``, ns since the epoch; all: None)
        and write its segment, in the background or now. The socket scans that ended by
        ``horizon`` are the segment's: every SYN sent before them is in its packets or before."""
        for ring in self.rings.values():
            self._count_kernel(ring)
        cut = time.time_ns()
        agg, limit, drops = self.agg, self.limit, self.kernel_drops
        scans = self.scans.take(horizon) if self.scans is not None else []
        opened = np.unique(np.concatenate(self.opened)) if self.opened else np.zeros(0, dtype=np.uint64)
        self._new_interval()
        self._join_flusher()
        args = (agg, limit, drops, scans, opened, cut)
        if background:
            self.flusher = threading.Thread(target=self._flush, args=args, name="segment-writer", daemon=True)
            self.flusher.start()
        else:
            self._flush(*args)
            if self.flush_error is not None:
                raise self.flush_error

    def _join_flusher(self) -> None:
        if self.flusher is not None:
            self.flusher.join()
            self.flusher = None
        if self.flush_error is not None:
            raise self.flush_error

    def _flush(self, agg: Aggregator, limit: ConnectionLimit, kernel_drops: int, scans: list[Scan], opened: np.ndarray,
               cut: int) -> None:
        try:
            log = self.segment(agg, limit, kernel_drops, scans=scans, opened=opened)
            if self.spool is not None:
                # Spooled first (it adds the spool's counters to the stats line); the local copy is the same.
                log = self.spool.put(log, node=self.node, boot=self.boot, seq=self.seq, cut=cut)
                self.seq += 1
            if self.writer is not None:
                self.writer.write("".join(dumps_lines(log)))
            self.segments += 1
            self.totals["packets"] += log.stats.get("packets", 0)
            self.totals["flows"] += len(log.flows)
        except BaseException as exc:  # noqa: BLE001 - raised again in the capture loop
            self.flush_error = exc
            self.stop()

    def segment(self, agg: Aggregator, limit: ConnectionLimit, kernel_drops: int, *, scans: list[Scan] = (),
                opened: np.ndarray | None = None) -> FlowLog:
        """The segment of an interval: its aggregated packets, with the connections its socket
        ``scans`` found that the packets (``opened``: the keys of the connections they show
        opening) did not, and its heuristic flows that the listening sockets reverse."""
        log = agg.result(self.o.source)
        stats = dict(log.stats)
        for name, value in (("dropped_connections", limit.dropped_connections), ("dropped_packets", limit.dropped_packets),
                            ("dropped_by_kernel", kernel_drops)):
            if value:
                stats[name] = value
        flows = list(log.flows)
        if self.scans is not None:
            found, counters = self.sockets.segment(scans, opened if opened is not None else np.zeros(0, dtype=np.uint64))
            if self.sockets.listeners is not None:
                flows, reversed_ = correct(flows, self.sockets.listeners)
                if reversed_:
                    counters["socket_reversed"] = reversed_
            flows.extend(found)
            stats.update(counters)
        if self.pods is not None:
            flows = [self.pods.annotate(f) for f in flows]
            # What no later segment can ask about any more: addresses let go of long ago.
            self.pods.prune(time.time_ns() - int((self.o.interval + 60) * 1e9))
        # Merged: a reversed flow or a scan's may share its key with another flow of the segment.
        return merge_logs([replace(log, flows=tuple(flows), stats=dict(sorted(stats.items())))])


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def run_until_signalled(sniffer: Sniffer, started: Callable[[], None] | None = None) -> None:
    """Start ``sniffer`` and run it, SIGTERM and SIGINT asking it to stop and write its last
    segment; ``started`` is called once it listens."""
    with on_stop(lambda signum, frame: sniffer.stop()):
        sniffer.start()
        if started is not None:
            started()
        sniffer.run()


def sniff(options: Options, *, watch_pods: bool | None = None, warn: Callable[[str], None],
          info: Callable[[str], None] | None = None, started: Callable[[Sniffer], None] | None = None) -> Sniffer:
    """Capture with ``options`` until SIGTERM or SIGINT; returns the stopped sniffer (its counts).

    ``watch_pods``: name the pods of each flow from a watch of the API; None: when in a cluster
    and without ``options.server`` (the learning service keeps the identity history itself;
    ``SniffError`` when True outside a cluster). ``started`` is called with the sniffer once it
    listens."""
    from netpol_learn._errors import SniffError
    from netpol_learn._sniff._podwatch import PodWatcher

    pods = None
    if watch_pods is None and options.server is not None:
        watch_pods = False
    if watch_pods is not False:
        pods = PodWatcher.in_cluster(warn=warn, info=info)
        if pods is None and watch_pods:
            raise SniffError("--pods: not in a cluster (no KUBERNETES_SERVICE_HOST or service account token)")
    sniffer = Sniffer(options, warn=warn, pods=pods, info=info)
    if pods is not None:
        pods.start()
    try:
        run_until_signalled(sniffer, None if started is None else lambda: started(sniffer))
    finally:
        if pods is not None:
            pods.stop()
    return sniffer
