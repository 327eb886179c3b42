"""The flow log: what the capture stage writes and every later stage reads.

Plain frozen dataclasses, their JSON Lines form (docs/flow-log.md) and merging. Merging is
associative and commutative: counts add, first/last seen take the min/max, sets unite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from netpol_learn._errors import FlowLogError
from netpol_learn._output import write_text

FORMAT = "netpol-learn/flows"
VERSION = 1

#: Direction methods, strongest evidence first (docs/flow-log.md).
DIRECTION_METHODS = (
    "syn",
    "syn-ack",
    "sctp-init",
    "icmp-echo",
    "dns",
    "port-heuristic",
    "first-packet",
)
HEURISTIC_METHODS = frozenset({"port-heuristic", "first-packet"})
MAX_CLIENT_PORTS = 8


@dataclass(frozen=True, order=True)
class Translation:
    """Another view of a flow's connections, after address translation."""

    src: str
    dst: str
    port: int | None


@dataclass(frozen=True)
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

    @property
    def key(self) -> tuple:
        return (self.src, self.dst, self.proto, self.port)


@dataclass(frozen=True, order=True)
class DnsAnswer:
    name: str
    type: str
    data: str
    ttl: int


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class FlowLog:
    flows: tuple[Flow, ...] = ()
    dns: tuple[DnsObservation, ...] = ()
    stats: Mapping = field(default_factory=dict)
    sources: tuple[str, ...] = ()


# --- merging -------------------------------------------------------------------------------


def _port_sort(port: int | None) -> int:
    return -1 if port is None else port


def _address_sort(address: str) -> tuple:
    return (":" in address, address)


def flow_sort_key(flow: Flow) -> tuple:
    return (_address_sort(flow.src), _address_sort(flow.dst), flow.proto, _port_sort(flow.port))


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
        src_pods=tuple(sorted(set(a.src_pods) | set(b.src_pods))),
        dst_pods=tuple(sorted(set(a.dst_pods) | set(b.dst_pods))),
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


def merge_logs(logs: Iterable[FlowLog]) -> FlowLog:
    flows: dict[tuple, Flow] = {}
    dns: dict[tuple, DnsObservation] = {}
    stats: dict = {}
    sources: set[str] = set()
    for log in logs:
        for f in log.flows:
            flows[f.key] = merge_flow(flows[f.key], f) if f.key in flows else f
        for d in log.dns:
            dns[d.key] = merge_dns(dns[d.key], d) if d.key in dns else d
        stats = merge_stats(stats, log.stats)
        sources.update(log.sources)
    return FlowLog(
        flows=tuple(sorted(flows.values(), key=flow_sort_key)),
        dns=tuple(sorted(dns.values(), key=lambda d: (_address_sort(d.client), _address_sort(d.resolver), d.qname, d.qtype))),
        stats=stats,
        sources=tuple(sorted(sources)),
    )


# --- JSON Lines ----------------------------------------------------------------------------


def format_time(ns: int) -> str:
    """RFC 3339, UTC, microseconds."""
    sec, rem = divmod(int(ns), 1_000_000_000)
    return f"{_format_second(sec)}.{rem // 1000:06d}Z"


@lru_cache(maxsize=4096)
def _format_second(sec: int) -> str:
    # Flows of one capture share few distinct seconds: formatting each once saves most of the cost.
    return datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(text: str) -> int:
    try:
        dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}") from exc
    return (int(dt.timestamp()) * 1_000_000 + dt.microsecond) * 1000


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
    }
    # Optional: only the live sniffer knows them, and only when it can reach the API.
    if f.src_pods:
        out["src_pods"] = list(f.src_pods)
    if f.dst_pods:
        out["dst_pods"] = list(f.dst_pods)
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


def dumps_lines(log: FlowLog) -> Iterable[str]:
    def line(obj: dict) -> str:
        return json.dumps(obj, sort_keys=True, separators=(", ", ": ")) + "\n"

    yield line({"kind": "header", "format": FORMAT, "version": VERSION, "sources": list(log.sources)})
    for f in log.flows:
        yield line(flow_to_json(f))
    for d in log.dns:
        yield line(dns_to_json(d))
    yield line({"kind": "stats", **log.stats})


