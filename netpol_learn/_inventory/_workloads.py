"""Workloads: which controller runs each pod, and a selector that picks exactly its pods.

Owner chains: Pod -> ReplicaSet -> Deployment, StatefulSet, DaemonSet, Job -> CronJob; a pod
without an owner is its own workload. When an owner object is missing from the inventory, what
can be inferred is (a ReplicaSet name minus its pod-template-hash is the Deployment's name; a Job
named ``<name>-<8+ digits>`` was started by CronJob ``<name>``), and the workload says so.

Selectors: the owner's ``spec.selector`` where known, else the labels all its pods share; minus
the per-replica and per-run labels. Then checked against every pod of the namespace: where it
also picks other workloads' pods, labels the workload's pods share are added until it does not;
where that is impossible, the workload is marked not unique and keeps the narrowest selector
found (it selects its own pods plus the others: it never breaks observed traffic, and the
report names the others). A workload whose pods share no usable label has no selector at all,
never ``podSelector: {}``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

from netpol_learn._inventory._model import PER_REPLICA_LABELS, LabelSelector, Pod, Workload, controller_of

_CRONJOB_RUN = re.compile(r"^(.+)-\d{8,}$")


class InvalidSelector(ValueError):
    """An owner object's selector that Kubernetes itself would reject."""


def _spec_selector(obj: Mapping | None) -> LabelSelector | None:
    sel = ((obj or {}).get("spec") or {}).get("selector")
    if not isinstance(sel, Mapping):
        return None
    try:
        return LabelSelector.from_dict(sel)
    except (ValueError, KeyError, TypeError) as exc:
        meta = obj.get("metadata") or {}
        raise InvalidSelector(f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}: invalid spec.selector: {exc}") from exc


def _owner_of(pod: Pod, owners: Mapping[tuple[str, str, str], dict]) -> tuple[str, str, LabelSelector | None, str | None]:
    """(kind, name, selector from the owner object or None, why it was inferred or None)."""
    ns = pod.namespace
    if pod.owner is None or pod.owner[0] == "Node":  # bare pods; static (mirror) pods
        return "Pod", pod.name, None, None
    kind, name = pod.owner
    if kind == "ReplicaSet":
        rs = owners.get(("ReplicaSet", ns, name))
        if rs is not None:
            parent = controller_of(rs)
            if parent and parent[0] == "Deployment":
                dep = owners.get(("Deployment", ns, parent[1]))
                if dep is not None:
                    return "Deployment", parent[1], _spec_selector(dep), None
                return "Deployment", parent[1], _spec_selector(rs), "Deployment object missing; selector from its ReplicaSet"
            return "ReplicaSet", name, _spec_selector(rs), None
        template_hash = dict(pod.labels).get("pod-template-hash")
        if template_hash and name.endswith("-" + template_hash):
            return "Deployment", name[: -len(template_hash) - 1], None, "ReplicaSet and Deployment missing; name from the ReplicaSet's"
        return "ReplicaSet", name, None, "ReplicaSet object missing"
    if kind == "Job":
        job = owners.get(("Job", ns, name))
        if job is not None:
            parent = controller_of(job)
            if parent and parent[0] == "CronJob":
                return "CronJob", parent[1], None, None if ("CronJob", ns, parent[1]) in owners else "CronJob object missing"
            return "Job", name, None, None
        m = _CRONJOB_RUN.match(name)
        if m:
            return "CronJob", m.group(1), None, "Job and CronJob missing; name from the Job's"
        return "Job", name, None, "Job object missing"
    obj = owners.get((kind, ns, name))
    return kind, name, _spec_selector(obj), None if obj is not None or kind not in ("StatefulSet", "DaemonSet") else f"{kind} object missing"


def build_workloads(pods: list[Pod], owners: Mapping[tuple[str, str, str], dict]) -> tuple[list[Workload], dict, list[str]]:
    members: dict[tuple[str, str, str], list[Pod]] = defaultdict(list)
    declared: dict[tuple[str, str, str], LabelSelector | None] = {}
    inferred: dict[tuple[str, str, str], str | None] = {}
    for pod in pods:
        kind, name, selector, why = _owner_of(pod, owners)
        key = (pod.namespace, kind, name)
        members[key].append(pod)
        if selector is not None:
            declared[key] = selector
        inferred[key] = inferred.get(key) or why
    by_namespace: dict[str, list[Pod]] = defaultdict(list)
    for pod in pods:
        by_namespace[pod.namespace].append(pod)
    workload_of = {}
    for (ns, kind, name), ps in members.items():
        for p in ps:
            workload_of[(ns, p.name)] = f"{kind}/{name}"

    workloads = []
    notes = []
    for key in sorted(members):
        ns, kind, name = key
        own = members[key]
        common = set(own[0].labels)
        for p in own[1:]:
            common &= set(p.labels)
        common = {(k, v) for k, v in common if k not in PER_REPLICA_LABELS}
        selector = declared.get(key)
        if selector is not None:
            selector = selector.without(PER_REPLICA_LABELS)
            if not all(selector.matches(p.label_map) for p in own):
                selector = None  # the object's selector does not match its pods (edited labels): do not trust it
        if selector is None or selector.empty:
            selector = LabelSelector(tuple(sorted(common)))
        if selector.empty:
            workloads.append(Workload(ns, kind, name, None, tuple(sorted(p.name for p in own)), inferred.get(key), unique=False))
            notes.append(f"{ns}/{kind}/{name}: its pods share no label that a selector could use")
            continue
        own_names = {p.name for p in own}
        others = [p for p in by_namespace[ns] if p.name not in own_names and selector.matches(p.label_map)]
        candidates = sorted(common - set(selector.match_labels))
        while others and candidates:
            best = max(candidates, key=lambda kv: (sum(1 for p in others if p.label_map.get(kv[0]) != kv[1]), kv))
            excluded = [p for p in others if p.label_map.get(best[0]) != best[1]]
            if not excluded:
                break
            selector = selector.with_labels((best,))
            candidates.remove(best)
            others = [p for p in others if p not in excluded]
        also = tuple(sorted({workload_of[(ns, p.name)] for p in others}))
        if also:
            notes.append(f"{ns}/{kind}/{name}: no selector picks it alone; {selector.to_dict()} also selects {', '.join(also)}")
        workloads.append(Workload(ns, kind, name, selector, tuple(sorted(own_names)), inferred.get(key), unique=not also, also_selects=also))
    inferred_count = sum(1 for w in workloads if w.inferred)
    if inferred_count:
        notes.append(f"{inferred_count} workload(s) inferred without their owner objects")
    return workloads, workload_of, notes
