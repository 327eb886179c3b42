"""The Kubernetes upstream end-to-end NetworkPolicy cases, as truth tables over PolicyEngine.

The model is the one of kubernetes/test/e2e/network/netpol: namespaces x, y and z (labelled
ns=x, ns=y, ns=z, and kubernetes.io/metadata.name as the API server sets it); in each, pods a, b
and c labelled pod=a, pod=b, pod=c; every pod serves ports 80 and 81 over TCP, UDP and SCTP, one
container port each, named ``serve-<port>-<protocol>`` (serve-80-tcp, serve-81-udp, ...).

Each case is an upstream test ("should support a 'default-deny-ingress' policy", ...) with its
policies written as YAML, read with ``policy_from_dict``, and its expected connectivity written as
upstream writes it: start from a default (everything allowed, or denied) and state only the
exceptions (``expect_peer``, ``expect_all_ingress``, ``expect_all_egress``, ``expect``). The
grid is then compared, pod by pod (9 x 9), with ``PolicyEngine.evaluate``; on a failure the
message shows the expected, observed and agreement grids as upstream prints them ("." allowed,
"X" denied; in the agreement grid "." agrees, "X" differs).

Upstream tests use a per-test subset of the pods (x/a, x/b, y/a, ...); here every test runs on all
nine, so the tables state what the subset left implicit (x/c is as x/b, and so on).

Like upstream (``ignoreLoopback``), a pod's connection to itself is left out of the comparison
(CNIs differ on it); `test_loopback_is_judged_like_any_pair` pins what our engine does.

Where the Kubernetes documentation leaves a point to the implementation, the tables state our
documented choice (netpol_learn/_semantics.py): an ``ipBlock`` never matches a pod, even one whose
IP it covers. The three upstream ipBlock cases build their CIDRs from pod IPs and expect a CNI that
matches them; those tables here carry our choice, and the cells where upstream expects otherwise
are listed in the test (`UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS`). ipBlock semantics proper
(cidr, except, several blocks, IPv6) are tested on outside addresses in `test_ip_block_*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from netpol_learn._semantics import Endpoint, PolicyEngine, policy_from_dict

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP", "SCTP")
ALL_PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
NODES = {"x": "node-1", "y": "node-2", "z": "node-3"}


def pod_ip(name: str) -> str:
    ns, pod = name.split("/")
    return f"10.244.{NAMESPACES.index(ns) + 1}.{POD_NAMES.index(pod) + 10}"


def endpoint(name: str, extra_labels: dict | None = None) -> Endpoint:
    ns, pod = name.split("/")
    labels = {"pod": pod, **(extra_labels or {})}
    return Endpoint(
        address=pod_ip(name),
        namespace=ns,
        labels=tuple(sorted(labels.items())),
        named_ports=tuple((f"serve-{port}-{proto.lower()}", proto, port) for port in PORTS for proto in PROTOCOLS),
        node=NODES[ns],
        name=pod,
    )


def namespace_labels(extra: dict[str, dict] | None = None) -> dict[str, dict]:
    return {ns: {"ns": ns, **((extra or {}).get(ns, {}))} for ns in NAMESPACES}


def engine(policy_yaml: str, ns_extra: dict[str, dict] | None = None) -> PolicyEngine:
    docs = [d for d in yaml.safe_load_all(policy_yaml) if d]
    return PolicyEngine([policy_from_dict(d) for d in docs], namespace_labels(ns_extra))


def policy(name: str, namespace: str, spec: str) -> str:
    """One NetworkPolicy document; spec is the YAML under ``spec:`` (indented by 2)."""
    return f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n"


# --- truth tables ---------------------------------------------------------------------------


@dataclass
class Reachability:
    """Expected connectivity between the nine pods, as upstream's Reachability builds it."""

    default: bool
    grid: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __post_init__(self):
        self.grid = {(s, d): self.default for s in ALL_PODS for d in ALL_PODS}

    @staticmethod
    def _match(pod: str, ns: str | None, name: str | None) -> bool:
        pns, pname = pod.split("/")
        return (ns is None or ns == pns) and (name is None or name == pname)

    def expect_peer(self, allowed: bool, *, from_ns=None, from_pod=None, to_ns=None, to_pod=None) -> Reachability:
        for s, d in self.grid:
            if self._match(s, from_ns, from_pod) and self._match(d, to_ns, to_pod):
                self.grid[(s, d)] = allowed
        return self

    def expect(self, src: str, dst: str, allowed: bool) -> Reachability:
        self.grid[(src, dst)] = allowed
        return self

    def expect_all_ingress(self, pod: str, allowed: bool) -> Reachability:
        ns, name = pod.split("/")
        return self.expect_peer(allowed, to_ns=ns, to_pod=name)

    def expect_all_egress(self, pod: str, allowed: bool) -> Reachability:
        ns, name = pod.split("/")
        return self.expect_peer(allowed, from_ns=ns, from_pod=name)


