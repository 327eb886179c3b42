"""The cluster inventory as plain frozen dataclasses: what resolution needs of each object."""

from __future__ import annotations

import ipaddress

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Labels that differ between replicas or runs of one workload: never part of a selector.
PER_REPLICA_LABELS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
        "batch.kubernetes.io/job-completion-index",
    }
)

Labels = tuple[tuple[str, str], ...]

#: The protocols a NetworkPolicy port (and a container or Service port) can name.
PROTOCOLS = ("TCP", "UDP", "SCTP")
#: The label the API server gives every namespace (since 1.21): what policies select a namespace by.
NAMESPACE_LABEL = "kubernetes.io/metadata.name"

#: When ``netpol-learn inventory`` started listing: the pods in the file held their addresses
#: at least until then (on the List's metadata).
SNAPSHOT_ANNOTATION = "netpol-learn.io/snapshot-time"

#: When ``netpol-learn inventory --watch`` wrote the file last: its ``history`` holds every change
#: seen from the snapshot time until then (on the List's metadata).
WATCHED_UNTIL_ANNOTATION = "netpol-learn.io/watched-until"


def controller_of(obj: Mapping | None) -> tuple[str, str] | None:
    """(kind, name) of the object's controller: the owner reference marked ``controller``, else
    the first one; None without owner references."""
    refs = [r for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or () if isinstance(r, Mapping)]
    ctl = [r for r in refs if r.get("controller")] or refs
    return (str(ctl[0].get("kind")), str(ctl[0].get("name"))) if ctl else None


def labels_of(mapping: Mapping | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (mapping or {}).items()))


class InvalidField(ValueError):
    """A field of an input object that is missing or not what it must be: ``where`` is its path
    (``spec.selector.matchExpressions[0].values``), ``problem`` what is wrong with it."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


def join_path(where: str, key: str | int) -> str:
    """``where`` + ``.key``, or ``where[key]`` for a list index."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def labels_problem(value) -> tuple[str, str] | None:
    """What is wrong with a labels mapping, as (the path below it: "", ".app" or "['app.kubernetes.io/name']",
    problem), or None. Keys and values must be strings, as the API has them: a number would
    silently never match."""
    if not isinstance(value, Mapping):
        return "", "not a mapping"
    for k, v in value.items():
        if not isinstance(k, str):
            return f"[{k!r}]", "key is not a string"
        if not isinstance(v, str):
            return f"[{k!r}]" if not k.isidentifier() else f".{k}", "not a string" if v is not None else "missing"
    return None


OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def requirement_problem(operator: str, values) -> str | None:
    """What the API server says of a matchExpressions entry's values for its operator, or None."""
    if operator in ("In", "NotIn") and not values:
        return f"{operator} needs at least one value"
    if operator in ("Exists", "DoesNotExist") and values:
        return f"{operator} takes no values"
    return None


