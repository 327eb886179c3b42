"""The flow log: what the capture stage writes and every later stage reads.

Plain frozen dataclasses, their JSON Lines form (docs/flow-log.md) and merging. Merging is
associative and commutative: counts add, first/last seen take the min/max, sets unite.

A log is made of segments (a header line, flow and dns lines, a stats line); ``SegmentReader`` is
the one reader of that form, for files (``read_flow_log``: strict, every line checked) and for the
sniffer pods' container logs (``collect``: other lines skipped, complete segments kept);
``last_complete_segment_end`` finds where the last whole segment of a file ends, reading back from
its end, for the sniffer that appends to one. Times are ``netpol_learn._time``'s.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import orjson

from netpol_learn._errors import FlowLogError, FlowLogVersionError
from netpol_learn._gc import collector_paused
from netpol_learn._output import write_text
from netpol_learn._time import format_time, parse_time

FORMAT = "netpol-learn/flows"
VERSION = 2
#: The versions a reader reads: version 1 logs have no evidence and no runs (docs/flow-log.md).
READABLE_VERSIONS = (1, 2)

#: Direction methods, strongest evidence first (docs/flow-log.md).
DIRECTION_METHODS = (
    "syn",
    "syn-ack",
    "sctp-init",
    "icmp-echo",
    "dns",
    "flow-record",
    "listen",
    "port-heuristic",
    "first-packet",
)
HEURISTIC_METHODS = frozenset({"port-heuristic", "first-packet"})
MAX_CLIENT_PORTS = 8

#: What a flow line's connections showed of the server's answer (docs/flow-log.md, "Evidence").
#: The first four are evidence of a need; the next three are attempts, reported and never a rule;
#: ``observed`` is a version 1 line's, which did not record it (taken as a need, as then).
#: ``dropped`` (last, so the others keep their places) is a flow record's: the network's policy
#: dropped it (Hubble's verdict DROPPED), reported as what is blocked today, never a rule.
EVIDENCE = ("established", "answered", "repeated", "socket-scan", "refused", "unanswered", "stale", "observed", "dropped")
NEEDS = frozenset({"established", "answered", "repeated", "socket-scan", "observed"})
ATTEMPTS = ("refused", "unanswered", "stale", "dropped")
#: Who an endpoint line says held an address: a pod, or one of Cilium's reserved entities. Not
#: ``world``: Cilium calls world whatever it has no identity for (a node address, too), which is
#: what an address no one claims is anyway.
ENTITIES = ("pod", "host", "remote-node", "kube-apiserver")
#: Connections of a flow closer in time than this make one run of activity (docs/flow-log.md, "Runs").
RUN_GAP = 120 * 10**9

Run = tuple[int, int, int]  # (first seen, last seen, connections): ns since the epoch, UTC


@dataclass(frozen=True, order=True, slots=True)
class Translation:
    """Another view of a flow's connections, after address translation."""

    src: str
    dst: str
    port: int | None


@dataclass(frozen=True, slots=True)
class Flow:
    """Aggregated traffic from a client to a server port."""

    src: str
    dst: str
    proto: str
    port: int | None
    packets: int
    bytes: int
    connections: int
    first_seen: int  # nanoseconds since the epoch, UTC
    last_seen: int
    direction: tuple[tuple[str, int], ...]  # (method, connections), in DIRECTION_METHODS order
    client_ports: tuple[int, ...] = ()
    translated: tuple[Translation, ...] = ()
    # The pods ("namespace/name") that held the client's and the server's address while the live
    # sniffer saw the flow, when it could ask the API; empty when unknown (docs/flow-log.md).
    src_pods: tuple[str, ...] = ()
    dst_pods: tuple[str, ...] = ()
    evidence: str = "observed"  # one of EVIDENCE
    # When the connections happened: runs of activity, sorted, no two within RUN_GAP of each
    # other; empty when built by hand: then the one run (first_seen, last_seen, connections).
    runs: tuple[Run, ...] = ()
    # The reserved entity a flow record gave the client's and the server's address (Hubble's
    # ``reserved:host``, ``remote-node``, ``kube-apiserver``: one of ENTITIES but
    # ``pod``); empty when none did (docs/flow-log.md, "Flow records").
    src_entity: str = ""
    dst_entity: str = ""

    def __post_init__(self):
        if not self.runs:
            object.__setattr__(self, "runs", ((self.first_seen, self.last_seen, self.connections),))

    @property
    def key(self) -> tuple:
        return (self.src, self.dst, self.proto, self.port, self.evidence, self.src_pods, self.dst_pods, self.src_entity, self.dst_entity)


@dataclass(frozen=True, order=True, slots=True)
class DnsAnswer:
    name: str
    type: str
    data: str
    ttl: int


