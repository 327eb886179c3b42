"""Collect the sniffers' flow logs from their pods' logs: ``netpol-learn collect``.

Each sniffer pod (the DaemonSet of ``netpol-learn manifests``) writes one flow-log segment per
interval to stdout, so its container log is a flow log with other lines in between (the
sniffer's own messages on stderr share the log). ``collect`` lists the pods through the API,
reads each container's log (and that of its previous instance when it restarted) as a stream,
keeps the complete segments (a header, its flow and dns lines, a stats line; docs/flow-log.md;
read by the flow log's own ``SegmentReader``), and merges them all, so that the result equals
``merge`` of the segments.

A pod whose log cannot be read is a warning and the others still count; no pods, or no log that
could be read, is a ``CollectError``. A segment cut off by ``--since`` (its header is older) or
still being written (no stats line yet) is left out: the segments are whole intervals or nothing.

The client comes configured as for ``netpol-learn inventory`` (``netpol_learn._kube``: a
kubeconfig, ``--context``, or the pod's service account; its errors worded the same way), and
``kubernetes`` is imported only when collecting starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from netpol_learn._errors import CollectError
from netpol_learn._flowlog import FlowLog, Segment, SegmentReader, merge_logs
from netpol_learn._kube import (
    REQUEST_TIMEOUT,
    NotAList,
    client_configuration,
    client_error_message,
    list_pages,
    one_line,
    transport_errors,
)
from netpol_learn._manifests import DEFAULT_NAMESPACE, SNIFFER_SELECTOR
from netpol_learn._time import parse_duration as time_duration

__all__ = ["DEFAULT_NAMESPACE", "SNIFFER_SELECTOR", "Collected", "ContainerLog", "collect", "parse_duration"]

Warn = Callable[[str], None]

#: Log reads at once: one per pod, each a stream the kubelet serves.
WORKERS = 8
#: Segments of one log held before they are merged into its running total.
_MERGE_BATCH = 64


# --- durations ---------------------------------------------------------------------------------



def parse_duration(text: str) -> int:
    """Whole seconds in a duration such as ``90s``, ``15m``, ``1h``, ``2h30m`` or ``7d``
    (``netpol_learn._time.parse_duration``), longer than 0."""
    ns = time_duration(text)
    if ns <= 0 or ns % 10**9:
        raise ValueError(f"{text!r}: the duration must be a whole number of seconds, longer than 0")
    return ns // 10**9


# --- segments in a log ---------------------------------------------------------------------------


@dataclass
class ContainerLog:
    """The flow-log segments of one container log, line by line (``SegmentReader``, lenient).

    ``close()`` returns the merge of the complete segments; ``incomplete`` counts the segments
    left out for lack of their header or stats line, ``left_out`` those left out because they
    could not be read, by reason; ``ignored`` the lines that are not flow-log lines.
    """

    segments: int = 0
    incomplete: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    _reader: SegmentReader = field(default_factory=SegmentReader)
    _done: list[FlowLog] = field(default_factory=list)
    _log: FlowLog | None = None

    @property
    def ignored(self) -> int:
        return self._reader.ignored

    def feed(self, line: str) -> None:
        self._take(self._reader.feed(line))

    def close(self) -> FlowLog | None:
        """The merge of the complete segments; None when there was none."""
        self._take(self._reader.close())
        self._fold()
        return self._log

    def _take(self, segment: Segment | None) -> None:
        if segment is None:
            return
        if not segment.complete:
            self.incomplete += 1
        elif segment.problem is not None:
            self.left_out[segment.problem] = self.left_out.get(segment.problem, 0) + 1
        else:
            self.segments += 1
            self._done.append(segment.log)
            if len(self._done) >= _MERGE_BATCH:
                self._fold()

    def _fold(self) -> None:
        """Merge the segments held into the running total (merging is associative)."""
        if self._done:
            self._log = merge_logs(self._done if self._log is None else [self._log, *self._done])
            self._done = []


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


#: The 403 hint of every refused call.
_NEEDS = "the credentials need list on pods and get on pods/log in that namespace"


def _list_pods(core, namespace: str, selector: str, host: str) -> list[dict]:
    from kubernetes.client import ApiException

    def call(**kwargs):
        return core.list_namespaced_pod(namespace, label_selector=selector, **kwargs)

    doing = f"cannot list pods in namespace {namespace}"
    try:
        return [p for page in list_pages(call, 500) for p in page["items"] if isinstance(p, dict)]
    except (ApiException, *transport_errors()) as exc:
        raise CollectError(client_error_message(exc, doing, f"cannot reach the API server at {host} (listing pods)", _NEEDS)) from exc
    except NotAList as exc:
        raise CollectError(f"{doing}: the answer of {host} is {one_line(str(exc))}") from exc


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
    from kubernetes.client import ApiException

    kwargs = {"container": read.container, "_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
    if read.previous:
        kwargs["previous"] = True
    if since_seconds is not None:
        kwargs["since_seconds"] = since_seconds
    reader = ContainerLog()
    try:
        response = core.read_namespaced_pod_log(read.pod, namespace, **kwargs)
        try:
            for line in _lines(response.stream(1 << 16)):
                reader.feed(line)
        finally:
            response.release_conn()
    except (ApiException, *transport_errors()) as exc:
        doing = f"cannot read {read.what}"
        return _Result(read, error=client_error_message(exc, doing, doing, _NEEDS))
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
    cfg = client_configuration(kubeconfig, context, error=CollectError)
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
