"""verify and diff: what a policy set does to observed traffic, and how two policy sets differ.

    verify: flows + inventory + policies -> the observed connections the policies would deny
    diff:   base policies, new policies + inventory -> connectivity added and removed

Both evaluate with ``semantics.PolicyEngine``. A workload is represented by one of its pods (the
first by name): its selector-relevant labels are the workload's, and pods of one workload
declare the same ports.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from netpol_learn._flowlog import FlowLog
from netpol_learn._gc import collector_paused
from netpol_learn._inventory import PROTOCOLS, Inventory, Pod, Workload
from netpol_learn._policy import NetworkPolicy, Rule
from netpol_learn._resolve import (
    EXTERNAL,
    NODE,
    NODE_LOCAL_DNS,
    POD,
    SERVICE_ENDPOINT,
    Connection,
    Peer,
    ResolveOptions,
    peer_label,
    resolve,
    workload_label,
)
from netpol_learn._semantics import Endpoint, PolicyEngine, PortProbes, isolates, own_node
from netpol_learn._text import counted


def engine_for(policies: Iterable[NetworkPolicy], inventory: Inventory) -> PolicyEngine:
    return PolicyEngine(policies, {ns.name: dict(ns.labels) for ns in inventory.namespaces})


def pod_endpoint(pod: Pod, name: str | None = None) -> Endpoint:
    return Endpoint(
        address=pod.ips[0] if pod.ips else "",
        namespace=pod.namespace,
        labels=pod.labels,
        named_ports=tuple(sorted((cp.name, cp.protocol, cp.port) for cp in pod.ports if cp.name)),
        node=pod.node,
        name=name or pod.name,
    )


def workload_endpoint(w: Workload, pods: Mapping[tuple[str, str], Pod]) -> Endpoint:
    """A workload as one of its pods (the first by name), named by the workload."""
    return pod_endpoint(pods[(w.namespace, w.pods[0])], w.ref)


#: The peer kinds that are addresses outside the pod network, evaluated as such.
_ADDRESS_KINDS = (EXTERNAL, SERVICE_ENDPOINT, NODE_LOCAL_DNS)


class _Endpoints:
    def __init__(self, inventory: Inventory):
        self.pods = {p.key: p for p in inventory.pods}
        self.workloads = {w.key: w for w in inventory.workloads}

    def of(self, peer: Peer) -> Endpoint | None:
        if peer.kind == POD:
            w = self.workloads.get((peer.namespace, peer.workload))
            if w is None or not w.pods:
                return None
            return workload_endpoint(w, self.pods)
        if peer.kind == NODE:
            return Endpoint(peer.address, node=peer.node)
        if peer.kind in _ADDRESS_KINDS:
            return Endpoint(peer.address)
        return None  # unresolved: nothing to evaluate


def _label(peer: Peer) -> str:
    if peer.kind == NODE:
        return f"node {peer.node} ({peer.address})"
    return peer_label(peer)


@dataclass(frozen=True)
class Denied:
    client: str
    server: str
    protocol: str
    port: int
    flows: int
    packets: int
    direction: str
    why: str


@dataclass(frozen=True)
class VerifyResult:
    denied: tuple[Denied, ...]
    allowed: int  # connections allowed
    not_evaluated: tuple[str, ...]  # unresolved ends, protocols policies cannot express


@dataclass(frozen=True)
class Judged:
    """What a policy set does with one resolved connection: ``allowed``, or the direction that
    denies it and why; ``skipped`` says why it could not be evaluated (then ``allowed`` is None)."""

    allowed: bool | None
    denied_by: str | None = None
    why: str | None = None
    skipped: str | None = None


class Judge:
    """Evaluates resolved connections against one policy set (``verify``, the review page)."""

    def __init__(self, policies: Iterable[NetworkPolicy], inventory: Inventory):
        self.engine = engine_for(policies, inventory)
        self.endpoints = _Endpoints(inventory)

    def __call__(self, c: Connection) -> Judged:
        what = f"{_label(c.client)} -> {_label(c.server)} {c.protocol}" + (f"/{c.port}" if c.port is not None else "")
        if c.protocol not in PROTOCOLS or c.port is None:
            return Judged(None, skipped=f"{what}: NetworkPolicy cannot express {c.protocol}")
        src, dst = self.endpoints.of(c.client), self.endpoints.of(c.server)
        if src is None or dst is None:
            return Judged(None, skipped=f"{what}: an end is unresolved")
        if c.same_node:
            return Judged(True)
        v = self.engine.evaluate(src, dst, c.protocol, c.port)
        return Judged(True) if v.allowed else Judged(False, v.denied_by, v.why)


@collector_paused()
def verify(log: FlowLog, inventory: Inventory, policies: Iterable[NetworkPolicy], options: ResolveOptions = ResolveOptions()) -> VerifyResult:
    """Which observed connections of ``log`` would ``policies`` deny (and which they allow), with
    the direction that denies each and the policies that isolate its pods; ``options`` say how
    the flows are resolved."""
    judge = Judge(policies, inventory)
    denied: dict[tuple, list] = {}
    allowed = 0
    skipped: set[str] = set()
    for c in resolve(log, inventory, options).connections:
        j = judge(c)
        if j.skipped:
            skipped.add(j.skipped)
            continue
        if j.allowed:
            allowed += 1
            continue
        key = (_label(c.client), _label(c.server), c.protocol, c.port)
        acc = denied.setdefault(key, [0, 0, j.denied_by, j.why])
        acc[0] += c.flows
        acc[1] += c.packets
    rows = tuple(Denied(*k, flows, packets, direction, why) for k, (flows, packets, direction, why) in sorted(denied.items()))
    return VerifyResult(rows, allowed, tuple(sorted(skipped)))


def verify_text(r: VerifyResult) -> str:
    """The result as `netpol-learn verify` prints it."""
    if not r.denied:
        lines = [{0: "No observed connection could be evaluated.", 1: "The one observed connection is allowed.",
                  2: "Both observed connections are allowed."}.get(r.allowed, f"All {r.allowed} observed connections are allowed.")]
    else:
        lines = [f"{counted(len(r.denied), 'observed connection')} would be denied ({r.allowed} allowed):"]
        for d in r.denied:
            lines.append(f"  {d.client} -> {d.server} {d.protocol}/{d.port}: {counted(d.flows, 'flow')}, {counted(d.packets, 'packet')}; denied by {d.direction}: {d.why}")
    if r.not_evaluated:
        lines.append(f"Not evaluated ({len(r.not_evaluated)}):")
        lines += [f"  {s}" for s in r.not_evaluated]
    return "\n".join(lines) + "\n"


def verify_json(r: VerifyResult) -> dict:
    """The result as `netpol-learn verify --format json` writes it."""
    return {
        "denied": [d.__dict__ for d in r.denied],
        "allowed": r.allowed,
        "not_evaluated": list(r.not_evaluated),
    }


# --- diff ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    client: str
    server: str
    protocol: str
    port: int | None  # None: every port of the protocol
    observed: bool = False  # the connection was seen in the flows given


@dataclass(frozen=True)
class DiffResult:
    added: tuple[Change, ...]
    removed: tuple[Change, ...]

    @property
    def equal(self) -> bool:
        return not self.added and not self.removed


def _rules_of(policy_sets: Iterable[Iterable[NetworkPolicy]]) -> Iterator[Rule]:
    """Every ingress and egress rule of the policy sets."""
    for policies in policy_sets:
        for p in policies:
            yield from p.ingress or ()
            yield from p.egress or ()


def _ports(policy_sets: Iterable[Iterable[NetworkPolicy]], inventory: Inventory, extra: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Ports at which what a policy set allows can change: what it allows is constant between
    the edges of the port ranges its rules name, so each edge (a range's first port, and the port
    after its last) stands for the ports up to the next; the pods' own ports serve named ports,
    and the lowest and highest ports stand for rules that name no port at all."""
    ports = set(extra)
    for proto in PROTOCOLS:
        ports |= {(proto, 1), (proto, 65535)}
    for proto, first, last in _cluster_ports(policy_sets):
        ports |= {(proto, first), (proto, last)} | ({(proto, last + 1)} if last < 65535 else set())
    for rule in _rules_of(policy_sets):
        for spec in rule.ports or ():
            if isinstance(spec.port, int):
                last = spec.end_port if spec.end_port is not None else spec.port
                ports |= {(spec.protocol, spec.port), (spec.protocol, last)}
                if last < 65535:
                    ports.add((spec.protocol, last + 1))
    for pod in inventory.pods:
        for cp in pod.ports:
            ports.add((cp.protocol, cp.port))
    return sorted(ports)