@dataclass(frozen=True, slots=True)
class DnsObservation:
    """What one client asked one resolver about one name, and the answers it got."""

    client: str
    resolver: str
    qname: str
    qtype: str
    queries: int
    responses: int
    first_seen: int
    last_seen: int
    answers: tuple[DnsAnswer, ...] = ()
    rcodes: tuple[str, ...] = ()
    transports: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.client, self.resolver, self.qname, self.qtype)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Who held an address while flow records named it, as the records say (Hubble's endpoint
    identities): a pod with its labels, or a reserved entity (``ENTITIES``), from ``first_seen``
    to ``last_seen`` (docs/flow-log.md, "endpoint")."""

    address: str
    entity: str  # one of ENTITIES
    first_seen: int
    last_seen: int
    records: int  # flow records that named it so
    namespace: str = ""
    pod: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # the pod's labels, sorted
    namespace_labels: tuple[tuple[str, str], ...] = ()
    workload: str = ""  # "Kind/name", when the record names the pod's workload
    node: str = ""  # the node it runs on (a host entity: that node), when a record shows it

    @property
    def key(self) -> tuple:
        return (self.address, self.entity, self.namespace, self.pod, self.labels, self.namespace_labels, self.workload)


@dataclass(frozen=True)
class FlowLog:
    flows: tuple[Flow, ...] = ()
    dns: tuple[DnsObservation, ...] = ()
    stats: Mapping = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()


# --- merging -------------------------------------------------------------------------------


def _port_sort(port: int | None) -> int:
    return -1 if port is None else port


def _address_sort(address: str) -> tuple:
    return (":" in address, address)


_EVIDENCE_ORDER = {e: i for i, e in enumerate(EVIDENCE)}


def flow_sort_key(flow: Flow) -> tuple:
    return (_address_sort(flow.src), _address_sort(flow.dst), flow.proto, _port_sort(flow.port),
            _EVIDENCE_ORDER[flow.evidence], flow.src_pods, flow.dst_pods, flow.src_entity, flow.dst_entity)


def dns_sort_key(d: DnsObservation) -> tuple:
    return (_address_sort(d.client), _address_sort(d.resolver), d.qname, d.qtype)


def endpoint_sort_key(e: Endpoint) -> tuple:
    return (_address_sort(e.address), *e.key[1:])


def merge_endpoint(a: Endpoint, b: Endpoint) -> Endpoint:
    return replace(a, first_seen=min(a.first_seen, b.first_seen), last_seen=max(a.last_seen, b.last_seen),
                   records=a.records + b.records, node=max(a.node, b.node))


def merge_runs(runs: Iterable[Run], gap: int = RUN_GAP) -> tuple[Run, ...]:
    """Runs of activity united: two that overlap or lie within ``gap`` of each other become one,
    their connections added. The result depends only on the set of connections' runs, so merging
    stays associative and order-free."""
    out: list[list[int]] = []
    for first, last, n in sorted(runs):
        if out and first <= out[-1][1] + gap:
            cur = out[-1]
            cur[1] = max(cur[1], last)
            cur[2] += n
        else:
            out.append([first, last, n])
    return tuple((a, b, n) for a, b, n in out)


def _merge_direction(a: Iterable[tuple[str, int]], b: Iterable[tuple[str, int]]):
    counts: dict[str, int] = {}
    for method, n in (*a, *b):
        counts[method] = counts.get(method, 0) + n
    return tuple((m, counts[m]) for m in DIRECTION_METHODS if m in counts)


def merge_flow(a: Flow, b: Flow) -> Flow:
    return replace(
        a,
        packets=a.packets + b.packets,
        bytes=a.bytes + b.bytes,
        connections=a.connections + b.connections,
        first_seen=min(a.first_seen, b.first_seen),
        last_seen=max(a.last_seen, b.last_seen),
        direction=_merge_direction(a.direction, b.direction),
        client_ports=tuple(sorted(set(a.client_ports) | set(b.client_ports)))[:MAX_CLIENT_PORTS],
        translated=tuple(sorted(set(a.translated) | set(b.translated), key=translation_sort_key)),
        runs=merge_runs((*a.runs, *b.runs)),
    )


def translation_sort_key(t: Translation) -> tuple:
    return (_address_sort(t.src), _address_sort(t.dst), _port_sort(t.port))


def merge_dns(a: DnsObservation, b: DnsObservation) -> DnsObservation:
    return replace(
        a,
        queries=a.queries + b.queries,
        responses=a.responses + b.responses,
        first_seen=min(a.first_seen, b.first_seen),
        last_seen=max(a.last_seen, b.last_seen),
        answers=merge_answers((*a.answers, *b.answers)),
        rcodes=tuple(sorted(set(a.rcodes) | set(b.rcodes))),
        transports=tuple(sorted(set(a.transports) | set(b.transports))),
    )


def merge_answers(answers: Iterable[DnsAnswer]) -> tuple[DnsAnswer, ...]:
    """One answer per (name, type, data), with the largest TTL seen."""
    best: dict[tuple[str, str, str], int] = {}
    for ans in answers:
        k = (ans.name, ans.type, ans.data)
        best[k] = max(best.get(k, -1), ans.ttl)
    # Sorted as tuples (the dataclass's own order, without its slow comparisons).
    return tuple(DnsAnswer(n, t, d, ttl) for (n, t, d), ttl in sorted(best.items()))


def merge_stats(a: Mapping, b: Mapping) -> dict:
    """Add two nested counter mappings."""
    out: dict = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if va is None or vb is None:
            v = va if vb is None else vb
            out[k] = merge_stats(v, {}) if isinstance(v, Mapping) else v
        elif isinstance(va, Mapping):
            out[k] = merge_stats(va, vb)
        else:
            out[k] = va + vb
    return out


def _merge_into(merged: dict, items, merge) -> None:
    """Each of ``items`` into ``merged`` by its key: ``merge`` of the one there and it."""
    for item in items:
        k = item.key
        seen = merged.get(k)
        merged[k] = item if seen is None else merge(seen, item)


def merge_logs(logs: Iterable[FlowLog]) -> FlowLog:
    """One log of all of ``logs``: counts add up, first and last seen widen, sets unite; the
    result does not depend on the order of the logs."""
    flows: dict[tuple, Flow] = {}
    dns: dict[tuple, DnsObservation] = {}
    endpoints: dict[tuple, Endpoint] = {}
    stats: dict = {}
    sources: set[str] = set()
    for log in logs:
        _merge_into(flows, log.flows, merge_flow)
        _merge_into(dns, log.dns, merge_dns)
        _merge_into(endpoints, log.endpoints, merge_endpoint)
        stats = merge_stats(stats, log.stats)
        sources.update(log.sources)
    return FlowLog(
        flows=tuple(sorted(flows.values(), key=flow_sort_key)),
        dns=tuple(sorted(dns.values(), key=dns_sort_key)),
        stats=stats,
        sources=tuple(sorted(sources)),
        endpoints=tuple(sorted(endpoints.values(), key=endpoint_sort_key)),
    )


# --- JSON Lines ----------------------------------------------------------------------------


def flow_to_json(f: Flow) -> dict:
    out = {
        "kind": "flow",
        "src": f.src,
        "dst": f.dst,
        "proto": f.proto,
        "port": f.port,
        "packets": f.packets,
        "bytes": f.bytes,
        "connections": f.connections,
        "first_seen": format_time(f.first_seen),
        "last_seen": format_time(f.last_seen),
        "direction": dict(f.direction),
        "client_ports": list(f.client_ports),
        "translated": [{"src": t.src, "dst": t.dst, "port": t.port} for t in f.translated],
        "evidence": f.evidence,
        "runs": [[format_time(a), format_time(b), n] for a, b, n in f.runs],
    }
    # Optional: only the live sniffer knows them, and only when it can reach the API.
    if f.src_pods:
        out["src_pods"] = list(f.src_pods)
    if f.dst_pods:
        out["dst_pods"] = list(f.dst_pods)
    # Optional: only flow records (Hubble) carry them.
    if f.src_entity:
        out["src_entity"] = f.src_entity
    if f.dst_entity:
        out["dst_entity"] = f.dst_entity
    return out


def endpoint_to_json(e: Endpoint) -> dict:
    out = {"kind": "endpoint", "address": e.address, "entity": e.entity, "first_seen": format_time(e.first_seen),
           "last_seen": format_time(e.last_seen), "records": e.records}
    for key, value in (("namespace", e.namespace), ("pod", e.pod), ("workload", e.workload), ("node", e.node)):
        if value:
            out[key] = value
    if e.entity == "pod":
        out["labels"] = dict(e.labels)
        out["namespace_labels"] = dict(e.namespace_labels)
    return out


def dns_to_json(d: DnsObservation) -> dict:
    return {
        "kind": "dns",
        "client": d.client,
        "resolver": d.resolver,
        "qname": d.qname,
        "qtype": d.qtype,
        "queries": d.queries,
        "responses": d.responses,
        "first_seen": format_time(d.first_seen),
        "last_seen": format_time(d.last_seen),
        "answers": [{"name": a.name, "type": a.type, "data": a.data, "ttl": a.ttl} for a in d.answers],
        "rcodes": list(d.rcodes),
        "transports": list(d.transports),
    }


def _dumps(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(", ", ": "))


# The flow and dns lines, formatted by hand: exactly ``_dumps(flow_to_json(f))`` (keys sorted,
# ", " and ": ", ASCII escapes), which tests/test_flowlog_lines.py checks, at a third of the cost
# of json.dumps building and sorting a dict per line (a flow-heavy capture writes 150,000 lines).
_quote = json.encoder.encode_basestring_ascii


def _strings_json(items: Iterable[str]) -> str:
    return "[" + ", ".join(map(_quote, items)) + "]"


def _port_json(port: int | None) -> str:
    return "null" if port is None else str(port)


def flow_line(f: Flow) -> str:
    """The JSON text of a flow line, without its newline."""
    out = ['{"bytes": ', str(f.bytes), ', "client_ports": [', ", ".join(map(str, f.client_ports)), '], "connections": ',
           str(f.connections), ', "direction": {',
           ", ".join(f"{_quote(m)}: {n}" for m, n in sorted(f.direction)), '}, "dst": ', _quote(f.dst)]
    if f.dst_entity:
        out += [', "dst_entity": ', _quote(f.dst_entity)]
    if f.dst_pods:
        out += [', "dst_pods": ', _strings_json(f.dst_pods)]
    out += [', "evidence": ', _quote(f.evidence), ', "first_seen": "', format_time(f.first_seen), '", "kind": "flow", "last_seen": "',
            format_time(f.last_seen), '", "packets": ', str(f.packets), ', "port": ', _port_json(f.port), ', "proto": ', _quote(f.proto),
            ', "runs": [', ", ".join(f'["{format_time(a)}", "{format_time(b)}", {n}]' for a, b, n in f.runs), '], "src": ', _quote(f.src)]
    if f.src_entity:
        out += [', "src_entity": ', _quote(f.src_entity)]
    if f.src_pods:
        out += [', "src_pods": ', _strings_json(f.src_pods)]
    out += [', "translated": [', ", ".join(f'{{"dst": {_quote(t.dst)}, "port": {_port_json(t.port)}, "src": {_quote(t.src)}}}'
                                           for t in f.translated), "]}"]
    return "".join(out)


def dns_line(d: DnsObservation) -> str:
    """The JSON text of a dns line, without its newline."""
    answers = ", ".join(f'{{"data": {_quote(a.data)}, "name": {_quote(a.name)}, "ttl": {a.ttl}, "type": {_quote(a.type)}}}' for a in d.answers)
    return "".join(('{"answers": [', answers, '], "client": ', _quote(d.client), ', "first_seen": "', format_time(d.first_seen),
                    '", "kind": "dns", "last_seen": "', format_time(d.last_seen), '", "qname": ', _quote(d.qname), ', "qtype": ',
                    _quote(d.qtype), ', "queries": ', str(d.queries), ', "rcodes": ', _strings_json(d.rcodes), ', "resolver": ',
                    _quote(d.resolver), ', "responses": ', str(d.responses), ', "transports": ', _strings_json(d.transports), "}"))


def dumps_lines(log: FlowLog) -> Iterable[str]:
    def line(obj: dict) -> str:
        return _dumps(obj) + "\n"

    yield line({"kind": "header", "format": FORMAT, "version": VERSION, "sources": list(log.sources)})
    for f in log.flows:
        yield flow_line(f) + "\n"
    for d in log.dns:
        yield dns_line(d) + "\n"
    for e in log.endpoints:
        yield line(endpoint_to_json(e))
    yield line({"kind": "stats", **log.stats})


def write_flow_log(log: FlowLog, path: str | os.PathLike | None) -> None:
    """Write the log to ``path`` by the one writer's rules (``netpol_learn._output``: a regular
    file is replaced atomically, a device or FIFO written directly); None or '-' is stdout."""
    write_text("-" if path is None else path, dumps_lines(log))


@collector_paused()
def read_flow_log(path: str | os.PathLike) -> FlowLog:
    """Read a flow log written by ``write_flow_log`` (or by the sniffer): all its segments merged.

    Strict: the first line that is not blank must be a header, and a line that is not a valid
    flow-log line is a ``FlowLogError`` naming the file and the line."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise FlowLogError(f"cannot read flow log {path}: {exc.strerror or exc}") from exc
    reader = SegmentReader(strict=True, name=str(path))
    flows: list[Flow] = []
    dns: list[DnsObservation] = []
    endpoints: list[Endpoint] = []
    stats: dict = {}
    sources: set[str] = set()

    def take(segment: Segment | None) -> None:
        nonlocal stats
        if segment is None:
            return
        log = segment.log
        try:
            stats = merge_stats(stats, log.stats)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # counters of other types than before
            raise FlowLogError(f"{path}:{reader.lineno}: invalid stats: {exc}") from exc
        flows.extend(log.flows)
        dns.extend(log.dns)
        endpoints.extend(log.endpoints)
        sources.update(log.sources)

    with fh:
        try:
            for text in fh:
                take(reader.feed(text))
        except UnicodeDecodeError as exc:
            raise FlowLogError(f"{path}: not a text file") from exc
        take(reader.close())
    if reader.lineno == 0:
        raise FlowLogError(f"{path}: empty file, not a flow log")
    log = FlowLog(tuple(flows), tuple(dns), stats, tuple(sorted(sources)), tuple(endpoints))
    if _merged_already(log):  # one segment as the writer writes it: merging it changes nothing
        return log
    return merge_logs([log])


