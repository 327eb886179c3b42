"""The live sniffer: ``netpol-learn sniff`` on the node of the namespace test bed while its pods
exchange real traffic, and its parts on their own.

On the bed (needs root, ``ip netns`` and nftables; CI runs these, a skip fails the run), the
sniffer runs as ``ip netns exec <node> netpol-learn sniff`` on the node's bridge and veths while a
client pod calls a server pod through a Service over TCP and UDP, after asking the cluster DNS. The
tests read the flow log it wrote: the pod addresses, the Service and target ports, the direction
from the SYN, the DNS lines; `generate` on it with the bed's inventory gives policies that
network-config-analyzer (tests/policy_judge.py) and `verify` say allow that traffic. Also: a pod's
veth deleted mid-capture is a warning and capture goes on; on ``cni0`` alone it sees two pods that
talk over the bridge (not routed), the bridge promiscuous while it runs; it writes into a FIFO;
``--max-connections`` bounds and counts; no CAP_NET_RAW is one error line and exit 2; SIGTERM while
a segment is being written (stdout a pipe nobody reads yet) still gives whole segments only.

Without the bed: the kernel filter (the program scapy compiles with libpcap, the built-in one, and
what they accept, run through a small classic-BPF interpreter), the connection bound, the segment
writer (its repair of a cut-off file; a FIFO, a symlink, a character device), a failed start (``-i
nosuch0``) that leaves no output file and an existing one as it was, and the pod watcher against a
local HTTP server that answers list and watch requests as the Kubernetes API does.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402
from policy_judge import judge  # noqa: E402
from testbed import Call, Port, Serve, ServicePort, TestBed  # noqa: E402

from netpol_learn import _sniff as sniff  # noqa: E402
from netpol_learn._sniff import _filter, _ring  # noqa: E402
from netpol_learn._errors import SniffError  # noqa: E402
from netpol_learn._capture._decode import decode  # noqa: E402
from netpol_learn._capture._files import PAD  # noqa: E402
from netpol_learn._cli import main  # noqa: E402
from netpol_learn._flowlog import Flow, FlowLog, dumps_lines, merge_logs, read_flow_log  # noqa: E402
from netpol_learn._sniff import PodWatcher  # noqa: E402

NO_BED = testbed.can_run()
needs_bed = pytest.mark.skipif(NO_BED is not None, reason=f"test bed unavailable: {NO_BED}")


# ==========================================================================================
# The kernel filter
# ==========================================================================================


def run_bpf(program, packet: bytes) -> int:
    """A classic BPF interpreter for the instructions libpcap emits for these filters: how many
    bytes the program keeps of ``packet`` (0: dropped). Out-of-bounds loads drop, as in the kernel."""
    a = x = 0
    pc = 0
    n = len(packet)

    def load(at: int, size: int) -> int | None:
        if at < 0 or at + size > n:
            return None
        return int.from_bytes(packet[at:at + size], "big")

    while True:
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        if cls == 0x00:  # ld
            size = {0x00: 4, 0x08: 2, 0x10: 1}[code & 0x18]
            mode = code & 0xE0
            if mode == 0x20:
                v = load(k, size)
            elif mode == 0x40:
                v = load(x + k, size)
            elif mode == 0x00:
                v = k
            else:
                raise AssertionError(f"ld mode {code:#x}")
            if v is None:
                return 0
            a = v
        elif cls == 0x01:  # ldx
            if code == 0xB1:  # ldx 4*([k]&0xf)
                v = load(k, 1)
                if v is None:
                    return 0
                x = 4 * (v & 0x0F)
            elif code == 0x01:
                x = k
            else:
                raise AssertionError(f"ldx {code:#x}")
        elif cls == 0x04:  # alu
            op, src = code & 0xF0, (x if code & 0x08 else k)
            a = {0x00: a + src, 0x10: a - src, 0x20: a * src, 0x50: a & src, 0x40: a | src,
                 0x60: a << src, 0x70: a >> src}[op] & 0xFFFFFFFF
        elif cls == 0x05:  # jmp
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
            else:
                cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
                pc += jt if cond else jf
        elif cls == 0x06:  # ret
            return k if not code & 0x10 else a
        elif cls == 0x07:  # misc
            x, a = (a, a) if code == 0x07 else (x, x)
        else:
            raise AssertionError(f"instruction {code:#x}")
        pc += 1


def _packets() -> dict[str, tuple[bytes, bool]]:
    """name -> (raw IP packet, kept by the filter?)."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.layers.l2 import Ether
    from scapy.layers.sctp import SCTP, SCTPChunkData, SCTPChunkInit, SCTPChunkInitAck
    from scapy.layers.vxlan import VXLAN

    a, b = "10.244.0.5", "10.244.0.9"
    tcp = lambda flags, **kw: bytes(IP(src=a, dst=b) / TCP(sport=40000, dport=8080, flags=flags, **kw) / b"x")  # noqa: E731
    inner_ack = Ether() / IP(src=a, dst=b) / TCP(flags="A")
    return {
        "syn": (tcp("S"), True),
        "syn-ack": (tcp("SA"), True),
        "fin": (tcp("FA"), True),
        "rst": (tcp("R"), True),
        "ack": (tcp("A"), False),
        "push-ack": (tcp("PA"), False),
        "ack with ip options": (bytes(IP(src=a, dst=b, options=b"\x01\x01\x01\x00") / TCP(flags="A")), False),
        "syn with ip options": (bytes(IP(src=a, dst=b, options=b"\x01\x01\x01\x00") / TCP(flags="S")), True),
        "dns over tcp data": (bytes(IP(src=b, dst=a) / TCP(sport=53, dport=40000, flags="PA") / (b"\x00\x20" + b"y" * 32)), True),
        "dns over udp": (bytes(IP(src=a, dst=b) / UDP(sport=40000, dport=53) / DNS(qd=DNSQR(qname="x.example"))), True),
        "udp": (bytes(IP(src=a, dst=b) / UDP(sport=40000, dport=9000) / b"hello"), True),
        "udp later fragment": (bytes(IP(src=a, dst=b, proto=17, frag=100) / (b"z" * 40)), True),
        "tcp later fragment": (bytes(IP(src=a, dst=b, proto=6, frag=100) / (b"z" * 40)), False),
        "icmp echo": (bytes(IP(src=a, dst=b) / ICMP()), False),
        "vxlan": (bytes(IP(src="172.18.0.2", dst="172.18.0.3") / UDP(sport=5555, dport=4789) / VXLAN() / inner_ack), True),
        "ip-in-ip": (bytes(IP(src="172.18.0.2", dst="172.18.0.3") / IP(src=a, dst=b) / TCP(flags="A")), True),
        "gre": (bytes(IP(src="172.18.0.2", dst="172.18.0.3") / GRE() / IP(src=a, dst=b) / TCP(flags="A")), True),
        "sctp init": (bytes(IP(src=a, dst=b) / SCTP(sport=5000, dport=38412) / SCTPChunkInit()), True),
        "sctp init ack": (bytes(IP(src=b, dst=a) / SCTP(sport=38412, dport=5000) / SCTPChunkInitAck()), True),
        "sctp data": (bytes(IP(src=a, dst=b) / SCTP(sport=5000, dport=38412) / SCTPChunkData(data=b"d")), False),
        "ipv6 syn": (bytes(IPv6(src="fd00::5", dst="fd00::9") / TCP(flags="S")), True),
        "ipv6 ack": (bytes(IPv6(src="fd00::5", dst="fd00::9") / TCP(flags="A")), False),
        "ipv6 dns over tcp": (bytes(IPv6(src="fd00::9", dst="fd00::5") / TCP(sport=53, dport=40000, flags="PA") / (b"q" * 20)), True),
        "ipv6 udp": (bytes(IPv6(src="fd00::5", dst="fd00::9") / UDP(dport=9000) / b"u"), True),
        "ipv6 fragment": (bytes(IPv6(src="fd00::5", dst="fd00::9") / IPv6ExtHdrFragment(offset=10, nh=6) / (b"f" * 16)), True),
        "ipv6 icmp": (bytes(IPv6(src="fd00::5", dst="fd00::9", nh=58) / b"\x80\x00\x00\x00"), False),
        "arp-like garbage": (b"\x00\x01\x08\x00" + b"\x00" * 24, False),
    }


