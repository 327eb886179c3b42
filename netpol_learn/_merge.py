"""Merging flow-log files at cluster scale: the flow and dns lines as columns in DuckDB.

``merge_files`` gives exactly what ``merge_logs`` of ``read_flow_log`` of each file gives, written
by ``dumps_lines`` (tests/test_merge_columnar.py compares the two on random logs), without a
Python object per line: a 500-node cluster's sniffers write about 3 M flow lines and 3 M dns
lines, which as ``Flow`` objects need about 10 GB and six minutes (benchmarks/README.md).

Why DuckDB (issue 15, measured on this machine): it reads the lines' JSON in C++ on every core
into typed columns (50 node logs, 611,000 lines, 232 MB: 1.1 s), groups and sorts them there,
formats the lines of merged keys, and spills to disk past its memory limit. The lines it sorts
are not its payload: it says where each is (file and line number), and runs of lines that
follow each other in a file are copied from there by the kernel (``_Sources``). msgspec
decodes the same lines into Python objects at about 3 µs a line (the time strings are the cost)
before any merging; Polars reads JSON Lines as fast but has no per-row string formatting, so
writing the lines would be Python's again.

Only what the one writer writes goes this way, checked line by line: a flow or dns line is taken
when the line DuckDB formats back from its parsed fields is byte for byte the line read (an ASCII
line: so every string is plain, no escapes), its fields are valid by the reader's rules (counts,
ports, times, runs, protocol, evidence, entities) and its addresses are IP addresses. A file
whose lines are all taken, with its header (version 2) first and its stats line last, is merged
here; any other file is read by ``read_flow_log`` (the reference, and its errors) and its flows
and dns observations join the columns as the lines the writer writes of them. When that is not
possible either, DuckDB fails, or a file changed between DuckDB's read and the copy of its
lines, ``merge_files`` returns None and the caller merges the reference way.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from netpol_learn._errors import FlowLogError
from netpol_learn._flowlog import (
    DIRECTION_METHODS, ENTITIES, EVIDENCE, MAX_CLIENT_PORTS, RUN_GAP, FlowLog, dns_line, dumps_lines, flow_line, is_address,
    merge_logs, merge_stats, read_flow_log, read_segment,
)
from netpol_learn._output import WrittenBy, copy_range, write_all, write_data

#: Files read by DuckDB in one statement: their text is held while it is parsed.
BATCH_FILES = 50
#: DuckDB's memory limit; past it, sorting and grouping spill to a temporary directory.
MEMORY_LIMIT = "1200MB"

_FLOW_PREFIX = '{"bytes": '
_DNS_PREFIX = '{"answers": '
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_GAP_US = RUN_GAP // 1000
_METHODS = sorted(DIRECTION_METHODS)  # a flow line's direction keys are sorted
_DCOL = {m: "d_" + m.replace("-", "_") for m in DIRECTION_METHODS}
_GLOB = set("*?[{")


def _sql_list(items: Iterable[str]) -> str:
    return "[" + ", ".join("'" + s + "'" for s in items) + "]"


_FLOW_JSON = "'" + json.dumps({
    "bytes": "BIGINT", "client_ports": ["BIGINT"], "connections": "BIGINT", "direction": {m: "BIGINT" for m in _METHODS},
    "dst": "VARCHAR", "dst_entity": "VARCHAR", "dst_pods": ["VARCHAR"], "evidence": "VARCHAR", "first_seen": "VARCHAR",
    "last_seen": "VARCHAR", "packets": "BIGINT", "port": "BIGINT", "proto": "VARCHAR", "runs": [["VARCHAR"]],
    "src": "VARCHAR", "src_entity": "VARCHAR", "src_pods": ["VARCHAR"],
    "translated": [{"dst": "VARCHAR", "port": "BIGINT", "src": "VARCHAR"}]}) + "'"
_DNS_JSON = "'" + json.dumps({
    "answers": [{"data": "VARCHAR", "name": "VARCHAR", "ttl": "BIGINT", "type": "VARCHAR"}], "client": "VARCHAR",
    "first_seen": "VARCHAR", "last_seen": "VARCHAR", "qname": "VARCHAR", "qtype": "VARCHAR", "queries": "BIGINT",
    "rcodes": ["VARCHAR"], "resolver": "VARCHAR", "responses": "BIGINT", "transports": ["VARCHAR"]}) + "'"

_DIRECTION = ", ".join(f"CASE WHEN {_DCOL[m]} IS NOT NULL THEN concat('\"{m}\": ', {_DCOL[m]}) END" for m in _METHODS)

# The writer's lines (``flow_line``, ``dns_line``) as SQL macros of the parsed columns (times in
# microseconds, ports of a flow's key -1 for none), and the checks of the reader's rules.
# ``concat`` (not ``||``, several times slower here) reads NULL as '': every field is checked
# not to be NULL where a line is taken. The parse is lenient where the comparison with the line
# written back is strict: a flow's direction is a struct of the known methods (an unknown one is
# not written back) and times are cast (a time not in the writer's form is not written back as
# it was); faster than a map and strptime (a fifth of the parse, measured).
_MACROS = f"""
CREATE MACRO q(s) AS concat('"', s, '"');
CREATE MACRO qlist(l) AS concat('[', array_to_string(list_transform(l, lambda x: concat('"', x, '"')), ', '), ']');
CREATE MACRO t(us) AS concat('"', strftime(make_timestamp(us), '{_TIME}'), '"');
CREATE MACRO portj(p) AS CASE WHEN p IS NULL OR p < 0 THEN 'null' ELSE p::VARCHAR END;
CREATE MACRO flow_line(bytes, client_ports, connections, {', '.join(_DCOL[m] for m in _METHODS)}, dst, dst_entity, dst_pods,
                       evidence, first_us, last_us, packets, port, proto, runs, src, src_entity, src_pods, translated) AS concat(
  '{{"bytes": ', bytes, ', "client_ports": [', array_to_string(client_ports, ', '), '], "connections": ', connections,
  ', "direction": {{', array_to_string(list_filter([{_DIRECTION}], lambda x: x IS NOT NULL), ', '), '}}, "dst": ', q(dst),
  CASE WHEN dst_entity <> '' THEN concat(', "dst_entity": ', q(dst_entity)) END,
  CASE WHEN len(dst_pods) > 0 THEN concat(', "dst_pods": ', qlist(dst_pods)) END,
  ', "evidence": ', q(evidence), ', "first_seen": ', t(first_us), ', "kind": "flow", "last_seen": ', t(last_us),
  ', "packets": ', packets, ', "port": ', portj(port), ', "proto": ', q(proto),
  ', "runs": [', array_to_string(list_transform(runs, lambda r: concat('[', t(r.a), ', ', t(r.b), ', ', r.n, ']')), ', '),
  '], "src": ', q(src),
  CASE WHEN src_entity <> '' THEN concat(', "src_entity": ', q(src_entity)) END,
  CASE WHEN len(src_pods) > 0 THEN concat(', "src_pods": ', qlist(src_pods)) END,
  ', "translated": [', array_to_string(list_transform(translated,
      lambda x: concat('{{"dst": ', q(x.dst), ', "port": ', portj(x.port), ', "src": ', q(x.src), '}}')), ', '), ']}}');
