"""synthesize: observed traffic -> the smallest NetworkPolicies that allow it (issue 4's contract).

Every case runs the whole generate stage (resolve -> synthesize -> render) on one small cluster
built with tests/k8s.py. Workload policies are compared as Kubernetes dicts (``p.to_dict()``),
exactly, after putting lists whose order carries no meaning (rules, peers, ports, policyTypes,
except) in a canonical order; where a whole dict would be noise, the assertion is focused.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from netpol_learn._cli import main
from netpol_learn._flowlog import write_flow_log
from netpol_learn._generate import generate
from netpol_learn._inventory import load_inventory
from netpol_learn._synthesize import GenerateOptions, synthesize

ROOT = Path(__file__).parent.parent
REAL = ROOT / "captures" / "real"
KIND = ROOT / "captures" / "kind"

# --- the cluster ---------------------------------------------------------------------------
# kind-worker 172.18.0.2 (pods 10.244.0.0/24), kind-worker2 172.18.0.3 (10.244.1.0/24), kind-control-plane 172.18.0.10
# (10.244.2.0/24, the API server's address; node names without "node" in them, for the comment test); pod range 10.244.0.0/16, Service range 10.96.0.0/16.
NODE_A, NODE_B, CONTROL = "172.18.0.2", "172.18.0.3", "172.18.0.10"
NODE_NAME_A, NODE_NAME_B = "kind-worker", "kind-worker2"
NODES = [NODE_NAME_A, NODE_NAME_B]
POD_RANGE, SERVICE_RANGE = "10.244.0.0/16", "10.96.0.0/16"
CLUSTER_V4 = [POD_RANGE, SERVICE_RANGE, f"{NODE_A}/32", f"{NODE_B}/32", f"{CONTROL}/32"]

UI = "10.244.0.10"  # web/Deployment/ui, app=ui, http 8080
API = "10.244.0.20"  # shop/Deployment/api, app=api, http 8080, metrics 9090 (kind-worker)
WORKER = "10.244.1.21"  # shop/Deployment/worker, app=worker (kind-worker2)
DB0, DB1 = "10.244.0.30", "10.244.1.31"  # shop/StatefulSet/db, app=db, pg 5432, gossip 7000
LONELY = "10.244.0.40"  # shop/Pod/lonely: no labels at all
COREDNS = "10.244.0.2"  # kube-system/Deployment/coredns, k8s-app=kube-dns
METRICS = "10.244.1.5"  # kube-system/Deployment/metrics-server, k8s-app=metrics-server, https 4443
COLLECTOR = "10.244.1.22"  # ops/Deployment/collector, app=collector, syslog 5140/UDP
SHARED, SHARED_DEBUG, CLIENT = "10.244.0.60", "10.244.0.61", "10.244.0.62"  # legacy: look-alikes
X_WEB, X_DB, DD = "10.244.0.70", "10.244.0.71", "10.244.0.72"  # apps: Deployment/x, StatefulSet/x, Deployment/default-deny

SVC_API = "10.96.0.50"  # shop/api: 80 -> 8080
SVC_API_NAMED = "10.96.0.51"  # shop/api-named: 80 -> "http" (EndpointSlice says 8080)
SVC_API_METRICS = "10.96.0.52"  # shop/api-metrics: 81 -> "metrics", no EndpointSlice (pods say 9090)
SVC_LOGS = "10.96.0.53"  # ops/logs: UDP 514 -> 5140
SVC_DNS = "10.96.0.10"  # kube-system/kube-dns
SVC_KUBERNETES = "10.96.0.1"  # default/kubernetes: 443 -> 172.18.0.10:6443, no selector
NODE_LOCAL_DNS = "169.254.20.10"
GITHUB, GITHUB6 = "140.82.112.3", "2606:50c0:8000::153"


def _deploy(name, namespace, ips, labels=None, ports=(), nodes=None):
    labels = labels or {"app": name}
    rs = f"{name}-6d4cf56db6"
    items = [k8s.deployment(name, namespace, labels), k8s.replicaset(rs, namespace, {**labels, "pod-template-hash": "6d4cf56db6"}, owner=("Deployment", name))]
    for i, ip in enumerate(ips):
        items.append(k8s.pod(f"{rs}-{['x2k9p', 'q7w4z'][i]}", namespace, ip, labels={**labels, "pod-template-hash": "6d4cf56db6"},
                             owner=("ReplicaSet", rs), node=(nodes or NODES)[i], ports=ports))
    return items


def _statefulset(name, namespace, ips, labels, ports=()):
    items = [k8s.statefulset(name, namespace, labels)]
    for i, ip in enumerate(ips):
        items.append(k8s.pod(f"{name}-{i}", namespace, ip, owner=("StatefulSet", name), node=NODES[i], ports=ports,
                             labels={**labels, "controller-revision-hash": f"{name}-7c9d6f8b4", "statefulset.kubernetes.io/pod-name": f"{name}-{i}"}))
    return items


def cluster_items() -> list[dict]:
    return [
        *(k8s.namespace(n) for n in ("default", "kube-system", "shop", "web", "ops", "legacy", "apps")),
        k8s.node(NODE_NAME_A, NODE_A, "10.244.0.0/24"),
        k8s.node(NODE_NAME_B, NODE_B, "10.244.1.0/24"),
        k8s.node("kind-control-plane", CONTROL, "10.244.2.0/24"),
        *_deploy("ui", "web", [UI], ports=[("http", 8080, "TCP")]),
        *_deploy("api", "shop", [API], ports=[("http", 8080, "TCP"), ("metrics", 9090, "TCP")], nodes=[NODE_NAME_A]),
        *_deploy("worker", "shop", [WORKER], nodes=[NODE_NAME_B]),
        *_statefulset("db", "shop", [DB0, DB1], {"app": "db"}, ports=[("pg", 5432, "TCP"), ("gossip", 7000, "TCP")]),
        k8s.pod("lonely", "shop", LONELY, node=NODE_NAME_A),
        *_deploy("coredns", "kube-system", [COREDNS], {"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        *_deploy("metrics-server", "kube-system", [METRICS], {"k8s-app": "metrics-server"}, ports=[("https", 4443, "TCP")], nodes=[NODE_NAME_B]),
        k8s.daemonset("agent", "kube-system", {"app": "agent"}),
        k8s.pod("agent-7kq2x", "kube-system", NODE_B, labels={"app": "agent", "controller-revision-hash": "5f8d", "pod-template-generation": "1"},
                owner=("DaemonSet", "agent"), node=NODE_NAME_B, host_network=True),
        *_deploy("collector", "ops", [COLLECTOR], ports=[("syslog", 5140, "UDP")], nodes=[NODE_NAME_B]),
        *_deploy("shared", "legacy", [SHARED], ports=[("http", 8080, "TCP")]),
        k8s.pod("shared-debug", "legacy", SHARED_DEBUG, labels={"app": "shared"}, node=NODE_NAME_A),
        *_deploy("client", "legacy", [CLIENT]),
        *_deploy("x", "apps", [X_WEB], {"app": "x-web"}, ports=[("http", 8080, "TCP")]),
        *_statefulset("x", "apps", [X_DB], {"app": "x-db"}, ports=[("pg", 5432, "TCP")]),
        *_deploy("default-deny", "apps", [DD], {"app": "dd"}),
        k8s.service("api", "shop", SVC_API, ports=[("http", 80, 8080, "TCP")], selector={"app": "api"}),
        k8s.endpoint_slice("api", "shop", ports=[("http", 8080, "TCP")], endpoints=[(API, "api-6d4cf56db6-x2k9p", NODE_NAME_A)]),
        k8s.service("api-named", "shop", SVC_API_NAMED, ports=[("web", 80, "http", "TCP")], selector={"app": "api"}),
        k8s.endpoint_slice("api-named", "shop", ports=[("web", 8080, "TCP")], endpoints=[(API, "api-6d4cf56db6-x2k9p", NODE_NAME_A)]),
        k8s.service("api-metrics", "shop", SVC_API_METRICS, ports=[("metrics", 81, "metrics", "TCP")], selector={"app": "api"}),
        k8s.service("logs", "ops", SVC_LOGS, ports=[("syslog", 514, 5140, "UDP")], selector={"app": "collector"}),
        k8s.endpoint_slice("logs", "ops", ports=[("syslog", 5140, "UDP")], endpoints=[(COLLECTOR, "collector-6d4cf56db6-x2k9p", NODE_NAME_B)]),
        k8s.service("kube-dns", "kube-system", SVC_DNS, ports=[("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP")], selector={"k8s-app": "kube-dns"}),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
                           endpoints=[(COREDNS, "coredns-6d4cf56db6-x2k9p", NODE_NAME_A)]),
        k8s.service("kubernetes", "default", SVC_KUBERNETES, ports=[("https", 443, 6443, "TCP")], labels={"component": "apiserver", "provider": "kubernetes"}),
        k8s.endpoint_slice("kubernetes", "default", ports=[("https", 6443, "TCP")], endpoints=[(CONTROL, None, None)], name="kubernetes"),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(inventory file, Inventory)."""
    path = k8s.write_list(tmp_path_factory.mktemp("inventory"), cluster_items(), snapshot_time=10)
    return path, load_inventory([path], pod_cidrs=[POD_RANGE], service_cidrs=[SERVICE_RANGE])


