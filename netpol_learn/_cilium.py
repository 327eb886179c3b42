"""CiliumNetworkPolicy output (``generate --flavor cilium``): the same traffic, Cilium's words.

    Resolution  ->  synthesize_cilium(resolution, options, cluster_ranges, dns)  ->  PolicySet of CiliumNetworkPolicy

What differs from the NetworkPolicy flavour (``_synthesize``), whose gathering, naming and
aggregation this module reuses:

- a pod peer is ``fromEndpoints``/``toEndpoints`` with the workload's selector and the peer's
  namespace as the ``k8s:io.kubernetes.pod.namespace`` label, written always: in a namespaced
  CiliumNetworkPolicy a selector without that label means the policy's own namespace (Cilium
  adds the label itself), so writing it changes nothing there and says it to the reader;
- an outside address that DNS answers named is ``toFQDNs: matchName`` (the names the pods asked
  for), no address; more names than ``fqdn_pattern_above`` one level under one parent domain
  become ``matchPattern: "*.parent"``. ``toFQDNs`` learns its addresses from Cilium's DNS proxy,
  so every policy with it (or its namespace's ``allow-dns``) has the DNS rule on the egress to
  the cluster DNS: ``toPorts: 53/ANY`` with ``rules: dns: [matchPattern: "*"]``;
- an outside address without a name is ``toCIDRSet``/``fromCIDRSet`` (/32, /128; aggregated as
  the options say; ``--open-ingress-above`` is ``fromEntities: [world]``);
- the API server (Service ``default/kubernetes``) is ``toEntities: [kube-apiserver]``; a node is
  ``host`` (the pod's own node) or ``remote-node``;
- default deny: a policy that selects an endpoint and has an ``ingress``/``egress`` section
  isolates it in that direction; ``default-deny`` selects every endpoint of the namespace
  (``endpointSelector: {}``) with ``ingress: [{}]`` and/or ``egress: [{}]``: one rule that allows
  nothing, Cilium's documented idiom (an empty list ``[]`` counts as no section at all).
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netpol_learn._flowlog import DnsObservation
from netpol_learn._inventory import LabelSelector
from netpol_learn._policy import MANAGED_BY, IpBlock, PolicyPeer, PortSpec, host_cidr, object_metadata
from netpol_learn._resolve import (API_SERVICE, CLUSTER_DNS_LABEL, CLUSTER_DNS_NAMESPACE, EXTERNAL, NODE, NODE_LOCAL_DNS, POD, SERVICE_ENDPOINT,
                                   Connection, Peer, Resolution, peer_label, workload_label)
from netpol_learn._synthesize import (DENIES, DnsTraffic, GenerateOptions, PolicySet, Side, Traffic, WorkloadTraffic,
                                      aggregate_outside, connection_sides, is_dns, policy_names, ports_to_open, why_not, workload_annotations, workload_comment, namespace_policy_of)

API_VERSION = "cilium.io/v2"
#: The label Cilium gives every endpoint: its namespace.
NAMESPACE_KEY = "k8s:io.kubernetes.pod.namespace"
#: The lookups the DNS proxy lets through (and learns the addresses of): all. A narrower list
#: would refuse the search-list names and in-cluster names the capture did not happen to show.
DNS_PATTERNS = ("*",)
#: Peer kinds, in the order a policy lists their rules.
ENDPOINTS, ENTITIES, FQDNS, CIDRS = "endpoints", "entities", "fqdns", "cidrs"
KINDS = (ENDPOINTS, ENTITIES, FQDNS, CIDRS)
_KEYS = {
    "ingress": {ENDPOINTS: "fromEndpoints", ENTITIES: "fromEntities", CIDRS: "fromCIDRSet"},
    "egress": {ENDPOINTS: "toEndpoints", ENTITIES: "toEntities", FQDNS: "toFQDNs", CIDRS: "toCIDRSet"},
}
_MAX_PORTS = 40  # per toPorts element (the CRD's limit)
_DNS_NAME = re.compile(r"([-a-zA-Z0-9_]+[.]?)+")


@dataclass(frozen=True)
class CiliumPeer:
    """One element of a rule's fromEndpoints/toEndpoints, from/toEntities, toFQDNs or from/toCIDRSet."""

    kind: str
    selector: LabelSelector | None = None  # endpoints: the namespace label and the workload's selector
    entity: str | None = None  # host, remote-node, kube-apiserver, world
    match_name: str | None = None  # fqdns: one name ...
    match_pattern: str | None = None  # ... or a pattern
    cidr: IpBlock | None = None
    comment: str | None = field(default=None, compare=False)

    def to_dict(self):
        if self.kind == ENDPOINTS:
            return self.selector.to_dict()
        if self.kind == ENTITIES:
            return self.entity
        if self.kind == FQDNS:
            return {"matchName": self.match_name} if self.match_name is not None else {"matchPattern": self.match_pattern}
        return self.cidr.to_dict()

    def sort_key(self) -> tuple:
        if self.kind == CIDRS:
            net = ipaddress.ip_network(self.cidr.cidr, strict=False)
            return (KINDS.index(self.kind), net.version, int(net.network_address), net.prefixlen)
        if self.kind == FQDNS:
            return (KINDS.index(self.kind), self.match_name is None, self.match_name or self.match_pattern)
        if self.kind == ENTITIES:
            return (KINDS.index(self.kind), self.entity)
        return (KINDS.index(self.kind), str(self.selector.to_dict()))


