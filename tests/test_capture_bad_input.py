"""`netpol-learn capture` on bad input.

Rules: each error is ONE line on stderr, never a traceback; exit code 2 when nothing usable was
read, otherwise exit 0 with a warning line and everything read before the problem kept. Inputs are
tiny, so a reader that loops or hangs on them shows up as a slow test, not a timeout.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402
from pcapgen import T0  # noqa: E402

from netpol_learn._cli import main  # noqa: E402

# Every test runs with the C accelerator and with the reference code (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("capture_engine")

POD_A = "10.244.0.5"
POD_B = "10.244.1.7"
SVC_DNS = "10.96.0.10"


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    # a crash is caught by CliRunner: it must not happen
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("command crashed:\n" + "".join(traceback.format_exception(*result.exc_info)))
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    return result


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def read_log(path: Path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[-1]["kind"] == "stats"
    return lines


def flow_keys(lines):
    return sorted((f["src"], f["dst"], f["proto"], f["port"]) for f in lines if f["kind"] == "flow")


def flow(lines, key):
    """The one flow line of ``key``: (src, dst, proto, port), or with its evidence after them."""
    fields = ("src", "dst", "proto", "port", "evidence")[: len(key)]
    found = [f for f in lines if f["kind"] == "flow" and tuple(f[k] for k in fields) == key]
    assert len(found) == 1, (key, flow_keys(lines))
    return found[0]


def warning_lines(lines):
    return [line for line in lines if line.startswith("warning:")]


def baseline_lines(tmp_path, good_path):
    """stderr lines of a clean run (so a summary line, if the command prints one, is not counted
    as the warning)."""
    r = run(["capture", good_path, "-o", tmp_path / "baseline.jsonl"])
    assert r.exit_code == 0, r.stderr
    return len(stderr_lines(r))


def good_records():
    first = g.tcp_session(POD_A, POD_B, 40001, 8080, t0=T0)
    second = g.udp_exchange(POD_A, POD_B, 40002, 123, t0=T0 + 1)
    return first, second


# --------------------------------------------------------------------------------------------
# nothing usable: exit 2, one line


def _unknown_linktype_pcap(path):
    recs = g.tcp_session(POD_A, POD_B, 40001, 8080)
    data = g.pcap_header(65000) + b"".join(g.pcap_record(ts, bytes(p)) for ts, p in recs)
    return g.write_bytes(path, data)


def _unknown_linktype_pcapng(path):
    recs = g.tcp_session(POD_A, POD_B, 40001, 8080)
    data = g.pcapng_shb() + g.pcapng_idb(65000) + b"".join(g.pcapng_epb(0, ts, bytes(p)) for ts, p in recs)
    return g.write_bytes(path, data)


FATAL = {
    "text-file": lambda p: g.write_bytes(p, b"this is not a capture\njust some text\n"),
    "empty-file": lambda p: g.write_bytes(p, b""),
    "nonexistent": lambda p: p,  # not created
    "pcap-header-cut": lambda p: g.write_bytes(p, g.pcap_header(1)[:10]),
    "pcapng-header-cut": lambda p: g.write_bytes(p, g.pcapng_shb()[:14]),
    "unknown-link-type-pcap": _unknown_linktype_pcap,
    "unknown-link-type-pcapng": _unknown_linktype_pcapng,
    "gzip-of-garbage": lambda p: g.write_bytes(p, b"definitely not a pcap " * 10, gzip=True),
    "bad-gzip-stream": lambda p: g.write_bytes(p, b"\x1f\x8b\x08\x00" + b"\xff" * 40),
    "binary-noise": lambda p: g.write_bytes(p, bytes(range(256)) * 4),
}


@pytest.mark.parametrize("name", sorted(FATAL))
def test_nothing_usable_is_exit_2_with_one_line(tmp_path, name):
    path = FATAL[name](tmp_path / f"{name}.pcap")
    result = run(["capture", path, "-o", tmp_path / "out.jsonl"])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1, lines


def test_several_bad_files_are_exit_2_one_line_naming_each(tmp_path):
    a = FATAL["text-file"](tmp_path / "a.txt")
    b = FATAL["empty-file"](tmp_path / "b.pcap")
    c = tmp_path / "missing.pcap"
    result = run(["capture", a, b, c, "-o", tmp_path / "out.jsonl"])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    # every path is checked before any is read: one error line that names each bad file once
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for name in ("a.txt", "b.pcap", "missing.pcap"):
        assert lines[0].count(name) == 1, (name, lines)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("bad", ["text-file", "nonexistent", "empty-file"])
def test_good_file_with_one_that_is_not_a_capture_is_exit_2_before_anything_is_written(tmp_path, bad):
    """A path that does not exist or is not a capture is a mistake on the command line, not damage:
    the run stops before reading anything (issue: safe outputs, strict inputs)."""
    first, second = good_records()
    good = g.write_pcap(tmp_path / "good.pcap", first + second)
    bad_path = FATAL[bad](tmp_path / "bad-input.pcap")
    out = tmp_path / "out.jsonl"
    result = run(["capture", good, bad_path, "-o", out])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad-input.pcap" in lines[0], lines
    assert not out.exists()


def test_good_file_with_an_unsupported_link_type_is_exit_0_with_a_warning(tmp_path):
    first, second = good_records()
    good = g.write_pcap(tmp_path / "good.pcap", first + second)
    n0 = baseline_lines(tmp_path, good)
    bad_path = FATAL["unknown-link-type-pcap"](tmp_path / "bad-input.pcap")
    out = tmp_path / "out.jsonl"
    result = run(["capture", good, bad_path, "-o", out])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == n0 + 1, lines
    assert any("bad-input.pcap" in line for line in lines), lines
    log = read_log(out)
    assert flow_keys(log) == [(POD_A, POD_B, "TCP", 8080), (POD_A, POD_B, "UDP", 123)]
    assert any("bad-input.pcap" in w for w in log[-1]["warnings"]), log[-1]  # recorded for the reviewer


# --------------------------------------------------------------------------------------------
# damaged records: keep what was read, warn with the byte offset, exit 0


def _pcap_with_tail(tmp_path, tail_kind):
    first, second = good_records()
    body = g.pcap_bytes(first)  # header + records of the first connection
    offset = len(body)
    last = bytes(g.frame(second[0][1], g.LINKTYPE_ETHERNET))
    rec = g.pcap_record(second[0][0], last)
    if tail_kind == "data":
        data = body + rec[:16 + len(last) // 2]  # header complete, data cut in half
    elif tail_kind == "header":
        data = body + rec[:7]  # record header cut
    else:
        raise ValueError(tail_kind)
    path = g.write_bytes(tmp_path / "cut.pcap", data)
    return path, offset, len(data), first


def _pcapng_with_tail(tmp_path):
    first, second = good_records()
    body = g.pcapng_bytes(first)
    offset = len(body)
    epb = g.pcapng_epb(0, second[0][0], g.frame(second[0][1], g.LINKTYPE_ETHERNET))
    data = body + epb[: len(epb) - 20]
    path = g.write_bytes(tmp_path / "cut.pcapng", data)
    return path, offset, len(data), first


@pytest.mark.parametrize("kind", ["pcap-data-cut", "pcap-record-header-cut", "pcapng-block-cut", "pcap-gzip-data-cut"])
def test_truncated_last_record(tmp_path, kind):
    if kind == "pcapng-block-cut":
        path, offset, size, first = _pcapng_with_tail(tmp_path)
    else:
        path, offset, size, first = _pcap_with_tail(tmp_path, "header" if "header" in kind else "data")
        if kind.endswith("gzip-data-cut"):
            gz = tmp_path / "cut.pcap.gz"
            g.write_bytes(gz, path.read_bytes(), gzip=True)
            path.unlink()
            path = gz
    good = g.write_pcap(tmp_path / "good.pcap", first)
    n0 = baseline_lines(tmp_path, good)
    out = tmp_path / "out.jsonl"
    result = run(["capture", path, "-o", out])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == n0 + 1, lines
    # the warning names where the damage is: the byte offset of the cut record, and how much of it is there
    unit = "block" if kind.startswith("pcapng") else "record"
    assert warning_lines(lines) == [f"warning: {path}: last {unit} at byte {offset} cut off ({size - offset} bytes of it present); "
                                    "kept the packets before it"], (offset, size, lines)
    log = read_log(out)
    assert flow_keys(log) == [(POD_A, POD_B, "TCP", 8080)]
    f = flow(log, (POD_A, POD_B, "TCP", 8080))
    assert f["packets"] == len(first)


def _corrupt_middle_pcap(tmp_path):
    first, second = good_records()
    body = g.pcap_bytes(first)
    offset = len(body)
    bogus = struct.pack("<IIII", T0 + 1, 0, 0x7FFFFFF0, 0x7FFFFFF0) + b"\x00" * 64
    after = b"".join(g.pcap_record(ts, g.frame(p, g.LINKTYPE_ETHERNET)) for ts, p in second)
    return g.write_bytes(tmp_path / "corrupt.pcap", body + bogus + after), offset, first


def _corrupt_middle_pcapng(tmp_path):
    first, second = good_records()
    body = g.pcapng_bytes(first)
    offset = len(body)
    bogus = struct.pack("<II", 6, 0x7FFFFFF0) + b"\x00" * 64
    after = b"".join(g.pcapng_epb(0, ts, g.frame(p, g.LINKTYPE_ETHERNET)) for ts, p in second)
    return g.write_bytes(tmp_path / "corrupt.pcapng", body + bogus + after), offset, first


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_corrupt_record_in_the_middle(tmp_path, fmt):
    """A record whose captured length is absurd (2 GiB): warn with its offset, keep what came before."""
    path, offset, first = (_corrupt_middle_pcap if fmt == "pcap" else _corrupt_middle_pcapng)(tmp_path)
    good = g.write_pcap(tmp_path / "good.pcap", first)
    n0 = baseline_lines(tmp_path, good)
    out = tmp_path / "out.jsonl"
    result = run(["capture", path, "-o", out])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == n0 + 1, lines
    # the offset of the bad record, its length as read, and where reading resumed: right after the 80 (pcap: 16-byte
    # header + 64) or 72 (pcapng: 8 + 64) bogus bytes
    what, length, skipped, next_one = (("record", "captured length", 80, "plausible record") if fmt == "pcap" else
                                       ("block", "length", 72, "block"))
    assert warning_lines(lines) == [f"warning: {path}: {what} at byte {offset} has an implausible length ({length} {0x7FFFFFF0}); "
                                    f"skipped {skipped} bytes to the next {next_one}, at byte {offset + skipped}"], (offset, lines)
    log = read_log(out)
    f = flow(log, (POD_A, POD_B, "TCP", 8080))
    assert f["packets"] == len(first)


def test_captured_length_over_snap_length(tmp_path):
    """A record longer than the file's snap length (all its bytes present): no crash, exit 0, the
    packets around it are kept."""
    first, second = good_records()
    snap = 64
    big = g.tcp_session(POD_A, "10.244.9.9", 40009, 9000, t0=T0 + 0.5,
                        request=b"x" * 400)  # data segment 454 bytes on the wire > snap 64
    data = g.pcap_header(g.LINKTYPE_ETHERNET, snaplen=snap)
    for ts, p in g.by_time(first + big + second):
        frame = g.frame(p, g.LINKTYPE_ETHERNET)
        data += g.pcap_record(ts, frame)
    path = g.write_bytes(tmp_path / "snap.pcap", data)
    n0 = baseline_lines(tmp_path, g.write_pcap(tmp_path / "good.pcap", first))
    out = tmp_path / "out.jsonl"
    result = run(["capture", path, "-o", out])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    # at most one warning for the file, not one per record
    assert n0 <= len(stderr_lines(result)) <= n0 + 1, result.stderr
    log = read_log(out)
    f = flow(log, (POD_A, POD_B, "TCP", 8080))
    assert f["packets"] == len(first)


# --------------------------------------------------------------------------------------------
# malformed DNS: the flow counts, no or a partial dns line, no crash, no hang

MALFORMED_DNS = {
    "answer-pointer-to-itself": (g.dns_pointer_loop_response, False),
    "qname-pointer-loop": (g.dns_pointer_loop_query, True),
    "label-length-past-end": (g.dns_label_past_end, True),
    "header-only-claims-records": (lambda: struct.pack("!HHHHHH", 1, 0x8180, 5, 5, 5, 5), False),
    "short-header": (lambda: b"\x12\x34\x01", True),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_DNS))
def test_malformed_dns(tmp_path, name):
    build, is_query = MALFORMED_DNS[name]
    payload = build()
    recs = g.raw_dns_udp(POD_A, SVC_DNS, payload, t0=T0, to_resolver=is_query)
    # a well-formed exchange afterwards must still be decoded
    recs += g.dns_udp(POD_A, SVC_DNS, "fine.example.com", "A", [("fine.example.com", "A", 30, "192.0.2.1")],
                      t0=T0 + 1, cport=40001, txid=0x999)
    path = g.write_pcap(tmp_path / "dns.pcap", recs)
    out = tmp_path / "out.jsonl"
    result = run(["capture", path, "-o", out])
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    log = read_log(out)
    f = flow(log, (POD_A, SVC_DNS, "UDP", 53, "answered"))
    if is_query:  # the malformed query went unanswered: a flow line of its own
        assert (f["packets"], f["connections"]) == (2, 1)
        f = flow(log, (POD_A, SVC_DNS, "UDP", 53, "unanswered"))
        assert (f["packets"], f["connections"]) == (1, 1)
    else:  # a response without its query: the resolver answered
        assert (f["packets"], f["connections"]) == (3, 2)
    assert len([f for f in log if f["kind"] == "flow"]) == (2 if is_query else 1)
    dns = [d for d in log if d["kind"] == "dns"]
    assert any(d["qname"] == "fine.example.com" for d in dns)
    # docs/flow-log.md stats: DNS packets whose message could not be parsed
    assert log[-1].get("dns_malformed", 0) == 1, log[-1]
    for d in dns:
        if d["qname"] == "fine.example.com":
            continue
        # a partial line at most: a sane name (the question, when it parsed), no invented answers
        assert d["qname"] in ("loop.example.com",), d
        assert d["answers"] == [], d
