"""The engine's every-port answer (``PolicyEngine.allowed_mask``, ``evaluate_ports``) and
``diff``'s use of it against ``evaluate``, which stays the definition.

- On generated clusters, NetworkPolicies (tests/test_semantics_nca.py's strategies) and
  ClusterNetworkPolicies (both tiers, Accept/Deny/Pass, namespaces/pods/networks peers, port
  numbers, ranges and named ports): for every pair of pods, outside addresses and nodes, every
  probe of a list of ports gets ``evaluate``'s verdict, from a fresh ``PortProbes`` and from one
  shared by every pair (its per-rule masks are remembered).
- ``diff`` of two such sets (some policies the same in both, some changed, some only in one; the
  cluster policies the same or not) against the way it was computed before: every pair of
  ``_pairs`` and every probe port judged with ``evaluate`` by each set; and no pair outside
  ``_pairs`` changes.
- The same on the policy directories of tests/test_verify_diff.py's diff and verify cases, and on
  the guestbook's generated ClusterNetworkPolicy baseline.

And the reading that makes the command's own time small: the plain reader of policy files
(``_semantics._PlainReader``) reads what ``yaml.safe_load_all`` reads (types and key order
count) or leaves the text to libyaml, on texts ``yaml.safe_dump`` writes (then damaged line by
line), on lines put together from YAML's pieces, on fixed cases and on every YAML and JSON file of
the repository; ``load_policies`` reads the same policies and notes either way; peers and ports
remembered across policies (``policy_from_dict``'s memo) are those read without it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import k8s  # noqa: E402
from test_semantics_nca import NAMED_PORTS, NS_LABELS, POD_LABELS, clusters, label_selector, policies_for  # noqa: E402
from test_verify_diff import (  # noqa: E402
    DB_INGRESS,
    change_db_port,
    drop_api_external_egress,
    drop_db_ingress,
    edit,
    setup,  # noqa: F401  (the fixture)
    widen_external,
    write_policy,
)

from netpol_learn import _verify  # noqa: E402
from netpol_learn._cluster_policy import cluster_policy_from_dict  # noqa: E402
from netpol_learn._flowlog import read_flow_log  # noqa: E402
from netpol_learn._inventory import load_inventory  # noqa: E402
from netpol_learn._semantics import Endpoint, PolicyEngine, PortProbes, _NotPlain, _PlainReader, load_policies, policy_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PORTS = [("TCP", 1), ("TCP", 53), ("TCP", 79), ("TCP", 80), ("TCP", 81), ("TCP", 82), ("TCP", 8080), ("TCP", 8081), ("TCP", 65535),
         ("UDP", 53), ("UDP", 80), ("UDP", 81), ("SCTP", 53), ("SCTP", 80)]
OUTSIDE = ("192.168.2.10", "192.168.1.10", "203.0.113.7", "10.1.2.3", "8.8.8.8", "2001:db8:2::1", "2001:db8:1::1")
NODES = {"node-a": "172.18.0.2", "node-b": "172.18.0.3"}
NETWORKS = ("0.0.0.0/0", "10.244.0.0/16", "10.244.1.0/24", "192.168.0.0/16", "203.0.113.0/24", "::/0", "2001:db8::/32", "172.18.0.0/16")


# --- ClusterNetworkPolicies -----------------------------------------------------------------


def cluster_policies_for(namespaces: list[str], pod_names: list[str]):
    """0 to 3 ClusterNetworkPolicies over the cluster's namespaces and pods (their dicts)."""
    pod_sel = label_selector({**POD_LABELS, "pod": tuple(pod_names) + ("nobody",)})
    ns_sel = label_selector({**NS_LABELS, "kubernetes.io/metadata.name": tuple(namespaces)})
    selection = st.one_of(st.builds(lambda n: {"namespaces": n}, ns_sel),
                          st.builds(lambda n, p: {"pods": {"namespaceSelector": n, "podSelector": p}}, ns_sel, pod_sel))
    networks = st.builds(lambda nets: {"networks": nets}, st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=2, unique=True))
    number = st.sampled_from([53, 80, 81, 8080])

    @st.composite
    def protocol(draw):
        kind = draw(st.sampled_from(["tcp", "udp", "sctp", "destinationNamedPort"]))
        if kind == "destinationNamedPort":
            return {kind: draw(st.sampled_from(sorted(NAMED_PORTS) + ["nope"]))}
        if draw(st.booleans()):
            return {kind: {"destinationPort": {"number": draw(number)}}}
        start = draw(number)
        return {kind: {"destinationPort": {"range": {"start": start, "end": start + draw(st.sampled_from([0, 1, 8000]))}}}}

    @st.composite
    def rule(draw, index, direction):
        peers = st.one_of(selection, networks) if direction == "egress" else selection
        r = {"name": f"r{index}", "action": draw(st.sampled_from(["Accept", "Deny", "Pass"])),
             ("to" if direction == "egress" else "from"): draw(st.lists(peers, min_size=1, max_size=2))}
        if draw(st.booleans()):
            r["protocols"] = draw(st.lists(protocol(), min_size=1, max_size=2))
        return r

    @st.composite
    def policy(draw, index):
        spec = {"tier": draw(st.sampled_from(["Admin", "Baseline"])), "priority": draw(st.integers(0, 3)), "subject": draw(selection)}
        for direction in ("ingress", "egress"):
            n = draw(st.integers(0, 3))
            if n:
                spec[direction] = [draw(rule(i, direction)) for i in range(n)]
        return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                "metadata": {"name": f"cnp-{index}"}, "spec": spec}

    return st.integers(0, 3).flatmap(lambda n: st.tuples(*[policy(i) for i in range(n)]))


