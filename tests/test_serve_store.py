"""The service's store behind its one interface, on SQLite and on a real PostgreSQL server (the
Debian package that .ci/run installs, started here as its own cluster in a temporary directory),
and several service replicas sharing one PostgreSQL database."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import urllib3

import k8s
from fake_api import KIND_PATHS, WatchApiServer, no_ambient_cluster  # noqa: F401  (an autouse fixture)
from netpol_learn._errors import ServeError
from netpol_learn._flowlog import merge_logs, read_segment
from netpol_learn._serve import SegmentId, open_store
from netpol_learn._serve._store import Totals
from servekit import free_port, get, post, segment, start_serve, stop, text, tokens_file, wait_for
from test_serve_faults import Sender, cluster, write_kubeconfig

PODS = KIND_PATHS["Pod"][0]


def _as_postgres(*cmd: str, **kw):
    """Run a PostgreSQL program: as the postgres user when root (the server refuses to run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + list(cmd), check=True, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own on 127.0.0.1 (trust authentication, no fsync: a test
    server), and a function that gives the URL of a fresh database."""
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert bindirs, "PostgreSQL is not installed (.ci/run installs Debian's postgresql)"
    bindir = bindirs[-1]
    root = tempfile.mkdtemp(prefix="netpol-pg-", dir="/tmp")
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    _as_postgres(f"{bindir}/initdb", "-D", data, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-o",
                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
    count = [0]

    def database() -> str:
        count[0] += 1
        name = f"learn{count[0]}"
        _as_postgres(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        _as_postgres(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    location = str(tmp_path / "store.db") if request.param == "sqlite" else request.getfixturevalue("postgres")()
    s = open_store(location)
    yield s
    s.close()


def test_the_store_interface(store):
    a, b = SegmentId("node-a", "boot", 0), SegmentId("node-b", "boot", 0)
    assert store.add_segment(a, 100, 150, 3, 1, 4, "first") is True
    assert store.add_segment(a, 100, 160, 3, 1, 4, "again") is False  # the same id: not stored twice
    assert store.add_segment(b, 200, 260, 2, 0, 2, "second") is True
    assert [t for _, t in store.segment_bodies()] == ["first", "second"]
    first_id = next(iter(store.segment_bodies()))[0]
    assert [t for _, t in store.segment_bodies(after=first_id)] == ["second"]
    assert [t for _, t in store.segment_bodies(since_cut=150)] == ["second"]
    assert store.totals() == Totals(segments=2, flows=5, dns=1, connections=6)
    assert [(n.node, n.segments, n.last_cut, n.last_received, n.last_lag) for n in store.nodes()] == [
        ("node-a", 1, 100, 150, 50), ("node-b", 1, 200, 260, 60)]
    assert store.checkpoint() is None
    store.set_checkpoint(5, "merged up to 5")
    store.set_checkpoint(3, "an older merge")  # never replaces a newer one
    assert store.checkpoint() == (5, "merged up to 5")
    assert store.inventory() is None
    store.set_snapshot("2026-01-01T00:00:00.000000Z", ['{"kind": "Pod"}', '{"kind": "Node"}'])
    store.set_snapshot("2027-01-01T00:00:00.000000Z", [])  # the first listing stays
    store.add_history([(10, '{"a": 1}'), (20, '{"b": 2}')], 25)
    store.add_history([], 30)
    assert store.inventory() == ("2026-01-01T00:00:00.000000Z", ['{"kind": "Pod"}', '{"kind": "Node"}'],
                                 [(10, '{"a": 1}'), (20, '{"b": 2}')], 30)
    assert store.size() > 0
    assert store.lead() is True


def test_postgres_refuses_a_schema_of_something_else_and_a_newer_store(postgres):
    import psycopg

    url = postgres()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE SCHEMA netpol_learn")
        db.execute("CREATE TABLE netpol_learn.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO netpol_learn.meta VALUES ('format', 'someone-else')")
    with pytest.raises(ServeError, match="holds something else, not a netpol-learn store"):
        open_store(url)
    url = postgres()
    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE netpol_learn.meta SET value = '9' WHERE key = 'version'")
    with pytest.raises(ServeError, match="store version 9; this one reads up to 1"):
        open_store(url)
    with pytest.raises(ServeError, match="^store postgresql://nobody@127.0.0.1:1/x: "):
        open_store("postgresql://nobody:secret@127.0.0.1:1/x")


def test_sqlite_and_postgres_give_the_same_flows(tmp_path, postgres):
    logs = [segment(n, node) for n in range(6) for node in ("node-a", "node-b")]
    answers = []
    for location in (str(tmp_path / "s.db"), postgres()):
        running = start_serve(tmp_path, location, "--tokens-file", str(tokens_file(tmp_path)), "--no-watch")
        http = urllib3.PoolManager()
        try:
            for n, log in enumerate(logs):
                assert post(http, running.url, log, log.sources[0], "b", n).status == 201
            answers.append(get(http, running.url, "/v1/flows").data.decode())
        finally:
            stop(running)
    assert answers[0] == answers[1] == text(merge_logs(logs))


def test_replicas_share_one_postgres_store(tmp_path, postgres):
    url = postgres()
    tokens = str(tokens_file(tmp_path))
    replicas = [start_serve(tmp_path, url, "--tokens-file", tokens, "--no-watch") for _ in range(2)]
    try:
        logs = [segment(n, "node-a", flows=20) for n in range(30)]
        # Each segment sent to both replicas, at once from two senders: stored once.
        senders = [Sender(r.url, "node-a", logs) for r in replicas]
        for s in senders:
            s.start()
        for s in senders:
            s.join(timeout=120)
        assert [s.done for s in senders] == [30, 30]
        assert sorted(s.answers.count(201) for s in senders) != [0, 0] and sum(s.answers.count(201) for s in senders) == 30
        http = urllib3.PoolManager()
        for r in replicas:
            assert read_segment(get(http, r.url, "/v1/flows").data.decode()) == merge_logs(logs)
    finally:
        for r in replicas:
            stop(r)


def test_one_replica_keeps_the_identity_history_and_another_takes_over(tmp_path, postgres):
    url = postgres()
    with WatchApiServer(cluster()) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        args = ("--tokens-file", str(tokens_file(tmp_path)), "--kubeconfig", str(kubeconfig))
        first = start_serve(tmp_path, url, *args)
        wait_for(lambda: api.watching(PODS) == 1, what="the first replica's watch")
        second = start_serve(tmp_path, url, *args)
        http = urllib3.PoolManager()
        try:
            wait_for(lambda: "standing by" in http.request("GET", second.url + "/readyz").data.decode(), what="the standby")
            time.sleep(1)
            assert api.watching(PODS) == 1  # one watch per kind, not one per replica
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            api.add(k8s.pod("web-6d5f8b7c9-zzzzz", "shop", "10.244.1.9", labels={"app": "web"}, owner=("ReplicaSet", "web-6d5f8b7c9")))
            # PostgreSQL ends the killed replica's session and its lock with it; the standby takes over.
            wait_for(lambda: "[+]identity watching" in http.request("GET", second.url + "/readyz").data.decode(), timeout=60,
                     what="the takeover")
            # The pod added while nobody watched is in the history, as a change since the first
            # replica was last in step.
            wait_for(lambda: "web-6d5f8b7c9-zzzzz" in get(http, second.url, "/v1/inventory").data.decode(), what="the catch-up")
            history = json.loads(get(http, second.url, "/v1/inventory").data)["history"]
            assert [(e["type"], "since" in e) for e in history if e["object"]["metadata"]["name"] == "web-6d5f8b7c9-zzzzz"] == [
                ("ADDED", True)]
            assert api.watching(PODS) == 1
        finally:
            stop(second)
            if first.process.poll() is None:
                stop(first)


def test_a_store_without_its_per_node_tables_gets_them_filled_from_its_segments(tmp_path):
    import sqlite3

    path = tmp_path / "store.db"
    store = open_store(str(path))
    for n, node in enumerate(["node-a", "node-b", "node-a"]):
        store.add_segment(SegmentId(node, "boot", n), 100 + n, 150 + 10 * n, 2, 1, 3, "x")
    store.close()
    db = sqlite3.connect(path)  # as a store written before the tables were kept
    db.execute("DROP TABLE nodes")
    db.execute("DROP TABLE totals")
    db.commit()
    db.close()
    store = open_store(str(path))
    assert store.totals() == Totals(segments=3, flows=6, dns=3, connections=9)
    assert [(n.node, n.segments, n.last_cut, n.last_received, n.last_lag) for n in store.nodes()] == [
        ("node-a", 2, 102, 170, 68), ("node-b", 1, 101, 160, 59)]
    store.close()
