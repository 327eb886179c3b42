"""Pieces for the tests of the review page (``netpol-learn report``): report models built by hand
and at scale, and the page opened in the system's Chromium through Playwright.

The browser starts once per test session (``report_browser``); each test gets a fresh offline
context (``report_browser_page``) whose every request is recorded and, unless it is the report
itself, aborted, with the console's messages and the page's errors beside them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("NETPOL_LEARN_CHROMIUM", "/usr/bin/chromium")
#: Root in CI, often in a container without /dev/shm room: no sandbox, no shared memory files.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--font-render-hinting=none"]
VIEWPORT = {"width": 1600, "height": 1000}
READY_TIMEOUT_MS = 120_000

T0 = "2026-05-28T10:00:00Z"
T1 = "2026-05-29T09:30:00Z"


# -- models ---------------------------------------------------------------------------------------

def _node(id, kind, label, namespace, *, pods=None, addresses=(), names=(), note=None, status=None, policies=()):
    return {"id": id, "kind": kind, "label": label, "namespace": namespace, "pods": pods,
            "addresses": list(addresses), "names": list(names), "note": note, "status": status,
            "policies": list(policies)}


def _status(connections, edges, verdict="stable", last_new_edge=T0):
    return {"verdict": verdict, "first_seen": T0, "last_seen": T1, "last_new_edge": last_new_edge,
            "connections": connections, "edges": edges, "partial": False}


def _policy(namespace, name, selector, ports):
    rules = "".join(f"        - protocol: TCP\n          port: {p}\n" for p in ports)
    yaml = (f"# learned from 2 flows: {namespace}/{name}\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  podSelector:\n    matchLabels:\n"
            f"      app: {selector}\n  policyTypes: [Ingress]\n  ingress:\n    - ports:\n{rules}")
    return {"namespace": namespace, "name": name, "yaml": yaml}


def _evidence(src, dst, protocol, port, connections, evidence="observed", lines=1):
    line = {"src": src, "dst": dst, "protocol": protocol, "port": port, "connections": connections,
            "first_seen": T0, "last_seen": T1, "direction": f"syn {connections}", "evidence": evidence}
    return {"first_seen": T0, "last_seen": T1, "connections": connections, "flows": lines,
            "packets": connections * 10, "bytes": connections * 900, "direction": [["syn", connections]],
            "via": [], "evidence": evidence, "mid_stream": False, "inferred": False,
            "lines": [dict(line) for _ in range(lines)], "more_lines": 0}


def _edges(raw):
    """Model edges from (source, target, protocol, port, connections, extra) sorted, numbered."""
    raw = sorted(raw, key=lambda r: (r[0], r[1], r[2], -1 if r[3] is None else r[3], r[5].get("verdict", "allowed")))
    out = []
    for i, (source, target, protocol, port, connections, extra) in enumerate(raw, 1):
        edge = {"id": f"e{i}", "source": source, "target": target, "protocol": protocol, "port": port,
                "connections": connections, "verdict": "allowed", "denied_by": None, "why": None, "diff": None,
                "observed": connections > 0,
                "evidence": _evidence(extra.get("src", "10.244.0.5"), extra.get("dst", "10.244.0.9"), protocol, port,
                                      connections, extra.get("evidence", "observed"), extra.get("lines", 1))}
        edge.update({k: v for k, v in extra.items() if k in edge and k != "evidence"})
        out.append(edge)
    return out


def small_model() -> dict:
    """A guestbook in diff mode with one node of every kind and an edge of every verdict; a note
    and a policy's comment carry markup (``</script>``, ``<b>``) that must stay text."""
    gb = "guestbook"
    nodes = [
        _node("apiserver", "apiserver", "API server", None, addresses=["10.96.0.1", "172.18.0.2"]),
        _node(f"{gb}/Deployment/api", "workload", "Deployment/api", gb, pods=2, status=_status(40, 4),
              policies=[_policy(gb, "api", "api", [8080])]),
        _node(f"{gb}/Deployment/frontend", "workload", "Deployment/frontend", gb, pods=3, status=_status(90, 5),
              policies=[_policy(gb, "frontend", "frontend", [80])]),
        _node(f"{gb}/StatefulSet/redis", "workload", "StatefulSet/redis", gb, pods=1, status=_status(30, 1),
              policies=[dict(_policy(gb, "redis", "redis", [6379]),
                             yaml="# a comment with </script><b>markup</b> & more\n"
                                  + _policy(gb, "redis", "redis", [6379])["yaml"])]),
        _node("kube-system/Deployment/coredns", "dns", "Deployment/coredns", "kube-system", pods=2,
              addresses=["10.96.0.10"], status=_status(12, 1)),
        _node("node-local-dns:169.254.20.10", "node-local-dns", "node-local DNS 169.254.20.10", None,
              addresses=["169.254.20.10"]),
        _node("node:worker-1", "node", "node worker-1", None, addresses=["172.18.0.3"]),
        _node("outside:203.0.113.0/24", "external", "203.0.113.0/24", None, addresses=["203.0.113.0/24"]),
        _node("outside:api.example.com", "external", "api.example.com", None, addresses=["198.51.100.7"],
              names=["api.example.com"]),
        _node("unresolved:10.244.0.99", "unresolved", "unresolved 10.244.0.99", None, addresses=["10.244.0.99"],
              note="no pod held 10.244.0.99 then </script><b>x</b>"),
    ]
    api, fe, redis = f"{gb}/Deployment/api", f"{gb}/Deployment/frontend", f"{gb}/StatefulSet/redis"
    edges = _edges([
        ("outside:203.0.113.0/24", fe, "TCP", 80, 50, {"lines": 3}),
        (fe, api, "TCP", 8080, 40, {"lines": 2}),
        (fe, "kube-system/Deployment/coredns", "UDP", 53, 12, {}),
        (fe, "node-local-dns:169.254.20.10", "UDP", 53, 3, {}),
        (api, redis, "TCP", 6379, 30, {"diff": "added"}),
        (api, redis, "TCP", 6380, 4, {"verdict": "denied", "denied_by": "ingress", "why": "no rule of redis allows 6380"}),
        (api, "outside:api.example.com", "TCP", 443, 7, {"diff": "removed", "verdict": "denied", "denied_by": "egress"}),
        (api, "apiserver", "TCP", 443, 2, {"verdict": "attempt", "evidence": "refused"}),
        ("node:worker-1", fe, "TCP", 80, 20, {}),
        ("unresolved:10.244.0.99", api, "TCP", 8080, 3, {"verdict": "unresolved", "why": "no pod held 10.244.0.99 then"}),
        (fe, api, "ICMP", None, 1, {"verdict": "not-evaluated", "why": "NetworkPolicy has no ICMP"}),
        (redis, api, "TCP", 9121, 0, {"verdict": "not-written", "why": "never seen", "diff": "added"}),
    ])
    return {
        "format": "netpol-learn-report/1", "title": "netpol-learn: guestbook", "mode": "diff",
        "summary": "12 flows, 12 connections, 3 workloads in 1 namespace; learning: stable",
        "capture": {"start": T0, "end": T1},
        "namespaces": [{"name": gb, "workloads": 3, "never_seen": ["Deployment/ui-old"]},
                       {"name": "kube-system", "workloads": 0, "never_seen": []}],
        "nodes": nodes, "edges": edges,
        "diff": {"added": [{"client": api, "server": redis, "protocol": "TCP", "port": 6379, "observed": True},
                           {"client": redis, "server": api, "protocol": "TCP", "port": 9121, "observed": False}],
                 "removed": [{"client": api, "server": "api.example.com", "protocol": "TCP", "port": 443,
                              "observed": True}]},
        "attention": ["3 flows from unresolved 10.244.0.99 (no pod held it then)",
                      "1 namespace holds a workload never seen: guestbook/Deployment/ui-old"],
        "status": {"verdict": "stable", "stable_after": "24h", "workloads": 3, "edges": 12},
        "chart": ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                  "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="),
    }


