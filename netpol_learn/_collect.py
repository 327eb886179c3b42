"""Collect the sniffers' flow logs: ``netpol-learn collect``, from the learning service or from
the sniffer pods' logs.

The learning service (``netpol-learn serve``) holds every segment the sniffers sent it, each
once; ``collect_from_service`` reads its merged flow log (and inventory) straight from a URL, or
through the API server's service proxy when the Service ``netpol-learn`` exists (see the section
on the service below). Without it, the logs, which are lossy (rotated by the kubelet, a
restarted container's earlier log readable only once, overlapping collections counted twice):

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

import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from netpol_learn._errors import CollectError, FlowLogError, InventoryError
from netpol_learn._flowlog import FlowLog, Segment, SegmentReader, merge_logs
from netpol_learn._kube import (
    REQUEST_TIMEOUT,
    NotAList,
    bearer_token,
    client_configuration,
    client_error_message,
    list_pages,
    one_line,
    transport_errors,
    transport_reason,
)
from netpol_learn._manifests import DEFAULT_NAMESPACE, SERVICE_NAME, SNIFFER_SELECTOR
from netpol_learn._time import parse_duration as time_duration

__all__ = [
    "DEFAULT_NAMESPACE",
    "SERVICE_NAME",
    "SERVICE_PORT_NAME",
    "SNIFFER_SELECTOR",
    "TOKEN_HEADER",
    "Collected",
    "ContainerLog",
    "FromService",
    "collect",
    "collect_from_service",
    "parse_duration",
    "read_token",
]

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


# --- the learning service ------------------------------------------------------------------------
#
# ``netpol-learn serve`` keeps every segment the sniffers sent it, exactly once, and the identity
# history; its ``GET /v1/flows`` is the merge of them (``?since=``), ``GET /v1/inventory`` the
# snapshot plus history. ``collect`` reads them directly (``--server URL``: a port-forward, an
# ingress) or finds the service through the API: Service ``netpol-learn`` in the namespace, reached
# through the API server's service proxy with the user's own kubeconfig credentials (client
# certificates, tokens, exec plugins alike: the kubernetes client makes the request). The API
# server consumes the ``Authorization`` header of a proxied request (it authenticates the user
# with it), so the service's token travels in ``Netpol-Learn-Token``.

#: The name of the port of the learning service's Service (``SERVICE_NAME``, as ``netpol-learn
#: manifests`` renders it) that the service proxy reaches.
SERVICE_PORT_NAME = "http"
#: The header that carries the service's token through the API server's service proxy.
TOKEN_HEADER = "Netpol-Learn-Token"

_TOKEN_HINT = ("give --token-file with a token the service accepts (e.g. `kubectl create token SERVICEACCOUNT -n {ns} > token`, "
               "for a ServiceAccount that may get services/proxy {name} there)")
_PROXY_NEEDS = "the credentials need get on services and services/proxy {name} in namespace {ns}"


@dataclass(frozen=True)
class FromService:
    """What ``collect_from_service`` read: the merged flow log, and the inventory when asked for
    (the JSON the service answered, as it answered it, checked by the inventory loader)."""

    log: FlowLog
    inventory: bytes | None
    objects: int  # objects in the inventory's snapshot (0 without one)
    changes: int  # entries of its history
    where: str  # the service, as the summary names it


def read_token(token_file: str | os.PathLike) -> str:
    """The token in a token file (surrounding white space removed); ``CollectError`` when it
    cannot be read or is empty."""
    try:
        token = bearer_token(token_file).removeprefix("Bearer ")
    except (OSError, UnicodeDecodeError) as exc:
        raise CollectError(f"--token-file {token_file}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from exc
    if not token:
        raise CollectError(f"--token-file {token_file}: empty")
    return token


def _answer_text(body: bytes) -> str:
    """The one line an error answer holds: the service's ``{"error": ...}``, an API server's
    ``Status`` message, else the start of the body."""
    try:
        obj = json.loads(body)
    except (TypeError, ValueError):
        obj = None
    if isinstance(obj, dict):
        for key in ("error", "message"):
            if isinstance(obj.get(key), str) and obj[key].strip():
                return one_line(obj[key])
    return one_line(body[:200].decode("utf-8", errors="replace"))


def _http_error(doing: str, status: int, reason: str, body: bytes, hint_403: str | None = None) -> CollectError:
    message = f"{doing}: HTTP {status} {reason or ''}".rstrip()
    text = _answer_text(body)
    if text and text.lower() != (reason or "").lower():
        message += f": {text}"
    if status == 403 and hint_403:
        message += f" ({hint_403})"
    return CollectError(message)


def _flow_log_of(body: bytes, name: str) -> FlowLog:
    """The flow log an answer holds, read strictly by the flow log's own segment reader, as
    ``read_flow_log`` reads a file: a ``CollectError`` naming ``name`` and the line otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollectError(f"{name}: not a flow log (not UTF-8 text)") from exc
    reader = SegmentReader(strict=True, name=name)
    logs: list[FlowLog] = []
    try:
        for line in text.splitlines(keepends=True):
            if (segment := reader.feed(line)) is not None:
                logs.append(segment.log)
        if (segment := reader.close()) is not None:
            logs.append(segment.log)
    except FlowLogError as exc:
        raise CollectError(f"not a flow log this tool reads: {exc}") from exc
    if reader.lineno == 0:
        raise CollectError(f"{name}: empty, not a flow log")
    try:
        return merge_logs(logs)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # stats counters of other types in two segments
        raise CollectError(f"{name}: invalid stats: {exc}") from exc


