"""The pieces of synthesis, verify and diff, each from hand-built inputs.

``synthesize`` is three steps: ``gather_traffic`` (resolved connections -> per-workload ingress
and egress sides, DNS per namespace, what was skipped), ``workload_policy`` (one workload's traffic
-> its policy) and ``namespace_policies`` (default-deny, allow-dns). These tests check a rule of
each step by itself; tests/test_synthesize.py checks the whole from an inventory and flows.
"""

from __future__ import annotations

import pytest

import k8s
from netpol_learn._generate import cluster_ranges
from netpol_learn._inventory import Inventory, LabelSelector, Node, Workload, load_inventory
from netpol_learn._policy import IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule
from netpol_learn._resolve import EXTERNAL, NODE, POD, UNRESOLVED, Connection, Peer, Report, Resolution, peer_label, workload_label
from netpol_learn._semantics import isolates
from netpol_learn._verify import verify, verify_text
from netpol_learn._synthesize import (DnsTraffic, GenerateOptions, Side, WorkloadTraffic, gather_traffic, namespace_policies,
                                      namespace_policy_of, synthesize, workload_policy)

API = Workload("shop", "Deployment", "api", LabelSelector((("app", "api"),)), ("api-1",))
DB = Workload("shop", "StatefulSet", "db", LabelSelector((("app", "db"),)), ("db-0",))
UI = Workload("web", "Deployment", "ui", LabelSelector((("app", "ui"),)), ("ui-1",))
BARE = Workload("shop", "Pod", "bare", None, ("bare",))  # no label a selector could use
COREDNS = Workload("kube-system", "Deployment", "coredns", LabelSelector((("k8s-app", "kube-dns"),)), ("coredns-1",))
WORKLOADS = {w.key: w for w in (API, DB, UI, BARE, COREDNS)}


def pod(w: Workload, **kw) -> Peer:
    return Peer(POD, "", namespace=w.namespace, workload=w.ref, **kw)


DNS_POD = pod(COREDNS, cluster_dns=True)
GITHUB = Peer(EXTERNAL, "140.82.112.3", names=("api.github.com",))


def conn(client: Peer, server: Peer, port: int | None = 8080, protocol: str = "TCP", *, flows: int = 1, at: int = 100,
         same_node: bool = False, port_name: str | None = None) -> Connection:
    return Connection(client, server, protocol, port, port_name, None, flows, 10 * flows, 1000 * flows, flows, at, at + 5, same_node)


def resolution(*connections: Connection) -> Resolution:
    return Resolution(tuple(connections), Report({}, (), (), (), (), (), 0), WORKLOADS)


API_PEER = PolicyPeer(pod_selector=API.selector)
UI_PEER = PolicyPeer(pod_selector=UI.selector, namespace_selector=LabelSelector((("kubernetes.io/metadata.name", "web"),)))


# --- gathering -----------------------------------------------------------------------------


def test_a_connection_lands_on_the_servers_ingress_and_the_clients_egress():
    t = gather_traffic(resolution(conn(pod(API), pod(DB), 5432, flows=2), conn(pod(UI), pod(API), 8080, at=50)))
    assert sorted(t.workloads) == [API.key, DB.key, UI.key]
    db, api = t.workloads[DB.key], t.workloads[API.key]
    assert dict(db.ingress.ports) == {API_PEER: {PortSpec("TCP", 5432)}} and not db.egress.ports
    assert db.ingress.comments == {API_PEER: "Deployment/api"}
    assert dict(api.ingress.ports) == {UI_PEER: {PortSpec("TCP", 8080)}}
    assert api.ingress.comments == {UI_PEER: "web/Deployment/ui"}  # another namespace: named with it
    assert dict(api.egress.ports) == {PolicyPeer(pod_selector=DB.selector): {PortSpec("TCP", 5432)}}
    assert (api.flows, api.first, api.last) == (3, 50, 105)  # both directions: the workload's window
    assert t.flows_per_namespace == {"shop": 3, "web": 1}  # shop once, though both ends are in it
    assert not t.skipped and not t.dns


def test_only_the_directions_the_options_isolate_are_gathered():
    t = gather_traffic(resolution(conn(pod(API), pod(DB), 5432)), GenerateOptions(default_deny="ingress"))
    assert dict(t.workloads[DB.key].ingress.ports) and not t.workloads[API.key].egress.ports
    assert t.workloads[API.key].flows == 0  # seen, but only as a client: its egress stays open


