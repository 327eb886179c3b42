"""An input read in a second process (``netpol_learn/_parallel.py``): the same result, the same
error and the same warnings as reading it here, in turn; and nothing lost when that process
dies. The processes are real (``spawn``); tests/test_verify_diff.py runs every verify and diff
case of the command line both ways."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from netpol_learn import FlowLog, PolicyError, write_flow_log
from netpol_learn import _parallel
from netpol_learn._gc import inputs_kept
from netpol_learn._parallel import beside, worth_it
from netpol_learn._semantics import load_policies, load_policies_noted

ROOT = Path(__file__).resolve().parent.parent

POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "api", "namespace": "shop"},
          "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "ui"}}}], "ports": [{"port": 8080}]}]}}


def pid_and_parent() -> tuple[int, int]:
    return os.getpid(), os.getppid()


def dies_in_a_second_process(value):
    """Killed (as the kernel's OOM killer would) when made in a second process; ``value`` here."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        os._exit(9)
    return value


def fails(message: str):
    raise PolicyError(message)


@pytest.fixture(params=["fork", "spawn"])
def always(request, monkeypatch):
    """A second process whatever the inputs, started each way ``_start_method`` may choose."""
    monkeypatch.setenv("NETPOL_LEARN_PARALLEL", "1")
    monkeypatch.setattr(_parallel, "_start_method", lambda: request.param)
    return request.param


@pytest.fixture
def policy_dir(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "api.yaml").write_text(yaml.safe_dump(POLICY, sort_keys=False))
    (d / "cm.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
    return d


def test_a_call_is_made_in_another_process_and_its_result_comes_back(always, tmp_path):
    (pending,) = beside([(pid_and_parent, ())], paths=[tmp_path])
    assert pending.in_background
    pid, parent = pending.result()
    assert pid != os.getpid() and parent == os.getpid()
    assert pending.result() == (pid, parent), "a result is asked for twice: the same answer"


def test_policies_read_in_another_process_equal_those_read_here(always, policy_dir):
    (pending,) = beside([(load_policies_noted, ([policy_dir],))], paths=[policy_dir])
    assert pending.in_background
    policies, notes = pending.result()
    here_notes: list[str] = []
    here = load_policies([policy_dir], here_notes)
    assert list(policies) == list(here) and policies.cluster == here.cluster
    assert notes == here_notes == ["skipped 1 document(s) of kind ConfigMap"]


def test_an_error_in_the_other_process_is_raised_here_as_itself(always, tmp_path):
    first, second = beside([(fails, ("spec: broken",)), (pid_and_parent, ())], paths=[tmp_path])
    with pytest.raises(PolicyError, match=r"^spec: broken$"):
        first.result()
    with pytest.raises(PolicyError, match=r"^spec: broken$"):
        second.result()  # reading in turn would have stopped at the first error: so does this


def test_calls_after_the_first_come_back_in_order(always, tmp_path):
    a, b = beside([(pid_and_parent, ()), (str.upper, ("x",))], paths=[tmp_path])
    assert b.result() == "X"
    assert a.result()[1] == os.getpid()


def test_a_second_process_that_dies_leaves_the_call_to_be_made_here(always, tmp_path):
    (pending,) = beside([(dies_in_a_second_process, ("read here",))], paths=[tmp_path])
    assert pending.in_background
    assert pending.result() == "read here"


def test_without_a_second_process_the_call_waits_for_its_result(monkeypatch, tmp_path):
    monkeypatch.setenv("NETPOL_LEARN_PARALLEL", "0")
    made = []
    (pending,) = beside([(made.append, ("x",))], paths=[tmp_path])
    assert not pending.in_background and made == []
    assert pending.result() is None and made == ["x"]
    pending.result()
    assert made == ["x"], "made once"


def test_cancel_stops_the_second_process(always, tmp_path):
    (pending,) = beside([(dies_in_a_second_process, ("x",))], paths=[tmp_path])
    proc = pending._reader.proc
    pending.cancel()
    assert not pending.in_background and proc is not None
    assert pending.result() == "x"


def test_fork_only_where_it_is_safe(monkeypatch):
    monkeypatch.setattr(_parallel.multiprocessing, "get_all_start_methods", lambda: ["fork", "spawn", "forkserver"])
    monkeypatch.setattr(_parallel, "_threads", lambda: 1)
    assert _parallel._start_method() == "fork"
    monkeypatch.setattr(_parallel, "_threads", lambda: 3)
    assert _parallel._start_method() == ("fork" if sys.version_info < (3, 12) else "spawn")
    monkeypatch.setattr(_parallel.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert _parallel._start_method() == "spawn"


def test_when_a_second_process_pays(monkeypatch, tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("x" * 100)
    big = tmp_path / "dir" / "big.yaml"
    big.parent.mkdir()
    big.write_bytes(b"x" * 2000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(_parallel, "MIN_BYTES", 1000)
    monkeypatch.setattr(_parallel, "_cores", lambda: 2)
    monkeypatch.delenv("NETPOL_LEARN_PARALLEL", raising=False)
    assert not worth_it([small]), "too little to read: starting a process costs more"
    assert worth_it([big.parent]) and worth_it([small, big]), "a directory counts what is in it"
    assert not worth_it([big, fifo]) and not worth_it([big, "-"]), "a FIFO or stdin is read here only"
    assert worth_it([big, tmp_path / "missing"]), "a missing path is the reader's to report"
    monkeypatch.setattr(_parallel, "_cores", lambda: 1)
    assert not worth_it([big]), "one core: nothing to gain"
    monkeypatch.setenv("NETPOL_LEARN_PARALLEL", "1")
    assert worth_it([small]) and not worth_it(["-"])
    monkeypatch.setenv("NETPOL_LEARN_PARALLEL", "0")
    monkeypatch.setattr(_parallel, "_cores", lambda: 2)
    assert not worth_it([big])


def test_a_script_read_from_stdin_reads_here_without_a_word_on_stderr(policy_dir):
    """Where there is no fork (macOS, Windows), a fresh interpreter cannot prepare a __main__
    that came from stdin: no second process, and no error."""
    script = textwrap.dedent(f"""
        from netpol_learn import _parallel
        _parallel.multiprocessing.get_all_start_methods = lambda: ["spawn"]
        from netpol_learn._parallel import beside
        from netpol_learn._semantics import load_policies_noted
        (p,) = beside([(load_policies_noted, ([{str(policy_dir)!r}],))], paths=[{str(policy_dir)!r}])
        print(p.in_background, len(p.result()[0]))
    """)
    r = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "NETPOL_LEARN_PARALLEL": "1"}, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "False 1\n", "")


def test_inputs_kept_out_of_the_collectors_sight_until_the_command_is_over():
    assert gc.get_freeze_count() == 0
    closers = []
    kept = [[i] for i in range(1000)]
    with inputs_kept(closers.append):
        assert not gc.isenabled()
        read = [[i] for i in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() >= len(read) + len(kept)
    assert closers == [gc.unfreeze]
    closers[0]()
    assert gc.get_freeze_count() == 0


def test_inputs_kept_freezes_nothing_where_something_else_froze_already():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        closers = []
        with inputs_kept(closers.append):
            _ = [[i] for i in range(1000)]
        assert closers == [] and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_the_command_line_leaves_nothing_frozen(policy_dir, tmp_path):
    """verify run in-process (as tests and embedding callers do) unfreezes what it froze."""
    from click.testing import CliRunner

    from netpol_learn._cli import main

    flows = tmp_path / "flows.jsonl"
    write_flow_log(FlowLog(), flows)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    r = CliRunner().invoke(main, ["verify", "--policies", str(policy_dir), "--inventory", str(inventory), "--flows", str(flows)])
    assert r.exit_code == 0, r.output + r.stderr
    assert gc.get_freeze_count() == 0


def test_debug_reads_in_turn_so_that_the_traceback_is_whole(tmp_path, always):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**POLICY, "spec": {"podSelector": {}, "policyTypes": ["Ingres"]}}))
    flows = tmp_path / "flows.jsonl"
    write_flow_log(FlowLog(), flows)
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "--debug", "verify", "--policies", str(bad), "--flows", str(flows),
                        "--inventory", str(flows)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert "_semantics.py" in r.stderr, "the traceback ends where the policy was read"
    assert r.stderr.splitlines()[-1] == f"error: {bad}: document 1 (NetworkPolicy api): spec.policyTypes: 'Ingres' is neither Ingress nor Egress"
