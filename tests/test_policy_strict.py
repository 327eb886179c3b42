"""An invalid NetworkPolicy is one error line with the file, the document and the field path: a
table of mutations of a valid policy, each run through ``netpol-learn verify`` (exit code 2, one
line on stderr, no traceback) and ``load_policies`` (``PolicyError``).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netpol_learn._errors import PolicyError
from netpol_learn._semantics import load_policies

ROOT = Path(__file__).resolve().parent.parent
GUESTBOOK = ROOT / "captures" / "guestbook"

VALID = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "api", "namespace": "guestbook", "labels": {"team": "shop"}},
    "spec": {
        "podSelector": {"matchLabels": {"app": "guestbook", "tier": "api"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "ui"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}],
        "egress": [
            {"to": [{"podSelector": {"matchLabels": {"tier": "db"}}}], "ports": [{"protocol": "TCP", "port": "postgres"}]},
            {"to": [{"ipBlock": {"cidr": "10.96.0.0/12", "except": ["10.96.0.0/16"]}}],
             "ports": [{"protocol": "TCP", "port": 5000, "endPort": 5100}]},
            {"to": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}],
             "ports": [{"protocol": "UDP", "port": 53}]},
        ],
    },
}


def spec(d):
    return d["spec"]


def ingress_port(d):
    return d["spec"]["ingress"][0]["ports"][0]


def range_port(d):
    return d["spec"]["egress"][1]["ports"][0]


def ip_block(d):
    return d["spec"]["egress"][1]["to"][0]["ipBlock"]


def ns_requirement(d):
    return d["spec"]["egress"][2]["to"][0]["namespaceSelector"]["matchExpressions"][0]


def setitem(target, key, value):
    target[key] = value


# id: (mutation of the policy, what the error says after "<file>: document 1 (NetworkPolicy api): ")
MUTATIONS = {
    "port-70000": (lambda d: setitem(ingress_port(d), "port", 70000),
                   "spec.ingress[0].ports[0].port: 70000 is not a port number (1-65535)"),
    "port-0": (lambda d: setitem(ingress_port(d), "port", 0), "spec.ingress[0].ports[0].port: 0 is not a port number (1-65535)"),
    "port-boolean": (lambda d: setitem(ingress_port(d), "port", True), "spec.ingress[0].ports[0].port: not a number or a name"),
    "port-quoted-number": (lambda d: setitem(ingress_port(d), "port", "8080"),
                           "spec.ingress[0].ports[0].port: '8080' is not a port name (up to 15 of a-z, 0-9 and '-', a letter among them)"),
    "port-name-upper-case": (lambda d: setitem(ingress_port(d), "port", "HTTP"),
                             "spec.ingress[0].ports[0].port: 'HTTP' is not a port name (up to 15 of a-z, 0-9 and '-', a letter among them)"),
    "end-port-below-port": (lambda d: setitem(range_port(d), "endPort", 4000), "spec.egress[1].ports[0].endPort: 4000 is below port 5000"),
    "end-port-above-65535": (lambda d: setitem(range_port(d), "endPort", 70000),
                             "spec.egress[1].ports[0].endPort: 70000 is not a port number (1-65535)"),
    "end-port-string": (lambda d: setitem(range_port(d), "endPort", "5100"), "spec.egress[1].ports[0].endPort: not a number"),
    "end-port-with-named-port": (lambda d: setitem(range_port(d), "port", "http"), "spec.egress[1].ports[0].endPort: needs a numeric port"),
    "in-without-values": (lambda d: spec(d)["podSelector"]["matchExpressions"][0].pop("values"),
                          "spec.podSelector.matchExpressions[0].values: In needs at least one value"),
    "in-with-empty-values": (lambda d: setitem(spec(d)["podSelector"]["matchExpressions"][0], "values", []),
                             "spec.podSelector.matchExpressions[0].values: In needs at least one value"),
    "exists-with-values": (lambda d: setitem(ns_requirement(d), "values", ["guestbook"]),
                           "spec.egress[2].to[0].namespaceSelector.matchExpressions[0].values: Exists takes no values"),
    "values-string": (lambda d: setitem(spec(d)["podSelector"]["matchExpressions"][0], "values", "api"),
                      "spec.podSelector.matchExpressions[0].values: not a list of strings"),
    "requirement-without-key": (lambda d: ns_requirement(d).pop("key"),
                                "spec.egress[2].to[0].namespaceSelector.matchExpressions[0].key: missing"),
    "match-expressions-mapping": (lambda d: setitem(spec(d)["podSelector"], "matchExpressions", {"key": "tier"}),
                                  "spec.podSelector.matchExpressions: not a list"),
    "except-outside-cidr": (lambda d: setitem(ip_block(d), "except", ["192.168.0.0/16"]),
                            "spec.egress[1].to[0].ipBlock.except[0]: 192.168.0.0/16 is not inside cidr 10.96.0.0/12"),
    "except-is-the-cidr": (lambda d: setitem(ip_block(d), "except", ["10.96.0.0/12"]),
                           "spec.egress[1].to[0].ipBlock.except[0]: 10.96.0.0/12 is not inside cidr 10.96.0.0/12"),
    "except-other-family": (lambda d: setitem(ip_block(d), "except", ["fd00::/64"]),
                            "spec.egress[1].to[0].ipBlock.except[0]: fd00::/64 is not inside cidr 10.96.0.0/12"),
    "except-not-a-cidr": (lambda d: setitem(ip_block(d), "except", ["10.96.0.0/99"]),
                          "spec.egress[1].to[0].ipBlock.except[0]: '10.96.0.0/99' is not a CIDR"),
    "except-string": (lambda d: setitem(ip_block(d), "except", "10.96.0.0/16"), "spec.egress[1].to[0].ipBlock.except: not a list"),
    "cidr-not-a-cidr": (lambda d: setitem(ip_block(d), "cidr", "10.96.0.0/40"), "spec.egress[1].to[0].ipBlock.cidr: '10.96.0.0/40' is not a CIDR"),
    "cidr-missing": (lambda d: ip_block(d).pop("cidr"), "spec.egress[1].to[0].ipBlock.cidr: missing"),
    "ip-block-string": (lambda d: setitem(d["spec"]["egress"][1]["to"][0], "ipBlock", "10.96.0.0/12"),
                        "spec.egress[1].to[0].ipBlock: not a mapping"),
    "policy-types-string": (lambda d: setitem(spec(d), "policyTypes", "Ingress"), "spec.policyTypes: not a list"),
    "match-labels-list": (lambda d: setitem(spec(d)["podSelector"], "matchLabels", ["app=guestbook"]),
                          "spec.podSelector.matchLabels: not a mapping"),
    "match-labels-number": (lambda d: setitem(spec(d)["podSelector"]["matchLabels"], "tier", 1),
                            "spec.podSelector.matchLabels.tier: not a string"),
    "peer-match-labels-list": (lambda d: setitem(d["spec"]["ingress"][0]["from"][0]["podSelector"], "matchLabels", ["tier=ui"]),
                               "spec.ingress[0].from[0].podSelector.matchLabels: not a mapping"),
    "spec-string": (lambda d: setitem(d, "spec", "podSelector: {}"), "spec: not a mapping"),
    "ingress-mapping": (lambda d: setitem(spec(d), "ingress", {"from": []}), "spec.ingress: not a list"),
    "rule-string": (lambda d: setitem(spec(d), "ingress", ["from ui"]), "spec.ingress[0]: not a mapping"),
    "from-mapping": (lambda d: setitem(spec(d)["ingress"][0], "from", {"podSelector": {}}), "spec.ingress[0].from: not a list"),
    "ports-mapping": (lambda d: setitem(spec(d)["ingress"][0], "ports", {"port": 8080}), "spec.ingress[0].ports: not a list"),
    "metadata-labels-list": (lambda d: setitem(d["metadata"], "labels", ["team=shop"]), "metadata.labels: not a mapping"),
    "name-missing": (lambda d: d["metadata"].pop("name"), "metadata.name: missing"),
}
#: Where the policy's name cannot be read, the document says "NetworkPolicy ?".
NAMELESS = {"name-missing"}


def policy_dir(tmp_path: Path, case: str | None) -> Path:
    doc = copy.deepcopy(VALID)
    if case is not None:
        MUTATIONS[case][0](doc)
    out = tmp_path / "policies"
    out.mkdir()
    (out / "api.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def expected(policies: Path, case: str) -> str:
    name = "?" if case in NAMELESS else "api"
    return f"{policies / 'api.yaml'}: document 1 (NetworkPolicy {name}): {MUTATIONS[case][1]}"


@pytest.fixture(scope="session")
def flows(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flows") / "flows.jsonl"
    subprocess.run([sys.executable, "-m", "netpol_learn", "capture", str(GUESTBOOK / "capture.pcap"), "-o", str(out)],
                   check=True, capture_output=True)
    return out


def verify(policies: Path, flows: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netpol_learn", "verify", "--policies", str(policies),
                           "--inventory", str(GUESTBOOK / "inventory.yaml"), "--flows", str(flows)], capture_output=True, text=True)


def test_the_valid_policy_verifies(tmp_path, flows):
    r = verify(policy_dir(tmp_path, None), flows)
    assert r.returncode == 0 and "error:" not in r.stderr, r.stderr  # loads, and allows all it selects
    assert r.stdout.startswith("All 4 observed connections are allowed."), r.stdout
    assert len(load_policies([tmp_path / "policies"])) == 1


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_an_invalid_policy_is_exit_2_and_one_line_with_its_path(tmp_path, flows, case):
    policies = policy_dir(tmp_path, case)
    r = verify(policies, flows)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"error: {expected(policies, case)}"]
    assert r.stdout == ""


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_an_invalid_policy_is_a_policy_error(tmp_path, case):
    policies = policy_dir(tmp_path, case)
    with pytest.raises(PolicyError) as info:
        load_policies([policies])
    assert str(info.value) == expected(policies, case)


def test_metadata_not_a_mapping_is_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**VALID, "metadata": "api"}), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    assert str(info.value) == f"{path}: document 1 (NetworkPolicy ?): metadata: not a mapping"


def test_a_list_whose_items_are_not_a_list_is_an_error(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": VALID}), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies([path])
    assert str(info.value) == f"{path}: document 1 (List): items: not a list"
