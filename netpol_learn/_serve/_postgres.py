"""The store in PostgreSQL (``--store postgresql://...``, psycopg 3): the same tables as the
SQLite store, in a schema of their own (``netpol_learn``), so that several service replicas can
share one database.

**Several replicas.** Segments are idempotent across them (the unique segment id; ``INSERT ... ON
CONFLICT DO NOTHING``), and each insert takes a transaction-level advisory lock first, so that
row ids are handed out in the order the inserts commit: a replica that has merged every segment
up to an id never misses one committed later with a smaller id. One replica keeps the identity
history: the one holding the session advisory lock ``WATCH_LOCK``; the others stand by
(``/readyz`` says so) and take over when it goes (PostgreSQL releases the lock with the session).
"""

from __future__ import annotations

import threading

from netpol_learn._errors import ServeError
from netpol_learn._serve._store import STORE_VERSION, NodeState, Store, Totals, compress, decompress

SCHEMA = "netpol_learn"
FORMAT = "netpol-learn/store"
INSERT_LOCK = 0x4E504C01  # advisory lock keys: segment inserts; the identity history's watcher
WATCH_LOCK = 0x4E504C02

_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.segments (
    id BIGSERIAL PRIMARY KEY, node TEXT NOT NULL, boot TEXT NOT NULL, seq BIGINT NOT NULL, cut BIGINT NOT NULL,
    received BIGINT NOT NULL, flows BIGINT NOT NULL, dns BIGINT NOT NULL, connections BIGINT NOT NULL, size BIGINT NOT NULL,
    body BYTEA NOT NULL, UNIQUE (node, boot, seq));
