"""netpol-learn: learn Kubernetes NetworkPolicies from observed traffic.

The public API. Every stage of the command line runs from Python too; the CLI
(``netpol_learn._cli``) is a thin layer over these names, and everything else lives in private
``_modules`` that may change between releases::

    import netpol_learn as nl

    log = nl.capture_files(["node-a.pcap", "node-b.pcapng.gz"])     # or nl.read_flow_log(path)
    inventory = nl.load_inventory(["inventory.yaml"])                # or nl.fetch_inventory()
    resolution = nl.resolve(log, inventory)                          # who talked to whom
    generated = nl.generate(log, inventory, nl.GenerateOptions(default_deny="ingress"))
    nl.write_directory("policies", generated.directory)              # the policy directory
    status = nl.learning_status(log, inventory, resolution)          # is learning done?
    page = nl.page_html(nl.build_report(log, inventory))             # the review page
    result = nl.verify(log, inventory, nl.load_policies(["policies"]))
    assert not result.denied

Errors are ``NetpolLearnError`` subclasses with one-line messages (the CLI prints them as they are).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from netpol_learn._lazy import on_first_use

# Each public name and the private module that defines it. They are imported on first use
# (PEP 562), so `import netpol_learn` and every CLI command start without loading the stages they
# do not run (Jinja, PyYAML, numpy).
_HOMES = {
    "DEFAULT_DEDUP_WINDOW": "netpol_learn._capture",
    "capture_file": "netpol_learn._capture",
    "capture_files": "netpol_learn._capture",
    "Collected": "netpol_learn._collect",
    "collect": "netpol_learn._collect",
    "collect_from_service": "netpol_learn._collect",
    "FromService": "netpol_learn._collect",
    "learning_chart": "netpol_learn._chart",
    "CaptureError": "netpol_learn._errors",
    "CollectError": "netpol_learn._errors",
    "FlowLogError": "netpol_learn._errors",
    "FlowLogVersionError": "netpol_learn._errors",
    "ServeError": "netpol_learn._errors",
    "InventoryError": "netpol_learn._errors",
    "ManifestError": "netpol_learn._errors",
    "NetpolLearnError": "netpol_learn._errors",
    "OutputError": "netpol_learn._errors",
    "PolicyError": "netpol_learn._errors",
    "SniffError": "netpol_learn._errors",
    "TemplateError": "netpol_learn._errors",
    "DnsAnswer": "netpol_learn._flowlog",
    "DnsObservation": "netpol_learn._flowlog",
    "Flow": "netpol_learn._flowlog",
    "FlowLog": "netpol_learn._flowlog",
    "Translation": "netpol_learn._flowlog",
    "merge_logs": "netpol_learn._flowlog",
    "read_flow_log": "netpol_learn._flowlog",
    "write_flow_log": "netpol_learn._flowlog",
    "ServeOptions": "netpol_learn._serve",
    "Store": "netpol_learn._serve",
    "open_store": "netpol_learn._serve",
    "serve": "netpol_learn._serve",
    "Generated": "netpol_learn._generate",
    "generate": "netpol_learn._generate",
    "Inventory": "netpol_learn._inventory",
    "LabelSelector": "netpol_learn._inventory",
    "Node": "netpol_learn._inventory",
    "Pod": "netpol_learn._inventory",
    "Service": "netpol_learn._inventory",
    "Watched": "netpol_learn._inventory",
    "Workload": "netpol_learn._inventory",
    "fetch_inventory": "netpol_learn._inventory",
    "load_inventory": "netpol_learn._inventory",
    "watch_inventory": "netpol_learn._inventory",
    "write_inventory": "netpol_learn._inventory",
    "render_manifests": "netpol_learn._manifests",
    "NetworkPolicy": "netpol_learn._policy",
    "render_files": "netpol_learn._render",
    "build_report": "netpol_learn._report",
    "map_png": "netpol_learn._report",
    "map_svg": "netpol_learn._report",
    "page_html": "netpol_learn._report",
    "write_directory": "netpol_learn._render",
    "Connection": "netpol_learn._resolve",
    "DEFAULT_CLOCK_SKEW": "netpol_learn._resolve",
    "Peer": "netpol_learn._resolve",
    "Resolution": "netpol_learn._resolve",
    "ResolveOptions": "netpol_learn._resolve",
    "report_text": "netpol_learn._resolve",
    "resolution_to_json": "netpol_learn._resolve",
    "resolve": "netpol_learn._resolve",
    "load_policies": "netpol_learn._semantics",
    "DEFAULT_STABLE_AFTER": "netpol_learn._status",
    "AddressSeen": "netpol_learn._status",
    "Edge": "netpol_learn._status",
    "NameChange": "netpol_learn._status",
    "Status": "netpol_learn._status",
    "WorkloadStatus": "netpol_learn._status",
    "learning_status": "netpol_learn._status",
    "status_markdown": "netpol_learn._status",
    "status_text": "netpol_learn._status",
    "status_to_json": "netpol_learn._status",
    "GenerateOptions": "netpol_learn._synthesize",
    "PolicySet": "netpol_learn._synthesize",
    "synthesize": "netpol_learn._synthesize",
    "Change": "netpol_learn._verify",
    "Denied": "netpol_learn._verify",
    "DiffResult": "netpol_learn._verify",
    "VerifyResult": "netpol_learn._verify",
    "diff": "netpol_learn._verify",
    "diff_json": "netpol_learn._verify",
    "diff_text": "netpol_learn._verify",
    "verify": "netpol_learn._verify",
    "verify_json": "netpol_learn._verify",
    "verify_text": "netpol_learn._verify",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = on_first_use(globals(), _HOMES)


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from netpol_learn._capture import DEFAULT_DEDUP_WINDOW, capture_file, capture_files
    from netpol_learn._chart import learning_chart
    from netpol_learn._collect import Collected, FromService, collect, collect_from_service
    from netpol_learn._errors import CaptureError, CollectError, FlowLogError, FlowLogVersionError, InventoryError, ServeError, ManifestError, NetpolLearnError, OutputError, PolicyError, SniffError, TemplateError
    from netpol_learn._flowlog import DnsAnswer, DnsObservation, Flow, FlowLog, Translation, merge_logs, read_flow_log, write_flow_log
    from netpol_learn._generate import Generated, generate
    from netpol_learn._inventory import Inventory, LabelSelector, Node, Pod, Service, Watched, Workload, fetch_inventory, load_inventory, watch_inventory, write_inventory
    from netpol_learn._manifests import render_manifests
    from netpol_learn._policy import NetworkPolicy
    from netpol_learn._render import render_files, write_directory
    from netpol_learn._report import build_report, map_png, map_svg, page_html
    from netpol_learn._resolve import DEFAULT_CLOCK_SKEW, Connection, Peer, Resolution, ResolveOptions, report_text, resolution_to_json, resolve
    from netpol_learn._semantics import load_policies
    from netpol_learn._serve import ServeOptions, Store, open_store, serve
    from netpol_learn._status import DEFAULT_STABLE_AFTER, AddressSeen, Edge, NameChange, Status, WorkloadStatus, learning_status, status_markdown, status_text, status_to_json
    from netpol_learn._synthesize import GenerateOptions, PolicySet, synthesize
    from netpol_learn._verify import Change, Denied, DiffResult, VerifyResult, diff, diff_json, diff_text, verify, verify_json, verify_text
