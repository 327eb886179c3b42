"""``netpol-learn collect --from-logs``: the sniffer pods' logs, read with the real ``kubernetes``
client, merged (``collect`` from the learning service, and the fallback to the logs when there
is none: ``test_collect_server.py``, which uses this server, with a Service and its proxy).

No real API server can run here (no cluster, no kind, no etcd, no kubelet), so the client talks
to a local HTTP server (``http.server`` in a thread on 127.0.0.1) that answers the two calls
``collect`` makes the way the Kubernetes API does: ``GET /api/v1/namespaces/{ns}/pods`` with
``labelSelector`` and ``limit`` (a ``PodList`` whose items lack apiVersion/kind), and
``GET /api/v1/namespaces/{ns}/pods/{name}/log`` with ``container``, ``previous`` and
``sinceSeconds``, answered as the kubelet's stream comes through the API server: ``text/plain``,
chunked, with chunk boundaries in the middle of lines; ``Status`` objects for errors, as the API
server sends them (400 for a container that has not started, 500 when the kubelet fails).

Each pod's log is what a sniffer container writes: flow-log segments on stdout (one per
interval, as ``dumps_lines`` writes a log) with the sniffer's messages on stderr in between, and
lines of other programs. Every log line has an age, so ``sinceSeconds`` cuts the log where the
API server would.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fake_api import LocalApiServer, forward, no_ambient_cluster, service_proxy_path, status  # noqa: F401  (an autouse fixture)
from fresh_process import SEEDS, netpol_learn
from netpol_learn import _cli as cli
from netpol_learn._errors import CollectError
from netpol_learn import collect  # the public API
from netpol_learn._collect import ContainerLog, parse_duration
from netpol_learn._flowlog import DnsAnswer, DnsObservation, Flow, FlowLog, dumps_lines, merge_logs, read_flow_log

NS = "netpol-learn"
SELECTOR = "app.kubernetes.io/name=netpol-learn-sniffer"
T0 = 1_770_716_400_000_000_000  # 2026-02-10T09:40:00Z in nanoseconds


# --- flow-log segments as a sniffer writes them ---------------------------------------------------


def flow(src, dst, port, packets, at, proto="TCP") -> Flow:
    return Flow(src=src, dst=dst, proto=proto, port=port, packets=packets, bytes=packets * 80, connections=max(1, packets // 10),
                first_seen=T0 + at * 1_000_000_000, last_seen=T0 + (at + 5) * 1_000_000_000, direction=(("syn", max(1, packets // 10)),))


def dns(client, qname, address, at) -> DnsObservation:
    return DnsObservation(client=client, resolver="10.96.0.10", qname=qname, qtype="A", queries=1, responses=1,
                          first_seen=T0 + at * 1_000_000_000, last_seen=T0 + at * 1_000_000_000,
                          answers=(DnsAnswer(qname, "A", address, 30),), rcodes=("NOERROR",), transports=("udp",))


# Node kind-worker: web calls api, and a name was resolved.
SEGMENT_A = FlowLog(
    flows=(flow("10.244.1.4", "10.244.1.9", 8080, 40, 0), flow("10.244.1.4", "10.96.0.10", 53, 2, 1, "UDP")),
    dns=(dns("10.244.1.4", "api.github.com", "140.82.112.3", 1),),
    stats={"packets": 42, "decoded": 42},
    sources=("kind-worker",),
)
# Node kind-worker2: the same connection seen from the server's node, and one of its own.
SEGMENT_B = FlowLog(
    flows=(flow("10.244.1.4", "10.244.1.9", 8080, 40, 2), flow("10.244.2.7", "10.244.2.8", 5432, 12, 3)),
    stats={"packets": 52, "decoded": 52, "duplicates": 3},
    sources=("kind-worker2",),
)
# A later interval on kind-worker.
SEGMENT_A2 = FlowLog(
    flows=(flow("10.244.1.4", "10.244.1.9", 8080, 10, 30),),
    stats={"packets": 10, "decoded": 10},
    sources=("kind-worker",),
)

NOISE = [
    "netpol-learn sniff: capturing on all interfaces of kind-worker, a segment every 30 s",
    '{"level": "info", "msg": "not a flow log line, but JSON"}',
    '{"format": "someone-else/v1", "kind": "header"}',
    "",
    "warning: 12 packets dropped by the kernel in this interval",
    "{not json at all",
]


def segment(log: FlowLog) -> list[str]:
    return [line.rstrip("\n") for line in dumps_lines(log)]


def aged(lines: list[str], age: int) -> list[tuple[int, str]]:
    return [(age, line) for line in lines]


# --- a local server speaking the pods and pods/log API ----------------------------------------------




def sniffer_pod(name: str, node: str, *, restarts: int = 0, labels=None, waiting: bool = False) -> dict:
    state = {"waiting": {"reason": "ContainerCreating"}} if waiting else {"running": {"startedAt": "2026-02-10T09:00:05Z"}}
    return {
        "metadata": {
            "name": name, "namespace": NS, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "resourceVersion": "51234",
            "labels": labels or {"app.kubernetes.io/name": "netpol-learn-sniffer", "app.kubernetes.io/part-of": "netpol-learn",
                                 "app.kubernetes.io/component": "sniffer", "controller-revision-hash": "5c9d7f8b6", "pod-template-generation": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "netpol-learn-sniffer", "controller": True,
                                 "blockOwnerDeletion": True, "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "ds"))}],
        },
        "spec": {
            "nodeName": node, "hostNetwork": True, "serviceAccountName": "netpol-learn-sniffer",
            "containers": [{"name": "sniffer", "image": "netpol-learn:0.1.0", "args": ["sniff", "--interval", "30"]}],
        },
        "status": {
            "phase": "Pending" if waiting else "Running", "hostIP": "172.20.0.3", "podIP": "172.20.0.3",
            "containerStatuses": [{"name": "sniffer", "ready": not waiting, "restartCount": restarts, "image": "netpol-learn:0.1.0",
                                   "imageID": "", "started": not waiting, "state": state}],
        },
    }


class FakeApiServer(LocalApiServer):
    """Pods by name with their logs: ``logs[(pod, previous)]`` is a list of (age in seconds, line).

    ``services`` by (namespace, name), each read with ``GET .../services/NAME`` and reached
    through the service proxy (``.../services/NAME:PORT/proxy/...``) at ``backends[(namespace,
    name)]`` (a URL; None: no ready endpoint). Every request must carry one of ``credentials``
    (its ``Authorization`` header, as the kubeconfig gives it), else 401; ``headers`` records
    each request's headers (names in lower case)."""

    def __init__(self):
        super().__init__()
        self.pods: list[dict] = []
        self.logs: dict[tuple[str, bool], list[tuple[int, str]]] = {}
        self.log_status: dict[str, tuple[int, str, str]] = {}  # pod -> (code, reason, message)
        self.list_status: tuple[int, str, str] | None = None
        self.requests: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []
        self.services: dict[tuple[str, str], dict] = {}
        self.backends: dict[tuple[str, str], str | None] = {}
        self.service_status: tuple[int, str, str] | None = None  # the answer to reading a Service, when set
        self.credentials = {"Bearer token-admin"}

    def handle(self, request, path: str, query: dict) -> None:
        self.requests.append((path, query))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        parts = path.strip("/").split("/")
        proxied = service_proxy_path(path)
        if request.headers.get("Authorization") not in self.credentials:
            request.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        elif proxied is not None:
            namespace, name, port, rest = proxied
            service = self.services.get((namespace, name))
            if service is None:
                request.send_json(404, status(404, "NotFound", f'services "{name}" not found', name=name, kind="services"))
            elif port and not any(p.get("name") == port or str(p["port"]) == port for p in service["spec"]["ports"]):
                request.send_json(503, status(503, "ServiceUnavailable", f'no endpoints available for service "{name}:{port}"'))
            else:
                forward(request, self.backends.get((namespace, name)), rest, name)
        elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "services":
            if self.service_status is not None:
                code, reason, message = self.service_status
                request.send_json(code, status(code, reason, message))
            elif (parts[3], parts[5]) in self.services:
                request.send_json(200, self.services[(parts[3], parts[5])])
            else:
                request.send_json(404, status(404, "NotFound", f'services "{parts[5]}" not found', name=parts[5], kind="services"))
        elif parts[:4] == ["api", "v1", "namespaces", NS] and parts[4:] == ["pods"]:
            request.send_json(*self.list_pods(query))
        elif parts[:4] == ["api", "v1", "namespaces", NS] and len(parts) == 7 and parts[4] == "pods" and parts[6] == "log":
            self.send_log(request, parts[5], query)
        elif parts[:3] == ["api", "v1", "namespaces"] and parts[4:] == ["pods"]:
            request.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "51240"}, "items": []})
        else:
            request.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))

    def list_pods(self, query: dict) -> tuple[int, dict]:
        if self.list_status is not None:
            code, reason, message = self.list_status
            return code, status(code, reason, message)
        wanted = dict(term.split("=", 1) for term in query.get("labelSelector", "").split(",") if term)
        items = [p for p in self.pods if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
        items.sort(key=lambda p: p["metadata"]["name"])
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "51240"}, "items": items}

    def send_log(self, handler, name: str, query: dict) -> None:
        pod = next((p for p in self.pods if p["metadata"]["name"] == name), None)
        previous = _go_bool(query.get("previous", "false"))
        if pod is None:
            handler.send_json(404, status(404, "NotFound", f'pods "{name}" not found'))
            return
        if name in self.log_status:
            code, reason, message = self.log_status[name]
            handler.send_json(code, status(code, reason, message))
            return
        if pod["status"]["phase"] == "Pending":
            handler.send_json(400, status(400, "BadRequest", f'container "sniffer" in pod "{name}" is waiting to start: ContainerCreating'))
            return
        if (name, previous) not in self.logs:
            handler.send_json(400, status(400, "BadRequest", f'previous terminated container "sniffer" in pod "{name}" not found'))
            return
        since = int(query["sinceSeconds"]) if "sinceSeconds" in query else None
        body = "".join(line + "\n" for age, line in self.logs[(name, previous)] if since is None or age <= since).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for start in range(0, len(body), 97):  # chunk boundaries in the middle of lines and of UTF-8 characters
            chunk = body[start:start + 97]
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    def log_requests(self) -> list[tuple[str, dict]]:
        return [(path.split("/")[6], q) for path, q in self.requests if path.endswith("/log")]