@st.composite
def scenarios(draw):
    """A cluster, two NetworkPolicy sets over it (``new``: some of ``base`` kept, the others drawn
    again under the same names, so some differ) and ClusterNetworkPolicies for each."""
    namespaces, ns_labels, pods = draw(clusters())
    names = [p["name"] for p in pods]
    base = list(draw(policies_for(namespaces, names)))
    other = list(draw(policies_for(namespaces, names)))
    new = []
    for i in range(max(len(base), len(other))):
        kept = base[i] if i < len(base) else None
        drawn = other[i] if i < len(other) else None
        chosen = kept if draw(st.booleans()) else drawn
        if chosen is not None:
            new.append(chosen)
    cluster = list(draw(cluster_policies_for(namespaces, names)))
    cluster_new = cluster if draw(st.booleans()) else list(draw(cluster_policies_for(namespaces, names)))
    for i, p in enumerate(pods):
        p["node"] = ("node-a", "node-b")[i % 2]
    return namespaces, ns_labels, pods, (base, cluster), (new, cluster_new)


def endpoints(pods) -> list[Endpoint]:
    ends = [Endpoint(p["ip"], p["namespace"], tuple(sorted(p["labels"].items())),
                     tuple(sorted((n, proto, num) for n, num, proto in p["ports"])), p["node"], p["name"]) for p in pods]
    ends += [Endpoint(address) for address in OUTSIDE]
    ends += [Endpoint(address, node=node) for node, address in NODES.items()]
    return ends


def engine(policies, cluster, ns_labels, namespaces) -> PolicyEngine:
    labels = {ns: {"kubernetes.io/metadata.name": ns, **ns_labels.get(ns, {})} for ns in namespaces}
    return PolicyEngine([policy_from_dict(p) for p in policies], labels, [cluster_policy_from_dict(c) for c in cluster])


