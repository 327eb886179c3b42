"""The Kubernetes manifests of the sniffer and the learning service: ``netpol-learn manifests``.

One YAML stream, rendered from two templates (each overridable with ``--templates``):

- ``templates/sniffer.yaml.j2``: the Namespace, the sniffer's ServiceAccount (bound to no role:
  with ``--server`` the sniffer asks the API nothing), and the DaemonSet that runs
  ``netpol-learn sniff --server`` on every node with the node's network, the host's ``/proc``
  mounted read-only for its socket scan (``--proc /host/proc``), the spool on its ``/tmp``
  emptyDir, and no capability but NET_RAW;
- ``templates/service.yaml.j2``: the learning service (``netpol-learn serve``): its
  ServiceAccount with a read-only ClusterRole plus TokenReview and SubjectAccessReview, a Role
  ``netpol-learn-reader`` for its readers (bound to nobody), the NetworkPolicies that guard it,
  the PersistentVolumeClaim of its store (``--store-size``), the Service and the Deployment (one
  replica, ``Recreate``, not root).

``netpol-learn collect`` finds the service by ``SERVICE_NAME`` and the sniffer pods by
``SNIFFER_SELECTOR``. The same parameters always give the same bytes. See docs/sniffer.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from decimal import Decimal

from netpol_learn import __version__
from netpol_learn._errors import ManifestError, TemplateError

DEFAULT_NAMESPACE = "netpol-learn"
DEFAULT_IMAGE = f"netpol-learn:{__version__}"  # what `docker build -t netpol-learn:<version> .` tags
#: The templates, in the order their documents appear in the stream.
TEMPLATES_USED = ("sniffer.yaml.j2", "service.yaml.j2")
TEMPLATE = TEMPLATES_USED[0]
#: The label the DaemonSet gives its pods, as a label selector.
SNIFFER_SELECTOR = "app.kubernetes.io/name=netpol-learn-sniffer"
#: The sniffer's ServiceAccount: the learning service's one writer.
SNIFFER_ACCOUNT = "netpol-learn-sniffer"
#: The name the sniffer's ClusterRole had (it has none now); still given to the templates.
CLUSTER_ROLE = "netpol-learn-sniffer"
#: The learning service's Service, Deployment, ServiceAccount (and ClusterRole, in the default namespace).
SERVICE_NAME = "netpol-learn"
#: The label the Deployment gives the service's pods, as a label selector.
SERVICE_SELECTOR = "app.kubernetes.io/name=netpol-learn"
SERVICE_PORT = 8080
#: The name of the Service's (and the container's) one port.
SERVICE_PORT_NAME = "http"
STORE_DIR = "/var/lib/netpol-learn"
DEFAULT_STORE_SIZE = "10Gi"
#: The smallest --store-size: below it, a unit was probably left out (10 is ten bytes).
MIN_STORE_SIZE = 1 << 20
#: What the service's port admits when no --node-cidr is given.
EVERY_ADDRESS = ("0.0.0.0/0", "::/0")

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# An image reference: registry/path:tag or @digest; no spaces, quotes or control characters.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
# A Kubernetes quantity (k8s.io/apimachinery resource.Quantity): a signed decimal number and a
# binary suffix (Ki..Ei), a decimal one (m, k, M..E) or an exponent (e3, E-2).
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[mkMGTPE])?")
_SUFFIXES = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
             "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}


def cluster_role_name(namespace: str) -> str:
    """The name the sniffer's ClusterRole had in ``namespace`` (templates still get it as ``cluster_role``)."""
    return CLUSTER_ROLE if namespace == DEFAULT_NAMESPACE else f"{CLUSTER_ROLE}-{namespace}"


def service_role_name(namespace: str) -> str:
    """The learning service's ClusterRole: cluster-wide, so a service in another namespace gets its own."""
    return SERVICE_NAME if namespace == DEFAULT_NAMESPACE else f"{SERVICE_NAME}-{namespace}"


def service_url(namespace: str) -> str:
    """Where the sniffers post their segments: the Service, by its cluster DNS name."""
    return f"http://{SERVICE_NAME}.{namespace}.svc:{SERVICE_PORT}"


