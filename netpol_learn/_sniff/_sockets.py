"""The socket-table scan: TCP connections that were open before the sniffer started.

The kernel filter keeps only the SYN, FIN and RST segments of TCP, so a connection opened before
the sniffer started and still open is invisible to the packet path. At the start and then once an
interval the sniffer reads the TCP socket tables of the node's network namespaces from a proc
root (docs/sniffer.md, "Connections open before the start"):

    SocketScanner.scan()   ->  Scan: per network namespace, its addresses and its LISTEN and
                               ESTABLISHED sockets (``net/tcp``, ``net/tcp6``, ``net/fib_trie``,
                               ``net/if_inet6`` of one of its processes)
    connections(scan)      ->  ScannedConnection per connection: the sockets of its two ends (and
                               the two views of a connection through DNAT) joined, its client and
                               server decided by the LISTEN sockets, else by the ports
    SocketState.segment()  ->  a flow line (evidence ``socket-scan``) for each connection the
                               packet path did not see open (no SYN of it in this run), once while
                               it stays open; and ``correct``: a segment's heuristic flows that a
                               LISTEN socket shows the wrong way round, reversed

``opened_keys`` gives the keys of the connections whose SYN the packet path saw; ``socket_keys``
the same keys of scanned sockets (a 64-bit hash of the protocol and the two ends, either order).
The sniffer's own network namespace (the host's, in the DaemonSet) is read for its LISTEN sockets
and addresses only: the node's own connections are not pod traffic, and those with a pod are
found from the pod's side.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from netpol_learn._capture import OK, Packets, decide_direction, mix
from netpol_learn._errors import SniffError
from netpol_learn._flowlog import DIRECTION_METHODS, HEURISTIC_METHODS, Flow, Translation

Endpoint = tuple[str, int]  # (address, port); IPv4-mapped IPv6 addresses as IPv4
Warn = Callable[[str], None]

TCP = 6
ESTABLISHED, LISTEN = b"01", b"0A"  # the ``st`` column (include/net/tcp_states.h)
WILDCARDS = ("0.0.0.0", "::")
_SYN = 0x02  # the TCP header's SYN flag
_GONE = (errno.ENOENT, errno.ESRCH)  # the process exited
_HEURISTIC = DIRECTION_METHODS.index("port-heuristic")


# --- reading the tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class NetNamespace:
    """What one network namespace's tables held when they were read."""

    id: tuple  # ("tcp", st_dev, st_ino) of its net/tcp: one such file per network namespace
    pid: int  # the process whose tables were read
    read_at: int  # ns since the epoch
    own: bool  # the sniffer's own network namespace: its LISTEN sockets and addresses only
    addresses: frozenset[str]  # its local addresses (fib_trie LOCAL, if_inet6, its sockets'), loopback left out
    listening: frozenset[Endpoint]  # LISTEN sockets; the address may be a wildcard (WILDCARDS)
    established: tuple[tuple[Endpoint, Endpoint], ...]  # (local, remote), loopback left out; empty when own


@dataclass(frozen=True)
class Scan:
    """One scan of every network namespace under the proc root."""

    started: int  # ns since the epoch
    finished: int
    namespaces: tuple[NetNamespace, ...]
    unreadable: frozenset = frozenset()  # ids of namespaces whose tables could not be read

    @property
    def seconds(self) -> float:
        """How long it took."""
        return (self.finished - self.started) / 1e9


class _Vanished(Exception):
    """The process exited while its tables were being read."""


