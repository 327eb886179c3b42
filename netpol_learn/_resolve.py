"""Resolution: every address of the flow log to what it was in the cluster when the flow was seen.

    flow log + inventory  ->  Resolution(connections, report)

Each end of a flow resolves to exactly one ``Peer``: a pod of a workload, a node (host-network
pods resolve here too and are named in ``names``, since NetworkPolicy cannot select them), an
endpoint of a Service without a selector (the API server behind ``default/kubernetes``), a
NodeLocal DNSCache address, an address outside the cluster (with the DNS names that answered with
it), or unresolved (inside the pod or service ranges, but held by no pod at that time; or held by
more than one: ambiguous). A server address that is a Service's ClusterIP, external IP or load
balancer IP (or a node address on a NodePort) resolves to the Service's backend pods on their
target port, named ports resolved. Everything here is pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from netpol_learn._flowlog import Flow, FlowLog, format_time
from netpol_learn._inventory import PROTOCOLS, Inventory, Node, Pod, Service, Workload

POD, NODE, SERVICE_ENDPOINT, NODE_LOCAL_DNS, EXTERNAL, UNRESOLVED = (
    "pod", "node", "service-endpoint", "node-local-dns", "external", "unresolved",
)
PEER_KINDS = (POD, NODE, SERVICE_ENDPOINT, NODE_LOCAL_DNS, EXTERNAL, UNRESOLVED)
#: Where the cluster DNS runs and how its pods are labelled (CoreDNS and kube-dns alike).
CLUSTER_DNS_NAMESPACE = "kube-system"
CLUSTER_DNS_LABEL = ("k8s-app", "kube-dns")
#: How an unresolved peer's reason starts when several pods held the address at that time.
AMBIGUOUS = "ambiguous"
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


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


class Resolver:
    """Indexes of an inventory, and lookups of addresses at a time."""

    def __init__(self, inventory: Inventory, dns: Iterable = ()):
        self.inv = inventory
        self.pods = {p.key: p for p in inventory.pods}
        self.pods_by_ip, self.host_pods_by_node = _pod_addresses(inventory.pods)
        self.node_by_ip = _node_addresses(inventory.nodes)
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
        self._backend_cache: dict = {}
        self._pod_peers: dict = {}
        self._port_names: dict = {}

    # --- one address ---------------------------------------------------------------------

    def peer(self, address: str, first: int, last: int, port: int | None = None) -> Peer:
        address = _canon(address)
        candidates = self.pods_by_ip.get(address, ())
        holders = [p for p in candidates if p.holds(first, last)]
        if len(holders) == 1:
            return self._pod_peer(holders[0])
        if len(holders) > 1:
            names = ", ".join(sorted(_pod_label(p) for p in holders))
            return Peer(UNRESOLVED, address, reason=f"{AMBIGUOUS}: held by {names} at that time")
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

    def servers(self, flow: Flow) -> list[tuple[Peer, int | None, str | None, str | None]]:
        """(peer, server port, port name, via) for the server end of a flow."""
        first, last = flow.first_seen, flow.last_seen
        address = _canon(flow.dst)
        svc = self.service_by_ip.get(address)
        node_port = None
        if svc is None and address in self.node_by_ip and flow.port is not None:
            svc = self.service_by_node_port.get((flow.port, flow.proto))
            node_port = svc is not None
        if svc is not None:
            sp = next((p for p in svc.ports if (p.node_port if node_port else p.port) == flow.port and p.protocol == flow.proto), None)
            if sp is None:
                return [(Peer(UNRESOLVED, address, reason=f"Service {svc.namespace}/{svc.name} has no port {flow.proto}/{flow.port}"), flow.port, None, None)]
            return self._backends(svc, sp, flow, first, last)
        peer = self.peer(address, first, last, flow.port)
        return [(peer, flow.port, self._port_name(peer, flow.port, flow.proto), None)]

    def _endpoints(self, svc: Service, sp) -> list[tuple[str, Pod | None, int]]:
        """(address, pod, target port) of a Service port's endpoints, from its EndpointSlices."""
        cached = self._endpoint_cache.get((svc.key, sp))
        if cached is None:
            cached = []
            for s in self.slices.get((svc.namespace, svc.name), []):
                eport = next((p for p in s.ports if p.protocol == sp.protocol and (p.name == sp.name or len(s.ports) == 1)), None)
                if eport is None:
                    continue
                for e in s.endpoints:
                    pod = self.pods.get((s.namespace, e.pod)) if e.pod else None
                    cached.append((_canon(e.address), pod, eport.port))
            self._endpoint_cache[(svc.key, sp)] = cached
        return cached

    def _backends(self, svc: Service, sp, flow: Flow, first: int, last: int):
        # The capture's view after DNAT names the backend that really served the connection.
        seen = {_canon(t.dst) for t in flow.translated}
        if not seen and (svc.key, sp) in self._backend_cache:
            return self._backend_cache[(svc.key, sp)]
        via = f"{svc.namespace}/{svc.name}:{sp.port}"
        timeless = True
        out = []
        for address, pod, port in self._endpoints(svc, sp):
            if seen and address not in seen:
                continue
            if pod is not None and not pod.host_network:
                peer = self._pod_peer(pod)
            elif svc.selector is None:
                peer = Peer(SERVICE_ENDPOINT, address, service=f"{svc.namespace}/{svc.name}")
            else:
                peer = self.peer(address, first, last, port)
                timeless = False
            out.append((peer, port, self._port_name(peer, port, sp.protocol), via))
        if not out and svc.selector is not None:
            timeless = False
            # No endpoints in the inventory: the selector and the target port say it.
            for pod in self.inv.pods:
                if pod.namespace == svc.namespace and not pod.host_network and pod.holds(first, last) and all(
                    dict(pod.labels).get(k) == v for k, v in svc.selector
                ):
                    port = _target_port(pod, sp.target_port, sp.protocol)
                    if port is not None:
                        peer = self._pod_peer(pod)
                        out.append((peer, port, self._port_name(peer, port, sp.protocol), via))
        if not out:
            out.append((Peer(UNRESOLVED, _canon(flow.dst), reason=f"Service {svc.namespace}/{svc.name} has no known endpoints"), sp.port, None, via))
        # One entry per backend workload (replicas are one peer).
        unique = {}
        for peer, port, name, v in out:
            unique.setdefault((peer, port), (peer, port, name, v))
        result = list(unique.values())
        if timeless and not seen:
            self._backend_cache[(svc.key, sp)] = result
        return result

    def _port_name(self, peer: Peer, port: int | None, protocol: str) -> str | None:
        if peer.kind != POD or port is None:
            return None
        key = (peer.namespace, peer.workload, port, protocol)
        if key not in self._port_names:
            w = self.workloads.get((peer.namespace, peer.workload))
            names = {
                cp.name
                for name in (w.pods if w else ())
                for cp in (self.pods[(peer.namespace, name)].ports if (peer.namespace, name) in self.pods else ())
                if cp.port == port and cp.protocol == protocol and cp.name
            }
            self._port_names[key] = min(names) if names else None
        return self._port_names[key]


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


