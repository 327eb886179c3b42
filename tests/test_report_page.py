"""The review page (``page_html``) in the system's Chromium, and the static map (``map_svg``,
``map_png``): what the DOM holds against the model, the controls, the details panel, that the
page asks for nothing and logs no error, that no two labels overlap, and determinism.

Screenshots go to $NETPOL_LEARN_ARTIFACTS (or a directory of pytest's; the path is printed).
"""

from __future__ import annotations

import copy
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from reportkit import artifacts_dir, small_model, synthetic_model, wait_ready

from netpol_learn._report import _page as page_module
from netpol_learn._report._image import map_png, map_svg
from netpol_learn._report._page import CSP, page_html

SVG_NS = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parent.parent / "netpol_learn" / "_report"

# Every drawn node and edge with its data attributes, and the label boxes that overlap.
DOM_JS = """() => {
  const data = el => Object.fromEntries(Object.entries(el.dataset));
  return {
    nodes: [...document.querySelectorAll('#map g.node')].map(el => Object.assign(data(el),
      {collapsed: el.classList.contains('collapsed'), label: el.querySelector('text.node-label').textContent})),
    edges: [...document.querySelectorAll('#map g.edge')].map(el => Object.assign(data(el),
      {label: el.querySelector('text.edge-label').textContent})),
    groups: [...document.querySelectorAll('#map g.group')].map(el => el.dataset.namespace),
    collapsed: document.body.dataset.collapsed,
  };
}"""
OVERLAPS_JS = """() => {
  const boxes = [...document.querySelectorAll('#map text.node-label, #map text.edge-label, #map text.group-title')]
    .map(el => ({text: el.textContent, r: el.getBoundingClientRect()}));
  const out = [];
  const scale = document.querySelector('#map').getScreenCTM().a;
  const eps = 0.5 * scale;
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;
    if (a.left < b.right - eps && b.left < a.right - eps && a.top < b.bottom - eps && b.top < a.bottom - eps)
      out.push([boxes[i].text, boxes[j].text]);
  }
  return {count: boxes.length, overlaps: out.slice(0, 10), total: out.length};
}"""


@pytest.fixture(scope="module")
def small():
    return small_model()


