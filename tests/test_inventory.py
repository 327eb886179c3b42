"""Loading cluster inventories, workloads and their selectors (issue 3; DESIGN.md rule 3).

Each case is a small inventory in the shape `kubectl get ... -A -o yaml` prints: YAML text
written here, or built with the helpers in tests/k8s.py. Expectations come from issue 3 and
DESIGN.md, not from the code:
- workloads are named `<kind>/<name>` after the top of the owner chain Pod -> ReplicaSet ->
  Deployment, StatefulSet, DaemonSet, Job -> CronJob, or the pod itself; a missing owner object is
  inferred where possible (a ReplicaSet name minus its pod-template-hash; a CronJob from its
  Job's `<name>-<scheduled minutes>` name) and the workload says so;
- a selector is the owner's spec.selector where the owner object is known, else the pods' labels,
  minus the per-replica/per-run labels; it selects every pod of its workload and, when
  `unique`, no other pod of the namespace; it is never empty (`None` when nothing can select);
- bad input is one clear line (`InventoryError`), a bad file among good ones a warning.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import k8s  # noqa: E402
from k8s import ns  # noqa: E402

from netpol_learn._errors import InventoryError  # noqa: E402
from netpol_learn._inventory import PER_REPLICA_LABELS, LabelSelector, Requirement, load_inventory  # noqa: E402

KIND_INVENTORY = Path(__file__).resolve().parent.parent / "captures" / "kind" / "inventory.yaml"


def load(tmp_path, items, **kw):
    return load_inventory([k8s.write_list(tmp_path, items)], **kw)


def workload(inv, namespace, ref):
    found = [w for w in inv.workloads if w.namespace == namespace and w.ref == ref]
    assert found, f"no workload {namespace}/{ref}; have {sorted((w.namespace, w.ref) for w in inv.workloads)}"
    assert len(found) == 1
    return found[0]


def norm(selector_dict: dict) -> dict:
    """A selector dict in a canonical order (expressions by key, values sorted)."""
    out = {}
    if selector_dict.get("matchLabels"):
        out["matchLabels"] = dict(sorted(selector_dict["matchLabels"].items()))
    if selector_dict.get("matchExpressions"):
        out["matchExpressions"] = sorted(
            ({"key": e["key"], "operator": e["operator"], **({"values": sorted(e["values"])} if e.get("values") else {})}
             for e in selector_dict["matchExpressions"]),
            key=lambda e: (e["key"], e["operator"]),
        )
    return out


def check_selectors(inv):
    """The invariants of rule 3 for every workload of an inventory."""
    pods = {(p.namespace, p.name): p for p in inv.pods}
    for w in inv.workloads:
        own = [pods[(w.namespace, n)] for n in w.pods]
        if w.selector is None:
            assert not w.unique, f"{w.ref}: no selector, yet unique"
            continue
        assert not w.selector.empty, f"{w.ref}: empty selector (podSelector: {{}}) for one workload"
        assert not (w.selector.keys() & PER_REPLICA_LABELS), f"{w.ref}: per-replica label in {w.selector}"
        for p in own:
            assert w.selector.matches(p.label_map), f"{w.ref}: selector misses its own pod {p.name}"
        others = {inv.workload_of[(p.namespace, p.name)] for p in inv.pods
                  if p.namespace == w.namespace and p.name not in w.pods and w.selector.matches(p.label_map)}
        if w.unique:
            assert not others, f"{w.ref}: unique, yet selects {others}"
        else:
            assert set(w.also_selects) == others


# --- workloads: owner chains, inferred owners, selectors ----------------------------------

HASH = "7d4b9c6f5d"
RS_LABELS = {"app": "web", "pod-template-hash": HASH, "version": "v1"}

WORKLOAD_CASES = [
    # id, items, namespace, ref, selector (to_dict), pods, inferred?
    (
        "deployment-chain",
        [k8s.deployment("web", "shop"),
         k8s.replicaset(f"web-{HASH}", "shop", {"app": "web", "pod-template-hash": HASH}, owner=("Deployment", "web")),
         k8s.pod(f"web-{HASH}-x2v9k", "shop", "10.244.1.11", labels=RS_LABELS, owner=("ReplicaSet", f"web-{HASH}")),
         k8s.pod(f"web-{HASH}-q8m7w", "shop", "10.244.2.11", labels=RS_LABELS, owner=("ReplicaSet", f"web-{HASH}"), node="node-b")],
        "shop", "Deployment/web", {"matchLabels": {"app": "web"}}, {f"web-{HASH}-x2v9k", f"web-{HASH}-q8m7w"}, False,
    ),
    (
        "replicaset-missing-deployment-inferred-from-name",
        [k8s.pod(f"web-{HASH}-x2v9k", "shop", "10.244.1.11", labels={"app": "web", "pod-template-hash": HASH},
                 owner=("ReplicaSet", f"web-{HASH}"))],
        "shop", "Deployment/web", {"matchLabels": {"app": "web"}}, {f"web-{HASH}-x2v9k"}, True,
    ),
    (
        "replicaset-present-deployment-missing",
        [k8s.replicaset(f"web-{HASH}", "shop", {"app": "web", "tier": "front", "pod-template-hash": HASH}, owner=("Deployment", "web")),
         k8s.pod(f"web-{HASH}-x2v9k", "shop", "10.244.1.11", labels={"app": "web", "tier": "front", "version": "v1", "pod-template-hash": HASH},
                 owner=("ReplicaSet", f"web-{HASH}"))],
        "shop", "Deployment/web", {"matchLabels": {"app": "web", "tier": "front"}}, {f"web-{HASH}-x2v9k"}, True,
    ),
    (
        "replicaset-missing-without-hash-label",
        [k8s.pod("legacy-abcde", "shop", "10.244.1.12", labels={"app": "legacy"}, owner=("ReplicaSet", "legacy"))],
        "shop", "ReplicaSet/legacy", {"matchLabels": {"app": "legacy"}}, {"legacy-abcde"}, True,
    ),
    (
        "standalone-replicaset",
        [k8s.replicaset("legacy", "shop", {"app": "legacy"}),
         k8s.pod("legacy-abcde", "shop", "10.244.1.12", labels={"app": "legacy", "tier": "old"}, owner=("ReplicaSet", "legacy"))],
        "shop", "ReplicaSet/legacy", {"matchLabels": {"app": "legacy"}}, {"legacy-abcde"}, False,
    ),
    (
        "statefulset-selector-without-pod-name",
        [k8s.statefulset("db", "data"),
         *[k8s.pod(f"db-{i}", "data", f"10.244.1.{40 + i}", owner=("StatefulSet", "db"), labels={
             "app": "db", "statefulset.kubernetes.io/pod-name": f"db-{i}", "apps.kubernetes.io/pod-index": str(i),
             "controller-revision-hash": "db-5c7b8d9f4"}) for i in range(2)]],
        "data", "StatefulSet/db", {"matchLabels": {"app": "db"}}, {"db-0", "db-1"}, False,
    ),
    (
        "statefulset-missing-one-replica-never-pins-pod-name",
        [k8s.pod("db-0", "data", "10.244.1.40", owner=("StatefulSet", "db"), labels={
            "app": "db", "statefulset.kubernetes.io/pod-name": "db-0", "apps.kubernetes.io/pod-index": "0",
            "controller-revision-hash": "db-5c7b8d9f4"})],
        "data", "StatefulSet/db", {"matchLabels": {"app": "db"}}, {"db-0"}, True,
    ),
    (
        "daemonset-owner-selector",
        [k8s.daemonset("antrea-agent", "kube-system", {"component": "antrea-agent"}),
         k8s.pod("antrea-agent-7hx9n", "kube-system", "10.244.1.13", owner=("DaemonSet", "antrea-agent"), labels={
             "app": "antrea", "component": "antrea-agent", "controller-revision-hash": "7d8f9c6b5", "pod-template-generation": "1"})],
        "kube-system", "DaemonSet/antrea-agent", {"matchLabels": {"component": "antrea-agent"}}, {"antrea-agent-7hx9n"}, False,
    ),
    (
        "daemonset-missing",
        [k8s.pod(f"fluent-bit-{s}", "logging", f"10.244.{n}.14", node=f"node-{'ab'[n - 1]}", owner=("DaemonSet", "fluent-bit"),
                 labels={"app": "fluent-bit", "controller-revision-hash": f"6c{n}d", "pod-template-generation": str(n)})
         for n, s in ((1, "k2x7p"), (2, "m9q4z"))],
        "logging", "DaemonSet/fluent-bit", {"matchLabels": {"app": "fluent-bit"}}, {"fluent-bit-k2x7p", "fluent-bit-m9q4z"}, True,
    ),
    (
        "job-cronjob-two-runs-one-workload",
        [k8s.cronjob("backup", "ops"),
         *[k8s.job(f"backup-{run}", "ops", owner=("CronJob", "backup")) for run in (29012345, 29012350)],
         *[k8s.pod(f"backup-{run}-{s}", "ops", f"10.244.1.{i}", owner=("Job", f"backup-{run}"), phase="Succeeded",
                   finished=100 + i, labels=k8s.job_labels(f"backup-{run}", "ops", app="backup"))
           for i, (run, s) in enumerate(((29012345, "7dx2k"), (29012350, "p4m9q")), start=60)]],
        "ops", "CronJob/backup", {"matchLabels": {"app": "backup"}}, {"backup-29012345-7dx2k", "backup-29012350-p4m9q"}, False,
    ),
    (
        "cronjob-inferred-from-job-name",
        [k8s.pod("report-29012345-7dx2k", "ops", "10.244.1.62", owner=("Job", "report-29012345"),
                 labels=k8s.job_labels("report-29012345", "ops", app="report"))],
        "ops", "CronJob/report", {"matchLabels": {"app": "report"}}, {"report-29012345-7dx2k"}, True,
    ),
    (
        "job-without-cronjob",
        [k8s.job("migrate", "ops"),
         k8s.pod("migrate-8kq2x", "ops", "10.244.1.63", owner=("Job", "migrate"), labels=k8s.job_labels("migrate", "ops", app="migrate"))],
        "ops", "Job/migrate", {"matchLabels": {"app": "migrate"}}, {"migrate-8kq2x"}, False,
    ),
    (
        "job-missing-not-a-cronjob-name",
        [k8s.pod("migrate-schema-8kq2x", "ops", "10.244.1.63", owner=("Job", "migrate-schema"),
                 labels=k8s.job_labels("migrate-schema", "ops", app="migrate"))],
        "ops", "Job/migrate-schema", {"matchLabels": {"app": "migrate"}}, {"migrate-schema-8kq2x"}, True,
    ),
    (
        "bare-pod",
        [k8s.pod("debug", "shop", "10.244.1.70", labels={"run": "debug"})],
        "shop", "Pod/debug", {"matchLabels": {"run": "debug"}}, {"debug"}, False,
    ),
    (
        "static-pod-owned-by-node",
        [k8s.pod("etcd-node-a", "kube-system", "172.18.0.2", host_network=True, owner=("Node", "node-a"),
                 labels={"component": "etcd", "tier": "control-plane"})],
        "kube-system", "Pod/etcd-node-a", {"matchLabels": {"component": "etcd", "tier": "control-plane"}}, {"etcd-node-a"}, False,
    ),
    (
        "match-expressions-kept",
        [k8s.deployment("web", "shop", {"app": "web"}, match_expressions=[
            {"key": "tier", "operator": "In", "values": ["web", "frontend"]},
            {"key": "canary", "operator": "DoesNotExist"}]),
         k8s.replicaset(f"web-{HASH}", "shop", {"app": "web", "pod-template-hash": HASH}, owner=("Deployment", "web")),
         k8s.pod(f"web-{HASH}-x2v9k", "shop", "10.244.1.11", labels={"app": "web", "tier": "frontend", "pod-template-hash": HASH},
                 owner=("ReplicaSet", f"web-{HASH}"))],
        "shop", "Deployment/web",
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"},
                                                              {"key": "tier", "operator": "In", "values": ["frontend", "web"]}]},
        {f"web-{HASH}-x2v9k"}, False,
    ),
]


@pytest.mark.parametrize("items, namespace, ref, selector, pods, inferred", [c[1:] for c in WORKLOAD_CASES],
                         ids=[c[0] for c in WORKLOAD_CASES])
def test_workload(tmp_path, items, namespace, ref, selector, pods, inferred):
    inv = load(tmp_path, items)
    w = workload(inv, namespace, ref)
    assert set(w.pods) == pods
    assert w.selector is not None
    assert norm(w.selector.to_dict()) == norm(selector)
    assert w.unique and not w.also_selects
    assert bool(w.inferred) == inferred, w.inferred  # "infer what can be inferred ... and say so"
    for p in pods:
        assert inv.workload_of[(namespace, p)] == ref
    check_selectors(inv)


def test_per_replica_labels_are_the_designed_list():
    assert PER_REPLICA_LABELS == {
        "pod-template-hash", "controller-revision-hash", "pod-template-generation", "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index", "controller-uid", "batch.kubernetes.io/controller-uid", "job-name",
        "batch.kubernetes.io/job-name", "batch.kubernetes.io/job-completion-index",
    }


# --- selector verification against every pod of the namespace -----------------------------


def _deploy(name, namespace, selector, pod_labels, ips, template_hash):
    rs = f"{name}-{template_hash}"
    return [k8s.deployment(name, namespace, selector),
            k8s.replicaset(rs, namespace, {**selector, "pod-template-hash": template_hash}, owner=("Deployment", name)),
            *[k8s.pod(f"{rs}-{i}x{i}k", namespace, ip, labels={**pod_labels, "pod-template-hash": template_hash},
                      owner=("ReplicaSet", rs)) for i, ip in enumerate(ips)]]


def test_collision_refined_with_distinguishing_label(tmp_path):
    # Both Deployments select app=shop; their pods differ in `component`.
    items = [*_deploy("api", "shop", {"app": "shop"}, {"app": "shop", "component": "api"}, ["10.244.1.21", "10.244.2.21"], "6b8c9d7f5"),
             *_deploy("worker", "shop", {"app": "shop"}, {"app": "shop", "component": "worker"}, ["10.244.1.22"], "5f9c8b7d6")]
    inv = load(tmp_path, items)
    api, worker = workload(inv, "shop", "Deployment/api"), workload(inv, "shop", "Deployment/worker")
    assert api.unique and worker.unique
    assert norm(api.selector.to_dict()) == {"matchLabels": {"app": "shop", "component": "api"}}
    assert norm(worker.selector.to_dict()) == {"matchLabels": {"app": "shop", "component": "worker"}}
    check_selectors(inv)


def test_same_labels_in_another_namespace_are_no_collision(tmp_path):
    items = [*_deploy("web", "team-a", {"app": "web"}, {"app": "web"}, ["10.244.1.23"], "6b8c9d7f5"),
             *_deploy("web", "team-b", {"app": "web"}, {"app": "web"}, ["10.244.1.24"], "6b8c9d7f5")]
    inv = load(tmp_path, items)
    for namespace in ("team-a", "team-b"):
        w = workload(inv, namespace, "Deployment/web")
        assert w.unique and norm(w.selector.to_dict()) == {"matchLabels": {"app": "web"}}


def test_collision_impossible_reported_not_unique(tmp_path):
    # Blue/green Deployments whose pods differ only in pod-template-hash: no selector can tell them apart.
    items = [*_deploy("web-blue", "shop", {"app": "web"}, {"app": "web"}, ["10.244.1.25"], "6b8c9d7f5"),
             *_deploy("web-green", "shop", {"app": "web"}, {"app": "web"}, ["10.244.1.26"], "5f9c8b7d6")]
    inv = load(tmp_path, items)
    blue, green = workload(inv, "shop", "Deployment/web-blue"), workload(inv, "shop", "Deployment/web-green")
    assert not blue.unique and blue.also_selects == ("Deployment/web-green",)
    assert not green.unique and green.also_selects == ("Deployment/web-blue",)
    # The documented fallback still selects the workload's own pods (never breaks observed traffic),
    # is never empty and never uses a per-replica label.
    check_selectors(inv)
    assert any("web-blue" in note for note in inv.notes)


@pytest.mark.parametrize("labels", [None, {"pod-template-hash": "6b8c9d7f5"}, {"statefulset.kubernetes.io/pod-name": "x-0"}],
                         ids=["no-labels", "only-pod-template-hash", "only-pod-name"])
def test_pod_without_usable_labels_has_no_selector(tmp_path, labels):
    items = [k8s.pod("scratch", "shop", "10.244.1.27", labels=labels),
             k8s.pod("other", "shop", "10.244.1.28", labels={"app": "other"})]
    inv = load(tmp_path, items)
    w = workload(inv, "shop", "Pod/scratch")
    assert w.selector is None  # never podSelector: {}
    assert not w.unique
    check_selectors(inv)


# --- label selector semantics ---------------------------------------------------------------

REQUIREMENT_CASES = [
    # operator, values, labels, matches
    ("In", ("web", "api"), {"tier": "web"}, True),
    ("In", ("web", "api"), {"tier": "db"}, False),
    ("In", ("web",), {}, False),
    ("NotIn", ("web",), {"tier": "db"}, True),
    ("NotIn", ("web",), {"tier": "web"}, False),
    ("NotIn", ("web",), {}, True),  # Kubernetes: NotIn matches when the key is absent
    ("Exists", (), {"tier": ""}, True),
    ("Exists", (), {"app": "x"}, False),
    ("DoesNotExist", (), {"app": "x"}, True),
    ("DoesNotExist", (), {"tier": "web"}, False),
]


@pytest.mark.parametrize("operator, values, labels, matches", REQUIREMENT_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'none'}-{'match' if c[3] else 'nomatch'}-{i}" for i, c in enumerate(REQUIREMENT_CASES)])
def test_match_expression(operator, values, labels, matches):
    selector = LabelSelector.from_dict({"matchExpressions": [{"key": "tier", "operator": operator, **({"values": list(values)} if values else {})}]})
    assert selector.matches(labels) is matches
    assert Requirement("tier", operator, tuple(values)).matches(labels) is matches


def test_match_labels_and_expressions_all_hold():
    selector = LabelSelector.from_dict({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]})
    assert selector.matches({"app": "web"})
    assert not selector.matches({"app": "web", "canary": "true"})
    assert not selector.matches({"canary": "x"})


def test_unknown_operator_is_an_error():
    with pytest.raises(ValueError, match="Gt"):
        LabelSelector.from_dict({"matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]})


def test_unknown_operator_in_a_snapshot_is_one_clear_line(tmp_path):
    items = [k8s.deployment("web", "shop", {"app": "web"}, match_expressions=[{"key": "tier", "operator": "Gt", "values": ["1"]}]),
             k8s.replicaset(f"web-{HASH}", "shop", {"app": "web", "pod-template-hash": HASH}, owner=("Deployment", "web")),
             k8s.pod(f"web-{HASH}-x2v9k", "shop", "10.244.1.11", labels={"app": "web", "pod-template-hash": HASH},
                     owner=("ReplicaSet", f"web-{HASH}"))]
    with pytest.raises(InventoryError) as exc:  # not a bare ValueError: the CLI turns these into one line
        load(tmp_path, items)
    assert "Gt" in str(exc.value) and "\n" not in str(exc.value)


# --- loading: formats -------------------------------------------------------------------------

POD_YAML = """\
- apiVersion: v1
  kind: Pod
  metadata:
    creationTimestamp: "2025-06-01T10:00:00Z"
    generateName: web-7d4b9c6f5d-
    labels:
      app: web
      pod-template-hash: 7d4b9c6f5d
    name: web-7d4b9c6f5d-x2v9k
    namespace: shop
    ownerReferences:
    - apiVersion: apps/v1
      blockOwnerDeletion: true
      controller: true
      kind: ReplicaSet
      name: web-7d4b9c6f5d
      uid: 5f3c1d2e-2f0b-4d1c-9a47-3e0f6c1a2b10
    resourceVersion: "612"
    uid: 7e1f0c3a-9b5d-4f2e-8c61-3e0f6c1a2b11
  spec:
    containers:
    - image: nginx:1.27
      name: web
      ports:
      - containerPort: 8080
        name: http
        protocol: TCP
    nodeName: node-a
  status:
    phase: Running
    podIP: 10.244.1.11
    podIPs:
    - ip: 10.244.1.11
    startTime: "2025-06-01T10:00:00Z"
