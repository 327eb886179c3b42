"""`netpol-learn capture` on synthetic captures: one test per rule of docs/flow-log.md.

Every capture here is built by tests/pcapgen.py, so each test knows exactly which packets the
reader sees and can state the expected flow log precisely.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402
from fresh_process import SEEDS, netpol_learn  # noqa: E402
from pcapgen import T0  # noqa: E402

from netpol_learn._cli import main  # noqa: E402

# Every test runs with the C accelerator and with the reference code (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("capture_engine")


# --------------------------------------------------------------------------------------------
# running the command and reading the log


class Log:
    def __init__(self, raw: bytes):
        self.raw = raw
        text = raw.decode("utf-8")
        assert text.endswith("\n"), "the log must end with a newline"
        assert "\r" not in text
        self.lines = [json.loads(line) for line in text.split("\n")[:-1]]
        kinds = [line.get("kind") for line in self.lines]
        assert kinds and kinds[0] == "header", kinds
        assert kinds[-1] == "stats" and kinds.count("stats") == 1, kinds
        self.header = self.lines[0]
        self.stats = self.lines[-1]
        self.flows = [line for line in self.lines if line.get("kind") == "flow"]
        self.dns = [line for line in self.lines if line.get("kind") == "dns"]

    def flow_keys(self):
        return sorted((f["src"], f["dst"], f["proto"], f["port"]) for f in self.flows)

    def flow(self, src, dst, proto, port):
        found = [f for f in self.flows
                 if (f["src"], f["dst"], f["proto"], f["port"]) == (src, dst, proto, port)]
        assert len(found) == 1, f"no single flow {(src, dst, proto, port)}; flows: {self.flow_keys()}"
        return found[0]

    def only_flow(self):
        assert len(self.flows) == 1, f"expected one flow, got {self.flow_keys()}"
        return self.flows[0]

    def only_dns(self):
        assert len(self.dns) == 1, f"expected one dns line, got {[(d['client'], d['resolver'], d['qname'], d['qtype']) for d in self.dns]}"
        return self.dns[0]

    def body(self):
        """Flow and dns lines (what must not depend on the file format)."""
        return [line for line in self.lines if line.get("kind") in ("flow", "dns")]


def invoke(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("command crashed:\n" + "".join(traceback.format_exception(*result.exc_info)))
    return result


def capture(tmp_path, *paths, extra=(), out="out.jsonl") -> Log:
    out = Path(tmp_path) / out
    result = invoke(["capture", *paths, "-o", out, *extra])
    assert result.exit_code == 0, f"exit {result.exit_code}; stderr: {result.stderr}"
    return Log(out.read_bytes())


def capture_records(tmp_path, records, name="c.pcap", linktype=g.LINKTYPE_ETHERNET, extra=(), **kw) -> Log:
    path = g.write_pcap(Path(tmp_path) / name, g.by_time(records), linktype=linktype, **kw)
    return capture(tmp_path, path, extra=extra)


def capture_pcapng(tmp_path, records, interfaces, name="c.pcapng", extra=(), **kw) -> Log:
    path = g.write_pcapng(Path(tmp_path) / name, g.by_time(records), interfaces=interfaces, **kw)
    return capture(tmp_path, path, extra=extra)


STATS_COUNTERS = {"packets", "decoded", "duplicates", "loopback", "non_ip", "truncated", "icmp_control",
                  "fragments_joined", "fragments_orphaned", "dns_malformed", "nat_views", "tunnel_too_deep"}


def counter(stats, name):
    """A stats counter by its documented name; a counter that stayed at zero is left out."""
    assert name in STATS_COUNTERS, name
    value = stats.get(name, 0)
    assert isinstance(value, int) and not isinstance(value, bool), (name, value)
    return value


def tunnel_entry(stats, name):
    tunnels = stats.get("tunnels")
    assert isinstance(tunnels, dict), f"stats have no tunnels: {stats}"
    assert name in tunnels, f"no {name!r} in stats tunnels: {tunnels}"
    return tunnels[name]


def check_flow(f, *, packets=None, bytes_=None, connections=None, direction=None, first=None, last=None,
               translated=None, client_ports=None):
    if packets is not None:
        assert f["packets"] == packets, f
    if bytes_ is not None:
        assert f["bytes"] == bytes_, f
    if connections is not None:
        assert f["connections"] == connections, f
    if direction is not None:
        assert f["direction"] == direction, f
    if first is not None:
        assert f["first_seen"] == g.iso(first), f
    if last is not None:
        assert f["last_seen"] == g.iso(last), f
    if translated is not None:
        assert f["translated"] == translated, f
    if client_ports is not None:
        assert f["client_ports"] == client_ports, f


# addresses used throughout
POD_A = "10.244.0.5"
POD_B = "10.244.1.7"
SVC_DNS = "10.96.0.10"
V6_A = "fd00:10:244::5"
V6_B = "fd00:10:244:1::7"


def mixed_traffic(t0=T0 + 0.25):
    """TCP with handshake, DNS over UDP and an ICMP echo: the scenario of the format tests."""
    recs = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=t0)
    recs += g.dns_udp(POD_A, SVC_DNS, "api.example.com", "A", [("api.example.com", "A", 60, "192.0.2.10")],
                      t0=t0 + 0.5, cport=40002)
    recs += g.icmp_echo(POD_A, POD_B, ident=7, seqs=(1, 2), t0=t0 + 1.000123)
    recs += g.tcp_session(V6_A, V6_B, 40003, 443, t0=t0 + 2.5)
    return g.by_time(recs)


# --------------------------------------------------------------------------------------------
# file formats


FORMAT_VARIANTS = {
    "pcap-le-us": dict(kind="pcap", byteorder="<", nanosecond=False),
    "pcap-be-us": dict(kind="pcap", byteorder=">", nanosecond=False),
    "pcap-le-ns": dict(kind="pcap", byteorder="<", nanosecond=True),
    "pcap-be-ns": dict(kind="pcap", byteorder=">", nanosecond=True),
    "pcapng-le": dict(kind="pcapng", byteorder="<", tsresol=None),
    "pcapng-be": dict(kind="pcapng", byteorder=">", tsresol=None),
    "pcapng-le-tsresol-us": dict(kind="pcapng", byteorder="<", tsresol=6),
    "pcapng-le-ns": dict(kind="pcapng", byteorder="<", tsresol=9),
    "pcapng-be-ns": dict(kind="pcapng", byteorder=">", tsresol=9),
    "pcapng-le-isb": dict(kind="pcapng", byteorder="<", tsresol=None, trailing_isb=True),
    "pcap-le-us-gzip": dict(kind="pcap", byteorder="<", nanosecond=False, gzip=True),
    "pcap-be-ns-gzip": dict(kind="pcap", byteorder=">", nanosecond=True, gzip=True),
    "pcapng-be-ns-gzip": dict(kind="pcapng", byteorder=">", tsresol=9, gzip=True),
}


def write_variant(path_base: Path, records, variant: str) -> Path:
    v = dict(FORMAT_VARIANTS[variant])
    kind = v.pop("kind")
    gz = v.pop("gzip", False)
    suffix = (".pcap" if kind == "pcap" else ".pcapng") + (".gz" if gz else "")
    path = path_base.with_name(path_base.name + suffix)
    if kind == "pcap":
        return g.write_pcap(path, records, g.LINKTYPE_ETHERNET, v["byteorder"], v["nanosecond"], gzip=gz)
    iface = g.Iface(g.LINKTYPE_ETHERNET, tsresol=v["tsresol"])
    return g.write_pcapng(path, records, [iface], v["byteorder"], gzip=gz, trailing_isb=v.get("trailing_isb", False))


@pytest.fixture(scope="module")
def reference_body(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    recs = mixed_traffic()
    path = g.write_pcap(d / "ref.pcap", recs)
    log = capture(d, path)
    # the reference itself is right: spot-check it against the packets
    f = log.flow(POD_A, POD_B, "TCP", 8080)
    tcp = [r for r in recs if g.TCP in r[1] and r[1][g.TCP].dport in (8080, 40001)]
    check_flow(f, packets=len(tcp), bytes_=g.total_l3(tcp), first=T0 + 0.25, last=tcp[-1][0])
    icmp = log.flow(POD_A, POD_B, "ICMP", None)
    check_flow(icmp, packets=4, first=T0 + 1.250123)
    return recs, log.body()


@pytest.mark.parametrize("variant", sorted(FORMAT_VARIANTS))
def test_file_variant_gives_same_flows(tmp_path, reference_body, variant):
    recs, body = reference_body
    path = write_variant(tmp_path / "node-a", recs, variant)
    log = capture(tmp_path, path)
    assert log.body() == body
    assert log.header["sources"] == [path.name]


LINK_TYPES = {
    "ethernet": dict(linktype=g.LINKTYPE_ETHERNET),
    "linux-sll": dict(linktype=g.LINKTYPE_LINUX_SLL),
    "linux-sll2": dict(linktype=g.LINKTYPE_LINUX_SLL2),
    "raw": dict(linktype=g.LINKTYPE_RAW),
    "null-le": dict(linktype=g.LINKTYPE_NULL, byteorder="<"),
    "null-be": dict(linktype=g.LINKTYPE_NULL, byteorder=">"),
}


@pytest.mark.parametrize("name", sorted(LINK_TYPES))
def test_link_type(tmp_path, name):
    v4 = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    v6 = g.tcp_session(V6_A, V6_B, 40003, 443, t0=T0 + 1)
    log = capture_records(tmp_path, v4 + v6, **LINK_TYPES[name])
    assert log.flow_keys() == sorted([(POD_A, POD_B, "TCP", 8080), (V6_A, V6_B, "TCP", 443)])
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), packets=len(v4), bytes_=g.total_l3(v4),
               connections=1, direction={"syn": 1}, first=v4[0][0], last=v4[-1][0])
    check_flow(log.flow(V6_A, V6_B, "TCP", 443), packets=len(v6), bytes_=g.total_l3(v6),
               connections=1, direction={"syn": 1}, first=v6[0][0], last=v6[-1][0])


@pytest.mark.parametrize("af", [g.AF_INET6_BSD, g.AF_INET6_FREEBSD, g.AF_INET6_DARWIN])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_null_link_type_ipv6_address_families(tmp_path, af, byteorder):
    """LINKTYPE_NULL marks IPv6 with 24, 28 or 30 depending on the OS that wrote the file."""
    v6 = g.tcp_session(V6_A, V6_B, 40003, 443, t0=T0)
    data = g.pcap_header(g.LINKTYPE_NULL, byteorder) + b"".join(
        g.pcap_record(ts, g.null_frame(p, af, byteorder), byteorder) for ts, p in v6)
    path = g.write_bytes(tmp_path / "lo.pcap", data)
    log = capture(tmp_path, path)
    check_flow(log.flow(V6_A, V6_B, "TCP", 443), packets=len(v6), bytes_=g.total_l3(v6))


def test_pcapng_interfaces_of_different_link_types(tmp_path):
    eth = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    raw = g.tcp_session("10.244.2.2", "10.244.3.3", 40002, 5432, t0=T0 + 0.123456)
    sll2 = g.udp_exchange(V6_A, V6_B, 40003, 123, t0=T0 + 0.654321)
    recs = g.on_iface(eth, 0) + g.on_iface(raw, 1) + g.on_iface(sll2, 2)
    ifaces = [g.Iface(g.LINKTYPE_ETHERNET), g.Iface(g.LINKTYPE_RAW, tsresol=9),
              g.Iface(g.LINKTYPE_LINUX_SLL2, tsresol=6)]
    log = capture_pcapng(tmp_path, recs, ifaces)
    assert log.flow_keys() == sorted([(POD_A, POD_B, "TCP", 8080), ("10.244.2.2", "10.244.3.3", "TCP", 5432),
                                      (V6_A, V6_B, "UDP", 123)])
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), packets=len(eth), first=eth[0][0], last=eth[-1][0])
    check_flow(log.flow("10.244.2.2", "10.244.3.3", "TCP", 5432), packets=len(raw), bytes_=g.total_l3(raw),
               first=raw[0][0], last=raw[-1][0])
    check_flow(log.flow(V6_A, V6_B, "UDP", 123), packets=2, bytes_=g.total_l3(sll2), first=sll2[0][0])


@pytest.mark.parametrize("second_interfaces", ["fewer", "as many"])
def test_pcapng_sections_each_with_their_own_interfaces(tmp_path, second_interfaces):
    """Two pcapng sections one after the other (``cat a.pcapng b.pcapng``): each section's
    packets are read with that section's interfaces (link type, timestamp resolution), also
    when both sections' packets fall in one chunk."""
    eth = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    raw = g.tcp_session("10.244.2.2", "10.244.3.3", 40002, 5432, t0=T0 + 10.123456)
    first = g.pcapng_bytes(g.on_iface(eth, 1), [g.Iface(g.LINKTYPE_LINUX_SLL2), g.Iface(g.LINKTYPE_ETHERNET, tsresol=9)])
    second_ifaces = [g.Iface(g.LINKTYPE_RAW)] + ([g.Iface(g.LINKTYPE_RAW, tsresol=9)] if second_interfaces == "as many" else [])
    second = g.pcapng_bytes(g.on_iface(raw, len(second_ifaces) - 1), second_ifaces)
    log = capture(tmp_path, g.write_bytes(tmp_path / "two.pcapng", first + second))
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), packets=len(eth), bytes_=g.total_l3(eth), first=eth[0][0], last=eth[-1][0])
    check_flow(log.flow("10.244.2.2", "10.244.3.3", "TCP", 5432), packets=len(raw), bytes_=g.total_l3(raw),
               first=raw[0][0], last=raw[-1][0])


