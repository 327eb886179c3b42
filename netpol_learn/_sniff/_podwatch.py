"""Which pod held an address when: a watch of the cluster's pods, for the live sniffer.

Inside a cluster (a service account token and ``KUBERNETES_SERVICE_HOST``), ``PodWatcher`` lists
the pods once and then follows a watch (``GET /api/v1/pods?watch=1``), keeping for every pod
address the pods that held it and from when to when, as the watch saw them. The sniffer then
names each side of a flow by the pod that held its address while the flow was seen
(``src_pods``/``dst_pods`` in the flow log), which settles what a snapshot inventory cannot: an
address that a deleted pod held and a new pod took over.

The API is optional and never holds up capture: the watch runs in its own thread, with timeouts
on every request. When the API cannot be reached or refuses, one warning says so, flows carry
addresses only until it answers again, and the watch is retried with backoff. A ``410 Gone``
(the resource version expired) lists again.

Plain ``http.client`` rather than the ``kubernetes`` client: a watch is one streaming request of
JSON lines, and the client's models would be built for every pod event only to be thrown away.
The service account and the wording of errors are ``netpol_learn._kube``'s.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urlsplit

from netpol_learn._flowlog import Flow
from netpol_learn._kube import SERVICE_ACCOUNT_DIR, answer_message, bearer_token, connection_error, in_cluster_credentials

#: The watch sees a pod's address a little after the pod can use it: a flow this many
#: nanoseconds before a pod was first seen with an address still counts as that pod's.
LAG_NS = 5_000_000_000
REQUEST_TIMEOUT = 10.0  # seconds: connect, and every read of a list
WATCH_SECONDS = 300  # the server ends a watch after this; it is started again at once
PAGE_SIZE = 500

Warn = Callable[[str], None]


@dataclass
class _Held:
    pod: str  # namespace/name
    uid: str
    since: int  # ns since the epoch; 0: held already when the watch started
    until: int | None = None


class WatchError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PodWatcher:
    """Follows the pods of the cluster; ``annotate`` names the pods of a flow's addresses."""

    def __init__(self, url: str, *, token_file: str | None = None, ca_file: str | None = None,
                 warn: Warn, info: Warn | None = None, request_timeout: float = REQUEST_TIMEOUT,
                 watch_seconds: int = WATCH_SECONDS, clock: Callable[[], int] = time.time_ns):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.token_file, self.ca_file = token_file, ca_file
        self.warn, self.info = warn, info or (lambda message: None)
        self.request_timeout, self.watch_seconds = request_timeout, watch_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.by_ip: dict[str, list[_Held]] = {}
        self.current: dict[str, tuple[str, tuple[str, ...]]] = {}  # uid -> (pod, addresses held now)
        self.resource_version: str | None = None
        self.synced = threading.Event()  # the first list is in
        self.healthy: bool | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.events = 0

    @classmethod
    def in_cluster(cls, *, warn: Warn, info: Warn | None = None, directory: str = SERVICE_ACCOUNT_DIR) -> PodWatcher | None:
        """A watcher with the pod's service account, or None outside a cluster."""
        account = in_cluster_credentials(directory)
        if account is None:
            return None
        return cls(account.url, token_file=account.token_file, ca_file=account.ca_file, warn=warn, info=info)

    # --- the address history ---

    def pods_at(self, ip: str, first: int, last: int) -> tuple[str, ...]:
        """The pods that held ``ip`` at some time from ``first`` to ``last`` (ns since the epoch)."""
        with self.lock:
            held = self.by_ip.get(ip, ())
            return tuple(sorted({h.pod for h in held if h.since <= last + LAG_NS and (h.until is None or h.until >= first)}))

    def prune(self, before: int) -> None:
        """Forget the holders that let their address go before ``before`` (ns since the epoch)."""
        with self.lock:
            for ip in list(self.by_ip):
                held = [h for h in self.by_ip[ip] if h.until is None or h.until >= before]
                if held:
                    self.by_ip[ip] = held
                else:
                    del self.by_ip[ip]

    def annotate(self, flow: Flow) -> Flow:
        src = self.pods_at(flow.src, flow.first_seen, flow.last_seen)
        dst = self.pods_at(flow.dst, flow.first_seen, flow.last_seen)
        return replace(flow, src_pods=src, dst_pods=dst) if src or dst else flow

    def _update(self, obj: dict, now: int, deleted: bool = False) -> None:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
        pod = f"{meta.get('namespace')}/{meta.get('name')}"
        ips: tuple[str, ...] = ()
        if not deleted and not spec.get("hostNetwork") and status.get("phase") not in ("Succeeded", "Failed"):
            ips = tuple(sorted({p.get("ip") for p in status.get("podIPs") or () if p.get("ip")} | ({status["podIP"]} if status.get("podIP") else set())))
        with self.lock:
            _, before = self.current.get(uid, (pod, ()))
            for ip in set(before) - set(ips):
                for h in self.by_ip.get(ip, ()):
                    if h.uid == uid and h.until is None:
                        h.until = now
            for ip in set(ips) - set(before):
                held = self.by_ip.setdefault(ip, [])
                for h in held:  # whoever the API said held it before has let it go
                    if h.until is None:
                        h.until = now
                held.append(_Held(pod, uid, now if self.synced.is_set() else 0))
            if ips:
                self.current[uid] = (pod, ips)
            else:
                self.current.pop(uid, None)

    def _relisted(self, seen: set[str], now: int) -> None:
        """After a list: pods not in it were deleted while the watch was away."""
        for uid in list(self.current):
            if uid not in seen:
                pod, _ = self.current[uid]
                ns, _, name = pod.partition("/")
                self._update({"metadata": {"uid": uid, "namespace": ns, "name": name}}, now, deleted=True)

    # --- the API ---

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _get(self, conn: http.client.HTTPConnection, path: str, params: dict) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json", "User-Agent": "netpol-learn-sniff"}
        if self.token_file:
            try:
                headers["Authorization"] = bearer_token(self.token_file)  # read each time: tokens are rotated
            except OSError as exc:
                raise WatchError(f"cannot read the service account token {self.token_file}: {exc.strerror}") from exc
        conn.request("GET", f"{path}?{urlencode(params)}", headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise WatchError(answer_message(resp.status, resp.reason, resp.read(65536)), resp.status)
        return resp

    def list_pods(self) -> None:
        """List every pod (in pages) and take it as the current state."""
        now = self.clock()
        seen: set[str] = set()
        token = None
        conn = self._connection(self.request_timeout)
        try:
            while True:
                params = {"limit": PAGE_SIZE}
                if token:
                    params["continue"] = token
                body = json.loads(self._get(conn, "/api/v1/pods", params).read())
                for item in body.get("items") or ():
                    meta = item.get("metadata") or {}
                    seen.add(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
                    self._update(item, now)
                token = (body.get("metadata") or {}).get("continue")
                if not token:
                    self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
                    break
        finally:
            conn.close()
        self._relisted(seen, now)
        self.synced.set()

    def watch_once(self) -> None:
        """Follow one watch request until the server ends it; raises WatchError on failure."""
        params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(self.watch_seconds)}
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        conn = self._connection(self.watch_seconds + self.request_timeout)
        try:
            resp = self._get(conn, "/api/v1/pods", params)
            while not self.stopping.is_set():
                line = resp.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    raise WatchError(f"watch error {code}: {obj.get('message', '')}", code)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._update(obj, self.clock(), deleted=kind == "DELETED")
                    self.events += 1
                if rv:
                    self.resource_version = rv
        finally:
            conn.close()

    def _loop(self) -> None:
        backoff = 1.0
        need_list = True
        while not self.stopping.is_set():
            try:
                if need_list:
                    self.list_pods()
                    need_list = False
                if self.healthy is not True:
                    self.info(f"watching pods through the Kubernetes API ({len(self.current)} with addresses)")
                self.healthy = True
                backoff = 1.0
                self.watch_once()
            except WatchError as exc:
                if exc.status == 410:  # the resource version expired: list again
                    need_list = True
                    continue
                self._failed(str(exc), forbidden=exc.status in (401, 403))
                need_list = need_list or exc.status is not None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._failed(connection_error(exc))
                need_list = True  # events may have been missed
            else:
                continue
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, 60.0)

    def _failed(self, why: str, forbidden: bool = False) -> None:
        if self.healthy is not False:
            hint = " (may the service account list and watch pods?)" if forbidden else ""
            self.warn(f"Kubernetes API at {self.host}:{self.port}: {why}{hint}; flows carry addresses only until it answers")
        self.healthy = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="pod-watch", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

