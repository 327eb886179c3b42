"""The sniffer as a client of the learning service (``sniff --server``, issue 12, contract item 3):
its spool, its sender, and the real sniffer sending to a stand-in service.

- The spool alone (``netpol_learn._sniff.Spool``): within its size, the oldest dropped and counted
  in the next segment's stats, files whole (a full file system leaves no half file; a half-written
  temporary file of a killed process is removed), an earlier process's leftovers found oldest
  first (numerically, not by name), one process per directory, a path that is not a directory.
- The sender (``netpol_learn._sniff.Sender``) against ``StandIn``, a small HTTP server written here
  that answers ``POST /v1/segments`` as the contract says (201 new, 200 for a (node, boot, seq) it
  has, 400 malformed, 401 no or unknown token, 403 a read token, 413 too large, 422 another
  flow-log version or a time far in the future, and 503 or no answer at all when told): order,
  exactly one stored copy per segment, the backoff (1 s, doubling), segments the service refuses
  dropped and counted, the token file read again for every attempt, the drain time at stop.
- The command line: a bad URL, an unreadable token file or a spool that cannot be used is one
  line and exit 2 before anything is captured or written.
- The real sniffer in the namespace test bed (needs root and ``ip netns``, as tests/test_sniff.py):
  its segments arrive in order with -o beside it; with the service down for a while they arrive
  later, in order, each once; killed with SIGKILL, its spooled segments are sent by the next
  start with their original ids, before its own.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402
from test_sniff import Sniffing, segments, tcp_calls  # noqa: E402
from testbed import Serve, TestBed  # noqa: E402

from netpol_learn._errors import SniffError  # noqa: E402
from netpol_learn._flowlog import READABLE_VERSIONS, Flow, FlowLog, SegmentReader, dumps_lines  # noqa: E402
from netpol_learn._sniff import DEFAULT_SPOOL_SIZE, Options, PodWatcher, Sender, Spool, parse_spool_name, segments_url, spool_name  # noqa: E402
from netpol_learn._sniff import _sniffer  # noqa: E402
from netpol_learn._sniff._sender import DEFAULT_TOKEN_FILE, INITIAL_BACKOFF, MAX_BACKOFF  # noqa: E402

NO_BED = testbed.can_run()
needs_bed = pytest.mark.skipif(NO_BED is not None, reason=f"test bed unavailable: {NO_BED}")

T0 = 1_750_000_000 * 10**9
WRITE, READ = "write-token", "read-token"


# ==========================================================================================
# A stand-in for the service's ingest
# ==========================================================================================


class StandIn:
    """``POST /v1/segments`` as the contract answers it, in memory. ``stored`` maps (node, boot,
    seq) to (cut, segment text) in the order stored; ``requests`` records every request (time,
    status, query, headers); ``fail`` is a list of statuses to answer the next requests with
    instead (``"drop"``: store the segment, then close the connection without an answer, as a
    service killed after its commit); ``tokens`` maps tokens to roles. With ``netns`` it listens
    on 127.0.0.1 of that network namespace; ``stop`` and ``start`` take it down and up again on
    the same port."""

    def __init__(self, netns: str | None = None, *, max_size: int = 1 << 20, max_future: int = 600 * 10**9):
        self.netns = netns
        self.max_size = max_size
        self.max_future = max_future
        self.tokens = {WRITE: "write", READ: "read"}
        self.stored: dict[tuple[str, str, int], tuple[int, str]] = {}
        self.requests: list[dict] = []
        self.fail: list = []
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.connections: set[socket.socket] = set()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with stand_in.lock:
                    stand_in.connections.add(self.connection)

            def finish(self):
                with stand_in.lock:
                    stand_in.connections.discard(self.connection)
                super().finish()

            def do_GET(self):
                stand_in.requests.append({"time": time.monotonic(), "method": "GET", "path": self.path, "status": 404})
                self._answer(404, {"error": "no such path"})

            def do_POST(self):
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                record = {"time": time.monotonic(), "method": "POST", "path": url.path, "query": query,
                          "headers": dict(self.headers), "body": body}
                stand_in.requests.append(record)
                status, answer = stand_in.answer(url.path, query, self.headers, body)
                record["status"] = status
                if status == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._answer(status, answer, {"WWW-Authenticate": "Bearer"} if status == 401 else {})

            def _answer(self, status, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        ready, failed = threading.Event(), []

        def serve():
            try:
                if self.netns:
                    import ctypes

                    fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
                    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                        raise OSError(ctypes.get_errno(), "setns")
                    os.close(fd)
                server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                server.daemon_threads = True
            except BaseException as exc:  # noqa: BLE001 - raised in start
                failed.append(exc)
                ready.set()
                return
            self.server = server
            ready.set()
            server.serve_forever(poll_interval=0.05)

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)
        if failed:
            raise failed[0]
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        """Down: the listening socket closed and every open connection cut."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def answer(self, path: str, q: dict, headers, body: bytes):
        if path != "/v1/segments":
            return 404, {"error": "no such path"}
        auth = headers.get("Authorization", "")
        role = self.tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
        if role is None:
            return 401, {"error": "no token or an unknown one"}
        if role != "write":
            return 403, {"error": "this token may not write"}
        forced = self.fail.pop(0) if self.fail else None
        if forced not in (None, "drop"):
            return forced, {"error": f"told to answer {forced}"}
        try:
            sid = (q["node"], q["boot"], int(q["seq"]))
            cut = int(q["cut"])
        except (KeyError, ValueError):
            return 400, {"error": "bad or missing node, boot, seq, cut"}
        if len(body) > self.max_size:
            return 413, {"error": "larger than the limit"}
        if headers.get("Content-Encoding") == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return 400, {"error": "bad gzip"}
        if len(body) > self.max_size:
            return 413, {"error": "larger than the limit, uncompressed"}
        text = body.decode("utf-8", errors="replace")
        try:
            header = json.loads(text.split("\n", 1)[0])
        except ValueError:
            return 400, {"error": "not a flow log"}
        if not isinstance(header, dict) or header.get("kind") != "header":
            return 400, {"error": "not a flow log"}
        if header.get("version") not in READABLE_VERSIONS:
            return 422, {"error": f"flow-log version {header.get('version')!r} is not read here"}
        reader = SegmentReader(strict=True, name="segment")
        done = []
        try:
            for line in text.splitlines(keepends=True):
                if (seg := reader.feed(line)) is not None:
                    done.append(seg)
            if (seg := reader.close()) is not None:
                done.append(seg)
        except Exception as exc:  # noqa: BLE001 - any reader error is a malformed segment
            return 400, {"error": str(exc)}
        if len(done) != 1 or not done[0].complete:
            return 400, {"error": "not exactly one segment"}
        log = done[0].log
        latest = max([cut] + [f.last_seen for f in log.flows])
        if latest > time.time_ns() + self.max_future:
            return 422, {"error": "times in the future"}
        with self.lock:
            if sid in self.stored:
                return (200 if forced is None else "drop"), {"stored": False, "duplicate": True}
            self.stored[sid] = (cut, text)
        return (201 if forced is None else "drop"), {"stored": True, "flows": len(log.flows), "dns": len(log.dns)}

    def posts(self, status=None) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST" and (status is None or r["status"] == status)]

    def close(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - already down
            pass


@pytest.fixture
def stand_in():
    s = StandIn()
    yield s
    s.close()


# ==========================================================================================
# Helpers
# ==========================================================================================


def _log(i: int, flows: int = 20) -> FlowLog:
    """Segment ``i``: ``flows`` flows from addresses no other segment has (so they compress alike)."""
    out = []
    for k in range(flows):
        n = i * 1000 + k
        out.append(Flow(src=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", dst="10.96.0.10", proto="TCP", port=8080 + k,
                        packets=2, bytes=120, connections=1, first_seen=T0 + n * 10**6, last_seen=T0 + n * 10**6 + 5000,
                        direction=(("syn", 1),), evidence="established"))
    return FlowLog(flows=tuple(sorted(out, key=lambda f: (tuple(int(p) for p in f.src.split(".")), f.port))),
                   stats={"packets": 2 * flows, "decoded": 2 * flows}, sources=("sniff:node-a",))


def _size(log: FlowLog) -> int:
    return len(gzip.compress("".join(dumps_lines(log)).encode(), mtime=0))


def _read_spooled(path: Path) -> FlowLog:
    reader = SegmentReader(strict=True, name=path.name)
    done = [s for line in gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True) if (s := reader.feed(line))]
    if (s := reader.close()) is not None:
        done.append(s)
    assert len(done) == 1 and done[0].complete
    return done[0].log


