"""Learning status: is the rule set still changing, or is learning done?

    flow log + inventory + resolution  ->  Status  ->  text / markdown / JSON (and the chart, _chart)

An **edge** is one rule's worth of traffic: a workload's distinct (peer, direction, protocol, port),
the peer being another workload, or an address outside the cluster, a node, a Service endpoint
(each an ``ipBlock``). A workload's **last new edge** is the latest first-seen time among its edges.
Its verdict follows Calico Enterprise's policy recommendation (Learning -> Stabilizing -> Stable):

- ``stable``: no new edge for ``stable_after`` (default 24 h) before the end of the capture;
- ``stabilizing``: none for at least half of that;
- ``learning``: otherwise (a new edge came within half of ``stable_after``, or the capture is
  shorter than that).

The cluster's verdict is its least settled workload's (``learning`` when no workload was seen).
Besides: workloads whose pods ran the whole capture but never showed up in traffic; workloads that
are ``partial`` (pods older than the capture, every connection of theirs open before it began:
what they open has not been seen); attempts that are no need (refused, unanswered, stale, dropped);
attributions made by inference; outside names whose addresses changed during the capture (an
``ipBlock`` for such a name goes stale). Everything here is pure and deterministic
(docs/learning.md).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

from netpol_learn._flowlog import FlowLog
from netpol_learn._inventory import PROTOCOLS, Inventory
from netpol_learn._resolve import EXTERNAL, POD, UNRESOLVED, Connection, Resolution, peer_label
from netpol_learn._text import counted
from netpol_learn._time import format_time

LEARNING, STABILIZING, STABLE = "learning", "stabilizing", "stable"
#: The verdicts, least settled first.
VERDICTS = (LEARNING, STABILIZING, STABLE)
#: How long no new edge must have appeared before the end of the capture for ``stable``.
DEFAULT_STABLE_AFTER = 24 * 3600 * 10**9
INGRESS, EGRESS = "ingress", "egress"
_SECOND = 10**9
#: Closer than this to the capture's start or end counts as "at" it.
_AT = 60 * _SECOND


@dataclass(frozen=True, order=True)
class Edge:
    """One rule's worth of a workload's traffic: a peer, a direction, a protocol and a port."""

    direction: str  # ingress: the peer is the client; egress: the peer is the server
    peer: str  # as ``peer_label`` names it: ``shop/Deployment/api``, ``external 140.82.112.3``
    protocol: str
    port: int | None  # the server's own port
    first_seen: int  # ns
    last_seen: int
    connections: int
    mid_stream: bool = False  # every connection of it was open before the capture began
    inferred: bool = False  # an end of it was attributed by inference between snapshots


@dataclass(frozen=True)
class WorkloadStatus:
    """What the capture showed of one workload, and whether its rules still change."""

    namespace: str
    workload: str  # "Deployment/api"
    verdict: str  # one of VERDICTS
    first_seen: int  # ns: its first traffic ...
    last_seen: int  # ... and its last
    connections: int
    edges: tuple[Edge, ...]
    last_new_edge: int | None  # ns: the latest first_seen of its edges; None without edges
    quiet: int  # ns without a new edge before the end of the capture
    partial: bool = False  # pods older than the capture, and every connection open before it

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.workload}"


@dataclass(frozen=True)
class AddressSeen:
    """One address a DNS name answered with, and when: answered (DNS) and used (traffic)."""

    address: str
    type: str  # A or AAAA
    answered: tuple[int, int] | None  # (first, last) ns of the DNS lines that answered it
    used: tuple[int, int] | None  # (first, last) ns of the traffic to it


@dataclass(frozen=True)
class NameChange:
    """An outside name whose addresses changed during the capture: its ipBlock goes stale."""

    name: str
    addresses: tuple[AddressSeen, ...]  # by when they were first seen


@dataclass(frozen=True)
class Status:
    """The learning status of a capture (``learning_status``)."""

    capture_start: int | None  # ns: the earliest first_seen of the flow log's flow and dns lines
    capture_end: int | None  # ns: the latest last_seen
    stable_after: int  # ns
    verdict: str  # the cluster's: its least settled workload's
    workloads: tuple[WorkloadStatus, ...]  # by namespace and workload
    never_seen: tuple[tuple[str, str], ...] = ()  # (namespace, workload): ran the whole capture, no traffic
    attempts: tuple[tuple[str, str, str, int | None, str, int], ...] = ()  # the report's
    inferred: tuple[tuple[str, str, int], ...] = ()  # the report's: (peer, address, flows)
    dns_changes: tuple[NameChange, ...] = ()

    @property
    def namespaces(self) -> dict[str, str]:
        """Namespace -> its verdict (its least settled workload's), sorted by name."""
        out: dict[str, str] = {}
        for w in self.workloads:
            out[w.namespace] = _least_settled((out.get(w.namespace, STABLE), w.verdict))
        return out

    @property
    def edges(self) -> int:
        return sum(len(w.edges) for w in self.workloads)

    def counts(self) -> dict[str, int]:
        """Workloads per verdict, in VERDICTS order."""
        return {v: sum(1 for w in self.workloads if w.verdict == v) for v in VERDICTS}


def _least_settled(verdicts) -> str:
    return min(verdicts, key=VERDICTS.index, default=LEARNING)


def verdict_of(quiet: int, stable_after: int) -> str:
    """The verdict for ``quiet`` ns without a new edge before the end of the capture."""
    if quiet >= stable_after:
        return STABLE
    if 2 * quiet >= stable_after:
        return STABILIZING
    return LEARNING


def capture_window(log: FlowLog) -> tuple[int, int] | None:
    """(earliest first_seen, latest last_seen) over the log's flow and dns lines; None when empty."""
    times = [(f.first_seen, f.last_seen) for f in log.flows] + [(d.first_seen, d.last_seen) for d in log.dns]
    if not times:
        return None
    return min(a for a, _ in times), max(b for _, b in times)


def learning_status(log: FlowLog, inventory: Inventory, resolution: Resolution,
                    stable_after_ns: int = DEFAULT_STABLE_AFTER) -> Status:
    """Per workload: its observed window, connections, edges, last new edge and verdict; the
    workloads never seen, the partial ones, the attempts and inferences of the report and the
    outside names whose addresses changed. ``resolution`` is ``resolve(log, inventory)``."""
    if stable_after_ns <= 0:
        raise ValueError("stable_after must be longer than 0 seconds")
    window = capture_window(log)
    start, end = window if window else (None, None)
    by_workload: dict[tuple[str, str], list[tuple[str, Connection]]] = defaultdict(list)
    for c in resolution.connections:
        if c.client.kind == POD:
            by_workload[(c.client.namespace, c.client.workload)].append((EGRESS, c))
        if c.server.kind == POD:
            by_workload[(c.server.namespace, c.server.workload)].append((INGRESS, c))
    pods = {p.key: p for p in inventory.pods}
    workloads = []
    for key in sorted(by_workload, key=lambda k: (k[0] or "", k[1] or "")):
        workloads.append(_workload(key, by_workload[key], resolution, pods, start, end, stable_after_ns))
    verdict = _least_settled(w.verdict for w in workloads) if workloads else LEARNING
    return Status(
        capture_start=start,
        capture_end=end,
        stable_after=stable_after_ns,
        verdict=verdict,
        workloads=tuple(workloads),
        never_seen=_never_seen(resolution, pods, set(by_workload), start, end),
        attempts=tuple(sorted(resolution.report.attempts, key=_attempt_key)),
        inferred=tuple(sorted(resolution.report.inferred)),
        dns_changes=_dns_changes(log, resolution),
    )


def _attempt_key(a: tuple) -> tuple:
    client, server, proto, port, evidence, n = a
    return (client, server, proto, -1 if port is None else port, evidence, n)


def _workload(key, seen: list[tuple[str, Connection]], resolution: Resolution, pods, start, end, stable_after: int) -> WorkloadStatus:
    namespace, ref = key
    edges: dict[tuple, list] = {}
    for direction, c in seen:
        if c.same_node or c.protocol not in PROTOCOLS:
            continue  # kubelet probes need no rule; ICMP and the like cannot be one
        peer = c.server if direction == EGRESS else c.client
        if peer.kind == UNRESOLVED:
            continue  # never a rule (the resolution report lists it)
        k = (direction, peer_label(peer), c.protocol, c.port)
        acc = edges.get(k)
        if acc is None:
            edges[k] = [c.first_seen, c.last_seen, c.connections, c.mid_stream, c.inferred]
        else:
            acc[0] = min(acc[0], c.first_seen)
            acc[1] = max(acc[1], c.last_seen)
            acc[2] += c.connections
            acc[3] = acc[3] and c.mid_stream
            acc[4] = acc[4] or c.inferred
    edge_list = tuple(sorted((Edge(d, p, proto, port, *acc) for (d, p, proto, port), acc in edges.items()),
                             key=lambda e: (e.direction, e.peer, e.protocol, -1 if e.port is None else e.port)))
    last_new = max((e.first_seen for e in edge_list), default=None)
    quiet = end - (last_new if last_new is not None else start)
    conns = {id(c): c for _, c in seen}.values()  # a workload talking to itself: one connection, two edges
    workload = resolution.workloads.get(key)
    its_pods = [pods[(namespace, name)] for name in (workload.pods if workload else ()) if (namespace, name) in pods]
    partial = bool(conns) and all(c.mid_stream for c in conns) and any(p.start is None or p.start < start for p in its_pods)
    return WorkloadStatus(
        namespace=namespace,
        workload=ref,
        verdict=verdict_of(quiet, stable_after),
        first_seen=min(c.first_seen for c in conns),
        last_seen=max(c.last_seen for c in conns),
        connections=sum(c.connections for c in conns),
        edges=edge_list,
        last_new_edge=last_new,
        quiet=quiet,
        partial=partial,
    )


def _never_seen(resolution: Resolution, pods, seen: set, start, end) -> tuple[tuple[str, str], ...]:
    """Workloads not in any traffic, with a pod (not host-network: those are their node's
    addresses) that ran from before the capture began until after it ended."""
    if start is None:
        return ()
    out = []
    for key, w in sorted(resolution.workloads.items()):
        if key in seen:
            continue
        for name in w.pods:
            p = pods.get((w.namespace, name))
            if p is not None and not p.host_network and p.ips and (p.start is None or p.start <= start) and (p.end is None or p.end >= end):
                out.append(key)
                break
    return tuple(out)


def _canon(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _widen(span: tuple[int, int] | None, first: int, last: int) -> tuple[int, int]:
    return (first, last) if span is None else (min(span[0], first), max(span[1], last))


def _dns_changes(log: FlowLog, resolution: Resolution) -> tuple[NameChange, ...]:
    """Names whose A/AAAA answers changed during the capture, among those whose addresses traffic
    reached as outside servers: the DNS lines of the name disagree on its addresses of one type,
    or the traffic to two of them was in periods apart (one's last before the other's first)."""
    used: dict[str, tuple[int, int]] = {}
    for c in resolution.connections:
        if c.server.kind == EXTERNAL:
            address = _canon(c.server.address)
            used[address] = _widen(used.get(address), c.first_seen, c.last_seen)
    answered: dict[str, dict[tuple[str, str], tuple[int, int]]] = defaultdict(dict)  # name -> (type, address) -> span
    answer_sets: dict[tuple[str, str], set[frozenset[str]]] = defaultdict(set)  # (name, type) -> the sets seen
    for obs in log.dns:
        by_type: dict[str, set[str]] = defaultdict(set)
        for a in obs.answers:
            if a.type in ("A", "AAAA"):
                by_type[a.type].add(_canon(a.data))
        for rtype, addresses in by_type.items():
            answer_sets[(obs.qname, rtype)].add(frozenset(addresses))
            for address in addresses:
                k = (rtype, address)
                answered[obs.qname][k] = _widen(answered[obs.qname].get(k), obs.first_seen, obs.last_seen)
    out = []
    for name in sorted(answered):
        spans = answered[name]
        if not any(address in used for _, address in spans):
            continue  # no traffic to it: no ipBlock
        changed = False
        for rtype in sorted({t for t, _ in spans}):
            if len(answer_sets[(name, rtype)]) > 1:
                changed = True
            windows = [used[a] for t, a in spans if t == rtype and a in used]
            if any(x[1] < y[0] for x in windows for y in windows):
                changed = True
        if changed:
            seen = [AddressSeen(address, rtype, span, used.get(address)) for (rtype, address), span in spans.items()]
            seen.sort(key=lambda s: (min(s.answered[0], s.used[0] if s.used else s.answered[0]), s.type, _address_key(s.address)))
            out.append(NameChange(name, tuple(seen)))
    return tuple(out)


def _address_key(address: str) -> tuple:
    try:
        ip = ipaddress.ip_address(address)
        return (ip.version, int(ip))
    except ValueError:
        return (9, address)


# --- output ------------------------------------------------------------------------------------


def duration_text(ns: int) -> str:
    """A duration for a person: ``45s``, ``15m``, ``3h 5m``, ``2d 4h``."""
    s = max(0, ns) // _SECOND
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d {h}h" if h else f"{d}d"
    if h:
        return f"{h}h {m}m" if m else f"{h}h"
    if m:
        return f"{m}m"
    return f"{sec}s"


def when_text(ns: int | None, seconds: bool = True) -> str:
    """A time for a person: ``2025-06-01 10:00:00`` (UTC; without ``seconds``, ``2025-06-01 10:00``)."""
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns // _SECOND, timezone.utc).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def observed_text(status: Status, w: WorkloadStatus) -> str:
    """How a workload's traffic sits in the capture: ``whole capture``, ``from start+2h``,
    ``until end-5h``, ``start+2h .. end-5h``."""
    began = w.first_seen - status.capture_start
    ended = status.capture_end - w.last_seen
    left = "start" if began < _AT else f"start+{duration_text(began)}"
    right = "end" if ended < _AT else f"end-{duration_text(ended)}"
    if left == "start" and right == "end":
        return "whole capture"
    return f"{left} .. {right}"


def _port(protocol: str, port: int | None) -> str:
    return protocol if port is None else f"{protocol}/{port}"


def _summary(status: Status) -> str:
    if status.capture_start is None:
        return "no traffic in the flow logs: learning has not begun"
    counts = status.counts()
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    return (f"{counted(len(status.workloads), 'workload')} ({', '.join(parts) or 'none'}), "
            f"{counted(status.edges, 'edge')}; stable after {duration_text(status.stable_after)} without a new edge")


def _capture_line(status: Status) -> str:
    if status.capture_start is None:
        return "Capture: none"
    return (f"Capture: {when_text(status.capture_start)} .. {when_text(status.capture_end)} UTC "
            f"({duration_text(status.capture_end - status.capture_start)})")


def _sections(status: Status) -> list[tuple[str, list[list[str]]]]:
    """(title, items) of what needs a person's attention beside the table; an item is its line
    and the lines under it."""
    partial = [w for w in status.workloads if w.partial]
    changes = []
    for change in status.dns_changes:
        under = []
        for a in change.addresses:
            answered = f"answered {when_text(a.answered[0])} .. {when_text(a.answered[1])}" if a.answered else "never answered"
            used = f"traffic {when_text(a.used[0])} .. {when_text(a.used[1])}" if a.used else "no traffic"
            under.append(f"{a.address} ({a.type}): {answered}; {used}")
        changes.append([change.name, *under])
    return [
        ("Workloads never seen in traffic (their pods ran the whole capture)", [[f"{ns}/{w}"] for ns, w in status.never_seen]),
        ("Partial workloads (every connection was open before the capture began: what they open is not known)", [[f"{w.label}  {counted(len(w.edges), 'edge')}"] for w in partial]),
        ("Attempts that are no need (refused, unanswered, stale, dropped: never a rule)",
         [[f"{c} -> {s} {_port(p, port)}  {evidence}  {counted(n, 'connection')}"] for c, s, p, port, evidence, n in status.attempts]),
        ("Attributions inferred between snapshots", [[f"{peer}  {address}  {counted(n, 'flow')}"] for peer, address, n in status.inferred]),
        ("Outside names whose addresses changed (an ipBlock for them goes stale)", changes),
    ]


def _rows(status: Status) -> list[list[str]]:
    return [
        [w.namespace, w.workload, w.verdict + (" (partial)" if w.partial else ""), observed_text(status, w),
         str(len(w.edges)), str(w.connections), when_text(w.last_new_edge, seconds=False), duration_text(w.quiet)]
        for w in status.workloads
    ]


_HEADERS = ["Namespace", "Workload", "Verdict", "Observed", "Edges", "Connections", "Last new edge", "Quiet for"]
_STYLE = {LEARNING: "red", STABILIZING: "yellow", STABLE: "green"}


def status_text(status: Status, *, width: int | None = None, color: bool = False) -> str:
    """The status for a terminal: the verdict, a table of the workloads (rich) and what needs
    attention. ``width``: the terminal's, to fit the table in (else no line is wrapped); with
    ``color``, ANSI colours. The same status gives the same text."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 1 << 14, color_system="standard" if color else None, force_terminal=color,
                      highlight=False, emoji=False, markup=False, legacy_windows=False, soft_wrap=False)
    headline = Text("Learning status: ")
    headline.append(status.verdict, style=f"bold {_STYLE[status.verdict]}")
    headline.append(f"  ({_summary(status)})")
    console.print(headline, soft_wrap=True)
    console.print(Text(_capture_line(status)), soft_wrap=True)
    if status.workloads:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, h in enumerate(_HEADERS):
            table.add_column(h, justify="right" if h in ("Edges", "Connections") else "left", no_wrap=i < 3 or width is None)
        for w, row in zip(status.workloads, _rows(status)):
            cells = [Text(c) for c in row]
            cells[2].stylize(_STYLE[w.verdict])
            table.add_row(*cells)
        console.print(table)
    for title, items in _sections(status):
        console.print(Text(f"{title} ({len(items)}):" if items else f"{title}: none"), soft_wrap=True)
        for first, *under in items:
            console.print(Text(f"  {first}"), soft_wrap=True)
            for line in under:
                console.print(Text(f"    {line}"), soft_wrap=True)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def status_markdown(status: Status, level: int = 1, chart: str | None = None) -> str:
    """The status in Markdown, its heading at ``level`` (REPORT.md puts it at 2); ``chart``: the
    path of the chart image to show under the heading."""
    h = "#" * level
    lines = [f"{h} Learning status", ""]
    lines += [f"**{status.verdict}**: {_summary(status)}.", ""]
    lines += [f"{_capture_line(status)}.", ""]
    if chart:
        lines += [f"![New edges over time]({chart})", ""]
    if status.workloads:
        lines += ["| " + " | ".join(_HEADERS) + " |", "|" + "|".join("---:" if h in ("Edges", "Connections") else "---" for h in _HEADERS) + "|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in _rows(status)]
        lines.append("")
    for title, items in _sections(status):
        lines += [f"{h}# {title}", ""]
        for first, *under in items:
            lines.append(f"- {_md(first)}")
            lines += [f"  - {_md(line)}" for line in under]
        lines += ["None.", ""] if not items else [""]
    return "\n".join(lines)


def _span_json(span: tuple[int, int] | None):
    return None if span is None else {"first": format_time(span[0]), "last": format_time(span[1])}


def status_to_json(status: Status) -> dict:
    """The status as ``netpol-learn status --format json`` writes it (times RFC 3339, durations
    in whole seconds)."""
    def workload(w: WorkloadStatus) -> dict:
        return {
            "workload": w.workload,
            "verdict": w.verdict,
            "partial": w.partial,
            "first_seen": format_time(w.first_seen),
            "last_seen": format_time(w.last_seen),
            "seconds_after_capture_start": (w.first_seen - status.capture_start) // _SECOND,
            "seconds_before_capture_end": (status.capture_end - w.last_seen) // _SECOND,
            "connections": w.connections,
            "last_new_edge": format_time(w.last_new_edge) if w.last_new_edge is not None else None,
            "quiet_seconds": w.quiet // _SECOND,
            "edges": [
                {"direction": e.direction, "peer": e.peer, "protocol": e.protocol, "port": e.port,
                 "first_seen": format_time(e.first_seen), "last_seen": format_time(e.last_seen),
                 "connections": e.connections, "mid_stream": e.mid_stream, "inferred": e.inferred}
                for e in w.edges
            ],
        }

    namespaces = status.namespaces
    return {
        "verdict": status.verdict,
        "stable_after_seconds": status.stable_after // _SECOND,
        "capture": None if status.capture_start is None else {
            "start": format_time(status.capture_start), "end": format_time(status.capture_end),
            "seconds": (status.capture_end - status.capture_start) // _SECOND,
        },
        "counts": status.counts(),
        "edges": status.edges,
        "namespaces": [
            {"namespace": ns, "verdict": verdict, "workloads": [workload(w) for w in status.workloads if w.namespace == ns]}
            for ns, verdict in namespaces.items()
        ],
        "never_seen": [{"namespace": ns, "workload": w} for ns, w in status.never_seen],
        "attempts": [{"client": c, "server": s, "protocol": p, "port": port, "evidence": e, "connections": n}
                     for c, s, p, port, e, n in status.attempts],
        "inferred": [{"peer": peer, "address": a, "flows": n} for peer, a, n in status.inferred],
        "dns_changes": [
            {"name": c.name, "addresses": [{"address": a.address, "type": a.type, "answered": _span_json(a.answered),
                                            "traffic": _span_json(a.used)} for a in c.addresses]}
            for c in status.dns_changes
        ],
    }
