"""The hold's ASGI application: wiring only; routes live in their own modules."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

from atcr.errors import AtcrError
from atcr.keys import load_or_create_secret
from atcr.runtime import Runtime
from atcr.server import health_routes
from hold.capability import CapabilitySigner
from hold.gc.service import GcService
from hold.ledger import Ledger
from hold.oci_uploads import DirectUploads
from hold.posts import PushPoster
from hold.repo.service import RepoService
from hold.repo.signing import EcKeySigner
from hold.routes_blob import blob_routes
from hold.routes_crew import crew_routes
from hold.routes_identity import identity_routes
from hold.routes_oci_upload import DirectStarter, oci_upload_routes
from hold.routes_quota import quota_routes
from hold.routes_stats import stats_routes
from hold.routes_upload import upload_routes
from hold.scan.blobs import RepoBlobs
from hold.scan.routes import scan_routes
from hold.scan.service import ScanService
from hold.service import HoldServices
from hold.settings import HoldSettings
from hold.userdata import userdata_routes
from hold.xrpc import exception_handlers


def create_app(settings: HoldSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)
    services = HoldServices.build(settings, rt)
    # The embedded PDS: the hold's own repo, signed with the identity's key (docs/hold-repo.md).
    repo = RepoService(settings, services.identity.did, EcKeySigner(services.identity.key))
    # Crew, quotas and stats live in the repo; this also points the blob services' auth at the crew.
    ledger = Ledger.build(settings, services, repo)

    async def handle_of(did: str) -> str | None:
        try:
            return (await rt.resolver.resolve_did(did)).handle
        except AtcrError:
            return None

    ledger.poster = PushPoster(
        repo.get, ledger.directory.captain_record, handle_of, rt.valkey, hold_did=services.identity.did,
        appview_url=settings.appview_url, interval=settings.bluesky_post_interval,
    )
    # Online garbage collection (hold/gc/): pushes lease their blobs through its guard.
    gc = GcService.build(services, ledger, rt)
    # Vulnerability scanning (hold/scan/): jobs queued on push, results from subscribed scanners.
    scans = ScanService.build(settings, services, repo.get, ledger.quota)
    if ledger.notifications is not None:
        ledger.notifications.guard = gc.guard
        ledger.notifications.forget_cached = services.catalog.forget
        if scans is not None:
            ledger.notifications.after_push = scans.on_push

    async def storage_ready() -> None:
        if settings.storage_driver == "filesystem":
            root = settings.storage_root_dir

            def probe() -> None:
                root.mkdir(parents=True, exist_ok=True)
                fd, path = tempfile.mkstemp(dir=root, prefix=".ready-")
                os.close(fd)
                os.unlink(path)

            await asyncio.to_thread(probe)
        else:
            await services.storage_ready()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            async with services.lifespan(), repo.lifespan(), ledger.lifespan(), gc.lifespan():
                yield
        finally:
            if runtime is None:
                await rt.aclose()

    checks = {"storage": storage_ready}
    if rt.valkey is not None:
        checks["valkey"] = rt.valkey_ready
    direct_routes = []
    starter: DirectStarter | None = None
    if services.identity.direct_uploads and services.uploads is not None:
        # Direct uploads: clients' layer bytes on capability URLs (hold/oci_uploads.py).
        direct = DirectUploads(
            services.uploads, rt.valkey, quota=ledger.quota, guard=gc.guard, max_open=settings.max_open_uploads
        )
        signer = CapabilitySigner(load_or_create_secret(settings.url_secret_path))
        starter = DirectStarter(services, direct, signer)
        direct_routes.append(oci_upload_routes(services, direct, signer))
    app = Litestar(
        route_handlers=[
            *direct_routes,
            *health_routes(checks),
            identity_routes(services.identity),
            upload_routes(services, ledger.quota, gc.guard, starter),
            blob_routes(services, atproto_blobs=RepoBlobs(settings.data_dir / "repo-blobs")),
            crew_routes(services, ledger),
            quota_routes(ledger),
            stats_routes(services, ledger),
            repo.routes(services.identity.did_document),
            gc.routes(services),
            userdata_routes(services, ledger),
            scan_routes(services, scans, settings.scanner_secret, settings.scan_lease),
        ],
        lifespan=[lifespan],
        exception_handlers=exception_handlers(),
        debug=False,
        logging_config=None,  # keep the service's own logging (ATCR_LOG_LEVEL, atcr.server format)
    )
    app.state.settings = settings
    app.state.runtime = rt
    app.state.hold = services
    app.state.repo = repo
    app.state.ledger = ledger
    app.state.gc = gc
    app.state.scans = scans
    return app