class Messages:
    def __init__(self):
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def warn(self, m: str) -> None:
        self.warnings.append(m)

    def info(self, m: str) -> None:
        self.infos.append(m)


def _spool(directory: Path, size: int = DEFAULT_SPOOL_SIZE, messages: Messages | None = None) -> Spool:
    m = messages or Messages()
    s = Spool(directory, size, warn=m.warn, info=m.info)
    s.open()
    return s


def _wait(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _token(tmp_path: Path, token: str = WRITE) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return path


# ==========================================================================================
# The spool
# ==========================================================================================


def test_spool_names_carry_the_segment_id_and_parse_back():
    name = spool_name("node-a.example/x y", "1750000000000000000-42", 7, T0, 20)
    assert "/" not in name and " " not in name and name.endswith(".ndjson.gz")
    item = parse_spool_name(name, 123)
    assert (item.node, item.boot, item.seq, item.cut, item.flows, item.size) == ("node-a.example/x y", "1750000000000000000-42", 7, T0, 20, 123)
    assert parse_spool_name("notes.txt") is None and parse_spool_name(".x.ndjson.gz.abc.tmp") is None
    with pytest.raises(ValueError):
        spool_name("n", "not-a-boot", 0, 0, 0)


def test_spool_files_are_whole_gzip_segments_and_come_back_oldest_first(tmp_path):
    spool = _spool(tmp_path / "spool")
    logs = [_log(i) for i in range(3)]
    for seq, log in enumerate(logs):
        assert spool.put(log, node="node-a", boot="100-1", seq=seq, cut=T0 + seq) == log  # nothing to add to its stats
    files = sorted((tmp_path / "spool").iterdir())
    assert len(files) == 3 and not [f for f in files if f.name.startswith(".")]
    assert spool.total == sum(f.stat().st_size for f in files) and len(spool) == 3
    order = []
    while (claimed := spool.claim()) is not None:
        item, data = claimed
        assert data == (tmp_path / "spool" / item.name).read_bytes()
        assert _read_spooled(tmp_path / "spool" / item.name) == logs[item.seq]
        assert spool.claim() is None  # one at a time
        order.append((item.node, item.boot, item.seq, item.cut, item.flows))
        spool.done(item, "sent")
    assert order == [("node-a", "100-1", s, T0 + s, 20) for s in range(3)]
    assert list((tmp_path / "spool").iterdir()) == [] and spool.total == 0


def test_a_full_spool_drops_the_oldest_and_counts_them_in_the_next_segment(tmp_path):
    one = _size(_log(0))
    messages = Messages()
    limit = int(3.5 * one)
    spool = _spool(tmp_path / "spool", limit, messages)
    put = [spool.put(_log(i), node="node-a", boot="100-1", seq=i, cut=T0 + i) for i in range(6)]
    on_disk = sorted((parse_spool_name(p.name, p.stat().st_size) for p in (tmp_path / "spool").iterdir()), key=lambda s: s.seq)
    assert sum(s.size for s in on_disk) == spool.total <= limit
    assert [s.seq for s in on_disk] == [3, 4, 5]  # the three newest
    # Segment 3 made room by dropping 0, segment 4 dropped 1, segment 5 dropped 2: each counts its own.
    for i in range(3):
        assert "spool_dropped_segments" not in put[i].stats
    for i in range(3, 6):
        assert put[i].stats["spool_dropped_segments"] == 1 and put[i].stats["spool_dropped_flows"] == 20
        assert _read_spooled(tmp_path / "spool" / spool_name("node-a", "100-1", i, T0 + i, 20)) == put[i]
        assert {k: v for k, v in put[i].stats.items() if not k.startswith("spool_")} == _log(i).stats
    assert spool.dropped == {"segments": 3, "flows": 60}
    assert [w for w in messages.warnings if "dropped the oldest segment" in w] == [
        f"spool {tmp_path / 'spool'} full (--spool-size {limit}): dropped the oldest segment, node-a/100-1/{i} (20 flow lines), unsent"
        for i in range(3)]


def test_a_segment_larger_than_the_whole_spool_is_dropped_and_counted_in_the_next(tmp_path):
    small, big = _log(1, flows=2), _log(2, flows=400)
    messages = Messages()
    spool = _spool(tmp_path / "spool", 4 * _size(small), messages)
    assert spool.put(big, node="n", boot="100-1", seq=0, cut=T0) == big  # returned as it was: not spooled
    assert list((tmp_path / "spool").iterdir()) == []
    assert "is larger than the whole spool" in messages.warnings[0]
    after = spool.put(small, node="n", boot="100-1", seq=1, cut=T0)
    assert after.stats["spool_dropped_segments"] == 1 and after.stats["spool_dropped_flows"] == 400
    third = spool.put(_log(3, flows=2), node="n", boot="100-1", seq=2, cut=T0)
    assert "spool_dropped_segments" not in third.stats  # counted once


def _seqs(directory: Path) -> list[int]:
    return sorted(parse_spool_name(p.name).seq for p in directory.iterdir())


def test_the_segment_being_sent_is_dropped_last_and_counted_only_if_its_send_fails(tmp_path):
    one = _size(_log(0))
    messages = Messages()
    directory = tmp_path / "spool"
    spool = _spool(directory, int(2.5 * one), messages)
    spool.put(_log(0), node="n", boot="100-1", seq=0, cut=T0)
    spool.put(_log(1), node="n", boot="100-1", seq=1, cut=T0)
    item, data = spool.claim()
    assert item.seq == 0
    # Room for two: the next one drops 1, not 0, which is being sent.
    s2 = spool.put(_log(2), node="n", boot="100-1", seq=2, cut=T0)
    assert s2.stats["spool_dropped_segments"] == 1 and _seqs(directory) == [0, 2]
    spool.done(item, "retry")
    # Room for one: with nothing else left, the one being sent goes from the disk ...
    spool.size = int(1.5 * one)
    item, data = spool.claim()
    assert item.seq == 0
    s3 = spool.put(_log(3), node="n", boot="100-1", seq=3, cut=T0)  # drops 2, then 0
    assert s3.stats["spool_dropped_segments"] == 1 and _seqs(directory) == [3]
    # ... and is not counted when its send then succeeds,
    spool.done(item, "sent")
    item, data = spool.claim()
    assert item.seq == 3
    s4 = spool.put(_log(4), node="n", boot="100-1", seq=4, cut=T0)
    assert "spool_dropped_segments" not in s4.stats and _seqs(directory) == [4]
    # ... but is when it fails.
    spool.done(item, "retry")
    s5 = spool.put(_log(5), node="n", boot="100-1", seq=5, cut=T0)  # drops 4
    assert s5.stats["spool_dropped_segments"] == 2 and s5.stats["spool_dropped_flows"] == 40  # 3 and 4
    assert spool.dropped == {"segments": 4, "flows": 80}  # 1, 2, 3, 4
    dropped = [w.split(", ")[1].split(" ")[0] for w in messages.warnings]
    assert dropped == ["n/100-1/1", "n/100-1/2", "n/100-1/3", "n/100-1/4"]
    assert spool.claim()[0].seq == 5 and spool.total == (directory / spool_name("n", "100-1", 5, T0, 20)).stat().st_size


def test_leftovers_of_an_earlier_process_come_first_oldest_first_and_half_written_files_go(tmp_path):
    directory = tmp_path / "spool"
    first = _spool(directory)
    for seq in (8, 9, 10, 11):  # 10 sorts before 9 by name, not by number
        first.put(_log(seq), node="node-a", boot="100-7", seq=seq, cut=T0 + seq)
    first.close()
    older = _spool(tmp_path / "other")
    older.put(_log(1), node="node-a", boot="99-3", seq=5, cut=T0)
    older.close()
    (tmp_path / "other" / spool_name("node-a", "99-3", 5, T0, 20)).rename(directory / spool_name("node-a", "99-3", 5, T0, 20))
    # What _output leaves of a write that a SIGKILL interrupted, and a file that is none of the spool's.
    (directory / f".{spool_name('node-a', '100-7', 12, T0, 20)}.k3j9.tmp").write_bytes(b"\x1f\x8b half")
    (directory / "README").write_text("mine\n")
    messages = Messages()
    second = _spool(directory, messages=messages)
    assert second.leftovers == 5
    assert not (directory / f".{spool_name('node-a', '100-7', 12, T0, 20)}.k3j9.tmp").exists()
    assert (directory / "README").read_text() == "mine\n"
    assert messages.warnings == [f"spool {directory}: README is not a spool file; left alone"]
    assert f"spool {directory}: removed 1 segment file an earlier run left half-written" in messages.infos
    second.put(_log(20), node="node-a", boot="200-9", seq=0, cut=T0 + 20)
    order = []
    while (claimed := second.claim()) is not None:
        order.append((claimed[0].boot, claimed[0].seq))
        second.done(claimed[0], "sent")
    assert order == [("99-3", 5), ("100-7", 8), ("100-7", 9), ("100-7", 10), ("100-7", 11), ("200-9", 0)]


def test_a_smaller_spool_size_at_the_next_start_drops_the_oldest_leftovers(tmp_path):
    directory = tmp_path / "spool"
    first = _spool(directory)
    for seq in range(4):
        first.put(_log(seq), node="n", boot="100-1", seq=seq, cut=T0)
    first.close()
    second = _spool(directory, _size(_log(2)) + _size(_log(3)) + 400)  # 2 and 3, and a small one
    assert sorted(parse_spool_name(p.name).seq for p in directory.iterdir()) == [2, 3]
    nxt = second.put(_log(9, flows=1), node="n", boot="200-1", seq=0, cut=T0)
    assert nxt.stats["spool_dropped_segments"] == 2 and nxt.stats["spool_dropped_flows"] == 40
    assert _seqs(directory) == [0, 2, 3]


def test_one_sniffer_per_spool_directory(tmp_path):
    first = _spool(tmp_path / "spool")
    with pytest.raises(SniffError) as e:
        _spool(tmp_path / "spool")
    assert str(e.value) == f"--spool {tmp_path / 'spool'}: in use by another sniffer (the directory is locked)"
    first.close()
    _spool(tmp_path / "spool").close()  # free again


def test_a_spool_that_is_not_a_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SniffError) as e:
        _spool(tmp_path / "file")
    assert str(e.value) == f"--spool {tmp_path / 'file'}: not a directory"
    with pytest.raises(SniffError) as e:
        _spool(tmp_path / "file" / "below")
    assert str(e.value) == f"--spool {tmp_path / 'file' / 'below'}: cannot create it: Not a directory"
    _spool(tmp_path / "new" / "deeper").close()  # made with its parents
    assert (tmp_path / "new" / "deeper").is_dir()


