"""The garbage collector paused while inputs are read and judged (``netpol_learn/_gc.py``): never
left paused, by an error or by nesting, and never resumed where the caller had paused it."""

from __future__ import annotations

import gc
import threading

import pytest

from netpol_learn import FlowLogError, InventoryError, load_inventory, read_flow_log
from netpol_learn._gc import collector_paused


@pytest.fixture(autouse=True)
def _collector_restored():
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_paused_inside_and_resumed_after_nested_pauses():
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the inner pause must not resume what the outer one paused"
    assert gc.isenabled()


def test_a_caller_that_paused_the_collector_finds_it_paused():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.parametrize("text, error, read", [
    ("not a flow log\n", FlowLogError, read_flow_log),
    ("kind: [unclosed\n", InventoryError, lambda p: load_inventory([p])),
])
def test_the_readers_resume_the_collector_when_they_fail(tmp_path, text, error, read):
    gc.enable()
    path = tmp_path / "input"
    path.write_text(text)
    with pytest.raises(error):
        read(path)
    assert gc.isenabled()


def test_threads_pausing_at_once_leave_the_collector_running():
    gc.enable()
    inside = threading.Barrier(2)

    def work():
        with collector_paused():
            inside.wait(5)  # both are inside at once
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert gc.isenabled()
