"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) for the semantics engine: read, and
decided per direction as the API's documentation says (its CRD, tests/data/schemas).

- Tiers: the Admin tier is decided before NetworkPolicies, the Baseline tier after them and
  only for pods no NetworkPolicy isolates in that direction; then everything is allowed.
- Within a tier, policies by ``priority`` (lower first; equal ones by name, our choice where the
  API leaves it to the implementation), rules in order: the first rule whose peers and protocols
  match decides: ``Accept`` allows, ``Deny`` denies, ``Pass`` leaves it to the next tier.
- ``subject``: the pods of the namespaces ``namespaces`` selects, or the pods ``pods`` selects.
- Peers: ``namespaces`` (every pod of the selected namespaces), ``pods`` (namespaceSelector and
  podSelector), ``networks`` (CIDRs: any address in them, pods' too, as the API says). Host-network
  pods and nodes are addresses, as in the NetworkPolicy engine.
- ``protocols``: missing matches everything; ``tcp``/``udp``/``sctp`` with a ``destinationPort``
  number or range, or ``destinationNamedPort`` (the destination pod's container port of that name).
Peers this engine does not read (``nodes``, ``domainNames``) are a PolicyError: refused, never
skipped, since skipping would judge the traffic as if they were not there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from netpol_learn._inventory import LabelSelector

ACTIONS = ("Accept", "Deny", "Pass")
TIERS = ("Admin", "Baseline")
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}


@dataclass(frozen=True)
class ClusterRule:
    name: str
    action: str
    peers: tuple  # ("namespaces", selector) | ("pods", namespace selector, pod selector) | ("networks", (net, ...))
    protocols: tuple | None  # None: everything; else (protocol, first, last) or ("named", name)


@dataclass(frozen=True)
class ClusterPolicy:
    name: str
    tier: str
    priority: int
    subject: tuple  # ("namespaces", selector) | ("pods", namespace selector, pod selector)
    ingress: tuple[ClusterRule, ...]
    egress: tuple[ClusterRule, ...]

    @property
    def label(self) -> str:
        return f"ClusterNetworkPolicy {self.name} ({self.tier})"


def _mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: not a mapping")
    return value


def _selector(value, where: str) -> LabelSelector:
    if value is None:
        return LabelSelector()
    _mapping(value, where)
    if set(value) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"{where}: not a label selector")
    return LabelSelector.from_dict(value, where)


def _selection(value, where: str, kinds: tuple[str, ...]) -> tuple:
    value = _mapping(value, where)
    if len(value) != 1:
        raise ValueError(f"{where}: exactly one of {', '.join(kinds)}")
    (kind, body), = value.items()
    if kind not in kinds:
        raise ValueError(f"{where}: {kind} is not read by verify and diff (they read {', '.join(kinds)})")
    if kind == "namespaces":
        return ("namespaces", _selector(body, f"{where}.namespaces"))
    if kind == "pods":
        body = _mapping(body, f"{where}.pods")
        return ("pods", _selector(body.get("namespaceSelector"), f"{where}.pods.namespaceSelector"),
                _selector(body.get("podSelector"), f"{where}.pods.podSelector"))
    nets = body if isinstance(body, list) else None
    if not nets:
        raise ValueError(f"{where}.networks: not a list of CIDRs")
    try:
        return ("networks", tuple(ipaddress.ip_network(str(n), strict=False) for n in nets))
    except ValueError as exc:
        raise ValueError(f"{where}.networks: {exc}") from None


def _protocols(value, where: str) -> tuple | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: not a list")
    out = []
    for i, p in enumerate(value):
        at = f"{where}[{i}]"
        p = _mapping(p, at)
        if len(p) != 1:
            raise ValueError(f"{at}: exactly one of tcp, udp, sctp, destinationNamedPort")
        (kind, body), = p.items()
        if kind == "destinationNamedPort":
            if not isinstance(body, str) or not body:
                raise ValueError(f"{at}.destinationNamedPort: not a port name")
            out.append(("named", body))
            continue
        if kind not in _PROTOCOLS:
            raise ValueError(f"{at}: {kind!r} is not tcp, udp, sctp or destinationNamedPort")
        port = _mapping(_mapping(body, f"{at}.{kind}").get("destinationPort"), f"{at}.{kind}.destinationPort")
        if "number" in port:
            first = last = port["number"]
        else:
            r = _mapping(port.get("range"), f"{at}.{kind}.destinationPort.range")
            first, last = r.get("start"), r.get("end")
        if not all(type(x) is int and 1 <= x <= 65535 for x in (first, last)) or first > last:
            raise ValueError(f"{at}.{kind}.destinationPort: not a port or a range of ports")
        out.append((_PROTOCOLS[kind], first, last))
    return tuple(out)