def test_a_spool_on_a_full_file_system_leaves_no_half_file_and_counts_the_segment(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], check=True)
    try:
        messages = Messages()
        spool = _spool(mount, messages=messages)
        assert spool.put(_log(1, flows=2), node="n", boot="100-1", seq=0, cut=T0).stats == _log(1, flows=2).stats
        big = _log(2, flows=2000)  # ~40 KB compressed: more than the file system holds
        assert spool.put(big, node="n", boot="100-1", seq=1, cut=T0) == big
        assert [p.name for p in mount.iterdir()] == [spool_name("n", "100-1", 0, T0, 2)]  # no temporary left
        assert any("No space left on device" in w and "segment n/100-1/1 (2000 flow lines) dropped" in w for w in messages.warnings)
        nxt = spool.put(_log(3, flows=2), node="n", boot="100-1", seq=2, cut=T0)
        assert nxt.stats["spool_dropped_segments"] == 1 and nxt.stats["spool_dropped_flows"] == 2000
        spool.close()
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ==========================================================================================
# The sender
# ==========================================================================================


def _sender(spool: Spool, stand_in: StandIn, token: Path, messages: Messages, **kw) -> Sender:
    return Sender(spool, segments_url(stand_in.url), str(token), warn=messages.warn, info=messages.info, **kw)