def run(cluster, flows, options=GenerateOptions(), dns_observations=()):
    return generate(k8s.log(*flows, dns_observations=dns_observations), cluster[1], options)


# --- expected objects ----------------------------------------------------------------------
NS_LABEL = "kubernetes.io/metadata.name"


def sel(**labels) -> dict:
    return {"matchLabels": {k.replace("_", "-"): v for k, v in labels.items()}}


def pods(labels: dict, namespace: str | None = None) -> dict:
    """A pod peer; with namespace, the namespaceSelector sits in the same element."""
    out = {"podSelector": {"matchLabels": labels}}
    if namespace:
        out["namespaceSelector"] = {"matchLabels": {NS_LABEL: namespace}}
    return out


def block(cidr: str, *excepts: str) -> dict:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


def tcp(*ports) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def udp(*ports) -> list[dict]:
    return [{"protocol": "UDP", "port": p} for p in ports]


def spec(select: dict, ingress: list | None = None, egress: list | None = None) -> dict:
    """A policy spec; policyTypes match the rules it holds."""
    out = {"podSelector": select, "policyTypes": [t for t, r in (("Ingress", ingress), ("Egress", egress)) if r is not None]}
    if ingress is not None:
        out["ingress"] = [{"from": peers, "ports": ports} for peers, ports in ingress]
    if egress is not None:
        out["egress"] = [{"to": peers, "ports": ports} for peers, ports in egress]
    return out


