"""The live inventory: ``netpol-learn inventory`` and ``fetch_inventory`` with the real ``kubernetes`` client.

No real API server can run here (no cluster, no kind, no etcd), so the client is tested against a
local HTTP server (``http.server`` in a thread on 127.0.0.1) that answers the list calls the way
the Kubernetes API does: typed lists (``PodList`` ...) whose items lack ``apiVersion``/``kind``,
``metadata.resourceVersion``, ``limit`` honoured with opaque ``continue`` tokens and
``remainingItemCount``, and ``Status`` objects for 401/403/404/410. The objects are shaped like a
two-node kind cluster's (ownerReferences, podIPs, targetPorts by name, EndpointSlices with
targetRefs, node podCIDRs and addresses, managedFields).

In-cluster configuration forces https, so that test runs the server with TLS, using the
self-signed certificate below (EC P-256, CA:TRUE, SAN IP:127.0.0.1, valid 2025-2125), generated
once with the ``cryptography`` package and pasted here so the tests need no extra dependency.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kubernetes.config import incluster_config

from terminal import run_on_terminal
from fake_api import LocalApiServer, no_ambient_cluster, status  # noqa: F401  (an autouse fixture)
from fresh_process import SEEDS, netpol_learn
from netpol_learn import _cli as cli
from netpol_learn import InventoryError, fetch_inventory, write_inventory  # the public API

FIXED_TIME = datetime(2026, 2, 10, 11, 30, 0, 123456, tzinfo=timezone.utc)

TLS_CERT = """\
-----BEGIN CERTIFICATE-----
MIIBwzCCAWqgAwIBAgIUF2sCmHgCj5Kt0U6d09JgspD81PUwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKa3ViZXJuZXRlczAgFw0yNTAxMDEwMDAwMDBaGA8yMTI1MDEw
MTAwMDAwMFowFTETMBEGA1UEAwwKa3ViZXJuZXRlczBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABNzQEn1p6mHtfIx1toixzUNGYJeigD3WYQ1E0U0Xj+KGqw1SAd3/
HjAywr4rHtpMu9bKnFXgSbfIgvIO3quxwBOjgZUwgZIwDwYDVR0TAQH/BAUwAwEB
/zAOBgNVHQ8BAf8EBAMCAoQwEwYDVR0lBAwwCgYIKwYBBQUHAwEwGgYDVR0RBBMw
EYcEfwAAAYIJbG9jYWxob3N0MB0GA1UdDgQWBBTg+RfS1SYtNkz3AMOHq51BzFOE
jzAfBgNVHSMEGDAWgBTg+RfS1SYtNkz3AMOHq51BzFOEjzAKBggqhkjOPQQDAgNH
ADBEAiBUvg9rzxC5gBLe1gIXOKh5P5PM/u89GZfkCOjsw2nlBgIgXW+W43Nfi9w6
8lR321fJlNAVq7pWcS/huOshKssmkDI=
-----END CERTIFICATE-----
"""
TLS_KEY = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7UsJ6Zx6NgiGm796
bq+XbfnjjRFOZ3BNwG/hkIiUo++hRANCAATc0BJ9aeph7XyMdbaIsc1DRmCXooA9
1mENRNFNF4/ihqsNUgHd/x4wMsK+Kx7aTLvWypxV4Em3yILyDt6rscAT
-----END PRIVATE KEY-----
"""

# --- objects as the API server returns them (no apiVersion/kind on items) ----------------------

_rv = iter(range(40100, 50000))


def _meta(name: str, namespace: str | None = None, *, labels=None, owner=None, annotations=None, created="2026-02-10T09:14:07Z") -> dict:
    m: dict = {"name": name}
    if namespace is not None:
        m["namespace"] = namespace
    m["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}"))
    m["resourceVersion"] = str(next(_rv))
    m["creationTimestamp"] = created
    if labels:
        m["labels"] = labels
    if annotations:
        m["annotations"] = annotations
    if owner:
        kind, owner_name, api_version = owner
        m["ownerReferences"] = [{
            "apiVersion": api_version, "kind": kind, "name": owner_name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{owner_name}")),
            "controller": True, "blockOwnerDeletion": True,
        }]
    m["managedFields"] = [{
        "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
        "time": created, "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}},
    }]
    return m


