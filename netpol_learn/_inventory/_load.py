"""Loading what ``kubectl get ... -o yaml`` (or ``-o json``, or ``netpol-learn inventory``) prints.

Each file is one snapshot of the cluster. A file may hold a ``List``, typed lists (``PodList``),
several YAML documents or single objects. A ``List`` with a ``history`` (``netpol-learn inventory
--watch``) is a snapshot and every change seen after it until its ``watched-until`` time. The
same object in several snapshots and histories is one object, whose observations are put in time
order (``_timelines``): pods keep the times they held their addresses (``Pod.start``/``end``/
``end_by``), EndpointSlices and Endpoints become versions with the times each was in force, and
everything else is its latest version (docs/resolution.md, "When a pod held its address").

Each object of a kind the tool reads is checked as it enters (``_check``): a field the tool reads
that is missing or malformed is an ``InventoryError`` naming the file, the object and the field
(``inv.yaml: Pod shop/api-1: spec.containers[0].ports[0].containerPort: not a number``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import yaml

from netpol_learn._errors import InventoryError
from netpol_learn._paths import path_list
from netpol_learn._gc import collector_paused
from netpol_learn._inventory._model import (
    OPERATORS,
    PROTOCOLS,
    SNAPSHOT_ANNOTATION,
    WATCHED_UNTIL_ANNOTATION,
    ContainerPort,
    EndpointAddress,
    EndpointPort,
    EndpointSlice,
    InvalidField,
    Inventory,
    Namespace,
    Node,
    Pod,
    Service,
    ServicePort,
    join_path,
    labels_of,
    labels_problem,
    controller_of,
    requirement_problem,
    parse_cidr,
)
from netpol_learn._inventory._workloads import InvalidSelector, build_workloads
from netpol_learn._time import parse_api_time as parse_time  # Kubernetes timestamps: lenient

KINDS = (
    "Namespace", "Node", "Pod", "Service", "EndpointSlice", "Endpoints",
    "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
)
EVENTS = ("ADDED", "MODIFIED", "DELETED")
# Kinds whose absence from a later snapshot that lists the kind means they were gone by then.
_TIMED = ("Pod", "EndpointSlice", "Endpoints")
_FLAG = re.compile(r"--(service-cluster-ip-range|cluster-cidr)=(\S+)")

try:  # libyaml is some ten times faster on large snapshots
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader


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


def _objects(doc, path: Path, document: str = "") -> Iterable[dict]:
    """The objects of one document, each of a kind the tool reads checked (``_check``);
    ``document`` ("document 2") names the document in a file of several."""
    at = f"{document}: " if document else ""
    if not isinstance(doc, Mapping):
        raise InventoryError(f"{path}: {at}not a Kubernetes object or list (a {type(doc).__name__})")
    kind = doc.get("kind")
    if "items" in doc and (kind is None or (isinstance(kind, str) and kind.endswith("List"))):
        items = doc["items"]
        if items is not None and not isinstance(items, list):
            raise InventoryError(f"{path}: {at}items: not a list")
        item_kind = kind[: -len("List")] if kind and kind != "List" else None
        for i, item in enumerate(items or ()):
            where = f"{document} items[{i}]".lstrip()
            if not isinstance(item, Mapping):
                raise InventoryError(f"{path}: {where}: not a Kubernetes object (a {type(item).__name__})")
            if item_kind and "kind" not in item:
                item = {**item, "kind": item_kind}
            _check(item, path, where)
            yield item
        return
    if not kind or "metadata" not in doc:
        raise InventoryError(f"{path}: {at}not a Kubernetes object or list (no kind and metadata)")
    _check(doc, path, document)
    yield doc


# --- checking -------------------------------------------------------------------------------
#
# An object of a kind the tool reads is checked where it enters, against a schema of the fields
# the tool reads (other fields are not looked at): _pod, _service, ... then trust its shape. A
# schema is a leaf (a function that says what is wrong with a value: a problem, a (sub-path,
# problem) pair, or None), a list of one schema (a list of such values) or _Fields (a mapping
# with these fields). A null field is an absent one, as the API server has it.


class _Fields:
    def __init__(self, fields: Mapping, required: Iterable[str] = (), check: Callable | None = None):
        self.fields, self.required, self.check = dict(fields), tuple(required), check


def _walk(value, schema, where: str) -> None:
    if isinstance(schema, _Fields):
        if not isinstance(value, Mapping):
            raise InvalidField(where, "not a mapping")
        for key in schema.required:
            if value.get(key) is None or value.get(key) == "":
                raise InvalidField(join_path(where, key), "missing")
        for key, sub in schema.fields.items():
            if value.get(key) is not None:
                _walk(value[key], sub, join_path(where, key))
        bad = schema.check(value) if schema.check else None
        if bad:
            raise InvalidField(join_path(where, bad[0]), bad[1])
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise InvalidField(where, "not a list")
        for i, item in enumerate(value):
            _walk(item, schema[0], join_path(where, i))
    else:
        bad = schema(value)
        if isinstance(bad, tuple):
            raise InvalidField(where + bad[0], bad[1])
        if bad:
            raise InvalidField(where, bad)


def _string(v) -> str | None:
    return None if isinstance(v, str) else "not a string"


def _scalar(v) -> str | None:  # command lines, uids: used as text
    return None if isinstance(v, (str, int, float)) else "not a string"


def _boolean(v) -> str | None:
    return None if isinstance(v, bool) else "not true or false"


def _port(v) -> str | None:
    if not isinstance(v, int) or isinstance(v, bool):
        return "not a number"
    return None if 1 <= v <= 65535 else f"{v} is not a port number (1-65535)"


def _port_or_name(v) -> str | None:
    return _port(v) if not isinstance(v, str) else None


def _protocol(v) -> str | None:
    return None if v in PROTOCOLS else f"{v!r} is not TCP, UDP or SCTP"


def _ip(v) -> str | None:
    try:
        ipaddress.ip_address(v if isinstance(v, str) else "-")
    except ValueError:
        return f"{v!r} is not an IP address"
    return None


def _cluster_ip(v) -> str | None:
    return None if v in ("None", "") else _ip(v)


def _cidr(v) -> str | None:
    try:
        ipaddress.ip_network(v if isinstance(v, str) else "-", strict=False)
    except ValueError:
        return f"{v!r} is not a CIDR"
    return None


def _time(v) -> str | None:
    if isinstance(v, date):  # YAML reads an unquoted timestamp as a datetime
        return None
    return None if isinstance(v, str) and parse_time(v) is not None else f"{v!r} is not an RFC 3339 time"


def _operator(v) -> str | None:
    return None if v in OPERATORS else f"{v!r} is not In, NotIn, Exists or DoesNotExist"


def _values_for_operator(e: Mapping) -> tuple[str, str] | None:
    problem = requirement_problem(e["operator"], e.get("values"))
    return ("values", problem) if problem else None


_LABELS = labels_problem
_SELECTOR = _Fields({
    "matchLabels": _LABELS,
    "matchExpressions": [_Fields({"key": _string, "operator": _operator, "values": [_string]},
                                 required=("key", "operator"), check=_values_for_operator)],
})
_TARGET = _Fields({"kind": _string, "name": _string})
_CONTAINER = _Fields({
    "name": _string, "command": [_scalar], "args": [_scalar], "restartPolicy": _string,
    "ports": [_Fields({"containerPort": _port, "name": _string, "protocol": _protocol}, required=("containerPort",))],
})
_ENDPOINT_ADDRESS = _Fields({"ip": _ip, "nodeName": _string, "targetRef": _TARGET}, required=("ip",))


def _endpoint_slice_fields(address) -> dict:
    return {
        "addressType": _string,
        "ports": [_Fields({"name": _string, "protocol": _protocol, "port": _port})],
        "endpoints": [_Fields({"addresses": [address], "nodeName": _string, "targetRef": _TARGET})],
    }


_FIELDS: dict[str, dict] = {  # by kind: the fields besides metadata
    "Namespace": {},
    "Node": {
        "spec": _Fields({"podCIDR": _cidr, "podCIDRs": [_cidr]}),
        "status": _Fields({"addresses": [_Fields({"address": _string, "type": _string}, required=("address",))]}),
    },
    "Pod": {
        "spec": _Fields({"containers": [_CONTAINER], "initContainers": [_CONTAINER], "nodeName": _string, "hostNetwork": _boolean}),
        "status": _Fields({
            "phase": _string, "podIP": _ip, "podIPs": [_Fields({"ip": _ip}, required=("ip",))], "startTime": _time,
            "conditions": [_Fields({"lastTransitionTime": _time})],
            "containerStatuses": [_Fields({"state": _Fields({"terminated": _Fields({"finishedAt": _time})})})],
        }),
    },
    "Service": {
        "spec": _Fields({
            "type": _string, "clusterIP": _cluster_ip, "clusterIPs": [_cluster_ip], "externalIPs": [_ip], "selector": _LABELS,
            "ports": [_Fields({"name": _string, "protocol": _protocol, "port": _port, "targetPort": _port_or_name, "nodePort": _port},
                              required=("port",))],
        }),
        "status": _Fields({"loadBalancer": _Fields({"ingress": [_Fields({"ip": _ip, "hostname": _string})]})}),
    },
    "EndpointSlice": _endpoint_slice_fields(_ip),
    "Endpoints": {
        "subsets": [_Fields({
            "ports": [_Fields({"name": _string, "protocol": _protocol, "port": _port}, required=("port",))],
            "addresses": [_ENDPOINT_ADDRESS],
            "notReadyAddresses": [_ENDPOINT_ADDRESS],
        })],
    },
    **{kind: {"spec": _Fields({"selector": _SELECTOR})} for kind in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job")},
    "CronJob": {},
}
_CLUSTER_SCOPED = ("Namespace", "Node")


def _metadata(namespaced: bool) -> _Fields:
    return _Fields({
        "name": _string, "namespace": _string, "uid": _scalar, "labels": _LABELS,
        "creationTimestamp": _time, "deletionTimestamp": _time,
        "ownerReferences": [_Fields({"kind": _string, "name": _string, "controller": _boolean}, required=("kind", "name"))],
    }, required=("name", "namespace") if namespaced else ("name",))


_SCHEMAS = {kind: _Fields({"metadata": _metadata(kind not in _CLUSTER_SCOPED), **fields}, required=("metadata",))
            for kind, fields in _FIELDS.items()}
_FQDN_SLICE = _Fields({"metadata": _metadata(True), **_endpoint_slice_fields(_string)}, required=("metadata",))


def _check(o: Mapping, path: Path, where: str, entry: str = "") -> None:
    """InventoryError naming the file, the object and the field, for the first field of ``o``
    that is not what the tool needs; nothing for kinds the tool does not read. ``entry``
    (``history[3].object``) names where the object is when it is not an item of a list."""
    kind = o.get("kind")
    schema = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        return
    if kind == "EndpointSlice" and o.get("addressType") == "FQDN":
        schema = _FQDN_SLICE
    try:
        _walk(o, schema, "")
    except InvalidField as exc:
        at = f"{entry}: " if entry else ""
        raise InventoryError(f"{path}: {at}{_describe(o, where)}: {exc}") from exc


def _describe(o: Mapping, where: str) -> str:
    """``Pod shop/api-1``, ``Node node-a``; where its name is unknown, where it is in the file."""
    kind, meta = o.get("kind"), o.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        return f"{kind} ({where})" if where else str(kind)
    if isinstance(namespace, str) and namespace and kind not in _CLUSTER_SCOPED:
        return f"{kind} {namespace}/{name}"
    return f"{kind} {name}"


@dataclass(frozen=True)
class _Event:
    """A ``history`` entry: at ``time`` (and after ``since``, when given) ``obj`` was ADDED,
    MODIFIED or DELETED."""

    time: int
    type: str
    obj: dict
    since: int | None = None


class _Snapshot:
    def __init__(self, path: Path, objects: list[dict], annotated: int | None,
                 history: list[_Event] | None = None, until: int | None = None):
        self.path = path
        self.objects = objects
        self.time = annotated if annotated is not None else _latest_time(objects)
        self.history = history  # None: a plain snapshot
        self.until = until
        if history is not None and until is None:
            self.until = max([self.time, *(e.time for e in history)])


def _mapping(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _latest_time(objects: list[dict]) -> int:
    latest = 0
    for o in objects:  # of every kind, checked or not
        meta, status = _mapping(o.get("metadata")), _mapping(o.get("status"))
        times = [meta.get("creationTimestamp"), meta.get("deletionTimestamp"), status.get("startTime")]
        times += [m.get("time") for m in _list(meta.get("managedFields")) if isinstance(m, Mapping)]
        times += [c.get("lastTransitionTime") for c in _list(status.get("conditions")) if isinstance(c, Mapping)]
        for t in times:
            ns = parse_time(t)
            if ns and ns > latest:
                latest = ns
    return latest


# --- watch histories ------------------------------------------------------------------------


def _entry_time(value) -> int | None:
    """An entry's time (RFC 3339 text, or a datetime where YAML read an unquoted one), or None."""
    if isinstance(value, datetime):
        value = value.isoformat()
    return parse_time(value) if isinstance(value, str) else None


