"""The capture functions of ``netpol_learn._capture`` (its docstring says what they do): checking
the inputs, reading each file or stream into the aggregator, and merging the results. Apart from
the package's ``__init__`` so that the package's constants (the command line's option defaults)
load without numpy and the decoder: the package loads this module on first use."""

from __future__ import annotations

import gzip
import os
import stat
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from netpol_learn._errors import CaptureError
from netpol_learn._output import spool
from netpol_learn._paths import path_list
from netpol_learn._capture import DEFAULT_DEDUP_WINDOW, INPUT_FORMATS, STDIN
from netpol_learn._capture._aggregate import Aggregator
from netpol_learn._capture._accel import decode
from netpol_learn._capture._files import GZIP_MAGIC, PCAP_MAGIC, PCAPNG_SHB, CaptureWarning, check_capture_file, read_chunks
from netpol_learn._capture._hubble import HubbleReader, looks_like_flow_records
from netpol_learn._flowlog import FlowLog, merge_logs, merge_stats

#: Warnings kept in one file's stats; more are counted in one closing entry (all are reported).
MAX_RECORDED_WARNINGS = 100
#: How far into an input its first line is looked for.
_FIRST_LINE = 1 << 20


def _first_line(path: Path) -> bytes:
    """The first line that is not blank of a regular file (inside gzip too), at most 1 MiB."""
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        stream = gzip.GzipFile(fileobj=fh, mode="rb") if head == GZIP_MAGIC else fh
        try:
            text = stream.read(_FIRST_LINE)
        except (EOFError, OSError, zlib.error):
            return b""
    return next((line for line in text.splitlines() if line.strip()), b"")


def _input_problem(path: Path, input_format: str) -> tuple[str, str | None]:
    """(the input's format, "pcap" or "hubble"; why it cannot be read, or None)."""
    if str(path) == STDIN:
        return "stream", None
    problem = check_capture_file(path)
    if input_format == "pcap":
        return "pcap", problem
    try:
        st = os.stat(path)
    except OSError:
        return "pcap", problem
    if not stat.S_ISREG(st.st_mode):
        return ("hubble", None) if input_format == "hubble" and not stat.S_ISDIR(st.st_mode) else ("pcap", problem)
    if input_format == "auto" and problem is None:
        return "pcap", None
    try:
        first = _first_line(path)
    except OSError as exc:
        return "hubble", f"{path}: cannot read: {exc.strerror or exc}"
    if looks_like_flow_records(first):
        return "hubble", None
    if input_format == "hubble":
        return "hubble", f"{path}: not Hubble flow records (its first line is not a JSON flow record)" if first else f"{path}: empty file, no flow records"
    return "pcap", f"{problem}, nor Hubble flow records" if problem and first.lstrip().startswith(b"{") else problem


def check_inputs(paths: Iterable[str | os.PathLike], input_format: str = "auto") -> list[str]:
    """Raise ``CaptureError`` unless every path exists, is a file and starts like a capture
    (pcap, pcapng or gzip of one) or, unless ``input_format`` is ``pcap``, like Hubble's flow
    records (JSON); the message names each bad path. Reads the first bytes (line) of each.
    Returns what each path is: ``pcap``, ``hubble``, or ``stream`` (``-``)."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r} is not one of {', '.join(INPUT_FORMATS)}")
    paths = [Path(p) for p in paths]
    if sum(1 for p in paths if str(p) == STDIN) > 1:
        raise CaptureError("standard input ('-') given more than once")
    found = [_input_problem(p, input_format) for p in paths]
    problems = list(dict.fromkeys(problem for _, problem in found if problem))
    if problems:
        raise CaptureError("; ".join(problems))
    return [kind for kind, _ in found]


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


def _flow_records(path: Path, include_dropped: bool, warn, progress) -> FlowLog:
    """Hubble's flow records in a file (plain or gzip) to a flow log."""
    reader = HubbleReader(path.name, include_dropped)
    with open(path, "rb") as raw:
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        try:
            for line in stream:
                reader.feed(line)
                if progress and reader.lineno % 4096 == 0:
                    progress(raw.tell())
        except (EOFError, OSError, zlib.error) as exc:
            reader.damage(f"compressed data damaged or cut off after line {reader.lineno} ({exc})")
    return _records_log(reader, path, warn)


