"""An outside judge of NetworkPolicies for the tests: what do these policy files allow?

Two questions, answered by engines this project did not write:

- `allowed_connections` / `judge`: which (source, destination, protocol, port) connections the
  policies allow between the workloads of a cluster inventory, and to or from given outside
  addresses, as IBM's network-config-analyzer (NCA, PyPI ``network-config-analyzer``) computes it.
- `validate_documents`: is every document a valid Kubernetes object for a given version, by the
  OpenAPI schema that ``kubernetes-validate`` ships (strict: unknown fields are errors), plus the
  few NetworkPolicy rules the API server enforces that no schema can express.

Names in the answers: a workload is ``"<namespace>/<Kind>/<name>"`` after the top of its owner
chain (Pod -> ReplicaSet -> Deployment, Job -> CronJob, else the owner's kind and name; a pod with
no owner is ``<namespace>/Pod/<name>``); an outside address is the name the caller gave it in
``external``. Protocols are upper case (TCP, UDP, SCTP), ports are numbers.

How NCA is used, and what it does that one would not guess (NCA 2.1.0):

- **In-process, not the ``nca`` command.** ``nca --connectivity POLICIES --ns_list F --pod_list F``
  takes ~0.4 s a call, nearly all of it Python start-up and imports; the analysis itself takes a
  few ms. This module builds NCA's ``NetworkConfig`` with ``ResourcesHandler().get_network_config``
  (what the command does), asks ``NetworkConfig.allowed_connections()`` for the allowed-connection
  set, exactly as its ``ConnectivityMapQuery`` does (with the query-scoped peer domains set and
  restored), and then asks that set directly whether each (source pod, destination pod, protocol,
  port) cube is contained in it. No text output is parsed. Cost: ~0.2 s to import NCA once, then
  ~5 ms to read the inputs plus ~80 us per (pod pair x port) question: ~25 ms for 6 pods, 3
  outside addresses and 5 ports (the `nca` command: ~0.45 s for the same). A test
  (test_policy_judge.py::test_in_process_matches_the_nca_command) checks that the answers match
  the command's own ``txt_no_fw_rules`` output, so an NCA upgrade that changes these internals
  fails loudly. NCA keeps module-level singletons (``BasePeerSet``, ``DimensionsManager``,
  ``NcaLogger``); each call resets them, so calls are independent (not thread-safe).
- **Outputs of the command**, for the record: ``-o txt`` (default) prints minimized firewall
  rules grouped by labels; ``txt_no_fw_rules`` one line per endpoint pair and connection cube
  (``shop/api-x => shop/db-0 : {protocols:TCP,dst_ports:5432}``, ``All connections``, IP ranges
  as ``a.b.c.d-e.f.g.h``; a pod to itself is left out); also csv, md, yaml, dot, jpg, html, and
  json (missing from ``--help`` but accepted by ``--connectivity``). ``--output_endpoints pods``
  names pods; the default ``deployments`` names workloads by NCA's own guess (a ReplicaSet whose
  name ends in ``-<hex digits>`` becomes ``ns/<rest>(Deployment-StatefulSet)``, else
  ``ns/<name>(ReplicaSet)``; real pod-template-hashes are not always hex), so this module names
  workloads itself from the inventory.
- **Inputs.** ``--ns_list``/``--pod_list``/``--resource_list`` each take files or directories
  (YAML or JSON, kubectl ``List`` objects accepted); ``--resource_list`` alone is also searched
  for policies. With no topology and no policy input at all, NCA silently runs ``kubectl`` against
  the current context: this module always passes an explicit (possibly empty) policy list and
  an inventory file, so that can never happen. Only files named ``*.yaml``, ``*.yml`` or
  ``*.json`` are read; others are skipped without a word, and so is a file with a YAML syntax
  error (one line on stderr): either would leave the policies out and make everything look
  allowed. This module therefore refuses other suffixes, parses every file first (refusing
  duplicate keys, which PyYAML and NCA both silently resolve to the last one, and kubectl
  rejects), and checks that NCA loaded exactly as many NetworkPolicies as the files hold.
  A second policy with the same namespace/name is ignored by NCA with a warning (``kubectl apply``
  would replace the first): refused here too.
- **Only Namespaces and Pods go to NCA.** NCA also turns every Deployment, ReplicaSet,
  StatefulSet, DaemonSet, Job, CronJob and ReplicationController it is given into made-up pods
  (``<name>-1``, ``<name>-2``, from the template's labels), which would double the real pods; so
  the inventory handed to NCA holds only the Namespace and Pod objects. Pods with
  ``hostNetwork: true`` are left out (NetworkPolicy does not apply to them, NCA would treat them
  as ordinary pods), and so are pods in phase Succeeded or Failed.
- **Pod addresses are ignored.** NCA models pods as abstract endpoints and ipBlocks as the
  outside world: an ipBlock that covers the pod network does *not* select any pod, and an
  ``external`` address asked about here is never a pod, even when it equals a pod IP. (Kubernetes
  leaves it to the CNI whether ipBlock matches pod IPs; many CNIs do.) Connections between two
  outside addresses are not modelled (dropped from NCA's answers).
- **At most two pods of a kind.** Pods of one namespace, owner and label set are isomorphic;
  NCA keeps the first two and drops the rest. Answers are per workload, so nothing is lost: the
  pods NCA kept stand for their workload (`Verdict.workloads` names them).
- **A pod to itself is judged like any other pair**: a policy that selects a pod and does not
  allow its own label set denies the pod's traffic to itself (and to its replicas). A workload's
  connection to itself is judged over all pairs of its pods, itself included.
- **Named ports** are resolved per destination pod from its containers' ``ports[].name``; the
  protocol must match too (a rule ``port: dns, protocol: TCP`` does not open a port named ``dns``
  that is declared UDP). A named port no destination declares allows nothing (NCA prints a
  warning, kept in `Verdict.messages`).
- **DNS "LiveSim".** When a policy selects pods labelled like kube-dns (``k8s-app: kube-dns``)
  and the inventory has none, NCA adds a made-up ``kube-system/kube-dns-livesim`` pod (plus an
  ingress-controller or Istio gateway pod for other references). Such pods are not in the
  inventory and are left out of the answers; include the real kube-dns pods in the inventory to
  be judged on them.
- **Namespace labels.** NCA gives every namespace the ``kubernetes.io/metadata.name`` label, as
  the API server does since 1.21; a namespace that only pods mention gets no other label.
- **NCA's own parser is stricter than Kubernetes in places**, and raises `PolicyJudgeError`
  here: a rule list (``ingress``/``egress``) whose direction is missing from ``policyTypes`` (the
  API server accepts it and ignores the rules), and any label value in a policy that looks like
  an integer even when quoted (``version: "2"``), because NCA's YAML reader turns every scalar
  that ``int()`` accepts into an int and then rejects the non-string label value. For the same
  reason a quoted port ``"80"`` becomes port 80 for NCA, while the API server rejects it as a port
  name (`validate_documents` reports that).

Dependencies: network-config-analyzer 2.1.0 pins exact versions (PyYAML==6.0.2, networkx==3.2.1,
lxml==5.3.0, beautifulsoup4==4.12.3, ghapi==1.0.6, greenery==4.0.0). kubernetes 37 needs
PyYAML>=6.0.3, so with the test extra pip settles on the kubernetes client 36.

kubernetes-validate 1.37: schemas for Kubernetes 1.25 to 1.37 are installed with it; the schema
used is the newest one not newer than the version asked for. Its ``validate()`` raises at the
first error only, so this module builds the same validator (its ``utils.schema_contents``, the
same schema paths) and collects every error. The schema does not check formats or enums: a port
name, a protocol (``tcp``), a ``policyTypes`` value (``Ingres``), a CIDR or an object name all
pass it; `_network_policy_rules` checks those the way the API server does. Kinds without a
schema (custom resources) are problems, except ``Kustomization``, which gets a small check of its
own (known top-level fields, ``resources`` that exist next to it).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import yaml

DEFAULT_KUBERNETES_VERSION = "1.30"
PROTOCOLS = ("TCP", "UDP", "SCTP")


class PolicyJudgeError(Exception):
    """The judge could not answer: bad input, or NCA did not read what it was given."""


class Connection(NamedTuple):
    src: str
    dst: str
    protocol: str
    port: int


@dataclass(frozen=True)
class Verdict:
    """What NCA says the policies allow.

    allowed: workload/outside-address connections allowed for every pair of their pods.
    partial: allowed for some pod pairs and not others (the policies treat replicas differently).
    pod_allowed: the same question per pod (``<namespace>/<pod>``) and outside address.
    workloads: each workload and the pods NCA modelled for it.
    messages: what NCA printed (warnings about named ports, missing namespaces, ...).
    """

    allowed: frozenset[Connection]
    partial: frozenset[Connection]
    pod_allowed: frozenset[Connection]
    workloads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    messages: str = ""


# --- inputs --------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, as the API server's decoder does."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_documents(path: Path) -> list:
    """Every non-empty YAML document of a file (duplicate keys are an error)."""
    try:
        return [d for d in yaml.load_all(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise PolicyJudgeError(f"{path}: not valid YAML: {exc}") from exc


def _flatten(objects: Iterable) -> Iterable[dict]:
    for obj in objects:
        if isinstance(obj, Mapping) and str(obj.get("kind", "")).endswith("List") and "items" in obj:
            yield from _flatten(obj.get("items") or ())
        elif isinstance(obj, Mapping):
            yield obj


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def _controller(obj: Mapping | None) -> tuple[str, str] | None:
    refs = [r for r in _meta(obj or {}).get("ownerReferences") or () if isinstance(r, Mapping)]
    ctl = [r for r in refs if r.get("controller")] or refs
    return (str(ctl[0].get("kind")), str(ctl[0].get("name"))) if ctl else None


def default_workload_of(pod: Mapping, objects: Mapping[tuple[str, str, str], Mapping]) -> str:
    """``<namespace>/<Kind>/<name>`` of the top of the pod's owner chain.

    objects: the inventory's objects by (kind, namespace, name), to follow ReplicaSet ->
    Deployment and Job -> CronJob. A missing ReplicaSet whose name is ``<deployment>-<the pod's
    pod-template-hash>`` is taken for that Deployment's.
    """
    meta = _meta(pod)
    ns = meta.get("namespace") or "default"
    owner = _controller(pod)
    if owner is None or owner[0] == "Node":  # bare and static (mirror) pods
        return f"{ns}/Pod/{meta.get('name')}"
    kind, name = owner
    parent_kind = {"ReplicaSet": "Deployment", "Job": "CronJob"}.get(kind)
    if parent_kind:
        own = objects.get((kind, ns, name))
        parent = _controller(own)
        if parent and parent[0] == parent_kind:
            return f"{ns}/{parent_kind}/{parent[1]}"
        pod_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if own is None and kind == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
            return f"{ns}/Deployment/{name[: -len(pod_hash) - 1]}"
    return f"{ns}/{kind}/{name}"


def _ports(ports: Iterable[tuple[str, int] | int]) -> list[tuple[str, int]]:
    out = set()
    for p in ports:
        proto, num = ("TCP", p) if isinstance(p, int) else (str(p[0]).upper(), p[1])
        if proto not in PROTOCOLS or not isinstance(num, int) or not 1 <= num <= 65535:
            raise PolicyJudgeError(f"port of interest {p!r}: want (TCP|UDP|SCTP, 1..65535) or a TCP port number")
        out.add((proto, num))
    if not out:
        raise PolicyJudgeError("no ports of interest given")
    return sorted(out)


def _policy_documents(policy_files: Iterable[Path]) -> tuple[list[Path], int]:
    """The files, and how many NetworkPolicies they hold; refuses what NCA would skip or drop."""
    files, seen = [], {}
    for path in map(Path, policy_files):
        if path.suffix not in (".yaml", ".yml", ".json"):
            raise PolicyJudgeError(f"{path}: NCA reads only *.yaml, *.yml and *.json files")
        if not path.is_file():
            raise PolicyJudgeError(f"{path}: no such file")
        for doc in load_documents(path):
            for obj in _flatten([doc]):
                if obj.get("kind") != "NetworkPolicy":
                    continue
                key = (_meta(obj).get("namespace") or "default", _meta(obj).get("name"))
                if key in seen:
                    raise PolicyJudgeError(f"{path}: NetworkPolicy {key[0]}/{key[1]} also in {seen[key]}")
                seen[key] = path
        files.append(path)
    return files, len(seen)


# --- NCA -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _captured_output(buf: io.StringIO):
    """Send everything NCA prints into buf, including its modules' own `from sys import stderr`."""
    patched = []
    for name, mod in list(sys.modules.items()):
        if (name == "nca" or name.startswith("nca.")) and hasattr(mod, "stderr") and not isinstance(mod.stderr, type(sys)):
            patched.append((mod, mod.stderr))
            mod.stderr = buf
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        for mod, original in patched:
            mod.stderr = original
        for name, mod in list(sys.modules.items()):  # imported meanwhile: bound to buf for good
            if (name == "nca" or name.startswith("nca.")) and getattr(mod, "stderr", None) is buf:
                mod.stderr = sys.stderr


