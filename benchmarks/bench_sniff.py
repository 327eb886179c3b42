"""Benchmark: how many packets a second `netpol-learn sniff` keeps up with, and its CPU.

In a network namespace of its own (needs root and ``ip``), a veth pair ``va`` <-> ``vb``; a sender
process writes prebuilt Ethernet frames into ``va`` at a fixed rate (an AF_PACKET socket, one
``send`` per frame), and `netpol-learn sniff -i vb` captures them on the other end. The frames are
what the sniffer's kernel filter keeps and what costs it most: TCP SYNs, each of a new connection
(200 client addresses x fresh source ports -> 50 servers on 8080), with one DNS query over UDP for
every ten SYNs.

For each rate, the sniffer runs for ``--seconds`` with 2-second segments, is stopped with SIGTERM,
and the flow log says how many packets it aggregated and how many the kernel dropped because the
ring was full (``dropped_by_kernel``); its CPU time comes from /proc. A rate is kept up with when
nothing was dropped and every packet sent was aggregated.

    sudo python benchmarks/bench_sniff.py                      # rates 25k .. 400k packets/s
    sudo python benchmarks/bench_sniff.py --rates 50000,100000 --seconds 5 --json out.json

``--many-flows``: the memory per connection held, and ``dropped_connections`` against the truth.
For each of ``--bounds``, the sniffer (with the DaemonSet's arguments: a spool, a server that
does not answer, ``--proc``) gets ``--intervals`` intervals of distinct connections, each its own
flow, a SYN and a FIN 0.3 s later each; every interval after the first fills while the one before
is written. Reports the peak RSS per part of the run and per bound, the connections held, and
``dropped_connections`` beside the true count of distinct connections dropped:

    sudo python benchmarks/bench_sniff.py --many-flows --bounds 25000,50000,100000 --interval 15 --flow-rate 70000

The sender is Python too and shares the machine's two cores with the sniffer: past ~300,000
packets/s it is the sender that cannot go faster (the achieved rate is reported).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENDER = r"""
import socket, struct, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])

def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xFFFF) + (s >> 16)
    return (~((s & 0xFFFF) + (s >> 16))) & 0xFFFF

def ip(src, dst, proto, payload, ident):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload

eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
frames = []
query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x03api\x04shop\x03svc\x07cluster\x05local\x00" + struct.pack("!HH", 1, 1)
for i in range(65536):
    src = bytes([10, 244, 1, 2 + i % 200])
    dst = bytes([10, 244, 3, 2 + (i // 200) % 50])
    sport = 32768 + (i * 7919) % 28000
    if i % 11 == 10:
        udp = struct.pack("!HHHH", sport, 53, 8 + len(query), 0) + query
        frames.append(eth + ip(src, bytes([10, 96, 0, 10]), 17, udp, i & 0xFFFF))
    else:
        tcp = struct.pack("!HHIIBBHHH", sport, 8080, i * 2654435761 & 0xFFFFFFFF, 0, 0x50, 0x02, 64240, 0, 0)
        frames.append(eth + ip(src, dst, 6, tcp, i & 0xFFFF))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("va", 0))
send = s.send
batch = max(1, int(rate / 1000))  # a burst every millisecond
sent = 0
start = time.perf_counter()
n = len(frames)
while True:
    now = time.perf_counter() - start
    if now >= seconds:
        break
    due = int(now * rate)
    while sent < due:
        for _ in range(min(batch, due - sent)):
            send(frames[sent % n])
            sent += 1
    time.sleep(0.0005)
print(sent, time.perf_counter() - start)
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_rate(ns: str, rate: float, seconds: float, workdir: Path) -> dict:
    from netpol_learn._flowlog import read_flow_log

    out = workdir / f"flows-{int(rate)}.jsonl"
    out.unlink(missing_ok=True)
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "netpol_learn", "sniff", "-i", "vb", "--interval", "2",
         "--max-connections", "2000000", "-o", str(out)],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    said = sniffer.stderr.readline()
    if "listening on" not in said:
        raise SystemExit(f"sniff did not start: {said}{sniffer.stderr.read()}")
    time.sleep(0.5)
    cpu0, t0 = cpu_seconds(sniffer.pid), time.monotonic()
    sender = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(rate), str(seconds)],
                            capture_output=True, text=True, check=True)
    time.sleep(0.3)
    cpu1, t1 = cpu_seconds(sniffer.pid), time.monotonic()
    sniffer.send_signal(signal.SIGTERM)
    sniffer.wait(60)
    sent, took = sender.stdout.split()
    sent, took = int(sent), float(took)
    log = read_flow_log(out)
    got = log.stats.get("packets", 0)
    dropped = log.stats.get("dropped_by_kernel", 0)
    achieved = sent / took
    cpu = (cpu1 - cpu0) / (t1 - t0)
    return {
        "target_pps": rate, "sent": sent, "achieved_pps": round(achieved), "aggregated": got,
        "dropped_by_kernel": dropped, "kept_up": dropped == 0 and got >= sent,
        "cpu_cores": round(cpu, 3), "cpu_cores_per_100k_pps": round(cpu / (achieved / 100_000), 3),
        "connections": sum(f.connections for f in log.flows), "flows": len(log.flows),
    }


