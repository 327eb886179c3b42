"""Benchmark: load and index a large inventory, then resolve many flows.

Builds (once, cached) a kubectl-style JSON List of 10,000 pods in 2,000 Deployments across 100
namespaces, 2,000 Services with 2,000 EndpointSlices, 20 nodes, and a flow log of 100,000 flows
(pod to pod, pod to Service ClusterIP, pod to outside, node to pod), then times
``load_inventory`` + ``resolve`` in this process and prints the figures.

    python benchmarks/bench_resolve.py [--pods 10000] [--flows 100000] [--yaml]

Target (issue 3): under 5 s for the default sizes on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netpol_learn._flowlog import Flow, FlowLog  # noqa: E402
from netpol_learn._inventory import load_inventory  # noqa: E402
from netpol_learn._resolve import resolve  # noqa: E402

T0 = 1_750_000_000 * 1_000_000_000


def build(pods: int, services: int, namespaces: int, nodes: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{i}", "labels": {"kubernetes.io/metadata.name": f"ns-{i}"}}} for i in range(namespaces)]
    items += [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}"},
         "spec": {"podCIDR": f"10.{100 + i // 256}.{i % 256}.0/24"}, "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.{i // 256}.{i % 256 + 1}"}]}}
        for i in range(nodes)
    ]
    deployments = services  # one Service per Deployment
    per = pods // deployments
    n = 0
    for d in range(deployments):
        ns = f"ns-{d % namespaces}"
        name = f"app-{d}"
        h = f"{rng.getrandbits(40):010x}"
        items.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns}, "spec": {"selector": {"matchLabels": {"app": name}}}})
        items.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": f"{name}-{h}", "namespace": ns,
                      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "controller": True}]},
                      "spec": {"selector": {"matchLabels": {"app": name, "pod-template-hash": h}}}})
        endpoints = []
        for r in range(per):
            ip = f"10.{100 + (n // 65536)}.{(n // 256) % 256}.{n % 256}"
            n += 1
            pname = f"{name}-{h}-{r:05x}"
            items.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pname, "namespace": ns, "labels": {"app": name, "pod-template-hash": h},
                             "creationTimestamp": "2025-06-15T00:00:00Z",
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{h}", "controller": True}]},
                "spec": {"nodeName": f"node-{n % nodes}", "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
                "status": {"podIP": ip, "podIPs": [{"ip": ip}], "startTime": "2025-06-15T00:00:00Z", "phase": "Running"},
            })
            endpoints.append({"addresses": [ip], "targetRef": {"kind": "Pod", "name": pname, "namespace": ns}, "conditions": {"ready": True}})
        cip = f"10.96.{(d + 1) // 256}.{(d + 1) % 256}"  # 10.96.0.1 and up: every one a valid address
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                      "spec": {"clusterIP": cip, "clusterIPs": [cip], "selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}})
        items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": f"{name}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": endpoints})
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def flows(inv: dict, count: int, seed: int = 11) -> FlowLog:
    rng = random.Random(seed)
    pod_ips = [o["status"]["podIP"] for o in inv["items"] if o["kind"] == "Pod"]
    svc_ips = [o["spec"]["clusterIP"] for o in inv["items"] if o["kind"] == "Service"]
    node_ips = [o["status"]["addresses"][0]["address"] for o in inv["items"] if o["kind"] == "Node"]
    out = {}
    while len(out) < count:
        r = rng.random()
        src = rng.choice(pod_ips)
        if r < 0.5:
            dst, port = rng.choice(svc_ips), 80
        elif r < 0.8:
            dst, port = rng.choice(pod_ips), 8080
        elif r < 0.95:
            dst, port = f"203.0.113.{rng.randrange(1, 255)}", 443
        else:
            src, dst, port = rng.choice(node_ips), rng.choice(pod_ips), 8080
        key = (src, dst, port)
        if key not in out:
            out[key] = Flow(src, dst, "TCP", port, 10, 1000, 1, T0, T0 + 10**9, (("syn", 1),))
    return FlowLog(flows=tuple(out.values()))


def add_size_arguments(ap: argparse.ArgumentParser) -> None:
    """The cluster's and the flow log's sizes, shared with bench_policies.py."""
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=2_000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--flows", type=int, default=100_000)


def cluster(args: argparse.Namespace):
    """(flow log, loaded inventory) of the sizes ``add_size_arguments`` read."""
    import tempfile

    raw = build(args.pods, args.services, args.namespaces, 20)
    log = flows(raw, args.flows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inventory.json"
        path.write_text(json.dumps(raw))
        return log, load_inventory([path])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_arguments(ap)
    ap.add_argument("--yaml", action="store_true", help="write the inventory as YAML instead of JSON")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/netpol-bench"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    inv = build(args.pods, args.services, args.namespaces, 20)
    path = args.dir / f"inventory-{args.pods}.{'yaml' if args.yaml else 'json'}"
    if args.yaml:
        import yaml

        path.write_text(yaml.safe_dump(inv, sort_keys=False))
    else:
        path.write_text(json.dumps(inv))
    log = flows(inv, args.flows)
    t0 = time.perf_counter()
    inventory = load_inventory([path])
    t1 = time.perf_counter()
    res = resolve(log, inventory)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| inventory | {path.stat().st_size / 1e6:.1f} MB, {len(inventory.pods)} pods, {len(inventory.services)} services, {len(inventory.endpoint_slices)} slices, {len(inventory.workloads)} workloads |")
    print(f"| load + index | {t1 - t0:.2f} s |")
    print(f"| resolve {len(log.flows)} flows | {t2 - t1:.2f} s -> {len(res.connections)} connections |")
    print(f"| total | {t2 - t0:.2f} s (target < 5 s) |")
    print(f"| peak RSS | {peak:.0f} MB |")
    print("kinds:", res.report.flows_by_kind)


if __name__ == "__main__":
    main()
