"""Reliability under load: scale-out over AppView replicas, and pulls through a Valkey outage.

Reproduce:  .venv/bin/python bench/reliability_load.py [--seconds 5] [--connections 64]

Starts the production-shaped stack of tests/reliability/stack.py on loopback (a local PLC +
PDS from @atproto/dev-env, moto S3 behind a proxy, one Valkey, the hold, two `atcr appview`
processes with one worker each behind a round-robin balancer), pushes one image, and drives
pulls with a raw-asyncio HTTP/1.1 load generator (tests/support/loadgen.py) over keep-alive
connections. Each request is one of: manifest by tag, manifest by digest, blob GET (307),
tags list; half go to each replica unless stated.

Phases (each ``--seconds`` long):

1. one replica only, Valkey up;
2. both replicas, Valkey up (scale-out);
3. both replicas, Valkey SIGKILLed at the start of the phase (reads go to the PDS/PLC and the
   hold directly, each answer memoised for a few seconds per process);
4. both replicas after Valkey restarted (recovery, no AppView restart).

Then the hold's pullCount for the repository is compared with the manifest GETs answered 200
over all phases (pull counts are sent while the hold's Valkey is down too, and resent).
Prints one markdown table; docs/reliability.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.stack import OCI_MANIFEST, RelStack, push_image, reliability_stack, token  # noqa: E402
from tests.support import loadgen  # noqa: E402
from tests.support.pdsnet import TestNetwork, ensure_installed  # noqa: E402
from tests.support.services import running_moto  # noqa: E402

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def pull_count(rel: RelStack, owner: str, repository: str) -> int:
    from atcr.readmodel.keys import stats_rkey

    r = httpx.get(
        f"{rel.hold.url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": rel.hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(owner, repository)},
        timeout=10,
    )
    return int(r.json()["value"].get("pullCount", 0)) if r.status_code == 200 else 0


def jobs_for(urls: list[str], name: str, digest: str, blob: str, tok: str) -> list[loadgen.Job]:
    auth = (("Authorization", f"Bearer {tok}"), ("Accept", OCI_MANIFEST))
    out = []
    for url in urls:
        out += [
            loadgen.Job(f"{url}/v2/{name}/manifests/latest", auth, label="manifest"),
            loadgen.Job(f"{url}/v2/{name}/manifests/{digest}", auth, label="manifest"),
            loadgen.Job(f"{url}/v2/{name}/blobs/{blob}", auth, label="blob"),
            loadgen.Job(f"{url}/v2/{name}/tags/list", auth, label="tags"),
        ]
    return out


def row(title: str, result: loadgen.Result) -> str:
    ok = sum(n for s, n in result.statuses.items() if s in (200, 307))
    other = result.total - ok
    return (f"| {title} | {result.total / result.seconds:,.0f} | {result.percentile(50) * 1000:.1f} | "
            f"{result.percentile(99) * 1000:.1f} | {ok:,} | {other} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with TestNetwork(install_dir=ensure_installed()) as net, running_moto() as s3, \
            tempfile.TemporaryDirectory() as tmp, reliability_stack(Path(tmp), net, s3) as rel:
        user = rel.user("bench")
        digest, _, blobs = push_image(rel.a.url, rel.service, user, "bench", "latest")
        name = f"{user.handle}/bench"
        tok = token(rel.a.url, rel.service, None, f"repository:{name}:pull")
        both = [rel.a.url, rel.b.url]
        phases: list[tuple[str, loadgen.Result]] = []

        def phase(title: str, urls: list[str]) -> loadgen.Result:
            jobs = jobs_for(urls, name, digest, blobs[1], tok)
            result = asyncio.run(loadgen.run(jobs, concurrency=args.connections,
                                             until=time.monotonic() + args.seconds, timeout=30))
            phases.append((title, result))
            return result

        phase("1 replica, Valkey up", [rel.a.url])
        phase("2 replicas, Valkey up", both)
        rel.valkey._server.terminate()
        phase("2 replicas, Valkey killed (reads from PDS/hold)", both)
        rel.valkey.start()
        for url in both:
            while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:
                time.sleep(0.1)
        phase("2 replicas, Valkey back (no restart)", both)
        served = sum(1 for _, r in phases for e in r.timeline if e[3] == "manifest" and e[2] == 200)
        deadline = time.monotonic() + 60
        while pull_count(rel, user.did, "bench") < served and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        counted = pull_count(rel, user.did, "bench")
    print(f"\nMachine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; {args.connections} connections, {args.seconds:g} s per phase; "
          "one uvicorn worker per AppView; everything (PDS, moto, hold, Valkey, load generator) on the same cores.\n")
    print("| phase | req/s | p50 ms | p99 ms | answered 200/307 | other |")
    print("|---|---:|---:|---:|---:|---:|")
    for title, result in phases:
        print(row(title, result))
    print(f"\nManifest GETs answered: {served:,}; hold pullCount: {counted:,} (lost: {served - counted}).")


if __name__ == "__main__":
    main()
