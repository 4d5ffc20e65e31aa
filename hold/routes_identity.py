"""The hold's did:web document and handle endpoint (ATCR-NOTES.md §5.2)."""

from __future__ import annotations

from typing import Any

from litestar import Response, Router, get

from hold.identity import HoldIdentity


def identity_routes(identity: HoldIdentity) -> Router:
    document = identity.did_document()

    @get("/.well-known/did.json", sync_to_thread=False)
    def did_json() -> Response[dict[str, Any]]:
        return Response(document, media_type="application/did+json", headers={"Cache-Control": "max-age=300"})

    @get("/.well-known/atproto-did", sync_to_thread=False)
    def atproto_did() -> Response[str]:
        return Response(identity.did, media_type="text/plain")

    return Router(path="/", route_handlers=[did_json, atproto_did], include_in_schema=False)