def _rules(spec: Mapping, direction: str) -> tuple[ClusterRule, ...]:
    rules = spec.get(direction)
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise ValueError(f"spec.{direction}: not a list")
    key = "from" if direction == "ingress" else "to"
    kinds = ("namespaces", "pods") if direction == "ingress" else ("namespaces", "pods", "networks")
    out = []
    for i, r in enumerate(rules):
        at = f"spec.{direction}[{i}]"
        r = _mapping(r, at)
        if r.get("action") not in ACTIONS:
            raise ValueError(f"{at}.action: {r.get('action')!r} is not one of {', '.join(ACTIONS)}")
        peers = r.get(key)
        if not isinstance(peers, list) or not peers:
            raise ValueError(f"{at}.{key}: not a list of peers")
        out.append(ClusterRule(str(r.get("name", "")), r["action"], tuple(_selection(p, f"{at}.{key}[{j}]", kinds) for j, p in enumerate(peers)),
                               _protocols(r.get("protocols"), f"{at}.protocols")))
    return tuple(out)


def cluster_policy_from_dict(obj: Mapping) -> ClusterPolicy:
    meta = _mapping(obj.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name: missing")
    spec = _mapping(obj.get("spec"), "spec")
    if spec.get("tier") not in TIERS:
        raise ValueError(f"spec.tier: {spec.get('tier')!r} is not Admin or Baseline")
    priority = spec.get("priority")
    if type(priority) is not int or not 0 <= priority <= 1000:
        raise ValueError("spec.priority: not a number from 0 to 1000")
    return ClusterPolicy(name, spec["tier"], priority, _selection(spec.get("subject"), "spec.subject", ("namespaces", "pods")),
                         _rules(spec, "ingress"), _rules(spec, "egress"))


def _selects(sel: tuple, endpoint, ns_labels) -> bool:
    """Whether a subject or a namespaces/pods peer selects the endpoint (a pod)."""
    if not endpoint.is_pod or not sel[1].matches(ns_labels(endpoint.namespace)):
        return False
    return sel[0] == "namespaces" or sel[2].matches(dict(endpoint.labels))


def _peer_matches(peer: tuple, endpoint, ns_labels) -> bool:
    if peer[0] == "networks":
        ip = ipaddress.ip_address(endpoint.address)
        return any(ip.version == net.version and ip in net for net in peer[1])
    return _selects(peer, endpoint, ns_labels)


def _protocol_matches(protocols: tuple | None, dst, protocol: str, port: int) -> bool:
    if protocols is None:
        return True
    for p in protocols:
        if p[0] == "named":
            if any(name == p[1] and proto == protocol and number == port for name, proto, number in dst.named_ports):
                return True
        elif p[0] == protocol and p[1] <= port <= p[2]:
            return True
    return False


def decide(policies: tuple[ClusterPolicy, ...], tier: str, direction: str, subject, peer, dst, protocol: str, port: int,
           ns_labels) -> tuple[str, ClusterPolicy, ClusterRule] | None:
    """(action, policy, rule) of the first rule of ``tier`` that matches, for ``subject`` (the
    pod whose ``direction`` it is) and ``peer`` (the other end); None when no rule matches."""
    for policy in policies:
        if policy.tier != tier or not _selects(policy.subject, subject, ns_labels):
            continue
        for rule in getattr(policy, direction):
            if _protocol_matches(rule.protocols, dst, protocol, port) and any(_peer_matches(p, peer, ns_labels) for p in rule.peers):
                return rule.action, policy, rule
    return None


def candidates(policies: tuple[ClusterPolicy, ...], tier: str, direction: str, subject, peer, ns_labels) -> list[ClusterRule]:
    """The rules of ``tier`` whose policy selects ``subject`` and whose peers match ``peer``, in
    ``decide``'s order: for any protocol and port, ``decide`` answers with the first of them whose
    protocols match (``PolicyEngine.allowed_mask`` asks once for every port)."""
    return [rule for policy in policies if policy.tier == tier and _selects(policy.subject, subject, ns_labels)
            for rule in getattr(policy, direction) if any(_peer_matches(p, peer, ns_labels) for p in rule.peers)]
