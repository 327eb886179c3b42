"""Pieces shared by the tests that run the real ``kubernetes`` client against a local server
speaking the Kubernetes API's JSON (no real API server can run here).

``LocalApiServer`` answers what a subclass says; ``WatchApiServer`` serves the list and watch
calls of every kind ``netpol-learn inventory`` reads from objects that a test changes while a
client watches (watch streams, expired resourceVersions, dropped connections, errors).
``service_object`` is a Service as the API answers it; ``service_proxy_path`` and ``forward`` are
the API server's service proxy (``/api/v1/namespaces/NS/services/NAME:PORT/proxy/...``) to a
backend URL, without the ``Authorization`` header, which the API server consumes.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from kubernetes.config import incluster_config


def status(code: int, reason: str, message: str, **extra) -> dict:
    """A ``Status`` object, as the API answers an error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": extra.pop("metadata", {}), "status": "Failure",
            "message": message, "reason": reason, "details": extra, "code": code}


@pytest.fixture(autouse=True)
def no_ambient_cluster(tmp_path, monkeypatch):
    """No kubeconfig, service account or proxy of the machine running the tests leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "no-such-token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "no-such-ca.crt"))


class LocalApiServer:
    """A threaded HTTP(S) server on 127.0.0.1 standing in for the API server.

    Subclasses answer in ``handle(request, path, query)``; ``request.send_json(code, body)``
    answers as the API does (JSON, an Audit-Id). Use it as a context manager."""

    def __init__(self, tls: Path | None = None, port: int = 0):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall per answer

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                server.handle(self, unquote(url.path), {k: v[0] for k, v in parse_qs(url.query).items()})

            def do_POST(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.handle_post(self, unquote(url.path), {k: v[0] for k, v in parse_qs(url.query).items()}, body)

            def send_json(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Audit-Id", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            # A watch answer: 200, then chunks as they come (one JSON event a line), then the last chunk.

            def start_chunks(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Audit-Id", str(uuid.uuid4()))
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def send_chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            def end_chunks(self) -> None:
                self.wfile.write(b"0\r\n\r\n")

            def drop(self) -> None:
                """Break the connection off mid-answer, without the last chunk."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        report = self.httpd.handle_error

        def handle_error(request, client_address):  # a client that hung up is no error of the server's
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                report(request, client_address)

        self.httpd.handle_error = handle_error
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls / "tls.crt", tls / "tls.key")
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def handle(self, request, path: str, query: dict) -> None:
        raise NotImplementedError

    def handle_post(self, request, path: str, query: dict, body: bytes) -> None:
        request.send_json(405, status(405, "MethodNotAllowed", f"POST {path} is not served here"))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


#: What ``netpol-learn inventory`` lists, by kind: (list path, apiVersion).
KIND_PATHS = {
    "Namespace": ("/api/v1/namespaces", "v1"), "Node": ("/api/v1/nodes", "v1"), "Pod": ("/api/v1/pods", "v1"),
    "Service": ("/api/v1/services", "v1"), "EndpointSlice": ("/apis/discovery.k8s.io/v1/endpointslices", "discovery.k8s.io/v1"),
    "Endpoints": ("/api/v1/endpoints", "v1"), "ReplicaSet": ("/apis/apps/v1/replicasets", "apps/v1"),
    "Deployment": ("/apis/apps/v1/deployments", "apps/v1"), "StatefulSet": ("/apis/apps/v1/statefulsets", "apps/v1"),
    "DaemonSet": ("/apis/apps/v1/daemonsets", "apps/v1"), "Job": ("/apis/batch/v1/jobs", "batch/v1"),
    "CronJob": ("/apis/batch/v1/cronjobs", "batch/v1"),
}
_KIND_OF_PATH = {path: (kind, api_version) for kind, (path, api_version) in KIND_PATHS.items()}


def _object_key(obj: dict) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