def test_the_sender_sends_in_order_each_segment_once_as_the_contract_says(tmp_path, stand_in):
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    logs = [_log(i) for i in range(5)]
    for seq in range(3):
        spool.put(logs[seq], node="node-a", boot="100-1", seq=seq, cut=T0 + seq)
    sender = _sender(spool, stand_in, _token(tmp_path), messages)
    sender.start()
    _wait(lambda: len(stand_in.stored) == 3, what="three segments")
    for seq in (3, 4):
        spool.put(logs[seq], node="node-a", boot="100-1", seq=seq, cut=T0 + seq)
    _wait(lambda: len(stand_in.stored) == 5, what="five segments")
    assert sender.finish(1.0)
    assert list(stand_in.stored) == [("node-a", "100-1", s) for s in range(5)]  # in order
    for seq, (cut, text) in enumerate(stand_in.stored.values()):
        assert cut == T0 + seq and text == "".join(dumps_lines(logs[seq]))
    posts = stand_in.posts()
    assert [r["status"] for r in posts] == [201] * 5
    for r in posts:
        assert r["headers"]["Authorization"] == f"Bearer {WRITE}"
        assert r["headers"]["Content-Encoding"] == "gzip" and r["headers"]["Content-Type"] == "application/x-ndjson"
        assert set(r["query"]) == {"node", "boot", "seq", "cut"}
    assert list((tmp_path / "spool").iterdir()) == []
    assert (sender.sent, sender.duplicates, sender.rejected) == (5, 0, 0) and messages.warnings == []


