"""The policy semantics engine: what a set of NetworkPolicies allows, as the Kubernetes API says.

    policy YAML  ->  load_policies  ->  PolicyEngine(policies, namespaces)  ->  evaluate(connection)

Rules (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
- Isolation is per direction: a pod is isolated for ingress (egress) when some policy of its
  namespace selects it and lists Ingress (Egress) in its policyTypes; an isolated pod accepts only
  what the union of those policies allows; a pod no policy isolates allows everything.
- Pod-to-pod traffic needs both the source's egress and the destination's ingress.
- ``policyTypes`` defaults to Ingress, plus Egress when the policy has an ``egress`` section.
- A missing ``ingress``/``egress`` allows nothing; a rule with a missing or empty ``from``/``to``
  matches every peer; a missing or empty ``ports`` matches every port and protocol.
- A peer with ``podSelector`` alone selects pods of the policy's namespace; ``namespaceSelector``
  alone, every pod of the selected namespaces; both, the pods they both select.
- Named ports are resolved on the destination pod's container ports; ``endPort`` makes a range.
- Traffic between a pod and its own node (kubelet probes) is always allowed.
Where the documentation leaves a point to the implementation, our choice:
- ``ipBlock`` matches addresses outside the pod network only: a pod peer is matched by selectors,
  never by the ipBlock that happens to contain its IP (as Cilium and network-config-analyzer do;
  the documentation says ipBlocks "should be cluster-external IPs").
- Host-network pods and nodes are addresses, not pods: policies do not select them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netpol_learn._errors import PolicyError
from netpol_learn.inventory._model import LabelSelector
from netpol_learn.policy import IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule

PROTOCOLS = ("TCP", "UDP", "SCTP")


# --- reading -------------------------------------------------------------------------------


def load_policies(paths: Iterable[str | os.PathLike], notes: list[str] | None = None) -> list[NetworkPolicy]:
    """NetworkPolicies from files and directories (YAML or JSON; Lists, multi-document files,
    what ``kubectl kustomize`` prints). Other kinds are skipped with a note."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".json") and f.name != "kustomization.yaml")
        elif p.exists():
            files.append(p)
        else:
            raise PolicyError(f"{p}: no such file or directory")
    policies: list[NetworkPolicy] = []
    skipped: dict[str, int] = {}
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{f}: cannot read: {exc}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise PolicyError(f"{f}:{f' line {mark.line + 1}:' if mark else ''} invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
        index = 0
        for doc in docs:
            for obj in _items(doc):
                index += 1
                kind = obj.get("kind") if isinstance(obj, Mapping) else None
                if kind != "NetworkPolicy":
                    skipped[str(kind)] = skipped.get(str(kind), 0) + 1
                    continue
                try:
                    policies.append(policy_from_dict(obj))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    name = (obj.get("metadata") or {}).get("name", "?") if isinstance(obj, Mapping) else "?"
                    raise PolicyError(f"{f}: document {index} (NetworkPolicy {name}): {exc}") from exc
    if notes is not None:
        notes.extend(f"skipped {n} document(s) of kind {k}" for k, n in sorted(skipped.items()))
    return policies


def _items(doc) -> Iterable:
    if doc is None:
        return []
    if isinstance(doc, Mapping) and isinstance(doc.get("items"), list) and str(doc.get("kind", "")).endswith("List"):
        return doc["items"]
    return [doc]


_SPEC_KEYS = {"podSelector", "policyTypes", "ingress", "egress"}
_RULE_KEYS = {"ingress": {"from", "ports"}, "egress": {"to", "ports"}}
_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}


def _selector(obj, where: str) -> LabelSelector:
    if obj is None:
        return LabelSelector()
    if not isinstance(obj, Mapping) or set(obj) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"{where}: not a label selector")
    return LabelSelector.from_dict(obj)


