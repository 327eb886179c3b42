"""Resolution of flows against an inventory (issue 3; DESIGN.md rules 1, 5, 7, 8, 9, 10).

Table-driven: each case is a small cluster (built with tests/k8s.py, in kubectl's shape) plus
`Flow`s, and the exact set of connections expected, each written as
(client, server, protocol, server port) with peers described as
  "pod <namespace>/<Kind>/<name>"          a pod of a workload
  "node <name>"                            a node address (host-network pods included)
  "service-endpoint <ns>/<svc> <address>"  an endpoint of a Service without a selector
  "node-local-dns <address>"               NodeLocal DNSCache
  "external <address>"                     outside the cluster
  "unresolved <address>"                   in the pod/service ranges, held by no pod then (or ambiguous)
Expectations come from issue 3 and DESIGN.md, worked out by hand. The port of a connection is the
server pod's own port (a Service's target port), never the Service port (rule 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import k8s  # noqa: E402
from k8s import flow  # noqa: E402

from netpol_learn._capture import capture_file  # noqa: E402
from netpol_learn._inventory import load_inventory  # noqa: E402
from netpol_learn._resolve import PEER_KINDS, ResolveOptions, resolve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# --- the cluster every case starts from ---------------------------------------------------

NODE_A, NODE_B = "172.18.0.2", "172.18.0.3"
FE_IP = "10.244.1.20"
FE = "pod shop/Deployment/frontend"
API = "pod shop/Deployment/api"
WEB = "pod shop/Deployment/web"
COREDNS = "pod kube-system/Deployment/coredns"


def deploy(name, namespace, pods, *, labels=None, ports=(), template_hash="6b8c9d7f5", selector=None, host_network=False):
    """A Deployment, its ReplicaSet and pods; pods: (ip, node) each."""
    labels = labels or {"app": name}
    selector = selector or labels
    rs = f"{name}-{template_hash}"
    out = [k8s.deployment(name, namespace, selector),
           k8s.replicaset(rs, namespace, {**selector, "pod-template-hash": template_hash}, owner=("Deployment", name))]
    for i, (ip, node_name) in enumerate(pods):
        out.append(k8s.pod(f"{rs}-{'x2v9kq8m7w'[i:i + 5]}", namespace, ip, node=node_name, ports=ports,
                           labels={**labels, "pod-template-hash": template_hash}, owner=("ReplicaSet", rs),
                           host_network=host_network))
    return out


def base() -> list[dict]:
    return [
        k8s.namespace("default"), k8s.namespace("kube-system"), k8s.namespace("shop"),
        k8s.node("node-a", NODE_A, "10.244.1.0/24"),
        k8s.node("node-b", NODE_B, "10.244.2.0/24"),
        k8s.pod("kube-apiserver-node-a", "kube-system", NODE_A, host_network=True, owner=("Node", "node-a"),
                labels={"component": "kube-apiserver", "tier": "control-plane"},
                command=["kube-apiserver", f"--advertise-address={NODE_A}", "--secure-port=6443",
                         "--service-cluster-ip-range=10.96.0.0/12"]),
        k8s.service("kubernetes", "default", "10.96.0.1", ports=[("https", 443, 6443, "TCP")],
                    labels={"component": "apiserver", "provider": "kubernetes"}),
        k8s.endpoint_slice("kubernetes", "default", name="kubernetes", ports=[("https", 6443, "TCP")],
                           endpoints=[(NODE_A, None, None)]),
        *deploy("coredns", "kube-system", [("10.244.1.2", "node-a"), ("10.244.2.2", "node-b")], labels={"k8s-app": "kube-dns"},
                template_hash="668d6bf9bc", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]),
        k8s.service("kube-dns", "kube-system", "10.96.0.10", selector={"k8s-app": "kube-dns"},
                    ports=[("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP"), ("metrics", 9153, 9153, "TCP")]),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns-tcp", 53, "TCP"), ("dns", 53, "UDP"), ("metrics", 9153, "TCP")],
                           endpoints=[("10.244.1.2", "coredns-668d6bf9bc-x2v9k", "node-a"),
                                      ("10.244.2.2", "coredns-668d6bf9bc-2v9kq", "node-b")]),
        *deploy("frontend", "shop", [(FE_IP, "node-a")], template_hash="5f9c8b7d6"),
    ]


def web_service(*, type="ClusterIP", node_ports=None, target=8080):
    """Deployment/web (10.244.2.40 on node-b, port http 8080) behind Service shop/web 10.96.100.10:80."""
    return [*deploy("web", "shop", [("10.244.2.40", "node-b")], ports=[("http", 8080, "TCP")]),
            k8s.service("web", "shop", "10.96.100.10", ports=[("http", 80, target, "TCP")], selector={"app": "web"}, type=type,
                        node_ports=node_ports),
            k8s.endpoint_slice("web", "shop", ports=[("http", 8080, "TCP")],
                               endpoints=[("10.244.2.40", "web-6b8c9d7f5-x2v9k", "node-b")])]


def canary():
    """Service shop/web selects app=web: Deployment/web-v1 (10.244.1.41) and Deployment/web-v2 (10.244.2.42)."""
    return [*deploy("web-v1", "shop", [("10.244.1.41", "node-a")], labels={"app": "web", "track": "stable"},
                    template_hash="7c9d8b6f5", ports=[("http", 8080, "TCP")]),
            *deploy("web-v2", "shop", [("10.244.2.42", "node-b")], labels={"app": "web", "track": "canary"},
                    template_hash="8d6f7c9b5", ports=[("http", 8080, "TCP")]),
            k8s.service("web", "shop", "10.96.100.10", ports=[("http", 80, "http", "TCP")], selector={"app": "web"}),
            k8s.endpoint_slice("web", "shop", ports=[("http", 8080, "TCP")],
                               endpoints=[("10.244.1.41", "web-v1-7c9d8b6f5-x2v9k", "node-a"),
                                          ("10.244.2.42", "web-v2-8d6f7c9b5-x2v9k", "node-b")])]


def reuse(*, a_deleted=100):
    """10.244.1.50 held by bare pod batch-a from 0 (to its deletion at 100) and by batch-b from 200."""
    return [k8s.pod("batch-a", "shop", "10.244.1.50", labels={"app": "batch-a"}, start=0, deleted=a_deleted),
            k8s.pod("batch-b", "shop", "10.244.1.50", labels={"app": "batch-b"}, start=200, node="node-a")]


def node_exporters():
    return [k8s.daemonset("node-exporter", "monitoring"),
            *[k8s.pod(f"node-exporter-{s}", "monitoring", ip, node=n, host_network=True, owner=("DaemonSet", "node-exporter"),
                      ports=[("metrics", 9100, "TCP")],
                      labels={"app": "node-exporter", "controller-revision-hash": "6c5d7", "pod-template-generation": "1"})
              for s, ip, n in (("k2x7p", NODE_A, "node-a"), ("m9q4z", NODE_B, "node-b"))]]


# --- how a case's result is described ----------------------------------------------------


def describe(p) -> str:
    if p.kind == "pod":
        return f"pod {p.namespace}/{p.workload}"
    if p.kind == "node":
        return f"node {p.node}"
    if p.kind == "service-endpoint":
        return f"service-endpoint {p.service} {p.address}"
    return f"{p.kind} {p.address}"


def summary(res) -> set[tuple]:
    return {(describe(c.client), describe(c.server), c.protocol, c.port) for c in res.connections}


def conn(res, server: str, port: int | None = None):
    found = [c for c in res.connections if describe(c.server) == server and (port is None or c.port == port)]
    assert found, f"no connection to {server}:{port}"
    return found[0]


def unresolved_flows(res, address):
    return sum(n for a, _, n in res.report.unresolved if a == address)


def ambiguous_flows(res, address):
    return sum(n for a, _, n in res.report.ambiguous if a == address)


# --- checks used by several cases ---------------------------------------------------------


def check_unresolved(address, flows=1):
    def check(res):
        c = conn(res, f"unresolved {address}")
        assert c.server.reason, "an unresolved address says why"
        assert unresolved_flows(res, address) == flows
        assert ambiguous_flows(res, address) == 0
    return check


def check_ambiguous(address):
    def check(res):
        assert ambiguous_flows(res, address) == 1
        assert unresolved_flows(res, address) == 0
        assert conn(res, f"unresolved {address}").server.reason
    return check


def checks(*fns):
    def check(res):
        for fn in fns:
            fn(res)
    return check


@dataclass
class Case:
    id: str
    items: list
    flows: list
    expected: set
    dns: list = field(default_factory=list)
    load_kw: dict = field(default_factory=dict)
    check: Callable | None = None


CASES = [
    # --- pods -----------------------------------------------------------------------------------
    Case("pod-to-pod-with-port-name",
         deploy("api", "shop", [("10.244.2.30", "node-b")], ports=[("http", 8080, "TCP")]),
         [flow(FE_IP, "10.244.2.30", 8080)],
         {(FE, API, "TCP", 8080)},
         check=lambda res: (conn(res, API).port_name == "http" and conn(res, API).via is None) or pytest.fail(repr(res.connections))),
    Case("replicas-talk-to-their-own-workload",
         deploy("api", "shop", [("10.244.1.31", "node-a"), ("10.244.2.31", "node-b")], ports=[("gossip", 7946, "TCP")]),
         [flow("10.244.1.31", "10.244.2.31", 7946)],
         {(API, API, "TCP", 7946)}),
    Case("dual-stack-pod-by-its-ipv6-address",
         [k8s.pod("v6", "shop", ips=["10.244.1.61", "fd00:10:244:1::3d"], labels={"app": "v6"}, ports=[("http", 8080, "TCP")])],
         [flow("2001:db8::1", "fd00:10:244:1::3d", 8080)],
         {("external 2001:db8::1", "pod shop/Pod/v6", "TCP", 8080)}),
    # --- time: addresses reused ----------------------------------------------------------------
    Case("reuse-first-holder", reuse(), [flow(FE_IP, "10.244.1.50", 9000, at_s=50)], {(FE, "pod shop/Pod/batch-a", "TCP", 9000)}),
    Case("reuse-second-holder", reuse(), [flow(FE_IP, "10.244.1.50", 9000, at_s=250)], {(FE, "pod shop/Pod/batch-b", "TCP", 9000)}),
    Case("reuse-gap-between-holders-unresolved", reuse(), [flow(FE_IP, "10.244.1.50", 9000, at_s=150)],
         {(FE, "unresolved 10.244.1.50", "TCP", 9000)}, check=check_unresolved("10.244.1.50")),
    Case("reuse-before-any-holder-unresolved", reuse(), [flow("198.51.100.7", "10.244.1.50", 9000, at_s=-100)],
         {("external 198.51.100.7", "unresolved 10.244.1.50", "TCP", 9000)}, check=check_unresolved("10.244.1.50")),
    # A run of activity begins and ends with real traffic: one that began while batch-a held the
    # address and ended while batch-b did shows both calling (flow log v2, docs/resolution.md).
    Case("reuse-run-spanning-both-holders-is-both", reuse(), [flow(FE_IP, "10.244.1.50", 9000, at_s=90, until_s=210)],
         {(FE, "pod shop/Pod/batch-a", "TCP", 9000), (FE, "pod shop/Pod/batch-b", "TCP", 9000)},
         check=lambda res: (ambiguous_flows(res, "10.244.1.50"), unresolved_flows(res, "10.244.1.50")) == (0, 0) or pytest.fail(repr(res.report))),
    Case("overlapping-holders-ambiguous", reuse(a_deleted=None), [flow(FE_IP, "10.244.1.50", 9000, at_s=250)],
         {(FE, "unresolved 10.244.1.50", "TCP", 9000)}, check=check_ambiguous("10.244.1.50")),
    Case("reused-address-as-client",
         [*reuse(), *deploy("api", "shop", [("10.244.2.30", "node-b")], ports=[("http", 8080, "TCP")])],
         [flow("10.244.1.50", "10.244.2.30", 8080, at_s=50), flow("10.244.1.50", "10.244.2.30", 8080, at_s=250)],
         {("pod shop/Pod/batch-a", API, "TCP", 8080), ("pod shop/Pod/batch-b", API, "TCP", 8080)}),
    Case("deletion-timestamp-ends-the-hold",
         # deletionTimestamp = deletion request + grace period: the pod is gone by then.
         [k8s.pod("old", "shop", "10.244.1.51", labels={"app": "old"}, start=0, deleted=100, grace=30)],
         [flow(FE_IP, "10.244.1.51", 9000, at_s=50), flow(FE_IP, "10.244.1.51", 9001, at_s=110)],
         {(FE, "pod shop/Pod/old", "TCP", 9000), (FE, "unresolved 10.244.1.51", "TCP", 9001)}),
    Case("succeeded-pod-releases-its-address",
         [k8s.pod("report-29012345-7dx2k", "shop", "10.244.1.52", owner=("Job", "report-29012345"), phase="Succeeded",
                  start=0, finished=100, labels=k8s.job_labels("report-29012345", "shop", app="report")),
          k8s.pod("web-1", "shop", "10.244.1.52", labels={"app": "web"}, start=150)],
         [flow("10.244.1.52", "8.8.8.8", 443, at_s=50), flow(FE_IP, "10.244.1.52", 8080, at_s=120), flow(FE_IP, "10.244.1.52", 8080, at_s=200)],
         {("pod shop/CronJob/report", "external 8.8.8.8", "TCP", 443), (FE, "unresolved 10.244.1.52", "TCP", 8080),
          (FE, "pod shop/Pod/web-1", "TCP", 8080)},
         check=lambda res: ambiguous_flows(res, "10.244.1.52") == 0 or pytest.fail("a finished pod does not hold its address")),
    # --- Services -----------------------------------------------------------------------------
    Case("service-numeric-target-port", web_service(), [flow(FE_IP, "10.96.100.10", 80)], {(FE, WEB, "TCP", 8080)},
         check=lambda res: (conn(res, WEB).via or "").startswith("shop/web") and conn(res, WEB).port_name == "http"
         or pytest.fail(repr(res.connections))),
    Case("service-named-target-ports-from-endpointslice-port-names",
         [*deploy("web", "shop", [("10.244.2.40", "node-b")], ports=[("web", 8080, "TCP"), ("mgmt", 9901, "TCP")]),
          k8s.service("web", "shop", "10.96.100.10", selector={"app": "web"},
                      ports=[("http", 80, "web", "TCP"), ("admin", 81, "mgmt", "TCP")]),
          k8s.endpoint_slice("web", "shop", ports=[("admin", 9901, "TCP"), ("http", 8080, "TCP")],
                             endpoints=[("10.244.2.40", "web-6b8c9d7f5-x2v9k", "node-b")])],
         [flow(FE_IP, "10.96.100.10", 80), flow(FE_IP, "10.96.100.10", 81)],
         {(FE, WEB, "TCP", 8080), (FE, WEB, "TCP", 9901)}),
    Case("service-named-target-port-from-container-ports-without-endpointslices",
         [*deploy("web", "shop", [("10.244.2.40", "node-b")], ports=[("http", 8081, "TCP")]),
          k8s.pod("other", "shop", "10.244.2.41", labels={"app": "other"}, ports=[("http", 8081, "TCP")]),
          k8s.service("web", "shop", "10.96.100.10", ports=[("http", 80, "http", "TCP")], selector={"app": "web"})],
         [flow(FE_IP, "10.96.100.10", 80)],
         {(FE, WEB, "TCP", 8081)}),
    Case("service-udp-and-tcp-53-and-another-port",
         [*deploy("resolver", "shop", [("10.244.2.45", "node-b")],
                  ports=[("dns", 5353, "UDP"), ("dns-tcp", 5354, "TCP"), ("metrics", 9153, "TCP")]),
          k8s.service("resolver", "shop", "10.96.100.53", selector={"app": "resolver"},
                      ports=[("dns", 53, 5353, "UDP"), ("dns-tcp", 53, 5354, "TCP"), ("metrics", 9153, 9153, "TCP")]),
          k8s.endpoint_slice("resolver", "shop", ports=[("dns-tcp", 5354, "TCP"), ("dns", 5353, "UDP"), ("metrics", 9153, "TCP")],
                             endpoints=[("10.244.2.45", "resolver-6b8c9d7f5-x2v9k", "node-b")])],
         [flow(FE_IP, "10.96.100.53", 53, "UDP"), flow(FE_IP, "10.96.100.53", 53, "TCP"), flow(FE_IP, "10.96.100.53", 9153)],
         {(FE, "pod shop/Deployment/resolver", "UDP", 5353), (FE, "pod shop/Deployment/resolver", "TCP", 5354),
          (FE, "pod shop/Deployment/resolver", "TCP", 9153)}),
    Case("service-wrong-protocol-unresolved", web_service(), [flow(FE_IP, "10.96.100.10", 80, "UDP")],
         {(FE, "unresolved 10.96.100.10", "UDP", 80)}, check=check_unresolved("10.96.100.10")),
    Case("service-translated-view-picks-the-real-backend", canary(),
         [flow(FE_IP, "10.96.100.10", 80, translated=[(FE_IP, "10.244.2.42", 8080)])],
         {(FE, "pod shop/Deployment/web-v2", "TCP", 8080)}),
    Case("service-without-translated-view-all-backends", canary(), [flow(FE_IP, "10.96.100.10", 80)],
         {(FE, "pod shop/Deployment/web-v1", "TCP", 8080), (FE, "pod shop/Deployment/web-v2", "TCP", 8080)}),
    Case("headless-service-pod-addresses-directly",
         [k8s.statefulset("db", "shop"),
          *[k8s.pod(f"db-{i}", "shop", ip, node=n, owner=("StatefulSet", "db"), ports=[("postgres", 5432, "TCP")],
                    labels={"app": "db", "statefulset.kubernetes.io/pod-name": f"db-{i}", "controller-revision-hash": "db-5c7b8d9f4"})
            for i, (ip, n) in enumerate((("10.244.1.60", "node-a"), ("10.244.2.60", "node-b")))],
          k8s.service("db", "shop", None, ports=[("postgres", 5432, 5432, "TCP")], selector={"app": "db"}),
          k8s.endpoint_slice("db", "shop", ports=[("postgres", 5432, "TCP")],
                             endpoints=[("10.244.1.60", "db-0", "node-a"), ("10.244.2.60", "db-1", "node-b")])],
         [flow(FE_IP, "10.244.2.60", 5432), flow(FE_IP, "10.244.1.60", 5432)],
         {(FE, "pod shop/StatefulSet/db", "TCP", 5432)},
         check=lambda res: conn(res, "pod shop/StatefulSet/db").port_name == "postgres" or pytest.fail(repr(res.connections))),
    Case("endpoints-v1-without-endpointslices",
         # The pods declare no ports: only the Endpoints object can say what `http` is.
         [*deploy("api", "shop", [("10.244.2.70", "node-b")]),
          k8s.service("api", "shop", "10.96.100.20", ports=[("http", 80, "http", "TCP")], selector={"app": "api"}),
          k8s.endpoints("api", "shop", ports=[("http", 8080, "TCP")], addresses=[("10.244.2.70", "api-6b8c9d7f5-x2v9k", "node-b")])],
         [flow(FE_IP, "10.96.100.20", 80)],
         {(FE, API, "TCP", 8080)}),
    Case("service-without-selector-endpoints-v1",
         [k8s.service("legacy-db", "shop", "10.96.100.30", ports=[("pg", 5432, 5432, "TCP")]),
          k8s.endpoints("legacy-db", "shop", ports=[("pg", 5432, "TCP")], addresses=[("192.0.2.10", None, None)])],
         [flow(FE_IP, "10.96.100.30", 5432)],
         {(FE, "service-endpoint shop/legacy-db 192.0.2.10", "TCP", 5432)}),
    Case("default-kubernetes-to-api-server-6443", [], [flow(FE_IP, "10.96.0.1", 443)],
         {(FE, f"service-endpoint default/kubernetes {NODE_A}", "TCP", 6443)}),
    Case("nodeport-on-a-node-address", web_service(type="NodePort", node_ports={80: 30080}),
         [flow("198.51.100.7", NODE_A, 30080)],
         {("external 198.51.100.7", WEB, "TCP", 8080)}),
    # --- nodes, host network ------------------------------------------------------------------
    Case("node-address-names-its-host-network-pods", node_exporters(), [flow(FE_IP, NODE_A, 9100)],
         {(FE, "node node-a", "TCP", 9100)},
         check=lambda res: ("monitoring/node-exporter-k2x7p" in conn(res, "node node-a").server.names
                            and "monitoring/node-exporter-m9q4z" not in conn(res, "node node-a").server.names)
         or pytest.fail(repr(conn(res, "node node-a").server))),
    Case("service-backed-by-host-network-pods-is-nodes",
         [*node_exporters(),
          k8s.service("node-exporter", "monitoring", "10.96.100.91", ports=[("metrics", 9100, 9100, "TCP")], selector={"app": "node-exporter"}),
          k8s.endpoint_slice("node-exporter", "monitoring", ports=[("metrics", 9100, "TCP")],
                             endpoints=[(NODE_A, "node-exporter-k2x7p", "node-a"), (NODE_B, "node-exporter-m9q4z", "node-b")])],
         [flow(FE_IP, "10.96.100.91", 9100)],
         {(FE, "node node-a", "TCP", 9100), (FE, "node node-b", "TCP", 9100)}),
    Case("node-clients-same-node-marked",
         deploy("api", "shop", [("10.244.1.31", "node-a")], ports=[("http", 8080, "TCP")]),
         [flow(NODE_A, "10.244.1.31", 8080), flow(NODE_B, "10.244.1.31", 8080)],
         {("node node-a", API, "TCP", 8080), ("node node-b", API, "TCP", 8080)},
         check=lambda res: ({describe(c.client): c.same_node for c in res.connections} == {"node node-a": True, "node node-b": False})
         or pytest.fail(repr(res.connections))),
    # --- DNS ----------------------------------------------------------------------------------
    Case("cluster-dns-through-kube-dns-and-directly", [],
         [flow(FE_IP, "10.96.0.10", 53, "UDP"), flow(FE_IP, "10.96.0.10", 53, "TCP"), flow(FE_IP, "10.244.2.2", 53, "UDP")],
         {(FE, COREDNS, "UDP", 53), (FE, COREDNS, "TCP", 53)},
         check=lambda res: all(c.server.cluster_dns and not c.client.cluster_dns for c in res.connections)
         or pytest.fail(repr(res.connections))),
    Case("nodelocal-dns-link-local", [], [flow(FE_IP, "169.254.20.10", 53, "UDP")], {(FE, "node-local-dns 169.254.20.10", "UDP", 53)}),
    Case("external-named-by-dns-answers-cname-chain", [], [flow(FE_IP, "203.0.113.7", 443), flow(FE_IP, "8.8.4.4", 443)],
         {(FE, "external 203.0.113.7", "TCP", 443), (FE, "external 8.8.4.4", "TCP", 443)},
         dns=[k8s.dns(FE_IP, "10.96.0.10", "api.example.com",
                      [("api.example.com", "CNAME", "edge.cdn.example.net"), ("edge.cdn.example.net", "A", "203.0.113.7")]),
              k8s.dns(FE_IP, "10.96.0.10", "other.example.org", [("other.example.org", "A", "198.51.100.1")])],
         check=lambda res: ({"api.example.com", "edge.cdn.example.net"} <= set(conn(res, "external 203.0.113.7").server.names)
                            and "other.example.org" not in conn(res, "external 203.0.113.7").server.names
                            and conn(res, "external 8.8.4.4").server.names == ())
         or pytest.fail(repr([c.server for c in res.connections]))),
    # --- ranges -------------------------------------------------------------------------------
    Case("unresolved-in-node-pod-cidr-with-flow-count", [],
         [flow(FE_IP, "10.244.2.99", 8080), flow(FE_IP, "10.244.2.99", 9090)],
         {(FE, "unresolved 10.244.2.99", "TCP", 8080), (FE, "unresolved 10.244.2.99", "TCP", 9090)},
         check=check_unresolved("10.244.2.99", flows=2)),
    Case("unresolved-in-service-range-from-apiserver-flag", [], [flow(FE_IP, "10.100.5.5", 80)],
         {(FE, "unresolved 10.100.5.5", "TCP", 80)}, check=check_unresolved("10.100.5.5")),
    Case("unresolved-in-cluster-cidr-from-controller-manager-flag",
         [k8s.pod("kube-controller-manager-node-a", "kube-system", NODE_A, host_network=True, owner=("Node", "node-a"),
                  labels={"component": "kube-controller-manager", "tier": "control-plane"},
                  command=["kube-controller-manager", "--allocate-node-cidrs=true", "--cluster-cidr=10.244.0.0/16"])],
         [flow(FE_IP, "10.244.9.9", 80)],
         {(FE, "unresolved 10.244.9.9", "TCP", 80)}, check=check_unresolved("10.244.9.9")),
    Case("outside-every-range-is-external", [], [flow(FE_IP, "10.244.9.9", 80), flow(FE_IP, "10.250.0.9", 80)],
         {(FE, "external 10.244.9.9", "TCP", 80), (FE, "external 10.250.0.9", "TCP", 80)}),
    Case("unresolved-in-ranges-given-as-arguments", [],
         [flow(FE_IP, "100.64.3.3", 80), flow(FE_IP, "172.30.1.1", 80), flow(FE_IP, "172.31.1.1", 80)],
         {(FE, "unresolved 100.64.3.3", "TCP", 80), (FE, "unresolved 172.30.1.1", "TCP", 80), (FE, "external 172.31.1.1", "TCP", 80)},
         load_kw={"pod_cidrs": ["100.64.0.0/16"], "service_cidrs": ["172.30.0.0/16"]}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resolve(tmp_path, case: Case):
    inv = load_inventory([k8s.write_list(tmp_path, [*base(), *case.items])], **case.load_kw)
    res = resolve(k8s.log(*case.flows, dns_observations=case.dns), inv)
    assert summary(res) == case.expected
    assert all(c.client.kind in PEER_KINDS and c.server.kind in PEER_KINDS for c in res.connections)
    assert sum(c.flows for c in res.connections) >= len(case.flows)
    if case.check:
        case.check(res)


# --- pods gone from a later snapshot --------------------------------------------------------


def test_pod_gone_from_later_snapshot_holds_until_the_last_snapshot_showing_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = k8s.pod("old", "shop", "10.244.1.50", labels={"app": "old"}, start=0)
    new = k8s.pod("new", "shop", "10.244.1.50", labels={"app": "new"}, start=200)
    # Snapshot times: annotated, and each snapshot's newest object is from that moment too.
    first = k8s.write_list(tmp_path / "a", [*base(), old, k8s.pod("marker", "shop", "10.244.1.99", labels={"app": "m"}, start=100)],
                           snapshot_time=100)
    second = k8s.write_list(tmp_path / "b", [*base(), new, k8s.pod("marker", "shop", "10.244.1.99", labels={"app": "m"}, start=100),
                                             k8s.pod("marker2", "shop", "10.244.1.98", labels={"app": "m2"}, start=300)],
                            snapshot_time=300)
    inv = load_inventory([first, second])
    log = k8s.log(flow(FE_IP, "10.244.1.50", 9000, at_s=50), flow(FE_IP, "10.244.1.50", 9001, at_s=150),
                  flow(FE_IP, "10.244.1.50", 9002, at_s=250))
    # At 150 old is past the last snapshot that showed it (100) and new has not started (200): old
    # held it by inference (issue 11), marked so; --no-inference leaves it unresolved.
    res = resolve(log, inv)
    assert summary(res) == {(FE, "pod shop/Pod/old", "TCP", 9000), (FE, "pod shop/Pod/old", "TCP", 9001),
                            (FE, "pod shop/Pod/new", "TCP", 9002)}
    assert [c.port for c in res.connections if c.inferred] == [9001]
    assert res.report.inferred == (("shop/Pod/old", "10.244.1.50", 1),)
    refused = resolve(log, inv, ResolveOptions(inference=False))
    assert summary(refused) == {(FE, "pod shop/Pod/old", "TCP", 9000), (FE, "unresolved 10.244.1.50", "TCP", 9001),
                                (FE, "pod shop/Pod/new", "TCP", 9002)}


def test_split_snapshot_files_still_resolve(tmp_path):
    # One snapshot written as two kubectl outputs (pods, then Services): a flow after both resolves.
    pods = [o for o in [*base(), *web_service()] if o["kind"] == "Pod"]
    rest = [o for o in [*base(), *web_service()] if o["kind"] != "Pod"]
    for o in rest:
        o["metadata"]["creationTimestamp"] = k8s.at(500)
    inv = load_inventory([k8s.write_list(tmp_path, pods, "pods.yaml"), k8s.write_list(tmp_path, rest, "rest.yaml")])
    res = resolve(k8s.log(flow(FE_IP, "10.96.100.10", 80, at_s=1000)), inv)
    assert summary(res) == {(FE, WEB, "TCP", 8080)}


# --- the report ---------------------------------------------------------------------------


def test_report_counts_flows_per_kind_unresolved_and_ambiguous(tmp_path):
    # batch-a let 10.244.1.50 go at 199 and batch-b took it at 200: traffic at 200 is within the
    # clock tolerance of both (ambiguous).
    items = [*base(), *deploy("api", "shop", [("10.244.2.30", "node-b")], ports=[("http", 8080, "TCP")]), *reuse(a_deleted=199)]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    flows = [flow(FE_IP, "10.244.2.30", 8080), flow(FE_IP, "8.8.8.8", 443), flow("198.51.100.7", NODE_B, 22),
             flow(FE_IP, "10.244.2.99", 8080), flow(FE_IP, "10.244.2.99", 9090), flow(FE_IP, "10.244.1.50", 9000, at_s=200),
             flow(FE_IP, "8.8.8.8", None, "ICMP")]
    res = resolve(k8s.log(*flows), inv)
    r = res.report
    assert r.flows_by_kind == {"pod -> pod": 1, "pod -> external": 2, "external -> node": 1, "pod -> unresolved": 3}
    assert [(a, n) for a, _, n in r.unresolved] == [("10.244.2.99", 2)]
    assert [(a, n) for a, _, n in r.ambiguous] == [("10.244.1.50", 1)]
    assert r.not_expressible == 1  # ICMP: NetworkPolicy has no port/protocol for it
    icmp = conn(res, "external 8.8.8.8", None)
    assert icmp.protocol == "ICMP" and icmp.port is None


def test_report_counts_a_flow_once_when_a_service_has_two_backend_workloads(tmp_path):
    inv = load_inventory([k8s.write_list(tmp_path, [*base(), *canary()])])
    res = resolve(k8s.log(flow(FE_IP, "10.96.100.10", 80)), inv)
    assert len(res.connections) == 2  # one connection per backend workload
    assert res.report.flows_by_kind == {"pod -> pod": 1}, "one flow was seen, not two"


def test_report_names_workloads_without_a_unique_selector(tmp_path):
    items = [*base(),
             *deploy("web-blue", "shop", [("10.244.1.25", "node-a")], labels={"app": "web"}, template_hash="6b8c9d7f5"),
             *deploy("web-green", "shop", [("10.244.1.26", "node-a")], labels={"app": "web"}, template_hash="5f9c8b7d6"),
             k8s.pod("scratch", "shop", "10.244.1.27"),
             k8s.pod(f"orphan-{'7d4b9c6f5d'}-x2v9k", "shop", "10.244.1.28", labels={"app": "orphan", "pod-template-hash": "7d4b9c6f5d"},
                     owner=("ReplicaSet", "orphan-7d4b9c6f5d"))]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    r = resolve(k8s.log(flow(FE_IP, "10.244.1.25", 80)), inv).report
    assert ("shop", "Deployment/web-blue", ("Deployment/web-green",)) in r.workloads_not_unique
    assert ("shop", "Deployment/web-green", ("Deployment/web-blue",)) in r.workloads_not_unique
    assert r.workloads_unselectable == (("shop", "Pod/scratch"),)
    assert [(n, w) for n, w, _ in r.workloads_inferred] == [("shop", "Deployment/orphan")]
    assert all(why for _, _, why in r.workloads_inferred)


# --- end to end: the real kind capture with its kubectl snapshot ----------------------------


def test_kind_capture_with_its_inventory():
    """captures/real/kind-antrea-node-any.pcap (flows in captures/real/EXPECTED.md) against
    captures/kind/inventory.yaml. Worked out by hand:
    - 10.244.0.5 -> 8.8.8.8 ICMP: pod default/pinger (Deployment/pinger) to the outside; ICMP
      cannot be expressed in a NetworkPolicy (one not_expressible flow);
    - 172.20.0.1 (the docker bridge, outside 10.244.0.0/16 and 10.96.0.0/16) -> 172.20.0.2:6443:
      the node kind-control-plane, whose host-network pods include the API server;
    - 172.20.0.2 -> 10.96.0.1:443: default/kubernetes has no selector: its endpoint 172.20.0.2:6443;
    - 172.20.0.2 -> 172.20.0.2 on 6443, 10250, 10349: the node to itself.
    """
    log = capture_file(ROOT / "captures" / "real" / "kind-antrea-node-any.pcap")
    inv = load_inventory([ROOT / "captures" / "kind" / "inventory.yaml"])
    res = resolve(log, inv)
    assert summary(res) == {
        ("pod default/Deployment/pinger", "external 8.8.8.8", "ICMP", None),
        ("external 172.20.0.1", "node kind-control-plane", "TCP", 6443),
        ("node kind-control-plane", "service-endpoint default/kubernetes 172.20.0.2", "TCP", 6443),
        ("node kind-control-plane", "node kind-control-plane", "TCP", 6443),
        ("node kind-control-plane", "node kind-control-plane", "TCP", 10250),
        ("node kind-control-plane", "node kind-control-plane", "TCP", 10349),
    }
    api = conn(res, "service-endpoint default/kubernetes 172.20.0.2")
    assert api.via and api.via.startswith("default/kubernetes")
    assert api.connections == 1
    host_pods = {"kube-system/kube-apiserver-kind-control-plane", "kube-system/kube-controller-manager-kind-control-plane",
                 "kube-system/antrea-agent-7hx9n"}
    node = next(c for c in res.connections if describe(c.client) == "external 172.20.0.1").server
    assert "kube-system/kube-apiserver-kind-control-plane" in node.names and set(node.names) <= host_pods
    self_6443 = next(c for c in res.connections if describe(c.client) == describe(c.server) and c.port == 6443)
    assert self_6443.connections == 12  # EXPECTED.md: the ClusterIP connection is not counted here
    r = res.report
    assert r.flows_by_kind == {"pod -> external": 1, "external -> node": 1, "node -> service-endpoint": 1, "node -> node": 3}
    assert r.unresolved == () and r.ambiguous == ()
    assert r.not_expressible == 1
    assert r.workloads_not_unique == () and r.workloads_unselectable == () and r.workloads_inferred == ()


def test_bridge_gateway_is_the_node_and_its_probes_need_no_rule(tmp_path):
    """Bridge CNIs: the node reaches its own pods from the first address of its pod range."""
    from netpol_learn._inventory import load_inventory
    from netpol_learn._resolve import NODE, resolve

    items = [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"),
             k8s.pod("web-1", "shop", "10.244.0.20", labels={"app": "web"}, node="node-a")]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    res = resolve(k8s.log(k8s.flow("10.244.0.1", "10.244.0.20", 8080)), inv)
    (c,) = res.connections
    assert (c.client.kind, c.client.node, c.same_node) == (NODE, "node-a", True)
    assert res.report.unresolved == ()


def test_the_pod_a_live_sniffer_recorded_beats_the_inventorys_tenures(tmp_path):
    # DESIGN rule 13: identity recorded at capture time beats the history and the snapshots. The
    # inventory says batch-a held 10.244.1.50 at 50; the sniffer's watch said batch-b. A pod the
    # inventory does not know, or two pods (a handover within the segment), leave it to the inventory.
    from dataclasses import replace

    inv = load_inventory([k8s.write_list(tmp_path, [*base(), *reuse()])])
    seen = flow(FE_IP, "10.244.1.50", 9000, at_s=50)
    cases = {("shop/batch-b",): "pod shop/Pod/batch-b", ("shop/gone-long-ago",): "pod shop/Pod/batch-a",
             ("shop/batch-a", "shop/batch-b"): "pod shop/Pod/batch-a", (): "pod shop/Pod/batch-a"}
    for pods, server in cases.items():
        assert summary(resolve(k8s.log(replace(seen, dst_pods=pods)), inv)) == {(FE, server, "TCP", 9000)}, pods
