"""``netpol-learn inventory --watch`` and ``watch_inventory``: a snapshot and the history of every
change after it, with the real ``kubernetes`` client against ``fake_api.WatchApiServer`` (list and
watch calls as an etcd-backed API server answers them: resourceVersions, chunked watch streams
of JSON lines, bookmarks, compaction's 410, dropped connections, 500s).

In-process tests run the library in a thread and stop it with its ``stop`` event; the CLI's
``--for`` and its signals are run as fresh processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from fake_api import KIND_PATHS, WatchApiServer, no_ambient_cluster  # noqa: F401  (an autouse fixture)
from netpol_learn import Flow, FlowLog, Watched, fetch_inventory, load_inventory, watch_inventory, write_flow_log
from netpol_learn import _cli as cli
from netpol_learn._inventory import _live, _watch
from netpol_learn._time import parse_time

PODS = KIND_PATHS["Pod"][0]
SLICES = KIND_PATHS["EndpointSlice"][0]
ROOT = Path(__file__).parent.parent


def cluster() -> list[dict]:
    web = {"app": "web", "pod-template-hash": "6d5f8b7c9"}
    return [
        k8s.namespace("shop"),
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.pod("web-6d5f8b7c9-aaaaa", "shop", "10.244.1.4", labels=web, owner=("ReplicaSet", "web-6d5f8b7c9"), ports=[("http", 8080, "TCP")]),
        k8s.pod("web-6d5f8b7c9-bbbbb", "shop", "10.244.1.5", labels=web, owner=("ReplicaSet", "web-6d5f8b7c9"), ports=[("http", 8080, "TCP")]),
        k8s.pod("db-0", "shop", "10.244.1.6", labels={"app": "db"}, owner=("StatefulSet", "db")),
        k8s.service("web", "shop", "10.96.100.10", selector={"app": "web"}),
        k8s.endpoint_slice("web", "shop", endpoints=[("10.244.1.4", "web-6d5f8b7c9-aaaaa", "node-a"),
                                                     ("10.244.1.5", "web-6d5f8b7c9-bbbbb", "node-a")]),
        k8s.replicaset("web-6d5f8b7c9", "shop", {"app": "web"}, owner=("Deployment", "web")),
        k8s.deployment("web", "shop"),
        k8s.statefulset("db", "shop"),
        k8s.cronjob("report", "shop"),
    ]


def web_pod(suffix: str, ip: str, **kw) -> dict:
    return k8s.pod(f"web-6d5f8b7c9-{suffix}", "shop", ip, labels={"app": "web", "pod-template-hash": "6d5f8b7c9"},
                   owner=("ReplicaSet", "web-6d5f8b7c9"), **kw)


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kind",
        "clusters": [{"name": "kind", "cluster": {"server": server}}],
        "users": [{"name": "kind", "user": {"token": "token-kind"}}],
        "contexts": [{"name": "kind", "context": {"cluster": "kind", "user": "kind"}}],
    }))
    return path


@pytest.fixture
def api(tmp_path):
    with WatchApiServer(cluster()) as server:
        server.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        yield server


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(_watch, "RETRY_FIRST", 0.05)


def wait(condition, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def all_watching(api: WatchApiServer) -> bool:
    return all(api.watching(path) for path, _ in KIND_PATHS.values())


def read(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=yaml.CSafeLoader)


def summary(entries: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in entries]


class Running:
    """``watch_inventory`` in a thread, writing ``out`` every 50 ms; ``stop()`` ends it."""

    def __init__(self, api: WatchApiServer, out: Path, **kw):
        self.api, self.out, self.kw = api, out, kw
        self.stop_event = threading.Event()
        self.warnings: list[str] = []
        self.info: list[str] = []
        self.result: Watched | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result = watch_inventory(self.out, self.api.kubeconfig, write_every=0.05, stop=self.stop_event,
                                          warn=self.warnings.append, info=self.info.append, **self.kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def __enter__(self):
        self.thread.start()
        wait(lambda: all_watching(self.api) and self.out.exists(), what="every kind watched")
        return self

    def __exit__(self, *exc):
        self.stop()

    def history(self) -> list[dict]:
        return read(self.out).get("history", [])

    def wait_for(self, count: int) -> list[dict]:
        return wait(lambda: len(h := self.history()) >= count and h, what=f"{count} history entries")

    def stop(self) -> Watched:
        self.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the watch did not stop"
        if self.error is not None:
            raise self.error
        return self.result


# --- what gets recorded ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["history.yaml", "history.json"])
def test_events_of_every_type_land_in_the_file_with_the_time_they_were_seen(api, tmp_path, name):
    out = tmp_path / name
    listed = fetch_inventory(api.kubeconfig)
    with Running(api, out) as run:
        before = time.time_ns()
        web_1 = api.get("Pod", "shop", "web-6d5f8b7c9-aaaaa")
        web_1["metadata"]["labels"]["version"] = "2"  # a field netpol-learn reads
        web_2 = api.get("Pod", "shop", "web-6d5f8b7c9-bbbbb")
        web_2["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}  # one it does not read
        with api.changed:  # one change set: the pods' watch sends them in this order
            api.add(web_pod("ccccc", "10.244.1.7"))
            api.modify(web_1, web_2)
            api.delete("Pod", "shop", "db-0")
        run.wait_for(3)
        deployment = api.get("Deployment", "shop", "web")
        deployment["status"] = {"replicas": 3, "readyReplicas": 2}  # status counts: not read
        web_slice = api.get("EndpointSlice", "shop", "web-x7k2p")
        web_slice["endpoints"] = web_slice["endpoints"][:1]
        api.modify(deployment)
        api.modify(web_slice)
        entries = run.wait_for(4)
        after = time.time_ns()
        result = run.stop()
    assert summary(entries) == [("ADDED", "Pod", "web-6d5f8b7c9-ccccc"), ("MODIFIED", "Pod", "web-6d5f8b7c9-aaaaa"),
                                ("DELETED", "Pod", "db-0"), ("MODIFIED", "EndpointSlice", "web-x7k2p")]
    times = [parse_time(e["time"]) for e in entries]
    assert before <= times[0] and times == sorted(set(times)) and times[-1] <= after
    assert all(list(e) == ["time", "type", "object"] for e in entries)  # no `since`: the watch never lost step
    assert all(list(e["object"])[:2] == ["apiVersion", "kind"] and "managedFields" not in e["object"]["metadata"] for e in entries)
    assert entries[1]["object"]["metadata"]["labels"]["version"] == "2"
    assert entries[3]["object"]["apiVersion"] == "discovery.k8s.io/v1" and len(entries[3]["object"]["endpoints"]) == 1
    assert result.events == {"ADDED": 1, "MODIFIED": 2, "DELETED": 1} and result.unchanged == 2 and result.relists == 0
    assert result.listed["Pod"] == 3 and result.objects == len(cluster())
    doc = read(out)
    meta = doc["metadata"]["annotations"]
    assert list(doc) == ["apiVersion", "kind", "metadata", "items", "history"]
    assert parse_time(meta["netpol-learn.io/snapshot-time"]) <= before
    assert times[-1] <= parse_time(meta["netpol-learn.io/watched-until"]) == result.until <= time.time_ns()
    # The snapshot is the listing, untouched by the events after it.
    assert doc["items"] == listed
    assert not run.warnings
    assert run.info[:2] == [f"listing 12 kinds from {api.url}", f"{len(cluster())} objects listed; watching 12 kinds, writing {out} every 0.05 s"]
    assert all(line.startswith("watching: ") and line.endswith(f" -> {out}") for line in run.info[2:])
    assert run.info[-1] == f"watching: 4 changes (1 ADDED, 2 MODIFIED, 1 DELETED); 2 MODIFIED left out, changing nothing read -> {out}"


def test_the_watches_start_from_the_lists_resource_version_and_ask_for_bookmarks(api, tmp_path):
    api.bookmark_every = 0.05
    with Running(api, tmp_path / "h.yaml"):
        listed = str(api.version)
        wait(lambda: len(api.watch_requests(PODS)) >= 1)
        api.add(k8s.namespace("other"))  # bumps the resourceVersion the pods' bookmarks then carry
        wait(lambda: api.watching(PODS) and time.sleep(0.2) is None)
        api.drop(PODS)  # the pods' watch resumes from the bookmark's version, not its own last event's
        wait(lambda: len(api.watch_requests(PODS)) >= 2 and api.watching(PODS))
    first, again = api.watch_requests(PODS)[:2]
    assert first["resourceVersion"] == listed
    assert first["allowWatchBookmarks"].lower() == "true" and first["timeoutSeconds"] == str(_watch.WATCH_SECONDS)
    assert int(again["resourceVersion"]) == api.version


def test_an_unchanged_modified_event_is_left_out():
    pod = k8s.pod("api-1", "shop", "10.244.1.9", labels={"app": "api"})
    kind = next(k for k in _live.KINDS if k.kind == "Pod")
    history = _watch.History(clock=iter(range(10**18, 10**19, 10**9)).__next__)
    history.start_kind(kind, [pod])
    noise = json.loads(json.dumps(pod))
    noise["metadata"].update(resourceVersion="99", annotations={"a": "b"}, managedFields=[{"manager": "kubelet"}])
    noise["status"]["containerStatuses"] = [{"name": "api", "ready": True, "restartCount": 0, "state": {"running": {}}}]
    assert not history.record(kind, "MODIFIED", noise)
    assert not history.record(kind, "ADDED", noise)  # replayed after a resume: nothing new
    moved = json.loads(json.dumps(noise))
    moved["status"]["podIPs"] = [{"ip": "10.244.1.10"}]
    assert history.record(kind, "MODIFIED", moved)
    assert history.record(kind, "DELETED", moved)
    assert history.counts == {"MODIFIED": 1, "DELETED": 1} and history.unchanged == 2


# --- resuming -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["compacted", "410 status"])
def test_an_expired_resource_version_lists_again_and_records_what_changed_meanwhile(api, tmp_path, how):
    out = tmp_path / "h.yaml"
    with Running(api, out) as run:
        api.hold(PODS)  # the pods' watch hears nothing of what follows
        time.sleep(0.05)
        made = time.time_ns()
        web_1 = api.get("Pod", "shop", "web-6d5f8b7c9-aaaaa")
        web_1["status"]["phase"] = "Failed"
        old = api.version
        api.modify(web_1)
        api.delete("Pod", "shop", "web-6d5f8b7c9-bbbbb")
        api.add(web_pod("ddddd", "10.244.1.8"))
        if how == "compacted":
            api.compact()  # the watch's version is gone: its next request gets a 410 ERROR event
        else:
            api.faults[PODS].append("410")  # ... or an HTTP 410 answer
        api.drop(PODS)
        api.release(PODS)
        entries = run.wait_for(3)
        api.delete("Pod", "shop", "web-6d5f8b7c9-ddddd")  # heard by the watch that starts from the new list
        entries = run.wait_for(4)
        time.sleep(0.2)
        result = run.stop()
    entries = read(out)["history"]
    assert summary(entries) == [("MODIFIED", "Pod", "web-6d5f8b7c9-aaaaa"), ("DELETED", "Pod", "web-6d5f8b7c9-bbbbb"),
                                ("ADDED", "Pod", "web-6d5f8b7c9-ddddd"), ("DELETED", "Pod", "web-6d5f8b7c9-ddddd")]
    relisted, live = entries[:3], entries[3]
    # The relist's changes happened while the watch was blind: after `since`, by `time`.
    assert all(parse_time(e["since"]) <= made <= parse_time(e["time"]) for e in relisted)
    assert len({e["since"] for e in relisted}) == 1 and "since" not in live
    assert relisted[0]["object"]["status"]["phase"] == "Failed"
    assert relisted[1]["object"]["metadata"]["name"] == "web-6d5f8b7c9-bbbbb"  # the last version the watch knew
    assert result.relists == 1
    gone = ("HTTP 410 Expired: too old resource version: " if how == "compacted" else "HTTP 410 Gone: too old resource version")
    assert len(run.warnings) == 2, run.warnings
    assert run.warnings[0] == f"watch of pods: connection lost (Response ended prematurely); resuming from resourceVersion {old}, with backoff"
    assert run.warnings[1].startswith(f"watch of pods: resourceVersion {old} is too old ({gone}")
    assert run.warnings[1].endswith("); listed it again: 1 added, 1 modified, 1 deleted")
    # Nothing lost: every pod that ever was is in the inventory, with its tenure.
    inv = load_inventory([out])
    pods = {p.name: p for p in inv.pods}
    assert set(pods) == {"web-6d5f8b7c9-aaaaa", "web-6d5f8b7c9-bbbbb", "db-0", "web-6d5f8b7c9-ddddd"}
    bbbbb = pods["web-6d5f8b7c9-bbbbb"]
    assert (bbbbb.end, bbbbb.end_by) == (parse_time(relisted[1]["since"]), parse_time(relisted[1]["time"]))
    assert pods["web-6d5f8b7c9-ddddd"].end == parse_time(live["time"]) and pods["web-6d5f8b7c9-ddddd"].end_by is None


def test_a_dropped_connection_resumes_from_the_last_resource_version_without_duplicates(api, tmp_path):
    out = tmp_path / "h.yaml"
    with Running(api, out) as run:
        api.drop(PODS, after=1)  # the pods' watch breaks off after sending one more event
        versions = api.add(web_pod("eeeee", "10.244.1.11"), web_pod("fffff", "10.244.1.12"), web_pod("ggggg", "10.244.1.13"))
        run.wait_for(3)
        time.sleep(0.3)  # room for a duplicate to arrive
        run.stop()
    entries = read(out)["history"]
    assert summary(entries) == [("ADDED", "Pod", f"web-6d5f8b7c9-{s}") for s in ("eeeee", "fffff", "ggggg")]
    assert [e["object"]["metadata"]["resourceVersion"] for e in entries] == [str(v) for v in versions]
    watches = api.watch_requests(PODS)
    assert watches[1]["resourceVersion"] == str(versions[0])  # resumed right after the last event it had
    assert run.warnings == [f"watch of pods: connection lost (Response ended prematurely); resuming from resourceVersion {versions[0]}, with backoff"]
    # What the resumed watch replayed may have happened while it was away: after `since`.
    assert "since" not in entries[0] and entries[1]["since"] == entries[2]["since"]
    assert parse_time(entries[0]["time"]) <= parse_time(entries[1]["since"]) <= parse_time(entries[1]["time"])


def test_api_errors_are_retried_with_backoff_and_one_warning_each(api, tmp_path):
    out = tmp_path / "h.yaml"
    with Running(api, out) as run:
        api.faults[PODS] += ["500", "500", "500"]
        version = api.version
        api.drop(PODS)
        wait(lambda: len(api.watch_requests(PODS)) >= 5 and api.watching(PODS), what="the pods watched again")
        api.add(web_pod("hhhhh", "10.244.1.14"))
        entries = run.wait_for(1)
        run.stop()
    assert summary(entries) == [("ADDED", "Pod", "web-6d5f8b7c9-hhhhh")]
    assert [q["resourceVersion"] for q in api.watch_requests(PODS)[1:5]] == [str(version)] * 4
    assert run.warnings == [
        f"watch of pods: connection lost (Response ended prematurely); resuming from resourceVersion {version}, with backoff",
        f"watch of pods: HTTP 500 Internal Server Error: etcdserver: request timed out; resuming from resourceVersion {version}, with backoff",
    ]  # the same 500 three times is said once


def test_the_file_is_written_whole_every_interval(api, tmp_path):
    out = tmp_path / "h.json"
    seen = set()
    with Running(api, out):
        for n in range(30):
            api.add(web_pod(f"n{n:04d}", f"10.244.2.{n + 1}"))
            doc = read(out)  # every read is a whole file (json.loads fails on half of one)
            seen.add(len(doc["history"]))
            time.sleep(0.01)
    assert len(seen) > 3  # it was rewritten as the history grew
    assert len(read(out)["history"]) == 30
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


# --- the file's format ----------------------------------------------------------------------


def test_same_events_give_the_same_bytes_and_the_pieces_are_one_dump():
    kind = next(k for k in _live.KINDS if k.kind == "Pod")
    pods = [k8s.pod(f"p{i}", "shop", f"10.244.1.{i}", labels={"app": "p"}) for i in range(3)]
    outputs = {}
    for fmt in ("yaml", "json", "yaml"):
        history = _watch.History(fmt, clock=iter(range(1_750_000_000_000_000_000, 10**19, 1_500_000)).__next__)
        history.start_kind(kind, pods[:2])
        history.record(kind, "ADDED", pods[2])
        history.record(kind, "DELETED", pods[0])
        history.relist(kind, [pods[2]], since=1_750_000_000_000_000_000)
        pieces = history.document("2025-06-01T10:00:00.000000Z", [_live.dump_piece(p, fmt) for p in pods[:2]])
        text = "".join(pieces)
        # One clock reading per event (1.5 ms apart), one for the document's watched-until.
        doc = {"apiVersion": "v1", "kind": "List",
               "metadata": {"annotations": {"netpol-learn.io/snapshot-time": "2025-06-01T10:00:00.000000Z",
                                            "netpol-learn.io/watched-until": "2025-06-15T15:06:40.004500Z"}, "resourceVersion": ""},
               "items": pods[:2],
               "history": [
                   {"time": "2025-06-15T15:06:40.000000Z", "type": "ADDED", "object": pods[2]},
                   {"time": "2025-06-15T15:06:40.001500Z", "type": "DELETED", "object": pods[0]},
                   {"time": "2025-06-15T15:06:40.003000Z", "type": "DELETED", "since": "2025-06-15T15:06:40.000000Z", "object": pods[1]},
               ]}
        if fmt == "json":
            assert json.loads(text) == doc
            assert text.count("\n") == 2 + 2 + 3 + 1  # the head, then one line per item and entry
        else:
            assert text == yaml.dump(doc, Dumper=_live._Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
            assert outputs.setdefault(fmt, text) == text  # the same events, the same bytes


def test_written_file_reads_back_with_load_inventory_and_resolve(api, tmp_path):
    out = tmp_path / "history.yaml"
    with Running(api, out) as run:
        api.delete("Pod", "shop", "web-6d5f8b7c9-aaaaa")
        run.wait_for(1)
        time.sleep(0.01)
        api.add(web_pod("iiiii", "10.244.1.4"))  # its address, taken over
        entries = run.wait_for(2)
        run.stop()
    deleted, added = (parse_time(e["time"]) for e in entries)
    inv = load_inventory([out])
    pods = {p.name: p for p in inv.pods}
    old, new = pods["web-6d5f8b7c9-aaaaa"], pods["web-6d5f8b7c9-iiiii"]
    assert (old.end, old.end_by) == (deleted, None)
    assert old.ips == new.ips == ("10.244.1.4",) and new.end is None
    (start, until), = inv.watched
    assert start == inv.snapshots[0] and until >= added
    assert inv.workload_of[("shop", "web-6d5f8b7c9-iiiii")] == "Deployment/web"
    flows = tmp_path / "flows.jsonl"
    client = "10.244.1.6"  # db-0
    write_flow_log(FlowLog(flows=(Flow(client, "10.244.1.4", "TCP", 8080, 10, 1000, 1, start, start + 10**6, (("syn", 1),)),)), flows)
    result = CliRunner().invoke(cli.main, ["resolve", "--flows", str(flows), "--inventory", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "web-6d5f8b7c9-aaaaa" in result.stdout


# --- the command ----------------------------------------------------------------------------


def _child(args, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return subprocess.Popen([sys.executable, "-m", "netpol_learn", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT, **kw)


def test_for_ends_by_itself_with_exit_0(api, tmp_path):
    out = tmp_path / "history.yaml"
    began = time.monotonic()
    child = _child(["inventory", "--kubeconfig", api.kubeconfig, "--watch", "--for", "2s", "--write-every", "1s", "-o", out])
    stdout, stderr = child.communicate(timeout=30)
    took = time.monotonic() - began
    assert child.returncode == 0, stderr
    assert 2 <= took < 15
    lines = stderr.splitlines()
    assert lines[:2] == [f"listing 12 kinds from {api.url}", f"{len(cluster())} objects listed; watching 12 kinds, writing {out} every 1 s"]
    assert lines[-1].startswith(f"{len(cluster())} objects (1 Namespace, 1 Node, 3 Pod, 1 Service, 1 EndpointSlice, 0 Endpoints, ")
    assert lines[-1].endswith(f", watched 2s: 0 changes (0 ADDED, 0 MODIFIED, 0 DELETED) -> {out}")
    assert len(lines) == 3 and stdout == ""
    inv = load_inventory([out])
    (start, until), = inv.watched
    assert 2 * 10**9 <= until - start < 4 * 10**9


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_the_file_whole_and_exits_0(api, tmp_path, signum):
    out = tmp_path / "history.json"
    child = _child(["inventory", "--kubeconfig", api.kubeconfig, "--watch", "--write-every", "1s", "-o", out])
    try:
        wait(lambda: all_watching(api) and out.exists(), 30, "the child watching")
        api.delete("Pod", "shop", "db-0")
        wait(lambda: read(out)["history"], 10, "the deletion written")
        api.add(web_pod("jjjjj", "10.244.1.20"))  # after the last periodic write: the last write has it
        wait(lambda: api.watching(PODS) and time.sleep(0.3) is None)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr and stderr.splitlines()[-1].endswith(f"2 changes (1 ADDED, 0 MODIFIED, 1 DELETED) -> {out}")
    doc = read(out)
    assert summary(doc["history"]) == [("DELETED", "Pod", "db-0"), ("ADDED", "Pod", "web-6d5f8b7c9-jjjjj")]
    assert parse_time(doc["metadata"]["annotations"]["netpol-learn.io/watched-until"]) >= parse_time(doc["history"][-1]["time"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(("args", "line"), [
    (["--watch", "--for", "banana"], "error: netpol-learn inventory: Invalid value for '--for': 'banana' is not a duration such as 30s, 15m, 24h or 7d"),
    (["--watch", "--for", "0s"], "error: netpol-learn inventory: Invalid value for '--for': must be at least 1s"),
    (["--watch", "--write-every", "soon"], "error: netpol-learn inventory: Invalid value for '--write-every': 'soon' is not a duration such as 30s, 15m, 24h or 7d"),
    (["--for", "2s"], "error: netpol-learn inventory: --for and --write-every need --watch"),
    (["--watch", "-o", "-"], "error: netpol-learn inventory: --watch writes its file again and again: give -o FILE"),
])
def test_bad_durations_and_misuse_are_usage_errors(api, tmp_path, args, line):
    args = ["-o", str(tmp_path / "h.yaml"), *args] if "-o" not in args else args
    result = CliRunner().invoke(cli.main, ["inventory", "--kubeconfig", str(api.kubeconfig), *args], prog_name="netpol-learn")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line + " (see netpol-learn inventory --help)"]
    assert not (tmp_path / "h.yaml").exists() and api.requests == []