def test_what_cannot_become_a_rule_is_skipped_with_the_reason():
    t = gather_traffic(resolution(
        conn(pod(API), pod(DB), None, "ICMP"),
        conn(pod(BARE), pod(DB), 5432),
        conn(Peer(UNRESOLVED, "10.244.9.9", reason="held by no known pod"), pod(API)),
    ))
    assert sorted(t.skipped) == [
        "ingress of shop/Deployment/api from unresolved 10.244.9.9: unresolved (held by no known pod); no rule",
        "ingress of shop/StatefulSet/db from shop/Pod/bare: its pods share no label a selector could use; no rule",
        "shop/Deployment/api -> shop/StatefulSet/db ICMP: NetworkPolicy cannot express ICMP",
        "shop/Pod/bare: its pods share no label a selector could use; no policy for it",
    ]
    assert BARE.key not in t.workloads


def test_kubelet_probes_from_the_own_node_and_excluded_namespaces_are_left_out():
    node = Peer(NODE, "172.18.0.2", node="node-a")
    t = gather_traffic(resolution(conn(node, pod(API), same_node=True), conn(pod(COREDNS), pod(API), 9153)))
    assert list(t.workloads) == [API.key]  # kube-system's coredns is a peer, never a policy of its own
    assert dict(t.workloads[API.key].ingress.ports) == {PolicyPeer(pod_selector=COREDNS.selector, namespace_selector=LabelSelector(
        (("kubernetes.io/metadata.name", "kube-system"),))): {PortSpec("TCP", 9153)}}


def test_dns_marks_the_client_and_its_namespace_even_for_a_workload_no_selector_picks():
    t = gather_traffic(resolution(conn(pod(API), DNS_POD, 53, "UDP"), conn(pod(BARE), DNS_POD, 53, "UDP")))
    api = t.workloads[API.key]
    assert api.dns and not api.egress.ports  # DNS is not an ordinary egress rule
    assert list(t.dns) == ["shop"]
    assert t.dns["shop"].ports == {PortSpec("UDP", 53), PortSpec("TCP", 53)}  # TCP too, for large answers
    assert list(t.dns["shop"].peers.values()) == ["kube-system/Deployment/coredns"]


def test_outside_sources_are_counted_per_port_for_open_ingress():
    sources = [Peer(EXTERNAL, f"203.0.113.{i}") for i in range(1, 4)]
    t = gather_traffic(resolution(*(conn(s, pod(API), 443) for s in sources)))
    side = t.workloads[API.key].ingress
    assert side.external_sources == {PortSpec("TCP", 443): {s.address for s in sources}}
    assert side.external == {PolicyPeer(ip_block=IpBlock(f"{s.address}/32")) for s in sources}


# --- one workload's policy -------------------------------------------------------------------


def traffic_of(w: Workload, ingress: dict | None = None, egress: dict | None = None, dns: bool = False) -> WorkloadTraffic:
    t = WorkloadTraffic(w, flows=4, first=1_000_000_000, last=2_000_000_000, dns=dns)
    for side, wanted in ((t.ingress, ingress or {}), (t.egress, egress or {})):
        for peer, ports in wanted.items():
            for port in ports:
                side.add(peer, port, f"comment of {peer.pod_selector.match_labels[0][1] if peer.pod_selector else peer.ip_block.cidr}")
    return t


def test_peers_with_the_same_ports_share_a_rule_and_a_peers_ports_are_one_list():
    a, b, c = (PolicyPeer(pod_selector=LabelSelector((("app", n),))) for n in "abc")
    t = traffic_of(API, ingress={a: [PortSpec("TCP", 80), PortSpec("TCP", 443)], b: [PortSpec("TCP", 443), PortSpec("TCP", 80)],
                                 c: [PortSpec("UDP", 53)]})
    policy, hints = workload_policy(t, "api")
    assert not hints
    assert [([p.pod_selector.match_labels for p in r.peers], r.ports) for r in policy.ingress] == [
        ([(("app", "a"),), (("app", "b"),)], (PortSpec("TCP", 80), PortSpec("TCP", 443))),
        ([(("app", "c"),)], (PortSpec("UDP", 53),)),
    ]
    assert [p.comment for p in policy.ingress[0].peers] == ["comment of a", "comment of b"]
    assert policy.policy_types == ("Ingress",) and policy.egress is None
    assert policy.annotations == (("netpol-learn.io/flows", "4"),
                                  ("netpol-learn.io/observed", "1970-01-01T00:00:01.000000Z/1970-01-01T00:00:02.000000Z"),
                                  ("netpol-learn.io/workload", "Deployment/api"))
    assert (policy.name, policy.namespace, policy.pod_selector) == ("api", "shop", API.selector)


