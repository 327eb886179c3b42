"""Resolution: every address of the flow log to what it was in the cluster when the flow was seen.

    flow log + inventory  ->  Resolution(connections, report)

Each end of a flow resolves to exactly one ``Peer``: a pod of a workload, a node (host-network
pods resolve here too and are named in ``names``, since NetworkPolicy cannot select them), an
endpoint of a Service without a selector (the API server behind ``default/kubernetes``), a
NodeLocal DNSCache address, an address outside the cluster (with the DNS names that answered with
it), or unresolved (inside the pod or service ranges, but held by no pod at that time; or held by
more than one: ambiguous). A server address that is a Service's ClusterIP, external IP or load
balancer IP (or a node address on a NodePort) resolves to the Service's backend pods on their
target port, named ports resolved. What a flow record says of an address comes first: the pod it
names (when the inventory knows it), then the reserved entity it gives (Cilium's host and
remote-node are nodes, kube-apiserver the API server), then the inventory's holders at the time
(docs/resolution.md). Everything here is pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from netpol_learn._flowlog import HEURISTIC_METHODS, NEEDS, Flow, FlowLog, format_time
from netpol_learn._inventory import PROTOCOLS, Inventory, Node, Pod, Service, Workload
from netpol_learn._text import counted

POD, NODE, SERVICE_ENDPOINT, NODE_LOCAL_DNS, EXTERNAL, UNRESOLVED = (
    "pod", "node", "service-endpoint", "node-local-dns", "external", "unresolved",
)
PEER_KINDS = (POD, NODE, SERVICE_ENDPOINT, NODE_LOCAL_DNS, EXTERNAL, UNRESOLVED)
#: Where the cluster DNS runs and how its pods are labelled (CoreDNS and kube-dns alike).
CLUSTER_DNS_NAMESPACE = "kube-system"
CLUSTER_DNS_LABEL = ("k8s-app", "kube-dns")
#: The Service in front of the API server: a flow record's ``kube-apiserver`` is its endpoint.
API_SERVICE = "default/kubernetes"
#: How an unresolved peer's reason starts when several pods held the address at that time.
AMBIGUOUS = "ambiguous"
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
#: The default tolerance between the capture clock and the API's (``--clock-skew``), ns.
DEFAULT_CLOCK_SKEW = 2 * 10**9
#: Traffic this close before an address's first pod started (or after its last one ended), with
#: no pod holding it then, is evidence that the capture clock is off.
CLOCK_CHECK_WINDOW = 10 * 60 * 10**9
#: The lowest port of the ephemeral range, where clients' ports come from.
EPHEMERAL_LOW = 32768
#: Why a rule was not written for a heuristic-only connection to an undeclared ephemeral port.
NOT_WRITTEN_EPHEMERAL = "seen only mid-stream, to an ephemeral port the server's pods do not declare"


@dataclass(frozen=True, order=True)
class Peer:
    kind: str
    address: str
    namespace: str | None = None
    workload: str | None = None  # "Deployment/api"
    node: str | None = field(default=None, compare=False)  # a pod's node differs between replicas
    service: str | None = None  # "namespace/name" for a Service's endpoints without a selector
    names: tuple[str, ...] = ()  # DNS names (external), host-network pods (node)
    reason: str | None = None  # unresolved: why
    cluster_dns: bool = False


@dataclass(frozen=True)
class Connection:
    """Observed traffic from a client peer to a server peer on the server's own port."""

    client: Peer
    server: Peer
    protocol: str
    port: int | None  # the server pod's port: a Service's target port, not the Service port
    port_name: str | None  # the name of that container port, when the pod declares it
    via: str | None  # "namespace/name:port" of the Service the client addressed, if any
    flows: int
    packets: int
    bytes: int
    connections: int
    first_seen: int
    last_seen: int
    same_node: bool = False  # a node talking to a pod on itself (kubelet probes): always allowed
    # Every connection of it was seen only mid-stream (its direction from a port heuristic) or
    # found by the sniffer's socket scan: it was open before the capture began.
    mid_stream: bool = False
    # An end was attributed by inference between two snapshots (docs/resolution.md).
    inferred: bool = False


@dataclass(frozen=True)
class Report:
    flows_by_kind: dict[str, int]  # "client-kind -> server-kind": flows
    unresolved: tuple[tuple[str, str, int], ...]  # (address, reason, flows)
    ambiguous: tuple[tuple[str, str, int], ...]
    workloads_not_unique: tuple[tuple[str, str, tuple[str, ...]], ...]  # (namespace, workload, also selects)
    workloads_unselectable: tuple[tuple[str, str], ...]
    workloads_inferred: tuple[tuple[str, str, str], ...]
    not_expressible: int  # flows of protocols NetworkPolicy cannot express (ICMP, ...)
    notes: tuple[str, ...] = ()
    # Traffic that is no evidence of a need: (client, server, protocol, port, evidence, connections)
    # with peers as ``peer_label`` names them and evidence refused, unanswered, stale or dropped.
    attempts: tuple[tuple[str, str, str, int | None, str, int], ...] = ()
    # Rules not written: (client, server, protocol, port, why), such as a port-heuristic flow to an
    # ephemeral port the server pod does not declare.
    not_written: tuple[tuple[str, str, str, int | None, str], ...] = ()
    # Attributions made by inference between snapshots: (peer, address, flows).
    inferred: tuple[tuple[str, str, int], ...] = ()
    clock_warning: str | None = None  # "the capture clock looks about 30 s behind the API's"


