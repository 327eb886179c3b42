"""The public API: ``import netpol_learn`` runs every stage without the CLI, and nothing else is
public.

- ``__all__`` holds what the stages need (an independent list here, by stage), every error class,
  and only names that resolve to objects defined in the private modules;
- no module imports another package's private module (``netpol_learn._capture._decode`` is the
  capture package's own; others go through ``netpol_learn._capture``);
- the stages, through the public names only, on the guestbook example: capture, flow-log round
  trip and merge, inventory, resolve, generate, render to a directory, load policies, verify,
  diff, manifests; errors are the public classes.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import netpol_learn as nl

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "netpol_learn"
GUESTBOOK = ROOT / "captures" / "guestbook"

# What the issue asks a Python user to be able to do, by stage.
STAGES = {
    "capture": {"capture_file", "capture_files", "DEFAULT_DEDUP_WINDOW"},
    "flow log": {"FlowLog", "Flow", "DnsObservation", "DnsAnswer", "Translation", "read_flow_log", "write_flow_log", "merge_logs"},
    "inventory": {"Inventory", "load_inventory", "fetch_inventory", "write_inventory", "watch_inventory", "Watched"},
    "resolve": {"resolve", "Resolution", "ResolveOptions", "DEFAULT_CLOCK_SKEW", "Connection", "Peer", "report_text", "resolution_to_json"},
    "generate": {"generate", "Generated", "GenerateOptions", "PolicySet", "synthesize"},
    "render": {"render_files", "write_directory"},
    "policies": {"load_policies", "NetworkPolicy"},
    "verify": {"verify", "VerifyResult", "Denied", "verify_text", "verify_json"},
    "diff": {"diff", "DiffResult", "Change", "diff_text", "diff_json"},
    "collect": {"collect", "Collected"},
    "manifests": {"render_manifests"},
    "report": {"build_report", "page_html", "map_svg", "map_png"},
}


def test_all_holds_every_stage_and_every_error_class():
    missing = {stage: sorted(names - set(nl.__all__)) for stage, names in STAGES.items() if names - set(nl.__all__)}
    assert not missing
    from netpol_learn import _errors

    errors = {name for name, obj in vars(_errors).items() if inspect.isclass(obj) and issubclass(obj, nl.NetpolLearnError)}
    assert len(errors) >= 10 and errors <= set(nl.__all__), sorted(errors - set(nl.__all__))


def test_every_public_name_resolves_to_an_object_of_a_private_module():
    assert len(nl.__all__) == len(set(nl.__all__))
    for name in nl.__all__:
        obj = getattr(nl, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("netpol_learn._"), (name, obj.__module__)
            assert obj.__name__ == name
            assert inspect.getdoc(obj), f"{name} has no docstring"  # the API reference is help()
    assert set(nl.__all__) <= set(dir(nl))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        nl.no_such_name  # noqa: B018


def test_star_import_in_a_fresh_process_gives_exactly_all():
    code = ("import netpol_learn; before = set(globals()); from netpol_learn import *; "
            "print(sorted(set(globals()) - before - {'before'}) == sorted(netpol_learn.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_importing_the_package_loads_no_stage():
    """The CLI starts fast: `import netpol_learn` loads the stages' modules only when used (it
    loads one module of its own, netpol_learn._lazy: what loads them, 30 lines, no stage)."""
    code = "import sys, netpol_learn; print(sorted(m for m in sys.modules if m.startswith(('netpol_learn.', 'numpy', 'jinja2', 'yaml', 'kubernetes'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "['netpol_learn._lazy']", out.stdout + out.stderr


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name the file imports, with ``from pkg import _sub`` as ``pkg._sub``."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([node.module] if node.module else []))
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return names


def test_no_module_imports_another_packages_private_module():
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        module = _module_name(path)
        for name in _imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            parts = name.split(".")
            if parts[0] != "netpol_learn":
                continue
            for i in range(2, len(parts)):  # parts[i] private: only netpol_learn.<...parts[:i]> may import it
                owner = ".".join(parts[:i])
                if parts[i].startswith("_") and not (module == owner or module.startswith(owner + ".")):
                    problems.append(f"{path.relative_to(ROOT)} imports {name} (private to {owner})")
                    break
    assert not problems, "\n".join(problems)


def test_the_import_rule_check_sees_a_violation():
    tree = ast.parse("from netpol_learn._capture import _decode\nimport netpol_learn._inventory._model\n")
    assert _imported(tree, "netpol_learn._sniff._ring", False) == ["netpol_learn._capture", "netpol_learn._capture._decode", "netpol_learn._inventory._model"]


# --- every stage through the public names -----------------------------------------------------


@pytest.fixture(scope="module")
def guestbook(tmp_path_factory):
    here = tmp_path_factory.mktemp("api")
    log = nl.capture_files([GUESTBOOK / "capture.pcap"])
    inventory = nl.load_inventory([GUESTBOOK / "inventory.yaml"])
    return here, log, inventory


def test_one_path_may_be_given_as_itself(guestbook):
    """A string or a Path where a list of paths is expected: that one path, not the paths of a
    string's characters (``"/"`` first: the whole file system)."""
    _, log, inventory = guestbook
    for one in (GUESTBOOK / "capture.pcap", str(GUESTBOOK / "capture.pcap")):
        assert nl.capture_files(one) == log
    for one in (GUESTBOOK / "inventory.yaml", str(GUESTBOOK / "inventory.yaml")):
        assert nl.load_inventory(one).pods == inventory.pods


