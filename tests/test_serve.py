"""The learning service in-process (Starlette's TestClient over the real app and a real SQLite
store) and as a process on loopback: the API, idempotence, refusals, auth, metrics, the store's
own checks and the command line."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys

import pytest
import urllib3
from starlette.testclient import TestClient

from netpol_learn._errors import ServeError
from netpol_learn._flowlog import FlowLog, dumps_lines, merge_logs, read_segment
from netpol_learn._serve import Limits, Service, SqliteStore, TokenFile, make_app
from servekit import BASE_NS, READ, WRITE, get, post, segment, start_serve, stop, text, tokens_file


@pytest.fixture
def service(tmp_path):
    svc = Service(SqliteStore(tmp_path / "store.db"), TokenFile(tokens_file(tmp_path)),
                  limits=Limits(max_segment_size=256 * 1024))
    yield svc
    svc.store.close()


@pytest.fixture
def client(service):
    with TestClient(make_app(service)) as c:
        yield c


def send(client, log: FlowLog | str | bytes, node="node-a", boot="b1", seq=0, token=WRITE, gz=False, cut=None, **params):
    body = text(log) if isinstance(log, FlowLog) else log
    body = body.encode() if isinstance(body, str) else body
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    query = {"node": node, "boot": boot, "seq": seq, "cut": cut if cut is not None else BASE_NS, **params}
    query = {k: v for k, v in query.items() if v is not None}
    return client.post("/v1/segments", params=query, content=body, headers=headers)


def read(client, path="/v1/flows", token=READ):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def stored(service) -> int:
    return service.store.totals().segments


# --- the API ----------------------------------------------------------------------------------


def test_segments_in_merged_flows_out(client, service):
    posted = [segment(n, node) for n in range(3) for node in ("node-a", "node-b")]
    for i, log in enumerate(posted):
        r = send(client, log, node=log.sources[0].split(":")[1], seq=i, gz=i % 2 == 1)
        assert r.status_code == 201, r.text
        assert r.json() == {"stored": True, "flows": len(log.flows), "dns": len(log.dns)}
    r = read(client)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.text == "".join(dumps_lines(merge_logs(posted)))
    # The shared flow: 6 segments of 2 connections each.
    shared = [f for f in read_segment(r.text).flows if f.port == 8080]
    assert len(shared) == 1 and shared[0].connections == 12


def test_a_resend_is_acknowledged_and_not_stored_twice(client, service):
    log = segment(1)
    assert send(client, log, seq=7).status_code == 201
    again = send(client, log, seq=7)
    assert again.status_code == 200 and again.json() == {"stored": False, "duplicate": True}
    assert stored(service) == 1
    # Another boot of the same node, same sequence number: another segment.
    assert send(client, log, seq=7, boot="b2").status_code == 201
    assert stored(service) == 2
    flows = read_segment(read(client).text)
    assert [f.connections for f in flows.flows if f.port == 8080] == [4]


def test_since_keeps_the_segments_cut_at_or_after_it(client, service):
    for n in range(4):
        send(client, segment(n), seq=n, cut=BASE_NS + n * 30 * 10**9)
    since = "2026-05-28T20:27:30Z"  # BASE_NS + 60 s... see below
    from netpol_learn._time import format_time

    since = format_time(BASE_NS + 60 * 10**9)
    log = read_segment(read(client, f"/v1/flows?since={since}").text)
    assert log == merge_logs([segment(2), segment(3)])
    assert read(client, "/v1/flows?since=next-tuesday").status_code == 400
    # A duration counts back from now: every segment here was cut long ago.
    assert read_segment(read(client, "/v1/flows?since=1h").text).flows == ()


def test_the_merged_log_is_checkpointed_and_carries_on_from_it(tmp_path, service, client):
    from netpol_learn._serve import _app

    posted = [segment(n) for n in range(_app.CHECKPOINT_EVERY + 5)]
    for n, log in enumerate(posted[:_app.CHECKPOINT_EVERY]):
        send(client, log, seq=n)
    assert read(client).status_code == 200
    assert service.store.checkpoint()[0] == _app.CHECKPOINT_EVERY
    for n, log in enumerate(posted[_app.CHECKPOINT_EVERY:], _app.CHECKPOINT_EVERY):
        send(client, log, seq=n)
    # A new process starts from the checkpoint: the same answer as merging everything.
    fresh = Service(SqliteStore(tmp_path / "store.db"), service.auth)
    with TestClient(make_app(fresh)) as c2:
        assert read(c2).text == "".join(dumps_lines(merge_logs(posted)))
    fresh.store.close()


# --- refusals: a clear status and message, nothing stored -------------------------------------


def test_refusals(client, service):
    good = segment(1)
    cases = [
        (send(client, "not a flow log\n"), 400, "invalid JSON"),
        (send(client, "{\"kind\": \"flow\"}\n"), 400, "not a netpol-learn flow log"),
        (send(client, text(good) + text(good)), 400, "2 segments; one was expected"),
        (send(client, text(good).rsplit("{", 1)[0]), 400, "incomplete segment"),
        (send(client, text(good).replace('"version": 2', '"version": 3')), 422, "version 3 is not supported"),
        (send(client, good, seq=None), 400, "missing query parameter seq"),
        (send(client, good, seq="x"), 400, "whole numbers"),
        (send(client, good, node="a b"), 400, "node: not a name"),
        (send(client, b"\xff\xfe", gz=False), 400, "not UTF-8"),
        (send(client, "x" * (300 * 1024)), 413, "larger than 262144 bytes"),
        # A small body that unpacks to more than the limit: refused without unpacking it all.
        (send(client, "{" + " " * (10 * 1024 * 1024) + "}", gz=True), 413, "uncompressed"),
        (client.post("/v1/segments", params={"node": "n", "boot": "b", "seq": 1, "cut": 1}, content=b"\x1f\x8bnot gzip",
                     headers={"Authorization": f"Bearer {WRITE}", "Content-Encoding": "gzip"}), 400, "not valid gzip"),
    ]
    import time

    future = segment(1, at_s=(time.time_ns() - BASE_NS) / 1e9 + 3600)
    cases.append((send(client, future, seq=9), 422, "ahead of this service's clock"))
    for response, status, words in cases:
        assert response.status_code == status, (response.text, words)
        assert words in response.json()["error"], (response.json(), words)
    assert stored(service) == 0
    metrics = read(client, "/metrics").text
    assert 'netpol_learn_requests_rejected_total{reason="malformed"} 9.0' in metrics
    assert 'netpol_learn_requests_rejected_total{reason="too_large"} 2.0' in metrics
    assert 'netpol_learn_requests_rejected_total{reason="unsupported_version"} 1.0' in metrics
    assert 'netpol_learn_requests_rejected_total{reason="future"} 1.0' in metrics


def test_a_version_1_segment_is_taken_and_kept_as_version_2(client, service):
    v1 = ('{"format": "netpol-learn/flows", "kind": "header", "sources": ["old"], "version": 1}\n'
          '{"bytes": 100, "connections": 1, "direction": {"syn": 1}, "dst": "10.0.0.2", "first_seen": "2026-05-28T20:26:40.000000Z", '
          '"kind": "flow", "last_seen": "2026-05-28T20:26:41.000000Z", "packets": 4, "port": 80, "proto": "TCP", "src": "10.0.0.1"}\n'
          '{"kind": "stats", "packets": 4}\n')
    assert send(client, v1).status_code == 201
    log = read_segment(read(client).text)
    assert [(f.evidence, f.connections) for f in log.flows] == [("observed", 1)]


# --- who gets in ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/v1/flows", "/v1/inventory", "/v1/status", "/metrics"])
def test_reading_needs_a_read_token(client, path):
    assert client.get(path).status_code == 401
    assert client.get(path).headers["www-authenticate"].startswith("Bearer")
    assert read(client, path, token="not-a-token-of-this-service").status_code == 401
    r = read(client, path, token=WRITE)
    assert r.status_code == 403 and "may not read" in r.json()["error"]
    assert client.get(path, headers={"Authorization": f"Basic {READ}"}).status_code == 401


def test_writing_needs_a_write_token_and_a_refusal_stores_nothing(client, service):
    log = segment(1)
    assert send(client, log, token=None).status_code == 401
    assert send(client, log, token="wrong-token-0123456789").status_code == 401
    r = send(client, log, token=READ)
    assert r.status_code == 403 and "may not write segments" in r.json()["error"]
    assert stored(service) == 0
    # Through the API server's service proxy the token comes in Netpol-Learn-Token.
    r = client.get("/v1/flows", headers={"Netpol-Learn-Token": READ})
    assert r.status_code == 200


def test_health_and_readiness_answer_without_a_token(client):
    assert client.get("/healthz").text == "ok\n"
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.text.splitlines() == ["[+]store ok", "[+]identity not watched (--no-watch)", "readyz check passed"]


def test_tokens_file_problems(tmp_path):
    bad = tmp_path / "t"
    for content, words in [("", "no tokens"), ("short write\n", "at least 16"), ("0123456789abcdefgh admin\n", "ROLE write or read"),
                           ("0123456789abcdefgh\n", "TOKEN ROLE")]:
        bad.write_text(content)
        with pytest.raises(ServeError, match=words):
            TokenFile(bad)


# --- metrics ----------------------------------------------------------------------------------


def test_metrics(client, service):
    send(client, segment(0, "node-a"), node="node-a", seq=0, cut=BASE_NS)
    send(client, segment(1, "node-b"), node="node-b", seq=0, cut=BASE_NS)
    send(client, segment(1, "node-b"), node="node-b", seq=0, cut=BASE_NS)
    send(client, segment(1), token=READ)
    text_ = read(client, "/metrics").text
    assert "netpol_learn_segments_received_total 2.0" in text_
    assert "netpol_learn_segments_duplicate_total 1.0" in text_
    assert f"netpol_learn_flows_received_total {2 * len(segment(0).flows)}.0" in text_
    assert 'netpol_learn_requests_rejected_total{reason="forbidden"} 1.0' in text_
    assert 'netpol_learn_node_segments{node="node-a"} 1.0' in text_
    assert "netpol_learn_store_segments 2.0" in text_
    lag = [line for line in text_.splitlines() if line.startswith('netpol_learn_node_lag_seconds{node="node-b"}')]
    assert lag and float(lag[0].split()[-1]) > 1e6  # cut at BASE_NS, long before it arrived
    size = [line for line in text_.splitlines() if line.startswith("netpol_learn_store_bytes ")]
    assert float(size[0].split()[-1]) > 0
    assert "netpol_learn_identity_up 0.0" in text_


# --- the store refuses what is not its own ----------------------------------------------------


def test_store_refuses_what_is_not_a_store(tmp_path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("my notes\n")
    with pytest.raises(ServeError, match="not a netpol-learn store \\(not an SQLite database\\)"):
        SqliteStore(not_db)
    assert not_db.read_text() == "my notes\n"
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(ServeError, match="SQLite database of something else"):
        SqliteStore(other)
    assert other.read_bytes() == before
    with pytest.raises(ServeError, match="not a regular file"):
        SqliteStore(tmp_path)
    with pytest.raises(ServeError, match="does not exist"):
        SqliteStore(tmp_path / "no" / "store.db")


def test_store_of_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "store.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(ServeError, match="store version 99; this one reads up to 1"):
        SqliteStore(path)


def test_store_keeps_what_it_took_across_opens(tmp_path):
    from netpol_learn._serve import SegmentId

    path = tmp_path / "store.db"
    store = SqliteStore(path)
    assert store.add_segment(SegmentId("n", "b", 0), 1, 2, 1, 0, 1, "x") is True
    store.close()
    store = SqliteStore(path)
    assert store.add_segment(SegmentId("n", "b", 0), 1, 2, 1, 0, 1, "x") is False
    assert store.totals().segments == 1
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


# --- the command ------------------------------------------------------------------------------


def _serve_cli(*args):
    return subprocess.run([sys.executable, "-m", "netpol_learn", "serve", *args], capture_output=True, text=True, timeout=60)


def test_cli_refuses_bad_starts_with_one_line(tmp_path):
    tokens = tokens_file(tmp_path)
    not_db = tmp_path / "notes.txt"
    not_db.write_text("keep me\n")
    cases = [
        (["--store", str(not_db), "--tokens-file", str(tokens), "--no-watch"], "not a netpol-learn store"),
        (["--store", str(tmp_path / "s.db"), "--tokens-file", str(tokens), "--no-watch", "--listen", "nowhere"], "expected HOST:PORT"),
        (["--store", str(tmp_path / "s.db"), "--no-watch"], "no way to check tokens: give --tokens-file"),
        (["--store", str(tmp_path / "s.db"), "--tokens-file", str(tokens), "--no-watch", "--listen", "192.0.2.1:8080"], "cannot listen on 192.0.2.1:8080"),
        (["--store", str(tmp_path / "s.db"), "--tokens-file", str(tokens), "--max-segment-size", "lots"], "expected a size"),
    ]
    for args, words in cases:
        r = _serve_cli(*args)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not_db.read_text() == "keep me\n"


def test_serve_process_on_loopback(tmp_path):
    store = tmp_path / "store.db"
    running = start_serve(tmp_path, store, "--tokens-file", str(tokens_file(tmp_path)), "--no-watch")
    http = urllib3.PoolManager()
    try:
        logs = [segment(n) for n in range(5)]
        for n, log in enumerate(logs):
            assert post(http, running.url, log, "node-a", "boot1", n).status == 201
        assert post(http, running.url, logs[0], "node-a", "boot1", 0).status == 200
        got = get(http, running.url, "/v1/flows")
        assert got.data.decode() == text(merge_logs(logs))
    finally:
        assert stop(running) == 0
    err = running.log()
    assert "serve: listening on " + running.url in err
    assert "serve: stopped: 5 segments stored, 1 resends acknowledged" in err
    # Started again on the same store: everything is there.
    running = start_serve(tmp_path, store, "--tokens-file", str(tokens_file(tmp_path)), "--no-watch")
    try:
        assert "5 segments from 1 nodes" in running.log()
        assert get(http, running.url, "/v1/flows").data.decode() == text(merge_logs(logs))
    finally:
        stop(running)


def test_serve_over_tls(tmp_path):
    from test_inventory_live import TLS_CERT, TLS_KEY

    (tmp_path / "tls.crt").write_text(TLS_CERT)
    (tmp_path / "tls.key").write_text(TLS_KEY)
    running = start_serve(tmp_path, tmp_path / "s.db", "--tokens-file", str(tokens_file(tmp_path)), "--no-watch",
                          "--tls-cert-file", str(tmp_path / "tls.crt"), "--tls-key-file", str(tmp_path / "tls.key"), wait_ready=False)
    try:
        http = urllib3.PoolManager(ca_certs=str(tmp_path / "tls.crt"), assert_hostname=False)
        url = running.url.replace("http://", "https://")
        import time

        deadline = time.monotonic() + 30
        while True:
            try:
                r = get(http, url, "/v1/flows")
                break
            except urllib3.exceptions.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.status == 200
        assert json.loads(r.data.decode().splitlines()[0])["format"] == "netpol-learn/flows"
        # The sniffer's sender, trusting the service's CA: the segment arrives over TLS.
        from netpol_learn._sniff import Sender, Spool, segments_url

        warnings: list[str] = []
        spool = Spool(tmp_path / "spool", warn=warnings.append)
        spool.open()
        spool.put(segment(3), node="node-t", boot="1-1", seq=0, cut=BASE_NS)
        (tmp_path / "write-token").write_text(WRITE + "\n")
        sender = Sender(spool, segments_url(url), str(tmp_path / "write-token"), warn=warnings.append,
                        ca_file=str(tmp_path / "tls.crt"))
        sender.start()
        assert sender.finish(20) and sender.sent == 1 and warnings == []
        spool.close()
        # collect --server https://... --ca-file: the flow log; without the CA: one line, nothing written.
        (tmp_path / "read-token").write_text(READ + "\n")
        out = tmp_path / "flows.jsonl"
        base = [sys.executable, "-m", "netpol_learn", "collect", "--server", url, "--token-file", str(tmp_path / "read-token"), "-o", str(out)]
        bad = subprocess.run(base, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "certificate" in bad.stderr.lower()
        assert not out.exists()
        good = subprocess.run(base + ["--ca-file", str(tmp_path / "tls.crt")], capture_output=True, text=True, timeout=60)
        assert good.returncode == 0, good.stderr
        assert out.read_text() == text(merge_logs([segment(3)]))
    finally:
        stop(running)
