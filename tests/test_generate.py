"""generate: rendered files are exactly the policy model, byte-identical across runs, and the
output directory is written safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import k8s
from fresh_process import SEEDS, netpol_learn
from netpol_learn._cli import main
from netpol_learn._errors import OutputError
from netpol_learn._generate import generate
from netpol_learn._inventory import load_inventory
from netpol_learn._render import MARKER, write_directory
from netpol_learn._synthesize import GenerateOptions


def shop(tmp_path: Path):
    items = [
        k8s.namespace("shop"), k8s.namespace("web"), k8s.namespace("kube-system"),
        k8s.node("node-a", "172.18.0.2", "10.244.0.0/24"),
        k8s.pod("ui-1", "web", "10.244.0.10", labels={"app": "ui"}),
        k8s.pod("api-1", "shop", "10.244.0.20", labels={"app": "api"}, ports=[("http", 8080, "TCP")]),
        k8s.pod("db-0", "shop", "10.244.0.30", labels={"app": "db", "role": "primary"}, ports=[("pg", 5432, "TCP")]),
        k8s.pod("coredns-1", "kube-system", "10.244.0.2", labels={"k8s-app": "kube-dns"}, ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]),
        k8s.service("api", "shop", "10.96.0.50", ports=[("http", 80, "http", "TCP")], selector={"app": "api"}),
        k8s.endpoint_slice("api", "shop", ports=[("http", 8080, "TCP")], endpoints=[("10.244.0.20", "api-1", "node-a")]),
        k8s.service("kube-dns", "kube-system", "10.96.0.10", ports=[("dns", 53, 53, "UDP"), ("dns-tcp", 53, 53, "TCP")], selector={"k8s-app": "kube-dns"}),
        k8s.endpoint_slice("kube-dns", "kube-system", ports=[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")], endpoints=[("10.244.0.2", "coredns-1", "node-a")]),
    ]
    inv = load_inventory([k8s.write_list(tmp_path, items)])
    log = k8s.log(
        k8s.flow("10.244.0.10", "10.96.0.50", 80),
        k8s.flow("10.244.0.20", "10.244.0.30", 5432),
        k8s.flow("10.244.0.20", "10.96.0.10", 53, "UDP"),
        k8s.flow("10.244.0.20", "140.82.112.3", 443),
        dns_observations=[k8s.dns("10.244.0.20", "10.96.0.10", "api.github.com", [("api.github.com", "A", "140.82.112.3")])],
    )
    return log, inv


@pytest.mark.parametrize("options", [GenerateOptions(), GenerateOptions(dns="per-workload", named_ports=True, default_deny="egress")])
def test_rendered_yaml_is_exactly_the_model(tmp_path, options):
    log, inv = shop(tmp_path)
    g = generate(log, inv, options)
    model = {(p.namespace, p.name): p.to_dict() for p in g.policies.policies}
    seen = {}
    for name, text in g.files.items():
        assert text.startswith(MARKER)
        if name.endswith(".yaml") and name != "kustomization.yaml":
            for doc in yaml.safe_load_all(text):
                seen[(doc["metadata"]["namespace"], doc["metadata"]["name"])] = doc
    assert seen == model
    assert yaml.safe_load(g.files["kustomization.yaml"])["resources"] == ["shop.yaml", "web.yaml"]
    assert "140.82.112.3/32  # api.github.com" in g.files["shop.yaml"]


def test_same_inputs_give_byte_identical_files(tmp_path):
    """In processes with different hash seeds (set and dict orders differ), and the same as the library here."""
    from netpol_learn._flowlog import write_flow_log

    log, inv = shop(tmp_path)
    write_flow_log(log, tmp_path / "flows.jsonl")
    runs = []
    for seed in SEEDS:
        out = tmp_path / f"out-{seed}"
        r = netpol_learn(["generate", "--flows", tmp_path / "flows.jsonl", "--inventory", tmp_path / "inventory.yaml", "-o", out], seed)
        assert r.returncode == 0, r.stderr
        runs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    library = {name: data if isinstance(data, bytes) else data.encode("utf-8") for name, data in generate(log, inv).directory.items()}
    assert runs[0] == runs[1] == library and "learning.png" in library  # the chart too


def test_output_directory_is_ours_alone_unless_forced(tmp_path):
    out = tmp_path / "policies"
    write_directory(out, {"a.yaml": f"{MARKER}\n", "kustomization.yaml": f"{MARKER}\n"})
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputError, match="did not write"):
        write_directory(out, {"b.yaml": f"{MARKER}\n"})
    assert (out / "a.yaml").exists()
    stale = write_directory(out, {"b.yaml": f"{MARKER}\n"}, force=True)
    assert stale == ["a.yaml", "kustomization.yaml"]
    assert sorted(p.name for p in out.iterdir()) == ["b.yaml", "notes.txt"]
    with pytest.raises(OutputError, match="not overwriting"):
        write_directory(out, {"notes.txt": f"{MARKER}\n"}, force=True)
    assert (out / "notes.txt").read_text() == "mine\n"


def test_cli_generate_and_a_template_override(tmp_path):
    log, inv = shop(tmp_path)
    from netpol_learn._flowlog import write_flow_log

    flows = tmp_path / "flows.jsonl"
    write_flow_log(log, flows)
    inventory = tmp_path / "inventory.yaml"
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    assert r.stderr.startswith("4 flows -> 3 workload policies in 2 namespaces")  # ui, api, db
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default-deny.yaml.j2").write_text('{%- import "_macros.j2" as m -%}\n# custom deny\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{{ m.metadata(policy) }}\n{{ m.spec(policy) }}\n')
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "-o", str(out), "--templates", str(templates)])
    assert r.exit_code == 0, r.stderr
    assert "# custom deny" in (out / "shop.yaml").read_text()
    (templates / "default-deny.yaml.j2").write_text("{{ policy.no_such_field }}\n")
    before = (out / "shop.yaml").read_text()
    r = CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "-o", str(out), "--templates", str(templates)])
    assert r.exit_code == 2 and r.stderr.startswith("error: template default-deny.yaml.j2")
    assert (out / "shop.yaml").read_text() == before
