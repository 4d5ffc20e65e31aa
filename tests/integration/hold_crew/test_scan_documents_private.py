"""A private hold's scan documents (blobs of its own repo) are read by exactly the DIDs that may
read its layers: the captain and crew with a getBlob service token, the scanners' secret; not
anonymous callers, strangers, or a token minted for another method. This is the rule the AppView
relies on when it asks for a viewer (appview/scans/service.py)."""

from __future__ import annotations

import pytest

from hold.scan.blobs import RepoBlobs
from tests.integration.hold_crew.conftest import ALICE, BOB, OWNER, MakeHold

pytestmark = pytest.mark.integration

STRANGER = "did:plc:strangerstrangerstra0000"
SECRET = "private-scan-docs-secret"
GET_BLOB = "com.atproto.sync.getBlob"
SBOM = b'{"spdxVersion":"SPDX-2.3","packages":[]}'


async def test_only_the_captain_and_crew_read_a_private_holds_scan_documents(make_hold: MakeHold) -> None:
    async with make_hold(hold_public=False, hold_allow_all_crew=False, hold_scanner_secret=SECRET) as h:
        blob = await RepoBlobs(h.hold.settings.data_dir / "repo-blobs").put(SBOM, "application/spdx+json")
        params = {"did": h.did, "cid": blob["ref"]["$link"]}
        added = await h.call("io.atcr.hold.addCrew", {"member": BOB, "role": "read"}, iss=OWNER)
        assert added.status_code == 200, added.text

        async def get(**headers: str) -> tuple[int, str, bytes]:
            r = await h.client.get(f"{h.url}/xrpc/{GET_BLOB}", params=params, headers=headers)
            error = r.json().get("error", "") if r.status_code != 200 else ""
            return r.status_code, error, r.content

        assert (await get())[:2] == (401, "AuthMissing")
        assert (await get(**h.hold.auth(GET_BLOB, iss=STRANGER)))[:2] == (403, "Forbidden")
        assert (await get(**h.hold.auth(GET_BLOB, iss=ALICE)))[:2] == (403, "Forbidden")  # not crew here
        assert (await get(**h.hold.auth("io.atcr.hold.requestScan", iss=OWNER)))[:2] == (401, "BadJwtLexiconMethod")
        for headers in (h.hold.auth(GET_BLOB, iss=OWNER), h.hold.auth(GET_BLOB, iss=BOB), {"X-Scanner-Secret": SECRET}):
            assert await get(**headers) == (200, "", SBOM)