def write_flow_log(log: FlowLog, path: str | os.PathLike | None) -> None:
    """Write the log to ``path`` by the one writer's rules (``netpol_learn._output``: a regular
    file is replaced atomically, a device or FIFO written directly); None or '-' is stdout."""
    write_text("-" if path is None else path, dumps_lines(log))


def read_flow_log(path: str | os.PathLike) -> FlowLog:
    """Read a flow log written by ``write_flow_log`` (or by the sniffer)."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise FlowLogError(f"cannot read flow log {path}: {exc.strerror or exc}") from exc
    flows: list[Flow] = []
    dns: list[DnsObservation] = []
    stats: dict = {}
    sources: tuple[str, ...] = ()
    with fh:
        lineno = 0
        try:
            for lineno, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                obj = json.loads(text)
                kind = obj.get("kind") if isinstance(obj, dict) else None
                if lineno == 1 and kind != "header":
                    raise FlowLogError(f"{path}: not a netpol-learn flow log (no header line)")
                if kind == "header":
                    # A sniffer writes one complete log per interval: each header starts a segment,
                    # and the segments merge like separate logs.
                    if obj.get("format") != FORMAT:
                        raise FlowLogError(f"{path}:{lineno}: not a netpol-learn flow log header")
                    if obj.get("version") != VERSION:
                        raise FlowLogError(f"{path}: flow log version {obj.get('version')!r} is not supported (this tool reads {VERSION})")
                    sources = tuple(sorted(set(sources) | set(obj.get("sources", ()))))
                elif kind == "flow":
                    flows.append(_flow_from_json(obj))
                elif kind == "dns":
                    dns.append(_dns_from_json(obj))
                elif kind == "stats":
                    stats = merge_stats(stats, {k: v for k, v in obj.items() if k != "kind"})
                else:
                    raise FlowLogError(f"{path}:{lineno}: unknown line kind {kind!r}")
        except FlowLogError:
            raise
        except UnicodeDecodeError as exc:
            raise FlowLogError(f"{path}: not a text file") from exc
        except json.JSONDecodeError as exc:
            raise FlowLogError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FlowLogError(f"{path}:{lineno}: invalid {kind or 'line'}: {exc}") from exc
        if lineno == 0:
            raise FlowLogError(f"{path}: empty file, not a flow log")
    return merge_logs([FlowLog(tuple(flows), tuple(dns), stats, sources)])


def _flow_from_json(o: dict) -> Flow:
    direction = o["direction"]
    unknown = set(direction) - set(DIRECTION_METHODS)
    if unknown:
        raise ValueError(f"unknown direction method {sorted(unknown)[0]!r}")
    return Flow(
        src=str(o["src"]),
        dst=str(o["dst"]),
        proto=str(o["proto"]),
        port=None if o["port"] is None else int(o["port"]),
        packets=int(o["packets"]),
        bytes=int(o["bytes"]),
        connections=int(o["connections"]),
        first_seen=parse_time(o["first_seen"]),
        last_seen=parse_time(o["last_seen"]),
        direction=tuple((m, int(direction[m])) for m in DIRECTION_METHODS if m in direction),
        client_ports=tuple(sorted(int(p) for p in o.get("client_ports", ()))),
        translated=tuple(
            sorted(
                (Translation(str(t["src"]), str(t["dst"]), None if t["port"] is None else int(t["port"])) for t in o.get("translated", ())),
                key=translation_sort_key,
            )
        ),
        src_pods=tuple(sorted({str(p) for p in o.get("src_pods", ())})),
        dst_pods=tuple(sorted({str(p) for p in o.get("dst_pods", ())})),
    )


def _dns_from_json(o: dict) -> DnsObservation:
    return DnsObservation(
        client=str(o["client"]),
        resolver=str(o["resolver"]),
        qname=str(o["qname"]),
        qtype=str(o["qtype"]),
        queries=int(o["queries"]),
        responses=int(o["responses"]),
        first_seen=parse_time(o["first_seen"]),
        last_seen=parse_time(o["last_seen"]),
        answers=merge_answers(DnsAnswer(str(a["name"]), str(a["type"]), str(a["data"]), int(a["ttl"])) for a in o.get("answers", ())),
        rcodes=tuple(sorted(str(r) for r in o.get("rcodes", ()))),
        transports=tuple(sorted(str(t) for t in o.get("transports", ()))),
    )