def _table(title: str, cell) -> str:
    lines = [title, "        " + " ".join(f"{d:>4}" for d in ALL_PODS)]
    for s in ALL_PODS:
        lines.append(f"  {s:>4}  " + " ".join(f"{cell(s, d):>4}" for d in ALL_PODS))
    return "\n".join(lines)


def observe(eng: PolicyEngine, protocol: str, port: int, labels: dict[str, dict] | None = None) -> dict[tuple[str, str], bool]:
    eps = {p: endpoint(p, (labels or {}).get(p)) for p in ALL_PODS}
    return {(s, d): eng.evaluate(eps[s], eps[d], protocol, port).allowed for s in ALL_PODS for d in ALL_PODS}


def validate(eng: PolicyEngine, protocol: str, port: int, want: Reachability, labels: dict[str, dict] | None = None) -> None:
    got = observe(eng, protocol, port, labels)
    wrong = [(s, d) for (s, d), ok in got.items() if s != d and ok != want.grid[(s, d)]]
    if wrong:
        mark = lambda ok: "." if ok else "X"  # noqa: E731
        pytest.fail(
            f"{protocol}/{port}: {len(wrong)} of {len(ALL_PODS) * (len(ALL_PODS) - 1)} pod pairs differ (rows: from, columns: to)\n"
            + _table("expected:", lambda s, d: mark(want.grid[(s, d)])) + "\n"
            + _table("observed:", lambda s, d: mark(got[(s, d)])) + "\n"
            + _table("agreement (loopback ignored: -):", lambda s, d: "-" if s == d else mark(got[(s, d)] == want.grid[(s, d)])),
            pytrace=False,
        )


def R(default: bool = True) -> Reachability:
    return Reachability(default)


# --- the cases ------------------------------------------------------------------------------

DENY_INGRESS_X = policy("deny-ingress", "x", "  podSelector: {}\n  policyTypes: [Ingress]")