def test_filter_compiled_by_scapy_with_libpcap_is_the_built_in_program():
    compiled = _filter._libpcap_compile(sniff.FILTER)
    assert compiled == _filter.FALLBACK_PROGRAM
    # The accepting instructions keep SNAPLEN bytes.
    program = sniff.compile_program()
    assert {k for c, _, _, k in program if c == _filter.BPF_RET_K} == {0, sniff.SNAPLEN}


def test_filter_keeps_handshakes_udp_dns_and_tunnels_only(monkeypatch):
    packets = _packets()
    libpcap = sniff.compile_program()

    def no_libpcap(expression):
        raise ImportError("libpcap.so: cannot open shared object file")

    monkeypatch.setattr(_filter, "_libpcap_compile", no_libpcap)
    built_in = sniff.compile_program()
    assert built_in == libpcap
    verdicts = {name: run_bpf(built_in, raw) for name, (raw, _) in packets.items()}
    assert {n: bool(v) for n, v in verdicts.items()} == {n: keep for n, (_, keep) in packets.items()}
    assert set(verdicts.values()) == {0, sniff.SNAPLEN}
    # Without libpcap, only the built-in filter can be had.
    with pytest.raises(SniffError, match="needs libpcap"):
        sniff.compile_program("udp")


# ==========================================================================================
# The connection bound, the writer, the flow-log fields
# ==========================================================================================


def _decoded(raw: list[bytes]):
    data = b"".join(raw) + bytes(PAD)
    lengths = np.array([len(r) for r in raw], dtype=np.int64)
    off = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    ts = np.arange(len(raw), dtype=np.int64) * 1000 + 1_700_000_000_000_000_000
    return decode(data, off, lengths, np.full(len(raw), _ring.LINK_RAW, dtype=np.int32), ts)


def test_connection_limit_admits_the_first_and_counts_the_rest_once():
    from scapy.layers.inet import IP, TCP

    def syn(port, reply=False):
        if reply:
            return bytes(IP(src="10.244.0.9", dst="10.244.0.5") / TCP(sport=8080, dport=port, flags="SA"))
        return bytes(IP(src="10.244.0.5", dst="10.244.0.9") / TCP(sport=port, dport=8080, flags="S"))

    limit = sniff.ConnectionLimit(4)
    first = limit(_decoded([syn(p) for p in range(40000, 40006)]))
    assert sorted(first.sport.tolist()) == [40000, 40001, 40002, 40003]
    assert (limit.dropped_connections, limit.dropped_packets) == (2, 2)
    # Replies of admitted connections pass (both directions are one connection); replies of
    # dropped ones are dropped without counting their connection again; new ones are dropped.
    second = limit(_decoded([syn(40001, True), syn(40004, True), syn(40009), syn(40002)]))
    assert sorted(second.sport.tolist()) == [8080, 40002]
    assert (limit.dropped_connections, limit.dropped_packets) == (3, 4)


