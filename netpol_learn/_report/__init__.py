"""The review page of a learned or verified set of policies (``netpol-learn report``).

    flows + inventory (+ policies, + base) ─> _model.build_report ─> model (a JSON document)
    model ─> _page.page_html ─> one self-contained HTML file (ELK lays the map out in the page)
    model ─> _image.map_svg / map_png ─> the same map, laid out by the same code in V8 (mini-racer)

The model is the only contract between the two halves: docs/report.md describes it.
"""

from netpol_learn._report._model import (
    FORMAT,
    PolicyText,
    build_report,
    policy_texts,
    report_model,
)


# The page and the pictures load their engines (Jinja, V8, resvg) only when asked for.
def page_html(model: dict, **kw) -> str:
    """The review page of ``model`` (``build_report``): one self-contained HTML document."""
    from netpol_learn._report._page import page_html as page

    return page(model, **kw)


def map_svg(model: dict) -> str:
    """The map of ``model`` as the page first shows it, as a standalone SVG document."""
    from netpol_learn._report._image import map_svg as svg

    return svg(model)


def map_png(model: dict) -> bytes:
    """The map of ``model`` as ``map_svg`` draws it, rasterised to PNG."""
    from netpol_learn._report._image import map_png as png

    return png(model)


__all__ = ["FORMAT", "PolicyText", "build_report", "map_png", "map_svg", "page_html", "policy_texts", "report_model"]
