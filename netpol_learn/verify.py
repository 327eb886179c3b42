"""verify and diff: what a policy set does to observed traffic, and how two policy sets differ.

    verify: flows + inventory + policies -> the observed connections the policies would deny
    diff:   base policies, new policies + inventory -> connectivity added and removed

Both evaluate with ``semantics.PolicyEngine``. A workload is represented by one of its pods (the
first by name): its selector-relevant labels are the workload's, and pods of one workload
declare the same ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from netpol_learn.flowlog import FlowLog
from netpol_learn.inventory._model import Inventory, Pod
from netpol_learn.policy import NetworkPolicy
from netpol_learn.resolve import EXTERNAL, NODE, NODE_LOCAL_DNS, POD, SERVICE_ENDPOINT, Peer, resolve
from netpol_learn.semantics import Endpoint, PolicyEngine

EXPRESSIBLE = ("TCP", "UDP", "SCTP")


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


class _Endpoints:
    def __init__(self, inventory: Inventory):
        self.pods = {p.key: p for p in inventory.pods}
        self.workloads = {w.key: w for w in inventory.workloads}

    def of(self, peer: Peer) -> Endpoint | None:
        if peer.kind == POD:
            w = self.workloads.get((peer.namespace, peer.workload))
            if w is None or not w.pods:
                return None
            return pod_endpoint(self.pods[(peer.namespace, w.pods[0])], f"{peer.workload}")
        if peer.kind == NODE:
            return Endpoint(peer.address, node=peer.node)
        if peer.kind in (EXTERNAL, SERVICE_ENDPOINT, NODE_LOCAL_DNS):
            return Endpoint(peer.address)
        return None  # unresolved: nothing to evaluate


def _label(peer: Peer) -> str:
    if peer.kind == POD:
        return f"{peer.namespace}/{peer.workload}"
    if peer.kind == NODE:
        return f"node {peer.node} ({peer.address})"
    return f"{peer.kind} {peer.address}"


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


def verify(log: FlowLog, inventory: Inventory, policies: Iterable[NetworkPolicy]) -> VerifyResult:
    engine = engine_for(policies, inventory)
    endpoints = _Endpoints(inventory)
    denied: dict[tuple, list] = {}
    allowed = 0
    skipped: set[str] = set()
    for c in resolve(log, inventory).connections:
        what = f"{_label(c.client)} -> {_label(c.server)} {c.protocol}/{c.port}"
        if c.protocol not in EXPRESSIBLE or c.port is None:
            skipped.add(f"{what}: NetworkPolicy cannot express {c.protocol}")
            continue
        src, dst = endpoints.of(c.client), endpoints.of(c.server)
        if src is None or dst is None:
            skipped.add(f"{what}: an end is unresolved")
            continue
        if c.same_node:
            allowed += 1
            continue
        v = engine.evaluate(src, dst, c.protocol, c.port)
        if v.allowed:
            allowed += 1
            continue
        key = (_label(c.client), _label(c.server), c.protocol, c.port)
        acc = denied.setdefault(key, [0, 0, v.denied_by, v.why])
        acc[0] += c.flows
        acc[1] += c.packets
    rows = tuple(Denied(*k, flows, packets, direction, why) for k, (flows, packets, direction, why) in sorted(denied.items()))
    return VerifyResult(rows, allowed, tuple(sorted(skipped)))


def verify_text(r: VerifyResult) -> str:
    if not r.denied:
        lines = [f"All {r.allowed} observed connections are allowed."]
    else:
        lines = [f"{len(r.denied)} observed connection(s) would be denied ({r.allowed} allowed):"]
        for d in r.denied:
            lines.append(f"  {d.client} -> {d.server} {d.protocol}/{d.port}: {d.flows} flow(s), {d.packets} packets; denied by {d.direction}: {d.why}")
    if r.not_evaluated:
        lines.append(f"Not evaluated ({len(r.not_evaluated)}):")
        lines += [f"  {s}" for s in r.not_evaluated]
    return "\n".join(lines) + "\n"


def verify_json(r: VerifyResult) -> dict:
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
    port: int
    observed: bool = False  # the connection was seen in the flows given


@dataclass(frozen=True)
class DiffResult:
    added: tuple[Change, ...]
    removed: tuple[Change, ...]

    @property
    def equal(self) -> bool:
        return not self.added and not self.removed


def _ports(policy_sets: Iterable[Iterable[NetworkPolicy]], inventory: Inventory, extra: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    ports = set(extra)
    for policies in policy_sets:
        for p in policies:
            for rule in (*(p.ingress or ()), *(p.egress or ())):
                for spec in rule.ports or ():
                    if isinstance(spec.port, int):
                        ports.add((spec.protocol, spec.port))
                        if spec.end_port is not None:
                            ports.add((spec.protocol, spec.end_port))
    for pod in inventory.pods:
        for cp in pod.ports:
            ports.add((cp.protocol, cp.port))
    return sorted(ports)


def _outside(policy_sets: Iterable[Iterable[NetworkPolicy]], extra: Iterable[str]) -> dict[str, str]:
    """One address per ipBlock piece (a block and each of its excepts), named by its block."""
    out: dict[str, str] = {}
    for policies in policy_sets:
        for p in policies:
            for rule in (*(p.ingress or ()), *(p.egress or ())):
                for peer in rule.peers or ():
                    if peer.ip_block is None:
                        continue
                    for cidr in (peer.ip_block.cidr, *peer.ip_block.except_):
                        net = ipaddress.ip_network(cidr)
                        address = str(net.network_address + (1 if net.num_addresses > 2 else 0))
                        out.setdefault(address, str(net))
    for address in extra:
        out.setdefault(address, address)
    return out


def diff(base: list[NetworkPolicy], new: list[NetworkPolicy], inventory: Inventory, log: FlowLog | None = None) -> DiffResult:
    """Connectivity between workloads (and to/from the outside addresses the policies name) that
    ``new`` allows and ``base`` does not (added), and the reverse (removed)."""
    eb, en = engine_for(base, inventory), engine_for(new, inventory)
    pods = {p.key: p for p in inventory.pods}
    workloads = [w for w in inventory.workloads if w.pods and not pods[(w.namespace, w.pods[0])].host_network]
    ends: list[tuple[str, Endpoint]] = [(f"{w.namespace}/{w.ref}", pod_endpoint(pods[(w.namespace, w.pods[0])], w.ref)) for w in workloads]
    observed: set[tuple] = set()
    extra_ports: set[tuple[str, int]] = set()
    extra_addresses: set[str] = set()
    if log is not None:
        endpoints = _Endpoints(inventory)
        for c in resolve(log, inventory).connections:
            if c.protocol in EXPRESSIBLE and c.port is not None:
                observed.add((_label(c.client), _label(c.server), c.protocol, c.port))
                extra_ports.add((c.protocol, c.port))
                for peer in (c.client, c.server):
                    if peer.kind in (EXTERNAL, SERVICE_ENDPOINT, NODE_LOCAL_DNS) and endpoints.of(peer):
                        extra_addresses.add(peer.address)
    outside = [(f"outside {cidr}" if cidr != address else f"external {address}", Endpoint(address)) for address, cidr in sorted(_outside((base, new), extra_addresses).items())]
    ports = _ports((base, new), inventory, extra_ports)
    added, removed = [], []
    pairs = [(a, b) for a in ends for b in ends] + [(a, o) for a in ends for o in outside] + [(o, a) for o in outside for a in ends]
    for (sname, src), (dname, dst) in pairs:
        for proto, port in ports:
            before = eb.evaluate(src, dst, proto, port).allowed
            after = en.evaluate(src, dst, proto, port).allowed
            if before != after:
                ch = Change(sname, dname, proto, port, (sname, dname, proto, port) in observed)
                (added if after else removed).append(ch)
    return DiffResult(tuple(added), tuple(removed))


def diff_text(r: DiffResult, markdown: bool = False) -> str:
    if r.equal:
        return "No change in connectivity.\n"
    lines = []
    for title, rows in (("Allowed now, denied before", r.added), ("Denied now, allowed before", r.removed)):
        if not rows:
            continue
        if markdown:
            lines += [f"### {title} ({len(rows)})", "", "| from | to | port | observed |", "|---|---|---|---|"]
            lines += [f"| {c.client} | {c.server} | {c.protocol}/{c.port} | {'yes' if c.observed else ''} |" for c in rows]
            lines.append("")
        else:
            lines.append(f"{title} ({len(rows)}):")
            lines += [f"  {c.client} -> {c.server} {c.protocol}/{c.port}{'  (observed)' if c.observed else ''}" for c in rows]
    if markdown:
        lines.insert(0, f"## NetworkPolicy changes: {len(r.added)} connection(s) added, {len(r.removed)} removed\n")
    return "\n".join(lines).rstrip("\n") + "\n"


def diff_json(r: DiffResult) -> dict:
    return {"equal": r.equal, "added": [c.__dict__ for c in r.added], "removed": [c.__dict__ for c in r.removed]}