# --------------------------------------------------------------------------------------------
# layer 2 and 3 variations


@pytest.mark.parametrize("tagging", ["dot1q", "qinq-88a8", "qinq-8100", "qinq-9100"])
def test_vlan_tags(tmp_path, tagging):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    if tagging == "dot1q":
        recs = g.encapsulate(tcp, g.vlan, 100)
    else:
        tpid = {"qinq-88a8": 0x88A8, "qinq-8100": 0x8100, "qinq-9100": 0x9100}[tagging]
        recs = g.encapsulate(tcp, g.qinq, 200, 100, tpid)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "TCP", 8080)
    check_flow(f, packets=len(tcp), bytes_=g.total_l3(tcp), direction={"syn": 1})


def test_ipv4_options(tmp_path):
    recs = g.ipv4_with_options(POD_A, POD_B, 40001, 8080)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "TCP", 8080)
    check_flow(f, packets=len(recs), bytes_=g.total_l3(recs), direction={"syn": 1}, connections=1)


def test_ipv6_extension_headers(tmp_path):
    recs = g.ipv6_with_ext_headers(V6_A, V6_B, 40001, 8080)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (V6_A, V6_B, "TCP", 8080)
    check_flow(f, packets=len(recs), bytes_=g.total_l3(recs), direction={"syn": 1}, connections=1)


