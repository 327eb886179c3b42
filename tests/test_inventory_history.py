"""Loading watch histories (``netpol-learn inventory --watch``) and several snapshots: when each pod
held its address, EndpointSlice (and Endpoints) versions with the times they were in force, pods
known only from a history with their owners, and strict checks of every history entry.

Times are seconds after ``k8s.BASE``; files are written as ``netpol-learn inventory --watch``
writes them (a List with ``history``, ``snapshot-time`` and ``watched-until``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from netpol_learn import InventoryError, load_inventory, write_flow_log
from netpol_learn import _cli as cli
from netpol_learn._inventory import EndpointSlice
from netpol_learn._time import format_time

at, ns = k8s.at, k8s.ns


def entry(t: float, event: str, obj: dict, since: float | None = None) -> dict:
    e = {"time": format_time(ns(t)), "type": event}
    if since is not None:
        e["since"] = format_time(ns(since))
    e["object"] = obj
    return e


def write_history(directory: Path, items: list[dict], history: list[dict], *, snapshot_time: float, until: float,
                  name: str = "history.yaml") -> Path:
    doc = k8s.kube_list(items)
    doc["metadata"]["annotations"] = {"netpol-learn.io/snapshot-time": format_time(ns(snapshot_time)),
                                      "netpol-learn.io/watched-until": format_time(ns(until))}
    doc["history"] = history
    path = Path(directory) / name
    if name.endswith(".json"):
        path.write_text(json.dumps(doc), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def base() -> list[dict]:
    return [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2", "10.244.1.0/24")]


def changed(obj: dict, **status) -> dict:
    out = json.loads(json.dumps(obj))
    out["status"].update(status)
    return out


def pods_of(inv) -> dict:
    return {p.name: p for p in inv.pods}


def slices_of(inv, name: str) -> list[tuple]:
    return [(s.start, s.end, tuple(e.address for e in s.endpoints)) for s in inv.endpoint_slices if s.name == name]


# --- pods --------------------------------------------------------------------------------------


def test_a_cronjob_pod_seen_only_in_the_history_is_there_with_its_owners(tmp_path):
    """A CronJob's run between two snapshots: its Job and pod were created and deleted in between."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    cron = k8s.cronjob("report", "shop")
    before = k8s.write_list(tmp_path / "a", [*base(), cron], snapshot_time=100)
    after = k8s.write_list(tmp_path / "b", [*base(), cron], snapshot_time=500)
    job = k8s.job("report-29000000", "shop", owner=("CronJob", "report"))
    run = k8s.pod("report-29000000-x2x9k", "shop", "10.244.1.30", labels=k8s.job_labels("report-29000000", "shop"),
                  owner=("Job", "report-29000000"), start=260)
    done = changed(run, phase="Succeeded", containerStatuses=[{"name": "report", "state": {"terminated": {"finishedAt": at(300)}}}])
    history = write_history(tmp_path, [*base(), cron], [
        entry(250, "ADDED", job), entry(260.5, "ADDED", run), entry(301, "MODIFIED", done),
        entry(320, "DELETED", done), entry(330, "DELETED", job),
    ], snapshot_time=200, until=400)
    inv = load_inventory([after, history, before])
    pod = pods_of(inv)["report-29000000-x2x9k"]
    assert pod.ips == ("10.244.1.30",) and pod.owner == ("Job", "report-29000000")
    assert (pod.start, pod.end, pod.end_by) == (ns(260), ns(300), None)  # it finished before it was deleted
    assert inv.workload_of[("shop", "report-29000000-x2x9k")] == "CronJob/report"
    workload = next(w for w in inv.workloads if w.name == "report")
    assert workload.kind == "CronJob" and workload.inferred is None  # the Job object came from the history
    assert inv.snapshots == (ns(100), ns(200), ns(500)) and inv.watched == ((ns(200), ns(400)),)


