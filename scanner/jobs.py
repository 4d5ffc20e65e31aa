"""One scan job: layers to a private temp directory, analysis, the `scan_result` answer.

The layers are downloaded one after another into a directory of their own under
SCANNER_WORK_DIR, analysed from disk (never a whole layer in memory), and the directory is
removed whatever happens. A failure the image or the hold is to blame for (a layer that will
not download or unpack) becomes a `scan_result` with `error`, so the hold marks the scan
failed instead of handing the job out again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from atcr.http import SafeHttpClient
from scanner.analysis import SCANNER_VERSION, AnalysisError, VulnDB, analyze_layers
from scanner.errors import ScannerError
from scanner.fetch import fetch_layer
from scanner.settings import ScannerSettings

log = logging.getLogger("scanner.jobs")


def _result(digest: str, **fields: Any) -> dict[str, Any]:
    return {"type": "scan_result", "digest": digest, "scannerVersion": SCANNER_VERSION, "error": "", **fields}


async def run_job(
    job: dict[str, Any], *, hold_url: str, http: SafeHttpClient, db: VulnDB, settings: ScannerSettings
) -> dict[str, Any]:
    digest = str(job.get("digest", ""))
    try:
        layers = job.get("layers")
        if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
            raise ScannerError("the job names no layers (a hold that sends none is not supported)")
        if sum(int(x.get("size", 0)) for x in layers) > settings.max_image_size:
            raise ScannerError(f"the image is larger than SCANNER_MAX_IMAGE_SIZE ({settings.max_image_size} bytes)")
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="job-", dir=settings.work_dir))
        try:
            paths = []
            started = time.monotonic()
            fetched = 0
            for i, layer in enumerate(layers):
                path = work / f"{i:04d}.layer"
                fetched += await fetch_layer(
                    http, hold_url, str(job.get("holdDid", "")), layer, path,
                    secret=settings.secret, timeout=settings.layer_timeout,
                )
                paths.append(path)
            downloaded = time.monotonic()
            analysis = await asyncio.to_thread(analyze_layers, paths, db)
            log.info("scanner: %s: %d layer(s), %.1f MiB downloaded in %.2f s, analysed in %.2f s: %d package(s)",
                     digest, len(paths), fetched / 2**20, downloaded - started, time.monotonic() - downloaded,
                     len(analysis.packages))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        name = f"{job.get('repository', '')}@{digest}"
        namespace = f"{hold_url.rstrip('/')}/spdx/{job.get('userDid', '')}/{job.get('repository', '')}/{digest}"

        def documents() -> dict[str, Any]:  # tens of thousands of findings take seconds: off the loop
            return _result(digest, summary=analysis.counts(), sbom=analysis.spdx(name=name, namespace=namespace),
                           vulnReport=analysis.vuln_report())

        return await asyncio.to_thread(documents)
    except (ScannerError, AnalysisError) as exc:
        log.warning("scanner: %s failed: %s", digest, exc)
        return _result(digest, summary={}, sbom=None, vulnReport=None, error=str(exc)[:500] or type(exc).__name__)