def _go_bool(value: str) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool; the Python client sends True)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kind-kind",
        "clusters": [{"name": "kind", "cluster": {"server": server}}],
        "users": [{"name": "admin", "user": {"token": "token-admin"}}],
        "contexts": [{"name": "kind-kind", "context": {"cluster": "kind", "user": "admin"}}],
    }))
    return path


@pytest.fixture
def api(tmp_path):
    """Two sniffer pods with a segment each in their logs, between other lines; and a pod of another app."""
    with FakeApiServer() as server:
        server.pods = [
            sniffer_pod("netpol-learn-sniffer-7xk2p", "kind-worker"),
            sniffer_pod("netpol-learn-sniffer-q9m4d", "kind-worker2"),
            sniffer_pod("other-5d8f9", "kind-worker", labels={"app.kubernetes.io/name": "other"}),
        ]
        server.logs = {
            ("netpol-learn-sniffer-7xk2p", False): aged(NOISE[:3] + segment(SEGMENT_A) + NOISE[3:], 60),
            ("netpol-learn-sniffer-q9m4d", False): aged([NOISE[0]] + segment(SEGMENT_B) + [NOISE[4]], 45),
            ("other-5d8f9", False): aged(segment(SEGMENT_A2), 10),  # must not be read: another selector
        }
        server.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        yield server


