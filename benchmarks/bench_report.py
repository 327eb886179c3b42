"""Benchmark: the review page of a 2,000-workload cluster, built and opened in Chromium.

Uses the cluster of bench_resolve.py (10,000 pods in 2,000 Deployments across 100 namespaces,
2,000 Services) and its 100,000 flows, and measures:

- the model (``build_report``: resolve with the trace, generate, judge) and the page's bytes;
- the page opened from file:// in Debian's Chromium (Playwright, offline) until its first layout
  is drawn (every namespace collapsed: more than 200 workloads), then ``expand all`` (every
  workload laid out by ELK at once) and a namespace filter;
- ``--format svg`` (the same layout in V8 through mini-racer) of the collapsed map.

    python benchmarks/bench_report.py [--pods 10000] [--services 2000] [--namespaces 100] [--flows 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_resolve  # noqa: E402

from netpol_learn._report import build_report, map_svg, page_html  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def _ready(page, timeout_ms: int = 600_000) -> None:
    page.wait_for_selector("body[data-state=ready]", state="attached", timeout=timeout_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_resolve.add_size_arguments(ap)
    args = ap.parse_args()
    log, inv = bench_resolve.cluster(args)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = build_report(log, inv)
        t1 = time.perf_counter()
        html = page_html(model)
        t2 = time.perf_counter()
        workloads = sum(1 for n in model["nodes"] if n["kind"] in ("workload", "dns"))
        print(f"| model of {len(log.flows):,} flows | {t1 - t0:.1f} s -> {workloads:,} workloads, {len(model['nodes']):,} nodes, {len(model['edges']):,} edges |")
        print(f"| page | {t2 - t1:.1f} s -> {len(html.encode()) / 1e6:.1f} MB |")
        page_path = Path(tmp) / "report.html"
        page_path.write_text(html, encoding="utf-8")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            context = browser.new_context(offline=True, viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            t0 = time.perf_counter()
            page.goto(page_path.as_uri())
            _ready(page)
            t1 = time.perf_counter()
            drawn = page.evaluate("document.querySelectorAll('#map g.node').length")
            print(f"| open in Chromium, collapsed | {t1 - t0:.1f} s -> {drawn} nodes drawn |")
            t0 = time.perf_counter()
            # Through the page, not page.click: ELK lays out on the main thread, which Playwright's
            # actionability checks would wait on for longer than their 30 s.
            page.evaluate("document.getElementById('expand-all').click()")
            _ready(page)
            t1 = time.perf_counter()
            drawn = page.evaluate("[document.querySelectorAll('#map g.node').length, document.querySelectorAll('#map g.edge').length]")
            print(f"| expand all | {t1 - t0:.1f} s -> {drawn[0]:,} nodes, {drawn[1]:,} edges drawn |")
            first = model["namespaces"][0]["name"]
            t0 = time.perf_counter()
            page.evaluate(
                "(ns) => { const box = document.querySelector(`input[name=namespace][value='${ns}']`);"
                " box.checked = false; box.dispatchEvent(new Event('change')); }",
                first,
            )
            _ready(page)
            print(f"| filter out one namespace (expanded) | {time.perf_counter() - t0:.1f} s |")
            heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
            print(f"| page's JS heap after expand-all | {heap / 1e6:.0f} MB |")
            browser.close()

        t0 = time.perf_counter()
        svg = map_svg(model)
        print(f"| map_svg (collapsed) | {time.perf_counter() - t0:.1f} s -> {len(svg) / 1e3:.0f} kB |")


if __name__ == "__main__":
    main()