@dataclass(frozen=True, order=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise ValueError(f"unknown selector operator {self.operator!r}")


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(r.matches(labels) for r in self.match_expressions)

    def keys(self) -> set[str]:
        return {k for k, _ in self.match_labels} | {r.key for r in self.match_expressions}

    def without(self, keys: frozenset[str]) -> LabelSelector:
        return LabelSelector(
            tuple((k, v) for k, v in self.match_labels if k not in keys),
            tuple(r for r in self.match_expressions if r.key not in keys),
        )

    def with_labels(self, extra: Labels) -> LabelSelector:
        return LabelSelector(tuple(sorted(set(self.match_labels) | set(extra))), self.match_expressions)

    def to_dict(self) -> dict:
        out: dict = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [
                {"key": r.key, "operator": r.operator, **({"values": list(r.values)} if r.values else {})} for r in self.match_expressions
            ]
        return out

    @classmethod
    def from_dict(cls, obj: Mapping | None, where: str = "") -> LabelSelector:
        """The selector of a ``matchLabels``/``matchExpressions`` mapping, checked as the API server
        checks it; ``where`` (its path, such as ``spec.podSelector``) starts the errors' paths."""
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise InvalidField(where, "not a mapping")
        match_labels = obj.get("matchLabels")
        if match_labels is not None:
            bad = labels_problem(match_labels)
            if bad:
                raise InvalidField(join_path(where, "matchLabels") + bad[0], bad[1])
        expressions = obj.get("matchExpressions")
        if expressions is not None and not isinstance(expressions, list):
            raise InvalidField(join_path(where, "matchExpressions"), "not a list")
        exprs = []
        for i, e in enumerate(expressions or ()):
            at = join_path(join_path(where, "matchExpressions"), i)
            if not isinstance(e, Mapping):
                raise InvalidField(at, "not a mapping")
            op, key, values = e.get("operator"), e.get("key"), e.get("values")
            if op is None:
                raise InvalidField(f"{at}.operator", "missing")
            if op not in OPERATORS:
                raise InvalidField(f"{at}.operator", f"unknown selector operator {str(op)!r} (not In, NotIn, Exists or DoesNotExist)")
            if not key or not isinstance(key, str):
                raise InvalidField(f"{at}.key", "not a string" if key else "missing")
            if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
                raise InvalidField(f"{at}.values", "not a list of strings")
            problem = requirement_problem(op, values)
            if problem:
                raise InvalidField(f"{at}.values", problem)
            exprs.append(Requirement(key, op, tuple(sorted(values or ()))))
        return cls(labels_of(match_labels), tuple(sorted(exprs)))


@dataclass(frozen=True)
class ContainerPort:
    name: str | None
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    labels: Labels
    ips: tuple[str, ...]
    node: str | None
    host_network: bool
    start: int | None  # ns since the epoch: when it got its address (startTime, else creation)
    end: int | None  # ns: deletion, or the last snapshot that showed it when a later one did not; None: still there
    owner: tuple[str, str] | None  # (kind, name) of its controller
    ports: tuple[ContainerPort, ...] = ()
    # When ``end`` is only the last snapshot that showed the pod: the latest it may have held its
    # address (the next snapshot's time, or the start of the next known holder); attributions
    # after ``end`` and up to it are inferred (docs/resolution.md). None: ``end`` is exact.
    end_by: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def holds(self, first: int, last: int) -> bool:
        """Did the pod hold its address at some time in [first, last]?"""
        return (self.start is None or self.start <= last) and (self.end is None or first <= self.end)


@dataclass(frozen=True)
class Workload:
    """Pods that one controller runs, and the selector that picks them (and no other pod)."""

    namespace: str
    kind: str  # Deployment, StatefulSet, DaemonSet, CronJob, Job, ReplicaSet, Pod
    name: str
    selector: LabelSelector | None  # None: no labels can select it
    pods: tuple[str, ...]
    inferred: str | None = None  # why the owner had to be inferred, when its object was missing
    unique: bool = True  # False: the selector also picks pods of `also_selects`
    also_selects: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.ref)


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    protocol: str
    target_port: int | str
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    selector: Labels | None  # None: a Service without a selector (its endpoints are managed by hand)
    ports: tuple[ServicePort, ...]
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class EndpointPort:
    name: str | None
    port: int
    protocol: str


@dataclass(frozen=True)
class EndpointAddress:
    address: str
    pod: str | None  # name of the target pod, in the slice's namespace
    node: str | None


@dataclass(frozen=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str | None
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[EndpointAddress, ...]
    # The times this version of the slice was in force (a watch history, or several snapshots):
    # from ``start`` (None: from the beginning) until ``end`` (None: still).
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class Node:
    name: str
    addresses: tuple[str, ...]
    pod_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels


@dataclass(frozen=True)
class Inventory:
    namespaces: tuple[Namespace, ...] = ()
    nodes: tuple[Node, ...] = ()
    pods: tuple[Pod, ...] = ()
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    workloads: tuple[Workload, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    snapshots: tuple[int, ...] = ()  # snapshot times, ns
    watched: tuple[tuple[int, int], ...] = ()  # (from, until) of each watch history loaded, ns
    notes: tuple[str, ...] = field(default=())  # what loading skipped or had to infer
    workload_of: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (ns, pod) -> workload ref


def parse_cidr(value) -> str:
    """An address range as its network (``10.244.0.0/16``; a bare address is its /32 or /128);
    ValueError when ``value`` is not one."""
    try:
        return str(ipaddress.ip_network(str(value).strip(), strict=False))
    except ValueError:
        raise ValueError(f"{str(value)!r} is not an address range such as 10.244.0.0/16") from None
