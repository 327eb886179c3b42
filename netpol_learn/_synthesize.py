"""Synthesis: resolved connections to the smallest set of NetworkPolicies that allows them.

    Resolution  ->  synthesize(resolution, options)  ->  PolicySet (policy model + what was left out)

One policy per workload that sent or received observed traffic, named after the workload, with
its ingress and egress rules; DNS to the cluster resolver in an ``allow-dns`` policy per namespace
(or in each workload's policy); a default-deny per namespace that got policies. Within a policy,
a peer's ports are one list, and peers with the same ports are one rule. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from netpol_learn._flowlog import format_time
from netpol_learn._inventory import PROTOCOLS, LabelSelector, Workload
from netpol_learn._policy import MANAGED_BY, IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule
from netpol_learn._resolve import EXTERNAL, NODE, NODE_LOCAL_DNS, POD, SERVICE_ENDPOINT, UNRESOLVED, Connection, Peer, Resolution

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
#: When --open-ingress-above is off, a port reached from more outside addresses than this is reported.
OPEN_INGRESS_HINT = 10


@dataclass(frozen=True)
class GenerateOptions:
    default_deny: str = "both"  # both, ingress, egress, none
    dns: str = "namespace"  # namespace: an allow-dns policy per namespace; per-workload
    named_ports: bool = False
    aggregate_prefix_v4: int | None = None  # collapse outside addresses into prefixes of this length ...
    aggregate_prefix_v6: int | None = None
    aggregate_threshold: int = 8  # ... when at least this many of a rule's addresses share one
    open_ingress_above: int | None = None  # open a port to any address past this many outside sources
    exclude_namespaces: tuple[str, ...] = ("kube-system",)
    name_prefix: str = ""  # before every generated policy name, to keep clear of policies already there

    def __post_init__(self):
        if self.default_deny not in ISOLATES:
            raise ValueError(f"default_deny: {self.default_deny!r} is not one of {', '.join(ISOLATES)}")
        if self.dns not in DNS_MODES:
            raise ValueError(f"dns: {self.dns!r} is not one of {', '.join(DNS_MODES)}")
        if self.name_prefix and not _NAME_PREFIX.fullmatch(self.name_prefix):
            raise ValueError(f"name prefix {self.name_prefix!r}: use lower-case letters, digits, '-' and '.', starting with a letter or digit")
        if len(self.name_prefix) > 200:
            raise ValueError("name prefix: at most 200 characters (policy names are at most 253)")

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


#: --dns: one allow-dns policy per namespace, or a DNS rule in each workload's policy.
DNS_MODES = ("namespace", "per-workload")
#: --default-deny -> the policy types of each namespace's default-deny policy.
DENIES = {"both": ("Ingress", "Egress"), "ingress": ("Ingress",), "egress": ("Egress",), "none": ()}
#: --default-deny -> the policy types any generated policy may have. With ``none`` only the
#: workloads that get a policy of their own are isolated, in the directions they were seen in.
ISOLATES = {mode: types or ("Ingress", "Egress") for mode, types in DENIES.items()}
NAMESPACE_POLICIES = ("default-deny", "allow-dns")  # the names of the policies that select a whole namespace
_NAME_PREFIX = re.compile(r"[a-z0-9][-a-z0-9.]*")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[NetworkPolicy, ...]
    skipped: tuple[str, ...] = ()  # what could not become a rule, and why (one line each)
    hints: tuple[str, ...] = ()  # options that would change the result
    flows_per_namespace: dict[str, int] = field(default_factory=dict)
    name_prefix: str = ""

    @property
    def workload_policies(self) -> tuple[NetworkPolicy, ...]:
        namespace_wide = {self.name_prefix + n for n in NAMESPACE_POLICIES}
        return tuple(p for p in self.policies if not (p.pod_selector.empty and p.name in namespace_wide))


@dataclass
class _Side:
    """The rules of one direction of one workload's policy, before merging."""

    ports: dict = field(default_factory=lambda: defaultdict(set))  # PolicyPeer -> {PortSpec}
    comments: dict = field(default_factory=dict)  # PolicyPeer -> comment
    external_sources: dict = field(default_factory=lambda: defaultdict(set))  # PortSpec -> {address}
    external: set = field(default_factory=set)  # the peers that are addresses outside the cluster


@dataclass
class _WorkloadTraffic:
    workload: Workload
    ingress: _Side = field(default_factory=_Side)
    egress: _Side = field(default_factory=_Side)
    flows: int = 0
    first: int | None = None
    last: int | None = None
    dns: bool = False

    def saw(self, c: Connection) -> None:
        self.flows += c.flows
        self.first = c.first_seen if self.first is None else min(self.first, c.first_seen)
        self.last = c.last_seen if self.last is None else max(self.last, c.last_seen)


