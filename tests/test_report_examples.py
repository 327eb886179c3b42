"""The review page of every example in captures/, opened in Debian's Chromium (Playwright, an
offline context whose every request is refused and recorded; tests/reportkit.py).

What the map holds is read from the page's DOM and compared with the example's expected.yaml,
the truth table written from the scenario's definition (captures/record.py), never from the
capture or from the Python side. A screenshot of each page goes to the artifacts directory
($NETPOL_LEARN_ARTIFACTS, else one of pytest's; its path is printed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reportkit import artifacts_dir, wait_ready  # noqa: E402

from netpol_learn._cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["guestbook", "ingress", "cross-namespace", "monitoring", "dns-egress"]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: The page's own account of what it draws: every node and edge element with its data.
READ_MAP = """() => {
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0 &&
                          getComputedStyle(el).display !== 'none' && getComputedStyle(el).visibility !== 'hidden'; };
  const nodes = [...document.querySelectorAll('#map g.node')].filter(visible).map(g => ({
    id: g.dataset.id, kind: g.dataset.kind, namespace: g.dataset.namespace,
    addresses: (g.dataset.addresses || '').split(' ').filter(Boolean), label: g.querySelector('text.node-label').textContent}));
  const edges = [...document.querySelectorAll('#map g.edge')].filter(visible).map(g => ({
    source: g.dataset.source, target: g.dataset.target, protocol: g.dataset.protocol, port: g.dataset.port,
    verdict: g.dataset.verdict, diff: g.dataset.diff, label: g.querySelector('text.edge-label').textContent}));
  return {nodes, edges};
}"""

#: Pairs of label texts whose boxes intersect (node labels, edge labels, group titles).
OVERLAPS = """() => {
  const texts = [...document.querySelectorAll('#map text')].filter(t => t.getBoundingClientRect().width > 0);
  const boxes = texts.map(t => [t.textContent, t.getBoundingClientRect()]);
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, r] = boxes[i], [b, s] = boxes[j];
    const w = Math.min(r.right, s.right) - Math.max(r.left, s.left), h = Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top);
    if (w > 0.5 && h > 0.5) out.push([a, b]);
  }
  return out;
}"""


def _report(*args: str) -> None:
    r = CliRunner().invoke(main, ["report", *args])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Each example captured and its report written by the command, as a user runs them."""
    out = {}
    for name in EXAMPLES:
        d = tmp_path_factory.mktemp(name)
        flows = d / "flows.jsonl"
        assert CliRunner().invoke(main, ["capture", str(ROOT / "captures" / name / "capture.pcap"), "-o", str(flows)]).exit_code == 0
        _report("--flows", str(flows), "--inventory", str(ROOT / "captures" / name / "inventory.yaml"), "-o", str(d / "report.html"))
        out[name] = d
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    path = artifacts_dir(tmp_path_factory)
    print(f"\nreport screenshots: {path}")
    return path


def _truth(name: str) -> set[tuple]:
    rows = yaml.safe_load((ROOT / "captures" / name / "expected.yaml").read_text(encoding="utf-8"))
    return {(c["from"], c["to"], c["protocol"], str(c["port"])) for c in rows}


def _as_truth(drawn: dict) -> set[tuple]:
    """The drawn edges in expected.yaml's terms: a workload by its id, an outside node by each of
    its addresses (the map names it by its DNS name)."""
    by_id = {n["id"]: n for n in drawn["nodes"]}

    def ends(node_id: str) -> list[str]:
        node = by_id[node_id]
        return [f"outside:{a}" for a in node["addresses"]] if node["kind"] == "external" else [node_id]

    return {(s, t, e["protocol"], e["port"]) for e in drawn["edges"] for s in ends(e["source"]) for t in ends(e["target"])}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_page_holds_exactly_the_examples_workloads_and_edges(pages, report_page, artifacts, name):
    page = report_page.open_report(pages[name] / "report.html")
    drawn = page.evaluate(READ_MAP)
    truth = _truth(name)
    assert _as_truth(drawn) == truth
    workloads = {end for row in truth for end in row[:2] if not end.startswith("outside:")}
    assert {n["id"] for n in drawn["nodes"] if n["kind"] in ("workload", "dns")} == workloads
    assert {n["kind"] for n in drawn["nodes"]} <= {"workload", "dns", "external"}, "nothing else was in the traffic"
    assert all(e["verdict"] == "allowed" for e in drawn["edges"])
    for e in drawn["edges"]:
        assert f"{e['protocol']}/{e['port']}" in e["label"], e
    assert page.evaluate(OVERLAPS) == [], "no two labels overlap"
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    assert report_page.recorder.requests == [], "the page asked for something"
    assert report_page.recorder.console == [] and report_page.recorder.errors == []