def quantity_value(text: str) -> Decimal:
    """The value of a Kubernetes quantity (``10Gi``, ``500G``, ``1.5Ti``, ``2e9``); ValueError if
    ``text`` is not one, exactly as the API server reads them (no spaces, case-sensitive suffixes)."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _SUFFIXES:
        return number * _SUFFIXES[suffix]
    return number.scaleb(int(suffix[1:]))  # an exponent: e9, E-3


def check_store_size(store_size: str) -> str:
    """``store_size`` if it is a Kubernetes quantity of at least ``MIN_STORE_SIZE`` bytes; else a ManifestError."""
    try:
        value = quantity_value(store_size)
    except ValueError:
        raise ManifestError(f"store size {store_size!r}: not a Kubernetes quantity (a number and a unit such as "
                            "Mi, Gi, Ti or M, G, T: 10Gi, 500G)") from None
    if value < MIN_STORE_SIZE:
        raise ManifestError(f"store size {store_size!r}: {value.normalize():f} bytes is less than 1Mi "
                            "(a unit left out? such as 10Gi)")
    return store_size


def node_ranges(node_cidrs: Iterable[str]) -> list[str]:
    """The address ranges, each as its network (a bare address is its /32 or /128), IPv4 first,
    sorted, each once; a ManifestError for one that is not an address range."""
    networks = set()
    for cidr in node_cidrs:
        try:
            networks.add(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            raise ManifestError(f"node CIDR {str(cidr)!r}: not an address range such as 10.0.0.0/16 or fd00::/64") from None
    return [str(n) for n in sorted(networks, key=lambda n: (n.version, n))]


def render_manifests(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE,
                     template_dir: str | os.PathLike | None = None, *, store_size: str = DEFAULT_STORE_SIZE,
                     node_cidrs: Iterable[str] = ()) -> str:
    """The manifests as one YAML stream (documents separated by ``---``): the sniffer's, then the
    learning service's.

    store_size: the service's PersistentVolumeClaim, a Kubernetes quantity (at least 1Mi).
    node_cidrs: the address ranges the service's port 8080 admits besides the sniffer pods (the
        sniffers use the node's network, which NetworkPolicy cannot select: docs/sniffer.md);
        none means every address.
    """
    if len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        raise ManifestError(f"namespace {namespace!r}: not a valid namespace name (at most 63 characters "
                            "a-z, 0-9 and '-', starting and ending with a letter or digit)")
    if not _IMAGE.fullmatch(image):
        raise ManifestError(f"image {image!r}: not an image reference (such as registry.example/netpol-learn:0.1.0)")
    check_store_size(store_size)
    ranges = node_ranges(node_cidrs)
    import yaml

    from netpol_learn._render import MARKER, environment, render_template

    env = environment(template_dir)
    values = dict(
        namespace=namespace, image=image, version=__version__, server=service_url(namespace),
        service_role=service_role_name(namespace), sniffer_subject=f"system:serviceaccount:{namespace}:{SNIFFER_ACCOUNT}",
        store_size=store_size, node_cidrs=ranges, ingest_cidrs=ranges or list(EVERY_ADDRESS),
        cluster_role=cluster_role_name(namespace),
    )
    texts = []
    for name in TEMPLATES_USED:
        text = render_template(env, name, **values)
        text = text if text.endswith("\n") else text + "\n"
        if not text.startswith(MARKER):
            raise TemplateError(f"the template {name} must start with the line {MARKER!r}")
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TemplateError(f"template {name} renders invalid YAML{where}: {' '.join(problem.split())}") from exc
        if not documents or not all(isinstance(d, dict) and d.get("kind") for d in documents):
            raise TemplateError(f"template {name} must render Kubernetes objects (mappings with a kind)")
        texts.append(text)
    return "".join(texts)


def document_kinds(text: str) -> list[str]:
    """The kinds of the documents of a rendered stream, in order."""
    import yaml

    return [d["kind"] for d in yaml.safe_load_all(text) if d is not None]