def _key(x) -> str:
    return json.dumps(x, sort_keys=True)


def canon(spec_: dict) -> dict:
    """Lists whose order means nothing, in one order."""
    out = dict(spec_)
    out["policyTypes"] = sorted(out.get("policyTypes", []))
    for direction, side in (("ingress", "from"), ("egress", "to")):
        if out.get(direction) is None:
            continue
        rules = []
        for rule in out[direction]:
            r = dict(rule)
            if r.get(side) is not None:
                peers = []
                for p in r[side]:
                    p = dict(p)
                    if "ipBlock" in p and "except" in p["ipBlock"]:
                        p["ipBlock"] = {**p["ipBlock"], "except": sorted(p["ipBlock"]["except"])}
                    peers.append(p)
                r[side] = sorted(peers, key=_key)
            if r.get("ports") is not None:
                r["ports"] = sorted(r["ports"], key=_key)
            rules.append(r)
        out[direction] = sorted(rules, key=_key)
    return out


def workload_specs(g) -> dict:
    """(namespace, name) -> canonical spec of every policy that selects a workload."""
    return {(p.namespace, p.name): canon(p.to_dict()["spec"]) for p in g.policies.policies if not p.pod_selector.empty}


def all_dicts(g) -> list[dict]:
    return [p.to_dict() for p in g.policies.policies]


def peers_of(policy: dict):
    for direction, side in (("ingress", "from"), ("egress", "to")):
        for rule in policy["spec"].get(direction) or []:
            for peer in rule.get(side) or []:
                yield direction, peer, rule.get("ports")


def one(g, namespace: str, name: str) -> dict:
    found = [p.to_dict() for p in g.policies.policies if p.namespace == namespace and p.name == name]
    assert len(found) == 1, f"{namespace}/{name} in {[(p.namespace, p.name) for p in g.policies.policies]}"
    return found[0]


def namespace_wide(g, namespace: str) -> list[dict]:
    return [p.to_dict() for p in g.policies.policies if p.namespace == namespace and p.pod_selector.empty]


def deny_policies(g, namespace: str) -> list[dict]:
    """Policies selecting every pod of the namespace with no rule at all: default-deny."""
    return [d for d in namespace_wide(g, namespace) if not d["spec"].get("ingress") and not d["spec"].get("egress")]


def dns_rules(policy: dict) -> list[dict]:
    return [r for r in policy["spec"].get("egress") or [] if any(p.get("port") == 53 for p in r.get("ports") or [])]


def covered(net: str, excepts) -> bool:
    n = ipaddress.ip_network(net)
    return any(n.version == e.version and n.subnet_of(e) for e in map(ipaddress.ip_network, excepts))


def flow(src, dst, port, proto="TCP", **kw):
    return k8s.flow(src, dst, port, proto, **kw)


API_POD, WORKER_POD, UI_POD, DB_POD = {"app": "api"}, {"app": "worker"}, {"app": "ui"}, {"app": "db"}
KUBE_DNS = pods({"k8s-app": "kube-dns"}, "kube-system")