@dataclass
class Case:
    policies: str
    checks: list[tuple[str, int, Reachability]]
    ns_extra: dict | None = None


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}

    c["should support a 'default-deny-ingress' policy"] = Case(
        DENY_INGRESS_X,
        [(proto, 80, R().expect_peer(False, to_ns="x")) for proto in PROTOCOLS],
    )
    c["should support a 'default-deny-all' policy"] = Case(
        policy("deny-all", "x", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"),
        [("TCP", 80, R().expect_peer(False, to_ns="x").expect_peer(False, from_ns="x"))],
    )
    c["should enforce policy to allow traffic from pods within server namespace based on PodSelector"] = Case(
        policy("x-a-allows-x-b", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
    )
    c["should enforce policy to allow ingress traffic for a target"] = Case(
        policy("deny-all", "x", "  podSelector: {}\n  policyTypes: [Ingress]") + policy("allow-all-to-a", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: {}"""),
        [("TCP", 80, R().expect_peer(False, to_ns="x").expect_all_ingress("x/a", True))],
    )
    c["should enforce policy to allow ingress traffic from pods in all namespaces"] = Case(
        policy("allow-from-another-ns", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {}}"""),
        [("TCP", 80, R())],
    )
    c["should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector"] = Case(
        policy("allow-client-a-via-ns-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}"""),
        [("TCP", 80, R().expect_peer(False, from_ns="x", to_ns="x", to_pod="a").expect_peer(False, from_ns="z", to_ns="x", to_pod="a"))],
    )
    c["should enforce policy based on PodSelector with MatchExpressions"] = Case(
        policy("x-a-allows-x-b", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b]}]"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
    )
    c["should enforce policy based on NamespaceSelector with MatchExpressions"] = Case(
        policy("allow-ns-y-match-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: In, values: [y]}]"""),
        [("TCP", 80, R().expect_peer(False, from_ns="x", to_ns="x", to_pod="a").expect_peer(False, from_ns="z", to_ns="x", to_pod="a"))],
    )
    c["should enforce policy based on PodSelector or NamespaceSelector"] = Case(
        policy("allow-ns-y-match-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
    - podSelector: {matchLabels: {pod: b}}"""),
        [("TCP", 80, R().expect("x/a", "x/a", False).expect("x/c", "x/a", False))],
    )
    c["should enforce policy based on PodSelector and NamespaceSelector"] = Case(
        policy("allow-ns-y-podselector-and-nsselector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
      podSelector: {matchLabels: {pod: b}}"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True))],
    )
    c["should enforce policy based on Multiple PodSelectors and NamespaceSelectors"] = Case(
        policy("allow-ns-y-z-pod-b-c", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
      podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b, c]}]"""),
        [("TCP", 80, R().expect_peer(False, from_ns="x", to_ns="x", to_pod="a")
          .expect("y/a", "x/a", False).expect("z/a", "x/a", False))],
    )
    c["should enforce policy based on any PodSelectors"] = Case(
        policy("allow-ns-x-pod-b-c", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - podSelector: {matchLabels: {pod: c}}"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True).expect("x/c", "x/a", True))],
    )
    c["should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"] = Case(
        policy("allow-ns-y-pod-a-via-namespace-pod-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: a}}"""),
        [(proto, 80, R().expect_all_ingress("x/a", False).expect("y/a", "x/a", True)) for proto in PROTOCOLS],
    )
    port81 = policy("allow-client-a-via-ns-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {port: 81, protocol: TCP}""")
    only_y_to_xa = R().expect_peer(False, from_ns="x", to_ns="x", to_pod="a").expect_peer(False, from_ns="z", to_ns="x", to_pod="a")
    c["should enforce policy based on Ports"] = Case(
        port81,
        [("TCP", 81, only_y_to_xa), ("TCP", 80, R().expect_all_ingress("x/a", False)),
         ("UDP", 81, R().expect_all_ingress("x/a", False)), ("SCTP", 81, R().expect_all_ingress("x/a", False))],
    )
    for proto in ("UDP", "SCTP"):  # the UDP and SCTP contexts' variant
        c[f"{proto}: should enforce policy based on Ports"] = Case(
            port81.replace("protocol: TCP", f"protocol: {proto}"),
            [(proto, 81, only_y_to_xa), ("TCP", 81, R().expect_all_ingress("x/a", False))],
        )
    c["should enforce multiple, stacked policies with overlapping podSelectors"] = Case(
        port81 + policy("allow-client-a-via-ns-selector-80", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {port: 80, protocol: TCP}"""),
        [("TCP", 81, only_y_to_xa), ("TCP", 80, only_y_to_xa)],
    )
    c["should support allow-all policy"] = Case(
        policy("allow-all", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - {}"),
        [(proto, port, R()) for proto in PROTOCOLS for port in PORTS],
    )
    c["should allow ingress access on one named port"] = Case(
        policy("allow-all", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - ports:\n    - port: serve-81-tcp"),
        [("TCP", 81, R()), ("TCP", 80, R().expect_peer(False, to_ns="x")),
         # the name is the TCP port's; the rule's protocol defaults to TCP: UDP 81 stays closed
         ("UDP", 81, R().expect_peer(False, to_ns="x"))],
    )
    c["should allow ingress access from namespace on one named port"] = Case(
        policy("allow-client-a-via-ns-selector-80", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {port: serve-80-tcp, protocol: TCP}"""),
        [("TCP", 80, only_y_to_xa), ("TCP", 81, R().expect_all_ingress("x/a", False))],
    )
    c["should allow egress access on one named port"] = Case(
        policy("allow-egress", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - port: serve-80-tcp"),
        [("TCP", 80, R()), ("TCP", 81, R().expect_peer(False, from_ns="x")),
         ("UDP", 80, R().expect_peer(False, from_ns="x"))],
    )
    c["should enforce updated policy"] = Case(  # the policy after its update: ingress: []
        policy("allow-all-mutate-to-deny-all", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress: []"),
        [("TCP", 81, R().expect_peer(False, to_ns="x"))],
    )
    c["should deny ingress from pods on other namespaces"] = Case(
        policy("deny-empty-policy", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {}"),
        [("TCP", 80, R().expect_peer(False, from_ns="y", to_ns="x").expect_peer(False, from_ns="z", to_ns="x"))],
    )
    c["should deny egress from pods based on PodSelector"] = Case(
        policy("deny-egress-pod-a", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]"),
        [("TCP", 80, R().expect_all_egress("x/a", False))],
    )
    c["should deny egress from all pods in a namespace"] = Case(
        policy("deny-egress-ns-x", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress: []"),
        [(proto, 80, R().expect_peer(False, from_ns="x")) for proto in PROTOCOLS],
    )
    c["should work with Ingress, Egress specified together"] = Case(
        policy("allow-client-a-via-pod-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress, Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
  egress:
  - ports:
    - port: 80"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True)),
         ("TCP", 81, R().expect_all_ingress("x/a", False).expect_all_egress("x/a", False).expect("x/b", "x/a", True))],
    )
    c["should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)"] = Case(
        policy("allow-to-ns-y-pod-a", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: a}}""")
        + "".join(policy(f"allow-from-xa-on-y{p}-match-selector", "y", f"""\
  podSelector: {{matchLabels: {{pod: {p}}}}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{ns: x}}}}
      podSelector: {{matchLabels: {{pod: a}}}}""") for p in ("a", "b")),
        [("TCP", 80, R().expect_all_egress("x/a", False).expect_all_ingress("y/a", False).expect_all_ingress("y/b", False)
          .expect("x/a", "y/a", True))],
    )
    c["should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector"] = Case(
        policy("allow-to-ns-y-pod-a", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: a}}"""),
        [("TCP", 80, R().expect_all_egress("x/a", False).expect("x/a", "y/a", True))],
    )
    c["should enforce ingress policy allowing any port traffic to a server on a specific protocol"] = Case(
        policy("allow-ingress-by-proto", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports:\n    - protocol: TCP"),
        [("TCP", 80, R()), ("TCP", 81, R()), ("UDP", 80, R().expect_all_ingress("x/a", False)),
         ("SCTP", 81, R().expect_all_ingress("x/a", False))],
    )
    allow_80 = policy("allow-ingress-port-80", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - ports:\n    - port: 80")
    c["should enforce multiple ingress policies with ingress allow-all policy taking precedence"] = Case(
        allow_80 + policy("allow-ingress", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - {}"),
        [("TCP", 81, R())],
    )
    c["(first step) ingress port 80 only: port 81 blocked"] = Case(allow_80, [("TCP", 81, R().expect_peer(False, to_ns="x")), ("TCP", 80, R())])
    egress_80 = policy("allow-egress-port-80", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - port: 80")
    c["should enforce multiple egress policies with egress allow-all policy taking precedence"] = Case(
        egress_80 + policy("allow-egress", "x", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - {}"),
        [("TCP", 81, R())],
    )
    c["(first step) egress port 80 only: port 81 blocked"] = Case(egress_80, [("TCP", 81, R().expect_peer(False, from_ns="x")), ("TCP", 80, R())])
    c["should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector"] = Case(
        policy("allow-egress-for-target", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - {}")
        + policy("deny-ingress-via-label-selector", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]"),
        [("TCP", 80, R().expect_all_ingress("x/a", False))],
    )
    c["should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP"] = Case(
        DENY_INGRESS_X + policy("allow-only-sctp-ingress-on-port-81", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: SCTP}"""),
        [("TCP", 81, R().expect_peer(False, to_ns="x")),
         ("SCTP", 81, R().expect_peer(False, to_ns="x").expect_all_ingress("x/a", True))],
    )
    c["should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP"] = Case(
        policy("allow-only-sctp-ingress-on-port-80", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 80, protocol: SCTP}"""),
        [("TCP", 81, R().expect_all_ingress("x/a", False)), ("SCTP", 80, R())],
    )
    c["should not allow access by TCP when a policy specifies only UDP"] = Case(
        policy("allow-only-udp-ingress-on-port-81", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 81, protocol: UDP}"""),
        [("TCP", 81, R().expect_all_ingress("x/a", False)), ("UDP", 81, R())],
    )
    c["should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label"] = Case(
        policy("allow-client-a-via-ns-selector-for-immutable-ns-label", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}"""),
        [("TCP", 80, only_y_to_xa)],
    )
    c["should enforce policy based on NamespaceSelector with MatchExpressions using default ns label"] = Case(
        policy("allow-ns-y-match-selector-for-immutable-ns-label", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}]"""),
        [("TCP", 80, R().expect_peer(False, from_ns="x", from_pod="a", to_ns="y"))],
    )
    ns2 = policy("allow-client-a-via-ns-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns2: updated}}""")
    c["should allow ingress access from updated namespace (before the label)"] = Case(ns2, [("TCP", 80, R().expect_all_ingress("x/a", False))])
    c["should allow ingress access from updated namespace (after the label)"] = Case(
        ns2, [("TCP", 80, R().expect_all_ingress("x/a", False).expect_peer(True, from_ns="y", to_ns="x", to_pod="a"))],
        ns_extra={"y": {"ns2": "updated"}},
    )

    # --- beyond the upstream file: the points of the contract it does not cover, same style ---
    c["selector operators: NotIn, Exists, DoesNotExist (NotIn matches a pod without the key)"] = Case(
        policy("not-in", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: pod, operator: NotIn, values: [a, b]}]
      namespaceSelector:
        matchExpressions: [{key: ns, operator: Exists}]""")
        + policy("team-not-in", "x", """\
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: team, operator: NotIn, values: [blue]}]""")
        + policy("does-not-exist", "x", """\
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns2, operator: DoesNotExist}]
      podSelector:
        matchExpressions: [{key: pod, operator: Exists}]"""),
        [("TCP", 80, R()
          # x/a: from pod c of any namespace that has an ns label (all do)
          .expect_all_ingress("x/a", False).expect_peer(True, from_pod="c", to_ns="x", to_pod="a")
          # x/b: no pod has a team label, so NotIn [blue] matches every pod of x (and only of x)
          .expect_peer(False, from_ns="y", to_ns="x", to_pod="b").expect_peer(False, from_ns="z", to_ns="x", to_pod="b")
          # x/c: every pod of the namespaces without ns2 (y has it)
          .expect_peer(False, from_ns="y", to_ns="x", to_pod="c"))],
        ns_extra={"y": {"ns2": "updated"}},
    )
    c["selector operators: Exists on a key no pod has selects nothing; DoesNotExist on a key all have, nothing"] = Case(
        policy("exists-nothing", "y", """\
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: team, operator: Exists}]
  egress:
  - to:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: DoesNotExist}]"""),
        [("UDP", 81, R().expect_peer(False, to_ns="y").expect_peer(False, from_ns="y"))],
    )
    c["endPort: a port range, ingress and egress"] = Case(
        policy("range-in", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {port: 79, endPort: 80, protocol: TCP}""")
        + policy("range-out", "y", """\
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - ports:
    - {port: 81, endPort: 1000, protocol: UDP}"""),
        # y/b may send UDP 81..1000 only; x/a takes TCP 79..80 only
        [("TCP", 80, R().expect_all_egress("y/b", False)),
         ("TCP", 81, R().expect_all_ingress("x/a", False).expect_all_egress("y/b", False)),
         ("UDP", 81, R().expect_all_ingress("x/a", False)),
         ("UDP", 80, R().expect_all_ingress("x/a", False).expect_all_egress("y/b", False)),
         ("UDP", 1000, R().expect_all_ingress("x/a", False)),
         ("UDP", 1001, R().expect_all_ingress("x/a", False).expect_all_egress("y/b", False)),
         ("TCP", 79, R().expect_all_egress("y/b", False)),
         ("TCP", 78, R().expect_all_ingress("x/a", False).expect_all_egress("y/b", False))],
    )
    c["ports without protocol default to TCP (numbered and named)"] = Case(
        policy("tcp-by-default", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - ports:\n    - port: 80\n    - port: serve-81-udp"),
        [("TCP", 80, R()), ("UDP", 80, R().expect_peer(False, to_ns="x")), ("SCTP", 80, R().expect_peer(False, to_ns="x")),
         # serve-81-udp names a UDP port; a TCP rule with that name opens neither protocol
         ("UDP", 81, R().expect_peer(False, to_ns="x")), ("TCP", 81, R().expect_peer(False, to_ns="x"))],
    )
    c["empty from and empty ports match everything; missing from/ports too"] = Case(
        policy("empty-from", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: []\n    ports: []")
        + policy("missing-both", "x", "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress]\n  ingress:\n  - {}")
        + policy("empty-to", "y", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: []\n    ports: [{protocol: UDP}]"),
        [("TCP", 80, R().expect_peer(False, from_ns="y")), ("UDP", 81, R()), ("SCTP", 81, R().expect_peer(False, from_ns="y"))],
    )
    c["empty ingress list (or no ingress key) allows nothing: isolation only"] = Case(
        policy("empty-ingress", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress: []")
        + policy("no-ingress", "x", "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress]"),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect_all_ingress("x/b", False))],
    )
    c["deny all egress (default-deny-egress with policyTypes only)"] = Case(
        policy("default-deny-egress", "z", "  podSelector: {}\n  policyTypes: [Egress]"),
        [(proto, port, R().expect_peer(False, from_ns="z")) for proto in PROTOCOLS for port in PORTS],
    )
    c["multiple policies: union of what each allows, per direction"] = Case(
        policy("b-to-a", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}")
        + policy("y-to-a-on-81", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    ports:\n    - port: 81")
        + policy("a-out-to-z", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: z}}")
        + policy("a-out-to-c", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {pod: c}}"),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True)
          .expect_all_egress("x/a", False).expect_peer(True, from_ns="x", from_pod="a", to_ns="z").expect("x/a", "x/c", True)),
         ("TCP", 81, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True).expect_peer(True, from_ns="y", to_ns="x", to_pod="a")
          .expect_all_egress("x/a", False).expect_peer(True, from_ns="x", from_pod="a", to_ns="z").expect("x/a", "x/c", True))],
    )
    c["policyTypes default: no policyTypes and only ingress rules -> Ingress only"] = Case(
        policy("ingress-only", "x", "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}"),
        [("TCP", 80, R().expect_peer(False, from_ns="y", to_ns="x").expect_peer(False, from_ns="z", to_ns="x"))],
    )
    c["policyTypes default: no policyTypes and egress rules -> Ingress and Egress (all ingress denied)"] = Case(
        policy("egress-rules", "x", "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}"),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect_all_egress("x/a", False)
          .expect_peer(True, from_ns="x", from_pod="a", to_ns="y"))],
    )
    c["policyTypes default: egress: [] has no egress rules -> Ingress only (the API server's defaulting)"] = Case(
        # SetDefaults_NetworkPolicy (pkg/apis/networking/v1/defaults.go): when policyTypes is empty,
        # Ingress, plus Egress only if len(spec.egress) != 0; the concept page: "Egress will be set
        # if the NetworkPolicy has any egress rules". An empty egress list has none.
        policy("empty-egress-list", "x", "  podSelector: {matchLabels: {pod: a}}\n  egress: []"),
        [("TCP", 80, R().expect_all_ingress("x/a", False))],
    )
    c["policyTypes default: policyTypes: [] is defaulted like a missing one"] = Case(
        # same function: len(policyTypes) == 0 -> defaulted (to Ingress here: no egress rules)
        policy("empty-types", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: []\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}"),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
    )
    c["policyTypes given: rules of a direction not listed are ignored"] = Case(
        policy("egress-type-with-ingress-rules", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
  egress:
  - to:
    - podSelector: {}"""),
        [("TCP", 80, R().expect_all_egress("x/a", False).expect_peer(True, from_ns="x", from_pod="a", to_ns="x"))],
    )
    c["a podSelector peer alone selects pods of the policy's namespace only"] = Case(
        policy("same-ns-b", "y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}"),
        [("SCTP", 81, R().expect_all_ingress("y/a", False).expect("y/b", "y/a", True))],
    )
    c["a null namespaceSelector is an absent one (the policy's namespace), not an empty one (every namespace)"] = Case(
        # `namespaceSelector:` with no value decodes to a nil pointer in the API: the peer is then a
        # podSelector alone. Only `namespaceSelector: {}` selects every namespace.
        policy("null-ns-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
      namespaceSelector:"""),
        [("TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True))],
    )
    c["a namespaceSelector peer alone selects every pod of those namespaces"] = Case(
        policy("from-z", "y", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}"),
        [("UDP", 80, R().expect_all_ingress("y/a", False).expect_peer(True, from_ns="z", to_ns="y", to_pod="a"))],
    )
    return c


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_upstream_case(name):
    case = CASES[name]
    eng = engine(case.policies, case.ns_extra)
    for protocol, port, want in case.checks:
        validate(eng, protocol, port, want)


def test_should_allow_ingress_access_from_updated_pod():
    eng = engine(policy("allow-client-a-via-pod-selector", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b, pod2: updated}}"""))
    validate(eng, "TCP", 80, R().expect_all_ingress("x/a", False))
    validate(eng, "TCP", 80, R().expect_all_ingress("x/a", False).expect("x/b", "x/a", True), labels={"x/b": {"pod2": "updated"}})


def test_should_deny_ingress_access_to_updated_pod():
    eng = engine(policy("deny-ingress-via-label-selector", "x", "  podSelector: {matchLabels: {target: isolated}}\n  policyTypes: [Ingress]"))
    validate(eng, "TCP", 80, R())
    validate(eng, "TCP", 80, R().expect_all_ingress("x/a", False), labels={"x/a": {"target": "isolated"}})


def test_should_stop_enforcing_policies_after_they_are_deleted():
    validate(engine(policy("deny-all", "x", "  podSelector: {}\n  policyTypes: [Ingress, Egress]")), "TCP", 80,
             R().expect_peer(False, from_ns="x").expect_peer(False, to_ns="x"))
    validate(engine(""), "TCP", 80, R())


# --- ipBlock --------------------------------------------------------------------------------

# Cells where the upstream ipBlock tests, which build CIDRs from pod IPs, expect the opposite of
# our documented choice (an ipBlock never matches a pod).
UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS: dict[str, set[tuple[str, str]]] = {}


def _ip_block_case(name: str, policies: str, ours: Reachability, upstream: Reachability) -> None:
    eng = engine(policies)
    validate(eng, "TCP", 80, ours)
    differs = {k for k in ours.grid if k[0] != k[1] and ours.grid[k] != upstream.grid[k]}
    UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS[name] = differs


def test_should_allow_egress_access_to_server_in_cidr_block():
    _ip_block_case(
        "should allow egress access to server in CIDR block",
        policy("allow-client-a-via-cidr-egress-rule", "x", f"""\
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: {pod_ip('y/b')}/32}}"""),
        ours=R().expect_all_egress("x/a", False),
        upstream=R().expect_all_egress("x/a", False).expect("x/a", "y/b", True),
    )
    assert UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS["should allow egress access to server in CIDR block"] == {("x/a", "y/b")}


def test_should_enforce_except_clause_while_egress_access_to_server_in_cidr_block():
    _ip_block_case(
        "should enforce except clause while egress access to server in CIDR block",
        policy("allow-client-a-via-cidr-egress-rule", "x", f"""\
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 10.244.0.0/16
        except: [{pod_ip('x/b')}/32]"""),
        # ours: the block covers every pod but matches none, so x/a, isolated for egress, reaches no pod
        ours=R().expect_all_egress("x/a", False),
        upstream=R().expect("x/a", "x/b", False),
    )
    differs = UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS["should enforce except clause while egress access to server in CIDR block"]
    assert differs == {("x/a", p) for p in ALL_PODS if p not in ("x/a", "x/b")}


def test_should_ensure_an_ip_overlapping_both_ipblock_cidr_and_except_is_allowed():
    _ip_block_case(
        "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
        policy("allow-client-a-via-cidr-egress-rule", "x", f"""\
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: {pod_ip('x/b')}/32}}"""),
        ours=R().expect_all_egress("x/a", False),
        upstream=R().expect_all_egress("x/a", False).expect("x/a", "x/b", True),
    )
    assert UPSTREAM_EXPECTS_IPBLOCK_TO_MATCH_PODS[
        "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"] == {("x/a", "x/b")}


OUTSIDE = {
    "lan-in": "192.168.2.7",  # in 192.168.0.0/16, not in its except
    "lan-except": "192.168.1.7",  # in the except 192.168.1.0/24
    "lan-except-hole": "192.168.1.200",  # in the except, but also in the second block 192.168.1.128/25
    "doc-net": "203.0.113.9",
    "doc-net-except": "203.0.113.200",
    "v6-in": "2001:db8:2::1",
    "v6-except": "2001:db8:1::1",
    "internet": "8.8.8.8",
}


def _outside_grid(eng: PolicyEngine, pods: list[str], outside: list[str], egress: bool, protocol="TCP", port=80) -> dict:
    out = {}
    for p in pods:
        for o in outside:
            src, dst = (endpoint(p), Endpoint(OUTSIDE[o])) if egress else (Endpoint(OUTSIDE[o]), endpoint(p))
            out[(p, o)] = eng.evaluate(src, dst, protocol, port).allowed
    return out


def test_ip_block_with_except_on_outside_addresses_egress_and_ingress():
    eng = engine(
        policy("a-egress", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    - ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}
    ports:
    - port: 80""")
        # a second policy whose block overlaps the first one's except: the union allows it
        + policy("a-egress-hole", "x", """\
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.168.1.128/25}""")
        + policy("b-ingress", "x", """\
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}""")
    )
    names = list(OUTSIDE)
    egress = _outside_grid(eng, list(ALL_PODS), names, egress=True)
    allowed_from_xa = {o for o in names if egress[("x/a", o)]}
    assert allowed_from_xa == {"lan-in", "lan-except-hole", "v6-in"}
    assert all(egress[(p, o)] for p in ALL_PODS if p != "x/a" for o in names), "pods no egress policy selects reach everything"
    assert not _outside_grid(eng, ["x/a"], ["lan-in"], egress=True, port=81)[("x/a", "lan-in")], "the block's rule is port 80 only"
    ingress = _outside_grid(eng, list(ALL_PODS), names, egress=False, protocol="UDP", port=81)
    assert {o for o in names if ingress[("x/b", o)]} == {"doc-net"}
    assert all(ingress[(p, o)] for p in ALL_PODS if p != "x/b" for o in names)
    # and x/b, isolated for ingress by an ipBlock-only rule, takes nothing from pods (our choice: no pod is in a block)
    validate(eng, "TCP", 80, R().expect_all_egress("x/a", False).expect_all_ingress("x/b", False))


