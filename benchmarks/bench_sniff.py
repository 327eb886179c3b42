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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25000,50000,100000,200000,300000,400000", help="packets/s to try, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to send at each rate")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
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