# --- the table: flows (+ options) -> every workload policy, exactly ------------------------
CASES = [
    pytest.param(
        [flow(WORKER, API, 8080), flow(UI, API, 8080)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD), pods(UI_POD, "web")], tcp(8080))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080))])},
        id="peers-with-the-same-ports-are-one-rule"),
    pytest.param(
        [flow(WORKER, API, 8080), flow(WORKER, API, 9090)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD)], tcp(8080, 9090))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080, 9090))])},
        id="ports-with-the-same-peers-are-one-list"),
    pytest.param(
        [flow(WORKER, API, 8080), flow(WORKER, API, 9090), flow(UI, API, 8080), flow(UI, API, 9090)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD), pods(UI_POD, "web")], tcp(8080, 9090))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080, 9090))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080, 9090))])},
        id="merged-both-ways"),
    pytest.param(
        [flow(WORKER, API, 8080), flow(UI, API, 9090)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD)], tcp(8080)), ([pods(UI_POD, "web")], tcp(9090))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(9090))])},
        id="peers-with-different-ports-are-not-merged"),
    pytest.param(
        [flow(UI, API, 8080)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp(8080))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080))])},
        id="cross-namespace-peer-is-one-element"),
    pytest.param(
        [flow(WORKER, API, 8080)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD)], tcp(8080))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080))])},
        id="same-namespace-peer-has-no-namespace-selector"),
    pytest.param(
        [flow(UI, SVC_API, 80)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp(8080))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080))])},
        id="service-port-80-is-target-port-8080"),
    pytest.param(
        [flow(UI, SVC_API_NAMED, 80)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp(8080))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080))])},
        id="named-target-port-from-the-endpointslice"),
    pytest.param(
        [flow(UI, SVC_API_METRICS, 81)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp(9090))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(9090))])},
        id="named-target-port-from-the-pods-without-endpointslices"),
    pytest.param(
        [flow(API, SVC_LOGS, 514, "UDP")], GenerateOptions(),
        {("ops", "collector"): spec(sel(app="collector"), ingress=[([pods(API_POD, "shop")], udp(5140))]),
         ("shop", "api"): spec(sel(app="api"), egress=[([pods({"app": "collector"}, "ops")], udp(5140))])},
        id="udp-service-keeps-its-protocol"),
    pytest.param(
        [flow(UI, SVC_API, 80), flow(WORKER, API, 9090), flow(API, DB0, 6000)], GenerateOptions(named_ports=True),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp("http")), ([pods(WORKER_POD)], tcp("metrics"))],
                               egress=[([pods(DB_POD)], tcp(6000))]),
         ("shop", "db"): spec(sel(app="db"), ingress=[([pods(API_POD)], tcp(6000))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp("metrics"))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp("http"))])},
        id="named-ports-use-container-port-names-and-numbers-where-there-is-none"),
    pytest.param(
        [flow(DB0, DB1, 7000), flow(DB1, DB0, 7000)], GenerateOptions(),
        {("shop", "db"): spec(sel(app="db"), ingress=[([pods(DB_POD)], tcp(7000))], egress=[([pods(DB_POD)], tcp(7000))])},
        id="replicas-talking-to-each-other-are-their-own-peer"),
    pytest.param(
        [flow(API, GITHUB, 443), flow(API, GITHUB6, 443)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), egress=[([block(f"{GITHUB}/32"), block(f"{GITHUB6}/128")], tcp(443))])},
        id="outside-addresses-are-slash-32-and-slash-128"),
    pytest.param(
        [flow(API, "203.0.113.1", 443), flow(API, "203.0.113.2", 443), flow(API, "203.0.113.3", 443)],
        GenerateOptions(aggregate_prefix=24, aggregate_threshold=3),
        {("shop", "api"): spec(sel(app="api"), egress=[([block("203.0.113.0/24")], tcp(443))])},
        id="aggregation-at-the-threshold"),
    pytest.param(
        [flow(API, "203.0.113.1", 443), flow(API, "203.0.113.2", 443)],
        GenerateOptions(aggregate_prefix=24, aggregate_threshold=3),
        {("shop", "api"): spec(sel(app="api"), egress=[([block("203.0.113.1/32"), block("203.0.113.2/32")], tcp(443))])},
        id="no-aggregation-below-the-threshold"),
    pytest.param(
        [flow(API, "2001:db8:1::1", 443), flow(API, "2001:db8:1::2", 443), flow(API, "2001:db8:1::3", 443)],
        GenerateOptions(aggregate_prefix_v6=64, aggregate_threshold=3),
        {("shop", "api"): spec(sel(app="api"), egress=[([block("2001:db8:1::/64")], tcp(443))])},
        id="ipv6-aggregation"),
    pytest.param(
        [flow(NODE_A, API, 8080), flow(WORKER, API, 8080)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD)], tcp(8080))]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080))])},
        id="probe-from-the-pods-own-node-needs-no-rule"),
    pytest.param(
        [flow(NODE_B, API, 8080), flow(API, NODE_B, 10250)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([block(f"{NODE_B}/32")], tcp(8080))], egress=[([block(f"{NODE_B}/32")], tcp(10250))])},
        id="another-nodes-address-is-an-ipblock"),
    pytest.param(
        [flow(API, SVC_KUBERNETES, 443)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), egress=[([block(f"{CONTROL}/32")], tcp(6443))])},
        id="api-server-through-default-kubernetes-is-its-endpoint-on-6443"),
    pytest.param(
        [flow(API, METRICS, 4443), flow(METRICS, API, 9090)], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods({"k8s-app": "metrics-server"}, "kube-system")], tcp(9090))],
                               egress=[([pods({"k8s-app": "metrics-server"}, "kube-system")], tcp(4443))])},
        id="kube-system-is-left-alone-but-is-a-peer"),
    pytest.param(
        [flow(API, METRICS, 4443), flow(METRICS, API, 9090)], GenerateOptions(include_namespaces=("kube-system",)),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods({"k8s-app": "metrics-server"}, "kube-system")], tcp(9090))],
                               egress=[([pods({"k8s-app": "metrics-server"}, "kube-system")], tcp(4443))]),
         ("kube-system", "metrics-server"): spec(sel(k8s_app="metrics-server"), ingress=[([pods(API_POD, "shop")], tcp(4443))],
                                                 egress=[([pods(API_POD, "shop")], tcp(9090))])},
        id="include-namespace-kube-system"),
    pytest.param(
        [flow(DB0, SVC_DNS, 53, "UDP"), flow(WORKER, API, 8080)], GenerateOptions(dns="per-workload"),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(WORKER_POD)], tcp(8080))]),
         ("shop", "db"): spec(sel(app="db"), egress=[([KUBE_DNS], [*udp(53), *tcp(53)])]),
         ("shop", "worker"): spec(sel(app="worker"), egress=[([pods(API_POD)], tcp(8080))])},
        id="dns-per-workload-for-a-workload-that-only-resolved-names"),
    pytest.param(
        [flow(API, "8.8.8.8", 53, "UDP")], GenerateOptions(),
        {("shop", "api"): spec(sel(app="api"), egress=[([block("8.8.8.8/32")], udp(53))])},
        id="an-outside-resolver-is-an-ipblock-not-cluster-dns"),
    pytest.param(
        [flow(API, SVC_DNS, 53, "UDP"), flow(API, GITHUB, 443), flow(UI, API, 8080)], GenerateOptions(dns="per-workload"),
        {("shop", "api"): spec(sel(app="api"), ingress=[([pods(UI_POD, "web")], tcp(8080))],
                               egress=[([KUBE_DNS], [*udp(53), *tcp(53)]), ([block(f"{GITHUB}/32")], tcp(443))]),
         ("web", "ui"): spec(sel(app="ui"), egress=[([pods(API_POD, "shop")], tcp(8080))])},
        id="dns-per-workload"),
]


