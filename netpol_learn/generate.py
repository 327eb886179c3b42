"""generate: flow log + inventory -> the files of a policy directory.

    resolve  ->  synthesize  ->  render

``generate`` is what ``netpol-learn generate`` and ``learn`` call; a Python user can too.
"""

from __future__ import annotations

from dataclasses import dataclass

from netpol_learn.flowlog import FlowLog
from netpol_learn.inventory._model import Inventory
from netpol_learn.render import MARKER, render_files
from netpol_learn.resolve import Resolution, report_text, resolve
from netpol_learn.synthesize import GenerateOptions, PolicySet, synthesize


@dataclass(frozen=True)
class Generated:
    files: dict[str, str]  # file name -> text
    policies: PolicySet
    resolution: Resolution


def cluster_ranges(inventory: Inventory) -> tuple[str, ...]:
    """The pod and Service ranges and the node addresses: never allowed by a wide ipBlock."""
    nodes = []
    for node in inventory.nodes:
        for address in node.addresses:
            nodes.append(address + ("/128" if ":" in address else "/32"))
    return tuple(dict.fromkeys((*inventory.pod_cidrs, *inventory.service_cidrs, *sorted(nodes))))


def generate(log: FlowLog, inventory: Inventory, options: GenerateOptions = GenerateOptions(), template_dir=None, directory: str = "DIR") -> Generated:
    resolution = resolve(log, inventory)
    policies = synthesize(resolution, options, cluster_ranges(inventory))
    files = render_files(policies, _report(log, resolution, policies, options), template_dir, directory)
    return Generated(files, policies, resolution)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _report(log: FlowLog, resolution: Resolution, policies: PolicySet, options: GenerateOptions) -> str:
    workload_policies = [p for p in policies.policies if p.name not in ("default-deny", "allow-dns")]
    lines = [
        f"{MARKER}: what the policies in this directory are made of.",
        "",
        f"- {len(log.flows)} observed flows from {', '.join(log.sources) or 'the flow logs'}",
        f"- {len(workload_policies)} workload policies in {_count(len({p.namespace for p in policies.policies}), 'namespace')}"
        + (f"; namespaces left alone: {', '.join(options.exclude_namespaces)}" if options.exclude_namespaces else ""),
        f"- default deny: {options.default_deny}; DNS: {'an allow-dns policy per namespace' if options.dns == 'namespace' else 'in each workload policy'}",
        "",
        "## Traffic that did not become a rule",
        "",
    ]
    lines += [f"- {s}" for s in policies.skipped] or ["None."]
    if policies.hints:
        lines += ["", "## Options that would change these policies", ""]
        lines += [f"- {h}" for h in policies.hints]
    lines += ["", "## Resolution", "", "```", report_text(resolution).rstrip("\n"), "```", ""]
    return "\n".join(lines)
