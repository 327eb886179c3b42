"""End to end on the example captures in captures/<scenario>/, recorded for real in network
namespaces (see captures/README.md): `learn` writes policies that allow every observed connection
and deny every other workload pair and port, as judged by network-config-analyzer (an engine this
project did not write, tests/policy_judge.py) and by the project's own `verify`; every document
is a valid Kubernetes object.

The truth table is captures/<scenario>/expected.yaml, written from the scenario's definition,
not from the capture. Beside it, by design: every pod of a namespace that resolved names may ask
the cluster DNS on UDP and TCP 53 (the allow-dns policy).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netpol_learn._cli import main
from policy_judge import judge, validate_documents

CAPTURES = Path(__file__).parent.parent / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/expected.yaml"))


def _objects(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text())
    return doc["items"] if doc.get("kind") == "List" else [doc]


def _workload(pod: dict, by_name: dict) -> str:
    meta = pod["metadata"]
    ns = meta["namespace"]
    owner = next((r for r in meta.get("ownerReferences", ()) if r.get("controller")), None)
    if owner is None:
        return f"{ns}/Pod/{meta['name']}"
    kind, name = owner["kind"], owner["name"]
    parent = by_name.get((kind, ns, name))
    if parent:
        up = next((r for r in parent["metadata"].get("ownerReferences", ()) if r.get("controller")), None)
        if up:
            kind, name = up["kind"], up["name"]
    return f"{ns}/{kind}/{name}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_learned_policies_allow_exactly_what_was_observed(tmp_path, scenario):
    here = CAPTURES / scenario
    out = tmp_path / "policies"
    result = CliRunner().invoke(main, ["learn", str(here / "capture.pcap"), "--inventory", str(here / "inventory.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.stderr

    files = sorted(out.glob("*.yaml"))
    assert validate_documents(files) == []
    policy_files = [f for f in files if f.name != "kustomization.yaml"]
    assert policy_files, "no policies written"

    expected = {(e["from"], e["to"], e["protocol"], int(e["port"])) for e in yaml.safe_load((here / "expected.yaml").read_text())}
    objects = _objects(here / "inventory.yaml")
    by_name = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    pods = [o for o in objects if o["kind"] == "Pod" and not o["spec"].get("hostNetwork")]
    workloads = {_workload(p, by_name) for p in pods}
    policed = {f.stem for f in policy_files}  # namespaces that got policies
    ports = {(proto, port) for _, _, proto, port in expected} | {("UDP", 53), ("TCP", 53)}
    for p in pods:
        for c in p["spec"]["containers"]:
            ports |= {(cp.get("protocol", "TCP"), cp["containerPort"]) for cp in c.get("ports", ())}
    outside = {name: name.split(":", 1)[1] for e in expected for name in e[:2] if name.startswith("outside:")}

    dns = {w for w in workloads if w.startswith("kube-system/") and "coredns" in w}
    allowed_by_design = set(expected)
    for w in workloads:
        if w.split("/")[0] in policed:
            allowed_by_design |= {(w, d, proto, 53) for d in dns for proto in ("UDP", "TCP")}

    verdict = judge(policy_files, objects, sorted(ports), external=outside)
    assert not verdict.partial, sorted(verdict.partial)
    missing = {c for c in expected if tuple(c) not in {tuple(a) for a in verdict.allowed}}
    assert not missing, f"observed but denied: {sorted(missing)}"

    def governed(src: str, dst: str) -> bool:
        # A pair the generated policies decide: one end is a pod of a namespace that got policies.
        return any(x.split("/")[0] in policed for x in (src, dst) if not x.startswith("outside:"))

    extra = sorted(tuple(c) for c in verdict.allowed if governed(c[0], c[1]) and tuple(c) not in allowed_by_design)
    assert not extra, f"allowed but never observed: {extra}"

    flows = tmp_path / "flows.jsonl"
    assert CliRunner().invoke(main, ["capture", str(here / "capture.pcap"), "-o", str(flows)]).exit_code == 0
    check = CliRunner().invoke(main, ["verify", "--policies", str(out), "--inventory", str(here / "inventory.yaml"), "--flows", str(flows)])
    assert check.exit_code == 0, check.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_address_resolves(tmp_path, scenario):
    here = CAPTURES / scenario
    flows = tmp_path / "flows.jsonl"
    assert CliRunner().invoke(main, ["capture", str(here / "capture.pcap"), "-o", str(flows)]).exit_code == 0
    report = CliRunner().invoke(main, ["resolve", "--flows", str(flows), "--inventory", str(here / "inventory.yaml")])
    assert report.exit_code == 0
    assert "Unresolved addresses: none" in report.stdout and "Ambiguous addresses: none" in report.stdout
