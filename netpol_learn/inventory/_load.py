"""Loading what ``kubectl get ... -o yaml`` (or ``-o json``, or ``netpol-learn inventory``) prints.

Each file is one snapshot of the cluster. A file may hold a ``List``, typed lists (``PodList``),
several YAML documents or single objects. The same object in several snapshots is one object;
pods keep the times they held their addresses (see ``Pod.start``/``Pod.end``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import yaml

from netpol_learn._errors import InventoryError
from netpol_learn.inventory._model import (
    ContainerPort,
    EndpointAddress,
    EndpointPort,
    EndpointSlice,
    Inventory,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
    labels_of,
)
from netpol_learn.inventory._workloads import InvalidSelector, build_workloads

KINDS = (
    "Namespace", "Node", "Pod", "Service", "EndpointSlice", "Endpoints",
    "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
)
SNAPSHOT_ANNOTATION = "netpol-learn.io/snapshot-time"
_FLAG = re.compile(r"--(service-cluster-ip-range|cluster-cidr)=(\S+)")

try:  # libyaml is some ten times faster on large snapshots
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


def parse_time(text: str | None) -> int | None:
    """RFC 3339 (as the API writes it) to nanoseconds since the epoch."""
    if not text:
        return None
    s = str(text).replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _documents(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not a text file") from exc
    if not text.strip():
        raise InventoryError(f"{path}: empty file")
    if text.lstrip()[:1] in "{[":
        try:
            doc = json.loads(text)
            return doc if isinstance(doc, list) else [doc]
        except json.JSONDecodeError:
            pass  # YAML is a superset of JSON; let the YAML parser report the error
    try:
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(f"{path}:{where}: invalid YAML: {problem}") from exc


def _objects(doc, path: Path) -> Iterable[dict]:
    if not isinstance(doc, Mapping):
        raise InventoryError(f"{path}: not a Kubernetes object or list (a {type(doc).__name__})")
    kind = doc.get("kind")
    if isinstance(doc.get("items"), list) and (kind is None or str(kind).endswith("List")):
        item_kind = str(kind)[: -len("List")] if kind and kind != "List" else None
        for item in doc["items"]:
            if isinstance(item, Mapping):
                if item_kind and "kind" not in item:
                    item = {**item, "kind": item_kind}
                yield item
        return
    if not kind or "metadata" not in doc:
        raise InventoryError(f"{path}: not a Kubernetes object or list (no kind and metadata)")
    yield doc


class _Snapshot:
    def __init__(self, path: Path, objects: list[dict], annotated: int | None):
        self.path = path
        self.objects = objects
        self.time = annotated if annotated is not None else _latest_time(objects)


def _latest_time(objects: list[dict]) -> int:
    latest = 0
    for o in objects:
        meta = o.get("metadata") or {}
        times = [meta.get("creationTimestamp"), meta.get("deletionTimestamp"), (o.get("status") or {}).get("startTime")]
        times += [m.get("time") for m in meta.get("managedFields") or () if isinstance(m, Mapping)]
        times += [c.get("lastTransitionTime") for c in (o.get("status") or {}).get("conditions") or () if isinstance(c, Mapping)]
        for t in times:
            ns = parse_time(t)
            if ns and ns > latest:
                latest = ns
    return latest


def load_inventory(
    paths: Iterable[str | os.PathLike],
    *,
    pod_cidrs: Iterable[str] = (),
    service_cidrs: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> Inventory:
    """Load one or more snapshots. A file that cannot be read is reported through ``warn`` and
    skipped; ``InventoryError`` is raised when nothing usable was loaded."""
    snapshots: list[_Snapshot] = []
    notes: list[str] = []
    paths = [Path(p) for p in paths]
    errors: list[str] = []
    for path in paths:
        try:
            objects, annotated = [], None
            for doc in _documents(path):
                if isinstance(doc, Mapping) and doc.get("kind") == "List":
                    annotated = parse_time(((doc.get("metadata") or {}).get("annotations") or {}).get(SNAPSHOT_ANNOTATION)) or annotated
                objects.extend(_objects(doc, path))
            snapshots.append(_Snapshot(path, objects, annotated))
        except InventoryError as exc:
            if len(paths) == 1:
                raise
            errors.append(str(exc))
            if warn:
                warn(str(exc))
    if not snapshots:
        raise InventoryError(f"nothing usable in the {len(paths)} inventory files")
    snapshots.sort(key=lambda s: (s.time, str(s.path)))
    return _build(snapshots, notes, [str(c) for c in pod_cidrs], [str(c) for c in service_cidrs])


def _build(snapshots: list[_Snapshot], notes: list[str], pod_cidrs: list[str], service_cidrs: list[str]) -> Inventory:
    latest: dict[tuple, dict] = {}
    shown_in: dict[tuple, list[int]] = defaultdict(list)
    unknown: Counter = Counter()
    for i, snap in enumerate(snapshots):
        for o in snap.objects:
            kind = str(o.get("kind"))
            if kind not in KINDS:
                unknown[kind] += 1
                continue
            meta = o.get("metadata") or {}
            ident = (kind, meta.get("namespace") or "", meta.get("name"), meta.get("uid") or "")
            latest[ident] = o  # later snapshots win
            shown_in[ident].append(i)
    for kind, n in sorted(unknown.items()):
        notes.append(f"ignored {n} object(s) of kind {kind}")
    by_kind: dict[str, list[tuple[tuple, dict]]] = defaultdict(list)
    for ident, o in sorted(latest.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        by_kind[ident[0]].append((ident, o))

    # A snapshot may be split over several files (pods.yaml, services.yaml): a pod is gone only
    # when a later file that lists pods does not show it.
    with_pods = [i for i, snap in enumerate(snapshots) if any(o.get("kind") == "Pod" for o in snap.objects)]
    last = with_pods[-1] if with_pods else -1
    pods = []
    no_address = 0
    for ident, o in by_kind["Pod"]:
        pod = _pod(o)
        if pod is None:
            continue
        seen = shown_in[ident]
        end = pod.end
        if end is None and seen[-1] < last:
            end = snapshots[seen[-1]].time  # gone by a later snapshot: it held the address at least until then
        if not pod.ips:
            no_address += 1
        pods.append(Pod(**{**pod.__dict__, "end": end}))
    if no_address:
        notes.append(f"{no_address} pod(s) without an address (pending or finished)")

    services = [s for s in (_service(o) for _, o in by_kind["Service"]) if s]
    slices = [s for s in (_endpoint_slice(o) for _, o in by_kind["EndpointSlice"]) if s]
    with_slices = {(s.namespace, s.service) for s in slices}
    for _, o in by_kind["Endpoints"]:
        meta = o.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) not in with_slices:
            slices.extend(_endpoints_as_slices(o))
    nodes = [_node(o) for _, o in by_kind["Node"]]
    namespaces = [Namespace(o["metadata"]["name"], labels_of(o["metadata"].get("labels"))) for _, o in by_kind["Namespace"]]

    owners = {
        (kind, ident[1], ident[2]): o
        for kind in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
        for ident, o in by_kind[kind]
    }
    try:
        workloads, workload_of, workload_notes = build_workloads(pods, owners)
    except InvalidSelector as exc:
        raise InventoryError(str(exc)) from exc
    notes.extend(workload_notes)

    for _, o in by_kind["Pod"]:
        for c in (o.get("spec") or {}).get("containers") or ():
            for arg in [*(c.get("command") or ()), *(c.get("args") or ())]:
                m = _FLAG.search(str(arg))
                if m:
                    for cidr in m.group(2).split(","):
                        (service_cidrs if m.group(1) == "service-cluster-ip-range" else pod_cidrs).append(cidr)
    pod_cidrs += [c for n in nodes for c in n.pod_cidrs]
    return Inventory(
        namespaces=tuple(namespaces),
        nodes=tuple(nodes),
        pods=tuple(pods),
        services=tuple(services),
        endpoint_slices=tuple(slices),
        workloads=tuple(workloads),
        pod_cidrs=_networks(pod_cidrs, notes),
        service_cidrs=_networks(service_cidrs, notes),
        snapshots=tuple(s.time for s in snapshots),
        notes=tuple(notes),
        workload_of=workload_of,
    )


def _networks(cidrs: list[str], notes: list[str]) -> tuple[str, ...]:
    nets = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            notes.append(f"ignored invalid address range {c!r}")
    out = []
    for version in (4, 6):  # node podCIDRs inside the cluster CIDR collapse into it
        out += [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == version)]
    return tuple(out)


def _pod(o: dict) -> Pod | None:
    meta, spec, status = o.get("metadata") or {}, o.get("spec") or {}, o.get("status") or {}
    if not meta.get("name"):
        return None
    ips = tuple(str(p["ip"]) for p in status.get("podIPs") or () if isinstance(p, Mapping) and p.get("ip"))
    if not ips and status.get("podIP"):
        ips = (str(status["podIP"]),)
    owner = None
    refs = [r for r in meta.get("ownerReferences") or () if isinstance(r, Mapping)]
    ctl = [r for r in refs if r.get("controller")] or refs
    if ctl:
        owner = (str(ctl[0].get("kind")), str(ctl[0].get("name")))
    ports = []
    containers = list(spec.get("containers") or ()) + [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or ():
            if p.get("containerPort") is not None:
                ports.append(ContainerPort(p.get("name"), int(p["containerPort"]), str(p.get("protocol") or "TCP")))
    # The API server sets deletionTimestamp to the request time plus the grace period.
    deleted = parse_time(meta.get("deletionTimestamp"))
    if status.get("phase") in ("Succeeded", "Failed") and deleted is None:
        # A finished pod gives up its address; its last container's end time says when, else
        # the last change of its conditions.
        ends = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")) for cs in status.get("containerStatuses") or ()]
        ends = [e for e in ends if e] or [parse_time(c.get("lastTransitionTime")) for c in status.get("conditions") or () if parse_time(c.get("lastTransitionTime"))]
        deleted = max(ends) if ends else None
    return Pod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta["name"]),
        uid=str(meta.get("uid") or ""),
        labels=labels_of(meta.get("labels")),
        ips=ips,
        node=spec.get("nodeName"),
        host_network=bool(spec.get("hostNetwork")),
        start=parse_time(status.get("startTime")) or parse_time(meta.get("creationTimestamp")),
        end=deleted,
        owner=owner,
        ports=tuple(ports),
    )


def _service(o: dict) -> Service | None:
    meta, spec, status = o.get("metadata") or {}, o.get("spec") or {}, o.get("status") or {}
    ips = [str(ip) for ip in spec.get("clusterIPs") or () if ip and ip != "None"]
    if not ips and spec.get("clusterIP") not in (None, "", "None"):
        ips = [str(spec["clusterIP"])]
    ports = tuple(
        ServicePort(
            name=p.get("name"),
            port=int(p["port"]),
            protocol=str(p.get("protocol") or "TCP"),
            target_port=_int_or_name(p.get("targetPort", p["port"])),
            node_port=p.get("nodePort"),
        )
        for p in spec.get("ports") or ()
        if p.get("port") is not None
    )
    selector = spec.get("selector")
    return Service(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        type=str(spec.get("type") or "ClusterIP"),
        cluster_ips=tuple(ips),
        selector=labels_of(selector) if selector else None,
        ports=ports,
        external_ips=tuple(str(i) for i in spec.get("externalIPs") or ()),
        load_balancer_ips=tuple(str(i["ip"]) for i in (status.get("loadBalancer") or {}).get("ingress") or () if i.get("ip")),
    )


def _int_or_name(v) -> int | str:
    try:
        return int(v)
    except (TypeError, ValueError):
        return str(v)


def _endpoint_slice(o: dict) -> EndpointSlice | None:
    meta = o.get("metadata") or {}
    if o.get("addressType") == "FQDN":
        return None
    ports = tuple(EndpointPort(p.get("name") or None, int(p["port"]), str(p.get("protocol") or "TCP")) for p in o.get("ports") or () if p.get("port") is not None)
    endpoints = []
    for e in o.get("endpoints") or ():
        ref = e.get("targetRef") or {}
        pod = ref.get("name") if ref.get("kind") == "Pod" else None
        for a in e.get("addresses") or ():
            endpoints.append(EndpointAddress(str(a), pod, e.get("nodeName")))
    return EndpointSlice(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        service=(meta.get("labels") or {}).get("kubernetes.io/service-name"),
        ports=ports,
        endpoints=tuple(endpoints),
    )


def _endpoints_as_slices(o: dict) -> list[EndpointSlice]:
    meta = o.get("metadata") or {}
    out = []
    for i, subset in enumerate(o.get("subsets") or ()):
        ports = tuple(EndpointPort(p.get("name") or None, int(p["port"]), str(p.get("protocol") or "TCP")) for p in subset.get("ports") or ())
        endpoints = []
        for a in [*(subset.get("addresses") or ()), *(subset.get("notReadyAddresses") or ())]:
            ref = a.get("targetRef") or {}
            endpoints.append(EndpointAddress(str(a.get("ip")), ref.get("name") if ref.get("kind") == "Pod" else None, a.get("nodeName")))
        out.append(EndpointSlice(str(meta.get("namespace") or "default"), f"{meta.get('name')}-endpoints-{i}", meta.get("name"), ports, tuple(endpoints)))
    return out


def _node(o: dict) -> Node:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    addresses = []
    for a in status.get("addresses") or ():
        try:
            ipaddress.ip_address(str(a.get("address")))
            addresses.append(str(a["address"]))
        except ValueError:
            continue  # Hostname entries
    cidrs = list(spec.get("podCIDRs") or ()) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return Node(str(o["metadata"]["name"]), tuple(addresses), tuple(str(c) for c in cidrs))