CREATE INDEX IF NOT EXISTS segments_cut ON {SCHEMA}.segments (cut);
CREATE TABLE IF NOT EXISTS {SCHEMA}.nodes (node TEXT PRIMARY KEY, segments BIGINT NOT NULL, last_cut BIGINT NOT NULL,
    last_received BIGINT NOT NULL, last_lag BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.totals (id INTEGER PRIMARY KEY CHECK (id = 1), segments BIGINT NOT NULL, flows BIGINT NOT NULL,
    dns BIGINT NOT NULL, connections BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.merged (id INTEGER PRIMARY KEY CHECK (id = 1), upto BIGINT NOT NULL, body BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), time TEXT NOT NULL, items BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.history (id BIGSERIAL PRIMARY KEY, time BIGINT NOT NULL, piece TEXT NOT NULL);

INSERT INTO {SCHEMA}.totals (id, segments, flows, dns, connections)
    SELECT 1, count(*), coalesce(sum(flows), 0), coalesce(sum(dns), 0), coalesce(sum(connections), 0) FROM {SCHEMA}.segments
    WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.totals) HAVING count(*) > 0;
INSERT INTO {SCHEMA}.nodes (node, segments, last_cut, last_received, last_lag)
    SELECT node, count(*), max(cut), max(received),
           (SELECT s2.received - s2.cut FROM {SCHEMA}.segments s2 WHERE s2.node = s.node ORDER BY s2.received DESC, s2.id DESC LIMIT 1)
    FROM {SCHEMA}.segments s WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.nodes) GROUP BY node;"""


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{tail}"


class PostgresStore(Store):
    """The store in a PostgreSQL database (the tables in schema ``netpol_learn``)."""

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise ServeError("--store postgresql://...: psycopg is not installed (pip install 'netpol-learn[postgres]')") from None
        self.psycopg = psycopg
        self.url = url
        self.location = _redacted(url)
        try:
            self._writer = self._connect()
            self._check()
        except psycopg.Error as exc:
            raise ServeError(f"store {self.location}: {str(exc).strip().splitlines()[0]}") from exc
        self._lock = threading.Lock()
        self._readers = threading.local()
        self._all: list = [self._writer]
        self._all_lock = threading.Lock()
        self._leader = None  # the connection holding WATCH_LOCK

    def _connect(self):
        return self.psycopg.connect(self.url, autocommit=True, connect_timeout=10, application_name="netpol-learn serve")

    def _check(self) -> None:
        db = self._writer
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (INSERT_LOCK,))
            exists = db.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'meta'",
                                (SCHEMA,)).fetchone()
            if exists:
                rows = dict(db.execute(f"SELECT key, value FROM {SCHEMA}.meta").fetchall())
                if rows.get("format") != FORMAT:
                    raise ServeError(f"store {self.location}: schema {SCHEMA} holds something else, not a netpol-learn store; "
                                     "not touching it")
                version = int(rows.get("version", "0"))
                if version > STORE_VERSION:
                    raise ServeError(f"store {self.location} is a store of a newer netpol-learn (store version {version}; "
                                     f"this one reads up to {STORE_VERSION}); not touching it")
            for statement in filter(str.strip, _TABLES.split(";")):
                db.execute(statement)
            db.execute(f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('format', %s), ('version', %s) "
                       "ON CONFLICT (key) DO NOTHING", (FORMAT, str(STORE_VERSION)))

    def _reader(self):
        db = getattr(self._readers, "db", None)
        if db is None or db.closed:
            db = self._connect()
            self._readers.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def _write(self, statements):
        with self._lock:
            if self._writer.closed:
                self._writer = self._connect()
            with self._writer.transaction():
                return statements(self._writer)

    def add_segment(self, sid, cut, received, flows, dns, connections, text):
        body = compress(text)

        def insert(db):
            db.execute("SELECT pg_advisory_xact_lock(%s)", (INSERT_LOCK,))
            cur = db.execute(
                f"INSERT INTO {SCHEMA}.segments (node, boot, seq, cut, received, flows, dns, connections, size, body) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (node, boot, seq) DO NOTHING",
                (sid.node, sid.boot, sid.seq, cut, received, flows, dns, connections, len(body), body))
            if cur.rowcount != 1:
                return False
            n = f"{SCHEMA}.nodes"
            db.execute(f"INSERT INTO {n} AS n (node, segments, last_cut, last_received, last_lag) VALUES (%s, 1, %s, %s, %s) "
                       "ON CONFLICT (node) DO UPDATE SET segments = n.segments + 1, last_cut = greatest(n.last_cut, excluded.last_cut), "
                       "last_lag = CASE WHEN excluded.last_received >= n.last_received THEN excluded.last_lag ELSE n.last_lag END, "
                       "last_received = greatest(n.last_received, excluded.last_received)",
                       (sid.node, cut, received, received - cut))
            db.execute(f"INSERT INTO {SCHEMA}.totals AS t (id, segments, flows, dns, connections) VALUES (1, 1, %s, %s, %s) "
                       "ON CONFLICT (id) DO UPDATE SET segments = t.segments + 1, flows = t.flows + excluded.flows, "
                       "dns = t.dns + excluded.dns, connections = t.connections + excluded.connections", (flows, dns, connections))
            return True

        return self._write(insert)

    def segment_bodies(self, *, after=0, since_cut=None):
        db = self._reader()
        if since_cut is not None:
            rows = db.execute(f"SELECT id, body FROM {SCHEMA}.segments WHERE cut >= %s ORDER BY id", (since_cut,)).fetchall()
        else:
            rows = db.execute(f"SELECT id, body FROM {SCHEMA}.segments WHERE id > %s ORDER BY id", (after,)).fetchall()
        for row_id, body in rows:
            yield row_id, decompress(bytes(body))

    def checkpoint(self):
        row = self._reader().execute(f"SELECT upto, body FROM {SCHEMA}.merged WHERE id = 1").fetchone()
        return None if row is None else (row[0], decompress(bytes(row[1])))

    def set_checkpoint(self, upto, text):
        body = compress(text)
        self._write(lambda db: db.execute(
            f"INSERT INTO {SCHEMA}.merged (id, upto, body) VALUES (1, %s, %s) ON CONFLICT (id) DO UPDATE "
            f"SET upto = excluded.upto, body = excluded.body WHERE excluded.upto > {SCHEMA}.merged.upto", (upto, body)))

    def nodes(self):
        rows = self._reader().execute(
            f"SELECT node, segments, last_cut, last_received, last_lag FROM {SCHEMA}.nodes ORDER BY node").fetchall()
        return [NodeState(*row) for row in rows]

    def totals(self):
        row = self._reader().execute(f"SELECT segments, flows, dns, connections FROM {SCHEMA}.totals WHERE id = 1").fetchone()
        return Totals(*(int(v) for v in row)) if row else Totals(0, 0, 0, 0)

    def ping(self):
        self._reader().execute("SELECT 1").fetchall()

    def set_snapshot(self, time, items):
        body = compress("\n".join(items))
        self._write(lambda db: db.execute(
            f"INSERT INTO {SCHEMA}.snapshot (id, time, items) VALUES (1, %s, %s) ON CONFLICT (id) DO NOTHING", (time, body)))

    def add_history(self, entries, watched_until):
        entries = list(entries)

        def append(db):
            if entries:
                with db.cursor() as cur:
                    cur.executemany(f"INSERT INTO {SCHEMA}.history (time, piece) VALUES (%s, %s)", entries)
            if watched_until is not None:
                db.execute(f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('watched_until', %s) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(watched_until),))

        self._write(append)

    def inventory(self):
        db = self._reader()
        row = db.execute(f"SELECT time, items FROM {SCHEMA}.snapshot WHERE id = 1").fetchone()
        if row is None:
            return None
        text = decompress(bytes(row[1]))
        history = db.execute(f"SELECT time, piece FROM {SCHEMA}.history ORDER BY id").fetchall()
        until = db.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'watched_until'").fetchone()
        return row[0], text.split("\n") if text else [], [(t, p) for t, p in history], int(until[0]) if until else None

    def size(self):
        row = self._reader().execute(
            "SELECT coalesce(sum(pg_total_relation_size(format('%%I.%%I', table_schema, table_name))), 0) "
            "FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)).fetchone()
        return int(row[0])

    def lead(self) -> bool:
        if self._leader is not None and not self._leader.closed:
            return True
        db = self._connect()
        if db.execute("SELECT pg_try_advisory_lock(%s)", (WATCH_LOCK,)).fetchone()[0]:
            self._leader = db
            return True
        db.close()
        return False

    def close(self):
        with self._all_lock:
            for db in self._all + ([self._leader] if self._leader is not None else []):
                try:
                    db.close()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            self._all.clear()
