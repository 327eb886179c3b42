"""The real sniffer in the namespace test bed sending to the real service (both in the node's
network namespace, real traffic between real pods' namespaces), with the service killed with
SIGKILL mid-run and started again on the same store, and with the sniffer killed."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import urllib3

import testbed
from netpol_learn._flowlog import merge_logs, read_flow_log, read_segment
from servekit import READ, WRITE, free_port, tokens_file, wait_for
from test_sniff import Sniffing, tcp_calls
from testbed import Serve, TestBed

NO_BED = testbed.can_run()
needs_bed = pytest.mark.skipif(NO_BED is not None, reason=f"test bed unavailable: {NO_BED}")


@pytest.fixture(scope="module")
def bed():
    if NO_BED is not None:
        pytest.skip(f"test bed unavailable: {NO_BED}")
    b = TestBed("servebed", dns=False, lifetime=180)
    b.deployment("shop", "server", serve=[Serve(8080)])
    b.deployment("shop", "client")
    with b:
        yield b


def in_netns(netns: str, call):
    """``call()`` in a thread that has entered network namespace ``netns`` (setns affects the
    calling thread only); its result."""
    out: list = []

    def run():
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            out.append((False, exc))

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    ok, value = out[0]
    if not ok:
        raise value
    return value


class Service:
    """``netpol-learn serve`` in the node's namespace on 127.0.0.1:PORT."""

    def __init__(self, bed: TestBed, store, port: int, tokens, tmp_path):
        self.bed, self.store, self.port, self.tokens, self.tmp_path = bed, store, port, tokens, tmp_path
        self.url = f"http://127.0.0.1:{port}"
        self.starts = 0
        self.proc = None

    def start(self):
        self.starts += 1
        err = open(self.tmp_path / f"serve-{self.starts}.err", "wb")
        self.proc = subprocess.Popen([testbed._IP, "netns", "exec", self.bed.node_ns, sys.executable, "-m", "netpol_learn", "serve",
                                      "--store", str(self.store), "--listen", f"127.0.0.1:{self.port}", "--tokens-file",
                                      str(self.tokens), "--no-watch"], stdout=subprocess.DEVNULL, stderr=err)
        wait(self._up, what="the service")

    def _up(self) -> bool:
        try:
            return self.get("/healthz", token=None).status == 200
        except urllib3.exceptions.HTTPError:
            return False

    def get(self, path: str, token: str | None = READ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return in_netns(self.bed.node_ns, lambda: urllib3.PoolManager().request(
            "GET", self.url + path, headers=headers, timeout=30, retries=False))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def wait(cond, timeout: float = 60, what: str = "the condition"):
    wait_for(cond, timeout, what, every=0.1)


def node_segments(service: Service, node: str) -> int:
    for line in service.get("/metrics").data.decode().splitlines():
        if line.startswith(f'netpol_learn_node_segments{{node="{node}"}}'):
            return int(float(line.split()[-1]))
    return 0


def connections_to(log, address: str, port: int) -> int:
    """The connections to address:port seen opening (their SYN is in exactly one segment; one that
    spans a segment's cut shows its later packets in the next segment too, as mid-stream traffic)."""
    return sum(n for f in log.flows if f.dst == address and f.port == port for method, n in f.direction if method == "syn")


def _running(bed, tmp_path):
    """A write token's file, the service started, and the bed's server and client pods."""
    token = tmp_path / "token"
    token.write_text(WRITE + "\n")
    service = Service(bed, tmp_path / "store.db", free_port(), tokens_file(tmp_path), tmp_path)
    service.start()
    return token, service, bed.pods_of("shop", "server")[0], bed.pods_of("shop", "client")[0]


@needs_bed
def test_service_killed_while_the_sniffer_sends_loses_nothing_and_counts_nothing_twice(bed, tmp_path):
    token, service, server, client = _running(bed, tmp_path)
    local = tmp_path / "local.jsonl"
    sniffer = Sniffing(bed, "--server", service.url, "--token-file", str(token), "--spool", str(tmp_path / "spool"),
                       "--interval", "0.5", "--node", "node-a", "-i", "veth*", "-o", str(local))
    try:
        sniffer.wait_for("listening on")
        tcp_calls(client, server.ip, 8080, 3)
        wait(lambda: node_segments(service, "node-a") >= 3, what="segments stored")
        service.kill()
        tcp_calls(client, server.ip, 8080, 2)  # while the service is down: into the spool
        sniffer.wait_for("cannot send segments to")
        service.start()  # the same store, the same port
        tcp_calls(client, server.ip, 8080, 4)
        time.sleep(0.5)
        assert sniffer.stop() == 0
    finally:
        if sniffer.proc.poll() is None:
            sniffer.proc.kill()
    try:
        served = read_segment(service.get("/v1/flows").data.decode())
        # The sniffer's local copy holds every segment once: what a run without the kill stores.
        written = read_flow_log(local)
        assert served == merge_logs([written])
        assert connections_to(served, server.ip, 8080) == 9
        sent = [line for line in sniffer.lines if line.startswith("sniff: stopped:")][0]
        segments = int(sent.split("segments sent")[0].rsplit(";", 1)[1].strip())
        assert node_segments(service, "node-a") == segments
        assert list((tmp_path / "spool").iterdir()) == []
    finally:
        service.stop()


@needs_bed
def test_sniffer_killed_loses_at_most_its_current_interval(bed, tmp_path):
    token, service, server, client = _running(bed, tmp_path)
    args = ("--server", service.url, "--token-file", str(token), "--spool", str(tmp_path / "spool"), "--node", "node-k", "-i", "veth*")
    try:
        first = Sniffing(bed, *args, "--interval", "0.5")
        first.wait_for("listening on")
        tcp_calls(client, server.ip, 8080, 2)
        wait(lambda: connections_to(read_segment(service.get("/v1/flows").data.decode()), server.ip, 8080) == 2,
             what="the first calls stored")
        tcp_calls(client, server.ip, 8080, 1)  # the interval the kill may cut
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        second = Sniffing(bed, *args, "--interval", "0.5")
        second.wait_for("listening on")
        tcp_calls(client, server.ip, 8080, 3)
        time.sleep(0.5)
        assert second.stop() == 0
        served = read_segment(service.get("/v1/flows").data.decode())
        assert 5 <= connections_to(served, server.ip, 8080) <= 6
    finally:
        service.stop()
