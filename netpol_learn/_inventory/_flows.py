"""An inventory from the identities that flow records carry (Hubble's endpoints), for when no
cluster inventory is given.

    FlowLog.endpoints  ->  inventory_from_endpoints  ->  Inventory

What the records say is all there is: each pod with its namespace, labels and the addresses it
held while records named it (from the first to the last such record), its node when a record
showed it; the namespaces' labels as Cilium copies them onto the pods; the nodes (``host``
endpoints name theirs; a ``remote-node`` address no ``host`` endpoint names is a node of that
name). No owner objects, container ports, Services or address ranges: each workload is the one
the records name (``Endpoint.workload``), else guessed from the pod's name, and marked inferred
so that REPORT.md says so; its selector is the labels its pods share minus the per-replica ones
(``build_workloads``). See docs/resolution.md, "Identities from flow records (Hubble)".
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

from netpol_learn._inventory._model import NAMESPACE_LABEL, Inventory, Namespace, Node, Pod, parse_cidr
from netpol_learn._inventory._workloads import build_workloads

#: What a workload inferred from flow records says about itself (``Workload.inferred``).
FROM_RECORDS = "from the flow records' identities, no --inventory"
#: The characters of the random parts of generated names (k8s.io/apimachinery's util/rand: no
#: vowels, no 0, 1, 3): pod-template-hashes and the 5-character suffixes of pods.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_CRONJOB_POD = re.compile(rf"^(.+)-\d{{8,}}-{_SAFE}{{5}}$")
_DEPLOYMENT_POD = re.compile(rf"^(.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_STATEFULSET_POD = re.compile(r"^(.+)-\d+$")
_DAEMONSET_POD = re.compile(rf"^(.+)-{_SAFE}{{5}}$")


def owner_from_name(name: str) -> tuple[str, str, str] | None:
    """(kind, name, how) of the controller a pod's generated name suggests, or None: the pod is
    its own workload. A guess: a Job's pods are named as a DaemonSet's, a bare pod may be named
    anything."""
    for pattern, kind, how in (
        (_CRONJOB_POD, "CronJob", "<name>-<schedule time>-<5 characters>"),
        (_DEPLOYMENT_POD, "Deployment", "<name>-<pod-template-hash>-<5 characters>"),
        (_STATEFULSET_POD, "StatefulSet", "<name>-<ordinal>"),
        (_DAEMONSET_POD, "DaemonSet", "<name>-<5 characters>"),
    ):
        m = pattern.match(name)
        if m:
            return kind, m.group(1), how
    return None


def inventory_from_endpoints(endpoints: Iterable, pod_cidrs: Iterable[str] = (), service_cidrs: Iterable[str] = ()) -> Inventory:
    """The inventory that the endpoint lines of a flow log describe (``FlowLog.endpoints``):
    pods, namespaces, nodes and inferred workloads (docs/resolution.md); with the pod and
    Service ranges given (``--pod-cidr``, ``--service-cidr``), if any."""
    endpoints = list(endpoints)
    pod_cidrs = tuple(dict.fromkeys(parse_cidr(c) for c in pod_cidrs))
    service_cidrs = tuple(dict.fromkeys(parse_cidr(c) for c in service_cidrs))
    pod_lines: dict[tuple[str, str], list] = defaultdict(list)
    host_nodes: dict[str, set[str]] = defaultdict(set)  # node name -> addresses
    named_by_host: set[str] = set()
    remote: set[str] = set()
    for e in endpoints:
        if e.entity == "pod":
            pod_lines[(e.namespace, e.pod)].append(e)
        elif e.entity == "host":
            host_nodes[e.node or e.address].add(e.address)
            named_by_host.add(e.address)
        elif e.entity == "remote-node":
            remote.add(e.address)
    for address in remote - named_by_host:
        host_nodes[address].add(address)

    pods: list[Pod] = []
    why: dict[tuple[str, str], str] = {}  # (ns, pod) -> what Workload.inferred says
    namespace_labels: dict[str, tuple[int, tuple]] = {}
    for (ns, name), lines in sorted(pod_lines.items()):
        latest = max(lines, key=lambda e: (e.last_seen, e.key))  # labels may change: the last ones count
        workload = next((e.workload for e in sorted(lines, key=lambda e: (-e.last_seen, e.key)) if e.workload), "")
        kind, _, owner_name = workload.partition("/")
        if kind and owner_name:
            owner = (kind, owner_name)
            why[(ns, name)] = f"{FROM_RECORDS}: the workload the records name; its selector from its pods' labels"
        else:
            guess = owner_from_name(name)
            if guess is None:
                owner = None
                why[(ns, name)] = f"{FROM_RECORDS}: no controller recognised in the pod's name, so the pod is its own workload"
            else:
                owner = guess[:2]
                why[(ns, name)] = (f"{FROM_RECORDS}: the kind and name are a guess from the pod's name ({guess[2]}); "
                                   "its selector from its pods' labels")
        node = max((e.node for e in lines), default="") or None
        pods.append(Pod(
            namespace=ns, name=name, uid=f"flow-records:{ns}/{name}", labels=tuple(sorted(latest.labels)),
            ips=tuple(sorted({e.address for e in lines})), node=node, host_network=False,
            start=min(e.first_seen for e in lines), end=max(e.last_seen for e in lines), owner=owner,
        ))
        seen = namespace_labels.get(ns)
        if seen is None or latest.last_seen > seen[0]:
            namespace_labels[ns] = (latest.last_seen, latest.namespace_labels)
    # build_workloads takes the owners as given (no owner objects): kinds and names are ours.
    workloads, workload_of, notes = build_workloads(pods, {})
    workloads = [replace(w, inferred=min(why[(w.namespace, p)] for p in w.pods)) for w in workloads]
    namespaces = tuple(
        Namespace(ns, tuple(sorted({**dict(labels), NAMESPACE_LABEL: ns}.items())))
        for ns, (_, labels) in sorted(namespace_labels.items())
    )
    nodes = tuple(Node(name, tuple(sorted(addresses)), ()) for name, addresses in sorted(host_nodes.items()))
    ranges = ("the pod and Service ranges are unknown, so an address no record named is outside the cluster"
              if not (pod_cidrs or service_cidrs) else
              f"the cluster's ranges only as given ({', '.join((*pod_cidrs, *service_cidrs))}): an address outside them that no record named is outside the cluster")
    summary = (f"inventory built from the flow records' identities (no --inventory): {len(pods)} pod(s), "
               f"{len(namespaces)} namespace(s), {len(nodes)} node(s); workloads and their selectors inferred from the "
               f"pods' names and labels; {ranges}")
    notes = [n for n in notes if "inferred without their owner objects" not in n]
    return Inventory(
        namespaces=namespaces, nodes=nodes, pods=tuple(pods), workloads=tuple(workloads),
        pod_cidrs=pod_cidrs, service_cidrs=service_cidrs, notes=(summary, *notes), workload_of=dict(workload_of),
    )