def _inventory_of(body: bytes, name: str) -> tuple[int, int]:
    """Check an inventory answer with the inventory loader (as ``--inventory`` will read the
    file): a JSON List of objects with its history. The number of objects and of history entries."""
    from netpol_learn._inventory import load_inventory_document

    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CollectError(f"{name}: not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "List" or not isinstance(doc.get("items"), list):
        raise CollectError(f"{name}: not an inventory (a JSON List with items, as `inventory --watch` writes)")
    history = doc.get("history") or []
    if not isinstance(history, list):
        raise CollectError(f"{name}: history: not a list")
    try:
        load_inventory_document(doc, name)
    except InventoryError as exc:
        raise CollectError(f"not an inventory this tool reads: {exc}") from exc
    return len(doc["items"]), len(history)


class _Direct:
    """The service at a URL (``--server``): plain HTTP(S) through urllib3, ``Authorization: Bearer``."""

    def __init__(self, url: str, token: str, ca_file: str | os.PathLike | None = None):
        import urllib3

        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise CollectError(f"--server {url}: not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.where = f"service at {self.url}"
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": "netpol-learn"}
        if ca_file is not None and not os.path.isfile(ca_file):
            raise CollectError(f"--ca-file {ca_file}: no such file")
        self.pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=REQUEST_TIMEOUT[1]), retries=False,
                                        ca_certs=None if ca_file is None else str(ca_file))

    def get(self, path: str, query: list[tuple[str, str]]) -> bytes:
        doing = f"GET {path} of the service at {self.url}"
        try:
            r = self.pool.request("GET", self.url + path, fields=query or None, headers=self.headers)
        except transport_errors() as exc:
            raise CollectError(f"cannot reach the service at {self.url}: {transport_reason(exc)}") from exc
        if not 200 <= r.status <= 299:
            raise _http_error(doing, r.status, r.reason, r.data, "the token has no read role")
        return r.data

    def close(self) -> None:
        self.pool.clear()