@contextlib.contextmanager
def _nca_config(policy_files: Iterable[Path], inventory_objects: Iterable[Mapping]):
    """(NetworkConfig, captured output, {pod full name: pod object}) for the files and inventory."""
    from nca.CoreDS.DimensionsManager import DimensionsManager
    from nca.CoreDS.Peer import BasePeerSet
    from nca.NetworkConfig.ResourcesHandler import ResourcesHandler
    from nca.Utils.NcaLogger import NcaLogger

    files, expected = _policy_documents(policy_files)
    objects = list(_flatten(inventory_objects))
    namespaces = [o for o in objects if o.get("kind") == "Namespace"]
    pods = {}
    for o in objects:
        if o.get("kind") != "Pod" or (o.get("spec") or {}).get("hostNetwork"):
            continue
        if (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        pods[f"{_meta(o).get('namespace') or 'default'}/{_meta(o).get('name')}"] = o
    buf = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="policy-judge-") as tmp:
        inventory = Path(tmp) / "inventory.json"
        inventory.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": namespaces + list(pods.values())}))
        BasePeerSet.reset()
        DimensionsManager.reset()
        logger = NcaLogger()
        logger.unmute()
        logger.collect_msgs()
        logger.flush_messages(silent=True)
        with _captured_output(buf):
            try:
                config = ResourcesHandler().get_network_config([str(f) for f in files], [str(inventory)], [str(inventory)], None)
            except SyntaxError as exc:  # NCA's parse errors: (msg, (file, line, column, ''))
                where = f"{exc.filename}:{exc.lineno}: " if exc.filename else ""
                raise PolicyJudgeError(f"NCA rejected a policy: {where}{exc.msg}\n{buf.getvalue()}") from exc
            finally:
                logger.unmute()
        loaded = sum(1 for p in config.policies_container.policies.values() if type(p).__name__ == "K8sNetworkPolicy")
        if loaded != expected:
            raise PolicyJudgeError(f"NCA loaded {loaded} of {expected} NetworkPolicies:\n{buf.getvalue()}")
        yield config, buf, pods