@pytest.mark.parametrize("order", ["in-order", "reversed", "first-missing"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_fragments_do_not_make_bogus_ports(tmp_path, family, order):
    """Only the first fragment has the UDP header; later ones start with bytes that would read as
    ports 7777 -> 8888. The flow is the first fragment's, and no flow has those ports, whatever
    order the fragments come in (and none at all when the first fragment was not captured)."""
    if family == "ipv4":
        frags = g.ipv4_fragments(POD_A, POD_B, 40001, 514, fake_ports=(7777, 8888))
        client, server = POD_A, POD_B
    else:
        frags = g.ipv6_fragments(V6_A, V6_B, 40001, 514, fake_ports=(7777, 8888))
        client, server = V6_A, V6_B
    assert len(frags) == 3
    expected = [(client, server, "UDP", 514)]
    if order == "reversed":  # same timestamps, last fragment written first
        frags = [(frags[i][0], frags[2 - i][1]) for i in range(3)]
    elif order == "first-missing":
        frags = frags[1:]
        expected = []
    path = g.write_pcap(tmp_path / "frag.pcap", frags)
    log = capture(tmp_path, path)
    assert log.flow_keys() == expected
    for f in log.flows:
        assert f["port"] not in (7777, 8888)
        assert 7777 not in f["client_ports"] and 8888 not in f["client_ports"]
    joined, orphaned = counter(log.stats, "fragments_joined"), counter(log.stats, "fragments_orphaned")
    if order == "in-order":
        assert (joined, orphaned) == (2, 0)
    elif order == "first-missing":
        assert (joined, orphaned) == (0, 2)
    else:
        assert joined + orphaned == 2


PROTOCOL_CASES = {
    "tcp": (lambda: g.tcp_session(POD_A, POD_B, 40001, 8080), (POD_A, POD_B, "TCP", 8080), {"syn": 1}),
    "udp": (lambda: g.udp_exchange(POD_A, POD_B, 40001, 123), (POD_A, POD_B, "UDP", 123), None),
    "sctp": (lambda: g.sctp_init(POD_A, POD_B, 40001, 38412), (POD_A, POD_B, "SCTP", 38412), {"sctp-init": 1}),
    "icmp": (lambda: g.icmp_echo(POD_A, POD_B, ident=9, seqs=(1, 2, 3)), (POD_A, POD_B, "ICMP", None),
             {"icmp-echo": 1}),
    "icmpv6": (lambda: g.icmp_echo(V6_A, V6_B, ident=9, seqs=(1, 2)), (V6_A, V6_B, "ICMPv6", None),
               {"icmp-echo": 1}),
    "other-ip-protocol": (lambda: g.other_protocol(POD_A, POD_B, proto=50), (POD_A, POD_B, "IP-50", None),
                          {"first-packet": 1}),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_CASES))
def test_protocol(tmp_path, name):
    build, key, direction = PROTOCOL_CASES[name]
    recs = build()
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == key
    check_flow(f, packets=len(recs), bytes_=g.total_l3(recs), connections=1, first=recs[0][0], last=recs[-1][0],
               translated=[])
    if direction is not None:
        assert f["direction"] == direction
    else:  # UDP: no handshake; the well-known port or the first packet decides, same answer here
        assert sum(f["direction"].values()) == 1
        assert set(f["direction"]) <= {"port-heuristic", "first-packet"}


def test_non_ip_frames_are_not_flows(tmp_path):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    log = capture_records(tmp_path, tcp + g.arp_noise(T0, n=3))
    assert log.flow_keys() == [(POD_A, POD_B, "TCP", 8080)]
    assert counter(log.stats, "non_ip") == 3


# --------------------------------------------------------------------------------------------
# tunnels

OUT_A, OUT_B = "192.168.10.1", "192.168.10.2"

TUNNELS = {
    "vxlan-4789": ("vxlan", lambda p, a, b: g.vxlan(p, a, b, port=4789, vni=42), "v4"),
    "vxlan-8472": ("vxlan", lambda p, a, b: g.vxlan(p, a, b, port=8472, vni=1), "v4"),
    "geneve": ("geneve", lambda p, a, b: g.geneve(p, a, b, vni=3), "v4"),
    "ipip": ("ipip", lambda p, a, b: g.ipip(p, a, b), "v4"),
    "ipv6-in-ipv4": ("ip6ip", lambda p, a, b: g.ip6in4(p, a, b), "v6"),
    "gre-key-ipv4": ("gre", lambda p, a, b: g.gre(p, a, b, key=0x2A), "v4"),
    "gre-ethernet": ("gre", lambda p, a, b: g.gre(p, a, b, key=7, ethernet=True), "v4"),
    "gre-no-key": ("gre", lambda p, a, b: g.gre(p, a, b, key=None), "v4"),
    "flannel-udp": ("flannel-udp", lambda p, a, b: g.flannel_udp(p, a, b), "v4"),
}


def through_tunnel(records, wrap, client):
    """Client packets go OUT_A -> OUT_B, replies OUT_B -> OUT_A."""
    out = []
    for ts, p in records:
        src = (p[g.IP] if g.IP in p else p[g.IPv6]).src
        out.append((ts, wrap(p, OUT_A, OUT_B) if src == client else wrap(p, OUT_B, OUT_A)))
    return out


@pytest.mark.parametrize("name", sorted(TUNNELS))
def test_tunnel_gives_inner_flow_only(tmp_path, name):
    encap, wrap, family = TUNNELS[name]
    if family == "v4":
        inner = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
        key = (POD_A, POD_B, "TCP", 8080)
    else:
        inner = g.tcp_session(V6_A, V6_B, 40001, 8080, t0=T0)
        key = (V6_A, V6_B, "TCP", 8080)
    recs = through_tunnel(inner, wrap, key[0])
    n_fwd = sum(1 for ts, p in inner if (p[g.IP] if g.IP in p else p[g.IPv6]).src == key[0])
    log = capture_records(tmp_path, recs)
    # the inner flow and nothing for the outer UDP/IP packets
    assert log.flow_keys() == [key]
    f = log.only_flow()
    check_flow(f, packets=len(inner), bytes_=g.total_l3(inner), direction={"syn": 1}, connections=1,
               first=inner[0][0], last=inner[-1][0])
    assert tunnel_entry(log.stats, encap) == {
        "endpoints": {f"{OUT_A} > {OUT_B}": n_fwd, f"{OUT_B} > {OUT_A}": len(inner) - n_fwd},
        "packets": len(inner)}
    assert set(log.stats["tunnels"]) == {encap}
    assert counter(log.stats, "packets") == len(recs)
    assert counter(log.stats, "decoded") == len(inner)


def test_packet_inside_and_outside_tunnel_counts_once(tmp_path):
    """A pod's packet seen on its veth (plain) and on the underlay (VXLAN) is one packet."""
    inner = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    plain = g.on_iface(inner, 0)
    wrapped = [(g.D(ts) + g.D("0.00003"), 1, g.vxlan(p, OUT_A, OUT_B)) for ts, p in inner]
    log = capture_pcapng(tmp_path, plain + wrapped, [g.LINKTYPE_ETHERNET, g.LINKTYPE_ETHERNET])
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "TCP", 8080)
    check_flow(f, packets=len(inner), bytes_=g.total_l3(inner), connections=1, first=inner[0][0])


# --------------------------------------------------------------------------------------------
# direction

