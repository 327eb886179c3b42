"""The Kubernetes API: how every command that talks to it finds it, and what its errors say.

**Finding it.** ``client_configuration`` configures the ``kubernetes`` client (``inventory``,
``collect``) as kubectl would: ``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``
(with ``--context``), else the pod's service account. ``in_cluster_credentials`` is the service
account alone (``KUBERNETES_SERVICE_HOST``/``_PORT``, the token and CA under
``SERVICE_ACCOUNT_DIR``), for the sniffer's pod watch, which talks plain ``http.client``.

**Its errors**, each one line: ``api_error_message`` for an HTTP error answer through the client
(what was being done, the status, the server's own message, a hint for 401 and 403);
``client_error_message`` for any failure of a client call (no answer: why, as
``transport_reason`` finds it in urllib3's chain; an answer: ``api_error_message``);
``answer_message`` and ``connection_error`` for the same through ``http.client``.

``kubernetes`` and ``urllib3`` are imported only when a call needs them: the client's generated
API classes take about a second to import, which every other command would pay otherwise.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from netpol_learn._errors import InventoryError, NetpolLearnError

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiException, Configuration

__all__ = [
    "REQUEST_TIMEOUT",
    "SERVICE_ACCOUNT_DIR",
    "InClusterCredentials",
    "NotAList",
    "answer_message",
    "api_error_message",
    "bearer_token",
    "client_configuration",
    "client_error_message",
    "connection_error",
    "in_cluster_credentials",
    "list_pages",
    "one_line",
    "transport_errors",
    "transport_reason",
]

#: Where a pod's service account is mounted.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
# (connect, read) seconds per request of the client; it waits forever by default.
REQUEST_TIMEOUT = (10, 120)


# --- configuration ---------------------------------------------------------------------------


def _kubeconfig_path(kubeconfig: str | os.PathLike | None, error: type[NetpolLearnError]) -> str | None:
    """The kubeconfig to load, as kubectl finds it, or None when there is none."""
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise error(f"kubeconfig {kubeconfig}: no such file")
        return str(path)
    env = os.environ.get("KUBECONFIG", "")
    if env:  # as for kubectl, it replaces ~/.kube/config; files in it that do not exist are ignored
        found = any(Path(p).expanduser().is_file() for p in env.split(os.pathsep) if p)
        return env if found else None  # the client merges the list the way kubectl does
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.is_file() else None


def _in_cluster() -> bool:
    """The environment of a pod: the API's Service address and port (the client needs both)."""
    return bool(os.environ.get(SERVICE_HOST_ENV)) and bool(os.environ.get(SERVICE_PORT_ENV))


def client_configuration(kubeconfig: str | os.PathLike | None = None, context: str | None = None,
                         error: type[NetpolLearnError] = InventoryError) -> Configuration:
    """A client configuration from a kubeconfig or, without one, from the pod's service account;
    ``error`` (the calling stage's error class) when there is none or it cannot be read.

    The process-wide default configuration of the client is left alone.
    """
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException, incluster_config, load_kube_config

    cfg = Configuration()
    path = _kubeconfig_path(kubeconfig, error)
    where = f"kubeconfig {path}" if path is not None else "in-cluster configuration"
    try:
        if path is not None:
            # persist_config=False: never write refreshed tokens back into the user's file.
            load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
        elif _in_cluster():
            if context is not None:
                raise error(f"--context {context}: no kubeconfig found, and in-cluster configuration has no contexts")
            incluster_config.load_incluster_config(client_configuration=cfg)
        else:
            raise error(
                "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster; pass --kubeconfig"
            )
    except ConfigException as exc:
        raise error(f"{where}: {one_line(str(exc))}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{where}: {one_line(getattr(exc, 'strerror', None) or str(exc))}") from exc
    # The config loaders store the token under "authorization"; clients before 37 send it only
    # from "BearerToken" (and network-config-analyzer's PyYAML pin holds test installs at 36).
    for key in ("authorization",):
        if key in cfg.api_key and "BearerToken" not in cfg.api_key:
            cfg.api_key["BearerToken"] = cfg.api_key[key]
            if key in cfg.api_key_prefix:
                cfg.api_key_prefix["BearerToken"] = cfg.api_key_prefix[key]
    return cfg


@dataclass(frozen=True)
class InClusterCredentials:
    url: str  # https://<KUBERNETES_SERVICE_HOST>:<KUBERNETES_SERVICE_PORT>
    token_file: str  # read again for every request: the kubelet rotates the token
    ca_file: str | None  # None: the system's CAs