@dataclass(frozen=True)
class Resolution:
    connections: tuple[Connection, ...]
    report: Report
    workloads: dict[tuple[str, str], Workload] = field(default_factory=dict)


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class ResolveOptions:
    """How resolution treats time: ``clock_skew`` (ns) is the tolerance between the capture's
    clock and the API's: traffic within it of an address handover is ambiguous, never attributed;
    ``inference`` allows attributing traffic to a pod that two snapshots bracket (it was shown by
    the earlier and gone by the later): with it off, such traffic is unresolved."""

    clock_skew: int = DEFAULT_CLOCK_SKEW
    inference: bool = True


@dataclass(frozen=True)
class _Tenure:
    """When one pod held one address: certainly from ``start`` to ``end`` (None: open), and by
    inference up to ``end_by``."""

    pod: Pod
    start: float
    end: float
    end_by: float


_INF = float("inf")


class Resolver:
    """Indexes of an inventory, and lookups of addresses at a time."""

    def __init__(self, inventory: Inventory, dns: Iterable = (), options: ResolveOptions = ResolveOptions(), endpoints: Iterable = ()):
        self.inv = inventory
        self.options = options
        self.skew = options.clock_skew
        self.pods = {p.key: p for p in inventory.pods}
        self.pods_by_ip, self.host_pods_by_node = _pod_addresses(inventory.pods)
        self.tenures = {
            ip: sorted((_tenure(p) for p in pods), key=lambda t: (t.start, t.pod.key)) for ip, pods in self.pods_by_ip.items()
        }
        self.node_by_ip = _node_addresses(inventory.nodes)
        # The nodes that flow records' ``host`` endpoints name, by address: a node's name where
        # the inventory does not know the address (Cilium's cilium_host address, or no inventory).
        self.record_node_by_ip = {_canon(e.address): e.node for e in sorted(endpoints, key=lambda e: e.key)
                                  if e.entity == "host" and e.node}
        self.service_by_ip, self.service_by_node_port = _service_addresses(inventory.services)
        self.slices = defaultdict(list)
        for s in inventory.endpoint_slices:
            self.slices[(s.namespace, s.service)].append(s)
        self.workloads = {w.key: w for w in inventory.workloads}
        self.pod_nets = [ipaddress.ip_network(c) for c in inventory.pod_cidrs]
        self.service_nets = [ipaddress.ip_network(c) for c in inventory.service_cidrs]
        self.dns_names = _dns_names(dns)
        self.cluster_dns_pods = {p.key for p in inventory.pods if is_cluster_dns(p)}
        # Lookups remembered: a capture names the same addresses and Services thousands of times.
        self._endpoint_cache: dict = {}
        self._fixed: dict = {}
        self._pod_peers: dict = {}
        self._declared: dict = {}  # (namespace, workload) -> its pods' declared ports
        # (address, ns its traffic came before its pod's start) for the clock check.
        self.early: list[tuple[str, int]] = []

    # --- one address ---------------------------------------------------------------------

    def peers_at(self, address: str, first: int, last: int, port: int | None = None,
                 pods: tuple[str, ...] = (), entity: str = "") -> list[tuple[Peer, bool]]:
        """[(peer, inferred)] for the address in a run of activity from ``first`` to ``last``: one,
        or two when the address changed hands within the run.

        ``pods`` are the pods that a live sniffer or a flow record named for the address then:
        one that the inventory knows decides. Then ``entity``, the reserved identity a flow
        record gave the address (``Flow.src_entity``, ``dst_entity``): a node, or the API
        server (docs/resolution.md, "Identities from flow records"). Otherwise the holders at
        the run's start and at its end, each within the clock tolerance (two candidates at one
        instant are ambiguous); when neither instant had a holder, the one pod that held the
        address in between."""
        address = _canon(address)
        if len(pods) == 1:
            ns, _, name = pods[0].partition("/")
            pod = self.pods.get((ns, name))
            if pod is not None and not pod.host_network:
                return [(self._pod_peer(pod), False)]
        if entity:  # host, remote-node, kube-apiserver (the flow log's ENTITIES but pod)
            return [(self._entity_peer(address, entity), False)]
        tenures = self.tenures.get(address)
        if not tenures:
            return [(self._timeless(address, port), False)]
        skew = self.skew
        if len(tenures) == 1:  # the usual case: one pod ever held it
            t = tenures[0]
            if t.start - skew <= first and last <= t.end + skew:
                return [(self._pod_peer(t.pod), False)]
        ends = [self._at(address, tenures, first)]
        if last != first:
            ends.append(self._at(address, tenures, last))
        if all(peer is None for peer, _ in ends):
            inside = [t for t in tenures if t.start <= last and first <= t.end]
            if len(inside) == 1:
                return [(self._pod_peer(inside[0].pod), False)]
            if len(inside) > 1:
                return [(self._ambiguous(address, [t.pod for t in inside]), False)]
        out = []
        for (peer, inferred), instant in zip(ends, (first, last)):
            if peer is None:
                peer = self._timeless(address, port)
                if instant == first:
                    self._clock_evidence(address, tenures, first)
            if (peer, inferred) not in out:
                out.append((peer, inferred))
        return out

    def _at(self, address: str, tenures: list[_Tenure], t: int) -> tuple[Peer | None, bool]:
        """(peer, inferred) of the address at the instant ``t``: a pod, an ambiguous or refused
        attribution (unresolved), or None when no pod held it then."""
        skew = self.skew
        near = [x for x in tenures if x.start - skew <= t <= x.end_by + skew]
        if len(near) > 1:
            return self._ambiguous(address, [x.pod for x in near], within=skew), False
        if not near:
            return None, False
        x = near[0]
        if t <= x.end + skew:
            return self._pod_peer(x.pod), False
        if not self.options.inference:
            return Peer(UNRESOLVED, address, reason=(
                f"held by {_pod_label(x.pod)} until {format_time(int(x.end))} (the last snapshot that showed it); "
                "after that only by inference between snapshots, refused by --no-inference")), False
        return self._pod_peer(x.pod), True

    def _entity_peer(self, address: str, entity: str) -> Peer:
        """The peer of an address that a flow record gave a reserved identity: ``host`` and
        ``remote-node`` a node (named by the inventory, else by the records' host endpoints, else
        its address), ``kube-apiserver`` the API server as the Service ``default/kubernetes``
        without a selector has it (an ``ipBlock`` on the address and port)."""
        fixed = self._fixed.get((address, entity))
        if fixed is None:
            if entity == "kube-apiserver":
                fixed = Peer(SERVICE_ENDPOINT, address, service=API_SERVICE)
            else:
                node = self.node_by_ip.get(address) or self.record_node_by_ip.get(address) or address
                fixed = Peer(NODE, address, node=node, names=tuple(sorted(self.host_pods_by_node.get(node, ()))))
            self._fixed[(address, entity)] = fixed
        return fixed

    def _clock_evidence(self, address: str, tenures: list[_Tenure], first: int) -> None:
        """A run that began before the pod it ran into existed, with no pod holding the address
        before: by how much (ns), as evidence that the capture clock is off."""
        later = [x for x in tenures if x.start > first]
        earlier = [x for x in tenures if x.end_by < first]
        if later and (not earlier or first - max(x.end_by for x in earlier) > CLOCK_CHECK_WINDOW):
            offset = int(min(x.start for x in later) - first)
            if offset <= CLOCK_CHECK_WINDOW:
                self.early.append((address, offset))

    def _ambiguous(self, address: str, pods: list[Pod], within: int = 0) -> Peer:
        names = ", ".join(sorted({_pod_label(p) for p in pods}))
        near = f" (within the clock tolerance of {within / 1e9:g} s)" if within else ""
        return Peer(UNRESOLVED, address, reason=f"{AMBIGUOUS}: held by {names} at that time{near}")

    def _timeless(self, address: str, port: int | None) -> Peer:
        fixed = self._fixed.get((address, port == 53))
        if fixed is None:
            fixed = self._fixed[(address, port == 53)] = self._timeless_peer(address, port)
        return fixed

    def _timeless_peer(self, address: str, port: int | None) -> Peer:
        """What an address is when no pod held it: the same whatever the time."""
        node = self.node_by_ip.get(address)
        if node is not None:
            return Peer(NODE, address, node=node, names=tuple(sorted(self.host_pods_by_node.get(node, ()))))
        ip = _ip(address)
        if ip is not None and any(ip in net for net in _LINK_LOCAL) and port == 53:
            return Peer(NODE_LOCAL_DNS, address, cluster_dns=True)
        if address in self.pods_by_ip:
            spans = "; ".join(sorted(f"{_pod_label(p)} {_span(p)}" for p in self.pods_by_ip[address]))
            return Peer(UNRESOLVED, address, reason=f"no pod held it at that time (held by {spans})")
        if ip is not None:
            for net in self.pod_nets:
                if ip in net:
                    return Peer(UNRESOLVED, address, reason=f"in the pod range {net}, held by no known pod")
            for net in self.service_nets:
                if ip in net:
                    return Peer(UNRESOLVED, address, reason=f"in the service range {net}, no Service has it")
        return Peer(EXTERNAL, address, names=tuple(sorted(self.dns_names.get(address, ()))))

    def _pod_peer(self, pod: Pod) -> Peer:
        peer = self._pod_peers.get(pod.key)
        if peer is None:
            # Replicas are one peer: the workload, not the address, identifies it.
            peer = self._pod_peers[pod.key] = Peer(
                POD, "", namespace=pod.namespace, workload=self.inv.workload_of.get(pod.key), node=pod.node,
                cluster_dns=pod.key in self.cluster_dns_pods,
            )
        return peer

    # --- a server: an address and port, through Services --------------------------------

    def servers(self, flow: Flow, first: int | None = None, last: int | None = None) -> list[tuple[Peer, int | None, str | None, str | None, bool]]:
        """(peer, server port, port name, via, inferred) for the server end of a flow in its run
        from ``first`` to ``last`` (default: its whole time)."""
        first = flow.first_seen if first is None else first
        last = flow.last_seen if last is None else last
        address = _canon(flow.dst)
        svc = self.service_by_ip.get(address)
        node_port = None
        if svc is None and address in self.node_by_ip and flow.port is not None:
            svc = self.service_by_node_port.get((flow.port, flow.proto))
            node_port = svc is not None
        if svc is not None:
            sp = next((p for p in svc.ports if (p.node_port if node_port else p.port) == flow.port and p.protocol == flow.proto), None)
            if sp is None:
                return [(Peer(UNRESOLVED, address, reason=f"Service {svc.namespace}/{svc.name} has no port {flow.proto}/{flow.port}"), flow.port, None, None, False)]
            return self._backends(svc, sp, flow, first, last)
        return [(peer, flow.port, self._port_name(peer, flow.port, flow.proto), None, inferred)
                for peer, inferred in self.peers_at(address, first, last, flow.port, flow.dst_pods, flow.dst_entity)]

    def _endpoints(self, svc: Service, sp, first: int, last: int) -> list[tuple[str, Pod | None, int]]:
        """(address, pod, target port) of a Service port's endpoints from ``first`` to ``last``:
        the EndpointSlice versions in force at some time then (within the clock tolerance)."""
        skew = self.skew
        versions = tuple(
            i for i, s in enumerate(self.slices.get((svc.namespace, svc.name), ()))
            if (s.start is None or s.start - skew <= last) and (s.end is None or first <= s.end + skew)
        )
        cached = self._endpoint_cache.get((svc.key, sp, versions))
        if cached is None:
            cached = []
            slices = self.slices.get((svc.namespace, svc.name), [])
            for s in (slices[i] for i in versions):
                eport = next((p for p in s.ports if p.protocol == sp.protocol and (p.name == sp.name or len(s.ports) == 1)), None)
                if eport is None:
                    continue
                for e in s.endpoints:
                    pod = self.pods.get((s.namespace, e.pod)) if e.pod else None
                    cached.append((_canon(e.address), pod, eport.port))
            cached = list(dict.fromkeys(cached))
            self._endpoint_cache[(svc.key, sp, versions)] = cached
        return cached

    def _backends(self, svc: Service, sp, flow: Flow, first: int, last: int):
        # The capture's view after DNAT names the backend that really served the connection.
        seen = {_canon(t.dst) for t in flow.translated}
        via = f"{svc.namespace}/{svc.name}:{sp.port}"
        out = []
        for address, pod, port in self._endpoints(svc, sp, first, last):
            if seen and address not in seen:
                continue
            if pod is not None and not pod.host_network:
                out.append((self._pod_peer(pod), port, via, False))
            elif svc.selector is None:
                out.append((Peer(SERVICE_ENDPOINT, address, service=f"{svc.namespace}/{svc.name}"), port, via, False))
            else:
                out.extend((peer, port, via, inferred) for peer, inferred in self.peers_at(address, first, last, port))
        if not out and svc.selector is not None:
            # No endpoints in the inventory: the selector and the target port say it.
            for pod in self.inv.pods:
                if pod.namespace == svc.namespace and not pod.host_network and pod.holds(first, last) and all(
                    dict(pod.labels).get(k) == v for k, v in svc.selector
                ):
                    port = _target_port(pod, sp.target_port, sp.protocol)
                    if port is not None:
                        out.append((self._pod_peer(pod), port, via, False))
        if not out:
            out.append((Peer(UNRESOLVED, _canon(flow.dst), reason=f"Service {svc.namespace}/{svc.name} has no known endpoints"), sp.port, via, False))
        # One entry per backend workload (replicas are one peer).
        unique: dict = {}
        for peer, port, v, inferred in out:
            if (peer, port) not in unique or not inferred:
                unique[(peer, port)] = (peer, port, self._port_name(peer, port, sp.protocol), v, inferred)
        return list(unique.values())

    def _port_name(self, peer: Peer, port: int | None, protocol: str) -> str | None:
        """The name the peer's pods give ``port`` (the smallest, when they differ), or None."""
        names = self._ports(peer).get((port, protocol), ()) if port is not None else ()
        return min(names) if names else None

    def declares(self, peer: Peer, port: int | None, protocol: str) -> bool:
        """Whether the pods of a pod peer's workload declare ``port`` (a containerPort)."""
        return port is not None and (port, protocol) in self._ports(peer)

    def _ports(self, peer: Peer) -> dict[tuple[int, str], set[str]]:
        """(port, protocol) -> names, of the containerPorts the pods of a pod peer's workload declare."""
        if peer.kind != POD:
            return {}
        key = (peer.namespace, peer.workload)
        ports = self._declared.get(key)
        if ports is None:
            w = self.workloads.get(key)
            ports = self._declared[key] = defaultdict(set)
            for name in (w.pods if w else ()):
                for cp in (self.pods[(peer.namespace, name)].ports if (peer.namespace, name) in self.pods else ()):
                    names = ports[(cp.port, cp.protocol)]
                    if cp.name:
                        names.add(cp.name)
        return ports

    def declared_port(self, address: str, port: int, protocol: str, first: int, last: int, pods: tuple[str, ...] = (),
                      entity: str = "") -> bool:
        """Whether ``address:port`` is a port the cluster declares: a Service port of a Service
        address, a Service's target port of an endpoint address then, or a containerPort of the
        pod that held the address then."""
        address = _canon(address)
        svc = self.service_by_ip.get(address)
        if svc is not None:
            return any(p.port == port and p.protocol == protocol for p in svc.ports)
        if address in self.node_by_ip and (port, protocol) in self.service_by_node_port:
            return True
        return any(self.declares(peer, port, protocol) for peer, _ in self.peers_at(address, first, last, port, pods, entity))