def test_a_deleted_event_ends_the_tenure_exactly(tmp_path):
    web = k8s.pod("web-1", "shop", "10.244.1.4", labels={"app": "web"}, start=10)
    stuck = k8s.pod("web-2", "shop", "10.244.1.5", labels={"app": "web"}, start=10)
    terminating = json.loads(json.dumps(stuck))
    terminating["metadata"]["deletionTimestamp"] = at(330)  # asked at 300 with 30 s of grace
    history = write_history(tmp_path, [*base(), web, stuck], [
        entry(150, "DELETED", web), entry(300, "MODIFIED", terminating), entry(312.5, "DELETED", terminating),
    ], snapshot_time=100, until=400)
    pods = pods_of(load_inventory([history]))
    assert (pods["web-1"].end, pods["web-1"].end_by) == (ns(150), None)
    assert (pods["web-2"].end, pods["web-2"].end_by) == (ns(312.5), None)  # gone before its grace period ended


def test_a_deletion_the_watch_may_have_heard_late_is_bounded_by_since(tmp_path):
    web = k8s.pod("web-1", "shop", "10.244.1.4", labels={"app": "web"}, start=10)
    history = write_history(tmp_path, [*base(), web], [entry(180, "DELETED", web, since=120)], snapshot_time=100, until=400)
    pod = pods_of(load_inventory([history]))["web-1"]
    assert (pod.end, pod.end_by) == (ns(120), ns(180))


def test_a_pod_still_there_when_the_history_ends_held_its_address_until_then(tmp_path):
    web = k8s.pod("web-1", "shop", "10.244.1.4", labels={"app": "web"}, start=10)
    history = write_history(tmp_path, [*base(), web], [], snapshot_time=100, until=250)
    (tmp_path / "later").mkdir()
    # A later snapshot that lists pods (another one), not this one.
    later = k8s.write_list(tmp_path / "later", [*base(), k8s.pod("db-0", "shop", "10.244.1.6", start=300)], snapshot_time=400)
    pod = pods_of(load_inventory([history, later]))["web-1"]
    assert (pod.end, pod.end_by) == (ns(250), ns(400))
    assert pods_of(load_inventory([history]))["web-1"].end is None  # without the later snapshot: still there


def test_end_by_is_the_next_snapshot_or_the_start_of_the_next_holder(tmp_path):
    for d in ("a", "b", "c"):
        (tmp_path / d).mkdir()
    old = k8s.pod("old", "shop", "10.244.1.50", labels={"app": "old"}, start=0)
    other = k8s.pod("other", "shop", "10.244.1.51", labels={"app": "other"}, start=0)
    first = k8s.write_list(tmp_path / "a", [*base(), old, other], snapshot_time=100)
    # Not the next holder: another address, and a pod of the same address that started before `old` was last seen.
    second = k8s.write_list(tmp_path / "b", [*base(), k8s.pod("near", "shop", "10.244.1.52", labels={"app": "n"}, start=150),
                                             k8s.pod("early", "shop", "10.244.1.51", labels={"app": "e"}, start=50)], snapshot_time=300)
    pods = pods_of(load_inventory([first, second]))
    assert (pods["old"].end, pods["old"].end_by) == (ns(100), ns(300))  # shown at 100, gone by 300
    assert (pods["other"].end, pods["other"].end_by) == (ns(100), ns(300))
    new = k8s.pod("new", "shop", "10.244.1.50", labels={"app": "new"}, start=200)
    third = k8s.write_list(tmp_path / "c", [*base(), new], snapshot_time=300)
    pods = pods_of(load_inventory([first, third]))
    assert (pods["old"].end, pods["old"].end_by) == (ns(100), ns(200))  # `new` had the address from 200
    assert (pods["new"].end, pods["new"].end_by) == (None, None)


