"""The hold's did:web document and handle endpoint (ATCR-NOTES.md §5.2)."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlsplit

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

    page = _ABOUT.format(did=html.escape(identity.did), host=html.escape(urlsplit(identity.public_url).netloc))

    @get("/", sync_to_thread=False)
    def about() -> Response[str]:
        """What this server is, for a person who follows a registry page's link to its hold."""
        return Response(page, media_type="text/html", headers=_PAGE_HEADERS)

    return Router(path="/", route_handlers=[did_json, atproto_did, about], include_in_schema=False)


_PAGE_HEADERS = {
    "Cache-Control": "max-age=300",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

_ABOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{host} · ATCR hold</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
code{{overflow-wrap:anywhere}}</style></head>
<body><h1>{host}</h1>
<p>This is an <strong>ATCR hold</strong>: a server that stores the layers of container images
pushed through ATCR registries. Manifests and tags live in their owners' own ATProto accounts;
registries send pulls here for the layer bytes.</p>
<p>Identity: <code id="hold-did">{did}</code> (<a href="/.well-known/did.json">DID document</a>)</p>
</body></html>
"""