@contextlib.contextmanager
def _query_scope(config):
    """Set the src/dst peer domains to this config's peers, as NCA's queries do, and restore them."""
    from nca.CoreDS.DimensionsManager import DimensionsManager
    from nca.CoreDS.Peer import BasePeerSet

    peers = config.peer_container.get_all_peers_group(True, True, True)
    domain = BasePeerSet().get_peer_interval_of(peers)
    DimensionsManager().set_domain("src_peers", DimensionsManager.DimensionType.IntervalSet, domain)
    DimensionsManager().set_domain("dst_peers", DimensionsManager.DimensionType.IntervalSet, domain)
    policies = list(config.policies_container.policies.values())
    for policy in policies:
        policy.reorganize_props_by_new_domains()
    try:
        yield
    finally:
        DimensionsManager.reset()
        for policy in policies:
            policy.restore_props()


def judge(
    policy_files: Iterable[str | Path],
    inventory_objects: Iterable[Mapping],
    ports: Iterable[tuple[str, int] | int],
    *,
    external: Mapping[str, str] | None = None,
    workload_of: Callable[[Mapping, Mapping[tuple[str, str, str], Mapping]], str] = default_workload_of,
) -> Verdict:
    """What the NetworkPolicies in policy_files allow between the inventory's workloads.

    inventory_objects: Namespaces (with labels), Pods (labels, namespace, ownerReferences,
        container ports) and their owners (ReplicaSets, Jobs: to name workloads), as dicts in the
        API's shape; kubectl ``List`` objects are unpacked.
    ports: the (protocol, port) pairs to ask about; a bare int is a TCP port.
    external: outside endpoints to ask about too, name -> address or CIDR (a CIDR counts as
        allowed only when all of it is). Asked as source to every workload and as destination
        from every workload; never as a pod (NCA ignores pod IPs).
    """
    from nca.CoreDS.ConnectivityProperties import ConnectivityProperties
    from nca.CoreDS.Peer import IpBlock, Pod, PeerSet
    from nca.CoreDS.PortSet import PortSet
    from nca.CoreDS.ProtocolSet import ProtocolSet
    from nca.Resources.PolicyResources.NetworkPolicy import PolicyConnectionsFilter

    wanted = _ports(ports)
    inventory_objects = list(_flatten(inventory_objects))
    by_key = {(o.get("kind"), _meta(o).get("namespace") or "default", _meta(o).get("name")): o for o in inventory_objects}
    external = dict(external or {})
    with _nca_config(policy_files, inventory_objects) as (config, buf, pods):
        endpoints: dict[str, list[tuple[str, object]]] = defaultdict(list)  # name -> [(pod or address name, NCA peer)]
        for peer in config.peer_container.get_all_peers_group():
            if isinstance(peer, Pod) and peer.full_name() in pods:  # not LiveSim's made-up pods
                endpoints[workload_of(pods[peer.full_name()], by_key)].append((peer.full_name(), peer))
        clash = set(external) & set(endpoints)
        if clash:
            raise PolicyJudgeError(f"external names {sorted(clash)} are also workload names")
        for name, address in external.items():
            try:
                endpoints[name].append((name, IpBlock(str(ipaddress.ip_network(address, strict=False)))))
            except ValueError as exc:
                raise PolicyJudgeError(f"external {name}: {exc}") from exc
        with _query_scope(config):
            conns = config.allowed_connections(res_conns_filter=PolicyConnectionsFilter.only_all_allowed_connections())
            allowed_set = conns.all_allowed_conns
            cubes = {(proto, port): {"protocols": ProtocolSet.get_protocol_set_with_single_protocol(proto),
                                     "dst_ports": PortSet.make_port_set_with_range(port, port)} for proto, port in wanted}
            pod_allowed, allowed, partial = set(), set(), set()
            for src, src_peers in endpoints.items():
                for dst, dst_peers in endpoints.items():
                    if src in external and dst in external:
                        continue  # NCA does not model outside-to-outside traffic
                    for (proto, port), dims in cubes.items():
                        hits = 0
                        for src_name, src_peer in src_peers:
                            for dst_name, dst_peer in dst_peers:
                                q = ConnectivityProperties.make_conn_props_from_dict(
                                    {"src_peers": PeerSet({src_peer}), "dst_peers": PeerSet({dst_peer}), **dims})
                                if q.contained_in(allowed_set):
                                    hits += 1
                                    pod_allowed.add(Connection(src_name, dst_name, proto, port))
                        if hits == len(src_peers) * len(dst_peers):
                            allowed.add(Connection(src, dst, proto, port))
                        elif hits:
                            partial.add(Connection(src, dst, proto, port))
        workloads = {w: tuple(sorted(n for n, _ in e)) for w, e in sorted(endpoints.items()) if w not in external}
        return Verdict(frozenset(allowed), frozenset(partial), frozenset(pod_allowed), workloads, buf.getvalue())