@pytest.mark.parametrize(("flows", "options", "expected"), CASES)
def test_workload_policies(cluster, flows, options, expected):
    g = run(cluster, flows, options)
    assert workload_specs(g) == {k: canon(v) for k, v in expected.items()}


# --- DNS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["UDP", "TCP"])
def test_allow_dns_per_namespace_that_resolved_names(cluster, proto):
    g = run(cluster, [flow(API, SVC_DNS, 53, proto), flow(API, GITHUB, 443), flow(UI, API, 8080)])
    shop = [d for d in namespace_wide(g, "shop") if d["spec"].get("egress")]
    assert len(shop) == 1, shop
    assert canon(shop[0]["spec"]) == canon(spec({}, egress=[([KUBE_DNS], [*udp(53), *tcp(53)])]))
    assert not [d for d in namespace_wide(g, "web") if d["spec"].get("egress")]  # ui resolved nothing
    assert all(not dns_rules(p) for p in all_dicts(g) if p["spec"]["podSelector"])  # not in workload policies


def test_allow_dns_also_when_only_a_workload_without_labels_resolved_names(cluster):
    # Pod/lonely gets no policy of its own, but it is a workload of shop that resolved names, and
    # allow-dns selects every pod of the namespace, so it needs no selector for lonely.
    g = run(cluster, [flow(LONELY, SVC_DNS, 53, "UDP"), flow(WORKER, API, 8080)])
    shop = [d for d in namespace_wide(g, "shop") if d["spec"].get("egress")]
    assert [canon(d["spec"]) for d in shop] == [canon(spec({}, egress=[([KUBE_DNS], [*udp(53), *tcp(53)])]))]


def test_node_local_dns_is_an_ipblock(cluster):
    g = run(cluster, [flow(API, NODE_LOCAL_DNS, 53, "UDP"), flow(UI, API, 8080)])
    shop = [d for d in namespace_wide(g, "shop") if d["spec"].get("egress")]
    assert len(shop) == 1, shop
    allowed = {(_key(peer), p["protocol"], p["port"]) for _, peer, ports in peers_of(shop[0]) for p in ports}
    for proto in ("UDP", "TCP"):
        assert (_key(block(f"{NODE_LOCAL_DNS}/32")), proto, 53) in allowed


# --- outside the cluster -------------------------------------------------------------------


def test_outside_addresses_carry_their_dns_names(cluster):
    answers = [k8s.dns(API, SVC_DNS, "api.github.com", [("api.github.com", "A", GITHUB)]),
               k8s.dns(API, SVC_DNS, "api.github.com", [("api.github.com", "AAAA", GITHUB6)])]
    g = run(cluster, [flow(API, GITHUB, 443), flow(API, GITHUB6, 443)], dns_observations=answers)
    text = g.files["shop.yaml"]
    assert f"{GITHUB}/32  # api.github.com" in text
    assert f"{GITHUB6}/128  # api.github.com" in text


@pytest.mark.parametrize(("addresses", "prefix"), [
    (["10.1.0.1", "10.2.0.1", "10.3.0.1"], 8),  # 10.0.0.0/8 holds the pod and Service ranges
    (["172.18.1.1", "172.18.2.1", "172.18.3.1"], 16),  # 172.18.0.0/16 holds the node addresses
])
def test_aggregation_excepts_the_cluster_ranges_inside_the_prefix(cluster, addresses, prefix):
    g = run(cluster, [flow(API, a, 443) for a in addresses], GenerateOptions(aggregate_prefix=prefix, aggregate_threshold=3))
    blocks = [peer["ipBlock"] for _, peer, _ in peers_of(one(g, "shop", "api")) if "ipBlock" in peer]
    assert len(blocks) == 1, blocks
    wide = ipaddress.ip_network(blocks[0]["cidr"])
    assert wide.prefixlen == prefix and all(ipaddress.ip_address(a) in wide for a in addresses)
    excepts = blocks[0].get("except", [])
    inside = [r for r in CLUSTER_V4 if ipaddress.ip_network(r).subnet_of(wide)]
    assert inside and all(covered(r, excepts) for r in inside), excepts
    assert all(ipaddress.ip_network(e).subnet_of(wide) for e in excepts)  # the API server demands it
    assert not any(covered(f"{a}/32", excepts) for a in addresses)  # what was observed stays allowed


def test_no_aggregation_into_a_prefix_inside_a_cluster_range(cluster):
    addresses = ["100.64.1.1", "100.64.1.2", "100.64.1.3"]
    g = run(cluster, [flow(API, a, 443) for a in addresses])
    options = GenerateOptions(aggregate_prefix=24, aggregate_threshold=3)
    ranges = (*CLUSTER_V4, "100.64.0.0/10")  # a pod range the caller knows (CGNAT), holding the prefix
    policies = synthesize(g.resolution, options, ranges)
    api = [p.to_dict() for p in policies.policies if p.namespace == "shop" and p.name == "api"]
    assert len(api) == 1
    cidrs = sorted(peer["ipBlock"]["cidr"] for _, peer, _ in peers_of(api[0]) if "ipBlock" in peer)
    assert cidrs == [f"{a}/32" for a in addresses]