DIRECTION_CASES = {
    # name: (records, expected key, expected direction, expected client_ports or None)
    "syn": (lambda: g.tcp_session(POD_A, POD_B, 40001, 8443), (POD_A, POD_B, "TCP", 8443), "syn", []),
    # the capture starts at the SYN-ACK: its first packet comes from the server
    "syn-ack": (lambda: g.tcp_session(POD_A, POD_B, 50001, 8443, start="syn-ack"), (POD_A, POD_B, "TCP", 8443),
                "syn-ack", []),
    # mid-stream, first packet from the server: the well-known / common server port decides
    "port-heuristic-below-1024": (lambda: g.tcp_session(POD_A, POD_B, 45000, 443, start="mid"),
                                  (POD_A, POD_B, "TCP", 443), "port-heuristic", [45000]),
    "port-heuristic-common-port": (lambda: g.tcp_session(POD_A, POD_B, 45000, 5432, start="mid"),
                                   (POD_A, POD_B, "TCP", 5432), "port-heuristic", [45000]),
    "port-heuristic-6443": (lambda: g.tcp_session(POD_A, POD_B, 45000, 6443, start="mid"),
                            (POD_A, POD_B, "TCP", 6443), "port-heuristic", [45000]),
    "port-heuristic-10250": (lambda: g.tcp_session(POD_A, POD_B, 45000, 10250, start="mid"),
                             (POD_A, POD_B, "TCP", 10250), "port-heuristic", [45000]),
    "port-heuristic-non-ephemeral": (lambda: g.tcp_session(POD_A, POD_B, 45000, 15000, start="mid"),
                                     (POD_A, POD_B, "TCP", 15000), "port-heuristic", [45000]),
    # mid-stream, both ports ephemeral: the first packet's sender is the client
    "first-packet": (lambda: g.tcp_data_exchange(POD_B, POD_A, 40000, 50000), (POD_B, POD_A, "TCP", 50000),
                     "first-packet", [40000]),
    "icmp-echo-request": (lambda: g.icmp_echo(POD_A, POD_B, ident=3), (POD_A, POD_B, "ICMP", None),
                          "icmp-echo", None),
    # only the reply was captured: its receiver is the client
    "icmp-echo-reply-only": (lambda: g.icmp_echo(POD_A, POD_B, ident=3, reply_only=True),
                             (POD_A, POD_B, "ICMP", None), "icmp-echo", None),
    "icmpv6-echo-reply-only": (lambda: g.icmp_echo(V6_A, V6_B, ident=3, reply_only=True),
                               (V6_A, V6_B, "ICMPv6", None), "icmp-echo", None),
    "dns-query-and-response": (lambda: g.dns_udp(POD_A, SVC_DNS, "a.example.com", cport=40000),
                               (POD_A, SVC_DNS, "UDP", 53), "dns", None),
    # only the response was captured: its sender is the server
    "dns-response-only": (lambda: g.dns_udp(POD_A, SVC_DNS, "a.example.com", cport=40000, query=False,
                                            answers=[("a.example.com", "A", 5, "192.0.2.1")]),
                          (POD_A, SVC_DNS, "UDP", 53), "dns", None),
    "sctp-init": (lambda: g.sctp_init(POD_A, POD_B, 40001, 3868), (POD_A, POD_B, "SCTP", 3868), "sctp-init", []),
    # only the INIT ACK was captured: its receiver is the client
    "sctp-init-ack-only": (lambda: g.sctp_init(POD_A, POD_B, 40001, 3868, start="init-ack"),
                           (POD_A, POD_B, "SCTP", 3868), "sctp-init", []),
}


@pytest.mark.parametrize("name", sorted(DIRECTION_CASES))
def test_direction_method(tmp_path, name):
    build, key, method, client_ports = DIRECTION_CASES[name]
    recs = build()
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == key
    check_flow(f, direction={method: 1}, connections=1, packets=len(recs))
    if client_ports is not None:
        assert f["client_ports"] == client_ports


def test_syn_is_stronger_than_port_heuristic(tmp_path):
    """A SYN from port 443 to port 50000: the SYN's sender is the client whatever the ports say."""
    recs = g.tcp_session(POD_A, POD_B, 443, 50000)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "TCP", 50000)
    check_flow(f, direction={"syn": 1}, client_ports=[])


def test_retransmitted_syn_is_one_connection(tmp_path):
    recs = g.tcp_session(POD_A, POD_B, 40001, 8080, syn_retransmits=2)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    check_flow(f, connections=1, direction={"syn": 1}, packets=len(recs), bytes_=g.total_l3(recs),
               first=recs[0][0], last=recs[-1][0])


def test_client_port_dropped_and_connections_counted(tmp_path):
    recs = []
    for i, cport in enumerate((40001, 40002, 51234)):
        recs += g.tcp_session(POD_A, POD_B, cport, 8080, t0=T0 + i)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "TCP", 8080)
    check_flow(f, connections=3, direction={"syn": 3}, client_ports=[], packets=len(recs),
               bytes_=g.total_l3(recs), first=T0, last=recs[-1][0])


def test_client_ports_are_the_smallest_eight_for_heuristic_directions(tmp_path):
    recs = []
    ports = [45009, 45001, 45007, 45003, 45010, 45002, 45008, 45004, 45006, 45005]
    for i, cport in enumerate(ports):
        recs += g.tcp_session(POD_A, POD_B, cport, 5432, t0=T0 + i, start="mid", client_isn=1000 + i * 100)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    check_flow(f, connections=10, direction={"port-heuristic": 10})
    assert f["client_ports"] == sorted(ports)[:8]


def test_icmp_echo_connections_are_identifiers(tmp_path):
    recs = g.icmp_echo(POD_A, POD_B, ident=11, seqs=(1, 2, 3), t0=T0)
    recs += g.icmp_echo(POD_A, POD_B, ident=12, seqs=(1, 2), t0=T0 + 10)
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, POD_B, "ICMP", None)
    check_flow(f, connections=2, direction={"icmp-echo": 2}, packets=10, bytes_=g.total_l3(recs))


# --------------------------------------------------------------------------------------------
# deduplication

DUP_LAYOUTS = {
    "pcapng-two-ethernet-interfaces": [g.LINKTYPE_ETHERNET, g.LINKTYPE_ETHERNET],
    "pcapng-ethernet-and-cooked-v2": [g.LINKTYPE_ETHERNET, g.LINKTYPE_LINUX_SLL2],
    "pcapng-raw-and-cooked-v1": [g.LINKTYPE_RAW, g.LINKTYPE_LINUX_SLL],
}


@pytest.mark.parametrize("layout", sorted(DUP_LAYOUTS))
def test_same_packet_on_two_interfaces_counts_once(tmp_path, layout):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    udp = g.udp_exchange(POD_A, POD_B, 40002, 123, t0=T0 + 1)
    icmp = g.icmp_echo(POD_A, POD_B, ident=5, t0=T0 + 2)
    recs = g.copy_on_interfaces(tcp + udp + icmp, (0, 1))
    log = capture_pcapng(tmp_path, recs, DUP_LAYOUTS[layout])
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), packets=len(tcp), bytes_=g.total_l3(tcp), connections=1,
               first=tcp[0][0], last=tcp[-1][0])
    check_flow(log.flow(POD_A, POD_B, "UDP", 123), packets=len(udp), bytes_=g.total_l3(udp))
    check_flow(log.flow(POD_A, POD_B, "ICMP", None), packets=len(icmp), bytes_=g.total_l3(icmp))
    assert len(log.flows) == 3
    assert counter(log.stats, "duplicates") == len(tcp) + len(udp) + len(icmp)


