"""Synthesis: resolved connections to the smallest set of NetworkPolicies that allows them.

    Resolution  ->  synthesize(resolution, options)  ->  PolicySet (policy model + what was left out)

One policy per workload that sent or received observed traffic, named after the workload, with
its ingress and egress rules; DNS to the cluster resolver in an ``allow-dns`` policy per namespace
(or in each workload's policy); a default-deny per namespace that got policies. Within a policy,
a peer's ports are one list, and peers with the same ports are one rule. Pure: no I/O.

Three steps, each a plain function of plain data:

    gather_traffic(resolution, options)  ->  Traffic: per workload its ingress and egress Side,
                                             per namespace the DNS its pods asked; what was skipped
    workload_policy(traffic of one workload, name, ...)  ->  its NetworkPolicy, hints
    namespace_policies(namespaces, DNS, options)  ->  allow-dns, default-deny
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netpol_learn._flowlog import format_time
from netpol_learn._inventory import PROTOCOLS, LabelSelector, Workload
from netpol_learn._policy import MANAGED_BY, NAMESPACE_LABEL, IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule, host_cidr
from netpol_learn._resolve import (CLUSTER_DNS_LABEL, CLUSTER_DNS_NAMESPACE, EXTERNAL, NODE, NODE_LOCAL_DNS, POD, SERVICE_ENDPOINT,
                                   UNRESOLVED, Connection, Peer, Resolution, peer_label, workload_label)

#: When --open-ingress-above is off, a port reached from more outside addresses than this is reported.
OPEN_INGRESS_HINT = 10


@dataclass(frozen=True)
class GenerateOptions:
    """How ``generate`` and ``synthesize`` write policies; each field is the option of
    ``netpol-learn generate`` of the same name (``--default-deny``, ``--aggregate-prefix``, ...)."""

    default_deny: str = "both"  # both, ingress, egress, none
    dns: str = "namespace"  # namespace: an allow-dns policy per namespace; per-workload
    named_ports: bool = False
    aggregate_prefix: int | None = None  # collapse outside IPv4 addresses into prefixes of this length ...
    aggregate_prefix_v6: int | None = None
    aggregate_threshold: int = 8  # ... when at least this many of a rule's addresses share one
    open_ingress_above: int | None = None  # open a port to any address past this many outside sources
    include_namespaces: tuple[str, ...] = ()  # namespaces of LEFT_ALONE to write policies for all the same
    name_prefix: str = ""  # before every generated policy name, to keep clear of policies already there
    flavor: str = "networkpolicy"  # networkpolicy: NetworkPolicy objects; cilium: CiliumNetworkPolicy (cilium.io/v2)
    fqdn_pattern_above: int = 10  # cilium: more names than this under one parent domain become one matchPattern
    cluster_baseline: bool = False  # also a ClusterNetworkPolicy (tier Baseline) denying what no policy allows
    baseline_exclude: tuple[str, ...] = ("kube-system",)  # namespaces the baseline leaves alone

    def __post_init__(self):
        if self.default_deny not in ISOLATES:
            raise ValueError(f"default_deny: {self.default_deny!r} is not one of {', '.join(ISOLATES)}")
        if self.dns not in DNS_MODES:
            raise ValueError(f"dns: {self.dns!r} is not one of {', '.join(DNS_MODES)}")
        if self.name_prefix and not _NAME_PREFIX.fullmatch(self.name_prefix):
            raise ValueError(f"name prefix {self.name_prefix!r}: use lower-case letters, digits, '-' and '.', starting with a letter or digit")
        if len(self.name_prefix) > 200:
            raise ValueError("name prefix: at most 200 characters (policy names are at most 253)")
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor: {self.flavor!r} is not one of {', '.join(FLAVORS)}")
        if self.fqdn_pattern_above < 1:
            raise ValueError(f"fqdn pattern threshold: {self.fqdn_pattern_above} is not a number of names (1 or more)")
        if self.cluster_baseline and not DENIES[self.default_deny]:
            raise ValueError("--cluster-baseline denies in the directions --default-deny isolates; with --default-deny none there is none")
        for ns in self.baseline_exclude:
            if not _NAMESPACE.fullmatch(ns):
                raise ValueError(f"baseline exclude: {ns!r} is not a namespace name")

    @property
    def exclude_namespaces(self) -> tuple[str, ...]:
        """The namespaces no policy is written for: LEFT_ALONE, but for those included."""
        return tuple(n for n in LEFT_ALONE if n not in self.include_namespaces)

    @property
    def isolates(self) -> tuple[str, ...]:
        """The directions in which generated policies may isolate pods."""
        return ISOLATES[self.default_deny]

    @property
    def egress_denied(self) -> bool:
        """Whether default-deny isolates the egress of every pod of a namespace."""
        return "Egress" in DENIES[self.default_deny]

    @property
    def namespace_dns(self) -> bool:
        """Whether DNS is one allow-dns policy per namespace. It selects every pod and so isolates
        every pod's egress: only where default-deny does so anyway."""
        return self.dns == "namespace" and self.egress_denied


