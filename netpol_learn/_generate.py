"""generate: flow log + inventory -> the files of a policy directory.

    resolve  ->  synthesize  ->  render

``generate`` is what ``netpol-learn generate`` and ``learn`` call; a Python user can too.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol_learn._text import counted
from netpol_learn._flowlog import FlowLog
from netpol_learn._inventory import Inventory
from netpol_learn._policy import host_cidr
from netpol_learn._render import MARKER, render_files
from netpol_learn._resolve import Resolution, report_text, resolve
from netpol_learn._synthesize import GenerateOptions, PolicySet, synthesize


@dataclass(frozen=True)
class Generated:
    files: dict[str, str]  # file name -> text
    policies: PolicySet
    resolution: Resolution


def cluster_ranges(inventory: Inventory) -> tuple[str, ...]:
    """The pod and Service ranges and the node addresses: never allowed by a wide ipBlock."""
    nodes = sorted(host_cidr(address) for node in inventory.nodes for address in node.addresses)
    return tuple(dict.fromkeys((*inventory.pod_cidrs, *inventory.service_cidrs, *nodes)))


def generate(log: FlowLog, inventory: Inventory, options: GenerateOptions = GenerateOptions(), template_dir=None) -> Generated:
    """Resolve ``log`` against ``inventory``, synthesize the policies ``options`` ask for and render
    them (with the templates of ``template_dir`` replacing the built-in ones by name): the files of
    a policy directory, by name, for ``write_directory``."""
    resolution = resolve(log, inventory)
    policies = synthesize(resolution, options, cluster_ranges(inventory))
    files = render_files(policies, _report(log, resolution, policies, options), template_dir)
    return Generated(files, policies, resolution)


def _report(log: FlowLog, resolution: Resolution, policies: PolicySet, options: GenerateOptions) -> str:
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
    lines += ["", "## Resolution", "", "```", report_text(resolution).rstrip("\n"), "```", ""]
    return "\n".join(lines)
