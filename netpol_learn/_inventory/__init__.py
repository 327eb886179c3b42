"""The cluster inventory: the namespaces, nodes, pods, services and workloads that traffic is mapped to.

    snapshot files (kubectl get -o yaml/json)  ->  load_inventory (_load)  ->  Inventory (_model)
    live API  ->  fetch_inventory (_live)  ->  write_inventory  ->  kubectl-style YAML List
    live API  ->  watch_inventory (_watch)  ->  the List and the history of every change after it
    flow records' identities (FlowLog.endpoints)  ->  inventory_from_endpoints (_flows)  ->  Inventory
"""

from __future__ import annotations

from netpol_learn._inventory._flows import inventory_from_endpoints
from netpol_learn._inventory._live import DEFAULT_PAGE_SIZE, fetch_inventory, write_inventory
from netpol_learn._inventory._load import load_inventory, load_inventory_document, load_inventory_noted
from netpol_learn._inventory._watch import (
    DEFAULT_WRITE_EVERY,
    KINDS,
    History,
    Watched,
    list_and_watch,
    summary_line,
    watch_inventory,
)
from netpol_learn._inventory._live import assemble, dump_piece
from netpol_learn._inventory._model import (
    NAMESPACE_LABEL,
    PER_REPLICA_LABELS,
    PROTOCOLS,
    SNAPSHOT_ANNOTATION,
    WATCHED_UNTIL_ANNOTATION,
    ContainerPort,
    EndpointSlice,
    Inventory,
    LabelSelector,
    Node,
    Pod,
    Requirement,
    Service,
    ServicePort,
    Workload,
    labels_problem,
    parse_cidr,
)

__all__ = sorted([
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_WRITE_EVERY",
    "PER_REPLICA_LABELS",
    "PROTOCOLS",
    "SNAPSHOT_ANNOTATION",
    "WATCHED_UNTIL_ANNOTATION",
    "ContainerPort",
    "EndpointSlice",
    "Inventory",
    "LabelSelector",
    "Node",
    "Pod",
    "Requirement",
    "Service",
    "ServicePort",
    "Watched",
    "Workload",
    "fetch_inventory",
    "inventory_from_endpoints",
    "labels_problem",
    "load_inventory",
    "load_inventory_document",
    "load_inventory_noted",
    "History",
    "KINDS",
    "list_and_watch",
    "assemble",
    "dump_piece",
    "parse_cidr",
    "summary_line",
    "watch_inventory",
    "write_inventory",
])
