"""Smaller things a new user ran into: the progress bar, counts and plurals, one-line usage
errors, and two details of diff (observed traffic inside a wider block; a change on every port)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netpol_learn._cli import main
from test_verify_diff import API, DB, DB_INGRESS, drop_api_external_egress, edit, named, run, setup, write_policy  # noqa: F401 (setup: a fixture)

ROOT = Path(__file__).parent.parent
GUESTBOOK = ROOT / "captures" / "guestbook"


def test_the_progress_bar_counts_a_path_given_twice_twice_and_never_goes_back(monkeypatch):
    import rich.progress

    from netpol_learn import _cli as cli
    from netpol_learn._capture import capture_files

    shown: list[tuple[float, float]] = []
    real_update = rich.progress.Progress.update

    def update(self, task_id, **kw):
        real_update(self, task_id, **kw)
        task = self._tasks[task_id]
        shown.append((task.completed, task.total))

    monkeypatch.setattr(rich.progress.Progress, "update", update)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    paths = [GUESTBOOK / "capture.pcap", Path(str(GUESTBOOK / "capture.pcap"))]  # one path, given twice
    with cli._progress(paths) as report:
        assert report is not None
        capture_files(paths, progress=report)
    size = paths[0].stat().st_size
    assert shown, "no progress shown"
    assert all(total == 2 * size for _, total in shown)
    done = [completed for completed, _ in shown]
    assert done == sorted(done), f"the bar went back: {done}"
    assert done[-1] == 2 * size


def test_counts_and_plurals(tmp_path):
    r = CliRunner().invoke(main, ["learn", str(GUESTBOOK / "capture.pcap"), "--inventory", str(GUESTBOOK / "inventory.yaml"), "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.stderr
    summary = r.stderr.strip().splitlines()[-1]
    assert summary.startswith("8 flows -> 3 workload policies in 1 namespace -> ")
    # the namespace header counts each flow once, even when both of its ends are in the namespace
    header = (tmp_path / "p" / "guestbook.yaml").read_text().splitlines()[1]
    assert header == "# 8 observed flows involve this namespace's workloads. Regenerate rather than edit."
    report = (tmp_path / "p" / "REPORT.md").read_text()
    assert "- 8 observed flows from " in report and "- 3 workload policies in 1 namespace" in report


def test_one_workload_policy_is_singular(tmp_path):
    from netpol_learn._verify import VerifyResult, verify_text

    import k8s
    from netpol_learn._flowlog import write_flow_log

    items = [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"),
             k8s.pod("a", "shop", "10.244.0.10", labels={"app": "a"}), k8s.pod("b", "shop", "10.244.0.20", labels={"app": "b"}, ports=[("http", 8080, "TCP")])]
    inventory = k8s.write_list(tmp_path, items)
    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(k8s.flow("10.244.0.10", "10.244.0.20", 8080)), flows)
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "--default-deny", "ingress", "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.stderr
    assert r.stderr.startswith("1 flow -> 1 workload policy in 1 namespace -> "), r.stderr
    assert "# 1 observed flow involves this namespace's workloads." in (tmp_path / "p" / "shop.yaml").read_text()
    assert verify_text(VerifyResult((), 2, ())) == "Both observed connections are allowed.\n"
    assert verify_text(VerifyResult((), 1, ())) == "The one observed connection is allowed.\n"
    assert verify_text(VerifyResult((), 7, ())) == "All 7 observed connections are allowed.\n"


@pytest.mark.parametrize("args", [
    ["capture", str(ROOT / "captures")],  # a directory given as a capture
    ["capture"],  # a missing argument
    ["generate", "--flows", "x.jsonl"],  # missing options
    ["capture", "--no-such-option", "x"],
    ["no-such-command"],
])
def test_usage_errors_are_one_line(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert "Usage:" not in r.stderr and "Traceback" not in r.stderr


@named("api")
def widen_to_a_block(spec):
    for rule in spec["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                peer["ipBlock"] = {"cidr": "140.82.112.0/24"}


def test_diff_marks_observed_traffic_inside_a_wider_block(setup, tmp_path):  # noqa: F811
    """BASE allows api -> 140.82.112.0/24:443, NEW nothing outside; api was seen calling
    140.82.112.3:443, inside the block: the removed row is observed traffic."""
    inventory, flows, policies = setup
    base = edit(policies, tmp_path / "base", widen_to_a_block)
    new = edit(policies, tmp_path / "new", drop_api_external_egress)
    r = run("diff", base, new, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 1, r.stderr
    removed = json.loads(r.stdout)["removed"]
    rows = [(c["client"], c["server"], c["protocol"], c["port"], c["observed"]) for c in removed]
    assert rows == [(API, "outside 140.82.112.0/24", "TCP", 443, True)], rows


def test_diff_says_any_port_when_a_change_is_on_every_port(setup, tmp_path):  # noqa: F811
    inventory, _, _ = setup
    base = write_policy(tmp_path / "base", {**DB_INGRESS, "ingress": [{"ports": [{"port": 443}]}]})
    new = write_policy(tmp_path / "new", {**DB_INGRESS, "ingress": [{"ports": [{"port": 443}, {"protocol": "SCTP"}]}]})
    r = run("diff", base, new, "--inventory", inventory, "--format", "json")
    got = json.loads(r.stdout)
    assert got["added"] and all(c["port"] is None and c["protocol"] == "SCTP" and c["server"] == DB for c in got["added"]), got
    assert len({c["client"] for c in got["added"]}) == len(got["added"])  # one row per client, not one per probed port
    text = run("diff", base, new, "--inventory", inventory).stdout
    assert f"-> {DB} SCTP any port" in text, text
    md = run("diff", base, new, "--inventory", inventory, "--format", "markdown").stdout
    assert f"| {DB} | SCTP any port |" in md