def assert_masks_are_evaluate(eng: PolicyEngine, ends: list[Endpoint], ports) -> None:
    """For every pair and probe: evaluate_ports, and allowed_mask with one PortProbes for all
    pairs, say what evaluate says."""
    shared = PortProbes(ports)
    for src in ends:
        for dst in ends:
            want = [eng.evaluate(src, dst, proto, port).allowed for proto, port in ports]
            assert eng.evaluate_ports(src, dst, ports) == want, (src, dst)
            mask = eng.allowed_mask(src, dst, shared)
            assert [bool(mask >> i & 1) for i in range(len(ports))] == want, (src, dst)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_every_port_at_once_is_evaluate(scenario):
    namespaces, ns_labels, pods, (base, cluster), _ = scenario
    assert_masks_are_evaluate(engine(base, cluster, ns_labels, namespaces), endpoints(pods), PORTS)


def test_named_ports_per_destination_and_a_probe_list_in_any_order_with_repeats():
    """One rule's named port is a number per destination pod: the probes remember its mask per
    destination's named ports; probes need not be sorted or distinct."""
    pods = [{"name": "p0", "namespace": "ns-a", "ip": "10.244.1.10", "labels": {"pod": "p0"}, "ports": [("web", 8080, "TCP")], "node": "node-a"},
            {"name": "p1", "namespace": "ns-a", "ip": "10.244.1.11", "labels": {"pod": "p1"}, "ports": [("web", 80, "TCP")], "node": "node-b"},
            {"name": "p2", "namespace": "ns-b", "ip": "10.244.2.12", "labels": {"pod": "p2"}, "ports": [("web", 81, "UDP")], "node": "node-b"}]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "ns-a"},
              "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}, {"port": 80, "endPort": 81}, {"protocol": "UDP"}]}]}}
    admin = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "named"},
             "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                      "ingress": [{"name": "web", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "ns-b"}}}],
                                   "protocols": [{"destinationNamedPort": "web"}]}]}}
    ports = [("UDP", 9), ("TCP", 8080), ("TCP", 80), ("TCP", 8080), ("SCTP", 80), ("TCP", 82), ("UDP", 81), ("TCP", 81), ("UDP", 9)]
    eng = engine([policy], [admin], {}, ["ns-a", "ns-b"])
    assert_masks_are_evaluate(eng, endpoints(pods), ports)
    p0, p1, p2 = endpoints(pods)[:3]
    assert eng.evaluate_ports(p1, p0, ports) == [True, True, True, True, False, False, True, True, True]
    assert eng.evaluate_ports(p0, p1, ports) == [True, False, True, False, False, False, True, True, True]
    assert eng.evaluate_ports(p2, p0, ports) == [True, False, True, False, False, False, True, True, True]  # ns-b: not on web
    assert eng.evaluate_ports(p2, p1, ports) == [True, False, False, False, False, False, True, True, True]


# --- diff against the way it was computed before --------------------------------------------


def reference_diff(base, new, inventory, log=None) -> _verify.DiffResult:
    """``diff`` as it was computed before the every-port path: the same probes and pairs (the
    pairs in the same order), each pair judged on each probe port with ``evaluate`` by each set."""
    observed, extra_ports, extra_addresses = _verify._observed(log, inventory, _verify.ResolveOptions()) if log else (set(), set(), set())
    ends = _verify._workload_ends(inventory)
    outside = [(name, Endpoint(address)) for address, name in _verify._outside((base, new), extra_addresses).items()]
    ports = _verify._ports((base, new), inventory, extra_ports)
    everything = getattr(base, "cluster", ()) != getattr(new, "cluster", ())
    changed = _verify._changed(base, new)
    src_changed = {n for n, e in ends if everything or _verify._selected_by(changed, e, "Egress")}
    dst_changed = {n for n, e in ends if everything or _verify._selected_by(changed, e, "Ingress")}
    every = ends + outside
    pairs = [(a, b) for a in ends if a[0] in src_changed for b in every]
    pairs += [(a, b) for b in ends if b[0] in dst_changed for a in every if a[0] not in src_changed]
    before_engine, after_engine = _verify.engine_for(base, inventory), _verify.engine_for(new, inventory)
    outside_ids = {id(e) for _, e in outside}
    changes: dict = defaultdict(lambda: {True: {}, False: {}})
    for (sname, src), (dname, dst) in pairs:
        for proto, port in ports:
            before = before_engine.evaluate(src, dst, proto, port).allowed
            after = after_engine.evaluate(src, dst, proto, port).allowed
            if before != after:
                seen = changes[(sname, dname, proto)][after]
                key = (_verify._probe_end(sname, src, outside_ids), _verify._probe_end(dname, dst, outside_ids), proto, port)
                seen[port] = seen.get(port, False) or key in observed
    # and no pair left out of them changes
    probed = {(a[0], b[0]) for a, b in pairs}
    for sname, src in every:
        for dname, dst in every:
            if (sname, dname) not in probed:
                assert all(before_engine.evaluate(src, dst, *p).allowed == after_engine.evaluate(src, dst, *p).allowed for p in ports), (sname, dname)
    return _verify._diff_result(changes, ports)


