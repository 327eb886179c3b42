"""Small builders of Kubernetes objects in the shape `kubectl get ... -o yaml` prints them.

Every builder returns a plain dict with apiVersion, kind and realistic metadata (uid,
creationTimestamp, resourceVersion, ownerReferences with controller: true), so a test inventory
reads like a real snapshot. Times are seconds after BASE (2025-06-01T10:00:00Z); `at(s)` gives
the RFC 3339 text kubectl prints, `ns(s)` the nanoseconds a Flow carries.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from netpol_learn._flowlog import DnsAnswer, DnsObservation, Flow, FlowLog, Translation

BASE = datetime(2025, 6, 1, 10, 0, 0, tzinfo=timezone.utc)
SNAPSHOT_ANNOTATION = "netpol-learn.io/snapshot-time"  # what `netpol-learn inventory` writes


def at(seconds: float) -> str:
    """RFC 3339 as the API server prints it (whole seconds, Z)."""
    return (BASE + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ns(seconds: float) -> int:
    return int((BASE.timestamp() + seconds) * 1_000_000_000)


def uid(kind: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{namespace}/{name}"))


def _meta(kind: str, name: str, namespace: str | None, labels: Mapping | None = None, owner: tuple[str, str] | None = None,
          created: float = 0, annotations: Mapping | None = None, **extra) -> dict:
    meta: dict = {"creationTimestamp": at(created)}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    meta["name"] = name
    if namespace is not None:
        meta["namespace"] = namespace
    if owner:
        okind, oname = owner
        api = {"ReplicaSet": "apps/v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
               "Job": "batch/v1", "CronJob": "batch/v1", "Node": "v1"}.get(okind, "v1")
        meta["ownerReferences"] = [{
            "apiVersion": api, "blockOwnerDeletion": True, "controller": True, "kind": okind, "name": oname,
            "uid": uid(okind, namespace or "", oname),
        }]
    meta["resourceVersion"] = str(zlib.crc32(f"{kind}/{namespace}/{name}".encode()) % 100000)
    meta["uid"] = uid(kind, namespace or "", name)
    meta.update(extra)
    return meta


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta("Namespace", name, None, {"kubernetes.io/metadata.name": name}),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def node(name: str, ip: str, pod_cidr: str | None = None, created: float = 0) -> dict:
    spec: dict = {"providerID": f"kind://docker/kind/{name}"}
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": _meta("Node", name, None, {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}, created=created),
            "spec": spec,
            "status": {"addresses": [{"address": ip, "type": "InternalIP"}, {"address": name, "type": "Hostname"}]}}


def pod(name: str, namespace: str = "default", ip: str | None = "10.244.1.10", *, labels: Mapping | None = None,
        owner: tuple[str, str] | None = None, node: str = "node-a", host_network: bool = False,
        ports: Iterable[tuple] = (), start: float | None = 0, created: float | None = None, phase: str = "Running",
        deleted: float | None = None, grace: int | None = None, finished: float | None = None,
        ips: Iterable[str] | None = None, command: Iterable[str] = (), pod_uid: str | None = None) -> dict:
    """ports: (name or None, containerPort, protocol)."""
    created = (start if start is not None else 0) if created is None else created
    extra = {}
    if deleted is not None:
        extra["deletionTimestamp"] = at(deleted)
    if grace is not None:
        extra["deletionGracePeriodSeconds"] = grace
    meta = _meta("Pod", name, namespace, labels, owner, created=created, **extra)
    if owner:
        meta["generateName"] = name.rsplit("-", 1)[0] + "-"
    if pod_uid:
        meta["uid"] = pod_uid
    container: dict = {"image": f"registry.example/{name.split('-')[0]}:1.0", "name": name.split("-")[0]}
    if command:
        container["command"] = list(command)
    cports = []
    for pname, port, proto in ports:
        p = {"containerPort": port}
        if pname:
            p["name"] = pname
        p["protocol"] = proto
        cports.append(p)
    if cports:
        container["ports"] = cports
    spec: dict = {"containers": [container], "dnsPolicy": "ClusterFirst", "nodeName": node, "restartPolicy": "Always"}
    if host_network:
        spec["hostNetwork"] = True
    status: dict = {"phase": phase}
    if phase != "Pending":
        status["hostIP"] = "172.18.0.2"
    addresses = list(ips) if ips is not None else ([ip] if ip else [])
    if addresses:
        status["podIP"] = addresses[0]
        status["podIPs"] = [{"ip": a} for a in addresses]
    if start is not None:
        status["startTime"] = at(start)
    if finished is not None:
        status["containerStatuses"] = [{
            "name": container["name"], "ready": False, "restartCount": 0, "image": container["image"],
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at(start or 0), "finishedAt": at(finished)}},
        }]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def service(name: str, namespace: str = "default", cluster_ip: str | None = "10.96.100.10", *,
            ports: Iterable[tuple] = (("http", 80, 8080, "TCP"),), selector: Mapping | None = None,
            type: str = "ClusterIP", node_ports: Mapping[int, int] | None = None, labels: Mapping | None = None,
            created: float = 0) -> dict:
    """ports: (name or None, port, targetPort, protocol); node_ports: port -> nodePort."""
    sports = []
    for pname, port, target, proto in ports:
        p: dict = {}
        if pname:
            p["name"] = pname
        if node_ports and port in node_ports:
            p["nodePort"] = node_ports[port]
        p.update({"port": port, "protocol": proto, "targetPort": target})
        sports.append(p)
    spec: dict = {"clusterIP": cluster_ip or "None", "clusterIPs": [cluster_ip or "None"],
                  "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                  "ports": sports, "sessionAffinity": "None", "type": type}
    if selector:
        spec["selector"] = dict(selector)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta("Service", name, namespace, labels, created=created),
            "spec": spec, "status": {"loadBalancer": {}}}


def endpoint_slice(service_name: str, namespace: str = "default", *, ports: Iterable[tuple] = (("http", 8080, "TCP"),),
                   endpoints: Iterable[tuple] = (), name: str | None = None, created: float = 0) -> dict:
    """ports: (name or None, port, protocol); endpoints: (address, pod name or None, node or None)."""
    eps = []
    for address, pod_name, node_name in endpoints:
        e: dict = {"addresses": [address], "conditions": {"ready": True, "serving": True, "terminating": False}}
        if node_name:
            e["nodeName"] = node_name
        if pod_name:
            e["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": namespace, "uid": uid("Pod", namespace, pod_name)}
        eps.append(e)
    eports = []
    for pname, port, proto in ports:
        p = {"name": pname or ""}
        p.update({"port": port, "protocol": proto})
        eports.append(p)
    name = name or f"{service_name}-x7k2p"
    return {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "endpoints": eps, "kind": "EndpointSlice",
            "metadata": _meta("EndpointSlice", name, namespace,
                              {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                               "kubernetes.io/service-name": service_name},
                              ("Service", service_name), created=created, generateName=f"{service_name}-"),
            "ports": eports}


def endpoints(name: str, namespace: str = "default", *, ports: Iterable[tuple] = (("http", 8080, "TCP"),),
              addresses: Iterable[tuple] = ()) -> dict:
    """The v1 Endpoints object: one subset. addresses: (ip, pod name or None, node or None)."""
    addrs = []
    for ip, pod_name, node_name in addresses:
        a: dict = {"ip": ip}
        if node_name:
            a["nodeName"] = node_name
        if pod_name:
            a["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": namespace, "uid": uid("Pod", namespace, pod_name)}
        addrs.append(a)
    eports = []
    for pname, port, proto in ports:
        p = {}
        if pname:
            p["name"] = pname
        p.update({"port": port, "protocol": proto})
        eports.append(p)
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": _meta("Endpoints", name, namespace),
            "subsets": [{"addresses": addrs, "ports": eports}]}


def _selector(match_labels: Mapping | None, match_expressions: Iterable[Mapping] | None = None) -> dict:
    sel: dict = {}
    if match_expressions:
        sel["matchExpressions"] = [dict(e) for e in match_expressions]
    if match_labels:
        sel["matchLabels"] = dict(match_labels)
    return sel


def deployment(name: str, namespace: str = "default", match_labels: Mapping | None = None, *,
               match_expressions: Iterable[Mapping] | None = None, replicas: int = 1) -> dict:
    match_labels = {"app": name} if match_labels is None and not match_expressions else match_labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("Deployment", name, namespace, {"app": name}),
            "spec": {"replicas": replicas, "selector": _selector(match_labels, match_expressions)}}


def replicaset(name: str, namespace: str = "default", match_labels: Mapping | None = None, *,
               owner: tuple[str, str] | None = None, match_expressions: Iterable[Mapping] | None = None) -> dict:
    """A ReplicaSet; with owner=("Deployment", d), its name is usually f"{d}-{pod-template-hash}"."""
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": _meta("ReplicaSet", name, namespace, match_labels, owner),
            "spec": {"replicas": 1, "selector": _selector(match_labels, match_expressions)}}


def statefulset(name: str, namespace: str = "default", match_labels: Mapping | None = None) -> dict:
    match_labels = match_labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta("StatefulSet", name, namespace, match_labels),
            "spec": {"replicas": 2, "serviceName": name, "selector": _selector(match_labels)}}


def daemonset(name: str, namespace: str = "kube-system", match_labels: Mapping | None = None) -> dict:
    match_labels = match_labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta("DaemonSet", name, namespace, match_labels),
            "spec": {"selector": _selector(match_labels)}}


def job(name: str, namespace: str = "default", *, owner: tuple[str, str] | None = None) -> dict:
    """A Job as the API server stores it: its selector is the generated controller-uid label."""
    job_uid = uid("Job", namespace, name)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": _meta("Job", name, namespace, {"batch.kubernetes.io/controller-uid": job_uid,
                                                       "batch.kubernetes.io/job-name": name, "controller-uid": job_uid,
                                                       "job-name": name}, owner),
            "spec": {"backoffLimit": 6, "completions": 1, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": job_uid}}}}


def job_labels(job_name: str, namespace: str = "default", **labels: str) -> dict:
    """The labels the Job controller puts on its pods, plus the template's own."""
    job_uid = uid("Job", namespace, job_name)
    return {"batch.kubernetes.io/controller-uid": job_uid, "batch.kubernetes.io/job-name": job_name,
            "controller-uid": job_uid, "job-name": job_name, **labels}