#: Namespaces left alone unless included: the cluster's own components, whose traffic a capture
#: rarely shows whole.
LEFT_ALONE = ("kube-system",)
#: --dns: one allow-dns policy per namespace, or a DNS rule in each workload's policy.
DNS_MODES = ("namespace", "per-workload")
#: --default-deny -> the policy types of each namespace's default-deny policy.
DENIES = {"both": ("Ingress", "Egress"), "ingress": ("Ingress",), "egress": ("Egress",), "none": ()}
#: --default-deny -> the policy types any generated policy may have. With ``none`` only the
#: workloads that get a policy of their own are isolated, in the directions they were seen in.
ISOLATES = {mode: types or ("Ingress", "Egress") for mode, types in DENIES.items()}
NAMESPACE_POLICIES = ("default-deny", "allow-dns")  # the names of the policies that select a whole namespace
#: --flavor: the kind of objects written.
FLAVORS = ("networkpolicy", "cilium")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME_PREFIX = re.compile(r"[a-z0-9][-a-z0-9.]*")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[NetworkPolicy, ...]
    skipped: tuple[str, ...] = ()  # what could not become a rule, and why (one line each)
    hints: tuple[str, ...] = ()  # options that would change the result
    flows_per_namespace: dict[str, int] = field(default_factory=dict)
    name_prefix: str = ""
    flavor: str = "networkpolicy"
    baseline: object | None = None  # the ClusterNetworkPolicy of --cluster-baseline (``_baseline.ClusterBaseline``)

    @property
    def workload_policies(self) -> tuple[NetworkPolicy, ...]:
        return tuple(p for p in self.policies if namespace_policy_of(p, self.name_prefix) is None)


# --- gathering: resolved connections -> what each workload and namespace was seen doing -------


@dataclass
class Side:
    """The rules of one direction of one workload's policy, before merging."""

    ports: dict = field(default_factory=lambda: defaultdict(set))  # PolicyPeer -> {PortSpec}
    comments: dict = field(default_factory=dict)  # PolicyPeer -> comment (the first one seen)
    external_sources: dict = field(default_factory=lambda: defaultdict(set))  # PortSpec -> {address}
    external: set = field(default_factory=set)  # the peers that are addresses outside the cluster

    def add(self, peer: PolicyPeer, port: PortSpec, comment: str) -> None:
        self.ports[peer].add(port)
        self.comments.setdefault(peer, comment)


@dataclass
class WorkloadTraffic:
    """What one workload was seen doing: its two sides, flow counts, window, and whether it resolved names."""

    workload: Workload
    ingress: Side = field(default_factory=Side)
    egress: Side = field(default_factory=Side)
    flows: int = 0
    first: int | None = None
    last: int | None = None
    dns: bool = False

    def saw(self, c: Connection) -> None:
        self.flows += c.flows
        self.first = c.first_seen if self.first is None else min(self.first, c.first_seen)
        self.last = c.last_seen if self.last is None else max(self.last, c.last_seen)