CREATE MACRO dns_line(answers, client, first_us, last_us, qname, qtype, queries, rcodes, resolver, responses, transports) AS concat(
  '{{"answers": [', array_to_string(list_transform(answers, lambda a: concat('{{"data": ', q(a.data), ', "name": ', q(a.name),
      ', "ttl": ', a.ttl, ', "type": ', q(a.type), '}}')), ', '),
  '], "client": ', q(client), ', "first_seen": ', t(first_us), ', "kind": "dns", "last_seen": ', t(last_us),
  ', "qname": ', q(qname), ', "qtype": ', q(qtype), ', "queries": ', queries, ', "rcodes": ', qlist(rcodes),
  ', "resolver": ', q(resolver), ', "responses": ', responses, ', "transports": ', qlist(transports), '}}');
CREATE MACRO us(s) AS epoch_us(TRY_CAST(s AS TIMESTAMP));
CREATE MACRO addr_sort(a) AS contains(a, ':');
CREATE MACRO tr_sort(l) AS list_transform(list_sort(list_transform(l,
    lambda x: {{'a': addr_sort(x.src), 's': x.src, 'b': addr_sort(x.dst), 'd': x.dst, 'p': coalesce(x.port, -1), 'x': x}})), lambda y: y.x);
"""

# Per line, the parsed columns and whether the line is the writer's and valid by the reader's rules.
_FLOW_PARSE = f"""
SELECT file, lineno, line, j.src AS src, j.dst AS dst, j.proto AS proto, coalesce(j.port, -1) AS port, j.evidence AS evidence,
       coalesce(j.src_pods, []) AS src_pods, coalesce(j.dst_pods, []) AS dst_pods,
       coalesce(j.src_entity, '') AS src_entity, coalesce(j.dst_entity, '') AS dst_entity,
       j.packets AS packets, j.bytes AS bytes, j.connections AS connections, us(j.first_seen) AS first_us, us(j.last_seen) AS last_us,
       {', '.join(f'j.direction."{m}" AS {_DCOL[m]}' for m in _METHODS)},
       coalesce(j.client_ports, []) AS client_ports, coalesce(j.translated, []) AS translated,
       list_transform(j.runs, lambda r: {{'a': us(r[1]), 'b': us(r[2]), 'n': TRY_CAST(r[3] AS BIGINT), 'len': len(r)}}) AS runs0,
       j.port AS port0