def allowed_connections(
    policy_files: Iterable[str | Path],
    inventory_objects: Iterable[Mapping],
    ports: Iterable[tuple[str, int] | int],
    *,
    external: Mapping[str, str] | None = None,
) -> set[Connection]:
    """The (src, dst, protocol, port) connections allowed, for the ports of interest.

    See `judge` for the arguments. Raises PolicyJudgeError when a connection is allowed for some
    pods of a workload and not others: the answer per workload would then be a lie.
    """
    verdict = judge(policy_files, inventory_objects, ports, external=external)
    if verdict.partial:
        raise PolicyJudgeError("allowed for some pods of a workload only: "
                               + ", ".join(map(str, sorted(verdict.partial))) + "\nper pod: "
                               + ", ".join(map(str, sorted(verdict.pod_allowed))))
    return set(verdict.allowed)


def nca_report(policy_files: Iterable[str | Path], inventory_objects: Iterable[Mapping], output_format: str = "txt") -> str:
    """NCA's own connectivity map (firewall-rule text by default), for failure messages."""
    from nca.NetworkConfig.NetworkConfigQuery import ConnectivityMapQuery
    from nca.Utils.OutputConfiguration import OutputConfiguration

    with _nca_config(policy_files, inventory_objects) as (config, buf, _):
        query = ConnectivityMapQuery(config, OutputConfiguration({"outputFormat": output_format, "outputEndpoints": "pods"}))
        with _captured_output(buf):
            _, output, _ = query.execute_and_compute_output_in_required_format()
        return output if isinstance(output, str) else json.dumps(output, indent=1)