def namespace(name: str) -> dict:
    return {
        "metadata": _meta(name, labels={"kubernetes.io/metadata.name": name}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node(name: str, address: str, pod_cidr: str) -> dict:
    return {
        "metadata": _meta(name, labels={
            "beta.kubernetes.io/arch": "amd64", "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        }, annotations={"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}),
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": f"kind://docker/kind/{name}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [{
                "type": "Ready", "status": "True", "lastHeartbeatTime": "2026-02-10T11:29:41Z",
                "lastTransitionTime": "2026-02-10T09:14:40Z", "reason": "KubeletReady", "message": "kubelet is posting ready status",
            }],
            "nodeInfo": {
                "architecture": "amd64", "containerRuntimeVersion": "containerd://1.7.18", "kernelVersion": "6.8.0-51-generic",
                "kubeProxyVersion": "v1.31.0", "kubeletVersion": "v1.31.0", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
            },
        },
    }


def pod(name: str, ns: str, ip: str, node_name: str, host_ip: str, *, owner, labels, port=None, host_network=False, phase="Running") -> dict:
    container = {"name": name.split("-")[0], "image": f"registry.example/{name.split('-')[0]}:1.4.2", "imagePullPolicy": "IfNotPresent",
                 "resources": {}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    if port:
        container["ports"] = [{"containerPort": port[1], "name": port[0], "protocol": "TCP"}]
    spec = {
        "containers": [container], "dnsPolicy": "ClusterFirst", "enableServiceLinks": True, "nodeName": node_name,
        "restartPolicy": "Never" if owner[0] == "Job" else "Always", "schedulerName": "default-scheduler",
        "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
    }
    if host_network:
        spec["hostNetwork"] = True
    return {
        "metadata": _meta(name, ns, labels=labels, owner=owner, created="2026-02-10T09:20:11Z"),
        "spec": spec,
        "status": {
            "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "qosClass": "BestEffort", "startTime": "2026-02-10T09:20:11Z",
            "conditions": [{"type": "Ready", "status": "False" if phase == "Succeeded" else "True", "lastProbeTime": None,
                            "lastTransitionTime": "2026-02-10T09:20:15Z"}],
        },
    }


def service(name: str, ns: str, cluster_ip: str, ports: list[dict], selector=None) -> dict:
    spec = {
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "internalTrafficPolicy": "Cluster",
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": ports, "sessionAffinity": "None", "type": "ClusterIP",
    }
    if selector:
        spec["selector"] = selector
    return {"metadata": _meta(name, ns, labels={"app": name} if selector else {"component": "apiserver", "provider": "kubernetes"}),
            "spec": spec, "status": {"loadBalancer": {}}}


def endpoint_slice(name: str, ns: str, service_name: str, endpoints: list[dict], ports: list[dict]) -> dict:
    return {
        "metadata": _meta(name, ns, labels={
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io", "kubernetes.io/service-name": service_name,
        }, owner=("Service", service_name, "v1"), annotations={"endpoints.kubernetes.io/last-change-trigger-time": "2026-02-10T09:20:15Z"}),
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def slice_endpoint(ip: str, pod_name: str, ns: str, node_name: str) -> dict:
    return {
        "addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False}, "nodeName": node_name,
        "targetRef": {"kind": "Pod", "name": pod_name, "namespace": ns, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/{pod_name}"))},
    }


def workload(name: str, ns: str, labels: dict, *, owner=None, spec_extra=None, status=None) -> dict:
    spec = {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name.split("-")[0], "image": "registry.example/app:1.4.2"}]}}}
    spec.update(spec_extra or {})
    return {"metadata": _meta(name, ns, labels=labels, owner=owner), "spec": spec, "status": status or {"observedGeneration": 1}}