@dataclass
class DnsTraffic:
    """The cluster DNS that pods of one namespace asked: the peers and ports of its DNS rule."""

    peers: dict = field(default_factory=dict)  # PolicyPeer -> comment
    ports: set = field(default_factory=set)  # {PortSpec}

    def rule(self) -> Rule:
        return _dns_rule(self.peers, self.ports)


@dataclass
class Traffic:
    """Everything ``synthesize`` builds policies from, gathered from the resolved connections."""

    workloads: dict[tuple[str, str], WorkloadTraffic] = field(default_factory=dict)  # Workload.key ->
    dns: dict[str, DnsTraffic] = field(default_factory=dict)  # namespace ->
    flows_per_namespace: Counter = field(default_factory=Counter)
    skipped: set[str] = field(default_factory=set)  # what could not become a rule, and why


class PolicyPeers:
    """The policy peer of a resolved peer seen from a home namespace, and its comment
    (``_policy_peer``), remembered: a busy peer is in thousands of connections."""

    def __init__(self, workloads: Mapping[tuple[str, str], Workload], moving: Mapping[str, tuple[str, ...]] | None = None):
        self.workloads = workloads
        self.moving = moving or {}
        self._cache: dict = {}

    def __call__(self, p: Peer, home_namespace: str) -> tuple[PolicyPeer, str] | None:
        key = (p, home_namespace)
        if key not in self._cache:
            self._cache[key] = _policy_peer(p, home_namespace, self.workloads, self.moving)
        return self._cache[key]


def gather_traffic(resolution: Resolution, options: GenerateOptions = GenerateOptions(), moving: Mapping[str, tuple[str, ...]] | None = None) -> Traffic:
    """Each resolved connection onto the ingress side of its server's workload and the egress
    side of its client's, in the directions the options isolate; DNS onto its namespace.
    ``moving``: the names whose DNS answers changed during the capture -> their addresses, for the comments."""
    traffic = Traffic()
    peers = PolicyPeers(resolution.workloads, moving)
    for c in resolution.connections:
        _gather(c, traffic, peers, options)
    return traffic


def connection_sides(c: Connection, traffic: Traffic, workloads, options: GenerateOptions, inexpressible: str
                     ) -> tuple[PortSpec, WorkloadTraffic | None, WorkloadTraffic | None] | None:
    """(port, the server's and the client's workload traffic) of a connection that may become
    rules, its flows counted in the namespaces of its ends; None for one of a protocol no rule
    can name (skipped with ``inexpressible``) or between a pod and its own node (always allowed)."""
    if c.protocol not in PROTOCOLS:
        traffic.skipped.add(f"{peer_label(c.client)} -> {peer_label(c.server)} {c.protocol}: {inexpressible}")
        return None
    if c.same_node:
        return None  # kubelet probes from the pod's own node are always allowed
    port = port_spec(c, options.named_ports)
    server = workload_traffic(c.server, traffic, workloads, options)
    client = workload_traffic(c.client, traffic, workloads, options)
    for ns in {t.workload.namespace for t in (server, client) if t is not None}:
        traffic.flows_per_namespace[ns] += c.flows  # once per namespace, even when both ends are in it
    return port, server, client


def _gather(c: Connection, traffic: Traffic, peers: PolicyPeers, options: GenerateOptions) -> None:
    sides = connection_sides(c, traffic, peers.workloads, options, f"NetworkPolicy cannot express {c.protocol}")
    if sides is None:
        return
    port, server, client = sides
    if server is not None and "Ingress" in options.isolates:
        _add_skip(traffic, _add_ingress(server, c, port, peers))
    if c.client.kind == POD and c.client.namespace not in options.exclude_namespaces and is_dns(c):
        # allow-dns selects every pod of the namespace: it serves even a workload no selector can pick.
        _add_dns(traffic.dns.setdefault(c.client.namespace, DnsTraffic()), c, peers)
    if client is not None and "Egress" in options.isolates:
        _add_skip(traffic, _add_egress(client, c, port, peers))


def _add_skip(traffic: Traffic, why: str | None) -> None:
    if why is not None:
        traffic.skipped.add(why)


