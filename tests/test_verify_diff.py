"""verify and diff through the command line, on a small generated policy directory.

The cluster (tests/k8s.py, in kubectl's shape): namespaces web, shop, kube-system; nodes node-a
and node-b;
  web/Deployment/ui        1 pod, app=ui
  shop/Deployment/api      2 pods (one per node), app=api, port http=8080, behind Service api:80
  shop/StatefulSet/db      db-0, app=db, port pg=5432
  kube-system coredns-1    k8s-app=kube-dns, behind Service kube-dns:53
Observed: ui -> api (via the Service), both api pods -> db:5432 (3 + 1 connections), api -> DNS,
api -> 140.82.112.3:443 (api.github.com), node-a -> the api pod on it (a kubelet probe).

`netpol-learn generate` writes the policies for that traffic; then verify and diff run on that
directory and on edited copies of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from netpol_learn._cli import main
from netpol_learn._flowlog import write_flow_log
from netpol_learn._semantics import load_policies

API, DB, UI = "shop/Deployment/api", "shop/StatefulSet/db", "web/Deployment/ui"


@pytest.fixture(autouse=True, params=["0", "1"], ids=["in-turn", "second-process"])
def reading(request, monkeypatch):
    """Every case twice: the inputs read here in turn, and the policies (and verify's inventory)
    read in a second process while this one reads the rest (netpol_learn/_parallel.py): the same
    output, errors and warnings either way."""
    monkeypatch.setenv("NETPOL_LEARN_PARALLEL", request.param)
    return request.param


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rs_pod(name: str, ns: str, rs: str, ip: str, labels: dict, ports=(), node: str = "node-a") -> dict:
    return k8s.pod(name, ns, ip, labels={**labels, "pod-template-hash": rs.rsplit("-", 1)[1]}, owner=("ReplicaSet", rs),
                   ports=ports, node=node)


@pytest.fixture
def setup(tmp_path):
    """(inventory, flows, generated policy directory)."""
    items = [
        k8s.namespace("shop"), k8s.namespace("web"), k8s.namespace("kube-system"),
        k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"), k8s.node("node-b", "172.18.0.3", "10.244.1.0/24"),
        k8s.deployment("ui", "web"), k8s.replicaset("ui-6d4f8b9c7", "web", {"app": "ui"}, owner=("Deployment", "ui")),
        rs_pod("ui-6d4f8b9c7-aaaaa", "web", "ui-6d4f8b9c7", "10.244.0.10", {"app": "ui"}),
        k8s.deployment("api", "shop"), k8s.replicaset("api-5c9d7f6b8", "shop", {"app": "api"}, owner=("Deployment", "api")),
        rs_pod("api-5c9d7f6b8-bbbbb", "shop", "api-5c9d7f6b8", "10.244.0.20", {"app": "api"}, [("http", 8080, "TCP")]),
        rs_pod("api-5c9d7f6b8-ccccc", "shop", "api-5c9d7f6b8", "10.244.1.21", {"app": "api"}, [("http", 8080, "TCP")], node="node-b"),
        k8s.statefulset("db", "shop", {"app": "db"}),
        k8s.pod("db-0", "shop", "10.244.1.30", labels={"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
                owner=("StatefulSet", "db"), node="node-b", ports=[("pg", 5432, "TCP")]),
        k8s.pod("coredns-1", "kube-system", "10.244.0.2", labels={"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        k8s.service("api", "shop", "10.96.0.50", ports=[("http", 80, "http", "TCP")], selector={"app": "api"}),
        k8s.endpoint_slice("api", "shop", ports=[("http", 8080, "TCP")],
                           endpoints=[("10.244.0.20", "api-5c9d7f6b8-bbbbb", "node-a"), ("10.244.1.21", "api-5c9d7f6b8-ccccc", "node-b")]),
        k8s.service("kube-dns", "kube-system", "10.96.0.10", ports=[("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP")], selector={"k8s-app": "kube-dns"}),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")], endpoints=[("10.244.0.2", "coredns-1", "node-a")]),
    ]
    inventory = k8s.write_list(tmp_path, items)
    log = k8s.log(
        k8s.flow("10.244.0.10", "10.96.0.50", 80, translated=[("10.244.0.10", "10.244.0.20", 8080)]),
        k8s.flow("10.244.0.20", "10.244.1.30", 5432, connections=3),
        k8s.flow("10.244.1.21", "10.244.1.30", 5432),
        k8s.flow("10.244.0.20", "10.96.0.10", 53, "UDP"),
        k8s.flow("10.244.0.20", "140.82.112.3", 443),
        k8s.flow("172.18.0.2", "10.244.0.20", 8080),
        dns_observations=[k8s.dns("10.244.0.20", "10.96.0.10", "api.github.com", [("api.github.com", "A", "140.82.112.3")])],
    )
    flows = tmp_path / "flows.jsonl"
    write_flow_log(log, flows)
    policies = tmp_path / "policies"
    r = run("generate", "--flows", flows, "--inventory", inventory, "-o", policies)
    assert r.exit_code == 0, r.stderr
    return inventory, flows, policies


def edit(src: Path, dst: Path, change) -> Path:
    """Copy a policy directory and apply change(policy dict) to every NetworkPolicy in it."""
    shutil.copytree(src, dst)
    for f in dst.glob("*.yaml"):
        if f.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        for d in docs:
            change(d)
        f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dst


def named(name: str, namespace: str = "shop"):
    def decorator(fn):
        def change(doc):
            if doc["metadata"]["name"] == name and doc["metadata"]["namespace"] == namespace:
                fn(doc["spec"])
        return change
    return decorator


# --- verify ---------------------------------------------------------------------------------


def test_generated_directory_verifies_clean(setup):
    inventory, flows, policies = setup
    r = run("verify", "--policies", policies, "--inventory", inventory, "--flows", flows)
    assert r.exit_code == 0, r.output + r.stderr
    assert r.stdout == "All 5 observed connections are allowed.\n"
    r = run("verify", "--policies", policies, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"denied": [], "allowed": 5, "not_evaluated": []}


def test_kustomize_output_and_a_list_verify_like_the_directory(setup, tmp_path):
    inventory, flows, policies = setup
    built = subprocess.run(["kubectl", "kustomize", str(policies)], capture_output=True, text=True, check=True).stdout
    (tmp_path / "kustomized.yaml").write_text(built)
    as_list = {"apiVersion": "v1", "kind": "List", "items": [d for d in yaml.safe_load_all(built) if d]}
    (tmp_path / "list.json").write_text(json.dumps(as_list))
    assert len(load_policies([tmp_path / "kustomized.yaml"])) == len(load_policies([policies])) == len(as_list["items"]) == 6
    for path in (tmp_path / "kustomized.yaml", tmp_path / "list.json"):
        r = run("verify", "--policies", path, "--inventory", inventory, "--flows", flows)
        assert (r.exit_code, r.stdout) == (0, "All 5 observed connections are allowed.\n"), r.stderr


@named("db")
def drop_db_ingress(spec):
    spec["ingress"] = []


@named("api")
def drop_api_external_egress(spec):
    spec["egress"] = [r for r in spec["egress"] if not any("ipBlock" in peer for peer in r.get("to", []))]


def test_removing_a_rule_fails_verify_naming_direction_and_policies_text(setup, tmp_path):
    inventory, flows, policies = setup
    broken = edit(policies, tmp_path / "broken", drop_db_ingress)
    r = run("verify", "--policies", broken, "--inventory", inventory, "--flows", flows)
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0] == "1 observed connection would be denied (4 allowed):"
    # both api pods' flows, grouped into one workload pair and port: 2 flows, (3 + 1) x 10 packets
    assert lines[1] == (f"  {API} -> {DB} TCP/5432: 2 flows, 40 packets; denied by ingress: "
                        f"ingress of {DB} is isolated by shop/default-deny, shop/db; none allows it")
    assert len(lines) == 2


def test_removing_a_rule_fails_verify_naming_direction_and_policies_json(setup, tmp_path):
    inventory, flows, policies = setup
    broken = edit(policies, tmp_path / "broken", lambda d: (drop_db_ingress(d), drop_api_external_egress(d)))
    r = run("verify", "--policies", broken, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 1
    got = json.loads(r.stdout)
    assert got["allowed"] == 3 and got["not_evaluated"] == []
    by_server = {d["server"]: d for d in got["denied"]}
    assert set(by_server) == {DB, "external 140.82.112.3"}
    db = by_server[DB]
    assert (db["client"], db["protocol"], db["port"], db["flows"], db["packets"], db["direction"]) == (API, "TCP", 5432, 2, 40, "ingress")
    assert "shop/db" in db["why"] and "shop/default-deny" in db["why"]
    ext = by_server["external 140.82.112.3"]
    assert (ext["client"], ext["protocol"], ext["port"], ext["flows"], ext["direction"]) == (API, "TCP", 443, 1, "egress")
    for name in ("shop/default-deny", "shop/allow-dns", "shop/api"):  # every policy isolating api's egress
        assert name in ext["why"]


def test_verify_output_file(setup, tmp_path):
    inventory, flows, policies = setup
    broken = edit(policies, tmp_path / "broken", drop_db_ingress)
    out = tmp_path / "report.json"
    r = run("verify", "--policies", broken, "--inventory", inventory, "--flows", flows, "--format", "json", "-o", out)
    assert r.exit_code == 1 and r.stdout == ""
    assert json.loads(out.read_text())["denied"][0]["direction"] == "ingress"


# --- diff -----------------------------------------------------------------------------------


def test_diff_of_a_directory_with_itself_is_equal(setup):
    inventory, flows, policies = setup
    r = run("diff", policies, policies, "--inventory", inventory)
    assert (r.exit_code, r.stdout) == (0, "No change in connectivity.\n"), r.stderr
    r = run("diff", policies, policies, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"equal": True, "added": [], "removed": []}


@named("db")
def db_port_5433(spec):
    spec["ingress"][0]["ports"] = [{"protocol": "TCP", "port": 5433}]


@named("api")
def api_to_db_5433(spec):
    for rule in spec["egress"]:
        for p in rule.get("ports", []):
            if p.get("port") == 5432:
                p["port"] = 5433


def change_db_port(doc):
    db_port_5433(doc)
    api_to_db_5433(doc)


def test_diff_of_a_changed_port_text_with_observed(setup, tmp_path):
    inventory, flows, policies = setup
    new = edit(policies, tmp_path / "new", change_db_port)
    r = run("diff", policies, new, "--inventory", inventory, "--flows", flows)
    assert r.exit_code == 1, r.stderr
    assert r.stdout == (
        "Allowed now, denied before (1):\n"
        f"  {API} -> {DB} TCP/5433\n"
        "Denied now, allowed before (1):\n"
        f"  {API} -> {DB} TCP/5432  (observed)\n"
    )
    r = run("diff", policies, new, "--inventory", inventory)  # without flows: nothing marked
    assert r.exit_code == 1 and "observed" not in r.stdout


def test_diff_of_a_changed_port_json_and_markdown(setup, tmp_path):
    inventory, flows, policies = setup
    new = edit(policies, tmp_path / "new", change_db_port)
    r = run("diff", policies, new, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {
        "equal": False,
        "added": [{"client": API, "server": DB, "protocol": "TCP", "port": 5433, "observed": False}],
        "removed": [{"client": API, "server": DB, "protocol": "TCP", "port": 5432, "observed": True}],
    }
    r = run("diff", policies, new, "--inventory", inventory, "--flows", flows, "--format", "markdown")
    assert r.exit_code == 1
    md = r.stdout
    assert md.startswith("## NetworkPolicy changes: 1 connection(s) added, 1 removed\n")
    assert "### Allowed now, denied before (1)" in md and "### Denied now, allowed before (1)" in md
    assert "| from | to | port | observed |\n|---|---|---|---|" in md
    assert f"| {API} | {DB} | TCP/5432 | yes |" in md
    assert f"| {API} | {DB} | TCP/5433 |  |" in md
    # the reverse direction swaps added and removed
    r = run("diff", new, policies, "--inventory", inventory, "--format", "json")
    back = json.loads(r.stdout)
    assert [c["port"] for c in back["added"]] == [5432] and [c["port"] for c in back["removed"]] == [5433]


@named("api")
def widen_external(spec):
    for rule in spec["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" in peer:
                peer["ipBlock"] = {"cidr": "140.82.112.0/24", "except": ["140.82.112.128/25"]}


def test_diff_of_outside_address_ranges(setup, tmp_path):
    inventory, flows, policies = setup
    new = edit(policies, tmp_path / "new", widen_external)
    r = run("diff", policies, new, "--inventory", inventory, "--format", "json")
    assert r.exit_code == 1, r.stderr
    got = json.loads(r.stdout)
    # 140.82.112.3 is in both; the rest of the /24 outside the except is new; the except is not
    assert got["removed"] == []
    assert [(c["client"], c["server"], c["protocol"], c["port"]) for c in got["added"]] == [(API, "outside 140.82.112.0/24", "TCP", 443)]


def test_diff_marks_removed_outside_traffic_that_was_observed(setup, tmp_path):
    """api was seen talking to 140.82.112.3:443; a NEW that drops that rule removes observed traffic."""
    inventory, flows, policies = setup
    new = edit(policies, tmp_path / "new", drop_api_external_egress)
    r = run("diff", policies, new, "--inventory", inventory, "--flows", flows, "--format", "json")
    assert r.exit_code == 1, r.stderr
    removed = json.loads(r.stdout)["removed"]
    assert [(c["client"], c["protocol"], c["port"]) for c in removed] == [(API, "TCP", 443)]
    assert "140.82.112.3" in removed[0]["server"]
    assert removed[0]["observed"] is True, f"observed traffic to 140.82.112.3:443 not marked: {removed}"


def write_policy(directory: Path, spec: dict, name: str = "db", namespace: str = "shop") -> Path:
    directory.mkdir()
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace},
           "spec": spec}
    (directory / "policy.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


DB_INGRESS = {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}


def test_diff_sees_a_hole_cut_into_a_port_range(setup, tmp_path):
    """BASE lets anything into db on 5000-6000; NEW on 5000-5599 and 5701-6000: 5600-5700 is removed."""
    inventory, _, _ = setup
    base = write_policy(tmp_path / "base", {**DB_INGRESS, "ingress": [{"ports": [{"port": 5000, "endPort": 6000}]}]})
    new = write_policy(tmp_path / "new", {**DB_INGRESS, "ingress": [{"ports": [{"port": 5000, "endPort": 5599},
                                                                                 {"port": 5701, "endPort": 6000}]}]})
    r = run("diff", base, new, "--inventory", inventory, "--format", "json")
    assert r.exit_code == 1, f"NEW closes TCP 5600-5700 into db; diff says: {r.stdout}"
    got = json.loads(r.stdout)
    assert got["added"] == []
    assert got["removed"] and all(c["server"] == DB and c["protocol"] == "TCP" for c in got["removed"])


def test_diff_sees_a_protocol_opened_on_every_port(setup, tmp_path):
    """NEW adds ``{protocol: SCTP}`` (every SCTP port) to db's ingress; no SCTP port is named anywhere."""
    inventory, _, _ = setup
    base = write_policy(tmp_path / "base", {**DB_INGRESS, "ingress": [{"ports": [{"port": 443}]}]})
    new = write_policy(tmp_path / "new", {**DB_INGRESS, "ingress": [{"ports": [{"port": 443}, {"protocol": "SCTP"}]}]})
    r = run("diff", base, new, "--inventory", inventory, "--format", "json")
    assert r.exit_code == 1, f"NEW opens every SCTP port of db; diff says: {r.stdout}"
    got = json.loads(r.stdout)
    assert got["removed"] == [] and got["added"]
    assert all(c["server"] == DB and c["protocol"] == "SCTP" for c in got["added"])


def test_diff_sees_an_outside_range_shrunk(setup, tmp_path):
    """BASE lets api reach 0.0.0.0/0, NEW only 0.0.0.0/1: 128.0.0.0/1 is removed."""
    inventory, _, _ = setup
    egress = {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"]}
    base = write_policy(tmp_path / "base", {**egress, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}, "api")
    new = write_policy(tmp_path / "new", {**egress, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}]}, "api")
    r = run("diff", base, new, "--inventory", inventory, "--format", "json")
    assert r.exit_code == 1, f"NEW stops api reaching 128.0.0.0/1; diff says: {r.stdout}"
    got = json.loads(r.stdout)
    assert got["added"] == [] and got["removed"]
    assert all(c["client"] == API and c["server"].startswith(("outside", "external")) for c in got["removed"])