def assert_diff_is_reference(base, new, inventory, log=None) -> None:
    for a, b in ((base, new), (new, base), (base, base)):
        got = _verify.diff(a, b, inventory, log)
        assert got == reference_diff(a, b, inventory, log)
        engine = _verify.engine_for(a, inventory)
        ends = [e for _, e in _verify._workload_ends(inventory)] + [Endpoint(x) for x in _verify._outside((a, b), ())]
        assert_masks_are_evaluate(engine, ends, _verify._ports((a, b), inventory, ()))


def policy_set(policies, cluster):
    from netpol_learn._semantics import Policies

    out = Policies(policy_from_dict(p) for p in policies)
    out.cluster = tuple(sorted((cluster_policy_from_dict(c) for c in cluster), key=lambda c: (c.tier, c.priority, c.name)))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_diff_of_generated_sets_is_the_reference(scenario):
    namespaces, ns_labels, pods, (base, cluster), (new, cluster_new) = scenario
    objs = [k8s.node(name, address) for name, address in NODES.items()]
    for ns in namespaces:
        obj = k8s.namespace(ns)
        obj["metadata"]["labels"].update(ns_labels.get(ns, {}))
        objs.append(obj)
    objs += [k8s.pod(p["name"], p["namespace"], p["ip"], labels=p["labels"], ports=p["ports"], node=p["node"]) for p in pods]
    with tempfile.TemporaryDirectory(prefix="diff-fast-") as tmp:
        inventory = load_inventory([k8s.write_list(Path(tmp), objs)])
    assert_diff_is_reference(policy_set(base, cluster), policy_set(new, cluster_new), inventory)


# --- the CLI tests' policy directories ------------------------------------------------------


@pytest.mark.parametrize("change", [change_db_port, widen_external, drop_db_ingress, drop_api_external_egress])
def test_diff_of_the_cli_cases_is_the_reference(setup, tmp_path, change):  # noqa: F811
    inventory_path, flows, policies = setup
    inventory = load_inventory([inventory_path])
    log = read_flow_log(flows)
    new = edit(policies, tmp_path / "new", change)
    assert_diff_is_reference(load_policies([policies]), load_policies([new]), inventory, log)


