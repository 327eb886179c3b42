"""The learning chart: new edges over time, per hour or per day, with the cumulative count.

A PNG made with matplotlib's Agg renderer (no display, no pyplot), at a fixed size and DPI, with
matplotlib's default style whatever the user's matplotlibrc says, and no time or version in its
metadata: the same status gives the same bytes. Its ``Software`` text chunk says
``netpol-learn`` (``MARKER_KEY``/``MARKER_TEXT``): that is how a later run of ``generate``
knows the file in a policy directory is its own (``is_chart``), as text files are known by their
first line. matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the status is imported where a chart is drawn: is_chart needs nothing but struct
    from netpol_learn._status import Status

#: The chart's name in a policy directory, beside REPORT.md.
CHART = "learning.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARKER_KEY, MARKER_TEXT = "Software", "netpol-learn"
#: Size of the image: 1000 x 450 pixels.
SIZE_INCHES, DPI = (10.0, 4.5), 100
_MINUTE, _HOUR, _DAY = 60 * 10**9, 3600 * 10**9, 86400 * 10**9
#: The bins: a capture up to 3 hours long is charted per minute, up to 3 days per hour, else per day.
UNITS = ((3 * _HOUR, _MINUTE, "minute"), (3 * _DAY, _HOUR, "hour"), (None, _DAY, "day"))


def unit_of(status: Status) -> tuple[int, str]:
    """(bin width in ns, its name): minutes, hours or days, by the length of the capture (``UNITS``)."""
    length = 0 if status.capture_start is None else status.capture_end - status.capture_start
    return next((width, name) for up_to, width, name in UNITS if up_to is None or length <= up_to)


def bins(status: Status) -> tuple[int, list[int], list[int]]:
    """(bin width in ns, the bins' starts, new edges in each): minutes, hours or days (UTC) from
    the one holding the capture's start to the one holding its end."""
    width, _ = unit_of(status)
    if status.capture_start is None:
        return width, [], []
    first = status.capture_start // width * width
    count = status.capture_end // width - status.capture_start // width + 1
    new = [0] * count
    for w in status.workloads:
        for e in w.edges:
            new[(e.first_seen - first) // width] += 1
    return width, [first + i * width for i in range(count)], new


def _datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 10**9, timezone.utc).replace(tzinfo=None)


def learning_chart(status: Status) -> bytes:
    """The chart of ``status`` as PNG bytes: bars of the new edges per minute, hour or day
    (``UNITS``), the cumulative edges as a line, and a mark where the last ``stable_after`` of the
    capture begins."""
    from matplotlib import dates as mdates
    from matplotlib import style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from netpol_learn._status import duration_text

    width, starts, new = bins(status)
    _, unit = unit_of(status)
    with style.context("default"):  # matplotlib's defaults, not the user's matplotlibrc
        fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        title = f"New edges per {unit} (UTC): {status.edges} edges in all; learning status: {status.verdict}"
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(f"new edges per {unit}")
        if starts:
            xs = [_datetime(s) for s in starts]
            ax.bar(xs, new, width=width / _DAY, align="edge", color="#4c72b0", label=f"new edges per {unit}")
            cumulative, total = [], 0
            for n in new:
                total += n
                cumulative.append(total)
            line = ax.twinx()
            line.step([*xs, _datetime(starts[-1] + width)], [*cumulative, total], where="post", color="#dd8452",
                      linewidth=2, label="edges in all")
            line.set_ylabel("edges in all")
            line.set_ylim(bottom=0, top=max(1, total) * 1.15)
            line.yaxis.get_major_locator().set_params(integer=True)
            since = status.capture_end - status.stable_after
            if since > status.capture_start:
                ax.axvline(_datetime(since), color="#55a868", linestyle="--",
                           label=f"last {duration_text(status.stable_after)} (stable when no new edge)")
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.set_xlim(xs[0], _datetime(starts[-1] + width))
            handles = ax.get_legend_handles_labels()
            extra = line.get_legend_handles_labels()
            ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper center", bbox_to_anchor=(0.5, -0.14),
                      ncol=3, frameon=False, fontsize=9)
        else:
            ax.text(0.5, 0.5, "no traffic", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(bottom=0, top=max([1, *new]) * 1.15)
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={MARKER_KEY: MARKER_TEXT})
    return out.getvalue()


def is_chart(head: bytes) -> bool:
    """Whether ``head`` (the start of a file) is a PNG with netpol-learn's ``Software`` text
    chunk before its image data: a chart an earlier run wrote."""
    if not head.startswith(PNG_SIGNATURE):
        return False
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at:at + 8])
        body = head[at + 8:at + 8 + length]
        if kind in (b"IDAT", b"IEND") or len(body) < length:
            return False
        if kind == b"tEXt":
            crc = head[at + 8 + length:at + 12 + length]
            key, _, text = body.partition(b"\0")
            if key == MARKER_KEY.encode() and text == MARKER_TEXT.encode() and crc == struct.pack(">I", zlib.crc32(kind + body)):
                return True
        at += 12 + length
    return False