@dataclass(frozen=True)
class CiliumRule:
    """An ingress or egress rule: one kind of peer, on any of ``ports`` (None: every port), with
    the DNS proxy's ``dns`` patterns where it is the rule to the cluster DNS. No peers and no
    ports: ``{}``, the rule that allows nothing (default deny)."""

    kind: str | None = None
    peers: tuple[CiliumPeer, ...] = ()
    ports: tuple[PortSpec, ...] | None = None
    dns: tuple[str, ...] = ()
    comment: str | None = field(default=None, compare=False)

    def key(self, direction: str) -> str:
        """The key of its peers: fromEndpoints, toFQDNs, ..."""
        return _KEYS[direction][self.kind]

    @property
    def port_groups(self) -> tuple[tuple[PortSpec, ...], ...]:
        """The ports in toPorts elements of at most 40 each."""
        ports = self.ports or ()
        return tuple(ports[i:i + _MAX_PORTS] for i in range(0, len(ports), _MAX_PORTS))

    def to_dict(self, direction: str) -> dict:
        out: dict = {}
        if self.kind is not None:
            out[self.key(direction)] = [p.to_dict() for p in self.peers]
        if self.ports:
            out["toPorts"] = [
                {"ports": [_port_dict(p) for p in group], **({"rules": {"dns": [{"matchPattern": d} for d in self.dns]}} if self.dns else {})}
                for group in self.port_groups
            ]
        return out


def _port_dict(p: PortSpec) -> dict:
    out = {"port": cilium_port(p), "protocol": p.protocol}
    if p.end_port is not None:
        out["endPort"] = p.end_port
    return out


def cilium_port(p: PortSpec) -> str:
    """A port as Cilium writes it: a string; "0" for every port of the protocol."""
    return "0" if p.port is None else str(p.port)