# --- validation ----------------------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "components", "namespace", "namePrefix", "nameSuffix",
    "commonLabels", "labels", "commonAnnotations", "patches", "patchesStrategicMerge", "patchesJson6902",
    "images", "replicas", "configMapGenerator", "secretGenerator", "generatorOptions", "generators",
    "transformers", "validators", "crds", "openapi", "buildMetadata", "sortOptions", "replacements", "vars",
    "helmCharts", "helmGlobals", "bases", "configurations", "inventory",
}


@lru_cache(maxsize=None)
def _schema_validator(kind: str, api_version: str, version: str, strict: bool):
    """kubernetes-validate's schema for kind/apiVersion, as its validate() builds it; None if it has none."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    wanted = utils.major_minor(version.lstrip("v"))
    known = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted]
    if not known or wanted > utils.major_minor(utils.latest_version()):
        raise PolicyJudgeError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{known[-1]}-local{'-strict' if strict else ''}"
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    definitions = utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _path(parts: Iterable) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _selector_rules(sel, where: str) -> list[str]:
    problems = []
    if not isinstance(sel, Mapping):
        return problems  # the schema reports the type
    for key, value in (sel.get("matchLabels") or {}).items():
        problems += _label_key(key, f"{where}.matchLabels")
        if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.match(value)):
            problems.append(f"{where}.matchLabels.{key}: invalid label value {value!r}")
    for i, expr in enumerate(sel.get("matchExpressions") or ()):
        if not isinstance(expr, Mapping):
            continue
        at = f"{where}.matchExpressions[{i}]"
        problems += _label_key(expr.get("key", ""), at)
        op, values = expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn") and not values:
            problems.append(f"{at}.values: must be specified when operator is {op}")
        elif op in ("Exists", "DoesNotExist") and values:
            problems.append(f"{at}.values: may not be specified when operator is {op}")
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            problems.append(f"{at}.operator: not a valid selector operator: {op!r}")
        for v in values:
            if not isinstance(v, str) or len(v) > 63 or (v and not _LABEL_NAME.match(v)):
                problems.append(f"{at}.values: invalid label value {v!r}")
    return problems


def _label_key(key, where: str) -> list[str]:
    if not isinstance(key, str):
        return [f"{where}: label key {key!r} is not a string"]
    prefix, _, name = key.rpartition("/")
    if (not name or len(name) > 63 or not _LABEL_NAME.match(name)
            or ("/" in key and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))):
        return [f"{where}: invalid label key {key!r}"]
    return []


def _network_policy_rules(doc: Mapping) -> list[str]:
    """What the API server's NetworkPolicy validation checks beyond the schema."""
    problems = []
    meta, spec = _meta(doc), doc.get("spec")
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    if namespace is None:
        problems.append("metadata.namespace: missing (kubectl would use whatever namespace its context has)")
    elif not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        problems.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    if not isinstance(spec, Mapping):
        return problems
    problems += _selector_rules(spec.get("podSelector"), "spec.podSelector")
    types = spec.get("policyTypes") or []
    if isinstance(types, list):
        if len(types) > 2:
            problems.append("spec.policyTypes: at most 2 entries")
        problems += [f"spec.policyTypes[{i}]: {t!r} is not Ingress or Egress" for i, t in enumerate(types)
                     if t not in ("Ingress", "Egress")]
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for r, rule in enumerate(spec.get(direction) or ()):
            if not isinstance(rule, Mapping):
                continue
            for i, port in enumerate(rule.get("ports") or ()):
                if isinstance(port, Mapping):
                    problems += _port_rules(port, f"spec.{direction}[{r}].ports[{i}]")
            for i, peer in enumerate(rule.get(peers_key) or ()):
                if isinstance(peer, Mapping):
                    problems += _peer_rules(peer, f"spec.{direction}[{r}].{peers_key}[{i}]")
    return problems


