"""Smoke test of the namespace test bed (tests/testbed.py) that records the example captures.

Builds a two-pod bed (a client and a server pod behind a ClusterIP Service), sends real TCP
requests through the ClusterIP (kube-proxy-like DNAT in nftables in the node namespace), and checks
that everything is torn down: no namespaces and no processes left, also when the body fails.
Needs root, iproute2 and nftables (.ci/run installs nftables when it is missing); in CI a skip
fails the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402
from testbed import Call, Port, Serve, ServicePort, TestBed  # noqa: E402

from netpol_learn._inventory import load_inventory  # noqa: E402

pytestmark = pytest.mark.skipif(testbed.can_run() is not None, reason=f"test bed unavailable: {testbed.can_run()}")


def two_pod_bed() -> tuple[TestBed, str]:
    bed = TestBed("smoke", dns=False, lifetime=30)
    bed.deployment("demo", "server", ports=[Port("http", 8080)], serve=[Serve(8080)])
    svc = bed.service("demo", "server", {"app": "server"}, [ServicePort(80, "http", name="http")])
    bed.deployment("demo", "client", calls=[Call(svc.cluster_ip, 80, count=3, interval=0.05)])
    return bed, svc.cluster_ip


def test_tcp_through_a_service_clusterip_and_clean_teardown(tmp_path):
    bed, cluster_ip = two_pod_bed()
    assert len([p for p in bed.pods if not p.host_network]) == 2
    server_ip = bed.pods_of("demo", "server")[0].ip
    client_ip = bed.pods_of("demo", "client")[0].ip
    with bed:
        namespaces = bed.leftover_namespaces()
        assert len(namespaces) == 4  # node, outside, two pods
        result = bed.run(timeout=30)
        inventory = bed.write_inventory(tmp_path / "inventory.yaml")
        procs = [p for _, p in bed._procs]
    assert result.failures == []
    calls = result.calls
    assert len(calls) == 3 and all(c["ok"] and c["address"] == cluster_ip and c["port"] == 80 for c in calls)
    served = [e for e in result.events if e["event"] == "served"]
    # DNAT, not a proxy: the server pod saw the client pod's own address, on its target port.
    assert [(e["peer"], e["port"]) for e in served] == [(client_ip, 8080)] * 3
    assert bed.truth() == [{"from": "demo/Deployment/client", "to": "demo/Deployment/server", "protocol": "TCP", "port": 8080}]
    # Torn down: no namespace of this bed, no agent still running.
    assert bed.leftover_namespaces() == []
    assert not set(namespaces) & set(testbed.list_namespaces())
    assert all(p.poll() is not None for p in procs)
    # The inventory it wrote is one netpol-learn reads, with every pod at its address.
    inv = load_inventory([inventory])
    ips = {(p.namespace, p.name): p.ips for p in inv.pods}
    assert ips[("demo", bed.pods_of("demo", "server")[0].name)] == (server_ip,)
    assert ("10.96.0.0/16",) == inv.service_cidrs and "10.244.0.0/16" in inv.pod_cidrs


def test_teardown_on_error():
    bed, _ = two_pod_bed()
    with pytest.raises(RuntimeError, match="boom"):
        with bed:
            assert bed.leftover_namespaces()
            raise RuntimeError("boom")
    assert bed.leftover_namespaces() == []


def test_names_are_unique_per_bed():
    a, _ = two_pod_bed()
    b, _ = two_pod_bed()
    assert a.run_id != b.run_id