@dataclass(frozen=True)
class CiliumNetworkPolicy:
    namespace: str
    name: str
    endpoint_selector: LabelSelector
    ingress: tuple[CiliumRule, ...] | None = None  # None: no section (the direction is not isolated by it)
    egress: tuple[CiliumRule, ...] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    comment: str | None = field(default=None, compare=False)

    kind = "CiliumNetworkPolicy"

    @property
    def pod_selector(self) -> LabelSelector:
        """The selector, named as NetworkPolicy's: what the namespace-wide policies are told by."""
        return self.endpoint_selector

    @property
    def policy_types(self) -> tuple[str, ...]:
        """The directions it isolates."""
        return tuple(t for t, rules in (("Ingress", self.ingress), ("Egress", self.egress)) if rules is not None)

    def to_dict(self) -> dict:
        metadata = object_metadata(self.name, self.namespace, self.labels, self.annotations)
        spec: dict = {"endpointSelector": self.endpoint_selector.to_dict()}
        if self.ingress is not None:
            spec["ingress"] = [r.to_dict("ingress") for r in self.ingress]
        if self.egress is not None:
            spec["egress"] = [r.to_dict("egress") for r in self.egress]
        return {"apiVersion": API_VERSION, "kind": self.kind, "metadata": metadata, "spec": spec}


# --- gathering ---------------------------------------------------------------------------------


class _Peers:
    """The Cilium peers of a resolved peer seen from a workload, with their comments; remembered."""

    def __init__(self, workloads, queried: Mapping[str, tuple[str, ...]]):
        self.workloads = workloads
        self.queried = queried
        self._cache: dict = {}

    def __call__(self, p: Peer, home_namespace: str, direction: str, pod_node: str | None) -> list[tuple[CiliumPeer, str]] | None:
        key = (p, home_namespace, direction, pod_node, p.node)
        if key not in self._cache:
            self._cache[key] = self._peers(p, home_namespace, direction, pod_node)
        return self._cache[key]

    def _peers(self, p: Peer, home_namespace: str, direction: str, pod_node: str | None):
        if p.kind == POD:
            w = self.workloads.get((p.namespace, p.workload))
            if w is None or w.selector is None:
                return None
            selector = LabelSelector(((NAMESPACE_KEY, p.namespace), *w.selector.match_labels), w.selector.match_expressions)
            comment = w.ref if p.namespace == home_namespace else workload_label(w)
            if not w.unique:
                comment += f" (this selector also picks {', '.join(w.also_selects)})"
            return [(CiliumPeer(ENDPOINTS, selector=selector), comment)]
        if p.kind == NODE:
            entity = "host" if p.node is not None and p.node == pod_node else "remote-node"
            comment = f"node {p.node}" + (" (the pod's own)" if entity == "host" else "") + (f" (host network: {', '.join(p.names)})" if p.names else "")
            return [(CiliumPeer(ENTITIES, entity=entity), comment)]
        if p.kind == SERVICE_ENDPOINT:
            if p.service == API_SERVICE:
                return [(CiliumPeer(ENTITIES, entity="kube-apiserver"), f"the API server (endpoints of Service {p.service})")]
            return [(CiliumPeer(CIDRS, cidr=IpBlock(host_cidr(p.address))), f"endpoint of Service {p.service}")]
        if p.kind == NODE_LOCAL_DNS:
            return [(CiliumPeer(CIDRS, cidr=IpBlock(host_cidr(p.address))), "NodeLocal DNSCache")]
        if p.kind == EXTERNAL:
            names = self.queried.get(p.address, ()) if direction == "egress" else ()
            if names:
                return [(CiliumPeer(FQDNS, match_name=n), f"seen at {p.address}") for n in names]
            return [(CiliumPeer(CIDRS, cidr=IpBlock(host_cidr(p.address))), ", ".join(p.names) if p.names else "outside the cluster")]
        return None


def queried_names(dns: Iterable[DnsObservation]) -> dict[str, tuple[str, ...]]:
    """Address -> the names pods asked for (the query, not a CNAME's target) that answered with
    it (A, AAAA), as toFQDNs can write them: what the DNS proxy matches."""
    out: dict[str, set[str]] = defaultdict(set)
    for obs in dns:
        name = obs.qname.rstrip(".").lower()
        if not name or len(name) > 253 or not _DNS_NAME.fullmatch(name):
            continue
        for ans in obs.answers:
            if ans.type in ("A", "AAAA"):
                try:
                    address = str(ipaddress.ip_address(ans.data))
                except ValueError:
                    continue
                out[address].add(name)
    return {a: tuple(sorted(n)) for a, n in out.items()}


