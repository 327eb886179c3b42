"""A test bed of network namespaces that imitates one Kubernetes node, for real captures.

    bed = TestBed("guestbook")
    bed.deployment("guestbook", "api", replicas=2, ports=[Port("http", 8080)],
                   serve=[Serve(8080, calls=[Call("db", 5432, count=1)])])
    bed.service("guestbook", "api", {"app": "api"}, [ServicePort(80, "http", name="http")])
    ...
    with bed:                                   # builds the namespaces, starts every server
        result = bed.run(capture="capture.pcap")  # tcpdump -i any on the node, then the clients
        bed.write_inventory("inventory.yaml")     # kubectl-format List of what was built
    # always torn down here, also on errors: processes stopped, namespaces deleted

What gets built (all names are unique per run: ``npl-<pid>-<random>-...``):

- a **node** namespace: bridge ``cni0`` (10.244.0.1/24, the node's podCIDR 10.244.0.0/24), the
  node address 172.18.0.2 on ``eth0``, IP forwarding, and kube-proxy-like Services in nftables
  (``table ip kube-proxy``: DNAT of ClusterIPs and NodePorts to endpoints, round robin;
  masquerade of pod traffic leaving through ``eth0``, as kind's ip-masq-agent does);
- one namespace per **pod**, its ``eth0`` a veth whose other end is a port of ``cni0``. A pod's
  address is a /32 with its default route via 10.244.0.1, so pod-to-pod and pod-to-Service
  packets are routed by the node namespace (through nftables) rather than bridged past it;
- an **outside** namespace behind the node (172.18.0.1 on the node's link, 203.0.113.0/24 hosts
  on its loopback): servers such as 203.0.113.10:443 and clients such as 203.0.113.50;
- cluster DNS: a ``coredns`` Deployment in kube-system behind Service ``kube-dns`` 10.96.0.10
  (UDP and TCP 53) answering ``<svc>.<ns>.svc.cluster.local``, ``<pod>.<svc>.<ns>.svc...`` of
  StatefulSet pods and the outside names given with ``dns_name``; answers over 512 bytes are
  truncated on UDP (TC), so the pods' resolver retries over TCP.

``bed.bridged(pod_a, pod_b)`` (a context manager) lets two pods reach each other over the bridge
instead, as a switch (an on-link route each way), and ``bed.link_promiscuity("cni0")`` tells how
many have put a link of the node in promiscuous mode.

Every pod and outside host runs one agent process (this file, ``python testbed.py agent``, run
with ``ip netns exec``): real TCP and UDP servers, and client loops with a fixed number of
requests that stop by themselves. Pods resolve names like glibc with the pod's resolv.conf
(``search <ns>.svc.cluster.local svc.cluster.local cluster.local``, ``ndots:5``), A and AAAA.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); ``tcpdump`` only for ``run(capture=...)``.
Everything stays inside the namespaces the bed creates: none of them has a link to the host.
The agent half of this file uses the standard library only.
"""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

# --- addresses -----------------------------------------------------------------------------

CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"  # this node's podCIDR
BRIDGE_IP = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
NODE_IP = "172.18.0.2"
GATEWAY_IP = "172.18.0.1"  # the outside namespace's end of the node's link
OUTSIDE_CIDR = "203.0.113.0/24"
NODE_NAME = "testbed-control-plane"
CLUSTER_DOMAIN = "cluster.local"
SNAPSHOT_ANNOTATION = "netpol-learn.io/snapshot-time"
NS_PREFIX = "npl-"
MASQ_MARK = 0x4000
CAPTURE_SNAPLEN = 4096

_ALLOWED = [ipaddress.ip_network(n) for n in (CLUSTER_CIDR, SERVICE_CIDR, "172.18.0.0/24", OUTSIDE_CIDR)]


class TestBedError(RuntimeError):
    pass


def _check_address(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if not any(addr in n for n in _ALLOWED):
        raise TestBedError(f"{ip} is outside the test bed's ranges {', '.join(map(str, _ALLOWED))}")
    return ip


# ==========================================================================================
# Agent: what runs inside a pod or outside host (standard library only)
# ==========================================================================================

QTYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}
UDP_LIMIT = 512  # no EDNS: a longer answer is truncated and the client retries over TCP
DNS_TTL = 30


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, end, jumps = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 20:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii"))
        off += n
    return ".".join(labels).lower(), (end if end is not None else off)


def dns_query(name: str, qtype: str, qid: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def dns_response(query: bytes, records: dict[str, list[str]], *, udp: bool) -> bytes:
    """The cluster DNS server's answer: A records from `records` (name -> addresses), an empty
    NOERROR for other types of a known name, NXDOMAIN for unknown names. Over UDP, an answer
    longer than 512 bytes is sent truncated (TC, no records) so the client retries over TCP."""
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return struct.pack("!HHHHHH", qid, 0x8001, 0, 0, 0, 0)  # FORMERR
    name, off = _read_name(query, 12)
    qtype, _qclass = struct.unpack("!HH", query[off:off + 4])
    question = query[12:off + 4]
    if name in records:
        rcode = 0
        addrs = records[name] if qtype == QTYPES["A"] else []
    else:
        rcode, addrs = 3, []
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, 1, 1, DNS_TTL, 4) + socket.inet_aton(a) for a in addrs
    )
    out_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
    msg = struct.pack("!HHHHHH", qid, out_flags, 1, len(addrs), 0, 0) + question + answers
    if udp and len(msg) > UDP_LIMIT:
        msg = struct.pack("!HHHHHH", qid, out_flags | 0x0200, 1, 0, 0, 0) + question
    return msg