def test_batches_hold_back_the_last_moments_and_hand_packets_over_in_time_order():
    from scapy.layers.inet import IP, UDP

    raw = [bytes(IP(src="10.244.0.5", dst="10.244.0.9") / UDP(sport=40000 + i, dport=9000) / (b"p" * i)) for i in range(6)]
    data = b"".join(raw)
    cap = np.array([len(r) for r in raw], dtype=np.int64)
    off = np.r_[0, np.cumsum(cap)[:-1]].astype(np.int64)
    ts = np.array([50, 10, 40, 20, 60, 30], dtype=np.int64)  # two rings' packets, interleaved late
    (data1, off1, cap1, link1, ts1), rest = sniff.Batch((data, off, cap, ts)).take(upto=35)
    assert ts1.tolist() == [10, 20, 30] and len(rest) == 3
    assert [bytes(data1[o:o + c]) for o, c in zip(off1, cap1)] == [raw[1], raw[3], raw[5]]
    (data2, off2, cap2, _, ts2), rest = rest.take(upto=None)
    assert ts2.tolist() == [40, 50, 60] and len(rest) == 0
    assert [bytes(data2[o:o + c]) for o, c in zip(off2, cap2)] == [raw[2], raw[0], raw[4]]
    assert len(data2) == sum(len(raw[i]) for i in (0, 2, 4)) + PAD  # only the held packets were kept
    assert decode(data2, off2, cap2, np.full(3, _ring.LINK_RAW, dtype=np.int32), ts2).sport.tolist() == [40002, 40000, 40004]


def test_a_segment_names_the_pods_of_its_flows_when_the_api_is_watched():
    from scapy.layers.inet import IP, TCP

    from netpol_learn._capture._aggregate import Aggregator

    t = 1_700_000_000_000_000_000
    watcher = PodWatcher("http://127.0.0.1:1", warn=pytest.fail, clock=lambda: t - 10**9)
    watcher._update(_pod("shop", "ui-1", "10.244.0.5"), t - 10**9)
    watcher._update(_pod("shop", "api-1", "10.244.0.9"), t - 10**9)
    sniffer = sniff.Sniffer(sniff.Options(source="sniff:node-a"), warn=pytest.fail, pods=watcher)
    raw = [bytes(IP(src="10.244.0.5", dst="10.244.0.9") / TCP(sport=40000, dport=8080, flags="S")),
           bytes(IP(src="10.244.0.5", dst="203.0.113.10") / TCP(sport=40001, dport=443, flags="S", seq=777))]
    data = b"".join(raw) + bytes(PAD)
    cap = np.array([len(r) for r in raw], dtype=np.int64)
    agg = Aggregator(10**8)
    agg.feed(data, decode(data, np.array([0, len(raw[0])]), cap, np.full(2, _ring.LINK_RAW, dtype=np.int32), np.array([t, t + 1000])))
    limit = sniff.ConnectionLimit(10)
    limit.dropped_connections = 2
    log = sniffer.segment(agg, limit, kernel_drops=5)
    assert [(f.dst, f.src_pods, f.dst_pods) for f in log.flows] == [("10.244.0.9", ("shop/ui-1",), ("shop/api-1",)),
                                                                    ("203.0.113.10", ("shop/ui-1",), ())]
    assert log.sources == ("sniff:node-a",)
    assert log.stats["dropped_connections"] == 2 and log.stats["dropped_by_kernel"] == 5 and log.stats["packets"] == 2


