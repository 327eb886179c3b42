"""The review page's model: what was learned, as one JSON document the page draws.

    flows + inventory ─> resolve (traced) ─> nodes and edges ─┐
    policies given, or generated from the same flows ─> judge ├─> model (dict)
    base policies (diff view) ─> judge again, diff ───────────┘

Every edge is client -> server on the server's own port, one per pair of map nodes, protocol,
port and outcome; its evidence is the flow lines behind it (``resolve(..., trace=[])``). The
policies judge each edge as ``verify`` does (``_verify.Judge``); with a base set, the edges whose
verdict the new set changes are marked and ``diff``'s own list is carried along. The model's
shape is in docs/report.md; the page (``_page``) and the static image (``_image``) only draw it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import yaml

from netpol_learn._errors import PolicyError
from netpol_learn._flowlog import HEURISTIC_METHODS, FlowLog
from netpol_learn._inventory import PROTOCOLS, Inventory
from netpol_learn._policy import NetworkPolicy
from netpol_learn._resolve import (
    CONNECTION,
    EXTERNAL,
    NODE,
    NODE_LOCAL_DNS,
    NOT_WRITTEN,
    NOT_WRITTEN_EPHEMERAL,
    POD,
    SERVICE_ENDPOINT,
    UNRESOLVED,
    Connection,
    Peer,
    Resolution,
    ResolveOptions,
    Traced,
    resolve,
)
from netpol_learn._semantics import (
    isolates,
    load_policies,
    policy_files,
    policy_from_dict,
)
from netpol_learn._status import (
    DEFAULT_STABLE_AFTER,
    Status,
    duration_text,
    learning_status,
)
from netpol_learn._synthesize import GenerateOptions
from netpol_learn._text import counted
from netpol_learn._time import format_time
from netpol_learn._verify import Judge, Judged, diff, workload_endpoint

FORMAT = "netpol-learn-report/1"
#: The Service whose selector-less endpoints are the API server.
API_SERVICE = "default/kubernetes"
#: The annotation generate gives a workload's policy: the workload it was written for.
WORKLOAD_ANNOTATION = "netpol-learn.io/workload"
#: Flow lines listed in an edge's evidence; the rest are counted.
LINES_SHOWN = 50
#: What the page calls the outcomes of traffic that never becomes a rule.
ATTEMPT, NOT_EVALUATED, UNRESOLVED_EDGE = "attempt", "not-evaluated", "unresolved"


#: A rendered policy's name and namespace, as the templates write them.
_METADATA = re.compile(r"^metadata:\n  name: (?P<name>\S+)\n  namespace: (?P<namespace>\S+)$", re.M)
#: libyaml where PyYAML has it: a cluster's policies are thousands of documents.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class PolicyText:
    """A policy and the text of its YAML document (comments kept), as a reviewer reads it."""

    policy: NetworkPolicy
    text: str
    workload: str | None = None  # the workload generate wrote it for (its annotation), e.g. Deployment/api


def _workload_of(doc: Mapping) -> str | None:
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    return annotations.get(WORKLOAD_ANNOTATION) if isinstance(annotations, Mapping) else None


def policy_texts(files: Mapping[str, str]) -> list[PolicyText]:
    """The NetworkPolicies of YAML (or JSON) texts by file name, each with its own document's text
    (a List's items re-dumped). Documents that are not NetworkPolicies are left out: the policies
    were read and checked already (``load_policies``), this only finds their text."""
    out: list[PolicyText] = []
    for name in sorted(files):
        for chunk in _chunks(files[name]):
            try:
                doc = yaml.load(chunk, Loader=_LOADER)
            except yaml.YAMLError:
                continue
            if not isinstance(doc, Mapping):
                continue
            if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
                out += [PolicyText(policy_from_dict(i), yaml.safe_dump(i, sort_keys=False), _workload_of(i)) for i in doc["items"]
                        if isinstance(i, Mapping) and i.get("kind") == "NetworkPolicy"]
            elif doc.get("kind") == "NetworkPolicy":
                out.append(PolicyText(policy_from_dict(doc), chunk.strip("\n") + "\n", _workload_of(doc)))
    return out


def _chunks(text: str) -> list[str]:
    """The documents of a YAML stream as text, split at ``---`` lines."""
    chunks, current = [], []
    for line in text.splitlines():
        if line.rstrip() == "---" or line.startswith("--- "):
            chunks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    chunks.append("\n".join(current))
    return [c for c in chunks if c.strip()]


def read_policy_files(paths: Iterable) -> dict[str, str]:
    """The text of every policy file under ``paths`` (as ``load_policies`` finds them), by path."""
    return {str(f): f.read_text(encoding="utf-8") for f in policy_files(paths)}


def build_report(log: FlowLog, inventory: Inventory, *, policy_paths: Iterable = (), base_paths: Iterable = (),
                 generate_options: GenerateOptions = GenerateOptions(), resolve_options: ResolveOptions = ResolveOptions(),
                 stable_after: int = DEFAULT_STABLE_AFTER, title: str | None = None, warn=None) -> dict:
    """The model of ``netpol-learn report``: without ``policy_paths``, of the policies generated
    from ``log`` (as ``generate`` would write them with ``generate_options``); with them, of those
    policies (verify); with ``base_paths`` too, of their difference from the base set (diff).
    Policy files that are not NetworkPolicies are noted through ``warn``."""
    from netpol_learn._chart import learning_chart
    from netpol_learn._generate import generate

    trace: list[Traced] = []
    resolution = resolve(log, inventory, resolve_options, trace=trace)
    status = learning_status(log, inventory, resolution, stable_after)
    base = None
    if policy_paths:
        policies = _given(policy_paths, warn)
        mode = "verify"
        if base_paths:
            base, mode = _given(base_paths, warn), "diff"
    elif base_paths:
        raise PolicyError("--base needs --policies: the set to compare with the base")
    else:
        generated = generate(log, inventory, generate_options, None, resolve_options, stable_after, resolution=resolution)
        policies, mode = _generated_texts(generated), "generated"
    chart = learning_chart(status) if status.edges else None
    return report_model(log, inventory, policies, mode=mode, base=base, resolution=resolution, trace=trace, status=status,
                        resolve_options=resolve_options, stable_after=stable_after, chart=chart, title=title)


def _generated_texts(generated) -> list[PolicyText]:
    """The generated policies, each with the text of its document in the files rendered: found
    by the name and namespace lines the templates write (no YAML parsed again: a cluster's
    policies are thousands of documents)."""
    by_key = {(p.namespace, p.name): p for p in generated.policies.policies}
    out = []
    for name in sorted(generated.files):
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        for chunk in _chunks(generated.files[name]):
            found = _METADATA.search(chunk)
            policy = by_key.get((found["namespace"], found["name"])) if found else None
            if policy is not None:
                out.append(PolicyText(policy, chunk.strip("\n") + "\n", dict(policy.annotations).get(WORKLOAD_ANNOTATION)))
    return out


def _given(paths: Iterable, warn) -> list[PolicyText]:
    """The NetworkPolicies under ``paths`` (checked by ``load_policies``), each with its document's text."""
    notes: list[str] = []
    policies = load_policies(paths, notes)
    for note in notes:
        if warn is not None:
            warn(note)
    texts = {(t.policy.namespace, t.policy.name): t for t in policy_texts(read_policy_files(paths))}
    out = []
    for p in policies:
        found = texts.get((p.namespace, p.name))
        out.append(found if found is not None and found.policy == p else PolicyText(p, yaml.safe_dump(p.to_dict(), sort_keys=False)))
    return out


def report_model(log: FlowLog, inventory: Inventory, policies: list[PolicyText], *,
                 mode: str = "generated", base: list[PolicyText] | None = None, resolution: Resolution | None = None,
                 trace: list[Traced] | None = None, status: Status | None = None,
                 resolve_options: ResolveOptions = ResolveOptions(), stable_after: int = DEFAULT_STABLE_AFTER,
                 chart: bytes | None = None, title: str | None = None, notes: Iterable[str] = ()) -> dict:
    """The review page's model of ``log`` resolved against ``inventory``, its edges judged by
    ``policies`` (``mode`` generated: they were generated from this log; verify: they were
    given), and with ``base`` (mode diff) marked where ``policies`` differ from it. A caller
    that resolved the log with a trace already passes ``resolution`` and ``trace``."""
    if resolution is None or trace is None:
        trace = []
        resolution = resolve(log, inventory, resolve_options, trace=trace)
    if status is None:
        status = learning_status(log, inventory, resolution, stable_after)
    builder = _Builder(inventory, resolution, status, [p.policy for p in policies], None if base is None else [p.policy for p in base])
    for t in trace:
        builder.add(t)
    differences = None
    if base is not None:
        result = diff([p.policy for p in base], [p.policy for p in policies], inventory, log, resolve_options)
        differences = {way: [{"client": c.client, "server": c.server, "protocol": c.protocol, "port": c.port, "observed": c.observed}
                             for c in changes] for way, changes in (("added", result.added), ("removed", result.removed))}
        builder.unobserved(result.added, "added")
        builder.unobserved(result.removed, "removed")
    nodes = builder.nodes_json(policies, status)
    edges = builder.edges_json()
    workloads = [n for n in nodes if n["kind"] in ("workload", "dns")]
    namespaces = sorted({n["namespace"] for n in nodes if n["namespace"]})
    never = defaultdict(list)
    for ns, w in status.never_seen:
        never[ns].append(w)
    denied = sum(1 for e in edges if e["verdict"] == "denied")
    summary = (f"{counted(len(log.flows), 'flow line')}, {counted(len(resolution.connections), 'connection')}, "
               f"{counted(len(workloads), 'workload')} in {counted(len(namespaces), 'namespace')}; learning: {status.verdict}")
    if mode != "generated":
        summary += f"; {counted(denied, 'edge')} the policies deny"
    if differences is not None:
        summary += f"; {len(differences['added'])} newly allowed, {len(differences['removed'])} newly denied"
    return {
        "format": FORMAT,
        "title": title or "netpol-learn: " + (", ".join(namespaces[:3]) + (" ..." if len(namespaces) > 3 else "") if namespaces else "no workloads"),
        "mode": mode,
        "summary": summary,
        "capture": {"start": _time(status.capture_start), "end": _time(status.capture_end)},
        "namespaces": [{"name": ns, "workloads": sum(1 for n in workloads if n["namespace"] == ns), "never_seen": never.get(ns, [])}
                       for ns in namespaces],
        "nodes": nodes,
        "edges": edges,
        "diff": differences,
        "attention": [*notes, *_attention(resolution, edges)],
        "status": {"verdict": status.verdict, "stable_after": duration_text(status.stable_after),
                   "workloads": len(status.workloads), "edges": status.edges},
        "chart": None if chart is None else "data:image/png;base64," + base64.b64encode(chart).decode("ascii"),
    }


def _time(ns: int | None) -> str | None:
    return None if ns is None else format_time(ns)


class _Builder:
    """Map nodes from resolved peers, and edges with their evidence from the trace."""

    def __init__(self, inventory: Inventory, resolution: Resolution, status: Status, policies: list[NetworkPolicy],
                 base: list[NetworkPolicy] | None):
        self.inventory = inventory
        self.workloads = {w.key: w for w in inventory.workloads}
        self.pods = {p.key: p for p in inventory.pods}
        self.judge = Judge(policies, inventory)
        self.base = None if base is None else Judge(base, inventory)
        self.blocks = _blocks(policies + (base or []))
        self.nodes: dict[str, dict] = {}
        self.edges: dict[tuple, dict] = {}
        self.judged: dict[tuple, tuple[Judged, Judged | None]] = {}
        self.resolution = resolution

    # --- nodes -------------------------------------------------------------------------------

    def node(self, peer: Peer) -> str:
        """The id of the map node a peer is drawn as, made on first sight."""
        if peer.kind == POD:
            node_id = f"{peer.namespace}/{peer.workload}"
            if node_id not in self.nodes:
                w = self.workloads.get((peer.namespace, peer.workload))
                self.nodes[node_id] = _node(node_id, "dns" if peer.cluster_dns else "workload", peer.workload, peer.namespace,
                                            pods=len(w.pods) if w is not None else None)
            return node_id
        if peer.kind == NODE:
            name = peer.node or peer.address
            node = self.nodes.setdefault(f"node:{name}", _node(f"node:{name}", "node", f"node {name}"))
            if peer.names:
                node["note"] = "host-network pods: " + ", ".join(peer.names)
        elif peer.kind == SERVICE_ENDPOINT and peer.service == API_SERVICE:
            node = self.nodes.setdefault("apiserver", _node("apiserver", "apiserver", "API server"))
        elif peer.kind == SERVICE_ENDPOINT:
            node_id = f"outside:{peer.service}"
            node = self.nodes.setdefault(node_id, _node(node_id, "external", f"Service {peer.service}"))
            node["note"] = "endpoints of a Service without a selector"
        elif peer.kind == NODE_LOCAL_DNS:
            node = self.nodes.setdefault(f"node-local-dns:{peer.address}", _node(f"node-local-dns:{peer.address}", "node-local-dns", f"node-local DNS {peer.address}"))
        elif peer.kind == EXTERNAL:
            name = peer.names[0] if peer.names else self.block_of(peer.address) or peer.address
            node = self.nodes.setdefault(f"outside:{name}", _node(f"outside:{name}", "external", name))
            node["names"] = sorted(set(node["names"]) | set(peer.names))
        else:  # UNRESOLVED: ambiguous ones too, with the reason
            node = self.nodes.setdefault(f"unresolved:{peer.address}", _node(f"unresolved:{peer.address}", "unresolved", peer.address))
            node["note"] = peer.reason
        if peer.address and peer.address not in node["addresses"]:
            node["addresses"] = sorted([*node["addresses"], peer.address], key=_address_key)
        return node["id"]

    def block_of(self, address: str) -> str | None:
        """The narrowest block wider than one address that the policies name and that holds ``address``."""
        ip = ipaddress.ip_address(address)
        inside = [b for b in self.blocks if b.version == ip.version and ip in b]
        return str(max(inside, key=lambda b: b.prefixlen)) if inside else None

    # --- edges -------------------------------------------------------------------------------

    def add(self, t: Traced) -> None:
        source, target = self.node(t.client), self.node(t.server)
        verdict, denied_by, why, diff_mark = self.verdict(t)
        key = (source, target, t.protocol, t.port, verdict, denied_by, diff_mark)
        e = self.edges.get(key)
        if e is None:
            e = self.edges[key] = {"source": source, "target": target, "protocol": t.protocol, "port": t.port,
                                   "verdict": verdict, "denied_by": denied_by, "why": set(), "diff": diff_mark,
                                   "observed": True, "connections": 0, "first": t.first_seen, "last": t.last_seen,
                                   "flows": {}, "via": set(), "evidence": set(), "mid_stream": True, "inferred": False}
        if why:
            e["why"].add(why)
        e["connections"] += t.connections
        e["first"], e["last"] = min(e["first"], t.first_seen), max(e["last"], t.last_seen)
        e["flows"][id(t.flow)] = t.flow
        if t.via:
            e["via"].add(t.via)
        e["evidence"].add(t.flow.evidence)
        methods = [m for m, _ in t.flow.direction]
        # as resolve has it: every connection open before the capture began
        e["mid_stream"] &= t.flow.evidence == "socket-scan" or (bool(methods) and all(m in HEURISTIC_METHODS or m == "listen" for m in methods))
        e["inferred"] |= t.inferred

    def verdict(self, t: Traced) -> tuple[str, str | None, str | None, str | None]:
        """(verdict, denying direction, why, diff mark) of one traced run."""
        if t.outcome == NOT_WRITTEN:
            return NOT_WRITTEN, None, NOT_WRITTEN_EPHEMERAL, None
        if t.outcome != CONNECTION:
            return ATTEMPT, None, f"{t.outcome}: no evidence of a need, never a rule", None
        if UNRESOLVED in (t.client.kind, t.server.kind):
            reason = (t.client if t.client.kind == UNRESOLVED else t.server).reason
            return UNRESOLVED_EDGE, None, reason, None
        if t.protocol not in PROTOCOLS or t.port is None:
            return NOT_EVALUATED, None, f"NetworkPolicy cannot express {t.protocol}", None
        same_node = t.client.kind == NODE and t.server.kind == POD and t.client.node == t.server.node
        key = (t.client, t.server, t.protocol, t.port, same_node)
        judged = self.judged.get(key)
        if judged is None:
            c = Connection(t.client, t.server, t.protocol, t.port, None, t.via, 0, 0, 0, 0, 0, 0, same_node=same_node)
            judged = self.judged[key] = (self.judge(c), None if self.base is None else self.base(c))
        new, old = judged
        if new.skipped:
            return NOT_EVALUATED, None, new.skipped.split(": ", 1)[-1], None
        mark = None
        if old is not None and old.allowed is not None and old.allowed != new.allowed:
            mark = "added" if new.allowed else "removed"
        if new.allowed:
            return "allowed", None, "kubelet probes from the pod's own node are always allowed" if same_node else None, mark
        return "denied", new.denied_by, new.why, mark

    def unobserved(self, changes, mark: str) -> None:
        """Edges only the diff knows: connectivity the new set changes that was never seen."""
        for c in changes:
            if c.observed:
                continue
            source, target = self._end(c.client), self._end(c.server)
            key = (source, target, c.protocol, c.port, "allowed" if mark == "added" else "denied", None, mark)
            self.edges.setdefault(key, {"source": source, "target": target, "protocol": c.protocol, "port": c.port,
                                        "verdict": key[4], "denied_by": None, "why": {"not observed: only the policies differ here"},
                                        "diff": mark, "observed": False, "connections": 0, "first": None, "last": None,
                                        "flows": {}, "via": set(), "evidence": set(), "mid_stream": False, "inferred": False})

    def _end(self, name: str) -> str:
        """The node of an end as ``diff`` names it: a workload's ``namespace/Kind/name``, or an address or block."""
        if name in self.nodes:
            return name
        namespace, _, ref = name.partition("/")
        w = self.workloads.get((namespace, ref))
        if w is not None:
            self.nodes[name] = _node(name, "workload", ref, namespace, pods=len(w.pods))
            return name
        address, _, length = name.partition("/")
        if not length or int(length) in (32, 128):  # one address: the node that holds it
            for node in self.nodes.values():
                if address in node["addresses"]:
                    return node["id"]
        return self.nodes.setdefault(f"outside:{name}", _node(f"outside:{name}", "external", name))["id"]

    # --- JSON ----------------------------------------------------------------------------------

    def nodes_json(self, policies: list[PolicyText], status: Status) -> list[dict]:
        statuses = {(w.namespace, w.workload): w for w in status.workloads}
        for node in self.nodes.values():
            if node["kind"] not in ("workload", "dns"):
                continue
            ref = node["label"]
            w = statuses.get((node["namespace"], ref))
            if w is not None:
                node["status"] = {"verdict": w.verdict, "first_seen": format_time(w.first_seen), "last_seen": format_time(w.last_seen),
                                  "last_new_edge": _time(w.last_new_edge), "connections": w.connections, "edges": len(w.edges),
                                  "partial": w.partial}
            workload = self.workloads.get((node["namespace"], ref))
            if workload is not None and workload.pods:
                e = workload_endpoint(workload, self.pods)
                labels = dict(e.labels)
                selecting = [p for p in policies if isolates(p.policy, e.namespace, labels, "Ingress") or isolates(p.policy, e.namespace, labels, "Egress")]
                # its own policy first (the one generated for it names it), then the namespace's
                selecting.sort(key=lambda p: (p.workload != ref, p.policy.name))
                node["policies"] = [{"namespace": p.policy.namespace, "name": p.policy.name, "yaml": p.text} for p in selecting]
        return sorted(self.nodes.values(), key=lambda n: n["id"])

    def edges_json(self) -> list[dict]:
        out = []
        for e in sorted(self.edges.values(), key=_edge_sort):
            flows = sorted(e["flows"].values(), key=lambda f: (f.first_seen, f.src, f.dst, f.port or 0))
            direction: dict[str, int] = defaultdict(int)
            for f in flows:
                for method, n in f.direction:
                    direction[method] += n
            out.append({
                "id": f"e{len(out) + 1}",
                "source": e["source"], "target": e["target"], "protocol": e["protocol"], "port": e["port"],
                "connections": e["connections"], "verdict": e["verdict"], "denied_by": e["denied_by"],
                "why": "; ".join(sorted(e["why"])) or None, "diff": e["diff"], "observed": e["observed"],
                "evidence": {
                    "first_seen": _time(e["first"]), "last_seen": _time(e["last"]),
                    "connections": e["connections"], "flows": len(flows),
                    "packets": sum(f.packets for f in flows), "bytes": sum(f.bytes for f in flows),
                    "direction": sorted(direction.items()), "via": sorted(e["via"]),
                    "evidence": ", ".join(sorted(e["evidence"])) or None,
                    "mid_stream": bool(flows) and e["mid_stream"], "inferred": e["inferred"],
                    "lines": [_line(f) for f in flows[:LINES_SHOWN]],
                    "more_lines": max(0, len(flows) - LINES_SHOWN),
                },
            })
        return out


def _node(node_id: str, kind: str, label: str, namespace: str | None = None, pods: int | None = None) -> dict:
    return {"id": node_id, "kind": kind, "label": label, "namespace": namespace, "pods": pods, "addresses": [], "names": [],
            "note": None, "status": None, "policies": []}


def _line(f) -> dict:
    return {"src": f.src, "dst": f.dst, "protocol": f.proto, "port": f.port, "connections": f.connections,
            "first_seen": format_time(f.first_seen), "last_seen": format_time(f.last_seen),
            "direction": ", ".join(f"{m} {n}" for m, n in f.direction), "evidence": f.evidence}


def _edge_sort(e: dict) -> tuple:
    return (e["source"], e["target"], e["protocol"], -1 if e["port"] is None else e["port"], e["verdict"], e["denied_by"] or "", e["diff"] or "")


def _address_key(address: str) -> tuple:
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


def _blocks(policies: list[NetworkPolicy]) -> list:
    """The ipBlocks wider than one address that the policies name."""
    out = set()
    for p in policies:
        for rule in (*(p.ingress or ()), *(p.egress or ())):
            for peer in rule.peers or ():
                if peer.ip_block is not None:
                    net = ipaddress.ip_network(peer.ip_block.cidr, strict=False)
                    if net.prefixlen < net.max_prefixlen:
                        out.add(net)
    return sorted(out, key=lambda n: (n.version, int(n.network_address), n.prefixlen))


def _attention(resolution: Resolution, edges: list[dict]) -> list[str]:
    """What a reviewer should look at before applying: lines, most pressing first."""
    r = resolution.report
    lines = [f"{counted(e['connections'], 'connection')} {e['source']} -> {e['target']} {e['protocol']}/{e['port']} "
             f"would be denied ({e['denied_by']})" for e in edges if e["verdict"] == "denied" and e["observed"]]
    if r.clock_warning:
        lines.append(r.clock_warning)
    lines += [f"{counted(n, 'flow')} with {address}: {why}" for address, why, n in (*r.ambiguous, *r.unresolved)]
    lines += [f"{c} -> {s} {p}/{port}: {why}" for c, s, p, port, why in r.not_written]
    lines += [f"{counted(n, 'connection')} {c} -> {s} {p}/{port} {ev}: an attempt, not a need" for c, s, p, port, ev, n in r.attempts]
    lines += [f"{ns}/{w} is not the only workload its selector picks (also {', '.join(o)})" for ns, w, o in r.workloads_not_unique]
    lines += [f"{ns}/{w} has no labels that select it alone" for ns, w in r.workloads_unselectable]
    if r.not_expressible:
        lines.append(f"{counted(r.not_expressible, 'flow')} of protocols NetworkPolicy cannot express (ICMP, ...)")
    return lines


__all__ = ["FORMAT", "PolicyText", "build_report", "policy_texts", "read_policy_files", "report_model"]