def _tenure(pod: Pod) -> _Tenure:
    start = -_INF if pod.start is None else pod.start
    end = _INF if pod.end is None else pod.end
    end_by = end if pod.end_by is None else max(end, pod.end_by)
    return _Tenure(pod, start, end, end_by)


def _pod_addresses(pods: Iterable[Pod]) -> tuple[dict[str, list[Pod]], dict[str, list[str]]]:
    """The pods that held each address; and the host-network pods of each node, which hold the
    node's addresses and are named by them (``namespace/name``)."""
    by_ip: dict[str, list[Pod]] = defaultdict(list)
    host_pods: dict[str, list[str]] = defaultdict(list)
    for pod in pods:
        if pod.host_network:
            if pod.node:
                host_pods[pod.node].append(_pod_label(pod))
            continue
        for ip in pod.ips:
            by_ip[_canon(ip)].append(pod)
    return by_ip, host_pods


def _node_addresses(nodes: Iterable[Node]) -> dict[str, str]:
    """Address -> node name: the nodes' own addresses, and the first address of each node's pod
    range, which bridge CNIs (flannel, kubenet, the bridge plugin) give the node: the source of
    kubelet probes and host-network clients on the way to local pods."""
    nodes = list(nodes)
    by_ip = {_canon(a): n.name for n in nodes for a in n.addresses}
    for n in nodes:
        for cidr in n.pod_cidrs:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if net.num_addresses > 2:
                by_ip.setdefault(str(net.network_address + 1), n.name)
    return by_ip