@pytest.mark.parametrize("base_spec, new_spec", [
    ({**DB_INGRESS, "ingress": [{"ports": [{"port": 5000, "endPort": 6000}]}]},
     {**DB_INGRESS, "ingress": [{"ports": [{"port": 5000, "endPort": 5599}, {"port": 5701, "endPort": 6000}]}]}),
    ({**DB_INGRESS, "ingress": [{"ports": [{"port": 443}]}]}, {**DB_INGRESS, "ingress": [{"ports": [{"port": 443}, {"protocol": "SCTP"}]}]}),
    ({**DB_INGRESS, "ingress": [{"ports": [{"port": "pg"}]}]}, {**DB_INGRESS, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
])
def test_diff_of_port_ranges_and_protocols_is_the_reference(setup, tmp_path, base_spec, new_spec):  # noqa: F811
    inventory_path, _, _ = setup
    base, new = write_policy(tmp_path / "base", base_spec), write_policy(tmp_path / "new", new_spec)
    assert_diff_is_reference(load_policies([base]), load_policies([new]), load_inventory([inventory_path]))


def test_diff_of_the_generated_cluster_baseline_is_the_reference(tmp_path):
    inventory = ROOT / "captures" / "guestbook" / "inventory.yaml"
    out = tmp_path / "policies"
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "generate", "--flows", str(ROOT / "tests" / "cases" / "_inputs" / "guestbook.jsonl"),
                        "--inventory", str(inventory), "-o", str(out), "--cluster-baseline", "--baseline-exclude", "nobody"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "guestbook.yaml").write_text((out / "guestbook.yaml").read_text())
    with_baseline = load_policies([out])
    assert with_baseline.cluster
    assert_diff_is_reference(load_policies([plain]), with_baseline, load_inventory([inventory]),
                             read_flow_log(ROOT / "tests" / "cases" / "_inputs" / "guestbook.jsonl"))


# --- reading policy files: the plain reader, as PyYAML reads ------------------------------------

TRICKY = ["", " ", "a: b", "a #b", "a#b", "#x", "- x", "-", "--- x", "...", "'q'", '"dq"', "it's", 'say "hi"', "::/0", ":x", "?x",
          "x:", "1", "-1", "+1", "0x1F", "0o17", "0b_", "1:30", "1_000", "true", "yes", "On", "null", "~", "1.5", ".inf", "-.nan", "1e3",
          "2001-01-01", "2025-06-15T15:06:40.000000Z/2025-06-15T15:06:41.000000Z", "a\nb", "a\tb", "ü", "{}", "[]", "{a: 1}", "[1]",
          "&a", "*a", "!x", "|", ">", "%x", "@x", "`x", "<<", "=", "a  b", " lead", "trail ", "a: ", "k8s:io.x", "a,b", "x]", "\\"]
KEYS = st.one_of(st.sampled_from(["a", "b", "kind", "app.kubernetes.io/name", "x-y_z", "1", "true", "on", "null", "<<", "=", "k8s:io.x",
                                  "a b", "", "'q'", "?", "-", "#", "a:", "2001-01-01"]),
                 st.text(alphabet="abc:./-_ #'", max_size=6))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32),
                    st.sampled_from(TRICKY), st.text(alphabet="ab -:#'\"./", max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=16)


@st.composite
def yaml_texts(draw):
    """YAML as yaml.safe_dump writes it (block, flow or mixed style, any indentation and line
    width), then maybe damaged line by line: comments added, lines re-indented, repeated,
    dropped, swapped, or a '---' put between them."""
    docs = draw(st.lists(VALUES, max_size=3))
    text = yaml.safe_dump_all(docs, default_flow_style=draw(st.sampled_from([False, None, True])), indent=draw(st.sampled_from([2, 3, 4])),
                              width=draw(st.sampled_from([12, 40, 80, 1000])), explicit_start=draw(st.booleans()),
                              sort_keys=draw(st.booleans()), allow_unicode=draw(st.booleans()))
    lines = text.split("\n")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["comment", "indent", "dedent", "repeat", "drop", "swap", "separator", "comment line"]))
        if how == "comment":
            lines[i] += draw(st.sampled_from(["  # c", " #", "#x", " # a: b"]))
        elif how == "indent":
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        elif how == "dedent":
            lines[i] = lines[i][draw(st.integers(1, 2)):]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "drop":
            del lines[i]
        elif how == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif how == "separator":
            lines.insert(i, draw(st.sampled_from(["---", "--- # c", "...", "--- x"])))
        else:
            lines.insert(i, " " * draw(st.integers(0, 4)) + "# " + draw(st.sampled_from(["c", "a: b", "- x"])))
        if not lines:
            lines = [""]
    return "\n".join(lines)


