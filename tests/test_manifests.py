"""``netpol-learn manifests``: the sniffer's Namespace, RBAC and DaemonSet.

The documents are checked against the Kubernetes OpenAPI schemas (``validate_documents``, strict:
an unknown or misspelt field is an error), and the settings that make the sniffer safe to run on
every node are pinned exactly: no capability but NET_RAW, not privileged, no privilege
escalation, a read-only root filesystem, the node's network, the host's /proc read-only and
nothing else of the host, every node, bounded resources, and a read-only ClusterRole on the
listed resources and nothing else. No cluster can run here, so nothing is applied;
``test_collect.py`` reads logs from pods shaped like these.
"""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner
from policy_judge import validate_documents

from netpol_learn import __version__
from netpol_learn._cli import main
from netpol_learn._manifests import DEFAULT_IMAGE, SNIFFER_SELECTOR, render_manifests
from netpol_learn._render import MARKER, TEMPLATES

KINDS = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
READ = ("get", "list", "watch")
RESOURCES = {
    ("", "pods"), ("", "namespaces"), ("", "services"), ("", "nodes"), ("discovery.k8s.io", "endpointslices"),
    ("apps", "replicasets"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
}


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def documents(text: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert [d["kind"] for d in docs] == KINDS
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def default_text() -> str:
    return render_manifests()


def test_documents_validate_against_the_kubernetes_schemas(tmp_path):
    out = tmp_path / "sniffer.yaml"
    result = run(["manifests", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert validate_documents([out]) == []
    assert result.stderr.splitlines() == [f"5 objects ({', '.join(KINDS)}) in namespace netpol-learn -> {out}"]
    custom = tmp_path / "custom.yaml"
    assert run(["manifests", "--namespace", "net-observe", "--image", "registry.example:5000/tools/netpol-learn@sha256:" + "a" * 64,
                "-o", custom]).exit_code == 0
    assert validate_documents([custom]) == []


def test_daemonset_security_settings_exactly(default_text):
    ds = documents(default_text)["DaemonSet"]
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
    # The only writable place is an emptyDir on /tmp; of the host, only /proc is mounted, read-only,
    # for the socket scan (which needs no capability: see the template's comment).
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"},
                                         {"name": "host-proc", "mountPath": "/host/proc", "readOnly": True}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                              {"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}}]
    assert container["args"] == ["sniff", "--interval", "30", "--proc", "/host/proc"] and "command" not in container  # the image's ENTRYPOINT is netpol-learn
    assert "The socket scan needs no capability" in default_text and "CAP_SYS_PTRACE" in default_text
    assert pod["terminationGracePeriodSeconds"] >= 2 * 30  # time to write the last interval's segment
    assert pod["serviceAccountName"] == "netpol-learn-sniffer"
    assert "# Root, holding no capability but NET_RAW" in default_text


def test_cluster_role_is_read_only_on_the_listed_resources_and_nothing_else(default_text):
    docs = documents(default_text)
    role = docs["ClusterRole"]
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no resourceNames, no nonResourceURLs
        assert tuple(rule["verbs"]) == READ
        granted |= {(group, resource) for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == RESOURCES
    assert "*" not in default_text.split("kind: ClusterRole", 1)[1].split("---", 1)[0]
    assert "aggregationRule" not in role
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "netpol-learn-sniffer", "namespace": "netpol-learn"}]


def test_collect_finds_the_pods_of_the_daemonset(default_text):
    ds = documents(default_text)["DaemonSet"]
    key, value = SNIFFER_SELECTOR.split("=")
    assert ds["spec"]["selector"] == {"matchLabels": {key: value}}
    assert ds["spec"]["template"]["metadata"]["labels"][key] == value


def test_namespace_and_image_parameters(tmp_path):
    text = render_manifests("net-observe", "registry.example/netpol-learn:1.2.3")
    docs = documents(text)
    assert docs["Namespace"]["metadata"]["name"] == "net-observe"
    for kind in ("ServiceAccount", "DaemonSet"):
        assert docs[kind]["metadata"]["namespace"] == "net-observe"
    assert docs["ClusterRoleBinding"]["subjects"][0]["namespace"] == "net-observe"
    # ClusterRoles are cluster-wide: a second sniffer namespace does not take over the default one's.
    assert docs["ClusterRole"]["metadata"]["name"] == "netpol-learn-sniffer-net-observe"
    assert docs["ClusterRoleBinding"]["roleRef"]["name"] == "netpol-learn-sniffer-net-observe"
    assert docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/netpol-learn:1.2.3"
    assert "netpol-learn\n" not in text.replace("part-of: netpol-learn\n", "")  # the default namespace appears nowhere else
    default = documents(render_manifests())
    assert default["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_IMAGE == f"netpol-learn:{__version__}"
    assert default["ClusterRole"]["metadata"]["name"] == "netpol-learn-sniffer"
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
    # A site's own variant of the built-in template: a priority class and a bigger memory limit.
    own = (TEMPLATES / "sniffer.yaml.j2").read_text()
    own = own.replace("      serviceAccountName: netpol-learn-sniffer\n",
                      "      serviceAccountName: netpol-learn-sniffer\n      priorityClassName: system-node-critical\n")
    own = own.replace("memory: 512Mi", "memory: 1Gi")
    (templates / "sniffer.yaml.j2").write_text(own)
    out = tmp_path / "m.yaml"
    result = run(["manifests", "--templates", templates, "--namespace", "net-observe", "-o", out])
    assert result.exit_code == 0, result.stderr
    pod = documents(out.read_text())["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert documents(out.read_text())["Namespace"]["metadata"]["name"] == "net-observe"
    assert validate_documents([out]) == []
    # A directory without sniffer.yaml.j2 falls back to the built-in template.
    other = tmp_path / "other"
    other.mkdir()
    assert run(["manifests", "--templates", other]).stdout == render_manifests()


@pytest.mark.parametrize(("template", "message"), [
    ("apiVersion: v1\nkind: Namespace\n", r"^error: the template sniffer\.yaml\.j2 must start with the line '# Generated by netpol-learn'$"),
    ("# Generated by netpol-learn\nkind: [unclosed\n", r"^error: template sniffer\.yaml\.j2 renders invalid YAML line \d+: "),
    ("# Generated by netpol-learn\n{{ no_such_value }}\n", r"^error: template sniffer\.yaml\.j2: 'no_such_value' is undefined$"),
    ("# Generated by netpol-learn\n- just\n- a list\n", r"^error: template sniffer\.yaml\.j2 must render Kubernetes objects"),
])
def test_broken_template_override_is_one_line_and_exit_2(tmp_path, template, message):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "sniffer.yaml.j2").write_text(template)
    result = run(["manifests", "--templates", templates, "-o", tmp_path / "m.yaml"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and re.search(message, result.stderr.strip()), result.stderr
    assert not (tmp_path / "m.yaml").exists()


def test_templates_that_is_not_a_directory_is_one_line(tmp_path):
    result = run(["manifests", "--templates", tmp_path / "missing"])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {tmp_path / 'missing'}: not a directory of templates"]