def test_an_answer_lost_after_the_commit_is_sent_again_and_stored_once(tmp_path, stand_in):
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    spool.put(_log(0), node="node-a", boot="100-1", seq=0, cut=T0)
    spool.put(_log(1), node="node-a", boot="100-1", seq=1, cut=T0)
    stand_in.fail = ["drop"]  # stores 0, then the connection closes without an answer
    sender = _sender(spool, stand_in, _token(tmp_path), messages)
    sender.start()
    _wait(lambda: len(stand_in.posts()) == 3, what="three posts")
    assert sender.finish(1.0)
    assert [(r["query"]["seq"], r["status"]) for r in stand_in.posts()] == [("0", "drop"), ("0", 200), ("1", 201)]
    assert list(stand_in.stored) == [("node-a", "100-1", 0), ("node-a", "100-1", 1)]
    assert (sender.sent, sender.duplicates) == (2, 1)
    assert len(messages.warnings) == 1 and messages.warnings[0].startswith(f"cannot send segments to {stand_in.url}: ")


def test_503_is_sent_again_after_1_then_2_seconds_and_the_order_holds(tmp_path, stand_in):
    assert (INITIAL_BACKOFF, MAX_BACKOFF) == (1.0, 60.0)
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    for seq in range(2):
        spool.put(_log(seq), node="n", boot="100-1", seq=seq, cut=T0)
    stand_in.fail = [503, 503]
    sender = _sender(spool, stand_in, _token(tmp_path), messages)
    sender.start()
    _wait(lambda: len(stand_in.stored) == 2, timeout=15, what="both segments")
    sender.finish(1.0)
    posts = stand_in.posts()
    assert [(r["query"]["seq"], r["status"]) for r in posts] == [("0", 503), ("0", 503), ("0", 201), ("1", 201)]
    gaps = [b["time"] - a["time"] for a, b in zip(posts, posts[1:])]
    assert 0.95 <= gaps[0] <= 1.5 and 1.95 <= gaps[1] <= 2.5 and gaps[2] < 0.5
    assert messages.warnings == [f"cannot send segments to {stand_in.url}: HTTP 503: told to answer 503; 2 kept in the spool "
                                 f"{tmp_path / 'spool'}, sent again with backoff (up to 60s)"]
    assert messages.infos[-1] == f"{stand_in.url} takes segments again; 1 left in the spool"


def test_the_backoff_doubles_up_to_its_limit_and_starts_again_after_a_success(tmp_path, stand_in):
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    for seq in range(2):
        spool.put(_log(seq), node="n", boot="100-1", seq=seq, cut=T0)
    stand_in.fail = [500] * 6 + [None, 502, 502]  # None: answered as it comes (201)
    sender = _sender(spool, stand_in, _token(tmp_path), messages, initial_backoff=0.1, max_backoff=0.4)
    sender.start()
    _wait(lambda: len(stand_in.stored) == 2, what="both segments")
    sender.finish(1.0)
    posts = stand_in.posts()
    assert [r["status"] for r in posts] == [500] * 6 + [201, 502, 502, 201]
    gaps = [b["time"] - a["time"] for a, b in zip(posts, posts[1:])]
    expected = [0.1, 0.2, 0.4, 0.4, 0.4, 0.4] + [None] + [0.1, 0.2]  # from the start again after a success
    for gap, want in zip(gaps, expected):
        if want is not None:
            assert want - 0.01 <= gap <= want + 0.09, (gaps, expected)


@pytest.mark.parametrize(("status", "case"), [(400, "malformed"), (413, "too large"), (422, "in the future"), (422, "version 3")])
def test_a_segment_the_service_refuses_is_dropped_and_counted_in_the_next(tmp_path, stand_in, status, case):
    messages = Messages()
    flows = 20
    if case == "version 3":  # a leftover of some other release, as a file in the spool
        (tmp_path / "spool").mkdir()
        body = '{"format": "netpol-learn/flows", "kind": "header", "sources": [], "version": 3}\n{"kind": "stats"}\n'
        (tmp_path / "spool" / spool_name("n", "100-1", 0, T0, 0)).write_bytes(gzip.compress(body.encode()))
        flows = 0
    spool = _spool(tmp_path / "spool", messages=messages)
    if case == "malformed":
        stand_in.fail = [400]
        spool.put(_log(0), node="n", boot="100-1", seq=0, cut=T0)
    elif case == "too large":
        stand_in.max_size = len("".join(dumps_lines(_log(1)))) + 500  # the next one fits, uncompressed too
        assert _size(_log(0, flows=2000)) > stand_in.max_size
        spool.put(_log(0, flows=2000), node="n", boot="100-1", seq=0, cut=T0)
        flows = 2000
    elif case == "in the future":
        later = time.time_ns() + 10**12  # the stand-in takes at most 10 minutes ahead
        spool.put(replace(_log(0), flows=tuple(replace(f, first_seen=later, last_seen=later + 1, runs=()) for f in _log(0).flows)),
                  node="n", boot="100-1", seq=0, cut=T0)
    sender = _sender(spool, stand_in, _token(tmp_path), messages)
    sender.start()
    _wait(lambda: len(spool) == 0, what="the refused segment gone")
    nxt = spool.put(_log(1), node="n", boot="100-1", seq=1, cut=T0)
    _wait(lambda: len(stand_in.stored) == 1, what="the next segment")
    sender.finish(1.0)
    assert [r["status"] for r in stand_in.posts()] == [status, 201]
    assert nxt.stats["server_rejected_segments"] == 1 and nxt.stats.get("server_rejected_flows", 0) == flows
    assert list(stand_in.stored) == [("n", "100-1", 1)]
    assert stand_in.stored[("n", "100-1", 1)][1] == "".join(dumps_lines(nxt))
    assert len(messages.warnings) == 1
    assert messages.warnings[0].startswith(f"{stand_in.url} refused segment n/100-1/0 ({flows} flow lines): HTTP {status}: ")
    assert messages.warnings[0].endswith("; deleted from the spool (counted as server_rejected_segments in the next segment)")
    assert sender.rejected == 1 and list((tmp_path / "spool").iterdir()) == []


