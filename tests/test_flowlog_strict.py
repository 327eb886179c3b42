"""A flow-log line whose fields are not what they must be is one error with the file, the line
number and the field (``flows.jsonl:3: invalid flow: src: '999.1.1.1' is not an IP address``): a
table of mutations of one line of a real log (the guestbook capture), read by the library
(``FlowLogError``) and by ``netpol-learn merge`` (exit code 2, one line, no traceback).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netpol_learn._errors import FlowLogError
from netpol_learn._flowlog import read_flow_log

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def lines(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("flows") / "flows.jsonl"
    subprocess.run([sys.executable, "-m", "netpol_learn", "capture", str(ROOT / "captures" / "guestbook" / "capture.pcap"),
                    "-o", str(out)], check=True, capture_output=True)
    return [json.loads(line) for line in out.read_text().splitlines()]


def setitem(target, key, value):
    target[key] = value


def first_answer(o):
    return next(a for a in o["answers"])


# id: (kind of the line changed, mutation, what the error says after "<file>:<line>: invalid <kind>: ")
MUTATIONS = {
    "src-not-an-address": ("flow", lambda o: setitem(o, "src", "999.1.1.1"), "src: '999.1.1.1' is not an IP address"),
    "dst-a-number": ("flow", lambda o: setitem(o, "dst", 167772161), "dst: 167772161 is not an IP address"),
    "src-missing": ("flow", lambda o: o.pop("src"), "src: missing"),
    "port-a-name": ("flow", lambda o: setitem(o, "port", "http"), "port: 'http' is not a port number (0-65535)"),
    "port-a-numeric-string": ("flow", lambda o: setitem(o, "port", "5432"), "port: '5432' is not a port number (0-65535)"),
    "port-above-65535": ("flow", lambda o: setitem(o, "port", 70000), "port: 70000 is not a port number (0-65535)"),
    "port-negative": ("flow", lambda o: setitem(o, "port", -1), "port: -1 is not a port number (0-65535)"),
    "port-boolean": ("flow", lambda o: setitem(o, "port", True), "port: True is not a port number (0-65535)"),
    "port-missing": ("flow", lambda o: o.pop("port"), "port: missing"),
    "proto-unknown": ("flow", lambda o: setitem(o, "proto", "HTTP"), "proto: 'HTTP' is not TCP, UDP, SCTP, ICMP, ICMPv6 or IP-<number>"),
    "proto-ip-300": ("flow", lambda o: setitem(o, "proto", "IP-300"), "proto: 'IP-300' is not TCP, UDP, SCTP, ICMP, ICMPv6 or IP-<number>"),
    "proto-lower-case": ("flow", lambda o: setitem(o, "proto", "tcp"), "proto: 'tcp' is not TCP, UDP, SCTP, ICMP, ICMPv6 or IP-<number>"),
    "packets-negative": ("flow", lambda o: setitem(o, "packets", -1), "packets: -1 is negative"),
    "bytes-a-string": ("flow", lambda o: setitem(o, "bytes", "100"), "bytes: '100' is not a whole number"),
    "connections-fractional": ("flow", lambda o: setitem(o, "connections", 1.5), "connections: 1.5 is not a whole number"),
    "first-seen-a-number": ("flow", lambda o: setitem(o, "first_seen", 1763707429), "first_seen: 1763707429 is not an RFC 3339 UTC time"),
    "last-seen-not-a-time": ("flow", lambda o: setitem(o, "last_seen", "yesterday"), "last_seen: 'yesterday' is not an RFC 3339 UTC time"),
    "last-seen-before-first": ("flow", lambda o: setitem(o, "last_seen", "2000-01-01T00:00:00.000000Z"), "last_seen: before first_seen"),
    "direction-negative": ("flow", lambda o: setitem(o, "direction", {"syn": -5}), "direction.syn: -5 is negative"),
    "direction-a-string": ("flow", lambda o: setitem(o, "direction", "syn"), "direction: not a mapping"),
    "client-port-above-65535": ("flow", lambda o: setitem(o, "client_ports", [70000]), "client_ports[0]: 70000 is not a port number (0-65535)"),
    "client-ports-a-string": ("flow", lambda o: setitem(o, "client_ports", "40000"), "client_ports: not a list"),
    "translated-not-an-address": ("flow", lambda o: setitem(o, "translated", [{"src": "10.244.0.4", "dst": "db", "port": 5432}]),
                                  "translated[0].dst: 'db' is not an IP address"),
    "translated-port-a-string": ("flow", lambda o: setitem(o, "translated", [{"src": "10.244.0.4", "dst": "10.244.0.3", "port": "5432"}]),
                                 "translated[0].port: '5432' is not a port number (0-65535)"),
    "translated-a-string": ("flow", lambda o: setitem(o, "translated", "10.244.0.3"), "translated: not a list"),
    "src-pods-a-string": ("flow", lambda o: setitem(o, "src_pods", "guestbook/api"), "src_pods: not a list"),
    # null is not an empty list: the reader's fast paths for absent or empty fields must not take it
    "translated-null": ("flow", lambda o: setitem(o, "translated", None), "translated: not a list"),
    "client-ports-null": ("flow", lambda o: setitem(o, "client_ports", None), "client_ports: not a list"),
    "src-pods-null": ("flow", lambda o: setitem(o, "src_pods", None), "src_pods: not a list"),
    "dst-pods-null": ("flow", lambda o: setitem(o, "dst_pods", None), "dst_pods: not a list"),
    "src-entity-null": ("flow", lambda o: setitem(o, "src_entity", None),
                        "src_entity: None is not one of host, remote-node, kube-apiserver"),
    "direction-unknown-method": ("flow", lambda o: setitem(o, "direction", {"syn": 1, "zzz": 2, "echo": 1}),
                                 "unknown direction method 'echo'"),
    "run-starts-after-first-seen": ("flow", lambda o: setitem(o, "runs", [[o["last_seen"], o["last_seen"], o["connections"]]]),
                                    "runs: do not span first_seen to last_seen"),
    "run-not-a-time": ("flow", lambda o: setitem(o, "runs", [["soon", "later", o["connections"]]]),
                       "runs[0]: 'soon' or 'later' is not an RFC 3339 UTC time"),
    "dns-client-not-an-address": ("dns", lambda o: setitem(o, "client", "10.244.0"), "client: '10.244.0' is not an IP address"),
    "dns-resolver-missing": ("dns", lambda o: o.pop("resolver"), "resolver: missing"),
    "dns-queries-negative": ("dns", lambda o: setitem(o, "queries", -2), "queries: -2 is negative"),
    "dns-responses-a-string": ("dns", lambda o: setitem(o, "responses", "1"), "responses: '1' is not a whole number"),
    "dns-ttl-a-string": ("dns", lambda o: setitem(first_answer(o), "ttl", "30"), "answers[0].ttl: '30' is not a whole number"),
    "dns-answers-a-string": ("dns", lambda o: setitem(o, "answers", "10.96.0.1"), "answers: not a list"),
    "dns-answers-null": ("dns", lambda o: setitem(o, "answers", None), "answers: not a list"),
    "dns-answer-not-a-mapping": ("dns", lambda o: setitem(o, "answers", ["10.96.0.1"]), "answers[0]: not a mapping"),
    "dns-second-answer-without-data": ("dns", lambda o: setitem(o, "answers", [first_answer(o), {"name": "x", "type": "A", "ttl": 5}]),
                                       "answers[1].data: missing"),
    "dns-rcodes-null": ("dns", lambda o: setitem(o, "rcodes", None), "rcodes: not a list"),
    "dns-transport-a-number": ("dns", lambda o: setitem(o, "transports", ["udp", 6]), "transports[1]: not a string"),
    "dns-qname-a-number": ("dns", lambda o: setitem(o, "qname", 5), "qname: not a string"),
    "dns-rcode-a-number": ("dns", lambda o: setitem(o, "rcodes", [0]), "rcodes[0]: not a string"),
    "dns-first-seen-not-a-time": ("dns", lambda o: setitem(o, "first_seen", "2026-11-21 06:43:49"),
                                  "first_seen: '2026-11-21 06:43:49' is not an RFC 3339 UTC time"),
    "header-sources-a-string": ("header", lambda o: setitem(o, "sources", "capture.pcap"), "sources: not a list of names"),
    # stats: read, then added up when logs merge; a counter that is not a count was a TypeError traceback
    "stats-packets-a-string": ("stats", lambda o: setitem(o, "packets", "x"), "packets: 'x' is not a count"),
    "stats-decoded-a-boolean": ("stats", lambda o: setitem(o, "decoded", True), "decoded: True is not a count"),
    "stats-tunnel-count-negative": ("stats", lambda o: setitem(o, "tunnels", {"vxlan": {"packets": -1}}), "tunnels.vxlan.packets: -1 is not a count"),
    "stats-warning-count-fractional": ("stats", lambda o: setitem(o, "warnings", {"a.pcap: cut off": 1.5}), "warnings.a.pcap: cut off: 1.5 is not a count"),
}


def write(tmp_path: Path, lines: list[dict], case: str) -> tuple[Path, int]:
    """The log with the case's line changed, and that line's number (1-based)."""
    kind, mutate, _ = MUTATIONS[case]
    # The second flow line (line 3), the first dns line with answers, the header.
    candidates = [i for i, o in enumerate(lines) if o["kind"] == kind and (kind != "dns" or o["answers"])]
    i = candidates[1] if kind == "flow" else candidates[0]
    changed = [dict(o) for o in lines]
    changed[i] = json.loads(json.dumps(lines[i]))
    mutate(changed[i])
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in changed), encoding="utf-8")
    return path, i + 1


def expected(path: Path, lineno: int, case: str) -> str:
    kind, _, message = MUTATIONS[case]
    return f"{path}:{lineno}: invalid {kind}: {message}"


def test_the_flow_line_changed_is_line_3(tmp_path, lines):
    assert write(tmp_path, lines, "src-missing")[1] == 3


def test_the_log_unchanged_reads(tmp_path, lines):
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in lines), encoding="utf-8")
    log = read_flow_log(path)
    assert len(log.flows) == sum(1 for o in lines if o["kind"] == "flow") and log.dns


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_a_bad_field_is_a_flow_log_error_with_file_line_and_field(tmp_path, lines, case):
    path, lineno = write(tmp_path, lines, case)
    with pytest.raises(FlowLogError) as info:
        read_flow_log(path)
    assert str(info.value) == expected(path, lineno, case)


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_a_bad_field_is_exit_2_and_one_line(tmp_path, lines, case):
    path, lineno = write(tmp_path, lines, case)
    out = tmp_path / "merged.jsonl"
    r = subprocess.run([sys.executable, "-m", "netpol_learn", "merge", str(path), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"error: {expected(path, lineno, case)}"]
    assert not out.exists()


OTHER_VALID_FLOWS = [
    {"src": "fd00:10:244::5", "dst": "2001:db8::1", "proto": "TCP", "port": 443},
    {"src": "10.244.0.5", "dst": "10.244.0.6", "proto": "ICMP", "port": None},
    {"src": "10.244.0.5", "dst": "10.244.0.6", "proto": "ICMPv6", "port": None},
    {"src": "10.244.0.5", "dst": "172.18.0.3", "proto": "IP-47", "port": None},
    {"src": "10.244.0.5", "dst": "10.244.0.6", "proto": "UDP", "port": 0},
]


@pytest.mark.parametrize("fields", OTHER_VALID_FLOWS, ids=[f["proto"] + "-" + str(f["port"]) for f in OTHER_VALID_FLOWS])
def test_other_protocols_and_ipv6_still_read(tmp_path, lines, fields):
    flow = {**next(o for o in lines if o["kind"] == "flow"), **fields, "translated": [], "client_ports": [40000, 0]}
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in (lines[0], flow, lines[-1])), encoding="utf-8")
    (got,) = read_flow_log(path).flows
    assert (got.src, got.dst, got.proto, got.port, got.client_ports) == (fields["src"], fields["dst"], fields["proto"], fields["port"], (0, 40000))


def test_a_blank_first_line_does_not_hide_a_missing_header(tmp_path, lines):
    # Only the first line was checked to be a header: a blank line before flow lines let a file
    # without one through.
    path = tmp_path / "flows.jsonl"
    path.write_text("\n" + "".join(json.dumps(o) + "\n" for o in lines[1:]), encoding="utf-8")
    with pytest.raises(FlowLogError) as info:
        read_flow_log(path)
    assert str(info.value) == f"{path}: not a netpol-learn flow log (no header line)"
    # Blank lines before the header, and anywhere else, are still fine.
    path.write_text("\n" + "".join(json.dumps(o) + "\n\n" for o in lines), encoding="utf-8")
    assert len(read_flow_log(path).flows) == sum(1 for o in lines if o["kind"] == "flow")


# --- orjson reads the lines; json's reading is the one that counts ---------------------------

def _by_json_only(monkeypatch):
    """The reader with orjson refusing every line: each is read by ``json``, as before orjson."""
    import orjson

    from netpol_learn import _flowlog

    def refuse(_line):
        raise orjson.JSONDecodeError("refused", "", 0)

    monkeypatch.setattr(_flowlog.orjson, "loads", refuse)


def _outcome(path):
    try:
        log = read_flow_log(path)
    except FlowLogError as exc:
        return ("error", str(exc))
    return ("log", log)


BIG = 2 ** 70  # past 64 bits: orjson reads it as a float, json as the integer


@pytest.mark.parametrize("kind, mutate", [
    ("flow", lambda o: setitem(o, "packets", BIG)),
    ("flow", lambda o: setitem(o, "bytes", BIG)),
    ("flow", lambda o: setitem(o, "port", BIG)),
    ("flow", lambda o: setitem(o, "connections", -BIG)),
    ("flow", lambda o: setitem(o, "unknown_field", BIG)),
    ("dns", lambda o: setitem(first_answer(o), "ttl", BIG)),
    ("dns", lambda o: setitem(o, "queries", BIG)),
    ("header", lambda o: setitem(o, "version", BIG)),
    ("stats", lambda o: setitem(o, "packets", BIG)),
    ("stats", lambda o: setitem(o, "tunnels", {"vxlan": {"packets": BIG}})),
    ("flow", lambda o: setitem(o, "packets", float("nan"))),
    ("flow", lambda o: setitem(o, "src", "10.0.0.1\ud800")),
], ids=["flow-packets", "flow-bytes", "flow-port", "flow-connections-negative", "flow-unknown-field", "dns-ttl",
        "dns-queries", "header-version", "stats-packets", "stats-tunnel", "flow-nan", "flow-lone-surrogate"])
def test_numbers_past_64_bits_and_what_orjson_refuses_read_as_json_reads_them(tmp_path, lines, monkeypatch, kind, mutate):
    """orjson reads a number past 64 bits as a float and refuses NaN and lone surrogates: the
    reader's verdict on such a line (read, or the error's words) is the one of ``json``."""
    i = next(i for i, o in enumerate(lines) if o["kind"] == kind and (kind != "dns" or o["answers"]))
    changed = [json.loads(json.dumps(o)) for o in lines]
    mutate(changed[i])
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in changed), encoding="utf-8")
    got = _outcome(path)
    _by_json_only(monkeypatch)
    assert got == _outcome(path)


def test_a_count_past_64_bits_is_read_as_the_integer(tmp_path, lines):
    i = next(i for i, o in enumerate(lines) if o["kind"] == "flow")
    changed = [json.loads(json.dumps(o)) for o in lines]
    changed[i]["bytes"] = BIG
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in changed), encoding="utf-8")
    assert BIG in [f.bytes for f in read_flow_log(path).flows]


# --- a log merged already is not merged again ------------------------------------------------

@pytest.mark.parametrize("shape", ["as-written", "reversed", "a-flow-twice", "two-segments"])
def test_a_log_is_what_merging_its_segments_gives_whatever_its_order(tmp_path, lines, monkeypatch, shape):
    from netpol_learn import _flowlog

    header, body, stats = lines[0], lines[1:-1], lines[-1]
    if shape == "reversed":
        segments = [[header, *reversed(body), stats]]
    elif shape == "a-flow-twice":
        flow = next(o for o in body if o["kind"] == "flow")
        segments = [[header, *body, flow, stats]]
    elif shape == "two-segments":
        segments = [[header, *body[::2], stats], [header, *body[1::2], stats], [header, *body[:3], stats]]
    else:
        segments = [lines]
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for seg in segments for o in seg), encoding="utf-8")
    got = read_flow_log(path)
    assert got.flows and got.dns
    monkeypatch.setattr(_flowlog, "_merged_already", lambda log: False)
    assert got == read_flow_log(path)
    if shape != "as-written":
        keys = [f.key for f in got.flows]
        assert len(keys) == len(set(keys)) and list(got.flows) == sorted(got.flows, key=_flowlog.flow_sort_key)
