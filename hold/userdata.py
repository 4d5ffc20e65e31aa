"""GDPR export and delete of what this hold keeps about one user (ATCR-NOTES §5.2).

* ``GET io.atcr.hold.exportUserData`` (the user's service token, ``lxm`` = the method) ->
  ``{exportedAt, holdDid, userDid, isCaptain, crewRecord?, layerRecords[], statsRecords[],
  blueskyPosts[{uri, text, createdAt}], scanRecords[]}`` (``scanRecords`` is ours, not ATCR's).
* ``POST io.atcr.hold.deleteUserData`` (same) -> ``{success, crewDeleted, layersDeleted,
  statsDeleted, scansDeleted, postsDeleted}`` (the last two are ours): the user's crew, layer,
  stats and scan records and the hold's posts about their pushes go from the hold's repo, and
  the user's quota usage from Valkey. Blob bytes are **not** deleted here (ATCR's behaviour:
  other users' layer records may name the same digests); blobs no record names any more are
  reclaimed by the hold's garbage collection. The captain cannot delete their crew record (the
  hold would lose its owner's entry), only the rest.

Both read the whole of the layer and stats collections page by page: a hold's repo is small
next to its blobs, and these calls are rare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Router, get, post

from hold.ledger import Ledger
from hold.quota import LAYER
from hold.repo.bootstrap import CREW
from hold.repo.repo import Delete, RecordEntry
from hold.service import HoldServices
from hold.stats import STATS
from hold.xrpc import bearer_token

log = logging.getLogger("hold.userdata")

NSID_EXPORT = "io.atcr.hold.exportUserData"
NSID_DELETE = "io.atcr.hold.deleteUserData"
POST_COLLECTION = "app.bsky.feed.post"
SCAN = "io.atcr.hold.scan"
PAGE = 500
WRITES_PER_COMMIT = 200


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


async def _all(ledger: Ledger, collection: str) -> AsyncIterator[RecordEntry]:
    repo = ledger.repo.get()
    cursor: str | None = None
    while True:
        page = await repo.list_records(collection, limit=PAGE, cursor=cursor)
        for rec in page.records:
            yield rec
        if page.cursor is None:
            return
        cursor = page.cursor


def post_mentions(value: dict[str, Any], did: str) -> bool:
    """Is this post about `did`: a mention facet of it (how push posts name the pusher), or, for a
    pusher whose handle did not resolve, the DID in the text?"""
    if did in str(value.get("text", "")):
        return True
    for facet in value.get("facets") or []:
        for feature in facet.get("features") or [] if isinstance(facet, dict) else []:
            if isinstance(feature, dict) and feature.get("did") == did:
                return True
    return False


class UserData:
    def __init__(self, services: HoldServices, ledger: Ledger) -> None:
        self.services = services
        self.ledger = ledger

    async def _layers(self, did: str) -> list[RecordEntry]:
        return [r async for r in _all(self.ledger, LAYER) if r.value.get("userDid") == did]

    async def _stats(self, did: str) -> list[RecordEntry]:
        return [r async for r in _all(self.ledger, STATS) if r.value.get("ownerDid") == did]

    async def _scans(self, did: str) -> list[RecordEntry]:
        return [r async for r in _all(self.ledger, SCAN) if r.value.get("userDid") == did]

    async def posts(self, did: str) -> list[dict[str, Any]]:
        return [
            {"uri": f"at://{self.services.identity.did}/{POST_COLLECTION}/{r.rkey}", "text": r.value.get("text", ""),
             "createdAt": r.value.get("createdAt", "")}
            async for r in _all(self.ledger, POST_COLLECTION) if post_mentions(r.value, did)
        ]

    async def export(self, did: str) -> dict[str, Any]:
        crew = await self.ledger.directory.entries(did)
        out: dict[str, Any] = {
            "exportedAt": _now(),
            "holdDid": self.services.identity.did,
            "userDid": did,
            "isCaptain": await self.services.auth.is_owner(did),
            "layerRecords": [r.value for r in await self._layers(did)],
            "statsRecords": [r.value for r in await self._stats(did)],
            "blueskyPosts": await self.posts(did),
            # Not in ATCR's output (its clients ignore unknown fields): the scans of the user's manifests.
            "scanRecords": [r.value for r in await self._scans(did)],
        }
        if crew:
            value = crew[0].value
            summary = {"role": str(value.get("role", "")), "permissions": list(value.get("permissions") or []),
                       "addedAt": str(value.get("addedAt", ""))}
            if value.get("tier"):
                summary["tier"] = str(value["tier"])
            out["crewRecord"] = summary
        return out

    async def delete(self, did: str) -> dict[str, Any]:
        is_captain = await self.services.auth.is_owner(did)
        crew = [] if is_captain else await self.ledger.directory.entries(did)
        layers = await self._layers(did)
        stats = await self._stats(did)
        scans = await self._scans(did)
        posts = [r async for r in _all(self.ledger, POST_COLLECTION) if post_mentions(r.value, did)]
        writes = [Delete(CREW, e.rkey) for e in crew] + [Delete(LAYER, r.rkey) for r in layers] + [
            Delete(STATS, r.rkey) for r in stats
        ] + [Delete(SCAN, r.rkey) for r in scans] + [Delete(POST_COLLECTION, r.rkey) for r in posts]
        repo = self.ledger.repo.get()
        for i in range(0, len(writes), WRITES_PER_COMMIT):
            await repo.apply_writes(writes[i:i + WRITES_PER_COMMIT])
        if crew:
            self.ledger.directory.applied(did, None)
        index = self.ledger.quota.index
        if index is not None:
            blobs, total, pending, recorded = index.keys(did)
            await self.services.valkey.delete(blobs, total, pending, recorded)
        log.info("deleteUserData for %s: %d crew, %d layer and %d stats record(s) deleted", did, len(crew),
                 len(layers), len(stats))
        return {"success": True, "crewDeleted": bool(crew), "layersDeleted": len(layers),
                "statsDeleted": len(stats), "scansDeleted": len(scans), "postsDeleted": len(posts)}


def userdata_routes(services: HoldServices, ledger: Ledger) -> Router:
    data = UserData(services, ledger)

    @get(f"/xrpc/{NSID_EXPORT}")
    async def export_user_data(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await services.auth.authenticate(bearer_token(request), lxm=NSID_EXPORT)
        return await data.export(did)

    @post(f"/xrpc/{NSID_DELETE}", status_code=200)
    async def delete_user_data(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await services.auth.authenticate(bearer_token(request), lxm=NSID_DELETE)
        return await data.delete(did)

    return Router(path="/", route_handlers=[export_user_data, delete_user_data], include_in_schema=False)


__all__ = ["NSID_DELETE", "NSID_EXPORT", "UserData", "post_mentions", "userdata_routes"]
