"""The command line: help texts, error lines, exit codes, atomic output, progress on a terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netpol_learn._cli import main
from terminal import run_on_terminal

REAL = Path(__file__).parent.parent / "captures" / "real"


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_with_an_example(command):
    result = run([command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "netpol-learn " + command in result.output


def test_bad_flow_log_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "flow"}\n')
    result = run(["merge", bad, "-o", tmp_path / "out.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad}: not a netpol-learn flow log (no header line)"]
    assert not (tmp_path / "out.jsonl").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run(["--debug", "capture", tmp_path / "missing.pcap", "-o", tmp_path / "o.jsonl"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and result.stderr.strip().endswith("missing.pcap: no such file")


def test_failed_run_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "flows.jsonl"
    out.write_text("keep me\n")
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    result = run(["capture", text, "-o", out])
    assert result.exit_code == 2
    assert out.read_text() == "keep me\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_output_to_stdout_and_merge_of_a_log_with_itself(tmp_path):
    result = run(["capture", REAL / "antrea-syn-egress.pcapng"])
    assert result.exit_code == 0
    log = tmp_path / "a.jsonl"
    log.write_text(result.stdout)
    merged = run(["merge", log, log])
    assert merged.exit_code == 0
    flow = [line for line in merged.stdout.splitlines() if '"kind": "flow"' in line]
    assert len(flow) == 1 and '"packets": 10' in flow[0] and '"connections": 10' in flow[0]


def test_module_entry_point_and_progress_bar_on_a_terminal(tmp_path):
    code, shown = run_on_terminal(
        [sys.executable, "-m", "netpol_learn", "capture", str(REAL / "kind-antrea-node-any.pcap"), "-o", str(tmp_path / "f.jsonl")]
    )
    assert code == 0
    assert b"reading captures" in shown and b"-> 6 flows" in shown
    # Not on a terminal: no progress bar, just the summary line.
    quiet = subprocess.run(
        [sys.executable, "-m", "netpol_learn", "capture", str(REAL / "kind-antrea-node-any.pcap"), "-o", str(tmp_path / "g.jsonl")],
        capture_output=True, timeout=120,
    )
    assert quiet.stderr.decode().splitlines() == [f"1290 packets, 24 duplicates -> 6 flows, 0 DNS names -> {tmp_path / 'g.jsonl'}"]
    assert (tmp_path / "f.jsonl").read_bytes() == (tmp_path / "g.jsonl").read_bytes()


KIND = Path(__file__).parent.parent / "captures" / "kind"


def test_resolve_prints_the_report_and_json(tmp_path):
    flows = tmp_path / "flows.jsonl"
    assert run(["capture", REAL / "kind-antrea-node-any.pcap", "-o", flows]).exit_code == 0
    text = run(["resolve", "--flows", flows, "--inventory", KIND / "inventory.yaml"])
    assert text.exit_code == 0
    assert "  node -> service-endpoint  1\n" in text.stdout and "Unresolved addresses: none" in text.stdout
    out = tmp_path / "resolved.json"
    result = run(["resolve", "--flows", flows, "--inventory", KIND / "inventory.yaml", "--format", "json", "-o", out])
    assert result.exit_code == 0
    import json

    data = json.loads(out.read_text())
    api = [c for c in data["connections"] if c["server"]["kind"] == "service-endpoint"]
    assert [(c["server"]["service"], c["port"], c["via"]) for c in api] == [("default/kubernetes", 6443, "default/kubernetes:443")]


def test_resolve_with_a_bad_inventory_is_one_line(tmp_path):
    flows = tmp_path / "flows.jsonl"
    assert run(["capture", REAL / "antrea-syn-egress.pcapng", "-o", flows]).exit_code == 0
    bad = tmp_path / "inv.yaml"
    bad.write_text("items: [\n")
    result = run(["resolve", "--flows", flows, "--inventory", bad])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"error: {bad}:")
