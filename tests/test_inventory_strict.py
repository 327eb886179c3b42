"""A malformed inventory object is one error line naming the file, the object and the field, never
a traceback: a table of mutations of a valid inventory (captures/guestbook/inventory.yaml), each
loaded by the library (``InventoryError``) and by the command line (exit code 2, one line).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netpol_learn._errors import InventoryError
from netpol_learn._inventory import load_inventory

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "captures" / "guestbook" / "inventory.yaml"
with open(BASE, encoding="utf-8") as _fh:
    VALID = yaml.safe_load(_fh)


def index(doc: dict, kind: str, name: str) -> int:
    return next(i for i, o in enumerate(doc["items"]) if o["kind"] == kind and o["metadata"]["name"] == name)


def obj(doc: dict, kind: str, name: str) -> dict:
    return doc["items"][index(doc, kind, name)]


DB, API_POD, API_RS = "db-0", "api-5xh4sh29bl-xx6fx", "api-5xh4sh29bl"
NODE = "testbed-control-plane"


def pod(d):
    return obj(d, "Pod", DB)


def port0(d):
    return pod(d)["spec"]["containers"][0]["ports"][0]


def service(d):
    return obj(d, "Service", "db")


def endpoint_slice(d):
    return obj(d, "EndpointSlice", "db-cb47b")


def deployment(d):
    return obj(d, "Deployment", "api")


def node(d):
    return obj(d, "Node", NODE)


def namespace(d):
    return obj(d, "Namespace", "guestbook")


def setitem(target, key, value):
    target[key] = value


# id: (mutation of the parsed List, what the error says after "<file>: ")
MUTATIONS = {
    "labels-list": (lambda d: setitem(pod(d)["metadata"], "labels", ["app=guestbook"]),
                    "Pod guestbook/db-0: metadata.labels: not a mapping"),
    "label-value-number": (lambda d: setitem(pod(d)["metadata"]["labels"], "tier", 1),
                           "Pod guestbook/db-0: metadata.labels.tier: not a string"),
    "metadata-string": (lambda d: setitem(pod(d), "metadata", "db-0"),
                        f"Pod (items[{index(VALID, 'Pod', DB)}]): metadata: not a mapping"),
    "status-string": (lambda d: setitem(pod(d), "status", "Running"),
                      "Pod guestbook/db-0: status: not a mapping"),
    "containers-dict": (lambda d: setitem(pod(d)["spec"], "containers", {"name": "db"}),
                        "Pod guestbook/db-0: spec.containers: not a list"),
    "container-ports-string": (lambda d: setitem(pod(d)["spec"]["containers"][0], "ports", "5432"),
                               "Pod guestbook/db-0: spec.containers[0].ports: not a list"),
    "containerPort-name": (lambda d: setitem(port0(d), "containerPort", "http"),
                           "Pod guestbook/db-0: spec.containers[0].ports[0].containerPort: not a number"),
    "containerPort-out-of-range": (lambda d: setitem(port0(d), "containerPort", 70000),
                                   "Pod guestbook/db-0: spec.containers[0].ports[0].containerPort: 70000 is not a port number (1-65535)"),
    "container-protocol": (lambda d: setitem(port0(d), "protocol", "HTTP"),
                           "Pod guestbook/db-0: spec.containers[0].ports[0].protocol: 'HTTP' is not TCP, UDP or SCTP"),
    "pod-without-namespace": (lambda d: pod(d)["metadata"].pop("namespace"),
                              "Pod db-0: metadata.namespace: missing"),
    "pod-ip": (lambda d: setitem(pod(d)["status"], "podIP", "10.244.0.300"),
               "Pod guestbook/db-0: status.podIP: '10.244.0.300' is not an IP address"),
    "pod-ips-entry": (lambda d: setitem(pod(d)["status"], "podIPs", ["10.244.0.3"]),
                      "Pod guestbook/db-0: status.podIPs[0]: not a mapping"),
    "host-network-string": (lambda d: setitem(pod(d)["spec"], "hostNetwork", "yes"),
                            "Pod guestbook/db-0: spec.hostNetwork: not true or false"),
    "start-time": (lambda d: setitem(pod(d)["status"], "startTime", "yesterday"),
                   "Pod guestbook/db-0: status.startTime: 'yesterday' is not an RFC 3339 time"),
    "owner-references-string": (lambda d: setitem(obj(d, "Pod", API_POD)["metadata"], "ownerReferences", f"ReplicaSet/{API_RS}"),
                                f"Pod guestbook/{API_POD}: metadata.ownerReferences: not a list"),
    "owner-reference-without-name": (lambda d: obj(d, "Pod", API_POD)["metadata"]["ownerReferences"][0].pop("name"),
                                     f"Pod guestbook/{API_POD}: metadata.ownerReferences[0].name: missing"),
    "service-ports-string": (lambda d: setitem(service(d)["spec"], "ports", "5432"),
                             "Service guestbook/db: spec.ports: not a list"),
    "service-port-string": (lambda d: setitem(service(d)["spec"]["ports"][0], "port", "5432"),
                            "Service guestbook/db: spec.ports[0].port: not a number"),
    "service-selector-list": (lambda d: setitem(service(d)["spec"], "selector", ["app=guestbook"]),
                              "Service guestbook/db: spec.selector: not a mapping"),
    "service-cluster-ip": (lambda d: setitem(service(d)["spec"], "clusterIPs", ["10.96.208"]),
                           "Service guestbook/db: spec.clusterIPs[0]: '10.96.208' is not an IP address"),
    "slice-endpoints-string": (lambda d: setitem(endpoint_slice(d), "endpoints", "10.244.0.3"),
                               "EndpointSlice guestbook/db-cb47b: endpoints: not a list"),
    "slice-addresses-string": (lambda d: setitem(endpoint_slice(d)["endpoints"][0], "addresses", "10.244.0.3"),
                               "EndpointSlice guestbook/db-cb47b: endpoints[0].addresses: not a list"),
    "slice-address-not-ip": (lambda d: setitem(endpoint_slice(d)["endpoints"][0], "addresses", ["db-0"]),
                             "EndpointSlice guestbook/db-cb47b: endpoints[0].addresses[0]: 'db-0' is not an IP address"),
    "slice-target-ref-string": (lambda d: setitem(endpoint_slice(d)["endpoints"][0], "targetRef", "db-0"),
                                "EndpointSlice guestbook/db-cb47b: endpoints[0].targetRef: not a mapping"),
    "slice-port-string": (lambda d: setitem(endpoint_slice(d)["ports"][0], "port", "postgres"),
                          "EndpointSlice guestbook/db-cb47b: ports[0].port: not a number"),
    "namespace-labels-list": (lambda d: setitem(namespace(d)["metadata"], "labels", ["kubernetes.io/metadata.name=guestbook"]),
                              "Namespace guestbook: metadata.labels: not a mapping"),
    "namespace-without-name": (lambda d: namespace(d)["metadata"].pop("name"),
                               f"Namespace (items[{index(VALID, 'Namespace', 'guestbook')}]): metadata.name: missing"),
    "deployment-match-labels-list": (lambda d: setitem(deployment(d)["spec"]["selector"], "matchLabels", ["app=guestbook"]),
                                     "Deployment guestbook/api: spec.selector.matchLabels: not a mapping"),
    "deployment-bad-operator": (lambda d: setitem(deployment(d)["spec"]["selector"], "matchExpressions",
                                                  [{"key": "tier", "operator": "Equals", "values": ["api"]}]),
                                "Deployment guestbook/api: spec.selector.matchExpressions[0].operator: "
                                "'Equals' is not In, NotIn, Exists or DoesNotExist"),
    "deployment-in-without-values": (lambda d: setitem(deployment(d)["spec"]["selector"], "matchExpressions",
                                                       [{"key": "tier", "operator": "In"}]),
                                     "Deployment guestbook/api: spec.selector.matchExpressions[0].values: In needs at least one value"),
    "replicaset-selector-list": (lambda d: setitem(obj(d, "ReplicaSet", API_RS)["spec"], "selector", ["app=guestbook"]),
                                 f"ReplicaSet guestbook/{API_RS}: spec.selector: not a mapping"),
    "node-addresses-string": (lambda d: setitem(node(d)["status"], "addresses", "172.18.0.2"),
                              f"Node {NODE}: status.addresses: not a list"),
    "node-pod-cidr": (lambda d: setitem(node(d)["spec"], "podCIDR", "10.244.0.0/33"),
                      f"Node {NODE}: spec.podCIDR: '10.244.0.0/33' is not a CIDR"),
    "node-pod-cidrs-string": (lambda d: setitem(node(d)["spec"], "podCIDRs", "10.244.0.0/24"),
                              f"Node {NODE}: spec.podCIDRs: not a list"),
    "items-not-list": (lambda d: setitem(d, "items", {"kind": "Pod"}), "items: not a list"),
    "item-not-object": (lambda d: setitem(d["items"], 3, "kube-system"), "items[3]: not a Kubernetes object (a str)"),
}


def write(tmp_path: Path, case: str) -> Path:
    doc = copy.deepcopy(VALID)
    MUTATIONS[case][0](doc)
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def flows(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flows") / "flows.jsonl"
    subprocess.run([sys.executable, "-m", "netpol_learn", "capture", str(ROOT / "captures" / "guestbook" / "capture.pcap"),
                    "-o", str(out)], check=True, capture_output=True)
    return out


def test_the_base_inventory_loads(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(VALID), sort_keys=False), encoding="utf-8")
    assert len(load_inventory([path]).pods) == 9


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_a_malformed_object_is_one_error_with_file_object_and_field(tmp_path, case):
    path = write(tmp_path, case)
    with pytest.raises(InventoryError) as info:
        load_inventory([path])
    assert str(info.value) == f"{path}: {MUTATIONS[case][1]}"


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_a_malformed_object_is_exit_2_and_one_line(tmp_path, flows, case):
    path = write(tmp_path, case)
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "resolve", "--flows", str(flows), "--inventory", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"error: {path}: {MUTATIONS[case][1]}"]
    assert r.stdout == ""


def test_a_malformed_object_in_one_of_several_files_is_a_warning(tmp_path):
    bad = write(tmp_path, "containerPort-name")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(VALID), encoding="utf-8")
    warnings: list[str] = []
    inv = load_inventory([bad, good], warn=warnings.append)
    assert len(inv.pods) == 9
    assert warnings == [f"{bad}: {MUTATIONS['containerPort-name'][1]}"]


def test_a_malformed_object_in_a_multi_document_file_names_the_document(tmp_path):
    doc = copy.deepcopy(VALID)
    first, second = doc["items"][:3], doc["items"][3:]
    second[0] = {**second[0], "metadata": ["kube-system"]}
    path = tmp_path / "docs.yaml"
    path.write_text(yaml.safe_dump_all([*first, {"apiVersion": "v1", "kind": "List", "items": second}]), encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        load_inventory([path])
    assert str(info.value) == f"{path}: Namespace (document 4 items[0]): metadata: not a mapping"


def test_unknown_kinds_and_extra_fields_are_not_checked(tmp_path):
    doc = copy.deepcopy(VALID)
    pod(doc)["spec"]["somethingNew"] = ["anything", {"goes": 1}]
    pod(doc)["status"]["hostIPs"] = "not looked at"
    doc["items"].append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "odd", "data": ["x"]})
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    inv = load_inventory([path])
    assert len(inv.pods) == 9 and "ignored 1 object(s) of kind ConfigMap" in inv.notes


def test_fqdn_endpoint_slices_hold_names(tmp_path):
    doc = copy.deepcopy(VALID)
    endpoint_slice(doc)["addressType"] = "FQDN"
    endpoint_slice(doc)["endpoints"][0]["addresses"] = ["db.example.com"]
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert "db-cb47b" not in {s.name for s in load_inventory([path]).endpoint_slices}