PORTS = [80, 443, 8080, 9090, 5432, 6379, 3000, 8443]


def synthetic_model(workloads: int = 2000, namespaces: int = 40, seed: int = 1) -> dict:
    """A generated-mode model of ``workloads`` workloads spread over ``namespaces`` namespaces:
    calls mostly inside a namespace (three in four), some to a handful of shared ones, a third of
    the workloads asking the cluster DNS, some calling outside, node probes, and a few denied,
    attempted and unresolved edges. The same arguments give the same model."""
    rnd = random.Random(seed)
    names = [f"team-{i:02d}" for i in range(namespaces)]
    shared = names[: max(1, namespaces // 8)]
    by_ns: dict[str, list[str]] = {ns: [] for ns in names}
    port_of: dict[str, int] = {}
    nodes = []
    for i in range(workloads):
        ns = names[i % namespaces]
        kind = "StatefulSet" if i % 7 == 0 else "Deployment"
        label = f"{kind}/svc-{i:04d}"
        wid = f"{ns}/{label}"
        by_ns[ns].append(wid)
        port_of[wid] = rnd.choice(PORTS)
        nodes.append(_node(wid, "workload", label, ns, pods=1 + i % 3, status=_status(10 + i % 50, 1 + i % 4),
                           policies=[_policy(ns, f"svc-{i:04d}", f"svc-{i:04d}", [port_of[wid]])]))
    dns = "kube-system/Deployment/coredns"
    nodes.append(_node(dns, "dns", "Deployment/coredns", "kube-system", pods=2, addresses=["10.96.0.10"]))
    externals = [f"outside:ext-{j:02d}.example.com" for j in range(12)]
    for j, ext in enumerate(externals):
        nodes.append(_node(ext, "external", ext.split(":", 1)[1], None, addresses=[f"203.0.113.{j + 1}"],
                           names=[ext.split(":", 1)[1]]))
    probes = [f"node:worker-{j}" for j in range(3)]
    for j, nd in enumerate(probes):
        nodes.append(_node(nd, "node", f"node worker-{j}", None, addresses=[f"172.18.0.{j + 2}"]))
    unresolved = [f"unresolved:10.244.9.{j}" for j in range(4)]
    for u in unresolved:
        nodes.append(_node(u, "unresolved", "unresolved " + u.split(":", 1)[1], None, addresses=[u.split(":", 1)[1]],
                           note="no pod held it then"))

    raw: dict[tuple, tuple] = {}
    all_workloads = [w for ns in names for w in by_ns[ns]]
    for ns in names:
        for w in by_ns[ns]:
            for _ in range(rnd.choice([0, 1, 1, 2, 2, 3])):
                pool = by_ns[ns] if rnd.random() < 0.75 else by_ns[rnd.choice(shared)]
                t = rnd.choice(pool)
                if t == w:
                    continue
                extra = {}
                r = rnd.random()
                if r < 0.02:
                    extra = {"verdict": "denied", "denied_by": "ingress"}
                elif r < 0.04:
                    extra = {"verdict": "attempt", "evidence": "unanswered"}
                raw[(w, t, "TCP", port_of[t])] = (rnd.randint(1, 200), extra)
            if rnd.random() < 0.33:
                raw[(w, dns, "UDP", 53)] = (rnd.randint(1, 50), {})
            if rnd.random() < 0.05:
                raw[(w, rnd.choice(externals), "TCP", 443)] = (rnd.randint(1, 30), {})
    for nd in probes:
        for t in rnd.sample(all_workloads, min(10, len(all_workloads))):
            raw[(nd, t, "TCP", port_of[t])] = (rnd.randint(1, 99), {})
    for u in unresolved:
        t = rnd.choice(all_workloads)
        raw[(u, t, "TCP", port_of[t])] = (rnd.randint(1, 9), {"verdict": "unresolved"})
    edges = _edges([(s, t, p, port, c, extra) for (s, t, p, port), (c, extra) in raw.items()])
    nodes.sort(key=lambda n: n["id"])
    return {
        "format": "netpol-learn-report/1", "title": f"netpol-learn: synthetic {workloads} workloads",
        "mode": "generated",
        "summary": f"{len(edges)} connections, {workloads} workloads in {namespaces} namespaces; learning: stable",
        "capture": {"start": T0, "end": T1},
        "namespaces": [{"name": ns, "workloads": len(by_ns[ns]), "never_seen": []} for ns in sorted(names)]
                      + [{"name": "kube-system", "workloads": 0, "never_seen": []}],
        "nodes": nodes, "edges": edges, "diff": None, "attention": [],
        "status": {"verdict": "stable", "stable_after": "24h", "workloads": workloads, "edges": len(edges)},
        "chart": None,
    }


# -- the browser ----------------------------------------------------------------------------------

@dataclass
class Recorder:
    """What a page asked for and said: every request but the report's own, console messages
    of type error or warning, uncaught errors."""

    allowed: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def report_browser():
    """The system's Chromium, headless, started once for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class ReportPage:
    """A fresh offline browser context with one page and its Recorder; ``open_report(path)``."""

    def __init__(self, browser):
        self.recorder = Recorder()
        self.context = browser.new_context(offline=True, viewport=VIEWPORT, device_scale_factor=1)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: None if r.url in self.recorder.allowed else self.recorder.requests.append(r.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.recorder.errors.append(str(e)))

    def _route(self, route):
        if route.request.url in self.recorder.allowed:
            route.continue_()
        else:
            route.abort()

    def _console(self, message):
        if message.type in ("error", "warning"):
            self.recorder.console.append(f"{message.type}: {message.text}")

    def open_report(self, path: Path):
        """Open the report at ``path`` and wait for its first layout (``body[data-state=ready]``)."""
        url = Path(path).resolve().as_uri()
        self.recorder.allowed.add(url)
        self.page.goto(url)
        wait_ready(self.page)
        return self.page

    def close(self):
        self.context.close()


def wait_ready(page, timeout_ms: int | None = None) -> None:
    """Wait until the page has laid out and drawn what was last asked of it."""
    page.wait_for_selector("body[data-state=ready]", state="attached", timeout=timeout_ms or READY_TIMEOUT_MS)


@pytest.fixture
def report_page(report_browser):
    """A ReportPage of the session's browser, closed after the test."""
    rp = ReportPage(report_browser)
    yield rp
    rp.close()


def artifacts_dir(tmp_path_factory) -> Path:
    """Where screenshots go: $NETPOL_LEARN_ARTIFACTS, else a directory of pytest's."""
    env = os.environ.get("NETPOL_LEARN_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.mktemp("report-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
