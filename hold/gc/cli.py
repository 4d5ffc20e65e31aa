"""`atcr hold gc [--grace SECONDS] [--dry-run]`: one garbage-collection run with the hold's settings.

A running hold (its `HOLD_HTTP_ADDR` answers) is asked to run it, through a URL signed with its
own URL-signing secret (the repo has one writer: the hold process). When no hold is running,
the run happens in this process, with the hold's storage, repo and Valkey.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import httpx

from atcr.settings import check_addr
from hold.settings import HoldSettings

CLI_TIMEOUT = 6 * 3600.0


def format_report(report: dict[str, Any], out: TextIO) -> None:
    if report.get("skipped"):
        print(f"gc: not run: {report['skipped']}", file=out)
        return
    dry = bool(report.get("dry_run"))
    for item in report.get("deleted") or []:
        print(f"{'would delete' if dry else 'deleted'} {item['digest']} {item['size']}", file=out)
    verb = "would be reclaimed" if dry else "reclaimed"
    print(
        f"gc{' (dry run)' if dry else ''}: {report['blobs_deleted']} blob(s), {report['bytes_reclaimed']} bytes "
        f"{verb}; {report['blobs_seen']} blob(s) seen ({report['bytes_seen']} bytes); kept: "
        f"{report['kept_referenced']} referenced, {report['kept_in_flight']} in flight, "
        f"{report['kept_grace']} within the grace, {report['kept_unreachable']} of unreachable PDSes, "
        f"{report['kept_raced']} used by a push meanwhile; {report['records_removed']} stale layer record(s) "
        f"{'to remove' if dry else 'removed'}; {report['users_checked']} user(s) asked, "
        f"{report['pds_calls']} PDS call(s); {report['duration']:.2f} s",
        file=out,
    )
    for did in report.get("users_unreachable") or []:
        print(f"gc: {did}'s PDS could not be asked: nothing of theirs was deleted", file=out)


async def _ask_running(settings: HoldSettings, dry_run: bool, grace: int | None) -> dict[str, Any] | None:
    from atcr.keys import load_or_create_secret
    from hold.gc.service import run_path
    from hold.signed_urls import UrlSigner

    host, port = check_addr("HOLD_HTTP_ADDR", settings.http_addr)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a wildcard listener is reached on loopback)
        host = "127.0.0.1"
    base = f"http://{host}:{port}"
    signer = UrlSigner(load_or_create_secret(settings.url_secret_path), base)
    url = signer.sign("POST", run_path(dry_run, grace), expires_in=60)
    async with httpx.AsyncClient(timeout=CLI_TIMEOUT) as client:
        try:
            resp = await client.post(url)
        except httpx.ConnectError:
            return None
    if resp.status_code != 200:
        raise RuntimeError(f"the running hold refused the run: {resp.status_code} {resp.text[:300]}")
    out: dict[str, Any] = resp.json()
    return out


async def _run_here(settings: HoldSettings, dry_run: bool, grace: int | None) -> dict[str, Any]:
    from atcr.runtime import Runtime
    from hold.gc.service import GcService
    from hold.ledger import Ledger
    from hold.repo.service import RepoService
    from hold.repo.signing import EcKeySigner
    from hold.service import HoldServices

    runtime = Runtime.from_settings(settings)
    try:
        services = HoldServices.build(settings, runtime)
        repo = RepoService(settings, services.identity.did, EcKeySigner(services.identity.key))
        ledger = Ledger.build(settings, services, repo)
        gc = GcService.build(services, ledger, runtime)
        try:
            async with repo.lifespan():
                report = await gc.run(dry_run=dry_run, grace=grace)
        finally:
            await services.store.aclose()
        return report.to_json(digests=None)
    finally:
        await runtime.aclose()


async def run_gc(settings: HoldSettings, *, dry_run: bool, grace: int | None, out: TextIO = sys.stdout) -> int:
    report = await _ask_running(settings, dry_run, grace)
    if report is None:
        report = await _run_here(settings, dry_run, grace)
    format_report(report, out)
    return 0


def main(settings: HoldSettings, *, dry_run: bool, grace: int | None) -> None:
    raise SystemExit(asyncio.run(run_gc(settings, dry_run=dry_run, grace=grace)))
