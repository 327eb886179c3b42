"""``netpol-learn manifests``: the sniffer's Namespace, ServiceAccount and DaemonSet, and the learning
service's RBAC, NetworkPolicies, PersistentVolumeClaim, Service and Deployment.

The documents are checked against the Kubernetes OpenAPI schemas (``validate_documents``, strict:
an unknown or misspelt field is an error), and the settings that make them safe are pinned
exactly: the sniffer holds no capability but NET_RAW, is not privileged, cannot escalate, has a
read-only root filesystem, the node's network, the host's /proc read-only and nothing else of
the host, runs on every node with bounded resources, and its ServiceAccount is bound to no role;
the service runs as UID 65532 with no capability at all, a read-only root filesystem and its
store on a volume, its ClusterRole reads the listed resources and creates the two reviews and
nothing else, its readers' Role is bound to nobody. What the NetworkPolicies allow is judged by
network-config-analyzer (tests/policy_judge.py), not read off the YAML. No cluster can run here,
so nothing is applied; ``test_collect.py`` reads logs from pods shaped like these.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from policy_judge import Connection, judge, validate_documents

from netpol_learn import ManifestError, __version__
from netpol_learn._cli import main
from netpol_learn._collect import SERVICE_NAME as COLLECT_SERVICE, SERVICE_PORT_NAME as COLLECT_PORT
from netpol_learn._manifests import DEFAULT_IMAGE, SNIFFER_SELECTOR, quantity_value, render_manifests
from netpol_learn._render import MARKER, TEMPLATES

KINDS = ["Namespace", "ServiceAccount", "DaemonSet",
         "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
         "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
         "PersistentVolumeClaim", "Service", "Deployment"]
READ = ("get", "list", "watch")
RESOURCES = {
    ("", "pods"), ("", "namespaces"), ("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices"),
    ("apps", "replicasets"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
}
REVIEWS = {("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")}
NO_NODE_CIDR = ("warning: no --node-cidr: the learning service's port 8080 admits every address (the sniffers use the "
                "node's network, which NetworkPolicy cannot select; tokens still decide who writes and who reads); give "
                "the nodes' and the API server's address ranges to narrow it (docs/sniffer.md)")


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="netpol-learn")


def stream(text: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert [d["kind"] for d in docs] == KINDS
    return docs


def named(text: str) -> dict[tuple[str, str], dict]:
    """(kind, name) -> document."""
    out = {(d["kind"], d["metadata"]["name"]): d for d in stream(text)}
    assert len(out) == len(KINDS)
    return out


@pytest.fixture(scope="module")
def default_text() -> str:
    return render_manifests()


def test_documents_validate_against_the_kubernetes_schemas(tmp_path):
    out = tmp_path / "manifests.yaml"
    result = run(["manifests", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert validate_documents([out]) == []
    assert result.stderr.splitlines() == [NO_NODE_CIDR, f"14 objects ({', '.join(KINDS)}) in namespace netpol-learn -> {out}"]
    custom = tmp_path / "custom.yaml"
    result = run(["manifests", "--namespace", "net-observe", "--image", "registry.example:5000/tools/netpol-learn@sha256:" + "a" * 64,
                  "--store-size", "250Gi", "--node-cidr", "10.20.0.0/16", "--node-cidr", "fd00:20::/64", "-o", custom])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [f"14 objects ({', '.join(KINDS)}) in namespace net-observe -> {custom}"]  # no warning
    assert validate_documents([custom]) == []


# --- the sniffer -------------------------------------------------------------------------------


def test_daemonset_security_settings_exactly(default_text):
    ds = named(default_text)["DaemonSet", "netpol-learn-sniffer"]
    pod = ds["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "runAsUser": 0,  # only root keeps an added capability through exec; see the template's comment
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]},
    }
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not any(pod.get(k) for k in ("hostPID", "hostIPC"))
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every node, whatever its taints
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
    # The only writable place is an emptyDir on /tmp (the spool); of the host, only /proc is mounted,
    # read-only, for the socket scan (which needs no capability: see the template's comment).
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "host-proc", "mountPath": "/host/proc", "readOnly": True}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                              {"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}]
    assert "The socket scan needs no capability" in default_text and "CAP_SYS_PTRACE" in default_text
    assert pod["terminationGracePeriodSeconds"] >= 2 * 30  # time to write the last interval's segment
    assert pod["serviceAccountName"] == "netpol-learn-sniffer"
    assert pod["automountServiceAccountToken"] is True  # its token is its credential for the service
    assert "# Root, holding no capability but NET_RAW" in default_text


def test_daemonset_memory_limit_holds_the_default_bound_with_its_margin(default_text):
    # The limit must hold the measured peak at the bound the DaemonSet runs with (its own
    # --max-connections, else the default): one interval being written beside the next filling.
    from netpol_learn._sniff import _defaults, _sniffer  # the memory model, and peak_memory of it

    ds = named(default_text)["DaemonSet", "netpol-learn-sniffer"]
    [container] = ds["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    bound = int(args[args.index("--max-connections") + 1]) if "--max-connections" in args else _defaults.DEFAULT_MAX_CONNECTIONS
    limit = quantity_value(container["resources"]["limits"]["memory"])
    peak = _sniffer.peak_memory(bound)
    assert limit >= Decimal(str(_defaults.MEMORY_MARGIN)) * peak, (bound, limit, peak)
    # ... and not by far: a bound well above the default would not fit (the figures constrain).
    assert limit < Decimal(str(_defaults.MEMORY_MARGIN)) * _sniffer.peak_memory(2 * bound)
    # The figures the docs give are the ones checked here.
    doc = (Path(__file__).resolve().parent.parent / "docs" / "sniffer.md").read_text()
    assert f"about {_defaults.MEMORY_PER_CONNECTION:,} bytes per connection" in doc
    assert f"{_defaults.MEMORY_FIXED >> 20} MiB" in doc and f"--max-connections {bound}]" in doc


def test_daemonset_posts_to_the_service_and_keeps_its_log(default_text):
    docs = named(default_text)
    [container] = docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]["containers"]
    # The image's ENTRYPOINT is netpol-learn. -o -: the log stays a flow log for collect --from-logs.
    assert container["args"] == ["sniff", "--server", "http://netpol-learn.netpol-learn.svc:8080", "--spool", "/tmp/spool",
                                 "-o", "-", "--interval", "30", "--proc", "/host/proc"] and "command" not in container
    assert container["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    # The spool is on the /tmp emptyDir, which holds the sniffer's default --spool-size with room to spare.
    from netpol_learn._sniff import DEFAULT_SPOOL_SIZE

    pod = docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]
    [tmp] = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"] and container["args"][4].startswith("/tmp/")
    assert quantity_value(tmp["emptyDir"]["sizeLimit"]) >= DEFAULT_SPOOL_SIZE + (8 << 20)
    # The URL is the Service's cluster DNS name and port.
    service = docs["Service", "netpol-learn"]
    [port] = service["spec"]["ports"]
    host, _, number = container["args"][2].removeprefix("http://").partition(":")
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" and int(number) == port["port"]


def test_the_sniffer_is_bound_to_no_role(default_text):
    # With --server the sniffer asks the API nothing; its token only authenticates it to the service.
    docs = stream(default_text)
    sniffer = {"kind": "ServiceAccount", "name": "netpol-learn-sniffer", "namespace": "netpol-learn"}
    for doc in docs:
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert sniffer not in doc["subjects"], doc["metadata"]["name"]
    assert not any(d["kind"] in ("Role", "ClusterRole") and "sniffer" in d["metadata"]["name"] for d in docs)
    # ... and is the service's one writer.
    deployment = named(default_text)["Deployment", "netpol-learn"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--writer") + 1] == "system:serviceaccount:netpol-learn:netpol-learn-sniffer"
    assert args.count("--writer") == 1


def test_collect_finds_the_pods_of_the_daemonset(default_text):
    ds = named(default_text)["DaemonSet", "netpol-learn-sniffer"]
    key, value = SNIFFER_SELECTOR.split("=")
    assert ds["spec"]["selector"] == {"matchLabels": {key: value}}
    assert ds["spec"]["template"]["metadata"]["labels"][key] == value


# --- the service -------------------------------------------------------------------------------


def test_service_cluster_role_reads_the_listed_resources_and_creates_the_reviews(default_text):
    docs = named(default_text)
    role = docs["ClusterRole", "netpol-learn"]
    read, create = set(), set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
        granted = {(group, resource) for group in rule["apiGroups"] for resource in rule["resources"]}
        if tuple(rule["verbs"]) == READ:
            read |= granted
        else:
            assert rule["verbs"] == ["create"]
            create |= granted
    assert read == RESOURCES and create == REVIEWS  # the reviews are questions: the API server stores neither
    section = default_text.split("kind: ClusterRole\n", 1)[1].split("---", 1)[0]
    assert "*" not in section and "secrets" not in section
    assert "aggregationRule" not in role
    binding = docs["ClusterRoleBinding", "netpol-learn"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "netpol-learn"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "netpol-learn", "namespace": "netpol-learn"}]
    assert docs["Deployment", "netpol-learn"]["spec"]["template"]["spec"]["serviceAccountName"] == "netpol-learn"


def test_reader_role_is_what_collect_needs_and_is_bound_to_nobody(default_text):
    docs = named(default_text)
    role = docs["Role", "netpol-learn-reader"]
    assert role["metadata"]["namespace"] == "netpol-learn"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["services"], "resourceNames": ["netpol-learn"], "verbs": ["get"]},
        # the service's SubjectAccessReview names the Service; the API server's proxy checks the
        # path's name, service:port, which is what collect asks for
        {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["netpol-learn", "netpol-learn:http"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},  # collect --from-logs
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    assert f"{COLLECT_SERVICE}:{COLLECT_PORT}" in role["rules"][1]["resourceNames"]
    assert not any(d.get("roleRef", {}).get("name") == "netpol-learn-reader" for d in docs.values())
    assert "kubectl -n netpol-learn create rolebinding NAME --role=netpol-learn-reader" in default_text


def test_deployment_settings_exactly(default_text):
    docs = named(default_text)
    deployment = docs["Deployment", "netpol-learn"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # one SQLite writer, a ReadWriteOnce volume
    pod = spec["template"]["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "netpol-learn"}}
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert pod["terminationGracePeriodSeconds"] == 30
    [container] = pod["containers"]
    assert container["securityContext"] == {
        "privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }
    assert container["args"] == ["serve", "--store", "/var/lib/netpol-learn/store.db", "--listen", "0.0.0.0:8080",
                                 "--writer", "system:serviceaccount:netpol-learn:netpol-learn-sniffer"] and "command" not in container
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["env"] == [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    # Writable: the store's directory (the volume) and a small /tmp; nothing of the host.
    assert container["volumeMounts"] == [{"name": "store", "mountPath": "/var/lib/netpol-learn"}, {"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "store", "persistentVolumeClaim": {"claimName": "netpol-learn-store"}},
                              {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    claim = docs["PersistentVolumeClaim", "netpol-learn-store"]
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}  # the default storage class


def test_service_selects_the_deployments_pods_on_the_port_collect_asks_for(default_text):
    docs = named(default_text)
    service = docs["Service", "netpol-learn"]
    assert service["metadata"]["name"] == COLLECT_SERVICE
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": COLLECT_PORT, "protocol": "TCP", "port": 8080, "targetPort": "http"}]
    selector = service["spec"]["selector"].items()
    assert selector <= docs["Deployment", "netpol-learn"]["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["metadata"]["labels"].items()


# --- what the NetworkPolicies allow ----------------------------------------------------------

SERVICE = "netpol-learn/Deployment/netpol-learn"
SNIFFER = "netpol-learn/DaemonSet/netpol-learn-sniffer"
DNS = "kube-system/Deployment/coredns"
PORTS = [8080, 9090, 80, 443, 6443, ("UDP", 53), ("TCP", 53)]
EXTERNAL = {"node": "10.0.1.5", "node6": "fd00:10::5", "api-server": "10.0.0.1", "outside": "203.0.113.9", "outside6": "2001:db8::1"}


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _pod(namespace: str, name: str, labels: dict, ports: list, owner: tuple[str, str] | None = None) -> dict:
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "0", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running"}}


def _judged(tmp_path: Path, text: str):
    """What network-config-analyzer says the rendered NetworkPolicies allow, among pods shaped by the
    rendered Deployment and DaemonSet and a few others."""
    docs = named(text)
    policies = tmp_path / "policies.yaml"
    policies.write_text(yaml.safe_dump_all([d for d in stream(text) if d["kind"] == "NetworkPolicy"]))
    server = docs["Deployment", "netpol-learn"]["spec"]["template"]
    sniffer = docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]
    dns_ports = [{"name": "dns", "containerPort": 53, "protocol": "UDP"}, {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]
    inventory = [
        _namespace("netpol-learn"), _namespace("kube-system"), _namespace("shop"),
        _pod("netpol-learn", "netpol-learn-7d9f8-x1", {**server["metadata"]["labels"], "pod-template-hash": "7d9f8"},
             server["spec"]["containers"][0]["ports"], ("ReplicaSet", "netpol-learn-7d9f8")),
        # The sniffer as a network plugin that tells host-network pods apart sees it (the judge
        # leaves host-network pods out, as most plugins do): so without hostNetwork here.
        _pod("netpol-learn", "netpol-learn-sniffer-q9m4d", sniffer["metadata"]["labels"], [], ("DaemonSet", "netpol-learn-sniffer")),
        _pod("netpol-learn", "intruder", {"app": "intruder"}, [{"containerPort": 8080}]),
        _pod("shop", "lookalike", {"app.kubernetes.io/name": "netpol-learn-sniffer"}, []),  # the sniffer's label, another namespace
        _pod("shop", "web", {"app": "web"}, [{"containerPort": 8080}, {"containerPort": 443}]),
        _pod("kube-system", "coredns-5c8-a", {"k8s-app": "kube-dns", "pod-template-hash": "5c8"}, dns_ports, ("ReplicaSet", "coredns-5c8")),
        _pod("kube-system", "metrics", {"app": "metrics"}, [{"containerPort": 53, "protocol": "UDP"}]),
    ]
    verdict = judge([policies], inventory, PORTS, external=EXTERNAL)
    assert not verdict.partial
    return verdict


def _of_the_service(verdict) -> set[Connection]:
    return {c for c in verdict.allowed if SERVICE in (c.src, c.dst)}


EGRESS = ({Connection(SERVICE, DNS, "UDP", 53), Connection(SERVICE, DNS, "TCP", 53)}  # the cluster DNS, and only it
          | {Connection(SERVICE, address, "TCP", port) for address in EXTERNAL for port in (443, 6443)})  # the API server, wherever it is


def test_network_policies_admit_the_sniffers_and_the_node_ranges_only(tmp_path):
    verdict = _judged(tmp_path, render_manifests(node_cidrs=["10.0.0.0/16", "fd00:10::/64"]))
    assert _of_the_service(verdict) == EGRESS | {
        Connection(SNIFFER, SERVICE, "TCP", 8080),  # where the plugin can select the sniffer pods
        Connection("node", SERVICE, "TCP", 8080), Connection("node6", SERVICE, "TCP", 8080),  # the sniffers as the nodes' addresses
        Connection("api-server", SERVICE, "TCP", 8080),  # readers through the service proxy (a control-plane node)
    }
    # Not from another pod of the namespace, nor one with the sniffer's label elsewhere, nor from
    # outside the ranges; not to another port; not out to anything but DNS and the API server's ports.
    assert Connection("netpol-learn/Pod/intruder", SERVICE, "TCP", 8080) not in verdict.allowed
    assert Connection("shop/Pod/lookalike", SERVICE, "TCP", 8080) not in verdict.allowed
    assert Connection("outside", SERVICE, "TCP", 8080) not in verdict.allowed
    assert Connection(SERVICE, "shop/Pod/web", "TCP", 8080) not in verdict.allowed
    # The policies select the service's pods only: the others are as open as before.
    assert {Connection("netpol-learn/Pod/intruder", "shop/Pod/web", "TCP", 8080), Connection("outside", SNIFFER, "TCP", 9090),
            Connection("netpol-learn/Pod/intruder", "kube-system/Pod/metrics", "UDP", 53)} <= verdict.allowed


def test_without_node_cidr_the_port_admits_every_address(tmp_path):
    text = render_manifests()
    assert _of_the_service(_judged(tmp_path, text)) == EGRESS | {
        Connection(SNIFFER, SERVICE, "TCP", 8080)} | {Connection(address, SERVICE, "TCP", 8080) for address in EXTERNAL}
    assert "No --node-cidr was given: every address (0.0.0.0/0, ::/0)" in text


def test_policy_comments_say_what_networkpolicy_cannot_express(default_text):
    flat = " ".join(line.lstrip("# ").strip() for line in default_text.splitlines() if line.lstrip().startswith("#"))
    assert "Most network plugins cannot tell a host-network pod from the node" in flat
    assert "No policy can narrow this to the sniffer process: every program of the node shares its addresses" in flat
    assert "policies see the connection after the Service's translation, at the API server's own address and port" in flat
    assert "Traffic from the pod's own node (the kubelet's probes, that node's sniffer) is always allowed" in flat
    docs = (Path(__file__).parent.parent / "docs" / "sniffer.md").read_text()
    assert "### Deploying the service" in docs and "--node-cidr" in docs


def test_node_cidrs_are_networks_sorted_once_in_any_order(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert run(["manifests", "--node-cidr", "fd00:10::/64", "--node-cidr", "10.0.0.7/16", "--node-cidr", "192.168.1.10",
                "--node-cidr", "10.0.0.0/16", "-o", a]).exit_code == 0
    assert run(["manifests", "--node-cidr", "192.168.1.10/32", "--node-cidr", "10.0.0.0/16", "--node-cidr", "fd00:10::/64", "-o", b]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    ingress = named(a.read_text())["NetworkPolicy", "netpol-learn-allow-http"]["spec"]["ingress"]
    assert ingress == [{"ports": [{"protocol": "TCP", "port": 8080}], "from": [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "netpol-learn-sniffer"}}},
        {"ipBlock": {"cidr": "10.0.0.0/16"}}, {"ipBlock": {"cidr": "192.168.1.10/32"}}, {"ipBlock": {"cidr": "fd00:10::/64"}}]}]
    assert "# - --node-cidr: 10.0.0.0/16, 192.168.1.10/32, fd00:10::/64." in a.read_text()


@pytest.mark.parametrize("cidr", ["10.0.0.300/8", "nodes", "10.0.0.0/33", ""])
def test_bad_node_cidr_is_one_line_and_exit_2(tmp_path, cidr):
    out = tmp_path / "m.yaml"
    result = run(["manifests", "--node-cidr", "10.0.0.0/16", "--node-cidr", cidr, "-o", out])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: netpol-learn manifests: Invalid value for '--node-cidr': {cidr!r} is not an address range such as 10.244.0.0/16 "
        "(see netpol-learn manifests --help)"]
    assert not out.exists()
    with pytest.raises(ManifestError, match=r"^node CIDR .*: not an address range such as 10\.0\.0\.0/16 or fd00::/64$"):
        render_manifests(node_cidrs=[cidr])


# --- --store-size --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["10Gi", "500G", "1.5Ti", "2e9", "1Mi", "+20Gi", "1048576", "0.5Ei", "3E9", "1048576000m", ".5Gi", "5.Gi"])
def test_store_size_takes_kubernetes_quantities(size):
    from kubernetes.utils import parse_quantity

    assert quantity_value(size) == Decimal(parse_quantity(size))  # read as the Kubernetes client reads it
    claim = named(render_manifests(store_size=size))["PersistentVolumeClaim", "netpol-learn-store"]
    assert claim["spec"]["resources"]["requests"]["storage"] == size  # as given, a string


@pytest.mark.parametrize(("size", "line"), [
    ("10GB", "error: store size '10GB': not a Kubernetes quantity (a number and a unit such as Mi, Gi, Ti or M, G, T: 10Gi, 500G)"),
    ("10gi", None), ("ten", None), ("", None), (" 10Gi", None), ("10Gi ", None), ("1e", None), ("0x10", None), ("1,5Gi", None),
    ("10", "error: store size '10': 10 bytes is less than 1Mi (a unit left out? such as 10Gi)"),
    ("0", None), ("-5Gi", None), ("100m", "error: store size '100m': 0.1 bytes is less than 1Mi (a unit left out? such as 10Gi)"),
])
def test_bad_store_size_is_one_line_and_exit_2(tmp_path, size, line):
    out = tmp_path / "m.yaml"
    result = run(["manifests", "--store-size", size, "-o", out])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: store size {size!r}: "), result.stderr
    if line:
        assert result.stderr.splitlines() == [line]
    assert not out.exists()


# --- parameters, output, templates --------------------------------------------------------------


def test_namespace_and_image_parameters(tmp_path):
    text = render_manifests("net-observe", "registry.example/netpol-learn:1.2.3")
    docs = named(text)
    assert docs["Namespace", "net-observe"]
    for doc in stream(text):
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "net-observe", doc["kind"]
    # ClusterRoles are cluster-wide: a second installation does not take over the default one's.
    assert docs["ClusterRole", "netpol-learn-net-observe"]
    assert docs["ClusterRoleBinding", "netpol-learn-net-observe"]["roleRef"]["name"] == "netpol-learn-net-observe"
    assert docs["ClusterRoleBinding", "netpol-learn-net-observe"]["subjects"][0]["namespace"] == "net-observe"
    for kind, name in (("DaemonSet", "netpol-learn-sniffer"), ("Deployment", "netpol-learn")):
        assert docs[kind, name]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/netpol-learn:1.2.3"
    sniff = docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert sniff[sniff.index("--server") + 1] == "http://netpol-learn.net-observe.svc:8080"
    serve = docs["Deployment", "netpol-learn"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert serve[serve.index("--writer") + 1] == "system:serviceaccount:net-observe:netpol-learn-sniffer"
    default = named(render_manifests())
    assert default["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_IMAGE == f"netpol-learn:{__version__}"
    # The CLI passes them on.
    out = tmp_path / "m.yaml"
    assert run(["manifests", "--namespace", "net-observe", "--image", "registry.example/netpol-learn:1.2.3", "-o", out]).exit_code == 0
    assert out.read_text() == text


@pytest.mark.parametrize(("args", "line"), [
    (["--namespace", "Net_Observe"], "error: namespace 'Net_Observe': not a valid namespace name (at most 63 characters a-z, 0-9 and '-', "
                                     "starting and ending with a letter or digit)"),
    (["--namespace", "a" * 64], None),
    (["--image", "netpol-learn:0.1.0\n  privileged: true"], None),
    (["--image", ""], None),
])
def test_bad_parameters_are_one_line_and_exit_2(tmp_path, args, line):
    out = tmp_path / "m.yaml"
    result = run(["manifests", *args, "-o", out])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    if line:
        assert result.stderr.splitlines() == [line]
    assert not out.exists()


def test_stdout_is_the_file(tmp_path):
    # byte-identical on every run: tests/cases/manifests-default (a fresh process, a random hash seed, pinned bytes)
    first = tmp_path / "a.yaml"
    assert run(["manifests", "-o", first]).exit_code == 0
    stdout = run(["manifests"])
    assert stdout.exit_code == 0 and stdout.stdout.encode() == first.read_bytes()
    assert stdout.stderr.strip().endswith("-> stdout")
    assert first.read_text().startswith(MARKER)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_templates_override(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    # A site's own variant of the built-in sniffer template: a priority class and a bigger memory limit.
    own = (TEMPLATES / "sniffer.yaml.j2").read_text()
    own = own.replace("      serviceAccountName: netpol-learn-sniffer\n",
                      "      serviceAccountName: netpol-learn-sniffer\n      priorityClassName: system-node-critical\n")
    own = own.replace("memory: 512Mi", "memory: 1Gi")
    (templates / "sniffer.yaml.j2").write_text(own)
    out = tmp_path / "m.yaml"
    result = run(["manifests", "--templates", templates, "--namespace", "net-observe", "-o", out])
    assert result.exit_code == 0, result.stderr
    docs = named(out.read_text())
    pod = docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert docs["Namespace", "net-observe"]
    assert docs["Deployment", "netpol-learn"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"  # built in
    assert validate_documents([out]) == []
    # The service's template on its own: the API server's egress narrowed to its real address.
    service = (TEMPLATES / "service.yaml.j2").read_text()
    narrowed = service.replace("    - ipBlock:\n        cidr: 0.0.0.0/0\n    - ipBlock:\n        cidr: ::/0\n",
                               "    - ipBlock:\n        cidr: 192.168.1.10/32\n")
    assert narrowed != service
    (templates / "service.yaml.j2").write_text(narrowed)
    result = run(["manifests", "--templates", templates, "--store-size", "50Gi", "-o", out])
    assert result.exit_code == 0, result.stderr
    docs = named(out.read_text())
    assert docs["NetworkPolicy", "netpol-learn-allow-api-server"]["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "192.168.1.10/32"}}]
    assert docs["PersistentVolumeClaim", "netpol-learn-store"]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert docs["DaemonSet", "netpol-learn-sniffer"]["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"
    assert validate_documents([out]) == []
    # A directory without them falls back to the built-in templates.
    other = tmp_path / "other"
    other.mkdir()
    assert run(["manifests", "--templates", other]).stdout == render_manifests()


@pytest.mark.parametrize("name", ["sniffer.yaml.j2", "service.yaml.j2"])
@pytest.mark.parametrize(("template", "message"), [
    ("apiVersion: v1\nkind: Namespace\n", r"^error: the template {name} must start with the line '# Generated by netpol-learn'$"),
    ("# Generated by netpol-learn\nkind: [unclosed\n", r"^error: template {name} renders invalid YAML line \d+: "),
    ("# Generated by netpol-learn\n{{{{ no_such_value }}}}\n", r"^error: template {name}: 'no_such_value' is undefined$"),
    ("# Generated by netpol-learn\n- just\n- a list\n", r"^error: template {name} must render Kubernetes objects"),
])
def test_broken_template_override_is_one_line_and_exit_2(tmp_path, name, template, message):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / name).write_text(template.format())
    result = run(["manifests", "--templates", templates, "-o", tmp_path / "m.yaml"])
    assert result.exit_code == 2
    pattern = message.format(name=re.escape(name))
    assert len(result.stderr.splitlines()) == 1 and re.search(pattern, result.stderr.strip()), result.stderr
    assert not (tmp_path / "m.yaml").exists()


def test_templates_that_is_not_a_directory_is_one_line(tmp_path):
    result = run(["manifests", "--templates", tmp_path / "missing"])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {tmp_path / 'missing'}: not a directory of templates"]
