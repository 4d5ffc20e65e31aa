"""The consumer's status application (`/livez`, `/readyz`, `/status`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, get

from atcr.runtime import Runtime
from atcr.server import health_routes
from jetstream.settings import JetstreamSettings


def create_app(settings: JetstreamSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)

    @get("/status", sync_to_thread=False)
    def status() -> dict[str, Any]:
        return {"jetstream_urls": list(settings.jetstream_urls), "relay": settings.relay_endpoint}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if runtime is None:
                await rt.aclose()

    app = Litestar(
        route_handlers=[*health_routes({"valkey": rt.valkey_ready}), status], lifespan=[lifespan], debug=False
    )
    app.state.settings = settings
    app.state.runtime = rt
    return app
