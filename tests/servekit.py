"""Pieces for the tests of the learning service (``netpol-learn serve``): tokens, segments at
explicit times, and the service as a real process on loopback."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3

from netpol_learn._flowlog import DnsAnswer, DnsObservation, Flow, FlowLog, dumps_lines

WRITE = "write-token-0123456789abcdef"
READ = "read-token-0123456789abcdef0"
BASE_NS = 1_780_000_000 * 10**9  # 2026-05-28: a time in the past of any test run


def tokens_file(directory: Path) -> Path:
    path = directory / "tokens.txt"
    path.write_text(f"# the service's tokens\n{WRITE} write\n{READ} read\n")
    return path


def segment(n: int, node: str = "node-a", *, flows: int = 3, at_s: float | None = None) -> FlowLog:
    """Segment ``n`` of a node: ``flows`` flows of its own and one every segment shares, at
    explicit times (30 s intervals after BASE_NS)."""
    t0 = BASE_NS + int((n * 30 if at_s is None else at_s) * 1e9)
    out = []
    for i in range(flows):
        out.append(Flow(src=f"10.244.{n % 200}.{i + 1}", dst="10.96.0.10", proto="UDP", port=53, packets=2, bytes=180,
                        connections=1, first_seen=t0 + i * 10**6, last_seen=t0 + i * 10**6 + 5 * 10**5,
                        direction=(("first-packet", 1),), evidence="answered"))
    out.append(Flow(src="10.244.1.5", dst="10.244.2.7", proto="TCP", port=8080, packets=10, bytes=1000, connections=2,
                    first_seen=t0, last_seen=t0 + 2 * 10**9, direction=(("syn", 2),), evidence="established"))
    dns = (DnsObservation(client="10.244.1.5", resolver="10.96.0.10", qname=f"api{n % 3}.example.com", qtype="A",
                          queries=1, responses=1, first_seen=t0, last_seen=t0,
                          answers=(DnsAnswer(f"api{n % 3}.example.com", "A", "203.0.113.7", 60),), rcodes=("NOERROR",),
                          transports=("udp",)),)
    return FlowLog(flows=tuple(sorted(out, key=lambda f: (f.src, f.dst))), dns=dns, stats={"packets": 10 + flows * 2},
                   sources=(f"sniff:{node}",))


def text(log: FlowLog) -> str:
    return "".join(dumps_lines(log))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    process: subprocess.Popen
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text()


def start_serve(tmp_path: Path, store: Path, *args: str, port: int | None = None, env: dict | None = None,
                wait_ready: bool = True) -> Running:
    """``netpol-learn serve`` as a process on 127.0.0.1, its stderr in a file; waits until
    /healthz answers."""
    port = port or free_port()
    err = tmp_path / f"serve-{port}-{time.monotonic_ns()}.err"
    cmd = [sys.executable, "-m", "netpol_learn", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}", *args]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(err, "wb"), env={**os.environ, **(env or {})})
    running = Running(process, f"http://127.0.0.1:{port}", err)
    if wait_ready:
        http = urllib3.PoolManager()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}: {running.log()}")
            try:
                if http.request("GET", running.url + "/healthz", timeout=1, retries=False).status == 200:
                    return running
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        process.kill()
        raise AssertionError(f"serve did not answer: {running.log()}")
    return running


def stop(running: Running, sig: int = signal.SIGTERM) -> int:
    running.process.send_signal(sig)
    return running.process.wait(timeout=30)


def post(http: urllib3.PoolManager, url: str, log: FlowLog, node: str, boot: str, seq: int, *, token: str = WRITE,
         compress: bool = True, cut: int | None = None, timeout: float = 5):
    body = text(log).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    cut = cut if cut is not None else max(f.last_seen for f in log.flows)
    return http.request("POST", f"{url}/v1/segments?node={node}&boot={boot}&seq={seq}&cut={cut}", body=body,
                        headers=headers, timeout=timeout, retries=False)


def wait_for(check, timeout: float = 30, what: str = "the condition", every: float = 0.05):
    """The first true value of ``check()``, tried every ``every`` seconds for ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def get(http: urllib3.PoolManager, url: str, path: str, token: str = READ):
    return http.request("GET", url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, retries=False)


def error_of(response) -> str:
    return json.loads(response.data)["error"]