# --- many flows: memory per connection held, and dropped_connections against the truth ---

FLOW_SENDER = r"""
import socket, sys, time
import numpy as np
frames, rate = np.load(sys.argv[1]), float(sys.argv[2])
size = frames.shape[1]
mv = memoryview(frames.tobytes())
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("va", 0))
send = s.send
n, sent, batch = len(frames), 0, max(1, int(rate / 1000))
start = time.perf_counter()
while sent < n:
    due = min(n, int((time.perf_counter() - start) * rate))
    while sent < due:
        for _ in range(min(batch, due - sent)):
            send(mv[sent * size:(sent + 1) * size])
            sent += 1
    time.sleep(0.0005)
print(sent, time.perf_counter() - start)
"""


def flow_frames(first: int, count: int, lag: int) -> np.ndarray:
    """Ethernet frames of ``count`` connections, numbers ``first`` .. ``first + count - 1``, each a
    distinct flow (its own client address 10.64.0.0 + number, to 10.128.0.0 + number % 4096 port
    8080): its SYN, and its FIN ``lag`` connections later (so the two are in different batches)."""
    i = np.arange(first, first + count, dtype=np.uint32)
    n = len(i)

    def frame(flags: int, src_port: np.ndarray) -> np.ndarray:
        f = np.zeros((n, 54), dtype=np.uint8)
        f[:, 0:14] = np.frombuffer(b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00", dtype=np.uint8)
        f[:, 14], f[:, 16], f[:, 17] = 0x45, 0, 40
        f[:, 18], f[:, 19] = (i >> 8) & 0xFF, i & 0xFF
        f[:, 20], f[:, 22], f[:, 23] = 0x40, 64, 6
        src = np.uint32(0x0A400000) + i
        dst = np.uint32(0x0A800000) + (i % 4096)
        for k in range(4):
            f[:, 26 + k] = (src >> (24 - 8 * k)) & 0xFF
            f[:, 30 + k] = (dst >> (24 - 8 * k)) & 0xFF
        words = f[:, 14:34].astype(np.uint32).reshape(n, 10, 2)
        total = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        check = ~total & 0xFFFF
        f[:, 24], f[:, 25] = check >> 8, check & 0xFF
        f[:, 34], f[:, 35] = src_port >> 8, src_port & 0xFF
        f[:, 36], f[:, 37] = 8080 >> 8, 8080 & 0xFF
        seq = i * np.uint32(2654435761)
        for k in range(4):
            f[:, 38 + k] = (seq >> (24 - 8 * k)) & 0xFF
        f[:, 46], f[:, 47] = 0x50, flags
        f[:, 48], f[:, 49] = 0xFA, 0xF0
        return f

    port = (np.uint32(32768) + i % 28000).astype(np.uint32)
    syn, fin = frame(0x02, port), frame(0x11, port)
    out = np.empty((2 * n, 54), dtype=np.uint8)
    # SYN k, then the FIN of connection k - lag; the last FINs at the end.
    k = np.arange(n)
    order_syn = np.where(k < lag, k, 2 * k - lag)
    out[order_syn] = syn
    rest = np.ones(2 * n, dtype=bool)
    rest[order_syn] = False
    out[rest] = fin
    return out


def read_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def one_bound(ns: str, bound: int, connections: int, interval: float, rate: float, workdir: Path, intervals: int = 3) -> dict:
    """``intervals`` intervals of ``connections`` distinct connections each (all its own flow),
    sent at ``rate`` packets/s, each from the interval's second on, while the one before is
    written; the sniffer with a DaemonSet's arguments (its spool, a server that does not answer,
    the segments on a file too)."""
    import threading

    out = workdir / f"flows-bound-{bound}.jsonl"
    out.unlink(missing_ok=True)
    lag = int(rate * 0.3 / 2)  # the FIN 0.3 s after its SYN: in a later batch
    paths = []
    for phase in range(intervals):
        path = workdir / f"frames-{phase}.npy"
        np.save(path, flow_frames(phase * connections, connections, lag))
        paths.append(path)
    spool = workdir / f"spool-{bound}"
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "netpol_learn", "sniff", "-i", "vb", "--interval", str(interval),
         "--max-connections", str(bound), "--server", "http://127.0.0.1:9", "--spool", str(spool), "--token-file",
         str(workdir / "token"), "--proc", "/proc", "-o", str(out)],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    said = sniffer.stderr.readline()
    if "listening on" not in said:
        raise SystemExit(f"sniff did not start: {said}{sniffer.stderr.read()}")
    t0 = time.monotonic()
    threading.Thread(target=sniffer.stderr.read, daemon=True).start()  # warnings about the server: not read
    windows = {"idle": 0, "filling": 0, "writing+filling": 0, "writing last": 0}
    state = {"window": "idle", "stop": False}

    def sample() -> None:
        while not state["stop"]:
            rss = read_kib(sniffer.pid, "VmRSS")
            w = state["window"]
            windows[w] = max(windows[w], rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    phases = []
    for phase, path in enumerate(paths):
        start_at = t0 + phase * interval + 1.0
        time.sleep(max(0.0, start_at - time.monotonic()))
        state["window"] = "filling" if phase == 0 else "writing+filling"
        sent = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FLOW_SENDER, str(path), str(rate)],
                              capture_output=True, text=True, check=True).stdout.split()
        phases.append((int(sent[0]), float(sent[1])))
        if time.monotonic() > t0 + (phase + 1) * interval - 0.5:
            print(f"  warning: phase {phase + 1} ended after its interval; raise --interval or --flow-rate", file=sys.stderr)
    time.sleep(1.0)
    state["window"] = "writing last"
    sniffer.send_signal(signal.SIGTERM)
    _pid, status, usage = os.wait4(sniffer.pid, 0)
    sniffer.returncode = os.waitstatus_to_exitcode(status)
    state["stop"] = True
    sampler.join()
    segs = []
    for line in out.read_text().splitlines():
        obj = json.loads(line)
        if obj["kind"] == "header":
            segs.append({"flows": 0, "connections": 0})
        elif obj["kind"] == "flow":
            segs[-1]["flows"] += 1
            segs[-1]["connections"] += obj.get("connections", 0)
        elif obj["kind"] == "stats":
            segs[-1]["stats"] = obj
    if len(segs) != intervals:
        raise SystemExit(f"expected {intervals} segments, got {len(segs)}")
    per = []
    for seg, (sent, took) in zip(segs, phases):
        st = seg["stats"]
        per.append({
            "sent_connections": connections, "sent_packets": sent, "sent_pps": round(sent / took),
            "held": seg["connections"], "flows": seg["flows"],
            "dropped_connections": st.get("dropped_connections", 0),
            "true_dropped": max(0, connections - bound), "dropped_packets": st.get("dropped_packets", 0),
            "dropped_by_kernel": st.get("dropped_by_kernel", 0),
            "seen_packets": st.get("packets", 0) + st.get("dropped_packets", 0),
        })
    return {
        "bound": bound, "interval": interval, "exit": sniffer.returncode, "intervals": per,
        "idle_rss_mib": round(windows["idle"] / 1024, 1),
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in windows.items() if k != "idle"},
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def many_flows(args, ns: str) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "token").write_text("bench\n")
        for bound in (int(b) for b in args.bounds.split(",")):
            connections = args.connections or int(bound * 1.2)
            r = one_bound(ns, bound, connections, args.interval, args.flow_rate, Path(tmp), args.intervals)
            results.append(r)
            print(f"bound {bound:>9,}: idle {r['idle_rss_mib']} MiB, peak RSS "
                  + ", ".join(f"{k} {v} MiB" for k, v in r["peak_rss_mib"].items())
                  + f"; max RSS {r['max_rss_mib']} MiB (exit {r['exit']})")
            for n, iv in enumerate(r["intervals"], 1):
                ok = iv["dropped_by_kernel"] == 0 and iv["seen_packets"] == iv["sent_packets"]
                print(f"  interval {n}: {iv['sent_connections']:,} connections sent ({iv['sent_pps']:,} packets/s), "
                      f"{iv['held']:,} held in {iv['flows']:,} flows; dropped_connections {iv['dropped_connections']:,} "
                      f"(true {iv['true_dropped']:,}), dropped_packets {iv['dropped_packets']:,}, kernel "
                      f"{iv['dropped_by_kernel']:,}" + ("" if ok else "  <- packets lost: the truth is not exact"))
    if len(results) >= 2:
        a, b = results[0], results[-1]
        for window in ("filling", "writing+filling", "writing last"):
            slope = (b["peak_rss_mib"][window] - a["peak_rss_mib"][window]) * 1048576 / (b["bound"] - a["bound"])
            print(f"{window}: {slope:,.0f} bytes of peak RSS per connection of the bound")
        slope = (b["max_rss_mib"] - a["max_rss_mib"]) * 1048576 / (b["bound"] - a["bound"])
        print(f"max RSS: {slope:,.0f} bytes per connection of the bound, "
              f"{a['max_rss_mib'] - a['bound'] * slope / 1048576:.0f} MiB at none")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25000,50000,100000,200000,300000,400000", help="packets/s to try, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to send at each rate")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--many-flows", action="store_true", help="instead: memory per connection held, and dropped_connections")
    parser.add_argument("--bounds", default="50000,200000", help="--many-flows: --max-connections values, comma-separated")
    parser.add_argument("--connections", type=int, default=0, help="--many-flows: connections per interval (default 1.2x the bound)")
    parser.add_argument("--interval", type=float, default=30.0, help="--many-flows: the sniffer's --interval")
    parser.add_argument("--intervals", type=int, default=3, help="--many-flows: intervals sent (each written while the next fills)")
    parser.add_argument("--flow-rate", type=float, default=100000.0, help="--many-flows: packets/s sent")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    ns = f"npl-bench-{os.getpid()}"
    ip("netns", "add", ns)
    results = []
    try:
        ip("-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        for dev in ("va", "vb", "lo"):
            ip("-n", ns, "link", "set", dev, "up")
        if args.many_flows:
            results = many_flows(args, ns)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            for rate in (float(r) for r in args.rates.split(",")):
                r = one_rate(ns, rate, args.seconds, Path(tmp))
                results.append(r)
                print(f"{r['target_pps']:>9,.0f} pps target, {r['achieved_pps']:>9,} sent/s: aggregated {r['aggregated']:,} of "
                      f"{r['sent']:,}, kernel dropped {r['dropped_by_kernel']:,}; sniff used {r['cpu_cores']:.2f} cores "
                      f"= {r['cpu_cores_per_100k_pps']:.2f} cores per 100k pps" + ("" if r["kept_up"] else "  <- fell behind"))
    finally:
        ip("netns", "del", ns, check=False)
    kept = [r for r in results if r["kept_up"]]
    if kept:
        best = max(kept, key=lambda r: r["achieved_pps"])
        print(f"kept up with {best['achieved_pps']:,} packets/s ({best['cpu_cores_per_100k_pps']:.2f} cores per 100k packets/s there)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