def _history(doc: Mapping, path: Path, document: str) -> list[_Event]:
    """The ``history`` entries of a List, each checked: its time, its type and its object."""
    at = f"{document} " if document else ""
    entries = doc.get("history")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InventoryError(f"{path}: {at}history: not a list")
    events = []
    for i, entry in enumerate(entries):
        where = f"{at}history[{i}]"
        if not isinstance(entry, Mapping):
            raise InventoryError(f"{path}: {where}: not a mapping (a {type(entry).__name__})")
        times = {}
        for key in ("time", "since"):
            value = entry.get(key)
            if value is None:
                if key == "time":
                    raise InventoryError(f"{path}: {where}.time: missing")
                continue
            times[key] = _entry_time(value)
            if times[key] is None:
                raise InventoryError(f"{path}: {where}.{key}: {value!r} is not an RFC 3339 time such as 2026-02-10T09:40:00.123456Z")
        if times.get("since") is not None and times["since"] > times["time"]:
            raise InventoryError(f"{path}: {where}.since: later than its time")
        kind = entry.get("type")
        if kind is None:
            raise InventoryError(f"{path}: {where}.type: missing")
        if kind not in EVENTS:
            raise InventoryError(f"{path}: {where}.type: {kind!r} is not ADDED, MODIFIED or DELETED")
        obj = entry.get("object")
        if obj is None:
            raise InventoryError(f"{path}: {where}.object: missing")
        if not isinstance(obj, Mapping):
            raise InventoryError(f"{path}: {where}.object: not a mapping (a {type(obj).__name__})")
        if not isinstance(obj.get("kind"), str) or not obj.get("kind") or not isinstance(obj.get("metadata"), Mapping):
            raise InventoryError(f"{path}: {where}.object: not a Kubernetes object (no kind and metadata)")
        _check(obj, path, "", f"{where}.object")
        events.append(_Event(times["time"], kind, dict(obj), times.get("since")))
    return events