class SocketScanner:
    """Reads the TCP socket tables of every network namespace of the processes under ``proc``
    (``/proc``; the host's ``/proc`` mounted at ``/host/proc`` in the DaemonSet).

    The processes are grouped by network namespace (the inode ``ns/net`` names; where that link
    cannot be read, which takes CAP_SYS_PTRACE for most processes, by the inode of ``net/tcp``,
    which is one per network namespace) and one process of each is read (the next one when a
    process exits meanwhile). A table that cannot be read (no permission) is counted in the scan's
    ``unreadable`` and warned about once per scanner; a namespace whose processes all exit during
    the scan is gone, and left out; a scan never fails."""

    def __init__(self, proc: str = "/proc", warn: Warn | None = None):
        self.proc = proc.rstrip("/") or "/"
        self.warn = warn or (lambda message: None)
        self.warned = False
        self._addresses: dict[bytes, str] = {}

    def check(self) -> None:
        """``SniffError`` unless the proc root can be listed and holds processes."""
        try:
            names = os.listdir(self.proc)
        except OSError as exc:
            raise SniffError(f"--proc {self.proc}: cannot list it ({exc.strerror or exc})") from exc
        if not any(n.isdigit() for n in names):
            raise SniffError(f"--proc {self.proc}: no process directories in it (not a proc file system)")

    def scan(self) -> Scan:
        """Read every network namespace's tables once."""
        started = time.time_ns()
        groups: dict[tuple, list[int]] = {}
        try:
            names = os.listdir(self.proc)
        except OSError as exc:
            self._warn_once(f"socket scan: cannot list {self.proc} ({exc.strerror or exc})")
            names = []
        for pid in sorted(int(n) for n in names if n.isdigit()):
            key = self._key(str(pid))
            if key is not None:
                groups.setdefault(key, []).append(pid)
        own = self._identity("self")
        namespaces: list[NetNamespace] = []
        unreadable: set[tuple] = set()
        seen: set[tuple] = set()  # identities read: one namespace under two keys is read once
        for key, pids in groups.items():
            ns = self._read_namespace(pids, own, seen)
            if ns is None:
                unreadable.add(self._identity(str(pids[0])) or key)
            elif ns is not False:
                namespaces.append(ns)
        return Scan(started, time.time_ns(), tuple(namespaces), frozenset(unreadable))

    def _key(self, pid: str) -> tuple | None:
        """What groups the processes: the network namespace ``ns/net`` names, else the identity
        of its ``net/tcp``; None when the process is gone."""
        try:
            return ("net", os.readlink(f"{self.proc}/{pid}/ns/net"))
        except OSError:
            pass  # EACCES without CAP_SYS_PTRACE, or gone
        return self._identity(pid)

    def _identity(self, pid: str) -> tuple | None:
        """A network namespace's identity, whoever looks: the device and inode of its
        ``net/tcp`` (one such file per namespace); None when it cannot be found."""
        try:
            st = os.stat(f"{self.proc}/{pid}/net/tcp")
        except OSError:
            return None
        return ("tcp", st.st_dev, st.st_ino)

    def _warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            self.warn(message)

    def _read_namespace(self, pids: list[int], own: tuple | None, seen: set) -> NetNamespace | None | bool:
        """The namespace's tables, read from the first of ``pids`` that can be read; None when
        they cannot be read; False when it is a namespace already read (under another key), or
        when all its processes exited before they could be read."""
        problem = None
        for pid in pids:
            base = f"{self.proc}/{pid}/net"
            try:
                with open(f"{base}/tcp", "rb", buffering=0) as fh:
                    st = os.fstat(fh.fileno())
                    identity = ("tcp", st.st_dev, st.st_ino)
                    if identity in seen:
                        return False
                    # A table costs the kernel a walk of the whole TCP hash table (milliseconds):
                    # none for a family without sockets in this namespace.
                    v4, v6 = _in_use(self._optional(f"{base}/sockstat")), _in_use(self._optional(f"{base}/sockstat6"))
                    tcp = fh.read() if v4 is None or v4.get("TCP", 1) else b""
                read_at = time.time_ns()
                tcp6 = self._optional(f"{base}/tcp6") if v6 is None or v6.get("TCP6", 1) else b""
                fib = self._optional(f"{base}/fib_trie")
                inet6 = self._optional(f"{base}/if_inet6")
            except _Vanished:
                continue
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                problem = f"{exc.filename or f'{base}/tcp'}: {exc.strerror or exc}"
                break
            seen.add(identity)
            return self._namespace(identity, pid, read_at, identity == own, tcp, tcp6, fib, inet6)
        if problem is None:
            return False  # every process of it exited meanwhile: it is gone, and its connections with it
        self._warn_once(f"socket scan: cannot read {problem}; connections open before the sniffer started may be "
                        "missed there (counted in socket_unreadable)")
        return None

    def _optional(self, path: str) -> bytes:
        """A table that may be missing (no IPv6 in the kernel): empty then; ``_Vanished`` when its
        process exited meanwhile."""
        try:
            with open(path, "rb", buffering=0) as fh:
                return fh.read()
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            if not os.path.exists(os.path.join(os.path.dirname(path), "tcp")):
                raise _Vanished from exc
            return b""

    def _namespace(self, key, pid, read_at, own, tcp, tcp6, fib, inet6) -> NetNamespace:
        if len(self._addresses) > 65536:
            self._addresses.clear()  # the addresses' text, cached: bounded over a run of days
        listening: set[Endpoint] = set()
        established: list[tuple[Endpoint, Endpoint]] = []
        for data, v6 in ((tcp, False), (tcp6, True)):
            lis, est = parse_tcp_table(data, v6, established=not own, names=self._addresses)
            listening.update(lis)
            established.extend(est)
        addresses = set(parse_fib_trie(fib)) | set(parse_if_inet6(inet6))
        addresses.update(local[0] for local, _ in established)
        addresses.update(a for a, _ in listening if a not in WILDCARDS)
        addresses = {a for a in addresses if not _loopback(a)}
        established = [(local, remote) for local, remote in established if not (_loopback(local[0]) or _loopback(remote[0]))]
        return NetNamespace(key, pid, read_at, own, frozenset(addresses), frozenset(listening), tuple(sorted(set(established))))


