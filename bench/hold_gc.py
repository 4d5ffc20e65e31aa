"""Garbage collection of a hold with 10,000 blobs: time, PDS calls, memory.

Reproduce:  .venv/bin/python bench/hold_gc.py [--blobs 10000] [--users 20] [--layers 4]
            [--deleted 0.5] [--driver filesystem|s3] [--write]

A real PLC + PDS (tests/support/pdsnet.py), a real valkey-server, the hold's own collector
(`hold.gc`) with the chosen storage driver (s3: a moto server on loopback). The hold is filled
directly (blob bytes written to storage, layer records committed to the hold's repo 200 at a
time, manifest records written to the users' PDS with applyWrites) so the run measures the
collection and not the pushes: ``--blobs`` blobs in manifests of ``--layers`` layers + a
config, spread over ``--users`` accounts; a fraction ``--deleted`` of each user's manifests is
then deleted at the PDS. Measured: a dry run, then the real run (grace 0): wall time, PDS
calls (listRecords), peak Python memory (tracemalloc) and the process's max RSS. The run must
delete exactly the blobs of the deleted manifests.

`--write` replaces this benchmark's section of docs/benchmarks.md (between its markers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atcr.digest import Digest  # noqa: E402
from atcr.runtime import Runtime  # noqa: E402
from atcr.settings import load  # noqa: E402
from bench._common import free_port, write_section  # noqa: E402
from hold.gc.collector import GcReport  # noqa: E402
from hold.gc.service import GcService  # noqa: E402
from hold.ledger import Ledger  # noqa: E402
from hold.quota import LAYER  # noqa: E402
from hold.repo.repo import MAX_WRITES_PER_COMMIT, Create  # noqa: E402
from hold.repo.service import RepoService  # noqa: E402
from hold.repo.signing import EcKeySigner  # noqa: E402
from hold.service import HoldServices  # noqa: E402
from hold.settings import HoldSettings  # noqa: E402
from tests.support.pdsnet import Account, TestNetwork, create_account, ensure_installed  # noqa: E402
from tests.support.services import running_valkey  # noqa: E402

MARK_BEGIN = "<!-- bench:hold_gc begin -->"
MARK_END = "<!-- bench:hold_gc end -->"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
BLOB_SIZE = 512


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def s3_env() -> Iterator[dict[str, str]]:
    from tests.support.services import running_moto

    with running_moto() as endpoint:
        bucket = "gc-bench"
        endpoint.client().create_bucket(Bucket=bucket)
        yield {
            "STORAGE_DRIVER": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT": endpoint.url,
            "AWS_REGION": "us-east-1", "S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        }


async def apply_writes(client: httpx.AsyncClient, account: Account, writes: list[dict[str, Any]]) -> None:
    for start in range(0, len(writes), 100):
        r = await client.post(
            f"{account.pds_url}/xrpc/com.atproto.repo.applyWrites",
            json={"repo": account.did, "writes": writes[start : start + 100]},
            headers=account.auth_headers,
        )
        r.raise_for_status()


async def bench(args: argparse.Namespace, net: TestNetwork, valkey_url: str, work: Path,
                storage: dict[str, str], *, trace: bool) -> dict[str, Any]:
    environ = {
        "VALKEY_URL": valkey_url, "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "ATCR_LOG_LEVEL": "warning",
        "ATCR_PLC_URL": net.plc_url, "HOLD_PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
        "HOLD_DATA_DIR": str(work / "hold"), "STORAGE_DRIVER": "filesystem", "STORAGE_ROOT_DIR": str(work / "blobs"),
        "HOLD_GC_INTERVAL": "0", **storage,
    }
    for k, v in storage.items():
        if k.startswith("AWS_"):
            os.environ[k] = v  # boto3's credential chain
    settings = load(HoldSettings, environ)
    runtime = Runtime.from_settings(settings)
    services = HoldServices.build(settings, runtime)
    repo_service = RepoService(settings, services.identity.did, EcKeySigner(services.identity.key))
    ledger = Ledger.build(settings, services, repo_service)
    gc = GcService.build(services, ledger, runtime)
    assert gc.collector is not None
    per_manifest = args.layers + 1
    manifests = args.blobs // per_manifest
    users = [create_account(net.pds_url, f"gc{i}") for i in range(args.users)]
    doomed: set[str] = set()
    store = services.store
    try:
        async with repo_service.lifespan() as repo, httpx.AsyncClient(timeout=120, trust_env=False) as client:
            t0 = time.perf_counter()
            layer_writes: list[Create] = []
            pds_writes: dict[str, list[dict[str, Any]]] = {u.did: [] for u in users}
            pds_deletes: dict[str, list[dict[str, Any]]] = {u.did: [] for u in users}
            sem = asyncio.Semaphore(32)

            async def put(data: bytes) -> str:
                digest = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
                async with sem:
                    if store.kind == "filesystem":
                        path = store.blob_file(digest)  # type: ignore[attr-defined]

                        def write() -> None:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(data)

                        await store.run(write)
                    else:
                        key = store.blob_key(digest)  # type: ignore[attr-defined]
                        bucket = settings.s3_bucket
                        await store.run(lambda: store.client.put_object(Bucket=bucket, Key=key, Body=data))  # type: ignore[attr-defined]
                return str(digest)

            for m in range(manifests):
                user = users[m % len(users)]
                blobs = [os.urandom(BLOB_SIZE) for _ in range(per_manifest)]
                digests = await asyncio.gather(*(put(b) for b in blobs))
                layers = [{"mediaType": LAYER_TYPE, "digest": d, "size": BLOB_SIZE} for d in digests[:-1]]
                config = {"mediaType": CONFIG_TYPE, "digest": digests[-1], "size": BLOB_SIZE}
                mdigest = "sha256:" + hashlib.sha256(f"{user.did}{m}".encode()).hexdigest()
                rkey = mdigest.split(":", 1)[1]
                uri = f"at://{user.did}/io.atcr.manifest/{rkey}"
                for layer in layers:
                    layer_writes.append(Create(LAYER, None, {
                        "$type": LAYER, "digest": layer["digest"], "size": BLOB_SIZE, "mediaType": LAYER_TYPE,
                        "manifest": uri, "repository": f"repo{m % 7}", "userDid": user.did, "createdAt": now_iso(),
                    }))
                pds_writes[user.did].append({
                    "$type": "com.atproto.repo.applyWrites#create", "collection": "io.atcr.manifest", "rkey": rkey,
                    "value": {"$type": "io.atcr.manifest", "repository": f"repo{m % 7}", "digest": mdigest,
                              "mediaType": MANIFEST_TYPE, "schemaVersion": 2, "config": config, "layers": layers,
                              "holdDid": services.identity.did, "createdAt": now_iso()},
                })
                if (m // len(users)) % round(1 / args.deleted) == 0 if args.deleted > 0 else False:
                    pds_deletes[user.did].append({
                        "$type": "com.atproto.repo.applyWrites#delete", "collection": "io.atcr.manifest", "rkey": rkey,
                    })
                    doomed.update(digests)
            for start in range(0, len(layer_writes), MAX_WRITES_PER_COMMIT):
                await repo.apply_writes(layer_writes[start : start + MAX_WRITES_PER_COMMIT])
            assert ledger.quota.index is not None
            await ledger.quota.index.rebuild(repo)
            for u in users:
                await apply_writes(client, u, pds_writes[u.did])
                if pds_deletes[u.did]:
                    await apply_writes(client, u, pds_deletes[u.did])
            fill = time.perf_counter() - t0

            async def measured(dry: bool) -> tuple[GcReport, float, int]:
                # Timed runs are not traced (tracemalloc slows Python down several times);
                # the traced pass (a second fill) gives the peaks.
                if trace:
                    tracemalloc.start()
                t = time.perf_counter()
                report = await gc.run(dry_run=dry, grace=0)
                elapsed = time.perf_counter() - t
                peak = 0
                if trace:
                    _, peak = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
                return report, elapsed, peak

            dry, dry_s, dry_peak = await measured(True)
            real, real_s, real_peak = await measured(False)
            deleted = {d for d, _ in real.deleted}
            assert deleted == doomed, (len(deleted), len(doomed))
            again, again_s, _ = await measured(False)
            assert again.blobs_deleted == 0
            return {
                "blobs": dry.blobs_seen, "manifests": manifests, "users": len(users), "fill_s": fill,
                "dry": dry, "dry_s": dry_s, "dry_peak": dry_peak,
                "real": real, "real_s": real_s, "real_peak": real_peak,
                "again": again, "again_s": again_s,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
    finally:
        await services.store.aclose()
        await runtime.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blobs", type=int, default=10_000)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--deleted", type=float, default=0.5)
    p.add_argument("--driver", choices=("filesystem", "s3"), default="filesystem")
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    ensure_installed()
    load_before = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp, running_valkey() as valkey_url, TestNetwork() as net:
        drivers = ["filesystem", "s3"] if args.driver == "s3" else ["filesystem"]
        for driver in drivers:
            with contextlib.ExitStack() as stack:
                storage = stack.enter_context(s3_env()) if driver == "s3" else {}
                results[driver] = asyncio.run(bench(args, net, valkey_url, Path(tmp) / driver, storage, trace=False))
        # Memory: the same collection again on a fresh filesystem hold, under tracemalloc.
        traced = asyncio.run(bench(args, net, valkey_url, Path(tmp) / "traced", {}, trace=True))
    load_after = os.getloadavg()[0]
    mib = 1024 * 1024
    lines = [
        MARK_BEGIN,
        "## Hold garbage collection (bench/hold_gc.py)",
        "",
        f"Reproduce: `.venv/bin/python bench/hold_gc.py --blobs {args.blobs} --users {args.users} "
        f"--layers {args.layers} --deleted {args.deleted}{' --driver s3' if args.driver == 's3' else ''}`",
        "",
        f"Machine: {platform.system()} {platform.machine()}, nproc {os.cpu_count()}, Python "
        f"{platform.python_version()}; {datetime.now(UTC).date()}; load average {load_before:.2f} before / "
        f"{load_after:.2f} after. Real PLC + PDS and valkey-server on loopback; the hold's collector in-process.",
        "",
        "| driver | blobs | users / manifests | run | wall s | blobs deleted | PDS calls |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for driver, r in results.items():
        for label, rep, secs in (
            ("dry run", r["dry"], r["dry_s"]),
            ("grace 0", r["real"], r["real_s"]),
            ("again (nothing to do)", r["again"], r["again_s"]),
        ):
            lines.append(
                f"| {driver} | {rep.blobs_seen} | {r['users']} / {r['manifests']} | {label} | {secs:.2f} | "
                f"{rep.blobs_deleted} | {rep.pds_calls} |"
            )
    lines += [
        "",
        f"Peak Python memory of the collector (tracemalloc, a second fill of the filesystem hold): dry run "
        f"{traced['dry_peak'] / mib:.1f} MiB, grace 0 {traced['real_peak'] / mib:.1f} MiB "
        f"(the traced runs took {traced['dry_s']:.2f} s and {traced['real_s']:.2f} s).",
    ]
    rss = max([r["maxrss"] for r in results.values()] + [traced["maxrss"]])
    real = next(iter(results.values()))["real"]
    lines += [
        "",
        f"Process max RSS (everything, including the fill): {rss / mib:.0f} MiB. The grace-0 run deleted "
        f"{real.blobs_deleted} blobs ({real.bytes_reclaimed} bytes) and {real.records_removed} stale layer records; "
        "it must delete exactly the blobs of the deleted manifests (checked). PDS calls are one `listRecords` "
        "per user per 100 manifests.",
        MARK_END,
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(text, MARK_BEGIN, MARK_END)


if __name__ == "__main__":
    main()
