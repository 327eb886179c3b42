"""The sniffer's defaults and memory model: plain values, importable without the sniffer (the
command line's options show them; ``_sniffer`` uses them)."""

DEFAULT_INTERVAL = 60.0
#: Distinct connections per interval by default: with ``MEMORY_PER_CONNECTION`` and
#: ``MEMORY_FIXED``, what the DaemonSet's 512 MiB limit holds with ``MEMORY_MARGIN`` to spare.
DEFAULT_MAX_CONNECTIONS = 75_000
#: Peak resident memory per connection of ``--max-connections``, each its own flow, with one
#: interval's segment being written (rendered, spooled gzip'd, written) while the next fills to
#: the bound; and the rest (interpreter, numpy, one 8 MiB ring). Measured with
#: ``benchmarks/bench_sniff.py --many-flows`` (peaks of 172.6, 266.0 and 380.5 MiB at 25,000,
#: 50,000 and 100,000) and rounded up: the model is above every measured peak.
MEMORY_PER_CONNECTION = 4_000
MEMORY_FIXED = 80 << 20
#: What a container's memory limit leaves above ``peak_memory`` of its bound.
MEMORY_MARGIN = 1.3
DEFAULT_PROC = "/proc"