def test_capture_and_the_flow_log_round_trip(guestbook):
    here, log, _ = guestbook
    assert isinstance(log, nl.FlowLog) and len(log.flows) == 8 and all(isinstance(f, nl.Flow) for f in log.flows)
    assert {(f.proto, f.port) for f in log.flows} == {("UDP", 53), ("TCP", 5432), ("TCP", 80)}
    assert nl.capture_file(GUESTBOOK / "capture.pcap").flows == log.flows
    nl.write_flow_log(log, here / "flows.jsonl")
    again = nl.read_flow_log(here / "flows.jsonl")
    assert again.flows == log.flows and again.dns == log.dns
    doubled = nl.merge_logs([log, again])
    assert [f.connections for f in doubled.flows] == [2 * f.connections for f in log.flows]
    with pytest.raises(nl.CaptureError):
        nl.capture_files([GUESTBOOK / "inventory.yaml"])
    (here / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(nl.FlowLogError):
        nl.read_flow_log(here / "broken.jsonl")


def test_inventory_and_resolve(guestbook):
    here, log, inventory = guestbook
    assert isinstance(inventory, nl.Inventory)
    workloads = {(w.namespace, w.kind, w.name) for w in inventory.workloads}
    assert {("guestbook", "Deployment", "ui"), ("guestbook", "Deployment", "api"), ("guestbook", "StatefulSet", "db")} <= workloads
    resolution = nl.resolve(log, inventory)
    assert isinstance(resolution, nl.Resolution) and all(isinstance(c, nl.Connection) for c in resolution.connections)
    pairs = {(c.client.workload, c.server.workload, c.port) for c in resolution.connections if c.server.namespace == "guestbook"}
    assert pairs == {("Deployment/ui", "Deployment/api", 8080), ("Deployment/api", "StatefulSet/db", 5432)}
    assert "Unresolved addresses: none" in nl.report_text(resolution)
    assert nl.resolution_to_json(resolution)["connections"]
    (here / "bad-inventory.yaml").write_text("kind: Pod\nmetadata: {name: x}\n")
    with pytest.raises(nl.InventoryError):
        nl.load_inventory([here / "bad-inventory.yaml"])


def test_generate_render_load_verify_and_diff(guestbook):
    here, log, inventory = guestbook
    generated = nl.generate(log, inventory, nl.GenerateOptions(default_deny="ingress"))
    assert isinstance(generated, nl.Generated) and isinstance(generated.policies, nl.PolicySet)
    assert sorted(generated.files) == ["REPORT.md", "guestbook.yaml", "kustomization.yaml"]
    assert generated.files == nl.render_files(generated.policies, generated.files["REPORT.md"])
    nl.write_directory(here / "policies", generated.files)
    assert sorted(p.name for p in (here / "policies").iterdir()) == sorted(generated.files)
    with pytest.raises(nl.OutputError):
        nl.write_directory(here / "flows.jsonl" if (here / "flows.jsonl").exists() else GUESTBOOK / "capture.pcap", generated.files)
    policies = nl.load_policies([here / "policies"])
    assert all(isinstance(p, nl.NetworkPolicy) for p in policies)
    # One path as itself, a Path or a string: not a string's characters as paths ("/" first).
    assert nl.load_policies(here / "policies") == policies == nl.load_policies(str(here / "policies"))
    assert {p.name for p in policies} == {"default-deny", "api", "db"}  # ui has no ingress, egress is open
    result = nl.verify(log, inventory, policies)
    assert isinstance(result, nl.VerifyResult) and not result.denied and result.allowed
    assert nl.verify_json(result)["denied"] == [] and "would be denied" not in nl.verify_text(result)
    without_db = [p for p in policies if p.name != "db"]
    denied = nl.verify(log, inventory, without_db)
    assert {(d.client, d.server, d.direction) for d in denied.denied} == {("guestbook/Deployment/api", "guestbook/StatefulSet/db", "ingress")}
    assert all(isinstance(d, nl.Denied) for d in denied.denied)
    same = nl.diff(policies, policies, inventory, log)
    assert isinstance(same, nl.DiffResult) and same.equal
    changed = nl.diff(policies, without_db, inventory, log)
    assert not changed.equal and all(isinstance(c, nl.Change) for c in changed.removed)
    assert {(c.client, c.server, c.port) for c in changed.removed} >= {("guestbook/Deployment/api", "guestbook/StatefulSet/db", 5432)}
    assert nl.diff_json(changed)["removed"] and "api" in nl.diff_text(changed, markdown=True)
    with pytest.raises(nl.PolicyError):
        nl.load_policies([here / "no-such-directory"])


def test_options_are_checked_where_they_are_made():
    with pytest.raises(ValueError, match="name prefix"):
        nl.GenerateOptions(name_prefix="Bad_Prefix")
    with pytest.raises(ValueError, match="dns: 'bogus' is not one of namespace, per-workload"):
        nl.GenerateOptions(dns="bogus")


def test_manifests(tmp_path):
    text = nl.render_manifests("netpol", "registry.example/netpol-learn:9.9")
    assert "namespace: netpol" in text and "image: registry.example/netpol-learn:9.9" in text
    with pytest.raises(nl.ManifestError):
        nl.render_manifests("Not A Namespace", "x")


def test_the_command_line_starts_without_numpy_or_the_capture_stage():
    """Every command's start imports only the command line and what its options show: the
    capture stage, the sniffer, numpy, DuckDB and the Kubernetes client load when a command
    needs them (0.15-0.2 s of each start)."""
    heavy = ("numpy", "duckdb", "kubernetes", "netpol_learn._capture._run", "netpol_learn._capture._aggregate",
             "netpol_learn._sniff._sniffer", "netpol_learn._merge")
    code = f"import sys, netpol_learn._cli; print([m for m in {heavy!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert r.stdout == "[]\n", r.stdout