def workload_traffic(peer: Peer, traffic: Traffic, workloads, options: GenerateOptions) -> WorkloadTraffic | None:
    """The traffic record of the workload a peer is, when it gets a policy."""
    if peer.kind != POD or peer.namespace in options.exclude_namespaces:
        return None
    w = workloads.get((peer.namespace, peer.workload))
    if w is None:
        return None
    if w.selector is None:
        traffic.skipped.add(f"{peer_label(peer)}: its pods share no label a selector could use; no policy for it")
        return None
    t = traffic.workloads.get(w.key)
    if t is None:
        t = traffic.workloads[w.key] = WorkloadTraffic(w)
    return t


def _add_ingress(t: WorkloadTraffic, c: Connection, port: PortSpec, peers: PolicyPeers) -> str | None:
    """``c`` into the ingress of its server's workload; what did not become a rule, and why."""
    t.saw(c)
    found = peers(c.client, t.workload.namespace)
    if found is None:
        return f"ingress of {workload_label(t.workload)} from {peer_label(c.client)}: {why_not(c.client)}"
    peer, comment = found
    t.ingress.add(peer, port, comment)
    if c.client.kind == EXTERNAL:
        t.ingress.external_sources[port].add(c.client.address)
        t.ingress.external.add(peer)
    return None


def _add_egress(t: WorkloadTraffic, c: Connection, port: PortSpec, peers: PolicyPeers) -> str | None:
    """``c`` into the egress of its client's workload (DNS: the mark that it resolved names)."""
    t.saw(c)
    if is_dns(c):
        t.dns = True
        return None
    found = peers(c.server, t.workload.namespace)
    if found is None:
        return f"egress of {workload_label(t.workload)} to {peer_label(c.server)}: {why_not(c.server)}"
    peer, comment = found
    t.egress.add(peer, port, comment)
    if c.server.kind == EXTERNAL:
        t.egress.external.add(peer)
    return None


def _add_dns(dns: DnsTraffic, c: Connection, peers: PolicyPeers) -> None:
    dns.ports.update({PortSpec("UDP", c.port), PortSpec("TCP", c.port)})  # TCP too: large answers
    found = peers(c.server, c.client.namespace)
    if found is not None:
        dns.peers.setdefault(*found)


# --- building: the policies ---------------------------------------------------------------


def synthesize(resolution: Resolution, options: GenerateOptions = GenerateOptions(), cluster_ranges: tuple[str, ...] = (),
               moving: Mapping[str, tuple[str, ...]] | None = None) -> PolicySet:
    """The policies that allow what was observed. ``cluster_ranges``: the pod and Service ranges
    and node addresses, which a wide ipBlock (open ingress, aggregation) never covers.
    ``moving``: the outside names whose DNS answers changed during the capture -> every address
    they answered with (the learning status's ``dns_changes``): their ipBlocks' comments list
    them all, and REPORT.md says what would not go stale."""
    moving = dict(moving or {})
    traffic = gather_traffic(resolution, options, moving)
    names = policy_names([t.workload for t in traffic.workloads.values()], options.name_prefix)
    policies: list[NetworkPolicy] = []
    hints: set[str] = set()
    for key in sorted(traffic.workloads):
        t = traffic.workloads[key]
        # Without a namespace-wide allow-dns, DNS goes into each resolving workload's own policy.
        dns = traffic.dns.get(t.workload.namespace, DnsTraffic()).rule() if t.dns and not options.namespace_dns else None
        policy, found = workload_policy(t, names[key], options, cluster_ranges, dns)
        hints.update(found)
        if policy is not None:
            policies.append(policy)
    # Every namespace with an observed workload gets its default-deny, whichever direction it was
    # seen in: what was not seen is denied there too.
    namespaces = {ns for ns, _ in traffic.workloads}
    if options.namespace_dns:
        namespaces |= set(traffic.dns)
    policies += namespace_policies(namespaces, traffic.dns, options)
    policies.sort(key=lambda p: _policy_order(p, options.name_prefix))
    if "Egress" in options.isolates:
        hints.update(moving_name_hints(resolution, moving))
    return PolicySet(tuple(policies), tuple(sorted(traffic.skipped)), tuple(sorted(hints)),
                     {ns: traffic.flows_per_namespace[ns] for ns in sorted(namespaces)}, options.name_prefix)