def _annotated_time(annotations: Mapping, key: str, path: Path, document: str) -> int | None:
    value = annotations.get(key)
    if value is None:
        return None
    ns = _entry_time(value)
    if ns is None:
        at = f"{document} " if document else ""
        raise InventoryError(f"{path}: {at}metadata.annotations[{key!r}]: {value!r} is not an RFC 3339 time")
    return ns


def _read_file(path: Path) -> _Snapshot:
    return _snapshot(path, _documents(path))


def _snapshot(path: Path, docs: list) -> _Snapshot:
    objects, annotated, history, until = [], None, None, None
    for n, doc in enumerate(docs, 1):
        document = f"document {n}" if len(docs) > 1 else ""
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            annotations = _mapping(_mapping(doc.get("metadata")).get("annotations"))
            annotated = parse_time(annotations.get(SNAPSHOT_ANNOTATION)) or annotated
            if "history" in doc:
                history = (history or []) + _history(doc, path, document)
                until = _annotated_time(annotations, WATCHED_UNTIL_ANNOTATION, path, document) or until
        objects.extend(_objects(doc, path, document))
    return _Snapshot(path, objects, annotated, history, until)


def load_inventory_document(document: Mapping, name: str, *, pod_cidrs: Iterable[str] = (),
                            service_cidrs: Iterable[str] = ()) -> Inventory:
    """``load_inventory`` of one document already parsed (the ``List`` that ``inventory --watch``
    writes, as the learning service holds it), ``name`` standing for its file in messages."""
    snapshots = [_snapshot(Path(name), [document])]
    return _build(snapshots, [], [str(c) for c in pod_cidrs], [str(c) for c in service_cidrs])