def test_a_history_covering_the_gap_makes_the_end_exact(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    old = k8s.pod("old", "shop", "10.244.1.50", labels={"app": "old"}, start=0)
    first = k8s.write_list(tmp_path / "a", [*base(), old], snapshot_time=100)
    second = k8s.write_list(tmp_path / "b", [*base()], snapshot_time=300)
    history = write_history(tmp_path, [*base(), old], [entry(222, "DELETED", old)], snapshot_time=110, until=290)
    pod = pods_of(load_inventory([first, second, history]))["old"]
    assert (pod.end, pod.end_by) == (ns(222), None)


def test_a_pod_created_and_gone_between_snapshots_without_a_history_is_unknown(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = k8s.write_list(tmp_path / "a", [*base()], snapshot_time=100)
    second = k8s.write_list(tmp_path / "b", [*base()], snapshot_time=300)
    assert load_inventory([first, second]).pods == ()


def test_loading_is_the_same_in_any_order_of_files(tmp_path):
    (tmp_path / "a").mkdir()
    web = k8s.pod("web-1", "shop", "10.244.1.4", labels={"app": "web"}, start=10)
    first = k8s.write_list(tmp_path / "a", [*base(), web, k8s.endpoint_slice("web", "shop", endpoints=[("10.244.1.4", "web-1", None)])],
                           snapshot_time=50)
    history = write_history(tmp_path, [*base(), web], [entry(150, "DELETED", web)], snapshot_time=100, until=400, name="h.json")
    assert load_inventory([first, history]) == load_inventory([history, first])


# --- EndpointSlices and Endpoints -------------------------------------------------------------


def _slice(*addresses: str, name: str = "web-x7k2p", **kw) -> dict:
    return k8s.endpoint_slice("web", "shop", endpoints=[(a, None, None) for a in addresses], name=name, **kw)


def test_endpoint_slice_versions_from_the_events(tmp_path):
    relabelled = _slice("10.244.1.4", "10.244.1.5")
    relabelled["metadata"]["labels"]["team"] = "shop"  # not a change of what resolution reads
    history = write_history(tmp_path, [*base(), _slice("10.244.1.4")], [
        entry(150, "ADDED", _slice("10.244.1.9", name="web-new")),
        entry(200, "MODIFIED", _slice("10.244.1.4", "10.244.1.5")),
        entry(250, "MODIFIED", relabelled),
        entry(300, "MODIFIED", _slice("10.244.1.5"), since=280),
        entry(400, "DELETED", _slice("10.244.1.5")),
    ], snapshot_time=100, until=500)
    inv = load_inventory([history])
    assert slices_of(inv, "web-x7k2p") == [
        (None, ns(200), ("10.244.1.4",)),  # the snapshot's version stands for the time before it too
        (ns(200), ns(300), ("10.244.1.4", "10.244.1.5")),
        (ns(280), ns(400), ("10.244.1.5",)),  # changed some time after 280: both versions cover 280-300
    ]
    assert slices_of(inv, "web-new") == [(ns(150), None, ("10.244.1.9",))]
    assert all(isinstance(s, EndpointSlice) and s.service == "web" for s in inv.endpoint_slices)


def test_endpoint_slice_versions_from_snapshots(tmp_path):
    paths = []
    for t, addresses in ((100, ("10.244.1.4",)), (200, ("10.244.1.4",)), (300, ("10.244.1.5",)), (400, ())):
        (tmp_path / str(t)).mkdir()
        items = [*base(), _slice(*addresses) if addresses else _slice("10.244.1.9", name="other-slice"),
                 k8s.endpoints("legacy", "shop", addresses=[(a, None, None) for a in addresses])]
        paths.append(k8s.write_list(tmp_path / str(t), items, snapshot_time=t))
    inv = load_inventory(paths)
    # Between two snapshots that differ the change time is unknown: the versions on either side both cover it.
    assert slices_of(inv, "web-x7k2p") == [(None, ns(300), ("10.244.1.4",)), (ns(200), ns(400), ("10.244.1.5",))]
    legacy = [(s.start, s.end, tuple(e.address for e in s.endpoints)) for s in inv.endpoint_slices if s.service == "legacy"]
    assert legacy == [(None, ns(300), ("10.244.1.4",)), (ns(200), ns(400), ("10.244.1.5",)), (ns(300), None, ())]


def test_one_snapshot_gives_one_version_in_force_throughout(tmp_path):
    inv = load_inventory([k8s.write_list(tmp_path, [*base(), _slice("10.244.1.4")], snapshot_time=100)])
    assert slices_of(inv, "web-x7k2p") == [(None, None, ("10.244.1.4",))]


# --- strictness ---------------------------------------------------------------------------------

GOOD = k8s.pod("web-1", "shop", "10.244.1.4", labels={"app": "web"})


def _bad_pod() -> dict:
    bad = json.loads(json.dumps(GOOD))
    bad["status"]["podIP"] = "10.244.1.999"
    return bad


@pytest.mark.parametrize(("history", "problem"), [
    ({"web": 1}, "history: not a list"),
    ([entry(1, "ADDED", GOOD), "ADDED"], "history[1]: not a mapping (a str)"),
    ([{"type": "ADDED", "object": GOOD}], "history[0].time: missing"),
    ([{**entry(1, "ADDED", GOOD), "time": "yesterday"}], "history[0].time: 'yesterday' is not an RFC 3339 time such as 2026-02-10T09:40:00.123456Z"),
    ([{**entry(1, "ADDED", GOOD), "since": 12}], "history[0].since: 12 is not an RFC 3339 time such as 2026-02-10T09:40:00.123456Z"),
    ([entry(1, "ADDED", GOOD, since=5)], "history[0].since: later than its time"),
    ([entry(1, "ADDED", GOOD), {**entry(2, "ADDED", GOOD), "type": "BOOKMARK"}], "history[1].type: 'BOOKMARK' is not ADDED, MODIFIED or DELETED"),
    ([{"time": format_time(ns(1)), "object": GOOD}], "history[0].type: missing"),
    ([{**entry(1, "ADDED", GOOD), "object": ["web-1"]}], "history[0].object: not a mapping (a list)"),
    ([{"time": format_time(ns(1)), "type": "ADDED"}], "history[0].object: missing"),
    ([entry(1, "ADDED", {"metadata": {"name": "web-1"}})], "history[0].object: not a Kubernetes object (no kind and metadata)"),
    ([entry(1, "ADDED", GOOD), entry(2, "MODIFIED", _bad_pod())], "history[1].object: Pod shop/web-1: status.podIP: '10.244.1.999' is not an IP address"),
])
def test_a_malformed_history_entry_is_one_line_naming_the_file_the_entry_and_the_field(tmp_path, history, problem):
    path = write_history(tmp_path, [*base()], [], snapshot_time=0, until=10)
    doc = yaml.safe_load(path.read_text())
    doc["history"] = history
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InventoryError) as caught:
        load_inventory([path])
    assert str(caught.value) == f"{path}: {problem}"
    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(k8s.flow("10.244.1.4", "10.244.1.5", 80)), flows)
    result = CliRunner().invoke(cli.main, ["resolve", "--flows", str(flows), "--inventory", str(path)])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {path}: {problem}"]


def test_a_bad_watched_until_is_an_error(tmp_path):
    path = write_history(tmp_path, [*base()], [], snapshot_time=0, until=10)
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["annotations"]["netpol-learn.io/watched-until"] = "soon"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InventoryError, match=r"metadata\.annotations\['netpol-learn.io/watched-until'\]: 'soon' is not an RFC 3339 time$"):
        load_inventory([path])


def test_a_history_time_yaml_read_as_a_timestamp_is_accepted(tmp_path):
    path = write_history(tmp_path, [*base(), GOOD], [], snapshot_time=0, until=10)
    text = path.read_text().replace("history: []", f"history:\n- time: {at(5)}\n  type: DELETED\n  object:\n" +
                                    "".join("    " + line + "\n" for line in yaml.safe_dump(GOOD).splitlines()))
    path.write_text(text)  # an unquoted time: YAML makes a datetime of it
    assert pods_of(load_inventory([path]))["web-1"].end == ns(5)