def run(args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def text(log: FlowLog) -> str:
    return "".join(dumps_lines(log))


# --- tests -------------------------------------------------------------------------------------------


def test_two_pods_merge_into_one_flow_log(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    expected = merge_logs([SEGMENT_A, SEGMENT_B])
    assert read_flow_log(out) == expected
    assert out.read_text() == text(expected)  # one segment, written as `merge` writes it
    shared = next(f for f in expected.flows if f.port == 8080)
    assert shared.packets == 80 and shared.connections == 8  # the connection seen on both nodes counts on both
    assert result.stderr.splitlines() == [f"2 of 2 pods, 2 segments -> 3 flows, 1 DNS names -> {out}"]
    # One list call with the selector; one log read per pod, of its container, with no other option.
    lists = [q for path, q in api.requests if path.endswith("/pods")]
    assert lists == [{"labelSelector": SELECTOR, "limit": "500"}]
    assert sorted(api.log_requests()) == [("netpol-learn-sniffer-7xk2p", {"container": "sniffer"}),
                                          ("netpol-learn-sniffer-q9m4d", {"container": "sniffer"})]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_library_and_cli_agree_and_output_is_byte_identical(api, tmp_path):
    first = tmp_path / "a.jsonl"
    assert run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", first]).exit_code == 0
    api.pods.reverse()  # another listing order, and reads done one at a time below
    got = collect(NS, SELECTOR, api.kubeconfig, workers=1)
    assert (got.pods, got.readable, got.segments, got.incomplete) == (2, 2, 2, 0)
    second = tmp_path / "b.jsonl"
    second.write_text(text(got.log))
    assert first.read_bytes() == second.read_bytes()
    # and in processes with different hash seeds (set and dict orders differ), in either listing order
    for seed in SEEDS:
        api.pods.reverse()
        out = tmp_path / f"{seed}.jsonl"
        r = netpol_learn(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out], seed)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == first.read_bytes(), seed


def test_segments_of_several_intervals_merge_and_incomplete_ones_are_left_out(api, tmp_path):
    # Pod 1: two intervals, the second one cut mid-write (no stats line yet) at the end.
    api.logs[("netpol-learn-sniffer-7xk2p", False)] = aged(
        segment(SEGMENT_A) + NOISE + segment(SEGMENT_A2) + segment(SEGMENT_B)[:2], 30)
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert read_flow_log(out) == merge_logs([SEGMENT_A, SEGMENT_A2, SEGMENT_B])
    assert result.stderr.splitlines() == [f"2 of 2 pods, 3 segments (1 incomplete left out) -> 3 flows, 1 DNS names -> {out}"]


def test_since_is_passed_on_and_a_segment_it_cuts_is_left_out(api, tmp_path):
    # An old interval (2 h ago), one written across the cut (header before it), and a recent one.
    api.logs[("netpol-learn-sniffer-7xk2p", False)] = (
        aged(segment(SEGMENT_B), 7200)
        + [(3601, segment(SEGMENT_A)[0])] + aged(segment(SEGMENT_A)[1:], 3599)
        + aged(NOISE + segment(SEGMENT_A2), 600)
    )
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "--since", "1h", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert {q.get("sinceSeconds") for _, q in api.log_requests()} == {"3600"}
    assert read_flow_log(out) == merge_logs([SEGMENT_A2, SEGMENT_B])  # pod 2's SEGMENT_B is 45 s old
    assert "(1 incomplete left out)" in result.stderr


def test_a_pod_whose_log_cannot_be_read_is_a_warning_and_the_others_merge(api, tmp_path):
    api.log_status["netpol-learn-sniffer-q9m4d"] = (500, "InternalError",
                                                   'Get "https://172.20.0.4:10250/containerLogs/netpol-learn/netpol-learn-sniffer-q9m4d/sniffer": '
                                                   "dial tcp 172.20.0.4:10250: connect: connection refused")
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert read_flow_log(out) == merge_logs([SEGMENT_A])
    assert result.stderr.splitlines() == [
        "warning: pod netpol-learn-sniffer-q9m4d (node kind-worker2): cannot read the log of container sniffer: HTTP 500 "
        "Internal Server Error: Get \"https://172.20.0.4:10250/containerLogs/netpol-learn/netpol-learn-sniffer-q9m4d/sniffer\": "
        "dial tcp 172.20.0.4:10250: connect: connection refused",
        f"1 of 2 pods, 1 segments -> 2 flows, 1 DNS names -> {out}",
    ]


def test_a_pod_not_started_yet_is_a_warning(api, tmp_path):
    api.pods.append(sniffer_pod("netpol-learn-sniffer-zz8kq", "kind-control-plane", waiting=True))
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == (
        "warning: pod netpol-learn-sniffer-zz8kq (node kind-control-plane): cannot read the log of container sniffer: "
        'HTTP 400 Bad Request: container "sniffer" in pod "netpol-learn-sniffer-zz8kq" is waiting to start: ContainerCreating')
    assert result.stderr.splitlines()[1].startswith("2 of 3 pods, 2 segments ->")


def test_a_restarted_sniffer_counts_its_previous_container_too(api, tmp_path):
    api.pods[0] = sniffer_pod("netpol-learn-sniffer-7xk2p", "kind-worker", restarts=1)
    api.logs[("netpol-learn-sniffer-7xk2p", True)] = aged(segment(SEGMENT_A2) + ["Traceback (most recent call last):", "MemoryError"], 900)
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0, result.stderr
    assert read_flow_log(out) == merge_logs([SEGMENT_A, SEGMENT_A2, SEGMENT_B])
    assert sorted((pod, _go_bool(q.get("previous", "false"))) for pod, q in api.log_requests()) == [
        ("netpol-learn-sniffer-7xk2p", False), ("netpol-learn-sniffer-7xk2p", True), ("netpol-learn-sniffer-q9m4d", False)]
    assert all("previous" not in q for pod, q in api.log_requests() if pod.endswith("q9m4d"))  # no restart: not asked


def test_segment_of_an_unknown_version_is_left_out_with_a_warning(api, tmp_path):
    future = [line.replace('"version": 2', '"version": 3') for line in segment(SEGMENT_A2)]
    api.logs[("netpol-learn-sniffer-q9m4d", False)] += aged(future + future, 5)
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 0
    assert read_flow_log(out) == merge_logs([SEGMENT_A, SEGMENT_B])
    assert result.stderr.splitlines()[0] == (
        "warning: pod netpol-learn-sniffer-q9m4d (node kind-worker2), the log of container sniffer: "
        "flow log version 3 is not supported (this tool reads 1 and 2); 2 segments left out")


def test_no_pods_is_one_line_and_exit_2(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "--selector", "app.kubernetes.io/name=nothing", "-o", out])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no pods in namespace netpol-learn match app.kubernetes.io/name=nothing: is the sniffer running? "
        "(netpol-learn manifests --namespace netpol-learn | kubectl apply -f -)"]
    assert not out.exists()
    other = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "--namespace", "elsewhere", "-o", out])
    assert other.exit_code == 2 and len(other.stderr.splitlines()) == 1 and "no pods in namespace elsewhere" in other.stderr