def workload_policy(t: WorkloadTraffic, name: str, options: GenerateOptions = GenerateOptions(),
                    cluster_ranges: tuple[str, ...] = (), dns: Rule | None = None) -> tuple[NetworkPolicy | None, tuple[str, ...]]:
    """One workload's policy (None when it would hold no rule), and the hints for options that
    would change it. ``dns``: the rule to the cluster DNS when it belongs in this policy; it is
    written only where the policy isolates egress (open egress needs no DNS rule)."""
    w = t.workload
    ingress, hints = _ingress_rules(t.ingress, options, cluster_ranges, w)
    egress = _rules(t.egress, options, cluster_ranges)
    if dns is not None and (egress or options.egress_denied):
        egress = (dns, *egress)
    types = tuple(x for x, rules in (("Ingress", ingress), ("Egress", egress)) if rules)
    if not types:
        return None, hints  # only DNS, covered by the namespace's allow-dns policy (or egress stays open)
    return NetworkPolicy(
        namespace=w.namespace,
        name=name,
        pod_selector=w.selector,
        policy_types=types,
        ingress=ingress if ingress else None,
        egress=egress if egress else None,
        labels=tuple(MANAGED_BY.items()),
        annotations=workload_annotations(t),
        comment=workload_comment(w),
    ), hints


def workload_annotations(t: WorkloadTraffic) -> tuple[tuple[str, str], ...]:
    """A workload policy's annotations: its flows, the observation window and the workload (never
    the time it was written, so that the same inputs give the same files)."""
    return (
        ("netpol-learn.io/flows", str(t.flows)),
        ("netpol-learn.io/observed", f"{format_time(t.first)}/{format_time(t.last)}"),
        ("netpol-learn.io/workload", t.workload.ref),
    )


def namespace_policies(namespaces: Iterable[str], dns: Mapping[str, DnsTraffic], options: GenerateOptions = GenerateOptions()) -> list[NetworkPolicy]:
    """The policies that select every pod of a namespace: ``allow-dns`` where pods asked the
    cluster DNS (when DNS is namespace-wide), and ``default-deny`` in each of ``namespaces``."""
    out = []
    if options.namespace_dns:
        out += [_allow_dns(ns, dns[ns], options.name_prefix) for ns in sorted(dns)]
    types = DENIES[options.default_deny]
    if types:
        out += [_default_deny(ns, types, options.name_prefix) for ns in sorted(namespaces)]
    return out


def _allow_dns(namespace: str, dns: DnsTraffic, prefix: str) -> NetworkPolicy:
    return NetworkPolicy(
        namespace=namespace,
        name=prefix + "allow-dns",
        pod_selector=LabelSelector(),
        policy_types=("Egress",),
        egress=(dns.rule(),),
        labels=tuple(MANAGED_BY.items()),
        comment="Every pod of the namespace may ask the cluster DNS: some of them resolved names (UDP, and TCP for large answers).",
    )


def _default_deny(namespace: str, types: tuple[str, ...], prefix: str) -> NetworkPolicy:
    return NetworkPolicy(
        namespace=namespace,
        name=prefix + "default-deny",
        pod_selector=LabelSelector(),
        policy_types=types,
        labels=tuple(MANAGED_BY.items()),
        comment=f"Deny all {' and '.join(t.lower() for t in types)} traffic of the namespace that no other policy here allows.",
    )


def namespace_policy_of(policy: NetworkPolicy, prefix: str = "") -> str | None:
    """Which of the namespace-wide policies (``default-deny``, ``allow-dns``) a generated policy
    is, or None for a workload's own."""
    if policy.pod_selector.empty:
        for base in NAMESPACE_POLICIES:
            if policy.name == prefix + base:
                return base
    return None


def _policy_order(p: NetworkPolicy, prefix: str) -> tuple:
    """By namespace; in each, default-deny, allow-dns, then the workloads' policies by name."""
    base = namespace_policy_of(p, prefix)
    return (p.namespace, NAMESPACE_POLICIES.index(base) if base else len(NAMESPACE_POLICIES), p.name)


