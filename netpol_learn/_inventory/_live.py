"""Read the cluster inventory from a live API server with the official ``kubernetes`` client.

The result has the shape of ``kubectl get ns,nodes,pods,services,endpointslices,endpoints,
replicasets,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o yaml``: a ``List`` whose items
carry ``apiVersion`` and ``kind`` and no ``metadata.managedFields`` (kubectl hides them too). The
objects are the API server's own JSON (``_preload_content=False``), not the client's models, so
nothing is renamed to snake_case or dropped by an older client.

Every error of the client (``ApiException``, urllib3's transport errors, ``ConfigException``) is
translated here into ``InventoryError``, one line naming the resource and the HTTP status.

``kubernetes`` is imported only when a listing starts: its generated API classes take about a
second to import, which every other command would pay otherwise.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import yaml

from netpol_learn._errors import InventoryError
from netpol_learn._inventory._model import SNAPSHOT_ANNOTATION
from netpol_learn._output import write_text

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient, ApiException, Configuration

DEFAULT_PAGE_SIZE = 500
# (connect, read) seconds per request; the client waits forever by default.
REQUEST_TIMEOUT = (10, 120)


class Kind(NamedTuple):
    kind: str
    api_version: str
    api: str  # the class in kubernetes.client
    method: str
    resource: str  # as kubectl names it in messages: plural, with the API group


# In the order of `kubectl get ns,nodes,pods,services,endpointslices,endpoints,replicasets,...`.
KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "v1", "CoreV1Api", "list_namespace", "namespaces"),
    Kind("Node", "v1", "CoreV1Api", "list_node", "nodes"),
    Kind("Pod", "v1", "CoreV1Api", "list_pod_for_all_namespaces", "pods"),
    Kind("Service", "v1", "CoreV1Api", "list_service_for_all_namespaces", "services"),
    Kind("EndpointSlice", "discovery.k8s.io/v1", "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces", "endpointslices.discovery.k8s.io"),
    Kind("Endpoints", "v1", "CoreV1Api", "list_endpoints_for_all_namespaces", "endpoints"),
    Kind("ReplicaSet", "apps/v1", "AppsV1Api", "list_replica_set_for_all_namespaces", "replicasets.apps"),
    Kind("Deployment", "apps/v1", "AppsV1Api", "list_deployment_for_all_namespaces", "deployments.apps"),
    Kind("StatefulSet", "apps/v1", "AppsV1Api", "list_stateful_set_for_all_namespaces", "statefulsets.apps"),
    Kind("DaemonSet", "apps/v1", "AppsV1Api", "list_daemon_set_for_all_namespaces", "daemonsets.apps"),
    Kind("Job", "batch/v1", "BatchV1Api", "list_job_for_all_namespaces", "jobs.batch"),
    Kind("CronJob", "batch/v1", "BatchV1Api", "list_cron_job_for_all_namespaces", "cronjobs.batch"),
)
KIND_ORDER = {k.kind: i for i, k in enumerate(KINDS)}

Warn = Callable[[str], None]
Progress = Callable[[str, int], None]  # (resource, objects listed so far of it)


# --- configuration ---------------------------------------------------------------------------


def _kubeconfig_path(kubeconfig: str | os.PathLike | None) -> str | None:
    """The kubeconfig to load, as kubectl finds it, or None when there is none."""
    if kubeconfig is not None:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise InventoryError(f"kubeconfig {kubeconfig}: no such file")
        return str(path)
    env = os.environ.get("KUBECONFIG", "")
    if env:  # as for kubectl, it replaces ~/.kube/config; files in it that do not exist are ignored
        found = any(Path(p).expanduser().is_file() for p in env.split(os.pathsep) if p)
        return env if found else None  # the client merges the list the way kubectl does
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.is_file() else None


def _in_cluster() -> bool:
    from kubernetes.config import incluster_config

    return bool(os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME)) and bool(
        os.environ.get(incluster_config.SERVICE_PORT_ENV_NAME)
    )


def client_configuration(kubeconfig: str | os.PathLike | None = None, context: str | None = None) -> Configuration:
    """A client configuration from a kubeconfig or, without one, from the pod's service account.

    The process-wide default configuration of the client is left alone.
    """
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException, incluster_config, load_kube_config

    cfg = Configuration()
    path = _kubeconfig_path(kubeconfig)
    where = f"kubeconfig {path}" if path is not None else "in-cluster configuration"
    try:
        if path is not None:
            # persist_config=False: never write refreshed tokens back into the user's file.
            load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
        elif _in_cluster():
            if context is not None:
                raise InventoryError(f"--context {context}: no kubeconfig found, and in-cluster configuration has no contexts")
            incluster_config.load_incluster_config(client_configuration=cfg)
        else:
            raise InventoryError(
                "no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster; pass --kubeconfig"
            )
    except ConfigException as exc:
        raise InventoryError(f"{where}: {_one_line(str(exc))}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise InventoryError(f"{where}: {_one_line(getattr(exc, 'strerror', None) or str(exc))}") from exc
    # The config loaders store the token under "authorization"; clients before 37 send it only
    # from "BearerToken" (and network-config-analyzer's PyYAML pin holds test installs at 36).
    for key in ("authorization",):
        if key in cfg.api_key and "BearerToken" not in cfg.api_key:
            cfg.api_key["BearerToken"] = cfg.api_key[key]
            if key in cfg.api_key_prefix:
                cfg.api_key_prefix["BearerToken"] = cfg.api_key_prefix[key]
    return cfg


# --- listing ---------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _transport_reason(exc: BaseException) -> str:
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
    return _one_line(text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text)


def _status_message(exc: ApiException) -> str:
    """The message of the Status object the API server sends with an error, if any."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    return _one_line(status.get("message", "")) if isinstance(status, dict) else ""


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