def _service_addresses(services: Iterable[Service]) -> tuple[dict[str, Service], dict[tuple[int, str], Service]]:
    """The Service behind each ClusterIP, external and load-balancer IP; and behind each
    (NodePort, protocol)."""
    by_ip: dict[str, Service] = {}
    by_node_port: dict[tuple[int, str], Service] = {}
    for svc in services:
        for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips):
            by_ip[_canon(ip)] = svc
        for sp in svc.ports:
            if sp.node_port:
                by_node_port[(int(sp.node_port), sp.protocol)] = svc
    return by_ip, by_node_port


def _dns_names(dns: Iterable) -> dict[str, set[str]]:
    """Address -> the names that DNS answers (A, AAAA) gave it: the query and the answer's name."""
    names: dict[str, set[str]] = defaultdict(set)
    for obs in dns:
        for ans in obs.answers:
            if ans.type in ("A", "AAAA"):
                names[_canon(ans.data)].update({obs.qname, ans.name})
    return names


def is_cluster_dns(pod: Pod) -> bool:
    """A pod of the cluster DNS (CoreDNS, kube-dns): its usual namespace and label."""
    return pod.namespace == CLUSTER_DNS_NAMESPACE and dict(pod.labels).get(CLUSTER_DNS_LABEL[0]) == CLUSTER_DNS_LABEL[1]