DNS_RULE = DnsTraffic({PolicyPeer(pod_selector=COREDNS.selector): "dns"}, {PortSpec("UDP", 53)}).rule()


def test_the_dns_rule_goes_first_and_only_where_the_policy_isolates_egress():
    db = PolicyPeer(pod_selector=DB.selector)
    with_egress = traffic_of(API, egress={db: [PortSpec("TCP", 5432)]}, dns=True)
    policy, _ = workload_policy(with_egress, "api", GenerateOptions(default_deny="none", dns="per-workload"), dns=DNS_RULE)
    assert policy.egress[0] is DNS_RULE and len(policy.egress) == 2
    # Only DNS seen, and default-deny leaves egress open: no policy (open egress needs no DNS rule).
    only_dns = traffic_of(API, dns=True)
    assert workload_policy(only_dns, "api", GenerateOptions(default_deny="none", dns="per-workload"), dns=DNS_RULE) == (None, ())
    # ... but where default-deny isolates every pod's egress, the DNS rule is needed.
    policy, _ = workload_policy(only_dns, "api", GenerateOptions(dns="per-workload"), dns=DNS_RULE)
    assert policy.policy_types == ("Egress",) and policy.egress == (DNS_RULE,)


def test_the_conventional_coredns_labels_stand_in_when_the_dns_pods_are_unknown():
    rule = DnsTraffic({}, {PortSpec("UDP", 53), PortSpec("TCP", 53)}).rule()
    assert [p.to_dict() for p in rule.peers] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                                  "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert rule.ports == (PortSpec("TCP", 53), PortSpec("UDP", 53))


def test_many_outside_sources_are_a_hint_or_with_the_option_one_open_rule():
    t = WorkloadTraffic(API, flows=1, first=0, last=0)
    for i in range(1, 13):
        peer = PolicyPeer(ip_block=IpBlock(f"203.0.113.{i}/32"))
        t.ingress.add(peer, PortSpec("TCP", 443), "outside the cluster")
        t.ingress.external_sources[PortSpec("TCP", 443)].add(f"203.0.113.{i}")
        t.ingress.external.add(peer)
    policy, hints = workload_policy(t, "api")
    assert len(policy.ingress[0].peers) == 12
    assert hints == ("shop/Deployment/api TCP/443 was reached from 12 outside addresses: --open-ingress-above 10 would allow any address instead",)
    policy, hints = workload_policy(t, "api", GenerateOptions(open_ingress_above=5), cluster_ranges=("10.244.0.0/16", "fd00::/48"))
    assert not hints
    assert [p.ip_block for p in policy.ingress[0].peers] == [IpBlock("0.0.0.0/0", ("10.244.0.0/16",)), IpBlock("::/0", ("fd00::/48",))]


def test_aggregation_collapses_a_rules_outside_addresses_into_their_prefix():
    t = WorkloadTraffic(API, flows=1, first=0, last=0)
    for i in range(1, 4):
        peer = PolicyPeer(ip_block=IpBlock(f"198.51.100.{i}/32"))
        t.egress.add(peer, PortSpec("TCP", 443), f"host{i}.example")
        t.egress.external.add(peer)
    policy, _ = workload_policy(t, "api", GenerateOptions(aggregate_prefix=24, aggregate_threshold=3))
    assert [(p.ip_block, p.comment) for p in policy.egress[0].peers] == [
        (IpBlock("198.51.100.0/24"), "3 outside addresses: host1.example, host2.example, host3.example")]
    assert len(workload_policy(t, "api", GenerateOptions(aggregate_prefix=24, aggregate_threshold=4))[0].egress[0].peers) == 3


# --- a namespace's policies ------------------------------------------------------------------