# --- bad input ------------------------------------------------------------------------------


def test_non_network_policy_documents_are_skipped_with_a_note(setup, tmp_path):
    inventory, flows, policies = setup
    mixed = tmp_path / "mixed"
    shutil.copytree(policies, mixed)
    (mixed / "extra.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "shop"}, "data": {"a": "b"}},
    ]))
    notes: list[str] = []
    assert len(load_policies([mixed], notes)) == 6
    assert notes == ["skipped 1 document(s) of kind ConfigMap"]
    r = run("verify", "--policies", mixed, "--inventory", inventory, "--flows", flows)
    assert (r.exit_code, r.stdout) == (0, "All 5 observed connections are allowed.\n")
    assert "ConfigMap" in r.stderr, f"verify says nothing about the skipped document: stderr={r.stderr!r}"
    r = run("diff", policies, mixed, "--inventory", inventory)
    assert r.exit_code == 0
    assert "ConfigMap" in r.stderr, f"diff says nothing about the skipped document: stderr={r.stderr!r}"


BAD_DOCUMENTS = {
    "invalid-policy-type": ({"podSelector": {}, "policyTypes": ["Ingres"]}, "spec.policyTypes: 'Ingres' is neither Ingress nor Egress"),
    "unknown-operator": ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Inn", "values": ["x"]}]}},
                         "spec.podSelector.matchExpressions[0].operator: unknown selector operator 'Inn' (not In, NotIn, Exists or DoesNotExist)"),
    "unknown-operator-in-peer": ({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "team", "operator": "Equals", "values": ["x"]}]}}]}]}, "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: unknown selector operator 'Equals' (not In, NotIn, Exists or DoesNotExist)"),
    "bad-protocol": ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]},
                     "spec.ingress[0].ports[0].protocol: 'ICMP' is not TCP, UDP or SCTP"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