def policy_from_dict(obj: Mapping) -> NetworkPolicy:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError("spec: missing")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"spec: unknown field {sorted(unknown)[0]!r}")
    if "podSelector" not in spec:
        raise ValueError("spec.podSelector: missing (use {} to select every pod)")
    types = spec.get("policyTypes")
    if not types:  # missing or empty: Ingress, and Egress when there are egress rules (API defaulting)
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for t in types:
        if t not in ("Ingress", "Egress"):
            raise ValueError(f"spec.policyTypes: {t!r} is neither Ingress nor Egress")

    def rules(direction: str):
        if spec.get(direction) is None:
            return None
        out = []
        for i, r in enumerate(spec[direction]):
            where = f"spec.{direction}[{i}]"
            r = r or {}
            if set(r) - _RULE_KEYS[direction]:
                raise ValueError(f"{where}: unknown field {sorted(set(r) - _RULE_KEYS[direction])[0]!r}")
            key = "from" if direction == "ingress" else "to"
            peers = None
            if r.get(key) is not None:
                peers = tuple(_peer(p, f"{where}.{key}[{j}]") for j, p in enumerate(r[key]))
            ports = None
            if r.get("ports") is not None:
                ports = tuple(_port(p, f"{where}.ports[{j}]") for j, p in enumerate(r["ports"]))
            out.append(Rule(peers, ports))
        return tuple(out)

    return NetworkPolicy(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        pod_selector=_selector(spec.get("podSelector"), "spec.podSelector"),
        policy_types=tuple(types),
        ingress=rules("ingress"),
        egress=rules("egress"),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
    )


def _peer(p, where: str) -> PolicyPeer:
    if isinstance(p, Mapping):
        p = {k: v for k, v in p.items() if v is not None}  # a null selector is an absent one
    if not isinstance(p, Mapping) or not p or set(p) - _PEER_KEYS:
        raise ValueError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in p:
        if len(p) > 1:
            raise ValueError(f"{where}: ipBlock cannot be combined with selectors")
        block = p["ipBlock"]
        cidr = str(ipaddress.ip_network(str(block["cidr"]), strict=False))
        excepts = tuple(str(ipaddress.ip_network(str(e), strict=False)) for e in block.get("except") or ())
        return PolicyPeer(ip_block=IpBlock(cidr, excepts))
    return PolicyPeer(
        pod_selector=_selector(p["podSelector"], f"{where}.podSelector") if "podSelector" in p else None,
        namespace_selector=_selector(p["namespaceSelector"], f"{where}.namespaceSelector") if "namespaceSelector" in p else None,
    )


def _port(p, where: str) -> PortSpec:
    if not isinstance(p, Mapping):
        raise ValueError(f"{where}: not a port")
    proto = str(p.get("protocol") or "TCP")
    if proto not in PROTOCOLS:
        raise ValueError(f"{where}.protocol: {proto!r} is not TCP, UDP or SCTP")
    port = p.get("port")
    if port is not None and not isinstance(port, (int, str)):
        raise ValueError(f"{where}.port: not a number or a name")
    end = p.get("endPort")
    if end is not None and (not isinstance(port, int) or int(end) < port):
        raise ValueError(f"{where}.endPort: needs a numeric port not above it")
    return PortSpec(proto, port, int(end) if end is not None else None)


# --- evaluating ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace, labels, named ports, node) or an address."""

    address: str
    namespace: str | None = None  # None: not a pod (outside, a node, a host-network pod)
    labels: tuple[tuple[str, str], ...] = ()
    named_ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, port) declared by the pod
    node: str | None = None  # a pod's node; for a node address, the node's name
    name: str | None = None

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    denied_by: str | None = None  # "egress" or "ingress": the direction that denied it
    allowed_by: tuple[str, ...] = field(default=())  # "ns/policy" names that allowed it, both directions
    why: str = ""


