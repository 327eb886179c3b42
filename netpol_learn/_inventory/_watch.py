"""Watch the cluster: one snapshot, then every change to it, with the time each was seen.

``watch_inventory`` lists every kind as ``fetch_inventory`` does, starts one watch per kind
(cluster-wide, from the list's resourceVersion) as soon as that kind is listed, and records
every ADDED, MODIFIED and DELETED with the time it was received. Every ``write_every`` seconds,
and once more at the end (``stop`` set: SIGTERM or SIGINT in the CLI, or ``duration`` passed),
it writes the snapshot and the history so far through the one writer (``netpol_learn._output``:
a temporary file renamed into place), so a kill loses at most one interval and never leaves half
a file. The format is docs/resolution.md's "Watch history".

**Nothing is lost silently.** A watch that ends (the server ends each after ``WATCH_SECONDS``),
drops its connection or gets an API error is started again from the last resourceVersion it saw
(events and bookmarks), after a backoff for errors, with one warning line per problem (the same
problem again is not repeated until the watch recovers). A ``410 Gone`` (that resourceVersion is
compacted away) lists the kind again: objects that vanished meanwhile are recorded as DELETED at
the time of the new list, changed ones as MODIFIED and new ones as ADDED. Events that may have
happened while the watch was blind (those of a new list, and those a resumed watch replays in its
first ``CATCH_UP_NS``) carry ``since``: the change happened after it and at the latest at
``time``.

**Size.** A MODIFIED event that changes none of the fields netpol-learn reads (``READ``: a
Node's heartbeat, a Deployment's status counts, a CronJob's last schedule time, a pod's probe
results) is left out and only counted; the objects are written without ``managedFields``, as
the snapshot's are.

The list calls with ``watch=True`` (the raw API, answered as newline-delimited JSON, read with
``_preload_content=False``) rather than ``kubernetes.watch.Watch``: ``Watch`` builds one of the
client's models of every object (and keeps the JSON only beside it), or, told not to
(``deserialize=False``), stops following the resourceVersion, so a watch it restarts replays
events already seen; it also retries a ``410`` with the same expired version and restarts ended
watches itself, hiding the gaps that ``since`` has to record.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netpol_learn._errors import InventoryError, NetpolLearnError
from netpol_learn._inventory._live import (
    DEFAULT_PAGE_SIZE,
    KIND_ORDER,
    KINDS,
    Kind,
    Listed,
    Progress,
    Warn,
    assemble,
    dump_piece,
    history_entry,
    list_kind,
    output_format,
    sort_key,
    with_type,
)
from netpol_learn._kube import REQUEST_TIMEOUT, api_error_message, client_configuration, one_line, transport_errors, transport_reason
from netpol_learn._output import write_text
from netpol_learn._time import format_time

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

EVENTS = ("ADDED", "MODIFIED", "DELETED")
DEFAULT_WRITE_EVERY = 60.0  # seconds between writes of the file
WATCH_SECONDS = 300  # the server ends a watch after this (timeoutSeconds); it is started again at once
READ_TIMEOUT = WATCH_SECONDS + 60  # seconds without a byte before a watch counts as dropped
RETRY_FIRST = 1.0  # seconds before the first retry after an error; doubled each time
RETRY_MAX = 60.0
CATCH_UP_NS = 5_000_000_000  # events this soon after a watch resumed from a break may be from the gap

_COMMON = ("metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.creationTimestamp",
           "metadata.deletionTimestamp", "metadata.ownerReferences")
_CONTAINERS = tuple(f"spec.{c}[].{f}" for c in ("containers", "initContainers") for f in ("name", "ports", "command", "args", "restartPolicy"))

#: By kind, the fields netpol-learn reads (docs/resolution.md): a MODIFIED event that changes none
#: of them (nor the labels, owners, creation or deletion in ``metadata``) is left out of the history.
READ: dict[str, tuple[str, ...]] = {
    "Namespace": (),
    "Node": ("spec.podCIDR", "spec.podCIDRs", "status.addresses"),
    "Pod": _CONTAINERS + ("spec.nodeName", "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.startTime",
                          "status.conditions[].type", "status.conditions[].status", "status.conditions[].lastTransitionTime",
                          "status.containerStatuses[].state.terminated.finishedAt"),
    "Service": ("spec", "status.loadBalancer"),
    "EndpointSlice": ("addressType", "endpoints", "ports"),
    "Endpoints": ("subsets",),
    **{kind: ("spec.selector",) for kind in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job")},
    "CronJob": (),
}


def _pick(value, parts: list[str]):
    for i, part in enumerate(parts):
        if part.endswith("[]"):
            items = value.get(part[:-2]) if isinstance(value, Mapping) else None
            picked = [_pick(v, parts[i + 1:]) for v in items] if isinstance(items, list) else []
            return [v for v in picked if v is not None] or None  # no such field in any item: as no list
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def relevant(obj: Mapping) -> tuple:
    """The fields of ``obj`` that netpol-learn reads (``READ``): two versions with the same are the
    same to it."""
    return tuple(_pick(obj, path.split(".")) for path in (*_COMMON, *READ.get(str(obj.get("kind")), ())))


def _key(obj: Mapping) -> tuple[str, str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""))


class History:
    """What a watch saw: the objects as they stand, by kind, and every change recorded, in order of
    the times they were received (strictly increasing, to the microsecond), each already
    serialized in format ``fmt`` (``dump_piece``); thread-safe."""

    def __init__(self, fmt: str = "yaml", clock: Callable[[], int] = time.time_ns, *,
                 sink: Callable[[int, str], None] | None = None, keep: bool = True):
        self.fmt = fmt
        self.clock = clock
        self.lock = threading.Lock()
        self.current: dict[str, dict[tuple, dict]] = {}
        self.pieces: list[str] = []
        self.sink = sink  # told (time, piece) of every entry, in order, under the lock
        self.keep = keep  # keep the pieces in ``pieces`` (a sink may keep them instead)
        self.counts: Counter = Counter()  # recorded, by type
        self.unchanged = 0  # MODIFIED events left out: nothing netpol-learn reads changed
        self.last = 0  # ns of the last entry
        self.closed = False
        self.resumed_since: int | None = None  # carrying on an earlier watch's state, known until then

    def resume(self, objects: Iterable[dict], until: int, last: int = 0) -> None:
        """Carry on from an earlier watch: ``objects`` as they stood when it was last in step
        (``until``, ns), its last entry at ``last``. The first list of each kind is then recorded
        as the changes since (``relist``, each with ``since`` = ``until``), not as a new start."""
        with self.lock:
            for o in objects:
                self.current.setdefault(str(o.get("kind")), {})[_key(o)] = o
            self.resumed_since = until
            self.last = max(self.last, last)

    def start_kind(self, kind: Kind, objects: Iterable[dict]) -> None:
        """The objects of ``kind`` a list returned: what its events change (after ``resume``: the
        changes against the earlier watch's state, recorded)."""
        if self.resumed_since is not None:
            self.relist(kind, objects, self.resumed_since)
            return
        with self.lock:
            self.current[kind.kind] = {_key(o): o for o in objects}

    def now(self) -> int:
        """The clock, to the microsecond the file has."""
        return self.clock() // 1000 * 1000

    def _append(self, event: str, obj: dict, since: int | None) -> None:
        t = max(self.now(), self.last + 1000)
        self.last = t
        piece = dump_piece(history_entry(t, event, obj, min(since, t) if since is not None else None), self.fmt)
        if self.keep:
            self.pieces.append(piece)
        if self.sink is not None:
            self.sink(t, piece)
        self.counts[event] += 1

    def record(self, kind: Kind, event: str, obj: dict, since: int | None = None) -> bool:
        """Record one event of a watch (``obj`` as the server sent it); False when it is left out:
        after ``close``, or an ADDED or MODIFIED that changes nothing netpol-learn reads."""
        obj = with_type(kind, obj)
        key = _key(obj)
        with self.lock:
            if self.closed:
                return False
            known = self.current.setdefault(kind.kind, {})
            before = known.pop(key, None) if event == "DELETED" else known.get(key)
            if event != "DELETED":
                known[key] = obj
                if before is not None and relevant(before) == relevant(obj):
                    self.unchanged += 1
                    return False
            self._append(event, obj, since)
            return True

    def relist(self, kind: Kind, objects: Iterable[dict], since: int | None) -> Counter:
        """What a new list of ``kind`` shows against what the watch knew, recorded as events (in
        the order of namespace and name): DELETED for the objects gone, MODIFIED for those changed,
        ADDED for the new ones. Returns the counts."""
        listed = {_key(o): o for o in (with_type(kind, o) for o in objects)}
        counts: Counter = Counter()
        with self.lock:
            if self.closed:
                return counts
            known = self.current.get(kind.kind, {})
            for key in sorted(set(known) | set(listed)):
                before, after = known.get(key), listed.get(key)
                if after is None:
                    event = "DELETED"
                elif before is None:
                    event = "ADDED"
                elif relevant(before) != relevant(after):
                    event = "MODIFIED"
                else:
                    continue
                self._append(event, before if after is None else after, since)
                counts[event] += 1
            self.current[kind.kind] = listed
        return counts

    def close(self) -> int:
        """No more events; the time of the close (the end of the history)."""
        with self.lock:
            self.closed = True
            return max(self.now(), self.last)

    def document(self, snapshot_time: str, items: list[str], until: int | None = None) -> list[str]:
        """The pieces of the whole file (``assemble``): the snapshot's ``items`` and the history
        until now (or ``until``, the time ``close`` returned)."""
        with self.lock:
            until = until if until is not None else max(self.now(), self.last)
            return assemble(snapshot_time, items, self.fmt, list(self.pieces), format_time(until))


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class _Dropped(Exception):
    """A watch stream that broke off (no proper end, or a line that is not an event)."""


class _NotServed(Exception):
    """A list again answered 404: the kind is no longer served."""


def _lines(response) -> Iterable[bytes]:
    """The lines of a watch answer as they arrive (the API sends one event per line, chunked)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


def _status_text(status: Mapping) -> str:
    code, reason, message = status.get("code"), status.get("reason"), one_line(str(status.get("message") or ""))
    return f"HTTP {code} {reason or ''}".rstrip() + (f": {message}" if message else "")


class _KindWatch(threading.Thread):
    """The watch of one kind, started again whenever it ends, until ``stop`` is set."""

    def __init__(self, api_client: ApiClient, kind: Kind, listed: Listed, history: History, page_size: int,
                 stop: threading.Event, warn: Warn, listed_at: int):
        super().__init__(name=f"watch {kind.resource}", daemon=True)
        from kubernetes import client as k8s

        self.call = getattr(getattr(k8s, kind.api)(api_client), kind.method)
        self.api_client, self.kind, self.history, self.page_size = api_client, kind, history, page_size
        self.stop, self.warn = stop, warn
        self.version = listed.resource_version
        self.in_step_at = listed_at  # the last time the watch knew every change (a list, a line, a proper end)
        self.broken = False  # the last watch broke off: the next one may replay changes from the gap
        self.lock = threading.Lock()
        self.response = None
        self.delivered = False  # the last watch delivered something: it was working
        self.relists = 0
        self.failing: str | None = None  # what is wrong now (None: in step), for health checks

    def interrupt(self) -> None:
        """End the stream being read (from another thread), so that the thread sees ``stop``."""
        with self.lock:
            response = self.response
        if response is not None:
            try:  # urllib3 2.3 and later unblock a read in another thread; before, close as well as can be
                (getattr(response, "shutdown", None) or response.close)()
            except Exception:  # noqa: BLE001 - it is being torn down anyway
                pass

    def run(self) -> None:
        failures, problem = 0, None
        relist = self.version is None  # a list without a resourceVersion: nothing to resume from
        while not self.stop.is_set():
            try:
                if relist:
                    self._relist(problem)
                    relist = False
                    failures, problem = 0, None
                    self.failing = None
                began = time.monotonic()
                if self._stream():
                    failures, problem = 0, None
                    self.failing = None
                    if time.monotonic() - began < 1:
                        self.stop.wait(RETRY_FIRST)  # a server that ends every watch at once is not hammered
            except _Gone as gone:
                problem = f"resourceVersion {self.version} is too old ({gone})"
                relist = True
            except _NotServed:
                self.warn(f"watch of {self.kind.resource}: the API server no longer serves it (HTTP 404); its watch ends")
                return
            except Exception as exc:  # noqa: BLE001 - API and transport errors, broken streams: one line, then again
                if self.stop.is_set():
                    return
                if self.delivered:  # it had recovered: this is a new problem
                    failures, problem = 0, None
                text = self._problem(exc)
                self.failing = text
                failures += 1
                if text != problem:
                    again = "listing it again" if relist else f"resuming from resourceVersion {self.version}"
                    self.warn(f"watch of {self.kind.resource}: {text}; {again}, with backoff")
                problem = text
                self.stop.wait(min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1)))

    def _problem(self, exc: BaseException) -> str:
        from kubernetes.client import ApiException

        if isinstance(exc, ApiException):
            if not exc.status:
                return f"cannot reach the API server at {self.api_client.configuration.host}: {one_line(exc.reason or '')}"
            return api_error_message(exc, "").lstrip(": ")
        if isinstance(exc, _Dropped):
            return f"connection lost ({exc})"
        if isinstance(exc, transport_errors()):
            return f"cannot reach the API server at {self.api_client.configuration.host}: {transport_reason(exc)}"
        return one_line(str(exc)) or type(exc).__name__

    def _relist(self, why: str | None) -> None:
        since = self.in_step_at
        listed = list_kind(self.api_client, self.kind, self.page_size, lambda message: None, None)
        if listed is None:
            raise _NotServed()
        counts = self.history.relist(self.kind, (o for o in listed.items if isinstance(o, dict)), since)
        self.relists += 1
        self.version = listed.resource_version
        self.in_step_at, self.broken = self.history.now(), False
        found = ", ".join(f"{counts[e]} {e.lower()}" for e in ("ADDED", "MODIFIED", "DELETED")) if counts else "no changes"
        self.warn(f"watch of {self.kind.resource}: {why or 'no resourceVersion to resume from'}; listed it again: {found}")

    def _stream(self) -> bool:
        """One watch request, read to its end; True when it went well (the server ended it, or it
        delivered something). Raises for errors, ``_Gone`` for a 410."""
        from kubernetes.client import ApiException

        self.delivered = False
        connected = self.history.now()
        gap = self.in_step_at if self.broken else None
        try:
            response = self.call(watch=True, resource_version=self.version, allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
                                 _preload_content=False, _request_timeout=(REQUEST_TIMEOUT[0], READ_TIMEOUT))
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone(api_error_message(exc, "").lstrip(": ")) from exc
            raise
        with self.lock:
            self.response = response
        self.failing = None  # the server took the watch from where it was: in step again
        ended = False
        try:
            if self.stop.is_set():
                return False
            try:
                for line in _lines(response):
                    heard = self.history.now()
                    self._event(line, gap if gap is not None and heard - connected < CATCH_UP_NS else None)
                    self.in_step_at, self.delivered = self.history.now(), True
                ended = True
            except transport_errors() as exc:
                if self.stop.is_set():
                    return False
                raise _Dropped(transport_reason(exc)) from exc
        finally:
            # A watch the server ended was in step until its end; one that broke, until the last
            # line it delivered (delivering none, as long as the one before it).
            if ended:
                self.in_step_at, self.broken = self.history.now(), False
            else:
                self.broken = True
            with self.lock:
                self.response = None
            if not ended:
                response.close()
            response.release_conn()
        return ended or self.delivered

    def _event(self, line: bytes, since: int | None) -> None:
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise _Dropped(f"a line of the watch is not JSON: {one_line(line[:80].decode(errors='replace'))}") from exc
        kind, obj = (event.get("type"), event.get("object")) if isinstance(event, dict) else (None, None)
        if not isinstance(obj, dict):
            raise _Dropped(f"a watch event without an object: {one_line(line[:80].decode(errors='replace'))}")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(_status_text(obj))
            raise ValueError(_status_text(obj))
        version = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj.get("metadata"), dict) else None
        if kind in EVENTS:
            self.history.record(self.kind, kind, obj, since)
        if version:
            self.version = str(version)


@dataclass(frozen=True)
class Watched:
    """What ``watch_inventory`` did: the objects it listed (by kind), the changes it recorded (by
    type), the MODIFIED events it left out (nothing netpol-learn reads changed), how often a kind
    had to be listed again, and the times the history covers (ns since the epoch)."""

    listed: dict[str, int]
    events: dict[str, int]
    unchanged: int
    relists: int
    started: int
    until: int
    writes: int = 0

    @property
    def objects(self) -> int:
        return sum(self.listed.values())


def _changes(counts: Mapping[str, int], unchanged: int) -> str:
    """``17 changes (5 ADDED, 10 MODIFIED, 2 DELETED); 40 MODIFIED left out, changing nothing read``"""
    parts = ", ".join(f"{counts.get(e, 0)} {e}" for e in EVENTS)
    left_out = f"; {unchanged} MODIFIED left out, changing nothing read" if unchanged else ""
    return f"{sum(counts.get(e, 0) for e in EVENTS)} changes ({parts}){left_out}"


def list_and_watch(api_client: ApiClient, history: History, watches: list, listed_counts: Counter, page_size: int,
                   stop: threading.Event, warn: Warn, progress: Progress | None = None) -> list[dict]:
    """List every kind into ``history`` and start its watch (appended to ``watches``, so that a
    caller can stop those started when a later list fails), counting the objects in
    ``listed_counts``; returns the listed objects in file order. Raises ``InventoryError`` as
    ``fetch_inventory`` does, or when ``stop`` is set before the listing is complete."""
    items: list[dict] = []
    for kind in KINDS:
        if stop.is_set():
            raise InventoryError("stopped before the listing was complete; nothing written")
        listed = list_kind(api_client, kind, page_size, warn, progress)
        if listed is None:
            continue
        objects = [with_type(kind, o) for o in listed.items if isinstance(o, dict)]
        items.extend(objects)
        listed_counts[kind.kind] = len(objects)
        history.start_kind(kind, objects)
        watch = _KindWatch(api_client, kind, listed, history, page_size, stop, warn, history.now())
        watches.append(watch)
        watch.start()
    if not watches:
        raise InventoryError(f"the server at {api_client.configuration.host} answered HTTP 404 for every kind: "
                             "is it a Kubernetes API server?")
    items.sort(key=sort_key)
    return items


def watch_inventory(
    output: str | os.PathLike,
    kubeconfig: str | os.PathLike | None = None,
    context: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    duration: float | None = None,
    write_every: float = DEFAULT_WRITE_EVERY,
    stop: threading.Event | None = None,
    warn: Warn | None = None,
    info: Warn | None = None,
    progress: Progress | None = None,
) -> Watched:
    """List every kind as ``fetch_inventory`` does, then watch each and write the snapshot with
    the history of every change to ``output`` (YAML, or JSON for ``*.json``; the format is
    docs/resolution.md's "Watch history") every ``write_every`` seconds and once more at the end:
    when ``stop`` is set or ``duration`` seconds after the listing began.

    Watches that end, drop or fail are resumed (``warn`` says so, once per problem); a ``410
    Gone`` lists the kind again and records what changed meanwhile. ``info`` gets a line after
    the listing and at each write that has new changes. A failed write is a warning, except the
    first (right after the listing) and the last, which raise ``OutputError``. Raises
    ``InventoryError`` as ``fetch_inventory`` does when the listing fails, or when ``stop`` is set
    before it is complete (nothing is written then)."""
    if str(output) == "-":
        raise InventoryError("a watch writes its file again and again: give a file to write, not stdout")
    if write_every <= 0 or (duration is not None and duration <= 0):
        raise InventoryError("the write interval and the duration must be longer than 0 seconds")
    if page_size < 1:
        raise InventoryError(f"page size must be at least 1, not {page_size}")
    from kubernetes.client import ApiClient

    warn = warn or (lambda message: None)
    info = info or (lambda message: None)
    stop = stop or threading.Event()
    fmt = output_format(output)
    history = History(fmt)
    cfg = client_configuration(kubeconfig, context)
    cfg.connection_pool_maxsize = len(KINDS) + 2  # a connection per watch, and a relist or two beside them
    info(f"listing {len(KINDS)} kinds from {cfg.host}")
    started = history.now()
    deadline = None if duration is None else started + int(duration * 1e9)
    watches: list[_KindWatch] = []
    listed_counts: Counter = Counter()
    writes = 0
    with ApiClient(cfg) as api_client:
        api_client.user_agent = "netpol-learn"
        try:
            items = list_and_watch(api_client, history, watches, listed_counts, page_size, stop, warn, progress)
            pieces = [dump_piece(i, fmt) for i in items]
            snapshot = format_time(started)
            write_text(output, history.document(snapshot, pieces))  # a bad -o fails now, not at the end
            writes += 1
            info(f"{len(items)} objects listed; watching {len(watches)} kinds, writing {output} every {write_every:g} s")
            said = (0, 0)
            next_write = time.monotonic() + write_every
            try:
                while True:
                    wait = next_write - time.monotonic()
                    if deadline is not None:
                        wait = min(wait, (deadline - history.now()) / 1e9)
                    if stop.wait(max(wait, 0)) or (deadline is not None and history.now() >= deadline):
                        break
                    if time.monotonic() < next_write:
                        continue
                    next_write = max(next_write + write_every, time.monotonic())
                    try:
                        write_text(output, history.document(snapshot, pieces))
                        writes += 1
                    except NetpolLearnError as exc:
                        warn(f"{exc}; trying again at the next write")
                        continue
                    now = (sum(history.counts.values()), history.unchanged)
                    if now != said:
                        info(f"watching: {_changes(history.counts, history.unchanged)} -> {output}")
                        said = now
            except KeyboardInterrupt:  # a caller without a signal handler: stop as for ``stop``
                pass
        finally:
            stop.set()
            for watch in watches:
                watch.interrupt()
            for watch in watches:
                watch.join(timeout=5)
    until = history.close()
    write_text(output, history.document(snapshot, pieces, until))
    writes += 1
    return Watched(
        listed=dict(listed_counts),
        events={e: history.counts[e] for e in EVENTS},
        unchanged=history.unchanged,
        relists=sum(w.relists for w in watches),
        started=started,
        until=until,
        writes=writes,
    )


def summary_line(watched: Watched, output: str | os.PathLike) -> str:
    """``29 objects (3 Namespace, ...), watched 2m05s: 17 changes (...) -> FILE``, for the CLI."""
    per_kind = ", ".join(f"{n} {kind}" for kind, n in sorted(watched.listed.items(), key=lambda kv: KIND_ORDER[kv[0]]))
    seconds = round((watched.until - watched.started) / 1e9)
    took = f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")
    return f"{watched.objects} objects ({per_kind}), watched {took}: {_changes(watched.events, watched.unchanged)} -> {output}"
