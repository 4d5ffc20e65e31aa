"""`serve_all` stops its apps one after another in the order given: the first one's shutdown can
still reach the next one (the AppView's last pull counts reach the hold in `atcr dev`)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from litestar import Litestar, get

from atcr.server import ServedApp, serve_all
from tests.support.services import free_port

pytestmark = pytest.mark.integration


async def test_apps_stop_in_order_and_the_first_still_reaches_the_second() -> None:
    events: list[str] = []
    hold_port, app_port = free_port(), free_port()

    @get("/count", sync_to_thread=False)
    def count() -> str:
        events.append("hold counted")
        return "ok"

    @asynccontextmanager
    async def appview_life(app: Litestar) -> AsyncIterator[None]:
        yield
        async with httpx.AsyncClient(trust_env=False) as client:  # what PullCounter.stop does
            r = await client.get(f"http://127.0.0.1:{hold_port}/count", timeout=5)
        events.append(f"appview flushed ({r.status_code})")

    @asynccontextmanager
    async def hold_life(app: Litestar) -> AsyncIterator[None]:
        yield
        events.append("hold flushed")

    appview = Litestar([], lifespan=[appview_life], logging_config=None)
    hold = Litestar([count], lifespan=[hold_life], logging_config=None)

    def ready() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled by serve_all's loop handler, like Ctrl-C

    await serve_all(
        [ServedApp("appview", appview, "127.0.0.1", app_port), ServedApp("hold", hold, "127.0.0.1", hold_port)],
        log_level="warning", on_ready=ready,
    )
    assert events == ["hold counted", "appview flushed (200)", "hold flushed"]
