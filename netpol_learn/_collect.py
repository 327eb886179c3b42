"""Collect the sniffers' flow logs from their pods' logs: ``netpol-learn collect``.

Each sniffer pod (the DaemonSet of ``netpol-learn manifests``) writes one flow-log segment per
interval to stdout, so its container log is a flow log with other lines in between (the
sniffer's own messages on stderr share the log). ``collect`` lists the pods through the API,
reads each container's log (and that of its previous instance when it restarted) as a stream,
keeps the complete segments (a header, its flow and dns lines, a stats line; docs/flow-log.md),
and merges them all, so that the result equals ``merge`` of the segments.

A pod whose log cannot be read is a warning and the others still count; no pods, or no log that
could be read, is a ``CollectError``. A segment cut off by ``--since`` (its header is older) or
still being written (no stats line yet) is left out: the segments are whole intervals or nothing.

The client comes configured as for ``netpol-learn inventory`` (``client_configuration``: a
kubeconfig, ``--context``, or the pod's service account), and ``kubernetes`` is imported only
when collecting starts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from netpol_learn._errors import CollectError
from netpol_learn._flowlog import FORMAT, VERSION, FlowLog, _dns_from_json, _flow_from_json, merge_logs, merge_stats
from netpol_learn._inventory._live import (
    REQUEST_TIMEOUT,
    _NotAList,
    _list_pages,
    _one_line,
    api_error_message,
    _transport_reason,
    client_configuration,
)
from netpol_learn._manifests import DEFAULT_NAMESPACE, SNIFFER_SELECTOR

__all__ = ["DEFAULT_NAMESPACE", "SNIFFER_SELECTOR", "Collected", "SegmentReader", "collect", "parse_duration"]

Warn = Callable[[str], None]

#: Log reads at once: one per pod, each a stream the kubelet serves.
WORKERS = 8
#: Segments of one log held before they are merged into its running total.
_MERGE_BATCH = 64
_KINDS = frozenset({"header", "flow", "dns", "stats"})


# --- durations ---------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``15m``, ``1h``, ``2h30m`` or ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h, 2h30m or 7d")
    d, h, m, s = (int(g or 0) for g in match.groups())
    seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be longer than 0 seconds")
    return seconds


# --- segments in a log ---------------------------------------------------------------------------


@dataclass
class SegmentReader:
    """Picks the flow-log segments out of a container log, line by line.

    A line is a flow-log line when it is a JSON object whose ``kind`` is header, flow, dns or
    stats (a header also names the format); every other line is ignored. ``close()`` returns the
    merge of the complete segments; ``incomplete`` counts the segments left out for lack of their
    header or stats line, ``left_out`` those left out because they could not be read, by reason.
    """

    segments: int = 0
    incomplete: int = 0
    ignored: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    _done: list[FlowLog] = field(default_factory=list)
    _log: FlowLog | None = None
    _open: bool = False  # inside a segment (a header seen, its stats line not yet)
    _orphan: bool = False  # flow/dns lines without a header (cut off at the start)
    _bad: str | None = None  # why the open segment will be left out
    _sources: tuple[str, ...] = ()
    _flows: list = field(default_factory=list)
    _dns: list = field(default_factory=list)
    _lineno: int = 0

    def feed(self, line: str) -> None:
        self._lineno += 1
        obj = _flow_log_line(line)
        if obj is None:
            self.ignored += 1
            return
        kind = obj["kind"]
        if kind == "header":
            self._close_open()
            self._open, self._orphan, self._bad = True, False, None
            self._sources, self._flows, self._dns = (), [], []
            if obj.get("version") != VERSION:
                self._bad = f"flow log version {obj.get('version')!r} is not supported (this tool reads {VERSION})"
            else:
                sources = obj.get("sources", [])
                if isinstance(sources, list):
                    self._sources = tuple(str(s) for s in sources)
                else:
                    self._bad = f"line {self._lineno}: invalid header: sources is not a list"
            return
        if not self._open:
            self._orphan = True
            return
        if kind == "stats":
            self._open = False
            if self._bad is not None:
                self.left_out[self._bad] = self.left_out.get(self._bad, 0) + 1
                return
            stats = merge_stats({}, {k: v for k, v in obj.items() if k != "kind"})
            self._add(FlowLog(tuple(self._flows), tuple(self._dns), stats, self._sources))
            return
        if self._bad is not None:
            return
        try:
            (self._flows if kind == "flow" else self._dns).append(_flow_from_json(obj) if kind == "flow" else _dns_from_json(obj))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._bad = f"line {self._lineno}: invalid {kind}: {exc}"

    def close(self) -> FlowLog | None:
        """The merge of the complete segments; None when there was none."""
        self._close_open()
        self._fold()
        return self._log

    def _close_open(self) -> None:
        if self._open or self._orphan:
            self.incomplete += 1
        self._open = self._orphan = False

    def _add(self, segment: FlowLog) -> None:
        self.segments += 1
        self._done.append(segment)
        if len(self._done) >= _MERGE_BATCH:
            self._fold()

    def _fold(self) -> None:
        """Merge the segments held into the running total (merging is associative)."""
        if self._done:
            self._log = merge_logs(self._done if self._log is None else [self._log, *self._done])
            self._done = []


def _flow_log_line(line: str) -> dict | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("kind") not in _KINDS:
        return None
    if obj["kind"] == "header" and obj.get("format") != FORMAT:
        return None
    return obj


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text lines from a byte stream (the last one may lack its newline)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            yield line.decode("utf-8", errors="replace")
    if rest:
        yield rest.decode("utf-8", errors="replace")


# --- the API -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    pod: str
    node: str
    container: str
    previous: bool

    @property
    def what(self) -> str:
        return f"the log of the previous {self.container} container" if self.previous else f"the log of container {self.container}"


@dataclass(frozen=True)
class _Result:
    read: _Read
    log: FlowLog | None = None
    segments: int = 0
    incomplete: int = 0
    left_out: tuple[tuple[str, int], ...] = ()  # (reason, segments)
    error: str | None = None  # the log could not be read at all


@dataclass(frozen=True)
class Collected:
    log: FlowLog
    pods: int  # pods that matched the selector
    readable: int  # pods with at least one log read
    segments: int  # complete segments merged
    incomplete: int  # segments left out: cut off by --since, or still being written


def _api_message(exc, doing: str) -> str:
    return api_error_message(exc, doing, "the credentials need list on pods and get on pods/log in that namespace")


def _list_pods(core, namespace: str, selector: str, host: str) -> list[dict]:
    import urllib3
    from kubernetes.client import ApiException

    def call(**kwargs):
        return core.list_namespaced_pod(namespace, label_selector=selector, **kwargs)

    doing = f"cannot list pods in namespace {namespace}"
    try:
        return [p for page in _list_pages(call, 500) for p in page["items"] if isinstance(p, dict)]
    except ApiException as exc:
        if not exc.status:
            raise CollectError(f"cannot reach the API server at {host} (listing pods): {_one_line(exc.reason or '')}") from exc
        raise CollectError(_api_message(exc, doing)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise CollectError(f"cannot reach the API server at {host} (listing pods): {_transport_reason(exc)}") from exc
    except _NotAList as exc:
        raise CollectError(f"{doing}: the answer of {host} is {_one_line(str(exc))}") from exc


def _reads(pods: list[dict]) -> list[_Read]:
    """The logs to read: every container of every pod, and its previous instance if it restarted."""
    out = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        name, node = meta.get("name", "?"), spec.get("nodeName") or "no node yet"
        restarts = {s.get("name"): s.get("restartCount") or 0 for s in (pod.get("status") or {}).get("containerStatuses") or ()}
        for container in spec.get("containers") or ():
            cname = container.get("name")
            if restarts.get(cname, 0) > 0:
                out.append(_Read(name, node, cname, True))
            out.append(_Read(name, node, cname, False))
    return out


def _read_log(core, namespace: str, read: _Read, since_seconds: int | None) -> _Result:
    import urllib3
    from kubernetes.client import ApiException

    kwargs = {"container": read.container, "_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
    if read.previous:
        kwargs["previous"] = True
    if since_seconds is not None:
        kwargs["since_seconds"] = since_seconds
    reader = SegmentReader()
    try:
        response = core.read_namespaced_pod_log(read.pod, namespace, **kwargs)
        try:
            for line in _lines(response.stream(1 << 16)):
                reader.feed(line)
        finally:
            response.release_conn()
    except ApiException as exc:
        if not exc.status:
            return _Result(read, error=f"cannot read {read.what}: {_one_line(exc.reason or '')}")
        return _Result(read, error=_api_message(exc, f"cannot read {read.what}"))
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return _Result(read, error=f"cannot read {read.what}: {_transport_reason(exc)}")
    log = reader.close()
    return _Result(read, log, reader.segments, reader.incomplete, tuple(reader.left_out.items()))


def collect(
    namespace: str = DEFAULT_NAMESPACE,
    selector: str = SNIFFER_SELECTOR,
    kubeconfig: str | os.PathLike | None = None,
    context: str | None = None,
    since_seconds: int | None = None,
    *,
    warn: Warn | None = None,
    workers: int = WORKERS,
) -> Collected:
    """List the sniffer pods, read their logs, and merge the flow-log segments in them.

    ``warn`` gets one line per log that could not be read (naming the pod and its node) and per
    segment that could not be parsed; the result counts what was merged and what was left out.
    """
    from kubernetes.client import ApiClient, CoreV1Api

    warn = warn or (lambda message: None)
    cfg = client_configuration(kubeconfig, context)
    with ApiClient(cfg) as api_client:
        api_client.user_agent = "netpol-learn"
        core = CoreV1Api(api_client)
        pods = _list_pods(core, namespace, selector, cfg.host)
        if not pods:
            raise CollectError(f"no pods in namespace {namespace} match {selector}: is the sniffer running? "
                               f"(netpol-learn manifests --namespace {namespace} | kubectl apply -f -)")
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("name", ""))
        reads = _reads(pods)
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(reads) or 1))) as pool:
            results = list(pool.map(lambda r: _read_log(core, namespace, r, since_seconds), reads))
    readable: set[str] = set()
    logs: list[FlowLog] = []
    segments = incomplete = 0
    for result in results:  # in pod order, so the warnings are too
        where = f"pod {result.read.pod} (node {result.read.node})"
        if result.error is not None:
            warn(f"{where}: {result.error}")
            continue
        readable.add(result.read.pod)
        for reason, n in result.left_out:
            warn(f"{where}, {result.read.what}: {reason}; {n} segment{'' if n == 1 else 's'} left out")
        segments += result.segments
        incomplete += result.incomplete
        if result.log is not None:
            logs.append(result.log)
    if not readable:
        raise CollectError(f"the logs of none of the {len(pods)} sniffer pod(s) in namespace {namespace} could be read")
    if not logs:
        raise CollectError(f"the logs of {len(readable)} sniffer pod(s) in namespace {namespace} hold no complete "
                           "flow-log segment (the sniffer writes one per interval; is --since shorter than it?)")
    return Collected(merge_logs(logs), len(pods), len(readable), segments, incomplete)