@pytest.mark.parametrize("default_deny, dns, want", [
    ("both", "namespace", [("shop", "allow-dns", ("Egress",)), ("shop", "default-deny", ("Ingress", "Egress")),
                           ("web", "default-deny", ("Ingress", "Egress"))]),
    ("both", "per-workload", [("shop", "default-deny", ("Ingress", "Egress")), ("web", "default-deny", ("Ingress", "Egress"))]),
    ("ingress", "namespace", [("shop", "default-deny", ("Ingress",)), ("web", "default-deny", ("Ingress",))]),  # egress open: no DNS
    ("egress", "namespace", [("shop", "allow-dns", ("Egress",)), ("shop", "default-deny", ("Egress",)), ("web", "default-deny", ("Egress",))]),
    ("none", "namespace", []),
])
def test_namespace_policies_follow_the_default_deny_option(default_deny, dns, want):
    got = namespace_policies(["web", "shop"], {"shop": DnsTraffic({}, {PortSpec("UDP", 53)})}, GenerateOptions(default_deny=default_deny, dns=dns))
    assert sorted((p.namespace, p.name, p.policy_types) for p in got) == want
    assert all(p.pod_selector.empty for p in got)


def test_a_namespace_policy_is_known_by_its_prefixed_name_and_empty_selector():
    every = LabelSelector()
    assert namespace_policy_of(NetworkPolicy("shop", "learned-default-deny", every, ("Ingress",)), "learned-") == "default-deny"
    assert namespace_policy_of(NetworkPolicy("shop", "learned-allow-dns", every, ("Egress",)), "learned-") == "allow-dns"
    assert namespace_policy_of(NetworkPolicy("shop", "default-deny", every, ("Ingress",)), "learned-") is None
    # A workload named default-deny gets another name anyway, but its selector tells it apart too.
    assert namespace_policy_of(NetworkPolicy("shop", "default-deny", API.selector, ("Ingress",))) is None


def test_synthesize_is_the_three_steps():
    res = resolution(conn(pod(API), pod(DB), 5432), conn(pod(API), DNS_POD, 53, "UDP"), conn(pod(API), GITHUB, 443))
    got = synthesize(res, GenerateOptions(name_prefix="x-"))
    assert [(p.namespace, p.name) for p in got.policies] == [
        ("shop", "x-default-deny"), ("shop", "x-allow-dns"), ("shop", "x-api"), ("shop", "x-db")]
    assert [p.name for p in got.workload_policies] == ["x-api", "x-db"]
    assert got.flows_per_namespace == {"shop": 3}
    api = got.policies[2]
    assert [(peer.ip_block, peer.comment) for peer in api.egress[1].peers] == [(IpBlock("140.82.112.3/32"), "api.github.com")]


# --- names, and the helpers verify and diff share -------------------------------------------


def test_peer_and_workload_labels():
    assert workload_label(API) == "shop/Deployment/api"
    assert peer_label(pod(API)) == "shop/Deployment/api"
    assert peer_label(GITHUB) == "external 140.82.112.3"


def test_isolates_needs_the_namespace_the_selector_and_the_direction():
    p = NetworkPolicy("shop", "api", API.selector, ("Ingress",), ingress=(Rule(),))
    assert isolates(p, "shop", {"app": "api", "x": "y"}, "Ingress")
    assert not isolates(p, "shop", {"app": "api"}, "Egress")
    assert not isolates(p, "web", {"app": "api"}, "Ingress")
    assert not isolates(p, "shop", {"app": "db"}, "Ingress")


def test_cluster_ranges_write_node_addresses_as_policies_do():
    """A node address spelled another way in the inventory (``FD00:0::0001``) is the same /128 the
    node's own peers use, so an open ingress rule's ``except`` never lists it differently."""
    inv = Inventory(nodes=(Node("a", ("172.18.0.2", "FD00:0::0001"), ()), Node("b", ("fd00::1",), ())),
                    pod_cidrs=("10.244.0.0/16",), service_cidrs=("10.96.0.0/12",))
    assert cluster_ranges(inv) == ("10.244.0.0/16", "10.96.0.0/12", "172.18.0.2/32", "fd00::1/128")


def test_verify_names_a_protocol_without_ports_by_itself(tmp_path):
    """Not ``ICMP/None``: the line reads like the one REPORT.md writes for the same connection."""
    items = [k8s.namespace("shop"), k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"),
             k8s.pod("a", "shop", "10.244.0.20", labels={"app": "a"}), k8s.pod("b", "shop", "10.244.0.21", labels={"app": "b"})]
    inventory = load_inventory([k8s.write_list(tmp_path, items)])
    r = verify(k8s.log(k8s.flow("10.244.0.20", "10.244.0.21", None, "ICMP")), inventory, [])
    assert r.not_evaluated == ("shop/Pod/a -> shop/Pod/b ICMP: NetworkPolicy cannot express ICMP",)
    assert verify_text(r).endswith("Not evaluated (1):\n  shop/Pod/a -> shop/Pod/b ICMP: NetworkPolicy cannot express ICMP\n")
