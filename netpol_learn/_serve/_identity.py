"""The service's identity history: one watch per kind for the whole cluster, kept in the store.

``Identity`` is a thread: it lists every kind and watches each (``list_and_watch``, the code of
``inventory --watch``), and every ``FLUSH_SECONDS`` appends the changes it recorded to the store
with the time the history is complete up to (``watched_until``). At start it carries on from what
the store holds: the state of every object is the store's snapshot with its history applied,
and the first list of each kind is recorded as the changes since ``watched_until`` (each with
``since``), so neither a restart nor a kill loses a change: one that happened while the service
was down, or that was recorded but not yet flushed, shows up in that list.

When the API cannot be reached at the start, segments are still taken in; the listing is tried
again with backoff (``health`` says why it is not watching), and the history catches up with it.
Once listed, each kind's watch resumes by itself after errors and relists after ``410 Gone``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable

from netpol_learn._errors import NetpolLearnError
from netpol_learn._inventory import History, assemble, dump_piece, list_and_watch
from netpol_learn._serve._store import Store
from netpol_learn._time import format_time

FLUSH_SECONDS = 1.0
RETRY_FIRST = 1.0
RETRY_MAX = 60.0
LEAD_SECONDS = 5.0  # how often a standby replica asks whether it may keep the history now

Warn = Callable[[str], None]


def _key(obj: dict) -> tuple:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""))


def state_of(items: list[str], entries: list[tuple[int, str]]) -> list[dict]:
    """The objects as they stand after the snapshot ``items`` and the history ``entries``."""
    objects = {}
    for text in items:
        obj = json.loads(text)
        objects[_key(obj)] = obj
    for _, text in entries:
        entry = json.loads(text)
        obj = entry["object"]
        if entry["type"] == "DELETED":
            objects.pop(_key(obj), None)
        else:
            objects[_key(obj)] = obj
    return list(objects.values())


def inventory_document(store: Store) -> str | None:
    """The store's snapshot and history as ``inventory --watch`` writes them (JSON); None before
    the first listing."""
    held = store.inventory()
    if held is None:
        return None
    snapshot_time, items, entries, until = held
    last = entries[-1][0] if entries else 0
    watched_until = format_time(max(until or 0, last)) if (until or last) else None
    return "".join(assemble(snapshot_time, items, "json", [p for _, p in entries], watched_until))


class Identity(threading.Thread):
    """Watches the cluster into ``store``; ``configure()`` gives the client configuration (it
    may raise ``NetpolLearnError``: no kubeconfig, not in a cluster)."""

    def __init__(self, store: Store, configure: Callable[[], object], *, warn: Warn, page_size: int = 500,
                 flush_seconds: float = FLUSH_SECONDS):
        super().__init__(name="identity-history", daemon=True)
        self.store, self.configure, self.warn, self.page_size = store, configure, warn, page_size
        self.flush_seconds = flush_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.buffer: list[tuple[int, str]] = []
        self.history = History("json", sink=lambda t, piece: self.buffer.append((t, piece)), keep=False)
        self.watches: list = []
        self.listed = False
        self.problem: str | None = "not listed yet"
        self.host = ""
        self.flushed = 0
        self.standby = False

    def stop(self) -> None:
        self.stop_event.set()

    def health(self) -> tuple[bool, str]:
        """(True, what it watches) when every kind is in step; else (False, what is wrong)."""
        if self.standby:
            return True, "standing by: another replica of the service keeps the identity history"
        if not self.listed:
            return False, f"not watching: {self.problem}"
        failing = [f"{w.kind.resource}: {w.failing}" for w in self.watches if w.failing]
        if failing:
            return False, "; ".join(failing)
        return True, f"watching {len(self.watches)} kinds at {self.host}"

    def _resume(self) -> None:
        held = self.store.inventory()
        if held is None:
            return
        _, items, entries, until = held
        last = entries[-1][0] if entries else 0
        self.history.resume(state_of(items, entries), until=max(until or 0, last) or last, last=last)

    def flush(self) -> None:
        """Append what was recorded to the store, with the time the history is complete up to."""
        with self.history.lock:
            entries, self.buffer[:] = list(self.buffer), []
        in_step = self.listed and not any(w.failing for w in self.watches)
        until = self.history.now() if in_step else None
        if entries or until is not None:
            self.store.add_history(entries, until)
            self.flushed += len(entries)

    def run(self) -> None:
        from kubernetes.client import ApiClient

        while not self.store.lead():
            self.standby = True
            if self.stop_event.wait(LEAD_SECONDS):
                return
        self.standby = False
        try:  # once leading: what another replica recorded until now is part of what carries on
            self._resume()
        except Exception as exc:  # noqa: BLE001 - a store that cannot be read: said, and the thread ends
            self.problem = f"cannot read the store's history: {exc}"
            self.warn(f"identity history: {self.problem}")
            return
        failures = 0
        while not self.stop_event.is_set():
            watches: list = []
            try:
                cfg = self.configure()
                cfg.connection_pool_maxsize = 16
                self.host = cfg.host
                if failures == 0:
                    self.problem = f"listing the API at {cfg.host}"
                with ApiClient(cfg) as api:
                    api.user_agent = "netpol-learn serve"
                    started = self.history.now()
                    items = list_and_watch(api, self.history, watches, Counter(), self.page_size, self.stop_event,
                                           lambda message: self.warn(f"identity history: {message}"))
                    self.store.set_snapshot(format_time(started), [dump_piece(i, "json") for i in items])
                    self.watches, self.listed, self.problem, failures = watches, True, None, 0
                    self.warn(f"identity history: listed {len(items)} objects; watching {len(watches)} kinds at {cfg.host}")
                    while not self.stop_event.wait(self.flush_seconds):
                        self.flush()
                    self.flush()
                    return
            except NetpolLearnError as exc:
                problem = str(exc)
            except Exception as exc:  # noqa: BLE001 - anything else the listing raised: said, tried again
                problem = f"{type(exc).__name__}: {exc}"
            finally:
                for w in watches:
                    w.interrupt()
                for w in watches:
                    w.join(timeout=5)
            if problem != self.problem:
                self.warn(f"identity history: {problem}; trying again with backoff (segments are still taken in)")
            self.problem = problem
            self.listed = False
            failures += 1
            self.stop_event.wait(min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1)))
        self.flush()

    def join_stopped(self, timeout: float = 10) -> None:
        self.stop()
        for w in self.watches:
            w.interrupt()
        self.join(timeout)

