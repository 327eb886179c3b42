"""The learning service's HTTP API (Starlette): segments in; flows, inventory, status, the review
page and metrics out; health and readiness (docs/service.md).

Endpoints that only compute (reading the store, merging, resolving) are plain functions, which
Starlette runs in its thread pool; the upload reads its body on the event loop (so that a body
over the limit is refused while it arrives, never held whole) and does the rest in the pool.
Writes go through the store's one writer.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from netpol_learn._errors import FlowLogError, FlowLogVersionError, NetpolLearnError
from netpol_learn._flowlog import FlowLog, dumps_lines, merge_logs, read_segment
from netpol_learn._inventory import Inventory
from netpol_learn._serve._auth import Authenticator, Decision, bearer_token
from netpol_learn._serve._identity import Identity, inventory_document
from netpol_learn._serve._store import SegmentId, Store
from netpol_learn._time import parse_api_time, parse_duration

DEFAULT_MAX_SEGMENT_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_FUTURE = 10 * 60 * 10**9
#: Segments folded into the merged log in memory before the merge is checkpointed in the store.
CHECKPOINT_EVERY = 64
_NDJSON = "application/x-ndjson"
#: The review page makes no request of its own (everything is inlined): the browser may allow none.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; font-src data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_ID_TEXT_MAX = 253  # a node name is a DNS subdomain: at most 253 characters


@dataclass
class Limits:
    max_segment_size: int = DEFAULT_MAX_SEGMENT_SIZE  # bytes, compressed and uncompressed
    max_future: int = DEFAULT_MAX_FUTURE  # ns a segment's times may lie ahead of the service's clock


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Service:
    """The state behind the API: the store, who may do what, the identity history (None: not
    watching), limits, metrics, and the merged flow log kept up to date in memory."""

    store: Store
    auth: Authenticator
    identity: Identity | None = None
    limits: Limits = field(default_factory=Limits)
    clock: object = time.time_ns
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    closing: bool = False

    def __post_init__(self):
        r = self.registry
        self.received = Counter("netpol_learn_segments_received", "Segments received and stored.", registry=r)
        self.duplicates = Counter("netpol_learn_segments_duplicate", "Segments received again (resends), acknowledged and not stored.", registry=r)
        self.flows_received = Counter("netpol_learn_flows_received", "Flow lines in the segments stored.", registry=r)
        self.dns_received = Counter("netpol_learn_dns_received", "DNS lines in the segments stored.", registry=r)
        self.rejected = Counter("netpol_learn_requests_rejected", "Requests refused, by reason.", ["reason"], registry=r)
        self.ingest = Histogram("netpol_learn_segment_ingest_seconds", "Time from a segment's last byte to its commit.",
                                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        r.register(_StoreCollector(self))
        self.merge_lock = threading.Lock()
        self.merged: tuple[int, FlowLog] | None = None  # (up to row id, the merge)
        self.merged_text: tuple[int, str] | None = None  # (up to row id, the merge as JSON Lines)
        self.page: tuple[tuple, str] | None = None  # ((up to row id, history digest), the review page)
        self.folded = 0  # segments folded in since the last checkpoint
        self.received_count = 0  # by this process, for its last line
        self.duplicate_count = 0

    # --- auth ---

    def authorize(self, request: Request, role: str) -> Decision:
        decision = self.auth.decide(bearer_token(request.headers), role)
        if not decision.allowed:
            reason = {401: "unauthorized", 403: "forbidden"}.get(decision.status, "unavailable")
            self.rejected.labels(reason).inc()
        return decision

    # --- segments ---

    def take_segment(self, sid: SegmentId, cut: int, body: bytes, gzipped: bool, received: int) -> tuple[bool, FlowLog]:
        """Check and store one segment; (stored, its log). Raises ``_Refused``."""
        if gzipped:
            body = self._gunzip(body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused(400, "malformed", "the segment is not UTF-8 text") from None
        name = f"segment {sid.node}/{sid.boot}/{sid.seq}"
        try:
            log = read_segment(text, name)
        except FlowLogVersionError as exc:
            raise _Refused(422, "unsupported_version", str(exc)) from None
        except FlowLogError as exc:
            raise _Refused(400, "malformed", str(exc)) from None
        now = self.clock()
        latest = max([cut] + [f.last_seen for f in log.flows] + [d.last_seen for d in log.dns])
        if latest > now + self.limits.max_future:
            ahead = (latest - now) / 1e9
            raise _Refused(422, "future", f"{name}: its times lie {ahead:.0f} s ahead of this service's clock "
                                          f"(more than --max-future {self.limits.max_future / 1e9:g} s): is the node's clock wrong?")
        canonical = "".join(dumps_lines(log))
        connections = sum(f.connections for f in log.flows)
        try:
            stored = self.store.add_segment(sid, cut, received, len(log.flows), len(log.dns), connections, canonical)
        except (sqlite3.Error, OSError) as exc:
            raise _Refused(503, "store", f"cannot store the segment now: {exc}") from exc
        return stored, log

    def _gunzip(self, body: bytes) -> bytes:
        limit = self.limits.max_segment_size
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _Refused(400, "malformed", f"the body is not valid gzip: {exc}") from None
        if len(out) > limit:
            raise _Refused(413, "too_large", f"the segment is larger than {limit} bytes uncompressed (--max-segment-size)")
        if not d.eof:
            raise _Refused(400, "malformed", "the gzip body is cut off")
        return out

    # --- the merged log ---

    def merged_log(self, since_cut: int | None = None) -> FlowLog:
        """The merge of every segment (or of those cut at or after ``since_cut``)."""
        if since_cut is not None:
            return merge_logs(read_segment(text) for _, text in self.store.segment_bodies(since_cut=since_cut))
        with self.merge_lock:
            if self.merged is None:
                held = self.store.checkpoint()
                self.merged = (0, merge_logs([])) if held is None else (held[0], read_segment(held[1], "checkpoint"))
            upto, log = self.merged
            rows = iter(self.store.segment_bodies(after=upto))
            first = next(rows, None)
            if first is None:
                return log  # nothing new: the merge as it stands
            last = [upto, 0]

            def new_segments():
                # One segment at a time into the merge: memory holds the merge, not the segments.
                for row_id, text in itertools.chain([first], rows):
                    last[0], last[1] = row_id, last[1] + 1
                    yield read_segment(text)

            log = merge_logs(itertools.chain([log], new_segments()))
            upto = last[0]
            self.merged = (upto, log)
            self.folded += last[1]
            if self.folded >= CHECKPOINT_EVERY:
                self.store.set_checkpoint(upto, "".join(dumps_lines(log)))
                self.folded = 0
            return log

    def report_page(self, inventory: Inventory, document: str) -> str:
        """The review page (``netpol-learn report``) of the merge and the identity history; made
        again only when segments came or the history changed."""
        from netpol_learn._report import build_report, page_html

        log = self.merged_log()
        with self.merge_lock:
            key = (self.merged[0], hashlib.sha256(document.encode()).digest())
        if self.page is None or self.page[0] != key:
            self.page = (key, page_html(build_report(log, inventory, title="netpol-learn: the learning service")))
        return self.page[1]

    def merged_lines(self) -> str:
        """The merge of every segment as JSON Lines; formatted again only when segments came."""
        self.merged_log()
        with self.merge_lock:
            upto, log = self.merged
            if self.merged_text is None or self.merged_text[0] != upto:
                self.merged_text = (upto, "".join(dumps_lines(log)))
            return self.merged_text[1]


class _StoreCollector:
    """Metrics read from the store at each scrape: they hold across restarts."""

    def __init__(self, service: Service):
        self.service = service

    def describe(self):
        return []

    def collect(self):
        s = self.service
        last = GaugeMetricFamily("netpol_learn_node_last_segment_timestamp_seconds",
                                 "When the node's last segment arrived (seconds since the epoch).", labels=["node"])
        lag = GaugeMetricFamily("netpol_learn_node_lag_seconds",
                                "Seconds between the cut of the node's last segment and its arrival.", labels=["node"])
        count = GaugeMetricFamily("netpol_learn_node_segments", "Segments stored of the node.", labels=["node"])
        try:
            nodes = s.store.nodes()
            totals = s.store.totals()
            size = s.store.size()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the store is busy
            return
        for n in nodes:
            last.add_metric([n.node], n.last_received / 1e9)
            lag.add_metric([n.node], max(0, n.last_lag) / 1e9)
            count.add_metric([n.node], n.segments)
        yield last
        yield lag
        yield count
        yield GaugeMetricFamily("netpol_learn_store_segments", "Segments in the store.", value=totals.segments)
        yield GaugeMetricFamily("netpol_learn_store_flows", "Flow lines in the store's segments.", value=totals.flows)
        yield GaugeMetricFamily("netpol_learn_store_bytes", "Bytes the store takes on disk.", value=size)
        up, _ = s.identity.health() if s.identity is not None else (False, "")
        yield GaugeMetricFamily("netpol_learn_identity_up", "1 when every kind of the identity history is watched and in step.",
                                value=1 if up else 0)
        if s.identity is not None:
            yield GaugeMetricFamily("netpol_learn_identity_history_entries", "History entries written to the store by this process.",
                                    value=s.identity.flushed)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _denied(decision: Decision) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="netpol-learn"'} if decision.status == 401 else None
    return _error(decision.status, decision.error, headers)


def _segment_id(request: Request) -> tuple[SegmentId, int]:
    q = request.query_params
    missing = [k for k in ("node", "boot", "seq", "cut") if not q.get(k)]
    if missing:
        raise _Refused(400, "malformed", f"missing query parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                         "(POST /v1/segments?node=NODE&boot=BOOT&seq=N&cut=NS)")
    node, boot = q["node"], q["boot"]
    for name, value in (("node", node), ("boot", boot)):
        if len(value) > _ID_TEXT_MAX or not value.isprintable() or any(c.isspace() for c in value):
            raise _Refused(400, "malformed", f"{name}: not a name (printable, no spaces, at most {_ID_TEXT_MAX} characters)")
    try:
        seq, cut = int(q["seq"]), int(q["cut"])
    except ValueError:
        raise _Refused(400, "malformed", "seq and cut must be whole numbers") from None
    if seq < 0 or cut < 0:
        raise _Refused(400, "malformed", "seq and cut must not be negative")
    return SegmentId(node, boot, seq), cut


def _since(text: str | None, now: int) -> int | None:
    if text is None or text == "":
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    when = parse_api_time(text)
    if when is None:
        raise _Refused(400, "malformed", f"since={text!r}: neither a duration (1h, 30m) nor an RFC 3339 time")
    return when


def make_app(service: Service) -> Starlette:
    """The ASGI application serving ``service``."""

    def healthz(request: Request):
        return PlainTextResponse("ok\n")

    def readyz(request: Request):
        lines, ready = [], True
        try:
            service.store.ping()
            lines.append("[+]store ok")
        except Exception as exc:  # noqa: BLE001 - whatever it is, the store is not usable
            ready = False
            lines.append(f"[-]store: {exc}")
        if service.closing:
            ready = False
            lines.append("[-]shutting down")
        if service.identity is None:
            lines.append("[+]identity not watched (--no-watch)")
        else:
            up, text = service.identity.health()
            # Not a reason to be unready: segments are still taken in, and the history catches up.
            lines.append(f"[{'+' if up else '-'}]identity {text}")
        lines.append("readyz check passed" if ready else "readyz check failed")
        return PlainTextResponse("\n".join(lines) + "\n", status_code=200 if ready else 503)

    async def post_segment(request: Request):
        received_at = time.perf_counter()
        decision = await run_in_threadpool(service.authorize, request, "write")
        if not decision.allowed:
            return _denied(decision)
        try:
            if service.closing:
                raise _Refused(503, "unavailable", "the service is shutting down; send again later")
            sid, cut = _segment_id(request)
            limit = service.limits.max_segment_size
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise _Refused(413, "too_large", f"the segment is larger than {limit} bytes (--max-segment-size)")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _Refused(413, "too_large", f"the segment is larger than {limit} bytes (--max-segment-size)")
                chunks.append(chunk)
            encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
            if encoding not in ("identity", "gzip"):
                raise _Refused(415, "malformed", f"Content-Encoding {encoding}: only gzip or none")
            received = service.clock()
            stored, log = await run_in_threadpool(service.take_segment, sid, cut, b"".join(chunks), encoding == "gzip", received)
        except _Refused as refused:
            service.rejected.labels(refused.reason).inc()
            return _error(refused.status, refused.message)
        if not stored:
            service.duplicate_count += 1
            service.duplicates.inc()
            return JSONResponse({"stored": False, "duplicate": True}, status_code=200)
        service.received_count += 1
        service.received.inc()
        service.flows_received.inc(len(log.flows))
        service.dns_received.inc(len(log.dns))
        service.ingest.observe(time.perf_counter() - received_at)
        return JSONResponse({"stored": True, "flows": len(log.flows), "dns": len(log.dns)}, status_code=201)

    def _reading(request: Request):
        decision = service.authorize(request, "read")
        return None if decision.allowed else _denied(decision)

    def get_flows(request: Request):
        if (denied := _reading(request)) is not None:
            return denied
        try:
            since = _since(request.query_params.get("since"), service.clock())
        except _Refused as refused:
            service.rejected.labels(refused.reason).inc()
            return _error(refused.status, refused.message)
        text = service.merged_lines() if since is None else "".join(dumps_lines(service.merged_log(since)))
        return Response(text, media_type=_NDJSON)

    def get_inventory(request: Request):
        if (denied := _reading(request)) is not None:
            return denied
        document = inventory_document(service.store)
        if document is None:
            return _error(503, _no_inventory(service))
        return Response(document, media_type="application/json")

    def _identity_history() -> tuple[str, Inventory] | Response:
        from netpol_learn._inventory import load_inventory_document

        document = inventory_document(service.store)
        if document is None:
            return _error(503, _no_inventory(service))
        try:
            return document, load_inventory_document(json.loads(document), "the service's identity history")
        except NetpolLearnError as exc:
            return _error(500, f"the identity history cannot be read: {exc}")

    def get_status(request: Request):
        if (denied := _reading(request)) is not None:
            return denied
        from netpol_learn._resolve import resolve
        from netpol_learn._status import learning_status, status_to_json

        history = _identity_history()
        if isinstance(history, Response):
            return history
        inventory = history[1]
        log = service.merged_log()
        stable_after = request.query_params.get("stable_after") or "24h"
        try:
            stable_after_ns = parse_duration(stable_after)
            if stable_after_ns <= 0:
                raise ValueError
        except ValueError:
            return _error(400, f"stable_after={stable_after!r}: not a duration such as 24h or 3d")
        status = learning_status(log, inventory, resolve(log, inventory), stable_after_ns)
        # The bytes `netpol-learn status --format json` writes for the same flows and inventory.
        return Response(json.dumps(status_to_json(status), indent=2, sort_keys=True) + "\n", media_type="application/json")

    def get_page(request: Request):
        if (denied := _reading(request)) is not None:
            return denied
        history = _identity_history()
        if isinstance(history, Response):
            return history
        # The page inlines everything and asks for nothing: the strictest policy holds.
        return HTMLResponse(service.report_page(history[1], history[0]), headers=_PAGE_HEADERS)

    def metrics(request: Request):
        if (denied := _reading(request)) is not None:
            return denied
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/", get_page),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/v1/segments", post_segment, methods=["POST"]),
        Route("/v1/flows", get_flows),
        Route("/v1/inventory", get_inventory),
        Route("/v1/status", get_status),
        Route("/metrics", metrics),
    ])


def _no_inventory(service: Service) -> str:
    if service.identity is None:
        return "no identity history: this service does not watch the API (--no-watch)"
    return f"no identity history yet: {service.identity.health()[1]}"