def test_no_readable_log_is_exit_2_after_the_warnings(api, tmp_path):
    out = tmp_path / "flows.jsonl"
    out.write_text("keep me\n")
    for pod in ("netpol-learn-sniffer-7xk2p", "netpol-learn-sniffer-q9m4d"):
        api.log_status[pod] = (403, "Forbidden", f'pods "{pod}" is forbidden: User "dev" cannot get resource "pods/log" in the namespace "netpol-learn"')
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", out])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("warning: pod netpol-learn-sniffer-") and "HTTP 403 Forbidden" in line for line in lines[:2])
    assert lines[2] == "error: the logs of none of the 2 sniffer pod(s) in namespace netpol-learn could be read"
    assert out.read_text() == "keep me\n"


def test_logs_without_a_complete_segment_are_exit_2(api, tmp_path):
    for key in list(api.logs):
        api.logs[key] = aged(NOISE + segment(SEGMENT_A)[:-1], 5)  # the stats line not written yet
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: the logs of 2 sniffer pod(s) in namespace netpol-learn hold no complete flow-log segment "
        "(the sniffer writes one per interval; is --since shorter than it?)"]


def test_refused_pod_list_is_one_line_and_exit_2(api, tmp_path):
    api.list_status = (403, "Forbidden", 'pods is forbidden: User "dev" cannot list resource "pods" in API group "" in the namespace "netpol-learn"')
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        'error: cannot list pods in namespace netpol-learn: HTTP 403 Forbidden: pods is forbidden: User "dev" cannot list resource '
        '"pods" in API group "" in the namespace "netpol-learn" (the credentials need list on pods and get on pods/log in that namespace)']