FROM (SELECT file, lineno, line, json_transform(line, {_FLOW_JSON}) AS j FROM @SOURCE@)
"""

_FLOW_OK = f"""
  src IS NOT NULL AND dst IS NOT NULL AND port IS NOT NULL
  AND packets >= 0 AND bytes >= 0 AND connections >= 0 AND first_us <= last_us
  AND (port0 IS NULL OR port0 BETWEEN 0 AND 65535)
  AND (proto IN ('TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPv6') OR (regexp_full_match(proto, 'IP-[0-9]{{1,3}}') AND TRY_CAST(substr(proto, 4) AS INTEGER) <= 255))
  AND evidence IN {tuple(EVIDENCE)}
  AND (src_entity = '' OR src_entity IN {tuple(e for e in ENTITIES if e != 'pod')})
  AND (dst_entity = '' OR dst_entity IN {tuple(e for e in ENTITIES if e != 'pod')})
  AND {' AND '.join(f"coalesce({_DCOL[m]}, 0) >= 0" for m in _METHODS)}
  AND len(list_filter(client_ports, lambda p: p IS NULL OR p < 0 OR p > 65535)) = 0 AND client_ports = list_sort(client_ports)
  AND len(list_filter(translated, lambda x: x.src IS NULL OR x.dst IS NULL OR x.port < 0 OR x.port > 65535)) = 0
  AND translated = tr_sort(translated)
  AND src_pods = list_sort(list_distinct(src_pods)) AND dst_pods = list_sort(list_distinct(dst_pods))
  AND len(runs) > 0
  AND len(list_filter(runs, lambda r: r.a IS NULL OR r.b IS NULL OR r.n IS NULL OR r.n < 0 OR r.b < r.a)) = 0
  AND len(list_filter(range(1, len(runs)), lambda i: runs[i + 1].a <= runs[i].b + {_GAP_US})) = 0
  AND runs[1].a = first_us AND list_max(list_transform(runs, lambda r: r.b)) = last_us
  AND list_sum(list_transform(runs, lambda r: r.n)) = connections
"""

_DNS_PARSE = f"""
SELECT file, lineno, line, j.client AS client, j.resolver AS resolver, j.qname AS qname, j.qtype AS qtype,
       j.queries AS queries, j.responses AS responses, us(j.first_seen) AS first_us, us(j.last_seen) AS last_us,
       coalesce(j.answers, []) AS answers, coalesce(j.rcodes, []) AS rcodes, coalesce(j.transports, []) AS transports
FROM (SELECT file, lineno, line, json_transform(line, {_DNS_JSON}) AS j FROM @SOURCE@)
"""

_DNS_OK = """
  client IS NOT NULL AND resolver IS NOT NULL AND rcodes IS NOT NULL AND transports IS NOT NULL
  AND queries >= 0 AND responses >= 0 AND first_us <= last_us AND qname IS NOT NULL AND qtype IS NOT NULL
  AND len(list_filter(answers, lambda a: a.name IS NULL OR a.type IS NULL OR a.data IS NULL OR a.ttl IS NULL OR a.ttl < 0)) = 0
  AND len(list_filter(range(1, len(answers)), lambda i: [answers[i].name, answers[i].type, answers[i].data]
                                                   >= [answers[i + 1].name, answers[i + 1].type, answers[i + 1].data])) = 0
  AND rcodes = list_sort(rcodes) AND transports = list_sort(transports)
