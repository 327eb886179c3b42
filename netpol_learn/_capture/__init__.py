"""The capture stage: packet capture files in, a flow log out.

    read_chunks (_files)  ->  decode (_decode)  ->  Aggregator (_aggregate)  ->  FlowLog

The aggregator's parts: the connection table (``_table``), deduplication and NAT views
(``_dedup``), DNS counting (``_dnscount``), the direction decision (``_direction``) and what the
server answered (``_evidence``), the last two pure functions over the connection table.

The two per-packet loops (the pcap record walk in ``_files`` and ``decode``) run in C when the
optional ``_fastscan`` extension was built; ``_accel`` chooses, and the Python/numpy code is the
reference and the fallback.

Each file is read and aggregated on its own and the results are merged (``merge_logs``), so
several files give the same log in any order, and ``capture A B`` equals ``merge`` of
``capture A`` and ``capture B``.

Every input is checked before any is read (``check_capture_file``): one that does not exist, is a
directory or does not start like a capture is an error. Damage found while reading is a warning
(a ``CaptureWarning``: path, byte offset, reason, detail), reported as its text, and the warnings
are kept in the log's stats as ``warnings``: {message: how many times}, which merges like every
other counter.

Besides the capture functions, this package exports what the live sniffer (``netpol_learn._sniff``)
runs on its own packets: ``Aggregator``, ``decode`` (C or reference), ``Packets`` with ``OK``
(the ``status`` of a packet that counts), ``mix`` (the 64-bit hash of integer arrays), ``PAD``
(the padding ``decode`` may read past a packet) and ``decide_direction`` (the direction rules, which
its socket scan falls back on).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from netpol_learn._errors import CaptureError
from netpol_learn._capture._aggregate import Aggregator
from netpol_learn._capture._accel import decode
from netpol_learn._capture._decode import OK, Packets, mix
from netpol_learn._capture._direction import decide_direction
from netpol_learn._capture._files import PAD, CaptureWarning, check_capture_file, read_chunks
from netpol_learn._flowlog import FlowLog, merge_logs, merge_stats

DEFAULT_DEDUP_WINDOW = 0.1  # seconds
#: Warnings kept in one file's stats; more are counted in one closing entry (all are reported).
MAX_RECORDED_WARNINGS = 100

__all__ = [
    "DEFAULT_DEDUP_WINDOW", "OK", "PAD", "Aggregator", "CaptureWarning", "Packets", "capture_file",
    "capture_files", "check_inputs", "decide_direction", "decode", "mix",
]


def check_inputs(paths: Iterable[str | os.PathLike]) -> None:
    """Raise ``CaptureError`` unless every path exists, is a file and starts like a capture
    (pcap, pcapng or gzip of one); the message names each bad path. Reads a few bytes of each."""
    problems = list(dict.fromkeys(filter(None, (check_capture_file(Path(p)) for p in paths))))
    if problems:
        raise CaptureError("; ".join(problems))


def capture_file(
    path: str | os.PathLike,
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> FlowLog:
    """Read one pcap/pcapng file (optionally gzip-compressed) into a flow log.

    ``CaptureError`` when the path is not a capture file (``check_inputs``) or yields no packet
    at all. Damage is reported through ``warn``, recorded in the log's stats (``warnings``), and
    what could be read is kept.
    """
    check_inputs([path])
    return _capture_file(Path(path), dedup_window, warn, progress)


def _capture_file(path: Path, dedup_window: float, warn, progress) -> FlowLog:
    # Warnings wait for the end of the file: when nothing could be read they fold into the one
    # error line instead.
    warnings: list[CaptureWarning] = []
    agg = Aggregator(int(dedup_window * 1e9))
    for chunk in read_chunks(path, warnings.append, progress):
        packets = decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts)
        agg.feed(chunk.data, packets)
    if not agg.stats["packets"]:
        reason = warnings[0].reason if warnings else "no packets in it"
        raise CaptureError(f"{path}: nothing usable read ({reason})")
    if warn:
        for w in warnings:
            warn(str(w))
    log = agg.result(path.name)
    if warnings:
        log = replace(log, stats=_with_warnings(log.stats, path, warnings))
    return log


def _with_warnings(stats, path: Path, warnings: list[CaptureWarning]) -> dict:
    """``stats`` with the messages of ``warnings`` (about ``path``) added to its ``warnings``
    counter ({message: count})."""
    kept = warnings[:MAX_RECORDED_WARNINGS]
    counts = dict(Counter(map(str, kept)))
    if len(warnings) > len(kept):
        counts[f"{path}: {len(warnings) - len(kept)} more warnings, not recorded here"] = 1
    return merge_stats(stats, {"warnings": counts})


def capture_files(
    paths: Iterable[str | os.PathLike],
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
) -> FlowLog:
    """``capture_file`` for each path, merged.

    Every path is checked first (``check_inputs``): a missing file, a directory or a file that is
    not a capture raises ``CaptureError`` before any file is read. A capture that then yields
    nothing (damaged past its header, an unsupported link type) is reported through ``warn`` and
    recorded in the stats' ``warnings``, and the others are still read; ``CaptureError`` is raised
    when no file yields anything (with one path: that file's error).
    """
    paths = [Path(p) for p in paths]
    check_inputs(paths)
    logs = []
    failed: list[str] = []
    for p in paths:
        report = (lambda pos, p=p: progress(p, pos)) if progress else None
        try:
            logs.append(_capture_file(p, dedup_window, warn, report))
        except CaptureError as exc:
            if len(paths) == 1:
                raise
            failed.append(str(exc))
            if warn:
                warn(str(exc))
    if not logs:
        raise CaptureError(f"nothing usable read from any of the {len(paths)} files")
    log = logs[0] if len(logs) == 1 else merge_logs(logs)  # one file's log is already in order
    if failed:
        log = replace(log, stats=merge_stats(log.stats, {"warnings": dict(Counter(failed))}))
    return log
