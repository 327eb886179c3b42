"""`capture` on a big synthetic capture of a busy node (tests/pcapgen_busy.py, the benchmark's).

40,000 packets, more than one chunk (``_files.CHUNK_PACKETS``): duplicates across chunk
boundaries, the connection table merged from several chunks, hundreds of flows and DNS names.
The generator's own account of what it wrote (``meta``) says how many flow and dns lines, packets
and duplicates the log must have; the log must not depend on the engine, the chunk size, or
whether the file is compressed.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen_busy  # noqa: E402

from netpol_learn._capture import _accel, _files, capture_file  # noqa: E402

PACKETS = 40_000


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    path = tmp_path_factory.mktemp("busy") / "busy-node.pcap"
    meta, built = pcapgen_busy.ensure_pcap(path, PACKETS)
    assert built and meta["packets"] == PACKETS
    return path, meta


@pytest.fixture(scope="module")
def reference(busy):
    """The log under the default engine and chunk size."""
    return capture_file(busy[0])


def test_the_log_has_what_the_generator_wrote(busy, reference):
    path, meta = busy
    assert PACKETS > _files.CHUNK_PACKETS  # more than one chunk
    stats = reference.stats
    assert stats["packets"] == meta["packets"]
    assert stats["duplicates"] == meta["duplicates"]
    assert stats["decoded"] == meta["packets"] - meta["duplicates"]
    # A flow line per (client, server, protocol, port) and evidence: the generator's flows are the
    # first four, split by what the server answered.
    assert len({(f.src, f.dst, f.proto, f.port) for f in reference.flows}) == meta["expected_flows"]
    assert len(reference.dns) == meta["expected_dns_lines"]
    assert set(stats["tunnels"]) == {"vxlan"}
    assert sum(f.connections for f in reference.flows if f.proto == "TCP") == meta["connections"]["tcp"]
    assert "warnings" not in stats


def test_the_evidence_is_what_the_generator_wrote(busy, reference):
    """Every connection is answered, except the refused ones (SYN, then RST) and those the end of
    the capture cut after their request; no RST answers an old connection (nothing stale)."""
    _, meta = busy
    connections = {}
    for f in reference.flows:
        connections[(f.proto, f.evidence)] = connections.get((f.proto, f.evidence), 0) + f.connections
    assert {e for _, e in connections} <= {"established", "answered", "refused", "unanswered", "repeated"}, connections
    assert {e for p, e in connections if p == "TCP"} == {"established", "refused", "unanswered"}, connections
    assert connections[("TCP", "established")] > 0.9 * meta["connections"]["tcp"]
    assert connections[("UDP", "answered")] > 0.9 * meta["connections"]["dns_lookups"]
    refused, cut = connections[("TCP", "refused")], connections[("TCP", "unanswered")]
    assert 0 < refused <= meta["connections"]["rejected"] <= refused + cut
    end = max(f.last_seen for f in reference.flows)
    near_end = end - int(0.05 * meta["duration_s"] * 1e9)
    unanswered = [f for f in reference.flows if f.evidence in ("unanswered", "repeated")]
    assert unanswered and all(f.first_seen >= near_end for f in unanswered), unanswered


def test_both_engines_give_the_same_log(busy, reference, monkeypatch):
    if _accel.ENGINE != "c":
        pytest.skip("the C accelerator is not in use")  # pragma: no cover
    monkeypatch.setattr(_accel, "ENGINE", "python")
    assert capture_file(busy[0]) == reference


@pytest.mark.parametrize("chunk_packets", [1000, 7777])
def test_the_chunk_size_changes_nothing(busy, reference, monkeypatch, chunk_packets):
    monkeypatch.setattr(_files, "CHUNK_PACKETS", chunk_packets)
    assert capture_file(busy[0]) == reference


def test_a_gzip_file_in_small_windows_gives_the_same_log(busy, reference, tmp_path, monkeypatch):
    path = tmp_path / busy[0].name  # the same base name: the log's sources are the same
    with open(busy[0], "rb") as src, gzip.open(path, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setattr(_files, "READ_BYTES", 1 << 16)
    assert capture_file(path) == reference


def test_asking_the_aggregator_for_its_result_twice_gives_the_same_log(busy, reference):
    """``Aggregator.result`` does not count what it reports a second time (the DNS lines and
    the ``dns_malformed`` counter included)."""
    from netpol_learn._capture import Aggregator, decode

    agg = Aggregator(10**8)
    for chunk in _files.read_chunks(busy[0], warn=pytest.fail):
        agg.feed(chunk.data, decode(chunk.data, chunk.off, chunk.caplen, chunk.link, chunk.ts))
    first = agg.result(busy[0].name)
    assert first == reference
    assert agg.result(busy[0].name) == first


def test_a_flow_heavy_file_has_what_the_generator_wrote(tmp_path):
    """The benchmark's flow-heavy variant (--wide-flows, --wide-names): many distinct flows to
    outside addresses and many outside names, each as the generator counted it."""
    path = tmp_path / "wide.pcap"
    meta, _ = pcapgen_busy.ensure_pcap(path, PACKETS, wide_flows=2_000, wide_names=1_500)
    log = capture_file(path)
    assert len({(f.src, f.dst, f.proto, f.port) for f in log.flows}) == meta["expected_flows"]
    assert len(log.dns) == meta["expected_dns_lines"]
    wide = {(f.src, f.dst) for f in log.flows if f.dst.startswith("100.")}
    assert len(wide) > 1_000  # most of the 2,000 wide flows fit in 40,000 packets
    names = {d.qname for d in log.dns if d.qname.endswith(".wide.example.net")}
    assert len(names) > 1_000
    answered = {a.data for d in log.dns for a in d.answers if d.qname.endswith(".wide.example.net")}
    assert answered and all(a.startswith("100.") for a in answered)