class PolicyEngine:
    def __init__(self, policies: Iterable[NetworkPolicy], namespace_labels: Mapping[str, Mapping[str, str]]):
        self.by_namespace: dict[str, list[NetworkPolicy]] = {}
        for p in policies:
            self.by_namespace.setdefault(p.namespace, []).append(p)
        self.namespace_labels = {ns: dict(labels) for ns, labels in namespace_labels.items()}
        # Which policies select a pod depends only on its namespace and labels: remembered, since
        # a verify asks about the same pods for thousands of connections.
        self._ns_cache: dict[str, dict[str, str]] = {}
        self._selecting_cache: dict[tuple, list[NetworkPolicy]] = {}
        self._rule_index: dict[int, tuple] = {}

    def _ns_labels(self, ns: str) -> dict[str, str]:
        labels = self._ns_cache.get(ns)
        if labels is None:
            labels = dict(self.namespace_labels.get(ns, {}))
            labels.setdefault("kubernetes.io/metadata.name", ns)  # set on every namespace since 1.21
            self._ns_cache[ns] = labels
        return labels

    def _selecting(self, pod: Endpoint, direction: str) -> list[NetworkPolicy]:
        key = (pod.namespace, pod.labels, direction)
        found = self._selecting_cache.get(key)
        if found is None:
            kind = "Ingress" if direction == "ingress" else "Egress"
            labels = dict(pod.labels)
            found = [p for p in self.by_namespace.get(pod.namespace, ()) if kind in p.policy_types and p.pod_selector.matches(labels)]
            self._selecting_cache[key] = found
        return found

    def evaluate(self, src: Endpoint, dst: Endpoint, protocol: str, port: int) -> Verdict:
        if (src.is_pod and not dst.is_pod and dst.node is not None and dst.node == src.node) or (
            dst.is_pod and not src.is_pod and src.node is not None and src.node == dst.node
        ):
            return Verdict(True, why="between a pod and its own node: always allowed")
        allowed_by: list[str] = []
        for direction, subject, peer in (("egress", src, dst), ("ingress", dst, src)):
            if not subject.is_pod:
                continue
            isolating = self._selecting(subject, direction)
            if not isolating:
                continue
            matching = [p for p in isolating if any(self._rule_matches(r, p, peer, dst, protocol, port) for r in (getattr(p, direction) or ()))]
            if not matching:
                names = ", ".join(f"{p.namespace}/{p.name}" for p in isolating)
                return Verdict(False, denied_by=direction, why=f"{direction} of {subject.namespace}/{subject.name or subject.address} is isolated by {names}; none allows it")
            allowed_by += [f"{p.namespace}/{p.name}" for p in matching]
        return Verdict(True, allowed_by=tuple(dict.fromkeys(allowed_by)), why="allowed")

    def _rule_matches(self, rule: Rule, policy: NetworkPolicy, peer: Endpoint, dst: Endpoint, protocol: str, port: int) -> bool:
        if rule.ports:  # missing or empty: every port
            if not any(self._port_matches(p, dst, protocol, port) for p in rule.ports):
                return False
        if not rule.peers:  # missing or empty: every peer
            return True
        by_label, others, blocks = self._peer_index(rule)
        if not peer.is_pod:
            return any(self._peer_matches(pp, policy, peer) for pp in blocks)
        # Only the elements whose first matchLabels pair the pod carries can select it.
        candidates = [pp for kv in peer.labels for pp in by_label.get(kv, ())]
        return any(self._peer_matches(pp, policy, peer) for pp in (*candidates, *others))

    def _peer_index(self, rule: Rule):
        """A rule's peer elements by the first label their pod selector requires: a rule generated
        for a busy server lists dozens of clients, and a connection matches at most a few."""
        index = self._rule_index.get(id(rule))
        if index is None:
            by_label: dict[tuple[str, str], list[PolicyPeer]] = {}
            others, blocks = [], []
            for pp in rule.peers:
                if pp.ip_block is not None:
                    blocks.append(pp)
                elif pp.pod_selector is not None and pp.pod_selector.match_labels:
                    by_label.setdefault(pp.pod_selector.match_labels[0], []).append(pp)
                else:
                    others.append(pp)
            index = self._rule_index[id(rule)] = (by_label, others, blocks)
        return index

    @staticmethod
    def _port_matches(spec: PortSpec, dst: Endpoint, protocol: str, port: int) -> bool:
        if spec.protocol != protocol:
            return False
        if spec.port is None:
            return True
        if isinstance(spec.port, str):
            return any(name == spec.port and proto == protocol and number == port for name, proto, number in dst.named_ports)
        if spec.end_port is not None:
            return spec.port <= port <= spec.end_port
        return spec.port == port

    def _peer_matches(self, pp: PolicyPeer, policy: NetworkPolicy, peer: Endpoint) -> bool:
        if pp.ip_block is not None:
            if peer.is_pod:
                return False  # ipBlocks are for addresses outside the pod network (see the module doc)
            ip = ipaddress.ip_address(peer.address)
            net = ipaddress.ip_network(pp.ip_block.cidr)
            if ip.version != net.version or ip not in net:
                return False
            return not any(ip in ipaddress.ip_network(e) for e in pp.ip_block.except_ if ipaddress.ip_network(e).version == ip.version)
        if not peer.is_pod:
            return False
        if pp.namespace_selector is not None:
            if not pp.namespace_selector.matches(self._ns_labels(peer.namespace)):
                return False
        elif peer.namespace != policy.namespace:
            return False
        return pp.pod_selector is None or pp.pod_selector.matches(dict(peer.labels))