def test_server_down_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    result = run(["collect", "--from-logs", "--kubeconfig", config, "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: cannot reach the API server at http://127.0.0.1:{port} (listing pods): Connection refused"]
    with pytest.raises(CollectError, match="Connection refused"):
        collect(kubeconfig=config)


def test_no_configuration_is_one_line(tmp_path):
    result = run(["collect", "-o", tmp_path / "flows.jsonl"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster; pass --kubeconfig"]


def test_to_stdout(api):
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig])
    assert result.exit_code == 0
    assert result.stdout == text(merge_logs([SEGMENT_A, SEGMENT_B]))
    assert result.stderr.strip().endswith("-> stdout")


# --- the pieces ----------------------------------------------------------------------------------------


def test_segment_reader_keeps_only_complete_segments():
    reader = ContainerLog()
    lines = segment(SEGMENT_B)[1:] + NOISE + segment(SEGMENT_A) + segment(SEGMENT_A2)[:2] + segment(SEGMENT_A2)
    for line in lines:
        reader.feed(line)
    assert reader.close() == merge_logs([SEGMENT_A, SEGMENT_A2])
    assert (reader.segments, reader.incomplete) == (2, 2)  # cut at the start, and a header without its lines
    assert reader.ignored == len(NOISE)


def test_segment_reader_leaves_out_a_segment_with_a_broken_line():
    reader = ContainerLog()
    bad = segment(SEGMENT_A)
    bad[1] = bad[1].replace('"packets": 40', '"packets": "forty"')
    for line in bad + segment(SEGMENT_B):
        reader.feed(line)
    assert reader.close() == merge_logs([SEGMENT_B])
    [(reason, n)] = reader.left_out.items()
    assert n == 1 and reason.startswith("line 2: invalid flow:")


def test_a_line_whose_kind_is_not_a_string_is_not_a_flow_log_line():
    # Such a line (another program's JSON) crashed the reader: a list or a mapping cannot be hashed.
    reader = ContainerLog()
    for line in ['{"kind": ["a"]}', *segment(SEGMENT_A), '{"kind": {"x": 1}}']:
        reader.feed(line)
    assert reader.close() == merge_logs([SEGMENT_A])
    assert (reader.segments, reader.incomplete, reader.ignored) == (1, 0, 2)


def test_a_header_is_checked_as_merge_checks_it():
    # Sources that are not names were taken (as their str()), where merge refuses the same line.
    reader = ContainerLog()
    bad = segment(SEGMENT_A)
    bad[0] = bad[0].replace('"sources": ["kind-worker"]', '"sources": [1]')
    for line in bad + segment(SEGMENT_B):
        reader.feed(line)
    assert reader.close() == merge_logs([SEGMENT_B])
    assert reader.left_out == {"line 1: invalid header: sources: not a list of names": 1}


def test_many_segments_merge_in_batches():
    reader = ContainerLog()
    for _ in range(150):
        for line in segment(SEGMENT_A2):
            reader.feed(line)
    log = reader.close()
    assert reader.segments == 150 and log.flows[0].packets == 1500 and log.stats == {"packets": 1500, "decoded": 1500}


@pytest.mark.parametrize(("text_", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2h30m", 9000), ("7d", 604800), ("1d2h3m4s", 93784)])
def test_durations(text_, seconds):
    assert parse_duration(text_) == seconds


@pytest.mark.parametrize("bad", ["", "1", "h", "1x", "-5m", "0s", "1m1h"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bad_since_is_a_usage_error(api):
    result = run(["collect", "--from-logs", "--kubeconfig", api.kubeconfig, "--since", "1 hour"])
    assert result.exit_code == 2 and "Invalid value for '--since'" in result.stderr and api.requests == []


def test_a_missing_or_bad_kubeconfig_is_a_collect_error(tmp_path):
    """The library's error class names the stage: collect, not the inventory it shares the client with."""
    with pytest.raises(CollectError, match="no kubeconfig found"):
        collect(NS, SELECTOR)
    with pytest.raises(CollectError, match=f"kubeconfig {tmp_path / 'nope'}: no such file"):
        collect(NS, SELECTOR, tmp_path / "nope")
