"""The map of a report model as a static image: SVG drawn by the page's own map code, PNG from it.

``map_svg`` runs ``static/map.js`` and the vendored ELK in V8 (``py_mini_racer``), so the image is
the map the page shows first (same collapse rule, no filter), without a browser or node. ELK posts
to a fake worker through ``setTimeout``; V8 alone has none, so a ``setTimeout`` that calls its
function at once is defined first, and the layout finishes within the promise jobs of one eval.

``map_png`` rasterises that SVG with resvg, given the DejaVu Sans Mono that matplotlib ships and no
system font: the text is the font the layout measured, and the bytes are the same on any machine.
"""

from __future__ import annotations

import atexit
import json
import threading
import time
from importlib import resources
from pathlib import Path

#: The font of the map's text (every glyph 1233/2048 em wide; map.js sizes labels by it).
FONT_FILE = "DejaVuSansMono.ttf"
#: The PNG is drawn at up to 2x, smaller for a map this many pixels wide or high at 1x.
MAX_PNG_SIDE = 8000
_LAYOUT_TIMEOUT_S = 600.0

_lock = threading.Lock()
_context = None


def font_path() -> Path:
    """matplotlib's copy of DejaVu Sans Mono (the page embeds the same file)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_FILE


def _source(*parts: str) -> str:
    return resources.files("netpol_learn._report").joinpath(*parts).read_text(encoding="utf-8")


def _load():
    from py_mini_racer import MiniRacer

    ctx = MiniRacer()
    ctx.eval("var self = this; var setTimeout = function (f) { f(); return 0; };")
    ctx.eval(_source("vendor", "elk.bundled.js"))
    ctx.eval(_source("static", "map.js"))
    ctx.eval("var ELK_INSTANCE = new ELK();")
    # Closed before the interpreter winds down: V8's threads are not left to its finalizers.
    atexit.register(ctx.close)
    return ctx


def map_svg(model: dict) -> str:
    """The SVG document of ``model``'s map in the page's default state: width and height set,
    text in DejaVu Sans Mono (named, not embedded), the same text for the same model."""
    global _context
    with _lock:
        if _context is None:
            _context = _load()
        ctx = _context
        ctx.eval(
            "var MAP_OUT = null, MAP_ERR = null; (function (model) {"
            " NetpolMap.draw(model, NetpolMap.defaultState(model), ELK_INSTANCE).then("
            " function (r) { MAP_OUT = r.svg; },"
            " function (e) { MAP_ERR = String(e && e.stack || e); }); })(" + json.dumps(model) + ");"
        )
        deadline = time.monotonic() + _LAYOUT_TIMEOUT_S
        while True:
            done = ctx.eval("MAP_OUT !== null || MAP_ERR !== null")
            if done:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the map's layout did not finish")
            time.sleep(0.005)
        error = ctx.eval("MAP_ERR")
        if error is not None:
            raise RuntimeError(f"the map could not be drawn: {error}")
        svg = ctx.eval("MAP_OUT")
        ctx.eval("MAP_OUT = null;")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n"


def map_png(model: dict) -> bytes:
    """``map_svg(model)`` as PNG bytes: at 2x (1x for a map wider or higher than MAX_PNG_SIDE / 2
    pixels, down to 1x), on white, with matplotlib's DejaVu Sans Mono as the only font."""
    import resvg_py

    svg = map_svg(model)
    zoom = _zoom(svg)
    font = str(font_path())
    return bytes(resvg_py.svg_to_bytes(
        svg_string=svg, background="#ffffff", zoom=zoom, skip_system_fonts=True, font_files=[font],
        font_family="DejaVu Sans Mono", monospace_family="DejaVu Sans Mono", sans_serif_family="DejaVu Sans Mono",
    ))


def _zoom(svg: str) -> float:
    head = svg[: svg.index(">", svg.index("<svg"))]
    width = float(head.split(' width="', 1)[1].split('"', 1)[0])
    height = float(head.split(' height="', 1)[1].split('"', 1)[0])
    return max(1.0, min(2.0, MAX_PNG_SIDE / max(width, height)))