def parse_response(msg: bytes) -> tuple[int, int, bool, list[str]]:
    """(id, rcode, truncated, A addresses) of a DNS response."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    addrs = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(msg[off:off + 4]))
        off += rdlen
    return qid, flags & 0xF, bool(flags & 0x0200), addrs


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


class StubResolver:
    """What glibc does with a pod's resolv.conf: search list, ndots, UDP then TCP on truncation."""

    def __init__(self, nameserver: str, search: list[str], ndots: int = 5, aaaa: bool = True):
        self.nameserver, self.search, self.ndots, self.aaaa = nameserver, search, ndots, aaaa
        self.cache: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def candidates(self, name: str) -> list[str]:
        if name.endswith("."):
            return [name[:-1]]
        expanded = [f"{name}.{d}" for d in self.search]
        return [name, *expanded] if name.count(".") >= self.ndots else [*expanded, name]

    def query(self, name: str, qtype: str) -> tuple[int, list[str], list[str]]:
        """(rcode, addresses, transports used)."""
        qid = random.randrange(1, 65536)
        q = dns_query(name, qtype, qid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.connect((self.nameserver, 53))
            for _attempt in range(3):
                s.send(q)
                try:
                    while True:
                        rid, rcode, tc, addrs = parse_response(s.recv(4096))
                        if rid == qid:
                            break
                except socket.timeout:
                    continue
                if not tc:
                    return rcode, addrs, ["udp"]
                break
            else:
                raise TimeoutError(f"no DNS answer for {name} {qtype} from {self.nameserver}")
        with socket.create_connection((self.nameserver, 53), timeout=3) as t:
            t.sendall(struct.pack("!H", len(q)) + q)
            (length,) = struct.unpack("!H", _recv_exact(t, 2))
            rid, rcode, _tc, addrs = parse_response(_recv_exact(t, length))
        return rcode, addrs, ["udp", "tcp"]

    def resolve(self, name: str) -> tuple[list[str], list[dict]]:
        """Addresses of a name (or the address itself) and the queries sent for it."""
        try:
            ipaddress.ip_address(name)
            return [name], []
        except ValueError:
            pass
        with self.lock:
            if name in self.cache:
                return self.cache[name], []
        log = []
        for cand in self.candidates(name):
            rcode, addrs, transports = self.query(cand, "A")
            log.append({"qname": cand, "qtype": "A", "rcode": RCODES.get(rcode, rcode), "answers": addrs, "transports": transports})
            if self.aaaa:
                rc6, _, tr6 = self.query(cand, "AAAA")
                log.append({"qname": cand, "qtype": "AAAA", "rcode": RCODES.get(rc6, rc6), "answers": [], "transports": tr6})
            if rcode == 0 and addrs:
                with self.lock:
                    self.cache[name] = addrs
                return addrs, log
        raise LookupError(f"{name}: not found ({', '.join(self.candidates(name))})")


class Agent:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.out_lock = threading.Lock()
        r = cfg.get("resolver")
        self.resolver = StubResolver(r["nameserver"], r["search"], r.get("ndots", 5), r.get("aaaa", True)) if r else None
        self.rr: dict[str, int] = {}
        self.rr_lock = threading.Lock()

    def emit(self, **event) -> None:
        with self.out_lock:
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            sys.stdout.flush()

    # --- clients ---

    def _address(self, call: dict) -> str:
        targets = call["targets"]
        with self.rr_lock:
            i = self.rr.get(call["id"], 0)
            self.rr[call["id"]] = i + 1
        target = targets[i % len(targets)]
        if self.resolver is None:
            return target
        addrs, log = self.resolver.resolve(target)
        for q in log:
            self.emit(event="dns", name=target, **q)
        return addrs[0]

    def exchange(self, call: dict) -> dict:
        """One request/response with the call's target; never raises."""
        result = {"event": "call", "call": call["id"], "protocol": call["protocol"], "port": call["port"]}
        try:
            address = self._address(call)
            result["address"] = address
            request = (call.get("request") or f"GET /{call['id']} HTTP/1.0\r\nHost: {call['targets'][0]}\r\n\r\n").encode()
            if call["protocol"] == "TCP":
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    if call.get("source"):
                        s.bind((call["source"], 0))
                    s.connect((address, call["port"]))
                    s.sendall(request)
                    s.shutdown(socket.SHUT_WR)
                    reply = b""
                    while chunk := s.recv(65536):
                        reply += chunk
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(1.5)
                    if call.get("source"):
                        s.bind((call["source"], 0))
                    s.connect((address, call["port"]))
                    for _attempt in range(3):
                        s.send(request)
                        try:
                            reply = s.recv(65536)
                            break
                        except socket.timeout:
                            continue
                    else:
                        raise TimeoutError("no UDP reply")
            result.update(ok=bool(reply), bytes=len(reply))
            if not reply:
                result["error"] = "empty reply"
        except Exception as exc:  # noqa: BLE001 - reported to the bed, which fails the run
            result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        return result

    def client_loop(self, call: dict) -> None:
        if call.get("lookup"):
            for _ in range(call.get("count", 1)):
                try:
                    addrs, log = self.resolver.resolve(call["lookup"])
                    self.resolver.cache.pop(call["lookup"], None)
                    for q in log:
                        self.emit(event="dns", name=call["lookup"], **q)
                    self.emit(event="call", call=call["id"], protocol="DNS", port=53, ok=True, answers=len(addrs))
                except Exception as exc:  # noqa: BLE001
                    self.emit(event="call", call=call["id"], protocol="DNS", port=53, ok=False, error=f"{type(exc).__name__}: {exc}")
                time.sleep(call.get("interval", 0.3))
            return
        time.sleep(call.get("delay", 0))
        for i in range(call.get("count", 1)):
            self.emit(**self.exchange(call))
            if i + 1 < call.get("count", 1):
                time.sleep(call.get("interval", 0.3))

    # --- servers ---

    def serve_tcp(self, spec: dict, sock: socket.socket) -> None:
        while True:
            conn, peer = sock.accept()
            threading.Thread(target=self.handle_tcp, args=(spec, conn, peer), daemon=True).start()

    def handle_tcp(self, spec: dict, conn: socket.socket, peer) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if spec.get("dns"):
                    while True:
                        head = conn.recv(2)
                        if not head:
                            return
                        if len(head) == 1:
                            head += _recv_exact(conn, 1)
                        (length,) = struct.unpack("!H", head)
                        answer = dns_response(_recv_exact(conn, length), self.cfg["dns_records"], udp=False)
                        conn.sendall(struct.pack("!H", len(answer)) + answer)
                request = b""
                while chunk := conn.recv(65536):
                    request += chunk
                upstream = [self.exchange(c) for c in spec.get("calls", ())]
                for u in upstream:
                    self.emit(**u)
                ok = all(u.get("ok") for u in upstream)
                if request.startswith(b"GET ") or request.startswith(b"HEAD "):
                    body = b"ok\n" if ok else b"upstream failed\n"
                    status = b"200 OK" if ok else b"502 Bad Gateway"
                    reply = b"HTTP/1.0 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                else:
                    reply = (spec.get("reply") or "OK").encode() + b"\n"
                conn.sendall(reply)
                self.emit(event="served", port=spec["port"], protocol="TCP", peer=peer[0])
            except Exception as exc:  # noqa: BLE001 - reported to the bed, which fails the run
                self.emit(event="server-error", port=spec["port"], error=f"{type(exc).__name__}: {exc}")

    def serve_udp(self, spec: dict, sock: socket.socket) -> None:
        while True:
            data, peer = sock.recvfrom(65536)
            try:
                if spec.get("dns"):
                    sock.sendto(dns_response(data, self.cfg["dns_records"], udp=True), peer)
                else:
                    sock.sendto((spec.get("reply") or "OK").encode() + b"\n", peer)
                    self.emit(event="served", port=spec["port"], protocol="UDP", peer=peer[0])
            except Exception as exc:  # noqa: BLE001 - reported to the bed
                self.emit(event="server-error", port=spec["port"], error=f"{type(exc).__name__}: {exc}")

    def main(self) -> int:
        started = time.monotonic()
        lifetime = float(self.cfg.get("lifetime", 120))
        bind = self.cfg.get("bind", "0.0.0.0")
        for spec in self.cfg.get("serve", ()):
            if spec["protocol"] == "TCP":
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((bind, spec["port"]))
                s.listen(64)
                threading.Thread(target=self.serve_tcp, args=(spec, s), daemon=True).start()
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((bind, spec["port"]))
                threading.Thread(target=self.serve_udp, args=(spec, s), daemon=True).start()
        self.emit(event="ready")
        # Clients start when the bed says "go" (after every server of the bed is listening).
        ready, _, _ = select.select([sys.stdin], [], [], lifetime)
        if not ready or sys.stdin.readline().strip() != "go":
            return 0
        threads = [threading.Thread(target=self.client_loop, args=(c,), daemon=True) for c in self.cfg.get("calls", ())]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, lifetime - (time.monotonic() - started)))
        self.emit(event="done")
        # Servers go on until the bed stops the agent, or the lifetime ends.
        time.sleep(max(0.0, lifetime - (time.monotonic() - started)))
        return 0


def agent_main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    return Agent(cfg).main()


# ==========================================================================================
# Declarations
# ==========================================================================================


@dataclass(frozen=True)
class Port:
    """A container port."""

    name: str | None
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str  # a number or the name of a container port
    protocol: str = "TCP"
    name: str | None = None
    node_port: int | None = None


@dataclass
class Call:
    """A client loop: `count` requests to `target` (a DNS name resolved through cluster DNS, an
    address, or a list of them used round robin), `interval` seconds apart. In a Serve's
    `calls`, one request to the target for every request the server handles."""

    target: str | list[str]
    port: int
    protocol: str = "TCP"
    count: int = 3
    interval: float = 0.3
    delay: float = 0.0
    request: str | None = None