def _api_error(kind: Kind, host: str, exc: ApiException) -> InventoryError:
    if not exc.status:  # the client's wrapping of a TLS or request error, not an HTTP answer
        return InventoryError(f"cannot reach the API server at {host} (listing {kind.resource}): {_one_line(exc.reason or '')}")
    return InventoryError(api_error_message(exc, f"cannot list {kind.resource}"))


class _NotAList(Exception):
    pass


def _list_pages(call: Callable, page_size: int | None) -> Iterable[dict]:
    """The pages of one list call, following ``continue`` tokens; no paging when page_size is None."""
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
            raise _NotAList(f"not JSON ({exc})") from exc
        finally:
            response.release_conn()
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise _NotAList("not a Kubernetes list")
        yield page
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return


def _list_kind(api_client: ApiClient, kind: Kind, page_size: int, warn: Warn, progress: Progress | None) -> list[dict] | None:
    """All objects of one kind, following ``continue`` tokens; None when the server does not serve it."""
    import urllib3
    from kubernetes import client as k8s

    call = getattr(getattr(k8s, kind.api)(api_client), kind.method)
    host = api_client.configuration.host
    items: list[dict] = []
    size: int | None = page_size
    while True:
        try:
            for page in _list_pages(call, size):
                items.extend(page.get("items") or [])
                if progress is not None:
                    progress(kind.resource, len(items))
            return items
        except k8s.ApiException as exc:
            if exc.status == 404:
                warn(f"the API server does not serve {kind.resource} ({kind.api_version}, HTTP 404); skipped")
                return None
            if exc.status == 403 and kind.resource == "endpoints":
                # EndpointSlices carry the same: an account that may not read the older Endpoints
                # (the sniffer's ClusterRole) still makes a complete inventory.
                warn(f"not allowed to list {kind.resource} (HTTP 403); skipped, EndpointSlices serve instead")
                return None
            if exc.status == 410 and items and size is not None:
                # The continue token expired (a list slower than the server's compaction window):
                # like client-go's pager, list again in one piece for a consistent result.
                warn(f"listing {kind.resource}: continue token expired after {len(items)} objects; listing again without paging")
                items, size = [], None
                continue
            raise _api_error(kind, host, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise InventoryError(f"cannot reach the API server at {host} (listing {kind.resource}): {_transport_reason(exc)}") from exc
        except _NotAList as exc:
            raise InventoryError(f"cannot list {kind.resource}: the answer of {host} is {_one_line(str(exc))}") from exc


def _with_type(kind: Kind, obj: dict) -> dict:
    """The object as kubectl prints it: apiVersion and kind first, no managedFields."""
    out = {"apiVersion": kind.api_version, "kind": kind.kind}
    out.update((k, v) for k, v in obj.items() if k not in ("apiVersion", "kind"))
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        out["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return out


def _sort_key(obj: dict) -> tuple:
    metadata = obj.get("metadata") or {}
    return (KIND_ORDER.get(obj.get("kind"), len(KIND_ORDER)), metadata.get("namespace") or "", metadata.get("name") or "")


def fetch_inventory(
    kubeconfig: str | os.PathLike | None = None,
    context: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    warn: Warn | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """List every kind in ``KINDS`` cluster-wide, sorted by (kind, namespace, name).

    Configuration as kubectl finds it: ``kubeconfig`` (a path), else ``$KUBECONFIG``, else
    ``~/.kube/config``, else the pod's service account when running in a cluster. Kinds the
    server does not serve (HTTP 404) are skipped with a ``warn`` call; any other failure raises
    ``InventoryError``. ``progress(resource, count)`` is called after every page.
    """
    if page_size < 1:
        raise InventoryError(f"page size must be at least 1, not {page_size}")
    from kubernetes.client import ApiClient

    warn = warn or (lambda message: None)
    cfg = client_configuration(kubeconfig, context)
    items: list[dict] = []
    served = 0
    with ApiClient(cfg) as api_client:
        api_client.user_agent = "netpol-learn"
        for kind in KINDS:
            listed = _list_kind(api_client, kind, page_size, warn, progress)
            if listed is None:
                continue
            served += 1
            items.extend(_with_type(kind, obj) for obj in listed if isinstance(obj, dict))
    if not served:
        raise InventoryError(f"the server at {cfg.host} answered HTTP 404 for every kind: is it a Kubernetes API server?")
    items.sort(key=_sort_key)
    return items


# --- output ----------------------------------------------------------------------------------


def format_snapshot_time(when: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as the flow log writes its times."""
    if when.tzinfo is None:
        raise ValueError("snapshot time must be timezone-aware")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def inventory_list(items: list[dict], snapshot_time: datetime) -> dict:
    """The ``List`` document ``kubectl get ... -o yaml`` prints, with the snapshot time annotated."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {
            "annotations": {SNAPSHOT_ANNOTATION: format_snapshot_time(snapshot_time)},
            "resourceVersion": "",
        },
        "items": items,
    }


def dumps_inventory(items: list[dict], snapshot_time: datetime) -> str:
    return yaml.safe_dump(inventory_list(items, snapshot_time), sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_inventory(items: list[dict], output: str | os.PathLike | None, snapshot_time: datetime) -> None:
    """Write the inventory as a YAML ``List`` to ``output`` by the one writer's rules
    (``netpol_learn._output``); None or '-' is stdout.

    ``snapshot_time`` is when the listing started: pods listed held their addresses until then.
    """
    write_text("-" if output is None else output, dumps_inventory(items, snapshot_time))