def load_inventory_noted(paths, pod_cidrs: Iterable[str] = (), service_cidrs: Iterable[str] = ()) -> tuple:
    """``load_inventory``'s inventory (or None), the warnings it gave and its ``InventoryError``
    (or None), as one value: read in a second process (``netpol_learn._parallel``), the
    warnings are said before the error, as they would be reading here."""
    warnings: list[str] = []
    try:
        return load_inventory(paths, pod_cidrs=pod_cidrs, service_cidrs=service_cidrs, warn=warnings.append), warnings, None
    except InventoryError as exc:
        return None, warnings, exc


@collector_paused()
def load_inventory(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    pod_cidrs: Iterable[str] = (),
    service_cidrs: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> Inventory:
    """Load one or more snapshots, and the watch histories in them (``netpol-learn inventory
    --watch``). A file that cannot be read or holds a malformed object or history entry is
    reported through ``warn`` and skipped (when it is the only file, ``InventoryError``);
    ``InventoryError`` is raised when nothing usable was loaded. One path may be given as itself
    (``path_list``)."""
    paths = path_list(paths)
    for option, given in (("pod range", pod_cidrs), ("Service range", service_cidrs)):
        for c in given:
            try:
                parse_cidr(c)
            except ValueError as exc:
                raise InventoryError(f"{option} {exc}") from None
    snapshots: list[_Snapshot] = []
    notes: list[str] = []
    paths = [Path(p) for p in paths]
    errors: list[str] = []
    for path in paths:
        try:
            snapshots.append(_read_file(path))
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


# --- timelines -------------------------------------------------------------------------------
#
# Every observation of one object, in time order: it stood so at a snapshot (or at the end of a
# history), it was absent from a later snapshot that lists its kind, or an event changed it. A
# change between two snapshots happened at an unknown time between them; an event's change
# happened at its time (or, with ``since``, after that and by its time).

Ident = tuple  # (kind, namespace, name, uid)


@dataclass(frozen=True)
class _Seen:
    time: int
    seq: int  # the order observations were made in, for those of one time
    state: dict | None  # the object as it stood; None: absent
    version: dict | None  # the version observed (a DELETED event's last one too)
    event: bool = False  # an event: the change happened at ``time`` (after ``since``)
    since: int | None = None

    @property
    def changed_from(self) -> int:
        """The earliest the change this observation shows may have happened, for an event."""
        return self.since if self.since is not None else self.time


def _ident(o: Mapping) -> Ident:
    meta = o.get("metadata") or {}
    return (str(o.get("kind")), meta.get("namespace") or "", meta.get("name"), meta.get("uid") or "")


def _timelines(snapshots: list[_Snapshot], unknown: Counter) -> dict[Ident, list[_Seen]]:
    seen: dict[Ident, list[_Seen]] = defaultdict(list)
    seq = itertools.count()
    shown: list[set] = []
    for snap in snapshots:
        here = set()
        for o in snap.objects:
            if str(o.get("kind")) not in KINDS:
                unknown[str(o.get("kind"))] += 1
                continue
            ident = _ident(o)
            here.add(ident)
            seen[ident].append(_Seen(snap.time, next(seq), o, o))
        shown.append(here)
    for snap in snapshots:
        if snap.history is None:
            continue
        standing = {_ident(o): o for o in snap.objects if str(o.get("kind")) in KINDS}
        for e in sorted(snap.history, key=lambda e: e.time):
            if str(e.obj.get("kind")) not in KINDS:
                unknown[str(e.obj.get("kind"))] += 1
                continue
            ident = _ident(e.obj)
            state = None if e.type == "DELETED" else e.obj
            seen[ident].append(_Seen(e.time, next(seq), state, e.obj, True, e.since))
            standing[ident] = state
        for ident, o in standing.items():  # what stood at the end of the history stood until then
            if o is not None:
                seen[ident].append(_Seen(snap.until, next(seq), o, o))
    for snap, here in zip(snapshots, shown):
        # A watch's snapshot lists every kind; another file those it holds (it may be split in pods.yaml, ...).
        kinds = set(KINDS) if snap.history is not None else {ident[0] for ident in here}
        for ident in list(seen):
            if ident[0] in _TIMED and ident[0] in kinds and ident not in here:
                seen[ident].append(_Seen(snap.time, next(seq), None, None))
    for timeline in seen.values():
        timeline.sort(key=lambda s: (s.time, s.seq))
    return seen


def _latest(timeline: list[_Seen]) -> dict:
    return next(s.version for s in reversed(timeline) if s.version is not None)


def _versions(timeline: list[_Seen], content: Callable[[dict], object]) -> list[tuple[int | None, int | None, object]]:
    """The runs of one ``content`` (None: none usable) of an object: (start, end, content), with
    None for a run from the beginning or still in force. A change between two snapshots may have
    happened any time between them: the runs on either side both cover that time."""
    runs: list[list] = []
    before: _Seen | None = None
    before_content = None
    for s in timeline:
        now = content(s.state) if s.state is not None else None
        if before is None:
            if now is not None:  # the first known version stands for the time before too, unless an event created it
                runs.append([s.changed_from if s.event else None, None, now])
        elif now != before_content:
            if before_content is not None:
                runs[-1][1] = s.time
            if now is not None:
                runs.append([s.changed_from if s.event else before.time, None, now])
        before, before_content = s, now
    return [tuple(r) for r in runs]


def _build(snapshots: list[_Snapshot], notes: list[str], pod_cidrs: list[str], service_cidrs: list[str]) -> Inventory:
    unknown: Counter = Counter()
    timelines = _timelines(snapshots, unknown)
    for kind, n in sorted(unknown.items()):
        notes.append(f"ignored {n} object(s) of kind {kind}")
    by_kind: dict[str, list[tuple[tuple, dict]]] = defaultdict(list)
    for ident in sorted(timelines, key=lambda i: tuple(str(x) for x in i)):
        by_kind[ident[0]].append((ident, _latest(timelines[ident])))

    pods = _pods(by_kind["Pod"], timelines)
    no_address = sum(1 for p in pods if not p.ips)
    if no_address:
        notes.append(f"{no_address} pod(s) without an address (pending or finished)")

    services = [s for s in (_service(o) for _, o in by_kind["Service"]) if s]
    slices = []
    for ident, _ in by_kind["EndpointSlice"]:
        for start, end, content in _versions(timelines[ident], _endpoint_slice):
            slices.append(dataclasses.replace(content, start=start, end=end))
    with_slices = {(s.namespace, s.service) for s in slices}
    for ident, o in by_kind["Endpoints"]:
        meta = o.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) not in with_slices:
            for start, end, content in _versions(timelines[ident], lambda e: tuple(_endpoints_as_slices(e)) or None):
                slices.extend(dataclasses.replace(s, start=start, end=end) for s in content)
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
        watched=tuple(sorted((s.time, s.until) for s in snapshots if s.history is not None)),
        notes=tuple(notes),
        workload_of=workload_of,
    )