def _port_rules(port: Mapping, at: str) -> list[str]:
    problems = []
    proto, num, end = port.get("protocol"), port.get("port"), port.get("endPort")
    if proto is not None and proto not in PROTOCOLS:
        problems.append(f"{at}.protocol: {proto!r} is not one of TCP, UDP, SCTP")
    if isinstance(num, bool):
        pass  # the schema reports the type
    elif isinstance(num, int) and not 1 <= num <= 65535:
        problems.append(f"{at}.port: {num} is not between 1 and 65535")
    elif isinstance(num, str) and (len(num) > 15 or not _PORT_NAME.match(num) or "--" in num
                                   or not re.search("[a-z]", num)):
        problems.append(f"{at}.port: {num!r} is not a valid port name (IANA_SVC_NAME: at most 15 characters "
                        "a-z, 0-9 and '-', with at least one letter)")
    if end is not None and isinstance(end, int) and not isinstance(end, bool):
        if not isinstance(num, int):
            problems.append(f"{at}.endPort: may not be set unless port is a number")
        elif end < num or end > 65535:
            problems.append(f"{at}.endPort: must be at least port ({num}) and at most 65535")
    return problems


def _peer_rules(peer: Mapping, at: str) -> list[str]:
    problems = []
    fields = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not fields:
        problems.append(f"{at}: must specify a peer")
    if "ipBlock" in fields and len(fields) > 1:
        problems.append(f"{at}: ipBlock may not be combined with podSelector or namespaceSelector")
    for key in ("podSelector", "namespaceSelector"):
        problems += _selector_rules(peer.get(key), f"{at}.{key}")
    block = peer.get("ipBlock")
    if isinstance(block, Mapping):
        try:
            cidr = ipaddress.ip_network(str(block.get("cidr")), strict=False)
        except ValueError:
            return problems + [f"{at}.ipBlock.cidr: {block.get('cidr')!r} is not a CIDR"]
        for i, exc in enumerate(block.get("except") or ()):
            try:
                net = ipaddress.ip_network(str(exc), strict=False)
            except ValueError:
                problems.append(f"{at}.ipBlock.except[{i}]: {exc!r} is not a CIDR")
                continue
            if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:
                problems.append(f"{at}.ipBlock.except[{i}]: {exc} must be a strict subset of {cidr}")
    return problems


