"""One input read in a second process while this one reads the others (``verify`` and ``diff``).

``verify`` reads a policy set, flow logs and an inventory; ``diff`` an inventory and two policy
sets. None depends on another, and reading is most of what the command line adds to the work
itself (benchmarks/README.md: reading 2,100 policies takes 1.3-2 s, a 100,000-flow log 2.2-3 s, a
10,000-pod inventory 1.2-1.7 s, on this project's 2-core machine). ``beside(calls)`` makes the
calls, one after the other, in a second process and returns a ``Pending`` for each: its
``result()`` is what the call returned, or raises what it raised, as if it had been made here.
The caller reads the rest meanwhile. The objects read cross as pickles: 2,100 policies are 1.4 MB
(0.03 s each way), the 10,000-pod inventory 4.6 MB (0.14 s, 0.06 s); a flow log is not worth it
(100,000 flows, 11 MB, 0.8 s and 0.7 s), so the caller reads that one itself.

The second process is forked where that is safe, else a fresh interpreter (``spawn``; see
``_start_method``). Starting it costs some of the other core (``spawn``: about 0.4 s), so it is
used only where it pays: a second core to run on (``os.sched_getaffinity``), and inputs
of at least ``MIN_BYTES`` in regular files (a FIFO or stdin is read here, in turn). Where it is not
used, or when the second process dies before it answers (killed, out of memory), a call is made here
when its result is asked for: the outcome is the same either way, only the time differs. A
script read from stdin is not something a fresh interpreter can prepare as its ``__main__``: then
too everything is read here.

``NETPOL_LEARN_PARALLEL``: ``0`` never starts a second process, ``1`` always does (tests), unset
decides as above.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from collections.abc import Callable, Iterable
from typing import Any

from netpol_learn._gc import collector_paused

#: Inputs smaller than this are read in turn: starting a process would cost more than it saves.
MIN_BYTES = 4 << 20

_ENV = "NETPOL_LEARN_PARALLEL"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _input_bytes(paths: Iterable[str | os.PathLike]) -> int | None:
    """The bytes of the regular files at ``paths`` (directories walked), or None when one of them
    is something a second process cannot read the same way (stdin, a FIFO, a device)."""
    total = 0
    for path in paths:
        if os.fspath(path) == "-":
            return None
        try:
            st = os.stat(path)
        except OSError:
            continue  # the reader reports it, in its own words
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            for root, _dirs, files in os.walk(path):
                for name in files:
                    try:
                        total += os.stat(os.path.join(root, name)).st_size
                    except OSError:
                        continue
        else:
            return None
    return total


def worth_it(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether reading ``paths`` in a second process pays (see the module's docstring)."""
    setting = os.environ.get(_ENV, "").strip()
    if setting == "0":
        return False
    size = _input_bytes(paths)
    if size is None:
        return False
    if setting == "1":
        return True
    return _cores() >= 2 and size >= MIN_BYTES


def _start_method() -> str | None:
    """How to start the second process, or None when it cannot be started well here.

    ``fork`` where there is one: no interpreter to start and nothing to import again (0.4-0.7 s
    sooner than ``spawn`` on this project's machine), and the child reads with the modules this
    process loaded. Not where this process has other threads and Python (3.12 on) warns that a
    lock one of them holds could stay locked in the child: then ``spawn``, a fresh interpreter,
    which needs a ``__main__`` it can prepare (``_main_module_importable``). The command line
    reads its inputs before anything starts a thread (numpy's OpenBLAS keeps a pool: numpy is
    not loaded by then, tests/test_api.py), so ``verify`` and ``diff`` fork on every Python;
    Python before 3.12 does not warn in any case."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and (sys.version_info < (3, 12) or _threads() == 1):
        return "fork"
    return "spawn" if _main_module_importable() else None


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # cannot tell: count as several


def _main_module_importable() -> bool:
    """Whether a fresh interpreter can prepare this one's ``__main__`` as ``spawn`` does (not a
    script read from stdin or ``-c``: it would fail to find it and read everything here)."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def _run(send, calls: list[tuple[Callable, tuple]]) -> None:
    """The second process: each call's result or exception, sent back as it is had; the calls
    after one that raised are not made (the caller meets that error first)."""
    try:
        for fn, args in calls:
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
                outcome = (False, exc)
            try:
                send.send(outcome)
            except Exception:  # noqa: BLE001 - what does not pickle: say what it was, and stop there
                outcome = (False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}"))
                send.send(outcome)
            if not outcome[0]:
                break
    finally:
        send.close()
    # Gone at once: freeing what was read, object by object, would keep the caller waiting for
    # this process to end (0.5 s after 2,100 policies). Nothing is left to write.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _Reader:
    """The second process of ``beside``, or, without one, nothing: each call is then made here."""

    def __init__(self, calls: list[tuple[Callable, tuple]], background: bool):
        self.calls = calls
        self.outcomes: list[tuple[bool, Any]] = []
        self.proc = self.recv = None
        method = _start_method() if background else None
        if method is not None:
            try:
                ctx = multiprocessing.get_context(method)
                self.recv, send = ctx.Pipe(duplex=False)
                self.proc = ctx.Process(target=_run, args=(send, calls), daemon=True, name="netpol-learn reader")
                self.proc.start()
                send.close()
            except OSError:  # no process to be had (limits): read here instead
                self.stop()

    def outcome(self, index: int) -> tuple[bool, Any]:
        while len(self.outcomes) <= index:
            got = None
            if self.proc is not None:
                try:
                    with collector_paused():  # what arrives holds no cycles; a collection would walk all that is read here
                        got = self.recv.recv()
                except (EOFError, OSError):  # it died before answering (killed, out of memory)
                    self.stop()
            if got is None:  # made here: no second process, or no answer from it
                fn, args = self.calls[len(self.outcomes)]
                try:
                    got = (True, fn(*args))
                except Exception as exc:
                    got = (False, exc)
            self.outcomes.append(got)
            if len(self.outcomes) == len(self.calls) or not got[0]:
                self.stop()
        return self.outcomes[index]

    def stop(self, wait: bool = True) -> None:
        proc, recv, self.proc, self.recv = self.proc, self.recv, None, None
        if proc is not None:
            if wait:
                proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            proc.close()
        if recv is not None:
            recv.close()


class Pending:
    """One call of ``beside``: running in a second process, or to be made here when its result
    is asked for."""

    def __init__(self, reader: _Reader, index: int):
        self._reader, self._index = reader, index

    @property
    def in_background(self) -> bool:
        return self._reader.proc is not None

    def result(self):
        """What the call returned, or the exception it raised, raised here. A call after one
        that raised is not made (reading in turn would have stopped there): asking for its
        result raises that error."""
        for i in range(self._index + 1):
            ok, value = self._reader.outcome(i)
            if not ok:
                raise value
        return value

    def cancel(self) -> None:
        """Stop the second process, if any, without waiting for its answers."""
        self._reader.stop(wait=False)


def beside(calls: list[tuple[Callable, tuple]], *, paths: Iterable[str | os.PathLike] = (),
           background: bool = True) -> list[Pending]:
    """``fn(*args)`` of each of ``calls``, one after the other, in a second process when reading
    ``paths`` that way pays (``worth_it``; never with ``background=False``); each ``fn`` a
    module-level function, its arguments and result picklable. One ``Pending`` for each call, in
    their order."""
    reader = _Reader(list(calls), background and worth_it(paths))
    return [Pending(reader, i) for i in range(len(reader.calls))]