def test_tcpdump_any_duplicates_in_classic_pcap(tmp_path):
    """`tcpdump -i any` writes cooked v2; each packet appears twice (veth and bridge)."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    recs = [(r[0], r[2]) for r in g.copy_on_interfaces(tcp, (0, 1))]
    log = capture_records(tmp_path, recs, linktype=g.LINKTYPE_LINUX_SLL2)
    check_flow(log.only_flow(), packets=len(tcp), bytes_=g.total_l3(tcp), connections=1)
    assert counter(log.stats, "duplicates") == len(tcp)


NAT_CASES = {
    # kube-proxy DNAT of a ClusterIP to a backend: client side unchanged
    "dnat-clusterip": dict(client=POD_A, server="10.96.0.1", cport=40001, sport=443,
                           new_server="172.20.0.2", new_sport=6443,
                           translated=[{"dst": "172.20.0.2", "port": 6443, "src": POD_A}]),
    # SNAT to the node address on the way out
    "snat-node": dict(client=POD_A, server="93.184.216.34", cport=40001, sport=443,
                      new_client="172.18.0.2", new_cport=61000,
                      translated=[{"dst": "93.184.216.34", "port": 443, "src": "172.18.0.2"}]),
}


@pytest.mark.parametrize("name", sorted(NAT_CASES))
def test_nat_copy_is_one_flow_with_translated_view(tmp_path, name):
    c = dict(NAT_CASES[name])
    translated = c.pop("translated")
    orig = g.tcp_session(c["client"], c["server"], c["cport"], c["sport"])
    copy = g.nat_view(orig, **c, delay=0.0003)
    log = capture_records(tmp_path, orig + copy)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (c["client"], c["server"], "TCP", c["sport"])
    check_flow(f, packets=len(orig), bytes_=g.total_l3(orig), connections=1, direction={"syn": 1},
               translated=translated, first=orig[0][0])
    assert counter(log.stats, "duplicates") == len(orig)
    assert counter(log.stats, "nat_views") == 1


def test_retransmission_one_second_later_is_not_a_duplicate(tmp_path):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    request = tcp[3]  # the data segment
    again = (g.D(request[0]) + 1, request[1].copy())  # byte-identical, same IP id
    assert bytes(again[1]) == bytes(request[1])
    log = capture_records(tmp_path, tcp + [again])
    check_flow(log.only_flow(), packets=len(tcp) + 1, bytes_=g.total_l3(tcp) + g.l3len(request[1]),
               last=again[0])


def test_dedup_window_option(tmp_path):
    """The same identical retransmission 1 s later is a copy with --dedup-window 2."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    request = tcp[3]
    again = (g.D(request[0]) + 1, request[1].copy())
    log = capture_records(tmp_path, tcp + [again], extra=["--dedup-window", "2"])
    check_flow(log.only_flow(), packets=len(tcp), bytes_=g.total_l3(tcp))