@pytest.fixture(scope="module")
def small_file(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "small.html"
    path.write_text(page_html(small), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_model(workloads=2000, namespaces=40, seed=1)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    path = artifacts_dir(tmp_path_factory)
    print(f"\nreport screenshots in {path}")
    return path


def assert_quiet(rp):
    assert rp.recorder.requests == [], "the page asked for something"
    assert rp.recorder.console == [] and rp.recorder.errors == []


def assert_no_overlap(page):
    result = page.evaluate(OVERLAPS_JS)
    assert result["count"] > 0
    assert result["total"] == 0, f"{result['total']} overlapping labels, e.g. {result['overlaps']}"


def shown(page):
    return page.evaluate(DOM_JS)


def ids(items):
    return sorted(i["id"] for i in items)


def test_page_holds_the_model(report_page, small, small_file, artifacts):
    page = report_page.open_report(small_file)
    dom = shown(page)
    assert ids(dom["nodes"]) == sorted(n["id"] for n in small["nodes"])
    assert ids(dom["edges"]) == sorted(e["id"] for e in small["edges"])
    assert sorted(dom["groups"]) == ["guestbook", "kube-system"] and dom["collapsed"] == ""
    by_id = {n["id"]: n for n in small["nodes"]}
    for d in dom["nodes"]:
        n = by_id[d["id"]]
        assert (d["kind"], d["namespace"], d["label"]) == (n["kind"], n["namespace"] or "", drawn_label(n))
        assert d["addresses"].split() == n["addresses"] and d["names"].split() == n["names"]
    edges = {e["id"]: e for e in small["edges"]}
    for d in dom["edges"]:
        e = edges[d["id"]]
        assert (d["source"], d["target"], d["protocol"], d["port"], int(d["connections"]), d["verdict"], d["diff"]) == (
            e["source"], e["target"], e["protocol"], "" if e["port"] is None else str(e["port"]), e["connections"],
            e["verdict"], e["diff"] or "")
        assert d["label"].startswith({"added": "+ ", "removed": "\u2212 ", None: ""}[e["diff"]] + e["protocol"])
        if e["verdict"] == "denied":
            assert d["label"].endswith(f"denied ({e['denied_by']})")
    by_pair = {(e["source"], e["target"], e["port"]): e["id"] for e in small["edges"]}
    fe_api = [d for d in dom["edges"] if d["id"] == by_pair[("guestbook/Deployment/frontend", "guestbook/Deployment/api", 8080)]]
    assert fe_api[0]["label"] == "TCP/8080 \u00d740"
    assert_no_overlap(page)
    # the labels are set in the embedded DejaVu Sans Mono, 1233/2048 em a character, as map.js computed
    widths = page.evaluate("""() => [...document.querySelectorAll('#map text.node-label')].map(el =>
      [el.textContent.length * 1233 / 2048 * Number(el.getAttribute('font-size')), el.getComputedTextLength()])""")
    assert all(abs(want - got) < 0.01 * want for want, got in widths), widths
    assert page.evaluate("""() => [...document.fonts].map(f => [f.family.replace(/"/g, ''), f.status])""") == [
        ["DejaVu Sans Mono", "loaded"]]
    # the markup in a note and a policy stayed text; the summary, attention, diff and chart are there
    assert page.evaluate("document.querySelectorAll('b').length") == 0
    assert page.evaluate("document.scripts.length") == 4
    assert page.inner_text("#summary") == small["summary"]
    assert page.locator("#attention li").all_inner_texts() == small["attention"]
    assert page.locator("#diff .diff-added li").count() == 2 and page.locator("#diff .diff-removed li").count() == 1
    assert page.get_attribute("#learning-chart", "src") == small["chart"]
    assert page.get_attribute("meta[http-equiv=Content-Security-Policy]", "content") == CSP
    page.screenshot(path=str(artifacts / "report-small.png"))
    assert_quiet(report_page)


def test_search_and_namespace_filter(report_page, small, small_file):
    page = report_page.open_report(small_file)
    page.fill("#search", "redis")
    wait_ready(page)
    dom = shown(page)
    redis = "guestbook/StatefulSet/redis"
    touching = [e for e in small["edges"] if redis in (e["source"], e["target"])]
    assert ids(dom["edges"]) == sorted(e["id"] for e in touching)
    assert ids(dom["nodes"]) == sorted({e["source"] for e in touching} | {e["target"] for e in touching})
    page.fill("#search", "198.51.100.7")  # an address behind an outside name
    wait_ready(page)
    assert "outside:api.example.com" in ids(shown(page)["nodes"])
    page.fill("#search", "")
    wait_ready(page)
    assert len(shown(page)["nodes"]) == len(small["nodes"])

    page.uncheck("input[name=namespace][value=guestbook]")
    wait_ready(page)
    dom = shown(page)
    assert ids(dom["nodes"]) == sorted(n["id"] for n in small["nodes"] if n["namespace"] != "guestbook")
    gone = {n["id"] for n in small["nodes"] if n["namespace"] == "guestbook"}
    assert ids(dom["edges"]) == sorted(e["id"] for e in small["edges"] if not {e["source"], e["target"]} & gone)
    page.check("input[name=namespace][value=guestbook]")
    wait_ready(page)
    assert len(shown(page)["edges"]) == len(small["edges"])
    assert_quiet(report_page)


def test_collapse_and_expand(report_page, small, small_file):
    page = report_page.open_report(small_file)
    page.click("#map g.group[data-namespace=guestbook] .toggle")
    wait_ready(page)
    dom = shown(page)
    assert dom["collapsed"] == "guestbook" and dom["groups"] == ["kube-system"]
    members = {n["id"] for n in small["nodes"] if n["namespace"] == "guestbook"}
    collapsed = [d for d in dom["nodes"] if d["collapsed"]]
    assert [(d["id"], d["kind"], d["label"]) for d in collapsed] == [("ns:guestbook", "namespace", "guestbook (3 workloads)")]
    assert not members & set(ids(dom["nodes"]))
    # every model edge is drawn once: alone, inside an aggregation, or inside the collapsed namespace
    inner = [e["id"] for e in small["edges"] if {e["source"], e["target"]} <= members]
    assert page.get_attribute("#map g.node.collapsed", "data-inner-edges").split() == inner
    drawn = [i for d in dom["edges"] for i in d["edges"].split()]
    assert sorted(drawn + inner) == sorted(e["id"] for e in small["edges"])
    edges = {e["id"]: e for e in small["edges"]}
    for d in dom["edges"]:
        group = [edges[i] for i in d["edges"].split()]
        assert {(e["protocol"], e["port"]) for e in group} == {(d["protocol"], int(d["port"]) if d["port"] else None)}
        assert int(d["connections"]) == sum(e["connections"] for e in group)
        rep = [("ns:guestbook" if x in members else x) for x in (group[0]["source"], group[0]["target"])]
        assert [d["source"], d["target"]] == rep
    to_dns = [d for d in dom["edges"] if d["target"] == "kube-system/Deployment/coredns"]
    assert to_dns[0]["source"] == "ns:guestbook"
    assert_no_overlap(page)

    page.dblclick("#map g.node.collapsed")
    wait_ready(page)
    assert shown(page)["collapsed"] == "" and len(shown(page)["nodes"]) == len(small["nodes"])
    page.click("#collapse-all")
    wait_ready(page)
    dom = shown(page)
    assert dom["collapsed"] == "guestbook kube-system" and dom["groups"] == []
    assert sorted(d["id"] for d in dom["nodes"] if d["collapsed"]) == ["ns:guestbook", "ns:kube-system"]
    page.click("#expand-all")
    wait_ready(page)
    assert ids(shown(page)["edges"]) == sorted(e["id"] for e in small["edges"])
    assert_quiet(report_page)


def test_details_of_a_node_and_an_edge(report_page, small, small_file):
    page = report_page.open_report(small_file)
    page.click('#map g.node[data-id="guestbook/StatefulSet/redis"] text.node-label')
    redis = [n for n in small["nodes"] if n["id"] == "guestbook/StatefulSet/redis"][0]
    assert page.locator("#details pre.policy-yaml").all_text_contents() == [p["yaml"] for p in redis["policies"]]
    assert "</script><b>markup</b>" in page.text_content("#details pre.policy-yaml")
    assert redis["status"]["verdict"] in page.text_content("#details")
    edge = [e for e in small["edges"] if e["evidence"]["flows"] == 3][0]
    page.click(f'#map g.edge[data-id="{edge["id"]}"] text.edge-label')
    rows = page.locator("#details table.flow-lines tbody tr")
    assert rows.count() == len(edge["evidence"]["lines"]) == 3
    assert rows.first.locator("td").all_text_contents()[:2] == [edge["evidence"]["lines"][0]["src"],
                                                               edge["evidence"]["lines"][0]["dst"]]
    assert edge["evidence"]["first_seen"] in page.text_content("#details")
    assert_quiet(report_page)


def test_a_large_model_opens_collapsed(report_page, synthetic, tmp_path, artifacts):
    path = tmp_path / "synthetic.html"
    path.write_text(page_html(synthetic), encoding="utf-8")
    page = report_page.open_report(path)
    dom = shown(page)
    namespaces = sorted({n["namespace"] for n in synthetic["nodes"] if n["namespace"]})
    assert dom["collapsed"].split() == namespaces and dom["groups"] == []
    outside = sorted(n["id"] for n in synthetic["nodes"] if n["namespace"] is None)
    assert ids(dom["nodes"]) == sorted(["ns:" + ns for ns in namespaces] + outside)
    inner = [i for d in dom["nodes"] if d["collapsed"] for i in d["innerEdges"].split()]
    drawn = [i for d in dom["edges"] for i in d["edges"].split()]
    assert sorted(drawn + inner) == sorted(e["id"] for e in synthetic["edges"])
    assert len(dom["edges"]) < len(synthetic["edges"]) / 3
    assert_no_overlap(page)
    page.screenshot(path=str(artifacts / "report-synthetic-collapsed.png"))
    assert_quiet(report_page)


def test_page_is_deterministic_and_escaped(small):
    html = page_html(small)
    assert html == page_html(copy.deepcopy(small))
    assert page_html(small, title="other <title>").count("other &lt;title&gt;") == 2
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and json.loads(data) == small
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 3 and not any("</" in s for s in scripts)
    # No URL outside the vendored ELK (whose strings name XML namespaces, never fetched): the
    # browser tests show nothing is requested; this shows nothing of ours even names a place.
    elk = page_module.script_text((Path(page_module.__file__).parent / "vendor" / "elk.bundled.js").read_text(encoding="utf-8"))
    ours = html.replace(elk, "").replace("http://www.w3.org/2000/svg", "")
    assert "data:font/ttf;base64," in html and not re.search(r"https?://", ours)
    with pytest.raises(ValueError):
        page_html(dict(small, format="something/else"))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def drawn_label(n: dict) -> str:
    """A node's text on the map: its label, and a workload's pod count."""
    return n["label"] + (f" \u00b7 {n['pods']} pod" + ("s" if n["pods"] != 1 else "") if n["pods"] else "")


def test_static_map(small, synthetic):
    svg = map_svg(small)
    assert svg == map_svg(copy.deepcopy(small))
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == SVG_NS + "svg"
    width, height = int(root.get("width")), int(root.get("height"))
    labels = {t.text for t in root.iter(SVG_NS + "text") if t.get("class") == "node-label"}
    assert labels == {drawn_label(n) for n in small["nodes"]}
    edges = [g.get("data-id") for g in root.iter(SVG_NS + "g") if g.get("class") == "edge"]
    assert sorted(edges) == sorted(e["id"] for e in small["edges"])
    png = map_png(small)
    assert png == map_png(small)
    assert png_size(png) == (2 * width, 2 * height)

    big = ET.fromstring(map_svg(synthetic).encode("utf-8"))
    collapsed = [g.get("data-id") for g in big.iter(SVG_NS + "g") if g.get("class") == "node collapsed"]
    assert len(collapsed) == len({n["namespace"] for n in synthetic["nodes"] if n["namespace"]})


def test_a_view_of_too_many_edges_draws_the_most_interesting():
    from py_mini_racer import MiniRacer

    model = synthetic_model(workloads=1200, namespaces=4, seed=2)
    ctx = MiniRacer()
    try:
        ctx.eval((ROOT / "static" / "map.js").read_text(encoding="utf-8"))
        cap = ctx.eval("NetpolMap.MAX_EDGES")
        assert len(model["edges"]) > cap
        drawn = json.loads(ctx.eval(
            "(function (model) { var v = NetpolMap.graph(model, {collapsed: new Set(), hidden: new Set(),"
            " hiddenEdges: new Set()}); return JSON.stringify({ids: v.edges.map(function (d) { return d.id; }),"
            " omitted: v.omitted}); })(" + json.dumps(model) + ")"))
    finally:
        ctx.close()
    assert len(drawn["ids"]) == cap and drawn["omitted"] == len(model["edges"]) - cap
    kept = set(drawn["ids"])
    assert {e["id"] for e in model["edges"] if e["verdict"] != "allowed"} <= kept
    most_left_out = max(e["connections"] for e in model["edges"] if e["id"] not in kept)
    assert all(e["connections"] >= most_left_out for e in model["edges"] if e["id"] in kept and e["verdict"] == "allowed")
    assert drawn["ids"] == [e["id"] for e in model["edges"] if e["id"] in kept]  # in the model's order
