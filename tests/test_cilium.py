"""generate --flavor cilium, --cluster-baseline, and names whose DNS answers moved (issue 14).

Every CiliumNetworkPolicy and ClusterNetworkPolicy written is validated against the CRD schemas
in tests/data/schemas/ (see its README for their provenance) with the jsonschema package.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

import k8s
from netpol_learn._cli import main
from netpol_learn._flowlog import write_flow_log
from netpol_learn._generate import generate
from netpol_learn._inventory import load_inventory
from netpol_learn._synthesize import GenerateOptions

ROOT = Path(__file__).parent.parent
SCHEMAS = Path(__file__).parent / "data" / "schemas"
CAPTURES = ROOT / "captures"
INPUTS = Path(__file__).parent / "cases" / "_inputs"
NS_KEY = "k8s:io.kubernetes.pod.namespace"
CILIUM = GenerateOptions(flavor="cilium")


@lru_cache(maxsize=None)
def _validator(kind: str):
    if kind == "CiliumNetworkPolicy":
        schema = json.loads((SCHEMAS / "ciliumnetworkpolicy_v2.schema.json").read_text())
    else:
        crd = yaml.safe_load((SCHEMAS / "clusternetworkpolicies.standard.yaml").read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
        assert version["name"] == "v1alpha2"
        schema = version["schema"]["openAPIV3Schema"]
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def documents(files: dict[str, str]) -> list[dict]:
    """Every object in the directory's YAML files (kustomization.yaml aside), each validated."""
    out = []
    for name, text in sorted(files.items()):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for doc in yaml.safe_load_all(text):
                if doc["kind"] == "NetworkPolicy":  # the other flavour's, checked by its own tests
                    out.append(doc)
                    continue
                assert doc["kind"] in ("CiliumNetworkPolicy", "ClusterNetworkPolicy"), doc["kind"]
                errors = sorted(_validator(doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
                assert not errors, f"{name} {doc['metadata']['name']}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3])
                out.append(doc)
    return out


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def check_model(g) -> list[dict]:
    """The rendered YAML is exactly the model, and valid."""
    docs = documents(g.files)
    model = {(p.namespace, p.name): p.to_dict() for p in g.policies.policies}
    if g.policies.baseline is not None:
        model[("", g.policies.baseline.name)] = g.policies.baseline.to_dict()
    assert by_name(docs) == model
    return docs


def peers_of(rule: dict) -> tuple[str, list]:
    (key,) = [k for k in rule if k != "toPorts"]
    return key, rule[key]


def ports_of(rule: dict) -> set[tuple[str, str]]:
    return {(p["port"], p["protocol"]) for tp in rule.get("toPorts", ()) for p in tp["ports"]}


# --- the examples ------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def example_log(name: str):
    from netpol_learn import capture_files

    return capture_files([CAPTURES / name / "capture.pcap"])


def example(name: str, **options):
    inv = load_inventory([CAPTURES / name / "inventory.yaml"])
    return generate(example_log(name), inv, GenerateOptions(flavor="cilium", **options))


@pytest.mark.parametrize("name", ["guestbook", "ingress", "cross-namespace", "monitoring", "dns-egress"])
@pytest.mark.parametrize("options", [{}, {"dns": "per-workload", "cluster_baseline": True}, {"default_deny": "ingress"}, {"default_deny": "none", "named_ports": True}])
def test_every_example_validates_and_allows_its_truth_table(name, options):
    g = example(name, **options)
    docs = check_model(g)
    assert docs and all(d["apiVersion"] in ("cilium.io/v2", "policy.networking.k8s.io/v1alpha2") for d in docs)
    truth = yaml.safe_load((CAPTURES / name / "expected.yaml").read_text())
    policies = by_name(docs)
    for edge in truth:
        src, dst = edge["from"], edge["to"]
        if dst.startswith("outside:") or dst.startswith("kube-system/"):
            continue
        ns, _kind, workload = dst.split("/")
        policy = policies.get((ns, workload))
        assert policy is not None and "ingress" in policy["spec"], (name, edge)
        if src.startswith("outside:"):
            continue
        src_ns = src.split("/")[0]
        assert any(
            peers_of(r)[0] == "fromEndpoints" and any(sel["matchLabels"].get(NS_KEY) == src_ns for sel in peers_of(r)[1])
            and (options.get("named_ports") or (str(edge["port"]), edge["protocol"]) in ports_of(r))
            for r in policy["spec"]["ingress"]
        ), (name, edge)


@pytest.mark.parametrize("name", ["guestbook", "ingress", "cross-namespace", "monitoring", "dns-egress"])
def test_a_pod_is_never_a_cidr(name):
    """DESIGN rule 2 in this flavour: pods are endpoint selectors, never a CIDR that holds a pod's address."""
    import ipaddress

    pods = [ipaddress.ip_address(a) for p in load_inventory([CAPTURES / name / "inventory.yaml"]).pods if not p.host_network for a in p.ips]
    cidrs = [ipaddress.ip_network(c["cidr"]) for d in check_model(example(name)) for section in ("ingress", "egress")
             for r in d["spec"].get(section) or () for key in ("fromCIDRSet", "toCIDRSet") for c in r.get(key, ())]
    assert pods and not [(net, ip) for net in cidrs for ip in pods if ip.version == net.version and ip in net]


def test_guestbook_rules_are_endpoints_with_the_namespace_label_and_the_pods_ports():
    docs = check_model(example("guestbook"))
    p = by_name(docs)
    api = p[("guestbook", "api")]["spec"]
    assert api["endpointSelector"] == {"matchLabels": {"app": "guestbook", "tier": "api"}}
    (rule,) = api["ingress"]
    assert rule == {"fromEndpoints": [{"matchLabels": {NS_KEY: "guestbook", "app": "guestbook", "tier": "ui"}}],
                    "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}
    db_egress = [r for r in api["egress"] if "toEndpoints" in r and r["toEndpoints"][0]["matchLabels"].get("tier") == "db"]
    assert ports_of(db_egress[0]) == {("5432", "TCP")}
    deny = p[("guestbook", "default-deny")]["spec"]
    assert deny == {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}
    dns = p[("guestbook", "allow-dns")]["spec"]["egress"][0]
    assert dns["toEndpoints"][0]["matchLabels"][NS_KEY] == "kube-system"
    assert dns["toPorts"] == [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]


def test_cross_namespace_keeps_the_other_namespace_out_of_admin():
    docs = check_model(example("cross-namespace"))
    p = by_name(docs)
    web = p[("namespace-a", "web")]["spec"]["ingress"]
    assert web[0]["fromEndpoints"][0]["matchLabels"][NS_KEY] == "namespace-b"
    assert ("namespace-a", "admin") not in p  # never contacted: default-deny keeps it closed
    assert p[("namespace-a", "default-deny")]["spec"]["ingress"] == [{}]


def test_dns_egress_is_a_name_not_an_address_and_the_dns_proxy_sees_the_lookups():
    g = example("dns-egress")
    text = g.files["payments.yaml"]
    assert "203.0.113.10/32" not in text and "toCIDRSet" not in text
    p = by_name(check_model(g))
    egress = p[("payments", "checkout")]["spec"]["egress"]
    assert {"toFQDNs": [{"matchName": "api.example.com"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]} in egress
    assert p[("payments", "allow-dns")]["spec"]["egress"][0]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}
    # per workload: the DNS proxy rule sits in the policy that has toFQDNs
    g = example("dns-egress", dns="per-workload")
    egress = by_name(check_model(g))[("payments", "checkout")]["spec"]["egress"]
    assert any(r.get("toPorts", [{}])[0].get("rules") == {"dns": [{"matchPattern": "*"}]} for r in egress)


def test_ingress_example_node_traffic_is_an_entity():
    g = example("ingress")
    docs = check_model(g)
    texts = "\n".join(t for n, t in g.files.items() if n.endswith(".yaml"))
    assert "ipBlock" not in texts
    controller = [d for d in docs if d["metadata"]["namespace"] == "ingress-nginx" and d["metadata"]["name"] not in ("default-deny", "allow-dns")]
    assert controller  # the outside client reached it through the NodePort: fromCIDRSet
    ingress = controller[0]["spec"]["ingress"]
    assert any("fromCIDRSet" in r and {"cidr": "203.0.113.50/32"} in r["fromCIDRSet"] for r in ingress)


# --- built traffic: names, patterns, CIDRs, the API server, nodes --------------------------------


def cluster(tmp_path: Path, names: int = 12):
    items = [
        k8s.namespace("shop"), k8s.namespace("kube-system"), k8s.namespace("default"),
        k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"), k8s.node("node-b", "172.18.0.3", "10.244.1.0/24"),
        k8s.pod("api-1", "shop", "10.244.0.20", labels={"app": "api"}, ports=[("http", 8080, "TCP")], node="node-a"),
        k8s.pod("coredns-1", "kube-system", "10.244.0.2", labels={"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")], node="node-a"),
        k8s.service("kube-dns", "kube-system", "10.96.0.10", ports=[("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP")], selector={"k8s-app": "kube-dns"}),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")], endpoints=[("10.244.0.2", "coredns-1", "node-a")]),
        k8s.service("kubernetes", "default", "10.96.0.1", ports=[("https", 443, 6443, "TCP")]),
        k8s.endpoint_slice("kubernetes", "default", ports=[("https", 6443, "TCP")], endpoints=[("172.18.0.100", None, None)]),
    ]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    flows = [
        k8s.flow("10.244.0.20", "10.96.0.10", 53, "UDP"),
        k8s.flow("10.244.0.20", "10.96.0.1", 443, translated=[("10.244.0.20", "172.18.0.100", 6443)]),
        k8s.flow("10.244.0.20", "198.51.100.7", 5432),  # no name
        k8s.flow("10.244.0.20", "172.18.0.3", 10250),  # another node
        k8s.flow("10.244.0.20", "172.18.0.2", 9100),  # its own node
        k8s.flow("192.0.2.99", "10.244.0.20", 8080),  # from outside
    ]
    dns = []
    for i in range(names):
        address = f"203.0.113.{10 + i}"
        flows.append(k8s.flow("10.244.0.20", address, 443))
        dns.append(k8s.dns("10.244.0.20", "10.96.0.10", f"s{i}.cdn.example.net", [(f"s{i}.cdn.example.net", "A", address)]))
    return k8s.log(*flows, dns_observations=dns), inv


def api_egress(g) -> list:
    return api_policy(g)["egress"]


def api_policy(g) -> dict:
    return by_name(check_model(g))[("shop", "api-1")]["spec"]


def test_names_become_match_names_up_to_the_threshold_then_one_pattern(tmp_path):
    log, inv = cluster(tmp_path, names=12)
    egress = api_egress(generate(log, inv, GenerateOptions(flavor="cilium", fqdn_pattern_above=12)))
    fqdn = [r for r in egress if "toFQDNs" in r]
    assert len(fqdn) == 1 and sorted(x["matchName"] for x in fqdn[0]["toFQDNs"]) == sorted(f"s{i}.cdn.example.net" for i in range(12))
    g = generate(log, inv, GenerateOptions(flavor="cilium", fqdn_pattern_above=11))
    egress = api_egress(g)
    assert [r["toFQDNs"] for r in egress if "toFQDNs" in r] == [[{"matchPattern": "*.cdn.example.net"}]]
    assert "*.cdn.example.net'  # 12 names seen: s0.cdn.example.net" in g.files["shop.yaml"]
    assert "203.0.113." not in g.files["shop.yaml"].split("toFQDNs")[1].split("toCIDRSet")[0].replace("# seen at", "")
    # the default (10) collapses twelve
    assert [r["toFQDNs"] for r in api_egress(generate(log, inv, CILIUM)) if "toFQDNs" in r] == [[{"matchPattern": "*.cdn.example.net"}]]


def test_no_pattern_above_a_two_label_parent(tmp_path):
    items = [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"),
             k8s.pod("api-1", "shop", "10.244.0.20", labels={"app": "api"}, node="node-a")]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    flows = [k8s.flow("10.244.0.20", f"203.0.113.{i}", 443) for i in range(1, 5)]
    dns = [k8s.dns("10.244.0.20", "10.96.0.10", f"n{i}.com", [(f"n{i}.com", "A", f"203.0.113.{i}")]) for i in range(1, 5)]
    egress = api_egress(generate(k8s.log(*flows, dns_observations=dns), inv, GenerateOptions(flavor="cilium", fqdn_pattern_above=1)))
    names = [x for r in egress if "toFQDNs" in r for x in r["toFQDNs"]]
    assert names == [{"matchName": f"n{i}.com"} for i in range(1, 5)]  # never *.com
    # toFQDNs without any DNS line of its namespace's resolver seen: the DNS rule all the same
    policies = by_name(check_model(generate(k8s.log(*flows, dns_observations=dns), inv, CILIUM)))
    assert policies[("shop", "allow-dns")]["spec"]["egress"][0]["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}


def test_cidrs_api_server_and_nodes(tmp_path):
    log, inv = cluster(tmp_path, names=1)
    spec = api_policy(generate(log, inv, CILIUM))
    egress = {peers_of(r)[0]: r for r in spec["egress"] if peers_of(r)[0] != "toFQDNs" and "rules" not in r["toPorts"][0]}
    entities = [(e, ports_of(r)) for r in spec["egress"] if "toEntities" in r for e in r["toEntities"]]
    assert ("kube-apiserver", {("6443", "TCP")}) in entities
    assert ("remote-node", {("10250", "TCP")}) in entities
    assert ("host", {("9100", "TCP")}) in entities
    assert egress["toCIDRSet"]["toCIDRSet"] == [{"cidr": "198.51.100.7/32"}] and ports_of(egress["toCIDRSet"]) == {("5432", "TCP")}
    assert spec["ingress"] == [{"fromCIDRSet": [{"cidr": "192.0.2.99/32"}], "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]
    assert not any("toEndpoints" in r and r["toEndpoints"][0]["matchLabels"].get(NS_KEY) == "default" for r in spec["egress"])


def test_aggregation_and_open_ingress_in_cilium_words(tmp_path):
    log, inv = cluster(tmp_path, names=0)
    extra = [k8s.flow("10.244.0.20", f"198.51.100.{i}", 5432) for i in range(20, 30)]
    clients = [k8s.flow(f"192.0.2.{i}", "10.244.0.20", 8080) for i in range(1, 4)]
    log = k8s.log(*log.flows, *extra, *clients, dns_observations=log.dns)
    spec = api_policy(generate(log, inv, GenerateOptions(flavor="cilium", aggregate_prefix=24, aggregate_threshold=8, open_ingress_above=2)))
    cidrs = [c for r in spec["egress"] if "toCIDRSet" in r for c in r["toCIDRSet"]]
    assert cidrs == [{"cidr": "198.51.100.0/24"}]
    assert spec["ingress"] == [{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]


@pytest.mark.parametrize("mode, sections", [("both", {"ingress", "egress"}), ("ingress", {"ingress"}), ("egress", {"egress"}), ("none", None)])
def test_default_deny_modes(tmp_path, mode, sections):
    log, inv = cluster(tmp_path, names=2)
    g = generate(log, inv, GenerateOptions(flavor="cilium", default_deny=mode))
    policies = by_name(check_model(g))
    deny = policies.get(("shop", "default-deny"))
    if sections is None:
        assert deny is None
        assert ("shop", "allow-dns") not in policies  # it would isolate every pod's egress
        api = policies[("shop", "api-1")]["spec"]
        assert {"ingress", "egress"} <= set(api)  # seen both ways: isolated both ways, DNS in its own policy
        assert any("rules" in r.get("toPorts", [{}])[0] for r in api["egress"])
        return
    assert {k for k in deny["spec"] if k != "endpointSelector"} == sections
    assert all(deny["spec"][s] == [{}] for s in sections)
    for d in policies.values():  # no policy isolates a direction the option did not ask for
        assert set(d["spec"]) - {"endpointSelector"} <= sections


def test_same_inputs_same_bytes(tmp_path):
    log, inv = cluster(tmp_path)
    assert generate(log, inv, CILIUM).files == generate(log, inv, CILIUM).files


# --- the cluster baseline ------------------------------------------------------------------------


def baseline(g) -> dict:
    (doc,) = [d for d in documents(g.files) if d["kind"] == "ClusterNetworkPolicy"]
    return doc


@pytest.mark.parametrize("flavor", ["networkpolicy", "cilium"])
def test_baseline_validates_excludes_and_is_listed(tmp_path, flavor):
    log, inv = cluster(tmp_path, names=1)
    g = generate(log, inv, GenerateOptions(flavor=flavor, cluster_baseline=True))
    check_model(g)
    doc = baseline(g)
    assert doc["apiVersion"] == "policy.networking.k8s.io/v1alpha2" and doc["spec"]["tier"] == "Baseline"
    assert doc["spec"]["subject"] == {"namespaces": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}}
    assert doc["spec"]["ingress"] == [{"name": "deny-the-rest", "action": "Deny", "from": [{"namespaces": {}}]}]
    dns, deny = doc["spec"]["egress"]
    assert dns["action"] == "Accept" and dns["to"][0]["pods"]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert deny == {"name": "deny-the-rest", "action": "Deny", "to": [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}]}
    assert "_cluster-baseline.yaml" in yaml.safe_load(g.files["kustomization.yaml"])["resources"]
    assert g.files["_cluster-baseline.yaml"].startswith("# Generated by netpol-learn")
    assert "cluster baseline: _cluster-baseline.yaml" in g.files["REPORT.md"]


def test_baseline_follows_default_deny_and_the_exclusions(tmp_path):
    log, inv = cluster(tmp_path, names=1)
    g = generate(log, inv, GenerateOptions(cluster_baseline=True, default_deny="ingress", baseline_exclude=("monitoring", "kube-system")))
    doc = baseline(g)
    assert "egress" not in doc["spec"] and doc["spec"]["subject"]["namespaces"]["matchExpressions"][0]["values"] == ["kube-system", "monitoring"]
    g = generate(log, inv, GenerateOptions(cluster_baseline=True, default_deny="egress", baseline_exclude=()))
    doc = baseline(g)
    assert "ingress" not in doc["spec"] and doc["spec"]["subject"] == {"namespaces": {}}
    with pytest.raises(ValueError, match="--default-deny none"):
        GenerateOptions(cluster_baseline=True, default_deny="none")


# --- names that moved ------------------------------------------------------------------------------


def moving(tmp_path):
    log, inv = cluster(tmp_path, names=0)
    flows = [*log.flows, k8s.flow("10.244.0.20", "203.0.113.10", 443)]
    dns = [*log.dns,
           k8s.dns("10.244.0.20", "10.96.0.10", "api.example.com", [("api.example.com", "A", "203.0.113.10")], at_s=990),
           k8s.dns("10.244.0.21", "10.96.0.10", "api.example.com", [("api.example.com", "A", "203.0.113.11"), ("api.example.com", "A", "203.0.113.12")]),
           k8s.dns("10.244.0.20", "10.96.0.10", "steady.example.com", [("steady.example.com", "A", "198.51.100.7")])]
    return k8s.log(*flows, dns_observations=dns), inv


def test_a_moving_name_lists_every_address_and_report_suggests_cilium(tmp_path):
    log, inv = moving(tmp_path)
    g = generate(log, inv, GenerateOptions())
    text = g.files["shop.yaml"]
    assert "cidr: 203.0.113.10/32  # api.example.com; api.example.com answered 203.0.113.10, 203.0.113.11, 203.0.113.12 during the capture" in text
    assert "cidr: 198.51.100.7/32  # steady.example.com\n" in text  # one address: no such note
    report = g.files["REPORT.md"]
    assert "- api.example.com answered 3 addresses during the capture (203.0.113.10, 203.0.113.11, 203.0.113.12)" in report
    assert "--flavor cilium" in report and "--aggregate-prefix" in report
    assert "steady.example.com answered" not in report
    # the Cilium flavour needs no address for it
    g = generate(log, inv, CILIUM)
    spec = api_policy(g)
    assert {"matchName": "api.example.com"} in [x for r in spec["egress"] if "toFQDNs" in r for x in r["toFQDNs"]]
    assert "203.0.113.1" not in json.dumps(spec)
    assert "answered 3 addresses" not in g.files["REPORT.md"]


def test_aggregation_keeps_reading_the_names_of_a_moving_comment(tmp_path):
    log, inv = moving(tmp_path)
    extra = [k8s.flow("10.244.0.20", f"203.0.113.{i}", 443) for i in range(20, 23)]
    g = generate(k8s.log(*log.flows, *extra, dns_observations=log.dns), inv, GenerateOptions(aggregate_prefix=24, aggregate_threshold=3))
    assert "cidr: 203.0.113.0/24  # 4 outside addresses: api.example.com\n" in g.files["shop.yaml"]


# --- the command line --------------------------------------------------------------------------------


def _cli_inputs(tmp_path):
    log, inv = moving(tmp_path)
    flows = tmp_path / "flows.jsonl"
    write_flow_log(log, flows)
    return ["--flows", str(flows), "--inventory", str(tmp_path / "inventory.yaml")]


def test_cli_flavour_baseline_and_usage_errors(tmp_path):
    args = _cli_inputs(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", *args, "-o", str(out), "--flavor", "cilium", "--cluster-baseline", "--baseline-exclude", "kube-system", "--baseline-exclude", "default"])
    assert r.exit_code == 0, r.stderr
    assert (out / "shop.yaml").read_text().startswith("# Generated by netpol-learn: CiliumNetworkPolicies for namespace shop.")
    assert yaml.safe_load((out / "_cluster-baseline.yaml").read_text())["spec"]["subject"]["namespaces"]["matchExpressions"][0]["values"] == ["default", "kube-system"]
    for bad, word in ((["--flavor", "calico"], "--flavor"), (["--fqdn-pattern-above", "0"], "--fqdn-pattern-above"),
                      (["--fqdn-pattern-above", "many"], "--fqdn-pattern-above"), (["--cluster-baseline", "--default-deny", "none"], "--default-deny none"),
                      (["--cluster-baseline", "--baseline-exclude", "Not_A_Namespace"], "not a namespace name")):
        r = CliRunner().invoke(main, ["generate", *args, "-o", str(tmp_path / "bad"), *bad])
        assert r.exit_code == 2 and word in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", ["verify", "diff"])
def test_verify_and_diff_refuse_cilium_and_judge_the_baseline(tmp_path, command):
    args = _cli_inputs(tmp_path)
    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["generate", *args, "-o", str(out), "--flavor", "cilium"]).exit_code == 0
    nps = tmp_path / "nps"
    assert CliRunner().invoke(main, ["generate", *args, "-o", str(nps), "--cluster-baseline"]).exit_code == 0
    inventory = ["--inventory", str(tmp_path / "inventory.yaml")]

    def run(policies):
        if command == "verify":
            return CliRunner().invoke(main, ["verify", "--policies", str(policies), *args])
        return CliRunner().invoke(main, ["diff", str(policies), str(policies), *inventory])

    r = run(out)
    assert r.exit_code == 2, r.output
    assert "is a CiliumNetworkPolicy: verify and diff judge NetworkPolicies and ClusterNetworkPolicies only" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the NetworkPolicy flavour with its ClusterNetworkPolicy baseline is judged whole (tests/test_cluster_policy.py)
    r = run(nps)
    assert r.exit_code == 0, r.output
