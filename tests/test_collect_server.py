"""``netpol-learn collect`` from the learning service: ``--server URL``, the service found through
the API (Service ``netpol-learn``, the API server's service proxy, the token in
``Netpol-Learn-Token``), and the fallback to the sniffer pods' logs.

The service is the real one, ``netpol-learn serve`` as a subprocess on 127.0.0.1 with a tokens
file; segments reach it as the sniffer sends them (``POST /v1/segments`` with a write token), and
what ``collect`` writes must equal ``merge`` of them. The API server is ``test_collect``'s local
stand-in (``tests/fake_api.py``), whose service proxy forwards to the service's address without
the ``Authorization`` header, as the API server does (its authentication consumes it).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx  # what Starlette's TestClient uses (the test extra)
import pytest
import yaml

from fake_api import LocalApiServer, WatchApiServer, service_object
from fresh_process import SEEDS, netpol_learn
from test_collect import (  # noqa: F401  (no_ambient_cluster: an autouse fixture)
    NS, SEGMENT_A, SEGMENT_A2, SEGMENT_B, FakeApiServer, aged, no_ambient_cluster, run, segment, sniffer_pod, text, write_kubeconfig,
)
from netpol_learn import CollectError, collect_from_service, load_inventory, merge_logs, read_flow_log
from netpol_learn._flowlog import dumps_lines

# The service takes tokens of 16 characters or more; ADMIN is also the kubeconfig's own token.
WRITE, READ, ADMIN = "sniffer-write-token-7f3a", "collector-read-token-9c1e", "kubeconfig-admin-token-42d8"

# --- the service -------------------------------------------------------------------------------------


AMBIENT = {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
           "http_proxy", "https_proxy", "all_proxy"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``netpol-learn serve`` on 127.0.0.1 with its own store and tokens file (``WRITE`` writes;
    ``READ`` and ``ADMIN``, the kubeconfig's own token, read)."""

    def __init__(self, directory: Path, *extra: str):
        directory.mkdir(exist_ok=True)
        self.tokens = directory / "tokens"
        self.tokens.write_text(f"{WRITE} write\n{READ} read\n{ADMIN} read\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "serve.log"
        self.args = [sys.executable, "-m", "netpol_learn", "serve", "--store", str(directory / "store.db"),
                     "--listen", f"127.0.0.1:{self.port}", "--tokens-file", str(self.tokens), *extra]
        self.process: subprocess.Popen | None = None
        self.seq = 0

    def __enter__(self):
        with open(self.log, "wb") as fh:
            env = {k: v for k, v in os.environ.items() if k not in AMBIENT}  # no cluster of the machine's leaks in
            self.process = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def post(self, log, node: str = "kind-worker", *, seq: int | None = None, cut: int | None = None, token: str = WRITE) -> httpx.Response:
        """One segment, as the sniffer sends it."""
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        params = {"node": node, "boot": "1770716400000000000-41", "seq": seq, "cut": cut if cut is not None else time.time_ns()}
        return httpx.post(self.url + "/v1/segments", params=params, content="".join(dumps_lines(log)).encode(), timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"})


@pytest.fixture
def serve(tmp_path):
    with Serve(tmp_path / "serve", "--no-watch") as service:
        yield service


@pytest.fixture(scope="module")
def posted(tmp_path_factory):
    """The service with three segments of two nodes, and a resend of the first; only read from
    (one for the module: each start takes a second)."""
    with Serve(tmp_path_factory.mktemp("serve"), "--no-watch") as serve:
        for node, log in (("kind-worker", SEGMENT_A), ("kind-worker2", SEGMENT_B), ("kind-worker", SEGMENT_A2)):
            assert serve.post(log, node).status_code == 201
        assert serve.post(SEGMENT_A, "kind-worker", seq=0).json() == {"stored": False, "duplicate": True}
        yield serve


def kubeconfig(path: Path, server: str, user: dict | None = None) -> Path:
    """``test_collect``'s kubeconfig, its user's token ``ADMIN`` (or ``user``)."""
    config = yaml.safe_load(write_kubeconfig(path, server).read_text())
    config["users"] = [{"name": "admin", "user": user or {"token": ADMIN}}]
    path.write_text(yaml.safe_dump(config))
    return path


def api_server() -> FakeApiServer:
    server = FakeApiServer()
    server.credentials = {f"Bearer {ADMIN}"}
    return server


def token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / f"{token}.txt"
    path.write_text(token + "\n")
    return path


@pytest.fixture
def api(tmp_path, posted):
    """The API server with Service netpol-learn in front of the service, and the sniffer pods
    (whose logs hold other segments than the service: a fallback to them shows)."""
    with api_server() as server:
        server.services[(NS, "netpol-learn")] = service_object("netpol-learn", NS)
        server.backends[(NS, "netpol-learn")] = posted.url
        server.pods = [sniffer_pod("netpol-learn-sniffer-7xk2p", "kind-worker")]
        server.logs = {("netpol-learn-sniffer-7xk2p", False): aged(segment(SEGMENT_A2), 30)}
        server.kubeconfig = kubeconfig(tmp_path / "kubeconfig", server.url)
        yield server


EXPECTED = merge_logs([SEGMENT_A, SEGMENT_B, SEGMENT_A2])


def proxied(api) -> list[tuple[str, dict, dict]]:
    """(path, query, headers) of the requests that went through the service proxy."""
    return [(path, q, h) for (path, q), h in zip(api.requests, api.headers) if "/proxy/" in path]


# --- --server ------------------------------------------------------------------------------------------


def test_server_direct_gives_the_merge_of_the_posted_segments(posted, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--server", posted.url, "--token-file", token_file(tmp_path, READ), "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(EXPECTED)  # the resend counted once
    assert read_flow_log(out) == EXPECTED
    assert result.stderr.splitlines() == [f"3 flows, 1 DNS names from the service at {posted.url} -> {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["flows.jsonl", "home", f"{READ}.txt"])  # no temporary left
    # the library gives the same, and so do processes with other hash seeds
    got = collect_from_service(posted.url + "/", token_file(tmp_path, READ))
    assert got.log == EXPECTED and got.inventory is None
    for seed in SEEDS:
        again = tmp_path / f"{seed}.jsonl"
        r = netpol_learn(["collect", "--server", posted.url, "--token-file", token_file(tmp_path, READ), "-o", again], seed)
        assert r.returncode == 0, r.stderr
        assert again.read_bytes() == out.read_bytes()


def test_since_asks_the_service_for_the_segments_cut_since(serve, tmp_path):
    now = time.time_ns()
    assert serve.post(SEGMENT_B, "kind-worker2", cut=now - 7200 * 10**9).status_code == 201  # two hours ago
    assert serve.post(SEGMENT_A, cut=now - 600 * 10**9).status_code == 201
    assert serve.post(SEGMENT_A2, cut=now).status_code == 201
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--server", serve.url, "--token-file", token_file(tmp_path, READ), "--since", "1h", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(merge_logs([SEGMENT_A, SEGMENT_A2]))


@pytest.mark.parametrize(("token", "code", "says"), [
    ("no-such-token", 401, "the bearer token is not valid"),
    (WRITE, 403, "may not read from this service"),  # a sniffer's token does not give the traffic away
])
def test_a_refused_token_is_one_line_exit_2_and_nothing_written(posted, tmp_path, token, code, says):
    out, inventory = tmp_path / "flows.jsonl", tmp_path / "inventory.json"
    out.write_text("keep me\n")
    result = run(["collect", "--server", posted.url, "--token-file", token_file(tmp_path, token), "-o", out, "--inventory-out", inventory])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: GET /v1/flows of the service at {posted.url}: HTTP {code} ") and says in line, line
    assert out.read_text() == "keep me\n" and not inventory.exists()


def test_server_without_a_token_file_or_unreachable_is_one_line(tmp_path):
    result = run(["collect", "--server", "http://127.0.0.1:9", "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: --server http://127.0.0.1:9: give --token-file with a token of the read role"]
    with pytest.raises(CollectError, match="not an http:// or https:// URL"):
        collect_from_service("127.0.0.1:8080", token_file(tmp_path, READ))
    port = free_port()
    result = run(["collect", "--server", f"http://127.0.0.1:{port}", "--token-file", token_file(tmp_path, READ), "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: cannot reach the service at http://127.0.0.1:{port}: Connection refused"]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = run(["collect", "--server", f"http://127.0.0.1:{port}", "--token-file", empty])
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: --token-file {empty}: empty"]
    assert not (tmp_path / "flows.jsonl").exists()


class Broken(LocalApiServer):
    """Not the service: answers what a test sets, to every path."""

    answer = (200, "text/plain", b"")

    def handle(self, request, path, query):
        code, kind, body = self.answer
        request.send_response(code)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


@pytest.mark.parametrize(("answer", "says"), [
    ((200, "text/html", b"<html>login</html>\n"), "error: not a flow log this tool reads: GET /v1/flows:1: invalid JSON: Expecting value"),
    ((200, "application/x-ndjson", b""), "error: GET /v1/flows: empty, not a flow log"),
    ((200, "application/x-ndjson", "".join(dumps_lines(SEGMENT_A)).replace('"version": 2', '"version": 9').encode()),
     "error: not a flow log this tool reads: GET /v1/flows: flow log version 9 is not supported (this tool reads 1 and 2)"),
    ((502, "text/html", b"<html><body>Bad Gateway</body></html>"), "HTTP 502 Bad Gateway: <html><body>Bad Gateway</body></html>"),
])
def test_an_answer_that_is_not_a_flow_log_is_one_line_and_nothing_written(tmp_path, answer, says):
    out = tmp_path / "flows.jsonl"
    out.write_text("keep me\n")
    with Broken() as broken:
        broken.answer = answer
        result = run(["collect", "--server", broken.url, "--token-file", token_file(tmp_path, READ), "-o", out])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and says in line, line
    assert out.read_text() == "keep me\n"


# --- found through the API: the service proxy ----------------------------------------------------------


def test_discovery_through_the_service_proxy_with_a_token_file(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--kubeconfig", api.kubeconfig, "--token-file", token_file(tmp_path, READ), "--since", "2h", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(EXPECTED)  # the service's segments, not the pod's log
    assert result.stderr.splitlines() == [
        f"3 flows, 1 DNS names from the service {NS}/netpol-learn through the API server at {api.url} -> {out}"]
    # The Service was read, then its http port proxied to; the API server got the kubeconfig's
    # credentials, the service the token of --token-file in Netpol-Learn-Token.
    assert [p for p, _ in api.requests] == [f"/api/v1/namespaces/{NS}/services/netpol-learn",
                                            f"/api/v1/namespaces/{NS}/services/netpol-learn:http/proxy/v1/flows"]
    [(_, query, headers)] = proxied(api)
    assert query == {"since": "7200s"}
    assert headers["authorization"] == f"Bearer {ADMIN}" and headers["netpol-learn-token"] == READ
    assert not any(path.endswith("/pods") or path.endswith("/log") for path, _ in api.requests)


def test_the_kubeconfigs_own_bearer_token_serves_without_a_token_file(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(EXPECTED)
    [(_, _, headers)] = proxied(api)
    assert headers["netpol-learn-token"] == ADMIN


def test_kubeconfig_credentials_without_a_bearer_token_need_a_token_file(api, tmp_path):
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    api.credentials.add(basic)
    config = kubeconfig(tmp_path / "basic-kubeconfig", api.url, {"username": "admin", "password": "s3cret"})  # no bearer token
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--kubeconfig", config, "-o", out])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: the learning service in namespace {NS} needs a token and the kubeconfig's credentials hold none: give --token-file "
        f"with a token the service accepts (e.g. `kubectl create token SERVICEACCOUNT -n {NS} > token`, for a ServiceAccount "
        "that may get services/proxy netpol-learn there)"]
    assert not out.exists() and proxied(api) == []
    # With --token-file: the kubeconfig's own credentials (basic auth here) still reach the API server.
    result = run(["collect", "--kubeconfig", config, "--token-file", token_file(tmp_path, READ), "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(EXPECTED)
    [(_, _, headers)] = proxied(api)
    assert headers["authorization"] == basic and headers["netpol-learn-token"] == READ


@pytest.mark.parametrize(("token", "code", "says"), [
    ("no-such-token", 401, "the bearer token is not valid"),
    (WRITE, 403, "may not read from this service"),
])
def test_a_token_the_service_refuses_through_the_proxy_is_one_line(api, tmp_path, token, code, says):
    out = tmp_path / "flows.jsonl"
    out.write_text("keep me\n")
    result = run(["collect", "--kubeconfig", api.kubeconfig, "--token-file", token_file(tmp_path, token), "-o", out])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: GET /v1/flows of service {NS}/netpol-learn (through the API server's service proxy): "
                           f"HTTP {code} ") and says in line, line
    assert out.read_text() == "keep me\n"


def test_refusals_of_the_api_server_are_one_line(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    out.write_text("keep me\n")
    args = ["collect", "--kubeconfig", api.kubeconfig, "--token-file", token_file(tmp_path, READ), "-o", out]
    # the Service may not be read
    api.service_status = (403, "Forbidden", 'services "netpol-learn" is forbidden: User "dev" cannot get resource "services" in the namespace "netpol-learn"')
    result = run(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        'error: cannot read Service netpol-learn in namespace netpol-learn: HTTP 403 Forbidden: services "netpol-learn" is forbidden: '
        'User "dev" cannot get resource "services" in the namespace "netpol-learn" (the credentials need get on services and '
        "services/proxy netpol-learn in namespace netpol-learn; --from-logs reads the sniffer pods' logs instead)"]
    # the service has no ready pod
    api.service_status = None
    api.backends[(NS, "netpol-learn")] = None
    result = run(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: GET /v1/flows of service {NS}/netpol-learn (through the API server's service proxy): HTTP 503 Service Unavailable: "
        'no endpoints available for service "netpol-learn"']
    # a Service without the http port
    api.services[(NS, "netpol-learn")] = service_object("netpol-learn", NS, ports=(("metrics", 9090),))
    result = run(args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: Service netpol-learn in namespace netpol-learn has no port named http (the one netpol-learn manifests renders has)"]
    assert out.read_text() == "keep me\n"


# --- the logs: fallback and --from-logs ---------------------------------------------------------------


def test_no_service_falls_back_to_the_logs_with_a_warning(api, tmp_path):
    del api.services[(NS, "netpol-learn")]
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(SEGMENT_A2)  # the pod's log
    assert result.stderr.splitlines() == [
        "warning: no Service netpol-learn in namespace netpol-learn: reading the sniffer pods' logs instead, which is lossy "
        "(the kubelet rotates them, a restarted sniffer's earlier log is read only while it is the previous one, "
        "collections over overlapping windows count segments twice; docs/sniffer.md)",
        f"1 of 1 pods, 1 segments -> 1 flows, 0 DNS names -> {out}"]
    assert collect_from_service(kubeconfig=api.kubeconfig) is None  # the library says so, for its caller to decide


def test_from_logs_reads_the_logs_even_when_the_service_exists(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == text(SEGMENT_A2)
    assert result.stderr.splitlines() == [f"1 of 1 pods, 1 segments -> 1 flows, 0 DNS names -> {out}"]
    assert not any("/services/" in path for path, _ in api.requests)


def test_inventory_out_without_a_service_is_an_error_and_nothing_written(api, tmp_path):
    del api.services[(NS, "netpol-learn")]
    out, inventory = tmp_path / "flows.jsonl", tmp_path / "inventory.json"
    result = run(["collect", "--kubeconfig", api.kubeconfig, "-o", out, "--inventory-out", inventory])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --inventory-out: no Service netpol-learn in namespace netpol-learn, so no learning service to read the inventory "
        "from (netpol-learn inventory takes a snapshot; --from-logs reads only the flows)"]
    assert not out.exists() and not inventory.exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--server", "http://127.0.0.1:9", "--from-logs"], "--server and --from-logs: give one"),
    (["--from-logs", "--inventory-out", "inv.json"], "--inventory-out needs the service"),
    (["--server", "http://127.0.0.1:9", "--inventory-out", "-"], "-o and --inventory-out cannot both be stdout"),
])
def test_usage_errors(args, says):
    result = run(["collect", *args])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and f"collect: {says}" in line, line


# --- the inventory -------------------------------------------------------------------------------------


def test_inventory_unavailable_is_one_line_and_neither_file_is_written(posted, tmp_path):
    """A service with --no-watch has no inventory (503): the flows are not written either."""
    out, inventory = tmp_path / "flows.jsonl", tmp_path / "inventory.json"
    result = run(["collect", "--server", posted.url, "--token-file", token_file(tmp_path, READ), "-o", out, "--inventory-out", inventory])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: GET /v1/inventory of the service at {posted.url}: HTTP 503 Service Unavailable: "), line
    assert not out.exists() and not inventory.exists()


POD = {"kind": "Pod", "apiVersion": "v1",
       "metadata": {"name": "web-7d4b9c-abcde", "namespace": "shop", "labels": {"app": "web"}, "creationTimestamp": "2026-02-10T09:00:00Z"},
       "spec": {"nodeName": "kind-worker", "containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]},
       "status": {"phase": "Running", "podIP": "10.244.1.4", "podIPs": [{"ip": "10.244.1.4"}], "startTime": "2026-02-10T09:00:01Z"}}
NAMESPACE = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}}}


@pytest.fixture
def watching(tmp_path):
    """The service watching a cluster (the local API stand-in with a namespace and a pod), with a
    segment posted, and the same API server serving Service netpol-learn in front of it."""
    with WatchApiServer([NAMESPACE, POD]) as cluster:
        config = write_kubeconfig(tmp_path / "cluster-kubeconfig", cluster.url)
        with Serve(tmp_path / "serve", "--kubeconfig", str(config)) as service:
            assert service.post(SEGMENT_A).status_code == 201
            deadline = time.monotonic() + 30
            while httpx.get(service.url + "/v1/inventory", headers={"Authorization": f"Bearer {READ}"}, timeout=5).status_code != 200:
                assert time.monotonic() < deadline, service.log.read_text()
                time.sleep(0.1)
            cluster.add({**POD, "metadata": {**POD["metadata"], "name": "web-7d4b9c-fghij"},
                         "status": {**POD["status"], "podIP": "10.244.1.9", "podIPs": [{"ip": "10.244.1.9"}]}})
            yield service


def test_inventory_out_directly_and_through_the_proxy(watching, tmp_path):
    inventory = tmp_path / "inventory.json"
    out = tmp_path / "flows.jsonl"
    deadline = time.monotonic() + 30
    while True:  # the change the service's watch records reaches its history
        result = run(["collect", "--server", watching.url, "--token-file", token_file(tmp_path, READ), "-o", out, "--inventory-out", inventory])
        assert result.exit_code == 0, result.stderr
        doc = json.loads(inventory.read_text())
        if doc.get("history") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert out.read_text() == text(SEGMENT_A)
    names = {item["metadata"]["name"] for item in doc["items"]}
    assert {"shop", "web-7d4b9c-abcde"} <= names
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in doc["history"]] == [("ADDED", "web-7d4b9c-fghij")]
    loaded = load_inventory([inventory])
    assert {p.name for p in loaded.pods} == {"web-7d4b9c-abcde", "web-7d4b9c-fghij"}
    assert result.stderr.splitlines()[1] == f"inventory: {len(doc['items'])} objects, 1 changes in its history -> {inventory}"
    direct = inventory.read_bytes()
    # through the API server's service proxy: the same bytes
    with api_server() as api:
        api.services[(NS, "netpol-learn")] = service_object("netpol-learn", NS)
        api.backends[(NS, "netpol-learn")] = watching.url
        config = kubeconfig(tmp_path / "kubeconfig", api.url)
        proxied_inventory = tmp_path / "proxied.json"
        result = run(["collect", "--kubeconfig", config, "--token-file", token_file(tmp_path, READ), "-o", "-", "--inventory-out", proxied_inventory])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == text(SEGMENT_A)
        assert proxied_inventory.read_bytes() == direct
        assert [p for p, _ in api.requests][-1] == f"/api/v1/namespaces/{NS}/services/netpol-learn:http/proxy/v1/inventory"