# --- parsing ---------------------------------------------------------------------------------


def _in_use(sockstat: bytes) -> dict[str, int] | None:
    """The sockets in use per protocol of ``net/sockstat`` or ``sockstat6`` (``TCP: inuse 3 ...``);
    None when it says nothing of TCP."""
    out = {}
    for line in sockstat.split(b"\n"):
        fields = line.split()
        if len(fields) >= 3 and fields[1] == b"inuse" and fields[2].isdigit():
            out[fields[0].rstrip(b":").decode("ascii", "replace")] = int(fields[2])
    return out if ("TCP" in out or "TCP6" in out) else None


_WORD = struct.Struct("=I")  # the tables print each 32-bit word of an address in host byte order


def _address(hex_text: bytes, names: dict[bytes, str] | None = None) -> str:
    """An address of ``net/tcp`` (8 hex digits) or ``net/tcp6`` (32) as text; IPv4-mapped as IPv4."""
    if names is not None and hex_text in names:
        return names[hex_text]
    raw = b"".join(_WORD.pack(int(hex_text[i:i + 8], 16)) for i in range(0, len(hex_text), 8))
    if len(raw) == 4:
        text = str(ipaddress.IPv4Address(raw))
    elif len(raw) == 16:
        v6 = ipaddress.IPv6Address(raw)
        text = str(v6.ipv4_mapped) if v6.ipv4_mapped is not None else v6.compressed
    else:
        raise ValueError(f"not an address: {hex_text!r}")
    if names is not None:
        names[hex_text] = text
    return text


def _endpoint(field: bytes, names) -> Endpoint:
    addr, _, port = field.partition(b":")
    return _address(addr, names), int(port, 16)


def parse_tcp_table(data: bytes, v6: bool = False, *, established: bool = True,
                    names: dict[bytes, str] | None = None) -> tuple[set[Endpoint], list[tuple[Endpoint, Endpoint]]]:
    """The LISTEN sockets (local endpoints) and, when ``established``, the ESTABLISHED ones
    ((local, remote)) of the text of ``/proc/<pid>/net/tcp`` or ``tcp6`` (``v6``). Other states
    are left out, and so is a last line cut off without its newline, or a line that does not parse."""
    listening: set[Endpoint] = set()
    conns: list[tuple[Endpoint, Endpoint]] = []
    width = 32 if v6 else 8
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        lines.pop()  # cut off (or empty)
    for line in lines:
        fields = line.split(None, 4)
        if len(fields) < 4 or not fields[0].endswith(b":"):
            continue  # the header, or damage
        state = fields[3]
        if state != LISTEN and (state != ESTABLISHED or not established):
            continue
        local, remote = fields[1], fields[2]
        if len(local) != width + 5 or len(remote) != width + 5:
            continue
        try:
            if state == LISTEN:
                listening.add(_endpoint(local, names))
            else:
                conns.append((_endpoint(local, names), _endpoint(remote, names)))
        except ValueError:
            continue
    return listening, conns