def test_verdict_names_the_denying_direction_and_the_allowing_policies():
    eng = engine(CASES["should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)"].policies)
    xa, ya, yb, yc = (endpoint(p) for p in ("x/a", "y/a", "y/b", "y/c"))
    v = eng.evaluate(xa, yb, "TCP", 80)  # y/b's ingress allows x/a; x/a's egress does not allow y/b
    assert (v.allowed, v.denied_by) == (False, "egress")
    assert "x/allow-to-ns-y-pod-a" in v.why
    v = eng.evaluate(yc, ya, "TCP", 80)  # y/c is not isolated for egress; y/a only takes x/a
    assert (v.allowed, v.denied_by) == (False, "ingress")
    assert "y/allow-from-xa-on-ya-match-selector" in v.why and "y/allow-from-xa-on-yb" not in v.why
    v = eng.evaluate(xa, ya, "TCP", 80)
    assert v.allowed and v.denied_by is None
    assert set(v.allowed_by) == {"x/allow-to-ns-y-pod-a", "y/allow-from-xa-on-ya-match-selector"}
    v = eng.evaluate(yc, xa, "TCP", 80)  # nobody isolates this direction pair
    assert v.allowed and v.allowed_by == ()


def test_every_isolating_policy_is_named_and_every_allowing_one_listed():
    eng = engine(CASES["multiple policies: union of what each allows, per direction"].policies)
    v = eng.evaluate(endpoint("y/a"), endpoint("x/a"), "TCP", 80)
    assert (v.allowed, v.denied_by) == (False, "ingress")
    assert "x/b-to-a" in v.why and "x/y-to-a-on-81" in v.why
    v = eng.evaluate(endpoint("x/a"), endpoint("z/c"), "TCP", 81)  # a podSelector alone: pod=c of x only
    assert v.allowed and v.allowed_by == ("x/a-out-to-z",)
    v = eng.evaluate(endpoint("x/a"), endpoint("x/c"), "TCP", 81)
    assert v.allowed and v.allowed_by == ("x/a-out-to-c",)
    v = eng.evaluate(endpoint("y/b"), endpoint("x/a"), "TCP", 81)
    assert v.allowed and v.allowed_by == ("x/y-to-a-on-81",)
    v = eng.evaluate(endpoint("x/a"), endpoint("y/b"), "TCP", 81)
    assert (v.allowed, v.denied_by) == (False, "egress")
    assert "x/a-out-to-z" in v.why and "x/a-out-to-c" in v.why and "b-to-a" not in v.why


