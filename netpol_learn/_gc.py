"""The garbage collector paused while inputs are read and judged.

Reading a flow log, an inventory or a policy set makes hundreds of thousands of objects that hold
no cycles (reference counts free them) and stay alive: as they pile up, each full collection walks
them, and everything else alive, again and again (benchmarks/README.md: `verify` of 100,000 flows
against 2,100 policies spent about a fifth of its time in collections, and reading a 10,000-pod
inventory half of its time). Nothing is kept from collection for longer than the call that reads
or judges; a collection that was due runs once it is over.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable


@contextlib.contextmanager
def collector_paused():
    """The garbage collector paused (and resumed if it ran), for work that makes many objects
    without cycles and keeps them a while; also a decorator (``@collector_paused()``). Nested or
    in several threads at once, it resumes the collector only where it paused it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def inputs_kept(on_close: Callable[[Callable[[], None]], object]):
    """For a command: its inputs, read in the block, stay alive while it runs. The collector is
    paused while they are read, and then they are moved out of its sight (``gc.freeze``), so
    that no collection walks them again while the command runs (the one that was due after
    reading the inputs of `verify` walked them all for 0.3 s, to free nothing); ``on_close`` is
    given ``gc.unfreeze`` to call when the command is over (``click.Context.call_on_close``),
    so that a command run in-process leaves nothing out of the collector's sight. Where
    something else froze objects already, nothing is frozen."""
    with collector_paused():
        yield
        if gc.get_freeze_count() == 0:
            gc.freeze()
            on_close(gc.unfreeze)