def _increasing(items, key) -> bool:
    keys = list(map(key, items))
    return all(a < b for a, b in zip(keys, keys[1:]))


def _merged_already(log: FlowLog) -> bool:
    """Whether ``merge_logs([log]) == log``: its lines in the order ``merge_logs`` sorts them in,
    no two with the same key (sort keys that strictly increase are distinct, and so are the keys
    they are made of), its stats merged (``read_flow_log`` merges them as it reads) and its sources
    sorted. The check is a third of the merge's time (100,000 flows: 0.1 s of 0.37 s)."""
    return (_increasing(log.flows, flow_sort_key) and _increasing(log.dns, dns_sort_key)
            and _increasing(log.endpoints, endpoint_sort_key))


# --- segments ------------------------------------------------------------------------------

_KINDS = ("header", "flow", "dns", "endpoint", "stats")  # a tuple: a kind that is a list or a mapping is no error
#: What the header and the stats line hold as ``dumps_lines`` writes them (nothing else does:
#: inside a JSON string the quotes would be escaped).
_FORMAT_MARK = _dumps({"format": FORMAT})[1:-1].encode()
_STATS_MARK = _dumps({"kind": "stats"})[1:-1].encode()
_BAD_LINE = (KeyError, TypeError, ValueError, AttributeError)


