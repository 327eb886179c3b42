"""The learning service's store: segments, their merge, and the identity history.

``Store`` is the one interface the service uses; ``SqliteStore`` keeps it in one SQLite file
(the embedded default: WAL journal, one writer, one transaction per segment, ``synchronous=FULL``
so that an answered segment survives a power cut, not only a killed process).
``netpol_learn._serve._postgres`` keeps the same data in PostgreSQL.

**What is kept.**
- ``segments``: each segment as received (its flow-log text, canonical and zlib-compressed), with
  its id (node, boot, sequence: unique, so a resend is found and not stored twice), the time it
  was cut and the time it arrived.
- ``nodes`` and ``totals``: per node its segments and its last one's times, and the sums, kept
  in the segment's transaction, so that metrics and readiness cost the nodes, not the segments.
- ``merged``: a checkpoint, the merge of every segment up to one row id, so that the merged flow
  log costs the segments that came after it, not all of them.
- ``snapshot`` and ``history``: the first listing of the cluster and every change after it,
  each entry as ``inventory --watch`` writes it (JSON), and ``watched_until`` in ``meta``.

**Refusing what is not ours.** A file that is not an SQLite database, an SQLite database of
something else (another ``application_id``) or a store of a newer version (``user_version``) is
a ``ServeError`` at open, before anything is written: never reset silently.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from netpol_learn._errors import ServeError

#: ``PRAGMA application_id`` of a netpol-learn store ("NPLN").
APPLICATION_ID = 0x4E504C4E
#: The version of the store's tables this code writes (``PRAGMA user_version``).
STORE_VERSION = 1

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    cut INTEGER NOT NULL,
    received INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    dns INTEGER NOT NULL,
    connections INTEGER NOT NULL,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (node, boot, seq)
);
CREATE INDEX IF NOT EXISTS segments_cut ON segments (cut);
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, segments INTEGER NOT NULL, last_cut INTEGER NOT NULL,
    last_received INTEGER NOT NULL, last_lag INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 1), segments INTEGER NOT NULL, flows INTEGER NOT NULL,
    dns INTEGER NOT NULL, connections INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS merged (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), time TEXT NOT NULL, items BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, piece TEXT NOT NULL);

-- Stores written before the nodes and totals tables were kept: filled once from the segments.
INSERT INTO totals (id, segments, flows, dns, connections)
    SELECT 1, count(*), coalesce(sum(flows), 0), coalesce(sum(dns), 0), coalesce(sum(connections), 0) FROM segments
    WHERE NOT EXISTS (SELECT 1 FROM totals) HAVING count(*) > 0;
INSERT INTO nodes (node, segments, last_cut, last_received, last_lag)
    SELECT node, count(*), max(cut), max(received),
           (SELECT s2.received - s2.cut FROM segments s2 WHERE s2.node = s.node ORDER BY s2.received DESC, s2.id DESC LIMIT 1)
    FROM segments s WHERE NOT EXISTS (SELECT 1 FROM nodes) GROUP BY node;
"""


@dataclass(frozen=True)
class SegmentId:
    """Who sent a segment and which one: the node, the sniffer process's start (``boot``) and
    the segment's number within it."""

    node: str
    boot: str
    seq: int


@dataclass(frozen=True)
class NodeState:
    """The last segment of one node: when it was cut and when it arrived (ns), and how many."""

    node: str
    segments: int
    last_cut: int
    last_received: int
    last_lag: int  # ns between the cut and the arrival of the last segment


@dataclass(frozen=True)
class Totals:
    segments: int
    flows: int
    dns: int
    connections: int


def compress(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)


