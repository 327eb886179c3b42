"""The policy semantics engine: what a set of NetworkPolicies allows, as the Kubernetes API says.

    policy YAML  ->  load_policies  ->  PolicyEngine(policies, namespaces)  ->  evaluate(connection)

Rules (https://kubernetes.io/docs/concepts/services-networking/network-policies/):
- Isolation is per direction: a pod is isolated for ingress (egress) when some policy of its
  namespace selects it and lists Ingress (Egress) in its policyTypes; an isolated pod accepts only
  what the union of those policies allows; a pod no policy isolates allows everything.
- Pod-to-pod traffic needs both the source's egress and the destination's ingress.
- ``policyTypes`` defaults to Ingress, plus Egress when the policy has an ``egress`` section.
- A missing ``ingress``/``egress`` allows nothing; a rule with a missing or empty ``from``/``to``
  matches every peer; a missing or empty ``ports`` matches every port and protocol.
- A peer with ``podSelector`` alone selects pods of the policy's namespace; ``namespaceSelector``
  alone, every pod of the selected namespaces; both, the pods they both select.
- Named ports are resolved on the destination pod's container ports; ``endPort`` makes a range.
- Traffic between a pod and its own node (kubelet probes) is always allowed.
Where the documentation leaves a point to the implementation, our choice:
- ``ipBlock`` matches addresses outside the pod network only: a pod peer is matched by selectors,
  never by the ipBlock that happens to contain its IP (as Cilium and network-config-analyzer do;
  the documentation says ipBlocks "should be cluster-external IPs").
- Host-network pods and nodes are addresses, not pods: policies do not select them.
ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) are read too: the Admin tier decides
before NetworkPolicies, the Baseline tier for pods they do not isolate (``_cluster_policy``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netpol_learn._cluster_policy import ClusterPolicy, candidates, cluster_policy_from_dict, decide
from netpol_learn._errors import PolicyError
from netpol_learn._paths import path_list
from netpol_learn._gc import collector_paused
from netpol_learn._inventory import PROTOCOLS, LabelSelector, labels_problem
from netpol_learn._policy import NAMESPACE_LABEL, IpBlock, NetworkPolicy, PolicyPeer, PortSpec, Rule

# --- reading -------------------------------------------------------------------------------


#: Kinds that decide traffic but that the engine does not read: refused, never skipped (skipping
#: would judge the traffic as if they were not there).
NOT_JUDGED = {
    "CiliumNetworkPolicy": "generate --flavor networkpolicy for a set they can check",
    "CiliumClusterwideNetworkPolicy": "generate --flavor networkpolicy for a set they can check",
}


class Policies(list):
    """The NetworkPolicies of a policy set, a list; ``cluster``: its ClusterNetworkPolicies."""

    cluster: tuple[ClusterPolicy, ...] = ()


def load_policies(paths: Iterable[str | os.PathLike] | str | os.PathLike, notes: list[str] | None = None) -> Policies:
    """NetworkPolicies from files and directories (YAML or JSON; Lists, multi-document files,
    what ``kubectl kustomize`` prints), with the ClusterNetworkPolicies among them in ``cluster``.
    Other kinds are skipped with a note, but those that decide traffic the engine cannot read
    (``NOT_JUDGED``) are a PolicyError. One path may be given as itself (``path_list``)."""
    paths = path_list(paths)
    # Each file's documents are alive until its policies are built: the collector would walk
    # all that was read before again and again (reading two sets of 2,100 policies: 18 full
    # collections, 0.8 s of 5.3 s). What they are read into holds no cycles.
    with collector_paused():
        return _load_policies(paths, notes)


def load_policies_noted(paths: Iterable[str | os.PathLike]) -> tuple[Policies, list[str]]:
    """``load_policies`` and the notes it made, as one value (read in a second process:
    ``netpol_learn._parallel``)."""
    notes: list[str] = []
    return load_policies(paths, notes), notes


def _load_policies(paths: Iterable[str | os.PathLike], notes: list[str] | None) -> Policies:
    policies = Policies()
    cluster: list[ClusterPolicy] = []
    skipped: dict[str, int] = {}
    memo: dict = {}  # the peers and ports read so far (policy_from_dict)
    builders = {"NetworkPolicy": (lambda obj: policy_from_dict(obj, memo), policies), "ClusterNetworkPolicy": (cluster_policy_from_dict, cluster)}
    reader = _PlainReader()  # one for the set's files: it remembers their scalars
    for f in policy_files(paths):
        index = 0
        for doc in _documents(f, reader):
            if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List") and not isinstance(doc.get("items", []), list):
                raise PolicyError(f"{f}: document {index + 1} ({doc['kind']}): items: not a list")
            for obj in _items(doc):
                index += 1
                kind = obj.get("kind") if isinstance(obj, Mapping) else None
                if kind in NOT_JUDGED:
                    raise PolicyError(f"{f}: document {index} is a {kind}: verify and diff judge NetworkPolicies and ClusterNetworkPolicies only ({NOT_JUDGED[kind]})")
                read = builders.get(kind)
                if read is None:
                    skipped[str(kind)] = skipped.get(str(kind), 0) + 1
                    continue
                try:
                    read[1].append(read[0](obj))
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    meta = obj.get("metadata")
                    name = meta.get("name") if isinstance(meta, Mapping) else None
                    raise PolicyError(f"{f}: document {index} ({kind} {name if isinstance(name, str) and name else '?'}): {exc}") from exc
    if notes is not None:
        notes.extend(f"skipped {n} document(s) of kind {k}" for k, n in sorted(skipped.items()))
    policies.cluster = tuple(sorted(cluster, key=lambda c: (c.tier, c.priority, c.name)))
    return policies


def policy_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files given, and the YAML and JSON files under the directories given (but their
    ``kustomization.yaml``), each directory's in name order."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".json") and f.name != "kustomization.yaml")
        elif p.exists():
            files.append(p)
        else:
            raise PolicyError(f"{p}: no such file or directory")
    return files


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _FastLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader on libyaml (where PyYAML has it), building the plain mappings, sequences
    and strings that policy files are made of without the generic constructor's per-node
    machinery; every other node (numbers, merge keys, tags, non-string keys) goes to the safe
    constructor as before. A cluster's policies are millions of nodes."""

    def __init__(self, stream):
        super().__init__(stream)
        self._tags: dict[tuple, str] = {}

    def resolve(self, kind, value, implicit):  # the safe resolver has no path resolvers: a pure function
        key = (kind, value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag

    def construct_document(self, node):
        data = self._build(node, {})
        self.constructed_objects, self.recursive_objects = {}, {}
        return data

    def _build(self, node, built: dict):
        if node.tag == _STR and type(node) is yaml.ScalarNode:
            return node.value
        if id(node) in built:  # an alias
            return built[id(node)]
        if node.tag == _MAP and type(node) is yaml.MappingNode and all(type(k) is yaml.ScalarNode and k.tag == _STR for k, _ in node.value):
            out: dict = {}
            built[id(node)] = out
            for k, v in node.value:
                out[k.value] = self._build(v, built)
        elif node.tag == _SEQ and type(node) is yaml.SequenceNode:
            out = built[id(node)] = []
            out += [self._build(v, built) for v in node.value]
        else:
            out = built[id(node)] = self.construct_object(node, deep=True)
        return out


class _NotPlain(Exception):
    """The text is not of the plain block style ``_PlainReader`` reads: libyaml reads it."""


#: Characters outside printable ASCII (tabs, carriage returns, controls, anything non-ASCII):
#: left to libyaml, with the line breaks, indentation and errors it knows.
_NOT_PLAIN_TEXT = re.compile(r"[^\x20-\x7e\n]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,252}\Z")
#: First characters a value written plain cannot start with (indicators), or that we leave to libyaml.
_NOT_PLAIN_START = frozenset("&*!|>%@`{}[],?:#-'\"")
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null")}


class _PlainReader:
    """What ``yaml.safe_load_all`` reads from text written in block style with plain keys and
    one-line values, as policy files are (``generate`` renders them so, ``yaml.safe_dump``
    writes them so): read line by line, five times faster than libyaml, whose composer builds
    a node and two marks for every scalar (a set of 2,100 policies is a million lines). Anything
    else (flow collections but ``{}`` and ``[]``, block scalars, anchors, tags, multi-line or
    escaped scalars, keys that are not plain strings, tabs, non-ASCII text, anything YAML would
    refuse) raises _NotPlain: libyaml reads that file, as before. The scalars it has read are
    remembered (one reader reads the files of a set)."""

    def __init__(self):
        self._resolver = yaml.resolver.Resolver()
        self._constructor = yaml.SafeLoader("")
        self._keys: dict[str, str] = {}
        self._values: dict[str, object] = {}  # value text (comment and all) -> scalar
        self._tokens: dict[str, object] = {}  # line -> _token(line)

    def _key(self, text: str) -> str:
        key = self._keys.get(text)
        if key is None:
            if not _PLAIN_KEY.match(text) or self._resolver.resolve(yaml.ScalarNode, text, (True, False)) != _STR:
                raise _NotPlain  # not a plain string key (a number, a bool, a merge key, ...)
            key = self._keys[text] = text
        return key

    def _value(self, text: str):
        """The scalar, ``{}`` or ``[]`` a value's text (after ``key: `` or ``- ``, nonblank,
        not a comment) stands for."""
        if text.startswith(("{}", "[]")) and (len(text) == 2 or text[2:].lstrip(" ")[:1] in ("", "#") and text[2] == " "):
            return {} if text[0] == "{" else []  # a new one each time: the caller may change it
        value = self._values.get(text, self._values)
        if value is self._values:
            value = self._values[text] = self._scalar(text)
        return value

    def _scalar(self, text: str):
        first = text[0]
        if first in ("'", '"'):
            end = text.find(first, 1)
            while first == "'" and text.startswith("''", end):  # '' is a quote inside single quotes
                end = text.find("'", end + 2)
            if end < 0 or (first == '"' and "\\" in text[:end]):  # not on this line, or escapes
                raise _NotPlain
            rest = text[end + 1:]
            if rest and not (rest[0] == " " and rest.lstrip(" ")[:1] in ("", "#")):  # only a comment may follow
                raise _NotPlain
            return text[1:end].replace("''", "'") if first == "'" else text[1:end]
        if first in _NOT_PLAIN_START and not (first in "-:" and text[1:2] not in ("", " ")):  # (-1, ::/0 are plain)
            raise _NotPlain
        cut = text.find(" #")  # a comment
        plain = (text if cut < 0 else text[:cut]).rstrip(" ")
        if ": " in plain or plain.endswith(":"):
            raise _NotPlain
        tag = self._resolver.resolve(yaml.ScalarNode, plain, (True, False))
        if tag == _STR:
            return plain
        if tag not in _PLAIN_TAGS:
            raise _NotPlain  # a timestamp, a merge key or '=' as a value: left to libyaml
        try:
            return self._constructor.construct_object(yaml.ScalarNode(tag, plain), deep=True)
        except Exception:  # noqa: BLE001 - such as 0b_, an int to the resolver that int() refuses: libyaml fails the same
            raise _NotPlain from None

    def _token(self, line: str):
        """What one line says, whatever the lines around it: None (blank, a comment), ``_DOC``
        (a document marker), or (column, ``_KEY`` or what the '-' item holds (``_ITEM_*``), key,
        value text or None for nothing after it, the key's column after the '-'). Raises
        _NotPlain for a line this reader leaves to libyaml."""
        body = line.lstrip(" ")
        if not body or body[0] == "#":
            return None
        col = len(line) - len(body)
        if col == 0 and body.startswith(("---", "...", "%")):
            if body != "---" and not body.startswith("--- #"):
                raise _NotPlain
            return _DOC
        if body[0] == "-" and (len(body) == 1 or body[1] == " "):
            rest = body[1:].lstrip(" ")
            if not rest or rest[0] == "#":
                return (col, _ITEM_EMPTY, None, None, 0)
            key, colon, value = rest.partition(": ")
            if not colon:
                if not rest.endswith(":") or rest[0] in "'\"":
                    return (col, _ITEM_SCALAR, None, rest, 0)
                key, value = rest[:-1], ""
            if rest[0] in "'\"":
                raise _NotPlain
            offset, mode = len(body) - len(rest), _ITEM_MAPPING  # '- key: ...' opens a mapping at the key's column
        else:
            key, colon, value = body.partition(": ")
            if not colon:
                if not body.endswith(":"):
                    raise _NotPlain
                key, value = body[:-1], ""
            offset, mode = 0, _KEY
        key = self._keys.get(key) or self._key(key)
        value = value.lstrip(" ")
        return (col, mode, key, None if not value or value[0] == "#" else value, offset)

    def documents(self, text: str) -> list:
        if _NOT_PLAIN_TEXT.search(text):
            raise _NotPlain
        # A policy set repeats few distinct lines (2,100 policies: 13,909 of 1,057,394): each
        # is taken apart once (``_token``); what is left per line is where it goes.
        tokens, token, values, value_of, missing = self._tokens, self._token, self._values, self._value, self._values
        docs: list = []
        root = None  # the document being read, from its first content line
        explicit = False  # a '---' began it
        stack: list = []  # (column, container) of the open collections but the innermost, top
        top_col, top = -1, None
        pending = None  # (container, key or index, column): a key or '-' with nothing after it
        for line in text.split("\n"):
            tok = tokens.get(line, missing)
            if tok is missing:
                tok = tokens[line] = token(line)
            if tok is None:
                continue
            if tok is _DOC:
                if root is not None or explicit:
                    docs.append(root)
                root, explicit, stack, top_col, top, pending = None, True, [], -1, None, None
                continue
            col, mode, key, value, offset = tok
            dash = mode != _KEY
            if pending is not None:
                # the value of a key or '-' with nothing after it (null so far): the lines
                # indented deeper, or (a key's) the '-' items at its own column
                parent, slot, at = pending
                pending = None
                if col > at or (col == at and dash and type(parent) is dict):
                    parent[slot] = child = [] if dash else {}
                    stack.append((top_col, top))
                    top_col, top = col, child
            elif root is None:  # (a document indented as a whole is left to libyaml, below)
                root = top = [] if dash else {}
                top_col = 0
            while top_col > col or (top_col == col and not dash and type(top) is list):
                if not stack:
                    raise _NotPlain
                top_col, top = stack.pop()
            if top_col != col:
                raise _NotPlain  # a line indented deeper than its collection: a multi-line scalar, or not YAML
            if dash:
                if type(top) is not list:
                    raise _NotPlain
                if mode == _ITEM_EMPTY:
                    top.append(None)
                    pending = (top, len(top) - 1, col)
                    continue
                if mode == _ITEM_SCALAR:
                    top.append(value_of(value))
                    continue
                top.append(child := {})
                stack.append((top_col, top))
                top_col, top = col + offset, child
            elif type(top) is not dict:
                raise _NotPlain
            if value is None:
                top[key] = None
                pending = (top, key, top_col)
            else:
                scalar = values.get(value, missing)
                top[key] = value_of(value) if scalar is missing else scalar
        if root is not None or explicit:
            docs.append(root)
        return docs


#: ``_PlainReader._token``: a document marker line, and what a line with '-' (or without) holds.
_DOC = object()
_ITEM_EMPTY, _ITEM_SCALAR, _ITEM_MAPPING, _KEY = range(4)


def _documents(f: Path, reader: _PlainReader | None = None) -> list:
    """The documents of a policy file; ``reader``: one for the files of a set (it remembers the
    scalars it has read)."""
    try:
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{f}: cannot read: {exc}") from exc
    try:
        return (reader or _PlainReader()).documents(text)
    except _NotPlain:
        pass
    try:
        return list(yaml.load_all(text, Loader=_FastLoader))
    except yaml.YAMLError:
        pass  # libyaml words errors its own way (and refuses a few texts the pure loader reads): the pure one decides
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"{f}:{f' line {mark.line + 1}:' if mark else ''} invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc


def _items(doc) -> Iterable:
    if doc is None:
        return []
    if isinstance(doc, Mapping) and isinstance(doc.get("items"), list) and str(doc.get("kind", "")).endswith("List"):
        return doc["items"]
    return [doc]


_SPEC_KEYS = {"podSelector", "policyTypes", "ingress", "egress"}
_RULE_KEYS = {"ingress": {"from", "ports"}, "egress": {"to", "ports"}}
_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}


