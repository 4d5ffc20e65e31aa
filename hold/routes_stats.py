"""`notifyManifest` and the stats queries (ATCR-NOTES §4.4, §5.6).

* ``POST io.atcr.hold.notifyManifest``
  ``{repository, userDid, manifestDigest, operation: "push"|"pull", manifest?, tag?, count?}``
  -> ``{success, operation, statsUpdated, layersCreated?}``; errors ``QuotaExceeded`` (403),
  ``UserMismatch`` (403), ``InvalidOperation`` (400).

  *push* needs the pushing user's service token (``lxm`` = notifyManifest), the user must be
  ``userDid`` and may write here. *pull* counts ``count`` (default 1) pulls of ``userDid``'s
  (the owner's) repository. A pull notification is accepted with a service token issued by a
  DID in ``HOLD_TRUSTED_APPVIEWS`` (the AppView signs with its did:web key), and, while
  ``HOLD_TRUST_PULL_NOTIFICATIONS`` is true (the default, for AppViews that send none), also
  without one. Signed notifications from a trusted AppView are preferred: they count for any
  repository. Any other accepted one counts only for an (owner, repository) pair the hold
  already stores (it has stats for it: every push through the hold makes them); for any other
  pair it answers ``statsUpdated: false`` and writes nothing, so made-up names cannot grow the
  hold's repo. The trade-off is documented in docs/hold.md: pull counts of real repositories
  are public statistics and anyone can inflate them while that setting is on. An optional
  ``Idempotency-Key`` header makes a retried notification count once.
* ``GET io.atcr.hold.getStats?ownerDid&repository`` -> the stats record (404 ``StatsNotFound``).
* ``GET io.atcr.hold.listStats?ownerDid&cursor&limit`` -> ``{stats: [...], cursor?}``.

Counts reach the records within ``HOLD_STATS_FLUSH_INTERVAL`` seconds (hold/stats.py).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Router, get, post

from hold.errors import AuthRequired, Forbidden, HoldError, InvalidRequest
from hold.ledger import Ledger
from hold.notify import InvalidOperation, Notifications, UserMismatch
from hold.service import HoldServices
from hold.stats import STATS, StatsUnavailable
from hold.xrpc import bearer_token, json_body, lexicon_input, lexicon_params

log = logging.getLogger("hold.stats")

NSID_NOTIFY = "io.atcr.hold.notifyManifest"
NSID_GET_STATS = "io.atcr.hold.getStats"
NSID_LIST_STATS = "io.atcr.hold.listStats"
MAX_SCAN_PAGES = 10


class StatsNotFound(HoldError):
    error, status, default_message = "StatsNotFound", 404, "no stats for that repository on this hold"


def stats_routes(services: HoldServices, ledger: Ledger) -> Router:
    settings = services.settings
    trusted = frozenset(settings.trusted_appviews)

    def notifications() -> Notifications:
        if ledger.notifications is None:
            raise StatsUnavailable()
        return ledger.notifications

    async def from_trusted_appview(request: Request[Any, Any, Any]) -> bool:
        """May this pull notification be counted at all, and is it signed by a trusted AppView?"""
        token = bearer_token(request)
        if token is None:
            if settings.trust_pull_notifications:
                return False
            raise AuthRequired("pull notifications need a service token from a trusted AppView", error="AuthRequired")
        if settings.trust_pull_notifications:
            # Anyone may send counts without a token, so a token that does not verify (an
            # AppView whose did:web this hold cannot reach, say) must not stop them either.
            try:
                issuer = await services.auth.authenticate(token, lxm=NSID_NOTIFY)
            except HoldError as exc:
                log.debug("pull notification with a refused token (%s): treated as unsigned", exc.error_name)
                return False
            return issuer in trusted
        issuer = await services.auth.authenticate(token, lxm=NSID_NOTIFY)
        if issuer not in trusted:
            raise Forbidden(f"{issuer} is not a trusted AppView (HOLD_TRUSTED_APPVIEWS)")
        return True

    @post(f"/xrpc/{NSID_NOTIFY}", status_code=200)
    async def notify_manifest(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = await json_body(request)
        operation = body.get("operation")
        if operation not in ("push", "pull"):
            raise InvalidOperation(f"operation must be push or pull, not {str(operation)[:20]!r}")
        lexicon_input(NSID_NOTIFY, body)
        owner, repository = body["userDid"], body["repository"]
        if not repository:
            raise InvalidRequest("repository must not be empty")
        if operation == "pull":
            signed = await from_trusted_appview(request)
            key = request.headers.get("idempotency-key")
            if key is not None and not 0 < len(key) <= 200:
                raise InvalidRequest("Idempotency-Key must be 1 to 200 characters")
            counter = notifications()
            if not signed and (ledger.stats is None or not await ledger.stats.known(owner, repository)):
                log.debug("unsigned pull notification for %s/%.100s: not stored here, not counted", owner, repository)
                return {"success": True, "operation": "pull", "statsUpdated": False}
            counted = await counter.pull(owner, repository, int(body.get("count", 1)), key)
            return {"success": True, "operation": "pull", "statsUpdated": counted}
        issuer = await services.auth.authenticate(bearer_token(request), lxm=NSID_NOTIFY)
        if issuer != owner:
            raise UserMismatch(f"the token is {issuer}'s, but userDid is {owner}")
        await services.auth.require_write(issuer)
        result = await notifications().push(
            owner, repository, body["manifestDigest"], body.get("manifest"), manifest_uri=body.get("manifestUri"),
            tag=body.get("tag") if isinstance(body.get("tag"), str) else None,
        )
        if ledger.poster is not None:
            ledger.poster.pushed(owner, repository, body.get("tag"))
        return {"success": True, "operation": "push", "statsUpdated": True, "layersCreated": result.layers_created}

    @get(f"/xrpc/{NSID_GET_STATS}")
    async def get_stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
        params = lexicon_params(NSID_GET_STATS, request)
        if ledger.stats is None:
            raise StatsUnavailable()
        record = await ledger.stats.record(params["ownerDid"], params["repository"])
        if record is None:
            raise StatsNotFound(f"no stats for {params['ownerDid']}/{params['repository'][:256]}")
        return record

    @get(f"/xrpc/{NSID_LIST_STATS}")
    async def list_stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
        params = lexicon_params(NSID_LIST_STATS, request)
        owner: str | None = params.get("ownerDid")
        limit: int = params.get("limit", 50)
        cursor: str | None = params.get("cursor")
        repo = ledger.repo.get()
        found: list[dict[str, Any]] = []
        last: str | None = None
        exhausted = False
        for _ in range(MAX_SCAN_PAGES):
            page = await repo.list_records(STATS, limit=limit, cursor=cursor)
            for i, rec in enumerate(page.records):
                last = rec.rkey
                if owner is None or rec.value.get("ownerDid") == owner:
                    found.append(rec.value)
                if len(found) >= limit:
                    exhausted = i == len(page.records) - 1 and page.cursor is None
                    break
            else:
                if page.cursor is None:
                    exhausted = True
                    break
                cursor = page.cursor
                continue
            break
        out: dict[str, Any] = {"stats": found}
        if not exhausted and last is not None:
            out["cursor"] = last
        return out

    return Router(path="/", route_handlers=[notify_manifest, get_stats, list_stats], include_in_schema=False)