SOURCES = [f"198.51.100.{i}" for i in range(1, 13)]  # 12 outside clients


def test_open_ingress_above_opens_the_port_to_any_address_but_the_cluster(cluster):
    g = run(cluster, [flow(s, API, 8080) for s in SOURCES] + [flow(WORKER, API, 8080)], GenerateOptions(open_ingress_above=11))
    api = one(g, "shop", "api")
    rules = api["spec"]["ingress"]
    assert len(rules) == 1 and rules[0]["ports"] == tcp(8080)
    blocks = {p["ipBlock"]["cidr"]: p["ipBlock"].get("except", []) for p in rules[0]["from"] if "ipBlock" in p}
    assert set(blocks) == {"0.0.0.0/0", "::/0"}  # and no /32 of the sources any more
    assert all(covered(r, blocks["0.0.0.0/0"]) for r in CLUSTER_V4), blocks
    assert pods(WORKER_POD) in rules[0]["from"]  # the in-cluster client is still allowed


def test_open_ingress_above_needs_more_than_n_sources(cluster):
    g = run(cluster, [flow(s, API, 8080) for s in SOURCES], GenerateOptions(open_ingress_above=12))
    assert canon(one(g, "shop", "api")["spec"]) == canon(spec(sel(app="api"), ingress=[([block(f"{s}/32") for s in SOURCES], tcp(8080))]))


def test_open_ingress_is_off_by_default_and_reported_where_it_would_apply(cluster):
    sources = [f"198.51.100.{i}" for i in range(1, 31)]
    g = run(cluster, [flow(s, API, 8080) for s in sources])
    cidrs = sorted(peer["ipBlock"]["cidr"] for _, peer, _ in peers_of(one(g, "shop", "api")))
    assert cidrs == sorted(f"{s}/32" for s in sources)
    hint = [line for line in g.files["REPORT.md"].splitlines() if "--open-ingress-above" in line]
    assert hint and any("api" in line and "8080" in line for line in hint), g.files["REPORT.md"]


# --- nodes ---------------------------------------------------------------------------------


def test_node_address_comment_says_node(cluster):
    g = run(cluster, [flow(NODE_B, API, 8080)])
    assert re.search(rf"cidr: {re.escape(NODE_B)}/32\s+#[^\n]*\bnode\b", g.files["shop.yaml"]), g.files["shop.yaml"]


def test_same_node_probe_gives_no_rule_anywhere(cluster):
    # db has a replica on each node: each node probes its own one.
    g = run(cluster, [flow(NODE_A, API, 8080), flow(NODE_A, DB0, 5432), flow(NODE_B, DB1, 5432), flow(WORKER, API, 8080)])
    for p in all_dicts(g):
        assert not [peer for _, peer, _ in peers_of(p) if "ipBlock" in peer], p
    assert ("shop", "db") not in workload_specs(g)  # probes alone are no traffic to allow


# --- what never becomes a rule -------------------------------------------------------------


def test_unresolved_addresses_are_reported_not_ipblocks(cluster):
    unresolved = ["10.244.0.99", "10.96.7.7", "10.244.1.99"]
    g = run(cluster, [flow(API, "10.244.0.99", 8080), flow(API, "10.96.7.7", 80), flow("10.244.1.99", API, 8080), flow(API, WORKER, 8080)])
    assert canon(one(g, "shop", "api")["spec"]).get("egress") == canon(spec({}, egress=[([pods(WORKER_POD)], tcp(8080))]))["egress"]
    for p in all_dicts(g):
        assert not [peer for _, peer, _ in peers_of(p) if "ipBlock" in peer], p
    report = g.files["REPORT.md"]
    for address in unresolved:
        assert address in report


def test_workload_without_labels_gets_no_policy_and_is_never_podselector_all(cluster):
    g = run(cluster, [flow(LONELY, API, 8080), flow(API, LONELY, 9090), flow(WORKER, API, 8080), flow(LONELY, WORKER, 8080)])
    for p in all_dicts(g):
        if p["spec"]["podSelector"] == {}:  # only default-deny and allow-dns select the whole namespace
            assert not p["spec"].get("ingress") and all(q.get("port") == 53 for r in p["spec"].get("egress") or [] for q in r.get("ports") or []), p
        for _, peer, _ in peers_of(p):
            assert peer.get("podSelector") != {} and peer.get("ipBlock", {}).get("cidr") != f"{LONELY}/32", p
    assert canon(one(g, "shop", "api")["spec"])["ingress"] == canon(spec({}, ingress=[([pods(WORKER_POD)], tcp(8080))]))["ingress"]
    assert "lonely" in g.files["REPORT.md"]


def test_look_alike_workloads_are_named_in_comments(cluster):
    g = run(cluster, [flow(CLIENT, SHARED, 8080)])
    documents = g.files["legacy.yaml"].split("\n---\n")
    for name in ("shared", "client"):
        doc = next(d for d in documents if re.search(rf"^  name: {name}$", d, re.M))
        comments = [line for line in doc.splitlines() if "#" in line]
        assert any("shared-debug" in line for line in comments), doc