def _selector(obj, where: str) -> LabelSelector:
    if obj is None:
        return LabelSelector()
    if not isinstance(obj, Mapping) or set(obj) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"{where}: not a label selector")
    return LabelSelector.from_dict(obj, where)


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{where}: not a list")
    return value


def policy_from_dict(obj: Mapping, memo: dict | None = None) -> NetworkPolicy:
    """The NetworkPolicy of a parsed document, checked; ``memo``: the peers and ports read
    before, by their text (``load_policies`` shares one across a set: a client is a peer of
    every server it talks to, in thousands of policies)."""
    meta = _metadata(obj.get("metadata"))
    spec = _spec(obj.get("spec"))
    types = _policy_types(spec)
    return NetworkPolicy(
        namespace=meta.get("namespace") or "default",
        name=meta["name"],
        pod_selector=_selector(spec.get("podSelector"), "spec.podSelector"),
        policy_types=types,
        ingress=_rules(spec, "ingress", memo),
        egress=_rules(spec, "egress", memo),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
    )


def _metadata(meta) -> Mapping:
    """``metadata``, checked: a name, and where given a namespace (strings) and labels."""
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise ValueError("metadata: not a mapping")
    for key in ("name", "namespace"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ValueError(f"metadata.{key}: not a string")
    if not meta.get("name"):
        raise ValueError("metadata.name: missing")
    labels = meta.get("labels")
    if labels is not None:
        bad = labels_problem(labels)
        if bad:
            raise ValueError(f"metadata.labels{bad[0]}: {bad[1]}")
    return meta


def _spec(spec) -> Mapping:
    """``spec``, checked: a mapping of the known fields, with a podSelector."""
    if spec is None:
        raise ValueError("spec: missing")
    if not isinstance(spec, Mapping):
        raise ValueError("spec: not a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"spec: unknown field {sorted(unknown)[0]!r}")
    if "podSelector" not in spec:
        raise ValueError("spec.podSelector: missing (use {} to select every pod)")
    return spec


def _policy_types(spec: Mapping) -> tuple[str, ...]:
    types = spec.get("policyTypes")
    if types is not None:
        _list(types, "spec.policyTypes")
    if not types:  # missing or empty: Ingress, and Egress when there are egress rules (API defaulting)
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for t in types:
        if t not in ("Ingress", "Egress"):
            raise ValueError(f"spec.policyTypes: {t!r} is neither Ingress nor Egress")
    return tuple(types)


def _rules(spec: Mapping, direction: str, memo: dict | None = None) -> tuple[Rule, ...] | None:
    """``spec.ingress`` or ``spec.egress``: None when absent (no rule allows anything)."""
    if spec.get(direction) is None:
        return None
    return tuple(_rule(r, direction, f"spec.{direction}[{i}]", memo) for i, r in enumerate(_list(spec[direction], f"spec.{direction}")))


#: The peers and ports of the policy sets read and still in use, by their text: two sets read
#: one after the other (diff's base and new) share the objects of what they have in common, and
#: comparing their policies stops at identity.
_READ: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _remembered(read, obj, where: str, memo: dict | None):
    """``read(obj, where)``, remembered in ``memo`` by the text of ``obj`` (a dict of what YAML
    reads: its repr is one for equal values of equal types); what it reads to depends on
    nothing else. Errors are not remembered: they are raised again, with their own ``where``."""
    if memo is None or type(obj) is not dict:
        return read(obj, where)
    key = (read, repr(obj))
    found = memo.get(key)
    if found is None:
        found = _READ.get(key)
        if found is None:
            found = _READ[key] = read(obj, where)
        memo[key] = found
    return found


def _rule(r, direction: str, where: str, memo: dict | None = None) -> Rule:
    r = {} if r is None else r
    if not isinstance(r, Mapping):
        raise ValueError(f"{where}: not a mapping")
    if set(r) - _RULE_KEYS[direction]:
        raise ValueError(f"{where}: unknown field {sorted(set(r) - _RULE_KEYS[direction])[0]!r}")
    key = "from" if direction == "ingress" else "to"
    peers = None
    if r.get(key) is not None:
        peers = tuple(_remembered(_peer, p, f"{where}.{key}[{j}]", memo) for j, p in enumerate(_list(r[key], f"{where}.{key}")))
    ports = None
    if r.get("ports") is not None:
        ports = tuple(_remembered(_port, p, f"{where}.ports[{j}]", memo) for j, p in enumerate(_list(r["ports"], f"{where}.ports")))
    return Rule(peers, ports)


def _peer(p, where: str) -> PolicyPeer:
    if isinstance(p, Mapping):
        p = {k: v for k, v in p.items() if v is not None}  # a null selector is an absent one
    if not isinstance(p, Mapping) or not p or set(p) - _PEER_KEYS:
        raise ValueError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in p:
        if len(p) > 1:
            raise ValueError(f"{where}: ipBlock cannot be combined with selectors")
        return PolicyPeer(ip_block=_ip_block(p["ipBlock"], f"{where}.ipBlock"))
    return PolicyPeer(
        pod_selector=_selector(p["podSelector"], f"{where}.podSelector") if "podSelector" in p else None,
        namespace_selector=_selector(p["namespaceSelector"], f"{where}.namespaceSelector") if "namespaceSelector" in p else None,
    )


def _network(text, where: str):
    try:
        return ipaddress.ip_network(text if isinstance(text, str) else "-", strict=False)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a CIDR") from None


def _ip_block(block, where: str) -> IpBlock:
    if not isinstance(block, Mapping):
        raise ValueError(f"{where}: not a mapping")
    if block.get("cidr") is None:
        raise ValueError(f"{where}.cidr: missing")
    cidr = _network(block["cidr"], f"{where}.cidr")
    excepts = []
    for i, text in enumerate(_list(block.get("except") or [], f"{where}.except")):
        net = _network(text, f"{where}.except[{i}]")
        # The API server's rule: each except is a strict subset of the cidr.
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:
            raise ValueError(f"{where}.except[{i}]: {net} is not inside cidr {cidr}")
        excepts.append(str(net))
    return IpBlock(str(cidr), tuple(excepts))


_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME


def _port(p, where: str) -> PortSpec:
    if not isinstance(p, Mapping):
        raise ValueError(f"{where}: not a port")
    proto = str(p.get("protocol") or "TCP")
    if proto not in PROTOCOLS:
        raise ValueError(f"{where}.protocol: {proto!r} is not TCP, UDP or SCTP")
    port = p.get("port")
    if isinstance(port, bool) or (port is not None and not isinstance(port, (int, str))):
        raise ValueError(f"{where}.port: not a number or a name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise ValueError(f"{where}.port: {port} is not a port number (1-65535)")
    if isinstance(port, str) and (not _PORT_NAME.match(port) or "--" in port):
        raise ValueError(f"{where}.port: {port!r} is not a port name (up to 15 of a-z, 0-9 and '-', a letter among them)")
    end = p.get("endPort")
    if end is not None:
        if not isinstance(end, int) or isinstance(end, bool):
            raise ValueError(f"{where}.endPort: not a number")
        if not isinstance(port, int):
            raise ValueError(f"{where}.endPort: needs a numeric port")
        if end < port:
            raise ValueError(f"{where}.endPort: {end} is below port {port}")
        if end > 65535:
            raise ValueError(f"{where}.endPort: {end} is not a port number (1-65535)")
    return PortSpec(proto, port, end)


# --- evaluating ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace, labels, named ports, node) or an address."""

    address: str
    namespace: str | None = None  # None: not a pod (outside, a node, a host-network pod)
    labels: tuple[tuple[str, str], ...] = ()
    named_ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, port) declared by the pod
    node: str | None = None  # a pod's node; for a node address, the node's name
    name: str | None = None

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    denied_by: str | None = None  # "egress" or "ingress": the direction that denied it
    allowed_by: tuple[str, ...] = field(default=())  # "ns/policy" names that allowed it, both directions
    why: str = ""


def isolates(policy: NetworkPolicy, namespace: str, labels: Mapping[str, str], policy_type: str) -> bool:
    """Whether ``policy`` isolates a pod of ``namespace`` with ``labels`` in the direction
    ``policy_type`` (``Ingress``, ``Egress``): it is of that namespace, selects the pod and lists
    the direction in its policyTypes."""
    return policy.namespace == namespace and policy_type in policy.policy_types and policy.pod_selector.matches(labels)


def _policy_label(p: NetworkPolicy) -> str:
    return f"{p.namespace}/{p.name}"


def own_node(src: Endpoint, dst: Endpoint) -> bool:
    """Whether the connection is between a pod and its own node (always allowed)."""
    return (src.is_pod and not dst.is_pod and dst.node is not None and dst.node == src.node) or (
        dst.is_pod and not src.is_pod and src.node is not None and src.node == dst.node)


class PortProbes:
    """A list of (protocol, port) probes, and the probes that each rule's ports allow, as a
    bitmask over the list (bit i: ``ports[i]``), worked out once per rule (per destination's
    named ports where the rule names one): ``PolicyEngine.allowed_mask`` answers every probe of
    a (source, destination) pair with a few integer operations."""

    def __init__(self, ports: Iterable[tuple[str, int]]):
        self.ports = tuple(ports)
        self.full = (1 << len(self.ports)) - 1
        self._of_protocol: dict[str, list[tuple[int, int]]] = {}  # protocol -> [(port, bit)]
        self._every: dict[str, int] = {}  # protocol -> its probes
        for i, (proto, port) in enumerate(self.ports):
            self._of_protocol.setdefault(proto, []).append((port, 1 << i))
            self._every[proto] = self._every.get(proto, 0) | 1 << i
        self._ranges: dict[tuple[str, int, int], int] = {}
        self._rules: dict[tuple, tuple[Rule, int]] = {}  # the rule kept with its mask: ids stay unique
        self._protocols: dict[tuple, int] = {}

    def range_mask(self, protocol: str, first: int, last: int) -> int:
        """The probes of ``protocol`` from ``first`` to ``last``."""
        key = (protocol, first, last)
        mask = self._ranges.get(key)
        if mask is None:
            mask = self._ranges[key] = sum(bit for port, bit in self._of_protocol.get(protocol, ()) if first <= port <= last)
        return mask

    def _named_mask(self, name: str, protocol: str | None, dst: Endpoint) -> int:
        """The probes at the (protocol, number) ``dst`` declares its port ``name`` at, of
        ``protocol`` only unless None."""
        mask = 0
        for n, proto, number in dst.named_ports:
            if n == name and protocol in (None, proto):
                mask |= self.range_mask(proto, number, number)
        return mask

    def rule_mask(self, rule: Rule, dst: Endpoint) -> int:
        """The probes the ports of a NetworkPolicy rule match, towards ``dst`` (``_port_matches``)."""
        named = rule.ports is not None and any(isinstance(spec.port, str) for spec in rule.ports)
        key = (id(rule), dst.named_ports) if named else (id(rule),)
        found = self._rules.get(key)
        if found is None:
            if not rule.ports:  # missing or empty: every port
                mask = self.full
            else:
                mask = 0
                for spec in rule.ports:
                    if spec.port is None:  # every port of the protocol
                        mask |= self._every.get(spec.protocol, 0)
                    elif isinstance(spec.port, str):
                        mask |= self._named_mask(spec.port, spec.protocol, dst)
                    else:
                        mask |= self.range_mask(spec.protocol, spec.port, spec.end_port if spec.end_port is not None else spec.port)
            found = self._rules[key] = (rule, mask)
        return found[1]

    def protocols_mask(self, protocols: tuple | None, dst: Endpoint) -> int:
        """The probes a ClusterNetworkPolicy rule's ``protocols`` match, towards ``dst``
        (``_cluster_policy._protocol_matches``)."""
        if protocols is None:
            return self.full
        named = any(p[0] == "named" for p in protocols)
        key = (protocols, dst.named_ports) if named else (protocols,)
        mask = self._protocols.get(key)
        if mask is None:
            mask = 0
            for p in protocols:
                if p[0] == "named":
                    mask |= self._named_mask(p[1], None, dst)
                else:
                    mask |= self.range_mask(*p)
            self._protocols[key] = mask
        return mask


class PolicyEngine:
    def __init__(self, policies: Iterable[NetworkPolicy], namespace_labels: Mapping[str, Mapping[str, str]],
                 cluster: Iterable[ClusterPolicy] | None = None):
        # ClusterNetworkPolicies: given, else those ``load_policies`` found beside the policies.
        self.cluster = tuple(sorted(getattr(policies, "cluster", ()) if cluster is None else cluster,
                                    key=lambda c: (c.tier, c.priority, c.name)))
        self.by_namespace: dict[str, list[NetworkPolicy]] = {}
        for p in policies:
            self.by_namespace.setdefault(p.namespace, []).append(p)
        self.namespace_labels = {ns: dict(labels) for ns, labels in namespace_labels.items()}
        # Which policies select a pod depends only on its namespace and labels: remembered, since
        # a verify asks about the same pods for thousands of connections.
        self._ns_cache: dict[str, dict[str, str]] = {}
        self._selecting_cache: dict[tuple, list[NetworkPolicy]] = {}
        self._isolation_cache: dict[tuple, tuple | None] = {}
        self._rule_index: dict[int, tuple] = {}
        self._addresses: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._blocks: dict[int, tuple] = {}

    def _ns_labels(self, ns: str) -> dict[str, str]:
        labels = self._ns_cache.get(ns)
        if labels is None:
            labels = dict(self.namespace_labels.get(ns, {}))
            labels.setdefault(NAMESPACE_LABEL, ns)  # set on every namespace since 1.21
            self._ns_cache[ns] = labels
        return labels

    def _selecting(self, pod: Endpoint, direction: str) -> list[NetworkPolicy]:
        key = (pod.namespace, pod.labels, direction)
        found = self._selecting_cache.get(key)
        if found is None:
            kind = "Ingress" if direction == "ingress" else "Egress"
            labels = dict(pod.labels)
            found = [p for p in self.by_namespace.get(pod.namespace, ()) if isolates(p, pod.namespace, labels, kind)]
            self._selecting_cache[key] = found
        return found

    def evaluate(self, src: Endpoint, dst: Endpoint, protocol: str, port: int) -> Verdict:
        if own_node(src, dst):
            return Verdict(True, why="between a pod and its own node: always allowed")
        allowed_by: list[str] = []
        for direction, subject, peer in (("egress", src, dst), ("ingress", dst, src)):
            if not subject.is_pod:
                continue
            # The tiers in their order: Admin, then the pod's NetworkPolicies, then (for a pod they
            # do not isolate) Baseline; a tier that decides nothing hands over to the next.
            isolating = None
            for tier_name in ("Admin", "Baseline"):
                if tier_name == "Baseline":
                    isolating = self._selecting(subject, direction)
                    if isolating:
                        break
                tier = self._tier(tier_name, direction, subject, peer, dst, protocol, port)
                if isinstance(tier, Verdict):
                    return tier
                if tier is not None:
                    allowed_by.append(tier)
                    break
            if not isolating:
                continue
            matching = [p for p in isolating if any(self._rule_matches(r, p, peer, dst, protocol, port) for r in (getattr(p, direction) or ()))]
            if not matching:
                names = ", ".join(_policy_label(p) for p in isolating)
                return Verdict(False, denied_by=direction, why=f"{direction} of {subject.namespace}/{subject.name or subject.address} is isolated by {names}; none allows it")
            allowed_by += [_policy_label(p) for p in matching]
        return Verdict(True, allowed_by=tuple(dict.fromkeys(allowed_by)), why="allowed")

    def evaluate_ports(self, src: Endpoint, dst: Endpoint, ports: Sequence[tuple[str, int]]) -> list[bool]:
        """``evaluate(src, dst, protocol, port).allowed`` for each (protocol, port) of ``ports``."""
        probes = PortProbes(ports)
        mask = self.allowed_mask(src, dst, probes)
        return [bool(mask >> i & 1) for i in range(len(probes.ports))]

    def allowed_mask(self, src: Endpoint, dst: Endpoint, probes: PortProbes) -> int:
        """The probes ``evaluate`` allows from ``src`` to ``dst``, as a bitmask over
        ``probes.ports`` (bit i: the i-th): what the policies select and which of their rules
        match the peer are worked out once for every port. ``diff`` asks this of many pairs."""
        if own_node(src, dst):
            return probes.full
        return self.direction_mask("egress", src, dst, dst, probes) & self.direction_mask("ingress", dst, src, dst, probes)

    def direction_mask(self, direction: str, subject: Endpoint, peer: Endpoint, dst: Endpoint, probes: PortProbes) -> int:
        """The probes that ``direction`` (``egress``: ``subject`` is the source; ``ingress``: the
        destination) lets through, as ``evaluate`` decides it: the Admin tier, then the subject's
        isolating NetworkPolicies, else the Baseline tier (``allowed_mask`` is both directions'
        intersection, unless the pod and its own node are the ends)."""
        if not subject.is_pod:
            return probes.full
        accepted, rest = self._tier_mask("Admin", direction, subject, peer, dst, probes, probes.full) if self.cluster else (0, probes.full)
        isolation = self._isolation(subject, direction)
        if isolation is not None:
            every, by_label, others, blocks = isolation
            allowed = 0
            for rule in every:
                allowed |= probes.rule_mask(rule, dst)
            # Only the peer elements whose first matchLabels pair the pod carries can select it
            # (``_peers_match``); a rule allows its ports where any of its elements matches.
            elements = [e for kv in peer.labels for e in by_label.get(kv, ())] + others if peer.is_pod else blocks
            for policy, rule, pp in elements:
                mask = probes.rule_mask(rule, dst)
                if mask & ~allowed and self._peer_matches(pp, policy, peer):
                    allowed |= mask
            return accepted | (rest & allowed)
        baseline_accepted, baseline_rest = self._tier_mask("Baseline", direction, subject, peer, dst, probes, rest)
        return accepted | baseline_accepted | baseline_rest

    def _isolation(self, subject: Endpoint, direction: str) -> tuple | None:
        """The rules of the policies that isolate ``subject`` in ``direction`` (None: none
        does), for ``direction_mask``: those that match every peer, and the peer elements of the
        others, each with its policy and rule, indexed as ``_peer_index`` does (by the first
        label their pod selector requires; the rest; the ipBlocks)."""
        key = (subject.namespace, subject.labels, direction)
        if key in self._isolation_cache:
            return self._isolation_cache[key]
        isolating = self._selecting(subject, direction)
        found = None
        if isolating:
            every: list[Rule] = []
            by_label: dict[tuple[str, str], list[tuple]] = {}
            others: list[tuple] = []
            blocks: list[tuple] = []
            for p in isolating:
                for rule in getattr(p, direction) or ():
                    if not rule.peers:  # missing or empty: every peer
                        every.append(rule)
                        continue
                    rule_by_label, rule_others, rule_blocks = self._peer_index(rule)
                    for kv, elements in rule_by_label.items():
                        by_label.setdefault(kv, []).extend((p, rule, pp) for pp in elements)
                    others += [(p, rule, pp) for pp in rule_others]
                    blocks += [(p, rule, pp) for pp in rule_blocks]
            found = (every, by_label, others, blocks)
        self._isolation_cache[key] = found
        return found

    def _tier_mask(self, tier: str, direction: str, subject: Endpoint, peer: Endpoint, dst: Endpoint, probes: PortProbes,
                   undecided: int) -> tuple[int, int]:
        """Of the probes ``undecided``, those the ClusterNetworkPolicies of ``tier`` accept, and
        those they leave to the next tier (no rule matched, or Pass); they deny the others. Each
        probe is decided by the first rule that matches its protocol and port (``decide``)."""
        accepted = passed = 0
        if self.cluster:
            for rule in candidates(self.cluster, tier, direction, subject, peer, self._ns_labels):
                hit = probes.protocols_mask(rule.protocols, dst) & undecided
                undecided &= ~hit
                if rule.action == "Accept":
                    accepted |= hit
                elif rule.action == "Pass":
                    passed |= hit
        return accepted, undecided | passed

    def _tier(self, tier: str, direction: str, subject: Endpoint, peer: Endpoint, dst: Endpoint, protocol: str, port: int):
        """What the ClusterNetworkPolicies of ``tier`` decide for one direction: a denying
        Verdict, the name of the policy that accepts it, or None (no rule matched, or Pass)."""
        if not self.cluster:
            return None
        found = decide(self.cluster, tier, direction, subject, peer, dst, protocol, port, self._ns_labels)
        if found is None or found[0] == "Pass":
            return None
        action, policy, rule = found
        if action == "Accept":
            return policy.label
        who = f"{subject.namespace}/{subject.name or subject.address}"
        return Verdict(False, denied_by=direction, why=f"{direction} of {who} is denied by {policy.label}, rule {rule.name or '?'}")

    def _rule_matches(self, rule: Rule, policy: NetworkPolicy, peer: Endpoint, dst: Endpoint, protocol: str, port: int) -> bool:
        if rule.ports:  # missing or empty: every port
            if not any(self._port_matches(p, dst, protocol, port) for p in rule.ports):
                return False
        return self._peers_match(rule, policy, peer)

    def _peers_match(self, rule: Rule, policy: NetworkPolicy, peer: Endpoint) -> bool:
        """Whether ``peer`` is among the peers of ``rule`` (of ``policy``), whatever the port."""
        if not rule.peers:  # missing or empty: every peer
            return True
        by_label, others, blocks = self._peer_index(rule)
        if not peer.is_pod:
            return any(self._peer_matches(pp, policy, peer) for pp in blocks)
        # Only the elements whose first matchLabels pair the pod carries can select it.
        candidates = [pp for kv in peer.labels for pp in by_label.get(kv, ())]
        return any(self._peer_matches(pp, policy, peer) for pp in (*candidates, *others))

    def _peer_index(self, rule: Rule):
        """A rule's peer elements by the first label their pod selector requires: a rule generated
        for a busy server lists dozens of clients, and a connection matches at most a few."""
        index = self._rule_index.get(id(rule))
        if index is None:
            by_label: dict[tuple[str, str], list[PolicyPeer]] = {}
            others, blocks = [], []
            for pp in rule.peers:
                if pp.ip_block is not None:
                    blocks.append(pp)
                elif pp.pod_selector is not None and pp.pod_selector.match_labels:
                    by_label.setdefault(pp.pod_selector.match_labels[0], []).append(pp)
                else:
                    others.append(pp)
            index = self._rule_index[id(rule)] = (by_label, others, blocks)
        return index

    def _address(self, address: str):
        """``ipaddress.ip_address``, remembered: a diff asks about the same few addresses often."""
        ip = self._addresses.get(address)
        if ip is None:
            ip = self._addresses[address] = ipaddress.ip_address(address)
        return ip

    def _block(self, block: IpBlock):
        """An ipBlock's cidr and excepts as networks, parsed once."""
        found = self._blocks.get(id(block))
        if found is None:  # the block is kept with them: ids stay unique
            found = self._blocks[id(block)] = (block, ipaddress.ip_network(block.cidr), tuple(ipaddress.ip_network(e) for e in block.except_))
        return found[1:]

    @staticmethod
    def _port_matches(spec: PortSpec, dst: Endpoint, protocol: str, port: int) -> bool:
        if spec.protocol != protocol:
            return False
        if spec.port is None:
            return True
        if isinstance(spec.port, str):
            return any(name == spec.port and proto == protocol and number == port for name, proto, number in dst.named_ports)
        if spec.end_port is not None:
            return spec.port <= port <= spec.end_port
        return spec.port == port

    def _peer_matches(self, pp: PolicyPeer, policy: NetworkPolicy, peer: Endpoint) -> bool:
        if pp.ip_block is not None:
            if peer.is_pod:
                return False  # ipBlocks are for addresses outside the pod network (see the module doc)
            ip = self._address(peer.address)
            net, excepts = self._block(pp.ip_block)
            if ip.version != net.version or ip not in net:
                return False
            return not any(ip in e for e in excepts if e.version == ip.version)
        if not peer.is_pod:
            return False
        if pp.namespace_selector is not None:
            if not pp.namespace_selector.matches(self._ns_labels(peer.namespace)):
                return False
        elif peer.namespace != policy.namespace:
            return False
        return pp.pod_selector is None or pp.pod_selector.matches(dict(peer.labels))