def test_401_and_403_are_retried_and_the_token_file_is_read_again_every_attempt(tmp_path, stand_in):
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    spool.put(_log(0), node="n", boot="100-1", seq=0, cut=T0)
    token = _token(tmp_path, "wrong")
    sender = _sender(spool, stand_in, token, messages, initial_backoff=0.1, max_backoff=0.2)
    sender.start()
    _wait(lambda: len(stand_in.posts(401)) >= 2, what="two 401s")
    token.write_text(READ)  # a rotated token, of the wrong role
    _wait(lambda: len(stand_in.posts(403)) >= 1, what="a 403")
    token.unlink()  # between two rotations
    _wait(lambda: any("cannot read the token file" in w for w in messages.warnings), what="the token file warning")
    token.write_text(WRITE + "\n")
    _wait(lambda: len(stand_in.stored) == 1, what="the segment")
    sender.finish(1.0)
    auths = [r["headers"].get("Authorization") for r in stand_in.posts()]
    assert auths[0] == "Bearer wrong" and auths[-1] == f"Bearer {WRITE}" and f"Bearer {READ}" in auths
    assert [r["status"] for r in stand_in.posts()][-1] == 201 and list(stand_in.stored) == [("n", "100-1", 0)]
    assert [w.split(";")[0] for w in messages.warnings] == [
        f"cannot send segments to {stand_in.url}: HTTP 401: no token or an unknown one",
        f"cannot send segments to {stand_in.url}: HTTP 403: this token may not write",
        f"cannot send segments to {stand_in.url}: cannot read the token file {token} (No such file or directory)"]


def test_a_service_that_is_not_there_yet_gets_the_segments_when_it_is(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on, for a while
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    for seq in range(3):
        spool.put(_log(seq), node="n", boot="100-1", seq=seq, cut=T0)
    sender = Sender(spool, segments_url(f"http://127.0.0.1:{port}"), str(_token(tmp_path)), warn=messages.warn,
                    info=messages.info, initial_backoff=0.1, max_backoff=0.2)
    sender.start()
    _wait(lambda: messages.warnings, what="a warning")
    assert messages.warnings[0].startswith(f"cannot send segments to http://127.0.0.1:{port}: Connection refused; 3 kept")
    time.sleep(0.5)
    stand_in = StandIn()
    stand_in.stop()
    stand_in.port = port
    stand_in.start()
    try:
        _wait(lambda: len(stand_in.stored) == 3, what="three segments")
        sender.finish(1.0)
        assert list(stand_in.stored) == [("n", "100-1", s) for s in range(3)]
        assert len(messages.warnings) == 1  # the same reason again is not warned again
    finally:
        stand_in.close()


def test_finish_gives_the_sender_its_drain_time_and_leaves_the_rest_in_the_spool(tmp_path, stand_in):
    messages = Messages()
    spool = _spool(tmp_path / "spool", messages=messages)
    for seq in range(3):
        spool.put(_log(seq), node="n", boot="100-1", seq=seq, cut=T0)
    stand_in.fail = [503] * 100
    sender = _sender(spool, stand_in, _token(tmp_path), messages)
    sender.start()
    _wait(lambda: stand_in.posts(), what="a first attempt")
    began = time.monotonic()
    assert sender.finish(1.5) is False
    took = time.monotonic() - began
    assert 1.4 <= took <= 2.0 and not sender.thread.is_alive()
    assert len(stand_in.posts()) == 2  # at 0 s and after the 1 s backoff; the next would be at 3 s
    assert len(list((tmp_path / "spool").iterdir())) == 3
    # Nothing left: finish returns at once.
    spool2 = _spool(tmp_path / "empty")
    idle = _sender(spool2, stand_in, _token(tmp_path), messages)
    idle.start()
    began = time.monotonic()
    assert idle.finish(10.0) is True and time.monotonic() - began < 0.5


def test_the_server_url_and_the_token_file_are_checked(tmp_path):
    assert segments_url("http://svc:8080") == "http://svc:8080/v1/segments"
    assert segments_url("https://proxy.example/api/netpol/") == "https://proxy.example/api/netpol/v1/segments"
    for bad, why in [("svc:8080", "not an http:// or https:// URL"), ("ftp://svc", "not an http:// or https:// URL"),
                     ("http://", "no host"), ("http://svc:99999", "not a URL (Port out of range 0-65535)"),
                     ("http://svc/?a=1", "a query, a fragment or credentials in the URL are not used; give scheme, host, "
                                         "port (and a path prefix)")]:
        with pytest.raises(SniffError) as e:
            segments_url(bad)
        assert str(e.value) == f"--server {bad!r}: {why}"
    from netpol_learn._sniff import check_token_file

    with pytest.raises(SniffError) as e:
        check_token_file(str(tmp_path / "missing"))
    assert str(e.value) == f"--token-file {tmp_path / 'missing'}: cannot read it (No such file or directory)"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SniffError) as e:
        check_token_file(str(tmp_path / "empty"))
    assert str(e.value) == f"--token-file {tmp_path / 'empty'}: empty"
    assert not os.path.exists(DEFAULT_TOKEN_FILE)  # not in a pod here
    with pytest.raises(SniffError) as e:
        check_token_file(None)
    assert str(e.value) == (f"--server: no --token-file given and no service account token at {DEFAULT_TOKEN_FILE} "
                            "(not in a cluster?)")


