"""The hold's ASGI application: wiring only; routes live in their own modules."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from atcr.runtime import Runtime
from atcr.server import health_routes
from hold.settings import HoldSettings


def create_app(settings: HoldSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)

    async def storage_ready() -> None:
        if settings.storage_driver == "filesystem":
            root = settings.storage_root_dir

            def probe() -> None:
                root.mkdir(parents=True, exist_ok=True)
                fd, path = tempfile.mkstemp(dir=root, prefix=".ready-")
                os.close(fd)
                os.unlink(path)

            await asyncio.to_thread(probe)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if runtime is None:
                await rt.aclose()

    checks = {"storage": storage_ready}
    if rt.valkey is not None:
        checks["valkey"] = rt.valkey_ready
    app = Litestar(route_handlers=[*health_routes(checks)], lifespan=[lifespan], debug=False)
    app.state.settings = settings
    app.state.runtime = rt
    return app