def _target_port(pod: Pod, target: int | str, protocol: str) -> int | None:
    if isinstance(target, int):
        return target
    for cp in pod.ports:
        if cp.name == target and cp.protocol == protocol:
            return cp.port
    return None


@lru_cache(maxsize=1 << 20)
def _canon(address: str) -> str:
    ip = _ip(address)
    return str(ip) if ip is not None else address


def _pod_label(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def _span(pod: Pod) -> str:
    start = format_time(pod.start) if pod.start else "?"
    end = format_time(pod.end) if pod.end else "now"
    return f"{start}..{end}"


#: What ``resolve(..., trace=[])`` says each run of a flow line became: a connection, an attempt
#: (its evidence: refused, unanswered, stale, dropped) or a rule not written.
CONNECTION, NOT_WRITTEN = "connection", "not-written"


@dataclass(frozen=True)
class Traced:
    """One run of one flow line as resolved: the evidence behind a connection (the review page's
    edges show it)."""

    flow: Flow  # as resolved: turned around when rule 4 turned it
    client: Peer
    server: Peer
    protocol: str
    port: int | None
    outcome: str  # CONNECTION, NOT_WRITTEN, or the evidence of an attempt
    connections: int
    first_seen: int
    last_seen: int
    via: str | None = None
    inferred: bool = False  # an end was attributed by inference between snapshots


def resolve(log: FlowLog, inventory: Inventory, options: ResolveOptions = ResolveOptions(), trace: list | None = None) -> Resolution:
    """Resolve every flow of the log, each run of activity against who held its addresses then;
    flows through a Service become connections to the backends it had then. Traffic that is no
    evidence of a need (refused, unanswered, stale, dropped) is reported as attempts, never a connection.
    With a ``trace`` list, every run of every flow line is appended to it as a ``Traced``."""
    r = Resolver(inventory, log.dns, options, log.endpoints)
    acc = _Accumulated()
    acc.trace = trace
    for flow in log.flows:
        _resolve_flow(r, flow, acc)
    connections = tuple(
        Connection(c, s, proto, port, name, via, *counts, same_node=same, mid_stream=mid, inferred=inferred)
        for (c, s, proto, port, name, via, same), (counts, mid, inferred) in sorted(acc.merged.items(), key=lambda kv: _conn_sort(kv[0]))
    )
    return Resolution(connections, _report(inventory, acc, _clock_warning(r.early, options.clock_skew)), dict(r.workloads))


class _Accumulated:
    """What resolving the flows adds up: connections by key, and the report's counters."""

    def __init__(self):
        self.merged: dict[tuple, list] = {}  # key -> [counts, mid_stream, inferred]
        self.kinds: Counter = Counter()
        self.unresolved: Counter = Counter()
        self.ambiguous: Counter = Counter()
        self.attempts: Counter = Counter()
        self.not_written: Counter = Counter()
        self.inferred: Counter = Counter()
        self.not_expressible = 0
        self.trace: list | None = None

    def add(self, key: tuple, flow: Flow, first_of_flow: bool, connections: int, first: int, last: int,
            mid_stream: bool, inferred: bool) -> None:
        entry = self.merged.get(key)
        if entry is None:
            entry = self.merged[key] = [[0, 0, 0, 0, first, last], mid_stream, inferred]
        entry[1] = entry[1] and mid_stream  # mid-stream only when every connection was
        entry[2] = entry[2] or inferred
        counts = entry[0]
        if first_of_flow:  # a flow line counts its packets and bytes once, whatever its runs
            counts[0] += 1
            counts[1] += flow.packets
            counts[2] += flow.bytes
        counts[3] += connections
        counts[4] = min(counts[4], first)
        counts[5] = max(counts[5], last)


def _is_need(flow: Flow) -> bool:
    """Whether a flow line is evidence of a need: answered traffic, or UDP a client sent again and again."""
    return flow.evidence in NEEDS or (flow.evidence == "unanswered" and flow.proto == "UDP" and flow.connections >= 2)


def _resolve_flow(r: Resolver, flow: Flow, acc: _Accumulated) -> None:
    methods = [m for m, _ in flow.direction]
    heuristic = bool(methods) and all(m in HEURISTIC_METHODS for m in methods)
    mid_stream = flow.evidence == "socket-scan" or (bool(methods) and all(m in HEURISTIC_METHODS or m == "listen" for m in methods))
    if heuristic and flow.port is not None and flow.proto in PROTOCOLS:
        flow = _redecided(r, flow)
    need = _is_need(flow)
    if flow.proto not in PROTOCOLS:
        acc.not_expressible += 1
    kinds: set[str] = set()
    problems: set[tuple[str, str]] = set()
    counted: set[tuple] = set()
    inferred_peers: set[tuple[str, str]] = set()
    for first, last, n in flow.runs:
        clients = r.peers_at(flow.src, first, last, None, flow.src_pods, flow.src_entity)
        servers = r.servers(flow, first, last)
        for client, client_inferred in clients:
            for server, port, port_name, via, server_inferred in servers:
                kinds.add(f"{client.kind} -> {server.kind}")  # a flow counts once, however many backends its Service has
                for peer in (client, server):
                    if peer.kind == UNRESOLVED:
                        problems.add((peer.address, peer.reason))
                if not need:
                    acc.attempts[(peer_label(client), peer_label(server), flow.proto, port, flow.evidence)] += n
                    if acc.trace is not None:
                        acc.trace.append(Traced(flow, client, server, flow.proto, port, flow.evidence, n, first, last, via,
                                                client_inferred or server_inferred))
                    continue
                if heuristic and server.kind == POD and port is not None and port >= EPHEMERAL_LOW and not r.declares(server, port, flow.proto):
                    acc.not_written[(peer_label(client), peer_label(server), flow.proto, port, NOT_WRITTEN_EPHEMERAL)] += 1
                    if acc.trace is not None:
                        acc.trace.append(Traced(flow, client, server, flow.proto, port, NOT_WRITTEN, n, first, last, via,
                                                client_inferred or server_inferred))
                    continue
                if client_inferred:
                    inferred_peers.add((peer_label(client), _canon(flow.src)))
                if server_inferred:
                    inferred_peers.add((peer_label(server), _canon(flow.dst)))
                same_node = client.kind == NODE and server.kind == POD and client.node == server.node
                key = (client, server, flow.proto, port, port_name, via, same_node)
                acc.add(key, flow, key not in counted, n, first, last, mid_stream, client_inferred or server_inferred)
                if acc.trace is not None:
                    acc.trace.append(Traced(flow, client, server, flow.proto, port, CONNECTION, n, first, last, via,
                                            client_inferred or server_inferred))
                counted.add(key)
    for kind in kinds:
        acc.kinds[kind] += 1
    for address, why in problems:
        (acc.ambiguous if why and why.startswith(AMBIGUOUS) else acc.unresolved)[(address, why)] += 1
    for label, address in inferred_peers:
        acc.inferred[(label, address)] += 1


def _redecided(r: Resolver, flow: Flow) -> Flow:
    """A flow whose direction came from a heuristic, turned around when its server's port is not
    one the cluster declares and one of its client ports is (DESIGN rule 4)."""
    first, last = flow.first_seen, flow.last_seen
    if r.declared_port(flow.dst, flow.port, flow.proto, first, last, flow.dst_pods, flow.dst_entity):
        return flow
    for client_port in flow.client_ports:
        if r.declared_port(flow.src, client_port, flow.proto, first, last, flow.src_pods, flow.src_entity):
            return replace(flow, src=flow.dst, dst=flow.src, port=client_port, client_ports=(flow.port,),
                           src_pods=flow.dst_pods, dst_pods=flow.src_pods, src_entity=flow.dst_entity,
                           dst_entity=flow.src_entity, translated=())
    return flow


def _clock_warning(early: list[tuple[str, int]], skew: int) -> str | None:
    """A warning when traffic of several addresses consistently began before the API says their
    pods existed, by about the same time: the capture clock is behind the API's."""
    offsets = sorted(o for _, o in early if o > skew)
    addresses = {a for a, o in early if o > skew}
    if len(addresses) < 2:
        return None
    median = offsets[len(offsets) // 2]
    if any(abs(o - median) > max(median // 4, 2 * 10**9) for o in offsets):
        return None
    return (f"traffic of {len(addresses)} addresses began about {median / 1e9:.0f} s before the API says their pods existed: "
            f"the capture clock looks about {median / 1e9:.0f} s behind the API's (traffic near an address handover may be "
            "given to the wrong pod; fix the clock, or set --clock-skew above it so such traffic is reported as ambiguous)")


def _report(inventory: Inventory, acc: _Accumulated, clock_warning: str | None) -> Report:
    return Report(
        flows_by_kind=dict(sorted(acc.kinds.items())),
        unresolved=tuple(sorted((a, why, n) for (a, why), n in acc.unresolved.items())),
        ambiguous=tuple(sorted((a, why, n) for (a, why), n in acc.ambiguous.items())),
        workloads_not_unique=tuple((w.namespace, w.ref, w.also_selects) for w in inventory.workloads if w.selector and not w.unique),
        workloads_unselectable=tuple((w.namespace, w.ref) for w in inventory.workloads if w.selector is None),
        workloads_inferred=tuple((w.namespace, w.ref, w.inferred) for w in inventory.workloads if w.inferred),
        not_expressible=acc.not_expressible,
        notes=inventory.notes,
        attempts=tuple(sorted(((c, s, proto, port, ev, n) for (c, s, proto, port, ev), n in acc.attempts.items()), key=_row_sort)),
        not_written=tuple(sorted(acc.not_written, key=_row_sort)),
        inferred=tuple(sorted((label, address, n) for (label, address), n in acc.inferred.items())),
        clock_warning=clock_warning,
    )


def _row_sort(row: tuple) -> tuple:
    return tuple(-1 if v is None else v for v in row)  # each position holds strings, or numbers and None (a port)


def _conn_sort(key: tuple) -> str:
    # One string per connection: sorting 100,000 of them is many times cheaper than nested tuples.
    client, server, proto, port, name, via, same = key
    return f"{_peer_sort(client)}\x01{_peer_sort(server)}\x01{proto}\x01{-1 if port is None else port:06d}\x01{via}"


@lru_cache(maxsize=1 << 16)
def _peer_sort(p: Peer) -> str:
    return "\x00".join((str(PEER_KINDS.index(p.kind)), p.namespace or "", p.workload or "", p.service or "", p.address))


# --- output --------------------------------------------------------------------------------


def workload_label(w: Workload) -> str:
    """What a workload is called where namespaces mix: ``namespace/Kind/name``."""
    return f"{w.namespace}/{w.ref}"


def peer_label(p: Peer) -> str:
    """A resolved peer for a person: a workload by its name (``namespace/Kind/name``), anything
    else by its kind and address (``external 140.82.112.3``)."""
    if p.kind == POD:
        return f"{p.namespace}/{p.workload}"
    return f"{p.kind} {p.address}"


def peer_to_json(p: Peer) -> dict:
    out = {"kind": p.kind}
    for name in ("address", "namespace", "workload", "node", "service", "reason"):
        value = getattr(p, name)
        if value:
            out[name] = value
    if p.names:
        out["names"] = list(p.names)
    if p.cluster_dns:
        out["cluster_dns"] = True
    return out


def resolution_to_json(res: Resolution) -> dict:
    """The resolved connections and the report, as `netpol-learn resolve --format json` writes them."""
    r = res.report
    return {
        "connections": [
            {
                "client": peer_to_json(c.client),
                "server": peer_to_json(c.server),
                "protocol": c.protocol,
                "port": c.port,
                "port_name": c.port_name,
                "via": c.via,
                "same_node": c.same_node,
                "mid_stream": c.mid_stream,
                "inferred": c.inferred,
                "flows": c.flows,
                "packets": c.packets,
                "bytes": c.bytes,
                "connections": c.connections,
                "first_seen": format_time(c.first_seen),
                "last_seen": format_time(c.last_seen),
            }
            for c in res.connections
        ],
        "report": {
            "flows_by_kind": r.flows_by_kind,
            "unresolved": [{"address": a, "reason": why, "flows": n} for a, why, n in r.unresolved],
            "ambiguous": [{"address": a, "reason": why, "flows": n} for a, why, n in r.ambiguous],
            "workloads_not_unique": [{"namespace": ns, "workload": w, "also_selects": list(o)} for ns, w, o in r.workloads_not_unique],
            "workloads_unselectable": [{"namespace": ns, "workload": w} for ns, w in r.workloads_unselectable],
            "workloads_inferred": [{"namespace": ns, "workload": w, "why": why} for ns, w, why in r.workloads_inferred],
            "not_expressible": r.not_expressible,
            "notes": list(r.notes),
            "attempts": [{"client": c, "server": sv, "protocol": p, "port": port, "evidence": ev, "connections": n}
                         for c, sv, p, port, ev, n in r.attempts],
            "not_written": [{"client": c, "server": sv, "protocol": p, "port": port, "why": why} for c, sv, p, port, why in r.not_written],
            "inferred": [{"peer": label, "address": a, "flows": n} for label, a, n in r.inferred],
            "clock_warning": r.clock_warning,
        },
    }


def report_text(res: Resolution) -> str:
    """The resolution report for a person: what was found, and what needs their attention."""
    r = res.report
    lines = ["Flows by peer kind (client -> server):"]
    width = max((len(k) for k in r.flows_by_kind), default=0)
    lines += [f"  {k:<{width}}  {n}" for k, n in r.flows_by_kind.items()] or ["  none"]

    def section(title: str, rows: list[str]) -> None:
        lines.append(f"{title} ({len(rows)}):" if rows else f"{title}: none")
        lines.extend(f"  {row}" for row in rows)

    section("Unresolved addresses", [f"{a}  {n} flow(s)  {why}" for a, why, n in r.unresolved])
    section("Ambiguous addresses", [f"{a}  {n} flow(s)  {why}" for a, why, n in r.ambiguous])
    section("Workloads without a unique selector", [f"{ns}/{w}  also selects {', '.join(o)}" for ns, w, o in r.workloads_not_unique])
    section("Workloads no selector can pick (no shared labels)", [f"{ns}/{w}" for ns, w in r.workloads_unselectable])
    section("Workloads inferred without their owner objects", [f"{ns}/{w}  {why}" for ns, w, why in r.workloads_inferred])
    section("Attempts that are no evidence of a need (refused, unanswered, stale, dropped)",
            [f"{c} -> {sv} {p}{'' if port is None else f'/{port}'}  {ev}  {counted(n, 'connection')}" for c, sv, p, port, ev, n in r.attempts])
    section("Rules not written", [f"{c} -> {sv} {p}{'' if port is None else f'/{port}'}  {why}" for c, sv, p, port, why in r.not_written])
    section("Attributed by inference between snapshots", [f"{a} -> {label}  {n} flow(s)" for label, a, n in r.inferred])
    lines.append(f"Flows NetworkPolicy cannot express (ICMP and other protocols): {r.not_expressible}")
    if r.clock_warning:
        lines.append(f"Clock: {r.clock_warning}")
    if r.notes:
        section("Notes", list(r.notes))
    return "\n".join(lines) + "\n"