def gather_cilium(resolution: Resolution, options: GenerateOptions, queried: Mapping[str, tuple[str, ...]]) -> Traffic:
    """As ``_synthesize.gather_traffic``, with Cilium peers on the sides."""
    traffic = Traffic()
    peers = _Peers(resolution.workloads, queried)
    for c in resolution.connections:
        _gather(c, traffic, peers, options)
    return traffic


def _gather(c: Connection, traffic: Traffic, peers: _Peers, options: GenerateOptions) -> None:
    # Kubelet probes from the pod's own node need no rule here either: Cilium lets the host reach its endpoints.
    sides = connection_sides(c, traffic, peers.workloads, options, "not written (the policies allow TCP, UDP and SCTP)")
    if sides is None:
        return
    port, server, client = sides
    if server is not None and "Ingress" in options.isolates:
        server.saw(c)
        found = peers(c.client, server.workload.namespace, "ingress", c.server.node)
        if found is None:
            traffic.skipped.add(f"ingress of {workload_label(server.workload)} from {peer_label(c.client)}: {why_not(c.client)}")
        else:
            for peer, comment in found:
                server.ingress.add(peer, port, comment)
                if c.client.kind == EXTERNAL:
                    server.ingress.external_sources[port].add(c.client.address)
                    server.ingress.external.add(peer)
    if c.client.kind == POD and c.client.namespace not in options.exclude_namespaces and is_dns(c):
        dns = traffic.dns.setdefault(c.client.namespace, DnsTraffic())
        found = peers(c.server, c.client.namespace, "egress", c.client.node)
        if found is not None:
            for peer, comment in found:
                dns.peers.setdefault(peer, comment)
    if client is not None and "Egress" in options.isolates:
        client.saw(c)
        if is_dns(c):
            client.dns = True
            return
        found = peers(c.server, client.workload.namespace, "egress", c.client.node)
        if found is None:
            traffic.skipped.add(f"egress of {workload_label(client.workload)} to {peer_label(c.server)}: {why_not(c.server)}")
            return
        for peer, comment in found:
            client.egress.add(peer, port, comment)
            if c.server.kind == EXTERNAL and peer.kind == CIDRS:
                client.egress.external.add(peer)


# --- building ----------------------------------------------------------------------------------


def synthesize_cilium(resolution: Resolution, options: GenerateOptions = GenerateOptions(), cluster_ranges: tuple[str, ...] = (),
                      dns: Iterable[DnsObservation] = ()) -> PolicySet:
    """The CiliumNetworkPolicies that allow what was observed (``_synthesize.synthesize``'s
    counterpart, same options)."""
    traffic = gather_cilium(resolution, options, queried_names(dns))
    # toFQDNs learns addresses from the DNS proxy: a workload with names needs the DNS rule.
    for t in traffic.workloads.values():
        if any(p.kind == FQDNS for p in t.egress.ports):
            t.dns = True
            traffic.dns.setdefault(t.workload.namespace, DnsTraffic())
    names = policy_names([t.workload for t in traffic.workloads.values()], options.name_prefix)
    policies: list[CiliumNetworkPolicy] = []
    hints: set[str] = set()
    for key in sorted(traffic.workloads):
        t = traffic.workloads[key]
        dns_rules = _dns_rules(traffic.dns.get(t.workload.namespace, DnsTraffic())) if t.dns and not options.namespace_dns else ()
        policy, found = workload_policy(t, names[key], options, cluster_ranges, dns_rules)
        hints.update(found)
        if policy is not None:
            policies.append(policy)
    namespaces = {ns for ns, _ in traffic.workloads}
    if options.namespace_dns:
        namespaces |= set(traffic.dns)
    policies += namespace_policies(namespaces, traffic.dns, options)
    policies.sort(key=lambda p: _policy_order(p, options.name_prefix))
    return PolicySet(tuple(policies), tuple(sorted(traffic.skipped)), tuple(sorted(hints)),
                     {ns: traffic.flows_per_namespace[ns] for ns in sorted(namespaces)}, options.name_prefix, flavor="cilium")