def _records_log(reader: HubbleReader, path: Path, warn) -> FlowLog:
    if not reader.stats.get("flow_records"):
        reason = reader.warnings[0].split(": ", 1)[1] if reader.warnings else "no flow records in it"
        raise CaptureError(f"{path}: nothing usable read ({reason})")
    if warn:
        for w in reader.warnings:
            warn(w)
    log = reader.result()
    if reader.warnings:
        log = replace(log, stats=_with_warnings(log.stats, path, reader.warnings))
    return log


def read_stream(stream, *, source: str = "stdin", input_format: str = "auto", dedup_window: float = DEFAULT_DEDUP_WINDOW,
                include_dropped: bool = False, warn: Callable[[str], None] | None = None) -> FlowLog:
    """A capture or flow records from a binary stream (standard input) to a flow log.

    ``stream`` yields lines (``readline``); records are read as they come, so a follower
    (``hubble observe --follow``) can be read until it ends, or until the caller stops the
    iteration (``StopIteration`` from ``stream``'s iterator, or ``KeyboardInterrupt`` turned
    into the end by the caller). A packet capture on the stream is spooled to a temporary file
    and read as one."""
    head = stream.peek(4)[:4] if hasattr(stream, "peek") else b""
    if input_format == "pcap" or (input_format == "auto" and (head in PCAP_MAGIC or head == PCAPNG_SHB or head[:2] == GZIP_MAGIC)):
        with tempfile.TemporaryDirectory(prefix="netpol-learn-stdin-") as tmp:
            path = Path(tmp) / source
            spool(stream, path)
            problem = check_capture_file(path)
            if problem:
                raise CaptureError(problem.replace(str(path), source))
            return _capture_file(path, dedup_window, warn, None)
    reader = HubbleReader(source, include_dropped)
    for line in stream:
        reader.feed(line)
    if reader.lineno and not reader.stats.get("flow_records") and not reader.stats.get("flow_records_other") and input_format == "auto":
        raise CaptureError(f"{source}: neither a packet capture nor Hubble flow records")
    return _records_log(reader, Path(source), warn)


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
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    dedup_window: float = DEFAULT_DEDUP_WINDOW,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[Path, int], None] | None = None,
    input_format: str = "auto",
    include_dropped: bool = False,
    stdin=None,
) -> FlowLog:
    """``capture_file`` for each path, merged.

    Every path is checked first (``check_inputs``): a missing file, a directory or a file that is
    not a capture raises ``CaptureError`` before any file is read. A capture that then yields
    nothing (damaged past its header, an unsupported link type) is reported through ``warn`` and
    recorded in the stats' ``warnings``, and the others are still read; ``CaptureError`` is raised
    when no file yields anything (with one path: that file's error).

    A file of Hubble's flow records (JSON lines, plain or gzip) is read by ``HubbleReader``
    (``input_format`` ``auto`` tells it by content; ``hubble`` or ``pcap`` forces one), with
    ``DROPPED`` records as ``dropped`` flows unless ``include_dropped``. The path ``-`` is
    ``stdin`` (a binary stream), read by ``read_stream``. One path may be given as itself
    (``path_list``).
    """
    paths = [Path(p) for p in path_list(paths)]
    kinds = check_inputs(paths, input_format)
    logs = []
    failed: list[str] = []
    for p, kind in zip(paths, kinds):
        report = (lambda pos, p=p: progress(p, pos)) if progress else None
        try:
            if kind == "stream":
                logs.append(read_stream(stdin, input_format=input_format, dedup_window=dedup_window, include_dropped=include_dropped, warn=warn))
            elif kind == "hubble":
                logs.append(_flow_records(p, include_dropped, warn, report))
            else:
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
