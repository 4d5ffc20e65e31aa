"""Manifest GET on a Valkey Cluster vs a single Valkey node, same machine, one run.

    .venv/bin/python bench/valkey_cluster.py [--duration 10] [--connections 64]

Needs wrk. Starts, on 127.0.0.1 only: a real PLC+PDS (dev-env), one single-node Valkey, one
Valkey Cluster (3 primaries + 3 replicas, tests/support/valkey_cluster.py), one hold (on the
single node: a warm manifest GET never calls it), and three AppViews (2 uvicorn workers each):

* on the single node, near cache on (the default);
* on the single node, near cache off (``ATCR_CACHE_NEAR_TTL=0``): what every read costs in Valkey;
* on the cluster (``valkey+cluster://``; the near cache turns itself off there).

Pushes one small image through each, then measures a warm manifest GET by tag with a bearer
token (what `docker pull` sends) with wrk, one AppView after the other. Writes a section into
docs/benchmarks.md between markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atcr.identity import did_web_for_url  # noqa: E402
from bench._common import write_section  # noqa: E402
from bench.registry_vs_distribution import wrk  # noqa: E402
from tests.reliability.stack import OCI_MANIFEST, User, push_image, token  # noqa: E402
from tests.support.pdsnet import TestNetwork, create_account, create_app_password, ensure_installed  # noqa: E402
from tests.support.services import free_port, running_valkey  # noqa: E402
from tests.support.stack import Service, appview_env, hold_env, network_env, start_service  # noqa: E402
from tests.support.valkey_cluster import running_valkey_cluster  # noqa: E402

MARK_BEGIN = "<!-- bench:valkey_cluster begin -->"
MARK_END = "<!-- bench:valkey_cluster end -->"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="atcr-bench-cluster-"))
    ensure_installed()
    results: dict[str, dict[str, float]] = {}
    services: list[Service] = []
    with running_valkey() as single_url, running_valkey_cluster() as cluster, TestNetwork() as net:
        try:
            base = network_env(single_url, net.plc_url, net.pds_url)
            base["ATCR_LOG_LEVEL"] = "warning"
            hold_port = free_port()
            services.append(start_service("hold", "hold", {**base, **hold_env(work, hold_port)}, work,
                                          f"http://127.0.0.1:{hold_port}"))
            hold_did = did_web_for_url(f"http://localhost:{hold_port}")
            variants = {
                "single node, near cache on": {"VALKEY_URL": single_url},
                "single node, near cache off": {"VALKEY_URL": single_url, "ATCR_CACHE_NEAR_TTL": "0"},
                "cluster 3+3 (near cache off)": {"VALKEY_URL": cluster.url},
            }
            account = create_account(net.pds_url, "bench")
            user = User(account, create_app_password(account, "bench"))
            for i, (label, extra) in enumerate(variants.items()):
                port = free_port()
                app_work = work / f"appview{i}"
                env = {**base, **appview_env(app_work, port, hold_did), "ATCR_WORKERS": "2", **extra}
                app = start_service(f"appview{i}", "appview", env, app_work, f"http://127.0.0.1:{port}", timeout=60)
                services.append(app)
                service = app.url.removeprefix("http://")
                push_image(app.url, service, user, f"small{i}", "v1", layer=b"layer %d" % i)
                tok = token(app.url, service, None, f"repository:{user.handle}/small{i}:pull")
                url = f"{app.url}/v2/{user.handle}/small{i}/manifests/v1"
                headers = {"Accept": OCI_MANIFEST, "Authorization": f"Bearer {tok}"}
                wrk(url, headers, 3, args.connections)  # warm up
                results[label] = wrk(url, headers, args.duration, args.connections)
                app.stop()
        finally:
            for svc in services:
                svc.stop()
    shutil.rmtree(work, ignore_errors=True)
    write_report(results, args)
    print(json.dumps(results, indent=2))


def write_report(r: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    single = r["single node, near cache off"]["rps"]
    lines = [
        MARK_BEGIN,
        "## Manifest GET: Valkey Cluster vs a single node (`bench/valkey_cluster.py`)",
        "",
        f"{os.cpu_count()} cores, everything on 127.0.0.1 in one run (PLC+PDS, hold, one AppView at a time "
        f"with 2 uvicorn workers, the single Valkey and all 6 cluster nodes); warm manifest GET by tag with a "
        f"bearer token, wrk -t2 -c{args.connections} -d{args.duration}s after a 3 s warm-up. Load average "
        f"when the run ended: {os.getloadavg()[0]:.1f} (the machine is shared: compare rows, not absolute figures "
        "with other sections).",
        "",
        "| Valkey | req/s | p50 ms | p99 ms | vs single node (near cache off) | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, m in r.items():
        lines.append(f"| {label} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps'] / single:.2f}x | "
                     f"{m['bad']:.0f} |")
    lines += [
        "",
        "A warm pull reads three keys (identity, tag, manifest): on one machine the cluster adds the "
        "client's slot routing and, per request, up to three connections to different primaries instead of "
        "one; it buys memory and write throughput across machines, not latency on one. The near cache "
        "(off on a cluster, docs/cache.md) is what makes the single node faster still.",
        MARK_END,
    ]
    write_section("\n".join(lines), MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