def test_copy_within_default_window_is_dropped(tmp_path):
    """A copy 50 ms later (inside the default 0.1 s window) is not counted again."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    request = tcp[3]
    again = (g.D(request[0]) + g.D("0.05"), request[1].copy())
    log = capture_records(tmp_path, tcp + [again])
    check_flow(log.only_flow(), packets=len(tcp), bytes_=g.total_l3(tcp))


# --------------------------------------------------------------------------------------------
# loopback


def test_loopback_is_left_out(tmp_path):
    lo = g.tcp_session("127.0.0.1", "127.0.0.1", 40001, 8080, t0=T0)
    lo += g.dns_udp("127.0.0.1", "127.0.0.53", "example.com", answers=[("example.com", "A", 60, "192.0.2.1")],
                    t0=T0 + 1)
    lo += g.tcp_session("::1", "::1", 40002, 9090, t0=T0 + 2)
    real = g.tcp_session(POD_A, POD_B, 40003, 8080, t0=T0 + 3)
    log = capture_records(tmp_path, lo + real)
    assert log.flow_keys() == [(POD_A, POD_B, "TCP", 8080)]
    assert log.dns == []
    assert counter(log.stats, "loopback") == len(lo)


# --------------------------------------------------------------------------------------------
# DNS lines


def dns_log(tmp_path, recs) -> Log:
    return capture_records(tmp_path, recs)


def answer_set(d):
    return {(a["name"], a["type"], a["data"], a["ttl"]) for a in d["answers"]}


def test_dns_a_record(tmp_path):
    recs = g.dns_udp(POD_A, SVC_DNS, "API.GitHub.com.", "A", [("API.GitHub.com", "A", 60, "140.82.112.3")],
                     t0=T0 + 0.5, cport=40000)
    log = dns_log(tmp_path, recs)
    d = log.only_dns()
    expected = {
        "answers": [{"data": "140.82.112.3", "name": "api.github.com", "ttl": 60, "type": "A"}],
        "client": POD_A, "first_seen": g.iso(recs[0][0]), "kind": "dns", "last_seen": g.iso(recs[1][0]),
        "qname": "api.github.com", "qtype": "A", "queries": 1, "rcodes": ["NOERROR"], "resolver": SVC_DNS,
        "responses": 1, "transports": ["udp"],
    }
    assert {k: d.get(k) for k in expected} == expected
    check_flow(log.flow(POD_A, SVC_DNS, "UDP", 53), packets=2, connections=1, direction={"dns": 1})


def test_dns_aaaa_record_is_compressed_ipv6(tmp_path):
    recs = g.dns_udp(V6_A, "fd00:10:96::a", "v6.example.com", "AAAA",
                     [("v6.example.com", "AAAA", 120, "2001:0db8:0000:0000:0000:0000:0000:0001")])
    d = dns_log(tmp_path, recs).only_dns()
    assert (d["client"], d["resolver"], d["qname"], d["qtype"]) == (V6_A, "fd00:10:96::a", "v6.example.com", "AAAA")
    assert d["answers"] == [{"data": "2001:db8::1", "name": "v6.example.com", "ttl": 120, "type": "AAAA"}]


def test_dns_cname_chain(tmp_path):
    answers = [("www.Example.com", "CNAME", 300, "edge.Example.NET."),
               ("edge.example.net", "CNAME", 60, "b.cdn.example.org"),
               ("b.cdn.example.org", "A", 20, "192.0.2.7"),
               ("b.cdn.example.org", "A", 20, "192.0.2.8")]
    recs = g.dns_udp(POD_A, SVC_DNS, "www.example.com", "A", answers)
    d = dns_log(tmp_path, recs).only_dns()
    assert d["qname"] == "www.example.com"
    assert answer_set(d) == {
        ("www.example.com", "CNAME", "edge.example.net", 300),
        ("edge.example.net", "CNAME", "b.cdn.example.org", 60),
        ("b.cdn.example.org", "A", "192.0.2.7", 20),
        ("b.cdn.example.org", "A", "192.0.2.8", 20),
    }
    assert len(d["answers"]) == 4


def test_dns_answers_keep_largest_ttl(tmp_path):
    recs = []
    for i, ttl in enumerate((30, 300, 100)):
        recs += g.dns_udp(POD_A, SVC_DNS, "svc.example.com", "A", [("svc.example.com", "A", ttl, "192.0.2.5")],
                          t0=T0 + i * 10, txid=0x100 + i, cport=40000 + i)
    log = dns_log(tmp_path, recs)
    d = log.only_dns()
    assert d["answers"] == [{"data": "192.0.2.5", "name": "svc.example.com", "ttl": 300, "type": "A"}]
    assert (d["queries"], d["responses"]) == (3, 3)
    assert d["first_seen"] == g.iso(recs[0][0]) and d["last_seen"] == g.iso(recs[-1][0])
    check_flow(log.flow(POD_A, SVC_DNS, "UDP", 53), connections=3, packets=6, direction={"dns": 3})


def test_dns_response_without_query(tmp_path):
    recs = g.dns_udp(POD_A, SVC_DNS, "late.example.com", "A", [("late.example.com", "A", 30, "192.0.2.9")],
                     query=False)
    log = dns_log(tmp_path, recs)
    d = log.only_dns()
    assert (d["client"], d["resolver"], d["qname"], d["qtype"]) == (POD_A, SVC_DNS, "late.example.com", "A")
    assert (d["queries"], d["responses"]) == (0, 1)
    assert answer_set(d) == {("late.example.com", "A", "192.0.2.9", 30)}


def test_dns_over_tcp(tmp_path):
    recs = g.dns_tcp(POD_A, SVC_DNS, "big.example.com", "AAAA",
                     [("big.example.com", "CNAME", 30, "real.example.com"),
                      ("real.example.com", "AAAA", 45, "2001:db8::42")], cport=41000)
    log = dns_log(tmp_path, recs)
    d = log.only_dns()
    assert (d["client"], d["resolver"], d["qname"], d["qtype"]) == (POD_A, SVC_DNS, "big.example.com", "AAAA")
    assert d["transports"] == ["tcp"]
    assert (d["queries"], d["responses"]) == (1, 1)
    assert answer_set(d) == {("big.example.com", "CNAME", "real.example.com", 30),
                             ("real.example.com", "AAAA", "2001:db8::42", 45)}
    check_flow(log.flow(POD_A, SVC_DNS, "TCP", 53), direction={"syn": 1}, packets=len(recs))
    # The handshake's and the close's empty segments on port 53 are not malformed DNS.
    assert "dns_malformed" not in log.stats


def test_dns_transports_and_rcodes_are_united(tmp_path):
    recs = g.dns_udp(POD_A, SVC_DNS, "x.example.com", "A", [], t0=T0, txid=1, rcode=3)  # NXDOMAIN
    recs += g.dns_tcp(POD_A, SVC_DNS, "x.example.com", "A", [("x.example.com", "A", 5, "192.0.2.3")],
                      t0=T0 + 1, txid=2)
    d = dns_log(tmp_path, recs).only_dns()
    assert d["transports"] == ["tcp", "udp"]
    assert d["rcodes"] == ["NOERROR", "NXDOMAIN"]
    assert (d["queries"], d["responses"]) == (2, 2)


def test_dns_resolver_is_the_address_the_client_sent_to(tmp_path):
    """Query to the DNS Service ClusterIP, then seen again after DNAT to the CoreDNS pod; the
    response likewise. One dns line, resolver = ClusterIP; the pod view is under translated."""
    coredns = "10.244.0.3"
    orig = g.dns_udp(POD_A, SVC_DNS, "kubernetes.default.svc.cluster.local", "A",
                     [("kubernetes.default.svc.cluster.local", "A", 30, "10.96.0.1")], cport=40000)
    copy = g.nat_view(orig, POD_A, SVC_DNS, 40000, 53, new_server=coredns, delay=0.0001)
    log = dns_log(tmp_path, orig + copy)
    d = log.only_dns()
    assert (d["client"], d["resolver"]) == (POD_A, SVC_DNS)
    assert (d["queries"], d["responses"]) == (1, 1)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (POD_A, SVC_DNS, "UDP", 53)
    check_flow(f, packets=2, translated=[{"dst": coredns, "port": 53, "src": POD_A}])


# --------------------------------------------------------------------------------------------
# timestamps, structure, several files, merge, determinism

RFC3339_US = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def test_timestamps_are_rfc3339_utc_microseconds(tmp_path):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0 + 0.25)
    dns = g.dns_udp(POD_A, SVC_DNS, "t.example.com", "A", [("t.example.com", "A", 1, "192.0.2.1")],
                    t0=T0 + 3600 * 5 + 0.000001)
    log = capture_records(tmp_path, tcp + dns)
    f = log.flow(POD_A, POD_B, "TCP", 8080)
    assert f["first_seen"] == "2025-06-01T10:00:00.250000Z"
    assert f["last_seen"] == g.iso(tcp[-1][0])
    d = log.only_dns()
    assert d["first_seen"] == "2025-06-01T15:00:00.000001Z"
    for line in log.flows + log.dns:
        for k in ("first_seen", "last_seen"):
            assert RFC3339_US.match(line[k]), line[k]
            parsed = datetime.datetime.strptime(line[k], "%Y-%m-%dT%H:%M:%S.%fZ")
            assert parsed.year == 2025
        assert line["first_seen"] <= line["last_seen"]


def test_nanosecond_timestamps_are_not_misread(tmp_path):
    """A nanosecond file's fractions must not be taken as microseconds (or the other way)."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0 + 0.987654)
    for name, kw in (("ns.pcap", dict(nanosecond=True)), ("us.pcap", dict(nanosecond=False))):
        path = g.write_pcap(tmp_path / name, tcp, **kw)
        log = capture(tmp_path, path, out=name + ".jsonl")
        f = log.only_flow()
        assert f["first_seen"] == "2025-06-01T10:00:00.987654Z"


def _keys_sorted(obj):
    if isinstance(obj, dict):
        assert list(obj) == sorted(obj), list(obj)
        for v in obj.values():
            _keys_sorted(v)
    elif isinstance(obj, list):
        for v in obj:
            _keys_sorted(v)


def rich_records(t0=T0, cport_base=40000, variant=0):
    """A mix of everything; ``variant`` shifts client ports/names so files can be told apart."""
    b = cport_base
    recs = g.tcp_session(POD_A, POD_B, b + 1, 8080, t0=t0)
    recs += g.tcp_session(POD_A, POD_B, b + 2, 8080, t0=t0 + 0.5)
    recs += g.tcp_session("10.244.0.6", "10.244.1.8", b + 3, 5432, t0=t0 + 1, start="mid")
    recs += g.dns_udp(POD_A, SVC_DNS, f"name{variant}.example.com", "A",
                      [(f"name{variant}.example.com", "A", 30 + variant, "192.0.2.%d" % (variant + 1))],
                      t0=t0 + 2, cport=b + 4, txid=0x200 + variant)
    recs += g.dns_udp(POD_A, SVC_DNS, "shared.example.com", "AAAA", [("shared.example.com", "AAAA", 10 + variant, "2001:db8::5")],
                      t0=t0 + 2.5, cport=b + 5, txid=0x300 + variant)
    recs += g.icmp_echo(POD_A, "8.8.8.8", ident=100 + variant, t0=t0 + 3)
    inner = g.tcp_session("10.244.2.9", "10.244.3.9", b + 6, 9090, t0=t0 + 4)
    recs += g.encapsulate(inner, g.vxlan, "192.168.10.%d" % (variant + 1), "192.168.10.200", 8472)
    orig = g.tcp_session(POD_A, "10.96.0.1", b + 7, 443, t0=t0 + 5)
    recs += orig + g.nat_view(orig, POD_A, "10.96.0.1", b + 7, 443, new_server="172.20.0.2", new_sport=6443)
    recs += g.sctp_init(POD_A, POD_B, b + 8, 38412, t0=t0 + 6)
    recs += g.udp_exchange(V6_A, V6_B, b + 9, 123, t0=t0 + 7)
    return g.by_time(recs)


