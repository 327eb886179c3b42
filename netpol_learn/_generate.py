"""generate: flow log + inventory -> the files of a policy directory.

    resolve  ->  synthesize  ->  render

``generate`` is what ``netpol-learn generate`` and ``learn`` call; a Python user can too. Its
REPORT.md ends with the learning status (``_status``), and the chart of new edges over time
(``_chart``) goes beside it as ``learning.png`` when there is any edge to draw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from netpol_learn._baseline import FILE as BASELINE_FILE, cluster_baseline
from netpol_learn._chart import CHART, learning_chart
from netpol_learn._text import counted
from netpol_learn._flowlog import FlowLog
from netpol_learn._inventory import Inventory
from netpol_learn._policy import host_cidr
from netpol_learn._render import MARKER, render_files
from netpol_learn._resolve import Resolution, ResolveOptions, report_text, resolve
from netpol_learn._status import DEFAULT_STABLE_AFTER, Status, learning_status, status_markdown
from netpol_learn._synthesize import GenerateOptions, PolicySet, synthesize


@dataclass(frozen=True)
class Generated:
    """What ``generate`` made: the text files of a policy directory, the policies and the
    resolution behind them, and the learning status (with its chart in ``images``)."""

    files: dict[str, str]  # file name -> text
    policies: PolicySet
    resolution: Resolution
    status: Status | None = None

    @cached_property
    def images(self) -> dict[str, bytes]:
        """The chart REPORT.md shows (``learning.png``), drawn on first use; none without edges."""
        return {CHART: learning_chart(self.status)} if _charted(self.status) else {}

    @property
    def directory(self) -> dict[str, str | bytes]:
        """Every file of the policy directory, for ``write_directory``: the files and the images."""
        return {**self.files, **self.images}


def _charted(status: Status | None) -> bool:
    return status is not None and status.edges > 0


def cluster_ranges(inventory: Inventory) -> tuple[str, ...]:
    """The pod and Service ranges and the node addresses: never allowed by a wide ipBlock."""
    nodes = sorted(host_cidr(address) for node in inventory.nodes for address in node.addresses)
    return tuple(dict.fromkeys((*inventory.pod_cidrs, *inventory.service_cidrs, *nodes)))


def generate(log: FlowLog, inventory: Inventory, options: GenerateOptions = GenerateOptions(), template_dir=None,
             resolve_options: ResolveOptions = ResolveOptions(), stable_after: int = DEFAULT_STABLE_AFTER,
             resolution: Resolution | None = None) -> Generated:
    """Resolve ``log`` against ``inventory`` (as ``resolve_options`` say), synthesize the policies
    ``options`` ask for and render them (with the templates of ``template_dir`` replacing the
    built-in ones by name): the files of a policy directory, by name, for ``write_directory``
    (``Generated.directory`` adds the chart). REPORT.md says whether learning is done, a
    workload being stable after ``stable_after`` ns without a new edge. A caller that resolved
    ``log`` already (with those options) passes its ``resolution``."""
    if resolution is None:
        resolution = resolve(log, inventory, resolve_options)
    status = learning_status(log, inventory, resolution, stable_after)
    if options.flavor == "cilium":
        from netpol_learn._cilium import synthesize_cilium

        policies = synthesize_cilium(resolution, options, cluster_ranges(inventory), log.dns)
    else:
        moving = {c.name: tuple(dict.fromkeys(a.address for a in c.addresses)) for c in status.dns_changes}
        policies = synthesize(resolution, options, cluster_ranges(inventory), moving)
    if options.cluster_baseline:
        policies = replace(policies, baseline=cluster_baseline(resolution, options))
    files = render_files(policies, _report(log, resolution, policies, options, status), template_dir)
    return Generated(files, policies, resolution, status)


def _report(log: FlowLog, resolution: Resolution, policies: PolicySet, options: GenerateOptions, status: Status) -> str:
    workload_policies = policies.workload_policies
    if options.default_deny == "ingress":
        dns = "not needed (egress stays open)"
    elif options.namespace_dns:
        dns = "an allow-dns policy per namespace"
    elif options.default_deny == "none":
        dns = "in the policy of each workload whose egress it isolates"
    else:
        dns = "in each workload policy"
    lines = [
        f"{MARKER}: what the policies in this directory are made of.",
        "",
        f"- {counted(len(log.flows), 'observed flow')} from {', '.join(log.sources) or 'the flow logs'}",
        f"- {counted(len(workload_policies), 'workload policy', 'workload policies')} in {counted(len({p.namespace for p in policies.policies}), 'namespace')}"
        + (f"; namespaces left alone: {', '.join(options.exclude_namespaces)}" if options.exclude_namespaces else ""),
        f"- default deny: {options.default_deny}; DNS: {dns}",
    ]
    if options.flavor == "cilium":
        lines.append("- flavour: cilium (CiliumNetworkPolicy, cilium.io/v2; outside names as toFQDNs through Cilium's DNS proxy)")
    if policies.baseline is not None:
        b = policies.baseline
        lines.append(f"- cluster baseline: {BASELINE_FILE} (ClusterNetworkPolicy, tier Baseline) denies {' and '.join(d.lower() for d in b.directions)} "
                     f"that no NetworkPolicy decides in every namespace but {', '.join(b.exclude) or 'none'}"
                     + ("; it lets DNS to the cluster DNS through" if "Egress" in b.directions else ""))
    lines += [
        f"- learning: {status.verdict} (see Learning status below)",
        "",
    ]
    warnings = log.stats.get("warnings") or {}
    if warnings:  # damaged captures: what was read of them is in, the rest is not
        lines += ["## Warnings while reading the traffic", "", "The captures were damaged here; traffic in what could not be read is not in these policies:", ""]
        lines += [f"- {message}" + (f" ({n} times)" if n > 1 else "") for message, n in sorted(warnings.items())]
        lines.append("")
    lines += [
        "## Traffic that did not become a rule",
        "",
    ]
    lines += [f"- {s}" for s in policies.skipped] or ["None."]
    if policies.hints:
        lines += ["", "## Options that would change these policies", ""]
        lines += [f"- {h}" for h in policies.hints]
    lines += ["", status_markdown(status, level=2, chart=CHART if _charted(status) else None).rstrip("\n")]
    lines += ["", "## Resolution", "", "```", report_text(resolution).rstrip("\n"), "```", ""]
    return "\n".join(lines)
