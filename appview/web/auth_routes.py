"""HTTP layer of sign-in: login/callback/logout, the device pages and endpoints, device settings.

Only translation lives here: requests to `OAuthSessions` / `DeviceFlowService` calls, their
errors to pages or RFC 6749/8628 JSON errors, sessions to cookies. Pages are rendered with the
auth templates in `templates/` (login.html, device.html, devices.html on base.html).

Endpoints
  GET  /client-metadata.json            OAuth client metadata (confidential client only)
  GET  /auth/oauth/jwks.json            the client's public keys (private_key_jwt)
  GET  /auth/login, POST /auth/login    sign in with a handle or DID
  GET  /auth/oauth/callback             the authorization server sends the browser back here
  POST /auth/logout                     end the web session
  GET  /auth/session                    JSON: who is signed in (+ CSRF token for scripts)
  POST /auth/device/code                RFC 8628 device authorization request
  POST /auth/device/token               RFC 8628 token polling
  POST /auth/device/revoke              a device revokes itself (Basic: DID + device secret)
  GET  /device, POST /device            enter or confirm a user code
  POST /device/approve, /device/deny
  GET  /settings/devices, POST /settings/devices/{id}/revoke
  GET  /api/devices, DELETE /api/devices/{id}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.response import Redirect

from appview.auth.credentials import Principal
from appview.auth.device import DeviceFlowService
from appview.auth.oauth import OAuthClientConfig, OAuthSessions
from appview.auth.oauth.metadata import CALLBACK_PATH, CLIENT_METADATA_PATH, JWKS_PATH
from appview.auth.oauth.session import STATE_TTL
from appview.clientaddr import ClientAddresses
from appview.errors import CsrfRejected, RegistryError, SignInError, Unauthorized
from appview.web import humanize
from appview.web.branding import DEFAULT_BRANDING, Branding
from appview.web.csrf import CSRF_COOKIE, FORM_FIELD, HEADER, CsrfGuard, new_binding
from appview.web.websession import COOKIE_NAME, WebSession, WebSessionStore
from atcr import jsonbound
from atcr.errors import AtcrError, OAuthCallbackInvalid, OAuthError

if TYPE_CHECKING:
    import valkey.asyncio as avalkey

    from appview.auth.sessions import PdsSessionStore
    from appview.settings import AppViewSettings
    from atcr.http import SafeHttpClient
    from atcr.identity import IdentityResolver

log = logging.getLogger("appview.web.auth")

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
}

AfterLogin = Callable[[Principal], Awaitable[None]]

# The pre-login cookie: a random value set when a sign-in starts; its hash is sealed in the
# pending sign-in and the callback must bring the cookie back (RFC 9700 §4.7, login CSRF).
# One value per browser, reused by every sign-in it starts, so two tabs can sign in at once.
SIGNIN_COOKIE = "atcr_signin"
SIGNIN_COOKIE_PATH = "/auth"


def browser_binding(cookie: str | None) -> str:
    """What a pending sign-in is bound to: SHA-256 of the pre-login cookie ('' without one)."""
    if not cookie or not 32 <= len(cookie) <= 64:
        return ""
    return hashlib.sha256(cookie.encode()).hexdigest()


def safe_next(raw: str | None) -> str:
    """A local path to return to after sign-in; anything else becomes `/` (no open redirect)."""
    if not raw or len(raw) > 500 or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return "/"
    return raw


def _isotime(ts: int | float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _oauth_message(exc: OAuthError) -> str:
    if exc.error == "unknown_account":
        return "That handle or DID could not be found."
    if exc.error in {"temporarily_unavailable", "unreachable"}:
        return "Your account's server could not be reached. Try again in a moment."
    if exc.error == "browser_mismatch":
        return "This sign-in was started in another browser (or this one lost its cookie). Please sign in again here."
    if isinstance(exc, OAuthCallbackInvalid):
        return "This sign-in could not be verified (it may have expired or been used already). Please sign in again."
    return f"Sign-in failed: {exc.message}"


@dataclass(frozen=True)
class WebAuthConfig:
    base_url: str
    secure_cookies: bool
    session_ttl: int


class AuthWeb:
    """The sign-in routes; construct with the services, mount `handlers()`."""

    def __init__(
        self,
        *,
        config: WebAuthConfig,
        oauth: OAuthSessions,
        client_config: OAuthClientConfig,
        web_sessions: WebSessionStore,
        csrf: CsrfGuard,
        devices: DeviceFlowService,
        after_login: AfterLogin | None = None,
        templates_dir: Path = DEFAULT_TEMPLATES,
        addresses: ClientAddresses | None = None,
    ) -> None:
        self.config = config
        self.addresses = addresses or ClientAddresses()
        self.oauth = oauth
        self.client_config = client_config
        self.web_sessions = web_sessions
        self.csrf = csrf
        self.devices = devices
        self.after_login = after_login
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )
        self.env.filters["isotime"] = _isotime
        self.env.filters.update(humanize.FILTERS)  # "3 minutes ago" on the device pages, like the UI's
        self.env.globals["brand"] = DEFAULT_BRANDING
        self.page_headers: dict[str, str] = dict(PAGE_HEADERS)

    def brand(self, branding: Branding) -> None:
        branding.install(self.env)
        self.page_headers = branding.headers(dict(PAGE_HEADERS))

    # --- request helpers ------------------------------------------------------------------------

    async def user(self, request: Request[Any, Any, State]) -> WebSession | None:
        return await self.web_sessions.get(request.cookies.get(COOKIE_NAME))

    def _binding(self, request: Request[Any, Any, State], user: WebSession | None) -> tuple[str, list[Cookie]]:
        """What this browser's CSRF tokens are bound to, and a cookie to set if it needs one."""
        if user is not None:
            return user.id_hash, []
        existing = request.cookies.get(CSRF_COOKIE)
        if existing and 16 <= len(existing) <= 64:
            return existing, []
        fresh = new_binding()
        return fresh, [self._cookie(CSRF_COOKIE, fresh, max_age=24 * 3600)]

    def _cookie(self, name: str, value: str, *, max_age: int, path: str = "/") -> Cookie:
        return Cookie(
            key=name,
            value=value,
            path=path,
            max_age=max_age,
            httponly=True,
            secure=self.config.secure_cookies,
            samesite="lax",
        )

    def _expired_cookie(self, name: str) -> Cookie:
        return Cookie(
            key=name, value="", path="/", max_age=0, httponly=True, secure=self.config.secure_cookies, samesite="lax"
        )

    async def _check_csrf(self, request: Request[Any, Any, State], user: WebSession | None, token: str | None) -> None:
        binding = user.id_hash if user is not None else request.cookies.get(CSRF_COOKIE)
        if not self.csrf.check(
            binding=binding, token=token, origin=request.headers.get("origin"), referer=request.headers.get("referer")
        ):
            raise CsrfRejected()

    async def _form(self, request: Request[Any, Any, State]) -> dict[str, str]:
        form = await request.form()
        return {str(k): str(v) for k, v in form.items() if isinstance(v, str)}

    def _ip(self, request: Request[Any, Any, State]) -> str:
        return self.addresses.of(request)

    def page(
        self,
        req: Request[Any, Any, State],
        template: str,
        user: WebSession | None,
        *,
        status: int = 200,
        cookies: list[Cookie] | None = None,
        **context: Any,
    ) -> Response[str]:
        binding, extra = self._binding(req, user)
        html = self.env.get_template(template).render(user=user, csrf_token=self.csrf.token(binding), **context)
        return Response(
            html,
            status_code=status,
            media_type="text/html",  # litestar appends "; charset=utf-8"
            headers=self.page_headers,
            cookies=[*(cookies or []), *extra],
        )

    def _login_redirect(self, next_path: str) -> Redirect:
        return Redirect(path="/auth/login?" + urlencode({"next": next_path}), status_code=303, headers=NO_STORE)

    @staticmethod
    def _json_error(exc: RegistryError) -> Response[Any]:
        return Response(
            {"error": exc.code, "error_description": exc.message},
            status_code=exc.status,
            headers={**NO_STORE, **exc.headers},
        )

    # --- sign-in --------------------------------------------------------------------------------

    async def _start_login(self, request: Request[Any, Any, State]) -> Response[Any]:
        user = await self.user(request)
        form = await self._form(request)
        try:
            await self._check_csrf(request, user, form.get(FORM_FIELD))
        except CsrfRejected as exc:
            return self.page(
                request,
                "login.html",
                user,
                status=exc.status,
                error=exc.message,
                handle=form.get("handle", ""),
                next=safe_next(form.get("next")),
            )
        handle = form.get("handle", "").strip()
        next_path = safe_next(form.get("next"))
        if not handle or len(handle) > 300:
            return self.page(
                request,
                "login.html",
                user,
                status=400,
                error="Enter your handle or DID.",
                handle=handle,
                next=next_path,
            )
        existing = request.cookies.get(SIGNIN_COOKIE)
        cookie = existing if existing and browser_binding(existing) else secrets.token_urlsafe(32)
        try:
            url = await self.oauth.begin(handle, {"next": next_path}, browser=browser_binding(cookie))
        except OAuthError as exc:
            status = 503 if exc.error in ("temporarily_unavailable", "unreachable") else 400
            return self.page(
                request, "login.html", user, status=status, error=_oauth_message(exc), handle=handle, next=next_path
            )
        binding = self._cookie(SIGNIN_COOKIE, cookie, max_age=STATE_TTL, path=SIGNIN_COOKIE_PATH)
        return Redirect(path=url, status_code=303, headers=NO_STORE, cookies=[binding])

    async def _callback(self, request: Request[Any, Any, State]) -> Response[Any]:
        q = request.query_params
        state = str(q.get("state") or "")
        user = await self.user(request)
        if q.get("error"):
            app_data = await self.oauth.abandon(state) or {}
            reason = (
                "You declined the sign-in."
                if q.get("error") == "access_denied"
                else (f"Sign-in was refused: {str(q.get('error_description') or q.get('error'))[:200]}")
            )
            return self.page(
                request, "login.html", user, status=400, error=reason, handle="", next=safe_next(app_data.get("next"))
            )
        code = str(q.get("code") or "")
        if not code or not state:
            return self.page(
                request, "login.html", user, status=400, error="The sign-in answer was incomplete.", handle="", next="/"
            )
        try:
            session, app_data = await self.oauth.complete(
                state, code, q.get("iss"), browser=browser_binding(request.cookies.get(SIGNIN_COOKIE))
            )
        except OAuthError as exc:
            log.info("sign-in callback refused: %s", exc.error)
            status = 503 if exc.error == "temporarily_unavailable" else 400
            return self.page(request, "login.html", user, status=status, error=_oauth_message(exc), handle="", next="/")
        if user is not None:
            await self.web_sessions.delete(request.cookies.get(COOKIE_NAME))
        token, _ = await self.web_sessions.create(session.did, session.handle)
        if self.after_login is not None:
            try:
                await self.after_login(Principal(session.did, session.handle, "oauth"))
            except (AtcrError, RegistryError) as exc:
                log.info("after-login step for %s failed: %s", session.did, type(exc).__name__)
        cookie = self._cookie(COOKIE_NAME, token, max_age=self.config.session_ttl)
        return Redirect(
            path=safe_next(app_data.get("next")),
            status_code=303,
            headers=NO_STORE,
            cookies=[cookie, self._expired_cookie(CSRF_COOKIE)],
        )

    async def _logout(self, request: Request[Any, Any, State]) -> Response[Any]:
        user = await self.user(request)
        form = await self._form(request)
        try:
            await self._check_csrf(request, user, form.get(FORM_FIELD))
        except CsrfRejected as exc:
            return self.page(request, "login.html", user, status=exc.status, error=exc.message, handle="", next="/")
        await self.web_sessions.delete(request.cookies.get(COOKIE_NAME))
        return Redirect(path="/", status_code=303, headers=NO_STORE, cookies=[self._expired_cookie(COOKIE_NAME)])

    # --- device flow: the device side -----------------------------------------------------------

    async def _params(self, request: Request[Any, Any, State]) -> dict[str, str]:
        """Form or JSON parameters; a JSON body that is malformed or nested too deeply is a 400
        `invalid_request` (RFC 6749 §5.2), never a parser's RecursionError."""
        if (request.headers.get("content-type") or "").startswith("application/json"):
            try:
                body = jsonbound.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                raise SignInError("the request body is not valid JSON (or nests too deeply)") from None
            return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        return await self._form(request)

    async def _device_code(self, request: Request[Any, Any, State]) -> Response[Any]:
        try:
            params = await self._params(request)
        except SignInError as exc:
            return self._json_error(exc)
        name = params.get("client_name") or params.get("device_name") or params.get("client_id") or ""
        try:
            auth = await self.devices.start(name, self._ip(request), request.headers.get("user-agent", ""))
        except SignInError as exc:
            return self._json_error(exc)
        return Response(
            {
                "device_code": auth.device_code,
                "user_code": auth.user_code,
                "verification_uri": auth.verification_uri,
                "verification_uri_complete": auth.verification_uri_complete,
                "expires_in": auth.expires_in,
                "interval": auth.interval,
            },
            headers=NO_STORE,
        )

    async def _device_token(self, request: Request[Any, Any, State]) -> Response[Any]:
        try:
            params = await self._params(request)
        except SignInError as exc:
            return self._json_error(exc)
        if params.get("grant_type", DEVICE_GRANT_TYPE) != DEVICE_GRANT_TYPE:
            return Response({"error": "unsupported_grant_type"}, status_code=400, headers=NO_STORE)
        try:
            grant = await self.devices.poll(params.get("device_code", ""))
        except SignInError as exc:
            return self._json_error(exc)
        return Response(
            {
                "access_token": grant.secret,
                "token_type": "device_secret",
                "device_secret": grant.secret,
                "device_id": grant.device_id,
                "did": grant.did,
                "handle": grant.handle,
            },
            headers=NO_STORE,
        )

    async def _device_revoke_self(self, request: Request[Any, Any, State]) -> Response[Any]:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            # Device secrets never contain ':' but DIDs do: split at the last one.
            user, _, secret = base64.b64decode(value.strip(), validate=True).decode().rpartition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, secret = "", ""
        if scheme.lower() != "basic" or not user.startswith("did:"):
            return self._json_error(Unauthorized("Basic credentials with your DID and device secret required"))
        device_id = await self.devices.check_secret(user, secret)
        if device_id is None:
            return self._json_error(Unauthorized("unknown device secret"))
        await self.devices.revoke(user, device_id)
        return Response({"revoked": device_id}, headers=NO_STORE)

    # --- device flow: the user side -------------------------------------------------------------

    async def _device_page(self, request: Request[Any, Any, State]) -> Response[Any]:
        user = await self.user(request)
        code = str(request.query_params.get("code") or "")[:40]
        if user is None:
            return self._login_redirect("/device" + (("?" + urlencode({"code": code})) if code else ""))
        if not code:
            return self.page(request, "device.html", user, step="enter", code="")
        return await self._confirm(request, user, code)

    async def _confirm(self, request: Request[Any, Any, State], user: WebSession, code: str) -> Response[Any]:
        try:
            pending = await self.devices.lookup(code, did=user.did, ip=self._ip(request))
        except SignInError as exc:
            return self.page(
                request, "device.html", user, status=exc.status, step="enter", code=code, error=exc.message
            )
        return self.page(request, "device.html", user, step="confirm", request=pending)

    async def _device_submit(self, request: Request[Any, Any, State], action: str) -> Response[Any]:
        user = await self.user(request)
        if user is None:
            return self._login_redirect("/device")
        form = await self._form(request)
        code = form.get("code", "")[:40]
        try:
            await self._check_csrf(request, user, form.get(FORM_FIELD))
        except CsrfRejected as exc:
            return self.page(
                request, "device.html", user, status=exc.status, step="enter", code=code, error=exc.message
            )
        if action == "lookup":
            return await self._confirm(request, user, code)
        try:
            if action == "approve":
                await self.devices.approve(code, did=user.did, handle=user.handle, ip=self._ip(request))
                return self.page(request, "device.html", user, step="approved")
            await self.devices.deny(code, did=user.did, ip=self._ip(request))
            return self.page(request, "device.html", user, step="denied")
        except SignInError as exc:
            return self.page(request, "device.html", user, status=exc.status, step="enter", code="", error=exc.message)

    # --- settings -------------------------------------------------------------------------------

    async def _devices_page(self, request: Request[Any, Any, State]) -> Response[Any]:
        user = await self.user(request)
        if user is None:
            return self._login_redirect("/settings/devices")
        message = "Device revoked." if request.query_params.get("revoked") else None
        return self.page(request, "devices.html", user, devices=await self.devices.devices(user.did), message=message)

    async def _revoke_form(self, request: Request[Any, Any, State], device_id: str) -> Response[Any]:
        user = await self.user(request)
        if user is None:
            return self._login_redirect("/settings/devices")
        form = await self._form(request)
        try:
            await self._check_csrf(request, user, form.get(FORM_FIELD))
        except CsrfRejected as exc:
            return self.page(
                request,
                "devices.html",
                user,
                status=exc.status,
                devices=await self.devices.devices(user.did),
                message=exc.message,
            )
        revoked = await self.devices.revoke(user.did, device_id)
        return Redirect(path="/settings/devices" + ("?revoked=1" if revoked else ""), status_code=303, headers=NO_STORE)

    # --- routes ---------------------------------------------------------------------------------

    def handlers(self) -> list[Any]:
        web = self
        confidential = self.client_config.confidential

        @get(CLIENT_METADATA_PATH, sync_to_thread=False, include_in_schema=False)
        def client_metadata() -> Response[Any]:
            """The client_id document (the authorization server fetches it; 200 exactly)."""
            if not confidential:
                return Response({"error": "not_found"}, status_code=404)
            return Response(
                web.client_config.metadata(),
                media_type="application/json",
                headers={"Cache-Control": "public, max-age=600"},
            )

        @get(JWKS_PATH, sync_to_thread=False, include_in_schema=False)
        def client_jwks() -> Response[Any]:
            """Public keys the authorization server checks our client assertions with."""
            return Response(
                web.client_config.jwks(),
                media_type="application/json",
                headers={"Cache-Control": "public, max-age=600"},
            )

        @get("/auth/login", include_in_schema=False)
        async def login_page(request: Request[Any, Any, State]) -> Response[Any]:
            user = await web.user(request)
            next_path = safe_next(request.query_params.get("next"))
            if user is not None and request.query_params.get("next"):
                return Redirect(path=next_path, status_code=303, headers=NO_STORE)
            return web.page(
                request, "login.html", user, handle=str(request.query_params.get("handle") or ""), next=next_path
            )

        @post("/auth/login", include_in_schema=False, status_code=303)
        async def login_submit(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._start_login(request)

        @get(CALLBACK_PATH, include_in_schema=False)
        async def oauth_callback(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._callback(request)

        @post("/auth/logout", include_in_schema=False, status_code=303)
        async def logout(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._logout(request)

        @get("/auth/session", include_in_schema=False)
        async def whoami(request: Request[Any, Any, State]) -> Response[Any]:
            user = await web.user(request)
            if user is None:
                return Response({"error": "not_signed_in"}, status_code=401, headers=NO_STORE)
            return Response(
                {"did": user.did, "handle": user.handle, "csrf_token": web.csrf.token(user.id_hash)}, headers=NO_STORE
            )

        @post("/auth/device/code", include_in_schema=True, status_code=200)
        async def device_code(request: Request[Any, Any, State]) -> Response[Any]:
            """RFC 8628 §3.1 device authorization request (form or JSON: client_id, client_name)."""
            return await web._device_code(request)

        @post("/auth/device/token", include_in_schema=True, status_code=200)
        async def device_token(request: Request[Any, Any, State]) -> Response[Any]:
            """RFC 8628 §3.4 polling; answers the device secret once, after approval."""
            return await web._device_token(request)

        @post("/auth/device/revoke", include_in_schema=True, status_code=200)
        async def device_revoke(request: Request[Any, Any, State]) -> Response[Any]:
            """A device revokes its own secret (the helper's `logout`)."""
            return await web._device_revoke_self(request)

        @get("/device", include_in_schema=False)
        async def device_page(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._device_page(request)

        @post("/device", include_in_schema=False, status_code=200)
        async def device_lookup(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._device_submit(request, "lookup")

        @post("/device/approve", include_in_schema=False, status_code=200)
        async def device_approve(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._device_submit(request, "approve")

        @post("/device/deny", include_in_schema=False, status_code=200)
        async def device_deny(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._device_submit(request, "deny")

        @get("/settings/devices", include_in_schema=False)
        async def devices_page(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._devices_page(request)

        @post("/settings/devices/{device_id:str}/revoke", include_in_schema=False, status_code=303)
        async def devices_revoke(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._revoke_form(request, str(request.path_params["device_id"]))

        @get("/api/devices", include_in_schema=False)
        async def api_devices(request: Request[Any, Any, State]) -> Response[Any]:
            user = await web.user(request)
            if user is None:
                return Response({"error": "not_signed_in"}, status_code=401, headers=NO_STORE)
            devices = await web.devices.devices(user.did)
            return Response({"devices": [d.__dict__ for d in devices]}, headers=NO_STORE)

        @delete("/api/devices/{device_id:str}", include_in_schema=False, status_code=200)
        async def api_device_delete(request: Request[Any, Any, State]) -> Response[Any]:
            device_id = str(request.path_params["device_id"])
            user = await web.user(request)
            if user is None:
                return Response({"error": "not_signed_in"}, status_code=401, headers=NO_STORE)
            try:
                await web._check_csrf(request, user, request.headers.get(HEADER))
            except CsrfRejected as exc:
                return web._json_error(exc)
            if not await web.devices.revoke(user.did, device_id):
                return Response({"error": "not_found"}, status_code=404, headers=NO_STORE)
            return Response(None, status_code=204, headers=NO_STORE)

        return [
            client_metadata,
            client_jwks,
            login_page,
            login_submit,
            oauth_callback,
            logout,
            whoami,
            device_code,
            device_token,
            device_revoke,
            device_page,
            device_lookup,
            device_approve,
            device_deny,
            devices_page,
            devices_revoke,
            api_devices,
            api_device_delete,
        ]


# --- wiring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    """The sign-in services of one AppView process, built from its settings."""

    client_config: OAuthClientConfig
    oauth: OAuthSessions
    devices: DeviceFlowService
    web: AuthWeb


def client_config_from(settings: AppViewSettings) -> OAuthClientConfig:
    """The OAuth client for these settings; the confidential client's key is made on first start."""
    from joserfc.jwk import ECKey

    from appview.auth.oauth.metadata import ClientKeys, client_mode, default_scope
    from atcr.keys import load_or_create_ec_key

    mode = client_mode(settings.base_url, settings.oauth_client)
    keys = None
    if mode == "confidential":
        current = ECKey.import_key(load_or_create_ec_key(settings.oauth_key_file))
        retired = tuple(ECKey.import_key(load_or_create_ec_key(Path(p))) for p in settings.oauth_retired_key_paths)
        keys = ClientKeys(current=current, retired=retired)
    return OAuthClientConfig.for_base_url(
        settings.base_url,
        mode=mode,
        scope=settings.oauth_scope or default_scope(permission_set=settings.oauth_permission_set),
        keys=keys,
        client_name=settings.oauth_client_name,
    )


def build_sign_in(
    settings: AppViewSettings,
    *,
    http: SafeHttpClient,
    resolver: IdentityResolver,
    valkey: avalkey.Valkey,
    secret: bytes,
    sessions: PdsSessionStore,
    after_login: AfterLogin | None = None,
    client_config: OAuthClientConfig | None = None,
) -> SignIn:
    """Build OAuth client, sessions, device flow and routes; plug the result in with
    `sessions.use_oauth(sign_in.oauth)` and `Authenticator(..., devices=sign_in.devices)`."""
    from appview.auth.oauth import OAuthClient
    from appview.auth.sessions import SessionCipher

    config = client_config or client_config_from(settings)
    cipher = SessionCipher(secret)
    oauth = OAuthSessions(OAuthClient(http, resolver, config), sessions, valkey, cipher)
    devices = DeviceFlowService(
        valkey,
        cipher,
        secret,
        base_url=settings.base_url,
        alive=oauth.ensure_alive,
        ttl=settings.device_code_ttl,
        interval=settings.device_poll_interval,
        bcrypt_rounds=settings.bcrypt_rounds,
    )
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.base_url))
    web = AuthWeb(
        config=WebAuthConfig(
            base_url=settings.base_url,
            secure_cookies=settings.base_url.startswith("https://"),
            session_ttl=settings.web_session_ttl,
        ),
        oauth=oauth,
        client_config=config,
        web_sessions=WebSessionStore(valkey, ttl=settings.web_session_ttl),
        csrf=CsrfGuard(secret, allowed_origins=(origin,)),
        devices=devices,
        after_login=after_login,
        addresses=ClientAddresses.from_settings(settings),
    )
    return SignIn(client_config=config, oauth=oauth, devices=devices, web=web)
