"""Times as netpol-learn writes and reads them: nanoseconds since the epoch (UTC) inside, RFC 3339
text outside.

``format_time``/``parse_time`` are the flow log's form (``2026-02-10T09:40:00.123456Z``: UTC,
always microseconds), written by every command and read back exactly. ``parse_api_time`` reads the
timestamps of Kubernetes objects (``creationTimestamp``, ``startTime``, ``finishedAt``, ...), which
come in any RFC 3339 form the API server or a snapshot tool wrote. ``format_datetime`` writes a
``datetime`` (the inventory's snapshot time) in the flow log's form. ``parse_ns_time`` reads the
nanosecond times of Hubble's flow records.
"""

from __future__ import annotations

from datetime import datetime, timezone
import re
from functools import lru_cache

__all__ = ["format_datetime", "format_duration", "format_time", "parse_api_time", "parse_duration", "parse_ns_time", "parse_time"]


def format_time(ns: int) -> str:
    """RFC 3339, UTC, microseconds."""
    sec, rem = divmod(int(ns), 1_000_000_000)
    return f"{_format_second(sec)}.{rem // 1000:06d}Z"


@lru_cache(maxsize=4096)
def _format_second(sec: int) -> str:
    # Flows of one capture share few distinct seconds: formatting each once saves most of the cost.
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(text: str) -> int:
    """The flow log's form (``format_time``) to nanoseconds; ValueError for anything else."""
    # The hot path of reading flow logs (merge, the learning service's ingest): a whole strptime
    # per time cost most of a segment's parse. The second is parsed once per distinct second
    # (the times of a log share few), the microseconds are six digits; anything else goes the
    # long way, with the same result and the same errors as before.
    if type(text) is str and len(text) == 27 and text[19] == "." and text[26] == "Z":
        micros = text[20:26]
        if micros.isascii() and micros.isdigit():
            second = _parse_second(text[:19])
            if second is not None:
                return (second * 1_000_000 + int(micros)) * 1000
    try:
        dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}") from exc
    return (int(dt.timestamp()) * 1_000_000 + dt.microsecond) * 1000


@lru_cache(maxsize=4096)
def _parse_second(text: str) -> int | None:
    try:
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


_NS_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_ns_time(text) -> int | None:
    """RFC 3339 with up to nanoseconds (as protobuf's JSON writes times: Hubble's records) to
    nanoseconds since the epoch, exactly; None when not one. The second is parsed once per
    distinct second, as ``parse_time`` does."""
    m = _NS_TIME.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    second = _parse_second(m.group(1)) if m.group(3) == "Z" else _zoned_second(m.group(1) + m.group(3))
    if second is None:
        return None
    return second * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


@lru_cache(maxsize=4096)
def _zoned_second(text: str) -> int | None:
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return None


def parse_api_time(text: str | None) -> int | None:
    """RFC 3339 (as the API writes it) to nanoseconds since the epoch; None when empty or not a time.

    Lenient, as snapshots are: any form ``datetime.fromisoformat`` reads, ``Z`` or an offset, and
    without an offset UTC."""
    if not text:
        return None
    s = str(text).replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def format_datetime(when: datetime, what: str = "time") -> str:
    """``when`` (timezone-aware) in the flow log's form: RFC 3339 in UTC with microseconds."""
    if when.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def parse_duration(text: str) -> int:
    """A duration such as ``500ms``, ``30s``, ``15m``, ``24h``, ``7d`` or ``2h30m`` (units from
    the largest down, each once) to nanoseconds; ValueError for anything else."""
    s = str(text).strip()
    match = _DURATION.fullmatch(s)
    if not s or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 15m, 24h or 7d")
    d, h, m, sec, ms = (int(g or 0) for g in match.groups())
    return ((((d * 24 + h) * 60 + m) * 60 + sec) * 1000 + ms) * 10**6


def format_duration(ns: int) -> str:
    """A duration for a person: ``2s``, ``90s`` as ``1m30s``, ``1d2h``; whole units, largest first."""
    if ns < 10**9:
        return f"{ns // 10**6}ms"
    left, out = int(ns) // 10**9, []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            out.append(f"{left // size}{unit}")
            left %= size
    return "".join(out)