def test_icmp_is_reported_as_not_expressible(cluster):
    g = run(cluster, [flow(API, "8.8.8.8", None, "ICMP"), flow(API, WORKER, 8080)])
    assert all("8.8.8.8" not in text for name, text in g.files.items() if name != "REPORT.md")
    assert any("ICMP" in line and "8.8.8.8" in line for line in g.files["REPORT.md"].splitlines()), g.files["REPORT.md"]


# --- default deny, names, provenance, kube-system ------------------------------------------


@pytest.mark.parametrize(("mode", "types"), [("both", ["Egress", "Ingress"]), ("ingress", ["Ingress"]), ("egress", ["Egress"]), ("none", None)])
def test_default_deny_per_namespace_that_got_policies(cluster, mode, types):
    g = run(cluster, [flow(UI, API, 8080), flow(API, SVC_DNS, 53, "UDP")], GenerateOptions(default_deny=mode))
    for namespace in ("shop", "web"):
        denies = [canon(d["spec"]) for d in deny_policies(g, namespace)]
        assert denies == ([] if types is None else [{"podSelector": {}, "policyTypes": types}])
    for namespace in ("kube-system", "default", "ops", "legacy", "apps"):  # no policies there
        assert not [p for p in g.policies.policies if p.namespace == namespace]


def test_policy_names_follow_workloads_and_never_collide(cluster):
    g = run(cluster, [flow(X_WEB, X_DB, 5432), flow(DD, X_WEB, 8080), flow(DD, SVC_DNS, 53, "UDP")])
    apps = [p for p in g.policies.policies if p.namespace == "apps"]
    names = [p.name for p in apps]
    assert len(names) == len(set(names)), names
    by_selector = {json.dumps(p.pod_selector.to_dict(), sort_keys=True): p.name for p in apps if not p.pod_selector.empty}
    assert set(by_selector) == {_key(sel(app=a)) for a in ("x-web", "x-db", "dd")}
    assert "x" in by_selector[_key(sel(app="x-web"))].split("-") and "x" in by_selector[_key(sel(app="x-db"))].split("-")
    assert "default-deny" in by_selector[_key(sel(app="dd"))]
    assert len(deny_policies(g, "apps")) == 1
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253
    assert {p.name for p in run(cluster, [flow(WORKER, API, 8080)]).policies.policies if not p.pod_selector.empty} == {"api", "worker"}