def _cluster_rules(policy_sets) -> Iterator:
    """Every rule of the ClusterNetworkPolicies of the sets (``load_policies``' ``cluster``)."""
    for policies in policy_sets:
        for cp in getattr(policies, "cluster", ()):
            yield from (*cp.ingress, *cp.egress)


def _cluster_ports(policy_sets) -> Iterator[tuple[str, int, int]]:
    """The (protocol, first, last) port ranges the ClusterNetworkPolicies of the sets name."""
    for rule in _cluster_rules(policy_sets):
        yield from (p for p in rule.protocols or () if p[0] != "named")


def _outside(policy_sets: Iterable[Iterable[NetworkPolicy]], extra: Iterable[str]) -> dict[str, str]:
    """Outside addresses at which what a policy set allows can change, each named by the
    narrowest block that holds it: the first and last address of every block and except, and
    the addresses just outside them (what is allowed is constant in between)."""
    cidrs = {c for rule in _rules_of(policy_sets) for peer in rule.peers or () if peer.ip_block is not None
             for c in (peer.ip_block.cidr, *peer.ip_block.except_)}  # each parsed once: many rules name the same
    blocks = {ipaddress.ip_network(c) for c in cidrs}
    for rule in _cluster_rules(policy_sets):  # the ClusterNetworkPolicies' networks
        blocks |= {net for peer in rule.peers if peer[0] == "networks" for net in peer[1]}
    probes = set()
    for net in blocks:
        probes |= {net.network_address, net.broadcast_address}
        if int(net.network_address) > 0:
            probes.add(net.network_address - 1)
        if int(net.broadcast_address) < (1 << net.max_prefixlen) - 1:
            probes.add(net.broadcast_address + 1)
    extra_set = set(extra)
    probes |= {ipaddress.ip_address(a) for a in extra_set}
    out: dict[str, str] = {}
    for ip in sorted(probes, key=lambda a: (a.version, int(a))):
        holders = [n for n in blocks if n.version == ip.version and ip in n]
        narrowest = max(holders, key=lambda n: n.prefixlen) if holders else None
        if narrowest is None:
            out[str(ip)] = f"external {ip}" if str(ip) in extra_set else "outside any ipBlock"
        elif narrowest.num_addresses == 1:
            out[str(ip)] = f"external {ip}"
        else:
            out[str(ip)] = f"outside {narrowest}"
    return out


