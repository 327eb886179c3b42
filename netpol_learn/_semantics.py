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
ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) are read too: the Admin tier decides
before NetworkPolicies, the Baseline tier for pods they do not isolate (``_cluster_policy``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netpol_learn._cluster_policy import ClusterPolicy, cluster_policy_from_dict, decide
from netpol_learn._errors import PolicyError
from netpol_learn._inventory import PROTOCOLS, LabelSelector, labels_problem
from netpol_learn._policy import NAMESPACE_LABEL, IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule

# --- reading -------------------------------------------------------------------------------


#: Kinds that decide traffic but that the engine does not read: refused, never skipped (skipping
#: would judge the traffic as if they were not there).
NOT_JUDGED = {
    "CiliumNetworkPolicy": "generate --flavor networkpolicy for a set they can check",
    "CiliumClusterwideNetworkPolicy": "generate --flavor networkpolicy for a set they can check",
}


class Policies(list):
    """The NetworkPolicies of a policy set, a list; ``cluster``: its ClusterNetworkPolicies."""

    cluster: tuple[ClusterPolicy, ...] = ()


def load_policies(paths: Iterable[str | os.PathLike], notes: list[str] | None = None) -> Policies:
    """NetworkPolicies from files and directories (YAML or JSON; Lists, multi-document files,
    what ``kubectl kustomize`` prints), with the ClusterNetworkPolicies among them in ``cluster``.
    Other kinds are skipped with a note, but those that decide traffic the engine cannot read
    (``NOT_JUDGED``) are a PolicyError."""
    policies = Policies()
    cluster: list[ClusterPolicy] = []
    skipped: dict[str, int] = {}
    for f in policy_files(paths):
        index = 0
        for doc in _documents(f):
            if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List") and not isinstance(doc.get("items", []), list):
                raise PolicyError(f"{f}: document {index + 1} ({doc['kind']}): items: not a list")
            for obj in _items(doc):
                index += 1
                kind = obj.get("kind") if isinstance(obj, Mapping) else None
                if kind in NOT_JUDGED:
                    raise PolicyError(f"{f}: document {index} is a {kind}: verify and diff judge NetworkPolicies and ClusterNetworkPolicies only ({NOT_JUDGED[kind]})")
                read = {"NetworkPolicy": (policy_from_dict, policies), "ClusterNetworkPolicy": (cluster_policy_from_dict, cluster)}.get(kind)
                if read is None:
                    skipped[str(kind)] = skipped.get(str(kind), 0) + 1
                    continue
                try:
                    read[1].append(read[0](obj))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    meta = obj.get("metadata")
                    name = meta.get("name") if isinstance(meta, Mapping) else None
                    raise PolicyError(f"{f}: document {index} ({kind} {name if isinstance(name, str) and name else '?'}): {exc}") from exc
    if notes is not None:
        notes.extend(f"skipped {n} document(s) of kind {k}" for k, n in sorted(skipped.items()))
    policies.cluster = tuple(sorted(cluster, key=lambda c: (c.tier, c.priority, c.name)))
    return policies


def policy_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files given, and the YAML and JSON files under the directories given (but their
    ``kustomization.yaml``), each directory's in name order."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".json") and f.name != "kustomization.yaml")
        elif p.exists():
            files.append(p)
        else:
            raise PolicyError(f"{p}: no such file or directory")
    return files


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader on libyaml (where PyYAML has it), building the plain mappings, sequences
    and strings that policy files are made of without the generic constructor's per-node
    machinery; every other node (numbers, merge keys, tags, non-string keys) goes to the safe
    constructor as before. A cluster's policies are millions of nodes."""

    def __init__(self, stream):
        super().__init__(stream)
        self._tags: dict[tuple, str] = {}

    def resolve(self, kind, value, implicit):  # the safe resolver has no path resolvers: a pure function
        key = (kind, value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag

    def construct_document(self, node):
        data = self._build(node, {})
        self.constructed_objects, self.recursive_objects = {}, {}
        return data

    def _build(self, node, built: dict):
        if node.tag == _STR and type(node) is yaml.ScalarNode:
            return node.value
        if id(node) in built:  # an alias
            return built[id(node)]
        if node.tag == _MAP and type(node) is yaml.MappingNode and all(type(k) is yaml.ScalarNode and k.tag == _STR for k, _ in node.value):
            out: dict = {}
            built[id(node)] = out
            for k, v in node.value:
                out[k.value] = self._build(v, built)
        elif node.tag == _SEQ and type(node) is yaml.SequenceNode:
            out = built[id(node)] = []
            out += [self._build(v, built) for v in node.value]
        else:
            out = built[id(node)] = self.construct_object(node, deep=True)
        return out


def _documents(f: Path) -> list:
    try:
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{f}: cannot read: {exc}") from exc
    try:
        return list(yaml.load_all(text, Loader=_FastLoader))
    except yaml.YAMLError:
        pass  # libyaml words errors its own way (and refuses a few texts the pure loader reads): the pure one decides
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"{f}:{f' line {mark.line + 1}:' if mark else ''} invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc


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
    return LabelSelector.from_dict(obj, where)


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{where}: not a list")
    return value


def policy_from_dict(obj: Mapping) -> NetworkPolicy:
    meta = _metadata(obj.get("metadata"))
    spec = _spec(obj.get("spec"))
    types = _policy_types(spec)
    return NetworkPolicy(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        pod_selector=_selector(spec.get("podSelector"), "spec.podSelector"),
        policy_types=types,
        ingress=_rules(spec, "ingress"),
        egress=_rules(spec, "egress"),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
    )


def _metadata(meta) -> Mapping:
    """``metadata``, checked: a name, and where given a namespace (strings) and labels."""
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise ValueError("metadata: not a mapping")
    for key in ("name", "namespace"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ValueError(f"metadata.{key}: not a string")
    if not meta.get("name"):
        raise ValueError("metadata.name: missing")
    labels = meta.get("labels")
    if labels is not None:
        bad = labels_problem(labels)
        if bad:
            raise ValueError(f"metadata.labels{bad[0]}: {bad[1]}")
    return meta


def _spec(spec) -> Mapping:
    """``spec``, checked: a mapping of the known fields, with a podSelector."""
    if spec is None:
        raise ValueError("spec: missing")
    if not isinstance(spec, Mapping):
        raise ValueError("spec: not a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"spec: unknown field {sorted(unknown)[0]!r}")
    if "podSelector" not in spec:
        raise ValueError("spec.podSelector: missing (use {} to select every pod)")
    return spec


def _policy_types(spec: Mapping) -> tuple[str, ...]:
    types = spec.get("policyTypes")
    if types is not None:
        _list(types, "spec.policyTypes")
    if not types:  # missing or empty: Ingress, and Egress when there are egress rules (API defaulting)
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for t in types:
        if t not in ("Ingress", "Egress"):
            raise ValueError(f"spec.policyTypes: {t!r} is neither Ingress nor Egress")
    return tuple(types)


def _rules(spec: Mapping, direction: str) -> tuple[Rule, ...] | None:
    """``spec.ingress`` or ``spec.egress``: None when absent (no rule allows anything)."""
    if spec.get(direction) is None:
        return None
    return tuple(_rule(r, direction, f"spec.{direction}[{i}]") for i, r in enumerate(_list(spec[direction], f"spec.{direction}")))


def _rule(r, direction: str, where: str) -> Rule:
    r = {} if r is None else r
    if not isinstance(r, Mapping):
        raise ValueError(f"{where}: not a mapping")
    if set(r) - _RULE_KEYS[direction]:
        raise ValueError(f"{where}: unknown field {sorted(set(r) - _RULE_KEYS[direction])[0]!r}")
    key = "from" if direction == "ingress" else "to"
    peers = None
    if r.get(key) is not None:
        peers = tuple(_peer(p, f"{where}.{key}[{j}]") for j, p in enumerate(_list(r[key], f"{where}.{key}")))
    ports = None
    if r.get("ports") is not None:
        ports = tuple(_port(p, f"{where}.ports[{j}]") for j, p in enumerate(_list(r["ports"], f"{where}.ports")))
    return Rule(peers, ports)


def _peer(p, where: str) -> PolicyPeer:
    if isinstance(p, Mapping):
        p = {k: v for k, v in p.items() if v is not None}  # a null selector is an absent one
    if not isinstance(p, Mapping) or not p or set(p) - _PEER_KEYS:
        raise ValueError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in p:
        if len(p) > 1:
            raise ValueError(f"{where}: ipBlock cannot be combined with selectors")
        return PolicyPeer(ip_block=_ip_block(p["ipBlock"], f"{where}.ipBlock"))
    return PolicyPeer(
        pod_selector=_selector(p["podSelector"], f"{where}.podSelector") if "podSelector" in p else None,
        namespace_selector=_selector(p["namespaceSelector"], f"{where}.namespaceSelector") if "namespaceSelector" in p else None,
    )


def _network(text, where: str):
    try:
        return ipaddress.ip_network(text if isinstance(text, str) else "-", strict=False)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a CIDR") from None


def _ip_block(block, where: str) -> IpBlock:
    if not isinstance(block, Mapping):
        raise ValueError(f"{where}: not a mapping")
    if block.get("cidr") is None:
        raise ValueError(f"{where}.cidr: missing")
    cidr = _network(block["cidr"], f"{where}.cidr")
    excepts = []
    for i, text in enumerate(_list(block.get("except") or [], f"{where}.except")):
        net = _network(text, f"{where}.except[{i}]")
        # The API server's rule: each except is a strict subset of the cidr.
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:
            raise ValueError(f"{where}.except[{i}]: {net} is not inside cidr {cidr}")
        excepts.append(str(net))
    return IpBlock(str(cidr), tuple(excepts))


_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME


def _port(p, where: str) -> PortSpec:
    if not isinstance(p, Mapping):
        raise ValueError(f"{where}: not a port")
    proto = str(p.get("protocol") or "TCP")
    if proto not in PROTOCOLS:
        raise ValueError(f"{where}.protocol: {proto!r} is not TCP, UDP or SCTP")
    port = p.get("port")
    if isinstance(port, bool) or (port is not None and not isinstance(port, (int, str))):
        raise ValueError(f"{where}.port: not a number or a name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise ValueError(f"{where}.port: {port} is not a port number (1-65535)")
    if isinstance(port, str) and (not _PORT_NAME.match(port) or "--" in port):
        raise ValueError(f"{where}.port: {port!r} is not a port name (up to 15 of a-z, 0-9 and '-', a letter among them)")
    end = p.get("endPort")
    if end is not None:
        if not isinstance(end, int) or isinstance(end, bool):
            raise ValueError(f"{where}.endPort: not a number")
        if not isinstance(port, int):
            raise ValueError(f"{where}.endPort: needs a numeric port")
        if end < port:
            raise ValueError(f"{where}.endPort: {end} is below port {port}")
        if end > 65535:
            raise ValueError(f"{where}.endPort: {end} is not a port number (1-65535)")
    return PortSpec(proto, port, end)


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


def isolates(policy: NetworkPolicy, namespace: str, labels: Mapping[str, str], policy_type: str) -> bool:
    """Whether ``policy`` isolates a pod of ``namespace`` with ``labels`` in the direction
    ``policy_type`` (``Ingress``, ``Egress``): it is of that namespace, selects the pod and lists
    the direction in its policyTypes."""
    return policy.namespace == namespace and policy_type in policy.policy_types and policy.pod_selector.matches(labels)


def _policy_label(p: NetworkPolicy) -> str:
    return f"{p.namespace}/{p.name}"


class PolicyEngine:
    def __init__(self, policies: Iterable[NetworkPolicy], namespace_labels: Mapping[str, Mapping[str, str]],
                 cluster: Iterable[ClusterPolicy] | None = None):
        # ClusterNetworkPolicies: given, else those ``load_policies`` found beside the policies.
        self.cluster = tuple(sorted(getattr(policies, "cluster", ()) if cluster is None else cluster,
                                    key=lambda c: (c.tier, c.priority, c.name)))
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
            labels.setdefault(NAMESPACE_LABEL, ns)  # set on every namespace since 1.21
            self._ns_cache[ns] = labels
        return labels

    def _selecting(self, pod: Endpoint, direction: str) -> list[NetworkPolicy]:
        key = (pod.namespace, pod.labels, direction)
        found = self._selecting_cache.get(key)
        if found is None:
            kind = "Ingress" if direction == "ingress" else "Egress"
            labels = dict(pod.labels)
            found = [p for p in self.by_namespace.get(pod.namespace, ()) if isolates(p, pod.namespace, labels, kind)]
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
            # The tiers in their order: Admin, then the pod's NetworkPolicies, then (for a pod they
            # do not isolate) Baseline; a tier that decides nothing hands over to the next.
            isolating = None
            for tier_name in ("Admin", "Baseline"):
                if tier_name == "Baseline":
                    isolating = self._selecting(subject, direction)
                    if isolating:
                        break
                tier = self._tier(tier_name, direction, subject, peer, dst, protocol, port)
                if isinstance(tier, Verdict):
                    return tier
                if tier is not None:
                    allowed_by.append(tier)
                    break
            if not isolating:
                continue
            matching = [p for p in isolating if any(self._rule_matches(r, p, peer, dst, protocol, port) for r in (getattr(p, direction) or ()))]
            if not matching:
                names = ", ".join(_policy_label(p) for p in isolating)
                return Verdict(False, denied_by=direction, why=f"{direction} of {subject.namespace}/{subject.name or subject.address} is isolated by {names}; none allows it")
            allowed_by += [_policy_label(p) for p in matching]
        return Verdict(True, allowed_by=tuple(dict.fromkeys(allowed_by)), why="allowed")

    def _tier(self, tier: str, direction: str, subject: Endpoint, peer: Endpoint, dst: Endpoint, protocol: str, port: int):
        """What the ClusterNetworkPolicies of ``tier`` decide for one direction: a denying
        Verdict, the name of the policy that accepts it, or None (no rule matched, or Pass)."""
        if not self.cluster:
            return None
        found = decide(self.cluster, tier, direction, subject, peer, dst, protocol, port, self._ns_labels)
        if found is None or found[0] == "Pass":
            return None
        action, policy, rule = found
        if action == "Accept":
            return policy.label
        who = f"{subject.namespace}/{subject.name or subject.address}"
        return Verdict(False, denied_by=direction, why=f"{direction} of {who} is denied by {policy.label}, rule {rule.name or '?'}")

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