def test_labels_and_provenance_annotations(cluster):
    flows = [flow(WORKER, API, 8080, at_s=1000, connections=5), flow(UI, API, 8080, at_s=1500, connections=5),
             flow(API, DB0, 5432, at_s=2000, until_s=2001, connections=5)]
    g = run(cluster, flows)
    api = one(g, "shop", "api")
    assert api["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "netpol-learn"}
    for p in all_dicts(g):
        if p["spec"]["podSelector"]:
            assert p["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "netpol-learn"
    assert api["metadata"]["annotations"] == {  # three flows, first and last seen, the workload
        "netpol-learn.io/flows": "3",
        "netpol-learn.io/observed": "2025-06-01T10:16:40.000000Z/2025-06-01T10:33:21.000000Z",
        "netpol-learn.io/workload": "Deployment/api",
    }
    # quoted as YAML writes it: an annotation value must be a string, an unquoted 3 is refused by the API server
    assert "\n  annotations:\n    netpol-learn.io/flows: '3'\n" in g.files["shop.yaml"]
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert all(today not in text for text in g.files.values())  # no wall-clock time
    # (same files on every run: test_output_is_byte_identical_across_processes, with different hash seeds)


def test_kube_system_is_left_alone_by_default(cluster):
    g = run(cluster, [flow(API, METRICS, 4443), flow(METRICS, API, 9090), flow(API, SVC_DNS, 53, "UDP")])
    assert not [p for p in g.policies.policies if p.namespace == "kube-system"]
    assert "kube-system.yaml" not in g.files


def test_include_namespace_through_the_cli(cluster, tmp_path):
    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(flow(API, METRICS, 4443), flow(API, SVC_DNS, 53, "UDP")), flows)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(cluster[0]), "--pod-cidr", POD_RANGE,
                                  "--service-cidr", SERVICE_RANGE, "--include-namespace", "kube-system", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    docs = [d for d in yaml.safe_load_all((out / "kube-system.yaml").read_text()) if d]
    selected = [d["spec"]["podSelector"] for d in docs]
    assert sel(k8s_app="metrics-server") in selected and {} in selected  # its policy and its default-deny


RICH = [flow(WORKER, API, 8080), flow(UI, SVC_API, 80), flow(UI, SVC_API_METRICS, 81), flow(DB0, DB1, 7000), flow(API, DB0, 5432),
        flow(API, SVC_DNS, 53, "UDP"), flow(UI, NODE_LOCAL_DNS, 53, "UDP"), flow(API, GITHUB, 443), flow(API, GITHUB6, 443),
        flow(NODE_B, API, 8080), flow(API, SVC_KUBERNETES, 443), flow(API, "10.244.0.99", 80), flow(LONELY, API, 8080),
        flow(API, "8.8.8.8", None, "ICMP"), flow(CLIENT, SHARED, 8080), flow(X_WEB, X_DB, 5432), flow(DD, X_WEB, 8080),
        *(flow(f"203.0.113.{i}", API, 8080) for i in range(1, 15)), *(flow(API, f"198.51.100.{i}", 443) for i in range(1, 5))]
RICH_DNS = [k8s.dns(API, SVC_DNS, "api.github.com", [("api.github.com", "A", GITHUB)]),
            k8s.dns(API, SVC_DNS, "api.github.com", [("api.github.com", "AAAA", GITHUB6)])]


def test_output_does_not_depend_on_input_order(cluster):
    options = GenerateOptions(aggregate_prefix=24, aggregate_threshold=3)
    forward = run(cluster, RICH, options, RICH_DNS).files
    assert run(cluster, RICH[::-1], options, RICH_DNS[::-1]).files == forward


def test_output_is_byte_identical_across_processes(cluster, tmp_path):
    """Set and dict orders differ between interpreters (hash randomisation); the files must not."""
    import os
    import subprocess
    import sys

    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(*RICH, dns_observations=RICH_DNS), flows)
    out = tmp_path / "out"
    runs = []
    for seed in ("1", "2"):
        r = subprocess.run([sys.executable, "-m", "netpol_learn", "generate", "--flows", str(flows), "--inventory", str(cluster[0]),
                            "--pod-cidr", POD_RANGE, "--service-cidr", SERVICE_RANGE, "--aggregate-prefix", "24", "--aggregate-threshold", "3",
                            "-o", str(out)], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        runs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert runs[0] == runs[1]


# --- applying the directory: what a NetworkPolicy engine says it allows ---------------------


def test_applying_the_directory_allows_exactly_what_was_observed(cluster, tmp_path):
    from policy_judge import Connection, judge, validate_documents

    g = run(cluster, [flow(WORKER, API, 8080), flow(UI, SVC_API, 80), flow(DB0, DB1, 7000), flow(API, DB0, 5432),
                      flow(API, SVC_DNS, 53, "UDP"), flow(API, GITHUB, 443)])
    for name, text in g.files.items():
        (tmp_path / name).write_text(text)
    policy_files = [tmp_path / n for n in g.files if n.endswith(".yaml") and n != "kustomization.yaml"]
    assert validate_documents([tmp_path / n for n in g.files if n.endswith(".yaml")]) == []
    verdict = judge(policy_files, cluster_items(), [8080, 5432, 7000, 443, ("UDP", 53), ("TCP", 53)], external={"github": GITHUB})
    observed = {
        Connection("shop/Deployment/worker", "shop/Deployment/api", "TCP", 8080),
        Connection("web/Deployment/ui", "shop/Deployment/api", "TCP", 8080),
        Connection("shop/StatefulSet/db", "shop/StatefulSet/db", "TCP", 7000),
        Connection("shop/Deployment/api", "shop/StatefulSet/db", "TCP", 5432),
        Connection("shop/Deployment/api", "kube-system/Deployment/coredns", "UDP", 53),
        Connection("shop/Deployment/api", "kube-system/Deployment/coredns", "TCP", 53),  # TCP for large answers
        Connection("shop/Deployment/api", "github", "TCP", 443),
    }
    assert observed <= verdict.allowed, sorted(observed - verdict.allowed)
    never = {
        Connection("web/Deployment/ui", "shop/StatefulSet/db", "TCP", 5432),
        Connection("shop/Deployment/worker", "shop/StatefulSet/db", "TCP", 5432),
        Connection("shop/Deployment/api", "web/Deployment/ui", "TCP", 8080),
        Connection("shop/StatefulSet/db", "shop/Deployment/api", "TCP", 8080),
        Connection("shop/Deployment/worker", "github", "TCP", 443),
        Connection("github", "shop/Deployment/api", "TCP", 8080),
    }
    assert not never & (verdict.allowed | verdict.partial), sorted(never & (verdict.allowed | verdict.partial))


# --- the command line ----------------------------------------------------------------------


def learn(args):
    return CliRunner().invoke(main, ["learn", str(REAL / "kind-antrea-node-any.pcap"), *map(str, args)])


def test_learn_on_a_real_capture(tmp_path):
    out = tmp_path / "policies"
    r = learn(["--inventory", KIND / "inventory.yaml", "-o", out])
    assert r.exit_code == 0, r.stderr
    # The capture's only pod traffic is pinger's ICMP to 8.8.8.8 (not expressible); the rest is
    # node and API server traffic of host-network pods: no workload policy, so no namespace file.
    assert sorted(p.name for p in out.iterdir()) == ["REPORT.md", "kustomization.yaml"]
    assert yaml.safe_load((out / "kustomization.yaml").read_text())["resources"] == []
    report = (out / "REPORT.md").read_text()
    assert any("ICMP" in line and "8.8.8.8" in line for line in report.splitlines()), report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = learn(["--inventory", KIND / "inventory.yaml", "-o", out])
    assert again.exit_code == 0, again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_learn_with_an_inventory_that_does_not_load(tmp_path):
    bad = tmp_path / "inventory.yaml"
    bad.write_text("items: [\n")
    r = learn(["--inventory", bad, "-o", tmp_path / "out"])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0], r.stderr


def test_learn_into_a_path_that_is_a_file(tmp_path):
    out = tmp_path / "policies"
    out.write_text("mine\n")
    r = learn(["--inventory", KIND / "inventory.yaml", "-o", out])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and str(out) in lines[0], r.stderr
    assert out.read_text() == "mine\n"