"""

SERVICE_YAML = """\
- apiVersion: v1
  kind: Service
  metadata:
    creationTimestamp: "2025-06-01T10:00:00Z"
    name: web
    namespace: shop
    resourceVersion: "270"
    uid: 2a3b4c5d-6e7f-4a8b-9c0d-3e0f6c1a2b20
  spec:
    clusterIP: 10.96.100.10
    clusterIPs:
    - 10.96.100.10
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: http
    selector:
      app: web
    type: ClusterIP
  status:
    loadBalancer: {}
"""

LIST_YAML = "apiVersion: v1\nitems:\n" + POD_YAML + SERVICE_YAML + 'kind: List\nmetadata:\n  resourceVersion: ""\n'


def _as_docs(block: str) -> list[dict]:
    return yaml.safe_load(block)


def _check_web(inv):
    assert [(p.namespace, p.name, p.ips) for p in inv.pods] == [("shop", "web-7d4b9c6f5d-x2v9k", ("10.244.1.11",))]
    assert [(s.namespace, s.name, s.cluster_ips) for s in inv.services] == [("shop", "web", ("10.96.100.10",))]
    svc = inv.services[0]
    assert [(p.port, p.protocol, p.target_port) for p in svc.ports] == [(80, "TCP", "http")]
    assert workload(inv, "shop", "Deployment/web").pods == ("web-7d4b9c6f5d-x2v9k",)


FORMAT_CASES = [
    ("list-yaml", lambda: LIST_YAML),
    ("list-json", lambda: json.dumps(yaml.safe_load(LIST_YAML), indent=4)),
    ("multi-document-yaml", lambda: "---\n" + "\n---\n".join(yaml.safe_dump(d) for d in _as_docs(POD_YAML) + _as_docs(SERVICE_YAML))),
    ("typed-lists-items-without-kind", lambda: "\n---\n".join(
        yaml.safe_dump({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"},
                        "items": [{k: v for k, v in d.items() if k not in ("kind", "apiVersion")} for d in _as_docs(block)]})
        for kind, block in (("PodList", POD_YAML), ("ServiceList", SERVICE_YAML)))),
    ("json-array-of-objects", lambda: json.dumps(_as_docs(POD_YAML) + _as_docs(SERVICE_YAML))),
]


@pytest.mark.parametrize("text", [c[1] for c in FORMAT_CASES], ids=[c[0] for c in FORMAT_CASES])
def test_formats(tmp_path, text):
    path = tmp_path / "inventory.yaml"
    path.write_text(text(), encoding="utf-8")
    _check_web(load_inventory([path]))


def test_single_objects_in_several_files(tmp_path):
    pod_file, svc_file = tmp_path / "pod.yaml", tmp_path / "svc.json"
    pod_file.write_text(yaml.safe_dump(_as_docs(POD_YAML)[0]), encoding="utf-8")
    svc_file.write_text(json.dumps(_as_docs(SERVICE_YAML)[0]), encoding="utf-8")
    _check_web(load_inventory([pod_file, svc_file]))


def test_one_snapshot_split_by_kind_over_several_files(tmp_path):
    # `kubectl get pods -A -o yaml > pods.yaml; kubectl get svc,endpointslices -A -o yaml > svc.yaml`:
    # the second file shows no pods because it lists no pods, not because the pods went away.
    pods = k8s.write_list(tmp_path, [k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"}, start=0)], "pods.yaml")
    svcs = k8s.write_list(tmp_path, [k8s.service("web", "shop", selector={"app": "web"}, created=50),
                                     k8s.endpoint_slice("web", "shop", endpoints=[("10.244.1.11", "web-1", "node-a")], created=60)],
                          "svc.yaml")
    inv = load_inventory([pods, svcs])
    (pod,) = inv.pods
    assert pod.end is None, "a pod is not gone from a file that lists no pods at all"
    assert [s.name for s in inv.services] == ["web"]


def test_same_object_in_two_snapshots_is_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    web = k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"})
    first = k8s.write_list(tmp_path / "a", [web, k8s.service("web", "shop", selector={"app": "web"})], snapshot_time=100)
    second = k8s.write_list(tmp_path / "b", [web, k8s.service("web", "shop", selector={"app": "web"})], snapshot_time=200)
    inv = load_inventory([first, second])
    assert [p.name for p in inv.pods] == ["web-1"]
    assert inv.pods[0].end is None  # still there in the latest snapshot
    assert [s.name for s in inv.services] == ["web"]
    assert [w.ref for w in inv.workloads] == ["Pod/web-1"]


def test_pod_gone_from_a_later_snapshot_ends_at_the_last_snapshot_showing_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Both snapshots are annotated, and each one's newest object is from that moment too, so the
    # snapshot time is the same whichever way it is read.
    first = k8s.write_list(tmp_path / "a", [k8s.pod("old", "shop", "10.244.1.11", labels={"app": "old"}, start=0),
                                            k8s.pod("keep", "shop", "10.244.1.12", labels={"app": "keep"}, start=100)],
                           snapshot_time=100)
    second = k8s.write_list(tmp_path / "b", [k8s.pod("keep", "shop", "10.244.1.12", labels={"app": "keep"}, start=100),
                                             k8s.pod("new", "shop", "10.244.1.11", labels={"app": "new"}, start=300)],
                            snapshot_time=300)
    inv = load_inventory([second, first])  # order of the files does not matter
    pods = {p.name: p for p in inv.pods}
    assert pods["old"].start == ns(0) and pods["old"].end == ns(100)
    assert pods["keep"].end is None and pods["new"].end is None
    assert pods["new"].start == ns(300)


def test_pod_times_from_start_and_deletion(tmp_path):
    inv = load(tmp_path, [k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"}, created=5, start=10, deleted=100, grace=30)])
    (p,) = inv.pods
    assert p.start == ns(10)
    # deletionTimestamp is already "request time + grace period" (the API server adds the grace
    # period when it sets it); the pod holds its address until then, not 30 s longer.
    assert p.end == ns(100)


def test_unknown_kinds_are_noted_and_skipped(tmp_path):
    items = [k8s.configmap("settings", "shop"), k8s.configmap("more", "shop"), k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"})]
    inv = load(tmp_path, items)
    assert [p.name for p in inv.pods] == ["web-1"]
    assert [n for n in inv.notes if "ConfigMap" in n], inv.notes
    assert all("\n" not in n for n in inv.notes)


def test_pods_without_addresses_are_noted(tmp_path):
    items = [k8s.pod("pending-1", "shop", None, labels={"app": "web"}, phase="Pending", start=None),
             k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"})]
    inv = load(tmp_path, items)
    assert {p.name for p in inv.pods} >= {"web-1"}
    assert [n for n in inv.notes if "address" in n], inv.notes


def test_endpoints_v1_used_only_without_endpoint_slices(tmp_path):
    items = [k8s.service("web", "shop", selector={"app": "web"}),
             k8s.endpoint_slice("web", "shop", endpoints=[("10.244.1.11", "web-1", "node-a")]),
             k8s.endpoints("web", "shop", addresses=[("10.244.1.11", "web-1", "node-a")]),
             k8s.service("legacy", "shop", selector=None, ports=[("pg", 5432, 5432, "TCP")]),
             k8s.endpoints("legacy", "shop", ports=[("pg", 5432, "TCP")], addresses=[("192.0.2.10", None, None)])]
    inv = load(tmp_path, items)
    by_service = {}
    for s in inv.endpoint_slices:
        by_service.setdefault(s.service, []).append(s)
    assert len(by_service["web"]) == 1  # the Endpoints copy of the slice is not counted twice
    (legacy,) = by_service["legacy"]
    assert [e.address for e in legacy.endpoints] == ["192.0.2.10"]
    assert [(p.port, p.protocol) for p in legacy.ports] == [(5432, "TCP")]


# --- address ranges -------------------------------------------------------------------------


def test_ranges_from_nodes_flags_and_arguments(tmp_path):
    items = [
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.node("node-b", "172.18.0.3", "10.244.2.0/24"),
        k8s.pod("kube-apiserver-node-a", "kube-system", "172.18.0.2", host_network=True, owner=("Node", "node-a"),
                labels={"component": "kube-apiserver", "tier": "control-plane"},
                command=["kube-apiserver", "--advertise-address=172.18.0.2", "--service-cluster-ip-range=10.96.0.0/12"]),
        k8s.pod("kube-controller-manager-node-a", "kube-system", "172.18.0.2", host_network=True, owner=("Node", "node-a"),
                labels={"component": "kube-controller-manager", "tier": "control-plane"},
                command=["kube-controller-manager", "--allocate-node-cidrs=true", "--cluster-cidr=10.244.0.0/16"]),
    ]
    inv = load(tmp_path, items, pod_cidrs=["100.64.0.0/16"], service_cidrs=["172.30.0.0/16"])
    # Ranges may be merged (a node's podCIDR inside the cluster CIDR), but must cover exactly these.
    assert covered(inv.pod_cidrs) == covered(["10.244.1.0/24", "10.244.2.0/24", "10.244.0.0/16", "100.64.0.0/16"])
    assert covered(inv.service_cidrs) == covered(["10.96.0.0/12", "172.30.0.0/16"])


def test_ranges_from_node_pod_cidrs_alone(tmp_path):
    inv = load(tmp_path, [k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"), k8s.node("node-b", "172.18.0.3", "10.244.2.0/24")])
    assert covered(inv.pod_cidrs) == covered(["10.244.1.0/24", "10.244.2.0/24"])
    assert inv.service_cidrs == ()


def covered(cidrs) -> list[str]:
    return [str(n) for n in ipaddress.collapse_addresses(ipaddress.ip_network(c) for c in cidrs)]


# --- loading: bad input -----------------------------------------------------------------------

MALFORMED_YAML = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: web: 1
"""


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(MALFORMED_YAML, encoding="utf-8")
    with pytest.raises(InventoryError) as exc:
        load_inventory([path])
    msg = str(exc.value)
    assert "broken.yaml" in msg and "\n" not in msg
    assert re.search(r"line 7\b|:7\b", msg), msg


