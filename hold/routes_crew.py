"""Crew XRPC: self-enrolment, captain/admin crew management, tiers (ATCR-NOTES §5.2, §5.3).

* ``POST io.atcr.hold.requestCrew {role?: "member", permissions?}`` (any user's service token)
  -> ``{status: created|already_member, uri, cid, message}``; ``RegistrationDisabled`` (403)
  unless the captain allows all crew; ``AuthRequired`` (401) without a token.
* ``POST io.atcr.hold.addCrew {member, role?, permissions?, tier?}`` (captain or crew admin)
  -> ``{status: created|updated, uri, cid}``.
* ``POST io.atcr.hold.removeCrew {member}`` (captain or crew admin) -> ``{removed}``.
* ``POST io.atcr.hold.updateCrewTier {userDid, tierRank}`` (a trusted AppView's token, or the
  captain's) -> ``{tierName}``.

Each call wants a service token whose ``lxm`` is the method.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, post

from hold.errors import AuthRequired, Forbidden, InvalidRequest
from hold.ledger import Ledger
from hold.service import HoldServices
from hold.xrpc import bearer_token, json_body, lexicon_input

NSID_REQUEST_CREW = "io.atcr.hold.requestCrew"
NSID_ADD_CREW = "io.atcr.hold.addCrew"
NSID_REMOVE_CREW = "io.atcr.hold.removeCrew"
NSID_UPDATE_TIER = "io.atcr.hold.updateCrewTier"


def crew_routes(services: HoldServices, ledger: Ledger) -> Router:
    async def caller(request: Request[Any, Any, Any], nsid: str) -> str:
        token = bearer_token(request)
        if token is None:
            # The lexicon names this error AuthRequired (the upload methods say AuthMissing).
            raise AuthRequired("a service token is required (Authorization: Bearer <jwt>)", error="AuthRequired")
        return await services.auth.authenticate(token, lxm=nsid)

    def check_tier(tier: str | None) -> None:
        if tier is not None and ledger.policy.enabled and all(t.name != tier for t in ledger.policy.tiers):
            raise InvalidRequest(f"unknown tier {tier!r}: this hold has {[t.name for t in ledger.policy.tiers]}")

    @post(f"/xrpc/{NSID_REQUEST_CREW}", status_code=200)
    async def request_crew(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await caller(request, NSID_REQUEST_CREW)
        body = lexicon_input(NSID_REQUEST_CREW, await json_body(request) if await _has_body(request) else {})
        role = body.get("role")
        if role not in (None, "member"):
            raise InvalidRequest("requestCrew only grants the role 'member'")
        result = await ledger.crew.request(did, body.get("permissions"))
        message = (
            "welcome aboard: you may push to this hold"
            if result.status == "created"
            else "you are already crew on this hold"
        )
        return {"status": result.status, "uri": result.uri, "cid": result.cid, "message": message}

    @post(f"/xrpc/{NSID_ADD_CREW}", status_code=200)
    async def add_crew(request: Request[Any, Any, Any]) -> dict[str, Any]:
        actor = await caller(request, NSID_ADD_CREW)
        body = lexicon_input(NSID_ADD_CREW, await json_body(request))
        check_tier(body.get("tier"))
        result = await ledger.crew.add(
            actor, body["member"], role=body.get("role"), permissions=body.get("permissions"), tier=body.get("tier")
        )
        return {"status": result.status, "uri": result.uri, "cid": result.cid}

    @post(f"/xrpc/{NSID_REMOVE_CREW}", status_code=200)
    async def remove_crew(request: Request[Any, Any, Any]) -> dict[str, Any]:
        actor = await caller(request, NSID_REMOVE_CREW)
        body = lexicon_input(NSID_REMOVE_CREW, await json_body(request))
        return {"removed": await ledger.crew.remove(actor, body["member"])}

    @post(f"/xrpc/{NSID_UPDATE_TIER}", status_code=200)
    async def update_crew_tier(request: Request[Any, Any, Any]) -> dict[str, Any]:
        actor = await caller(request, NSID_UPDATE_TIER)
        if actor not in services.settings.trusted_appviews and not await services.auth.is_owner(actor):
            raise Forbidden(f"{actor} is not a trusted AppView (HOLD_TRUSTED_APPVIEWS) or the captain")
        body = lexicon_input(NSID_UPDATE_TIER, await json_body(request))
        tier = ledger.policy.by_rank(body["tierRank"])
        if tier is None:
            raise InvalidRequest(f"tierRank must be between 0 and {len(ledger.policy.tiers) - 1}")
        await ledger.crew.set_tier(body["userDid"], tier.name)
        return {"tierName": tier.name}

    return Router(
        path="/",
        route_handlers=[request_crew, add_crew, remove_crew, update_crew_tier],
        include_in_schema=False,
    )


async def _has_body(request: Request[Any, Any, Any]) -> bool:
    """requestCrew's input is optional: ATCR's AppView may POST nothing at all."""
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return request.headers.get("transfer-encoding") is not None