def _counters(obj: Mapping) -> dict:
    """A stats line's counters (all but its kind), checked (``_counters_problem``)."""
    counters = {k: v for k, v in obj.items() if k != "kind"}
    if (problem := _counters_problem(counters)) is not None:
        raise ValueError(problem)
    return counters


def _counters_problem(counters: Mapping, where: str = "") -> str | None:
    """What is wrong with a stats line's counters, or None: each is a count (an integer, not
    negative) or a mapping of counters (``tunnels``, ``warnings``), so that merging adds them."""
    for key, value in counters.items():
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping):
            if (problem := _counters_problem(value, path)) is not None:
                return problem
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{path}: {value!r} is not a count"
    return None


@dataclass(frozen=True)
class Segment:
    """One segment of a flow log: a header line, the flow and dns lines after it, and the stats
    line that ends it."""

    log: FlowLog | None  # what it holds; None when not read (see ``problem``, or a lenient reader's headerless segment)
    complete: bool  # both its header and its stats line were read
    problem: str | None = None  # why it cannot be used ("line 3: invalid flow: ..."); lenient readers only


class _Open:
    """The segment being read."""

    def __init__(self, headed: bool, sources: tuple[str, ...] = (), problem: str | None = None, version: int = VERSION):
        self.headed = headed
        self.version = version
        self.sources = sources
        self.problem = problem
        self.flows: list[Flow] = []
        self.dns: list[DnsObservation] = []
        self.endpoints: list[Endpoint] = []
        self.stats: dict = {}

    def log(self) -> FlowLog:
        return FlowLog(tuple(self.flows), tuple(self.dns), self.stats, self.sources, tuple(self.endpoints))


