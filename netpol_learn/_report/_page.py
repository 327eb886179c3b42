"""The review page: one self-contained HTML document that draws a report model.

Everything is inline: the model (a JSON script element), ELK (vendor/), the map code and the
page's own script and style (static/), and the DejaVu Sans Mono the map is measured in (an
``@font-face`` data URI of matplotlib's copy). A Content-Security-Policy lets the page load
nothing at all: it works offline, from a file, as a mail attachment. The same model gives the
same bytes.

Text inside ``<script>`` ends at the first ``</``: the scripts have each ``</`` written ``<\\/``
(the same string to JavaScript), and the JSON has ``<``, ``>`` and ``&`` as ``\\u003c`` escapes.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from importlib import resources

import jinja2

from netpol_learn._report._image import font_path
from netpol_learn._report._model import FORMAT

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "font-src data:")
MODES = {
    "generated": "policies generated from these flows",
    "verify": "the given policies judged against these flows",
    "diff": "the given policies against the base set, judged on these flows",
}


def _read(*parts: str) -> str:
    return resources.files("netpol_learn._report").joinpath(*parts).read_text(encoding="utf-8")


def script_text(source: str) -> str:
    """JavaScript source safe inside ``<script>``: no ``</`` (ends the element) nor ``<!--``."""
    return source.replace("</", "<\\/").replace("<!--", "<\\!--")


def json_text(value) -> str:
    """JSON safe inside ``<script type="application/json">`` (and the same for the same value)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@lru_cache(maxsize=1)
def _assets() -> dict[str, str]:
    font = base64.b64encode(font_path().read_bytes()).decode("ascii")
    return {
        "font_css": ('@font-face { font-family: "DejaVu Sans Mono"; font-style: normal; font-weight: normal; '
                     f'src: url(data:font/ttf;base64,{font}) format("truetype"); }}'),
        "css": _read("static", "page.css"),
        "elk_js": script_text(_read("vendor", "elk.bundled.js")),
        "map_js": script_text(_read("static", "map.js")),
        "page_js": script_text(_read("static", "page.js")),
    }


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(_read("page.html.j2"))


def _namespaces(model: dict) -> list[dict]:
    """The namespace filter's entries: the model's namespaces, then any only a node names."""
    listed = [{"name": ns["name"], "workloads": ns["workloads"]} for ns in model["namespaces"]]
    known = {ns["name"] for ns in listed}
    extra = sorted({n["namespace"] for n in model["nodes"] if n["namespace"] is not None} - known)
    counts = {name: sum(1 for n in model["nodes"] if n["namespace"] == name and n["kind"] == "workload")
              for name in extra}
    return listed + [{"name": name, "workloads": counts[name]} for name in extra]


def page_html(model: dict, *, title: str | None = None) -> str:
    """The review page of ``model`` (a report model, ``format`` netpol-learn-report/1) as one
    HTML document; ``title`` instead of the model's own."""
    if model.get("format") != FORMAT:
        raise ValueError(f"not a report model of format {FORMAT}: {model.get('format')!r}")
    chart = model.get("chart")
    if chart is not None and not chart.startswith("data:image/png;base64,"):
        raise ValueError("the model's chart is not a PNG data URI")
    capture = model["capture"]
    window = " – ".join(t for t in (capture.get("start"), capture.get("end")) if t)
    return _template().render(
        csp=CSP, title=title if title is not None else model["title"], model=model,
        model_json=json_text(model), namespaces=_namespaces(model), mode_line=MODES.get(model["mode"], model["mode"]),
        capture=window, **_assets(),
    )
