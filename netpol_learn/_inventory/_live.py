"""Read the cluster inventory from a live API server with the official ``kubernetes`` client.

The result has the shape of ``kubectl get ns,nodes,pods,services,endpointslices,endpoints,
replicasets,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o yaml``: a ``List`` whose items
carry ``apiVersion`` and ``kind`` and no ``metadata.managedFields`` (kubectl hides them too). The
objects are the API server's own JSON (``_preload_content=False``), not the client's models, so
nothing is renamed to snake_case or dropped by an older client.

Every error of the client (``ApiException``, urllib3's transport errors, ``ConfigException``) is
translated into ``InventoryError``, one line naming the resource and the HTTP status (the
configuration and the wording of the errors are ``netpol_learn._kube``'s, shared with ``collect``).

``kubernetes`` is imported only when a listing starts: its generated API classes take about a
second to import, which every other command would pay otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

import yaml

from netpol_learn._errors import InventoryError
from netpol_learn._inventory._model import SNAPSHOT_ANNOTATION, WATCHED_UNTIL_ANNOTATION
from netpol_learn._kube import NotAList, client_configuration, client_error_message, list_pages, one_line, transport_errors
from netpol_learn._output import write_text
from netpol_learn._time import format_datetime, format_time

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

DEFAULT_PAGE_SIZE = 500


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


# --- listing ---------------------------------------------------------------------------------


def api_error(kind: Kind, host: str, exc: BaseException, doing: str = "listing") -> InventoryError:
    """An ApiException or a transport error of listing (or watching) ``kind``, as one line."""
    verb = "list" if doing == "listing" else "watch"
    return InventoryError(client_error_message(exc, f"cannot {verb} {kind.resource}",
                                               f"cannot reach the API server at {host} ({doing} {kind.resource})"))


class Listed(NamedTuple):
    items: list[dict]
    resource_version: str | None  # of the list: a watch from it sees every change after it


def list_kind(api_client: ApiClient, kind: Kind, page_size: int, warn: Warn, progress: Progress | None) -> Listed | None:
    """All objects of one kind, following ``continue`` tokens; None when the server does not serve it."""
    from kubernetes import client as k8s

    call = getattr(getattr(k8s, kind.api)(api_client), kind.method)
    host = api_client.configuration.host
    items: list[dict] = []
    size: int | None = page_size
    while True:
        try:
            version = None
            for page in list_pages(call, size):
                items.extend(page.get("items") or [])
                version = (page.get("metadata") or {}).get("resourceVersion") or version
                if progress is not None:
                    progress(kind.resource, len(items))
            return Listed(items, str(version) if version else None)
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
            raise api_error(kind, host, exc) from exc
        except transport_errors() as exc:
            raise api_error(kind, host, exc) from exc
        except NotAList as exc:
            raise InventoryError(f"cannot list {kind.resource}: the answer of {host} is {one_line(str(exc))}") from exc


def with_type(kind: Kind, obj: dict) -> dict:
    """The object as kubectl prints it: apiVersion and kind first, no managedFields."""
    out = {"apiVersion": kind.api_version, "kind": kind.kind}
    out.update((k, v) for k, v in obj.items() if k not in ("apiVersion", "kind"))
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        out["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return out


def sort_key(obj: dict) -> tuple:
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
            listed = list_kind(api_client, kind, page_size, warn, progress)
            if listed is None:
                continue
            served += 1
            items.extend(with_type(kind, obj) for obj in listed.items if isinstance(obj, dict))
    if not served:
        raise InventoryError(f"the server at {cfg.host} answered HTTP 404 for every kind: is it a Kubernetes API server?")
    items.sort(key=sort_key)
    return items


# --- output ----------------------------------------------------------------------------------
#
# A file is assembled from pieces: the List's head (apiVersion, kind, metadata), then each item,
# then (a watch) each history entry, each serialized alone. The watch keeps the pieces it has
# serialized and only serializes what is new at each write; the pieces joined are byte for byte
# what one dump of the whole document gives (tests/test_inventory_watch.py checks it).


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's: some five times faster
    """No anchors and aliases: an object in both the snapshot and the history is written twice."""

    def ignore_aliases(self, data) -> bool:
        return True


def output_format(output: str | os.PathLike | None) -> str:
    """``json`` for an output named ``*.json``, else ``yaml``."""
    return "json" if output is not None and str(output).lower().endswith(".json") else "yaml"


def _yaml(value) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_piece(value: dict, fmt: str) -> str:
    """One entry of the ``items`` (or ``history``) list as it stands in a file of format ``fmt``."""
    return json.dumps(value, ensure_ascii=False) if fmt == "json" else _yaml([value])


def history_entry(time_ns: int, event: str, obj: dict, since_ns: int | None = None) -> dict:
    """A ``history`` entry: the time it was received, ADDED/MODIFIED/DELETED, and the object;
    ``since`` when the change may have happened any time after it (docs/resolution.md)."""
    entry: dict = {"time": format_time(time_ns), "type": event}
    if since_ns is not None:
        entry["since"] = format_time(since_ns)
    entry["object"] = obj
    return entry


def assemble(snapshot_time: str, items: list[str], fmt: str, history: list[str] | None = None,
             watched_until: str | None = None) -> list[str]:
    """The pieces of a whole file: the ``List`` with ``items`` (from ``dump_piece``), annotated with
    its snapshot time and, with a ``history``, the time the watch wrote it last."""
    annotations = {SNAPSHOT_ANNOTATION: snapshot_time}
    if history is not None:
        annotations[WATCHED_UNTIL_ANNOTATION] = watched_until or snapshot_time
    head = {"apiVersion": "v1", "kind": "List", "metadata": {"annotations": annotations, "resourceVersion": ""}}
    sections = [("items", items)] + ([("history", history)] if history is not None else [])
    if fmt == "json":
        out = [json.dumps(head, ensure_ascii=False)[:-1]]
        for name, pieces in sections:
            out.append(f', "{name}": []' if not pieces else f', "{name}": [\n')
            for n, piece in enumerate(pieces):
                out.append(piece + (",\n" if n < len(pieces) - 1 else "\n]"))
        out.append("}\n")
        return out
    out = [_yaml(head)]
    for name, pieces in sections:
        out.append(f"{name}:\n" if pieces else f"{name}: []\n")
        out.extend(pieces)
    return out


def inventory_list(items: list[dict], snapshot_time: datetime) -> dict:
    """The ``List`` document ``kubectl get ... -o yaml`` prints, with the snapshot time annotated."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {
            "annotations": {SNAPSHOT_ANNOTATION: format_datetime(snapshot_time, "snapshot time")},
            "resourceVersion": "",
        },
        "items": items,
    }


def dumps_inventory(items: list[dict], snapshot_time: datetime, fmt: str = "yaml") -> str:
    return "".join(assemble(format_datetime(snapshot_time, "snapshot time"), [dump_piece(i, fmt) for i in items], fmt))


def write_inventory(items: list[dict], output: str | os.PathLike | None, snapshot_time: datetime) -> None:
    """Write the inventory as a ``List`` to ``output`` by the one writer's rules
    (``netpol_learn._output``); None or '-' is stdout. YAML, or JSON when ``output`` is named
    ``*.json``.

    ``snapshot_time`` is when the listing started: pods listed held their addresses until then.
    """
    output = "-" if output is None else output
    write_text(output, dumps_inventory(items, snapshot_time, output_format(output)))