def test_segment_writer_cuts_a_file_back_to_its_last_complete_segment(tmp_path):
    log = FlowLog(stats={"packets": 3}, sources=("sniff:n",))
    segment = "".join(dumps_lines(log))
    path = tmp_path / "flows.jsonl"
    path.write_text(segment + segment + segment[: len(segment) // 2])
    warnings = []
    writer = sniff.SegmentWriter(str(path), warnings.append)
    writer.write(segment)
    writer.close()
    assert path.read_text() == segment * 3
    assert warnings == [f"{path}: removed {len(segment) // 2} bytes of a segment left incomplete by an earlier run"]
    assert read_flow_log(path).stats == {"packets": 9}
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    with pytest.raises(SniffError, match="not a flow log; not appending"):
        sniff.SegmentWriter(str(other), warnings.append)
    assert other.read_text() == "my notes\n"


def _segment(**stats) -> str:
    return "".join(dumps_lines(FlowLog(stats=stats or {"packets": 3}, sources=("sniff:n",))))


def test_segment_writer_writes_into_a_fifo_and_never_reads_it(tmp_path):
    fifo = tmp_path / "flows.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # to EOF: the writer closed
    reader.start()
    segment = _segment()
    writer = sniff.SegmentWriter(str(fifo), pytest.fail)
    assert not writer.regular  # nothing to repair, and nothing to fsync (EINVAL on a FIFO)
    writer.write(segment)
    writer.write(segment)
    writer.close()
    reader.join(5)
    assert got == [(segment * 2).encode()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_segment_writer_waits_for_a_reader_of_a_fifo_until_cancelled(tmp_path):
    fifo = tmp_path / "flows.fifo"
    os.mkfifo(fifo)
    said = []
    started = time.monotonic()
    with pytest.raises(SniffError, match=f"stopped while waiting for a reader of {fifo} \\(a FIFO\\)"):
        sniff.SegmentWriter(str(fifo), pytest.fail, info=said.append, cancelled=lambda: time.monotonic() - started > 0.3)
    assert said == [f"{fifo} is a FIFO: waiting for a reader"]
    # A reader that comes while it waits gets the segments.
    got = []

    def read_later():
        time.sleep(0.2)
        got.append(fifo.read_bytes())

    reader = threading.Thread(target=read_later, daemon=True)
    reader.start()
    writer = sniff.SegmentWriter(str(fifo), pytest.fail, info=said.append, cancelled=lambda: False)
    writer.write(_segment())
    writer.close()
    reader.join(5)
    assert got == [_segment().encode()]


def test_segment_writer_reports_a_fifo_reader_that_went_away(tmp_path):
    fifo = tmp_path / "flows.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = sniff.SegmentWriter(str(fifo), pytest.fail)
    os.close(reader)
    with pytest.raises(SniffError, match=f"cannot write {fifo}: its reader went away"):
        writer.write(_segment())
    writer.close()


def test_segment_writer_appends_through_a_symlink_to_its_target(tmp_path):
    segment = _segment()
    target = tmp_path / "logs" / "flows.jsonl"
    target.parent.mkdir()
    target.write_text(segment + segment[:10])  # cut off: repaired through the link
    link = tmp_path / "flows.jsonl"
    link.symlink_to(target)
    warnings = []
    writer = sniff.SegmentWriter(str(link), warnings.append)
    assert writer.regular
    writer.write(segment)
    writer.close()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == segment * 2
    assert warnings == [f"{link}: removed 10 bytes of a segment left incomplete by an earlier run"]
    # A link to a file that is not a flow log is refused, and the file left alone.
    (tmp_path / "notes.txt").write_text("my notes\n")
    notes = tmp_path / "notes-link"
    notes.symlink_to(tmp_path / "notes.txt")
    with pytest.raises(SniffError, match="not a flow log; not appending"):
        sniff.SegmentWriter(str(notes), pytest.fail)
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"


def test_segment_writer_writes_into_a_character_device(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the null device
        os.close(os.open(null, os.O_WRONLY))
    except PermissionError as exc:  # no CAP_MKNOD, or a nodev file system
        pytest.skip(f"cannot make or open a device node here: {exc}")
    writer = sniff.SegmentWriter(str(null), pytest.fail)
    assert not writer.regular
    writer.write(_segment())  # no fsync: EINVAL on a device
    writer.close()
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def _sniff_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netpol_learn", "sniff", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_a_failed_start_creates_no_output_file_and_leaves_an_existing_one_alone(tmp_path):
    (tmp_path / "tmp").mkdir()
    out = _sniff_cli("-i", "nosuch0", "-o", "tmp/out.jsonl", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert not (tmp_path / "tmp" / "out.jsonl").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    # An existing flow log, its last segment cut off (which a start that got as far as the
    # output would cut back): byte for byte as it was.
    log = tmp_path / "tmp" / "flows.jsonl"
    log.write_text(_segment() + _segment()[:25])
    before = log.read_bytes(), os.stat(log).st_mtime_ns
    out = _sniff_cli("-i", "nosuch0", "-o", str(log), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and out.stderr.startswith("error: "), out.stderr
    assert (log.read_bytes(), os.stat(log).st_mtime_ns) == before


def test_pod_fields_are_optional_and_merge_as_sets(tmp_path):
    base = dict(src="10.244.0.5", dst="10.244.0.9", proto="TCP", port=8080, packets=1, bytes=60, connections=1,
                first_seen=1_000, last_seen=2_000, direction=(("syn", 1),))
    plain = Flow(**base)
    a = Flow(**base, src_pods=("shop/ui-1",), dst_pods=("shop/api-1",))
    b = Flow(**base, src_pods=("shop/ui-2",), dst_pods=("shop/api-1",))
    assert "src_pods" not in "".join(dumps_lines(FlowLog(flows=(plain,))))
    merged = merge_logs([FlowLog(flows=(a,)), FlowLog(flows=(b,)), FlowLog(flows=(plain,))]).flows
    assert [(f.src_pods, f.dst_pods, f.connections) for f in merged] == [(("shop/ui-1", "shop/ui-2"), ("shop/api-1",), 3)]
    path = tmp_path / "f.jsonl"
    path.write_text("".join(dumps_lines(FlowLog(flows=merged))))
    assert read_flow_log(path).flows == merged


# ==========================================================================================
# The pod watcher against a local API server
# ==========================================================================================


def _pod(namespace, name, ip, uid=None, phase="Running", host_network=False):
    pod = {"metadata": {"namespace": namespace, "name": name, "uid": uid or f"uid-{namespace}-{name}", "resourceVersion": "1"},
           "spec": {"nodeName": "node-a", **({"hostNetwork": True} if host_network else {})},
           "status": {"phase": phase}}
    if ip:
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    return pod


class FakeApi:
    """Answers GET /api/v1/pods (lists with limit/continue, and watches streaming the events
    queued for them) as the API server does; ``mode`` makes it refuse or hang. With ``netns``, it
    listens on 127.0.0.1 of that network namespace (its thread enters it with setns(2)); with
    ``tls`` (certificate file, key file), over https."""

    def __init__(self, netns: str | None = None, tls: tuple[str, str] | None = None):
        self.pods: list[dict] = []
        self.events: queue.Queue = queue.Queue()
        self.mode = "ok"  # "ok", "forbidden", "hang", "gone-once"
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append({"path": url.path, **q, "auth": self.headers.get("Authorization")})
                if api.mode == "hang":
                    time.sleep(3)
                    return
                if api.mode == "forbidden":
                    return self._json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                                            "message": 'pods is forbidden: User "system:serviceaccount:x:y" cannot list resource "pods"'})
                if q.get("watch") == "1":
                    return self._watch(q)
                limit = int(q.get("limit", 500))
                start = int(q.get("continue", 0))
                items = api.pods[start:start + limit]
                meta = {"resourceVersion": "100"}
                if start + limit < len(api.pods):
                    meta["continue"] = str(start + limit)
                self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})

            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self, q):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                deadline = time.monotonic() + float(q.get("timeoutSeconds", 5))
                if api.mode == "gone-once":
                    api.mode = "ok"
                    self._chunk({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                              "message": "too old resource version: 1 (100)"}})
                    deadline = 0
                while time.monotonic() < deadline:
                    try:
                        event = api.events.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    self._chunk(event)
                self.wfile.write(b"0\r\n\r\n")

            def _chunk(self, obj):
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        ready, failed = threading.Event(), []

        def serve():
            try:
                if netns:
                    import ctypes

                    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
                    if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                        raise OSError(ctypes.get_errno(), "setns")
                    os.close(fd)
                self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
                self.server.daemon_threads = True
                if tls:
                    import ssl

                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(*tls)
                    self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            except BaseException as exc:  # noqa: BLE001 - raised in the constructor
                failed.append(exc)
                ready.set()
                return
            ready.set()
            self.server.serve_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)
        if failed:
            raise failed[0]
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    server = FakeApi()
    yield server
    server.close()


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _flow(src, dst, t0, t1):
    return Flow(src=src, dst=dst, proto="TCP", port=8080, packets=2, bytes=120, connections=1, first_seen=t0, last_seen=t1,
                direction=(("syn", 1),))


