"""The learning service under faults, as real processes on loopback: killed with SIGKILL while
segments arrive, the API server (stood in by ``fake_api.WatchApiServer``, a local server answering
in the API's JSON shapes: no real API server can run here) unreachable at the start and coming up
later, the identity history carried across a kill, and tokens checked with TokenReview and
SubjectAccessReview (answered by a stand-in of those two API endpoints)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import urllib3
import yaml

import k8s
from fake_api import KIND_PATHS, LocalApiServer, WatchApiServer, no_ambient_cluster, status  # noqa: F401  (an autouse fixture)
from netpol_learn._flowlog import merge_logs, read_segment
from netpol_learn._inventory import load_inventory_document
from netpol_learn._time import parse_time
from servekit import free_port, get, post, segment, start_serve, stop, tokens_file, wait_for

PODS = KIND_PATHS["Pod"][0]


def write_kubeconfig(path, server: str, token: str = "token-of-the-service"):
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "svc", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "svc"}}],
    }))
    return path


class Sender(threading.Thread):
    """A sniffer's sending as the contract has it: each segment until it is acknowledged (201 or
    200), retrying connection errors and 5xx."""

    def __init__(self, url: str, node: str, segments):
        super().__init__(daemon=True)
        self.url, self.node, self.segments = url, node, segments
        self.http = urllib3.PoolManager()
        self.answers: list[int] = []
        self.retries = 0
        self.done = 0

    def run(self):
        for n, log in enumerate(self.segments):
            while True:
                try:
                    r = post(self.http, self.url, log, self.node, "boot-1", n, timeout=2)
                    if r.status in (200, 201):
                        self.answers.append(r.status)
                        self.done += 1
                        break
                except urllib3.exceptions.HTTPError:
                    pass
                self.retries += 1
                time.sleep(0.05)


def test_killed_server_loses_nothing_and_stores_nothing_twice(tmp_path):
    store = tmp_path / "store.db"
    tokens = tokens_file(tmp_path)
    port = free_port()
    nodes = {f"node-{i}": [segment(n, f"node-{i}", flows=40) for n in range(40)] for i in range(3)}
    running = start_serve(tmp_path, store, "--tokens-file", str(tokens), "--no-watch", port=port)
    senders = [Sender(running.url, node, logs) for node, logs in nodes.items()]
    for s in senders:
        s.start()
    wait_for(lambda: sum(s.done for s in senders) >= 30, what="30 segments stored")
    running.process.send_signal(signal.SIGKILL)
    assert running.process.wait(timeout=10) == -signal.SIGKILL
    time.sleep(0.5)  # the senders meet a closed port meanwhile
    running = start_serve(tmp_path, store, "--tokens-file", str(tokens), "--no-watch", port=port)
    try:
        for s in senders:
            s.join(timeout=120)
        assert all(s.done == 40 for s in senders)
        assert sum(s.retries for s in senders) > 0  # the kill was felt
        http = urllib3.PoolManager()
        got = read_segment(get(http, running.url, "/v1/flows").data.decode())
        expected = merge_logs(log for logs in nodes.values() for log in logs)
        assert got == expected
        assert sum(f.connections for f in got.flows) == sum(f.connections for f in expected.flows)
        metrics = get(http, running.url, "/metrics").data.decode()
        assert "netpol_learn_store_segments 120.0" in metrics
    finally:
        stop(running)


# --- the identity history -------------------------------------------------------------------


def cluster():
    web = {"app": "web", "pod-template-hash": "6d5f8b7c9"}
    return [
        k8s.namespace("shop"),
        k8s.node("node-a", "172.18.0.2", "10.244.1.0/24"),
        k8s.pod("web-6d5f8b7c9-aaaaa", "shop", "10.244.1.4", labels=web, owner=("ReplicaSet", "web-6d5f8b7c9")),
        k8s.pod("web-6d5f8b7c9-bbbbb", "shop", "10.244.1.5", labels=web, owner=("ReplicaSet", "web-6d5f8b7c9")),
        k8s.replicaset("web-6d5f8b7c9", "shop", {"app": "web"}, owner=("Deployment", "web")),
        k8s.deployment("web", "shop"),
    ]


def inventory(http, url):
    r = get(http, url, "/v1/inventory")
    assert r.status == 200, r.data
    return json.loads(r.data)


def history_of(doc, name):
    return [(e["type"], e.get("since")) for e in doc["history"] if e["object"]["metadata"]["name"] == name]


def test_identity_history_one_watch_per_kind_and_carried_across_a_kill(tmp_path):
    store = tmp_path / "store.db"
    tokens = tokens_file(tmp_path)
    http = urllib3.PoolManager()
    with WatchApiServer(cluster()) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        args = ("--tokens-file", str(tokens), "--kubeconfig", str(kubeconfig))
        running = start_serve(tmp_path, store, *args)
        # One watch per kind for the whole cluster.
        wait_for(lambda: all(api.watching(path) for path, _ in KIND_PATHS.values()), what="a watch of every kind")
        assert [api.watching(path) for path, _ in KIND_PATHS.values()] == [1] * len(KIND_PATHS)
        doc = inventory(http, running.url)
        assert {o["metadata"]["name"] for o in doc["items"] if o["kind"] == "Pod"} == {"web-6d5f8b7c9-aaaaa", "web-6d5f8b7c9-bbbbb"}
        api.delete("Pod", "shop", "web-6d5f8b7c9-aaaaa")
        api.add(k8s.pod("web-6d5f8b7c9-ccccc", "shop", "10.244.1.4", labels={"app": "web"}, owner=("ReplicaSet", "web-6d5f8b7c9")))
        wait_for(lambda: history_of(inventory(http, running.url), "web-6d5f8b7c9-ccccc"), what="the new pod in the history")
        doc = inventory(http, running.url)
        assert history_of(doc, "web-6d5f8b7c9-aaaaa") == [("DELETED", None)]
        assert history_of(doc, "web-6d5f8b7c9-ccccc") == [("ADDED", None)]
        time.sleep(1.5)  # a flush of watched_until after the events
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(timeout=10)
        # While the service is down: a pod goes, another comes.
        before_restart = time.time_ns()
        api.delete("Pod", "shop", "web-6d5f8b7c9-bbbbb")
        api.add(k8s.pod("web-6d5f8b7c9-ddddd", "shop", "10.244.1.5", labels={"app": "web"}, owner=("ReplicaSet", "web-6d5f8b7c9")))
        running = start_serve(tmp_path, store, *args)
        try:
            wait_for(lambda: history_of(inventory(http, running.url), "web-6d5f8b7c9-ddddd"), what="the catch-up after the restart")
            doc = inventory(http, running.url)
            # The snapshot is still the first one; what happened meanwhile is in the history,
            # each change with `since`: after the last time the earlier process was in step.
            assert {o["metadata"]["name"] for o in doc["items"] if o["kind"] == "Pod"} == {"web-6d5f8b7c9-aaaaa", "web-6d5f8b7c9-bbbbb"}
            (event, since), = history_of(doc, "web-6d5f8b7c9-bbbbb")
            assert event == "DELETED" and since is not None and parse_time(since) < before_restart
            assert history_of(doc, "web-6d5f8b7c9-ddddd")[0][0] == "ADDED"
            assert history_of(doc, "web-6d5f8b7c9-aaaaa") == [("DELETED", None)]  # not recorded twice
            times = [parse_time(e["time"]) for e in doc["history"]]
            assert times == sorted(times) and len(set(times)) == len(times)
            # The loader reads it: bbbbb held 10.244.1.5 until at most the restart, ddddd after.
            inv = load_inventory_document(doc, "service")
            pods = {p.name: p for p in inv.pods}
            assert pods["web-6d5f8b7c9-ddddd"].ips == ("10.244.1.5",)
            assert pods["web-6d5f8b7c9-bbbbb"].end is not None and pods["web-6d5f8b7c9-bbbbb"].end <= time.time_ns()
            assert pods["web-6d5f8b7c9-ddddd"].end is None
            ready = urllib3.PoolManager().request("GET", running.url + "/readyz").data.decode()
            assert "[+]identity watching 12 kinds at " + api.url in ready
        finally:
            stop(running)


def test_api_unreachable_at_start_ingest_goes_on_and_the_history_catches_up(tmp_path):
    store = tmp_path / "store.db"
    api_port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{api_port}")
    running = start_serve(tmp_path, store, "--tokens-file", str(tokens_file(tmp_path)), "--kubeconfig", str(kubeconfig))
    http = urllib3.PoolManager()
    try:
        assert post(http, running.url, segment(0), "node-a", "b", 0).status == 201
        ready = wait_for(lambda: (r := http.request("GET", running.url + "/readyz")) and "cannot reach" in r.data.decode() and r,
                         what="readyz to say the API cannot be reached")
        assert ready.status == 200  # segments are still taken in
        assert f"[-]identity not watching: cannot reach the API server at http://127.0.0.1:{api_port}" in ready.data.decode()
        assert "netpol_learn_identity_up 0.0" in get(http, running.url, "/metrics").data.decode()
        r = get(http, running.url, "/v1/inventory")
        assert r.status == 503 and "no identity history yet: not watching" in json.loads(r.data)["error"]
        with WatchApiServer(cluster(), port=api_port) as api:
            wait_for(lambda: get(http, running.url, "/v1/inventory").status == 200, what="the listing once the API is up")
            wait_for(lambda: "netpol_learn_identity_up 1.0" in get(http, running.url, "/metrics").data.decode(), what="identity up")
            assert "[+]identity watching" in http.request("GET", running.url + "/readyz").data.decode()
            assert post(http, running.url, segment(1), "node-a", "b", 1).status == 201
            doc = inventory(http, running.url)
            assert len([o for o in doc["items"] if o["kind"] == "Pod"]) == 2
            # The status is what `netpol-learn status` says of the same flows and inventory.
            status = get(http, running.url, "/v1/status")
            assert status.status == 200
            (tmp_path / "flows.jsonl").write_bytes(get(http, running.url, "/v1/flows").data)
            (tmp_path / "inventory.json").write_bytes(get(http, running.url, "/v1/inventory").data)
            cli = subprocess.run([sys.executable, "-m", "netpol_learn", "status", "--flows", str(tmp_path / "flows.jsonl"),
                                  "--inventory", str(tmp_path / "inventory.json"), "--format", "json"],
                                 capture_output=True, timeout=120)
            assert cli.returncode == 0, cli.stderr
            assert status.data == cli.stdout
            assert json.loads(status.data)["counts"] == {"learning": 1, "stabilizing": 0, "stable": 0}  # web, seen as a client
            # The review page at / is what `netpol-learn report` writes of the same flows and inventory.
            page = get(http, running.url, "/")
            assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
            assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
            cli = subprocess.run([sys.executable, "-m", "netpol_learn", "report", "--flows", str(tmp_path / "flows.jsonl"),
                                  "--inventory", str(tmp_path / "inventory.json"), "--title", "netpol-learn: the learning service",
                                  "-o", "-"], capture_output=True, timeout=120)
            assert cli.returncode == 0, cli.stderr
            assert page.data == cli.stdout
            assert api.watching(PODS) == 1
    finally:
        stop(running)
    err = running.log()
    assert f"warning: identity history: cannot reach the API server at http://127.0.0.1:{api_port}" in err
    assert "(segments are still taken in)" in err and "identity history: listed" in err


def test_api_failing_mid_run_ingest_goes_on_readyz_and_metrics_say_so_and_the_watch_recovers(tmp_path):
    with WatchApiServer(cluster()) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        running = start_serve(tmp_path, tmp_path / "store.db", "--tokens-file", str(tokens_file(tmp_path)),
                              "--kubeconfig", str(kubeconfig))
        http = urllib3.PoolManager()
        try:
            wait_for(lambda: "netpol_learn_identity_up 1.0" in get(http, running.url, "/metrics").data.decode(), what="watching")
            # The pod watch breaks off, and the API answers its next watches with 500s.
            api.faults[PODS].extend(["500"] * 3)
            api.drop(PODS)
            ready = wait_for(lambda: (r := http.request("GET", running.url + "/readyz")) and "[-]identity pods:" in r.data.decode() and r,
                             what="readyz to name the failing watch")
            assert ready.status == 200
            assert "netpol_learn_identity_up 0.0" in get(http, running.url, "/metrics").data.decode()
            assert post(http, running.url, segment(0), "node-a", "b", 0).status == 201  # ingest goes on
            api.delete("Pod", "shop", "web-6d5f8b7c9-aaaaa")  # while the watch fails
            wait_for(lambda: "[+]identity watching" in http.request("GET", running.url + "/readyz").data.decode(), timeout=60,
                     what="the watch back in step")
            wait_for(lambda: history_of(inventory(http, running.url), "web-6d5f8b7c9-aaaaa"), what="the change made meanwhile")
            assert [e for e, _ in history_of(inventory(http, running.url), "web-6d5f8b7c9-aaaaa")] == ["DELETED"]
        finally:
            stop(running)


# --- tokens checked by the API server --------------------------------------------------------


SNIFFER = "system:serviceaccount:netpol-learn:netpol-learn-sniffer"


class ReviewApi(LocalApiServer):
    """TokenReview and SubjectAccessReview as the API answers them, for a few known tokens."""

    users = {"sniffer-token": SNIFFER, "alice-token": "alice", "bob-token": "bob"}
    readers = {"alice"}

    def __init__(self):
        super().__init__()
        self.reviews: list[dict] = []
        self.down = False

    def handle(self, request, path, query):
        request.send_json(404, status(404, "NotFound", "not here"))

    def handle_post(self, request, path, query, body):
        if self.down:
            request.send_json(500, status(500, "InternalError", "etcd is gone"))
            return
        review = json.loads(body)
        self.reviews.append({"path": path, "body": review, "auth": request.headers.get("Authorization")})
        if path == "/apis/authentication.k8s.io/v1/tokenreviews":
            user = self.users.get(review["spec"]["token"])
            out = {"authenticated": True, "user": {"username": user, "groups": ["system:authenticated"], "uid": "u-" + user}} if user else {"authenticated": False}
            request.send_json(201, {**review, "status": out})
        elif path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            request.send_json(201, {**review, "status": {"allowed": review["spec"]["user"] in self.readers}})
        else:
            request.send_json(404, status(404, "NotFound", "not here"))


def test_tokens_checked_with_token_review_and_subject_access_review(tmp_path):
    with ReviewApi() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, token="the-service-own-token")
        running = start_serve(tmp_path, tmp_path / "store.db", "--kubeconfig", str(kubeconfig), "--no-watch",
                              "--namespace", "netpol-learn")
        http = urllib3.PoolManager()
        try:
            assert post(http, running.url, segment(0), "n", "b", 0, token="sniffer-token").status == 201
            assert post(http, running.url, segment(1), "n", "b", 1, token="alice-token").status == 403
            assert post(http, running.url, segment(1), "n", "b", 1, token="nobody").status == 401
            assert get(http, running.url, "/v1/flows", token="alice-token").status == 200
            r = get(http, running.url, "/v1/flows", token="bob-token")
            assert r.status == 403 and json.loads(r.data)["error"] == "bob may not read from this service"
            assert get(http, running.url, "/v1/flows", token="sniffer-token").status == 403  # the writer does not read
            sar = [r for r in api.reviews if r["path"].endswith("subjectaccessreviews")]
            assert sar[0]["body"]["spec"]["resourceAttributes"] == {
                "namespace": "netpol-learn", "verb": "get", "resource": "services", "subresource": "proxy", "name": "netpol-learn"}
            assert sar[0]["body"]["spec"]["user"] == "alice" and sar[0]["body"]["spec"]["groups"] == ["system:authenticated"]
            assert all(r["auth"] == "Bearer the-service-own-token" for r in api.reviews)
            # Answers are reused for a while: the same token again costs no review.
            count = len(api.reviews)
            assert get(http, running.url, "/v1/flows", token="alice-token").status == 200
            assert len(api.reviews) == count
            # The API failing: cannot check now (503, retried by sniffers), never let in.
            api.down = True
            r = post(http, running.url, segment(2), "n", "b", 2, token="unknown-yet-token")
            assert r.status == 503 and "cannot check the token now" in json.loads(r.data)["error"]
            totals = get(http, running.url, "/v1/flows", token="alice-token")
            assert len(read_segment(totals.data.decode()).flows) == len(segment(0).flows)
        finally:
            stop(running)



def test_an_address_handed_over_while_the_service_was_down_resolves_to_each_holder_in_its_time(tmp_path):
    """DESIGN rule 13 through the service: the history it carries across a kill gives each run of
    traffic the pod that held the address then."""
    from netpol_learn._flowlog import Flow, FlowLog
    from netpol_learn._resolve import resolve

    store, tokens, http = tmp_path / "store.db", tokens_file(tmp_path), urllib3.PoolManager()
    with WatchApiServer(cluster() + [k8s.pod("api-0", "shop", "10.244.1.9", labels={"app": "api"}, owner=("StatefulSet", "api")),
                                     k8s.statefulset("api", "shop")]) as api:
        args = ("--tokens-file", str(tokens), "--kubeconfig", str(write_kubeconfig(tmp_path / "kubeconfig", api.url)))
        running = start_serve(tmp_path, store, *args)
        wait_for(lambda: get(http, running.url, "/v1/inventory").status == 200, what="the listing")
        time.sleep(1.5)
        before = time.time_ns()
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(timeout=10)
        api.delete("Pod", "shop", "web-6d5f8b7c9-bbbbb")  # 10.244.1.5 goes to a pod of another workload
        now_s = (time.time_ns() - k8s.ns(0)) / 1e9  # a pod that starts now (k8s times count from its BASE)
        api.add(k8s.pod("db-0", "shop", "10.244.1.5", labels={"app": "db"}, owner=("StatefulSet", "db"), start=now_s),
                k8s.statefulset("db", "shop"))
        time.sleep(0.5)
        running = start_serve(tmp_path, store, *args)
        try:
            wait_for(lambda: history_of(inventory(http, running.url), "db-0"), what="the catch-up")
            time.sleep(1.5)
            after = time.time_ns()
            inv = load_inventory_document(inventory(http, running.url), "service")
        finally:
            stop(running)

    def call(at: int) -> Flow:
        return Flow(src="10.244.1.5", dst="10.244.1.9", proto="TCP", port=8080, packets=6, bytes=600, connections=1,
                    first_seen=at, last_seen=at + 10**8, direction=(("syn", 1),), evidence="established")

    # Outside the clock tolerance (2 s) of the window in which the handover happened: one holder each.
    for at, workload in ((before - 5 * 10**9, "Deployment/web"), (after + 3 * 10**9, "StatefulSet/db")):
        (connection,) = resolve(FlowLog(flows=(call(at),)), inv).connections
        assert connection.client.workload == workload and connection.server.workload == "StatefulSet/api"
