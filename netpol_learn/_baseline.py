"""The cluster-wide baseline (``generate --cluster-baseline``): one ClusterNetworkPolicy.

``policy.networking.k8s.io/v1alpha2``, ``tier: Baseline``: its rules apply only to traffic of pods
that no NetworkPolicy isolates in that direction, so it changes nothing where the generated
policies (or anyone's) decide, and makes every other namespace, including those created later,
default-deny in the directions ``--default-deny`` isolates. Its subject is every namespace but
``--baseline-exclude`` (kube-system by default).

- egress: DNS to the cluster DNS pods is accepted first (a namespace without policies of its own
  still resolves names, and reaches nothing with them), then everything else is denied: every
  namespace's pods and every address (``0.0.0.0/0``, ``::/0``);
- ingress: denied from every namespace's pods. The standard channel's ingress peers are pods and
  namespaces only: traffic from outside the cluster or from nodes is not covered by this policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol_learn._inventory import LabelSelector
from netpol_learn._policy import MANAGED_BY, NAMESPACE_LABEL
from netpol_learn._resolve import CLUSTER_DNS_LABEL, CLUSTER_DNS_NAMESPACE, POD, Resolution
from netpol_learn._synthesize import DENIES, GenerateOptions, is_dns

API_VERSION = "policy.networking.k8s.io/v1alpha2"
FILE = "_cluster-baseline.yaml"  # "_" cannot start a namespace's name: never a namespace's file
#: Lower values take precedence within the tier; the baseline is the last word: the highest.
PRIORITY = 1000


@dataclass(frozen=True)
class ClusterBaseline:
    name: str
    exclude: tuple[str, ...]  # namespaces left alone
    directions: tuple[str, ...]  # Ingress, Egress: what it denies
    dns: tuple[tuple[str, LabelSelector], ...] = ()  # (namespace, pod selector) of the cluster DNS pods
    labels: tuple[tuple[str, str], ...] = ()
    priority: int = PRIORITY

    kind = "ClusterNetworkPolicy"

    @property
    def subject(self) -> dict:
        if not self.exclude:
            return {"namespaces": {}}
        return {"namespaces": {"matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "NotIn", "values": list(self.exclude)}]}}

    @property
    def dns_protocols(self) -> list[dict]:
        return [{"udp": {"destinationPort": {"number": 53}}}, {"tcp": {"destinationPort": {"number": 53}}}]

    def to_dict(self) -> dict:
        spec: dict = {"tier": "Baseline", "priority": self.priority, "subject": self.subject}
        if "Ingress" in self.directions:
            spec["ingress"] = [{"name": "deny-the-rest", "action": "Deny", "from": [{"namespaces": {}}]}]
        if "Egress" in self.directions:
            rules = []
            if self.dns:
                rules.append({
                    "name": "cluster-dns", "action": "Accept",
                    "to": [{"pods": {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: ns}}, "podSelector": sel.to_dict()}} for ns, sel in self.dns],
                    "protocols": self.dns_protocols,
                })
            rules.append({"name": "deny-the-rest", "action": "Deny", "to": [{"namespaces": {}}, {"networks": ["0.0.0.0/0", "::/0"]}]})
            spec["egress"] = rules
        metadata: dict = {"name": self.name}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        return {"apiVersion": API_VERSION, "kind": self.kind, "metadata": metadata, "spec": spec}


def cluster_baseline(resolution: Resolution, options: GenerateOptions) -> ClusterBaseline:
    """The baseline the options ask for; the cluster DNS pods as observed (their workloads'
    selectors), else CoreDNS's usual labels."""
    dns: set[tuple[str, LabelSelector]] = set()
    for c in resolution.connections:
        if c.server.kind == POD and is_dns(c):
            w = resolution.workloads.get((c.server.namespace, c.server.workload))
            if w is not None and w.selector is not None:
                dns.add((w.namespace, w.selector))
    if not dns:
        dns = {(CLUSTER_DNS_NAMESPACE, LabelSelector((CLUSTER_DNS_LABEL,)))}
    return ClusterBaseline(
        name=options.name_prefix + "cluster-baseline",
        exclude=tuple(sorted(set(options.baseline_exclude))),
        directions=DENIES[options.default_deny],
        dns=tuple(sorted(dns, key=lambda d: (d[0], str(d[1].to_dict())))),
        labels=tuple(MANAGED_BY.items()),
    )