def _pods(latest: list[tuple[Ident, dict]], timelines: Mapping[Ident, list[_Seen]]) -> list[Pod]:
    """Each pod from its latest version, holding its addresses until (docs/resolution.md):
    its DELETED event or, when it finished, the end of its last container, the earlier; else its
    deletionTimestamp or the end of its last container; else, gone by a later snapshot, the
    last time it was known to be there (``end``), and at the latest (``end_by``) that
    snapshot's time or the start of the next pod known to hold one of its addresses."""
    pods = []
    for ident, o in latest:
        pod = _pod(o)
        timeline = timelines[ident]
        if not pod.ips:  # the latest version no longer shows the addresses an earlier one did
            ips = next((ips for s in reversed(timeline) if s.version is not None and (ips := _pod_ips(s.version))), ())
            pod = dataclasses.replace(pod, ips=ips)
        present = [i for i, s in enumerate(timeline) if s.state is not None]
        last = present[-1] if present else -1
        gone = timeline[last + 1] if last + 1 < len(timeline) else None
        end, end_by = pod.end, None
        if gone is not None and gone.event:  # its DELETED event
            finished = _finished_at(o)
            if finished is not None and finished <= gone.changed_from:
                end = finished
            elif gone.since is None:
                end = gone.time
            else:  # deleted while the watch was blind: after `since`, by its time
                end, end_by = max(gone.since, timeline[last].time if last >= 0 else gone.since), gone.time
        elif end is None and gone is not None and last >= 0:  # gone by a later snapshot
            end, end_by = timeline[last].time, gone.time
        pods.append(dataclasses.replace(pod, end=end, end_by=end_by))
    holders: dict[str, list[Pod]] = defaultdict(list)
    for p in pods:
        if not p.host_network:
            for ip in p.ips:
                holders[ip].append(p)
    out = []
    for p in pods:
        if p.end_by is not None and not p.host_network:
            nexts = [q.start for ip in p.ips for q in holders[ip] if q is not p and q.start is not None and p.end < q.start < p.end_by]
            if nexts:
                p = dataclasses.replace(p, end_by=min(nexts))
        out.append(p)
    return out


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