def workload_policy(t: WorkloadTraffic, name: str, options: GenerateOptions = GenerateOptions(), cluster_ranges: tuple[str, ...] = (),
                    dns: tuple[CiliumRule, ...] = ()) -> tuple[CiliumNetworkPolicy | None, tuple[str, ...]]:
    """One workload's policy (None when it would hold no rule) and the hints; ``dns``: the rules
    to the cluster DNS where they belong in this policy (only where it isolates egress)."""
    w = t.workload
    ports_of, comments = _copy(t.ingress)
    hints = _open_ingress(t.ingress.external_sources, ports_of, comments, options, w)
    ingress = _merged(ports_of, comments, t.ingress.external, options, cluster_ranges)
    ports_of, comments = _copy(t.egress)
    _fqdn_patterns(ports_of, comments, options.fqdn_pattern_above)
    egress = _merged(ports_of, comments, t.egress.external, options, cluster_ranges)
    if dns and (egress or options.egress_denied):
        egress = (*dns, *egress)
    if not ingress and not egress:
        return None, hints
    return CiliumNetworkPolicy(
        namespace=w.namespace,
        name=name,
        endpoint_selector=w.selector,
        ingress=ingress or None,
        egress=egress or None,
        labels=tuple(MANAGED_BY.items()),
        annotations=workload_annotations(t),
        comment=workload_comment(w),
    ), hints


def namespace_policies(namespaces: Iterable[str], dns: Mapping[str, DnsTraffic], options: GenerateOptions = GenerateOptions()) -> list[CiliumNetworkPolicy]:
    out = []
    if options.namespace_dns:
        out += [CiliumNetworkPolicy(
            namespace=ns, name=options.name_prefix + "allow-dns", endpoint_selector=LabelSelector(), egress=_dns_rules(dns[ns]),
            labels=tuple(MANAGED_BY.items()),
            comment="Every endpoint of the namespace may ask the cluster DNS, through Cilium's DNS proxy (which toFQDNs rules learn their addresses from).",
        ) for ns in sorted(dns)]
    types = DENIES[options.default_deny]
    if types:
        deny_all = (CiliumRule(),)
        out += [CiliumNetworkPolicy(
            namespace=ns, name=options.name_prefix + "default-deny", endpoint_selector=LabelSelector(),
            ingress=deny_all if "Ingress" in types else None, egress=deny_all if "Egress" in types else None,
            labels=tuple(MANAGED_BY.items()),
            comment=f"Deny all {' and '.join(t.lower() for t in types)} traffic of the namespace that no other policy here allows.",
        ) for ns in sorted(namespaces)]
    return out


def _policy_order(p, prefix: str) -> tuple:
    base = namespace_policy_of(p, prefix)
    order = ("default-deny", "allow-dns")
    return (p.namespace, order.index(base) if base else len(order), p.name)


def _dns_rules(dns: DnsTraffic) -> tuple[CiliumRule, ...]:
    """The egress to the cluster DNS through the DNS proxy: port 53 over UDP and TCP (ANY), every
    lookup let through; one rule per kind of peer (the DNS pods, a NodeLocal DNSCache address)."""
    peers = dict(dns.peers)
    if not peers:
        selector = LabelSelector(((NAMESPACE_KEY, CLUSTER_DNS_NAMESPACE), CLUSTER_DNS_LABEL))
        peers = {CiliumPeer(ENDPOINTS, selector=selector): "cluster DNS (CoreDNS's usual labels: its pods were not seen)"}
    rules = []
    for kind in KINDS:
        group = sorted((p for p in peers if p.kind == kind), key=CiliumPeer.sort_key)
        if group:
            rules.append(CiliumRule(kind, tuple(_with_comment(p, peers[p]) for p in group), (PortSpec("ANY", 53),), DNS_PATTERNS, comment="cluster DNS"))
    return tuple(rules)


