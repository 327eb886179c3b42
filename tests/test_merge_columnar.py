"""``netpol-learn merge`` in DuckDB (``_merge.merge_files``) writes byte for byte what the reference
writes (``merge_logs`` of ``read_flow_log`` of each file, by ``write_flow_log``): for random logs
whose flows and DNS observations overlap across files (runs to unite, client ports past the cap,
answers with other TTLs, pods and entities), for files only the reference reads (other spacing
and key order, unsorted lists, version 1, several segments, escaped strings, endpoint lines), and
with the reference's own error for an invalid line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_learn._cli import main
from netpol_learn._errors import FlowLogError
from netpol_learn._flowlog import (
    DIRECTION_METHODS, ENTITIES, EVIDENCE, RUN_GAP, DnsAnswer, DnsObservation, Flow, FlowLog, Translation, dumps_lines,
    merge_logs, merge_runs, read_flow_log, translation_sort_key, write_flow_log,
)
from netpol_learn._merge import merge_files

ADDRESSES = ["10.244.0.5", "10.244.0.50", "10.244.1.7", "10.96.0.10", "203.0.113.9", "fd00::1", "fd00:10:244::a", "2001:db8::5"]
BASE = 1_750_000_000 * 10**9
addr = st.sampled_from(ADDRESSES)


@st.composite
def runs(draw):
    starts = sorted(draw(st.lists(st.integers(0, 20), min_size=1, max_size=4)))
    out = []
    for s in starts:
        a = BASE + s * RUN_GAP // 2 + draw(st.integers(0, 999)) * 1000
        out.append((a, a + draw(st.integers(0, RUN_GAP // 10**6)) * 1000, draw(st.integers(0, 3))))
    return merge_runs(out)


@st.composite
def flows(draw):
    r = draw(runs())
    heuristic = draw(st.booleans())
    return Flow(
        src=draw(addr), dst=draw(addr), proto=draw(st.sampled_from(["TCP", "UDP", "ICMP", "IP-47"])),
        port=draw(st.sampled_from([None, 53, 443, 0, 65535])),
        packets=draw(st.integers(0, 10**6)), bytes=draw(st.integers(0, 10**9)), connections=sum(n for _, _, n in r),
        first_seen=r[0][0], last_seen=max(b for _, b, _ in r),
        direction=tuple((m, draw(st.integers(0, 9))) for m in DIRECTION_METHODS if draw(st.booleans())),
        client_ports=tuple(sorted(draw(st.sets(st.integers(1024, 1040), max_size=10)))) if heuristic else (),
        translated=tuple(sorted(draw(st.sets(st.builds(Translation, addr, addr, st.sampled_from([None, 6443])), max_size=3)),
                                key=translation_sort_key)),
        src_pods=tuple(sorted(draw(st.sets(st.sampled_from(["a/x", "a/y", "b/x"]), max_size=2)))),
        dst_pods=tuple(sorted(draw(st.sets(st.sampled_from(["a/x", "b/z"]), max_size=1)))),
        evidence=draw(st.sampled_from(EVIDENCE)), runs=r,
        src_entity=draw(st.sampled_from(["", "", *ENTITIES[1:]])), dst_entity=draw(st.sampled_from(["", "", *ENTITIES[1:]])),
    )


@st.composite
def observations(draw):
    first = BASE + draw(st.integers(0, 10**6)) * 1000
    answers = {}
    for name, typ, data in draw(st.lists(st.tuples(st.sampled_from(["api.example.com", "cdn.example.net"]), st.sampled_from(["A", "CNAME"]),
                                                   st.sampled_from(["140.82.112.3", "140.82.112.4", "cdn.example.net"])), max_size=3)):
        answers[(name, typ, data)] = max(answers.get((name, typ, data), -1), draw(st.integers(0, 300)))
    return DnsObservation(
        client=draw(addr), resolver=draw(st.sampled_from(["10.96.0.10", "fd00::a"])),
        qname=draw(st.sampled_from(["api.example.com", "db.prod.svc.cluster.local", ""])), qtype=draw(st.sampled_from(["A", "AAAA", "TYPE65"])),
        queries=draw(st.integers(0, 5)), responses=draw(st.integers(0, 5)), first_seen=first, last_seen=first + draw(st.integers(0, 10**6)) * 1000,
        answers=tuple(DnsAnswer(n, t, d, ttl) for (n, t, d), ttl in sorted(answers.items())),
        rcodes=tuple(sorted(draw(st.sets(st.sampled_from(["NOERROR", "NXDOMAIN"]), max_size=2)))),
        transports=tuple(sorted(draw(st.sets(st.sampled_from(["tcp", "udp"]), max_size=2)))),
    )


logs = st.builds(
    lambda f, d, n, src: merge_logs([FlowLog(flows=tuple(f), dns=tuple(d), stats={"packets": n, "tunnels": {"vxlan": {"packets": n}}}, sources=(src,))]),
    st.lists(flows(), max_size=12), st.lists(observations(), max_size=8), st.integers(0, 100), st.sampled_from(["a.pcap", "b.pcap", "c.pcap"]),
)


def reference(paths: list[Path]) -> str:
    return "".join(dumps_lines(merge_logs([read_flow_log(p) for p in paths])))


def columnar(paths: list[Path], out: Path) -> str | None:
    merged = merge_files(paths, str(out))
    return None if merged is None else out.read_text()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(logs, min_size=1, max_size=4))
def test_columnar_merge_writes_what_the_reference_writes(tmp_path, parts):
    paths = []
    for i, log in enumerate(parts):
        paths.append(tmp_path / f"n{i}.jsonl")
        write_flow_log(log, paths[-1])
    paths.append(tmp_path / "again.jsonl")  # the first again, in another file: every key of it in two lines
    write_flow_log(parts[0], paths[-1])
    got = columnar(paths, tmp_path / "out.jsonl")
    assert got is not None, "every file is the writer's own: the columnar way takes them all"
    assert got == reference(paths)
    summary = json.loads(got.splitlines()[-1])
    assert summary["kind"] == "stats"


def test_equal_runs_of_several_lines_unite_as_merge_runs_unites_them(tmp_path):
    # Three files with the same runs: equal runs tie in every sort, which must not move one of
    # them into the run before it.
    runs = tuple((BASE + i * 7 * RUN_GAP // 2, BASE + i * 7 * RUN_GAP // 2 + 10**9, 0) for i in range(6))
    flow = Flow("fd00::1", "10.96.0.10", "UDP", 0, 1, 1, 0, runs[0][0], runs[-1][1], (("dns", 0),), runs=runs)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jsonl")
        write_flow_log(FlowLog(flows=(flow,), stats={"packets": 1}), paths[-1])
    assert columnar(paths, tmp_path / "out.jsonl") == reference(paths)
    assert len(merge_logs([read_flow_log(tmp_path / "out.jsonl")]).flows[0].runs) == 6


def _flow_line(**change) -> str:
    obj = {"bytes": 10, "client_ports": [], "connections": 1, "direction": {"syn": 1}, "dst": "10.96.0.10", "evidence": "established",
           "first_seen": "2025-06-01T10:00:00.000000Z", "kind": "flow", "last_seen": "2025-06-01T10:00:01.000000Z", "packets": 2,
           "port": 53, "proto": "UDP", "runs": [["2025-06-01T10:00:00.000000Z", "2025-06-01T10:00:01.000000Z", 1]], "src": "10.244.0.5",
           "translated": []}
    obj.update(change)
    return json.dumps(obj, sort_keys=True, separators=(", ", ": "))


HEADER = '{"format": "netpol-learn/flows", "kind": "header", "sources": ["x.pcap"], "version": 2}'
STATS = '{"kind": "stats", "packets": 3}'

#: Files only the reference reader reads as they are: each merged with a file of the writer's own.
ODD = {
    "compact JSON": [HEADER, json.dumps(json.loads(_flow_line()), separators=(",", ":")), STATS],
    "keys out of order": [HEADER, json.dumps(json.loads(_flow_line()), separators=(", ", ": ")), STATS],
    "unsorted client ports": [HEADER, _flow_line(client_ports=[9000, 1025]), STATS],
    "runs not united": [HEADER, _flow_line(connections=2, runs=[["2025-06-01T10:00:00.000000Z", "2025-06-01T10:00:00.500000Z", 1],
                                                                   ["2025-06-01T10:00:00.400000Z", "2025-06-01T10:00:01.000000Z", 1]]), STATS],
    "pods not sorted": [HEADER, _flow_line(src_pods=["b/y", "a/x"]), STATS],
    "an escaped pod name": [HEADER, _flow_line(src_pods=['a/"quoted"']), STATS],
    "a non-ASCII pod name": [HEADER, _flow_line(src_pods=["a/caf\u00e9"]), STATS],
    "version 1": ['{"format": "netpol-learn/flows", "kind": "header", "sources": ["old.pcap"], "version": 1}',
                  '{"bytes": 10, "client_ports": [], "connections": 1, "direction": {"syn": 1}, "dst": "10.96.0.10", '
                  '"first_seen": "2025-06-01T10:00:00.000000Z", "kind": "flow", "last_seen": "2025-06-01T10:00:01.000000Z", '
                  '"packets": 2, "port": 53, "proto": "UDP", "src": "10.244.0.5", "translated": []}', STATS],
    "two segments": [HEADER, _flow_line(), STATS, HEADER, _flow_line(packets=5), STATS],
    "no stats line": [HEADER, _flow_line()],
    "CRLF line ends": [HEADER + "\r", _flow_line() + "\r", STATS + "\r"],
    "a time in milliseconds": [HEADER, _flow_line(first_seen="2025-06-01T10:00:00.000Z",
                                                  runs=[["2025-06-01T10:00:00.000Z", "2025-06-01T10:00:01.000000Z", 1]]), STATS],
    "blank lines": ["", HEADER, "", _flow_line(), "   ", STATS, ""],
    "an endpoint line": [HEADER, _flow_line(), '{"address": "10.244.0.5", "entity": "pod", "first_seen": "2025-06-01T10:00:00.000000Z", '
                         '"kind": "endpoint", "last_seen": "2025-06-01T10:00:01.000000Z", "namespace": "a", "pod": "x", "records": 2}', STATS],
    "a dns line of other spacing": [HEADER, '{"answers": [], "client": "10.244.0.5", "first_seen": "2025-06-01T10:00:00.000000Z", '
                                    '"kind": "dns", "last_seen": "2025-06-01T10:00:00.000000Z", "qname": "x.example", "qtype": "A", '
                                    '"queries": 1, "rcodes": [], "resolver": "10.96.0.10", "responses": 0, "transports": ["udp"]} ', STATS],
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_files_only_the_reference_reads_merge_as_the_reference_merges_them(tmp_path, case):
    own = tmp_path / "own.jsonl"
    write_flow_log(FlowLog(flows=(Flow("10.244.0.5", "10.96.0.10", "UDP", 53, 1, 1, 1, BASE, BASE, (("dns", 1),)),), stats={"packets": 1},
                           sources=("own.pcap",)), own)
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(("\n".join(ODD[case]) + "\n").encode())
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["merge", str(own), str(odd), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == reference([own, odd])


BAD = {
    "an address that is none": _flow_line(src="999.1.1.1"),
    "a count that is a bool": _flow_line(packets=True),
    "a negative count": _flow_line(bytes=-1),
    "a count as text": _flow_line(packets="2"),
    "a port out of range": _flow_line(port=70000),
    "runs that do not add up": _flow_line(connections=3),
    "an unknown direction method": _flow_line(direction={"guess": 1}),
    "a time that is none": _flow_line(last_seen="2025-06-31T10:00:01.000000Z"),
    "a time with an offset": _flow_line(last_seen="2025-06-01T10:00:01.000000+00:00"),
    "a time with a space": _flow_line(last_seen="2025-06-01 10:00:01.000000Z"),
    "a time without its fraction": _flow_line(last_seen="2025-06-01T10:00:01Z"),
    "an unknown entity": _flow_line(src_entity="world"),
    "not JSON": '{"bytes": 10, "client_ports": [',
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_invalid_line_is_the_reference_readers_error(tmp_path, case):
    good = tmp_path / "good.jsonl"
    write_flow_log(FlowLog(stats={"packets": 1}, sources=("g.pcap",)), good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([HEADER, _flow_line(dst="10.96.0.11"), BAD[case], STATS]) + "\n")
    with pytest.raises(FlowLogError) as expected:
        read_flow_log(bad)
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    result = CliRunner().invoke(main, ["merge", str(good), str(bad), "-o", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {expected.value}"]
    assert out.read_text() == "kept\n", "a failed merge leaves the output as it was"


def test_merge_to_standard_output_is_the_file_it_would_write(tmp_path):
    paths = []
    for i, src in enumerate(["10.244.0.5", "10.244.0.50"]):
        paths.append(tmp_path / f"{i}.jsonl")
        write_flow_log(FlowLog(flows=(Flow(src, "10.96.0.10", "UDP", 53, 1, 1, 1, BASE, BASE, (("dns", 1),)),), stats={"packets": 1}), paths[-1])
    result = CliRunner().invoke(main, ["merge", *map(str, paths), "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout == reference(paths)


def _two_logs(tmp_path) -> list[Path]:
    paths = []
    for i in range(2):
        flows = tuple(Flow(f"10.244.{i}.{j}", "10.96.0.10", "UDP", 53, j, j, 1, BASE + j, BASE + j, (("dns", 1),)) for j in range(1, 40))
        dns = tuple(DnsObservation(f"10.244.{i}.{j}", "10.96.0.10", f"n{j}.example", "A", 1, 1, BASE, BASE, rcodes=("NOERROR",),
                                   transports=("udp",)) for j in range(1, 30))
        paths.append(tmp_path / f"{i}.jsonl")
        write_flow_log(FlowLog(flows=flows, dns=dns, stats={"packets": 1}, sources=(f"{i}.pcap",)), paths[-1])
    return paths


def test_lines_out_of_the_writers_order_are_taken_and_written_in_it(tmp_path):
    # Every line the writer's own, but the file's flow and dns lines each in reverse: the merge
    # copies each line from where it is.
    paths = _two_logs(tmp_path)
    lines = paths[1].read_text().splitlines(keepends=True)
    flows = [x for x in lines if '"kind": "flow"' in x]
    dns = [x for x in lines if '"kind": "dns"' in x]
    paths[1].write_text(lines[0] + "".join(reversed(flows)) + "".join(reversed(dns)) + lines[-1])
    got = columnar(paths, tmp_path / "out.jsonl")
    assert got is not None, "each line is the writer's own: the columnar way takes the file"
    assert got == reference(paths)


def test_a_file_changed_after_it_was_read_is_merged_as_it_is_now(tmp_path, monkeypatch):
    import netpol_learn._merge as columnar_merge

    paths = _two_logs(tmp_path)
    counts = columnar_merge._counts

    def change_then_count(*args):
        # After DuckDB read the files, before their lines are copied: one flow's packets
        # change in place (the lines after it move), as a program rewriting the file would leave it.
        text = paths[1].read_text()
        assert '"packets": 7,' in text
        paths[1].write_text(text.replace('"packets": 7,', '"packets": 700,', 1))
        os.utime(paths[1], ns=(os.stat(paths[1]).st_atime_ns, os.stat(paths[1]).st_mtime_ns + 10**9))
        return counts(*args)

    monkeypatch.setattr(columnar_merge, "_counts", change_then_count)
    out = tmp_path / "out.jsonl"
    assert merge_files(paths, str(out)) is None, "the copy would not be of the lines read: the reference way must merge"
    assert not out.exists()
    monkeypatch.setattr(columnar_merge, "_counts", counts)
    result = CliRunner().invoke(main, ["merge", *map(str, paths), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == reference(paths)
    assert '"packets": 700,' in out.read_text()