def synthesize(resolution: Resolution, options: GenerateOptions = GenerateOptions(), cluster_ranges: tuple[str, ...] = ()) -> PolicySet:
    workloads = resolution.workloads
    traffic: dict[tuple[str, str], _WorkloadTraffic] = {}
    skipped: set[str] = set()
    dns_peers: dict[str, dict] = defaultdict(dict)  # namespace -> {PolicyPeer: comment}
    dns_ports: dict[str, set] = defaultdict(set)
    flows_per_namespace: dict[str, int] = defaultdict(int)

    peer_cache: dict = {}

    def policy_peer(p: Peer, home: str):
        key = (p, home)
        if key not in peer_cache:
            peer_cache[key] = _peer(p, home, workloads)
        return peer_cache[key]

    def traffic_of(peer: Peer) -> _WorkloadTraffic | None:
        if peer.kind != POD or peer.namespace in options.exclude_namespaces:
            return None
        w = workloads.get((peer.namespace, peer.workload))
        if w is None:
            return None
        if w.selector is None:
            skipped.add(f"{peer.namespace}/{peer.workload}: its pods share no label a selector could use; no policy for it")
            return None
        t = traffic.get(w.key)
        if t is None:
            t = traffic[w.key] = _WorkloadTraffic(w)
        return t

    for c in resolution.connections:
        if c.protocol not in PROTOCOLS:
            skipped.add(f"{_describe(c.client)} -> {_describe(c.server)} {c.protocol}: NetworkPolicy cannot express {c.protocol}")
            continue
        if c.same_node:
            continue  # kubelet probes from the pod's own node are always allowed
        port = _port_spec(c, options.named_ports)
        server = traffic_of(c.server)
        client = traffic_of(c.client)
        for ns in {t.workload.namespace for t in (server, client) if t is not None}:
            flows_per_namespace[ns] += c.flows  # once per namespace, even when both ends are in it
        if server is not None and "Ingress" in options.isolates:
            server.saw(c)
            peer = policy_peer(c.client, server.workload.namespace)
            if peer is None:
                skipped.add(f"ingress of {server.workload.namespace}/{server.workload.ref} from {_describe(c.client)}: {_why_not(c.client)}")
            else:
                server.ingress.ports[peer[0]].add(port)
                server.ingress.comments.setdefault(peer[0], peer[1])
                if c.client.kind == EXTERNAL:
                    server.ingress.external_sources[port].add(c.client.address)
                    server.ingress.external.add(peer[0])
        if c.client.kind == POD and c.client.namespace not in options.exclude_namespaces and _is_dns(c):
            # allow-dns selects every pod of the namespace: it serves even a workload no selector can pick.
            ns = c.client.namespace
            dns_ports[ns].update({PortSpec("UDP", c.port), PortSpec("TCP", c.port)})  # TCP too: large answers
            peer = policy_peer(c.server, ns)
            if peer is not None:
                dns_peers[ns].setdefault(peer[0], peer[1])
        if client is None or "Egress" not in options.isolates:
            continue
        client.saw(c)
        if _is_dns(c):
            client.dns = True
            continue
        peer = policy_peer(c.server, client.workload.namespace)
        if peer is None:
            skipped.add(f"egress of {client.workload.namespace}/{client.workload.ref} to {_describe(c.server)}: {_why_not(c.server)}")
            continue
        client.egress.ports[peer[0]].add(port)
        client.egress.comments.setdefault(peer[0], peer[1])
        if c.server.kind == EXTERNAL:
            client.egress.external.add(peer[0])

    hints: list[str] = []
    policies: list[NetworkPolicy] = []
    # Without a namespace-wide allow-dns (options.namespace_dns), DNS goes into each workload's
    # own policy, and only where that policy isolates egress (open egress needs no DNS rule).
    namespace_dns = options.namespace_dns
    names = _policy_names([t.workload for t in traffic.values()], options.name_prefix)
    for key in sorted(traffic):
        t = traffic[key]
        w = t.workload
        ingress_rules = _rules(t.ingress, options, cluster_ranges, w, hints, ingress=True)
        egress_rules = _rules(t.egress, options, cluster_ranges, w, hints, ingress=False)
        if t.dns and not namespace_dns and (egress_rules or options.egress_denied):
            egress_rules = (_dns_rule(dns_peers[w.namespace], dns_ports[w.namespace]), *egress_rules)
        types = tuple(x for x, rules in (("Ingress", ingress_rules), ("Egress", egress_rules)) if rules)
        if not types:
            continue  # only DNS, covered by the namespace's allow-dns policy (or egress stays open)
        policies.append(
            NetworkPolicy(
                namespace=w.namespace,
                name=names[w.key],
                pod_selector=w.selector,
                policy_types=types,
                ingress=ingress_rules if ingress_rules else None,
                egress=egress_rules if egress_rules else None,
                labels=tuple(MANAGED_BY.items()),
                annotations=(
                    ("netpol-learn.io/flows", str(t.flows)),
                    ("netpol-learn.io/observed", f"{format_time(t.first)}/{format_time(t.last)}"),
                    ("netpol-learn.io/workload", w.ref),
                ),
                comment=_workload_comment(w),
            )
        )
    # Every namespace with an observed workload gets its default-deny, whichever direction it was
    # seen in: what was not seen is denied there too.
    namespaces = {p.namespace for p in policies} | {ns for ns, _ in traffic}
    if namespace_dns:
        for ns in sorted(dns_ports):
            namespaces.add(ns)
            policies.append(
                NetworkPolicy(
                    namespace=ns,
                    name=options.name_prefix + "allow-dns",
                    pod_selector=LabelSelector(),
                    policy_types=("Egress",),
                    egress=(_dns_rule(dns_peers[ns], dns_ports[ns]),),
                    labels=tuple(MANAGED_BY.items()),
                    comment="Every pod of the namespace may ask the cluster DNS: some of them resolved names (UDP, and TCP for large answers).",
                )
            )
    types = DENIES[options.default_deny]
    if types:
        for ns in sorted(namespaces):
            policies.append(
                NetworkPolicy(
                    namespace=ns,
                    name=options.name_prefix + "default-deny",
                    pod_selector=LabelSelector(),
                    policy_types=types,
                    labels=tuple(MANAGED_BY.items()),
                    comment=f"Deny all {' and '.join(t.lower() for t in types)} traffic of the namespace that no other policy here allows.",
                )
            )
    order = {options.name_prefix + n: i for i, n in enumerate(NAMESPACE_POLICIES)}
    policies.sort(key=lambda p: (p.namespace, order.get(p.name, len(order)) if p.pod_selector.empty else len(order), p.name))
    return PolicySet(tuple(policies), tuple(sorted(skipped)), tuple(sorted(set(hints))),
                     {ns: flows_per_namespace[ns] for ns in sorted(namespaces)}, options.name_prefix)