def parse_fib_trie(data: bytes) -> list[str]:
    """The local IPv4 addresses (``/32 host LOCAL``) of ``/proc/<pid>/net/fib_trie``."""
    out, current = [], None
    for line in data.split(b"\n"):
        text = line.strip()
        if text.startswith(b"|-- "):
            current = text[4:].decode("ascii", "replace")
        elif text.startswith(b"/32 host LOCAL") and current is not None:
            out.append(current)
    return out


def parse_if_inet6(data: bytes) -> list[str]:
    """The IPv6 addresses of ``/proc/<pid>/net/if_inet6``."""
    out = []
    for line in data.split(b"\n"):
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                out.append(ipaddress.IPv6Address(bytes.fromhex(fields[0].decode("ascii"))).compressed)
            except ValueError:
                continue
    return out


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


# --- keys: the same connection as the packet path names it -------------------------------------


def _halves(address: str) -> tuple[int, int]:
    """An address as the capture stage holds it: 128 bits as two 64-bit halves, IPv4 as ::ffff:a.b.c.d."""
    ip = ipaddress.ip_address(address)
    value = (0xFFFF << 32 | int(ip)) if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _connection_keys(a_hi, a_lo, a_port, b_hi, b_lo, b_port) -> np.ndarray:
    end_a = mix(a_hi, a_lo, a_port)
    end_b = mix(b_hi, b_lo, b_port)
    return mix(np.full(len(end_a), TCP, dtype=np.int64), np.minimum(end_a, end_b), np.maximum(end_a, end_b))


def socket_keys(pairs: Iterable[tuple[Endpoint, Endpoint]]) -> np.ndarray:
    """The key (uint64) of each TCP connection between two endpoints, the same in either order
    and the same as ``opened_keys`` gives for its packets."""
    pairs = list(pairs)
    if not pairs:
        return np.zeros(0, dtype=np.uint64)
    halves = {}
    cols = [[] for _ in range(6)]
    for (a, ap), (b, bp) in pairs:
        for address in (a, b):
            if address not in halves:
                halves[address] = _halves(address)
        for col, value in zip(cols, (*halves[a], ap, *halves[b], bp)):
            col.append(value)
    arrays = [np.array(c, dtype=np.uint64) for c in cols]
    return _connection_keys(*arrays)