def is_dns(c: Connection) -> bool:
    dns_port = c.port == 53 or (c.via or "").endswith(":53")
    return c.protocol in ("UDP", "TCP") and dns_port and (c.server.cluster_dns or c.server.kind == NODE_LOCAL_DNS)


def port_spec(c: Connection, named: bool) -> PortSpec:
    if named and c.port_name:
        return PortSpec(c.protocol, c.port_name)
    return PortSpec(c.protocol, c.port)


def why_not(p: Peer) -> str:
    if p.kind == UNRESOLVED:
        return f"unresolved ({p.reason}); no rule"
    if p.kind == POD:
        return "its pods share no label a selector could use; no rule"
    return "no rule"


def _policy_peer(p: Peer, home_namespace: str, workloads, moving: Mapping[str, tuple[str, ...]] | None = None) -> tuple[PolicyPeer, str] | None:
    """The policy peer for a resolved peer, and the comment a reviewer sees beside it."""
    if p.kind == POD:
        w = workloads.get((p.namespace, p.workload))
        if w is None or w.selector is None:
            return None
        ns_selector = None
        if p.namespace != home_namespace:
            ns_selector = LabelSelector(((NAMESPACE_LABEL, p.namespace),))
        comment = w.ref if p.namespace == home_namespace else workload_label(w)
        if not w.unique:
            comment += f" (this selector also picks {', '.join(w.also_selects)})"
        return PolicyPeer(pod_selector=w.selector, namespace_selector=ns_selector), comment
    if p.kind == NODE:
        comment = f"node {p.node}" + (f" (host network: {', '.join(p.names)})" if p.names else "")
        return PolicyPeer(ip_block=IpBlock(host_cidr(p.address))), comment
    if p.kind == SERVICE_ENDPOINT:
        return PolicyPeer(ip_block=IpBlock(host_cidr(p.address))), f"endpoint of Service {p.service}"
    if p.kind == NODE_LOCAL_DNS:
        return PolicyPeer(ip_block=IpBlock(host_cidr(p.address))), "NodeLocal DNSCache"
    if p.kind == EXTERNAL:
        comment = ", ".join(p.names) if p.names else "outside the cluster"
        moved = [n for n in p.names if n in (moving or {})]
        if moved:  # the names still go first: aggregation reads them back from before the "; "
            comment += "; " + "; ".join(f"{n} answered {', '.join(moving[n])} during the capture" for n in moved)
        return PolicyPeer(ip_block=IpBlock(host_cidr(p.address))), comment
    return None


def moving_name_hints(resolution: Resolution, moving: Mapping[str, tuple[str, ...]]) -> set[str]:
    """REPORT.md's line for each moving name that a workload connected to."""
    hints = set()
    for c in resolution.connections:
        if c.server.kind == EXTERNAL and c.client.kind == POD:
            for n in c.server.names:
                if n in moving:
                    hints.add(f"{n} answered {len(moving[n])} addresses during the capture ({', '.join(moving[n])}): an ipBlock per address "
                              f"allows only those and goes stale when the name moves on; --flavor cilium allows the name itself (toFQDNs), "
                              f"--aggregate-prefix (with --aggregate-threshold) a wider block")
    return hints


def _dns_rule(peers: dict, ports: set) -> Rule:
    if not peers:
        # The DNS Service's backends were not in the inventory: CoreDNS's conventional labels.
        peers = {
            PolicyPeer(
                pod_selector=LabelSelector((CLUSTER_DNS_LABEL,)),
                namespace_selector=LabelSelector(((NAMESPACE_LABEL, CLUSTER_DNS_NAMESPACE),)),
            ): "cluster DNS (CoreDNS's usual labels: its pods were not in the inventory)"
        }
    ordered = sorted(peers, key=PolicyPeer.sort_key)
    return Rule(
        peers=tuple(PolicyPeer(p.pod_selector, p.namespace_selector, p.ip_block, peers[p]) for p in ordered),
        ports=tuple(sorted(ports or {PortSpec("UDP", 53), PortSpec("TCP", 53)}, key=PortSpec.sort_key)),
        comment="cluster DNS",
    )