def cronjob(name: str, namespace: str = "default") -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta("CronJob", name, namespace),
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"metadata": {"labels": {"app": name}}}}}}}


def configmap(name: str, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("ConfigMap", name, namespace), "data": {"k": "v"}}


def kube_list(items: Iterable[dict], snapshot_time: float | None = None) -> dict:
    meta: dict = {"resourceVersion": ""}
    if snapshot_time is not None:
        meta["annotations"] = {SNAPSHOT_ANNOTATION: at(snapshot_time)}
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": meta}


def write_list(directory: Path, items: Iterable[dict], name: str = "inventory.yaml", *, snapshot_time: float | None = None,
               fmt: str = "yaml") -> Path:
    """Write a kubectl-style List (YAML or JSON) into directory/name."""
    doc = kube_list(items, snapshot_time)
    path = Path(directory) / name
    if fmt == "json":
        path.write_text(json.dumps(doc, indent=4) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), encoding="utf-8")
    return path


# --- flows ---------------------------------------------------------------------------------


def flow(src: str, dst: str, port: int | None, proto: str = "TCP", *, at_s: float = 1000, until_s: float | None = None,
         translated: Iterable[tuple[str, str, int | None]] = (), connections: int = 1) -> Flow:
    """A flow from `src` to `dst`:`port` seen from at_s to until_s (seconds after BASE)."""
    until_s = at_s + 1 if until_s is None else until_s
    method = "syn" if proto == "TCP" else ("icmp-echo" if proto.startswith("ICMP") else "first-packet")
    return Flow(src=src, dst=dst, proto=proto, port=port, packets=10 * connections, bytes=1000 * connections,
                connections=connections, first_seen=ns(at_s), last_seen=ns(until_s), direction=((method, connections),),
                translated=tuple(Translation(s, d, p) for s, d, p in translated))


def dns(client: str, resolver: str, qname: str, answers: Iterable[tuple[str, str, str]], *, at_s: float = 999) -> DnsObservation:
    """answers: (name, type, data)."""
    return DnsObservation(client=client, resolver=resolver, qname=qname, qtype="A", queries=1, responses=1,
                          first_seen=ns(at_s), last_seen=ns(at_s),
                          answers=tuple(sorted(DnsAnswer(n, t, d, 60) for n, t, d in answers)),
                          rcodes=("NOERROR",), transports=("udp",))


def log(*flows: Flow, dns_observations: Iterable[DnsObservation] = ()) -> FlowLog:
    return FlowLog(flows=tuple(flows), dns=tuple(dns_observations))
