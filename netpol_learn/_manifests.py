"""The sniffer's Kubernetes manifests: ``netpol-learn manifests``.

One YAML stream, rendered from ``templates/sniffer.yaml.j2`` (overridable with ``--templates``):
the Namespace, the ServiceAccount, a read-only ClusterRole and its ClusterRoleBinding, and the
DaemonSet that runs ``netpol-learn sniff`` on every node with the node's network, the host's
``/proc`` mounted read-only for its socket scan (``--proc /host/proc``), and no capability but
NET_RAW. ``netpol-learn collect`` finds its pods by ``SNIFFER_SELECTOR``. The same parameters
always give the same bytes. See docs/sniffer.md.
"""

from __future__ import annotations

import os
import re

from netpol_learn import __version__
from netpol_learn._errors import ManifestError, TemplateError

DEFAULT_NAMESPACE = "netpol-learn"
DEFAULT_IMAGE = f"netpol-learn:{__version__}"  # what `docker build -t netpol-learn:<version> .` tags
TEMPLATE = "sniffer.yaml.j2"
#: The label the DaemonSet gives its pods, as a label selector.
SNIFFER_SELECTOR = "app.kubernetes.io/name=netpol-learn-sniffer"
CLUSTER_ROLE = "netpol-learn-sniffer"

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# An image reference: registry/path:tag or @digest; no spaces, quotes or control characters.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


def cluster_role_name(namespace: str) -> str:
    """ClusterRoles are cluster-wide: a sniffer in another namespace gets a role of its own."""
    return CLUSTER_ROLE if namespace == DEFAULT_NAMESPACE else f"{CLUSTER_ROLE}-{namespace}"


def render_manifests(namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE,
                     template_dir: str | os.PathLike | None = None) -> str:
    """The manifests as one YAML stream (documents separated by ``---``)."""
    if len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        raise ManifestError(f"namespace {namespace!r}: not a valid namespace name (at most 63 characters "
                            "a-z, 0-9 and '-', starting and ending with a letter or digit)")
    if not _IMAGE.fullmatch(image):
        raise ManifestError(f"image {image!r}: not an image reference (such as registry.example/netpol-learn:0.1.0)")
    import yaml

    from netpol_learn._render import MARKER, environment, render_template

    text = render_template(environment(template_dir), TEMPLATE, namespace=namespace, image=image,
                   cluster_role=cluster_role_name(namespace), version=__version__)
    text = text if text.endswith("\n") else text + "\n"
    if not text.startswith(MARKER):
        raise TemplateError(f"the template {TEMPLATE} must start with the line {MARKER!r}")
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"template {TEMPLATE} renders invalid YAML{where}: {' '.join(problem.split())}") from exc
    if not documents or not all(isinstance(d, dict) and d.get("kind") for d in documents):
        raise TemplateError(f"template {TEMPLATE} must render Kubernetes objects (mappings with a kind)")
    return text


def document_kinds(text: str) -> list[str]:
    """The kinds of the documents of a rendered stream, in order."""
    import yaml

    return [d["kind"] for d in yaml.safe_load_all(text) if d is not None]