def _ingress_rules(side: Side, options: GenerateOptions, cluster_ranges, w: Workload) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """The ingress rules, ports that many outside addresses reached opened first; and the hints."""
    ports_of, comments = _working_copy(side)
    hints = _open_ingress(side.external_sources, ports_of, comments, options, cluster_ranges, w)
    return _merged_rules(ports_of, comments, side.external, options, cluster_ranges), hints


def _rules(side: Side, options: GenerateOptions, cluster_ranges) -> tuple[Rule, ...]:
    return _merged_rules(*_working_copy(side), side.external, options, cluster_ranges)


def _working_copy(side: Side) -> tuple[dict, dict]:
    return {peer: set(ports) for peer, ports in side.ports.items()}, dict(side.comments)


def _merged_rules(ports_of: dict, comments: dict, external: set, options: GenerateOptions, cluster_ranges) -> tuple[Rule, ...]:
    """Rules merged both ways: a peer's ports are one list, and peers with the same ports one
    rule; outside addresses aggregated first where the options ask (``ports_of`` and ``comments``
    change in place)."""
    if options.aggregate_prefix or options.aggregate_prefix_v6:
        aggregate_outside(ports_of, comments, external, options, cluster_ranges)
    groups: dict[tuple, list[PolicyPeer]] = defaultdict(list)
    for peer, ports in ports_of.items():
        if ports:
            groups[tuple(sorted(ports, key=PortSpec.sort_key))].append(peer)
    rules = []
    for ports, peers in groups.items():
        peers.sort(key=PolicyPeer.sort_key)
        rules.append(Rule(tuple(PolicyPeer(p.pod_selector, p.namespace_selector, p.ip_block, comments.get(p)) for p in peers), ports))
    rules.sort(key=lambda r: (r.peers[0].sort_key(), [p.sort_key() for p in r.ports]))
    return tuple(rules)


def ports_to_open(external_sources: dict, options: GenerateOptions, w: Workload) -> tuple[list, list[str]]:
    """The (port, outside sources) that more than --open-ingress-above outside addresses
    reached, and, when the option is off, the hints naming the ports where it would apply."""
    opened, hints = [], []
    for port, sources in external_sources.items():
        n = len(sources)
        if options.open_ingress_above is None:
            if n > OPEN_INGRESS_HINT:
                hints.append(f"{workload_label(w)} {port.protocol}/{port.port} was reached from {n} outside addresses: --open-ingress-above {OPEN_INGRESS_HINT} would allow any address instead")
        elif n > options.open_ingress_above:
            opened.append((port, sources))
    return opened, hints


def _open_ingress(external_sources: dict, ports_of: dict, comments: dict, options, cluster_ranges, w: Workload) -> tuple[str, ...]:
    """A port that many outside addresses reached (an ingress controller, a public API) opened to
    any address, the cluster's own ranges excepted (``ports_of`` and ``comments`` change in
    place); off by default: then the hints say where it would apply."""
    opened, hints = ports_to_open(external_sources, options, w)
    for port, sources in opened:
        n = len(sources)
        for address in sources:
            peer = PolicyPeer(ip_block=IpBlock(host_cidr(address)))
            ports_of.get(peer, set()).discard(port)
        for cidr in ("0.0.0.0/0", "::/0"):
            excepts = tuple(r for r in cluster_ranges if ipaddress.ip_network(r).version == ipaddress.ip_network(cidr).version)
            peer = PolicyPeer(ip_block=IpBlock(cidr, excepts))
            ports_of.setdefault(peer, set()).add(port)
            comments[peer] = f"any address outside the cluster: {n} outside addresses reached this port"
    return tuple(hints)