class _Unsupported(ValueError):
    """A header of another version of the format."""


def _header(obj: Mapping) -> tuple[int, tuple[str, ...]]:
    """The version and the sources of a header line, of a version in ``READABLE_VERSIONS``."""
    version = obj.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise _Unsupported(f"flow log version {version!r} is not supported (this tool reads {readable})")
    sources = obj.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ValueError("sources: not a list of names")
    return version, tuple(sources)


class SegmentReader:
    """The one reader of the segments of a flow log, fed a line at a time.

    A header line starts a segment (and ends the one before it, incomplete); flow and dns lines
    belong to the open segment (with none open, they start one without a header); a stats line
    ends the open segment, complete when it had its header. ``feed`` and ``close`` return the
    segment a line (or the end) ended, if any.

    ``strict`` (a flow-log file): the first line that is not blank must be a header, blank lines
    are skipped, and any other line that is not a valid flow-log line raises ``FlowLogError``
    naming ``name`` and the line. Every segment is handed over with what it holds, complete or
    not: a file is read whole.

    Lenient (a container log, ``collect``): a line that is not a JSON object of a known ``kind``
    (or a header of another format) is skipped and counted in ``ignored``; a segment of another
    version or with an invalid line is handed over with its ``problem`` and no log; the lines of a
    segment without its header are not read, and up to the next header (whatever stats lines
    they hold) they make one incomplete segment.
    """

    def __init__(self, *, strict: bool = False, name: str = "flow log"):
        self.strict = strict
        self.name = name
        self.lineno = 0
        self.ignored = 0
        self._open: _Open | None = None
        self._headers = 0
        self._line = ""  # the line being read
        self._by_orjson = False  # ... and whether orjson read it (``_loads``)

    def feed(self, line: str) -> Segment | None:
        self.lineno += 1
        self._line = line
        obj = self._strict_line(line) if self.strict else self._lenient_line(line)
        if obj is None:
            return None
        kind = obj["kind"]
        if kind == "header":
            ended = self.close()
            self._open = self._start(obj)
            return ended
        if self._open is None:
            self._open = _Open(headed=False)
        seg = self._open
        if kind == "stats":
            if not seg.headed and not self.strict:
                return None  # unread lines without a header, up to the next one: one incomplete segment
            self._open = None
            if seg.problem is None:
                try:
                    seg.stats = merge_stats({}, self._checked(_counters, obj))
                except ValueError as exc:
                    self._bad(seg, kind, exc)
            if seg.problem is not None:
                return Segment(None, seg.headed, seg.problem)
            return Segment(seg.log(), seg.headed)
        if seg.problem is not None or (not seg.headed and not self.strict):
            return None
        try:
            if kind == "flow":
                seg.flows.append(self._checked(_flow_from_json, obj, seg.version))
            elif kind == "endpoint":
                seg.endpoints.append(self._checked(_endpoint_from_json, obj))
            else:
                seg.dns.append(self._checked(_dns_from_json, obj))
        except _BAD_LINE as exc:
            self._bad(seg, kind, exc)
        return None

    def _checked(self, read, obj: dict, *args):
        """``read(obj, *args)``; where orjson read the line and ``read`` finds it invalid, ``read``
        of the line as ``json`` reads it (the two differ in numbers past 64 bits, which orjson
        reads as floats), whose verdict and words are the ones that count."""
        try:
            return read(obj, *args)
        except _BAD_LINE:
            if not self._by_orjson:
                raise
        return read(json.loads(self._line), *args)

    def close(self) -> Segment | None:
        """End the open segment (at the end of the input): incomplete, if there is one."""
        seg, self._open = self._open, None
        if seg is None:
            return None
        if seg.problem is not None or (not seg.headed and not self.strict):
            return Segment(None, False, seg.problem)
        return Segment(seg.log(), False)

    def _start(self, obj: dict) -> _Open:
        self._headers += 1
        try:
            version, sources = self._checked(_header, obj)
            return _Open(headed=True, sources=sources, version=version)
        except _Unsupported as exc:
            if self.strict:
                raise FlowLogVersionError(f"{self.name}: {exc}") from None
            return _Open(headed=True, problem=str(exc))
        except ValueError as exc:
            seg = _Open(headed=True)
            self._bad(seg, "header", exc)
            return seg

    def _bad(self, seg: _Open, kind: str, exc: BaseException) -> None:
        if self.strict:
            raise FlowLogError(f"{self.name}:{self.lineno}: invalid {kind}: {exc}") from exc
        seg.problem = f"line {self.lineno}: invalid {kind}: {exc}"

    def _strict_line(self, line: str) -> dict | None:
        if not line.strip():
            return None
        try:
            obj, self._by_orjson = _loads(line)
        except json.JSONDecodeError as exc:
            raise FlowLogError(f"{self.name}:{self.lineno}: invalid JSON: {exc.msg}") from exc
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if not self._headers and kind != "header":
            raise FlowLogError(f"{self.name}: not a netpol-learn flow log (no header line)")
        if kind not in _KINDS:
            raise FlowLogError(f"{self.name}:{self.lineno}: unknown line kind {kind!r}")
        if kind == "header" and obj.get("format") != FORMAT:
            raise FlowLogError(f"{self.name}:{self.lineno}: not a netpol-learn flow log header")
        return obj

    def _lenient_line(self, line: str) -> dict | None:
        text = line.strip()
        obj = None
        if text.startswith("{"):
            try:
                obj, self._by_orjson = _loads(text)
            except ValueError:
                pass
        if not isinstance(obj, dict) or obj.get("kind") not in _KINDS or (obj["kind"] == "header" and obj.get("format") != FORMAT):
            self.ignored += 1
            return None
        return obj