def test_with_a_server_the_pod_watch_is_not_started_unless_asked_for(monkeypatch):
    asked = []
    monkeypatch.setattr(PodWatcher, "in_cluster", classmethod(lambda cls, **kw: asked.append(kw) or None))
    monkeypatch.setattr(_sniffer, "run_until_signalled", lambda sniffer, started=None: None)
    _sniffer.sniff(Options(server="http://svc:8080", proc=None), warn=pytest.fail)
    assert asked == []
    _sniffer.sniff(Options(proc=None), warn=pytest.fail)
    assert len(asked) == 1
    with pytest.raises(SniffError):
        _sniffer.sniff(Options(server="http://svc:8080", proc=None), watch_pods=True, warn=pytest.fail)
    assert len(asked) == 2


# ==========================================================================================
# The command line: what is checked before capture starts
# ==========================================================================================


def _cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netpol_learn", "sniff", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize(("args", "line"), [
    (["--server", "localhost:8080"], "error: --server 'localhost:8080': not an http:// or https:// URL"),
    (["--server", "http://svc", "--token-file", "{tmp}/nope"], "error: --token-file {tmp}/nope: cannot read it (No such file or directory)"),
    (["--server", "http://svc", "--token-file", "{tmp}"], "error: --token-file {tmp}: cannot read it (Is a directory)"),
    (["--server", "http://svc"], f"error: --server: no --token-file given and no service account token at {DEFAULT_TOKEN_FILE} (not in a cluster?)"),
    (["--server", "http://svc", "--token-file", "{tmp}/token", "--spool", "{tmp}/token"], "error: --spool {tmp}/token: not a directory"),
])
def test_a_bad_server_token_or_spool_is_one_line_and_exit_2_before_anything_is_written(tmp_path, args, line):
    work = tmp_path / "work"
    work.mkdir()
    _token(work)
    args = [a.format(tmp=work) for a in args]
    if "--spool" not in args:
        args += ["--spool", str(work / "spool")]
    r = _cli(*args, "-i", "lo", "-o", work / "flows.jsonl", "--proc", "", cwd=work)
    assert r.returncode == 2 and r.stderr.splitlines() == [line.format(tmp=work)], r.stderr
    assert r.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == ["token"]  # no flow log, no spool


def test_another_sniffer_on_the_same_spool_is_one_line_and_exit_2(tmp_path):
    holder = _spool(tmp_path / "spool")
    try:
        r = _cli("--server", "http://127.0.0.1:9", "--token-file", _token(tmp_path), "--spool", tmp_path / "spool", "-i", "lo",
                 "--proc", "", cwd=tmp_path)
    finally:
        holder.close()
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: --spool {tmp_path / 'spool'}: in use by another sniffer (the directory is locked)"]


# ==========================================================================================
# The real sniffer, in the namespace test bed, sending to the stand-in
# ==========================================================================================


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """One node; a server pod and a client pod that the tests make talk (no traffic of its own)."""
    if NO_BED is not None:
        pytest.skip(f"test bed unavailable: {NO_BED}")
    b = TestBed("sendbed", dns=False, lifetime=120)
    b.deployment("shop", "server", serve=[Serve(8080)])
    b.deployment("shop", "client")
    with b:
        yield b


def _stored_segments(stand_in: StandIn) -> list[tuple[tuple[str, str, int], list[dict]]]:
    return [(sid, segments(text)[0]) for sid, (_cut, text) in stand_in.stored.items()]


def _flows_to(segs, address: str, port: int) -> int:
    """The connections to address:port that the segments saw open (their SYN): each is in exactly
    one segment, where a connection that spans a segment's cut has its later packets in the next
    one too (as mid-stream traffic of its own)."""
    return sum(line["direction"].get("syn", 0) for _sid, seg in segs for line in seg if line["kind"] == "flow"
               and line["dst"] == address and line["port"] == port)


