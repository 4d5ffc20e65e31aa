"""Wiring: the collector built from the hold's settings, its periodic run, its routes.

* ``GET /metrics``: Prometheus text (``hold_gc_*``).
* ``POST /_hold/gc/<run|dry>/<grace seconds>?exp&sig``: one run now, answered with its report;
  the URL is signed with the hold's URL-signing secret (its data directory), which is how
  ``atcr hold gc`` asks a running hold (the repo has one writer: the hold process).
* ``GET /xrpc/io.atcr.hold.listGcRuns`` (a service token of the captain or a crew admin,
  ``lxm`` = the method): ``{runs: [report, ...]}``, newest first, the last 20 runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Request, Response, Router, get, post

from atcr.periodic import Periodic
from atcr.runtime import Runtime
from hold.errors import AuthRequired, HoldError, InvalidRequest
from hold.gc.collector import GarbageCollector, GcReport
from hold.gc.guard import GcGuard
from hold.gc.metrics import GcMetrics
from hold.gc.references import PdsEndpoint, ReferenceChecker
from hold.ledger import Ledger
from hold.service import HoldServices
from hold.xrpc import bearer_token

log = logging.getLogger("hold.gc")

NSID_LIST_RUNS = "io.atcr.hold.listGcRuns"
RUN_PATH = "/_hold/gc"


def run_path(dry_run: bool, grace: int | None) -> str:
    return f"{RUN_PATH}/{'dry' if dry_run else 'run'}/{'default' if grace is None else int(grace)}"


class GcUnavailable(HoldError):
    error, status, default_message = "GcUnavailable", 503, "garbage collection needs Valkey, which is not configured"


class GcService:
    def __init__(self, collector: GarbageCollector | None, interval: int, metrics: GcMetrics) -> None:
        self.collector = collector
        self.interval = interval
        self.metrics = metrics
        self._periodic: Periodic | None = None

    @classmethod
    def build(
        cls, services: HoldServices, ledger: Ledger, runtime: Runtime, *, pds_endpoint: PdsEndpoint | None = None
    ) -> GcService:
        settings = services.settings
        metrics = GcMetrics()
        index = ledger.quota.index
        if services.valkey is None or index is None:
            return cls(None, settings.gc_interval, metrics)
        collector = GarbageCollector(
            store=services.store,
            repo=ledger.repo.get,
            index=index,
            guard=GcGuard(services.valkey, services.identity.did),
            checker=ReferenceChecker(runtime.http, runtime.resolver, pds_endpoint=pds_endpoint),
            grace=settings.gc_grace,
            forget_cached=services.catalog.forget,
            metrics=metrics,
        )
        return cls(collector, settings.gc_interval, metrics)

    @property
    def guard(self) -> GcGuard | None:
        return self.collector.guard if self.collector is not None else None

    async def run(self, *, dry_run: bool = False, grace: int | None = None) -> GcReport:
        if self.collector is None:
            raise GcUnavailable()
        return await self.collector.run(dry_run=dry_run, grace=grace)

    async def _scheduled(self) -> None:
        report = await self.run()
        if report.skipped:
            log.debug("gc: skipped: %s", report.skipped)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        if self.collector is not None and self.interval > 0:
            self._periodic = Periodic(self.interval, self._scheduled, name="hold-gc")
            self._periodic.start()
        try:
            yield
        finally:
            if self._periodic is not None:
                await self._periodic.stop()
                self._periodic = None

    def routes(self, services: HoldServices) -> Router:
        @get("/metrics", sync_to_thread=False)
        def metrics() -> Response[bytes]:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

        @get(f"/xrpc/{NSID_LIST_RUNS}")
        async def list_runs(request: Request[Any, Any, Any]) -> dict[str, Any]:
            token = bearer_token(request)
            if token is None:
                raise AuthRequired("a service token is required (Authorization: Bearer <jwt>)")
            did = await services.auth.authenticate(token, lxm=NSID_LIST_RUNS)
            await services.auth.require_admin(did)
            if self.collector is None:
                raise GcUnavailable()
            return {"runs": await self.collector.runs()}

        @post(f"{RUN_PATH}/{{mode:str}}/{{grace:str}}", status_code=200)
        async def run_now(request: Request[Any, Any, Any]) -> dict[str, Any]:
            mode, grace = str(request.path_params["mode"]), str(request.path_params["grace"])
            q = request.query_params
            services.signer.verify("POST", request.url.path, q.get("exp"), q.get("sig"))
            if mode not in ("run", "dry") or not (grace == "default" or grace.isdigit()):
                raise InvalidRequest("expected /_hold/gc/<run|dry>/<grace seconds|default>")
            report = await self.run(dry_run=mode == "dry", grace=None if grace == "default" else int(grace))
            return report.to_json(digests=None)

        return Router(path="/", route_handlers=[metrics, list_runs, run_now], include_in_schema=False)
