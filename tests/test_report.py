"""The review page's model and command (``netpol-learn report``), without a browser.

What the page draws is decided here: which nodes and edges there are (each end resolved to its
holder at the time, tests/pcapgen.py captures at explicit timestamps), what the policies do with
each edge (allowed, denied with the denying direction, as ``verify`` judges it), what could not
become a rule (unresolved, refused attempts), and what ``--base`` marks as newly allowed or
denied. tests/test_report_page.py and tests/test_report_examples.py check the page itself in a
real Chromium.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from scapy.layers.inet import TCP

sys.path.insert(0, str(Path(__file__).resolve().parent))

import k8s  # noqa: E402
import pcapgen as g  # noqa: E402

from netpol_learn import (  # noqa: E402
    build_report,
    capture_files,
    generate,
    load_inventory,
    write_directory,
)
from netpol_learn._cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GUESTBOOK = ROOT / "captures" / "guestbook"
NS = "shop"
API_IP, FE_IP, HANDOVER_IP = "10.244.2.30", "10.244.1.20", "10.244.1.50"


def _objects(*extra: dict) -> list[dict]:
    return [
        k8s.namespace(NS),
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.node("node-b", "172.18.0.3", "10.244.2.0/24"),
        k8s.pod("api", NS, API_IP, labels={"app": "api"}, node="node-b", ports=[("http", 8080, "TCP")]),
        k8s.pod("frontend", NS, FE_IP, labels={"app": "frontend"}),
        *extra,
    ]


def _at(seconds: float) -> Decimal:
    return Decimal(g.T0) + Decimal(str(seconds))


def _call(client: str, server: str, at_s: float, cport: int, sport: int = 8080) -> list:
    return g.tcp_session(client, server, cport, sport, t0=_at(at_s))


def _refused(client: str, server: str, at_s: float, cport: int, sport: int) -> list:
    """A SYN the server answers with a reset: an attempt, never a need."""
    return [(_at(at_s), g.ip(client, server) / TCP(sport=cport, dport=sport, flags="S", seq=1)),
            (_at(at_s + 0.001), g.ip(server, client) / TCP(sport=sport, dport=cport, flags="RA", seq=0, ack=2))]


@pytest.fixture(scope="module")
def handover(tmp_path_factory):
    """batch-a holds 10.244.1.50 until it is deleted at 100 and batch-b from 300; both call api,
    and the address calls api at 200 too, when no pod held it. frontend calls api, and tries
    port 9999, which refuses."""
    d = tmp_path_factory.mktemp("handover")
    records = [*_call(HANDOVER_IP, API_IP, 50, 40001), *_call(HANDOVER_IP, API_IP, 200, 40002),
               *_call(HANDOVER_IP, API_IP, 350, 40003), *_call(FE_IP, API_IP, 60, 40010),
               *_refused(FE_IP, API_IP, 70, 40011, 9999)]
    log = capture_files([g.write_pcap(d / "capture.pcap", g.by_time(records))])
    a = k8s.pod("batch-a", NS, HANDOVER_IP, labels={"app": "batch-a"}, start=0, deleted=100, grace=0)
    b = k8s.pod("batch-b", NS, HANDOVER_IP, labels={"app": "batch-b"}, start=300)
    paths = [k8s.write_list(d, _objects(a), "early.yaml", snapshot_time=90), k8s.write_list(d, _objects(b), "late.yaml", snapshot_time=400)]
    return d, log, load_inventory(paths)


def _edges(model: dict) -> dict[tuple, dict]:
    return {(e["source"], e["target"], e["protocol"], e["port"], e["verdict"]): e for e in model["edges"]}


def test_each_end_is_the_pod_that_held_the_address_then(handover):
    _, log, inventory = handover
    model = build_report(log, inventory)
    edges = _edges(model)
    api = "shop/Pod/api"
    assert ("shop/Pod/batch-a", api, "TCP", 8080, "allowed") in edges
    assert ("shop/Pod/batch-b", api, "TCP", 8080, "allowed") in edges
    gap = edges[("unresolved:10.244.1.50", api, "TCP", 8080, "unresolved")]
    assert gap["connections"] == 1 and gap["evidence"]["first_seen"].startswith("2025-06-01T10:03:20")
    node = next(n for n in model["nodes"] if n["id"] == "unresolved:10.244.1.50")
    assert node["kind"] == "unresolved" and "no pod held it" in node["note"]
    a = edges[("shop/Pod/batch-a", api, "TCP", 8080, "allowed")]
    assert a["connections"] == 1 and a["evidence"]["last_seen"] < "2025-06-01T10:01:40", "batch-a's edge is batch-a's traffic only"
    assert any("10.244.1.50" in line for line in model["attention"])


def test_a_refused_attempt_is_drawn_and_never_a_rule(handover):
    _, log, inventory = handover
    model = build_report(log, inventory)
    attempt = _edges(model)[("shop/Pod/frontend", "shop/Pod/api", "TCP", 9999, "attempt")]
    assert attempt["evidence"]["evidence"] == "refused" and "never a rule" in attempt["why"]
    api = next(n for n in model["nodes"] if n["id"] == "shop/Pod/api")
    own = next(p for p in api["policies"] if p["name"] == "api")
    assert "9999" not in own["yaml"] and "8080" in own["yaml"]


def test_an_edge_carries_the_flow_lines_behind_it(handover):
    _, log, inventory = handover
    e = _edges(build_report(log, inventory))[("shop/Pod/frontend", "shop/Pod/api", "TCP", 8080, "allowed")]
    ev = e["evidence"]
    assert ev["connections"] == 1 and ev["flows"] == 1 and ev["direction"] == [["syn", 1]] or ev["direction"] == [("syn", 1)]
    (line,) = ev["lines"]
    assert (line["src"], line["dst"], line["port"], line["direction"]) == (FE_IP, API_IP, 8080, "syn 1")
    assert ev["packets"] == sum(f.packets for f in log.flows if f.src == FE_IP and f.port == 8080)


def test_given_policies_colour_each_edge_as_verify_judges_it(handover):
    d, log, inventory = handover
    out = d / "policies"
    write_directory(out, generate(log, inventory).files)
    # Take batch-b's egress away: its call to api is denied by egress, the others stay allowed.
    text = (out / "shop.yaml").read_text()
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        if doc["metadata"]["name"] == "batch-b":
            doc["spec"].pop("egress", None)
            doc["spec"]["policyTypes"] = ["Egress"]
    cut = d / "cut"
    cut.mkdir()
    (cut / "shop.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    model = build_report(log, inventory, policy_paths=[cut])
    assert model["mode"] == "verify"
    edges = _edges(model)
    denied = edges[("shop/Pod/batch-b", "shop/Pod/api", "TCP", 8080, "denied")]
    assert denied["denied_by"] == "egress" and denied["why"]
    assert ("shop/Pod/batch-a", "shop/Pod/api", "TCP", 8080, "allowed") in edges
    assert any("would be denied (egress)" in line for line in model["attention"])
    batch_b = next(n for n in model["nodes"] if n["id"] == "shop/Pod/batch-b")
    assert [p["name"] for p in batch_b["policies"]][0] == "batch-b"


def test_the_diff_view_marks_what_the_new_set_changes(handover):
    d, log, inventory = handover
    base = d / "base"
    write_directory(base, generate(log, inventory).files)
    docs = [doc for doc in yaml.safe_load_all((base / "shop.yaml").read_text()) if doc]
    for doc in docs:
        if doc["metadata"]["name"] == "api":  # api admits nobody now, and may call frontend on 8080
            doc["spec"]["ingress"] = []
            doc["spec"]["egress"] = [{"to": [{"podSelector": {"matchLabels": {"app": "frontend"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}]
            doc["spec"]["policyTypes"] = ["Ingress", "Egress"]
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "frontend-from-api", "namespace": NS},
                 "spec": {"podSelector": {"matchLabels": {"app": "frontend"}}, "policyTypes": ["Ingress"],
                          "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    new = d / "new"
    new.mkdir()
    (new / "shop.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    model = build_report(log, inventory, policy_paths=[new], base_paths=[base])
    assert model["mode"] == "diff"
    edges = _edges(model)
    e = edges[("shop/Pod/frontend", "shop/Pod/api", "TCP", 8080, "denied")]
    assert e["diff"] == "removed" and e["denied_by"] == "ingress" and e["observed"]
    unseen = [e for e in model["edges"] if not e["observed"]]
    assert [(e["source"], e["target"], e["port"], e["diff"], e["verdict"]) for e in unseen] == [("shop/Pod/api", "shop/Pod/frontend", 8080, "added", "allowed")]
    listed = {(c["client"], c["server"], c["port"]) for c in model["diff"]["added"]}
    assert {(e["source"], e["target"], e["port"]) for e in unseen} <= listed
    assert any(c["client"] == "shop/Pod/frontend" and c["server"] == "shop/Pod/api" and c["observed"] for c in model["diff"]["removed"])


def test_guestbook_model_is_the_truth_table():
    """The model of the guestbook example holds exactly the edges of its expected.yaml (written
    from the scenario's definition, not from the capture)."""
    log = capture_files([GUESTBOOK / "capture.pcap"])
    model = build_report(log, load_inventory([GUESTBOOK / "inventory.yaml"]))
    expected = {(c["from"], c["to"], c["protocol"], c["port"]) for c in yaml.safe_load((GUESTBOOK / "expected.yaml").read_text())}
    assert {(e["source"], e["target"], e["protocol"], e["port"]) for e in model["edges"]} == expected
    assert {e["verdict"] for e in model["edges"]} == {"allowed"}
    api = next(n for n in model["nodes"] if n["id"] == "guestbook/Deployment/api")
    assert api["pods"] == 2 and api["status"]["verdict"] in ("learning", "stabilizing", "stable")
    assert api["policies"][0]["name"] == "api" and "# Deployment/api" in api["policies"][0]["yaml"]
    assert model["chart"].startswith("data:image/png;base64,")
    json.dumps(model)  # plain JSON all through


# --- the command ---------------------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_base_without_policies_is_a_usage_error(tmp_path):
    r = _run("report", "--flows", str(tmp_path / "f.jsonl"), "--inventory", str(GUESTBOOK / "inventory.yaml"),
             "--base", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert r.exit_code == 2 and "--base needs --policies" in r.output
    assert not (tmp_path / "r.html").exists()


def test_bad_policies_are_one_line_and_nothing_is_written(tmp_path):
    flows = tmp_path / "flows.jsonl"
    assert _run("capture", str(GUESTBOOK / "capture.pcap"), "-o", str(flows)).exit_code == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.yaml").write_text("kind: NetworkPolicy\nmetadata: {name: x, namespace: guestbook}\nspec: [1, 2\n")
    out = tmp_path / "report.html"
    out.write_text("the previous report\n")
    r = CliRunner().invoke(main, ["report", "--flows", str(flows), "--inventory", str(GUESTBOOK / "inventory.yaml"),
                                  "--policies", str(bad), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "invalid YAML" in r.stderr and "Traceback" not in r.output
    assert out.read_text() == "the previous report\n"