"""

_FLOW_COLS = ("src, dst, proto, port, evidence, src_pods, dst_pods, src_entity, dst_entity, packets, bytes, connections, "
              f"first_us, last_us, {', '.join(_DCOL[m] for m in _METHODS)}, client_ports, translated, runs")
_FLOW_KEY = "src, dst, proto, port, evidence, src_pods, dst_pods, src_entity, dst_entity"
_DNS_COLS = "client, resolver, qname, qtype, queries, responses, first_us, last_us, answers, rcodes, transports"
_DNS_KEY = "client, resolver, qname, qtype"
# Each line's key as two hashes of its fields (the second in the other order): lines group by the
# first, and a group whose second hashes differ (two keys with one hash) sends the merge the
# reference way. Grouping by the fields themselves (lists among them) spills past the memory
# limit and grew faster than the lines (measured).
_FLOW_HASHES = f"hash({_FLOW_KEY}) AS k, hash({', '.join(reversed(_FLOW_KEY.split(', ')))}) AS k2"
_DNS_HASHES = f"hash({_DNS_KEY}) AS k, hash({', '.join(reversed(_DNS_KEY.split(', ')))}) AS k2"


@dataclass
class Merged:
    """A merged log as ``merge_files`` writes it: its line counts."""

    flows: int
    dns: int


class _Unusable(Exception):
    """This way cannot merge these files: the reference way must."""


def merge_files(paths: list[Path], output: str) -> Merged | None:
    """Merge the flow-log files ``paths`` and write the result to ``output`` (by ``write_data``,
    '-' is standard output); None (nothing written) when these files must be merged the
    reference way."""
    if not _usable(paths):
        return None
    try:
        import duckdb
    except ImportError:  # pragma: no cover - a dependency
        return None
    with tempfile.TemporaryDirectory(prefix="netpol-learn-merge-") as tmp:
        con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": os.path.join(tmp, "spill"),
                                     "preserve_insertion_order": False})
        try:
            state = _load(con, paths, Path(tmp))
            try:
                counts = _counts(con, state, Path(tmp))
                # A regular file's temporary file beside it is filled, else a temporary file
                # copied once whole: nothing reaches standard output unless all of it can.
                write_data(output, WrittenBy(_fill(con, state)))
            finally:
                state.files.close()
        except (_Unusable, duckdb.Error):
            return None
        finally:
            con.close()
    return Merged(*counts)


def _usable(paths: list[Path]) -> bool:
    seen = set()
    for p in paths:
        s = str(p)
        if _GLOB & set(s) or "'" in s or s in seen:
            return False  # DuckDB would read a glob; a file given twice counts twice the reference way
        seen.add(s)
        try:
            if not stat.S_ISREG(os.stat(p).st_mode):
                return False
        except OSError:
            return False
    return True


@dataclass
class _State:
    stats: dict
    sources: set
    endpoints: list
    files: "_Sources"


def _load(con, paths: list[Path], tmp: Path) -> _State:
    con.execute(_MACROS)
    con.execute("CREATE TEMP TABLE lines (file INTEGER, lineno BIGINT, line VARCHAR)")
    con.execute(f"CREATE TABLE flows AS SELECT * FROM ({_parsed_flows(0)}) WHERE false")
    con.execute(f"CREATE TABLE dns AS SELECT * FROM ({_parsed_dns(0)}) WHERE false")
    state = _State(stats={}, sources=set(), endpoints=[], files=_Sources())
    slow: list[int] = []
    for start in range(0, len(paths), BATCH_FILES):
        slow += _load_batch(con, paths, start, state)
    if slow:
        con.execute("CREATE TEMP TABLE slow AS SELECT unnest(?::INTEGER[]) AS file", [slow])
        con.execute("DELETE FROM flows WHERE file IN (SELECT file FROM slow); DELETE FROM dns WHERE file IN (SELECT file FROM slow)")
        _load_slow(con, [paths[i] for i in slow], state, tmp)
    if not all(is_address(a) for a in _addresses(con)):
        raise _Unusable  # the reference way names the file and line
    return state


def _split(con, files: list[str], table: str = "lines") -> None:
    """The lines of ``files`` (their index, line number from 1, text) in the table ``table``."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT list_position(?, filename)::INTEGER - 1 AS file, "
        "generate_subscripts(l, 1) AS lineno, unnest(l) AS line "
        "FROM (SELECT filename, string_split(content, chr(10)) AS l FROM read_text(?))", [files, files])


_FLOW_ARGS = (f"bytes, client_ports, connections, {', '.join(_DCOL[m] for m in _METHODS)}, dst, dst_entity, dst_pods, evidence, "
              "first_us, last_us, packets, port, proto, runs, src, src_entity, src_pods, translated")
_DNS_ARGS = "answers, client, first_us, last_us, qname, qtype, queries, rcodes, resolver, responses, transports"


_FLOW_LINES = f"lines WHERE starts_with(line, '{_FLOW_PREFIX}')"
_DNS_LINES = f"lines WHERE starts_with(line, '{_DNS_PREFIX}')"


