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

Flow records (Hubble's JSON export) are read by ``_hubble.HubbleReader`` into the same
aggregator: an input is told apart by its content (``input_format`` forces it), and ``-`` is
standard input, read line by line as it comes (``read_stream``).

The capture functions live in ``_run`` and the names below in their own modules: each is loaded
on first use (``__getattr__``), so that the constants here (the command line's option defaults)
load without numpy. Besides the capture functions, this package exports what the live sniffer (``netpol_learn._sniff``)
runs on its own packets: ``Aggregator``, ``decode`` (C or reference), ``Packets`` with ``OK``
(the ``status`` of a packet that counts), ``mix`` (the 64-bit hash of integer arrays), ``PAD``
(the padding ``decode`` may read past a packet) and ``decide_direction`` (the direction rules, which
its socket scan falls back on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netpol_learn._lazy import on_first_use

DEFAULT_DEDUP_WINDOW = 0.1  # seconds
#: What ``input_format`` may say: by content, packet captures only, Hubble's flow records only.
INPUT_FORMATS = ("auto", "pcap", "hubble")
STDIN = "-"

#: Where each name lives, loaded on first use.
_HOMES = {
    "capture_file": "netpol_learn._capture._run",
    "capture_files": "netpol_learn._capture._run",
    "check_inputs": "netpol_learn._capture._run",
    "read_stream": "netpol_learn._capture._run",
    "Aggregator": "netpol_learn._capture._aggregate",
    "decode": "netpol_learn._capture._accel",
    "OK": "netpol_learn._capture._decode",
    "Packets": "netpol_learn._capture._decode",
    "mix": "netpol_learn._capture._decode",
    "decide_direction": "netpol_learn._capture._direction",
    "PAD": "netpol_learn._capture._files",
    "CaptureWarning": "netpol_learn._capture._files",
}

__all__ = sorted([*_HOMES, "DEFAULT_DEDUP_WINDOW", "INPUT_FORMATS", "STDIN"])


__getattr__, __dir__ = on_first_use(globals(), _HOMES)


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from netpol_learn._capture._accel import decode
    from netpol_learn._capture._aggregate import Aggregator
    from netpol_learn._capture._decode import OK, Packets, mix
    from netpol_learn._capture._direction import decide_direction
    from netpol_learn._capture._files import PAD, CaptureWarning
    from netpol_learn._capture._run import capture_file, capture_files, check_inputs, read_stream
