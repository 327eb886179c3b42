"""Resolution of flow records that carry identities (Hubble's): the pods a record names, Cilium's
reserved entities, and the inventory built from the records when none is given
(docs/resolution.md, "Identities from flow records (Hubble)").

The flow logs are built here at explicit times (seconds after k8s.BASE, 2025-06-01T10:00:00Z)
as the Hubble reader writes them: flow lines with src_pods/dst_pods and src_entity/dst_entity,
endpoint lines with who held each address while records named it. Generated policies are
judged by network-config-analyzer (tests/policy_judge.py), an engine this project did not write,
and by the project's own verify.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

import k8s  # noqa: E402
from policy_judge import judge, validate_documents  # noqa: E402

from netpol_learn import FlowLog, generate, load_inventory, resolve, write_flow_log  # noqa: E402
from netpol_learn._cli import NO_IDENTITIES, main  # noqa: E402
from netpol_learn._flowlog import Endpoint, Flow, read_flow_log  # noqa: E402
from netpol_learn._inventory import inventory_from_endpoints  # noqa: E402
from netpol_learn._inventory._flows import FROM_RECORDS, owner_from_name  # noqa: E402
from netpol_learn._resolve import EXTERNAL, NODE, POD, SERVICE_ENDPOINT, UNRESOLVED  # noqa: E402

NS = "shop"
BOOKINFO = {"kubernetes.io/metadata.name": "bookinfo", "istio-injection": "enabled"}
CAPTURES = Path(__file__).parent.parent / "captures"


def record(src: str, dst: str, port: int | None, at_s: float, proto: str = "TCP", *, until_s: float | None = None,
           src_pods: tuple[str, ...] = (), dst_pods: tuple[str, ...] = (), src_entity: str = "", dst_entity: str = "",
           evidence: str = "established", runs: tuple[tuple[float, float, int], ...] = ()) -> Flow:
    """A flow line as the Hubble reader writes it: the direction from the record, the identities it named."""
    until_s = at_s + 1 if until_s is None else until_s
    ns_runs = tuple((k8s.ns(a), k8s.ns(b), n) for a, b, n in runs)
    connections = sum(n for _, _, n in runs) if runs else 1
    return Flow(src=src, dst=dst, proto=proto, port=port, packets=4 * connections, bytes=400 * connections, connections=connections,
                first_seen=ns_runs[0][0] if runs else k8s.ns(at_s), last_seen=ns_runs[-1][1] if runs else k8s.ns(until_s),
                direction=(("flow-record", connections),), src_pods=src_pods, dst_pods=dst_pods, evidence=evidence,
                runs=ns_runs, src_entity=src_entity, dst_entity=dst_entity)


def pod_endpoint(address: str, namespace: str, pod: str, labels: dict, first_s: float = 0, last_s: float = 2000, *,
                 node: str = "node-a", workload: str = "", namespace_labels: dict | None = None, records: int = 1) -> Endpoint:
    ns_labels = {"kubernetes.io/metadata.name": namespace} if namespace_labels is None else namespace_labels
    return Endpoint(address=address, entity="pod", first_seen=k8s.ns(first_s), last_seen=k8s.ns(last_s), records=records,
                    namespace=namespace, pod=pod, labels=tuple(sorted(labels.items())), namespace_labels=tuple(sorted(ns_labels.items())),
                    workload=workload, node=node)


def entity_endpoint(address: str, entity: str, node: str = "", first_s: float = 0, last_s: float = 2000) -> Endpoint:
    return Endpoint(address=address, entity=entity, first_seen=k8s.ns(first_s), last_seen=k8s.ns(last_s), records=1, node=node)


def inventory(tmp_path: Path, *items: dict, snapshot_s: float = 2000):
    return load_inventory([k8s.write_list(tmp_path, items, snapshot_time=snapshot_s)])


def base() -> list[dict]:
    return [
        k8s.namespace(NS),
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.node("node-b", "172.18.0.3", "10.244.2.0/24"),
        k8s.pod("api", NS, "10.244.2.30", labels={"app": "api"}, node="node-b", ports=[("http", 8080, "TCP")]),
        k8s.pod("frontend", NS, "10.244.1.20", labels={"app": "frontend"}),
    ]


def ends(res, protocol: str = "TCP", port: int | None = 8080) -> set[tuple]:
    """(client kind, client workload or address, server kind, server workload or address) of the connections."""
    def name(p):
        return p.workload if p.kind == POD else p.address
    return {(c.client.kind, name(c.client), c.server.kind, name(c.server)) for c in res.connections
            if c.protocol == protocol and c.port == port}


# --- the pods a record names -------------------------------------------------------------------


def test_a_pod_the_record_names_wins_over_the_inventorys_holder_then(tmp_path):
    # The inventory says old-client held 10.244.1.50 all along; the record says new-client did
    # (it knows better: the identity at that time). A pod the inventory does not know decides
    # nothing: its run falls to the inventory's holder.
    inv = inventory(tmp_path, *base(),
                    k8s.pod("old-client", NS, "10.244.1.50", labels={"app": "old"}),
                    k8s.pod("new-client", NS, "10.244.1.60", labels={"app": "new"}))
    log = FlowLog(flows=(
        record("10.244.1.50", "10.244.2.30", 8080, 100, src_pods=(f"{NS}/new-client",)),
        record("10.244.1.50", "10.244.2.30", 8080, 200, src_pods=(f"{NS}/gone-client",)),
    ))
    res = resolve(log, inv)
    assert ends(res) == {(POD, "Pod/new-client", POD, "Pod/api"), (POD, "Pod/old-client", POD, "Pod/api")}
    without_names = resolve(FlowLog(flows=(record("10.244.1.50", "10.244.2.30", 8080, 100),)), inv)
    assert ends(without_names) == {(POD, "Pod/old-client", POD, "Pod/api")}


def test_an_address_handed_over_between_two_hubble_pods_resolves_to_each_in_its_time():
    # No inventory: batch-a held 10.0.1.50 from 0 to 100 (as the records named it), batch-b from
    # 300 to 400. One flow line to api with a run in each tenure, naming no pod (as a merged log
    # may): each run goes to the holder then, by the tenures the endpoint lines give.
    endpoints = (
        pod_endpoint("10.0.1.50", NS, "batch-a", {"app": "batch-a"}, 0, 100),
        pod_endpoint("10.0.1.50", NS, "batch-b", {"app": "batch-b"}, 300, 400),
        pod_endpoint("10.0.2.30", NS, "api", {"app": "api"}, 0, 400, node="node-b"),
    )
    flows = (
        record("10.0.1.50", "10.0.2.30", 8080, 0, runs=((50, 51, 1), (350, 351, 1))),
        # and runs that named their pods, each in its time
        record("10.0.1.50", "10.0.2.30", 8081, 60, src_pods=(f"{NS}/batch-a",), dst_pods=(f"{NS}/api",)),
        record("10.0.1.50", "10.0.2.30", 8081, 360, src_pods=(f"{NS}/batch-b",), dst_pods=(f"{NS}/api",)),
        # between the tenures no record named anyone: not given to either
        record("10.0.1.50", "10.0.2.30", 8082, 200),
    )
    log = FlowLog(flows=flows, endpoints=endpoints)
    res = resolve(log, inventory_from_endpoints(endpoints))
    both = {(POD, "Pod/batch-a", POD, "Pod/api"), (POD, "Pod/batch-b", POD, "Pod/api")}
    assert ends(res, port=8080) == both
    assert ends(res, port=8081) == both
    assert ends(res, port=8082) == {(UNRESOLVED, "10.0.1.50", POD, "Pod/api")}
    (why,) = [why for a, why, _ in res.report.unresolved if a == "10.0.1.50"]
    assert why.startswith("no pod held it at that time (held by shop/batch-a"), why


# --- the reserved entities ---------------------------------------------------------------------


def test_host_and_remote_node_are_nodes_named_by_the_inventory_else_by_the_records(tmp_path):
    inv = inventory(tmp_path, *base())
    endpoints = (entity_endpoint("10.244.1.177", "host", node="node-a"),)  # cilium_host: no inventory address
    log = FlowLog(flows=(
        record("172.18.0.2", "10.244.2.30", 8080, 100, src_entity="remote-node"),
        record("10.244.1.177", "10.244.2.30", 8080, 110, src_entity="host"),
        record("10.244.2.1", "10.244.2.30", 8080, 120, src_entity="host"),  # in node-b's pod range, held by no pod
        record("172.18.0.9", "10.244.2.30", 8080, 130, src_entity="remote-node"),  # a node the inventory lacks
    ), endpoints=endpoints)
    res = resolve(log, inv)
    nodes = {c.client.address: c.client.node for c in res.connections if c.client.kind == NODE}
    assert nodes == {"172.18.0.2": "node-a", "10.244.1.177": "node-a", "10.244.2.1": "node-b", "172.18.0.9": "172.18.0.9"}
    assert res.report.unresolved == ()
    # The host of api's own node is the kubelet probing it: no rule needed; the others are ipBlocks.
    same = {c.client.address for c in res.connections if c.same_node}
    assert same == {"10.244.2.1"}
    (policy,) = [d for d in yaml.safe_load_all(generate(log, inv).files[f"{NS}.yaml"]) if d and d["metadata"]["name"] == "api"]
    sources = sorted(peer["ipBlock"]["cidr"] for rule in policy["spec"]["ingress"] for peer in rule["from"])
    assert sources == ["10.244.1.177/32", "172.18.0.2/32", "172.18.0.9/32"]


def test_kube_apiserver_is_the_api_server_endpoint_with_an_ipblock_on_its_address_and_port(tmp_path):
    inv = inventory(tmp_path, *base())
    log = FlowLog(flows=(record("10.244.2.30", "172.18.0.10", 6443, 100, dst_entity="kube-apiserver"),))
    res = resolve(log, inv)
    (c,) = res.connections
    assert (c.server.kind, c.server.address, c.server.service, c.port) == (SERVICE_ENDPOINT, "172.18.0.10", "default/kubernetes", 6443)
    egress = [d for d in yaml.safe_load_all(generate(log, inv).files[f"{NS}.yaml"]) if d and d["metadata"]["name"] == "api"]
    (policy,) = egress
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "172.18.0.10/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]}]


def test_what_cilium_calls_world_is_what_the_inventory_says(tmp_path):
    # Cilium calls every address it has no identity for world, and the flow log keeps no entity
    # for it: outside the cluster's ranges it is an outside endpoint, with its DNS names; a pod
    # address it called world (the L7 proxy, a pod's first packets) is the pod that held it
    # (never an ipBlock of a pod address), and an address of the pod range that nobody held
    # stays unresolved.
    inv = inventory(tmp_path, *base())
    log = FlowLog(
        flows=(
            record("10.244.1.20", "140.82.112.3", 443, 100),
            record("10.244.1.20", "10.244.2.30", 8080, 110),
            record("10.244.1.20", "10.244.2.99", 8080, 120),
        ),
        dns=(k8s.dns("10.244.1.20", "10.96.0.10", "api.github.com", [("api.github.com", "A", "140.82.112.3")], at_s=99),),
    )
    res = resolve(log, inv)
    assert ends(res, port=443) == {(POD, "Pod/frontend", EXTERNAL, "140.82.112.3")}
    (outside,) = [c.server for c in res.connections if c.port == 443]
    assert outside.names == ("api.github.com",)
    assert ends(res) == {(POD, "Pod/frontend", POD, "Pod/api"), (POD, "Pod/frontend", UNRESOLVED, "10.244.2.99")}
    assert [(a, why) for a, why, _ in res.report.unresolved] == [("10.244.2.99", "in the pod range 10.244.2.0/24, held by no known pod")]
    # Without an inventory the ranges are unknown: an address no record named is outside.
    endpoints = (pod_endpoint("10.244.1.20", NS, "frontend", {"app": "frontend"}),)
    alone = resolve(FlowLog(flows=log.flows, dns=log.dns, endpoints=endpoints), inventory_from_endpoints(endpoints))
    assert {c.server.kind for c in alone.connections} == {EXTERNAL}


def test_entities_turn_around_with_a_flow_whose_direction_came_from_a_heuristic(tmp_path):
    # A record without reply flags or TCP flags (TO_OVERLAY) is decided like a mid-stream packet;
    # when the declared ports turn it around, its entities go with its ends.
    inv = inventory(tmp_path, *base())
    turned = Flow(src="10.244.2.30", dst="172.18.0.3", proto="TCP", port=41000, packets=4, bytes=400, connections=1,
                  first_seen=k8s.ns(100), last_seen=k8s.ns(101), direction=(("port-heuristic", 1),), client_ports=(8080,),
                  evidence="established", dst_entity="remote-node")
    res = resolve(FlowLog(flows=(turned,)), inv)
    assert ends(res) == {(NODE, "172.18.0.3", POD, "Pod/api")}


# --- the inventory from the records ------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("reviews-v1-545db77b95-s6jb8", ("Deployment", "reviews-v1")),
    ("coredns-558bd4d5db-9grjv", ("Deployment", "coredns")),
    ("ratings-v1-b6994bb9-jgqxb", ("Deployment", "ratings-v1")),
    ("db-0", ("StatefulSet", "db")),
    ("otelcol-hubble-collector-2t8z4", ("DaemonSet", "otelcol-hubble-collector")),
    ("backup-29061234-x7k9p", ("CronJob", "backup")),
    ("debug", None),
    ("kube-proxy-abcde", None),  # vowels: not a generated suffix
])
def test_owner_from_the_pod_name(name, expected):
    got = owner_from_name(name)
    assert (got[:2] if got else None) == expected


def test_inventory_from_endpoints_pods_namespaces_nodes_and_inferred_workloads():
    endpoints = (
        pod_endpoint("10.0.1.11", "bookinfo", "reviews-v1-545db77b95-s6jb8", {"app": "reviews", "version": "v1", "pod-template-hash": "545db77b95"},
                     10, 500, namespace_labels=BOOKINFO),
        pod_endpoint("fd00::11", "bookinfo", "reviews-v1-545db77b95-s6jb8", {"app": "reviews", "version": "v1", "pod-template-hash": "545db77b95"},
                     5, 400, namespace_labels=BOOKINFO),
        pod_endpoint("10.0.2.13", "bookinfo", "ratings-7c9f8d-abc", {"app": "ratings"}, workload="Deployment/ratings", node="node-b",
                     namespace_labels=BOOKINFO),
        pod_endpoint("10.0.2.14", "bookinfo", "db-0", {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}, node="node-b",
                     namespace_labels=BOOKINFO),
        pod_endpoint("10.0.2.15", "bookinfo", "debug", {}, node="node-b", namespace_labels=BOOKINFO),
        entity_endpoint("10.0.1.1", "host", node="node-a"),
        entity_endpoint("172.18.0.2", "host", node="node-a"),
        entity_endpoint("172.18.0.2", "remote-node"),  # what the other node's records call it
        entity_endpoint("172.18.0.3", "remote-node"),
        entity_endpoint("172.18.0.10", "kube-apiserver"),
    )
    inv = inventory_from_endpoints(endpoints)
    assert {(p.name, p.ips, p.start, p.end, p.node, p.end_by) for p in inv.pods if p.name.startswith("reviews")} == {
        ("reviews-v1-545db77b95-s6jb8", ("10.0.1.11", "fd00::11"), k8s.ns(5), k8s.ns(500), "node-a", None)}
    assert [(n.name, dict(n.labels)) for n in inv.namespaces] == [
        ("bookinfo", {"istio-injection": "enabled", "kubernetes.io/metadata.name": "bookinfo"})]
    assert [(n.name, n.addresses) for n in inv.nodes] == [("172.18.0.3", ("172.18.0.3",)), ("node-a", ("10.0.1.1", "172.18.0.2"))]
    workloads = {w.ref: w for w in inv.workloads}
    assert sorted(workloads) == ["Deployment/ratings", "Deployment/reviews-v1", "Pod/debug", "StatefulSet/db"]
    assert workloads["Deployment/reviews-v1"].selector.to_dict() == {"matchLabels": {"app": "reviews", "version": "v1"}}
    assert workloads["StatefulSet/db"].selector.to_dict() == {"matchLabels": {"app": "db"}}
    assert workloads["Pod/debug"].selector is None  # no labels: never podSelector: {}
    assert all(w.inferred and w.inferred.startswith(FROM_RECORDS) for w in inv.workloads)
    assert "a guess from the pod's name" in workloads["Deployment/reviews-v1"].inferred
    assert "the workload the records name" in workloads["Deployment/ratings"].inferred
    assert inv.pod_cidrs == () and inv.services == ()
    assert inv.notes[0].startswith("inventory built from the flow records' identities (no --inventory): 4 pod(s), 1 namespace(s), 2 node(s)")
    assert inventory_from_endpoints(reversed(endpoints)) == inv


# --- without an inventory, end to end ------------------------------------------------------------

PODS = {  # name: (namespace, address, node, labels, workload Hubble named)
    "productpage-v1-6b746f74dc-9rcxx": ("bookinfo", "10.0.1.10", "node-a", {"app": "productpage", "version": "v1"}, ""),
    "reviews-v1-545db77b95-s6jb8": ("bookinfo", "10.0.1.11", "node-a", {"app": "reviews", "version": "v1", "pod-template-hash": "545db77b95"}, ""),
    "reviews-v2-7bf8c9648f-r7bs2": ("bookinfo", "10.0.2.12", "node-b", {"app": "reviews", "version": "v2"}, ""),
    "ratings-v1-b6994bb9-jgqxb": ("bookinfo", "10.0.2.13", "node-b", {"app": "ratings", "version": "v1"}, "Deployment/ratings-v1"),
    "db-0": ("bookinfo", "10.0.2.14", "node-b", {"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"}, ""),
    "node-agent-x7k9p": ("monitoring", "10.0.2.20", "node-b", {"app": "node-agent"}, ""),
    "coredns-558bd4d5db-9grjv": ("kube-system", "10.0.1.2", "node-a", {"k8s-app": "kube-dns"}, ""),
}
WORKLOAD = {"productpage-v1-6b746f74dc-9rcxx": ("Deployment", "productpage-v1"), "reviews-v1-545db77b95-s6jb8": ("Deployment", "reviews-v1"),
            "reviews-v2-7bf8c9648f-r7bs2": ("Deployment", "reviews-v2"), "ratings-v1-b6994bb9-jgqxb": ("Deployment", "ratings-v1"),
            "db-0": ("StatefulSet", "db"), "node-agent-x7k9p": ("DaemonSet", "node-agent"), "coredns-558bd4d5db-9grjv": ("Deployment", "coredns")}


def hubble_log() -> FlowLog:
    def pod(name):
        return (f"{PODS[name][0]}/{name}",)

    def ip(name):
        return PODS[name][1]

    pp, r1, r2, ra, db, agent, dns = PODS
    endpoints = [pod_endpoint(address, ns, name, labels, 0, 1000, node=node, workload=workload,
                              namespace_labels=BOOKINFO if ns == "bookinfo" else {"kubernetes.io/metadata.name": ns})
                 for name, (ns, address, node, labels, workload) in PODS.items()]
    endpoints += [entity_endpoint("10.0.1.1", "host", node="node-a"), entity_endpoint("172.18.0.3", "remote-node"),
                  entity_endpoint("172.18.0.10", "kube-apiserver")]
    flows = [
        record(ip(pp), ip(r1), 9080, 100, src_pods=pod(pp), dst_pods=pod(r1)),
        record(ip(pp), ip(r2), 9080, 110, src_pods=pod(pp), dst_pods=pod(r2)),
        record(ip(r2), ip(ra), 9080, 120, src_pods=pod(r2), dst_pods=pod(ra)),
        record(ip(ra), ip(db), 5432, 130, src_pods=pod(ra), dst_pods=pod(db)),
        record(ip(agent), ip(dns), 53, 140, "UDP", src_pods=pod(agent), dst_pods=pod(dns), evidence="answered"),
        record(ip(agent), "140.82.112.3", 443, 141, src_pods=pod(agent)),  # Cilium's world: no entity
        record(ip(agent), "172.18.0.10", 6443, 150, src_pods=pod(agent), dst_entity="kube-apiserver"),
        record("10.0.1.1", ip(pp), 9080, 160, src_entity="host", dst_pods=pod(pp)),  # kubelet's probe from its node
        record("172.18.0.3", ip(r1), 9080, 170, src_entity="remote-node", dst_pods=pod(r1)),
        # dropped by today's policy: reported, never a rule
        record(ip(r1), ip(db), 5432, 180, src_pods=pod(r1), dst_pods=pod(db), evidence="dropped"),
    ]
    dns_lines = (k8s.dns(ip(agent), ip(dns), "api.github.com", [("api.github.com", "A", "140.82.112.3")], at_s=140),)
    return FlowLog(flows=tuple(flows), dns=dns_lines, endpoints=tuple(endpoints), sources=("hubble:test",))


def cluster_objects() -> list[dict]:
    """The cluster the records came from, as the judge sees it: the pods Hubble named, owned as
    their names say, and a pod that sent nothing (policies must not open anything to it)."""
    objects = [k8s.namespace("bookinfo"), k8s.namespace("monitoring"), k8s.namespace("kube-system")]
    objects[0]["metadata"]["labels"]["istio-injection"] = "enabled"
    for name, (ns, address, node, labels, _) in PODS.items():
        objects.append(k8s.pod(name, ns, address, labels=labels, node=node, owner=WORKLOAD[name]))
    objects.append(k8s.pod("admin", "bookinfo", "10.0.2.99", labels={"app": "admin"}, node="node-b"))
    return objects


def test_generate_without_an_inventory_writes_a_policy_per_workload_from_the_records(tmp_path):
    flows = tmp_path / "flows.jsonl"
    write_flow_log(hubble_log(), flows)
    assert read_flow_log(flows).endpoints, "the endpoint lines went through the file"
    out = tmp_path / "policies"
    result = CliRunner().invoke(main, ["generate", "--flows", str(flows), "-o", str(out)])
    assert result.exit_code == 0, result.stderr

    files = sorted(out.glob("*.yaml"))
    assert validate_documents(files) == []
    policy_files = [f for f in files if f.name != "kustomization.yaml"]
    assert [f.stem for f in policy_files] == ["bookinfo", "monitoring"]
    docs = [d for f in policy_files for d in yaml.safe_load_all(f.read_text()) if d]
    selectors = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["spec"]["podSelector"] for d in docs}
    assert selectors[("bookinfo", "reviews-v1")] == {"matchLabels": {"app": "reviews", "version": "v1"}}
    assert selectors[("bookinfo", "db")] == {"matchLabels": {"app": "db"}}
    assert selectors[("monitoring", "node-agent")] == {"matchLabels": {"app": "node-agent"}}

    ports = [("TCP", 9080), ("TCP", 5432), ("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53)]
    outside = {"outside:github": "140.82.112.3", "outside:node-b": "172.18.0.3", "outside:apiserver": "172.18.0.10"}
    verdict = judge(policy_files, cluster_objects(), ports, external=outside)
    assert not verdict.partial, sorted(verdict.partial)
    expected = {
        ("bookinfo/Deployment/productpage-v1", "bookinfo/Deployment/reviews-v1", "TCP", 9080),
        ("bookinfo/Deployment/productpage-v1", "bookinfo/Deployment/reviews-v2", "TCP", 9080),
        ("bookinfo/Deployment/reviews-v2", "bookinfo/Deployment/ratings-v1", "TCP", 9080),
        ("bookinfo/Deployment/ratings-v1", "bookinfo/StatefulSet/db", "TCP", 5432),
        ("monitoring/DaemonSet/node-agent", "outside:github", "TCP", 443),
        ("monitoring/DaemonSet/node-agent", "outside:apiserver", "TCP", 6443),
        ("outside:node-b", "bookinfo/Deployment/reviews-v1", "TCP", 9080),
        ("monitoring/DaemonSet/node-agent", "kube-system/Deployment/coredns", "UDP", 53),
        ("monitoring/DaemonSet/node-agent", "kube-system/Deployment/coredns", "TCP", 53),
    }
    allowed = {tuple(c) for c in verdict.allowed}
    assert expected <= allowed, sorted(expected - allowed)

    def governed(c):  # one end a pod of a namespace that got policies
        return any(x.split("/")[0] in ("bookinfo", "monitoring") for x in c[:2] if not x.startswith("outside:"))

    # Nothing else, not the dropped attempt reviews-v1 -> db, not the pod Hubble never named
    # (admin), and not the same-node probe's host address (the kubelet needs no rule).
    assert sorted(c for c in allowed if governed(c) and c not in expected) == []

    report = (out / "REPORT.md").read_text()
    assert "Workloads inferred without their owner objects (7):" in report
    assert f"bookinfo/Deployment/reviews-v1  {FROM_RECORDS}: the kind and name are a guess from the pod's name" in report
    assert f"bookinfo/Deployment/ratings-v1  {FROM_RECORDS}: the workload the records name" in report
    assert "inventory built from the flow records' identities (no --inventory): 7 pod(s), 3 namespace(s), 2 node(s)" in report
    assert "bookinfo/Deployment/reviews-v1 -> bookinfo/StatefulSet/db TCP/5432  dropped  1 connection" in report
    assert "Unresolved addresses: none" in report
    assert "  node -> pod              2\n  pod -> external          1\n  pod -> pod               6\n  pod -> service-endpoint  1\n" in report
    assert "172.18.0.10/32  # endpoint of Service default/kubernetes" in (out / "monitoring.yaml").read_text()

    # The project's own verify agrees, with no inventory either; and the same inputs give the same bytes.
    check = CliRunner().invoke(main, ["verify", "--policies", str(out), "--flows", str(flows)])
    assert check.exit_code == 0, check.stdout + check.stderr
    again = tmp_path / "again"
    assert CliRunner().invoke(main, ["generate", "--flows", str(flows), "-o", str(again)]).exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in again.iterdir()}


def test_an_inventory_given_decides_over_the_records_identities(tmp_path):
    # With --inventory the endpoint lines build nothing: the workloads and selectors are the
    # inventory's (productpage-v1's Deployment selects app=productpage only), nothing is inferred
    # from the records; the records' host endpoints still name a node the inventory lacks.
    flows = tmp_path / "flows.jsonl"
    write_flow_log(hubble_log(), flows)
    objects = [*cluster_objects(), k8s.deployment("productpage-v1", "bookinfo", {"app": "productpage"})]
    inv = k8s.write_list(tmp_path, objects, snapshot_time=2000)
    out = tmp_path / "policies"
    result = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inv), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    docs = [d for d in yaml.safe_load_all((out / "bookinfo.yaml").read_text()) if d]
    (policy,) = [d for d in docs if d["metadata"]["name"] == "productpage-v1"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "productpage"}}
    report = (out / "REPORT.md").read_text()
    assert FROM_RECORDS not in report and "flow records' identities" not in report
    assert "bookinfo/StatefulSet/db  StatefulSet object missing" in report  # the inventory's own inference
    res = resolve(read_flow_log(flows), load_inventory([inv]))
    (probe,) = [c for c in res.connections if c.client.kind == NODE and c.client.address == "10.0.1.1"]
    assert (probe.client.node, probe.same_node) == ("node-a", True)


@pytest.mark.parametrize("command", ["resolve", "status", "generate", "verify", "report"])
def test_no_inventory_and_no_identities_is_one_line_and_exit_2(tmp_path, command):
    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(k8s.flow("10.244.1.20", "10.244.2.30", 8080)), flows)
    policies = tmp_path / "policies"
    policies.mkdir()
    args = {"resolve": [], "status": [], "generate": ["-o", str(tmp_path / "out")], "verify": ["--policies", str(policies)],
            "report": ["-o", str(tmp_path / "report.html")]}[command]
    result = CliRunner().invoke(main, [command, "--flows", str(flows), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {NO_IDENTITIES}\n"
    assert result.stdout == ""


def test_learn_without_an_inventory_from_a_capture_is_the_same_error(tmp_path):
    (scenario,) = sorted(CAPTURES.glob("*/capture.pcap"))[:1]
    result = CliRunner().invoke(main, ["learn", str(scenario), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr == f"error: {NO_IDENTITIES}\n", result.output


@pytest.mark.parametrize("command", ["resolve", "status", "generate", "learn", "verify", "report"])
def test_help_says_the_inventory_is_optional_for_flow_records(command):
    text = " ".join(CliRunner().invoke(main, [command, "--help"]).stdout.split())
    assert "Optional for flow logs with identities (Hubble's)" in text


def test_diff_still_needs_an_inventory():
    result = CliRunner().invoke(main, ["diff", "a", "b"])
    assert result.exit_code == 2 and "--inventory" in result.stderr


@pytest.mark.parametrize("command, args", [("resolve", ["--format", "json"]), ("status", ["--format", "json"]), ("report", ["-o", "-"])])
def test_the_other_commands_run_without_an_inventory_on_flow_records(tmp_path, command, args):
    flows = tmp_path / "flows.jsonl"
    write_flow_log(hubble_log(), flows)
    result = CliRunner().invoke(main, [command, "--flows", str(flows), *args])
    assert result.exit_code == 0, result.stderr
    assert "monitoring" in result.stdout and "node-agent" in result.stdout


def test_pod_and_service_ranges_given_without_an_inventory_keep_unnamed_inside_addresses_unresolved():
    endpoints = (pod_endpoint("10.0.1.10", NS, "frontend", {"app": "frontend"}),)
    log = FlowLog(flows=(record("10.0.1.10", "10.0.9.9", 8080, 100, src_pods=(f"{NS}/frontend",)),
                         record("10.0.1.10", "10.96.5.5", 80, 110, src_pods=(f"{NS}/frontend",))), endpoints=endpoints)
    inv = inventory_from_endpoints(endpoints, ["10.0.0.0/16"], ["10.96.0.0/12"])
    assert (inv.pod_cidrs, inv.service_cidrs) == (("10.0.0.0/16",), ("10.96.0.0/12",))
    assert "the cluster's ranges only as given (10.0.0.0/16, 10.96.0.0/12)" in inv.notes[0]
    res = resolve(log, inv)
    assert sorted((a, why) for a, why, _ in res.report.unresolved) == [
        ("10.0.9.9", "in the pod range 10.0.0.0/16, held by no known pod"),
        ("10.96.5.5", "in the service range 10.96.0.0/12, no Service has it")]