class _Proxied:
    """The service through the API server's service proxy, with the kubeconfig's credentials;
    the service's token in ``Netpol-Learn-Token``."""

    def __init__(self, api_client, namespace: str, token: str, host: str):
        self.api_client = api_client
        self.namespace = namespace
        self.base = f"/api/v1/namespaces/{namespace}/services/{SERVICE_NAME}:{SERVICE_PORT_NAME}/proxy"
        self.token = token
        self.where = f"service {namespace}/{SERVICE_NAME} through the API server at {host}"
        self.host = host

    def get(self, path: str, query: list[tuple[str, str]]) -> bytes:
        from kubernetes.client import ApiException

        doing = f"GET {path} of service {self.namespace}/{SERVICE_NAME} (through the API server's service proxy)"
        try:
            r = self.api_client.call_api(
                self.base + path, "GET", query_params=query, header_params={TOKEN_HEADER: self.token, "Accept": "*/*"},
                auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if not exc.status:
                raise CollectError(f"cannot reach the API server at {self.host}: {one_line(exc.reason or '')}") from exc
            raise _http_error(doing, exc.status, exc.reason, exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode(),
                              f"the token has no read role, or {_PROXY_NEEDS.format(name=SERVICE_NAME, ns=self.namespace)}") from exc
        except transport_errors() as exc:
            raise CollectError(f"cannot reach the API server at {self.host}: {transport_reason(exc)}") from exc
        try:
            return r.data
        finally:
            r.release_conn()

    def close(self) -> None:
        pass


def _read(client, since_seconds: int | None, inventory: bool) -> FromService:
    query = [("since", f"{since_seconds}s")] if since_seconds is not None else []
    log = _flow_log_of(client.get("/v1/flows", query), "GET /v1/flows")
    body, objects, changes = None, 0, 0
    if inventory:
        body = client.get("/v1/inventory", [])
        objects, changes = _inventory_of(body, "GET /v1/inventory")
    return FromService(log, body, objects, changes, client.where)


def _kubeconfig_token(cfg) -> str | None:
    """The bearer token of the kubeconfig's user (a token, or one an exec plugin gave), if any;
    None for client certificates and basic auth."""
    value = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken") or ""
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def collect_from_service(
    server: str | None = None,
    token_file: str | os.PathLike | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    kubeconfig: str | os.PathLike | None = None,
    context: str | None = None,
    since_seconds: int | None = None,
    inventory: bool = False,
    ca_file: str | os.PathLike | None = None,
) -> FromService | None:
    """Read the merged flow log (and, with ``inventory``, the inventory) from the learning service.

    With ``server`` (a URL), straight from it, with the token in ``token_file`` as
    ``Authorization: Bearer``. Without, through the API with the kubeconfig (as ``collect``):
    Service ``netpol-learn`` in ``namespace`` is read, and the service reached through the API
    server's service proxy, its token (``token_file``, else the kubeconfig's own bearer token) in
    the ``Netpol-Learn-Token`` header; None when that Service does not exist (HTTP 404), for the
    caller to read the sniffer pods' logs instead (``collect``). Everything the service answered
    is checked (the flow log by the flow log's reader, the inventory by the inventory loader)
    before it is returned; any failure is a ``CollectError`` of one line.
    """
    if server is not None:
        if token_file is None:
            raise CollectError(f"--server {server}: give --token-file with a token of the read role")
        client = _Direct(server, read_token(token_file), ca_file)
        try:
            return _read(client, since_seconds, inventory)
        finally:
            client.close()
    from kubernetes.client import ApiClient, ApiException, CoreV1Api

    cfg = client_configuration(kubeconfig, context, error=CollectError)
    with ApiClient(cfg) as api_client:
        api_client.user_agent = "netpol-learn"
        doing = f"cannot read Service {SERVICE_NAME} in namespace {namespace}"
        try:
            response = CoreV1Api(api_client).read_namespaced_service(
                SERVICE_NAME, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            try:
                service = json.loads(response.data)
            finally:
                response.release_conn()
        except ApiException as exc:
            if exc.status == 404:
                return None
            needs = _PROXY_NEEDS.format(name=SERVICE_NAME, ns=namespace) + "; --from-logs reads the sniffer pods' logs instead"
            raise CollectError(client_error_message(exc, doing, f"cannot reach the API server at {cfg.host} (reading Service {SERVICE_NAME})", needs)) from exc
        except transport_errors() as exc:
            raise CollectError(client_error_message(exc, doing, f"cannot reach the API server at {cfg.host} (reading Service {SERVICE_NAME})")) from exc
        except ValueError as exc:
            raise CollectError(f"{doing}: the answer of {cfg.host} is not JSON") from exc
        ports = ((service.get("spec") or {}).get("ports") or []) if isinstance(service, dict) else []
        if not any(isinstance(p, dict) and p.get("name") == SERVICE_PORT_NAME for p in ports):
            raise CollectError(f"Service {SERVICE_NAME} in namespace {namespace} has no port named {SERVICE_PORT_NAME} "
                               "(the one netpol-learn manifests renders has)")
        if token_file is not None:
            token = read_token(token_file)
        else:
            token = _kubeconfig_token(cfg)
            if token is None:
                raise CollectError(f"the learning service in namespace {namespace} needs a token and the kubeconfig's "
                                   f"credentials hold none: " + _TOKEN_HINT.format(ns=namespace, name=SERVICE_NAME))
        return _read(_Proxied(api_client, namespace, token, cfg.host), since_seconds, inventory)