def in_cluster_credentials(directory: str = SERVICE_ACCOUNT_DIR) -> InClusterCredentials | None:
    """The pod's service account (the API's address, its token and CA files), or None outside a
    cluster (no ``KUBERNETES_SERVICE_HOST``, or no token file in ``directory``)."""
    host, port = os.environ.get(SERVICE_HOST_ENV), os.environ.get(SERVICE_PORT_ENV, "443")
    token = os.path.join(directory, "token")
    if not host or not os.path.isfile(token):
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = os.path.join(directory, "ca.crt")
    return InClusterCredentials(f"https://{host}:{port}", token, ca if os.path.isfile(ca) else None)


def bearer_token(token_file: str) -> str:
    """The ``Authorization`` header of a token file; OSError when it cannot be read."""
    with open(token_file, encoding="utf-8") as fh:
        return "Bearer " + fh.read().strip()


# --- paged lists -----------------------------------------------------------------------------


class NotAList(Exception):
    """An answer of a list call that is not a Kubernetes list (not JSON, or no ``items``)."""


def list_pages(call: Callable, page_size: int | None) -> Iterable[dict]:
    """The pages of one list call of the client, following ``continue`` tokens; no paging when
    page_size is None. The API server's own JSON (``_preload_content=False``), not the client's models."""
    cont = None
    while True:
        kwargs = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}
        if page_size is not None:
            kwargs["limit"] = page_size
        if cont:
            kwargs["_continue"] = cont
        response = call(**kwargs)
        try:
            page = json.loads(response.data)
        except ValueError as exc:
            raise NotAList(f"not JSON ({exc})") from exc
        finally:
            response.release_conn()
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise NotAList("not a Kubernetes list")
        yield page
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return


# --- errors of the client ----------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def transport_errors() -> tuple[type[BaseException], ...]:
    """The errors a call of the client raises when no HTTP answer came (besides an
    ``ApiException`` without a status)."""
    import urllib3  # imported here: loading it costs every command's start-up

    return (urllib3.exceptions.HTTPError, OSError)


def transport_reason(exc: BaseException) -> str:
    """The root cause of a transport error, without urllib3's object reprs."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {node.verify_message}"
        if isinstance(node, ssl.SSLError):
            return f"TLS error: {node.reason or node}"
        import urllib3  # imported here: loading it costs every command's start-up

        # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: look at its cause instead.
        timeout = (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError)
        if isinstance(node, timeout) and not isinstance(node, urllib3.exceptions.NewConnectionError):
            return "timed out"
        if isinstance(node, OSError) and node.strerror:
            return node.strerror
        following = getattr(node, "reason", None)
        if not isinstance(following, BaseException):
            following = node.__cause__ or node.__context__
        node = following
    text = str(exc)
    return one_line(text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text)


def _status(body) -> dict | None:
    """The Status object an API server sends with an error answer; None when the body is not one."""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _status_message(exc: ApiException) -> str:
    """The message of the Status object the API server sends with an error, if any."""
    status = _status(exc.body or "")
    return one_line(status.get("message", "")) if status is not None else ""


def api_error_message(exc: ApiException, doing: str, hint_403: str | None = None) -> str:
    """One line for an HTTP error answer of the API: what was being done, the status, the
    server's own message, and a hint for the usual causes of 401 and 403."""
    message = f"{doing}: HTTP {exc.status} {exc.reason or ''}".rstrip()
    detail = _status_message(exc)
    if detail and detail.lower() != (exc.reason or "").lower():
        message += f": {detail}"
    if exc.status == 401:
        message += " (the API server rejected the credentials)"
    elif exc.status == 403 and hint_403:
        message += f" ({hint_403})"
    return message


def client_error_message(exc: BaseException, doing: str, unreachable: str, hint_403: str | None = None) -> str:
    """One line for what a call of the client raised (an ``ApiException`` or one of
    ``transport_errors()``): ``<unreachable>: <why>`` when no HTTP answer came, else
    ``api_error_message(exc, doing, hint_403)``."""
    from kubernetes.client import ApiException

    if isinstance(exc, ApiException):
        if not exc.status:  # the client's wrapping of a TLS or request error, not an HTTP answer
            return f"{unreachable}: {one_line(exc.reason or '')}"
        return api_error_message(exc, doing, hint_403)
    return f"{unreachable}: {transport_reason(exc)}"


# --- errors through http.client ----------------------------------------------------------------


def answer_message(status: int, reason: str, body: bytes) -> str:
    """``HTTP 403 Forbidden: <the server's message>`` for an error answer read with ``http.client``
    (the start of the body when it is not a Status object)."""
    obj = _status(body)
    message = (obj.get("message") or "") if obj is not None else body[:200].decode(errors="replace")
    return f"HTTP {status} {reason}" + (f": {message}" if message else "")


def connection_error(exc: BaseException) -> str:
    """Why a request through ``http.client`` got no answer, in a few words."""
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