def diff(base: list[NetworkPolicy], new: list[NetworkPolicy], inventory: Inventory, log: FlowLog | None = None,
         options: ResolveOptions = ResolveOptions()) -> DiffResult:
    """Connectivity between workloads (and to/from the outside addresses the policies name) that
    ``new`` allows and ``base`` does not (added), and the reverse (removed)."""
    observed, extra_ports, extra_addresses = _observed(log, inventory, options) if log is not None else (set(), set(), set())
    ends = _workload_ends(inventory)
    outside = [(name, Endpoint(address)) for address, name in _outside((base, new), extra_addresses).items()]
    ports = _ports((base, new), inventory, extra_ports)
    # A change of the ClusterNetworkPolicies can change any pair: all are probed then.
    everything = getattr(base, "cluster", ()) != getattr(new, "cluster", ())
    changed = _changed(base, new)
    src_changed = {n for n, e in ends if everything or _selected_by(changed, e, "Egress")}
    dst_changed = {n for n, e in ends if everything or _selected_by(changed, e, "Ingress")}
    pairs = _pairs(ends, outside, src_changed, dst_changed)
    with collector_paused():  # the engines remember what they work out for each pod: 1 s of 3 in collections
        changes = _changes(pairs, ports, engine_for(base, inventory), engine_for(new, inventory), observed, {id(e) for _, e in outside},
                           src_changed, dst_changed)
    return _diff_result(changes, ports)