def test_output_structure(tmp_path):
    path = g.write_pcap(tmp_path / "node-a.pcap", rich_records())
    out = tmp_path / "out.jsonl"
    result = invoke(["capture", path, "-o", out])
    assert result.exit_code == 0, result.stderr
    log = Log(out.read_bytes())
    assert log.header == {"format": "netpol-learn/flows", "kind": "header", "sources": ["node-a.pcap"],
                          "version": 2}
    kinds = [line["kind"] for line in log.lines]
    n_flow, n_dns = kinds.count("flow"), kinds.count("dns")
    assert kinds == ["header"] + ["flow"] * n_flow + ["dns"] * n_dns + ["stats"]
    assert n_flow >= 8 and n_dns == 2
    for line in log.lines:
        _keys_sorted(line)
    for f in log.flows:
        assert set(f) == {"bytes", "client_ports", "connections", "direction", "dst", "evidence", "first_seen",
                          "kind", "last_seen", "packets", "port", "proto", "runs", "src", "translated"}, sorted(f)
        # every connection of this capture was answered, and each flow's connections lie within 2 minutes
        assert f["evidence"] == ("established" if f["proto"] == "TCP" else "answered"), f
        assert f["runs"] == [[f["first_seen"], f["last_seen"], f["connections"]]], f
    for d in log.dns:
        assert set(d) == {"answers", "client", "first_seen", "kind", "last_seen", "qname", "qtype", "queries",
                          "rcodes", "resolver", "responses", "transports"}, sorted(d)
    dkeys = [(d["client"], d["resolver"], d["qname"], d["qtype"]) for d in log.dns]
    assert dkeys == sorted(dkeys)


def test_flows_sorted_by_key_within_kind(tmp_path):
    recs = []
    # written in reverse order of the expected output
    for i, (src, dst, port) in enumerate([("10.0.0.3", "10.0.0.9", 80), ("10.0.0.2", "10.0.0.9", 443),
                                          ("10.0.0.2", "10.0.0.9", 80), ("10.0.0.1", "10.0.0.9", 80)]):
        recs += g.tcp_session(src, dst, 40000 + i, port, t0=T0 + i)
    log = capture_records(tmp_path, recs)
    assert [(f["src"], f["dst"], f["port"]) for f in log.flows] == [
        ("10.0.0.1", "10.0.0.9", 80), ("10.0.0.2", "10.0.0.9", 80), ("10.0.0.2", "10.0.0.9", 443),
        ("10.0.0.3", "10.0.0.9", 80)]


@pytest.fixture(scope="module")
def three_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    a = g.write_pcap(d / "node-a.pcap", rich_records(T0, 40000, 0))
    b = g.write_pcapng(d / "node-b.pcapng", rich_records(T0 + 100, 41000, 1), byteorder=">")
    c = g.write_pcap(d / "node-c.pcap", rich_records(T0 + 50, 42000, 2), linktype=g.LINKTYPE_LINUX_SLL2,
                     nanosecond=True)
    return d, [a, b, c]


def run_capture(out, paths, extra=()):
    result = invoke(["capture", *paths, "-o", out, *extra])
    assert result.exit_code == 0, result.stderr
    return Path(out).read_bytes()


def run_merge(out, paths):
    result = invoke(["merge", *paths, "-o", out])
    assert result.exit_code == 0, result.stderr
    return Path(out).read_bytes()


def test_several_files_in_any_order_give_identical_output(tmp_path, three_files):
    _, (a, b, c) = three_files
    outs = [run_capture(tmp_path / f"o{i}.jsonl", order) for i, order in
            enumerate([(a, b, c), (c, a, b), (b, c, a), (c, b, a)])]
    assert all(o == outs[0] for o in outs)
    log = Log(outs[0])
    assert log.header["sources"] == ["node-a.pcap", "node-b.pcapng", "node-c.pcap"]
    # the 8080 flow has 2 connections per file
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), connections=6, direction={"syn": 6},
               first=T0, last=None)
    # first_seen is the earliest of all files, last_seen the latest
    assert log.flow(POD_A, POD_B, "TCP", 8080)["last_seen"].startswith("2025-06-01T10:01:40")


def test_same_base_name_listed_once_in_sources(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = g.write_pcap(tmp_path / "x" / "node.pcap", g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0))
    b = g.write_pcap(tmp_path / "y" / "node.pcap", g.tcp_session(POD_A, POD_B, 40002, 8080, t0=T0 + 5))
    log = capture(tmp_path, a, b)
    assert log.header["sources"] == ["node.pcap"]
    check_flow(log.only_flow(), connections=2)


def test_merge_equals_capturing_together(tmp_path, three_files):
    _, (a, b, c) = three_files
    la = run_capture(tmp_path / "a.jsonl", [a])
    lb = run_capture(tmp_path / "b.jsonl", [b])
    lc = run_capture(tmp_path / "c.jsonl", [c])
    together = run_capture(tmp_path / "all.jsonl", [a, b, c])
    merged = run_merge(tmp_path / "m.jsonl", [tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"])
    assert la != lb
    assert merged == together


def test_merge_is_order_independent_and_associative(tmp_path, three_files):
    _, (a, b, c) = three_files
    for n, p in zip("abc", (a, b, c)):
        run_capture(tmp_path / f"{n}.jsonl", [p])
    A, B, C = (tmp_path / f"{n}.jsonl" for n in "abc")
    ab = run_merge(tmp_path / "ab.jsonl", [A, B])
    ba = run_merge(tmp_path / "ba.jsonl", [B, A])
    assert ab == ba
    abc1 = run_merge(tmp_path / "abc1.jsonl", [tmp_path / "ab.jsonl", C])
    run_merge(tmp_path / "bc.jsonl", [B, C])
    abc2 = run_merge(tmp_path / "abc2.jsonl", [A, tmp_path / "bc.jsonl"])
    abc3 = run_merge(tmp_path / "abc3.jsonl", [C, B, A])
    assert abc1 == abc2 == abc3
    # counts add up
    log = Log(abc1)
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), connections=6)
    shared = [d for d in log.dns if d["qname"] == "shared.example.com"]
    assert len(shared) == 1 and shared[0]["queries"] == 3 and shared[0]["answers"][0]["ttl"] == 12


def test_merge_adds_stats_and_unites_tunnel_pairs(tmp_path, three_files):
    _, (a, b, c) = three_files
    logs = [Log(run_capture(tmp_path / f"{i}.jsonl", [p])) for i, p in enumerate((a, b, c))]
    merged = Log(run_merge(tmp_path / "m.jsonl", [tmp_path / f"{i}.jsonl" for i in range(3)]))
    assert counter(merged.stats, "duplicates") == sum(counter(lg.stats, "duplicates") for lg in logs)
    vx = tunnel_entry(merged.stats, "vxlan")
    assert vx["packets"] == sum(tunnel_entry(lg.stats, "vxlan")["packets"] for lg in logs)
    assert {k.split(" > ")[0] for k in vx["endpoints"]} == {"192.168.10.1", "192.168.10.2", "192.168.10.3"}
    for name in STATS_COUNTERS:
        assert counter(merged.stats, name) == sum(counter(lg.stats, name) for lg in logs), name


def test_two_runs_are_byte_identical(tmp_path, three_files, capture_engine):
    """In processes with different hash seeds (set and dict orders differ), and the same as in this one."""
    _, paths = three_files
    runs = []
    for seed in SEEDS:
        out = tmp_path / f"{seed}.jsonl"
        r = netpol_learn(["capture", *paths, "-o", out], seed, engine=capture_engine)
        assert r.returncode == 0, r.stderr
        runs.append(out.read_bytes())
    assert runs[0] == runs[1] == run_capture(tmp_path / "here.jsonl", paths)


