"""The flow log: JSON Lines round trip, and merging that is associative and order-free."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_learn._flowlog import (
    DIRECTION_METHODS,
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    Translation,
    SegmentReader,
    dumps_lines,
    last_complete_segment_end,
    merge_logs,
    read_flow_log,
    translation_sort_key,
    write_flow_log,
)
from netpol_learn._time import format_datetime, format_time, parse_api_time, parse_time

addr = st.sampled_from(["10.244.0.5", "10.244.1.7", "10.96.0.10", "203.0.113.9", "fd00::1"])
times = st.integers(1_600_000_000_000_000_000, 1_900_000_000_000_000_000).map(lambda t: t - t % 1000)


@st.composite
def flows(draw):
    first = draw(times)
    return Flow(
        src=draw(addr), dst=draw(addr), proto=draw(st.sampled_from(["TCP", "UDP", "ICMP"])),
        port=draw(st.sampled_from([None, 53, 443])),
        packets=draw(st.integers(1, 10**6)), bytes=draw(st.integers(1, 10**9)), connections=draw(st.integers(1, 100)),
        first_seen=first, last_seen=first + draw(st.integers(0, 10**12)),
        direction=tuple((m, draw(st.integers(1, 9))) for m in DIRECTION_METHODS if draw(st.booleans())) or (("syn", 1),),
        client_ports=tuple(sorted(draw(st.sets(st.integers(1024, 65535), max_size=8)))),
        translated=tuple(sorted(draw(st.sets(st.builds(Translation, addr, addr, st.sampled_from([None, 6443])), max_size=2)), key=translation_sort_key)),
    )


@st.composite
def dns_obs(draw):
    first = draw(times)
    return DnsObservation(
        client=draw(addr), resolver="10.96.0.10", qname=draw(st.sampled_from(["api.github.com", "db.prod.svc.cluster.local"])),
        qtype=draw(st.sampled_from(["A", "AAAA"])), queries=draw(st.integers(0, 5)), responses=draw(st.integers(0, 5)),
        first_seen=first, last_seen=first + draw(st.integers(0, 10**10)),
        answers=tuple(sorted({DnsAnswer("api.github.com", "A", draw(st.sampled_from(["140.82.112.3", "140.82.112.4"])), draw(st.integers(0, 300)))})),
        rcodes=("NOERROR",), transports=tuple(sorted(draw(st.sets(st.sampled_from(["tcp", "udp"]), min_size=1)))),
    )


logs = st.builds(
    lambda f, d, n, src: FlowLog(flows=tuple(f), dns=tuple(d), stats={"packets": n, "tunnels": {"vxlan": {"packets": n}}}, sources=(src,)),
    st.lists(flows(), max_size=5), st.lists(dns_obs(), max_size=3), st.integers(0, 100), st.sampled_from(["a.pcap", "b.pcap", "c.pcap"]),
)


def text(log: FlowLog) -> str:
    return "".join(dumps_lines(log))


@settings(max_examples=30, deadline=None)
@given(a=logs, b=logs, c=logs)
def test_merge_is_associative_and_order_free(a, b, c):
    abc = text(merge_logs([a, b, c]))
    assert text(merge_logs([c, a, b])) == abc
    assert text(merge_logs([merge_logs([a, b]), c])) == abc
    assert text(merge_logs([a, merge_logs([b, c])])) == abc


@settings(max_examples=20, deadline=None)
@given(log=logs)
def test_round_trip(tmp_path_factory, log):
    path = tmp_path_factory.mktemp("log") / "f.jsonl"
    merged = merge_logs([log])
    write_flow_log(merged, path)
    assert text(read_flow_log(path)) == path.read_text() == text(merged)
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        assert list(obj) == sorted(obj)


def test_time_format_is_rfc3339_utc_microseconds():
    ns = 1_749_000_000_123_456_789
    assert format_time(ns) == "2025-06-04T01:20:00.123456Z"
    assert parse_time(format_time(ns)) == ns - 789


def test_kubernetes_times_are_read_in_any_rfc_3339_form_and_datetimes_written_as_the_flow_log_does():
    from datetime import datetime, timedelta, timezone

    ns = 1_749_000_000_000_000_000
    assert parse_api_time("2025-06-04T01:20:00Z") == ns
    assert parse_api_time("2025-06-04T03:20:00+02:00") == ns
    assert parse_api_time("2025-06-04T01:20:00.5Z") == ns + 500_000_000
    assert parse_api_time("2025-06-04T01:20:00") == ns  # no offset: UTC
    assert [parse_api_time(t) for t in (None, "", "yesterday")] == [None, None, None]
    when = datetime(2025, 6, 4, 3, 20, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_datetime(when) == "2025-06-04T01:20:00.123456Z" == format_time(ns + 123_456_000)


def _segment_lines(log: FlowLog) -> list[str]:
    return list(dumps_lines(log))


def test_one_segment_reader_for_files_and_container_logs():
    a = FlowLog(stats={"packets": 1}, sources=("sniff:a",))
    b = FlowLog(stats={"packets": 2}, sources=("sniff:b",))
    lines = _segment_lines(a) + _segment_lines(b)[:-1]  # the second one cut before its stats line
    for strict in (True, False):
        reader = SegmentReader(strict=strict)
        got = [seg for seg in map(reader.feed, lines) if seg is not None] + [reader.close()]
        assert [(seg.complete, seg.problem) for seg in got] == [(True, None), (False, None)]
        assert got[0].log == a
        assert got[1].log == FlowLog(sources=("sniff:b",))
    # Without its header, a segment is read only from a file (which is read whole).
    for strict, log in ((True, a), (False, None)):
        reader = SegmentReader(strict=strict)
        got = [seg for seg in [*map(reader.feed, _segment_lines(b) + _segment_lines(a)[1:]), reader.close()] if seg is not None]
        assert [(seg.complete, seg.log) for seg in got] == [(True, b), (False, replace(log, sources=()) if log else None)]
    # Lenient: other lines are skipped; a segment that cannot be read is handed over with why.
    reader = SegmentReader()
    bad = _segment_lines(a)
    bad[0] = bad[0].replace('"version": 2', '"version": 7')
    got = [reader.feed(line) for line in ["noise", '{"kind": "other"}', *bad]]
    assert got[:-1] == [None] * 3 and reader.ignored == 2
    assert (got[-1].complete, got[-1].problem, got[-1].log) == (True, "flow log version 7 is not supported (this tool reads 1 and 2)", None)


def test_last_complete_segment_end_is_after_the_last_whole_stats_line(tmp_path):
    segment = "".join(_segment_lines(FlowLog(stats={"packets": 3}, sources=("sniff:n",)))).encode()
    for data, end in ((segment * 2 + segment[:-1], 2 * len(segment)), (segment[:10], 0), (b"", 0), (segment, len(segment))):
        path = tmp_path / "flows.jsonl"
        path.write_bytes(data)
        with open(path, "rb") as fh:
            assert last_complete_segment_end(fh, len(data)) == end


def test_a_log_of_several_segments_reads_as_their_merge(tmp_path):
    """The sniffer appends one complete log per interval to the same stream."""
    one = FlowLog(flows=(Flow("10.0.0.1", "10.0.0.2", "TCP", 80, 1, 60, 1, 10**18, 10**18, (("syn", 1),)),), stats={"packets": 1}, sources=("a",))
    two = FlowLog(flows=(Flow("10.0.0.1", "10.0.0.2", "TCP", 80, 2, 120, 1, 2 * 10**18, 2 * 10**18, (("syn", 1),)),), stats={"packets": 2}, sources=("b",))
    path = tmp_path / "stream.jsonl"
    path.write_text(text(one) + text(two))
    assert text(read_flow_log(path)) == text(merge_logs([one, two]))
