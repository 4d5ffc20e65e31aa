"""Quota XRPC (ATCR-NOTES §5.2, §5.5), both public like ATCR's:

* ``GET io.atcr.hold.getQuota?userDid=`` -> ``{userDid, uniqueBlobs, totalSize, limit?, tier?}``
  (``limit`` and ``tier`` absent when the user is unlimited: the captain, or quotas are off);
* ``GET io.atcr.hold.listTiers`` -> ``{tiers: [{name, quotaBytes, quotaFormatted, scanOnPush}]}``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get

from hold.ledger import Ledger
from hold.xrpc import lexicon_params

NSID_GET_QUOTA = "io.atcr.hold.getQuota"
NSID_LIST_TIERS = "io.atcr.hold.listTiers"


def quota_routes(ledger: Ledger) -> Router:
    @get(f"/xrpc/{NSID_GET_QUOTA}")
    async def get_quota(request: Request[Any, Any, Any]) -> dict[str, Any]:
        params = lexicon_params(NSID_GET_QUOTA, request)
        return await ledger.quota.quota(params["userDid"])

    @get(f"/xrpc/{NSID_LIST_TIERS}", sync_to_thread=False)
    def list_tiers() -> dict[str, Any]:
        return {"tiers": [t.to_json() for t in ledger.policy.tiers]}

    return Router(path="/", route_handlers=[get_quota, list_tiers], include_in_schema=False)