@dataclass
class Lookup:
    """A DNS lookup only (A and AAAA, search list), `count` times."""

    name: str
    count: int = 1
    interval: float = 0.3


@dataclass
class Serve:
    port: int
    protocol: str = "TCP"
    calls: list[Call] = field(default_factory=list)
    reply: str | None = None
    dns: bool = False


@dataclass
class PodInfo:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    workload: Workload
    index: int
    netns: str = ""
    veth: str = ""
    host_network: bool = False

    @property
    def uid(self) -> str:
        return _uid("Pod", self.namespace, self.name)


@dataclass
class Workload:
    namespace: str
    kind: str  # Deployment, StatefulSet, DaemonSet, Pod (a bare pod)
    name: str
    replicas: int
    labels: dict[str, str]
    ports: list[Port]
    serve: list[Serve]
    calls: list[Call | Lookup]
    service_name: str | None = None  # StatefulSet's governing Service
    image: str = "netpol-learn/testbed-agent:0.1"
    pods: list[PodInfo] = field(default_factory=list)
    host_network: bool = False
    extra: dict = field(default_factory=dict)  # static pods: command line, owner

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.kind}/{self.name}"


@dataclass
class ServiceDef:
    namespace: str
    name: str
    selector: dict[str, str] | None
    ports: list[ServicePort]
    type: str = "ClusterIP"
    cluster_ip: str | None = None  # "None": headless
    external_traffic_policy: str = "Cluster"
    labels: dict[str, str] = field(default_factory=dict)
    endpoints: list[tuple[str, int]] = field(default_factory=list)  # selector-less: (address, port)


@dataclass
class OutsideHost:
    ip: str
    serve: list[Serve]
    calls: list[Call]


@dataclass
class RunResult:
    events: list[dict]
    capture: Path | None = None
    started: datetime | None = None
    stopped: datetime | None = None
    capture_stats: str = ""  # what tcpdump said when it stopped

    @property
    def calls(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "call"]

    @property
    def failures(self) -> list[dict]:
        return [e for e in self.events if (e.get("event") == "call" and not e.get("ok")) or e.get("event") in ("server-error", "agent-exit")]

    @property
    def dns(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "dns"]


_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' generated name suffixes


def _suffix(seed: str, n: int) -> str:
    h = hashlib.sha256(seed.encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in h[:n])


def _uid(kind: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"netpol-learn-testbed/{kind}/{namespace}/{name}"))


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ==========================================================================================
# The bed
# ==========================================================================================

_LIVE: set = set()  # beds not torn down yet, for atexit


@atexit.register
def _teardown_all() -> None:
    for bed in list(_LIVE):
        bed.teardown()


