"""Inputs that are not captures, and captures damaged in the middle.

* A path that does not exist, is a directory or does not start like a capture is an error
  (``CaptureError``, exit 2) before any file is read.
* A record or block with an implausible length costs that record, not the rest of the file: the
  reader skips to the next plausible one, with one warning naming the byte offset and the bytes
  skipped. "cut off" is only for a last record whose bytes run past the end of the file.
* Warnings are kept in the flow log's stats (``warnings``: {message: count}) and merge order-free.
* The unsupported-link-type error lists every supported link type.

Every test runs with the C accelerator and with the reference code (tests/conftest.py); plain and
gzip files (read in small windows) must give the same packets and warnings.
"""

from __future__ import annotations

import struct
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pcapgen as g  # noqa: E402

from netpol_learn._capture import _run as capture_pkg  # noqa: E402  (the capture functions and what they use)
from netpol_learn._errors import CaptureError  # noqa: E402
from netpol_learn._capture import _accel, _files, capture_file, capture_files  # noqa: E402
from netpol_learn._cli import main  # noqa: E402
from netpol_learn._flowlog import merge_logs, read_flow_log, write_flow_log  # noqa: E402

pytestmark = pytest.mark.usefixtures("capture_engine")

CLIENT = "10.244.0.5"
SERVER = "10.244.1.7"


