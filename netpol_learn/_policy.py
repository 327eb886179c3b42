"""The policy model: what to allow, independent of YAML.

``synthesize`` builds it from resolved traffic; the Jinja templates turn it into YAML; the
semantics engine (``verify``/``diff``) reads YAML back into it. ``to_dict`` gives the exact
Kubernetes object, so a test can compare a rendered file with the model it came from.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from netpol_learn._inventory import NAMESPACE_LABEL, LabelSelector  # noqa: F401  (NAMESPACE_LABEL: the synthesis and the engine import it from here)

MANAGED_BY = {"app.kubernetes.io/managed-by": "netpol-learn"}


@lru_cache(maxsize=1 << 16)
def object_metadata(name: str, namespace: str, labels=(), annotations=()) -> dict:
    """A namespaced object's ``metadata``: its name and namespace, labels and annotations when any."""
    metadata: dict = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return metadata


def host_cidr(address: str) -> str:
    """One address as a block of its own, as policies write it: ``10.0.0.1/32``, ``fd00::1/128``."""
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


@dataclass(frozen=True, order=True)
class PortSpec:
    protocol: str = "TCP"
    port: int | str | None = None  # None: all ports of the protocol
    end_port: int | None = None

    def to_dict(self) -> dict:
        out: dict = {"protocol": self.protocol}
        if self.port is not None:
            out["port"] = self.port
        if self.end_port is not None:
            out["endPort"] = self.end_port
        return out

    def sort_key(self) -> tuple:
        """How generated rules order ports: by protocol, numbers (numerically) before names."""
        return (self.protocol, isinstance(self.port, str), str(self.port).zfill(5))


@dataclass(frozen=True, order=True)
class IpBlock:
    cidr: str
    except_: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out: dict = {"cidr": self.cidr}
        if self.except_:
            out["except"] = list(self.except_)
        return out


@dataclass(frozen=True)
class PolicyPeer:
    """One element of ``from``/``to``: selectors that must both hold, or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IpBlock | None = None
    comment: str | None = field(default=None, compare=False)  # shown beside it in the YAML

    def to_dict(self) -> dict:
        out: dict = {}
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.to_dict()
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.to_dict()
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.to_dict()
        return out

    def sort_key(self) -> tuple:
        ip = self.ip_block
        ns = self.namespace_selector.to_dict() if self.namespace_selector else None
        pod = self.pod_selector.to_dict() if self.pod_selector else None
        return (ip is not None, str(ns), str(pod), _cidr_sort(ip.cidr) if ip else ())


def _cidr_sort(cidr: str) -> tuple:
    net = ipaddress.ip_network(cidr, strict=False)
    return (net.version, int(net.network_address), net.prefixlen)


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule: traffic from/to any of ``peers`` on any of ``ports``.

    ``peers`` None means the key is absent (all peers); () means present and empty. The same for
    ``ports``: None allows every port."""

    peers: tuple[PolicyPeer, ...] | None = None
    ports: tuple[PortSpec, ...] | None = None
    comment: str | None = field(default=None, compare=False)

    def to_dict(self, direction: str) -> dict:
        out: dict = {}
        if self.peers is not None:
            out["from" if direction == "ingress" else "to"] = [p.to_dict() for p in self.peers]
        if self.ports is not None:
            out["ports"] = [p.to_dict() for p in self.ports]
        return out


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]  # ("Ingress",), ("Egress",) or both
    ingress: tuple[Rule, ...] | None = None  # None: the key is absent
    egress: tuple[Rule, ...] | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    comment: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        metadata = object_metadata(self.name, self.namespace, self.labels, self.annotations)
        spec: dict = {"podSelector": self.pod_selector.to_dict(), "policyTypes": list(self.policy_types)}
        if self.ingress is not None:
            spec["ingress"] = [r.to_dict("ingress") for r in self.ingress]
        if self.egress is not None:
            spec["egress"] = [r.to_dict("egress") for r in self.egress]
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}
