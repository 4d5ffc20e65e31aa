"""The hold's scan-job protocol (hold/scan/) against a scanner the test plays itself, speaking
ATCR's messages: jobs on push for a scanOnPush tier, the secret, results becoming
`io.atcr.hold.scan` records with their blobs, a scanner lost mid-job, two scanners, rescans."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from hold.scan.blobs import cid_to_digest
from tests.integration.hold_crew.conftest import ALICE, BOB, CrewHold, MakeHold, digest_of

pytestmark = pytest.mark.integration

SECRET = "scanner-secret-for-tests"
TIERS = "tiers:\n  deckhand: {quota: 1GB}\n  scanned: {quota: 1GB, scan_on_push: true}\ndefaults:\n  new_crew_tier: scanned\n"
ATCR_RESULT = {
    "type": "scan_result",
    "summary": {"critical": 1, "high": 2, "medium": 0, "low": 3, "total": 6},
    "sbom": {"spdxVersion": "SPDX-2.3", "name": "img", "packages": []},
    "vulnReport": {"matches": [{"vulnerability": {"id": "CVE-2024-0001", "severity": "Critical"}}]},
    "scannerVersion": "atcr-scanner/grype-0.74",
    "error": "",
}


def ws_url(h: CrewHold, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return h.url.replace("http://", "ws://") + "/xrpc/io.atcr.hold.subscribeScanJobs" + (f"?{query}" if query else "")


def scanner(h: CrewHold, secret: str = SECRET, **params: str) -> Any:
    return connect(ws_url(h, **params), additional_headers={"X-Scanner-Secret": secret}, open_timeout=10)


async def next_job(ws: ClientConnection, timeout: float = 20) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] == "scan_job":
            return dict(msg)


async def status(h: CrewHold, digest: str) -> dict[str, Any]:
    r = await h.query("io.atcr.hold.getScanStatus", digest=digest)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def until_state(h: CrewHold, digest: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await status(h, digest)
        if got["state"] == state:
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)


async def push(h: CrewHold, repository: str, *, iss: str = ALICE) -> tuple[str, bytes]:
    layer = os.urandom(64)
    assert (await h.push_blob(layer, iss=iss)).status_code == 200
    manifest = json.dumps({"layers": [digest_of(layer)], "repo": repository}).encode()
    r = await h.notify_push(repository, [layer], iss=iss, manifest=manifest)
    assert r.status_code == 200, r.text
    return digest_of(manifest), layer


@pytest.fixture
def scan_env(quotas_file: Callable[[str], Path]) -> dict[str, Any]:
    return {
        "hold_allow_all_crew": True,
        "hold_public": False,
        "hold_quotas_path": quotas_file(TIERS),
        "hold_scanner_secret": SECRET,
    }


async def test_a_push_is_scanned_by_an_atcr_shaped_scanner(make_hold: MakeHold, scan_env: dict[str, Any]) -> None:
    async with make_hold(**scan_env) as h:
        digest, layer = await push(h, "tools/app")
        assert (await status(h, digest))["state"] == "queued"

        for bad in ("", "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                async with scanner(h, secret=bad):
                    pass
            assert refused.value.response.status_code == 403

        async with scanner(h, cursor="-1") as ws:
            job = await next_job(ws)
            assert job == {
                "type": "scan_job", "seq": job["seq"], "digest": digest, "repository": "tools/app",
                "userDid": ALICE, "holdDid": h.did, "holdEndpoint": h.hold.settings.public_url, "tag": "latest",
                "layers": [{"digest": digest_of(layer), "size": 64,
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}],
            }
            assert (await status(h, digest))["state"] == "scanning"
            # The private hold lets the scanner (and only it) read the layer.
            params = {"did": h.did, "cid": digest_of(layer)}
            anonymous = await h.client.get(f"{h.url}/xrpc/com.atproto.sync.getBlob", params=params)
            assert anonymous.status_code == 401
            r = await h.client.get(
                f"{h.url}/xrpc/com.atproto.sync.getBlob", params=params, headers={"X-Scanner-Secret": SECRET}
            )
            assert r.status_code == 200 and "url" in r.json()

            # A result for a job this connection does not hold is refused, the job unaffected.
            await ws.send(json.dumps({**ATCR_RESULT, "digest": digest_of(b"other")}))
            assert json.loads(await ws.recv())["error"] == "UnknownJob"
            await ws.send(json.dumps({**ATCR_RESULT, "digest": digest}))
            done = await until_state(h, digest, "done")

        scan = done["scan"]
        assert scan == {
            "$type": "io.atcr.hold.scan", "manifest": f"at://{ALICE}/io.atcr.manifest/{digest[7:]}",
            "repository": "tools/app", "userDid": ALICE, "critical": 1, "high": 2, "medium": 0, "low": 3,
            "total": 6, "scannerVersion": "atcr-scanner/grype-0.74", "scannedAt": scan["scannedAt"],
            "sbomBlob": scan["sbomBlob"], "vulnReportBlob": scan["vulnReportBlob"],
        }
        record = await h.record("io.atcr.hold.scan", digest[7:])
        assert record.status_code == 200 and record.json()["value"] == scan
        for field, mime, doc in (
            ("sbomBlob", "application/spdx+json", ATCR_RESULT["sbom"]),
            ("vulnReportBlob", "application/vnd.atcr.vulnerabilities+json", ATCR_RESULT["vulnReport"]),
        ):
            blob = scan[field]
            assert blob["mimeType"] == mime
            cid = blob["ref"]["$link"]
            r = await h.client.get(f"{h.url}/xrpc/com.atproto.sync.getBlob", params={"did": h.did, "cid": cid},
                                   headers={"X-Scanner-Secret": SECRET})
            assert r.status_code == 200 and r.headers["content-type"].startswith(mime)
            assert json.loads(r.content) == doc and digest_of(r.content) == cid_to_digest(cid)
            assert blob["size"] == len(r.content)

        # The owner asks for a rescan; someone else cannot.
        bob = await h.call("io.atcr.hold.requestScan", {"digest": digest}, iss=BOB)
        assert bob.status_code == 404 and bob.json()["error"] == "ScanNotFound"
        again = await h.call("io.atcr.hold.requestScan", {"digest": digest}, iss=ALICE)
        assert again.status_code == 200 and again.json()["state"] == "queued"
        async with scanner(h) as ws:
            assert (await next_job(ws))["digest"] == digest
            await ws.send(json.dumps({**ATCR_RESULT, "digest": digest, "error": "could not unpack layer 1"}))
            failed = await until_state(h, digest, "failed")
        assert failed["error"] == "could not unpack layer 1" and failed["scan"]["total"] == 6

        refused = await h.query("io.atcr.hold.getScanStatus", digest="sha256:nothex")
        assert refused.status_code == 400 and refused.json()["error"] == "InvalidDigest"
        unknown = await status(h, digest_of(b"never pushed"))
        assert unknown == {"digest": digest_of(b"never pushed"), "state": "none"}


async def test_a_lost_scanner_gives_its_job_to_the_next_and_each_job_is_done_once(
    make_hold: MakeHold, scan_env: dict[str, Any]
) -> None:
    async with make_hold(**scan_env) as h:
        first, _ = await push(h, "a")
        async with scanner(h) as lost:
            assert (await next_job(lost))["digest"] == first
        # Its connection is gone: the job is queued again and the next scanner gets it.
        await until_state(h, first, "queued")
        second, _ = await push(h, "b")
        async with scanner(h) as one, scanner(h) as two:
            jobs = [await next_job(one), await next_job(two)]
            assert sorted(j["digest"] for j in jobs) == sorted([first, second])
            for ws, job in ((one, jobs[0]), (two, jobs[1])):
                await ws.send(json.dumps({**ATCR_RESULT, "digest": job["digest"]}))
            for digest in (first, second):
                await until_state(h, digest, "done")
            # Nothing more to do: neither gets a job within a few polls.
            for ws in (one, two):
                with pytest.raises(TimeoutError):
                    await next_job(ws, timeout=1.0)
        assert len(await h.records("io.atcr.hold.scan")) == 2


async def test_a_new_database_version_queues_scanned_manifests_again(
    make_hold: MakeHold, scan_env: dict[str, Any]
) -> None:
    async with make_hold(**scan_env) as h:
        digest, _ = await push(h, "a")
        async with scanner(h) as ws:
            await ws.send(json.dumps({"type": "hello", "scannerVersion": "x", "dbVersion": "db-1"}))
            job = await next_job(ws)
            await ws.send(json.dumps({**ATCR_RESULT, "digest": job["digest"]}))
            await until_state(h, digest, "done")
            await ws.send(json.dumps({"type": "hello", "scannerVersion": "x", "dbVersion": "db-2"}))
            assert (await next_job(ws))["digest"] == digest
            await ws.send(json.dumps({**ATCR_RESULT, "digest": digest}))
            await until_state(h, digest, "done")
            await ws.send(json.dumps({"type": "hello", "scannerVersion": "x", "dbVersion": "db-2"}))
            with pytest.raises(TimeoutError):
                await next_job(ws, timeout=1.0)


async def test_scanning_is_off_without_a_secret(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_scan_all_pushes=True) as h:
        digest, _ = await push(h, "a")
        r = await h.query("io.atcr.hold.getScanStatus", digest=digest)
        assert r.status_code == 503 and r.json()["error"] == "ScanningDisabled"
        with pytest.raises(InvalidStatus):
            async with scanner(h):
                pass


async def test_malformed_messages_and_results_are_refused_by_name(make_hold: MakeHold, scan_env: dict[str, Any]) -> None:
    async with make_hold(**scan_env) as h:
        digest, _ = await push(h, "a")
        async with scanner(h) as ws:
            job = await next_job(ws)
            await ws.send("not json")
            assert json.loads(await ws.recv())["error"] == "InvalidRequest"
            await ws.send(json.dumps({"type": "gossip"}))
            assert json.loads(await ws.recv())["error"] == "InvalidRequest"
            bad = {**ATCR_RESULT, "digest": job["digest"], "summary": {"critical": -1, "total": 0}}
            await ws.send(json.dumps(bad))
            refused = json.loads(await ws.recv())
            assert refused["error"] == "InvalidScanResult" and "summary.critical" in refused["message"]
            failed = await until_state(h, digest, "failed")
        assert failed["error"].startswith("InvalidScanResult") and "scan" not in failed
        assert await h.records("io.atcr.hold.scan") == []
        assert not (h.hold.settings.data_dir / "repo-blobs").exists()  # nothing half-written


def test_hold_scan_settings_are_checked(tmp_path: Path) -> None:
    from atcr.errors import ConfigError
    from atcr.settings import load
    from hold.settings import HoldSettings

    for env in ({"HOLD_SCAN_LEASE": "0"}, {"HOLD_SCAN_MAX_ATTEMPTS": "0"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load(HoldSettings, {"HOLD_DATA_DIR": str(tmp_path), **env})
