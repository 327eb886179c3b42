"""A synthetic capture of a busy Kubernetes node, for the capture benchmark and for tests that
need a big file.

``generate(path, packets, seed)`` writes a classic pcap (Ethernet, microsecond timestamps) of
``packets`` packets that looks like ``tcpdump -w`` on a busy node, and returns what went into it
(also saved as ``<path>.meta.json``): packets per kind, duplicates, connections, and the number of
flow and dns lines a flow log of it has (``expected_flows``, ``expected_dns_lines``).
``ensure_pcap`` reuses a file generated before with the same packet count, seed and generator
version. The same arguments always give the same bytes (seeded random). What the traffic is:
benchmarks/README.md, "The capture".

Flow-heavy files (issue 15): ``wide_flows=N`` adds N distinct flows from the local pods to
outside addresses in 100.64.0.0/10 (port 443), which most TCP connections then go to, each new
connection to the next of them until all were used; ``wide_names=M`` adds M outside names (five
dots or more, so no search path: an A and an AAAA line each, answered with an address of
100.64.0.0/10) that the DNS lookups ask in turn, with DNS given a larger share of the packets.
With both 0 (the default) the file is the same as before, byte for byte.

How: scapy builds a few templates (the fixed parts of Ethernet/IPv4/IPv6/TCP/UDP/VXLAN headers and
every DNS message); each packet is then one struct.pack of its headers plus a payload slice, so a
million packets take seconds. IPv4 header checksums are correct; TCP and UDP checksums are left 0
(for UDP over IPv4 that means "no checksum").
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import struct
import sys
import time
from pathlib import Path

# Bump when the generated traffic changes, so cached files are rebuilt.
GENERATOR_VERSION = 1
DEFAULT_SEED = 20250601

START_EPOCH = 1748772000  # 2025-06-01T10:00:00Z
DURATION_US = 600_000_000  # timestamps spread over ten minutes

# Share of packets per kind of traffic: each "slot" carries one connection at a time and every
# packet comes from a slot chosen at random, so the packet shares follow the slot counts.
SLOT_KINDS = {"tcp4": 330, "dns": 10, "ipv6": 20, "vxlan": 20}  # a DNS pick gives 4 packets
DUPLICATE_RATE = 0.02  # packets written twice within a millisecond (tcpdump -i any)
MID_STREAM_RATE = 0.10  # TCP connections already open when the capture started (no SYN)
REJECTED_RATE = 0.02  # TCP connections answered with RST

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
M32 = 0xFFFFFFFF
MSS = 1448

NODE_LOCAL = "172.18.0.2"  # the node the capture was taken on
NODE_PEER = "172.18.0.3"
RESOLVER = "10.96.0.10"
VXLAN_PORT = 4789
VXLAN_VNI = 1
CLUSTER_DOMAIN = "cluster.local"

NAMESPACES = ["default", "shop", "payments", "auth", "search", "data", "monitoring", "web"]

# (name, port) of Service ClusterIPs besides kubernetes and kube-dns; port None = pick one.
SERVICES = [
    ("redis", 6379), ("postgres", 5432), ("mysql", 3306), ("mongo", 27017), ("kafka", 9092),
    ("rabbitmq", 5672), ("memcached", 11211), ("elasticsearch", 9200), ("prometheus", 9090),
    ("grafana", 3000), ("etcd", 2379), ("nats", 4222), ("vault", 8200), ("minio", 9000),
    ("jaeger", 14268), ("loki", 3100), ("frontend", 80), ("cart", 8080), ("checkout", 8080),
    ("catalog", 8080), ("users", 8080), ("orders", 8080), ("payments", 8443), ("search", 8080),
    ("recommend", 50051), ("inventory", 50051), ("shipping", 8080), ("email", 8080),
    ("notifications", 8080), ("gateway", 443), ("api", 443), ("web", 80), ("billing", 8443),
    ("ledger", 50051), ("sessions", 6379), ("tokens", 8080), ("metrics", 9090),
    ("keycloak", 8443),
]
EXTERNAL_PREFIXES = ["api", "cdn", "auth", "s3", "login", "hooks", "telemetry", "registry", "pkg",
                     "updates"]
EXTERNAL_DOMAINS = ["example.com", "example.net", "example.org", "payments.example",
                    "storage.example"]
POD_SERVER_PORTS = [8080, 8080, 8080, 9090, 8443, 3000, 5000, 50051]
METRICS_PORT = 9100


def _ip4(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def _ip6(a: str) -> bytes:
    return ipaddress.IPv6Address(a).packed


def _mac(addr: bytes) -> bytes:
    """A locally administered MAC derived from an address (like Docker's 02:42:...)."""
    return b"\x02\x42" + addr[-4:]


ROUTER_MAC = bytes.fromhex("02420a000001")


def _words(b: bytes) -> int:
    return sum(struct.unpack(f">{len(b) // 2}H", b))


class Templates:
    """Fixed header parts taken from packets built once with scapy."""

    def __init__(self) -> None:
        try:
            from scapy.layers.inet import IP, TCP, UDP
            from scapy.layers.inet6 import IPv6
            from scapy.layers.l2 import Ether
            from scapy.layers.vxlan import VXLAN
            from scapy.packet import raw
        except ImportError:  # pragma: no cover - depends on the environment
            sys.exit("building the busy-node capture needs scapy: pip install scapy")
        self.raw = raw
        tcp4 = raw(Ether(src="02:42:00:00:00:01", dst="02:42:00:00:00:02")
                   / IP(src="0.0.0.0", dst="0.0.0.0", ttl=64, flags="DF", id=0)
                   / TCP(sport=0, dport=0, flags=0, window=0, seq=0, ack=0, chksum=0))
        udp4 = raw(Ether(src="02:42:00:00:00:01", dst="02:42:00:00:00:02") / IP(src="0.0.0.0", dst="0.0.0.0", ttl=64, flags="DF", id=0)
                   / UDP(sport=0, dport=0, chksum=0))
        tcp6 = raw(Ether(src="02:42:00:00:00:01", dst="02:42:00:00:00:02") / IPv6(src="::", dst="::", hlim=64, fl=0)
                   / TCP(sport=0, dport=0, flags=0, window=0, chksum=0))
        vx = raw(Ether(src="02:42:00:00:00:01", dst="02:42:00:00:00:02") / IP(src="0.0.0.0", dst="0.0.0.0", ttl=64, id=0)
                 / UDP(sport=0, dport=VXLAN_PORT, chksum=0) / VXLAN(vni=VXLAN_VNI, flags=0x08))
        # Offsets below are the standard header layouts; check the templates agree.
        assert tcp4[12:16] == b"\x08\x00\x45\x00" and tcp4[23] == 6 and len(tcp4) == 54
        assert udp4[12:16] == b"\x08\x00\x45\x00" and udp4[23] == 17 and len(udp4) == 42
        assert tcp6[12:15] == b"\x86\xdd\x60" and tcp6[20] == 6 and len(tcp6) == 74
        assert vx[23] == 17 and vx[36:38] == struct.pack(">H", VXLAN_PORT) and len(vx) == 50
        self.ip4_tcp_mid = tcp4[20:24]  # flags/fragment offset, TTL, protocol
        self.ip4_udp_mid = udp4[20:24]
        self.ip4_tcp_sum = _words(tcp4[14:16] + tcp4[20:24])
        self.ip4_udp_sum = _words(udp4[14:16] + udp4[20:24])
        self.ip6_vtc = tcp6[14:18]  # version, traffic class, flow label (patched)
        self.ip6_tcp_nh = tcp6[20:22]  # next header, hop limit
        self.vx_mid = vx[20:24]
        self.vx_sum = _words(vx[14:16] + vx[20:24])
        self.vx_hdr = vx[42:50]
        self.tcp_tail = tcp4[50:54]  # checksum 0, urgent pointer 0
        self._dns_cache: dict[tuple[str, str, str], bytes] = {}

    def dns(self, qname: str, qtype: str, answer: list[tuple[str, str, int, str]] | None,
            rcode: int = 0) -> tuple[bytes, bytes]:
        """(query, response) DNS payloads with id 0, as a CoreDNS answer would look."""
        from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRSOA, dns_compress

        q = DNS(id=0, rd=1, qd=DNSQR(qname=qname, qtype=qtype))
        if answer:
            an = [DNSRR(rrname=n, type=t, ttl=ttl, rdata=d) for n, t, ttl, d in answer]
            ns = []
        else:  # NXDOMAIN or no data: the SOA of the zone, as CoreDNS sends
            zone = CLUSTER_DOMAIN if qname.endswith(CLUSTER_DOMAIN) else ".".join(
                qname.split(".")[-2:])
            an = []
            ns = [DNSRRSOA(rrname=zone, ttl=30, mname=f"ns.dns.{zone}",
                           rname=f"hostmaster.{zone}", serial=1748772000, refresh=7200,
                           retry=1800, expire=86400, minimum=30)]
        r = DNS(id=0, qr=1, aa=1 if qname.endswith(CLUSTER_DOMAIN) else 0, rd=1, ra=1,
                rcode=rcode, qd=DNSQR(qname=qname, qtype=qtype), an=an, ns=ns)
        return self.raw(q), self.raw(dns_compress(r))


class Framer:
    """Builds frames for one conversation; direction 0 is a->b, 1 is b->a."""

    TCP4 = struct.Struct(">16sHH4sH8s4sIIHH4s")
    UDP4 = struct.Struct(">16sHH4sH8s4sHH")
    TCP6 = struct.Struct(">18sH34s4sIIHH4s")
    VX = struct.Struct(">16sHH4sH8s4sHH8s")


def make_tcp4(t: Templates, rng: random.Random, blob: bytes, a: str, b: str, ap: int, bp: int,
              a_mac: bytes | None = None, b_mac: bytes | None = None):
    pack = Framer.TCP4.pack
    mid, tail = t.ip4_tcp_mid, t.tcp_tail
    ab, bb = _ip4(a), _ip4(b)
    dirs = []
    for src, dst, sp, dp, smac, dmac in ((ab, bb, ap, bp, a_mac, b_mac),
                                         (bb, ab, bp, ap, b_mac, a_mac)):
        head = (dmac or _mac(dst)) + (smac or _mac(src)) + b"\x08\x00\x45\x00"
        addrs = src + dst
        dirs.append([head, addrs, struct.pack(">HH", sp, dp), t.ip4_tcp_sum + _words(addrs),
                     rng.getrandbits(16), rng.choice((502, 509, 64240, 1024, 235))])
    blob_max = len(blob) - MSS - 1

    def frame(d: int, seq: int, ack: int, flags: int, plen: int) -> bytes:
        h = dirs[d]
        ipid = h[4]
        h[4] = (ipid + 1) & 0xFFFF
        tot = 40 + plen
        s = h[3] + tot + ipid
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        hdr = pack(h[0], tot, ipid, mid, ~s & 0xFFFF, h[1], h[2], seq & M32, ack & M32,
                   0x5000 | flags, h[5], tail)
        if plen:
            o = seq % blob_max
            return hdr + blob[o:o + plen]
        return hdr

    return frame


def make_tcp6(t: Templates, rng: random.Random, blob: bytes, a: str, b: str, ap: int, bp: int):
    pack = Framer.TCP6.pack
    tail = t.tcp_tail
    ab, bb = _ip6(a), _ip6(b)
    dirs = []
    for src, dst, sp, dp in ((ab, bb, ap, bp), (bb, ab, bp, ap)):
        flow = struct.pack(">I", (6 << 28) | rng.getrandbits(20))
        dirs.append((_mac(dst) + _mac(src) + b"\x86\xdd" + flow,
                     t.ip6_tcp_nh + src + dst, struct.pack(">HH", sp, dp),
                     rng.choice((502, 509, 64240, 1024))))
    blob_max = len(blob) - MSS - 1

    def frame(d: int, seq: int, ack: int, flags: int, plen: int) -> bytes:
        h = dirs[d]
        hdr = pack(h[0], 20 + plen, h[1], h[2], seq & M32, ack & M32, 0x5000 | flags, h[3],
                   tail)
        if plen:
            o = seq % blob_max
            return hdr + blob[o:o + plen]
        return hdr

    return frame


def make_vxlan(t: Templates, rng: random.Random, inner, a_node: str, b_node: str):
    """Wraps an inner frame builder in Ethernet/IPv4/UDP 4789/VXLAN between two nodes."""
    pack = Framer.VX.pack
    mid, vx = t.vx_mid, t.vx_hdr
    ab, bb = _ip4(a_node), _ip4(b_node)
    dirs = []
    for src, dst in ((ab, bb), (bb, ab)):
        addrs = src + dst
        # Linux picks the outer source port from a hash of the inner flow.
        dirs.append([_mac(dst) + _mac(src) + b"\x08\x00\x45\x00", addrs,
                     struct.pack(">HH", rng.randrange(32768, 61000), VXLAN_PORT),
                     t.vx_sum + _words(addrs), rng.getrandbits(16)])

    def frame(d: int, seq: int, ack: int, flags: int, plen: int) -> bytes:
        f = inner(d, seq, ack, flags, plen)
        h = dirs[d]
        ipid = h[4]
        h[4] = (ipid + 1) & 0xFFFF
        ulen = 16 + len(f)
        tot = 20 + ulen
        s = h[3] + tot + ipid
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return pack(h[0], tot, ipid, mid, ~s & 0xFFFF, h[1], h[2], ulen, 0, vx) + f

    return frame


def tcp_conversation(rng: random.Random, frame, key, flows: set, mid_stream: bool,
                     rejected: bool, short: bool = False):
    """Yields the frames of one TCP connection: handshake, request/response rounds, FIN; with
    ``short``, one small request and answer (about 9 packets: many connections, many flows)."""
    flows.add(key)  # runs when the first packet is taken
    rnd = rng.random
    c = rng.getrandbits(32)
    s = rng.getrandbits(32)
    if not mid_stream:
        yield frame(0, c, 0, SYN, 0)
        c += 1
        if rejected:
            yield frame(1, 0, c, RST | ACK, 0)
            return
        yield frame(1, s, c, SYN | ACK, 0)
        s += 1
        yield frame(0, c, s, ACK, 0)
        rounds = 1 if short else 1 + int(rnd() * rnd() * 8)
    else:
        rounds = 1 if short else 2 + int(rnd() * 12)
    for _ in range(rounds):
        q = 60 + int(rnd() * rnd() * 900)
        yield frame(0, c, s, PSH | ACK, q)
        c += q
        x = rnd()
        r = 80 + int(x * x * x * (1000 if short else 24000))  # mostly small answers, a few large ones
        n = 0
        while r > 0:
            seg = MSS if r > MSS else r
            r -= seg
            yield frame(1, s, c, ACK if r else PSH | ACK, seg)
            s += seg
            n += 1
            if r == 0 or n % 2 == 0:
                yield frame(0, c, s, ACK, 0)
    if mid_stream and rnd() < 0.5:
        return  # still open when the capture stopped
    if rnd() < 0.8:  # client closes
        yield frame(0, c, s, FIN | ACK, 0)
        c += 1
        yield frame(1, s, c, FIN | ACK, 0)
        s += 1
        yield frame(0, c, s, ACK, 0)
    else:  # server closes
        yield frame(1, s, c, FIN | ACK, 0)
        s += 1
        yield frame(0, c, s, FIN | ACK, 0)
        c += 1
        yield frame(1, s, c, ACK, 0)


class Plan:
    """Addresses, Services, who talks to whom, and the DNS messages for it."""

    def __init__(self, rng: random.Random, t: Templates, wide_flows: int = 0, wide_names: int = 0) -> None:
        self.t = t
        self._pods(rng)
        self._services(rng)
        self._externals(rng)
        self._who_talks_to_whom(rng)
        self._dns(t)
        self._wide(rng, t, wide_flows, wide_names)

    def _wide(self, rng: random.Random, t: Templates, flows: int, names: int) -> None:
        """The flow-heavy additions (module doc); nothing, and no random draw, when both are 0."""
        self.wide_flows = []  # (client pod, outside address, 443), each a distinct flow
        self.wide_chains = []  # (client, steps) as in self.chains, one name each
        if flows:
            clients = self.local_pods
            for i in range(flows):
                self.wide_flows.append((clients[i % len(clients)], _cgnat(i // len(clients)), 443))
            rng.shuffle(self.wide_flows)
        if names:
            # Built by hand, not with scapy (about 2.5 ms a message): the question, and for A one
            # answer pointing back to it (0xC00C); AAAA answers with no data.
            for i in range(names):
                name = f"h{i}.r{i % 97}.z{i % 13}.wide.example.net"
                question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00"
                a_q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + question + b"\x00\x01\x00\x01"
                a_r = (struct.pack(">HHHHHH", 0, 0x8180, 1, 1, 0, 0) + question + b"\x00\x01\x00\x01"
                       + b"\xc0\x0c\x00\x01\x00\x01" + struct.pack(">IH", 60, 4) + ipaddress.IPv4Address(_cgnat(i)).packed)
                aaaa_q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + question + b"\x00\x1c\x00\x01"
                aaaa_r = struct.pack(">HHHHHH", 0, 0x8180, 1, 0, 0, 0) + question + b"\x00\x1c\x00\x01"
                self.wide_chains.append((self.local_pods[i % len(self.local_pods)],
                                         [(name, "A", a_q, a_r), (name, "AAAA", aaaa_q, aaaa_r)]))

    def _pods(self, rng: random.Random) -> None:
        hosts = lambda third, n: [f"10.244.{third}.{i}" for i in sorted(rng.sample(range(2, 255), n))]  # noqa: E731
        # This node (172.18.0.2) runs 10.244.0.0/24, the peer node (VXLAN) 10.244.1.0/24;
        # pods on other nodes appear as peers of local pods.
        self.local_pods = hosts(0, 110)
        self.peer_pods = hosts(1, 130)
        self.other_pods = hosts(2, 130) + hosts(3, 130)
        self.pods = self.local_pods + self.peer_pods + self.other_pods
        assert len(set(self.pods)) == 500
        self.ns = {p: rng.choice(NAMESPACES) for p in self.pods}
        self.pod_port = {p: rng.choice(POD_SERVER_PORTS) for p in self.pods}
        # Dual-stack pods, fd00:10:244:<node>::<host> inside fd00:10:244::/56.
        self.v6 = {}
        for p in rng.sample(self.local_pods, 60) + rng.sample(self.other_pods, 90):
            o = p.split(".")
            self.v6[p] = str(ipaddress.IPv6Address(f"fd00:10:244:{int(o[2]):x}::{int(o[3]):x}"))

    def _services(self, rng: random.Random) -> None:
        """kubernetes, kube-dns and 38 more in 10.96.0.0/12."""
        used = {"10.96.0.1", RESOLVER}
        self.services = []  # (fqdn, clusterip, port)
        self.services.append(("kubernetes.default.svc." + CLUSTER_DOMAIN, "10.96.0.1", 443))
        self.services.append(("kube-dns.kube-system.svc." + CLUSTER_DOMAIN, RESOLVER, 53))
        for name, port in SERVICES:
            while True:
                ip = f"10.{rng.randrange(96, 112)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                if ip not in used:
                    used.add(ip)
                    break
            ns = rng.choice(NAMESPACES[:6])
            self.services.append((f"{name}.{ns}.svc.{CLUSTER_DOMAIN}", ip, port))

    def _externals(self, rng: random.Random) -> None:
        """25 hosts in 203.0.113.0/24 and 25 in 198.51.100.0/24, each with a name."""
        ext_ips = ([f"203.0.113.{i}" for i in sorted(rng.sample(range(1, 255), 25))]
                   + [f"198.51.100.{i}" for i in sorted(rng.sample(range(1, 255), 25))])
        names = [f"{p}.{d}" for d in EXTERNAL_DOMAINS for p in EXTERNAL_PREFIXES]
        rng.shuffle(names)
        self.externals = []  # (name, ip, port, cname or None, ipv6 or None)
        for i, (name, ip) in enumerate(zip(names, ext_ips)):
            cname = f"edge-{i % 7}.cdn.example.net" if i % 3 == 0 else None
            v6 = f"2001:db8::{i + 1:x}" if i % 4 == 0 else None
            self.externals.append((name, ip, 80 if i % 5 == 0 else 443, cname, v6))

    def _who_talks_to_whom(self, rng: random.Random) -> None:
        """(client, server, port) candidates per kind of connection, and the names looked up."""
        svc = self.services[2:]
        self.svc_flows, self.ext_flows, self.pod_flows = [], [], []
        self.ingress_flows, self.v6_flows, self.vxlan_flows = [], [], []
        self.lookups = []  # (client pod, name as the application wrote it)
        for p in self.pods:
            for fqdn, ip, port in rng.sample(svc, 1 + int(rng.random() * 4)):
                self.svc_flows.append((p, ip, port))
                name, sns = fqdn.split(".")[:2]
                self.lookups.append((p, name if sns == self.ns[p] else f"{name}.{sns}"))
            if rng.random() < 0.2:
                self.svc_flows.append((p, "10.96.0.1", 443))
                self.lookups.append((p, "kubernetes.default"))
            if rng.random() < 0.5:
                for name, ip, port, _, _ in rng.sample(self.externals, 1 + int(rng.random() * 2)):
                    self.ext_flows.append((p, ip, port))
                    self.lookups.append((p, name))
            for q in rng.sample(self.pods, int(rng.random() * 3)):
                if q != p:
                    self.pod_flows.append((p, q, self.pod_port[q]))
        for mon in rng.sample(self.local_pods, 2):  # Prometheus scraping every pod
            self.pod_flows += [(mon, q, METRICS_PORT) for q in self.pods if q != mon]
        frontends = rng.sample(self.local_pods, 20)
        for name, ip, _, _, _ in rng.sample(self.externals, 30):
            for f in rng.sample(frontends, 5):
                self.ingress_flows.append((ip, f, self.pod_port[f]))
        v6pods = sorted(self.v6)
        for p in v6pods:
            for q in rng.sample(v6pods, 1 + int(rng.random() * 2)):
                if q != p:
                    self.v6_flows.append((self.v6[p], self.v6[q], self.pod_port[q]))
        for p in self.local_pods:
            for q in rng.sample(self.peer_pods, 1 + int(rng.random() * 2)):
                self.vxlan_flows.append((p, q, self.pod_port[q]))
        for q in rng.sample(self.peer_pods, 60):
            p = rng.choice(self.local_pods)
            self.vxlan_flows.append((q, p, self.pod_port[p]))

    def _dns(self, t: Templates) -> None:
        """Every name the pods look up, through the search path of their namespace."""
        self.records: dict[str, list] = {}
        for fqdn, ip, _ in self.services:
            self.records[fqdn] = [(fqdn, "A", 30, ip)]
        self.records_aaaa: dict[str, list] = {}
        for name, ip, _, cname, v6 in self.externals:
            chain = [(name, "CNAME", 300, cname)] if cname else []
            target = cname or name
            self.records[name] = chain + [(target, "A", 60, ip)]
            if v6:
                self.records_aaaa[name] = chain + [(target, "AAAA", 60, v6)]
        self.chains = []  # (client, [(qname, qtype, query payload, response payload), ...])
        dns_cache: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        for client, typed in self.lookups:
            search = [f"{self.ns[client]}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}",
                      CLUSTER_DOMAIN]
            candidates = [f"{typed}.{d}" for d in search] if typed.count(".") < 5 else []
            candidates.append(typed)
            steps = []
            for qname in candidates:
                found = qname in self.records
                for qtype in ("A", "AAAA"):
                    k = (qname, qtype)
                    if k not in dns_cache:
                        ans = (self.records if qtype == "A" else self.records_aaaa).get(qname)
                        dns_cache[k] = t.dns(qname, qtype, ans, rcode=0 if found else 3)
                    steps.append((qname, qtype) + dns_cache[k])
                if found:
                    break
            self.chains.append((client, steps))
        self.dns_templates = len(dns_cache)
def _cgnat(i: int) -> str:
    """The i-th address of 100.64.0.0/10 (shared address space: outside any cluster range)."""
    return str(ipaddress.IPv4Address(0x64400001 + i))


def dns_lookup(rng: random.Random, t: Templates, plan: Plan, dns_keys: set, flows: set, wide: int | None = None):
    """A glibc-style lookup: A and AAAA for each search-path candidate until one answers; with
    ``wide``, of the wide name of that index instead."""
    client, steps = plan.chains[int(rng.random() * len(plan.chains))] if wide is None else plan.wide_chains[wide]
    pack = Framer.UDP4.pack
    mid = t.ip4_udp_mid
    cb, rb = _ip4(client), _ip4(RESOLVER)
    sport = rng.randrange(32768, 61000)
    ports_q, ports_r = struct.pack(">HH", sport, 53), struct.pack(">HH", 53, sport)
    head_q = ROUTER_MAC + _mac(cb) + b"\x08\x00\x45\x00"
    head_r = _mac(cb) + ROUTER_MAC + b"\x08\x00\x45\x00"
    sum_q = t.ip4_udp_sum + _words(cb + rb)
    sum_r = sum_q

    def udp(head, addrs, ports, base, payload):
        ipid = rng.getrandbits(16)
        tot = 28 + len(payload)
        s = base + tot + ipid
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return pack(head, tot, ipid, mid, ~s & 0xFFFF, addrs, ports, tot - 20, 0) + payload

    flows.add((client, RESOLVER, "UDP", 53))
    for i in range(0, len(steps), 2):
        pair = steps[i:i + 2]  # A and AAAA, sent together, then both answers
        txids = [struct.pack(">H", rng.getrandbits(16)) for _ in pair]
        frames = []
        for txid, (qname, qtype, query, _) in zip(txids, pair):
            dns_keys.add((client, RESOLVER, qname, qtype))
            frames.append(udp(head_q, cb + rb, ports_q, sum_q, txid + query[2:]))
        for txid, (_, _, _, response) in zip(txids, pair):
            frames.append(udp(head_r, rb + cb, ports_r, sum_r, txid + response[2:]))
        yield tuple(frames)


class Traffic:
    """The connections of the capture: each ``new_conn`` picks one of the plan's and returns a
    generator of its frames (a tuple of frames for a DNS lookup's burst); what was picked is
    counted in ``flows``, ``dns_keys`` and ``conns``."""

    def __init__(self, rng: random.Random, t: Templates, plan: Plan) -> None:
        self.rng, self.t, self.plan = rng, t, plan
        # Payload bytes: text, so that tshark's dissectors see "continuation data", not garbage.
        self.blob = bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789 -_=/:;,.{}", k=1 << 16))
        self.flows: set = set()
        self.dns_keys: set = set()
        self.conns = {"tcp": 0, "dns_lookups": 0, "mid_stream": 0, "rejected": 0}
        self.next_wide_flow = self.next_wide_name = 0

    def _pick(self, lst):
        return lst[int(self.rng.random() * len(lst))]

    def new_conn(self, kind: str, at_start: bool = False):
        rng, t, plan, blob, conns = self.rng, self.t, self.plan, self.blob, self.conns
        if kind == "dns":
            conns["dns_lookups"] += 1
            if plan.wide_chains and rng.random() < 0.9:  # the wide names in turn, then again
                self.next_wide_name += 1
                return dns_lookup(rng, t, plan, self.dns_keys, self.flows, (self.next_wide_name - 1) % len(plan.wide_chains))
            return dns_lookup(rng, t, plan, self.dns_keys, self.flows)
        sport = rng.randrange(32768, 61000)
        lst = None
        if kind == "tcp4":
            x = rng.random()
            if plan.wide_flows and x < 0.8:  # each wide flow in turn, then again
                lst = plan.wide_flows
                c, s, port = lst[self.next_wide_flow % len(lst)]
                self.next_wide_flow += 1
            else:
                x = x if not plan.wide_flows else (x - 0.8) / 0.2
                lst = (plan.svc_flows if x < 0.5 else plan.ext_flows if x < 0.7
                       else plan.pod_flows if x < 0.9 else plan.ingress_flows)
                c, s, port = self._pick(lst)
            frame = make_tcp4(t, rng, blob, c, s, sport, port,
                              ROUTER_MAC if lst is plan.ingress_flows else None,
                              ROUTER_MAC if lst is plan.ext_flows or lst is plan.wide_flows else None)
        elif kind == "ipv6":
            c, s, port = self._pick(plan.v6_flows)
            frame = make_tcp6(t, rng, blob, c, s, sport, port)
        else:  # vxlan
            c, s, port = self._pick(plan.vxlan_flows)
            inner = make_tcp4(t, rng, blob, c, s, sport, port)
            local_client = c.startswith("10.244.0.")
            frame = make_vxlan(t, rng, inner, NODE_LOCAL if local_client else NODE_PEER,
                               NODE_PEER if local_client else NODE_LOCAL)
        # Connections open when the capture started are seen without their SYN.
        mid = rng.random() < (0.6 if at_start else MID_STREAM_RATE)
        rejected = not mid and rng.random() < REJECTED_RATE
        conns["tcp"] += 1
        conns["mid_stream"] += mid
        conns["rejected"] += rejected
        return tcp_conversation(rng, frame, (c, s, "TCP", port), self.flows, mid, rejected, lst is not None and lst is plan.wide_flows)


def generate(path: Path, packets: int, seed: int, wide_flows: int = 0, wide_names: int = 0) -> dict:
    """Writes the capture and returns what went into it (also saved as PATH.meta.json)."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    t = Templates()
    plan = Plan(rng, t, wide_flows, wide_names)
    traffic = Traffic(rng, t, plan)
    plan_s = time.perf_counter() - t0
    # Each DNS pick is a burst of 4 packets, any other pick one packet: enough DNS slots for
    # lookups of every wide name (90% of the lookups ask one) and a margin.
    slot_kinds = SLOT_KINDS
    if wide_names:
        share = min(0.8, 4 * 1.2 * wide_names / 0.9 / max(packets, 1))  # of the packets
        others = sum(n for k, n in SLOT_KINDS.items() if k != "dns")
        slot_kinds = dict(SLOT_KINDS, dns=max(SLOT_KINDS["dns"], round(share * others / (4 * (1 - share)))))
    written, dups, ts, nbytes, per_kind = _write_pcap(path, packets, rng, traffic, slot_kinds)
    elapsed = time.perf_counter() - t0
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "packets": written,
        "file_bytes": nbytes,
        "duplicates": dups,
        "packets_by_kind": per_kind,
        "connections": traffic.conns,
        "expected_flows": len(traffic.flows),
        "expected_dns_lines": len(traffic.dns_keys),
        "pods": len(plan.pods),
        "dual_stack_pods": len(plan.v6),
        "services": len(plan.services),
        "external_hosts": len(plan.externals),
        "dns_templates": plan.dns_templates,
        **({"wide_flows": wide_flows, "wide_names": wide_names} if wide_flows or wide_names else {}),
        "first_ts": START_EPOCH,
        "duration_s": round(ts / 1e6, 3),
        "generation_s": round(elapsed, 2),
        "setup_s": round(plan_s, 2),
    }
    Path(str(path) + ".meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _write_pcap(path: Path, packets: int, rng: random.Random, traffic: Traffic, slot_kinds: dict = SLOT_KINDS) -> tuple[int, int, int, int, dict]:
    """Writes ``packets`` packets of ``traffic`` to ``path`` (through a temporary file beside it):
    every packet comes from a slot chosen at random, each slot carrying one connection at a time.
    Returns (packets written, duplicates among them, last timestamp in µs from START_EPOCH, file
    size, packets per kind)."""
    kinds = [k for k, n in slot_kinds.items() for _ in range(n)]
    slots = [traffic.new_conn(k, at_start=True) for k in kinds]
    nslots = len(slots)
    per_kind = dict.fromkeys(slot_kinds, 0)

    rec = struct.Struct("<IIII").pack
    rnd = rng.random
    expo = rng.expovariate
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    written = dups = 0
    ts = 0
    nbytes = 24
    with open(tmp, "wb", buffering=1 << 20) as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))  # Ethernet, µs
        out = []
        lam = 1.0 / max(DURATION_US / packets - 1.0, 0.001)
        while written < packets:
            k = int(rnd() * nslots)
            item = next(slots[k], None)
            while item is None:  # that connection is over: the slot starts the next one
                slots[k] = traffic.new_conn(kinds[k])
                item = next(slots[k], None)
            burst = type(item) is tuple
            first = True
            for fr in (item if burst else (item,)):
                if written >= packets:
                    break
                # within a DNS burst the next message follows within half a millisecond
                ts += 1 + int(expo(lam)) if first else 20 + int(rnd() * 400)
                first = False
                n = len(fr)
                sec, usec = divmod(ts, 1_000_000)
                out.append(rec(START_EPOCH + sec, usec, n, n))
                out.append(fr)
                written += 1
                nbytes += 16 + n
                if rnd() < DUPLICATE_RATE and written < packets:
                    ts += 1 + int(rnd() * 300)  # the same packet on a second interface
                    sec, usec = divmod(ts, 1_000_000)
                    out.append(rec(START_EPOCH + sec, usec, n, n))
                    out.append(fr)
                    written += 1
                    dups += 1
                    nbytes += 16 + n
            per_kind[kinds[k]] += len(item) if burst else 1
            if len(out) > 16384:
                f.write(b"".join(out))
                out.clear()
                # Gaps follow the time left, so the capture spans DURATION_US whatever the mix.
                lam = 1.0 / max((DURATION_US - ts) / (packets - written + 1) - 1.0, 0.001)
        f.write(b"".join(out))
    os.replace(tmp, path)
    return written, dups, ts, nbytes, per_kind
def ensure_pcap(path: Path, packets: int, seed: int = DEFAULT_SEED, rebuild: bool = False,
                wide_flows: int = 0, wide_names: int = 0) -> tuple[dict, bool]:
    """``(meta, built)``: the capture at ``path`` as ``generate`` writes it, reused when its
    ``.meta.json`` says it was generated with the same packet count, seed and generator version
    (``built`` False), else generated now (with a note on stderr)."""
    meta_path = Path(str(path) + ".meta.json")
    if not rebuild and path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
        if (meta.get("generator_version") == GENERATOR_VERSION and meta.get("seed") == seed
                and meta.get("packets") == packets
                and meta.get("wide_flows", 0) == wide_flows and meta.get("wide_names", 0) == wide_names
                and meta.get("file_bytes") == path.stat().st_size):
            return meta, False
    print(f"building {path} ({packets:,} packets) ...", file=sys.stderr, flush=True)
    meta = generate(path, packets, seed, wide_flows, wide_names)
    print(f"built in {meta['generation_s']:.1f} s ({meta['file_bytes'] / 1e6:.0f} MB)",
          file=sys.stderr, flush=True)
    return meta, True