def test_pod_watcher_names_the_pod_that_held_an_address_then(api, tmp_path):
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    api.pods = [_pod("shop", "ui-1", "10.244.0.5"), _pod("shop", "api-1", "10.244.0.9"), _pod("shop", "pending", None),
                _pod("kube-system", "kube-proxy-x", "172.18.0.2", host_network=True)]
    now = [1_000_000_000_000]
    clock = lambda: now[0]  # noqa: E731
    warnings, infos = [], []
    w = PodWatcher(api.url, token_file=str(token), warn=warnings.append, info=infos.append, watch_seconds=1, clock=clock)
    w.start()
    try:
        _wait(lambda: w.synced.is_set() and any(r.get("watch") for r in api.requests))
        assert api.requests[0] == {"path": "/api/v1/pods", "limit": "500", "auth": "Bearer secret-token"}
        # ui-1 is deleted at t=2000 s and its address goes to ui-2 at t=2100 s.
        now[0] = 2_000_000_000_000
        api.events.put({"type": "DELETED", "object": _pod("shop", "ui-1", "10.244.0.5")})
        _wait(lambda: w.events == 1)
        now[0] = 2_100_000_000_000
        api.events.put({"type": "ADDED", "object": _pod("shop", "ui-2", None)})
        api.events.put({"type": "MODIFIED", "object": _pod("shop", "ui-2", "10.244.0.5")})
        api.events.put({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "140"}}})
        _wait(lambda: w.events == 3 and w.resource_version == "140")
    finally:
        w.stop()
    sec = 1_000_000_000
    early = w.annotate(_flow("10.244.0.5", "10.244.0.9", 1500 * sec, 1600 * sec))
    late = w.annotate(_flow("10.244.0.5", "10.244.0.9", 2200 * sec, 2300 * sec))
    both = w.annotate(_flow("10.244.0.5", "10.244.0.9", 1900 * sec, 2200 * sec))
    assert (early.src_pods, early.dst_pods) == (("shop/ui-1",), ("shop/api-1",))
    assert (late.src_pods, late.dst_pods) == (("shop/ui-2",), ("shop/api-1",))
    assert both.src_pods == ("shop/ui-1", "shop/ui-2")
    # Addresses of no pod (the node's, of host-network pods; outside hosts) stay bare.
    outside = w.annotate(_flow("172.18.0.2", "203.0.113.10", 1500 * sec, 1600 * sec))
    assert (outside.src_pods, outside.dst_pods) == ((), ())
    assert warnings == [] and infos == ["watching pods through the Kubernetes API (2 with addresses)"]
    # What let its address go long ago is forgotten (the sniffer prunes after each segment).
    w.prune(2050 * sec)
    assert w.annotate(_flow("10.244.0.5", "10.244.0.9", 1500 * sec, 1600 * sec)).src_pods == ()
    assert w.annotate(_flow("10.244.0.5", "10.244.0.9", 2200 * sec, 2300 * sec)).src_pods == ("shop/ui-2",)


def test_pod_watcher_lists_again_when_the_watch_expires(api):
    api.pods = [_pod("shop", "ui-1", "10.244.0.5")]
    api.mode = "gone-once"
    w = PodWatcher(api.url, warn=pytest.fail, watch_seconds=1)
    w.start()
    try:
        _wait(lambda: sum(1 for r in api.requests if not r.get("watch")) >= 2)
    finally:
        w.stop()
    assert w.pods_at("10.244.0.5", 0, 1) == ("shop/ui-1",)