def _loads(line: str) -> tuple[object, bool]:
    """``json.loads(line)``, and whether orjson read it: orjson is about twice as fast on flow
    lines, and where it will not read a line (NaN, a lone surrogate, bad JSON) ``json`` does, so
    that every error's words stay those of ``json``. orjson reads one thing otherwise: a number
    past 64 bits, as a float; no line with one is valid unless read by ``json``, so the reader
    reads a line orjson read again with ``json`` before it calls it invalid
    (``SegmentReader._checked``)."""
    try:
        return orjson.loads(line), True
    except orjson.JSONDecodeError:
        return json.loads(line), False


def read_segment(text: str, name: str = "segment") -> FlowLog:
    """The one segment ``text`` holds (a header, its flow and dns lines, a stats line: what
    ``dumps_lines`` writes), read strictly. ``FlowLogError`` when it is not exactly one complete
    segment or a line is invalid; ``FlowLogVersionError`` for another version of the format."""
    reader = SegmentReader(strict=True, name=name)
    segments: list[Segment] = []
    for line in text.splitlines(keepends=True):
        ended = reader.feed(line)
        if ended is not None:
            segments.append(ended)
    if (ended := reader.close()) is not None:
        segments.append(ended)
    if not segments:
        raise FlowLogError(f"{name}: empty, not a flow-log segment")
    if len(segments) > 1:
        raise FlowLogError(f"{name}: {len(segments)} segments; one was expected")
    if not segments[0].complete:
        raise FlowLogError(f"{name}: incomplete segment (no stats line at its end)")
    return segments[0].log


def looks_like_flow_log(first_line: bytes) -> bool:
    """Whether the first line of a file is a flow log's header, at a glance (a sniffer appends
    only to a flow log; it never reads it whole)."""
    return first_line.startswith(b"{") and _FORMAT_MARK in first_line


def last_complete_segment_end(fh: BinaryIO, size: int) -> int:
    """The offset just after the last complete segment of the flow log open in ``fh`` (binary,
    ``size`` bytes long): after its last stats line that was written whole, newline included; 0
    when there is none. Read back from the end, a MiB at a time: the file may have grown for days."""
    pos = size
    tail = b""
    while pos > 0:
        start = max(0, pos - (1 << 20))
        fh.seek(start)
        buf = fh.read(pos - start) + tail
        at = buf.rfind(_STATS_MARK)
        while at >= 0:
            # Only a stats line holds the mark; it is whole when its newline was written.
            end = buf.find(b"\n", at)
            if end >= 0:
                return start + end + 1
            at = buf.rfind(_STATS_MARK, 0, at)
        tail = buf[: buf.find(b"\n") + 1] if b"\n" in buf else buf
        pos = start
    return 0


def _window(o: Mapping) -> tuple[int, int]:
    first_seen, last_seen = _time(o, "first_seen"), _time(o, "last_seen")
    if last_seen < first_seen:
        raise ValueError("last_seen: before first_seen")
    return first_seen, last_seen