def _observed(log: FlowLog, inventory: Inventory, options: ResolveOptions) -> tuple[set[tuple], set[tuple[str, int]], set[str]]:
    """The observed connections by their ends (a workload by its name, an outside end by its
    address: the change that names it may name the wider block that holds it), protocol and
    port; their ports; and their addresses outside the pod network."""
    observed: set[tuple] = set()
    ports: set[tuple[str, int]] = set()
    addresses: set[str] = set()
    for c in resolve(log, inventory, options).connections:
        if c.protocol in PROTOCOLS and c.port is not None:
            observed.add((_observed_end(c.client), _observed_end(c.server), c.protocol, c.port))
            ports.add((c.protocol, c.port))
            addresses.update(peer.address for peer in (c.client, c.server) if peer.kind in _ADDRESS_KINDS)
    return observed, ports, addresses


def _observed_end(peer: Peer) -> str:
    return peer_label(peer) if peer.kind == POD else peer.address


def _workload_ends(inventory: Inventory) -> list[tuple[str, Endpoint]]:
    """Every workload by its name and one of its pods; host-network ones are addresses, not pods."""
    pods = {p.key: p for p in inventory.pods}
    return [(workload_label(w), workload_endpoint(w, pods)) for w in inventory.workloads
            if w.pods and not pods[(w.namespace, w.pods[0])].host_network]


def _pairs(ends: list[tuple[str, Endpoint]], outside: list[tuple[str, Endpoint]], src_changed: set[str],
           dst_changed: set[str]) -> Iterator[tuple]:
    """The (client, server) pairs to evaluate: a pair can only change where a policy that differs
    between the sets selects its source (egress: the names in ``src_changed``) or its destination
    (ingress: ``dst_changed``); every workload is in both when the cluster-wide policies differ.
    Made one at a time: hundreds of thousands of them kept at once would only wake the garbage
    collector to walk every loaded policy, again and again."""
    every = ends + outside
    for a in ends:
        if a[0] in src_changed:
            for b in every:
                yield a, b
    for b in ends:
        if b[0] in dst_changed:
            for a in every:
                if a[0] not in src_changed:
                    yield a, b


def _changes(pairs: Iterable[tuple], ports: list[tuple[str, int]], base: PolicyEngine, new: PolicyEngine,
             observed: set[tuple], outside_ids: set[int], src_changed: set[str], dst_changed: set[str]) -> dict[tuple, dict[bool, dict[int, bool]]]:
    """(client, server, protocol) -> allowed by ``new`` (True: added, False: removed) -> {probe
    port: observed}, for every probe whose verdict differs between the two engines.

    Each pair is judged on every probe at once (``PolicyEngine.direction_mask``: bitmasks over
    ``ports`` of what ``evaluate`` says), one direction at a time. Where no changed policy
    selects the source for egress (``src_changed``) or the destination for ingress
    (``dst_changed``), that direction is the same in both sets and judged once; a pair cannot
    change where its egress lets nothing through in either set, nor where both directions are
    the same in both."""
    changes: dict[tuple, dict[bool, dict[int, bool]]] = defaultdict(lambda: {True: {}, False: {}})
    probes = PortProbes(ports)
    for (sname, src), (dname, dst) in pairs:
        if own_node(src, dst):
            continue  # always allowed
        egress = base.direction_mask("egress", src, dst, dst, probes)
        egress_new = new.direction_mask("egress", src, dst, dst, probes) if sname in src_changed else egress
        if not (egress | egress_new):
            continue  # denied on every probe by both
        same_ingress = dname not in dst_changed
        if same_ingress and egress == egress_new:
            continue
        ingress = base.direction_mask("ingress", dst, src, dst, probes)
        ingress_new = ingress if same_ingress else new.direction_mask("ingress", dst, src, dst, probes)
        after = egress_new & ingress_new
        differ = (egress & ingress) ^ after
        while differ:
            bit = differ & -differ  # the lowest probe that differs: the ports in their order
            differ ^= bit
            proto, port = ports[bit.bit_length() - 1]
            seen = changes[(sname, dname, proto)][bool(after & bit)]
            # Several probe addresses of one block name the same change once.
            key = (_probe_end(sname, src, outside_ids), _probe_end(dname, dst, outside_ids), proto, port)
            seen[port] = seen.get(port, False) or key in observed
    return changes


