"""ClusterNetworkPolicy in the semantics engine (verify, diff, the review page): the Admin tier
before NetworkPolicies, the Baseline tier for pods they do not isolate, priorities, rule order,
Accept/Deny/Pass, peers and protocols, as the API's CRD documents them; the baseline
``generate --cluster-baseline`` writes, judged through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netpol_learn._cluster_policy import cluster_policy_from_dict
from netpol_learn._errors import PolicyError
from netpol_learn._semantics import Endpoint, PolicyEngine, load_policies, policy_from_dict

ROOT = Path(__file__).resolve().parent.parent
NAMESPACES = {"shop": {"team": "a"}, "new": {"team": "b"}, "kube-system": {}}


def pod(ns, app, address, ports=()):
    return Endpoint(address, namespace=ns, labels=(("app", app),), named_ports=tuple(ports), name=f"{app}-0")


WEB, API = pod("shop", "web", "10.244.0.2"), pod("shop", "api", "10.244.0.3", [("http", "TCP", 8080)])
FRESH, FRESH2 = pod("new", "fresh", "10.244.1.2", [("metrics", "TCP", 9100)]), pod("new", "other", "10.244.1.3")
DNS = Endpoint("10.244.2.2", namespace="kube-system", labels=(("k8s-app", "kube-dns"),), name="coredns-0")
OUTSIDE = Endpoint("203.0.113.7")

SHOP_DENY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny", "namespace": "shop"},
             "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
SHOP_WEB_TO_API = [
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
              "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 8080}]}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "api", "namespace": "shop"},
     "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 8080}]}]}},
]


def cnp(name, tier, priority, subject, ingress=(), egress=()):
    spec = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = list(ingress)
    if egress:
        spec["egress"] = list(egress)
    return cluster_policy_from_dict({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                                     "metadata": {"name": name}, "spec": spec})


ALL_BUT_KUBE_SYSTEM = {"namespaces": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}}
BASELINE = cnp("baseline", "Baseline", 1000, ALL_BUT_KUBE_SYSTEM,
               ingress=[{"name": "deny-the-rest", "action": "Deny", "from": [{"namespaces": {}}]}],
               egress=[{"name": "dns", "action": "Accept", "to": [{"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                                                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}],
                        "protocols": [{"udp": {"destinationPort": {"number": 53}}}, {"tcp": {"destinationPort": {"number": 53}}}]},
                       {"name": "deny-the-rest", "action": "Deny", "to": [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}]}])


def engine(*cluster, policies=(SHOP_DENY, *SHOP_WEB_TO_API)):
    return PolicyEngine([policy_from_dict(p) for p in policies], NAMESPACES, cluster)


def test_the_baseline_decides_only_for_pods_no_networkpolicy_isolates():
    e = engine(BASELINE)
    v = e.evaluate(FRESH, FRESH2, "TCP", 80)
    assert not v.allowed and v.denied_by == "egress" and "ClusterNetworkPolicy baseline (Baseline), rule deny-the-rest" in v.why
    assert e.evaluate(FRESH, DNS, "UDP", 53).allowed  # its DNS accept rule comes first; kube-system is no subject
    assert not e.evaluate(FRESH, DNS, "UDP", 5353).allowed
    assert not e.evaluate(FRESH, OUTSIDE, "TCP", 443).allowed  # networks 0.0.0.0/0
    # shop is isolated by its NetworkPolicies: they decide, the baseline does not
    assert e.evaluate(WEB, API, "TCP", 8080).allowed
    assert e.evaluate(WEB, API, "TCP", 8081).denied_by == "egress" and "isolated by" in e.evaluate(WEB, API, "TCP", 8081).why
    # kube-system is excluded: its pods' traffic is not the baseline's
    assert e.evaluate(DNS, OUTSIDE, "UDP", 53).allowed
    # ingress from outside: the standard channel's ingress peers are pods, so the baseline cannot deny it
    assert e.evaluate(OUTSIDE, FRESH, "TCP", 9100).allowed
    # without the baseline everything unpoliced is open
    assert engine().evaluate(FRESH, FRESH2, "TCP", 80).allowed


def test_the_admin_tier_overrides_networkpolicies_and_pass_hands_over():
    accept = cnp("let-monitoring", "Admin", 10, {"namespaces": {}},
                 ingress=[{"name": "scrape", "action": "Accept", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}],
                           "protocols": [{"destinationNamedPort": "http"}]}])
    deny = cnp("no-9100", "Admin", 20, {"namespaces": {}},
               egress=[{"name": "no", "action": "Deny", "to": [{"networks": ["10.244.0.0/16"]}], "protocols": [{"tcp": {"destinationPort": {"range": {"start": 9000, "end": 9200}}}}]}])
    passing = cnp("pass-first", "Admin", 5, {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}},
                  egress=[{"name": "pass", "action": "Pass", "to": [{"namespaces": {}}]}])
    e = engine(accept, deny, passing)
    # API's ingress is isolated by a NetworkPolicy that allows only web; the Admin tier accepts new's pods on its named port http
    assert e.evaluate(FRESH, API, "TCP", 8080).allowed
    assert engine().evaluate(FRESH, API, "TCP", 8080).denied_by == "ingress"
    assert e.evaluate(FRESH, API, "TCP", 8081).denied_by == "ingress"  # not the named port
    # a Deny of the Admin tier beats everything, pods' addresses included (networks match pods too)
    v = e.evaluate(FRESH2, FRESH, "TCP", 9100)
    assert not v.allowed and "no-9100" in v.why
    assert e.evaluate(FRESH2, FRESH, "TCP", 9201).allowed
    # Pass (priority 5, first) skips the Admin tier for web's egress: the no-9100 Deny does not apply, its NetworkPolicy decides
    assert e.evaluate(WEB, API, "TCP", 8080).allowed


def test_priorities_then_rule_order():
    low = cnp("b-accept", "Baseline", 1, {"namespaces": {}}, egress=[{"name": "a", "action": "Accept", "to": [{"namespaces": {}}]}])
    high = cnp("a-deny", "Baseline", 2, {"namespaces": {}}, egress=[{"name": "d", "action": "Deny", "to": [{"namespaces": {}}]}])
    assert engine(high, low).evaluate(FRESH, FRESH2, "TCP", 1).allowed  # priority 1 first, whatever the order given
    same = cnp("c-deny", "Baseline", 1, {"namespaces": {}}, egress=[{"name": "d", "action": "Deny", "to": [{"namespaces": {}}]}])
    assert engine(same, low).evaluate(FRESH, FRESH2, "TCP", 1).allowed  # equal priority: by name, b before c


@pytest.mark.parametrize("spec, message", [
    ({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]},
     "spec.egress[0].to[0]: nodes is not read by verify and diff"),
    ({"tier": "Developer", "priority": 1, "subject": {"namespaces": {}}}, "spec.tier: 'Developer' is not Admin or Baseline"),
    ({"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}}, "spec.priority: not a number from 0 to 1000"),
    ({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}, "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]},
     "spec.ingress[0].action: 'Allow' is not one of Accept, Deny, Pass"),
])
def test_what_the_engine_cannot_read_is_one_line_and_exit_2(tmp_path, spec, message):
    import yaml

    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                                                     "metadata": {"name": "x"}, "spec": spec}))
    with pytest.raises(PolicyError, match="ClusterNetworkPolicy x") as err:
        load_policies([tmp_path])
    assert message in str(err.value)
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "verify", "--policies", str(tmp_path), "--inventory",
                        str(ROOT / "captures" / "guestbook" / "inventory.yaml"), "--flows", str(ROOT / "tests" / "cases" / "_inputs" / "guestbook.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr


def _generate(tmp_path, *extra):
    out = tmp_path / "policies"
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "generate", "--flows", str(ROOT / "tests" / "cases" / "_inputs" / "guestbook.jsonl"),
                        "--inventory", str(ROOT / "captures" / "guestbook" / "inventory.yaml"), "-o", str(out), *extra],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_the_generated_baseline_is_read_and_verifies(tmp_path):
    out = _generate(tmp_path, "--cluster-baseline")
    policies = load_policies([out])
    assert [c.name for c in policies.cluster] == ["cluster-baseline"] and policies.cluster[0].tier == "Baseline"
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "verify", "--policies", str(out), "--inventory",
                        str(ROOT / "captures" / "guestbook" / "inventory.yaml"), "--flows", str(ROOT / "tests" / "cases" / "_inputs" / "guestbook.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "are allowed" in r.stdout, r.stdout + r.stderr


def test_diff_probes_every_pair_when_the_cluster_policies_change(tmp_path):
    # With kube-system not excluded, the baseline would deny the cluster DNS its ingress: diff says so.
    out = _generate(tmp_path, "--cluster-baseline", "--baseline-exclude", "nobody")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "guestbook.yaml").write_text((out / "guestbook.yaml").read_text())
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "diff", str(plain), str(out), "--inventory", str(ROOT / "captures" / "guestbook" / "inventory.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "Denied now, allowed before" in r.stdout and "guestbook/Deployment/api -> kube-system/Deployment/coredns UDP/53" in r.stdout
    assert "Allowed now" not in r.stdout