def _mappings(o: Mapping, key: str):
    """(index, item) of the list ``o[key]``, each item checked to be a mapping."""
    for i, item in enumerate(_list(o, key)):
        if not isinstance(item, Mapping):
            raise ValueError(f"{key}[{i}]: not a mapping")
        yield i, item


def _flow_from_json(o: dict, version: int = VERSION) -> Flow:
    """A flow line's fields, checked: a ValueError names the field (``src: '999.1.1.1' is not an
    IP address``); the callers add the file and line. A ``version`` 1 line has no evidence and no
    runs: ``observed``, and its one run from first to last seen."""
    # The hot path of every command that reads flow logs: the same checks and messages as the
    # plain way, with the common shapes (empty lists, absent optional fields, one run from first
    # to last seen) taken without the general loops.
    direction = o.get("direction")
    if not isinstance(direction, Mapping):
        raise ValueError("direction: missing" if direction is None else "direction: not a mapping")
    if not direction.keys() <= _DIRECTION_METHODS:
        raise ValueError(f"unknown direction method {sorted(set(direction) - _DIRECTION_METHODS)[0]!r}")
    first_seen, last_seen = _window(o)
    translated = ()
    if o.get("translated", ()) not in _EMPTY:
        found = []
        for i, t in _mappings(o, "translated"):
            found.append(Translation(_address(t, "src", f"translated[{i}]."), _address(t, "dst", f"translated[{i}]."),
                                     _port(t.get("port"), f"translated[{i}].port")))
        translated = tuple(sorted(found, key=translation_sort_key))
    connections = _count(o, "connections")
    evidence, runs = "observed", ((first_seen, last_seen, connections),)
    if version >= 2:
        evidence = _field(o, "evidence", "")
        if evidence not in EVIDENCE:
            raise ValueError(f"evidence: {evidence!r} is not one of {', '.join(EVIDENCE)}")
        runs = _runs(o, first_seen, last_seen, connections)
    return Flow(
        src=_address(o, "src"),
        dst=_address(o, "dst"),
        proto=_protocol(o.get("proto")),
        port=_port(o.get("port", _MISSING), "port"),
        packets=_count(o, "packets"),
        bytes=_count(o, "bytes"),
        connections=connections,
        first_seen=first_seen,
        last_seen=last_seen,
        direction=tuple([(m, _count(direction, m, "direction.")) for m in DIRECTION_METHODS if m in direction]),
        client_ports=() if o.get("client_ports", ()) in _EMPTY else tuple(sorted(
            _port(p, f"client_ports[{i}]", nullable=False) for i, p in enumerate(_list(o, "client_ports")))),
        translated=translated,
        src_pods=() if o.get("src_pods", ()) in _EMPTY else tuple(sorted(set(_strings(o, "src_pods")))),
        dst_pods=() if o.get("dst_pods", ()) in _EMPTY else tuple(sorted(set(_strings(o, "dst_pods")))),
        evidence=evidence,
        runs=runs,
        src_entity="" if "src_entity" not in o else _entity(o, "src_entity"),
        dst_entity="" if "dst_entity" not in o else _entity(o, "dst_entity"),
    )


def _entity(o: Mapping, key: str) -> str:
    value = o.get(key, "")
    if value != "" and (value not in ENTITIES or value == "pod"):
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(e for e in ENTITIES if e != 'pod')}")
    return value


def _labels(o: Mapping, key: str) -> tuple[tuple[str, str], ...]:
    value = o.get(key, {})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{key}: not a mapping of strings")
    return tuple(sorted(value.items()))


def _endpoint_from_json(o: dict) -> Endpoint:
    """An endpoint line's fields, checked as ``_flow_from_json`` checks a flow's."""
    first_seen, last_seen = _window(o)
    entity = o.get("entity")
    if entity not in ENTITIES:
        raise ValueError(f"entity: {entity!r} is not one of {', '.join(ENTITIES)}")
    optional = {k: (_text(o, k) if k in o else "") for k in ("namespace", "pod", "workload", "node")}
    if entity == "pod" and not (optional["namespace"] and optional["pod"]):
        raise ValueError("a pod endpoint needs its namespace and pod")
    return Endpoint(address=_address(o, "address"), entity=entity, first_seen=first_seen, last_seen=last_seen,
                    records=_count(o, "records"), labels=_labels(o, "labels"), namespace_labels=_labels(o, "namespace_labels"),
                    **optional)


def _runs(o: Mapping, first_seen: int, last_seen: int, connections: int) -> tuple[Run, ...]:
    """A version 2 flow line's runs, checked: each ``[first, last, connections]``, together
    spanning exactly first to last seen and adding up to the line's connections."""
    runs = []
    text_first, text_last = o["first_seen"], o["last_seen"]  # read by _window already
    for i, r in enumerate(_list(o, "runs")):
        if not isinstance(r, list) or len(r) != 3:
            raise ValueError(f"runs[{i}]: not [first, last, connections]")
        try:
            # A run that starts or ends with the line is the line's own time text: parsed once.
            a = first_seen if r[0] == text_first and type(r[0]) is str else parse_time(r[0])
            b = last_seen if r[1] == text_last and type(r[1]) is str else parse_time(r[1])
        except (TypeError, ValueError):
            raise ValueError(f"runs[{i}]: {r[0]!r} or {r[1]!r} is not an RFC 3339 UTC time") from None
        if b < a:
            raise ValueError(f"runs[{i}]: ends before it starts")
        n = r[2]
        if type(n) is not int or n < 0:
            raise ValueError(f"runs[{i}]: {n!r} is not a count of connections")
        runs.append((a, b, n))
    if not runs:
        raise ValueError("runs: missing" if "runs" not in o else "runs: empty")
    if min(a for a, _, _ in runs) != first_seen or max(b for _, b, _ in runs) != last_seen:
        raise ValueError("runs: do not span first_seen to last_seen")
    if sum(n for _, _, n in runs) != connections:
        raise ValueError("runs: connections do not add up to the line's")
    return (runs[0],) if len(runs) == 1 else merge_runs(runs)


