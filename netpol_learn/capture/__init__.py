"""The capture stage: packet capture files in, a flow log out.

    read_chunks (_files)  ->  decode (_decode)  ->  Aggregator (_aggregate)  ->  FlowLog

The two per-packet loops (the pcap record walk in ``_files`` and ``decode``) run in C when the
optional ``_fastscan`` extension was built; ``_accel`` chooses, and the Python/numpy code is the
reference and the fallback.

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
from netpol_learn.capture._accel import decode
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
    # Warnings wait for the end of the file: when nothing could be read they fold into the one
    # error line instead.
    warnings: list[str] = []
    agg = Aggregator(int(dedup_window * 1e9))
    for chunk in read_chunks(path, warnings.append, progress):
        packets = decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts)
        agg.feed(chunk.data, packets)
    if not agg.stats["packets"]:
        reason = warnings[0].split(": ", 1)[-1].split("; ")[0] if warnings else "no packets in it"
        raise CaptureError(f"{path}: nothing usable read ({reason})")
    for message in warnings:
        if warn:
            warn(message)
    return agg.result(path.name)


def capture_files(
    paths: Iterable[str | os.PathLike],
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
) -> FlowLog:
    """``capture_file`` for each path, merged.

    A file that yields nothing is reported through ``warn`` and the others are still read;
    ``CaptureError`` is raised when no file yields anything (with one path: that file's error).
    """
    paths = [Path(p) for p in paths]
    logs = []
    for p in paths:
        report = (lambda pos, p=p: progress(p, pos)) if progress else None
        try:
            logs.append(capture_file(p, dedup_window=dedup_window, warn=warn, progress=report))
        except CaptureError as exc:
            if len(paths) == 1:
                raise
            if warn:
                warn(str(exc))
    if not logs:
        raise CaptureError(f"nothing usable read from any of the {len(paths)} files")
    return logs[0] if len(logs) == 1 else merge_logs(logs)  # one file's log is already in order