@pytest.mark.parametrize("command", ["verify", "diff"])
def test_an_invalid_policy_is_one_line_with_file_and_document_and_exit_2(setup, tmp_path, case, command):
    inventory, flows, policies = setup
    spec, message = BAD_DOCUMENTS[case]
    bad_dir = tmp_path / "bad"
    shutil.copytree(policies, bad_dir)
    bad = bad_dir / "zz-bad.yaml"
    ok = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "fine", "namespace": "shop"},
          "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    bad_doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "broken", "namespace": "shop"},
               "spec": spec}
    bad.write_text(yaml.safe_dump_all([ok, bad_doc], sort_keys=False))
    if command == "verify":
        r = run("verify", "--policies", bad_dir, "--inventory", inventory, "--flows", flows)
    else:
        r = run("diff", policies, bad_dir, "--inventory", inventory)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [f"error: {bad}: document 2 (NetworkPolicy broken): {message}"]


def test_yaml_syntax_error_and_missing_path_are_one_line_and_exit_2(setup, tmp_path):
    inventory, flows, policies = setup
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: [unclosed\n")
    r = run("verify", "--policies", bad, "--inventory", inventory, "--flows", flows)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"error: {bad}:") and "invalid YAML" in r.stderr
    r = run("diff", tmp_path / "nowhere", policies, "--inventory", inventory)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [f"error: {tmp_path / 'nowhere'}: no such file or directory"]


def test_document_index_counts_list_items(tmp_path):
    """In a List, the index names the item, counted across the file's documents."""
    good = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a", "namespace": "x"},
            "spec": {"podSelector": {}}}
    bad = {**good, "metadata": {"name": "b", "namespace": "x"}, "spec": {"podSelector": {}, "egress": [{"to": [{}]}]}}
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump_all([good, {"apiVersion": "v1", "kind": "List", "items": [good, bad]}]))
    from netpol_learn._errors import PolicyError

    with pytest.raises(PolicyError) as info:
        load_policies([path])
    assert str(info.value).startswith(f"{path}: document 3 (NetworkPolicy b): spec.egress[0].to[0]:")