@lru_cache(maxsize=None)
def _records(n: int) -> tuple:
    """n UDP packets (n/2 request/response exchanges, each on its own client port), 1 ms apart."""
    out = []
    for i in range((n + 1) // 2):
        out += g.udp_exchange(CLIENT, SERVER, 20000 + i, 53 + 1000, t0=g.T0 + i * 0.002, rtt=0.001)
    return tuple(out[:n])


def _pcap(n: int, byteorder: str = "<", nanosecond: bool = False, snaplen: int = 262144) -> bytes:
    return g.pcap_bytes(_records(n), byteorder=byteorder, nanosecond=nanosecond, snaplen=snaplen)


def _pcapng(n: int, byteorder: str = "<") -> bytes:
    return g.pcapng_bytes(_records(n), byteorder=byteorder)


def _set_u32(data: bytes, at: int, value: int, byteorder: str = "<") -> bytes:
    return data[:at] + struct.pack(byteorder + "I", value) + data[at + 4 :]


def _read(path: Path):
    """(packets read, warnings) through the library."""
    warnings: list[str] = []
    log = capture_file(path, warn=warnings.append)
    return log.stats["packets"], warnings, log


@pytest.fixture(params=["plain", "gzip"])
def compressed(request, monkeypatch):
    if request.param == "gzip":
        monkeypatch.setattr(_files, "READ_BYTES", 512)  # many small windows
    return request.param == "gzip"


def _write(tmp_path: Path, name: str, data: bytes, gz: bool) -> Path:
    return g.write_bytes(tmp_path / name, data, gzip=gz)


# --------------------------------------------------------------------------------------------
# A: not a capture file: an error before anything is read


def _good(tmp_path: Path) -> Path:
    return g.write_bytes(tmp_path / "good.pcap", _pcap(6))


def test_missing_input_is_an_error_before_any_file_is_read(tmp_path, monkeypatch):
    good = _good(tmp_path)
    missing = tmp_path / "nonexistent.pcap"
    opened = []
    real = capture_pkg.read_chunks
    monkeypatch.setattr(capture_pkg, "read_chunks", lambda path, *a, **k: (opened.append(path), real(path, *a, **k))[1])
    with pytest.raises(CaptureError) as exc:
        capture_files([good, missing], warn=lambda m: None)
    assert str(exc.value) == f"{missing}: no such file"
    assert opened == []


@pytest.mark.parametrize("kind", ["directory", "text", "gzip-text", "empty"])
def test_not_a_capture_is_an_error(tmp_path, kind):
    good = _good(tmp_path)
    bad = tmp_path / f"bad-{kind}"
    if kind == "directory":
        bad.mkdir()
        expected = f"{bad}: is a directory, not a capture file"
    elif kind == "text":
        g.write_bytes(bad, b"this is not a capture\n")
        expected = f"{bad}: not a pcap or pcapng file (starts with {b'this'.hex()})"
    elif kind == "gzip-text":
        g.write_bytes(bad, b"this is not a capture\n", gzip=True)
        expected = f"{bad}: gzip-compressed, but not a pcap or pcapng file (starts with {b'this'.hex()})"
    else:
        g.write_bytes(bad, b"")
        expected = f"{bad}: empty file, not a capture file"
    for paths in ([good, bad], [bad, good], [bad]):
        with pytest.raises(CaptureError) as exc:
            capture_files(paths, warn=lambda m: None)
        assert str(exc.value) == expected


def test_every_bad_input_is_named_in_one_error(tmp_path):
    good = _good(tmp_path)
    text = g.write_bytes(tmp_path / "notes.txt", b"hello\n")
    missing = tmp_path / "missing.pcap"
    with pytest.raises(CaptureError) as exc:
        capture_files([missing, good, text, missing])
    assert str(exc.value) == f"{missing}: no such file; {text}: not a pcap or pcapng file (starts with {b'hell'.hex()})"


def test_cli_missing_input_is_one_error_line_exit_2_and_no_output(tmp_path):
    good = _good(tmp_path)
    missing = tmp_path / "nonexistent.pcap"
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["capture", str(good), str(missing), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"error: {missing}: no such file"]
    assert not out.exists()


def test_cli_directory_input_is_one_error_line_exit_2(tmp_path):
    good = _good(tmp_path)
    directory = tmp_path / "captures"
    directory.mkdir()
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["capture", str(good), str(directory), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(directory) in lines[0], lines
    assert "directory" in lines[0]
    assert not out.exists()


def test_a_damaged_capture_beside_a_good_one_is_still_a_warning(tmp_path):
    """A capture whose header is readable but which yields nothing (its link type) stays a warning,
    and the warning is in the merged log's stats."""
    good = _good(tmp_path)
    bad = g.write_bytes(tmp_path / "link147.pcap", g.pcap_header(147) + g.pcap_record(g.T0, b"\x00" * 40))
    warnings = []
    log = capture_files([good, bad], warn=warnings.append)
    assert log.stats["packets"] == 6
    assert len(warnings) == 1 and warnings[0].startswith(f"{bad}: link type 147 is not supported")
    assert log.stats["warnings"] == {warnings[0]: 1}


# --------------------------------------------------------------------------------------------
# B: pcap records with an implausible length


def _pcap_damage(case: str, byteorder: str = "<", nanosecond: bool = False):
    """(file bytes, packets expected, warning expected or None) for 666 packets with damage."""
    n = 666
    if case == "caplen-over-snaplen":  # 70000 over the snap length 4096 (and the original length)
        data = _pcap(n, byteorder, nanosecond, snaplen=4096)
    else:
        data = _pcap(n, byteorder, nanosecond)
    at = g.pcap_record_offsets(data)
    orig = struct.unpack_from(byteorder + "I", data, at[200] + 12)[0]
    if case in ("caplen-over-snaplen", "caplen-over-origlen"):
        bad = _set_u32(data, at[200] + 8, 70000, byteorder)
        return bad, n - 1, (at[200], f"captured length 70000 over its original length {orig}", at[201])
    if case == "caplen-absurd":
        bad = _set_u32(data, at[200] + 8, 0x7FFFFFF0, byteorder)
        return bad, n - 1, (at[200], "captured length 2147483632", at[201])
    if case == "past-the-end":  # lengths that agree with each other, longer than the rest of the file
        bad = _set_u32(_set_u32(data, at[200] + 8, 200000, byteorder), at[200] + 12, 200000, byteorder)
        return bad, n - 1, (at[200], "captured length 200000, past the end of the file", at[201])
    if case == "first-record":
        bad = _set_u32(data, at[0] + 8, 70000, byteorder)
        return bad, n - 1, (at[0], f"captured length 70000 over its original length {orig}", at[1])
    raise ValueError(case)


PCAP_CASES = ["caplen-over-snaplen", "caplen-over-origlen", "caplen-absurd", "past-the-end", "first-record"]


@pytest.mark.parametrize("case", PCAP_CASES)
@pytest.mark.parametrize("byteorder,nanosecond", [("<", False), (">", True)])
def test_pcap_implausible_length_keeps_every_other_packet(tmp_path, compressed, case, byteorder, nanosecond):
    data, expected, (at, why, resumed) = _pcap_damage(case, byteorder, nanosecond)
    path = _write(tmp_path, "damaged.pcap", data, compressed)
    packets, warnings, log = _read(path)
    assert packets == expected == 665
    assert warnings == [f"{path}: record at byte {at} has an implausible length ({why}); skipped {resumed - at} "
                        f"bytes to the next plausible record, at byte {resumed}"]
    assert log.stats["warnings"] == {warnings[0]: 1}


def test_pcap_two_damaged_records(tmp_path, compressed):
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    data = _set_u32(_set_u32(data, at[100] + 8, 70000), at[500] + 8, 0x00FFFFFF)
    packets, warnings, _log = _read(_write(tmp_path, "twice.pcap", data, compressed))
    assert packets == 664
    assert len(warnings) == 2 and all("implausible length" in w for w in warnings), warnings
    assert f"record at byte {at[100]} " in warnings[0] and f"record at byte {at[500]} " in warnings[1]


def test_pcap_damaged_last_record_stops_there(tmp_path, compressed):
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    orig = struct.unpack_from("<I", data, at[-1] + 12)[0]
    path = _write(tmp_path, "last.pcap", _set_u32(data, at[-1] + 8, 70000), compressed)
    packets, warnings, _log = _read(path)
    assert packets == 665
    assert warnings == [f"{path}: record at byte {at[-1]} has an implausible length (captured length 70000 over its "
                        f"original length {orig}); no plausible record after it, stopped there, kept the packets before it"]


def test_pcap_really_cut_off_last_record_is_cut_off(tmp_path, compressed):
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    cut = data[: at[-1] + 30]
    path = _write(tmp_path, "cut.pcap", cut, compressed)
    packets, warnings, _log = _read(path)
    assert packets == 665
    assert warnings == [f"{path}: last record at byte {at[-1]} cut off (30 bytes of it present); kept the packets before it"]


def test_pcap_records_over_the_snap_length_are_still_read(tmp_path, compressed):
    """Whole records longer than the file's snap length (a writer that got it wrong): all read, one
    warning, no resync."""
    data = _pcap(666, snaplen=40)
    at = g.pcap_record_offsets(data)
    incl = struct.unpack_from("<I", data, at[0] + 8)[0]
    path = _write(tmp_path, "snap.pcap", data, compressed)
    packets, warnings, _log = _read(path)
    assert packets == 666
    assert warnings == [f"{path}: record at byte {at[0]} has captured length {incl} over the snap length 40; read anyway"]


@pytest.mark.parametrize("snaplen", [40, 262144])
def test_walker_stops_at_a_captured_length_over_the_original_length(snaplen):
    """Both walkers leave a record whose captured length is over its original length to the caller."""
    data = _pcap(10)
    at = g.pcap_record_offsets(data)
    bad = _set_u32(data, at[4] + 12, 20)  # original length 20 < captured length
    out = [np.zeros(16, dtype=np.int64) for _ in range(4)]
    count, pos, reason = _accel.walk_pcap(bad, at[0], len(bad), False, 262144, 16, *out)
    assert (count, pos, reason) == (4, at[4], _accel.WALK_OVER_SNAPLEN)
    assert out[0][:4].tolist() == at[:4]


# --------------------------------------------------------------------------------------------
# B: pcapng blocks with an implausible length


def _pcapng_damage(case: str, byteorder: str = "<"):
    data = _pcapng(10, byteorder)
    epbs = [at for at, btype in g.pcapng_block_offsets(data, byteorder) if btype == g.PCAPNG_EPB]
    at, nxt = epbs[1], epbs[2]
    blen = nxt - at
    value, why = {
        "length-0xfffff0": (0xFFFFF0, "length 16777200, past the end of the file"),
        "not-a-multiple-of-4": (blen + 2, f"length {blen + 2}"),
        "under-12": (8, "length 8"),
        "under-the-epb-least": (16, "length 16"),
        "trailing-copy-differs": (blen + 8, f"length {blen + 8}, but {struct.unpack_from(byteorder + 'I', data, nxt + 4)[0]} at its end"),
        "absurd": (0x7FFFFFF0, "length 2147483632"),
    }[case]
    return _set_u32(data, at + 4, value, byteorder), at, nxt, why


PCAPNG_CASES = ["length-0xfffff0", "not-a-multiple-of-4", "under-12", "under-the-epb-least", "trailing-copy-differs", "absurd"]


@pytest.mark.parametrize("case", PCAPNG_CASES)
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_pcapng_implausible_length_keeps_every_other_packet(tmp_path, compressed, case, byteorder):
    data, at, nxt, why = _pcapng_damage(case, byteorder)
    path = _write(tmp_path, "damaged.pcapng", data, compressed)
    packets, warnings, log = _read(path)
    assert packets == 9
    assert warnings == [f"{path}: block at byte {at} has an implausible length ({why}); skipped {nxt - at} bytes "
                        f"to the next block, at byte {nxt}"]
    assert log.stats["warnings"] == {warnings[0]: 1}


def test_pcapng_resync_finds_a_section_in_the_other_byte_order(tmp_path, compressed):
    recs = _records(10)
    first, second = g.pcapng_bytes(recs[:5], byteorder="<"), g.pcapng_bytes(recs[5:], byteorder=">")
    last_epb = [at for at, t in g.pcapng_block_offsets(first) if t == g.PCAPNG_EPB][-1]
    data = _set_u32(first, last_epb + 4, 0xFFFFF0) + second
    path = _write(tmp_path, "sections.pcapng", data, compressed)
    packets, warnings, _log = _read(path)
    assert packets == 9
    assert len(warnings) == 1 and f"block at byte {last_epb} has an implausible length" in warnings[0], warnings
    assert f"to the next block, at byte {len(first)}" in warnings[0]


def test_pcapng_damaged_section_header_is_skipped(tmp_path, compressed):
    recs = _records(10)
    first, second = g.pcapng_bytes(recs[:5]), g.pcapng_bytes(recs[5:])
    data = first + second[:8] + b"\xde\xad\xbe\xef" + second[12:]
    path = _write(tmp_path, "sections.pcapng", data, compressed)
    packets, warnings, _log = _read(path)
    assert packets == 10  # the second section's blocks are read in the first one's byte order
    idb = len(first) + g.pcapng_block_offsets(second)[1][0]
    assert warnings == [f"{path}: section header at byte {len(first)} has an unknown byte-order magic (deadbeef); "
                        f"skipped {idb - len(first)} bytes to the next block, at byte {idb}"]


def test_pcapng_damaged_last_block_with_nothing_after_it(tmp_path, compressed):
    data = _pcapng(10)
    last = [at for at, t in g.pcapng_block_offsets(data) if t == g.PCAPNG_EPB][-1]
    path = _write(tmp_path, "last.pcapng", _set_u32(data, last + 4, len(data) - last + 4), compressed)
    packets, warnings, _log = _read(path)
    assert packets == 9
    # its length runs past the end and nothing whole follows it: a cut-off last block
    assert warnings == [f"{path}: last block at byte {last} cut off ({len(data) - last} bytes of it present); kept the packets before it"]
    path = _write(tmp_path, "last2.pcapng", _set_u32(data, last + 4, 14), compressed)
    packets, warnings, _log = _read(path)
    assert packets == 9
    assert warnings == [f"{path}: block at byte {last} has an implausible length (length 14); no block after it, "
                        "stopped there, kept the packets before it"]


def test_pcapng_really_cut_off_last_block_is_cut_off(tmp_path, compressed):
    data = _pcapng(10)
    last = [at for at, t in g.pcapng_block_offsets(data) if t == g.PCAPNG_EPB][-1]
    cut = data[: len(data) - 20]
    path = _write(tmp_path, "cut.pcapng", cut, compressed)
    packets, warnings, _log = _read(path)
    assert packets == 9
    assert warnings == [f"{path}: last block at byte {last} cut off ({len(cut) - last} bytes of it present); kept the packets before it"]


# --------------------------------------------------------------------------------------------
# the same answer from a plain and a gzip file, in any window size, under both engines


def _damaged_inputs():
    files = {}
    for case in PCAP_CASES:
        files[f"pcap-{case}"] = _pcap_damage(case)[0]
    for case in PCAPNG_CASES:
        files[f"pcapng-{case}"] = _pcapng_damage(case)[0]
    rng = np.random.default_rng(7)
    for fmt, base in (("pcap", _pcap(200)), ("pcapng", _pcapng(200))):
        for i in range(6):
            b = bytearray(base)
            for _ in range(4):
                at = int(rng.integers(24, len(b) - 4))
                b[at : at + 4] = rng.integers(0, 256, size=4, dtype=np.uint8).tobytes()
            files[f"{fmt}-random-{i}"] = bytes(b)
    return files


def _chunks(path: Path):
    warnings = []
    packets = []
    for c in _files.read_chunks(path, warnings.append):
        data = bytes(c.data)
        packets += [(data[o : o + n], t) for o, n, t in zip(c.off.tolist(), c.caplen.tolist(), c.ts.tolist())]
    return packets, [(w.offset, w.reason, w.detail) for w in warnings]  # all but the path


def test_plain_and_gzip_read_alike(tmp_path, monkeypatch):
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    for name, data in _damaged_inputs().items():
        plain = g.write_bytes(tmp_path / "plain" / name, data)
        gz = g.write_bytes(tmp_path / "gz" / name, data, gzip=True)
        expected = _chunks(plain)
        for read_bytes in (64, 1000, 8 << 20):
            monkeypatch.setattr(_files, "READ_BYTES", read_bytes)
            assert _chunks(gz) == expected, (name, read_bytes)


# --------------------------------------------------------------------------------------------
# warnings in the stats: recorded, merged order-free


def test_warnings_are_recorded_and_merge_order_free(tmp_path):
    a = g.write_bytes(tmp_path / "a.pcap", _pcap_damage("caplen-over-origlen")[0])
    b = g.write_bytes(tmp_path / "b.pcapng", _pcapng_damage("length-0xfffff0")[0])
    clean = _good(tmp_path)
    assert "warnings" not in capture_file(clean).stats
    la, lb = capture_file(a), capture_file(b)
    (wa,), (wb,) = la.stats["warnings"], lb.stats["warnings"]
    assert wa.startswith(f"{a}: record at byte ") and wb.startswith(f"{b}: block at byte ")
    ab = capture_files([a, b, clean])
    assert ab.stats["warnings"] == {wa: 1, wb: 1}
    assert list(ab.stats["warnings"]) == sorted(ab.stats["warnings"])
    assert capture_files([clean, b, a]).stats == ab.stats
    assert merge_logs([lb, la, capture_file(clean)]).stats == ab.stats
    # the same file read twice: its warning counts twice
    assert capture_files([a, a]).stats["warnings"] == {wa: 2}
    # written and read back
    out = tmp_path / "out.jsonl"
    write_flow_log(ab, out)
    assert read_flow_log(out).stats == ab.stats
    assert merge_logs([read_flow_log(out), la]).stats["warnings"] == {wa: 2, wb: 1}


def test_cli_writes_the_warnings_into_the_stats_line(tmp_path):
    import json

    a = g.write_bytes(tmp_path / "a.pcap", _pcap_damage("caplen-over-snaplen")[0])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["capture", str(a), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1
    stats = json.loads(out.read_text().splitlines()[-1])
    assert stats["warnings"] == {warning[0].removeprefix("warning: "): 1}


def test_many_warnings_are_capped_in_the_stats(tmp_path, monkeypatch):
    monkeypatch.setattr(capture_pkg, "MAX_RECORDED_WARNINGS", 2)
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    for i in (100, 200, 300, 400):
        data = _set_u32(data, at[i] + 8, 70000)
    path = g.write_bytes(tmp_path / "many.pcap", data)
    warnings = []
    log = capture_file(path, warn=warnings.append)
    assert len(warnings) == 4
    assert log.stats["warnings"] == {warnings[0]: 1, warnings[1]: 1, f"{path}: 2 more warnings, not recorded here": 1}


def test_the_readers_warnings_are_structured(tmp_path):
    """``read_chunks`` reports each warning as a ``CaptureWarning``: path, byte offset, reason and
    detail, whose text is the message printed and recorded."""
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    orig = struct.unpack_from("<I", data, at[100] + 12)[0]
    path = g.write_bytes(tmp_path / "one.pcap", _set_u32(data, at[100] + 8, 70000))
    warnings = []
    for _chunk in _files.read_chunks(path, warnings.append):
        pass
    (w,) = warnings
    assert isinstance(w, capture_pkg.CaptureWarning)
    assert (w.path, w.offset) == (path, at[100])
    assert w.reason == f"record at byte {at[100]} has an implausible length (captured length 70000 over its original length {orig})"
    assert w.detail == f"skipped {at[101] - at[100]} bytes to the next plausible record, at byte {at[101]}"
    assert str(w) == f"{path}: {w.reason}; {w.detail}"
    assert capture_file(path).stats["warnings"] == {str(w): 1}


def test_a_path_with_colon_space_is_named_whole_in_messages(tmp_path, monkeypatch):
    """The path of a capture may hold ": " (a directory named after a node and its interface):
    the error of a file that yields nothing gives the reason, and the stats' closing entry of
    capped warnings names the whole path."""
    where = tmp_path / "node-a: eth0"
    where.mkdir()
    data = _pcap(10)
    at = g.pcap_record_offsets(data)
    orig = struct.unpack_from("<I", data, at[0] + 12)[0]
    empty = g.write_bytes(where / "x.pcap", _set_u32(data[: at[1]], at[0] + 8, 70000))
    with pytest.raises(CaptureError) as exc:
        capture_file(empty)
    assert str(exc.value) == (f"{empty}: nothing usable read (record at byte {at[0]} has an implausible length (captured "
                              f"length 70000 over its original length {orig}))")

    monkeypatch.setattr(capture_pkg, "MAX_RECORDED_WARNINGS", 1)
    data = _pcap(666)
    at = g.pcap_record_offsets(data)
    for i in (100, 200):
        data = _set_u32(data, at[i] + 8, 70000)
    many = g.write_bytes(where / "many.pcap", data)
    warnings = []
    log = capture_file(many, warn=warnings.append)
    assert log.stats["warnings"] == {warnings[0]: 1, f"{many}: 1 more warnings, not recorded here": 1}


# --------------------------------------------------------------------------------------------
# C: the unsupported-link-type message lists every supported link type


def test_unsupported_link_type_lists_every_supported_one(tmp_path):
    path = g.write_bytes(tmp_path / "x.pcap", g.pcap_header(147) + g.pcap_record(g.T0, b"\x00" * 40))
    with pytest.raises(CaptureError) as exc:
        capture_file(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: link type 147 is not supported (supported: ")
    listed = message.split("(supported: ", 1)[1].removesuffix(")")
    expected = ", ".join(f"{n} ({_files.LINKTYPE_NAMES[n]})" for n in sorted(_files.SUPPORTED_LINKTYPES))
    assert listed == expected
    for n in (0, 1, 12, 14, 101, 108, 113, 228, 229, 276):
        assert f"{n} ({_files.LINKTYPE_NAMES[n]})" in listed


def test_learn_reports_a_damaged_capture_in_report_md(tmp_path):
    """A damaged capture stays a warning with partial output, and REPORT.md says so, so the
    reviewer sees that some traffic may be missing from the policies."""
    guestbook = Path(__file__).parent.parent / "captures" / "guestbook"
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes((guestbook / "capture.pcap").read_bytes()[:-10])  # the last record cut off
    out = tmp_path / "policies"
    result = CliRunner().invoke(main, ["learn", str(damaged), "--inventory", str(guestbook / "inventory.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "cut off" in warning[0], result.stderr
    report = (out / "REPORT.md").read_text()
    assert "## Warnings while reading the traffic" in report
    assert warning[0].removeprefix("warning: ") in report