def _with_comment(p: CiliumPeer, comment: str | None) -> CiliumPeer:
    return CiliumPeer(p.kind, p.selector, p.entity, p.match_name, p.match_pattern, p.cidr, comment)


def _copy(side: Side) -> tuple[dict, dict]:
    return {peer: set(ports) for peer, ports in side.ports.items()}, dict(side.comments)


def _open_ingress(external_sources: dict, ports_of: dict, comments: dict, options: GenerateOptions, w) -> tuple[str, ...]:
    """A port that more than --open-ingress-above outside addresses reached: from the ``world``
    entity (everything outside the cluster) instead of each address; else the hint."""
    opened, hints = ports_to_open(external_sources, options, w)
    for port, sources in opened:
        n = len(sources)
        for address in sources:
            ports_of.get(CiliumPeer(CIDRS, cidr=IpBlock(host_cidr(address))), set()).discard(port)
        world = CiliumPeer(ENTITIES, entity="world")
        ports_of.setdefault(world, set()).add(port)
        comments[world] = f"anything outside the cluster: {n} outside addresses reached this port"
    return tuple(hints)


def _fqdn_patterns(ports_of: dict, comments: dict, above: int) -> None:
    """More than ``above`` names with the same ports one level under one parent domain (of at
    least two labels: never ``*.com``) become ``matchPattern: "*.parent"``."""
    buckets: dict[tuple, list[CiliumPeer]] = defaultdict(list)
    for peer, ports in ports_of.items():
        if peer.kind == FQDNS and peer.match_name and peer.match_name.count(".") >= 2:
            buckets[(frozenset(ports), peer.match_name.split(".", 1)[1])].append(peer)
    for (ports, parent), members in sorted(buckets.items(), key=lambda kv: kv[0][1]):
        if len(members) <= above:
            continue
        names = sorted(m.match_name for m in members)
        for m in members:
            ports_of.pop(m, None)
            comments.pop(m, None)
        peer = CiliumPeer(FQDNS, match_pattern=f"*.{parent}")
        ports_of.setdefault(peer, set()).update(ports)
        comments[peer] = f"{len(names)} names seen: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"


def _merged(ports_of: dict, comments: dict, external: set, options: GenerateOptions, cluster_ranges) -> tuple[CiliumRule, ...]:
    """Rules merged both ways, as the NetworkPolicy flavour's, one kind of peer per rule;
    outside addresses aggregated first where the options ask."""
    if options.aggregate_prefix or options.aggregate_prefix_v6:
        blocks = {PolicyPeer(ip_block=p.cidr): ports for p, ports in ports_of.items() if p in external}
        block_comments = {PolicyPeer(ip_block=p.cidr): comments.get(p) for p in ports_of if p in external}
        aggregate_outside(blocks, block_comments, set(blocks), options, cluster_ranges)
        for p in [p for p in ports_of if p in external]:
            del ports_of[p]
            comments.pop(p, None)
        for b, ports in blocks.items():
            peer = CiliumPeer(CIDRS, cidr=b.ip_block)
            ports_of.setdefault(peer, set()).update(ports)
            comments[peer] = block_comments.get(b)
    groups: dict[tuple, list[CiliumPeer]] = defaultdict(list)
    for peer, ports in ports_of.items():
        if ports:
            groups[(peer.kind, tuple(sorted(ports, key=PortSpec.sort_key)))].append(peer)
    rules = []
    for (kind, ports), peers in groups.items():
        peers.sort(key=CiliumPeer.sort_key)
        rules.append(CiliumRule(kind, tuple(_with_comment(p, comments.get(p)) for p in peers), ports))
    rules.sort(key=lambda r: (r.peers[0].sort_key(), [p.sort_key() for p in r.ports]))
    return tuple(rules)
