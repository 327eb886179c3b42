"""`netpol-learn capture` on the real captures in captures/real/ (provenance in README.md there).

The expected tables below were derived independently of netpol_learn's code, from tshark/tcpdump
output and the semantics in docs/flow-log.md (summary in captures/real/EXPECTED.md). Flow keys
are (src, dst, proto, port) with src the client and dst the server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fresh_process import SEEDS, netpol_learn
from netpol_learn._cli import main

# Every test runs with the C accelerator and with the reference code (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("capture_engine")

DATA = Path(__file__).parent.parent / "captures" / "real"


class OneOf:
    """An expected value where docs/flow-log.md allows more than one answer (e.g. rounding of
    nanosecond timestamps to microseconds, or whether a later copy moves last_seen)."""

    def __init__(self, *values):
        self.values = values

    def __eq__(self, other):
        return other in self.values

    def __repr__(self):
        return f"OneOf{self.values!r}"


def run_capture(tmp_path: Path, name: str, out_name: str = "f.jsonl") -> list[dict]:
    out = tmp_path / out_name
    result = CliRunner().invoke(main, ["capture", str(DATA / name), "-o", str(out)])
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "empty flow log"
    header = lines[0]
    assert header["kind"] == "header"
    assert header["format"] == "netpol-learn/flows"
    assert header["version"] == 2
    assert header["sources"] == [name]
    assert lines[-1]["kind"] == "stats"
    assert sum(1 for line in lines if line["kind"] == "stats") == 1
    kinds = [line["kind"] for line in lines[1:-1]]
    assert set(kinds) <= {"flow", "dns"}
    assert kinds == sorted(kinds, key=lambda k: k != "flow"), "flow lines must precede dns lines"
    return lines


def flows_of(lines: list[dict]) -> dict[tuple, dict]:
    flows = {}
    for line in lines:
        if line["kind"] == "flow":
            key = (line["src"], line["dst"], line["proto"], line["port"])
            assert key not in flows, f"flow key {key} appears twice"
            flows[key] = line
    return flows


def dns_of(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["kind"] == "dns"]


def stats_of(lines: list[dict]) -> dict:
    return lines[-1]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def stat_counter(stats: dict, word: str) -> int:
    """The one top-level stats counter whose name contains `word` (names are not fixed by
    docs/flow-log.md; the counters are: packets read, duplicates, loopback, non-IP, ...)."""
    keys = [k for k in stats if k not in ("kind", "tunnels") and _norm(word) in _norm(k)]
    if not keys and word == "read" and "packets" in stats:
        keys = ["packets"]  # "packets read" may be called just "packets"
    assert len(keys) == 1, f"expected one stats counter matching {word!r}, have {sorted(stats)}"
    return stats[keys[0]]


def numbers_in(obj) -> list[int]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [obj]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in numbers_in(v)]
    if isinstance(obj, list):
        return [n for v in obj for n in numbers_in(v)]
    return []


def _canon_translated(views):
    return sorted(json.dumps(v, sort_keys=True) for v in views)


def check_flows(flows: dict[tuple, dict], expected: dict[tuple, dict]) -> None:
    assert set(flows) == set(expected), (
        f"missing {sorted(set(expected) - set(flows), key=str)}; "
        f"unexpected {sorted(set(flows) - set(expected), key=str)}"
    )
    for key, want in expected.items():
        got = flows[key]
        for field, value in want.items():
            if field == "translated":
                assert _canon_translated(got["translated"]) == _canon_translated(value), (
                    f"{key} translated: got {got['translated']}, want {value}"
                )
            else:
                assert got[field] == value, f"{key} {field}: got {got[field]!r}, want {value!r}"


def tunnels_of(stats: dict) -> dict:
    tunnels = stats.get("tunnels", {})
    assert isinstance(tunnels, dict), f"tunnels should map encapsulation -> counts: {tunnels!r}"
    return tunnels


# ---------------------------------------------------------------------------------------------
# antrea-icmp-egress.pcapng: 10 echo requests, no replies, one identifier.
# Derived with:
#   tcpdump -nn -e -v -r antrea-icmp-egress.pcapng
#   tshark -r antrea-icmp-egress.pcapng -T fields -e frame.time_epoch -e ip.len -e ip.src -e ip.dst
#       -e icmp.type -e icmp.ident
# -> 10.244.1.3 > 8.8.8.8 echo request id 35 seq 1..10, ip.len 84 each (840 bytes).
#    Timestamps are nanosecond (pcapng tsresol 9): first 1739428765.028358299, last ...774.045651553.
EXPECTED_ANTREA_ICMP = {
    ("10.244.1.3", "8.8.8.8", "ICMP", None): {
        "packets": 10,
        "bytes": 840,
        "connections": 1,
        "direction": {"icmp-echo": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2025-02-13T06:39:25.028358Z",
        "last_seen": OneOf("2025-02-13T06:39:34.045651Z", "2025-02-13T06:39:34.045652Z"),
    },
}


def test_antrea_icmp_egress(tmp_path):
    lines = run_capture(tmp_path, "antrea-icmp-egress.pcapng")
    check_flows(flows_of(lines), EXPECTED_ANTREA_ICMP)
    assert dns_of(lines) == []
    stats = stats_of(lines)
    assert stat_counter(stats, "read") == 10
    assert not any(numbers_in(tunnels_of(stats)))


# ---------------------------------------------------------------------------------------------
# antrea-syn-egress.pcapng: five SYNs (no answers) from five client ports to 8.8.8.8:53; the
# TCP checksums are "incorrect" (offload) and must not make the packets be dropped.
# Derived with:
#   tcpdump -nn -e -v -r antrea-syn-egress.pcapng
#   tshark -r antrea-syn-egress.pcapng -T fields -e frame.time_epoch -e ip.len -e tcp.srcport
#       -e tcp.dstport -e tcp.flags.str
# -> ports 36773, 44453, 36093, 37613, 42479 > 53, flags S, ip.len 60 each (300 bytes).
#    No DNS payload, so no dns lines.
EXPECTED_ANTREA_SYN = {
    ("10.244.1.2", "8.8.8.8", "TCP", 53): {
        "packets": 5,
        "bytes": 300,
        "connections": 5,
        "direction": {"syn": 5},
        "client_ports": [],
        "translated": [],
        "first_seen": OneOf("2025-05-26T15:41:28.778887Z", "2025-05-26T15:41:28.778888Z"),
        "last_seen": OneOf("2025-05-26T15:41:33.819227Z", "2025-05-26T15:41:33.819228Z"),
    },
}


def test_antrea_syn_egress(tmp_path):
    lines = run_capture(tmp_path, "antrea-syn-egress.pcapng")
    check_flows(flows_of(lines), EXPECTED_ANTREA_SYN)
    assert dns_of(lines) == []
    assert stat_counter(stats_of(lines), "read") == 5


# ---------------------------------------------------------------------------------------------
# dns-over-tcp-srv.pcap: two packets of one TCP connection, no SYN. Frame 1 is a DNS query
# (QR=0) 10.233.78.0:10209 > 10.233.101.195:53, frame 2 the response (QR=1, NOERROR, 1 SRV
# answer, additional A 10.233.52.235 + OPT). The DNS message decides the roles ("dns" is stronger
# than "port-heuristic" and is not a heuristic, so client_ports stays empty). `answers` holds only
# A/AAAA/CNAME records of the answer section, so the SRV answer leaves it empty (the A record is
# in the additional section). Bytes: ip.len 146 + 347.
# Derived with:
#   tcpdump -nn -e -v -r dns-over-tcp-srv.pcap
#   tshark -r dns-over-tcp-srv.pcap -V -Y dns
#   tshark -r dns-over-tcp-srv.pcap -T fields -e frame.time_epoch -e ip.len
EXPECTED_DNS_TCP = {
    ("10.233.78.0", "10.233.101.195", "TCP", 53): {
        "packets": 2,
        "bytes": 493,
        "connections": 1,
        "direction": {"dns": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2025-05-08T10:14:26.321558Z",
        "last_seen": "2025-05-08T10:14:26.321627Z",
    },
}
EXPECTED_DNS_TCP_DNS = [
    {
        "answers": [],
        "client": "10.233.78.0",
        "first_seen": "2025-05-08T10:14:26.321558Z",
        "kind": "dns",
        "last_seen": "2025-05-08T10:14:26.321627Z",
        "qname": "_port0._tcp.deepflow-byconity-server.deepflow.svc.cluster.local",
        "qtype": "SRV",
        "queries": 1,
        "rcodes": ["NOERROR"],
        "resolver": "10.233.101.195",
        "responses": 1,
        "transports": ["tcp"],
    },
]


def test_dns_over_tcp_srv(tmp_path):
    lines = run_capture(tmp_path, "dns-over-tcp-srv.pcap")
    check_flows(flows_of(lines), EXPECTED_DNS_TCP)
    assert dns_of(lines) == EXPECTED_DNS_TCP_DNS
    assert stat_counter(stats_of(lines), "read") == 2


# ---------------------------------------------------------------------------------------------
# ovn-geneve.pcap: four Geneve packets (UDP 6081, VNI 3) between nodes 158.243.143.2/.3/.4, each
# carrying an Ethernet frame with ICMP. The outer UDP 6081 packets are not flows.
# Derived with:
#   tcpdump -nn -e -v -r ovn-geneve.pcap
#   tshark -r ovn-geneve.pcap -T fields -e geneve.vni -e ip.src -e ip.dst -e ip.len -e icmp.type
#       -e icmp.ident
# -> inner 10.156.0.19 > 10.156.0.28 echo request id 51952 + reply (inner ip.len 84 + 84);
#    inner 10.156.0.50 > 10.156.0.19 echo request id 138 + reply (inner ip.len 44 + 44).
EXPECTED_OVN_GENEVE = {
    ("10.156.0.19", "10.156.0.28", "ICMP", None): {
        "packets": 2,
        "bytes": 168,
        "connections": 1,
        "direction": {"icmp-echo": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2023-11-21T10:49:46.797529Z",
        "last_seen": "2023-11-21T10:49:46.797564Z",
    },
    ("10.156.0.50", "10.156.0.19", "ICMP", None): {
        "packets": 2,
        "bytes": 88,
        "connections": 1,
        "direction": {"icmp-echo": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2023-11-21T10:49:47.701448Z",
        "last_seen": "2023-11-21T10:49:47.702065Z",
    },
}


def test_ovn_geneve(tmp_path):
    lines = run_capture(tmp_path, "ovn-geneve.pcap")
    check_flows(flows_of(lines), EXPECTED_OVN_GENEVE)
    assert dns_of(lines) == []
    stats = stats_of(lines)
    assert stat_counter(stats, "read") == 4
    tunnels = tunnels_of(stats)
    assert set(k for k, v in tunnels.items() if any(numbers_in(v))) == {"geneve"}, tunnels
    assert 4 in numbers_in(tunnels["geneve"]), tunnels


# ---------------------------------------------------------------------------------------------
# vlan-ipip.pcap: 802.1Q (VLAN 252/253) + IP-in-IP (proto 4) between 10.162.x.x hosts; the outer
# packets are not flows, the inner ones are.
# Derived with:
#   tcpdump -nn -e -v -r vlan-ipip.pcap
#   tshark -r vlan-ipip.pcap -T fields -e vlan.id -e ip.src -e ip.dst -e ip.len -e tcp.srcport
#       -e tcp.dstport -e tcp.flags.str -e icmp.type
# -> frames 1-2: 27.36.55.113:49249 > 210.21.210.241:60030 SYN, then SYN-ACK back (inner ip.len
#    64 + 52). The SYN decides, although the server port is in the ephemeral range.
#    frame 3: 10.162.12.112 > 117.169.70.33 ICMP echo request id 11926 (inner ip.len 1428).
#    frames 4-5: 61.144.252.235:60029 > 183.9.205.187:31356, two PSH/ACK mid-stream (414 + 78);
#    no SYN/DNS: port-heuristic, 31356 is outside 32768-65535 so it is the server's port.
EXPECTED_VLAN_IPIP = {
    ("27.36.55.113", "210.21.210.241", "TCP", 60030): {
        "packets": 2,
        "bytes": 116,
        "connections": 1,
        "direction": {"syn": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2021-11-05T10:47:11.958163Z",
        "last_seen": "2021-11-05T10:47:11.958198Z",
    },
    ("10.162.12.112", "117.169.70.33", "ICMP", None): {
        "packets": 1,
        "bytes": 1428,
        "connections": 1,
        "direction": {"icmp-echo": 1},
        "client_ports": [],
        "translated": [],
        "first_seen": "2021-11-05T10:47:11.959110Z",
        "last_seen": "2021-11-05T10:47:11.959110Z",
    },
    ("61.144.252.235", "183.9.205.187", "TCP", 31356): {
        "packets": 2,
        "bytes": 492,
        "connections": 1,
        "direction": {"port-heuristic": 1},
        "client_ports": [60029],
        "translated": [],
        "first_seen": "2021-11-05T10:47:11.960263Z",
        "last_seen": "2021-11-05T10:47:11.960275Z",
    },
}


def test_vlan_ipip(tmp_path):
    lines = run_capture(tmp_path, "vlan-ipip.pcap")
    check_flows(flows_of(lines), EXPECTED_VLAN_IPIP)
    assert dns_of(lines) == []
    stats = stats_of(lines)
    assert stat_counter(stats, "read") == 5
    tunnels = tunnels_of(stats)
    assert set(k for k, v in tunnels.items() if any(numbers_in(v))) == {"ipip"}, tunnels
    assert 5 in numbers_in(tunnels["ipip"]), tunnels


# ---------------------------------------------------------------------------------------------
# kind-antrea-node-any.pcap: Linux cooked v2, `tcpdump -i any` on a one-node kind/Antrea node.
# Interfaces (sll.ifindex): 1 = lo (hatype 772), 2 = eth0 (172.20.0.2), 5 and 10 = antrea-gw0
# and the pod's veth. 1290 frames: 4 ARP, 793 loopback-address packets (738 IPv4 127.0.0.1 +
# 55 IPv6 ::1) which are dropped, 36 ICMP frames = 12 packets x 3 views, 114 TCP on eth0, 343
# TCP on lo between non-loopback addresses (172.20.0.2 <-> 172.20.0.2, 10.96.0.1).
# Derived with:
#   tshark -r kind-antrea-node-any.pcap -T fields -E separator=/t -e frame.number
#       -e frame.time_epoch -e sll.ifindex -e sll.pkttype -e sll.hatype -e ip.src -e ipv6.src
#       -e tcp.srcport -e ip.dst -e ipv6.dst -e tcp.dstport -e ip.id -e ip.len -e tcp.seq_raw
#       -e tcp.ack_raw -e tcp.flags -e icmp.type -e icmp.ident -e icmp.seq
#   then grouping by fingerprint (ip.id, ip.len, seq, ack, flags, icmp type/id/seq): the ONLY
#   copies in the file are the ICMP packets, each seen on ifindex 10, 5 (10.244.0.5 <-> 8.8.8.8)
#   and 2 (172.20.0.2 <-> 8.8.8.8, after SNAT), e.g. frames 246/247/248 (ip.id 0x2997) and
#   replies 255/256/257 -> 24 duplicates dropped; the pod view comes first (frame 246), so the
#   SNAT view is `translated`. Echo identifiers 1843 and 1845 -> 2 connections.
#   ClusterIP: on lo, frames 224, 419, 422, 1181, 1287, 1288 are 10.96.0.1:443 > 172.20.0.2:38240
#   (reply half after un-DNAT) and frames 225, 420, 421, 425, 1182, 1285, 1286, 1289 are
#   172.20.0.2:34046 > 172.20.0.2:6443 (forward half after DNAT + source-port rewrite). They are
#   ONE TCP connection: frame 224 seq 2928295857 + 162 bytes = frame 225's ack 2928296019, and
#   224's ack 2150040723 = 225's seq. The earliest view (frame 224) is 172.20.0.2 ->
#   10.96.0.1:443; the DNAT view is `translated` and must not count as a connection of
#   172.20.0.2 -> 172.20.0.2:6443. Neither half has a SYN: port-heuristic (443 / 6443).
#   172.20.0.2 -> 172.20.0.2 is not loopback by docs/flow-log.md (only 127.0.0.0/8 and ::1):
#   :6443 has 8 connections with SYN (client ports 42280..42344) and 4 mid-stream (34390, 34392,
#   55520, 55618); :10250 (46398, first packet is from the server, frame 1) and :10349 (39972;
#   10349 is outside the ephemeral range) are mid-stream.
#   eth0: 172.20.0.1:52772 and :52756 > 172.20.0.2:6443, both mid-stream (52772's first frame,
#   2, is from the server).
EXPECTED_KIND_ANTREA = {
    ("172.20.0.1", "172.20.0.2", "TCP", 6443): {
        "packets": 114,
        "bytes": 597190,
        "connections": 2,
        "direction": {"port-heuristic": 2},
        "client_ports": [52756, 52772],
        "translated": [],
        "first_seen": "2026-02-10T11:23:59.418846Z",
        "last_seen": "2026-02-10T11:23:59.424771Z",
    },
    ("10.244.0.5", "8.8.8.8", "ICMP", None): {
        "packets": 12,
        "bytes": 1008,
        "connections": 2,
        "direction": {"icmp-echo": 2},
        "client_ports": [],
        "translated": [{"dst": "8.8.8.8", "port": None, "src": "172.20.0.2"}],
        "first_seen": "2026-02-10T11:23:59.785290Z",
        # last reply: first view frame 1256 (eth0), its copies 1257/1258 follow within 81 us
        "last_seen": OneOf("2026-02-10T11:24:05.892569Z", "2026-02-10T11:24:05.892650Z"),
    },
    ("172.20.0.2", "10.96.0.1", "TCP", 443): {
        "packets": 14,
        "bytes": 7437,
        "connections": 1,
        "direction": {"port-heuristic": 1},
        "translated": [{"dst": "172.20.0.2", "port": 6443, "src": "172.20.0.2"}],
        "first_seen": "2026-02-10T11:23:59.567368Z",
        "last_seen": "2026-02-10T11:24:06.265449Z",
    },
    ("172.20.0.2", "172.20.0.2", "TCP", 6443): {
        "packets": 301,
        "bytes": 52320,
        "connections": 12,
        "direction": {"syn": 8, "port-heuristic": 4},
        "translated": [],
        "first_seen": "2026-02-10T11:23:59.471463Z",
        "last_seen": "2026-02-10T11:24:06.124122Z",
    },
    ("172.20.0.2", "172.20.0.2", "TCP", 10250): {
        "packets": 25,
        "bytes": 130894,
        "connections": 1,
        "direction": {"port-heuristic": 1},
        "client_ports": [46398],
        "translated": [],
        "first_seen": "2026-02-10T11:23:59.418829Z",
        "last_seen": "2026-02-10T11:23:59.421010Z",
    },
    ("172.20.0.2", "172.20.0.2", "TCP", 10349): {
        "packets": 3,
        "bytes": 234,
        "connections": 1,
        "direction": {"port-heuristic": 1},
        "client_ports": [39972],
        "translated": [],
        "first_seen": "2026-02-10T11:23:59.470415Z",
        "last_seen": "2026-02-10T11:23:59.470583Z",
    },
}


def test_kind_antrea_node_any(tmp_path, capture_engine):
    lines = run_capture(tmp_path, "kind-antrea-node-any.pcap")
    flows = flows_of(lines)
    check_flows(flows, EXPECTED_KIND_ANTREA)
    # the client port of the ClusterIP view is 38240 (34046 is the port after NAT)
    assert 38240 in flows[("172.20.0.2", "10.96.0.1", "TCP", 443)]["client_ports"]
    assert dns_of(lines) == []
    stats = stats_of(lines)
    assert stat_counter(stats, "read") == 1290
    assert stat_counter(stats, "dup") == 24
    assert stat_counter(stats, "loopback") == 793
    assert stat_counter(stats, "nonip") == 4
    assert not any(numbers_in(tunnels_of(stats)))
    # the same input gives a byte-identical log, in processes with different hash seeds too
    for seed in SEEDS:
        r = netpol_learn(["capture", DATA / "kind-antrea-node-any.pcap", "-o", tmp_path / f"{seed}.jsonl"], seed, engine=capture_engine)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"{seed}.jsonl").read_bytes() == (tmp_path / "f.jsonl").read_bytes(), seed