def _flow_fields(source: str) -> str:
    """The fields of the flow lines of ``source`` (a table or subquery of file, lineno, line)."""
    return ("SELECT * EXCLUDE (runs0), list_transform(runs0, lambda r: CASE WHEN r.len = 3 THEN {'a': r.a, 'b': r.b, 'n': r.n} END) AS runs "
            f"FROM ({_FLOW_PARSE.replace('@SOURCE@', source)})")


def _dns_fields(source: str) -> str:
    """The fields of the dns lines of ``source``, as ``_flow_fields``."""
    return _DNS_PARSE.replace("@SOURCE@", source)


def _parsed_flows(base: int) -> str:
    """The flow lines of ``lines`` as the rows of ``flows``: the file (its index plus ``base``),
    ``ok`` where the line is the writer's (what ``flow_line`` writes of the fields parsed: so the
    fields are what the reference reads) and valid, the key (its fields, to sort by, and its
    hashes), the translated addresses and the line's number in its file (the writer copies the
    line from there: ``_Sources``). The other fields are parsed again from the line only for
    keys in several lines (``_counts``): kept for every line, they cost more to store than to
    parse (measured: 9.2 s of 15.3 at 100 logs went into storing them)."""
    return (f"SELECT file + {base} AS file, (({_FLOW_OK}) AND line = flow_line({_FLOW_ARGS}) AND strlen(line) = length(line)) IS TRUE AS ok, "
            f"{_FLOW_KEY}, {_FLOW_HASHES}, "
            "list_concat(list_transform(translated, lambda x: x.src), list_transform(translated, lambda x: x.dst)) AS ta, lineno "
            f"FROM ({_flow_fields(_FLOW_LINES)})")


def _parsed_dns(base: int) -> str:
    """The dns lines of ``lines`` as the rows of ``dns``, as ``_parsed_flows``."""
    return (f"SELECT file + {base} AS file, (({_DNS_OK}) AND line = dns_line({_DNS_ARGS}) AND strlen(line) = length(line)) IS TRUE AS ok, "
            f"{_DNS_KEY}, {_DNS_HASHES}, lineno FROM ({_dns_fields(_DNS_LINES)})")


def _load_batch(con, paths: list[Path], start: int, state: _State) -> list[int]:
    """Parse the files ``paths[start:start + BATCH_FILES]`` into the tables; the indices of those
    whose lines are not all taken are returned, for the reference reader."""
    batch = paths[start : start + BATCH_FILES]
    for i, p in enumerate(batch):
        if not state.files.add(start + i, str(p)):
            return list(range(start, start + len(batch)))  # gone, or not a regular file: the reference reader says
    try:
        _split(con, [str(p) for p in batch])
    except Exception:  # noqa: BLE001 - not UTF-8 text, say: the reference reader words why
        return list(range(start, start + len(batch)))
    con.execute(f"INSERT INTO flows {_parsed_flows(start)}")
    con.execute(f"INSERT INTO dns {_parsed_dns(start)}")
    bad = {f - start for (f,) in con.execute(
        "SELECT DISTINCT file FROM flows WHERE file >= $1 AND NOT ok UNION SELECT DISTINCT file FROM dns WHERE file >= $1 AND NOT ok",
        [start]).fetchall()}
    others: dict[int, list[tuple[int, str]]] = {}
    for f, lineno, line in con.execute(
            f"SELECT file, lineno, line FROM lines WHERE line <> '' AND NOT starts_with(line, '{_FLOW_PREFIX}') "
            f"AND NOT starts_with(line, '{_DNS_PREFIX}') ORDER BY file, lineno").fetchall():
        others.setdefault(f, []).append((lineno, line))
    bounds = {f: (a, b) for f, a, b in con.execute("SELECT file, min(lineno), max(lineno) FROM lines WHERE line <> '' GROUP BY file").fetchall()}
    for i, p in enumerate(batch):
        segment = None if i in bad else _framing(others.get(i, []), bounds.get(i), str(p))
        if segment is None:
            bad.add(i)
            continue
        state.stats = merge_stats(state.stats, segment.stats)
        state.sources.update(segment.sources)
    return [start + i for i in sorted(bad)]


def _framing(others: list[tuple[int, str]], bounds: tuple[int, int] | None, name: str) -> FlowLog | None:
    """The header and stats of a file whose other lines are all taken, read by the reference
    reader: a header first, a stats line last and nothing else; else None."""
    if bounds is None or len(others) != 2 or others[0][0] != bounds[0] or others[1][0] != bounds[1]:
        return None
    try:
        segment = read_segment(others[0][1] + "\n" + others[1][1] + "\n", name)
    except FlowLogError:  # the reference reader words it, with the right line number
        return None
    return segment if not segment.flows and not segment.dns and not segment.endpoints else None