def decompress(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")


class Store:
    """What the service keeps; the one interface it uses (``SqliteStore``, ``PostgresStore``).

    Every method is safe from any thread. Writes are serialized (one writer)."""

    location: str

    def add_segment(self, sid: SegmentId, cut: int, received: int, flows: int, dns: int, connections: int,
                    text: str) -> bool:
        """Store one segment in one transaction; False (and nothing stored) when ``sid`` is
        already stored."""
        raise NotImplementedError

    def segment_bodies(self, *, after: int = 0, since_cut: int | None = None) -> Iterator[tuple[int, str]]:
        """(row id, text) of the segments after row id ``after``, or of those cut at or after
        ``since_cut``, in the order they arrived."""
        raise NotImplementedError

    def checkpoint(self) -> tuple[int, str] | None:
        """The merged flow log of every segment up to a row id, and that row id."""
        raise NotImplementedError

    def set_checkpoint(self, upto: int, text: str) -> None:
        raise NotImplementedError

    def nodes(self) -> list[NodeState]:
        raise NotImplementedError

    def totals(self) -> Totals:
        raise NotImplementedError

    def set_snapshot(self, time: str, items: list[str]) -> None:
        """The first listing of the cluster (each item a JSON text); kept once."""
        raise NotImplementedError

    def add_history(self, entries: Iterable[tuple[int, str]], watched_until: int | None) -> None:
        """Append history entries (time ns, JSON text) and move ``watched_until`` on, in one
        transaction."""
        raise NotImplementedError

    def inventory(self) -> tuple[str, list[str], list[tuple[int, str]], int | None] | None:
        """(snapshot time, snapshot items, history entries, watched until), or None before the
        first listing."""
        raise NotImplementedError

    def size(self) -> int:
        """Bytes the store takes."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raise when the store cannot be read now (readiness)."""
        raise NotImplementedError

    def lead(self) -> bool:
        """Whether this process is the one that keeps the identity history (a store that several
        replicas share lets one of them at a time); an embedded store is only ever one process's."""
        return True

    def close(self) -> None:
        raise NotImplementedError


def open_store(location: str) -> Store:
    """The store at ``location``: a PostgreSQL URL (``postgresql://...``) or an SQLite file."""
    if location.startswith(("postgresql://", "postgres://")):
        from netpol_learn._serve._postgres import PostgresStore

        return PostgresStore(location)
    return SqliteStore(location)


def _check_sqlite_file(path: Path) -> bool:
    """Whether ``path`` exists; ``ServeError`` when it cannot be a store (not a regular file, not
    an SQLite database)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ServeError(f"{path}: its directory {path.parent} does not exist") from None
        return False
    except OSError as exc:
        raise ServeError(f"{path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ServeError(f"{path} is not a regular file; the store must be one (not touching it)")
    if st.st_size == 0:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ServeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if head != _SQLITE_MAGIC:
        raise ServeError(f"{path} is not a netpol-learn store (not an SQLite database); not touching it")
    return True


class SqliteStore(Store):
    """The store in one SQLite file (WAL, one writer, ``synchronous=FULL``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.location = str(self.path)
        existed = _check_sqlite_file(self.path)
        try:
            self._writer = self._connect()
            self._check(existed)
        except sqlite3.Error as exc:
            raise ServeError(f"{self.path}: not a usable store: {exc}") from exc
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    def _check(self, existed: bool) -> None:
        db = self._writer
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if existed and (app != APPLICATION_ID) and (tables or app):
            raise ServeError(f"{self.path} is an SQLite database of something else, not a netpol-learn store; not touching it")
        if version > STORE_VERSION:
            raise ServeError(f"{self.path} is a store of a newer netpol-learn (store version {version}; "
                             f"this one reads up to {STORE_VERSION}); not touching it")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ServeError(f"{self.path}: cannot use SQLite's WAL journal here (the file system gave {mode!r})")
        db.execute("PRAGMA synchronous = FULL")
        try:
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
                             f"PRAGMA user_version = {STORE_VERSION}; COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._connect()
            db.execute("PRAGMA query_only = ON")
            self._readers.db = db
            with self._readers_lock:
                self._all_readers.append(db)
        return db

    def _write(self, statements) -> object:
        """Run ``statements(db)`` in one immediate transaction on the one writer connection."""
        with self._lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                result = statements(db)
                db.execute("COMMIT")
                return result
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def add_segment(self, sid, cut, received, flows, dns, connections, text):
        body = compress(text)

        def insert(db):
            cur = db.execute(
                "INSERT OR IGNORE INTO segments (node, boot, seq, cut, received, flows, dns, connections, size, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sid.node, sid.boot, sid.seq, cut, received, flows, dns, connections, len(body), body))
            if cur.rowcount != 1:
                return False
            db.execute("INSERT INTO nodes (node, segments, last_cut, last_received, last_lag) VALUES (?, 1, ?, ?, ?) "
                       "ON CONFLICT (node) DO UPDATE SET segments = segments + 1, last_cut = max(last_cut, excluded.last_cut), "
                       "last_lag = CASE WHEN excluded.last_received >= last_received THEN excluded.last_lag ELSE last_lag END, "
                       "last_received = max(last_received, excluded.last_received)",
                       (sid.node, cut, received, received - cut))
            db.execute("INSERT INTO totals (id, segments, flows, dns, connections) VALUES (1, 1, ?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET segments = segments + 1, flows = flows + excluded.flows, "
                       "dns = dns + excluded.dns, connections = connections + excluded.connections", (flows, dns, connections))
            return True

        return self._write(insert)

    def segment_bodies(self, *, after=0, since_cut=None):
        db = self._reader()
        if since_cut is not None:
            rows = db.execute("SELECT id, body FROM segments WHERE cut >= ? ORDER BY id", (since_cut,))
        else:
            rows = db.execute("SELECT id, body FROM segments WHERE id > ? ORDER BY id", (after,))
        for row_id, body in rows:
            yield row_id, decompress(body)

    def checkpoint(self):
        row = self._reader().execute("SELECT upto, body FROM merged WHERE id = 1").fetchone()
        return None if row is None else (row[0], decompress(row[1]))

    def set_checkpoint(self, upto, text):
        body = compress(text)
        self._write(lambda db: db.execute(
            "INSERT INTO merged (id, upto, body) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET upto = excluded.upto, body = excluded.body WHERE excluded.upto > merged.upto",
            (upto, body)))

    def nodes(self):
        rows = self._reader().execute(
            "SELECT node, segments, last_cut, last_received, last_lag FROM nodes ORDER BY node").fetchall()
        return [NodeState(*row) for row in rows]

    def totals(self):
        row = self._reader().execute("SELECT segments, flows, dns, connections FROM totals WHERE id = 1").fetchone()
        return Totals(*row) if row else Totals(0, 0, 0, 0)

    def ping(self):
        self._reader().execute("SELECT 1 FROM meta LIMIT 1").fetchall()

    def set_snapshot(self, time, items):
        body = compress("\n".join(items))
        self._write(lambda db: db.execute("INSERT OR IGNORE INTO snapshot (id, time, items) VALUES (1, ?, ?)", (time, body)))

    def add_history(self, entries, watched_until):
        entries = list(entries)

        def append(db):
            db.executemany("INSERT INTO history (time, piece) VALUES (?, ?)", entries)
            if watched_until is not None:
                db.execute("INSERT INTO meta (key, value) VALUES ('watched_until', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(watched_until),))

        self._write(append)

    def inventory(self):
        db = self._reader()
        row = db.execute("SELECT time, items FROM snapshot WHERE id = 1").fetchone()
        if row is None:
            return None
        text = decompress(row[1])
        items = text.split("\n") if text else []
        history = db.execute("SELECT time, piece FROM history ORDER BY id").fetchall()
        until = db.execute("SELECT value FROM meta WHERE key = 'watched_until'").fetchone()
        return row[0], items, [(t, p) for t, p in history], int(until[0]) if until else None

    def size(self):
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except OSError:
                pass
        return total

    def close(self):
        with self._readers_lock:
            for db in self._all_readers:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._all_readers.clear()
        with self._lock:
            self._writer.close()
