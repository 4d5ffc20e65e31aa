"""The `atcr scanner` process: an ASGI app for /readyz, /status and /update-db, with the
hold subscriptions and the database refresh running in its lifespan.

Ready means: the vulnerability database is loaded and every hold in SCANNER_HOLDS has
accepted the subscription. Subscriptions start only once the database is loaded, so no job
is taken that could not be scanned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, get, post

from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.server import health_routes
from atcr.tasks import cancel_and_wait
from scanner.holds import HoldSubscription
from scanner.settings import ScannerSettings
from scanner.vulndb import CurrentDB

log = logging.getLogger("scanner")


class NotReady(Exception):
    pass


def create_app(settings: ScannerSettings) -> Litestar:
    db = CurrentDB(settings)
    policy = SsrfPolicy(allow_private=settings.allow_private_networks, allowed_hosts=frozenset(settings.allowed_hosts))
    http = SafeHttpClient(policy=policy, timeout=settings.http_timeout)
    subs = [HoldSubscription(url, settings, db, http) for url in settings.holds]
    state: dict[str, str] = {}

    async def start() -> None:
        delay = 1.0
        while db.db is None:
            try:
                await db.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state["db_error"] = str(exc)[:300]
                log.error("scanner: cannot load SCANNER_VULN_DB (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)
        state.pop("db_error", None)
        await asyncio.gather(db.refresh_forever(), *(s.run_forever() for s in subs))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        task = asyncio.create_task(start(), name="scanner")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await http.aclose()

    async def db_ready() -> None:
        if db.db is None:
            raise NotReady(state.get("db_error", "loading"))

    async def holds_ready() -> None:
        if not all(s.connected for s in subs):
            raise NotReady("not subscribed to every hold")

    @get("/status", include_in_schema=False)
    async def status() -> dict[str, Any]:
        return {
            "vulnDb": {"version": db.version, "records": db.db.records if db.db else 0, **state},
            "holds": [
                {"url": s.hold_url, "connected": s.connected, "jobsDone": s.jobs_done, "active": sorted(s.active)}
                for s in subs
            ],
        }

    @post("/update-db", include_in_schema=False, status_code=200)
    async def update_db() -> Response[dict[str, Any]]:
        try:
            changed = await db.reload()
        except Exception as exc:
            return Response({"error": "VulnDBError", "message": str(exc)[:300]}, status_code=502)
        return Response({"version": db.version, "changed": changed})

    return Litestar(
        route_handlers=[*health_routes({"vulndb": db_ready, "holds": holds_ready}), status, update_db],
        lifespan=[lifespan],
        debug=False,
        logging_config=None,
    )