def _addresses(con) -> set[str]:
    rows = con.execute(
        "SELECT src FROM flows UNION SELECT dst FROM flows "
        "UNION SELECT unnest(ta) FROM flows "
        "UNION SELECT client FROM dns UNION SELECT resolver FROM dns").fetchall()
    return {a for (a,) in rows}


def _load_slow(con, paths: list[Path], state: _State, tmp: Path) -> None:
    """Files read by the reference reader (its errors are the command's): their flows and dns
    observations join the tables as the writer's lines (file -1), which must then be taken."""
    text = tmp / "slow.jsonl"
    with open(text, "w", encoding="ascii", newline="\n") as out:
        for p in paths:
            log = read_flow_log(p)
            state.stats = merge_stats(state.stats, log.stats)
            state.sources.update(log.sources)
            state.endpoints.extend(log.endpoints)
            out.writelines(flow_line(f) + "\n" for f in log.flows)
            out.writelines(dns_line(d) + "\n" for d in log.dns)
    if not state.files.add(-1, str(text)):
        raise _Unusable  # (the merge's own temporary file: never)
    _split(con, [str(text)])
    con.execute(f"INSERT INTO flows {_parsed_flows(-1)}")
    con.execute(f"INSERT INTO dns {_parsed_dns(-1)}")
    lines, taken = con.execute("SELECT (SELECT count(*) FROM lines WHERE line <> ''), "
                               "(SELECT count(*) FROM flows WHERE file = -1 AND ok) + (SELECT count(*) FROM dns WHERE file = -1 AND ok)").fetchone()
    if taken != lines:
        raise _Unusable  # a string the plain quoting does not write (an escape): the reference way


def _counts(con, state: _State, tmp: Path) -> tuple[int, int]:
    """Count the lines of each key (tables ``kf``, ``kd``), and merge the keys in several lines:
    their lines copied from their files (``_multi``) and parsed again (``fm``, ``dm``), their
    fields summed (``gf``, ``gd``: one row per key), their runs and answers united (``mr``,
    ``ma``); the numbers of flows and dns observations."""
    for table, counts in (("flows", "kf"), ("dns", "kd")):
        con.execute(f"CREATE TABLE {counts} AS SELECT k, count(*) AS members, min(k2) <> max(k2) AS clash FROM {table} GROUP BY k")
        if con.execute(f"SELECT count(*) FROM {counts} WHERE clash").fetchone()[0]:
            raise _Unusable  # two keys with one hash
    con.execute("DROP TABLE lines")
    # A key in one line (most, across nodes) is written as that line; the others are summed.
    con.execute(f"CREATE TABLE fm AS SELECT {_FLOW_HASHES}, * FROM ({_flow_fields(_multi(con, state, 'flows', 'kf', tmp))})")
    con.execute(f"""
CREATE TABLE gf AS
SELECT k, {', '.join(f"first({c}) AS {c}" for c in _FLOW_KEY.split(', '))}, sum(packets)::BIGINT AS packets,
       sum(bytes)::BIGINT AS bytes, sum(connections)::BIGINT AS connections, min(first_us) AS first_us, max(last_us) AS last_us,
       {', '.join(f"sum({_DCOL[m]})::BIGINT AS {_DCOL[m]}" for m in _METHODS)},
       list_sort(list_distinct(flatten(list(client_ports))))[1:{MAX_CLIENT_PORTS}] AS client_ports,
       tr_sort(list_distinct(flatten(list(translated)))) AS translated
FROM fm GROUP BY k""")
    # The runs of flows in several lines, merged as merge_runs merges them: sorted, a run ends
    # where the next starts more than RUN_GAP after the latest end before it. Both windows sort
    # the same way to the last tie (``i``): equal runs of two lines must not trade places between
    # the one that finds where a run starts and the one that numbers the runs.
    con.execute(f"""
CREATE TABLE mr AS
WITH u AS (SELECT row_number() OVER () AS i, * FROM (SELECT k, unnest(runs, recursive := true) FROM fm)),
w AS (SELECT k, a, b, n, i, max(b) OVER (PARTITION BY k ORDER BY a, b, n, i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev FROM u),
x AS (SELECT *, sum(CASE WHEN prev IS NULL OR a > prev + {_GAP_US} THEN 1 ELSE 0 END)
                  OVER (PARTITION BY k ORDER BY a, b, n, i ROWS UNBOUNDED PRECEDING) AS run FROM w)
SELECT k, list({{'a': ra, 'b': rb, 'n': rn}} ORDER BY ra) AS runs
FROM (SELECT k, run, min(a) AS ra, max(b) AS rb, sum(n)::BIGINT AS rn FROM x GROUP BY k, run) GROUP BY k""")
    con.execute(f"CREATE TABLE dm AS SELECT {_DNS_HASHES}, * FROM ({_dns_fields(_multi(con, state, 'dns', 'kd', tmp))})")
    con.execute(f"""
CREATE TABLE gd AS
SELECT k, {', '.join(f"first({c}) AS {c}" for c in _DNS_KEY.split(', '))}, sum(queries)::BIGINT AS queries,
       sum(responses)::BIGINT AS responses, min(first_us) AS first_us, max(last_us) AS last_us,
       list_sort(list_distinct(flatten(list(rcodes)))) AS rcodes, list_sort(list_distinct(flatten(list(transports)))) AS transports
FROM dm GROUP BY k""")
    # The answers of observations in several lines: one per (name, type, data), its largest TTL.
    con.execute("""
CREATE TABLE ma AS
SELECT k, list({'data': data, 'name': name, 'ttl': ttl, 'type': type} ORDER BY name, type, data) AS answers FROM (
  SELECT k, name, type, data, max(ttl) AS ttl FROM (SELECT k, unnest(answers, recursive := true) FROM dm) GROUP BY k, name, type, data)
GROUP BY k""")
    con.execute("DROP TABLE fm; DROP TABLE dm; DROP TABLE IF EXISTS multi")
    nf = con.execute("SELECT count(*) FROM kf").fetchone()[0]
    nd = con.execute("SELECT count(*) FROM kd").fetchone()[0]
    return nf, nd


