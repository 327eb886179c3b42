"""Flow records from Hubble (Cilium's flow observer) to a flow log.

    lines (``hubble observe -o json`` / ``-o jsonpb``, the exporter's files: one
    ``{"flow": {...}}`` per line, or bare flow objects)  ->  HubbleReader  ->  FlowLog

A flow record is one packet event seen at one observation point, with Cilium's verdict and the
identities of both ends. The reader turns each counted record into one row of the capture's
``Packets`` and feeds the capture's own ``Aggregator``, so connections, the direction decision,
the evidence classes, runs and merging are exactly a packet capture's (docs/flow-log.md, "Flow
records"). What differs:

* direction: a record's reply flag (``is_reply``; ``reply: true`` before Cilium 1.10, which left
  out ``false``, so that a record with a ``traffic_direction`` and no flag is a request) is the
  method ``flow-record``; TCP flags give ``syn``/``syn-ack``; L7 DNS requests and responses give
  ``dns``; a record with none of these (seen ``TO_OVERLAY``) is decided like a mid-stream packet;
* identity: the pod (namespace, name, labels, workload) or reserved entity each end had then goes
  into the flows (``src_pods``/``dst_pods``, ``src_entity``/``dst_entity``) and into ``endpoint``
  lines, so that resolution prefers it and can do without an inventory;
* left out: Cilium's health checks (``reserved:health``), the L7 proxy's own connections to the
  upstream (their source has a pod's labels but no namespace: the proxy's address; the client's
  connection to the proxy is the one counted), the DNS proxy's forwarding of the pods' lookups
  (from ``reserved:host``/``remote-node`` to port 53, when the input shows the DNS proxy at
  work), and records of other verdicts (``ERROR``, ``TRANSLATED``);
* records are held back a chunk at a time (``CHUNK``): a proxy leg or DNS-proxy forward is known
  from the records so far, so a reply that comes a chunk before its request would count;
* ``DROPPED`` records are flows of their own with evidence ``dropped`` (blocked today, reported,
  never a rule), unless ``include_dropped``;
* L7 DNS records become dns lines with their answers; records carry no sizes (``bytes`` is 0) and
  ``packets`` counts records.

The per-record work is a Python loop over parsed JSON (the records are JSON text: ``json.loads``
is the cost), feeding numpy columns in chunks.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from netpol_learn._capture import _decode as d
from netpol_learn._capture._aggregate import Aggregator
from netpol_learn._capture._dns import RCODES
from netpol_learn._capture._dnscount import DnsAcc
from netpol_learn._flowlog import Endpoint, FlowLog, merge_logs
from netpol_learn._policy import NAMESPACE_LABEL
from netpol_learn._time import parse_ns_time

#: Records per chunk fed to the aggregator.
CHUNK = 65536
#: Verdicts whose records are evidence of traffic the network let through.
PASSED = frozenset({"FORWARDED", "REDIRECTED", "AUDIT", "TRACED"})
#: Keys of the responses ``hubble observe -o json`` writes besides flows (GetFlowsResponse).
_OTHER_RESPONSES = ("node_status", "lost_events", "agent_event", "debug_event")
_FLOW_KEYS = frozenset({"IP", "l4", "verdict", "source", "destination", "Type", "event_type"})
_ENTITIES = {"reserved:kube-apiserver": "kube-apiserver", "reserved:host": "host", "reserved:remote-node": "remote-node",
             "reserved:world": "world", "reserved:world-ipv4": "world", "reserved:world-ipv6": "world"}
_ENTITY_ORDER = ("kube-apiserver", "host", "remote-node", "world")  # "world" is not written (_flowlog.ENTITIES)
_ECHO = {("ICMPv4", 8): True, ("ICMPv4", 0): False, ("ICMPv6", 128): True, ("ICMPv6", 129): False}
_L4 = {"TCP": d.TCP, "UDP": d.UDP, "SCTP": d.SCTP, "ICMPv4": d.ICMP, "ICMPv6": d.ICMPV6}
TCP_FLAG_BITS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "ECE": 0x40, "CWR": 0x80}


def looks_like_flow_records(first_line: bytes | str) -> bool:
    """Whether the first line of an input is a Hubble record: a JSON object holding a flow (or
    another of ``hubble observe``'s responses), or a bare flow object."""
    try:
        obj = json.loads(first_line)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and (isinstance(obj.get("flow"), dict) or any(k in obj for k in _OTHER_RESPONSES)
                                      or len(_FLOW_KEYS & obj.keys()) >= 3)


@dataclass(frozen=True)
class _Identity:
    entity: str  # "pod", an entity of _ENTITIES, "health", "proxy" (a pod's labels, no namespace), or ""
    namespace: str = ""
    pod: str = ""
    labels: tuple = ()
    namespace_labels: tuple = ()
    workload: str = ""
    local: bool = False  # an endpoint of the node that observed the record


@lru_cache(maxsize=65536)
def _identity(labels: tuple, namespace: str, pod: str, workload: str, local: bool) -> _Identity:
    reserved = {lab for lab in labels if lab.startswith("reserved:")}
    if "reserved:health" in reserved:
        return _Identity("health")
    own, ns_labels, ns_from_labels = [], [], ""
    for lab in labels:
        if not lab.startswith("k8s:"):
            continue
        key, _, value = lab[4:].partition("=")
        if key == "io.kubernetes.pod.namespace":
            ns_from_labels = value
        elif key.startswith("io.cilium.k8s.namespace.labels."):
            ns_labels.append((key[len("io.cilium.k8s.namespace.labels."):], value))
        elif not key.startswith("io.cilium."):
            own.append((key, value))
    if pod and (namespace or ns_from_labels):
        # A pod by name, even where the labels say world: the L7 proxy's records lose the identity.
        ns = namespace or ns_from_labels
        return _Identity("pod", ns, pod, tuple(sorted(own)), tuple(sorted({**dict(ns_labels), NAMESPACE_LABEL: ns}.items())),
                         workload, local)
    entities = {_ENTITIES[r] for r in reserved if r in _ENTITIES}
    for entity in _ENTITY_ORDER:
        if entity in entities:
            return _Identity(entity, local=local)
    if not namespace and ns_from_labels and not pod:
        return _Identity("proxy")
    return _Identity("")


def _endpoint_identity(e) -> _Identity:
    if not isinstance(e, Mapping):
        return _Identity("")
    labels = e.get("labels") or ()
    workloads = e.get("workloads") or ()
    workload = ""
    if isinstance(workloads, list) and workloads and isinstance(workloads[0], Mapping):
        w = workloads[0]
        if isinstance(w.get("kind"), str) and isinstance(w.get("name"), str) and w["kind"] and w["name"]:
            workload = f"{w['kind']}/{w['name']}"
    ns, pod = e.get("namespace"), e.get("pod_name")
    return _identity(tuple(x for x in labels if isinstance(x, str)) if isinstance(labels, list) else (),
                     ns if isinstance(ns, str) else "", pod if isinstance(pod, str) else "", workload, bool(e.get("ID")))


@lru_cache(maxsize=65536)
def _address(text) -> tuple[int, int, str] | None:
    """(high, low) 64 bits of an address as the capture holds it (IPv4 as ::ffff:a.b.c.d), and its
    text as the flow log writes it; None when not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except (ValueError, TypeError):
        return None
    if ip.version == 4:
        return 0, 0xFFFF00000000 | int(ip), str(ip)
    v = int(ip)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF, ip.compressed



class HubbleReader:
    """Reads the records of one input (``feed`` each line, then ``result``): the flow log of its
    counted records, with their identities and DNS, its ``sources`` ``(source,)``."""

    def __init__(self, source: str, include_dropped: bool = False):
        self.source = source
        self.include_dropped = include_dropped
        self.lineno = 0
        self.stats: dict[str, int] = defaultdict(int)
        self.warnings: list[str] = []  # what ``damage`` said, for the caller to report
        self.aggregators = {"passed": Aggregator(0), "dropped": Aggregator(0)}
        # Held back a chunk at a time (CHUNK records): which connections are the proxies' own,
        # and whether the DNS proxy is at work, are known from the records so far.
        self.records: list[tuple] = []  # (kind, ts, src, dst, proto, sport, dport, flags, ev_src, ev_dst, src id, dst id, observer)
        self.proxy_legs: set[tuple] = set()
        self.dns_proxy_seen = False
        self.dns: dict[tuple, DnsAcc] = {}  # (client, resolver, qname, qtype)
        self.endpoints: dict[tuple, list] = {}  # endpoint key -> [first, last, records, node]
        self._fingerprint = 0

    # --- per line ----------------------------------------------------------------------------

    def feed(self, line: str | bytes) -> None:
        self.lineno += 1
        if not line.strip():
            return
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self.damage(f"line {self.lineno} is not JSON ({getattr(exc, 'msg', exc)}); skipped")
            return
        if not isinstance(obj, dict):
            self.damage(f"line {self.lineno} is not a JSON object; skipped")
            return
        flow = obj.get("flow") if "flow" in obj else (obj if _FLOW_KEYS & obj.keys() else None)
        if flow is None:
            lost = obj.get("lost_events")
            if isinstance(lost, Mapping):
                self.stats["flow_records_lost"] += _int(lost.get("num_events_lost")) or 0
            self.stats["flow_records_other"] += 1
            return
        if not isinstance(flow, Mapping):
            self.damage(f"line {self.lineno}: flow is not an object; skipped")
            return
        self.stats["flow_records"] += 1
        self._record(flow, obj)

    def damage(self, message: str) -> None:
        """Record what was wrong with the input (a warning naming the source)."""
        self.warnings.append(f"{self.source}: {message}")

    def _record(self, flow: Mapping, outer: Mapping) -> None:
        ts = parse_ns_time(flow.get("time", outer.get("time")))
        ip = flow.get("IP")
        l4 = flow.get("l4")
        if ts is None or not isinstance(ip, Mapping) or not isinstance(l4, Mapping) or len(l4) != 1:
            self.stats["flow_records_unusable"] += 1
            return
        src, dst = _address(ip.get("source")), _address(ip.get("destination"))
        (l4_name, l4_fields), = l4.items()
        proto = _L4.get(l4_name)
        if src is None or dst is None or proto is None or not isinstance(l4_fields, Mapping):
            self.stats["flow_records_unusable"] += 1
            return
        verdict = flow.get("verdict")
        if verdict == "DROPPED":
            self.stats["flow_records_dropped"] += 1
            kind = "passed" if self.include_dropped else "dropped"
        elif verdict in PASSED:
            kind = "passed"
        else:
            self.stats["flow_records_unusable"] += 1
            return
        s_id, d_id = _endpoint_identity(flow.get("source")), _endpoint_identity(flow.get("destination"))
        if s_id.entity == "health" or d_id.entity == "health":
            self.stats["flow_records_health"] += 1
            return

        ev_src = ev_dst = flags = 0
        sport = dport = 0
        if proto in (d.TCP, d.UDP, d.SCTP):
            sport, dport = _int(l4_fields.get("source_port")), _int(l4_fields.get("destination_port"))
            if sport is None or dport is None:
                self.stats["flow_records_unusable"] += 1
                return
            if proto == d.TCP:
                tcp_flags = l4_fields.get("flags") if isinstance(l4_fields.get("flags"), Mapping) else {}
                flags = sum(bit for name, bit in TCP_FLAG_BITS.items() if tcp_flags.get(name) is True)
                if flags & 0x02:
                    if flags & 0x10:
                        ev_dst |= d.EV_SYNACK
                    else:
                        ev_src |= d.EV_SYN
        else:
            echo = _ECHO.get((l4_name, _int(l4_fields.get("type"))))
            if echo is None:
                self.stats["icmp_control"] += 1
                return
            if echo:
                ev_src |= d.EV_ICMP
            else:
                ev_dst |= d.EV_ICMP
        reply = _reply(flow)
        if reply is not None:
            if reply:
                ev_dst |= d.EV_FLOW_RECORD
            else:
                ev_src |= d.EV_FLOW_RECORD
        l7 = flow.get("l7")
        if isinstance(l7, Mapping) and isinstance(l7.get("dns"), Mapping):
            response = l7.get("type") == "RESPONSE"
            ev_src, ev_dst = (ev_src, ev_dst | d.EV_DNS) if response else (ev_src | d.EV_DNS, ev_dst)
            self._dns(l7["dns"], response, src[2], dst[2], ts, "tcp" if proto == d.TCP else "udp")
        if s_id.entity == "proxy" and reply is not True:
            self.proxy_legs.add((proto, src[2], sport, dst[2], dport))
        self.records.append((kind, ts, src, dst, proto, sport, dport, flags, ev_src, ev_dst, s_id, d_id,
                             str(flow.get("node_name") or outer.get("node_name") or "")))
        if len(self.records) >= CHUNK:
            self._process()

    def _dns(self, dns: Mapping, response: bool, src: str, dst: str, ts: int, transport: str) -> None:
        if dns.get("observation_source") == "proxy":
            self.dns_proxy_seen = True
        query = dns.get("query")
        if not isinstance(query, str) or not query:
            return
        qname = query.rstrip(".").lower()
        client, resolver = (dst, src) if response else (src, dst)
        qtypes = [q for q in dns.get("qtypes") or () if isinstance(q, str)] or ["A"]
        ttl = _int(dns.get("ttl")) or 0
        for qtype in qtypes:
            acc = self.dns.get((client, resolver, qname, qtype))
            if acc is None:
                acc = self.dns[(client, resolver, qname, qtype)] = DnsAcc(first=ts, last=ts)
            acc.saw(ts, transport)
            if not response:
                acc.queries += 1
                continue
            acc.responses += 1
            rcode = _int(dns.get("rcode")) or 0
            acc.rcodes.add(RCODES.get(rcode, f"RCODE{rcode}"))
            for ip in dns.get("ips") or ():
                a = _address(ip)
                if a is not None:
                    acc.answer(qname, "AAAA" if ":" in a[2] else "A", a[2], ttl)
            for cname in dns.get("cnames") or ():
                if isinstance(cname, str) and cname:
                    acc.answer(qname, "CNAME", cname.rstrip(".").lower(), ttl)

    # --- at the end --------------------------------------------------------------------------

    def _process(self) -> None:
        """The records held back, filtered with what is known so far (the proxies' connections,
        whether the DNS proxy is at work), into the endpoints and the aggregators' chunks: memory
        grows with connections and identities, as for packets, not with records."""
        endpoints = self.endpoints
        kept: dict[str, list[tuple]] = {"passed": [], "dropped": []}
        for rec in self.records:
            kind, ts, src, dst, proto, sport, dport, flags, ev_src, ev_dst, s_id, d_id, observer = rec
            if (proto, src[2], sport, dst[2], dport) in self.proxy_legs or (proto, dst[2], dport, src[2], sport) in self.proxy_legs:
                self.stats["flow_records_proxy"] += 1
                continue
            if self.dns_proxy_seen and proto in (d.UDP, d.TCP) and (
                    (dport == 53 and s_id.entity in ("host", "remote-node")) or (sport == 53 and d_id.entity in ("host", "remote-node"))):
                self.stats["flow_records_dns_proxy"] += 1  # the DNS proxy's forwarding, either way
                continue
            for address, ident in ((src[2], s_id), (dst[2], d_id)):
                if ident.entity in ("pod", "host", "remote-node", "kube-apiserver"):
                    node = observer if (ident.entity == "host" or (ident.entity == "pod" and ident.local)) else ""
                    key = (address, ident.entity, ident.namespace, ident.pod, ident.labels, ident.namespace_labels, ident.workload)
                    e = endpoints.get(key)
                    if e is None:
                        endpoints[key] = [ts, ts, 1, node]
                    else:
                        e[0], e[1], e[2], e[3] = min(e[0], ts), max(e[1], ts), e[2] + 1, max(e[3], node)
            kept[kind].append(rec)
        self.records = []
        for kind, records in kept.items():
            if records:
                self._feed(kind, records)

    def result(self) -> FlowLog:
        self._process()
        endpoints = self.endpoints
        holders: dict[str, list] = defaultdict(list)  # address -> the endpoints that held it
        eps = tuple(Endpoint(address=k[0], entity=k[1], namespace=k[2], pod=k[3], labels=k[4], namespace_labels=k[5], workload=k[6],
                             first_seen=v[0], last_seen=v[1], records=v[2], node=v[3]) for k, v in endpoints.items())
        for e in eps:
            holders[e.address].append(e)
        logs = [self._log(self.aggregators["passed"], holders)]
        if self.aggregators["dropped"].stats.get("packets"):
            log = self._log(self.aggregators["dropped"], holders)
            logs.append(replace(log, flows=tuple(replace(f, evidence="dropped") for f in log.flows), stats={}))
        dns = tuple(acc.observation(*key) for key, acc in self.dns.items())
        stats = {k: int(v) for k, v in self.stats.items() if v}
        logs.append(FlowLog(dns=dns, stats=stats, sources=(self.source,), endpoints=eps))
        return merge_logs(logs)

    def _feed(self, kind: str, records: list[tuple]) -> None:
        """The records (as ``self.records`` holds them) to the aggregator of their kind, as Packets."""
        n = len(records)
        z64 = lambda: np.zeros(n, dtype=np.int64)  # noqa: E731
        _, ts, src, dst, proto, sport, dport, flags, ev_src, ev_dst = (list(col) for col in zip(*(r[:10] for r in records)))
        src = np.array([a[:2] for a in src], dtype=np.uint64).reshape(n, 2)
        dst = np.array([a[:2] for a in dst], dtype=np.uint64).reshape(n, 2)
        # Every record is its own packet: the fingerprints differ, so nothing is taken for a copy.
        fingerprint = np.arange(self._fingerprint, self._fingerprint + n, dtype=np.uint64)
        self._fingerprint += n
        p = d.Packets(
            status=np.full(n, d.OK, dtype=np.int8), ts=np.array(ts, dtype=np.int64),
            src_hi=src[:, 0].copy(), src_lo=src[:, 1].copy(), dst_hi=dst[:, 0].copy(), dst_lo=dst[:, 1].copy(),
            proto=np.array(proto, dtype=np.int64), sport=np.array(sport, dtype=np.int64), dport=np.array(dport, dtype=np.int64),
            iplen=z64(), ipid=z64(), frag=z64(), ev_src=np.array(ev_src, dtype=np.int64), ev_dst=np.array(ev_dst, dtype=np.int64),
            fingerprint=fingerprint, tcp_seq=z64(), tcp_ack=z64(), tcp_next=z64(), tcp_flags=np.array(flags, dtype=np.int64),
            dns_at=np.full(n, -1, dtype=np.int64), dns_end=z64(), tunnel=np.zeros(n, dtype=np.int8),
            outer=(np.zeros(n, dtype=np.uint64),) * 4,
        )
        self.aggregators[kind].feed(b"", p)

    def _log(self, agg: Aggregator, holders: Mapping[str, list]) -> FlowLog:
        log = agg.result(self.source)
        flows = []
        for f in log.flows:
            src_pods, src_entity = _holders(holders.get(f.src, ()), f.first_seen, f.last_seen)
            dst_pods, dst_entity = _holders(holders.get(f.dst, ()), f.first_seen, f.last_seen)
            flows.append(replace(f, src_pods=src_pods, dst_pods=dst_pods, src_entity=src_entity, dst_entity=dst_entity))
        # No tunnels nor copies: records are not packets on a wire. (result's merge_logs sorts the
        # flows again by their keys, which now hold the pods.)
        stats = {k: v for k, v in log.stats.items() if k not in ("duplicates", "tunnels")}
        return replace(log, flows=tuple(flows), stats=stats)


def _holders(endpoints: Iterable[Endpoint], first: int, last: int) -> tuple[tuple[str, ...], str]:
    """The pods that the records say held an address from ``first`` to ``last``, and, when none
    did, the reserved entity they gave it."""
    pods, entities = set(), set()
    for e in endpoints:
        if e.first_seen <= last and first <= e.last_seen:
            if e.entity == "pod":
                pods.add(f"{e.namespace}/{e.pod}")
            else:
                entities.add(e.entity)
    if pods:
        return tuple(sorted(pods)), ""
    return (), next((e for e in _ENTITY_ORDER if e in entities), "")


def _reply(flow: Mapping) -> bool | None:
    """Whether the record is the server's (True), the client's (False), or unknown (None)."""
    is_reply = flow.get("is_reply")
    if isinstance(is_reply, Mapping):  # a BoolValue written as an object by some exporters
        is_reply = is_reply.get("value", False)
    if isinstance(is_reply, bool):
        return is_reply
    if flow.get("reply") is True:
        return True
    if flow.get("traffic_direction") in ("INGRESS", "EGRESS"):
        return False  # Cilium before 1.10 wrote ``reply`` only when true
    return None


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():  # jsonpb writes 64-bit integers as strings
        return int(value)
    return None
