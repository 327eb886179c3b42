"""The capture stage: packet capture files in, a flow log out.

    read_chunks (_files)  ->  decode (_decode)  ->  Aggregator (_aggregate)  ->  FlowLog

Each file is read and aggregated on its own and the results are merged (``merge_logs``), so
several files give the same log in any order, and ``capture A B`` equals ``merge`` of
``capture A`` and ``capture B``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from netpol_learn._errors import CaptureError
from netpol_learn.capture._aggregate import Aggregator
from netpol_learn.capture._decode import decode
from netpol_learn.capture._files import read_chunks
from netpol_learn.flowlog import FlowLog, merge_logs

DEFAULT_DEDUP_WINDOW = 0.1  # seconds

__all__ = ["DEFAULT_DEDUP_WINDOW", "capture_file", "capture_files"]


def capture_file(
    path: str | os.PathLike,
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowLog:
    """Read one pcap/pcapng file (optionally gzip-compressed) into a flow log.

    Damage is reported through ``warn`` and what could be read is kept; ``CaptureError`` is
    raised only when the file yields no packet at all.
    """
    path = Path(path)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn:
            warn(message)

    agg = Aggregator(int(dedup_window * 1e9))
    for chunk in read_chunks(path, note, progress):
        packets = decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts)
        agg.feed(chunk.data, packets)
    if not agg.stats["packets"]:
        reason = warnings[0].split(": ", 1)[-1] if warnings else "no packets in it"
        raise CaptureError(f"{path}: nothing usable read ({reason})")
    return agg.result(path.name)


def capture_files(
    paths: Iterable[str | os.PathLike],
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
) -> FlowLog:
    """``capture_file`` for each path, merged."""
    logs = []
    for p in paths:
        report = (lambda pos, p=Path(p): progress(p, pos)) if progress else None
        logs.append(capture_file(p, dedup_window=dedup_window, warn=warn, progress=report))
    return merge_logs(logs)