def aggregate_outside(ports_of: dict, comments: dict, external: set, options, cluster_ranges) -> None:
    """Outside addresses with the same ports collapse into a wider prefix when at least
    ``aggregate_threshold`` of them share it; cluster ranges inside it go into ``except``."""
    by_ports: dict[frozenset, list[PolicyPeer]] = defaultdict(list)
    for peer, ports in ports_of.items():
        if peer in external:
            by_ports[frozenset(ports)].append(peer)
    cluster = [ipaddress.ip_network(r) for r in cluster_ranges]
    for ports, peers in by_ports.items():
        buckets: dict = defaultdict(list)
        for peer in peers:
            net = ipaddress.ip_network(peer.ip_block.cidr)
            length = options.aggregate_prefix if net.version == 4 else options.aggregate_prefix_v6
            if length and net.prefixlen > length:
                buckets[net.supernet(new_prefix=length)].append(peer)
        for wide, members in buckets.items():
            if len(members) < options.aggregate_threshold:
                continue
            excepts = tuple(str(c) for c in cluster if c.version == wide.version and c.subnet_of(wide))
            if any(c.version == wide.version and wide.subnet_of(c) for c in cluster):
                continue  # the prefix lies inside a cluster range: never allow it wholesale
            names = sorted({n for m in members for n in comments.get(m, "").split("; ")[0].split(", ") if n and n != "outside the cluster"})
            for m in members:
                ports_of.pop(m, None)
                comments.pop(m, None)
            peer = PolicyPeer(ip_block=IpBlock(str(wide), excepts))
            ports_of.setdefault(peer, set()).update(ports)
            comments[peer] = f"{len(members)} outside addresses" + (f": {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names else "")


def policy_names(workloads: list[Workload], prefix: str = "") -> dict[tuple[str, str], str]:
    """A policy is named after its workload (``api``); where two workloads of a namespace share a
    name, or a workload is named like a namespace-wide policy, the kind is added
    (``statefulset-api``); where even that is taken, a short hash of the kind and name. Names are
    DNS-1123 subdomains of at most 253 characters, unique within a namespace, and depend only
    on the workloads, not on the order they come in."""
    by_namespace: dict[str, list[Workload]] = defaultdict(list)
    for w in workloads:
        by_namespace[w.namespace].append(w)
    out: dict[tuple[str, str], str] = {}
    for ns_workloads in by_namespace.values():
        ns_workloads.sort(key=lambda w: (w.kind, w.name))
        taken = {prefix + n for n in NAMESPACE_POLICIES}
        count: dict[str, int] = defaultdict(int)
        for w in ns_workloads:
            count[_dns_name(prefix + w.name.lower())] += 1
        later = []
        for w in ns_workloads:  # first, the names no other workload or namespace policy claims
            name = _dns_name(prefix + w.name.lower())
            if count[name] == 1 and name not in taken:
                out[w.key] = name
                taken.add(name)
            else:
                later.append(w)
        wanted: dict[str, int] = defaultdict(int)
        for w in later:
            wanted[_dns_name(f"{prefix}{w.kind.lower()}-{w.name.lower()}")] += 1
        for w in later:  # then kind-name, and a hash where even that is claimed
            name = _dns_name(f"{prefix}{w.kind.lower()}-{w.name.lower()}")
            if name in taken or wanted[name] > 1:
                name = _dns_name(name, hashlib.sha256(f"{w.kind}/{w.name}".encode()).hexdigest()[:8])
            out[w.key] = name
            taken.add(name)
    return out


def _dns_name(name: str, suffix: str = "") -> str:
    """``name`` (with ``-suffix``) as a DNS-1123 subdomain of at most 253 characters; a name cut
    short ends in a hash of the whole, so two long names stay apart."""
    name = re.sub(r"[^-a-z0-9.]", "-", name).strip("-.") or "workload"
    full = f"{name}-{suffix}" if suffix else name
    if len(full) <= 253 and _DNS1123.fullmatch(full):
        return full
    digest = suffix or hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:253 - len(digest) - 1].rstrip('-.')}-{digest}"


def workload_comment(w: Workload) -> str:
    text = f"{w.ref}: {len(w.pods)} pod(s) seen"
    if w.inferred:
        text += f"; owner inferred ({w.inferred})"
    if not w.unique:
        text += f"; its selector also picks {', '.join(w.also_selects)}"
    return text