def test_pod_watcher_unreachable_forbidden_or_slow_api_is_one_warning_and_capture_is_not_held(api):
    warnings = []
    # Nothing listens there.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    w = PodWatcher(f"http://127.0.0.1:{port}", warn=warnings.append, request_timeout=0.5)
    w.start()
    _wait(lambda: warnings)
    time.sleep(1.2)  # retried with backoff: still one warning
    w.stop()
    assert warnings == [f"Kubernetes API at 127.0.0.1:{port}: connection refused; flows carry addresses only until it answers"]
    assert w.annotate(_flow("10.244.0.5", "10.244.0.9", 1, 2)).src_pods == ()

    api.mode = "forbidden"
    warnings.clear()
    w = PodWatcher(api.url, warn=warnings.append, request_timeout=0.5)
    w.start()
    _wait(lambda: warnings)
    w.stop()
    assert warnings[0].endswith('HTTP 403 Forbidden: pods is forbidden: User "system:serviceaccount:x:y" cannot list resource '
                                '"pods" (may the service account list and watch pods?); flows carry addresses only until it answers')

    api.mode = "hang"
    warnings.clear()
    w = PodWatcher(api.url, warn=warnings.append, request_timeout=0.3)
    started = time.monotonic()
    w.start()
    assert time.monotonic() - started < 0.1  # never waits for the API
    _wait(lambda: warnings)
    w.stop()
    assert warnings == [f"Kubernetes API at {w.host}:{w.port}: no answer in time; flows carry addresses only until it answers"]


# ==========================================================================================
# On the test bed
# ==========================================================================================

SERVER_PORTS = [Port("http", 8080), Port("udp", 9000, "UDP")]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """One node with cluster DNS; a client calling a server through its Service by name over TCP
    and UDP, and a second client (``doomed``) whose pod gets deleted during a capture."""
    if NO_BED is not None:
        pytest.skip(f"test bed unavailable: {NO_BED}")
    b = TestBed("sniff", lifetime=120)
    b.deployment("shop", "server", ports=SERVER_PORTS, serve=[Serve(8080), Serve(9000, "UDP")])
    b.service("shop", "server", {"app": "server"}, [ServicePort(80, "http", name="http"), ServicePort(90, 9000, "UDP", name="udp")])
    b.deployment("shop", "client", calls=[Call("server", 80, count=3, interval=0.05), Call("server", 90, "UDP", count=2, interval=0.05)])
    b.deployment("shop", "doomed", calls=[Call("server", 80, count=1)])
    with b:
        b.inventory_path = b.write_inventory(tmp_path_factory.mktemp("inv") / "inventory.yaml")
        yield b