class WatchApiServer(LocalApiServer):
    """The list and watch calls of every kind in ``KIND_PATHS``, over objects (with ``kind`` set)
    that a test changes while a client watches, as an API server backed by etcd would serve them.

    ``add``, ``modify`` and ``delete`` change objects: each change takes the next resourceVersion
    and is kept as a watch event. A list answers the objects as they stand (items without
    ``apiVersion``/``kind``) with the current resourceVersion; a watch (``?watch=true``) answers
    200 and, chunked, one JSON event a line: the events of its path after its
    ``resourceVersion``, then each new one as it happens, a ``BOOKMARK`` every
    ``bookmark_every`` seconds when asked (``allowWatchBookmarks``), until ``timeoutSeconds``.

    Faults: ``compact()`` (a watch from an older resourceVersion gets a 410 ``ERROR`` event, as
    etcd compaction gives); ``faults[path]``, answers for the next watch requests of a path
    (``"500"``, ``"410"`` as HTTP statuses); ``drop(path, after=n)`` (the open watch of a path
    breaks its connection off after ``n`` more events); ``hold(path)`` (open watches of a path
    send nothing until ``release(path)``). ``requests`` records every (path, query);
    ``watching(path)`` counts the watches of a path open now."""

    def __init__(self, objects=(), *, tls=None, bookmark_every: float = 0.2, port: int = 0):
        super().__init__(tls, port)
        self.changed = threading.Condition()
        self.version = 1000
        self.store: dict[str, dict[tuple, dict]] = {path: {} for path, _ in KIND_PATHS.values()}
        self.log: list[tuple[int, str, str, dict]] = []  # (resourceVersion, path, type, object)
        self.compacted = 0
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.drops: dict[str, int] = {}
        self.held: set[str] = set()
        self.open: dict[str, int] = defaultdict(int)
        self.requests: list[tuple[str, dict]] = []
        self.bookmark_every = bookmark_every
        self.closing = False
        for obj in objects:
            self._change("ADDED", obj)

    # --- what tests do ---

    def _change(self, kind: str, obj: dict) -> int:
        path = KIND_PATHS[obj["kind"]][0]
        obj = copy.deepcopy(obj)
        with self.changed:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            obj["metadata"].setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(_object_key(obj)) + obj["kind"])))
            if kind == "DELETED":
                self.store[path].pop(_object_key(obj), None)
            else:
                self.store[path][_object_key(obj)] = obj
            self.log.append((self.version, path, kind, copy.deepcopy(obj)))
            self.changed.notify_all()
            return self.version

    def add(self, *objects: dict) -> list[int]:
        """Create objects; their resourceVersions."""
        with self.changed:  # one change set: a watch sends them together
            return [self._change("ADDED", o) for o in objects]

    def modify(self, *objects: dict) -> list[int]:
        with self.changed:
            return [self._change("MODIFIED", o) for o in objects]

    def delete(self, kind: str, namespace: str, name: str) -> int:
        with self.changed:
            return self._change("DELETED", self.store[KIND_PATHS[kind][0]][(namespace, name)])

    def get(self, kind: str, namespace: str, name: str) -> dict:
        with self.changed:
            return copy.deepcopy(self.store[KIND_PATHS[kind][0]][(namespace, name)])

    def compact(self) -> None:
        with self.changed:
            self.compacted = self.version

    def drop(self, path: str, after: int = 0) -> None:
        with self.changed:
            self.drops[path] = after
            self.changed.notify_all()

    def hold(self, path: str) -> None:
        with self.changed:
            self.held.add(path)

    def release(self, path: str) -> None:
        with self.changed:
            self.held.discard(path)
            self.changed.notify_all()

    def watching(self, path: str) -> int:
        with self.changed:
            return self.open[path]

    def watch_requests(self, path: str) -> list[dict]:
        return [q for p, q in list(self.requests) if p == path and str(q.get("watch")).lower() in ("true", "1")]

    def __exit__(self, *exc):
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        super().__exit__(*exc)

    # --- what the client sees ---

    def handle(self, request, path: str, query: dict) -> None:
        self.requests.append((path, query))
        if path not in _KIND_OF_PATH:
            request.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
        elif str(query.get("watch")).lower() in ("true", "1"):
            self._watch(request, path, query)
        else:
            kind, api_version = _KIND_OF_PATH[path]
            with self.changed:
                items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for _, o in sorted(self.store[path].items())]
                version = self.version
            request.send_json(200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": {"resourceVersion": str(version)},
                                    "items": copy.deepcopy(items)})

    def _watch(self, request, path: str, query: dict) -> None:
        kind, api_version = _KIND_OF_PATH[path]
        with self.changed:
            fault = self.faults[path].pop(0) if self.faults[path] else None
        if fault == "500":
            request.send_json(500, status(500, "InternalError", "etcdserver: request timed out"))
            return
        if fault == "410":
            request.send_json(410, status(410, "Gone", "too old resource version"))
            return
        sent = int(query.get("resourceVersion") or self.version)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 300)
        bookmarks = str(query.get("allowWatchBookmarks")).lower() in ("true", "1")
        request.start_chunks()
        if sent < self.compacted:
            expired = status(410, "Expired", f"too old resource version: {sent} ({self.compacted})")
            request.send_chunk(json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n")
            request.end_chunks()
            return
        with self.changed:
            self.open[path] += 1
        try:
            self._stream(request, path, kind, api_version, sent, deadline, bookmarks)
        except OSError:  # the client went away
            pass
        finally:
            with self.changed:
                self.open[path] -= 1

    def _stream(self, request, path, kind, api_version, sent, deadline, bookmarks) -> None:
        next_bookmark = time.monotonic() + self.bookmark_every
        while True:
            with self.changed:
                while True:
                    if self.closing or time.monotonic() >= deadline:
                        request.end_chunks()
                        return
                    pending = [] if path in self.held else [e for e in self.log if e[0] > sent and e[1] == path]
                    if pending or self.drops.get(path) == 0 or (bookmarks and time.monotonic() >= next_bookmark):
                        break
                    self.changed.wait(0.02)
                version = self.version
            for rv, _, event, obj in pending:
                with self.changed:
                    if self.drops.get(path) == 0:
                        break
                    if path in self.drops:
                        self.drops[path] -= 1
                request.send_chunk(json.dumps({"type": event, "object": obj}).encode() + b"\n")
                sent = rv
            with self.changed:
                if self.drops.get(path) == 0:
                    del self.drops[path]
                    request.drop()
                    return
            if bookmarks and time.monotonic() >= next_bookmark and path not in self.held:
                mark = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(version)}}
                request.send_chunk(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                sent = max(sent, version)
                next_bookmark = time.monotonic() + self.bookmark_every


# --- Services, and the API server's service proxy -------------------------------------------------


def service_object(name: str, namespace: str, ports=(("http", 8080),), selector: dict | None = None) -> dict:
    """A ClusterIP ``Service`` as ``GET /api/v1/namespaces/{ns}/services/{name}`` answers it."""
    return {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
                     "resourceVersion": "51300", "creationTimestamp": "2026-02-10T09:00:00Z",
                     "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "netpol-learn"}},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.200.10", "clusterIPs": ["10.96.200.10"], "ipFamilies": ["IPv4"],
                 "selector": selector or {"app.kubernetes.io/name": name},
                 "ports": [{"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"} for port_name, port in ports]},
        "status": {"loadBalancer": {}},
    }


