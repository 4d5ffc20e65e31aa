"""HTTP layer of the web UI: routes, forms, cookies and templates; no registry logic here.

Pages (server-rendered Jinja, readable without JavaScript)
  GET  /                                   home: recently pushed and popular repositories
  GET  /search?q=&page=                    users and repositories, ranked, paginated
  GET  /u/{handle-or-did}                  a user and their repositories
  GET  /r/{owner}/{repo...}                a repository (README, tags, stars, pulls, hold)
  GET  /r/{owner}/{repo...}/manifest/{digest}   one manifest (layers, platforms, referrers)
  GET  /r/{owner}/{repo...}/-/edit         the owner's description and icon form
  GET  /r/{owner}/{repo...}/-/rules        the owner's tag rules (immutable, retention) with a preview
  GET  /r/{owner}/{repo...}/-/delete?tag=|digest=   confirmation before a delete
  GET  /settings                           default hold, crew memberships, devices, sign out
Writes (POST, CSRF-checked, to the signed-in user's PDS)
  POST /r/{owner}/{repo...}/-/star         star=1|0; JSON answer when asked for (the star button)
  POST /r/{owner}/{repo...}/-/edit         io.atcr.repo.page (multipart: description, icon)
  POST /r/{owner}/{repo...}/-/rules        io.atcr.repo.policy (do=preview: show what would go, save nothing)
  POST /r/{owner}/{repo...}/-/delete       tag or digest, confirm=yes
  POST /settings/hold                      io.atcr.sailor.profile defaultHold
  GET  /settings/devices/revoke?device_id=   "revoke this device?" (confirmation)
  POST /settings/devices/revoke            device_id, confirm=yes (without it: the confirmation page)
Assets
  GET  /img/{did}/{cid}                    avatars and icons (caching proxy, `appview.web.blobs`)
  GET  /static/{name}                      app.js and friends (hashed for cache busting)
  GET  /favicon.ico                        the site icon (templates/static/favicon.ico)

Repository names contain slashes and litestar path parameters must come last, so `/r/` is
one catch-all route parsed here: a digest (it has a ``:``) or the ``-`` segment (not a valid
repository component) marks where the repository name ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.response import Redirect
from markupsafe import Markup
from valkey.exceptions import ValkeyError

from appview.holds.client import HoldError as HoldClientError
from appview.web import humanize
from appview.web.actions import Actions
from appview.web.blobs import BlobProxy
from appview.web.branding import DEFAULT_BRANDING, Branding
from appview.web.csrf import FORM_FIELD, HEADER
from appview.web.errors import (
    BadInput,
    FormExpired,
    NotOwner,
    PageNotFound,
    SignInRequired,
    UiError,
    UpstreamDown,
)
from appview.web.rules import RepoRules, RulesForm
from appview.web.scanview import badges, sbom_document, scan_view
from appview.web.signatures import Signatures, signature_infos
from appview.web.ui import UiService, Viewer
from appview.web.websession import WebSession
from atcr.syntax import is_oci_repository

if TYPE_CHECKING:
    import valkey.asyncio as avalkey

    from appview.auth.device import DeviceFlowService
    from appview.auth.sessions import PdsSessionStore
    from appview.cache.loader import Loader
    from appview.holds.client import HoldClient
    from appview.oci.registry import Registry
    from appview.provenance import ProvenanceService
    from appview.scans import ScanResults
    from appview.settings import AppViewSettings
    from appview.web.auth_routes import AuthWeb, SignIn
    from appview.web.discovery import Discovery
    from appview.webhooks.service import WebhookService
    from atcr.http import SafeHttpClient

log = logging.getLogger("appview.web.pages")

TEMPLATES: Final = Path(__file__).resolve().parents[2] / "templates"
STATIC: Final = TEMPLATES / "static"
# Text types without a charset: litestar appends "; charset=utf-8" to every text/* media type.
STATIC_TYPES: Final = {".js": "text/javascript", ".css": "text/css",
                       ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
_DIGEST: Final = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")

CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
API_PREFIXES: Final = (
    "/v2", "/xrpc", "/auth/token", "/auth/device/", "/auth/session", "/auth/oauth/jwks", "/api/", "/.well-known",
    "/client-metadata", "/livez", "/readyz",
)


@dataclass(frozen=True)
class RepoPath:
    """A parsed `/r/...` path."""

    owner: str
    repository: str
    digest: str | None = None
    action: str | None = None


def parse_repo_path(rest: str) -> RepoPath:
    """``owner/repo/with/slashes[/manifest/<digest> | /-/<action>]`` -> its parts, or PageNotFound."""
    parts = [p for p in rest.strip("/").split("/") if p]
    if len(parts) < 2:
        raise PageNotFound()
    owner, tail = parts[0], parts[1:]
    digest = action = None
    if "-" in tail:
        i = tail.index("-")
        if len(tail) != i + 2:
            raise PageNotFound()
        action, tail = tail[i + 1], tail[:i]
    elif len(tail) >= 3 and tail[-2] == "manifest" and _DIGEST.match(tail[-1]):
        digest, tail = tail[-1], tail[:-2]
    repository = "/".join(tail)
    if not repository or not is_oci_repository(repository):
        raise PageNotFound("That is not a valid repository name.")
    return RepoPath(owner, repository, digest, action)


def wants_html(request: Request[Any, Any, State]) -> bool:
    """Whether an error on this request should be a page (a browser) rather than JSON (an API)."""
    path = request.url.path
    if path.startswith(API_PREFIXES):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept or not accept


def _static_versions() -> dict[str, str]:
    out = {}
    if STATIC.is_dir():
        for f in sorted(STATIC.iterdir()):
            if f.is_file() and f.suffix in STATIC_TYPES:
                out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
    return out


class WebUi:
    """The UI routes; construct with the services, mount `handlers()`."""

    provenance: ProvenanceService | None = None  # set by create_app: the manifest page's publisher verdict
    webhooks: WebhookService | None = None  # set by create_app: the webhook settings page
    scans: ScanResults | None = None  # set by create_app: vulnerability badges and findings
    signatures: Signatures | None = None  # set by create_app: who signed, as the signature referrers say
    request_scan: Callable[[str, str, str], Awaitable[dict[str, Any]]] | None = None  # HoldClient.request_scan

    def __init__(
        self,
        ui: UiService,
        actions: Actions,
        blobs: BlobProxy,
        auth: AuthWeb,
        devices: DeviceFlowService,
        discovery: Discovery | None = None,
        *,
        templates_dir: Path = TEMPLATES,
    ) -> None:
        self.ui = ui
        self.actions = actions
        self.rules = RepoRules(actions)
        self.blobs = blobs
        self.auth = auth
        self.devices = devices
        self.discovery = discovery
        self.static_dir = templates_dir / "static"
        self.versions = _static_versions()
        self.static_bytes = {n: (self.static_dir / n).read_bytes() for n in self.versions}
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(humanize.FILTERS)
        self.env.filters["isotime"] = humanize.iso
        self.env.filters["urlpart"] = lambda s: quote(str(s), safe="/:@")
        self.env.filters["breakable"] = breakable
        self.env.globals["static"] = self.static_url
        self.env.globals["brand"] = DEFAULT_BRANDING
        self.page_headers: dict[str, str] = dict(PAGE_HEADERS)

    # --- helpers -------------------------------------------------------------------------------

    def brand(self, branding: Branding) -> None:
        """Apply the AppView's branding (appview/web/branding.py) to these pages and the sign-in pages."""
        branding.install(self.env)
        self.page_headers = branding.headers(dict(PAGE_HEADERS))
        for name, data in branding.static_overrides().items():
            if Path(name).suffix in STATIC_TYPES:
                self.static_bytes[name] = data
                self.versions[name] = hashlib.sha256(data).hexdigest()[:12]
        self.auth.brand(branding)

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.versions.get(name, '0')}"

    async def session(self, request: Request[Any, Any, State]) -> WebSession | None:
        return await self.auth.user(request)

    @staticmethod
    def viewer(session: WebSession | None) -> Viewer | None:
        return Viewer(session.did, session.handle) if session is not None else None

    def render(
        self,
        request: Request[Any, Any, State],
        template: str,
        session: WebSession | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> Response[str]:
        token = self.auth.csrf.token(session.id_hash) if session is not None else ""
        html = self.env.get_template(template).render(
            user=session, csrf_token=token, path=request.url.path, **context
        )
        # litestar adds "; charset=utf-8" itself (naming it here too sent it twice).
        return Response(html, status_code=status, media_type="text/html", headers=self.page_headers)

    def error_page(self, request: Request[Any, Any, State], session: WebSession | None, exc: UiError) -> Response[Any]:
        if _wants_json(request):
            return Response({"error": exc.title, "message": exc.message}, status_code=exc.status,
                            headers={"Cache-Control": "no-store"})
        return self.render(request, "error.html", session, status=exc.status, error=exc,
                           next=_back_to(request))

    def plain_error(self, request: Request[Any, Any, State], status: int) -> Response[Any]:
        """For the app-wide handler: routes that do not exist, and unexpected failures."""
        exc: UiError = PageNotFound() if status == 404 else UpstreamDown() if status == 503 else UiError()
        exc.status = status
        if status == 405:
            exc.title, exc.message = "Not allowed", "This address does not accept that kind of request."
        return self.render(request, "error.html", None, status=status, error=exc, next="/")

    async def _form(self, request: Request[Any, Any, State]) -> dict[str, Any]:
        form = await request.form()
        return {str(k): v for k, v in form.items()}

    def _check_csrf(self, request: Request[Any, Any, State], session: WebSession, form: dict[str, Any]) -> None:
        token = form.get(FORM_FIELD) or request.headers.get(HEADER)
        if not self.auth.csrf.check(binding=session.id_hash, token=token if isinstance(token, str) else None,
                                    origin=request.headers.get("origin"), referer=request.headers.get("referer")):
            raise FormExpired()

    async def _signed_in(self, request: Request[Any, Any, State]) -> tuple[WebSession, dict[str, Any]]:
        session = await self.session(request)
        if session is None:
            raise SignInRequired()
        form = await self._form(request)
        self._check_csrf(request, session, form)
        return session, form

    @staticmethod
    def _login(next_path: str) -> Redirect:
        return Redirect(path="/auth/login?" + urlencode({"next": next_path}), status_code=303,
                        headers={"Cache-Control": "no-store"})

    # --- pages ---------------------------------------------------------------------------------

    async def home(self, request: Request[Any, Any, State]) -> Response[Any]:
        session = await self.session(request)
        if self.discovery is not None:
            await self.discovery.ensure()
        by = str(request.query_params.get("popular") or "stars")
        page = await self.ui.home(by)
        return self.render(request, "home.html", session, page=page)

    async def search(self, request: Request[Any, Any, State]) -> Response[Any]:
        session = await self.session(request)
        query = str(request.query_params.get("q") or "")
        try:
            number = int(str(request.query_params.get("page") or "1"))
        except ValueError:
            number = 1
        if self.discovery is not None and query.strip():
            await self.discovery.ensure()
        page = await self.ui.search(query, number)
        return self.render(request, "search.html", session, page=page, q=query)

    async def user(self, request: Request[Any, Any, State], name: str) -> Response[Any]:
        session = await self.session(request)
        page = await self.ui.user(name, self.viewer(session))
        return self.render(request, "user.html", session, page=page)

    async def repo_get(self, request: Request[Any, Any, State], rest: str) -> Response[Any]:
        session = await self.session(request)
        where = parse_repo_path(rest)
        viewer = self.viewer(session)
        if where.digest is not None:
            manifest = await self.ui.manifest(where.owner, where.repository, where.digest, viewer)
            hold_did = manifest.hold.did if manifest.hold is not None else None
            if request.query_params.get("download") == "sbom":
                return await self._sbom_download(manifest.owner.did, manifest.repository, manifest.digest, hold_did,
                                                 viewer.did if viewer else None)
            published = await self.provenance.badge(manifest.owner.did, manifest.repository, manifest.digest) \
                if self.provenance is not None else None
            scan = await scan_view(
                self.scans, manifest.owner.did, manifest.repository, manifest.digest, hold_did,
                sort=request.query_params.get("sort", "severity"), package_filter=request.query_params.get("pkg", ""),
                viewer=viewer.did if viewer else None,
            )
            signed = await signature_infos(self.signatures, self.ui.loader, manifest.owner.did, manifest.repository,
                                           manifest.referrers)
            return self.render(request, "manifest.html", session, page=manifest, published=published, scan=scan,
                               signed=signed, message=_message(request.query_params.get("done")))
        if where.action is None:
            page = await self.ui.repo(where.owner, where.repository, viewer)
            scan_badges = await badges(self.scans, page.owner.did, page.repository,
                                       [(t.digest, t.hold_did) for t in page.tags], viewer.did if viewer else None)
            return self.render(request, "repo.html", session, page=page, scan_badges=scan_badges,
                               message=_message(request.query_params.get("done")))
        if where.action not in ("edit", "delete", "rules"):
            raise PageNotFound()
        if session is None:
            return self._login(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        page = await self.ui.repo(where.owner, where.repository, viewer)
        if not page.is_owner:
            raise NotOwner()
        if where.action == "edit":
            return self.render(request, "repo_edit.html", session, page=page)
        if where.action == "rules":
            owner_viewer = Viewer(session.did, session.handle)
            policy = await self.rules.load(owner_viewer, where.owner, where.repository)
            plan = await self.rules.preview(owner_viewer, where.owner, where.repository, policy)
            return self.render(request, "repo_rules.html", session, page=page, form=RulesForm.of(policy), plan=plan,
                               previewing=False, message=_message(request.query_params.get("done")))
        tag = request.query_params.get("tag")
        digest = request.query_params.get("digest")
        if not tag and not digest:
            raise BadInput("Name the tag or the manifest to delete.")
        return self.render(request, "confirm_delete.html", session, page=page, tag=tag, digest=digest)

    async def _sbom_download(self, did: str, repository: str, digest: str, hold_did: str | None,
                             viewer: str | None) -> Response[Any]:
        doc = await sbom_document(self.scans, did, repository, digest, hold_did, viewer)
        if doc is None:
            raise PageNotFound("This manifest has no SBOM (it was not scanned, or its hold did not answer).")
        name = f"{repository.replace('/', '_')}-{digest.removeprefix('sha256:')[:12]}.spdx.json"
        return Response(json.dumps(doc, indent=2), media_type="application/spdx+json",
                        headers={**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})

    async def _rescan(self, viewer: Viewer, owner: str, repository: str, digest: str, base: str) -> Response[Any]:
        """The owner's "scan again": the hold that stores the manifest queues it (their service token)."""
        manifest = await self.ui.manifest(owner, repository, digest, viewer)
        if not manifest.is_owner:
            raise NotOwner()
        if manifest.hold is None or self.request_scan is None:
            raise BadInput("The hold storing this manifest did not answer; try again shortly.")
        try:
            await self.request_scan(manifest.hold.did, viewer.did, manifest.digest)
        except HoldClientError as exc:
            raise BadInput(f"The hold did not queue a scan: {exc.message or exc.error}") from None
        return Redirect(path=f"{base}/manifest/{manifest.digest}?done=rescan", status_code=303,
                        headers={"Cache-Control": "no-store"})

    async def repo_post(self, request: Request[Any, Any, State], rest: str) -> Response[Any]:
        where = parse_repo_path(rest)
        if where.action not in ("star", "edit", "delete", "rules", "rescan") or where.digest is not None:
            raise PageNotFound()
        session, form = await self._signed_in(request)
        viewer = Viewer(session.did, session.handle)
        base = f"/r/{where.owner}/{where.repository}"
        if where.action == "rescan":
            return await self._rescan(viewer, where.owner, where.repository, str(form.get("digest") or ""), base)
        if where.action == "rules":
            rules_form = RulesForm.from_post(form)
            policy = rules_form.policy(where.repository)
            if str(form.get("do") or "") == "preview":  # what these rules would remove, nothing saved
                page = await self.ui.repo(where.owner, where.repository, viewer)
                plan = await self.rules.preview(viewer, where.owner, where.repository, policy)
                return self.render(request, "repo_rules.html", session, page=page, form=rules_form, plan=plan,
                                   previewing=True, message=None)
            await self.rules.save(viewer, where.owner, where.repository, policy)
            return Redirect(path=f"{base}/-/rules?done=rules-saved", status_code=303,
                            headers={"Cache-Control": "no-store"})
        if where.action == "star":
            on = str(form.get("star", "1")) != "0"
            state = await self.actions.set_star(viewer, where.owner, where.repository, on=on)
            if _wants_json(request):
                return Response({"starred": state.starred, "count": state.count}, status_code=200,
                                headers={"Cache-Control": "no-store"})
            return Redirect(path=base, status_code=303, headers={"Cache-Control": "no-store"})
        if where.action == "edit":
            icon: bytes | None = None
            upload = form.get("icon")
            if isinstance(upload, UploadFile):
                icon = await upload.read(3_000_001) or None
            await self.actions.edit_page(
                viewer, where.owner, where.repository,
                description=str(form.get("description") or ""),
                icon=icon,
                remove_icon=str(form.get("remove_icon") or "") == "1",
            )
            return Redirect(path=base + "?done=saved", status_code=303, headers={"Cache-Control": "no-store"})
        tag = str(form["tag"]) if form.get("tag") else None
        digest = str(form["digest"]) if form.get("digest") else None
        if str(form.get("confirm") or "") != "yes":
            query = urlencode({"tag": tag} if tag else {"digest": digest or ""})
            return Redirect(path=f"{base}/-/delete?{query}", status_code=303, headers={"Cache-Control": "no-store"})
        await self.actions.delete(viewer, where.owner, where.repository, tag=tag, digest=digest)
        done = "tag-deleted" if tag else "manifest-deleted"
        return Redirect(path=f"{base}?done={done}", status_code=303, headers={"Cache-Control": "no-store"})

    async def settings(self, request: Request[Any, Any, State]) -> Response[Any]:
        session = await self.session(request)
        if session is None:
            return self._login("/settings")
        page = await self.ui.settings(Viewer(session.did, session.handle))
        devices = await self.devices.devices(session.did)
        return self.render(request, "settings.html", session, page=page, devices=devices,
                           message=_message(request.query_params.get("done")))

    async def settings_hold(self, request: Request[Any, Any, State]) -> Response[Any]:
        session, form = await self._signed_in(request)
        choice = str(form.get("hold") or "")
        if choice == "other":
            choice = str(form.get("other_hold") or "")
        await self.actions.set_default_hold(Viewer(session.did, session.handle), choice)
        return Redirect(path="/settings?done=hold#storage", status_code=303, headers={"Cache-Control": "no-store"})

    async def settings_revoke_confirm(self, request: Request[Any, Any, State]) -> Response[Any]:
        """"Revoke this device?": what it is, what stops working, and the button that does it."""
        session = await self.session(request)
        device_id = str(request.query_params.get("device_id") or "")[:100]
        back = _devices_back(request.query_params.get("back"))
        if session is None:
            return self._login(f"/settings/devices/revoke?{urlencode({'device_id': device_id, 'back': back})}")
        device = next((d for d in await self.devices.devices(session.did) if d.id == device_id), None)
        if device is None:
            raise PageNotFound("That device is not signed in to your account (it may have been revoked already).")
        return self.render(request, "confirm_revoke.html", session, device=device, back=back)

    async def settings_revoke(self, request: Request[Any, Any, State]) -> Response[Any]:
        session, form = await self._signed_in(request)
        device_id = str(form.get("device_id") or "")[:100]
        back = _devices_back(form.get("back"))
        if str(form.get("confirm") or "") != "yes":
            query = urlencode({"device_id": device_id, "back": back})
            return Redirect(path=f"/settings/devices/revoke?{query}", status_code=303,
                            headers={"Cache-Control": "no-store"})
        revoked = await self.devices.revoke(session.did, device_id)
        if back == "/settings/devices":
            return Redirect(path="/settings/devices" + ("?revoked=1" if revoked else ""), status_code=303,
                            headers={"Cache-Control": "no-store"})
        done = "revoked" if revoked else "revoke-missing"
        return Redirect(path=f"/settings?done={done}#devices", status_code=303, headers={"Cache-Control": "no-store"})

    def favicon(self) -> Response[Any]:
        return Response(self.static_bytes["favicon.ico"], media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    async def image(self, did: str, cid: str) -> Response[Any]:
        found = await self.blobs.get(did, cid)
        if found is None:
            return Response(b"", status_code=404, headers={"Cache-Control": "public, max-age=300"})
        return Response(
            found.data,
            media_type=found.mime,
            headers={
                "Cache-Control": "public, max-age=604800, immutable",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )

    def static(self, request: Request[Any, Any, State], name: str) -> Response[Any]:
        data = self.static_bytes.get(name)
        if data is None:
            return Response(b"", status_code=404)
        current = request.query_params.get("v") == self.versions[name]
        cache = "public, max-age=31536000, immutable" if current else "public, max-age=300"
        return Response(data, media_type=STATIC_TYPES[Path(name).suffix],
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})

    async def aclose(self) -> None:
        if self.discovery is not None:
            await self.discovery.aclose()

    # --- routes --------------------------------------------------------------------------------

    async def _guard(self, request: Request[Any, Any, State], page: Any) -> Response[Any]:
        """Run a page; a UiError becomes its error page (never a stack trace). The time spent
        goes out as `Server-Timing`, so slow pages show in any browser's network panel."""
        started = time.perf_counter()
        try:
            result: Response[Any] = await page
        except UiError as exc:
            result = self.error_page(request, await self.session(request), exc)
        result.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return result

    def handlers(self) -> list[Any]:
        web = self

        @get("/", include_in_schema=False)
        async def home(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.home(request))

        @get("/search", include_in_schema=False)
        async def search(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.search(request))

        @get("/u/{name:str}", include_in_schema=False)
        async def user(request: Request[Any, Any, State], name: str) -> Response[Any]:
            return await web._guard(request, web.user(request, name))

        @get("/r/{rest:path}", include_in_schema=False)
        async def repo(request: Request[Any, Any, State], rest: str) -> Response[Any]:
            return await web._guard(request, web.repo_get(request, rest))

        @post("/r/{rest:path}", include_in_schema=False, status_code=303)
        async def repo_action(request: Request[Any, Any, State], rest: str) -> Response[Any]:
            return await web._guard(request, web.repo_post(request, rest))

        @get("/settings", include_in_schema=False)
        async def settings(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.settings(request))

        @post("/settings/hold", include_in_schema=False, status_code=303)
        async def settings_hold(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.settings_hold(request))

        @get("/settings/devices/revoke", include_in_schema=False)
        async def settings_revoke_confirm(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.settings_revoke_confirm(request))

        @post("/settings/devices/revoke", include_in_schema=False, status_code=303)
        async def settings_revoke(request: Request[Any, Any, State]) -> Response[Any]:
            return await web._guard(request, web.settings_revoke(request))

        @get("/favicon.ico", include_in_schema=False, sync_to_thread=False)
        def favicon() -> Response[Any]:
            return web.favicon()

        @get("/img/{did:str}/{cid:str}", include_in_schema=False)
        async def image(did: str, cid: str) -> Response[Any]:
            return await web.image(did, cid)

        @get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
        def static(request: Request[Any, Any, State], name: str) -> Response[Any]:
            return web.static(request, name)

        extra: list[Any] = []
        if web.webhooks is not None:
            from appview.web.webhooks_page import WebhooksPage

            extra = WebhooksPage(web, web.webhooks).handlers()
        return [home, search, user, repo, repo_action, settings, settings_hold, settings_revoke_confirm,
                settings_revoke, favicon, image, static, *extra]


def _back_to(request: Request[Any, Any, State]) -> str:
    """Where "sign in" or "try again" should lead: the page a form was on, not the form's action."""
    path = request.url.path
    if request.method == "GET":
        return path
    if path.startswith("/settings/"):
        return "/settings"
    return path.split("/-/", 1)[0] if "/-/" in path else "/"


def breakable(text: Any) -> Markup:
    """`text`, escaped, with a line-break opportunity (<wbr>) after each / : and @, so a long image
    reference wraps between its parts instead of anywhere (copying it copies no extra characters)."""
    return Markup("<wbr>").join(re.split(r"(?<=[/:@])", str(text)))  # join() escapes each part


def _devices_back(value: Any) -> str:
    """Where a revoke returns to: the devices page it started from, else settings (never elsewhere)."""
    return "/settings/devices" if value == "/settings/devices" else "/settings"


def _wants_json(request: Request[Any, Any, State]) -> bool:
    return "application/json" in request.headers.get("accept", "")


MESSAGES: Final = {
    "saved": "Saved. The page shows your new description.",
    "tag-deleted": "The tag was deleted.",
    "manifest-deleted": "The manifest and the tags that pointed at it were deleted.",
    "hold": "Your default hold was saved. New pushes go there.",
    "revoked": "The device was revoked; its credentials stopped working.",
    "revoke-missing": "That device was already gone.",
    "rules-saved": "The rules were saved. Pushes follow them from now on.",
    "rescan": "A new scan was queued; this page shows it when it is done.",
}


def _message(key: Any) -> str | None:
    return MESSAGES.get(str(key)) if key else None


def html_error(request: Request[Any, Any, State], exc: Exception) -> Response[Any] | None:
    """The app-wide handler's page for browsers (unknown routes, unexpected failures); None
    for API requests, which keep their JSON errors."""
    web: WebUi | None = getattr(request.app.state, "web_ui", None)
    if web is None or not wants_html(request):
        return None
    status = getattr(exc, "status_code", 500)
    status = status if isinstance(status, int) and 400 <= status < 600 else 500
    if isinstance(exc, ValkeyError):
        log.warning("valkey unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return web.plain_error(request, 503)
    if status >= 500:
        log.error("error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return web.plain_error(request, status)


def build_web_ui(
    settings: AppViewSettings,
    *,
    valkey: avalkey.Valkey,
    http: SafeHttpClient,
    loader: Loader,
    holds: HoldClient,
    sessions: PdsSessionStore,
    registry: Registry,
    sign_in: SignIn,
) -> WebUi:
    """The UI of one AppView process, from its settings and the services `create_app` built."""
    from urllib.parse import urlsplit

    from appview.web.configinfo import ConfigPlatforms
    from appview.web.discovery import Discovery
    from appview.web.holdhealth import HoldHealth

    health = HoldHealth(http, holds.endpoint)
    ui = UiService(
        loader, health, registry_host=urlsplit(settings.base_url).netloc or settings.service,
        default_hold_did=settings.default_hold_did, configs=ConfigPlatforms(valkey, http, holds),
        gc_runs=holds.gc_runs,
        plain_http=settings.base_url.startswith("http://"), hold_wait=settings.ui_hold_wait,
    )
    discovery = Discovery(
        valkey, http, loader, holds=[settings.default_hold_did], relay=settings.ui_discovery_relay or None
    )
    web = WebUi(
        ui, Actions(loader, sessions, registry), BlobProxy(valkey, http, loader), sign_in.web, sign_in.devices,
        discovery,
    )
    web.brand(Branding.from_settings(settings))
    return web


__all__ = ["RepoPath", "WebUi", "build_web_ui", "html_error", "parse_repo_path", "wants_html"]