def _kustomization_rules(doc: Mapping, path: Path) -> list[str]:
    problems = []
    if doc.get("apiVersion") not in ("kustomize.config.k8s.io/v1beta1", "kustomize.config.k8s.io/v1"):
        problems.append(f"apiVersion: {doc.get('apiVersion')!r} is not kustomize.config.k8s.io/v1beta1")
    problems += [f"{k}: not a Kustomization field" for k in sorted(set(doc) - _KUSTOMIZATION_FIELDS)]
    resources = doc.get("resources") or []
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        problems.append("resources: must be a list of file names")
    else:
        problems += [f"resources: {r} does not exist next to {path.name}" for r in resources
                     if "://" not in r and not (path.parent / r).exists()]
    return problems


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
        else:
            out.append(p)
    return out


def validate_documents(paths: Iterable[str | Path], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
                       *, strict: bool = True) -> list[str]:
    """Problems with any document of any file (directories: their *.yaml, *.yml, *.json); [] if none.

    Each document must be an object the API server of `kubernetes_version` would accept: by the
    OpenAPI schema (strict: unknown fields are errors) and, for NetworkPolicies, the server's
    own rules on names, selectors, ports and ipBlocks. Empty documents are skipped (kubectl
    skips them); duplicate keys, duplicate kind/namespace/name and kinds without a schema are
    problems. Each problem reads ``<file>: document <n> (<Kind> <namespace>/<name>): <field>: <what>``.
    """
    problems: list[str] = []
    seen: dict[tuple, str] = {}
    for path in _files(paths):
        try:
            docs = load_documents(path)
        except (PolicyJudgeError, OSError) as exc:
            problems.append(str(exc))
            continue
        for n, doc in enumerate(docs, 1):
            if not isinstance(doc, Mapping):
                problems.append(f"{path}: document {n}: not a mapping but {type(doc).__name__}")
                continue
            kind, api = doc.get("kind"), doc.get("apiVersion")
            meta = _meta(doc) if isinstance(doc.get("metadata"), Mapping) else {}
            where = f"{path}: document {n} ({kind} {meta.get('namespace', '')}/{meta.get('name', '')})"
            if not isinstance(kind, str) or not isinstance(api, str):
                problems.append(f"{where}: apiVersion and kind must be strings")
                continue
            key = (api.split("/")[0], kind, meta.get("namespace"), meta.get("name"))
            if key in seen:
                problems.append(f"{where}: same kind/namespace/name as {seen[key]}")
            seen[key] = f"{path} document {n}"
            if kind == "Kustomization":
                problems += [f"{where}: {p}" for p in _kustomization_rules(doc, path)]
                continue
            validator = _schema_validator(kind, api, kubernetes_version, strict)
            if validator is None:
                problems.append(f"{where}: no schema for {api} {kind} in Kubernetes {kubernetes_version}")
                continue
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
            problems += [f"{where}: {_path(e.absolute_path)}: {e.message}" for e in errors]
            if kind == "NetworkPolicy" and api == "networking.k8s.io/v1":
                problems += [f"{where}: {p}" for p in _network_policy_rules(doc)]
    return problems