def cluster() -> dict[str, list[dict]]:
    """A two-node kind cluster, by API path; items in etcd key order (namespace/name) as the API lists them."""
    cp, worker = ("kind-control-plane", "172.20.0.2"), ("kind-worker", "172.20.0.3")
    web, dns = {"app": "web", "pod-template-hash": "6d5f8b7c9"}, {"k8s-app": "kube-dns", "pod-template-hash": "76f75df574"}
    return {
        "/api/v1/namespaces": [namespace("default"), namespace("kube-system"), namespace("shop")],
        "/api/v1/nodes": [node(*cp, "10.244.0.0/24"), node(*worker, "10.244.1.0/24")],
        "/api/v1/pods": [
            pod("coredns-76f75df574-8xk2p", "kube-system", "10.244.0.3", *cp, owner=("ReplicaSet", "coredns-76f75df574", "apps/v1"), labels=dns, port=("dns", 53)),
            pod("coredns-76f75df574-tq7mz", "kube-system", "10.244.0.4", *cp, owner=("ReplicaSet", "coredns-76f75df574", "apps/v1"), labels=dns, port=("dns", 53)),
            pod("kube-proxy-7hd9s", "kube-system", "172.20.0.2", *cp, owner=("DaemonSet", "kube-proxy", "apps/v1"),
                labels={"k8s-app": "kube-proxy", "controller-revision-hash": "7b8d7c9d4f", "pod-template-generation": "1"}, host_network=True),
            pod("db-0", "shop", "10.244.1.6", *worker, owner=("StatefulSet", "db", "apps/v1"),
                labels={"app": "db", "apps.kubernetes.io/pod-index": "0", "statefulset.kubernetes.io/pod-name": "db-0"}, port=("postgres", 5432)),
            pod("migrate-28461230-b5kxq", "shop", "10.244.1.7", *worker, owner=("Job", "migrate-28461230", "batch/v1"),
                labels={"batch.kubernetes.io/job-name": "migrate-28461230", "job-name": "migrate-28461230"}, phase="Succeeded"),
            pod("web-6d5f8b7c9-4xjwz", "shop", "10.244.1.4", *worker, owner=("ReplicaSet", "web-6d5f8b7c9", "apps/v1"), labels=web, port=("http", 8080)),
            pod("web-6d5f8b7c9-q2n8l", "shop", "10.244.1.5", *worker, owner=("ReplicaSet", "web-6d5f8b7c9", "apps/v1"), labels=web, port=("http", 8080)),
        ],
        "/api/v1/services": [
            service("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
            service("kube-dns", "kube-system", "10.96.0.10", [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ], selector={"k8s-app": "kube-dns"}),
            service("db", "shop", "None", [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}], selector={"app": "db"}),
            service("web", "shop", "10.96.142.7", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}], selector={"app": "web"}),
        ],
        "/apis/discovery.k8s.io/v1/endpointslices": [
            {"metadata": _meta("kubernetes", "default", labels={"kubernetes.io/service-name": "kubernetes"}), "addressType": "IPv4",
             "endpoints": [{"addresses": ["172.20.0.2"], "conditions": {"ready": True}}],
             "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
            endpoint_slice("kube-dns-8m5tq", "kube-system", "kube-dns",
                           [slice_endpoint("10.244.0.3", "coredns-76f75df574-8xk2p", "kube-system", cp[0]),
                            slice_endpoint("10.244.0.4", "coredns-76f75df574-tq7mz", "kube-system", cp[0])],
                           [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
            endpoint_slice("web-7xq2d", "shop", "web",
                           [slice_endpoint("10.244.1.4", "web-6d5f8b7c9-4xjwz", "shop", worker[0]),
                            slice_endpoint("10.244.1.5", "web-6d5f8b7c9-q2n8l", "shop", worker[0])],
                           [{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ],
        "/api/v1/endpoints": [
            {"metadata": _meta("kubernetes", "default"), "subsets": [{"addresses": [{"ip": "172.20.0.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]},
            {"metadata": _meta("web", "shop"), "subsets": [{
                "addresses": [{"ip": ip, "nodeName": worker[0], "targetRef": {"kind": "Pod", "name": n, "namespace": "shop"}}
                              for ip, n in (("10.244.1.4", "web-6d5f8b7c9-4xjwz"), ("10.244.1.5", "web-6d5f8b7c9-q2n8l"))],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]},
        ],
        "/apis/apps/v1/replicasets": [
            workload("coredns-76f75df574", "kube-system", dns, owner=("Deployment", "coredns", "apps/v1"), spec_extra={"replicas": 2}),
            workload("web-6d5f8b7c9", "shop", web, owner=("Deployment", "web", "apps/v1"), spec_extra={"replicas": 2}),
        ],
        # Not in key order: the output must not depend on the order the server lists in.
        "/apis/apps/v1/deployments": [
            workload("web", "shop", {"app": "web"}, spec_extra={"replicas": 2, "strategy": {"type": "RollingUpdate"}}),
            workload("coredns", "kube-system", {"k8s-app": "kube-dns"}, spec_extra={"replicas": 2}),
        ],
        "/apis/apps/v1/statefulsets": [workload("db", "shop", {"app": "db"}, spec_extra={"replicas": 1, "serviceName": "db"})],
        "/apis/apps/v1/daemonsets": [workload("kube-proxy", "kube-system", {"k8s-app": "kube-proxy"})],
        "/apis/batch/v1/jobs": [workload("migrate-28461230", "shop", {"batch.kubernetes.io/job-name": "migrate-28461230"},
                                         owner=("CronJob", "migrate", "batch/v1"), status={"succeeded": 1, "completionTime": "2026-02-10T10:30:09Z"})],
        "/apis/batch/v1/cronjobs": [{"metadata": _meta("migrate", "shop"), "spec": {"schedule": "30 * * * *", "jobTemplate": {"spec": {}}}, "status": {"lastScheduleTime": "2026-02-10T10:30:00Z"}}],
    }


LIST_TYPES = {
    "/api/v1/namespaces": ("v1", "NamespaceList"), "/api/v1/nodes": ("v1", "NodeList"), "/api/v1/pods": ("v1", "PodList"),
    "/api/v1/services": ("v1", "ServiceList"), "/apis/discovery.k8s.io/v1/endpointslices": ("discovery.k8s.io/v1", "EndpointSliceList"),
    "/api/v1/endpoints": ("v1", "EndpointsList"), "/apis/apps/v1/replicasets": ("apps/v1", "ReplicaSetList"),
    "/apis/apps/v1/deployments": ("apps/v1", "DeploymentList"), "/apis/apps/v1/statefulsets": ("apps/v1", "StatefulSetList"),
    "/apis/apps/v1/daemonsets": ("apps/v1", "DaemonSetList"), "/apis/batch/v1/jobs": ("batch/v1", "JobList"),
    "/apis/batch/v1/cronjobs": ("batch/v1", "CronJobList"),
}
KIND_COUNT = {"Namespace": 3, "Node": 2, "Pod": 7, "Service": 4, "EndpointSlice": 3, "Endpoints": 2, "ReplicaSet": 2,
              "Deployment": 2, "StatefulSet": 1, "DaemonSet": 1, "Job": 1, "CronJob": 1}
KIND_ORDER = list(KIND_COUNT)


# --- a local server speaking the list API ----------------------------------------------------




class FakeApiServer(LocalApiServer):
    """Answers GET list calls from ``objects``; records every request as (path, query, Authorization)."""

    def __init__(self, objects=None, *, tls: Path | None = None, resource_version: str = "48213"):
        super().__init__(tls)
        self.objects = objects if objects is not None else cluster()
        self.resource_version = resource_version
        self.missing: set[str] = set()  # paths answered 404
        self.status_for: dict[str, tuple[int, str]] = {}  # path -> (code, reason), e.g. 403 Forbidden
        self.expire_once: set[str] = set()  # paths whose first continued request gets 410 Expired
        self.requests: list[tuple[str, dict, str | None]] = []

    def handle(self, request, path: str, query: dict) -> None:
        self.requests.append((path, query, request.headers.get("Authorization")))
        request.send_json(*self.answer(path, query))

    def answer(self, path: str, query: dict) -> tuple[int, dict]:
        if path not in self.objects or path in self.missing:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        resource = path.rsplit("/", 1)[1]
        if path in self.status_for:
            code, reason = self.status_for[path]
            group = path.split("/")[2] if path.startswith("/apis/") else ""
            message = (f'{resource} is forbidden: User "system:serviceaccount:default:viewer" cannot list resource '
                       f'"{resource}" in API group "{group}" at the cluster scope') if code == 403 else reason
            return code, status(code, reason, message, kind=resource)
        items = sorted(self.objects[path], key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])) \
            if path != "/apis/apps/v1/deployments" else self.objects[path]
        start = 0
        if "continue" in query:
            token = json.loads(base64.urlsafe_b64decode(query["continue"]))
            if token["path"] != path:
                return 400, status(400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            if path in self.expire_once:
                self.expire_once.discard(path)
                return 410, status(410, "Expired", "The provided continue parameter is too old to display a consistent list result. "
                                    "You can start a new list without the continue parameter, or use the continue token in this response "
                                    "to retrieve the remainder of the results.", metadata={"continue": query["continue"]})
            start = token["start"]
        limit = int(query["limit"]) if int(query.get("limit", 0)) > 0 else len(items)
        page = items[start:start + limit]
        api_version, list_kind = LIST_TYPES[path]
        metadata = {"resourceVersion": self.resource_version}
        if start + limit < len(items):
            token = {"v": "meta.k8s.io/v1", "rv": int(self.resource_version), "path": path, "start": start + limit}
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        return 200, {"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": copy.deepcopy(page)}


def write_kubeconfig(path: Path, contexts: dict[str, str], current: str, *, ca: Path | None = None) -> Path:
    """A kubeconfig with one cluster, user (a bearer token) and context per entry of ``contexts`` (name -> server)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": current,
        "clusters": [{"name": f"cluster-{n}", "cluster": {"server": url, **({"certificate-authority": str(ca)} if ca else {})}} for n, url in contexts.items()],
        "users": [{"name": f"user-{n}", "user": {"token": f"token-{n}"}} for n in contexts],
        "contexts": [{"name": n, "context": {"cluster": f"cluster-{n}", "user": f"user-{n}"}} for n in contexts],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def api(tmp_path):
    with FakeApiServer() as server:
        server.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"kind-kind": server.url}, "kind-kind")
        yield server


def run(args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def _kinds_in_order(items: list[dict]) -> list[str]:
    return list(dict.fromkeys(item["kind"] for item in items))


# --- tests -----------------------------------------------------------------------------------


def test_follows_continue_tokens_and_requests_every_page_once(api):
    items = fetch_inventory(api.kubeconfig, page_size=2)
    counts = {k: sum(1 for i in items if i["kind"] == k) for k in KIND_ORDER}
    assert counts == KIND_COUNT
    pods = [(path, q) for path, q, _ in api.requests if path == "/api/v1/pods"]
    assert len(pods) == 4  # 7 pods, 2 a page
    assert all(q["limit"] == "2" for _, q in pods)
    assert "continue" not in pods[0][1]
    tokens = [q["continue"] for _, q in pods[1:]]
    assert len(set(tokens)) == 3  # each continued page asked for once, with the token the page before gave
    seen = [(path, q.get("continue")) for path, q, _ in api.requests]
    assert len(seen) == len(set(seen))
    assert sum(1 for path, _ in seen if path == "/api/v1/namespaces") == 2  # 3 namespaces: 2 pages
    assert all(auth == "Bearer token-kind-kind" for _, _, auth in api.requests)
    pods_out = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items if i["kind"] == "Pod"]
    assert pods_out == sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in api.objects["/api/v1/pods"])


def test_one_page_when_the_page_size_covers_everything(api):
    fetch_inventory(api.kubeconfig)  # page size 500
    assert len(api.requests) == 12 and all(q == {"limit": "500"} for _, q, _ in api.requests)


def test_writes_a_kubectl_style_list(api, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_now", lambda: FIXED_TIME)
    out = tmp_path / "inventory.yaml"
    result = run(["inventory", "--kubeconfig", api.kubeconfig, "--page-size", 3, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"29 objects (3 Namespace, 2 Node, 7 Pod, 4 Service, 3 EndpointSlice, 2 Endpoints, 2 ReplicaSet, 2 Deployment, "
        f"1 StatefulSet, 1 DaemonSet, 1 Job, 1 CronJob) -> {out}"
    ]
    doc = yaml.safe_load(out.read_text())
    assert list(doc) == ["apiVersion", "kind", "metadata", "items"]
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    assert doc["metadata"] == {"annotations": {"netpol-learn.io/snapshot-time": "2026-02-10T11:30:00.123456Z"}, "resourceVersion": ""}
    items = doc["items"]
    assert _kinds_in_order(items) == KIND_ORDER
    keys = [(KIND_ORDER.index(i["kind"]), i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items]
    assert keys == sorted(keys)
    assert [i["metadata"]["name"] for i in items if i["kind"] == "Deployment"] == ["coredns", "web"]  # served the other way round
    api_versions = {i["kind"]: i["apiVersion"] for i in items}
    assert api_versions == {"Namespace": "v1", "Node": "v1", "Pod": "v1", "Service": "v1", "EndpointSlice": "discovery.k8s.io/v1",
                            "Endpoints": "v1", "ReplicaSet": "apps/v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1",
                            "DaemonSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}
    assert all(list(i)[:2] == ["apiVersion", "kind"] for i in items)
    assert not any("managedFields" in i["metadata"] for i in items)  # as kubectl hides them
    # The API's own JSON, untouched: camelCase keys, targetPort by name, timestamps still strings.
    web_pod = next(i for i in items if i["metadata"]["name"] == "web-6d5f8b7c9-4xjwz")
    assert web_pod["status"]["podIPs"] == [{"ip": "10.244.1.4"}] and web_pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert web_pod["metadata"]["creationTimestamp"] == "2026-02-10T09:20:11Z"
    assert web_pod["status"]["conditions"][0]["lastProbeTime"] is None
    web_svc = next(i for i in items if i["kind"] == "Service" and i["metadata"]["name"] == "web")
    assert web_svc["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]
    headless = next(i for i in items if i["kind"] == "Service" and i["metadata"]["name"] == "db")
    assert headless["spec"]["clusterIP"] == "None"  # a string, not YAML's null
    node = next(i for i in items if i["kind"] == "Node" and i["metadata"]["name"] == "kind-worker")
    assert node["spec"]["podCIDR"] == "10.244.1.0/24" and node["status"]["addresses"][0] == {"type": "InternalIP", "address": "172.20.0.3"}
    ready = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"] == "web-7xq2d")
    assert ready["endpoints"][0]["conditions"]["ready"] is True and ready["ports"][0]["port"] == 8080
    # Every object exactly as the server sent it, apart from the added type and the dropped managedFields.
    served = {}
    for path, objs in api.objects.items():
        for o in objs:
            meta = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
            served[(LIST_TYPES[path][1][: -len("List")], meta.get("namespace"), meta["name"])] = {**o, "metadata": meta}
    assert {(i["kind"], i["metadata"].get("namespace"), i["metadata"]["name"]): {k: v for k, v in i.items() if k not in ("apiVersion", "kind")}
            for i in items} == served


def test_output_is_byte_identical_across_runs_with_a_fixed_clock(api, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_now", lambda: FIXED_TIME)
    first = tmp_path / "a.yaml"
    assert run(["inventory", "--kubeconfig", api.kubeconfig, "--page-size", 3, "-o", first]).exit_code == 0
    # The library alone, with the time passed in, writes the same bytes.
    third = tmp_path / "c.yaml"
    write_inventory(fetch_inventory(api.kubeconfig, page_size=500), third, FIXED_TIME)
    assert third.read_bytes() == first.read_bytes()
    # So do processes with different hash seeds (set and dict orders differ) and page sizes, but for their own
    # snapshot time (they cannot be given the fixed clock), which is written once.
    fixed = first.read_text(encoding="utf-8")
    for seed, page_size in zip(SEEDS, (2, 5)):
        out = tmp_path / f"{seed}.yaml"
        r = netpol_learn(["inventory", "--kubeconfig", api.kubeconfig, "--page-size", page_size, "-o", out], seed)
        assert r.returncode == 0, r.stderr
        got = out.read_text(encoding="utf-8")
        stamp = yaml.safe_load(got)["metadata"]["annotations"]["netpol-learn.io/snapshot-time"]
        assert got.count(stamp) == 1, stamp
        assert got.replace(stamp, "2026-02-10T11:30:00.123456Z") == fixed, seed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_snapshot_time_is_when_the_listing_started(api, tmp_path):
    before = datetime.now(timezone.utc)
    result = run(["inventory", "--kubeconfig", api.kubeconfig])  # to stdout
    after = datetime.now(timezone.utc)
    assert result.exit_code == 0
    stamp = yaml.safe_load(result.stdout)["metadata"]["annotations"]["netpol-learn.io/snapshot-time"]
    assert stamp.endswith("Z") and before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) <= after
    assert result.stderr.strip().endswith("-> stdout")


def test_kind_the_server_does_not_serve_is_skipped_with_a_warning(api, tmp_path):
    api.missing.add("/apis/discovery.k8s.io/v1/endpointslices")  # a cluster older than 1.21
    warnings: list[str] = []
    items = fetch_inventory(api.kubeconfig, warn=warnings.append)
    assert warnings == ["the API server does not serve endpointslices.discovery.k8s.io (discovery.k8s.io/v1, HTTP 404); skipped"]
    assert "EndpointSlice" not in _kinds_in_order(items) and len(items) == 26
    out = tmp_path / "inv.yaml"
    result = run(["inventory", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert lines[0] == "warning: " + warnings[0] and len(lines) == 2 and "EndpointSlice" not in lines[1]


def test_a_server_that_serves_none_of_the_kinds_is_an_error(api):
    api.missing.update(api.objects)
    with pytest.raises(InventoryError, match=r"answered HTTP 404 for every kind: is it a Kubernetes API server\?"):
        fetch_inventory(api.kubeconfig)


@pytest.mark.parametrize(("code", "reason", "path", "line"), [
    (403, "Forbidden", "/api/v1/pods",
     'error: cannot list pods: HTTP 403 Forbidden: pods is forbidden: User "system:serviceaccount:default:viewer" '
     'cannot list resource "pods" in API group "" at the cluster scope'),
    (401, "Unauthorized", "/api/v1/namespaces",
     "error: cannot list namespaces: HTTP 401 Unauthorized (the API server rejected the credentials)"),
    (500, "Internal Server Error", "/apis/apps/v1/daemonsets",
     "error: cannot list daemonsets.apps: HTTP 500 Internal Server Error"),
])
def test_refused_list_is_one_line_naming_the_resource_and_exit_2(api, tmp_path, code, reason, path, line):
    api.status_for[path] = (code, reason)
    out = tmp_path / "inventory.yaml"
    result = run(["inventory", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [line]
    assert not out.exists()


def test_server_down_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_kubeconfig(tmp_path / "kubeconfig", {"gone": f"http://127.0.0.1:{port}"}, "gone")
    result = run(["inventory", "--kubeconfig", config, "-o", tmp_path / "inventory.yaml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: cannot reach the API server at http://127.0.0.1:{port} (listing namespaces): Connection refused"]


def test_context_chooses_the_cluster(tmp_path):
    small = {path: objs[:1] for path, objs in cluster().items()}
    with FakeApiServer() as prod, FakeApiServer(small) as staging:
        config = write_kubeconfig(tmp_path / "kubeconfig", {"prod": prod.url, "staging": staging.url}, "prod")
        assert len(fetch_inventory(config)) == 29
        assert staging.requests == []
        prod.requests.clear()
        assert len(fetch_inventory(config, context="staging")) == 12
        assert prod.requests == [] and {auth for _, _, auth in staging.requests} == {"Bearer token-staging"}
        result = run(["inventory", "--kubeconfig", config, "--context", "staging", "-o", tmp_path / "s.yaml"])
        assert result.exit_code == 0 and result.stderr.startswith("12 objects (1 Namespace, 1 Node, 1 Pod,")
        unknown = run(["inventory", "--kubeconfig", config, "--context", "dev", "-o", tmp_path / "d.yaml"])
        assert unknown.exit_code == 2 and len(unknown.stderr.splitlines()) == 1
        assert unknown.stderr.startswith(f"error: kubeconfig {config}: ") and "dev" in unknown.stderr


def test_kubeconfig_found_as_kubectl_finds_it(api, tmp_path, monkeypatch):
    # ~/.kube/config
    (tmp_path / "home" / ".kube").mkdir()
    write_kubeconfig(tmp_path / "home" / ".kube" / "config", {"home": api.url}, "home")
    fetch_inventory()
    assert {auth for _, _, auth in api.requests} == {"Bearer token-home"}
    # $KUBECONFIG wins over ~/.kube/config, and may list several files (missing ones are ignored)
    api.requests.clear()
    env = write_kubeconfig(tmp_path / "env-config", {"env": api.url}, "env")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(env)]))
    fetch_inventory()
    assert {auth for _, _, auth in api.requests} == {"Bearer token-env"}
    # ... and when none of its files exists, ~/.kube/config is not used either (kubectl does the same).
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(InventoryError, match=r"^no kubeconfig found"):
        fetch_inventory()


def test_a_kubeconfig_that_is_not_yaml_is_one_line(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nclusters: [unclosed\n")
    result = run(["inventory", "--kubeconfig", bad, "-o", tmp_path / "inventory.yaml"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: kubeconfig {bad}: ")


def test_no_configuration_at_all_is_one_line(tmp_path):
    result = run(["inventory", "-o", tmp_path / "inventory.yaml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster; pass --kubeconfig"]
    missing = run(["inventory", "--kubeconfig", tmp_path / "nope", "-o", tmp_path / "inventory.yaml"])
    assert missing.stderr.splitlines() == [f"error: kubeconfig {tmp_path / 'nope'}: no such file"]


@pytest.fixture
def tls_dir(tmp_path) -> Path:
    d = tmp_path / "tls"
    d.mkdir()
    (d / "tls.crt").write_text(TLS_CERT)
    (d / "tls.key").write_text(TLS_KEY)
    return d


def test_in_cluster_service_account_when_there_is_no_kubeconfig(tmp_path, tls_dir, monkeypatch):
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiIsImtpZCI6InNhIn0.service-account")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tls_dir / "tls.crt"))
    with FakeApiServer(tls=tls_dir) as server:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
        items = fetch_inventory(page_size=4)
        assert len(items) == 29
        # The in-cluster loader writes the scheme in lower case; the API server compares it case-insensitively.
        assert {auth for _, _, auth in server.requests} == {"bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InNhIn0.service-account"}
        # --context means a kubeconfig; in a pod without one that is a mistake, not a silent fallback.
        result = run(["inventory", "--context", "prod", "-o", tmp_path / "inventory.yaml"])
        assert result.stderr.splitlines() == ["error: --context prod: no kubeconfig found, and in-cluster configuration has no contexts"]
        # A kubeconfig, when there is one, wins over the service account.
        (tmp_path / "home" / ".kube").mkdir()
        write_kubeconfig(tmp_path / "home" / ".kube" / "config", {"home": server.url}, "home", ca=tls_dir / "tls.crt")
        server.requests.clear()
        fetch_inventory()
        assert {auth for _, _, auth in server.requests} == {"Bearer token-home"}


def test_in_cluster_without_the_token_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    result = run(["inventory", "-o", tmp_path / "inventory.yaml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: in-cluster configuration: Service token file does not exist."]


def test_untrusted_server_certificate_is_one_line(tmp_path, tls_dir):
    import certifi  # a CA bundle that does not hold the test certificate

    with FakeApiServer(tls=tls_dir) as server:
        config = write_kubeconfig(tmp_path / "kubeconfig", {"x": server.url}, "x", ca=Path(certifi.where()))
        result = run(["inventory", "--kubeconfig", config, "-o", tmp_path / "inventory.yaml"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: cannot reach the API server at {server.url} (listing namespaces): TLS certificate verification failed")


def test_expired_continue_token_lists_the_kind_again_in_one_piece(api):
    api.expire_once.add("/api/v1/pods")
    warnings: list[str] = []
    items = fetch_inventory(api.kubeconfig, page_size=3, warn=warnings.append)
    assert sum(1 for i in items if i["kind"] == "Pod") == 7
    assert warnings == ["listing pods: continue token expired after 3 objects; listing again without paging"]
    pods = [q for path, q, _ in api.requests if path == "/api/v1/pods"]
    assert [("limit" in q, "continue" in q) for q in pods] == [(True, False), (True, True), (False, False)]


def test_progress_on_a_terminal_only(api, tmp_path):
    args = [sys.executable, "-m", "netpol_learn", "inventory", "--kubeconfig", str(api.kubeconfig), "--page-size", "2"]
    code, shown = run_on_terminal([*args, "-o", str(tmp_path / "t.yaml")])
    assert code == 0
    assert b"listing " in shown and b"29 objects (" in shown
    quiet = subprocess.run([*args, "-o", str(tmp_path / "q.yaml")], capture_output=True, timeout=120)
    assert quiet.returncode == 0 and len(quiet.stderr.decode().splitlines()) == 1


def test_endpoints_refused_is_skipped_since_endpointslices_serve(api, tmp_path):
    """The sniffer's ClusterRole grants EndpointSlices, not the older Endpoints."""
    api.status_for["/api/v1/endpoints"] = (403, "Forbidden")
    out = tmp_path / "inventory.yaml"
    result = run(["inventory", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == "warning: not allowed to list endpoints (HTTP 403); skipped, EndpointSlices serve instead"
    kinds = {item["kind"] for item in yaml.safe_load(out.read_text())["items"]}
    assert "EndpointSlice" in kinds and "Endpoints" not in kinds
