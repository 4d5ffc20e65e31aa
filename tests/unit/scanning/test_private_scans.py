"""Scan documents of a private hold: who the AppView shows them to, and what it caches.

The hold is an httpx MockTransport that behaves like hold/routes_blob.py on a private hold
(401 without a token, 403 to a DID that is not crew, the bytes to crew); service tokens are
stand-ins that name the user they were "minted" for. Valkey is fakeredis.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import fakeredis
import httpx
import pytest

from appview.holds.client import HoldError, HoldUnavailable
from appview.scans.service import REPORT_TYPE, SBOM_TYPE, ScanResults
from appview.web.scanview import badges, sbom_document, scan_view
from atcr.http import SafeHttpClient, SsrfPolicy
from hold.scan.blobs import cid_of

pytestmark = pytest.mark.unit

HOLD = "did:web:hold.test"
OWNER = "did:plc:owner"
CREW = "did:plc:crewmate"
STRANGER = "did:plc:stranger"
NO_SESSION = "did:plc:nosession"
PDS_DOWN = "did:plc:pdsdown"
SUBJECT = "sha256:" + "a" * 64
SBOM = json.dumps({"spdxVersion": "SPDX-2.3", "packages": [{"SPDXID": "p1", "name": "lodash", "versionInfo": "1"}]})
REPORT = json.dumps({"vulnerabilities": [{"id": "CVE-1", "severity": "High",
                                          "package": {"name": "lodash", "version": "1"}}]})


class FakeHold:
    def __init__(self, *, public: bool) -> None:
        self.public = public
        self.failing = False
        self.blobs = {cid_of(SBOM.encode()): SBOM.encode(), cid_of(REPORT.encode()): REPORT.encode()}
        self.calls: Counter[str] = Counter()
        self.record = {
            "$type": "io.atcr.hold.scan", "userDid": OWNER, "repository": "app", "manifest": SUBJECT,
            "critical": 0, "high": 1, "medium": 0, "low": 0, "total": 1, "scannedAt": "2026-12-06T00:00:00Z",
            "sbomBlob": {"$type": "blob", "ref": {"$link": cid_of(SBOM.encode())}, "mimeType": SBOM_TYPE,
                         "size": len(SBOM)},
            "vulnReportBlob": {"$type": "blob", "ref": {"$link": cid_of(REPORT.encode())}, "mimeType": REPORT_TYPE,
                               "size": len(REPORT)},
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("com.atproto.repo.getRecord"):  # repo records are public, as on any PDS
            return httpx.Response(200, json={"uri": "at://x", "cid": "c", "value": self.record})
        if path.endswith("io.atcr.hold.getScanStatus"):
            return httpx.Response(200, json={"digest": SUBJECT, "state": "done"})
        assert path.endswith("com.atproto.sync.getBlob")
        who = request.headers.get("authorization", "").removeprefix("Bearer ") or "-"
        self.calls[who] += 1
        if self.failing:
            return httpx.Response(502, json={"error": "Upstream"})
        if not self.public and who == "-":
            return httpx.Response(401, json={"error": "AuthMissing"})
        if not self.public and who not in (OWNER, CREW):
            return httpx.Response(403, json={"error": "Forbidden"})
        data = self.blobs.get(str(request.url.params["cid"]))
        return httpx.Response(200, content=data) if data else httpx.Response(404, json={"error": "BlobNotFound"})


async def mint(user: str, hold: str, lxm: str) -> dict[str, str]:
    assert hold == HOLD and lxm == "com.atproto.sync.getBlob"
    if user == NO_SESSION:
        raise HoldError(401, "SessionMissing", "no session with your PDS")
    if user == PDS_DOWN:
        raise HoldUnavailable(503, "PdsUnavailable", "your PDS is unreachable")
    return {"Authorization": f"Bearer {user}"}


def results(hold: FakeHold) -> tuple[ScanResults, Any]:
    valkey = fakeredis.FakeAsyncRedis()
    http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), transport=httpx.MockTransport(hold.handle))

    async def endpoint(did: str) -> str:
        return "http://127.0.0.1:1"

    return ScanResults(valkey, http, endpoint, mint), valkey


def subject() -> dict[str, Any]:
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": SUBJECT, "size": 10}


async def test_crew_get_the_documents_of_a_private_hold_and_nobody_else_does() -> None:
    hold = FakeHold(public=False)
    scans, _ = results(hold)
    listed = await scans.referrers(OWNER, "app", HOLD, subject(), None, OWNER)
    assert {d["artifactType"] for d in listed} == {SBOM_TYPE, REPORT_TYPE}
    sbom = next(d for d in listed if d["artifactType"] == SBOM_TYPE)
    raw = await scans.manifest(OWNER, sbom["digest"], OWNER)
    assert raw is not None and hashlib.sha256(raw).hexdigest() == sbom["digest"][7:]
    layer = json.loads(raw)["layers"][0]["digest"]
    assert await scans.blob(OWNER, layer, OWNER) == SBOM.encode()
    assert await scans.blob(OWNER, layer, CREW) == SBOM.encode()  # other crew of the hold too

    # After the owner's authorized reads (cached as theirs), others still get nothing.
    for viewer in (STRANGER, None, NO_SESSION):
        assert await scans.referrers(OWNER, "app", HOLD, subject(), None, viewer) == []
        assert await scans.manifest(OWNER, sbom["digest"], viewer) is None
        assert await scans.blob(OWNER, layer, viewer) is None
    assert hold.calls[STRANGER] >= 1  # the stranger's own token was asked, and refused


async def test_a_public_hold_answers_anyone_and_that_answer_is_shared() -> None:
    hold = FakeHold(public=True)
    scans, _ = results(hold)
    assert len(await scans.referrers(OWNER, "app", HOLD, subject(), None, None)) == 2
    before = sum(hold.calls.values())
    assert len(await scans.referrers(OWNER, "app", HOLD, subject(), None, STRANGER)) == 2
    assert sum(hold.calls.values()) == before  # "public" is cached for every viewer
    assert set(hold.calls) == {"-"}  # nobody's token is minted for a public hold


async def test_access_verdicts_are_cached_per_viewer_and_a_failing_hold_caches_nothing() -> None:
    hold = FakeHold(public=False)
    scans, valkey = results(hold)
    assert await scans.access(OWNER, HOLD, hold.record, STRANGER) == "private"
    asked = hold.calls[STRANGER]
    assert await scans.access(OWNER, HOLD, hold.record, STRANGER) == "private"
    assert hold.calls[STRANGER] == asked
    assert await scans.access(OWNER, HOLD, hold.record, OWNER) == "granted"
    assert await scans.access(OWNER, HOLD, hold.record, NO_SESSION) == "private"
    assert await scans.access(OWNER, HOLD, hold.record, PDS_DOWN) is None  # unknown, and not cached
    assert [k async for k in valkey.scan_iter(match=f"*{PDS_DOWN}*")] == []

    hold.failing = True
    other, valkey2 = results(hold)
    assert await other.access(OWNER, HOLD, hold.record, OWNER) is None
    assert [k async for k in valkey2.scan_iter(match="*:a:*")] == []


async def test_pages_say_private_to_strangers_and_show_findings_to_crew() -> None:
    hold = FakeHold(public=False)
    scans, _ = results(hold)
    crew = await scan_view(scans, OWNER, "app", SUBJECT, HOLD, viewer=OWNER)
    assert crew is not None and crew.badge.state == "done" and [f.id for f in crew.findings] == ["CVE-1"]
    assert crew.has_sbom and [p.name for p in crew.packages] == ["lodash"]
    for viewer in (None, STRANGER):
        view = await scan_view(scans, OWNER, "app", SUBJECT, HOLD, viewer=viewer)
        assert view is not None and view.badge.state == "private" and not view.findings and not view.has_sbom
        assert (await badges(scans, OWNER, "app", [(SUBJECT, HOLD)], viewer))[SUBJECT].state == "private"
        assert await sbom_document(scans, OWNER, "app", SUBJECT, HOLD, viewer) is None
    assert (await badges(scans, OWNER, "app", [(SUBJECT, HOLD)], CREW))[SUBJECT].high == 1
    assert (await sbom_document(scans, OWNER, "app", SUBJECT, HOLD, CREW))["spdxVersion"] == "SPDX-2.3"