def resolve(log: FlowLog, inventory: Inventory) -> Resolution:
    """Resolve every flow of the log; flows through a Service become connections to its backends."""
    r = Resolver(inventory, log.dns)
    merged: dict[tuple, list] = {}
    kinds: Counter = Counter()
    unresolved: Counter = Counter()
    ambiguous: Counter = Counter()
    not_expressible = 0
    for flow in log.flows:
        client = r.peer(flow.src, flow.first_seen, flow.last_seen)
        if flow.proto not in PROTOCOLS:
            not_expressible += 1
        servers = r.servers(flow)
        for kind in {f"{client.kind} -> {server.kind}" for server, _, _, _ in servers}:
            kinds[kind] += 1  # a flow counts once, however many backends its Service has
        for server, port, port_name, via in servers:
            for peer in (client, server):
                if peer.kind == UNRESOLVED:
                    (ambiguous if peer.reason and peer.reason.startswith(AMBIGUOUS) else unresolved)[(peer.address, peer.reason)] += 1
            same_node = client.kind == NODE and server.kind == POD and client.node == server.node
            _merge_flow(merged, (client, server, flow.proto, port, port_name, via, same_node), flow)
    connections = tuple(
        Connection(c, s, proto, port, name, via, *acc, same_node=same)
        for (c, s, proto, port, name, via, same), acc in sorted(merged.items(), key=lambda kv: _conn_sort(kv[0]))
    )
    return Resolution(connections, _report(inventory, kinds, unresolved, ambiguous, not_expressible), dict(r.workloads))


def _merge_flow(merged: dict[tuple, list], key: tuple, flow: Flow) -> None:
    """Add a flow to the connection ``key``: flows, packets, bytes, connections, first and last seen."""
    acc = merged.get(key)
    if acc is None:
        merged[key] = [1, flow.packets, flow.bytes, flow.connections, flow.first_seen, flow.last_seen]
    else:
        acc[0] += 1
        acc[1] += flow.packets
        acc[2] += flow.bytes
        acc[3] += flow.connections
        acc[4] = min(acc[4], flow.first_seen)
        acc[5] = max(acc[5], flow.last_seen)


def _report(inventory: Inventory, kinds: Counter, unresolved: Counter, ambiguous: Counter, not_expressible: int) -> Report:
    return Report(
        flows_by_kind=dict(sorted(kinds.items())),
        unresolved=tuple(sorted((a, why, n) for (a, why), n in unresolved.items())),
        ambiguous=tuple(sorted((a, why, n) for (a, why), n in ambiguous.items())),
        workloads_not_unique=tuple((w.namespace, w.ref, w.also_selects) for w in inventory.workloads if w.selector and not w.unique),
        workloads_unselectable=tuple((w.namespace, w.ref) for w in inventory.workloads if w.selector is None),
        workloads_inferred=tuple((w.namespace, w.ref, w.inferred) for w in inventory.workloads if w.inferred),
        not_expressible=not_expressible,
        notes=inventory.notes,
    )


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
    lines.append(f"Flows NetworkPolicy cannot express (ICMP and other protocols): {r.not_expressible}")
    if r.notes:
        section("Notes", list(r.notes))
    return "\n".join(lines) + "\n"