def service_proxy_path(path: str) -> tuple[str, str, str, str] | None:
    """(namespace, service, port, rest) of ``/api/v1/namespaces/NS/services/NAME[:PORT]/proxy[/REST]``; None for other paths."""
    parts = path.split("/")
    if parts[:4] != ["", "api", "v1", "namespaces"] or len(parts) < 7 or parts[5] != "services" or parts[7:8] != ["proxy"]:
        return None
    name, _, port = parts[6].partition(":")
    return parts[4], name, port, "/" + "/".join(parts[8:])


#: Headers that are the connection's own (RFC 9110 7.6.1), never forwarded by a proxy, and
#: Authorization, which the API server's authentication consumes before it proxies.
_NOT_FORWARDED = {"authorization", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}


def forward(request, backend: str | None, rest: str, service: str) -> None:
    """Answer as the API server's service proxy does: the GET forwarded to ``backend`` (a URL; None
    when the Service has no ready endpoint) at ``rest`` with the request's query and headers but
    ``Authorization``, and the backend's answer sent back as it came (status, type, body)."""
    import http.client

    if backend is None:
        request.send_json(503, status(503, "ServiceUnavailable", f'no endpoints available for service "{service}"'))
        return
    url = urlsplit(backend)
    query = urlsplit(request.path).query
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    headers["X-Forwarded-For"] = request.client_address[0]
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.request("GET", rest + (f"?{query}" if query else ""), headers=headers)
        answer = connection.getresponse()
        body = answer.read()
    except OSError as exc:
        request.send_json(503, status(503, "ServiceUnavailable", f"error trying to reach service: dial tcp {url.netloc}: {exc}"))
        return
    finally:
        connection.close()
    request.send_response(answer.status, answer.reason)
    for key in ("Content-Type", "Content-Encoding", "WWW-Authenticate"):
        if answer.getheader(key):
            request.send_header(key, answer.getheader(key))
    request.send_header("Audit-Id", str(uuid.uuid4()))
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)