def _run(args: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise TestBedError(f"{' '.join(args)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _which(name: str) -> str | None:
    # root's tools live in sbin, which a non-login PATH may lack
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def _tool(name: str) -> str:
    return _which(name) or name


_IP = _tool("ip")


def missing_tools(capture: bool = False) -> list[str]:
    """Commands the bed needs that are not installed (tcpdump only when capturing)."""
    need = ["ip", "nft"] + (["tcpdump"] if capture else [])
    return [t for t in need if _which(t) is None]


def can_run() -> str | None:
    """None when a bed can be built here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = missing_tools()
    if missing:
        return f"missing commands: {', '.join(missing)} (apt-get install -y iproute2 nftables)"
    return None


def list_namespaces() -> list[str]:
    out = _run([_IP, "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale() -> list[str]:
    """Delete the namespaces of earlier beds whose process is gone (names carry its pid)."""
    removed = []
    for name in list_namespaces():
        m = re.match(rf"{NS_PREFIX}(\d+)-", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running: not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _run([_IP, "netns", "del", name], check=False)
        removed.append(name)
    return removed


class TestBed:
    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "testbed", *, dns: bool = True, coredns_replicas: int = 1, lifetime: float = 90.0):
        self.name = name
        self.run_id = f"{NS_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        self.lifetime = lifetime
        self.namespaces: list[str] = []
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.workloads: list[Workload] = []
        self.services: list[ServiceDef] = []
        self.outside_hosts: list[OutsideHost] = []
        self.external_names: dict[str, list[str]] = {}
        self._next_pod = 2
        self._used_svc_ips = {KUBERNETES_IP, DNS_IP}
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._events: list[dict] = []
        self._events_lock = threading.Lock()
        self._ready: set[str] = set()
        self._done: set[str] = set()
        self._created_netns: list[str] = []
        self._tmp: Path | None = None
        self._capture: subprocess.Popen | None = None
        self.built = False
        self._stopping = False
        self.created_at: datetime | None = None
        self._system_objects(dns, coredns_replicas)

    # --- declaring ---------------------------------------------------------------------

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        if name not in self.namespaces:
            self.namespaces.append(name)
        self.namespace_labels.setdefault(name, {}).update(labels or {})
        return name

    def _workload(self, namespace: str, kind: str, name: str, replicas: int, labels: dict | None, ports, serve, calls,
                  **kw) -> Workload:
        if self.built:
            raise TestBedError("declare everything before the bed is built")
        self.namespace(namespace)
        w = Workload(namespace, kind, name, replicas, dict(labels or {"app": name}), list(ports or ()), list(serve or ()),
                     list(calls or ()), **kw)
        for i in range(replicas):
            if kind == "Deployment":
                rs_hash = _suffix(f"rs/{namespace}/{name}", 10)
                pod_name = f"{name}-{rs_hash}-{_suffix(f'pod/{namespace}/{name}/{i}', 5)}"
                extra = {"pod-template-hash": rs_hash}
            elif kind == "StatefulSet":
                pod_name = f"{name}-{i}"
                extra = {"controller-revision-hash": f"{name}-{_suffix(f'rev/{namespace}/{name}', 10)}",
                         "statefulset.kubernetes.io/pod-name": pod_name, "apps.kubernetes.io/pod-index": str(i)}
            elif kind == "DaemonSet":
                pod_name = f"{name}-{_suffix(f'pod/{namespace}/{name}/{i}', 5)}"
                extra = {"controller-revision-hash": _suffix(f"rev/{namespace}/{name}", 10), "pod-template-generation": "1"}
            else:
                pod_name, extra = name, {}
            if w.host_network:
                ip = NODE_IP
            else:
                ip = str(ipaddress.ip_network(POD_CIDR)[self._next_pod])
                self._next_pod += 1
                if self._next_pod > 250:
                    raise TestBedError("too many pods for one /24")
            w.pods.append(PodInfo(namespace, pod_name, ip, {**w.labels, **extra}, w, i, host_network=w.host_network))
        self.workloads.append(w)
        return w

    def deployment(self, namespace: str, name: str, *, replicas: int = 1, labels: dict | None = None,
                   ports: list[Port] | None = None, serve: list[Serve] | None = None, calls: list | None = None) -> Workload:
        return self._workload(namespace, "Deployment", name, replicas, labels, ports, serve, calls)

    def statefulset(self, namespace: str, name: str, *, replicas: int = 1, service_name: str | None = None,
                    labels: dict | None = None, ports: list[Port] | None = None, serve: list[Serve] | None = None,
                    calls: list | None = None) -> Workload:
        return self._workload(namespace, "StatefulSet", name, replicas, labels, ports, serve, calls,
                              service_name=service_name or name)

    def daemonset(self, namespace: str, name: str, *, labels: dict | None = None, ports: list[Port] | None = None,
                  serve: list[Serve] | None = None, calls: list | None = None, host_network: bool = False) -> Workload:
        return self._workload(namespace, "DaemonSet", name, 1, labels, ports, serve, calls, host_network=host_network)

    def service(self, namespace: str, name: str, selector: dict[str, str] | None, ports: list[ServicePort], *,
                type: str = "ClusterIP", headless: bool = False, cluster_ip: str | None = None,
                external_traffic_policy: str = "Cluster", labels: dict | None = None) -> ServiceDef:
        if self.built:
            raise TestBedError("declare everything before the bed is built")
        self.namespace(namespace)
        if headless:
            ip = "None"
        else:
            ip = cluster_ip or self._allocate_service_ip(namespace, name)
            _check_address(ip)
        svc = ServiceDef(namespace, name, dict(selector) if selector else None, list(ports), type, ip,
                         external_traffic_policy, dict(labels or {}))
        self.services.append(svc)
        return svc

    def _allocate_service_ip(self, namespace: str, name: str) -> str:
        h = int(hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest(), 16)
        net = ipaddress.ip_network(SERVICE_CIDR)
        while True:
            ip = str(net[256 + h % (net.num_addresses - 512)])
            if ip not in self._used_svc_ips:
                self._used_svc_ips.add(ip)
                return ip
            h += 1

    def outside(self, ip: str, *, serve: list[Serve] | None = None, calls: list[Call] | None = None) -> OutsideHost:
        """A host in 203.0.113.0/24, behind the node; its calls must name addresses (no cluster DNS)."""
        if ipaddress.ip_address(ip) not in ipaddress.ip_network(OUTSIDE_CIDR):
            raise TestBedError(f"outside hosts live in {OUTSIDE_CIDR}, not {ip}")
        host = OutsideHost(ip, list(serve or ()), list(calls or ()))
        self.outside_hosts.append(host)
        return host

    def dns_name(self, name: str, *addresses: str) -> None:
        """An outside name the cluster DNS answers (A records)."""
        for a in addresses:
            _check_address(a)
        self.external_names[name.lower().rstrip(".")] = list(addresses)

    def pods_of(self, namespace: str, name: str) -> list[PodInfo]:
        for w in self.workloads:
            if w.namespace == namespace and w.name == name:
                return list(w.pods)
        raise KeyError(f"{namespace}/{name}")

    def _system_objects(self, dns: bool, coredns_replicas: int) -> None:
        """What every cluster has: the API server and controller manager (static pods on the host
        network: their flags give the ranges), kube-proxy, CoreDNS behind kube-dns, and the
        `kubernetes` Service."""
        for ns in ("default", "kube-node-lease", "kube-public", "kube-system"):
            self.namespace(ns)
        self._workload("kube-system", "Pod", f"kube-apiserver-{NODE_NAME}", 1, {"component": "kube-apiserver", "tier": "control-plane"},
                       [], [], [], host_network=True,
                       extra={"command": ["kube-apiserver", f"--advertise-address={NODE_IP}", "--secure-port=6443",
                                          f"--service-cluster-ip-range={SERVICE_CIDR}"], "image": "registry.k8s.io/kube-apiserver:v1.32.2"})
        self._workload("kube-system", "Pod", f"kube-controller-manager-{NODE_NAME}", 1,
                       {"component": "kube-controller-manager", "tier": "control-plane"}, [], [], [], host_network=True,
                       extra={"command": ["kube-controller-manager", "--allocate-node-cidrs=true", f"--cluster-cidr={CLUSTER_CIDR}"],
                              "image": "registry.k8s.io/kube-controller-manager:v1.32.2"})
        kp = self.daemonset("kube-system", "kube-proxy", labels={"k8s-app": "kube-proxy"}, host_network=True)
        kp.image = "registry.k8s.io/kube-proxy:v1.32.2"
        if dns:
            self._cluster_dns(coredns_replicas)
        api = self.service("default", "kubernetes", None, [ServicePort(443, 6443, "TCP", "https")], cluster_ip=KUBERNETES_IP,
                           labels={"component": "apiserver", "provider": "kubernetes"})
        api.endpoints = [(NODE_IP, 6443)]

    def _cluster_dns(self, replicas: int) -> None:
        dns = self._workload("kube-system", "Deployment", "coredns", replicas, {"k8s-app": "kube-dns"},
                             [Port("dns", 53, "UDP"), Port("dns-tcp", 53, "TCP"), Port("metrics", 9153, "TCP")],
                             [Serve(53, "UDP", dns=True), Serve(53, "TCP", dns=True)], [])
        dns.image = "registry.k8s.io/coredns/coredns:v1.11.3"
        self.service("kube-system", "kube-dns", {"k8s-app": "kube-dns"},
                     [ServicePort(53, 53, "UDP", "dns"), ServicePort(53, 53, "TCP", "dns-tcp"), ServicePort(9153, 9153, "TCP", "metrics")],
                     cluster_ip=DNS_IP, labels={"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"})

    # --- derived -------------------------------------------------------------------------

    @property
    def pods(self) -> list[PodInfo]:
        return [p for w in self.workloads for p in w.pods]

    def _selected(self, svc: ServiceDef) -> list[PodInfo]:
        if not svc.selector:
            return []
        return [p for p in self.pods if p.namespace == svc.namespace and all(p.labels.get(k) == v for k, v in svc.selector.items())]

    @staticmethod
    def _target_port(pod: PodInfo, sp: ServicePort) -> int | None:
        if isinstance(sp.target_port, int):
            return sp.target_port
        for cp in pod.workload.ports:
            if cp.name == sp.target_port and cp.protocol == sp.protocol:
                return cp.port
        return None

    def dns_records(self) -> dict[str, list[str]]:
        rec: dict[str, list[str]] = {}
        for svc in self.services:
            fqdn = f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}"
            if svc.cluster_ip == "None":
                pods = self._selected(svc)
                rec[fqdn] = [p.ip for p in pods]
                for p in pods:
                    if p.workload.kind == "StatefulSet" and p.workload.service_name == svc.name:
                        rec[f"{p.name}.{fqdn}"] = [p.ip]
            else:
                rec[fqdn] = [svc.cluster_ip]
        rec.update(self.external_names)
        return rec

    def _resolver_cfg(self, namespace: str) -> dict:
        return {"nameserver": DNS_IP, "ndots": 5, "aaaa": True,
                "search": [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]}

    def _call_cfg(self, call: Call | Lookup, cid: str, source: str | None = None) -> dict:
        if isinstance(call, Lookup):
            return {"id": cid, "lookup": call.name, "count": call.count, "interval": call.interval}
        targets = [call.target] if isinstance(call.target, str) else list(call.target)
        for t in targets:
            try:
                _check_address(t)
            except ValueError:
                pass  # a name
        return {"id": cid, "targets": targets, "port": call.port, "protocol": call.protocol, "count": call.count,
                "interval": call.interval, "delay": call.delay, "request": call.request, "source": source}

    def _agent_cfg(self, pod: PodInfo) -> dict:
        w = pod.workload
        serve = []
        for si, s in enumerate(w.serve):
            serve.append({"port": s.port, "protocol": s.protocol, "dns": s.dns, "reply": s.reply,
                          "calls": [self._call_cfg(c, f"{pod.name}/serve{si}/{ci}") for ci, c in enumerate(s.calls)]})
        cfg = {"name": f"{pod.namespace}/{pod.name}", "serve": serve,
               "calls": [self._call_cfg(c, f"{pod.name}/{ci}") for ci, c in enumerate(w.calls)],
               "resolver": self._resolver_cfg(pod.namespace), "lifetime": self.lifetime}
        if any(s.dns for s in w.serve):
            cfg["dns_records"] = self.dns_records()
        return cfg

    def _outside_cfg(self, host: OutsideHost) -> dict:
        return {"name": f"outside/{host.ip}", "bind": host.ip, "resolver": None, "lifetime": self.lifetime,
                "serve": [{"port": s.port, "protocol": s.protocol, "reply": s.reply, "calls": []} for s in host.serve],
                "calls": [self._call_cfg(c, f"{host.ip}/{ci}", source=host.ip) for ci, c in enumerate(host.calls)]}

    # --- building ------------------------------------------------------------------------

    def _netns(self, role: str) -> str:
        name = f"{self.run_id}-{role}"
        _run([_IP, "netns", "add", name])
        self._created_netns.append(name)
        self._sysctl(name, {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        _run([_IP, "-n", name, "link", "set", "lo", "up"])
        return name

    @staticmethod
    def _sysctl(ns: str, values: dict[str, int]) -> None:
        script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
        _run([_IP, "netns", "exec", ns, "sh", "-c", script])

    def __enter__(self) -> TestBed:
        self.build()
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def build(self) -> None:
        """Create the namespaces, links, routes and Services, and start every agent (servers
        listen; clients wait for `run`). Tears down what it made if anything fails."""
        why = can_run()
        if why:
            raise TestBedError(f"cannot build a test bed: {why}")
        if self.built:
            return
        self.built = True
        _LIVE.add(self)
        try:
            self.created_at = datetime.now(timezone.utc).replace(microsecond=0)
            self._tmp = Path(_tmpdir()) / self.run_id
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._build_network()
            self._start_agents()
        except BaseException:
            self.teardown()
            raise

    def _build_network(self) -> None:
        node = self.node_ns = self._netns("node")
        self._sysctl(node, {"net.ipv4.ip_forward": 1, "net.ipv4.igmp_link_local_mcast_reports": 0,
                            "net.ipv4.conf.all.send_redirects": 0,
                            "net.ipv4.conf.default.send_redirects": 0, "net.ipv4.conf.all.rp_filter": 0,
                            "net.ipv4.conf.default.rp_filter": 0})
        out = self.outside_ns = self._netns("out")
        _run([_IP, "-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", out])
        _run([_IP, "-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "eth0"])
        _run([_IP, "-n", node, "link", "set", "eth0", "multicast", "off", "up"])
        _run([_IP, "-n", out, "addr", "add", f"{GATEWAY_IP}/24", "dev", "eth0"])
        _run([_IP, "-n", out, "link", "set", "eth0", "multicast", "off", "up"])
        for host in self.outside_hosts:
            _run([_IP, "-n", out, "addr", "add", f"{host.ip}/32", "dev", "lo"])
        _run([_IP, "-n", node, "route", "add", OUTSIDE_CIDR, "via", GATEWAY_IP])
        _run([_IP, "-n", node, "link", "add", "cni0", "type", "bridge", "mcast_snooping", "0"])
        _run([_IP, "-n", node, "addr", "add", f"{BRIDGE_IP}/24", "dev", "cni0"])
        _run([_IP, "-n", node, "link", "set", "cni0", "multicast", "off", "up"])
        for i, pod in enumerate(p for p in self.pods if not p.host_network):
            pod.netns = self._netns(f"p{i}")
            pod.veth = "veth" + hashlib.sha256(f"{pod.namespace}/{pod.name}".encode()).hexdigest()[:8]
            _run([_IP, "-n", node, "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
            _run([_IP, "-n", node, "link", "set", pod.veth, "master", "cni0", "multicast", "off", "up"])
            _run([_IP, "-n", pod.netns, "addr", "add", f"{pod.ip}/32", "dev", "eth0"])
            _run([_IP, "-n", pod.netns, "link", "set", "eth0", "multicast", "off", "up"])
            _run([_IP, "-n", pod.netns, "route", "add", BRIDGE_IP, "dev", "eth0", "scope", "link"])
            _run([_IP, "-n", pod.netns, "route", "add", "default", "via", BRIDGE_IP, "dev", "eth0"])
        for pod in self.pods:
            if pod.host_network:
                pod.netns = node
        _run([_IP, "netns", "exec", node, _tool("nft"), "-f", "-"], input=self.nft_ruleset())

    def nft_ruleset(self) -> str:
        """kube-proxy's job in nftables: DNAT of every Service port with endpoints (round robin),
        NodePorts on the node's addresses, masquerade of pod egress and of NodePort traffic with
        externalTrafficPolicy Cluster."""
        rules, chains = [], []
        for svc in self.services:
            for sp in svc.ports:
                if svc.selector:
                    backends = [(p.ip, self._target_port(p, sp)) for p in self._selected(svc) if not p.host_network]
                    backends = [(ip, port) for ip, port in backends if port]
                else:
                    backends = list(svc.endpoints)
                if not backends:
                    continue
                proto = sp.protocol.lower()
                chain = "svc-" + hashlib.sha256(f"{svc.namespace}/{svc.name}/{sp.protocol}/{sp.port}".encode()).hexdigest()[:12]
                mapping = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(backends))
                chains.append(f"  chain {chain} {{\n    meta l4proto {proto} dnat ip to numgen inc mod {len(backends)} map {{ {mapping} }}\n  }}")
                if svc.cluster_ip and svc.cluster_ip != "None":
                    rules.append(f"    ip daddr {svc.cluster_ip} {proto} dport {sp.port} jump {chain}  # {svc.namespace}/{svc.name}:{sp.port}")
                if sp.node_port and svc.type in ("NodePort", "LoadBalancer"):
                    mark = f"meta mark set meta mark | {MASQ_MARK:#x} " if svc.external_traffic_policy == "Cluster" else ""
                    rules.append(f"    fib daddr type local {proto} dport {sp.node_port} {mark}jump {chain}  # nodePort of {svc.namespace}/{svc.name}")
        body = "\n".join(rules)
        return (
            "table ip kube-proxy {\n"
            f"  chain services {{\n{body}\n  }}\n"
            + "\n".join(chains) + "\n"
            "  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n"
            "  chain output { type nat hook output priority -100; policy accept; jump services; }\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f"    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n"
            f"    ip saddr {CLUSTER_CIDR} ip daddr != {CLUSTER_CIDR} oifname \"eth0\" masquerade\n"
            "  }\n"
            "}\n"
        )

    def _spawn(self, key: str, netns: str, cfg: dict) -> None:
        path = self._tmp / (hashlib.sha256(key.encode()).hexdigest()[:12] + ".json")
        path.write_text(json.dumps(cfg, indent=1))
        proc = subprocess.Popen(
            [_IP, "netns", "exec", netns, sys.executable, "-u", str(Path(__file__).resolve()), "agent", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self._procs.append((key, proc))
        threading.Thread(target=self._reader, args=(key, proc), daemon=True).start()

    def _reader(self, key: str, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["agent"] = key
            with self._events_lock:
                self._events.append(event)
                if event.get("event") == "ready":
                    self._ready.add(key)
                elif event.get("event") == "done":
                    self._done.add(key)
        rc = proc.wait()
        with self._events_lock:
            if key not in self._done and not getattr(self, "_stopping", False):
                err = proc.stderr.read() if proc.stderr else ""
                self._events.append({"event": "agent-exit", "agent": key, "rc": rc, "stderr": err[-2000:]})
                self._done.add(key)

    def _start_agents(self) -> None:
        for pod in self.pods:
            if pod.host_network and not (pod.workload.serve or pod.workload.calls):
                continue  # the static pods and kube-proxy only exist in the inventory
            self._spawn(f"{pod.namespace}/{pod.name}", pod.netns, self._agent_cfg(pod))
        for host in self.outside_hosts:
            self._spawn(f"outside:{host.ip}", self.outside_ns, self._outside_cfg(host))
        self._wait(lambda: self._ready | {e["agent"] for e in self._events if e.get("event") == "agent-exit"} >= {k for k, _ in self._procs},
                   30, "agents to listen")
        exited = [e for e in self._events if e.get("event") == "agent-exit"]
        if exited:
            raise TestBedError(f"agents failed to start: {exited}")

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._events_lock:
                if cond():
                    return
            if time.monotonic() > deadline:
                raise TestBedError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.05)

    # --- running -------------------------------------------------------------------------

    def run(self, capture: str | os.PathLike | None = None, *, timeout: float = 60, settle: float = 0.5) -> RunResult:
        """Start tcpdump (when capturing), let every client loop run to its end, stop the capture."""
        if not self.built:
            raise TestBedError("build the bed first (use it as a context manager)")
        cap_path = Path(capture).resolve() if capture else None
        if cap_path:
            if _which("tcpdump") is None:
                raise TestBedError("tcpdump is not installed (apt-get install -y tcpdump)")
            cap_path.parent.mkdir(parents=True, exist_ok=True)
            self._start_capture(cap_path)
        started = datetime.now(timezone.utc)
        for _key, proc in self._procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        self._wait(lambda: self._done >= {k for k, _ in self._procs}, timeout, "the clients to finish")
        time.sleep(settle)
        stopped = datetime.now(timezone.utc)
        said = self._stop_capture() if cap_path else ""
        with self._events_lock:
            events = list(self._events)
        result = RunResult(events, cap_path, started, stopped, said.strip())
        if cap_path:
            m = re.search(r"(\d+) packets? dropped by kernel", said)
            if m is None or int(m.group(1)):
                raise TestBedError(f"tcpdump lost packets or did not report: {said.strip()}")
        return result

    def _start_capture(self, path: Path) -> None:
        # --immediate-mode: without it libpcap hands packets over a ring block at a time and the
        # last ones are lost when tcpdump is stopped. In immediate mode every ring frame is as
        # large as the snap length, so with the default 262144 bytes a 2 MiB buffer holds eight
        # packets and a burst (every pod asking DNS at once) is dropped by the kernel: hence a
        # snap length of 4096 (the bed's packets are far smaller; veth MTU 1500) and 16 MiB.
        # -U: write each packet at once. -Z root: tcpdump would otherwise switch to user
        # tcpdump before writing the file.
        self._capture = subprocess.Popen(
            [_IP, "netns", "exec", self.node_ns, _tool("tcpdump"), "-i", "any", "-n", "--immediate-mode", "-s", str(CAPTURE_SNAPLEN),
             "-B", "16384", "-U", "-Z", "root", "-w", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        fd = self._capture.stderr.fileno()
        deadline = time.monotonic() + 10
        said = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                said += chunk
                if b"listening on" in said:
                    # Keep draining tcpdump's stderr so it can never block on a full pipe.
                    self._capture_said = [said]
                    self._capture_drain = threading.Thread(target=self._drain, args=(self._capture, self._capture_said), daemon=True)
                    self._capture_drain.start()
                    time.sleep(0.3)
                    return
                if not chunk:
                    break
            if self._capture.poll() is not None:
                break
        raise TestBedError(f"tcpdump did not start: {said.decode(errors='replace').strip()}")

    @staticmethod
    def _drain(proc: subprocess.Popen, said: list[bytes]) -> None:
        try:
            while chunk := os.read(proc.stderr.fileno(), 4096):
                said.append(chunk)
        except OSError:
            pass

    def _stop_capture(self) -> str:
        """Stop tcpdump; what it said (its statistics)."""
        if self._capture is None:
            return ""
        if self._capture.poll() is None:
            self._capture.send_signal(signal.SIGINT)
            try:
                self._capture.wait(10)
            except subprocess.TimeoutExpired:
                self._capture.kill()
                self._capture.wait()
        drain = getattr(self, "_capture_drain", None)
        if drain is not None:
            drain.join(5)
        self._capture = None
        return b"".join(getattr(self, "_capture_said", [])).decode(errors="replace")

    # --- tearing down --------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop every process the bed started and delete its namespaces. Safe to call twice."""
        self._stopping = True
        try:
            self._stop_capture()
        except Exception:  # noqa: BLE001 - teardown goes on regardless
            pass
        for _key, proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for _key, proc in self._procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in reversed(self._created_netns):
            # Anything still running in a namespace of this bed was started by it.
            for pid in _run([_IP, "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run([_IP, "netns", "del", ns], check=False)
        self._created_netns = []
        if self._tmp and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        _LIVE.discard(self)

    def leftover_namespaces(self) -> list[str]:
        return [n for n in list_namespaces() if n.startswith(self.run_id + "-")]

    # --- pods that talk over the bridge -----------------------------------------------------

    def bridged(self, a: PodInfo, b: PodInfo) -> _Bridged:
        """A context manager in which pods ``a`` and ``b`` reach each other's address over the
        link, through ``cni0`` as a switch, rather than routed by the node: an on-link /32 route
        each way, so each asks ARP for the other and sends straight to its MAC address (as pods
        of a bridge CNI with a shared subnet do). The node's IP stack and nftables never see
        that traffic. The routes go again on exit.

            with bed.bridged(client, server):
                ...  # client -> server.ip is bridged
        """
        if a.host_network or b.host_network:
            raise TestBedError("host-network pods are not on the bridge")
        return _Bridged(a, b)

    def link_promiscuity(self, link: str, netns: str | None = None) -> int:
        """The kernel's promiscuity count of ``link`` (in the node namespace unless ``netns``):
        how many asked for promiscuous mode (packet sockets, tcpdump), as ``ip -d link`` shows."""
        out = _run([_IP, "-d", "-n", netns or self.node_ns, "link", "show", "dev", link]).stdout
        found = re.search(r"\bpromiscuity (\d+)", out)
        if found is None:
            raise TestBedError(f"no promiscuity count in ip -d link show {link}: {out!r}")
        return int(found.group(1))

    # --- the truth: who talks to whom, from the declarations ------------------------------

    def _peer_of_address(self, ip: str, port: int, protocol: str) -> list[tuple[str, int]]:
        """What a client reaches at ip:port: (peer, server port)."""
        for svc in self.services:
            sp = None
            if svc.cluster_ip == ip:
                sp = next((p for p in svc.ports if p.port == port and p.protocol == protocol), None)
            elif ip == NODE_IP and svc.type in ("NodePort", "LoadBalancer"):
                sp = next((p for p in svc.ports if p.node_port == port and p.protocol == protocol), None)
            if sp is not None:
                out = []
                for pod in self._selected(svc):
                    tp = self._target_port(pod, sp)
                    if tp:
                        out.append((pod.workload.ref, tp))
                return out
        for pod in self.pods:
            if pod.ip == ip and not pod.host_network:
                return [(pod.workload.ref, port)]
        if ipaddress.ip_address(ip) in ipaddress.ip_network(OUTSIDE_CIDR):
            return [(f"outside:{ip}", port)]
        raise TestBedError(f"nothing at {ip}:{port}")

    def _names_resolved(self, name: str, namespace: str) -> tuple[list[str], list[str]]:
        """(addresses, DNS transports) for a name a pod of `namespace` resolves."""
        records = self.dns_records()
        r = StubResolver(DNS_IP, self._resolver_cfg(namespace)["search"])
        transports = {"UDP"}
        for cand in r.candidates(name):
            q = dns_query(cand, "A", 1)
            if len(dns_response(q, records, udp=False)) > UDP_LIMIT:
                transports.add("TCP")
            if records.get(cand):
                return records[cand], sorted(transports)
        raise TestBedError(f"{name} does not resolve in {namespace}")

    def truth(self) -> list[dict]:
        """Every (from, to, protocol, port) the declared clients produce, from the declarations
        alone (no capture): the expected connections of a scenario."""
        dns_ref = next((w.ref for w in self.workloads if w.namespace == "kube-system" and w.name == "coredns"), "no-cluster-dns")
        edges = set()

        def add_call(frm: str, namespace: str | None, call):
            if isinstance(call, Lookup):
                _addrs, transports = self._names_resolved(call.name, namespace)
                for t in transports:
                    edges.add((frm, dns_ref, t, 53))
                return
            targets = [call.target] if isinstance(call.target, str) else call.target
            for t in targets:
                try:
                    ipaddress.ip_address(t)
                    addrs = [t]
                except ValueError:
                    addrs, transports = self._names_resolved(t, namespace)
                    for tr in transports:
                        edges.add((frm, dns_ref, tr, 53))
                    addrs = addrs[:1]  # the client connects to the first address
                for a in addrs:
                    for peer, port in self._peer_of_address(a, call.port, call.protocol):
                        edges.add((frm, peer, call.protocol, port))

        for w in self.workloads:
            for c in w.calls:
                add_call(w.ref, w.namespace, c)
            for s in w.serve:
                for c in s.calls:
                    add_call(w.ref, w.namespace, c)
        for host in self.outside_hosts:
            for c in host.calls:
                add_call(f"outside:{host.ip}", None, c)
        return [{"from": f, "to": t, "protocol": p, "port": port} for f, t, p, port in sorted(edges)]

    # --- the inventory -------------------------------------------------------------------

    def inventory(self, snapshot_time: datetime | None = None) -> dict:
        """The bed as `kubectl get ns,nodes,pods,services,endpointslices,replicasets,deployments,
        statefulsets,daemonsets -A -o yaml` would print it, stamped with the snapshot time."""
        return _Inventory(self).build(snapshot_time or datetime.now(timezone.utc))

    def write_inventory(self, path: str | os.PathLike, snapshot_time: datetime | None = None) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.inventory(snapshot_time), sort_keys=True, default_flow_style=False))
        return path


class _Bridged:
    """See ``TestBed.bridged``."""

    def __init__(self, a: PodInfo, b: PodInfo):
        self.pairs = [(a, b), (b, a)]

    def __enter__(self) -> _Bridged:
        done = []
        try:
            for pod, peer in self.pairs:
                _run([_IP, "-n", pod.netns, "route", "add", f"{peer.ip}/32", "dev", "eth0", "scope", "link"])
                done.append((pod, peer))
        except BaseException:
            self._remove(done)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove(self.pairs)

    @staticmethod
    def _remove(pairs) -> None:
        for pod, peer in pairs:
            _run([_IP, "-n", pod.netns, "route", "del", f"{peer.ip}/32", "dev", "eth0", "scope", "link"], check=False)


def _tmpdir() -> str:
    return os.environ.get("TMPDIR", "/tmp")


class _Inventory:
    """kubectl-format objects of a bed."""

    def __init__(self, bed: TestBed):
        self.bed = bed
        t0 = bed.created_at or datetime.now(timezone.utc).replace(microsecond=0)
        self.t_cluster = t0 - timedelta(minutes=30)  # the cluster came up earlier
        self.t_apps = t0 - timedelta(seconds=2)  # workloads created just before their pods started
        self.t_pods = t0
        self.rv = 1000

    def _rv(self) -> str:
        self.rv += 7
        return str(self.rv)

    def meta(self, kind: str, name: str, namespace: str | None, created: datetime, labels: dict | None = None,
             owner: tuple[str, str, str] | None = None, **extra) -> dict:
        m: dict = {"creationTimestamp": _rfc3339(created), "name": name, "resourceVersion": self._rv(),
                   "uid": _uid(kind, namespace or "", name)}
        if namespace is not None:
            m["namespace"] = namespace
        if labels:
            m["labels"] = dict(labels)
        if owner:
            okind, oname, api = owner
            m["ownerReferences"] = [{"apiVersion": api, "blockOwnerDeletion": True, "controller": True, "kind": okind,
                                     "name": oname, "uid": _uid(okind, "" if okind == "Node" else (namespace or ""), oname)}]
        m.update(extra)
        return m

    def build(self, snapshot_time: datetime) -> dict:
        bed = self.bed
        items: list[dict] = []
        for ns in bed.namespaces:
            items.append({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": self.meta("Namespace", ns, None, self.t_cluster if ns.startswith(("kube-", "default")) else self.t_apps,
                                                {"kubernetes.io/metadata.name": ns, **bed.namespace_labels.get(ns, {})}),
                          "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        items.append(self.node())
        for pod in bed.pods:
            items.append(self.pod(pod))
        for svc in bed.services:
            items.append(self.service(svc))
        for svc in bed.services:
            items.append(self.endpoint_slice(svc))
        for w in bed.workloads:
            items.extend(self.workload(w))
        order = {k: i for i, k in enumerate(["Namespace", "Node", "Pod", "Service", "EndpointSlice", "ReplicaSet",
                                              "Deployment", "StatefulSet", "DaemonSet"])}
        items.sort(key=lambda o: order[o["kind"]])
        return {"apiVersion": "v1", "items": items, "kind": "List",
                "metadata": {"annotations": {SNAPSHOT_ANNOTATION: snapshot_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                             "resourceVersion": ""}}

    def node(self) -> dict:
        t = self.t_cluster
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": self.meta("Node", NODE_NAME, None, t, {
                "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""},
                annotations={"node.alpha.kubernetes.io/ttl": "0"}),
            "spec": {"podCIDR": POD_CIDR, "podCIDRs": [POD_CIDR], "providerID": f"kind://docker/kind/{NODE_NAME}"},
            "status": {
                "addresses": [{"address": NODE_IP, "type": "InternalIP"}, {"address": NODE_NAME, "type": "Hostname"}],
                "conditions": [{"lastHeartbeatTime": _rfc3339(self.t_pods), "lastTransitionTime": _rfc3339(t + timedelta(seconds=25)),
                                "message": "kubelet is posting ready status", "reason": "KubeletReady", "status": "True", "type": "Ready"}],
                "nodeInfo": {"architecture": "amd64", "containerRuntimeVersion": "containerd://2.0.2", "kernelVersion": os.uname().release,
                             "kubeProxyVersion": "v1.32.2", "kubeletVersion": "v1.32.2", "operatingSystem": "linux",
                             "osImage": "Debian GNU/Linux 12 (bookworm)"},
            },
        }

    def _container(self, w: Workload) -> dict:
        c: dict = {"image": w.extra.get("image", w.image), "imagePullPolicy": "IfNotPresent", "name": w.name if w.kind != "Pod" else w.labels.get("component", w.name)}
        if w.extra.get("command"):
            c["command"] = list(w.extra["command"])
        if w.ports:
            c["ports"] = [{"containerPort": p.port, **({"name": p.name} if p.name else {}), "protocol": p.protocol} for p in w.ports]
        c["resources"] = {}
        c["terminationMessagePath"] = "/dev/termination-log"
        c["terminationMessagePolicy"] = "File"
        return c

    def _pod_spec(self, w: Workload) -> dict:
        spec = {"containers": [self._container(w)], "dnsPolicy": "ClusterFirst", "enableServiceLinks": True,
                "restartPolicy": "Always", "schedulerName": "default-scheduler", "securityContext": {},
                "serviceAccountName": "default", "terminationGracePeriodSeconds": 30}
        if w.host_network:
            spec["hostNetwork"] = True
            spec["dnsPolicy"] = "ClusterFirstWithHostNet"
        return spec

    def pod(self, p: PodInfo) -> dict:
        w = p.workload
        system = w.namespace == "kube-system" and w.host_network
        created = self.t_cluster + timedelta(seconds=5) if system else self.t_pods
        owner = {"Deployment": ("ReplicaSet", f"{w.name}-{p.labels.get('pod-template-hash')}", "apps/v1"),
                 "StatefulSet": ("StatefulSet", w.name, "apps/v1"), "DaemonSet": ("DaemonSet", w.name, "apps/v1"),
                 "Pod": ("Node", NODE_NAME, "v1")}[w.kind]
        extra = {}
        if w.kind != "Pod" and w.kind != "StatefulSet":
            extra["generateName"] = p.name.rsplit("-", 1)[0] + "-"
        elif w.kind == "StatefulSet":
            extra["generateName"] = f"{w.name}-"
        if w.kind == "Pod":
            extra["annotations"] = {"kubernetes.io/config.source": "file"}
        meta = self.meta("Pod", p.name, p.namespace, created, p.labels, owner, **extra)
        spec = self._pod_spec(w)
        spec["nodeName"] = NODE_NAME
        if w.kind == "StatefulSet":
            spec["hostname"] = p.name
            spec["subdomain"] = w.service_name
        t = _rfc3339(created)
        container = spec["containers"][0]
        status = {
            "conditions": [{"lastProbeTime": None, "lastTransitionTime": t, "status": "True", "type": c}
                           for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [{"containerID": "containerd://" + hashlib.sha256(p.uid.encode()).hexdigest(),
                                   "image": container["image"], "imageID": "", "lastState": {}, "name": container["name"],
                                   "ready": True, "restartCount": 0, "started": True,
                                   "state": {"running": {"startedAt": t}}}],
            "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}], "phase": "Running",
            "podIP": p.ip, "podIPs": [{"ip": p.ip}], "qosClass": "BestEffort", "startTime": t,
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}

    def service(self, svc: ServiceDef) -> dict:
        created = self.t_cluster if svc.namespace in ("kube-system", "default") else self.t_apps
        ports = []
        for sp in svc.ports:
            p: dict = {}
            if sp.name:
                p["name"] = sp.name
            if sp.node_port:
                p["nodePort"] = sp.node_port
            p.update({"port": sp.port, "protocol": sp.protocol, "targetPort": sp.target_port})
            ports.append(p)
        spec: dict = {"clusterIP": svc.cluster_ip, "clusterIPs": [svc.cluster_ip], "internalTrafficPolicy": "Cluster",
                      "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": ports, "sessionAffinity": "None",
                      "type": svc.type}
        if svc.selector:
            spec["selector"] = dict(svc.selector)
        if svc.type in ("NodePort", "LoadBalancer"):
            spec["externalTrafficPolicy"] = svc.external_traffic_policy
        return {"apiVersion": "v1", "kind": "Service", "metadata": self.meta("Service", svc.name, svc.namespace, created, svc.labels),
                "spec": spec, "status": {"loadBalancer": {}}}

    def endpoint_slice(self, svc: ServiceDef) -> dict:
        created = self.t_cluster if svc.namespace in ("kube-system", "default") else self.t_apps
        name = svc.name if not svc.selector else f"{svc.name}-{_suffix(f'eps/{svc.namespace}/{svc.name}', 5)}"
        endpoints, ports = [], []
        if svc.selector:
            pods = [p for p in self.bed._selected(svc) if not p.host_network]
            for p in pods:
                endpoints.append({"addresses": [p.ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                                  "nodeName": NODE_NAME,
                                  "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": p.uid}})
            for sp in svc.ports:
                numbers = {self.bed._target_port(p, sp) for p in pods} - {None}
                ports.append({"name": sp.name or "", "port": min(numbers) if numbers else None, "protocol": sp.protocol})
            labels = {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                      "kubernetes.io/service-name": svc.name, **svc.labels}
            if svc.cluster_ip == "None":
                labels["service.kubernetes.io/headless"] = ""
            meta = self.meta("EndpointSlice", name, svc.namespace, created, labels, ("Service", svc.name, "v1"),
                             generateName=f"{svc.name}-", generation=1,
                             annotations={"endpoints.kubernetes.io/last-change-trigger-time": _rfc3339(self.t_pods)})
        else:
            for ip, _port in svc.endpoints:
                endpoints.append({"addresses": [ip], "conditions": {"ready": True}})
            ports = [{"name": sp.name or "", "port": svc.endpoints[0][1], "protocol": sp.protocol} for sp in svc.ports]
            meta = self.meta("EndpointSlice", name, svc.namespace, created, {"kubernetes.io/service-name": svc.name}, generation=1)
        return {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "endpoints": endpoints, "kind": "EndpointSlice",
                "metadata": meta, "ports": ports}

    def workload(self, w: Workload) -> list[dict]:
        if w.kind == "Pod":
            return []
        created = self.t_cluster if w.namespace == "kube-system" else self.t_apps
        template = {"metadata": {"creationTimestamp": None, "labels": dict(w.labels)}, "spec": self._pod_spec(w)}
        n = len(w.pods)
        if w.kind == "Deployment":
            h = w.pods[0].labels["pod-template-hash"]
            rs_labels = {**w.labels, "pod-template-hash": h}
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": self.meta("ReplicaSet", f"{w.name}-{h}", w.namespace, created, rs_labels,
                                        ("Deployment", w.name, "apps/v1"), generation=1,
                                        annotations={"deployment.kubernetes.io/desired-replicas": str(n),
                                                     "deployment.kubernetes.io/max-replicas": str(n + 1),
                                                     "deployment.kubernetes.io/revision": "1"}),
                  "spec": {"replicas": n, "selector": {"matchLabels": rs_labels},
                           "template": {**template, "metadata": {"creationTimestamp": None, "labels": rs_labels}}},
                  "status": {"availableReplicas": n, "fullyLabeledReplicas": n, "observedGeneration": 1,
                             "readyReplicas": n, "replicas": n}}
            dep = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": self.meta("Deployment", w.name, w.namespace, created, w.labels, generation=1,
                                         annotations={"deployment.kubernetes.io/revision": "1"}),
                   "spec": {"progressDeadlineSeconds": 600, "replicas": n, "revisionHistoryLimit": 10,
                            "selector": {"matchLabels": dict(w.labels)},
                            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
                            "template": template},
                   "status": {"availableReplicas": n, "observedGeneration": 1, "readyReplicas": n, "replicas": n,
                              "updatedReplicas": n}}
            return [rs, dep]
        if w.kind == "StatefulSet":
            rev = w.pods[0].labels["controller-revision-hash"]
            return [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                     "metadata": self.meta("StatefulSet", w.name, w.namespace, created, w.labels, generation=1),
                     "spec": {"podManagementPolicy": "OrderedReady", "replicas": n, "revisionHistoryLimit": 10,
                              "selector": {"matchLabels": dict(w.labels)}, "serviceName": w.service_name,
                              "template": template, "updateStrategy": {"rollingUpdate": {"partition": 0}, "type": "RollingUpdate"}},
                     "status": {"availableReplicas": n, "collisionCount": 0, "currentReplicas": n, "currentRevision": rev,
                                "observedGeneration": 1, "readyReplicas": n, "replicas": n, "updateRevision": rev,
                                "updatedReplicas": n}}]
        if w.kind == "DaemonSet":
            return [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                     "metadata": self.meta("DaemonSet", w.name, w.namespace, created, w.labels, generation=1,
                                           annotations={"deprecated.daemonset.template.generation": "1"}),
                     "spec": {"revisionHistoryLimit": 10, "selector": {"matchLabels": dict(w.labels)}, "template": template,
                              "updateStrategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}, "type": "RollingUpdate"}},
                     "status": {"currentNumberScheduled": n, "desiredNumberScheduled": n, "numberAvailable": n,
                                "numberMisscheduled": 0, "numberReady": n, "observedGeneration": 1, "updatedNumberScheduled": n}}]
        raise TestBedError(f"unknown workload kind {w.kind}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "agent":
        sys.exit(agent_main(sys.argv[2:]))
    print(f"usage: {sys.argv[0]} agent CONFIG.json  (started by TestBed, inside a pod's namespace)", file=sys.stderr)
    sys.exit(2)
