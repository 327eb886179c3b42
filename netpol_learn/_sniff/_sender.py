"""The sniffer's sender: a thread that sends the spool's segments to the learning service, oldest
first, one at a time (``POST <server>/v1/segments?node=&boot=&seq=&cut=``, the spool file's gzip
bytes as they are, ``Content-Encoding: gzip``, ``Authorization: Bearer`` the token file's token,
read again for every attempt: projected service account tokens rotate).

What an answer means (docs/sniffer.md):

- 201 (stored) and 200 (a resend of a stored segment): sent; deleted from the spool;
- 400, 413, 422: the server will never take it: a warning, deleted, counted in the next segment
  (``server_rejected_segments``, ``server_rejected_flows``);
- anything else (401, 403, 5xx, a redirect, no answer): kept and sent again, after 1 s, then
  doubling up to 60 s while it keeps failing. The next segment is not sent before the oldest:
  the order stays.

``finish(drain)`` (at stop) gives the thread ``drain`` seconds to send what is left, each request
bounded by what remains of them; the rest stays in the spool for the next start.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from netpol_learn._errors import SniffError
from netpol_learn._kube import SERVICE_ACCOUNT_DIR, bearer_token, one_line, transport_reason
from netpol_learn._sniff._spool import Spool, Spooled

Warn = Callable[[str], None]

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0
DEFAULT_DRAIN = 10.0
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
DEFAULT_TOKEN_FILE = os.path.join(SERVICE_ACCOUNT_DIR, "token")

SENT = (200, 201)
REJECTED = (400, 413, 422)


def segments_url(server: str) -> str:
    """The ingest URL of the learning service at ``server`` (``http[s]://host[:port][/prefix]``);
    ``SniffError`` when it is not such a URL."""
    where = f"--server {server!r}"
    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise SniffError(f"{where}: not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise SniffError(f"{where}: not an http:// or https:// URL")
    if not parts.hostname:
        raise SniffError(f"{where}: no host")
    if parts.query or parts.fragment or parts.username is not None:
        raise SniffError(f"{where}: a query, a fragment or credentials in the URL are not used; give scheme, host, port "
                         "(and a path prefix)")
    return f"{server.rstrip('/')}/v1/segments"


def check_token_file(token_file: str | None) -> str:
    """The token file to send with (``token_file``, or the pod's service account token); checked
    that it can be read and holds a token. ``SniffError`` when not."""
    if token_file is None:
        if not os.path.isfile(DEFAULT_TOKEN_FILE):
            raise SniffError(f"--server: no --token-file given and no service account token at {DEFAULT_TOKEN_FILE} "
                             "(not in a cluster?)")
        token_file, where = DEFAULT_TOKEN_FILE, f"service account token {DEFAULT_TOKEN_FILE}"
    else:
        where = f"--token-file {token_file}"
    try:
        token = bearer_token(token_file)
    except UnicodeDecodeError as exc:
        raise SniffError(f"{where}: not a text file") from exc
    except OSError as exc:
        raise SniffError(f"{where}: cannot read it ({exc.strerror or exc})") from exc
    if token == "Bearer ":
        raise SniffError(f"{where}: empty")
    return token_file


class Sender:
    """Sends the segments of ``spool`` to ``url`` (``segments_url``) in a thread of its own (see
    the module's docstring). ``sent``, ``duplicates``, ``rejected`` and ``attempts`` count."""

    def __init__(self, spool: Spool, url: str, token_file: str, *, warn: Warn, info: Warn | None = None,
                 initial_backoff: float = INITIAL_BACKOFF, max_backoff: float = MAX_BACKOFF, ca_file: str | None = None):
        import urllib3  # here: loading it costs every command's start-up

        self.spool = spool
        self.url = url
        self.server = url[: -len("/v1/segments")]
        self.token_file = token_file
        self.warn = warn
        self.info = info or (lambda message: None)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        # ca_file: the CA bundle an https:// service's certificate is checked against (else the system's).
        self.pool = urllib3.PoolManager(retries=False, ca_certs=ca_file)
        self.sent = self.duplicates = self.rejected = self.attempts = 0
        self.deadline: float | None = None  # monotonic; set by finish
        self._wake = threading.Event()
        self._failing: str | None = None  # the reason of the current run of failed attempts
        self.thread = threading.Thread(target=self._run, name="segment-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self, drain: float = DEFAULT_DRAIN) -> bool:
        """Send what is left for at most ``drain`` seconds, then stop; True when the spool is empty."""
        self.deadline = time.monotonic() + max(0.0, drain)
        self._wake.set()
        self.spool.notify()
        if self.thread.is_alive():
            self.thread.join(max(0.0, drain) + 2.0)
        return len(self.spool) == 0

    # --- the thread ---

    def _over(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _run(self) -> None:
        delay = 0.0
        while not self._over():
            claimed = self.spool.claim()
            if claimed is None:
                if self.deadline is not None:
                    return  # stopping, and nothing left
                self.spool.wait(lambda: self.spool.claimable() or self.deadline is not None)
                continue
            item, data = claimed
            try:
                outcome, why = self._attempt(item, data)
            except Exception as exc:  # noqa: BLE001 - a fault here must not end the sending
                outcome, why = "retry", f"{type(exc).__name__}: {exc}"
            self.spool.done(item, outcome)
            if outcome == "retry" and self._over():
                return  # the drain time is over: the rest waits in the spool
            if outcome == "retry":
                delay = self.initial_backoff if not delay else min(2 * delay, self.max_backoff)
                if why != self._failing:
                    self.warn(f"cannot send segments to {self.server}: {why}; {len(self.spool)} kept in the spool "
                              f"{self.spool.directory}, sent again with backoff (up to {self.max_backoff:g}s)")
                    self._failing = why
                self._sleep(delay)
            else:
                if self._failing is not None:
                    self.info(f"{self.server} takes segments again; {len(self.spool)} left in the spool")
                    self._failing = None
                delay = 0.0

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            limit = end if self.deadline is None else min(end, self.deadline)
            left = limit - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)
            self._wake.clear()

    def _attempt(self, item: Spooled, data: bytes) -> tuple[str, str | None]:
        """One POST of ``item``: ``(outcome, why)`` for ``Spool.done``."""
        import urllib3

        try:
            token = bearer_token(self.token_file)
        except (OSError, UnicodeDecodeError) as exc:
            return "retry", f"cannot read the token file {self.token_file} ({getattr(exc, 'strerror', None) or exc})"
        if token == "Bearer ":
            return "retry", f"the token file {self.token_file} is empty"
        connect, read = CONNECT_TIMEOUT, READ_TIMEOUT
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return "retry", "stopping"
            connect, read = min(connect, left), min(read, left)
        query = urlencode([("node", item.node), ("boot", item.boot), ("seq", item.seq), ("cut", item.cut)])
        headers = {"Authorization": token, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        self.attempts += 1
        try:
            r = self.pool.request("POST", f"{self.url}?{query}", body=data, headers=headers, retries=False, redirect=False,
                                  timeout=urllib3.Timeout(connect=connect, read=read))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return "retry", transport_reason(exc)
        if r.status in SENT:
            self.sent += 1
            self.duplicates += r.status == 200
            return "sent", None
        message = f"HTTP {r.status}" + (f": {_error(r.data)}" if r.data else "")
        if r.status in REJECTED:
            self.rejected += 1
            self.warn(f"{self.server} refused segment {item.id} ({item.flows} flow lines): {message}; deleted from the "
                      "spool (counted as server_rejected_segments in the next segment)")
            return "rejected", None
        return "retry", message


def _error(body: bytes) -> str:
    """The ``error`` of an error answer's JSON body; else the start of the body."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return one_line(obj["error"])
    return one_line(body[:200].decode("utf-8", errors="replace"))