def opened_keys(p: Packets) -> np.ndarray:
    """The keys (sorted, unique) of the TCP connections that packets ``p`` show opening: a
    segment with SYN (a SYN or a SYN-ACK)."""
    sel = np.flatnonzero((p.status == OK) & (p.proto == TCP) & ((p.tcp_flags & _SYN) != 0))
    if not sel.size:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(_connection_keys(p.src_hi[sel], p.src_lo[sel], p.sport[sel], p.dst_hi[sel], p.dst_lo[sel], p.dport[sel]))


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    if not len(table) or not len(values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


# --- connections and their direction -------------------------------------------------------------


class Listeners:
    """The LISTEN sockets of a scan, by namespace, and which namespaces hold each address."""

    def __init__(self, namespaces: Iterable[NetNamespace]):
        self.by_ns: dict[tuple, frozenset[Endpoint]] = {}
        self.owners: dict[str, list[tuple]] = {}
        for ns in namespaces:
            self.by_ns[ns.id] = ns.listening
            for address in ns.addresses:
                self.owners.setdefault(address, []).append(ns.id)

    def listens(self, ns_id: tuple, address: str, port: int) -> bool:
        """A LISTEN socket of namespace ``ns_id`` takes connections to ``address:port``: one on
        that address, on ``0.0.0.0`` (IPv4 addresses) or on ``::`` (both: IPv4 arrive mapped)."""
        lis = self.by_ns.get(ns_id, ())
        return (address, port) in lis or ("::", port) in lis or (":" not in address and ("0.0.0.0", port) in lis)

    def listening_at(self, address: str, port: int, other_than: tuple | None = None) -> bool:
        """A namespace that holds ``address`` (other than ``other_than``) listens on ``address:port``."""
        return any(self.listens(n, address, port) for n in self.owners.get(address, ()) if n != other_than)


@dataclass(frozen=True)
class ScannedConnection:
    """An established TCP connection found in the socket tables, oriented client to server."""

    client: Endpoint
    server: Endpoint  # as the client sees it
    method: str  # "listen" or "port-heuristic"
    seen_at: int  # ns since the epoch: when the table it was found in was read
    keys: tuple[int, ...]  # of each of its sockets' connection (two when seen through DNAT)
    namespaces: frozenset  # ids of the namespaces it was found in
    translated: Endpoint | None = None  # the server's own end, when the client's view went through DNAT

    def flow(self) -> Flow:
        """Its flow line: evidence ``socket-scan``, one connection, no packets."""
        t = self.seen_at
        return Flow(
            src=self.client[0], dst=self.server[0], proto="TCP", port=self.server[1], packets=0, bytes=0, connections=1,
            first_seen=t, last_seen=t, direction=((self.method, 1),), client_ports=(self.client[1],),
            translated=() if self.translated is None else (Translation(self.client[0], *self.translated),),
            evidence="socket-scan",
        )


@dataclass
class _Side:
    ns: tuple
    local: Endpoint
    remote: Endpoint
    key: int
    read_at: int


def connections(scan: Scan, listeners: Listeners | None = None) -> list[ScannedConnection]:
    """The established connections of ``scan`` (the sniffer's own namespace left out), each once:
    the sockets of its two ends joined, and the client's and the server's sockets of a connection
    through DNAT (the client's remote is a Service address, the server's remote the client's own
    end, the server's local end listening) joined into one with ``translated``.

    The server is the end whose local port a LISTEN socket of its own namespace takes (its address
    or a wildcard); else the remote end when another namespace that holds its address listens on
    its port; else, by ``decide_direction``'s port rules (a well-known port is the server's; else
    the end outside the ephemeral range; else, of a socket seen from one end only, its local end,
    which nothing listens on, is the client; else the lower port), method ``port-heuristic``."""
    listeners = listeners or Listeners(scan.namespaces)
    raw = [(ns, local, remote) for ns in scan.namespaces if not ns.own for local, remote in ns.established]
    keys = socket_keys((local, remote) for _, local, remote in raw).tolist()
    sides = [_Side(ns.id, local, remote, k, ns.read_at) for (ns, local, remote), k in zip(raw, keys)]
    groups: dict[int, list[_Side]] = {}
    for side in sides:
        groups.setdefault(side.key, []).append(side)
    # DNAT: a lone client socket (c -> v) and a lone server socket (s <- c), s listening.
    lone = {k: g[0] for k, g in groups.items() if len(g) == 1}
    by_remote: dict[Endpoint, list[_Side]] = {}
    for side in lone.values():
        by_remote.setdefault(side.remote, []).append(side)
    out: list[ScannedConnection] = []
    joined: set[int] = set()
    for k, x in lone.items():
        if k in joined or listeners.listens(x.ns, *x.local):
            continue
        others = [y for y in by_remote.get(x.local, ()) if y.key != k and y.ns != x.ns]
        if len(others) != 1 or others[0].key in joined or not listeners.listens(others[0].ns, *others[0].local):
            continue  # none, or more than one socket names this client end: not sure which
        y = others[0]
        joined.update((k, y.key))
        out.append(ScannedConnection(x.local, x.remote, "listen", min(x.read_at, y.read_at), (k, y.key),
                                     frozenset((x.ns, y.ns)), y.local))
    undecided: list[tuple[int, list[_Side]]] = []
    for k, group in groups.items():
        if k in joined:
            continue
        server = _server(group, listeners)
        if server is None:
            undecided.append((k, group))
            continue
        client = group[0].remote if group[0].local == server else group[0].local
        out.append(_connection(client, server, "listen", k, group))
    if undecided:
        ends = [sorted((g[0].local, g[0].remote)) for _, g in undecided]
        a_port = np.array([a[1] for a, _ in ends], dtype=np.int64)
        b_port = np.array([b[1] for _, b in ends], dtype=np.int64)
        # When the ports do not tell either: a socket seen from one end only, whose local port
        # nothing listens on, was connected from there (the client); else the lower port serves.
        tie = np.array([g[0].local == a if len(g) == 1 else a[1] > b[1] for (_, g), (a, b) in zip(undecided, ends)], dtype=bool)
        n = len(ends)
        _method, client_a = decide_direction(np.zeros(n, dtype=np.int64), np.full(n, TCP, dtype=np.int64), a_port, b_port, tie)
        for (k, group), (a, b), a_is_client in zip(undecided, ends, client_a.tolist()):
            client, server = (a, b) if a_is_client else (b, a)
            out.append(_connection(client, server, DIRECTION_METHODS[_HEURISTIC], k, group))
    out.sort(key=lambda c: (c.client, c.server, c.keys))
    return out


def _server(group: list[_Side], listeners: Listeners) -> Endpoint | None:
    """The server end of a connection's sockets by the LISTEN sockets, or None."""
    local = {s.local for s in group if listeners.listens(s.ns, *s.local)}
    if len(local) == 1:
        return local.pop()
    if local:
        return None  # both ends listen on their ports: the ports decide
    remote = {s.remote for s in group if listeners.listening_at(s.remote[0], s.remote[1], other_than=s.ns)}
    return remote.pop() if len(remote) == 1 else None


def _connection(client: Endpoint, server: Endpoint, method: str, key: int, group: list[_Side]) -> ScannedConnection:
    return ScannedConnection(client, server, method, min(s.read_at for s in group), (key,), frozenset(s.ns for s in group))


def correct(flows: Iterable[Flow], listeners: Listeners) -> tuple[list[Flow], int]:
    """``flows`` with each TCP flow whose direction came only from ``port-heuristic`` or
    ``first-packet`` reversed where the listening sockets show it the wrong way round: its one
    client port is a LISTEN socket at the client's address and its server end is not listening.
    The reversed flow's method is ``listen``; its evidence ``unanswered`` (only the side then
    taken for the client sent, and not RSTs only) becomes ``established``, since that side is the
    server; ``established`` and ``stale`` stay. Also how many were reversed."""
    out, reversed_ = [], 0
    for f in flows:
        if (f.proto == "TCP" and f.direction and all(m in HEURISTIC_METHODS for m, _ in f.direction)
                and len(f.client_ports) == 1 and not f.translated and f.port is not None):
            port = f.client_ports[0]
            if listeners.listening_at(f.src, port) and not listeners.listening_at(f.dst, f.port):
                f = replace(f, src=f.dst, dst=f.src, port=port, client_ports=(f.port,),
                            direction=(("listen", sum(n for _, n in f.direction)),), src_pods=f.dst_pods, dst_pods=f.src_pods,
                            evidence="established" if f.evidence == "unanswered" else f.evidence)
                reversed_ += 1
        out.append(f)
    return out, reversed_


# --- what a run remembers -------------------------------------------------------------------------


class SocketState:
    """The scans' memory over a run: the connections already accounted for (reported by a scan,
    or seen opening by the packet path), so that each is reported once while it stays open and
    forgotten when it closes; the SYNs seen since the last scan that was decided; the listening
    sockets of the latest scan, for ``correct``. Used by one thread at a time."""

    def __init__(self):
        self.known: dict[int, frozenset] = {}  # connection key -> ids of the namespaces it was found in
        self.opened = np.zeros(0, dtype=np.uint64)  # keys of connections seen opening, sorted
        self.listeners: Listeners | None = None

    def segment(self, scans: Iterable[Scan], opened: np.ndarray) -> tuple[list[Flow], dict[str, int]]:
        """The flows of a segment's ``scans`` (those done in its interval, in order), given the
        keys of the connections whose SYN the interval's packets showed (``opened``), and the
        counters: ``socket_scans``, ``socket_connections``, ``socket_unreadable``."""
        self.opened = np.union1d(self.opened, opened)
        flows: list[Flow] = []
        stats = {"socket_scans": 0, "socket_connections": 0, "socket_unreadable": 0}
        scans = list(scans)
        for scan in scans:
            self.listeners = Listeners(scan.namespaces)
            found = connections(scan, self.listeners)
            all_keys = np.array([k for c in found for k in c.keys], dtype=np.uint64)
            seen_open = iter(_in_sorted(all_keys, self.opened).tolist())
            present: dict[int, frozenset] = {}
            for c in found:
                opened_here = [next(seen_open) for _ in c.keys]
                accounted = any(k in self.known for k in c.keys) or any(opened_here)
                for k in c.keys:
                    present[k] = c.namespaces
                if not accounted:
                    flows.append(c.flow())
                    stats["socket_connections"] += 1
            # What was not found again has closed, unless its namespace could not be read.
            self.known = {k: nss for k, nss in self.known.items() if k in present or nss & scan.unreadable}
            self.known.update(present)
            stats["socket_scans"] += 1
            stats["socket_unreadable"] += len(scan.unreadable)
        if scans:
            self.opened = np.unique(opened)  # a later scan may find what opened after this one
        return flows, {k: v for k, v in stats.items() if v}



# --- scanning beside the capture ------------------------------------------------------------------


class BackgroundScans:
    """``SocketScanner`` scans in a thread of their own, one at a time, when asked (reading a
    table is the kernel walking its TCP hash table: milliseconds a namespace, which the capture
    loop must not wait for); the finished scans are kept until taken."""

    def __init__(self, scanner: SocketScanner, warn: Warn | None = None):
        self.scanner = scanner
        self.warn = warn or scanner.warn
        self.lock = threading.Lock()
        self.wanted = threading.Event()
        self.stopping = False
        self.done: list[Scan] = []
        self.last_seconds = 0.0  # how long the last scan took
        self.thread: threading.Thread | None = None
        self.failed = False

    def start(self) -> None:
        """Start the scanning thread (it waits for requests)."""
        self.thread = threading.Thread(target=self._run, name="socket-scan", daemon=True)
        self.thread.start()

    def request(self) -> None:
        """Scan as soon as the thread is free (a request while it scans is the next scan)."""
        self.wanted.set()

    def _run(self) -> None:
        while True:
            self.wanted.wait()
            if self.stopping:
                return
            self.wanted.clear()
            try:
                scan = self.scanner.scan()
            except Exception as exc:  # noqa: BLE001 - a scan never stops the capture
                if not self.failed:
                    self.failed = True
                    self.warn(f"socket scan failed: {type(exc).__name__}: {exc}")
                continue
            with self.lock:
                self.done.append(scan)
                self.last_seconds = scan.seconds

    def take(self, upto: int | None) -> list[Scan]:
        """The finished scans that ended at ``upto`` (ns since the epoch) or before (all: None), in order."""
        with self.lock:
            ready = [s for s in self.done if upto is None or s.finished <= upto]
            self.done = [s for s in self.done if not (upto is None or s.finished <= upto)]
        return ready

    def stop(self) -> None:
        """Let a scan in progress finish, start none after it."""
        self.stopping = True
        self.wanted.set()
        if self.thread is not None:
            self.thread.join()


__all__ = [
    "BackgroundScans", "Listeners", "NetNamespace", "Scan", "ScannedConnection", "SocketScanner", "SocketState", "connections", "correct",
    "opened_keys", "parse_fib_trie", "parse_if_inet6", "parse_tcp_table", "socket_keys",
]