def test_filtering_and_collapsing_change_what_is_shown(pages, report_page):
    page = report_page.open_report(pages["monitoring"] / "report.html")
    every = page.evaluate(READ_MAP)
    # Unchecking team-b hides its workloads and the edges to them.
    page.uncheck("input[name=namespace][value=team-b]")
    wait_ready(page)
    shown = page.evaluate(READ_MAP)
    assert {n["id"] for n in shown["nodes"]} == {n["id"] for n in every["nodes"] if n["namespace"] != "team-b"}
    assert not any(e["target"].startswith("team-b/") for e in shown["edges"])
    page.check("input[name=namespace][value=team-b]")
    wait_ready(page)
    # Search keeps the matches, their edges and their neighbours.
    page.fill("#search", "log-agent")
    wait_ready(page)
    shown = page.evaluate(READ_MAP)
    assert {e["target"] for e in shown["edges"]} == {"team-b/DaemonSet/log-agent"}
    assert {n["id"] for n in shown["nodes"]} == {"team-b/DaemonSet/log-agent", "monitoring/Deployment/prometheus", "team-a/Deployment/backend"}
    page.fill("#search", "")
    wait_ready(page)
    # Collapsing team-a folds its two workloads into one node; the edges to it are summed.
    page.click("#map g.group[data-namespace=team-a] .toggle")
    wait_ready(page)
    shown = page.evaluate(READ_MAP)
    ids = {n["id"] for n in shown["nodes"]}
    assert "ns:team-a" in ids and not {"team-a/Deployment/frontend", "team-a/Deployment/backend"} & ids
    scrape = [e for e in shown["edges"] if (e["source"], e["target"], e["port"]) == ("monitoring/Deployment/prometheus", "ns:team-a", "9100")]
    assert len(scrape) == 1, "prometheus's scrapes of the two workloads are one edge now"
    assert page.get_attribute("body", "data-collapsed") == "team-a"
    page.click("#expand-all")
    wait_ready(page)
    assert {n["id"] for n in page.evaluate(READ_MAP)["nodes"]} == {n["id"] for n in every["nodes"]}
    assert report_page.recorder.console == [] and report_page.recorder.errors == []


def test_clicking_a_workload_shows_its_policy_and_an_edge_its_evidence(pages, report_page):
    page = report_page.open_report(pages["guestbook"] / "report.html")
    page.click("#map g.node[data-id='guestbook/Deployment/api']")
    policy = page.inner_text("#details pre.policy-yaml >> nth=0")
    assert "name: api" in policy and "port: 8080" in policy and "# Deployment/api" in policy
    details = page.inner_text("#details")
    assert re.search(r"learning|stabilizing|stable", details) and "2026-11-21" in details
    page.click("#map g.edge[data-source='guestbook/Deployment/ui'][data-target='guestbook/Deployment/api'] text.edge-label")
    rows = page.locator("#details table.flow-lines tr").count()
    assert rows >= 2, "a header and the flow lines behind the edge"
    assert "syn" in page.inner_text("#details") and "guestbook/api:80" in page.inner_text("#details")


def test_the_diff_view_on_two_generated_directories(pages, report_page, artifacts, tmp_path):
    d = pages["guestbook"]
    flows, inventory = d / "flows.jsonl", ROOT / "captures" / "guestbook" / "inventory.yaml"
    assert CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "-o", str(tmp_path / "base")]).exit_code == 0
    # The new directory: the same, without the db policy, so db's ingress (isolated by the
    # namespace's default-deny) no longer admits api.
    assert CliRunner().invoke(main, ["generate", "--flows", str(flows), "--inventory", str(inventory), "-o", str(tmp_path / "new")]).exit_code == 0
    path = tmp_path / "new" / "guestbook.yaml"
    documents = path.read_text(encoding="utf-8").split("\n---\n")
    path.write_text("\n---\n".join(doc for doc in documents if "\n  name: db\n" not in doc), encoding="utf-8")
    _report("--flows", str(flows), "--inventory", str(inventory), "--base", str(tmp_path / "base"), "--policies", str(tmp_path / "new"),
            "-o", str(tmp_path / "diff.html"))
    page = report_page.open_report(tmp_path / "diff.html")
    drawn = page.evaluate(READ_MAP)
    marked = {(e["source"], e["target"], e["port"]): (e["diff"], e["verdict"]) for e in drawn["edges"] if e["diff"]}
    assert marked == {("guestbook/Deployment/api", "guestbook/StatefulSet/db", "5432"): ("removed", "denied")}
    listed = page.inner_text("#diff")
    assert "guestbook/Deployment/api" in listed and "guestbook/StatefulSet/db" in listed
    page.screenshot(path=str(artifacts / "guestbook-diff.png"), full_page=True)
    assert report_page.recorder.requests == [] and report_page.recorder.console == [] and report_page.recorder.errors == []


def test_the_readme_map_is_what_the_command_draws(pages, tmp_path):
    """docs/guestbook-map.svg, shown in the README, is what the README's command writes."""
    (line,) = re.findall(r"`(netpol-learn report --flows flows\.jsonl [^`]* -o docs/guestbook-map\.svg)`", README)
    args = line.split()[2:]
    args[args.index("flows.jsonl")] = str(pages["guestbook"] / "flows.jsonl")
    args[args.index("captures/guestbook/inventory.yaml")] = str(ROOT / "captures" / "guestbook" / "inventory.yaml")
    args[args.index("docs/guestbook-map.svg")] = str(tmp_path / "map.svg")
    _report(*args)
    assert (tmp_path / "map.svg").read_bytes() == (ROOT / "docs" / "guestbook-map.svg").read_bytes()
