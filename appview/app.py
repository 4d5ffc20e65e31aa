"""The AppView's ASGI application: builds the services from settings and mounts the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from valkey.exceptions import ValkeyError

from appview import unsent_pulls
from appview.auth.credentials import Authenticator, Principal
from appview.auth.loginlimit import LoginLimiter
from appview.auth.routes import TokenApi
from appview.auth.sessions import PdsSessionStore, SessionCipher
from appview.auth.tokens import TokenService
from appview.cache.loader import Loader, LoaderConfig
from appview.clientaddr import ClientAddresses, limit_key
from appview.holds.client import HoldClient
from appview.holds.pulls import PullCounter
from appview.holds.pushhold import PushHolds
from appview.identity import AppViewIdentity
from appview.oci.registry import PROFILE_COLLECTION, Registry, now_iso
from appview.oci.routes import Auth, OciApi
from appview.oci.uploads import UploadStore
from appview.policy.schedule import RetentionSchedule
from appview.ratelimit import Limit, RateLimiter
from appview.settings import AppViewSettings
from appview.web.auth_routes import build_sign_in
from appview.web.pages import build_web_ui, html_error
from atcr.errors import AtcrError
from atcr.keys import load_or_create_ec_key, load_or_create_secret
from atcr.readmodel.apply import migrate_legacy_indexes
from atcr.runtime import Runtime
from atcr.server import health_routes

log = logging.getLogger("appview")


def _internal_error(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    """Nothing but a generic error leaves the process; the details go to the log."""
    page = html_error(request, exc)  # browsers get the UI's error page, APIs keep JSON
    if page is not None:
        return page
    if isinstance(exc, ValkeyError):
        log.warning("valkey unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return Response(
            {"errors": [{"code": "UNAVAILABLE", "message": "state store unavailable; retry shortly"}]},
            status_code=503,
            headers={"Retry-After": "5"},
            media_type="application/json",
        )
    if isinstance(exc, HTTPException):
        return Response({"errors": [{"code": "UNKNOWN", "message": exc.detail}]}, status_code=exc.status_code)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(
        {"errors": [{"code": "UNKNOWN", "message": "internal error"}]}, status_code=500, media_type="application/json"
    )


def create_app(settings: AppViewSettings, runtime: Runtime | None = None) -> Litestar:
    rt = runtime or Runtime.from_settings(settings)
    if rt.valkey is None:
        raise AtcrError("the AppView needs Valkey: set VALKEY_URL")
    valkey = rt.valkey

    signing_key = load_or_create_ec_key(settings.key_path)
    me = AppViewIdentity(settings.base_url, signing_key)
    tokens = TokenService(
        signing_key,
        issuer=settings.base_url,
        service=settings.service,
        lifetime=settings.token_expiration,
    )
    secret = load_or_create_secret(settings.secret_path)
    sessions = PdsSessionStore(valkey, SessionCipher(secret), rt.http)
    loader = Loader(valkey, rt.http, rt.resolver, config=LoaderConfig.from_settings(settings))

    async def mint(user_did: str, hold_did: str, lxm: str) -> str | None:
        client = await sessions.client(user_did)
        if client is None:
            return None
        return await client.get_service_auth(aud=hold_did, lxm=lxm)

    holds = HoldClient(
        rt.http, rt.resolver, mint=mint, allow_http_loopback=settings.allow_private_networks,
        timeout=settings.hold_timeout, down_for=settings.hold_down_seconds,
    )
    pulls = PullCounter(holds, mint=me.mint)
    registry = Registry(
        loader, holds, sessions, UploadStore(valkey, max_open=settings.max_open_uploads),
        default_hold_did=settings.default_hold_did, pulls=pulls, sparse_indexes=settings.sparse_indexes,
        push_holds=PushHolds(
            valkey, loader.profile, holds.reachable, settings.default_hold_did,
            pin_seconds=settings.push_hold_pin_seconds,
        ),
    )
    async def after_web_login(principal: Principal) -> None:
        await ensure_profile(principal)  # defined below, with the token endpoint's hooks

    sign_in = build_sign_in(
        settings, http=rt.http, resolver=rt.resolver, valkey=valkey, secret=secret, sessions=sessions,
        after_login=after_web_login,
    )
    sessions.use_oauth(sign_in.oauth)  # PDS writes of OAuth users go through DPoP
    login_limiter = LoginLimiter(
        valkey, per_account=settings.rate_limit_login_failures, per_address=settings.rate_limit_login_failures_address
    )
    authenticator = Authenticator(
        valkey, rt.http, loader, sessions, secret, devices=sign_in.devices, limiter=login_limiter
    )
    addresses = ClientAddresses.from_settings(settings)

    async def owner_of(identity: str) -> str | None:
        try:
            return (await loader.identity(identity)).did
        except AtcrError:
            return None

    async def ensure_profile(principal: Principal) -> None:
        """ATCR's EnsureProfile: a first login gets a sailor profile naming the default hold."""
        if await loader.profile(principal.did) is not None:
            return
        client = await sessions.client(principal.did)
        if client is None:
            return
        record = {"defaultHold": settings.default_hold_did, "createdAt": now_iso()}
        out = await client.put_record(principal.did, PROFILE_COLLECTION, "self", record)
        await loader.wrote_record(
            principal.did, PROFILE_COLLECTION, "self", {"$type": PROFILE_COLLECTION, **record}, cid=out.get("cid")
        )

    limiter = RateLimiter(
        valkey,
        {
            "address": Limit(settings.rate_limit_address, 60),
            "user": Limit(settings.rate_limit_user, 60),
        },
    )
    from appview.provenance import ProvenanceService

    provenance = ProvenanceService(
        valkey, rt.http, rt.resolver, plc_url=settings.plc_url, timeout=settings.http_timeout,
        referrers=settings.provenance_referrers,
    )
    from appview.scans import ScanResults

    scans = ScanResults(valkey, rt.http, holds.endpoint, holds.service_headers)
    oci = OciApi(
        registry,
        Auth(realm=f"{settings.base_url}/auth/token", service=settings.service, tokens=tokens),
        max_blob_size=settings.max_blob_size,
        base_url=settings.base_url,
        direct_uploads=settings.direct_uploads == "auto",
        limiter=limiter,
        addresses=addresses,
        provenance=provenance,
        scans=scans,
    )
    token_api = TokenApi(tokens, authenticator, owner_of, after_login=ensure_profile, addresses=addresses)

    web_ui = build_web_ui(
        settings, valkey=valkey, http=rt.http, loader=loader, holds=holds, sessions=sessions, registry=registry,
        sign_in=sign_in,
    )
    web_ui.provenance = provenance  # "published by ... (verified)" on manifest pages
    web_ui.scans = scans  # vulnerability badges, findings and SBOM packages (appview/scans)
    from appview.web.signatures import Signatures

    web_ui.signatures = Signatures(rt.http, holds)  # "signed by ..." from signature referrers
    web_ui.request_scan = holds.request_scan  # the owner's "scan again" (io.atcr.hold.requestScan)

    from appview.webhooks.setup import build_webhooks

    async def basic_login(request: Request[Any, Any, State], username: str, password: str) -> Principal:
        """`docker login` credentials for the JSON APIs: the token endpoint's verifier and limiter."""
        return await authenticator.login(username, password, address=limit_key(addresses.of(request)))

    webhooks = build_webhooks(settings, valkey, secret, login=basic_login, web=sign_in.web)
    registry.events = webhooks.events  # push, tag and delete events are queued, never delivered inline
    web_ui.webhooks = webhooks.service

    from appview.userdata.page import UserDataPage
    from appview.userdata.service import UserDataService

    userdata = UserDataService(
        valkey, loader, holds, devices=sign_in.devices, web_sessions=sign_in.web.web_sessions, pds_sessions=sessions,
        webhooks=webhooks.store, default_hold_did=settings.default_hold_did,
        registry_host=webhooks.events.registry_host,
    )
    userdata_page = UserDataPage(web_ui, userdata, recent_auth=settings.recent_auth_seconds)

    # Retention rules on a schedule for owners with a live session (appview/policy/schedule.py).
    schedule = RetentionSchedule(valkey, registry, sessions, settings.retention_interval)
    registry.retention_schedule = schedule

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            await migrate_legacy_indexes(valkey)  # global indexes written before they were bucketed
        except (ValkeyError, OSError) as exc:
            log.warning("could not move the old global indexes into buckets (%s); the next start tries again", exc)
        restored = await unsent_pulls.restore(valkey, pulls)
        if restored:
            log.info("sending %d pull count(s) kept at the last stop", restored)
        pulls.start()
        limiter.start()
        loader.start()
        schedule.start()
        webhooks.start()
        try:
            yield
        finally:
            await registry.drain()  # a re-tag's record check and hold notification, under way
            await schedule.stop()
            await webhooks.aclose()
            await pulls.stop()  # the last flush: the hold is still up when the AppView stops first
            await unsent_pulls.save(valkey, pulls)  # what no hold acknowledged waits for the next start
            await limiter.stop()
            await web_ui.aclose()
            await loader.aclose()
            if runtime is None:
                await rt.aclose()

    @get("/.well-known/did.json", sync_to_thread=False, include_in_schema=False)
    def did_json() -> dict[str, Any]:
        """The AppView's did:web document: holds verify its pull notifications with this key."""
        return me.did_document()

    app = Litestar(
        route_handlers=[
            did_json,
            *health_routes({"valkey": rt.valkey_ready}), *oci.handlers(), *token_api.handlers(),
            *sign_in.web.handlers(), *web_ui.handlers(), *webhooks.api.handlers(),
            *userdata_page.handlers(),
        ],
        lifespan=[lifespan],
        exception_handlers={Exception: _internal_error},
        debug=False,
        logging_config=None,  # keep the service's own logging (ATCR_LOG_LEVEL, atcr.server format)
    )
    app.state.settings = settings
    app.state.runtime = rt
    app.state.registry = registry
    app.state.loader = loader
    app.state.tokens = tokens
    app.state.sessions = sessions
    app.state.sign_in = sign_in
    app.state.web_ui = web_ui
    app.state.webhook_events = webhooks.events  # what the scanner passes to emit_scan_event
    return app