def test_traffic_between_a_pod_and_its_own_node_is_always_allowed():
    eng = engine(policy("deny-all", "x", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"))
    own = Endpoint("172.18.0.11", node=NODES["x"])  # the node x/a runs on (kubelet probes)
    other = Endpoint("172.18.0.12", node=NODES["y"])
    xa = endpoint("x/a")
    assert eng.evaluate(own, xa, "TCP", 80).allowed
    assert eng.evaluate(xa, own, "TCP", 10250).allowed
    assert not eng.evaluate(other, xa, "TCP", 80).allowed
    assert eng.evaluate(other, xa, "TCP", 80).denied_by == "ingress"
    assert not eng.evaluate(xa, other, "UDP", 53).allowed


def test_loopback_is_judged_like_any_pair():
    """Upstream ignores a pod's traffic to itself; our engine judges it like any pair (as NCA)."""
    eng = engine(CASES["should enforce policy to allow traffic from pods within server namespace based on PodSelector"].policies)
    assert not eng.evaluate(endpoint("x/a"), endpoint("x/a"), "TCP", 80).allowed
    eng = engine(CASES["should deny ingress from pods on other namespaces"].policies)
    assert eng.evaluate(endpoint("x/a"), endpoint("x/a"), "TCP", 80).allowed


def test_the_grid_printer_shows_expected_observed_and_agreement():
    eng = engine(DENY_INGRESS_X)
    with pytest.raises(pytest.fail.Exception) as info:
        validate(eng, "TCP", 80, R())
    text = str(info.value)
    assert "TCP/80: 24 of 72 pod pairs differ" in text
    assert "expected:" in text and "observed:" in text and "agreement (loopback ignored: -):" in text
    agreement = text.split("agreement (loopback ignored: -):")[1].splitlines()
    assert agreement[2].split() == ["x/a", "-", "X", "X", ".", ".", ".", ".", ".", "."]