RAW_VALUES = ["x", "a b", "1", "-1", "1.5", "true", "null", "~", "::/0", ":x", "&a", "*a", "&a x", "!x", "!!str 1", "|", ">", "{}", "[]",
              "{a: 1}", "[1, 2]", "'q'", "'it''s'", "'x", '"dq"', '"a\\nb"', "a: b", "a #c", "a#b", "#c", "x:", "-", "- x", "--- x", "%x",
              "@x", "`x", "<<", "=", "0b_", "2001-01-01", "?x", "? x", "a,b", "x]", "'a' b", "'a'#c", "{} # c", "{}x", "'a' # c", "1:30"]
RAW_KEYS = ["a", "b", "c", "1", "on", "null", "<<", "=", "'q'", '"q"', "a b", "k8s:io.x", "-x", "?", "a:", "x.y/z", "&a a", "*a"]


@st.composite
def raw_yaml_texts(draw):
    """Lines put together from YAML's pieces (indentation and '- ' that mostly follow the
    nesting, keys, values written raw: anchors, tags, flow collections, quotes, comments,
    separators), valid YAML or not."""
    def piece(pieces):
        return draw(st.sampled_from(["x", "y", "1", "a b"])) if draw(st.integers(0, 2)) < 2 else draw(st.sampled_from(pieces))

    lines, levels, opened = [], [(0, draw(st.booleans()))], False  # levels: (indentation, a sequence)
    for _ in range(draw(st.integers(1, 10))):
        if draw(st.integers(0, 11)) == 11:
            lines.append(draw(st.sampled_from(["---", "--- # c", "...", "--- x", "", "# c", "  # c"])))
            continue
        if opened and draw(st.integers(0, 3)) < 3:
            levels.append((levels[-1][0] + draw(st.sampled_from([2, 2, 4, 1, 0])), draw(st.booleans())))
        elif len(levels) > 1 and draw(st.integers(0, 2)) == 2:
            del levels[draw(st.integers(1, len(levels) - 1)):]
        indent, sequence = levels[-1]
        odd = draw(st.integers(0, 15)) == 15  # now and then a line that does not fit
        line = " " * max(0, indent + (draw(st.sampled_from([1, -1, 2])) if odd else 0))
        line += draw(st.sampled_from(["- ", "-   ", "- - ", "-", ""])) if odd else "- " if sequence else ""
        kind = draw(st.sampled_from(["key", "key value", "value"] if sequence or odd else ["key", "key value"]))
        if line.endswith("-"):
            pass
        elif kind == "value":
            line += piece(RAW_VALUES)
        else:
            line += piece(RAW_KEYS) + ":" + (" " * draw(st.integers(1, 2)) + piece(RAW_VALUES) if kind == "key value" else "")
        opened = kind == "key" or line.endswith("-")
        if sequence and kind != "value" and line.lstrip(" ").startswith("- "):
            levels[-1] = (indent, True)
            levels.append((len(line) - len(line.lstrip(" -")), False))  # the mapping the item opens
        lines.append(line + draw(st.sampled_from(["", "", "", " # c", "  #c", " "])))
    return "\n".join(lines) + "\n"


def pyyaml(text: str) -> str | None:
    """What yaml.safe_load_all reads (its repr: types and order count), None where it refuses."""
    try:
        return repr(list(yaml.safe_load_all(text)))
    except Exception:  # noqa: BLE001  (a YAMLError, or a constructor's ValueError)
        return None


def plain(text: str) -> str | None:
    """What the plain reader reads (repr), None where it leaves the text to libyaml."""
    try:
        return repr(_PlainReader().documents(text))
    except _NotPlain:
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(yaml_texts(), raw_yaml_texts()))
def test_the_plain_reader_reads_what_pyyaml_reads_or_leaves_it(text):
    got = plain(text)
    if got is not None:
        assert got == pyyaml(text), text