def _multi(con, state: _State, table: str, counts: str, tmp: Path) -> str:
    """The lines of ``table`` whose key is in several lines, as a source of ``_flow_fields``:
    copied from their files into one (in the merge's temporary directory) and read back."""
    rows = con.execute(f"SELECT file, lineno, NULL::VARCHAR AS text FROM {table} "
                       f"SEMI JOIN (SELECT k FROM {counts} WHERE members > 1) USING (k) ORDER BY file, lineno").fetchnumpy()
    name = tmp / f"multi-{table}.jsonl"

    def fill(filled: str) -> None:
        fd = os.open(filled, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            state.files.copy_lines(fd, rows)
        finally:
            os.close(fd)
    write_data(name, WrittenBy(fill))
    _split(con, [str(name)], table="multi")
    return "(SELECT 0 AS file, 0 AS lineno, line FROM multi WHERE line <> '')"


class _Sources:
    """The files whose lines the merge copies, by their index in the tables (-1: the lines of
    the files the reference reader read): each opened once, checked to be the file DuckDB read
    (device, inode, size, modification time, before and after), its lines' starts found when
    first needed. Only bytes that were checked are copied: a line is taken only when it is the
    writer's line of its fields (``_parsed_flows``), so copied it is what ``flow_line`` writes."""

    def __init__(self):
        self._paths: dict[int, str] = {}
        self._stamps: dict[int, tuple] = {}
        self._fds: dict[int, int] = {}
        self._starts: dict = {}

    def add(self, index: int, path: str) -> bool:
        """Note the file ``path`` (before DuckDB reads it); False when it is not a regular file."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        self._paths[index] = path
        self._stamps[index] = _stamp(st)
        return True

    def _open(self, index: int) -> int:
        fd = self._fds.get(index)
        if fd is None:
            try:
                fd = os.open(self._paths[index], os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise _Unusable from None  # gone since: the reference reader says why
            self._fds[index] = fd
            if _stamp(os.fstat(fd)) != self._stamps[index]:
                raise _Unusable  # changed since DuckDB read it: read again, the reference way
        return fd

    def _line_starts(self, index: int):
        import numpy as np

        starts = self._starts.get(index)
        if starts is None:
            fd = self._open(index)
            with open(fd, "rb", closefd=False) as f:
                f.seek(0)
                data = np.fromfile(f, dtype=np.uint8)
            # Line n (from 1) is bytes starts[n - 1]:starts[n], its newline included.
            starts = np.concatenate(([0], np.flatnonzero(data == 10) + 1))
            if len(data) and data[-1] != 10:
                starts = np.append(starts, len(data))
            self._starts[index] = starts
        return starts

    def copy_lines(self, out: int, rows: dict) -> None:
        """Write to the descriptor ``out`` the lines ``rows`` names, in order (a column each,
        from DuckDB's ``fetchnumpy``): ``file`` and ``lineno`` a line of a file, or ``file``
        -2 and ``text`` a line DuckDB wrote (a merged key's). A run of lines that follow each
        other in one file is one copy by the kernel: the rows are few Python steps, not one each."""
        import numpy as np

        file = np.asarray(rows["file"])
        if not len(file):
            return
        lineno = np.asarray(np.ma.getdata(rows["lineno"])).astype(np.int64)
        text = file == -2
        if text.any():
            lineno[text] = np.arange(1, int(text.sum()) + 1)  # the texts in order: one run where they follow each other
            texts = np.ma.getdata(rows["text"])[text].tolist()
        cut = np.flatnonzero((file[1:] != file[:-1]) | (lineno[1:] != lineno[:-1] + 1)) + 1
        starts, ends = np.concatenate(([0], cut)).tolist(), np.concatenate((cut, [len(file)])).tolist()
        for a, b in zip(starts, ends):
            f, first = int(file[a]), int(lineno[a])
            if f == -2:
                write_all(out, "".join(t + "\n" for t in texts[first - 1 : first - 1 + b - a]).encode())
                continue
            at = self._line_starts(f)
            if first + b - a - 1 >= len(at):
                raise _Unusable  # fewer lines than DuckDB read: changed since
            size = int(at[first + b - a - 1] - at[first - 1])
            if copy_range(out, self._open(f), int(at[first - 1]), size) != size:
                raise _Unusable  # cut short since

    def check(self) -> None:
        """``_Unusable`` when a file changed while its lines were copied (before the output is
        in place: the reference way writes it)."""
        if any(_stamp(os.fstat(fd)) != self._stamps[index] for index, fd in self._fds.items()):
            raise _Unusable

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _stamp(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _fill(con, state: _State):
    """What fills the merged log's file (``WrittenBy``): the header, the flow lines (in the
    writer's order), the dns lines (in its order), the endpoints and the stats. DuckDB sorts
    the keys and says where each line is (its file and line number, or the text of a merged
    key's line); the lines are copied from their files by the kernel. (Sorted with the lines as
    their payload and written by DuckDB's ``COPY``, the 500-log merge's lines took 17-19 s of
    its 47; sorting only the keys, 1 s: benchmarks/README.md.)"""
    frame = [line.encode() for line in dumps_lines(merge_logs([FlowLog(
        stats=state.stats, sources=tuple(state.sources), endpoints=tuple(state.endpoints))]))]
    # The addresses ranked in the writer's order (IPv4 first, then as text): integers sort much
    # faster than the texts, which share long prefixes.
    con.execute("CREATE TABLE ar AS SELECT a, (row_number() OVER (ORDER BY addr_sort(a), a))::INTEGER AS r FROM "
                "(SELECT src AS a FROM flows UNION SELECT dst FROM flows UNION SELECT client FROM dns UNION SELECT resolver FROM dns)")
    evidence = _sql_list(EVIDENCE)
    # The flow lines in the writer's order (by src, dst, proto, port, evidence, pods, entities);
    # the dns lines in its order (by client, resolver, qname, qtype).
    flows = f"""
SELECT file, lineno, text FROM (
  SELECT {_FLOW_KEY}, file, lineno, NULL::VARCHAR AS text FROM flows SEMI JOIN (SELECT k FROM kf WHERE members = 1) USING (k)
  UNION ALL
  SELECT {_FLOW_KEY}, -2, 0, flow_line({_FLOW_ARGS.replace(' runs,', ' mr.runs,')}) FROM gf LEFT JOIN mr USING (k)) g
JOIN ar s ON s.a = g.src JOIN ar d ON d.a = g.dst
ORDER BY s.r, d.r, proto, port, list_position({evidence}, evidence), src_pods, dst_pods, src_entity, dst_entity"""
    dns = f"""
SELECT file, lineno, text FROM (
  SELECT {_DNS_KEY}, file, lineno, NULL::VARCHAR AS text FROM dns SEMI JOIN (SELECT k FROM kd WHERE members = 1) USING (k)
  UNION ALL
  SELECT {_DNS_KEY}, -2, 0, dns_line(coalesce(ma.answers, []), client, first_us, last_us, qname, qtype, queries, rcodes, resolver,
                                   responses, transports) FROM gd LEFT JOIN ma USING (k)) g
JOIN ar c ON c.a = g.client JOIN ar r ON r.a = g.resolver
ORDER BY c.r, r.r, qname, qtype"""

    def fill(name: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            write_all(fd, frame[0])
            state.files.copy_lines(fd, con.execute(flows).fetchnumpy())
            state.files.copy_lines(fd, con.execute(dns).fetchnumpy())
            write_all(fd, b"".join(frame[1:]))
            state.files.check()
        finally:
            os.close(fd)
    return fill
