"""The consumer's process: the status application (`/livez`, `/readyz`, `/status`, `/metrics`)
whose lifespan runs the consumer itself, so `atcr jetstream` and `atcr dev` start both the
same way and stop both on one signal.

Readiness means Valkey answers. A stream that cannot connect (the public Jetstream URLs are
unreachable offline, in `atcr dev` for one) is normal operation with backoff, not a failure
of the process: it shows in `/status` and in the metrics instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, get

from atcr.runtime import Runtime
from atcr.server import health_routes
from jetstream.consumer import Consumer
from jetstream.metrics import Metrics
from jetstream.settings import JetstreamSettings

log = logging.getLogger("jetstream")

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"  # litestar appends "; charset=utf-8" to text/* types


def create_app(settings: JetstreamSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)
    metrics = Metrics()
    consumer: Consumer | None = None
    if rt.valkey is not None:
        consumer = Consumer(settings, rt.valkey, rt.http, rt.resolver, metrics=metrics)

    @get("/status", sync_to_thread=False)
    def status() -> dict[str, Any]:
        body: dict[str, Any] = {
            "enabled": settings.enabled and consumer is not None,
            "jetstream_urls": list(settings.jetstream_urls),
            "firehose_urls": list(settings.firehose_urls),
            "relay": settings.relay_endpoint,
            "collections": list(settings.wanted_collections),
        }
        if consumer is not None:
            body.update(consumer.status())
        if not settings.enabled:
            body["state"] = "disabled"
        elif consumer is None:
            body["state"] = "no valkey configured"
        return body

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def prometheus() -> Response[bytes]:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if consumer is not None and settings.enabled:
            await consumer.start()
        elif settings.enabled:
            log.warning("no VALKEY_URL: the consumer is not running (status endpoint only)")
        try:
            yield
        finally:
            if consumer is not None:
                await consumer.stop()
            if runtime is None:
                await rt.aclose()

    app = Litestar(
        route_handlers=[*health_routes({"valkey": rt.valkey_ready}), status, prometheus],
        lifespan=[lifespan],
        debug=False,
        logging_config=None,  # keep the service's own logging (ATCR_LOG_LEVEL, atcr.server format)
    )
    app.state.settings = settings
    app.state.runtime = rt
    app.state.consumer = consumer
    app.state.metrics = metrics
    return app
