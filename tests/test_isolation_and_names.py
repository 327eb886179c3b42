"""What the generate options promise, judged by network-config-analyzer (tests/policy_judge.py):

- no generated policy isolates a pod in a direction --default-deny did not ask to isolate, and
  a pod with no policy can reach anything and be reached from anywhere;
- policy names never collide, stay readable, valid and stable; --name-prefix prefixes them all;
- every command that resolves addresses takes the same address options, and a bad range is a
  usage error.

The cluster is tests/test_synthesize.py's (tests/k8s.py objects in the API's shapes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from netpol_learn._cli import main
from netpol_learn._flowlog import write_flow_log
from netpol_learn._inventory import load_inventory
from netpol_learn._synthesize import GenerateOptions
from policy_judge import Connection, judge, validate_documents
from test_synthesize import (API, DB0, DD, GITHUB, POD_RANGE, SERVICE_RANGE, SVC_DNS, UI, WORKER, X_DB, X_WEB, _deploy,
                             cluster_items, run)

ROOT = Path(__file__).parent.parent
ELSEWHERE = "203.0.113.9"  # an outside address no flow reached
EXTERNAL = {"github": GITHUB, "elsewhere": ELSEWHERE}
PORTS = [8080, 5432, 443, 9999, ("UDP", 53), ("TCP", 53)]
UI_, API_, DB_, WORKER_ = "web/Deployment/ui", "shop/Deployment/api", "shop/StatefulSet/db", "shop/Deployment/worker"
COREDNS_, COLLECTOR_ = "kube-system/Deployment/coredns", "ops/Deployment/collector"

FLOWS = [k8s.flow(UI, API, 8080), k8s.flow(API, DB0, 5432), k8s.flow(API, SVC_DNS, 53, "UDP"), k8s.flow(UI, SVC_DNS, 53, "UDP"),
         k8s.flow(WORKER, SVC_DNS, 53, "UDP"), k8s.flow(API, GITHUB, 443)]
OBSERVED = {Connection(UI_, API_, "TCP", 8080), Connection(API_, DB_, "TCP", 5432), Connection(API_, "github", "TCP", 443),
            *(Connection(w, COREDNS_, proto, 53) for w in (API_, UI_, WORKER_) for proto in ("UDP", "TCP"))}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = k8s.write_list(tmp_path_factory.mktemp("inventory"), cluster_items(), snapshot_time=10)
    return path, load_inventory([path], pod_cidrs=[POD_RANGE], service_cidrs=[SERVICE_RANGE])


def judged(g, directory: Path, items=None):
    directory.mkdir()
    for name, text in g.files.items():
        (directory / name).write_text(text)
    files = [directory / n for n in g.files if n.endswith(".yaml") and n != "kustomization.yaml"]
    assert validate_documents([directory / n for n in g.files if n.endswith(".yaml")]) == []
    documents = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    return judge(files, items or cluster_items(), PORTS, external=EXTERNAL), documents


def allowed(verdict, *connections) -> list:
    return [c for c in connections if c not in verdict.allowed]


def denied(verdict, *connections) -> list:
    return [c for c in connections if c in verdict.allowed | verdict.partial]


def anything(src: str, dst: str) -> list[Connection]:
    return [Connection(src, dst, "TCP", p) for p in (8080, 5432, 443, 9999)]


@pytest.mark.parametrize("dns", ["namespace", "per-workload"])
@pytest.mark.parametrize("mode", ["both", "ingress", "egress", "none"])
def test_no_policy_isolates_a_direction_the_options_did_not_ask_for(cluster, tmp_path, mode, dns):
    g = run(cluster, FLOWS, GenerateOptions(default_deny=mode, dns=dns))
    verdict, documents = judged(g, tmp_path / "policies")
    types = {t for d in documents for t in d["spec"].get("policyTypes", [])}
    workloads = (UI_, API_, DB_, WORKER_, COLLECTOR_)
    if mode in ("both", "egress", "none"):
        assert allowed(verdict, *OBSERVED) == []
    else:  # ingress: egress is open, so only the ingress side of what was seen needs a rule
        assert allowed(verdict, *OBSERVED) == []
        assert "Egress" not in types, documents
    if mode == "egress":
        assert "Ingress" not in types, documents
    # a pod with no policy of its own can reach anything and be reached from anywhere
    assert allowed(verdict, *anything(COLLECTOR_, "elsewhere"), *anything("elsewhere", COLLECTOR_)) == []
    if mode == "ingress":
        assert allowed(verdict, *(c for w in workloads for c in anything(w, "elsewhere"))) == []  # every egress open
        assert denied(verdict, *anything("elsewhere", API_), *anything("elsewhere", DB_)) == []
    if mode == "egress":
        assert allowed(verdict, *(c for w in workloads for c in anything("elsewhere", w))) == []  # every ingress open
        assert denied(verdict, *anything(API_, "elsewhere")[1:], *anything(WORKER_, "elsewhere")) == []
    if mode == "none":
        assert [d for d in documents if d["spec"]["podSelector"] == {}] == []  # nothing namespace-wide
        # worker only asked DNS: no policy, open both ways; db only received: its egress is open
        assert allowed(verdict, *anything(WORKER_, "elsewhere"), *anything("elsewhere", WORKER_), *anything(DB_, "elsewhere")) == []
        # ui and api are egress-isolated by their own policies and keep DNS; ui's ingress stays open
        assert allowed(verdict, *(Connection(w, COREDNS_, p, 53) for w in (UI_, API_) for p in ("UDP", "TCP"))) == []
        assert allowed(verdict, *anything("elsewhere", UI_)) == []
        assert denied(verdict, *anything(UI_, "elsewhere"), Connection("elsewhere", DB_, "TCP", 5432)) == []
    if mode == "both":
        assert denied(verdict, *anything(WORKER_, "elsewhere"), *anything("elsewhere", UI_)) == []


NAMES_ITEMS = [*cluster_items(),
               *_deploy("deployment-x", "apps", ["10.244.0.73"], {"app": "dx"}),
               *_deploy("allow-dns", "apps", ["10.244.0.74"], {"app": "ad"}),
               *_deploy("w" * 200, "apps", ["10.244.0.75"], {"app": "long"})]
DX, AD, LONG = "10.244.0.73", "10.244.0.74", "10.244.0.75"
NAME_FLOWS = [k8s.flow(X_WEB, X_DB, 5432), k8s.flow(DD, X_WEB, 8080), k8s.flow(DX, X_WEB, 8080), k8s.flow(AD, X_DB, 5432),
              k8s.flow(LONG, X_WEB, 8080), k8s.flow(DX, SVC_DNS, 53, "UDP")]


@pytest.fixture(scope="module")
def names_cluster(tmp_path_factory):
    path = k8s.write_list(tmp_path_factory.mktemp("inventory"), NAMES_ITEMS, snapshot_time=10)
    return path, load_inventory([path], pod_cidrs=[POD_RANGE], service_cidrs=[SERVICE_RANGE])


@pytest.mark.parametrize("prefix", ["", "learned-"])
def test_policy_names_never_collide(names_cluster, tmp_path, prefix):
    """Deployment/x, StatefulSet/x, Deployment/deployment-x, Deployment/default-deny and
    Deployment/allow-dns in one namespace: every policy has its own name, so none replaces
    another when applied (the judge refuses two policies of one name, as kubectl apply would
    silently keep only the last)."""
    g = run(names_cluster, NAME_FLOWS, GenerateOptions(name_prefix=prefix))
    apps = [p for p in g.policies.policies if p.namespace == "apps"]
    names = [p.name for p in apps]
    assert len(names) == len(set(names)) == 8, names  # 6 workloads, default-deny, allow-dns
    for name in names:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253, name
        assert name.startswith(prefix)
    by_workload = {dict(p.annotations).get("netpol-learn.io/workload"): p.name for p in apps}
    assert by_workload["Deployment/deployment-x"] == prefix + "deployment-x"  # readable where free
    assert by_workload["StatefulSet/x"] == prefix + "statefulset-x"
    assert by_workload["Deployment/x"].startswith(prefix + "deployment-x-")  # the readable name was taken
    assert by_workload["Deployment/default-deny"] == prefix + "deployment-default-deny"
    assert by_workload["Deployment/allow-dns"] == prefix + "deployment-allow-dns"
    assert {prefix + "default-deny", prefix + "allow-dns"} <= set(names)
    verdict, _ = judged(g, tmp_path / "policies", NAMES_ITEMS)
    wanted = {Connection("apps/Deployment/x", "apps/StatefulSet/x", "TCP", 5432),
              Connection("apps/Deployment/default-deny", "apps/Deployment/x", "TCP", 8080),
              Connection("apps/Deployment/deployment-x", "apps/Deployment/x", "TCP", 8080),
              Connection("apps/Deployment/allow-dns", "apps/StatefulSet/x", "TCP", 5432),
              Connection(f"apps/Deployment/{'w' * 200}", "apps/Deployment/x", "TCP", 8080),
              Connection("apps/Deployment/deployment-x", COREDNS_, "UDP", 53)}
    assert wanted - verdict.allowed == set()
    assert denied(verdict, Connection("apps/Deployment/deployment-x", "apps/StatefulSet/x", "TCP", 5432),
                  Connection("apps/StatefulSet/x", "apps/Deployment/x", "TCP", 8080)) == []
    assert run(names_cluster, list(reversed(NAME_FLOWS)), GenerateOptions(name_prefix=prefix)).files == g.files  # stable


def test_name_prefix_keeps_the_namespace_templates(cluster, tmp_path):
    flows = tmp_path / "flows.jsonl"
    write_flow_log(k8s.log(*FLOWS), flows)
    out = tmp_path / "out"
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default-deny.yaml.j2").write_text(
        '{%- import "_macros.j2" as m -%}\n# custom deny\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{{ m.metadata(policy) }}\n{{ m.spec(policy) }}\n')
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(cluster[0]), "--pod-cidr", POD_RANGE,
                                  "--service-cidr", SERVICE_RANGE, "--name-prefix", "np-", "--templates", str(templates), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    text = (out / "shop.yaml").read_text()
    assert "# custom deny\n" in text and "name: np-default-deny" in text and "name: np-allow-dns" in text
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(cluster[0]), "--name-prefix", "Bad_", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:") and "Bad_" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


# --- address options ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_pod_cidr(tmp_path_factory):
    """Nodes that do not say their podCIDR: 10.244.0.0/16 is known only from --pod-cidr."""
    d = tmp_path_factory.mktemp("nocidr")
    items = [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2"),
             *[i for i in _deploy("client", "shop", ["10.244.0.10"], nodes=["node-a"])],
             *[i for i in _deploy("server", "shop", ["10.244.0.20"], ports=[("http", 8080, "TCP")], nodes=["node-a"])]]
    inventory = k8s.write_list(d, items)
    flows = d / "flows.jsonl"
    write_flow_log(k8s.log(k8s.flow("10.244.0.10", "10.244.0.20", 8080), k8s.flow("10.244.0.10", "10.244.0.99", 80)), flows)
    policies = d / "policies"
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "--pod-cidr", "10.244.0.0/16", "-o", str(policies)])
    assert r.exit_code == 0, r.stderr
    return inventory, flows, policies


def test_verify_and_diff_take_the_address_options_generate_took(no_pod_cidr):
    inventory, flows, policies = no_pod_cidr
    report = (policies / "REPORT.md").read_text()
    assert "10.244.0.99" in report and "10.244.0.99" not in (policies / "shop.yaml").read_text()  # unresolved, no rule
    r = CliRunner().invoke(main, ["verify", "--policies", str(policies), "--inventory", str(inventory), "--flows", str(flows),
                                  "--pod-cidr", "10.244.0.0/16"])
    assert r.exit_code == 0, r.stdout + r.stderr  # the unresolved address is not evaluated, as generate left it
    assert "10.244.0.99" in r.stdout and "unresolved" in r.stdout
    r = CliRunner().invoke(main, ["diff", str(policies), str(policies), "--inventory", str(inventory), "--flows", str(flows),
                                  "--pod-cidr", "10.244.0.0/16", "--service-cidr", "10.96.0.0/12"])
    assert r.exit_code == 0, r.stdout + r.stderr


@pytest.mark.parametrize("bad", ["banana", "10.96.0.0/33", "300.1.2.3/8", ""])
@pytest.mark.parametrize("command", ["resolve", "generate", "learn", "verify", "diff"])
def test_a_bad_address_range_is_a_usage_error(no_pod_cidr, tmp_path, command, bad):
    inventory, flows, policies = no_pod_cidr
    args = {"resolve": ["resolve", "--flows", flows, "--inventory", inventory],
            "generate": ["generate", "--flows", flows, "--inventory", inventory, "-o", tmp_path / "out"],
            "learn": ["learn", ROOT / "captures" / "guestbook" / "capture.pcap", "--inventory", inventory, "-o", tmp_path / "out"],
            "verify": ["verify", "--policies", policies, "--inventory", inventory, "--flows", flows],
            "diff": ["diff", policies, policies, "--inventory", inventory]}[command]
    for option in ("--pod-cidr", "--service-cidr"):
        r = CliRunner().invoke(main, [*map(str, args), option, bad])
        assert r.exit_code == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error:") and option in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


def test_the_library_refuses_a_bad_address_range_too(no_pod_cidr):
    from netpol_learn._errors import InventoryError

    for kw in ({"pod_cidrs": ["banana"]}, {"service_cidrs": ["10.96.0.0/33"]}):
        with pytest.raises(InventoryError, match="is not an address range"):
            load_inventory([no_pod_cidr[0]], **kw)