class Sniffing:
    """``netpol-learn sniff ARGS`` in the bed's node namespace; stderr collected line by line.
    ``inside``: a command line the sniffer runs under, in the node namespace."""

    def __init__(self, bed: TestBed, *args: str, stdout=subprocess.DEVNULL, prefix: list[str] | None = None, netns: bool = True,
                 inside: list[str] | None = None, env: dict | None = None):
        cmd = [*(inside or []), sys.executable, "-m", "netpol_learn", "sniff", *args]
        if netns:
            cmd = [testbed._IP, "netns", "exec", bed.node_ns, *cmd]
        self.proc = subprocess.Popen((prefix or []) + cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"sniff never said {text!r}: {self.lines}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(5)
        return rc


def in_pod(pod, script: str, timeout: float = 30) -> str:
    out = subprocess.run([testbed._IP, "netns", "exec", pod.netns, sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def tcp_calls(pod, address: str, port: int, count: int) -> None:
    in_pod(pod, f"""
import socket
for _ in range({count}):
    with socket.create_connection(({address!r}, {port}), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.shutdown(socket.SHUT_WR)
        while s.recv(4096): pass
""")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # a thread that ended meanwhile
        return ""


def segments(text: str) -> list[list[dict]]:
    """The segments of a flow log; each must be whole: a header, its lines, one stats line last."""
    out: list[list[dict]] = []
    for line in text.splitlines(keepends=True):
        assert line.endswith("\n"), f"cut-off line: {line!r}"
        obj = json.loads(line)
        if obj["kind"] == "header":
            assert not out or out[-1][-1]["kind"] == "stats", "a segment without its stats line"
            out.append([obj])
        else:
            assert out and out[-1][-1]["kind"] != "stats", f"a {obj['kind']} line outside a segment"
            out[-1].append(obj)
    assert out and out[-1][-1]["kind"] == "stats"
    return out


@needs_bed
def test_sniff_records_the_node_traffic_and_the_learned_policies_allow_it(bed, tmp_path):
    flows_path = tmp_path / "flows.jsonl"
    s = Sniffing(bed, "--interval", "1", "-o", str(flows_path), "--node", "node-a")
    listening = s.wait_for("listening on")
    server, client, doomed = (bed.pods_of("shop", n)[0] for n in ("server", "client", "doomed"))
    cluster_ip = next(svc.cluster_ip for svc in bed.services if svc.name == "server")
    for pod in (server, client, doomed):
        assert pod.veth in listening
    assert "cni0" in listening
    result = bed.run(timeout=30)
    assert result.failures == []

    # The doomed pod is deleted (its veth goes): a warning, and capture goes on. (The bridge's
    # address is pinned first, as the bridge CNI plugin does: else Linux gives the bridge the
    # lowest address of its ports, which may be the one leaving, and the pods' ARP entries go stale.)
    mac = Path(f"/sys/class/net/cni0/address")
    bridge_mac = subprocess.run([testbed._IP, "netns", "exec", bed.node_ns, "cat", str(mac)], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([testbed._IP, "-n", bed.node_ns, "link", "set", "cni0", "address", bridge_mac], check=True)
    time.sleep(0.3)
    subprocess.run([testbed._IP, "-n", bed.node_ns, "link", "del", doomed.veth], check=True)
    vanished = s.wait_for(f"interface {doomed.veth} vanished")
    tcp_calls(client, server.ip, 8080, 2)  # straight to the pod, after the deletion
    after = time.time()
    time.sleep(0.2)
    assert s.stop() == 0
    assert vanished.startswith("warning: ") and sum("warning:" in line for line in s.lines) == 1, s.lines
    assert s.lines[-1].startswith("sniff: stopped: ")

    text = flows_path.read_text()
    segs = segments(text)
    assert len(segs) >= 2 and all(seg[0]["sources"] == ["sniff:node-a"] for seg in segs)
    log = read_flow_log(flows_path)
    flows = {f.key: f for f in log.flows}
    via_service = flows[(client.ip, cluster_ip, "TCP", 80)]
    assert via_service.connections == 3 and dict(via_service.direction) == {"syn": 3}
    assert [(t.src, t.dst, t.port) for t in via_service.translated] == [(client.ip, server.ip, 8080)]
    udp = flows[(client.ip, cluster_ip, "UDP", 90)]
    assert udp.connections == 2 and [(t.dst, t.port) for t in udp.translated] == [(server.ip, 9000)]
    assert flows[(doomed.ip, cluster_ip, "TCP", 80)].connections == 1  # seen before its veth went
    direct = flows[(client.ip, server.ip, "TCP", 8080)]
    assert direct.connections == 2 and dict(direct.direction) == {"syn": 2} and direct.last_seen / 1e9 <= after
    dns = {(d.client, d.qname, d.qtype) for d in log.dns}
    assert (client.ip, "server.shop.svc.cluster.local", "A") in dns
    assert all(d.resolver == testbed.DNS_IP and d.responses for d in log.dns)
    assert log.stats["packets"] > 0 and "dropped_connections" not in log.stats and "dropped_by_kernel" not in log.stats

    # The policies generated from it allow that traffic, as verify and network-config-analyzer judge.
    out = tmp_path / "policies"
    inv = str(bed.inventory_path)
    generated = CliRunner().invoke(main, ["generate", "--flows", str(flows_path), "--inventory", inv, "-o", str(out)])
    assert generated.exit_code == 0, generated.stderr
    verified = CliRunner().invoke(main, ["verify", "--policies", str(out), "--inventory", inv, "--flows", str(flows_path)])
    assert verified.exit_code == 0, verified.stdout
    objects = yaml.safe_load(Path(inv).read_text())["items"]
    truth = {(e["from"], e["to"], e["protocol"], e["port"]) for e in bed.truth()}
    truth.add(("shop/Deployment/client", "shop/Deployment/server", "TCP", 8080))
    ports = {(p, port) for _, _, p, port in truth}
    verdict = judge([f for f in out.glob("*.yaml") if f.name != "kustomization.yaml"], objects, sorted(ports))
    assert truth <= set(verdict.allowed), sorted(truth - set(verdict.allowed))


@needs_bed
def test_max_connections_bounds_the_table_and_counts_what_it_dropped(bed, tmp_path):
    flows_path = tmp_path / "flows.jsonl"
    s = Sniffing(bed, "--max-connections", "3", "--interval", "60", "-o", str(flows_path), "-i", "veth*")
    s.wait_for("listening on")
    server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
    tcp_calls(client, server.ip, 8080, 10)  # ten connections, pod to pod: ten 5-tuples
    time.sleep(0.2)
    assert s.stop() == 0
    (seg,) = segments(flows_path.read_text())
    flows = [line for line in seg if line["kind"] == "flow"]
    stats = seg[-1]
    assert [(f["src"], f["dst"], f["port"], f["connections"]) for f in flows] == [(client.ip, server.ip, 8080, 3)]
    assert stats["dropped_connections"] == 7
    assert stats["dropped_packets"] >= 7 * 2  # a SYN and a SYN-ACK each, at least


@needs_bed
def test_sigterm_while_a_segment_is_being_written_leaves_whole_segments(bed):
    # Stdout is a pipe nobody reads until after SIGTERM: the first large segment blocks in write.
    s = Sniffing(bed, "--interval", "0.5", "-i", "veth*", stdout=subprocess.PIPE)
    s.wait_for("listening on")
    client, server = bed.pods_of("shop", "client")[0], bed.pods_of("shop", "server")[0]
    in_pod(client, f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(20000, 20800):
    s.sendto(b"x", ({server.ip!r}, port))
""")
    # The segment holding them (~250 KB) is being written into a 64 KiB pipe: a thread of the
    # sniffer sleeps in the kernel's pipe_write.
    _wait(lambda: any("pipe_write" in _read(t / "wchan") for t in Path(f"/proc/{s.proc.pid}/task").iterdir()), timeout=10)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)  # a second one changes nothing
    text = s.proc.stdout.read()
    assert s.stop() == 0
    segs = segments(text)
    ports = {line["port"] for seg in segs for line in seg if line["kind"] == "flow" and line["dst"] == server.ip}
    assert set(range(20000, 20800)) <= ports


@needs_bed
def test_no_permission_to_capture_is_one_line_and_exit_2(bed):
    # As nobody when its user can run this Python, else as root without CAP_NET_RAW.
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", "import netpol_learn"],
                           capture_output=True)
    if probe.returncode == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        prefix = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"]
    s = Sniffing(bed, "-i", "lo", prefix=prefix, netns=False)
    s.proc.wait(30)
    s.reader.join(5)
    assert s.proc.returncode == 2
    assert s.lines == ["error: no permission to capture: packet sockets need CAP_NET_RAW (run as root, or grant the "
                       "capability; in a pod: securityContext.capabilities.add [NET_RAW])"]


@needs_bed
def test_an_interface_that_is_not_there_is_one_line_and_exit_2(bed):
    s = Sniffing(bed, "-i", "eth9")
    s.proc.wait(30)
    s.reader.join(5)
    assert s.proc.returncode == 2
    assert len(s.lines) == 1 and s.lines[0].startswith("error: interface eth9 not found (interfaces here: ") and "cni0" in s.lines[0]


@needs_bed
def test_sniff_in_a_cluster_names_the_pods_of_each_flow(bed, tmp_path):
    """The in-cluster path end to end: the sniffer finds the API from KUBERNETES_SERVICE_HOST and
    the service account files (mounted where a pod has them, in a mount namespace of its own),
    lists and watches the pods over https with the token, and names them in the flows."""
    from test_inventory_live import TLS_CERT, TLS_KEY

    (tmp_path / "ca.crt").write_text(TLS_CERT)
    (tmp_path / "key.pem").write_text(TLS_KEY)
    (tmp_path / "token").write_text("sniffer-token\n")
    api = FakeApi(netns=bed.node_ns, tls=(str(tmp_path / "ca.crt"), str(tmp_path / "key.pem")))
    try:
        api.pods = [item for item in bed.inventory()["items"] if item["kind"] == "Pod"]
        account = "/run/secrets/kubernetes.io/serviceaccount"
        mount = (f"mount -t tmpfs tmpfs /run && mkdir -p {account} && cp {tmp_path}/token {tmp_path}/ca.crt {account}/ "
                 '&& exec "$@"')
        flows_path = tmp_path / "flows.jsonl"
        s = Sniffing(bed, "-i", "veth*", "--interval", "60", "-o", str(flows_path), inside=["unshare", "--mount", "sh", "-c", mount, "sh"],
                     env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)})
        s.wait_for("listening on")
        s.wait_for("watching pods through the Kubernetes API")
        server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
        tcp_calls(client, server.ip, 8080, 1)
        time.sleep(0.2)
        assert s.stop() == 0
    finally:
        api.close()
    assert not [line for line in s.lines if line.startswith("warning:")], s.lines
    assert {r["auth"] for r in api.requests} == {"Bearer sniffer-token"} and any(r.get("watch") for r in api.requests)
    flow = next(f for f in read_flow_log(flows_path).flows if f.dst == server.ip and f.port == 8080)
    assert flow.src_pods == (f"shop/{client.name}",) and flow.dst_pods == (f"shop/{server.name}",)


def _forwarded(bed: TestBed) -> int:
    """IP datagrams the node namespace has routed (forwarded) so far."""
    snmp = subprocess.run([testbed._IP, "netns", "exec", bed.node_ns, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Ip:"))
    return int(dict(zip(names, values))["ForwDatagrams"])


@needs_bed
def test_sniff_on_the_bridge_sees_what_it_forwards_between_two_pods_and_makes_it_promiscuous_meanwhile(bed, tmp_path):
    # Two pods that reach each other over the link: cni0 forwards their frames from port to
    # port, the node's IP stack never sees them. A packet socket on a bridge gets those only
    # when the bridge is promiscuous.
    server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
    flows_path = tmp_path / "flows.jsonl"
    before = bed.link_promiscuity("cni0")
    with bed.bridged(client, server):
        route = subprocess.run([testbed._IP, "-n", client.netns, "route", "get", server.ip], capture_output=True, text=True,
                               check=True).stdout
        assert " via " not in route and " dev eth0 " in route, route
        s = Sniffing(bed, "-i", "cni0", "--interval", "60", "-o", str(flows_path))
        try:
            s.wait_for("listening on 1 interface (cni0)")
            during = bed.link_promiscuity("cni0")
            forwarded = _forwarded(bed)
            tcp_calls(client, server.ip, 8080, 2)
            assert _forwarded(bed) == forwarded  # bridged, not routed
            time.sleep(0.2)
        finally:
            assert s.stop() == 0
    assert not [line for line in s.lines if line.startswith("warning:")], s.lines
    assert (during, bed.link_promiscuity("cni0")) == (before + 1, before)  # the socket's membership, gone with it
    flows = {f.key: f for f in read_flow_log(flows_path).flows}
    direct = flows.get((client.ip, server.ip, "TCP", 8080))
    assert direct is not None, sorted(flows)
    assert direct.connections == 2 and dict(direct.direction) == {"syn": 2}


@needs_bed
def test_sniff_writes_its_segments_into_a_fifo(bed, tmp_path):
    fifo = tmp_path / "flows.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)  # to EOF: sniff closed it
    reader.start()
    s = Sniffing(bed, "-i", "veth*", "--interval", "60", "-o", str(fifo))
    s.wait_for("listening on")
    server, client = bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]
    tcp_calls(client, server.ip, 8080, 1)
    time.sleep(0.2)
    assert s.stop() == 0
    reader.join(10)
    assert not [line for line in s.lines if line.startswith(("warning:", "error:"))], s.lines
    (seg,) = segments(got[0])
    assert [(f["src"], f["dst"], f["port"]) for f in seg if f["kind"] == "flow"] == [(client.ip, server.ip, 8080)]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