# --------------------------------------------------------------------------------------------
# rules added to the contract: stats counters, snap length, ICMP control, nesting, half views


def test_stats_counters(tmp_path):
    recs = rich_records()
    log = capture_records(tmp_path, recs)
    stats = log.stats
    assert stats["kind"] == "stats"
    assert set(stats) - {"kind", "tunnels"} <= STATS_COUNTERS, sorted(stats)
    assert counter(stats, "packets") == len(recs)
    # packets that count in flows, after duplicates were dropped
    assert counter(stats, "decoded") == sum(f["packets"] for f in log.flows)
    assert counter(stats, "duplicates") == 9  # the NAT copy of one TCP connection
    assert counter(stats, "nat_views") == 1
    # a counter that stayed at zero is left out
    for name in ("loopback", "non_ip", "truncated", "tunnel_too_deep", "dns_malformed", "fragments_orphaned"):
        assert name not in stats, (name, stats)


def test_clean_capture_has_no_zero_counters(tmp_path):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    log = capture_records(tmp_path, tcp)
    counters = {k: v for k, v in log.stats.items() if k != "kind" and not (k == "tunnels" and v == {})}
    assert counters == {"packets": len(tcp), "decoded": len(tcp)}


def test_snap_length_cut_packets_count_their_full_ip_length(tmp_path):
    """`tcpdump -s 96`: every record is cut, but headers are there; bytes are the IP lengths."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, request=b"q" * 700, response=b"r" * 1200)
    v6 = g.tcp_session(V6_A, V6_B, 40002, 443, t0=T0 + 1, request=b"q" * 500, response=b"r" * 900)
    recs = tcp + v6
    path = g.write_bytes(tmp_path / "s96.pcap", g.truncate_records(recs, g.LINKTYPE_ETHERNET, 96))
    log = capture(tmp_path, path)
    check_flow(log.flow(POD_A, POD_B, "TCP", 8080), packets=len(tcp), bytes_=g.total_l3(tcp), direction={"syn": 1})
    check_flow(log.flow(V6_A, V6_B, "TCP", 443), packets=len(v6), bytes_=g.total_l3(v6), direction={"syn": 1})
    assert counter(log.stats, "truncated") == 0


def test_packet_cut_before_its_headers_is_truncated_not_a_flow(tmp_path):
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    cut = g.tcp_session("10.244.5.5", "10.244.6.6", 40002, 9000, t0=T0 + 1)[:1]
    data = g.pcap_bytes(tcp)
    frame = g.frame(cut[0][1], g.LINKTYPE_ETHERNET)
    data += g.pcap_record(cut[0][0], frame[:30], origlen=len(frame))  # inside the IPv4 header
    path = g.write_bytes(tmp_path / "cut.pcap", data)
    log = capture(tmp_path, path)
    assert log.flow_keys() == [(POD_A, POD_B, "TCP", 8080)]
    assert counter(log.stats, "truncated") == 1


def test_icmp_control_messages_are_not_flows(tmp_path):
    ctl = g.icmp_control_messages()
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0 + 1)
    log = capture_records(tmp_path, ctl + tcp)
    assert log.flow_keys() == [(POD_A, POD_B, "TCP", 8080)]
    assert counter(log.stats, "icmp_control") == len(ctl)


@pytest.mark.parametrize("depth", [3, 4])
def test_tunnel_nesting_limit(tmp_path, depth):
    """Up to three tunnels deep the inner flow is found; deeper packets are only counted."""
    inner = g.tcp_session(POD_A, POD_B, 40001, 8080)
    layers = [lambda p: g.vxlan(p, "192.168.1.1", "192.168.1.2"),
              lambda p: g.ipip(p, "172.16.0.1", "172.16.0.2"),
              lambda p: g.gre(p, "172.17.0.1", "172.17.0.2"),
              lambda p: g.flannel_udp(p, "172.19.0.1", "172.19.0.2")][:depth]
    recs = []
    for ts, p in inner:
        for wrap in reversed(layers):  # the innermost wrapping first
            p = wrap(p)
        recs.append((ts, p))
    log = capture_records(tmp_path, recs)
    if depth == 3:
        check_flow(log.only_flow(), packets=len(inner), bytes_=g.total_l3(inner), direction={"syn": 1})
        assert counter(log.stats, "tunnel_too_deep") == 0
    else:
        assert log.flows == []
        assert counter(log.stats, "tunnel_too_deep") == len(inner)


def test_half_views_joined_by_sequence_numbers(tmp_path):
    """A host-network client to a ClusterIP on a node's loopback: its packets are seen only after
    DNAT (to the backend), the replies only before (from the ClusterIP); no packet twice. The
    answering sequence/acknowledgement numbers join the two halves into one connection."""
    client, cluster_ip, backend = "172.18.0.2", "10.96.0.1", "172.18.0.3"
    orig = g.tcp_session(client, cluster_ip, 45000, 443)
    dnat = g.nat_view(orig, client, cluster_ip, 45000, 443, new_server=backend, new_sport=6443, delay=0)
    recs = [(d[0], d[1]) if o[1][g.IP].src == client else o for o, d in zip(orig, dnat)]
    log = capture_records(tmp_path, recs)
    f = log.only_flow()
    assert (f["src"], f["dst"], f["proto"], f["port"]) == (client, backend, "TCP", 6443)
    check_flow(f, packets=len(orig), connections=1, direction={"syn": 1},
               translated=[{"dst": cluster_ip, "port": 443, "src": client}])
    assert counter(log.stats, "duplicates") == 0


@pytest.mark.parametrize("family", ["ipv4-same-id", "ipv6"])
def test_udp_lookalikes_between_other_endpoints_are_two_flows(tmp_path, family):
    """Two UDP packets with the same fingerprint but no endpoint in common are not NAT views."""
    payload = b"HEALTHCHECK-PING-0000000001"
    if family == "ipv6":
        a = g.IPv6(src=V6_A, dst=V6_B) / g.UDP(sport=40000, dport=9000) / g.Raw(payload)
        b = g.IPv6(src="fd00:10:244:2::2", dst="fd00:10:244:3::3") / g.UDP(sport=40001, dport=9000) / g.Raw(payload)
    else:
        a = g.IP(src=POD_A, dst=POD_B, id=4242) / g.UDP(sport=40000, dport=9000) / g.Raw(payload)
        b = g.IP(src="10.244.2.2", dst="10.244.3.3", id=4242) / g.UDP(sport=40001, dport=9000) / g.Raw(payload)
    log = capture_records(tmp_path, [(T0, a), (T0 + 0.01, b)])
    assert len(log.flows) == 2, log.flow_keys()
    for f in log.flows:
        check_flow(f, packets=1, translated=[])
    assert counter(log.stats, "duplicates") == 0


def test_each_file_is_deduplicated_on_its_own(tmp_path):
    """A connection between two nodes captured on both counts in both files' flows."""
    tcp = g.tcp_session(POD_A, POD_B, 40001, 8080)
    a = g.write_pcap(tmp_path / "node-a.pcap", tcp)
    b = g.write_pcap(tmp_path / "node-b.pcap", tcp)
    log = capture(tmp_path, a, b)
    check_flow(log.only_flow(), packets=2 * len(tcp), bytes_=2 * g.total_l3(tcp), connections=2,
               direction={"syn": 2})
    assert counter(log.stats, "duplicates") == 0