def _is_dns(c: Connection) -> bool:
    dns_port = c.port == 53 or (c.via or "").endswith(":53")
    return c.protocol in ("UDP", "TCP") and dns_port and (c.server.cluster_dns or c.server.kind == NODE_LOCAL_DNS)


def _port_spec(c: Connection, named: bool) -> PortSpec:
    if named and c.port_name:
        return PortSpec(c.protocol, c.port_name)
    return PortSpec(c.protocol, c.port)


def _describe(p: Peer) -> str:
    if p.kind == POD:
        return f"{p.namespace}/{p.workload}"
    return f"{p.kind} {p.address}"


def _why_not(p: Peer) -> str:
    if p.kind == UNRESOLVED:
        return f"unresolved ({p.reason}); no rule"
    if p.kind == POD:
        return "its pods share no label a selector could use; no rule"
    return "no rule"


@lru_cache(maxsize=1 << 16)
def _host(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _peer(p: Peer, home_namespace: str, workloads) -> tuple[PolicyPeer, str] | None:
    """The policy peer for a resolved peer, and the comment a reviewer sees beside it."""
    if p.kind == POD:
        w = workloads.get((p.namespace, p.workload))
        if w is None or w.selector is None:
            return None
        ns_selector = None
        if p.namespace != home_namespace:
            ns_selector = LabelSelector(((NAMESPACE_LABEL, p.namespace),))
        comment = w.ref if p.namespace == home_namespace else f"{p.namespace}/{w.ref}"
        if not w.unique:
            comment += f" (this selector also picks {', '.join(w.also_selects)})"
        return PolicyPeer(pod_selector=w.selector, namespace_selector=ns_selector), comment
    if p.kind == NODE:
        comment = f"node {p.node}" + (f" (host network: {', '.join(p.names)})" if p.names else "")
        return PolicyPeer(ip_block=IpBlock(_host(p.address))), comment
    if p.kind == SERVICE_ENDPOINT:
        return PolicyPeer(ip_block=IpBlock(_host(p.address))), f"endpoint of Service {p.service}"
    if p.kind == NODE_LOCAL_DNS:
        return PolicyPeer(ip_block=IpBlock(_host(p.address))), "NodeLocal DNSCache"
    if p.kind == EXTERNAL:
        return PolicyPeer(ip_block=IpBlock(_host(p.address))), ", ".join(p.names) if p.names else "outside the cluster"
    return None


def _dns_rule(peers: dict, ports: set) -> Rule:
    if not peers:
        # The DNS Service's backends were not in the inventory: CoreDNS's conventional labels.
        peers = {
            PolicyPeer(
                pod_selector=LabelSelector((("k8s-app", "kube-dns"),)),
                namespace_selector=LabelSelector(((NAMESPACE_LABEL, "kube-system"),)),
            ): "cluster DNS (CoreDNS's usual labels: its pods were not in the inventory)"
        }
    ordered = sorted(peers, key=PolicyPeer.sort_key)
    return Rule(
        peers=tuple(PolicyPeer(p.pod_selector, p.namespace_selector, p.ip_block, peers[p]) for p in ordered),
        ports=tuple(sorted(ports or {PortSpec("UDP", 53), PortSpec("TCP", 53)}, key=_port_sort)),
        comment="cluster DNS",
    )


def _port_sort(p: PortSpec) -> tuple:
    return (p.protocol, isinstance(p.port, str), str(p.port).zfill(5))


def _rules(side: _Side, options: GenerateOptions, cluster_ranges, w: Workload, hints: list, ingress: bool) -> tuple[Rule, ...]:
    ports_of = {peer: set(ports) for peer, ports in side.ports.items()}
    comments = dict(side.comments)
    if ingress:
        _open_ingress(side, ports_of, comments, options, cluster_ranges, w, hints)
    if options.aggregate_prefix_v4 or options.aggregate_prefix_v6:
        _aggregate(ports_of, comments, side.external, options, cluster_ranges)
    groups: dict[tuple, list[PolicyPeer]] = defaultdict(list)
    for peer, ports in ports_of.items():
        if ports:
            groups[tuple(sorted(ports, key=_port_sort))].append(peer)
    rules = []
    for ports, peers in groups.items():
        peers.sort(key=PolicyPeer.sort_key)
        rules.append(Rule(tuple(PolicyPeer(p.pod_selector, p.namespace_selector, p.ip_block, comments.get(p)) for p in peers), ports))
    rules.sort(key=lambda r: (r.peers[0].sort_key(), [_port_sort(p) for p in r.ports]))
    return tuple(rules)


def _open_ingress(side: _Side, ports_of: dict, comments: dict, options, cluster_ranges, w: Workload, hints: list) -> None:
    """A port that many outside addresses reached (an ingress controller, a public API) opened to
    any address, the cluster's own ranges excepted; off by default, reported when it would apply."""
    for port, sources in side.external_sources.items():
        n = len(sources)
        if options.open_ingress_above is None:
            if n > OPEN_INGRESS_HINT:
                hints.append(f"{w.namespace}/{w.ref} {port.protocol}/{port.port} was reached from {n} outside addresses: --open-ingress-above {OPEN_INGRESS_HINT} would allow any address instead")
            continue
        if n <= options.open_ingress_above:
            continue
        for address in sources:
            peer = PolicyPeer(ip_block=IpBlock(_host(address)))
            ports_of.get(peer, set()).discard(port)
        for cidr in ("0.0.0.0/0", "::/0"):
            excepts = tuple(r for r in cluster_ranges if ipaddress.ip_network(r).version == ipaddress.ip_network(cidr).version)
            peer = PolicyPeer(ip_block=IpBlock(cidr, excepts))
            ports_of.setdefault(peer, set()).add(port)
            comments[peer] = f"any address outside the cluster: {n} outside addresses reached this port"


def _aggregate(ports_of: dict, comments: dict, external: set, options, cluster_ranges) -> None:
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
            length = options.aggregate_prefix_v4 if net.version == 4 else options.aggregate_prefix_v6
            if length and net.prefixlen > length:
                buckets[net.supernet(new_prefix=length)].append(peer)
        for wide, members in buckets.items():
            if len(members) < options.aggregate_threshold:
                continue
            excepts = tuple(str(c) for c in cluster if c.version == wide.version and c.subnet_of(wide))
            if any(c.version == wide.version and wide.subnet_of(c) for c in cluster):
                continue  # the prefix lies inside a cluster range: never allow it wholesale
            names = sorted({n for m in members for n in comments.get(m, "").split(", ") if n and n != "outside the cluster"})
            for m in members:
                ports_of.pop(m, None)
                comments.pop(m, None)
            peer = PolicyPeer(ip_block=IpBlock(str(wide), excepts))
            ports_of.setdefault(peer, set()).update(ports)
            comments[peer] = f"{len(members)} outside addresses" + (f": {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names else "")


def _policy_names(workloads: list[Workload], prefix: str = "") -> dict[tuple[str, str], str]:
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


def _workload_comment(w: Workload) -> str:
    text = f"{w.ref}: {len(w.pods)} pod(s) seen"
    if w.inferred:
        text += f"; owner inferred ({w.inferred})"
    if not w.unique:
        text += f"; its selector also picks {', '.join(w.also_selects)}"
    return text
