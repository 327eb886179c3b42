"""Running the service: ``serve`` opens the store, decides how tokens are checked, binds the
listening socket (every one of these fails before anything is served, as one ``ServeError``),
starts the identity history and runs the application on uvicorn until SIGTERM or SIGINT.

uvicorn is the ASGI server Starlette's own documentation runs on: a well-kept server with
HTTP/1.1 keep-alive, graceful shutdown (requests in flight finish, new connections are
refused), TLS, and no threads of its own beyond the event loop. The socket is bound here and
handed to it, so that a bad address is our one line, not its log.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netpol_learn._errors import ServeError
from netpol_learn._signals import on_stop
from netpol_learn._kube import SERVICE_ACCOUNT_DIR
from netpol_learn._serve._app import Limits, Service, make_app
from netpol_learn._serve._auth import Authenticator, KubernetesAuth, TokenFile
from netpol_learn._serve._identity import Identity
from netpol_learn._serve._store import Store, open_store

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_SERVICE_NAME = "netpol-learn"
SNIFFER_ACCOUNT = "netpol-learn-sniffer"

Say = Callable[[str], None]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) to (host, port); ``ServeError`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ServeError(f"--listen {text!r}: expected HOST:PORT, such as 127.0.0.1:8080 or [::]:8080")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ServeError(f"--listen {text!r}: give the address to listen on, such as 0.0.0.0:{port}")
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
    # kept-alive connection waits for the delayed ACK between an answer's headers and its body.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def own_namespace() -> str:
    """The namespace this runs in: $POD_NAMESPACE, the service account's, else the default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return (Path(SERVICE_ACCOUNT_DIR) / "namespace").read_text().strip() or "netpol-learn"
    except OSError:
        return "netpol-learn"


@dataclass
class ServeOptions:
    store: str
    listen: str = DEFAULT_LISTEN
    tokens_file: str | None = None
    writers: tuple[str, ...] = ()  # empty: the sniffer's ServiceAccount in the namespace
    namespace: str | None = None  # None: own_namespace()
    service_name: str = DEFAULT_SERVICE_NAME
    kubeconfig: str | None = None
    context: str | None = None
    watch: bool = True
    limits: Limits = field(default_factory=Limits)
    tls_cert: str | None = None
    tls_key: str | None = None


def _authenticator(o: ServeOptions, namespace: str) -> Authenticator:
    if o.tokens_file is not None:
        return TokenFile(o.tokens_file)
    from kubernetes.client import ApiClient

    from netpol_learn._kube import client_configuration

    try:
        cfg = client_configuration(o.kubeconfig, o.context, error=ServeError)
    except ServeError as exc:
        raise ServeError(f"no way to check tokens: give --tokens-file, or run in a cluster ({exc})") from None
    writers = o.writers or (f"system:serviceaccount:{namespace}:{SNIFFER_ACCOUNT}",)
    return KubernetesAuth(ApiClient(cfg), namespace, o.service_name, tuple(writers))


def prepare(o: ServeOptions, *, warn: Say) -> tuple[Service, socket.socket]:
    """Everything that can fail before serving: the store, the tokens, the socket."""
    if (o.tls_cert is None) != (o.tls_key is None):
        raise ServeError("--tls-cert-file and --tls-key-file go together")
    for path in (o.tls_cert, o.tls_key):
        if path is not None and not os.path.isfile(path):
            raise ServeError(f"{path}: no such file")
    host, port = parse_listen(o.listen)
    namespace = o.namespace or own_namespace()
    auth = _authenticator(o, namespace)
    store: Store = open_store(o.store)
    try:
        sock = _bind(host, port)
    except BaseException:
        store.close()
        raise
    identity = None
    if o.watch:
        from netpol_learn._kube import client_configuration

        identity = Identity(store, lambda: client_configuration(o.kubeconfig, o.context), warn=warn)
    return Service(store, auth, identity, o.limits), sock


def serve(o: ServeOptions, *, info: Say, warn: Say, started: Callable[[Service, str], None] | None = None) -> Service:
    """Serve until SIGTERM or SIGINT; returns the stopped service."""
    import uvicorn

    service, sock = prepare(o, warn=warn)
    host, port = sock.getsockname()[:2]
    scheme = "https" if o.tls_cert else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    totals, nodes = service.store.totals(), service.store.nodes()
    info(f"store {service.store.location}: {totals.segments} segments from {len(nodes)} nodes")
    info(f"tokens: {service.auth.description}")
    if service.identity is not None:
        service.identity.start()
    else:
        info("identity history: not watching the API (--no-watch)")
    config = uvicorn.Config(make_app(service), log_config=None, log_level="warning", access_log=False, lifespan="off",
                            ssl_certfile=o.tls_cert, ssl_keyfile=o.tls_key, timeout_graceful_shutdown=10,
                            limit_concurrency=1000, server_header=False)
    server = uvicorn.Server(config)
    info(f"listening on {url}")
    if started is not None:
        started(service, url)
    # uvicorn raises the signal it caught again once it has shut down; with these handlers the
    # process then ends normally, having closed the store.
    try:
        with on_stop(lambda signum, frame: None):
            server.run(sockets=[sock])
    finally:
        service.closing = True
        if service.identity is not None:
            service.identity.join_stopped()
        service.store.close()
        sock.close()
    return service