@needs_bed
def test_the_sniffer_sends_its_segments_to_the_service_in_order_and_writes_the_same_to_o(bed, tmp_path):
    stand_in = StandIn(netns=bed.node_ns)
    try:
        token = _token(tmp_path)
        flows_path = tmp_path / "flows.jsonl"
        s = Sniffing(bed, "--server", stand_in.url, "--token-file", str(token), "--spool", str(tmp_path / "spool"),
                     "--interval", "0.5", "--node", "node-a", "-i", "veth*", "-o", str(flows_path))
        listening = s.wait_for("listening on")
        assert f"to {stand_in.url} (spool {tmp_path / 'spool'}) and {flows_path}" in listening
        server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
        tcp_calls(client, server.ip, 8080, 3)
        _wait(lambda: len(stand_in.stored) >= 3, what="three segments")
        tcp_calls(client, server.ip, 8080, 2)
        time.sleep(0.2)
        assert s.stop() == 0
    finally:
        stand_in.close()
    assert not [line for line in s.lines if line.startswith("warning:")], s.lines
    stored = _stored_segments(stand_in)
    (boot,) = {sid[1] for sid, _ in stored}
    assert [sid for sid, _ in stored] == [("node-a", boot, i) for i in range(len(stored))]  # all of them, in order
    assert int(boot.split("-")[1]) == s.proc.pid  # ip netns exec runs it in its own process
    assert abs(int(boot.split("-")[0]) - time.time_ns()) < 120 * 10**9
    assert all(seg[0]["sources"] == ["sniff:node-a"] for _, seg in stored)
    assert _flows_to(stored, server.ip, 8080) == 5
    # The local flow log holds the same segments, byte for byte.
    assert flows_path.read_text() == "".join(text for _cut, text in stand_in.stored.values())
    cuts = [cut for cut, _ in stand_in.stored.values()]
    assert cuts == sorted(cuts) and all(abs(c - time.time_ns()) < 120 * 10**9 for c in cuts)
    assert list((tmp_path / "spool").iterdir()) == []
    assert s.lines[-1].startswith(f"sniff: stopped: {len(stored)} segments, ") and s.lines[-1].endswith(
        f"; {len(stored)} segments sent (0 already there), 0 refused, 0 dropped from the full spool, 0 left in the spool")


@needs_bed
def test_with_the_service_down_for_a_while_the_segments_arrive_later_in_order_and_once(bed, tmp_path):
    stand_in = StandIn(netns=bed.node_ns)
    try:
        token = _token(tmp_path)
        spool = tmp_path / "spool"
        # In a pod: the service account's token where a pod has it (the default --token-file), and
        # the API's address, which with --server it must not watch.
        account = "/run/secrets/kubernetes.io/serviceaccount"
        mount = f'mount -t tmpfs tmpfs /run && mkdir -p {account} && cp {token} {account}/token && exec "$@"'
        s = Sniffing(bed, "--server", stand_in.url, "--spool", str(spool), "--interval", "0.5", "-i", "veth*",
                     stdout=subprocess.PIPE, inside=["unshare", "--mount", "sh", "-c", mount, "sh"],
                     env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(stand_in.port), "NODE_NAME": "node-b"})
        s.wait_for("listening on")
        server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
        tcp_calls(client, server.ip, 8080, 1)
        _wait(lambda: len(stand_in.stored) >= 2, what="two segments")
        stand_in.stop()
        down = len(stand_in.stored)
        tcp_calls(client, server.ip, 8080, 2)
        _wait(lambda: len(list(spool.iterdir())) >= 4, what="segments waiting in the spool")
        s.wait_for("cannot send segments to")
        stand_in.start()  # the same port
        _wait(lambda: not list(spool.iterdir()) and len(stand_in.stored) > down + 4, timeout=90, what="the spool sent")
        tcp_calls(client, server.ip, 8080, 1)
        time.sleep(0.3)
        assert s.stop() == 0
        out = s.proc.stdout.read()
    finally:
        stand_in.close()
    assert out == ""  # no local output without -o
    stored = _stored_segments(stand_in)
    (boot,) = {sid[1] for sid, _ in stored}
    assert [sid for sid, _ in stored] == [("node-b", boot, i) for i in range(len(stored))]
    assert len(stand_in.posts(201)) == len(stored)  # each stored once
    assert _flows_to(stored, server.ip, 8080) == 4
    warnings = [line for line in s.lines if line.startswith("warning:")]
    assert warnings and all(w.startswith(f"warning: cannot send segments to {stand_in.url}: ") for w in warnings), s.lines
    assert any(line.startswith(f"sniff: {stand_in.url} takes segments again") for line in s.lines)
    assert not [r for r in stand_in.requests if r["method"] == "GET"]  # no pod watch
    assert not any("watching pods" in line for line in s.lines)


@needs_bed
def test_a_sniffer_killed_with_sigkill_leaves_its_spool_to_the_next_start_which_sends_it_first(bed, tmp_path):
    stand_in = StandIn(netns=bed.node_ns)
    stand_in.stop()  # down while the first one runs
    token, spool = _token(tmp_path), tmp_path / "spool"
    args = ("--server", stand_in.url, "--token-file", str(token), "--spool", str(spool), "--node", "node-c", "-i", "veth*")
    server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
    try:
        first = Sniffing(bed, *args, "--interval", "0.5")
        first.wait_for("listening on")
        tcp_calls(client, server.ip, 8080, 2)
        _wait(lambda: len(list(spool.iterdir())) >= 3, what="spooled segments")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        left = sorted((parse_spool_name(p.name) for p in spool.iterdir() if not p.name.startswith(".")), key=lambda item: item.seq)
        first_boot = left[0].boot
        assert [i.seq for i in left] == list(range(len(left)))
        stand_in.start()
        second = Sniffing(bed, *args, "--interval", "60")
        second.wait_for("listening on")
        _wait(lambda: len(stand_in.stored) >= len(left), what="the leftovers")
        tcp_calls(client, server.ip, 8080, 1)
        time.sleep(0.2)
        assert second.stop() == 0
    finally:
        stand_in.close()
    stored = _stored_segments(stand_in)
    ids = [sid for sid, _ in stored]
    second_boot = ids[-1][1]
    assert second_boot != first_boot
    assert ids == [("node-c", first_boot, i.seq) for i in left] + [("node-c", second_boot, 0)]
    assert any("of an earlier run to send first" in line for line in second.lines)
    # The flows of the spooled intervals arrived; what was lost is at most the interval the kill cut.
    assert 1 <= _flows_to(stored, server.ip, 8080) <= 3
    assert _flows_to(stored[-1:], server.ip, 8080) == 1