def _probe_end(name: str, e: Endpoint, outside_ids: set[int]) -> str:
    """A probed end as ``_observed`` names it: an outside probe by its address (several probes of
    one block share the block's name), a workload by its name."""
    return e.address if id(e) in outside_ids else name


def _diff_result(changes: dict[tuple, dict[bool, dict[int, bool]]], ports: list[tuple[str, int]]) -> DiffResult:
    probes_of: dict[str, set[int]] = defaultdict(set)
    for proto, port in ports:
        probes_of[proto].add(port)
    added, removed = [], []
    for (sname, dname, proto), by_way in changes.items():
        for way, seen in by_way.items():
            rows = added if way else removed
            if seen and set(seen) == probes_of[proto]:
                # every probe of the protocol changed: the change is on every port, and says so
                rows.append(Change(sname, dname, proto, None, any(seen.values())))
            else:
                rows += [Change(sname, dname, proto, port, obs) for port, obs in sorted(seen.items())]
    return DiffResult(tuple(added), tuple(removed))  # in the order of the pairs and ports probed


def _changed(base: list[NetworkPolicy], new: list[NetworkPolicy]) -> list[NetworkPolicy]:
    """The policies of either set that the other does not hold identically."""
    a = {(p.namespace, p.name): p for p in base}
    b = {(p.namespace, p.name): p for p in new}
    out = []
    for key in set(a) | set(b):
        pa, pb = a.get(key), b.get(key)
        if pa is None or pb is None or (_spec_fields(pa) != _spec_fields(pb) and pa.to_dict()["spec"] != pb.to_dict()["spec"]):
            out += [p for p in (pa, pb) if p is not None]
    return out


def _spec_fields(p: NetworkPolicy) -> tuple:
    """The fields ``to_dict()["spec"]`` is made of: where they are equal, so is the spec (and
    comparing them is much cheaper than building it; they may differ where the specs do not,
    such as matchLabels in another order, so the specs decide then)."""
    return (p.pod_selector, p.policy_types, p.ingress, p.egress)


def _selected_by(policies: list[NetworkPolicy], e: Endpoint, kind: str) -> bool:
    labels = dict(e.labels)
    return any(isolates(p, e.namespace, labels, kind) for p in policies)


def diff_text(r: DiffResult, markdown: bool = False) -> str:
    """The differences as `netpol-learn diff` prints them; ``markdown``: for a pull request."""
    if r.equal:
        return "No change in connectivity.\n"
    lines = []
    for title, rows in (("Allowed now, denied before", r.added), ("Denied now, allowed before", r.removed)):
        if not rows:
            continue
        if markdown:
            lines += [f"### {title} ({len(rows)})", "", "| from | to | port | observed |", "|---|---|---|---|"]
            lines += [f"| {c.client} | {c.server} | {_port_text(c)} | {'yes' if c.observed else ''} |" for c in rows]
            lines.append("")
        else:
            lines.append(f"{title} ({len(rows)}):")
            lines += [f"  {c.client} -> {c.server} {_port_text(c)}{'  (observed)' if c.observed else ''}" for c in rows]
    if markdown:
        lines.insert(0, f"## NetworkPolicy changes: {len(r.added)} connection(s) added, {len(r.removed)} removed\n")
    return "\n".join(lines).rstrip("\n") + "\n"


def _port_text(c: Change) -> str:
    return f"{c.protocol} any port" if c.port is None else f"{c.protocol}/{c.port}"


def diff_json(r: DiffResult) -> dict:
    """The differences as `netpol-learn diff --format json` writes them."""
    return {"equal": r.equal, "added": [c.__dict__ for c in r.added], "removed": [c.__dict__ for c in r.removed]}