BAD_FILES = [
    ("malformed-json", '{"apiVersion": "v1", "kind": "List", "items": [\n'),
    ("yaml-mapping-not-k8s", "hello: world\ncount: 3\n"),
    ("yaml-list-of-strings", "- a\n- b\n"),
    ("json-number", "42\n"),
    ("plain-text", "this is not an inventory\n"),
    ("empty", ""),
    ("object-without-metadata", "apiVersion: v1\nkind: Pod\n"),
]


@pytest.mark.parametrize("text", [c[1] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_one_clear_line(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InventoryError) as exc:
        load_inventory([path])
    msg = str(exc.value)
    assert "bad.yaml" in msg and "\n" not in msg and msg.strip()


def test_one_bad_file_among_good_ones_warns_and_loads_the_rest(tmp_path):
    good = k8s.write_list(tmp_path, [k8s.pod("web-1", "shop", "10.244.1.11", labels={"app": "web"})], "good.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(MALFORMED_YAML, encoding="utf-8")
    warnings: list[str] = []
    inv = load_inventory([bad, good], warn=warnings.append)
    assert [p.name for p in inv.pods] == ["web-1"]
    assert len(warnings) == 1 and "bad.yaml" in warnings[0] and "\n" not in warnings[0]


def test_nothing_usable_is_an_error(tmp_path):
    paths = []
    for i, text in enumerate(("hello: world\n", MALFORMED_YAML)):
        paths.append(tmp_path / f"bad{i}.yaml")
        paths[-1].write_text(text, encoding="utf-8")
    with pytest.raises(InventoryError) as exc:
        load_inventory(paths, warn=lambda m: None)
    assert "\n" not in str(exc.value)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(InventoryError) as exc:
        load_inventory([tmp_path / "nope.yaml"])
    assert "nope.yaml" in str(exc.value) and "\n" not in str(exc.value)


# --- the kubectl snapshot in captures/kind/ ---------------------------------------------------

KIND_WORKLOADS = {
    ("kube-system", "Deployment/coredns"): ({"matchLabels": {"k8s-app": "kube-dns"}}, {"coredns-668d6bf9bc-4xk2p", "coredns-668d6bf9bc-q8m7w"}),
    ("kube-system", "DaemonSet/antrea-agent"): ({"matchLabels": {"app": "antrea", "component": "antrea-agent"}}, {"antrea-agent-7hx9n"}),
    ("kube-system", "Pod/kube-apiserver-kind-control-plane"): (
        {"matchLabels": {"component": "kube-apiserver", "tier": "control-plane"}}, {"kube-apiserver-kind-control-plane"}),
    ("kube-system", "Pod/kube-controller-manager-kind-control-plane"): (
        {"matchLabels": {"component": "kube-controller-manager", "tier": "control-plane"}}, {"kube-controller-manager-kind-control-plane"}),
    ("default", "Deployment/pinger"): ({"matchLabels": {"app": "pinger"}}, {"pinger-5b7d9c8f6d-tz4vq"}),
}


def _check_kind_inventory(inv):
    got = {(w.namespace, w.ref): (norm(w.selector.to_dict()), set(w.pods)) for w in inv.workloads}
    assert got == KIND_WORKLOADS
    assert all(w.unique and not w.inferred for w in inv.workloads)
    check_selectors(inv)
    # --cluster-cidr of the controller manager, and the node's podCIDR 10.244.0.0/24 inside it
    assert covered(inv.pod_cidrs) == ["10.244.0.0/16"]
    assert inv.service_cidrs == ("10.96.0.0/16",)  # --service-cluster-ip-range of the API server
    assert [(n.name, n.addresses, n.pod_cidrs) for n in inv.nodes] == [("kind-control-plane", ("172.20.0.2",), ("10.244.0.0/24",))]
    assert {(s.namespace, s.name): s.cluster_ips for s in inv.services} == {
        ("default", "kubernetes"): ("10.96.0.1",), ("kube-system", "kube-dns"): ("10.96.0.10",)}
    kubernetes = next(s for s in inv.services if s.name == "kubernetes")
    assert kubernetes.selector is None
    assert {(s.namespace, s.service) for s in inv.endpoint_slices} == {("default", "kubernetes"), ("kube-system", "kube-dns")}
    assert {n.name for n in inv.namespaces} == {"default", "kube-system"}
    host = {p.name for p in inv.pods if p.host_network}
    assert host == {"kube-apiserver-kind-control-plane", "kube-controller-manager-kind-control-plane", "antrea-agent-7hx9n"}
    assert all(p.end is None for p in inv.pods)
    assert not [n for n in inv.notes if "ignored" in n]


def test_kind_snapshot_as_kubectl_prints_it():
    _check_kind_inventory(load_inventory([KIND_INVENTORY]))


def test_kind_snapshot_as_json(tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(yaml.safe_load(KIND_INVENTORY.read_text(encoding="utf-8")), indent=4), encoding="utf-8")
    _check_kind_inventory(load_inventory([path]))


def test_kind_snapshot_times():
    inv = load_inventory([KIND_INVENTORY])
    pods = {p.name: p for p in inv.pods}
    started = datetime(2026, 2, 10, 11, 20, 2, tzinfo=timezone.utc)
    assert pods["pinger-5b7d9c8f6d-tz4vq"].start == int(started.timestamp()) * 1_000_000_000
