"""Live capture on a node: packet sockets -> the capture stage's decoder and aggregator -> a
flow-log segment every interval.

    PacketRing (one per interface)  ->  Batch  ->  decode  ->  ConnectionLimit  ->  Aggregator
    SocketScanner (at the start, and shortly before each segment ends; a thread of its own)
        every --interval seconds, and on SIGTERM/SIGINT:  Aggregator.result + the scans  ->  one segment

One module per part: ``_filter`` (the kernel filter), ``_interfaces`` (which interfaces, and the
netlink socket that reports them), ``_ring`` (``PacketRing``, ``Batch``), ``_limit``
(``ConnectionLimit``), ``_writer`` (``SegmentWriter``), ``_podwatch`` (``PodWatcher``: the pods
of each address), ``_sockets`` (``SocketScanner``: the TCP connections that were open before the
start, from the socket tables), ``_spool`` (``Spool``: the bounded directory of segments waiting
for the learning service), ``_sender`` (``Sender``: the thread that sends them, in order),
``_sniffer`` (``Sniffer``, the loop, and ``run_until_signalled``).

**To the learning service** (``Options.server``, ``sniff --server``): each segment is spooled (a
gzip file, written atomically) and sent by the sender thread, oldest first, retried with backoff
until the service takes it; a full spool drops the oldest and counts them in the next segment.

**Sockets.** Each interface gets an ``AF_PACKET`` socket in cooked mode (``SOCK_DGRAM``: the
kernel hands over the packet from its IP header on, whatever the link layer: Ethernet veths,
bridges, tunnel devices, ``any``) with a ``TPACKET_V3`` receive ring mapped into this process:
the kernel fills blocks of packets, and reading a block costs one copy and no system call per
packet. Each socket makes its interface promiscuous for as long as it is open (a bridge hands its
packet sockets the frames it forwards between its ports only then). scapy's own sockets build a
Python object per packet (a few thousand packets/s); here a block's packets go straight into the
same chunk form that ``capture._files`` makes from pcap files (bytes, offsets, captured lengths,
timestamps, link type, ``PAD`` bytes of padding), and the rest of the pipeline is the capture
stage's, unchanged.

**The kernel filter** (``FILTER``, a libpcap expression) keeps only what learning needs: TCP
segments with SYN, FIN or RST (the handshake decides the direction; FIN and RST show connections
that were open before the sniffer started, when they close), all of TCP port 53 (DNS over TCP),
UDP (DNS answers, UDP services, VXLAN/Geneve/flannel tunnels), SCTP INIT/INIT ACK, and IP-in-IP,
IPv6-in-IPv4 and GRE tunnels. scapy compiles it (``scapy.arch.common.compile_filter``, which calls
libpcap's ``pcap_compile`` through ctypes) for raw IP (``DLT_RAW``, what cooked sockets see);
without libpcap the same program, compiled ahead of time and kept with it (``FALLBACK_PROGRAM``),
is used. tests/test_sniff.py checks that the two agree.

**Connections open before the start.** The filter's SYNs show only connections opened while the
sniffer runs. ``SocketScanner`` reads the TCP socket tables (``net/tcp``, ``net/tcp6``) of every
network namespace of the node's processes under ``--proc`` at the start and once an interval;
``SocketState`` turns each established connection whose SYN the packets did not show into one
flow line of evidence ``socket-scan`` (direction ``listen`` from the LISTEN sockets, else
``port-heuristic``), once while it stays open, and reverses the segment's heuristic flows that a
LISTEN socket shows the wrong way round (docs/sniffer.md).

**Bounds.** At most ``max_connections`` distinct connections (5-tuples, both directions as one)
per interval: packets of further connections are dropped before aggregation and counted
(``dropped_connections``, each connection once: exact up to 65,536, then estimated by linear
counting in 1 MiB; ``dropped_packets``). Each interval starts a fresh aggregator, so memory never
grows with time; it grows with the bound (``MEMORY_PER_CONNECTION``, ``peak_memory``: the default
bound and the DaemonSet's memory limit agree with ``MEMORY_MARGIN``). Kernel drops (ring full) are counted as ``dropped_by_kernel``.

**Interfaces.** Named ones, glob patterns, or by default the pod-facing ones (``veth*``,
``cali*``, ``lxc*``, ``cni0``, ``flannel*``, ``vxlan*``, ``genev*``). A netlink socket reports
links as they come and go: an interface that appears (a pod created) and matches is captured at
once; one that vanishes (a pod deleted) is a warning, its ring is drained first, and capture goes
on elsewhere.

**Start and output.** ``Sniffer.start`` opens every socket before the output: a start that fails
(no capability, no such interface, no memory for a ring) creates no output file and leaves an
existing one untouched. ``SegmentWriter`` appends to a regular file (also through a symlink),
which alone it checks, cuts back (to where the flow log's last complete segment ends) and fsyncs, or writes into a FIFO (waiting for its reader) or a
character device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netpol_learn._lazy import on_first_use

#: Where each name lives, loaded on first use: the command line shows the defaults (``_defaults``,
#: ``_spool``, ``_sender``) without importing the sniffer and numpy.
_HOMES = {
    "FILTER": "netpol_learn._sniff._filter",
    "SNAPLEN": "netpol_learn._sniff._filter",
    "compile_program": "netpol_learn._sniff._filter",
    "DEFAULT_INTERFACES": "netpol_learn._sniff._interfaces",
    "discover": "netpol_learn._sniff._interfaces",
    "ConnectionLimit": "netpol_learn._sniff._limit",
    "PodWatcher": "netpol_learn._sniff._podwatch",
    "Batch": "netpol_learn._sniff._ring",
    "PacketRing": "netpol_learn._sniff._ring",
    "DEFAULT_DRAIN": "netpol_learn._sniff._sender",
    "Sender": "netpol_learn._sniff._sender",
    "check_token_file": "netpol_learn._sniff._sender",
    "segments_url": "netpol_learn._sniff._sender",
    "DEFAULT_INTERVAL": "netpol_learn._sniff._defaults",
    "DEFAULT_MAX_CONNECTIONS": "netpol_learn._sniff._defaults",
    "DEFAULT_PROC": "netpol_learn._sniff._defaults",
    "NO_PERMISSION": "netpol_learn._sniff._sniffer",
    "Options": "netpol_learn._sniff._sniffer",
    "Sniffer": "netpol_learn._sniff._sniffer",
    "run_until_signalled": "netpol_learn._sniff._sniffer",
    "sniff": "netpol_learn._sniff._sniffer",
    "Scan": "netpol_learn._sniff._sockets",
    "SocketScanner": "netpol_learn._sniff._sockets",
    "SocketState": "netpol_learn._sniff._sockets",
    "connections": "netpol_learn._sniff._sockets",
    "correct": "netpol_learn._sniff._sockets",
    "DEFAULT_SPOOL": "netpol_learn._sniff._spool",
    "DEFAULT_SPOOL_SIZE": "netpol_learn._sniff._spool",
    "Spool": "netpol_learn._sniff._spool",
    "Spooled": "netpol_learn._sniff._spool",
    "parse_spool_name": "netpol_learn._sniff._spool",
    "spool_name": "netpol_learn._sniff._spool",
    "SegmentWriter": "netpol_learn._sniff._writer",
}

__all__ = sorted(_HOMES)


__getattr__, __dir__ = on_first_use(globals(), _HOMES)


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from netpol_learn._sniff._filter import FILTER, SNAPLEN, compile_program
    from netpol_learn._sniff._interfaces import DEFAULT_INTERFACES, discover
    from netpol_learn._sniff._limit import ConnectionLimit
    from netpol_learn._sniff._podwatch import PodWatcher
    from netpol_learn._sniff._ring import Batch, PacketRing
    from netpol_learn._sniff._sender import DEFAULT_DRAIN, Sender, check_token_file, segments_url
    from netpol_learn._sniff._defaults import DEFAULT_INTERVAL, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROC
    from netpol_learn._sniff._sniffer import NO_PERMISSION, Options, Sniffer, run_until_signalled, sniff
    from netpol_learn._sniff._sockets import Scan, SocketScanner, SocketState, connections, correct
    from netpol_learn._sniff._spool import DEFAULT_SPOOL, DEFAULT_SPOOL_SIZE, Spool, Spooled, parse_spool_name, spool_name
    from netpol_learn._sniff._writer import SegmentWriter
