"""The policy judge (tests/policy_judge.py) against answers known from the Kubernetes docs.

Each case is a small cluster (tests/k8s.py, in kubectl's shape) and NetworkPolicy YAML written
here; the expected connections are worked out by hand from the NetworkPolicy concept page
(kubernetes.io/docs/concepts/services-networking/network-policies/), not from NCA's output:
- a pod is isolated for ingress (egress) once any policy selecting it has Ingress (Egress) in its
  policyTypes; then only what some policy's rules allow gets in (out); with no policy, everything;
- a podSelector peer alone selects pods in the policy's own namespace; namespaceSelector and
  podSelector in one peer element mean "these pods in those namespaces", in two elements "all
  pods of those namespaces, or these pods here";
- ipBlock selects addresses in cidr and not in except;
- a named port is the destination pod's container port of that name.

The cluster: namespaces shop (team=shop) and ops (team=ops);
  shop/Deployment/web   2 pods, app=web tier=front, port http=8080  (ReplicaSet and Deployment known)
  shop/Deployment/api   app=api role=client tier=front, port http=9090 (ReplicaSet missing: inferred)
  shop/StatefulSet/db   app=db, port pg=5432
  ops/Deployment/mon    app=mon role=client, port metrics=9100
  ops/Pod/debug         a bare pod, run=debug
Connections are (source, destination, protocol, port); a workload's connection to itself counts.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import k8s  # noqa: E402
from policy_judge import (  # noqa: E402
    Connection,
    PolicyJudgeError,
    allowed_connections,
    judge,
    nca_report,
    validate_documents,
)

WEB, API, DB = "shop/Deployment/web", "shop/Deployment/api", "shop/StatefulSet/db"
MON, DEBUG = "ops/Deployment/mon", "ops/Pod/debug"
SHOP, OPS = [WEB, API, DB], [MON, DEBUG]
WORKLOADS = SHOP + OPS
PORTS = [("TCP", 443), ("TCP", 5432), ("TCP", 8080), ("TCP", 9090), ("UDP", 53)]


def namespace(name: str, **labels: str) -> dict:
    ns = k8s.namespace(name)
    ns["metadata"]["labels"].update(labels)
    return ns


def rs_pod(name: str, ns: str, rs: str, ip: str, labels: dict, ports=()) -> dict:
    pod_hash = rs.rsplit("-", 1)[1]
    return k8s.pod(name, ns, ip, labels={**labels, "pod-template-hash": pod_hash}, owner=("ReplicaSet", rs), ports=ports)


def cluster() -> list[dict]:
    return [
        namespace("shop", team="shop"),
        namespace("ops", team="ops"),
        k8s.deployment("web", "shop", {"app": "web"}),
        k8s.replicaset("web-5f7d9c6b8d", "shop", {"app": "web"}, owner=("Deployment", "web")),
        rs_pod("web-5f7d9c6b8d-abcde", "shop", "web-5f7d9c6b8d", "10.244.1.10", {"app": "web", "tier": "front"},
               [("http", 8080, "TCP")]),
        rs_pod("web-5f7d9c6b8d-fghij", "shop", "web-5f7d9c6b8d", "10.244.2.10", {"app": "web", "tier": "front"},
               [("http", 8080, "TCP")]),
        rs_pod("api-6c8b7d9f4-klmno", "shop", "api-6c8b7d9f4", "10.244.1.11",
               {"app": "api", "role": "client", "tier": "front"}, [("http", 9090, "TCP")]),
        k8s.statefulset("db", "shop", {"app": "db"}),
        k8s.pod("db-0", "shop", "10.244.1.12", labels={"app": "db", "statefulset.kubernetes.io/pod-name": "db-0"},
                owner=("StatefulSet", "db"), ports=[("pg", 5432, "TCP")]),
        k8s.replicaset("mon-7d8f9b6c5", "ops", {"app": "mon"}, owner=("Deployment", "mon")),
        rs_pod("mon-7d8f9b6c5-pqrst", "ops", "mon-7d8f9b6c5", "10.244.2.20", {"app": "mon", "role": "client"},
               [("metrics", 9100, "TCP")]),
        k8s.pod("debug", "ops", "10.244.2.21", labels={"run": "debug"}),
    ]


def coredns() -> list[dict]:
    return [namespace("kube-system"),
            k8s.replicaset("coredns-5d78c9869d", "kube-system", {"k8s-app": "kube-dns"}, owner=("Deployment", "coredns"))] + [
        rs_pod(f"coredns-5d78c9869d-{s}", "kube-system", "coredns-5d78c9869d", ip, {"k8s-app": "kube-dns"},
               [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")])
        for s, ip in (("aaaaa", "10.244.0.2"), ("bbbbb", "10.244.0.3"))]


def policy(name: str, ns: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def write(tmp_path: Path, *docs: dict, name: str = "policies.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def pairs(srcs, dsts, ports=PORTS) -> set[Connection]:
    return {Connection(s, d, p, n) for s in srcs for d in dsts for p, n in ports}


def everything(endpoints=WORKLOADS, external=(), ports=PORTS) -> set[Connection]:
    """All connections among endpoints, except outside-to-outside (which NCA does not model)."""
    every = pairs(list(endpoints) + list(external), list(endpoints) + list(external), ports)
    return {c for c in every if not (c.src in external and c.dst in external)}


DEFAULT_DENY_INGRESS = policy("default-deny-ingress", "shop", {"podSelector": {}, "policyTypes": ["Ingress"]})
DEFAULT_DENY_EGRESS = policy("default-deny-egress", "shop", {"podSelector": {}, "policyTypes": ["Egress"]})


# --- known answers -------------------------------------------------------------------------


def test_no_policies_allow_everything():
    external = {"internet": "203.0.113.10"}
    verdict = judge([], cluster(), PORTS, external=external)
    assert verdict.allowed == everything(external=external)
    assert not verdict.partial
    # Workloads named after the top of the owner chain; the Deployment/StatefulSet/ReplicaSet
    # objects in the inventory add no made-up pods.
    assert verdict.workloads == {
        WEB: ("shop/web-5f7d9c6b8d-abcde", "shop/web-5f7d9c6b8d-fghij"),
        API: ("shop/api-6c8b7d9f4-klmno",),
        DB: ("shop/db-0",),
        MON: ("ops/mon-7d8f9b6c5-pqrst",),
        DEBUG: ("ops/debug",),
    }


def test_default_deny_ingress_isolates_one_namespace(tmp_path):
    external = {"internet": "203.0.113.10"}
    got = allowed_connections([write(tmp_path, DEFAULT_DENY_INGRESS)], cluster(), PORTS, external=external)
    # Nothing gets into shop, from anywhere, itself included; egress and ops are untouched.
    assert got == everything(external=external) - pairs(WORKLOADS + ["internet"], SHOP)


def test_allow_from_pod_selector_on_one_port(tmp_path):
    allow_clients = policy("db-from-clients", "shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"protocol": "TCP", "port": 5432}]}],
    })
    got = allowed_connections([write(tmp_path, DEFAULT_DENY_INGRESS, allow_clients)], cluster(), PORTS)
    # role=client in shop is api only: ops/mon has the label too, but a podSelector alone looks
    # in the policy's namespace; and only TCP 5432 opens.
    assert got == everything() - pairs(WORKLOADS, SHOP) | {Connection(API, DB, "TCP", 5432)}


@pytest.mark.parametrize("peers, sources", [
    pytest.param([{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                   "podSelector": {"matchLabels": {"role": "client"}}}], [MON], id="one-element-means-and"),
    pytest.param([{"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                  {"podSelector": {"matchLabels": {"role": "client"}}}], [MON, DEBUG, API], id="two-elements-mean-or"),
])
def test_namespace_and_pod_selector_in_one_peer_or_two(tmp_path, peers, sources):
    db_policy = policy("db-ingress", "shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": [{"port": 5432}]}],
    })
    got = allowed_connections([write(tmp_path, db_policy)], cluster(), PORTS)
    assert got == everything() - pairs(WORKLOADS, [DB]) | pairs(sources, [DB], [("TCP", 5432)])


def test_ip_block_egress_with_except(tmp_path):
    external = {"in-cidr": "172.17.0.5", "in-except": "172.17.1.5", "elsewhere": "203.0.113.10"}
    web_egress = policy("web-egress", "shop", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}}],
                    "ports": [{"protocol": "TCP", "port": 443}]}],
    })
    got = allowed_connections([write(tmp_path, web_egress)], cluster(), PORTS, external=external)
    # web may open TCP 443 to 172.17.0.0/16 minus 172.17.1.0/24, nothing else; others untouched.
    everyone = WORKLOADS + list(external)
    assert got == everything(external=external) - pairs([WEB], everyone) | {Connection(WEB, "in-cidr", "TCP", 443)}


def test_egress_deny_with_dns_allowed(tmp_path):
    dns = policy("allow-dns", "shop", {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
    })
    external = {"internet": "8.8.8.8"}
    ports = PORTS + [("TCP", 53)]
    coredns_workload = "kube-system/Deployment/coredns"
    got = allowed_connections([write(tmp_path, DEFAULT_DENY_EGRESS, dns)], cluster() + coredns(), ports,
                              external=external)
    everyone = WORKLOADS + [coredns_workload, "internet"]
    assert got == (everything(WORKLOADS + [coredns_workload], external, ports) - pairs(SHOP, everyone, ports)
                   | pairs(SHOP, [coredns_workload], [("UDP", 53), ("TCP", 53)]))


def test_named_port_resolves_per_destination_pod(tmp_path):
    front = policy("front-http", "shop", {
        "podSelector": {"matchLabels": {"tier": "front"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"protocol": "TCP", "port": "http"}]}],
    })
    got = allowed_connections([write(tmp_path, front)], cluster(), PORTS)
    # "http" is 8080 on web's pods and 9090 on api's: each opens its own number only.
    assert got == everything() - pairs(WORKLOADS, [WEB, API]) | pairs(WORKLOADS, [WEB], [("TCP", 8080)]) \
        | pairs(WORKLOADS, [API], [("TCP", 9090)])


# --- NCA's quirks, pinned (see the module docstring of policy_judge) ------------------------


def test_ip_block_never_selects_pods_even_over_the_pod_network(tmp_path):
    from_pod_network = policy("db-from-pod-network", "shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}],
    })
    external = {"api-pod-ip": "10.244.1.11", "internet": "203.0.113.10"}
    got = allowed_connections([write(tmp_path, from_pod_network)], cluster(), PORTS, external=external)
    assert got == everything(external=external) - pairs(WORKLOADS + ["internet"], [DB])


def test_livesim_kube_dns_pod_is_left_out(tmp_path):
    dns = policy("allow-dns", "shop", {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}]}],
    })
    verdict = judge([write(tmp_path, dns)], cluster(), PORTS)  # no kube-dns pod: NCA makes one up
    assert "kube-dns" in verdict.messages
    assert set(verdict.workloads) == set(WORKLOADS)
    assert verdict.allowed == everything() - pairs(SHOP, WORKLOADS)


def test_pods_of_one_workload_treated_differently_are_reported(tmp_path):
    inventory = cluster() + [rs_pod("web-5f7d9c6b8d-canry", "shop", "web-5f7d9c6b8d", "10.244.3.10",
                                    {"app": "web", "tier": "front", "track": "canary"}, [("http", 8080, "TCP")])]
    canary_deny = policy("canary-deny", "shop", {"podSelector": {"matchLabels": {"track": "canary"}},
                                                "policyTypes": ["Ingress"]})
    files = [write(tmp_path, canary_deny)]
    verdict = judge(files, inventory, [("TCP", 8080)])
    assert verdict.partial == pairs(WORKLOADS, [WEB], [("TCP", 8080)])
    assert Connection("shop/api-6c8b7d9f4-klmno", "shop/web-5f7d9c6b8d-abcde", "TCP", 8080) in verdict.pod_allowed
    assert Connection("shop/api-6c8b7d9f4-klmno", "shop/web-5f7d9c6b8d-canry", "TCP", 8080) not in verdict.pod_allowed
    with pytest.raises(PolicyJudgeError, match="some pods of a workload"):
        allowed_connections(files, inventory, [("TCP", 8080)])


@pytest.mark.parametrize("text, message", [
    pytest.param("kind: NetworkPolicy\nmetadata: {name: x\n", "not valid YAML", id="yaml-syntax"),
    pytest.param("kind: NetworkPolicy\nkind: NetworkPolicy\n", "duplicate key", id="duplicate-key"),
    pytest.param(yaml.safe_dump_all([DEFAULT_DENY_INGRESS, DEFAULT_DENY_INGRESS]), "also in", id="same-policy-twice"),
    pytest.param(yaml.safe_dump(policy("p", "shop", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})),
                 "no \"Ingress\" in its policyTypes", id="nca-stricter-than-kubernetes"),
])
def test_input_nca_would_skip_or_misread_is_an_error(tmp_path, text, message):
    path = tmp_path / "policies.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyJudgeError, match=re.escape(message)):
        judge([path], cluster(), PORTS)


def test_in_process_matches_the_nca_command(tmp_path):
    """The in-process answers equal `nca --connectivity ... -o txt_no_fw_rules`, pod by pod."""
    policies = write(tmp_path, DEFAULT_DENY_EGRESS, policy("mixed", "shop", {
        "podSelector": {"matchLabels": {"tier": "front"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
                     "ports": [{"port": "http"}, {"port": 5000, "endPort": 5500}]},
                    {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"protocol": "UDP", "port": 53}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                    "ports": [{"port": 443}, {"protocol": "UDP", "port": 53}]},
                   {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
    }))
    inventory = cluster()
    topology = k8s.write_list(tmp_path, [o for o in inventory if o["kind"] in ("Namespace", "Pod")])
    external = {"internet": "203.0.113.10", "private": "10.1.2.3"}
    ports = PORTS + [("TCP", 5000), ("TCP", 5501)]
    out = subprocess.run([sys.executable, "-m", "nca", "--connectivity", str(policies), "--ns_list", str(topology),
                          "--pod_list", str(topology), "--output_endpoints", "pods", "-o", "txt_no_fw_rules"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    from_command = set()
    for line in out.splitlines():
        m = re.match(r"^(\S+) => (\S+) : (.+)$", line)
        if not m:
            continue
        src, dst, conn = m.groups()
        for s in _endpoint_names(src, external):
            for d in _endpoint_names(dst, external):
                from_command |= {Connection(s, d, p, n) for p, n in ports if _conn_allows(conn, p, n)}
    verdict = judge([policies], inventory, ports, external=external)
    in_process = {c for c in verdict.pod_allowed if c.src != c.dst}  # the command leaves out a pod to itself
    assert in_process == from_command
    assert Connection("shop/web-5f7d9c6b8d-abcde", "internet", "TCP", 443) in in_process  # not a vacuous match
    assert "dst_ports:443" in nca_report([policies], inventory)  # NCA's own summary, for failure messages


def _endpoint_names(text: str, external: dict) -> list[str]:
    """A pod name as is; an address range (a-b, CIDR, or a list) as the external names inside it."""
    if "/" in text and not re.match(r"^[\d.,/-]+$", text):
        return [text]
    names = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if "/" in part:
            net = ipaddress.ip_network(part)
            lo, hi = str(net[0]), str(net[-1])
        hi = hi or lo
        names += [n for n, a in external.items()
                  if ipaddress.ip_address(lo) <= ipaddress.ip_address(a) <= ipaddress.ip_address(hi)]
    return names


def _conn_allows(conn: str, proto: str, port: int) -> bool:
    if conn == "All connections":
        return True
    cube = r"\{protocols:([A-Za-z0-9]+(?:, [A-Za-z0-9]+)*)(?:,dst_ports:([\d,-]+))?\}"
    assert re.fullmatch(rf"{cube}(?:,{cube})*", conn), f"unexpected connection text from nca: {conn!r}"
    for protos, port_ranges in re.findall(cube, conn):
        if proto in protos.split(", ") and (not port_ranges or any(
                int(r.partition("-")[0]) <= port <= int(r.partition("-")[2] or r.partition("-")[0])
                for r in port_ranges.split(","))):
            return True
    return False


def test_a_call_runs_nca_once_in_process(monkeypatch):
    """Why a call is cheap (the module docstring's costs), counted rather than timed: once NCA is
    imported, a call imports nothing more, starts no process (no `nca` command), reads its inputs
    once and computes the allowed-connection set once, however many questions it asks of that set."""
    from nca.NetworkConfig.NetworkConfig import NetworkConfig
    from nca.NetworkConfig.ResourcesHandler import ResourcesHandler

    judge([], cluster(), PORTS)  # imports whatever NCA imports lazily
    calls = {"get_network_config": 0, "allowed_connections": 0}

    def count(cls, name):
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    count(ResourcesHandler, "get_network_config")
    count(NetworkConfig, "allowed_connections")

    def no_process(*args, **kwargs):
        raise AssertionError("judge started a process")

    for module, name in ((subprocess, "Popen"), (os, "fork"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "system"),
                         (os, "execv"), (os, "execve")):
        monkeypatch.setattr(module, name, no_process)
    nca_modules = {n for n in sys.modules if n == "nca" or n.startswith("nca.")}
    verdict = judge([], cluster(), PORTS)
    assert calls == {"get_network_config": 1, "allowed_connections": 1}
    assert {n for n in sys.modules if n == "nca" or n.startswith("nca.")} == nca_modules
    # many questions were asked of that one set: every pod pair on every port (no policy: all allowed)
    pods = [p for names in verdict.workloads.values() for p in names]
    assert len(pods) >= 5 and len(verdict.pod_allowed) == len(pods) ** 2 * len(PORTS)


# --- validation ----------------------------------------------------------------------------

VALID = [
    DEFAULT_DENY_INGRESS,
    policy("db-ingress", "shop", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                               "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["client"]}]}},
                              {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}}],
                     "ports": [{"protocol": "TCP", "port": 5432}, {"port": "http"}, {"port": 32000, "endPort": 32768}]}],
        "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}]}],
    }),
]


def valid_dir(tmp_path: Path) -> Path:
    write(tmp_path, *VALID, name="shop.yaml")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- shop.yaml\n", encoding="utf-8")
    return tmp_path


def test_valid_policies_and_kustomization_pass(tmp_path):
    assert validate_documents([valid_dir(tmp_path)], "1.30") == []


@pytest.mark.parametrize("mutate, expected", [
    pytest.param(lambda d: d["spec"].__setitem__("podSelectr", d["spec"].pop("podSelector")),
                 "'podSelectr' was unexpected", id="typo-podSelectr"),
    pytest.param(lambda d: d["spec"].__setitem__("podSelector", "app=db"),
                 "spec.podSelector: 'app=db' is not of type 'object'", id="wrong-type"),
    pytest.param(lambda d: d["spec"]["ingress"][0]["ports"][0].__setitem__("port", [5432]),
                 "spec.ingress[0].ports[0].port: [5432] is not valid", id="wrong-type-int-or-string"),
    pytest.param(lambda d: d["metadata"].__setitem__("labelz", {}), "'labelz' was unexpected", id="unknown-metadata-field"),
    pytest.param(lambda d: d["spec"]["ingress"][0]["ports"][0].__setitem__("port", "5432"),
                 "'5432' is not a valid port name", id="quoted-port-number"),
    pytest.param(lambda d: d["spec"]["ingress"][0]["ports"][0].__setitem__("protocol", "tcp"),
                 "'tcp' is not one of TCP, UDP, SCTP", id="protocol-case"),
    pytest.param(lambda d: d["spec"].__setitem__("policyTypes", ["Ingres"]), "'Ingres' is not Ingress or Egress",
                 id="policy-type"),
    pytest.param(lambda d: d["spec"]["ingress"][0]["from"][1]["ipBlock"].__setitem__("except", ["10.0.0.0/8"]),
                 "must be a strict subset of 172.17.0.0/16", id="except-outside-cidr"),
    pytest.param(lambda d: d["spec"]["ingress"][0]["ports"][2].__setitem__("endPort", 31000),
                 "endPort: must be at least port", id="endPort-below-port"),
    pytest.param(lambda d: d["metadata"].pop("namespace"), "metadata.namespace: missing", id="no-namespace"),
    pytest.param(lambda d: d["metadata"].__setitem__("name", "DB_Ingress"), "not a DNS-1123 subdomain", id="bad-name"),
])
def test_invalid_policy_fails(tmp_path, mutate, expected):
    doc = yaml.safe_load(yaml.safe_dump(VALID[1]))
    mutate(doc)
    path = write(tmp_path, VALID[0], doc)
    problems = validate_documents([path], "1.30")
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"{path}: document 2 (NetworkPolicy ") for p in problems), problems


@pytest.mark.parametrize("text, expected", [
    pytest.param("apiVersion: v1\nkind: Namespace\nkind: Namespace\nmetadata: {name: x}\n", "duplicate key", id="duplicate-key"),
    pytest.param(yaml.safe_dump_all([DEFAULT_DENY_INGRESS, DEFAULT_DENY_INGRESS]), "same kind/namespace/name", id="twice"),
    pytest.param("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n", "no schema for", id="unknown-kind"),
    pytest.param("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [missing.yaml]\n",
                 "missing.yaml does not exist", id="kustomization-missing-resource"),
    pytest.param("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [shop.yaml]\n",
                 "resource: not a Kustomization field", id="kustomization-typo"),
])
def test_invalid_files_fail(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    problems = validate_documents([path])
    assert len(problems) == 1 and expected in problems[0], problems