def _pod_ips(o: Mapping) -> tuple[str, ...]:
    status = o.get("status") or {}
    ips = tuple(str(p["ip"]) for p in status.get("podIPs") or () if isinstance(p, Mapping) and p.get("ip"))
    return ips or ((str(status["podIP"]),) if status.get("podIP") else ())


def _finished_at(o: Mapping) -> int | None:
    """When a finished pod (``Succeeded``, ``Failed``) gave up its address: its last container's
    end time, else the last change of its conditions; None for a pod that has not finished."""
    status = o.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return None
    ends = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt")) for cs in status.get("containerStatuses") or ()]
    ends = [e for e in ends if e] or [parse_time(c.get("lastTransitionTime")) for c in status.get("conditions") or () if parse_time(c.get("lastTransitionTime"))]
    return max(ends) if ends else None


def _pod(o: dict) -> Pod:
    meta, spec, status = o["metadata"], o.get("spec") or {}, o.get("status") or {}
    ips = _pod_ips(o)
    owner = controller_of(o)
    ports = []
    containers = list(spec.get("containers") or ()) + [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or ():
            if p.get("containerPort") is not None:
                ports.append(ContainerPort(p.get("name"), int(p["containerPort"]), str(p.get("protocol") or "TCP")))
    # The API server sets deletionTimestamp to the request time plus the grace period.
    deleted = parse_time(meta.get("deletionTimestamp"))
    if deleted is None:
        deleted = _finished_at(o)
    return Pod(
        namespace=meta["namespace"],
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
            target_port=_int_or_name(p["port"] if p.get("targetPort") is None else p["targetPort"]),
            node_port=p.get("nodePort"),
        )
        for p in spec.get("ports") or ()
        if p.get("port") is not None
    )
    selector = spec.get("selector")
    return Service(
        namespace=meta["namespace"],
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
        namespace=meta["namespace"],
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
        out.append(EndpointSlice(meta["namespace"], f"{meta.get('name')}-endpoints-{i}", meta.get("name"), ports, tuple(endpoints)))
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
