"""The AppView's ASGI application: wiring only; routes live in their own modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from appview.settings import AppViewSettings
from atcr.runtime import Runtime
from atcr.server import health_routes


def create_app(settings: AppViewSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if runtime is None:
                await rt.aclose()

    app = Litestar(
        route_handlers=[*health_routes({"valkey": rt.valkey_ready})],
        lifespan=[lifespan],
        debug=False,
    )
    app.state.settings = settings
    app.state.runtime = rt
    return app