@pytest.mark.parametrize("text", [
    "", "# only a comment\n", "---\n", "---\n---\n", "a: 1\n---\n", "--- # c\na: 1\n", "a:\n- x\n- y\nb: {}\nc: []\n",
    "- a: 1\n  b:\n  - c\n-\n  d: 2\n- \n- e  # c\n", "a:\n  b:\n    c: 'it''s'  # c\n  d: \"q\"\n", "k: ::/0\nl: -1\nm: 1:30\nn: .inf\n",
    "a:\n\n  # c\n  b: 1\n", "a:  # c\n  b: 1\n", "a:   \nb: 2\n", "-   a: 1\n    b: 2\n",
])
def test_the_plain_reader_reads_these_as_pyyaml(text):
    assert plain(text) == pyyaml(text) and plain(text) is not None


@pytest.mark.parametrize("text", [
    "a: b: c\n", "a: x\n  y\n", "- x\n  y\n", "a:\n  - x\n  b: 1\n", "a: 1\n- b\n", "  a: 1\n", "a: 'x\n", "a: \"x\\n\"\n", "a: &x 1\n",
    "a: *x\n", "a: !!str 1\n", "a: |\n  x\n", "a: {b: 1}\n", "? a\n: 1\n", "'a': 1\n", "1: a\n", "true: a\n", "<<: {}\n", "a: b\r\n",
    "a:\tb\n", "a: ü\n", "%YAML 1.1\n---\na: 1\n", "a: 1\n...\n", "--- a\n", "a: 0b_\n", "a: 2001-01-01\n", "a: x:\n", "- - x\n",
])
def test_the_plain_reader_leaves_the_rest_to_libyaml(text):
    assert plain(text) is None


def test_the_repository_files_read_as_pyyaml_reads_them():
    """Every YAML and JSON file of the repository: read as PyYAML reads it, or left to libyaml;
    the NetworkPolicies generate writes are read by the plain reader."""
    files = sorted(p for p in ROOT.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and ".git" not in p.parts and p.is_file())
    read = set()
    for f in files:
        text = f.read_text(encoding="utf-8")
        got = plain(text)
        if got is not None:
            assert got == pyyaml(text), f
            read.add(f)
    generated = [f for f in ROOT.glob("tests/cases/*/expected/out/*.yaml") if "cilium" not in f.parts[-4]]
    assert generated and set(generated) <= read
    # One reader for them all, twice over (as for the files of a set: the lines it has taken
    # apart and the scalars it has read are remembered): the same as a new reader for each.
    shared = _PlainReader()
    for f in [*sorted(read), *sorted(read)]:
        assert repr(shared.documents(f.read_text(encoding="utf-8"))) == plain(f.read_text(encoding="utf-8")), f


def test_load_policies_reads_the_same_as_libyaml(setup, tmp_path, monkeypatch):  # noqa: F811
    _, _, policies = setup
    edited = edit(policies, tmp_path / "new", change_db_port)  # re-dumped by yaml.safe_dump
    for directory in (policies, edited, ROOT / "tests" / "cases" / "generate-open-ingress" / "expected" / "out"):
        fast_notes: list[str] = []
        fast = load_policies([directory], fast_notes)

        def refuse(self, text):
            raise _NotPlain

        with monkeypatch.context() as m:
            m.setattr(_PlainReader, "documents", refuse)
            slow_notes: list[str] = []
            slow = load_policies([directory], slow_notes)
        assert fast == slow and fast.cluster == slow.cluster and fast_notes == slow_notes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_policies_read_with_a_memo_are_those_read_without(scenario):
    _, _, _, (base, _), (new, _) = scenario
    memo: dict = {}
    assert [policy_from_dict(p, memo) for p in base + new] == [policy_from_dict(p) for p in base + new]