def _dns_from_json(o: dict) -> DnsObservation:
    """A dns line's fields, checked as ``_flow_from_json`` checks a flow's."""
    first_seen, last_seen = _window(o)
    answers: tuple[DnsAnswer, ...] = ()
    if o.get("answers", ()) not in _EMPTY:  # (as in _flow_from_json: no answers, no loop)
        found = []
        for i, a in _mappings(o, "answers"):
            at = f"answers[{i}]."
            found.append(DnsAnswer(_text(a, "name", at), _text(a, "type", at), _text(a, "data", at), _count(a, "ttl", at)))
        answers = (found[0],) if len(found) == 1 else merge_answers(found)
    return DnsObservation(
        client=_address(o, "client"),
        resolver=_address(o, "resolver"),
        qname=_text(o, "qname"),
        qtype=_text(o, "qtype"),
        queries=_count(o, "queries"),
        responses=_count(o, "responses"),
        first_seen=first_seen,
        last_seen=last_seen,
        answers=answers,
        rcodes=_sorted_strings(o, "rcodes"),
        transports=_sorted_strings(o, "transports"),
    )


def _sorted_strings(o: Mapping, key: str) -> tuple[str, ...]:
    v = _strings(o, key)
    return tuple(v) if len(v) < 2 else tuple(sorted(v))


# Checks of the fields of flow and dns lines: each returns the value or raises ValueError("<field>: <what is wrong>").

_MISSING = object()
_EMPTY = ((), [])  # ``o.get(key, ()) in _EMPTY``: absent or an empty list (no JSON value is a tuple; null is not [])
_DIRECTION_METHODS = frozenset(DIRECTION_METHODS)
_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP", "ICMP", "ICMPv6"})


def is_address(text: str) -> bool:
    """Whether ``text`` is an IP address as the reader takes one in a flow or dns line."""
    return type(text) is str and _address_text(text) is not None


@lru_cache(maxsize=1 << 18)
def _address_text(text: str) -> str | None:
    """``text`` if it is an IP address, else None. A log names few distinct addresses, each in
    many lines: each is parsed once, and the string first seen is the one every line after it
    gets (one object per address: about 100 bytes less per flow than each line's own copy)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def _field(o: Mapping, key: str, at: str):
    v = o.get(key, _MISSING)
    if v is _MISSING:
        raise ValueError(f"{at}{key}: missing")
    return v


def _address(o: Mapping, key: str, at: str = "") -> str:
    v = _field(o, key, at)
    text = _address_text(v) if type(v) is str else None
    if text is None:
        raise ValueError(f"{at}{key}: {v!r} is not an IP address")
    return text


def _protocol(v) -> str:
    if v is None:
        raise ValueError("proto: missing")
    if isinstance(v, str) and (v in _PROTOCOLS or (v[:3] == "IP-" and v[3:].isdigit() and len(v) <= 6 and int(v[3:]) <= 255)):
        return v
    raise ValueError(f"proto: {v!r} is not TCP, UDP, SCTP, ICMP, ICMPv6 or IP-<number>")


def _port(v, where: str, nullable: bool = True) -> int | None:
    if v is _MISSING:
        raise ValueError(f"{where}: missing")
    if v is None and nullable:
        return None
    if type(v) is not int or not 0 <= v <= 65535:  # type(): not a bool
        raise ValueError(f"{where}: {v!r} is not a port number (0-65535)")
    return v


def _count(o: Mapping, key: str, at: str = "") -> int:
    v = _field(o, key, at)
    if type(v) is not int:  # not a bool either
        raise ValueError(f"{at}{key}: {v!r} is not a whole number")
    if v < 0:
        raise ValueError(f"{at}{key}: {v} is negative")
    return v


def _time(o: Mapping, key: str) -> int:
    v = _field(o, key, "")
    try:
        return parse_time(v)
    except ValueError:
        raise ValueError(f"{key}: {v!r} is not an RFC 3339 UTC time") from None


def _text(o: Mapping, key: str, at: str = "") -> str:
    v = _field(o, key, at)
    if not isinstance(v, str):
        raise ValueError(f"{at}{key}: not a string")
    return v


def _list(o: Mapping, key: str) -> list:
    v = o.get(key, [])
    if not isinstance(v, list):
        raise ValueError(f"{key}: not a list")
    return v


def _strings(o: Mapping, key: str) -> list[str]:
    v = _list(o, key)
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise ValueError(f"{key}[{i}]: not a string")
    return v
