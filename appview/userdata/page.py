"""The "your data" settings page (HTTP layer; `service.py` does the work).

  GET  /settings/data             what the registry keeps, what stays and why, the two actions
  POST /settings/data/export      confirm=yes, format=json|zip: the download
  POST /settings/data/delete      confirm=<your handle or DID>: everything goes; the browser is signed out

Both actions need a sign-in younger than ATCR_RECENT_AUTH_SECONDS (else: sign in again) and a
confirmation, and are CSRF-checked like every settings form.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect

from appview.userdata.service import UserDataService, as_zip
from appview.web.errors import BadInput, SignInRequired

if TYPE_CHECKING:
    from appview.web.pages import WebUi
    from appview.web.websession import WebSession

PATH = "/settings/data"


class UserDataPage:
    def __init__(self, web: WebUi, service: UserDataService, *, recent_auth: int) -> None:
        self.web = web
        self.service = service
        self.recent_auth = recent_auth

    def fresh(self, session: WebSession) -> bool:
        return time.time() - session.created <= self.recent_auth

    def _again(self) -> Redirect:
        """Back through the sign-in: a new session is a fresh one."""
        return Redirect(path="/auth/login?" + urlencode({"next": PATH, "reauth": "1"}), status_code=303,
                        headers={"Cache-Control": "no-store"})

    async def show(self, request: Request[Any, Any, State]) -> Response[Any]:
        session = await self.web.session(request)
        if session is None:
            return self.web._login(PATH)
        holds = await self.service.hold_dids(session.did)
        return self.web.render(request, "userdata.html", session, fresh=self.fresh(session), holds=holds,
                               minutes=max(1, self.recent_auth // 60), error=None)

    async def _checked(self, request: Request[Any, Any, State]) -> tuple[WebSession, Any] | Redirect:
        session = await self.web.session(request)
        if session is None:
            raise SignInRequired()
        form = await request.form()
        self.web._check_csrf(request, session, {k: v for k, v in form.items()})
        if not self.fresh(session):
            return self._again()
        return session, form

    async def export(self, request: Request[Any, Any, State]) -> Response[Any]:
        checked = await self._checked(request)
        if isinstance(checked, Redirect):
            return checked
        session, form = checked
        if form.get("confirm") != "yes":
            raise BadInput("Tick the box to confirm the download: the file holds your personal data.")
        data = await self.service.export(session.did, session.handle)
        stamp = time.strftime("%Y%m%d", time.gmtime())
        headers = {"Cache-Control": "no-store"}
        if form.get("format") == "zip":
            headers["Content-Disposition"] = f'attachment; filename="atcr-data-{stamp}.zip"'
            return Response(as_zip(data), media_type="application/zip", headers=headers)
        headers["Content-Disposition"] = f'attachment; filename="atcr-data-{stamp}.json"'
        return Response(json.dumps(data, indent=2, sort_keys=True), media_type="application/json", headers=headers)

    async def delete(self, request: Request[Any, Any, State]) -> Response[Any]:
        checked = await self._checked(request)
        if isinstance(checked, Redirect):
            return checked
        session, form = checked
        typed = str(form.get("confirm") or "").strip().lower()
        if typed not in {session.did.lower(), (session.handle or "").lower()} or not typed:
            holds = await self.service.hold_dids(session.did)
            return self.web.render(request, "userdata.html", session, status=400, fresh=True, holds=holds,
                                   minutes=max(1, self.recent_auth // 60),
                                   error="Type your handle (or DID) exactly to confirm the deletion.")
        outcome = await self.service.delete(session.did)
        response = self.web.render(request, "userdata_deleted.html", None, outcome=outcome, did=session.did)
        response.delete_cookie("atcr_session")
        return response

    def handlers(self) -> list[Any]:
        page = self

        @get(PATH, include_in_schema=False)
        async def userdata_page(request: Request[Any, Any, State]) -> Response[Any]:
            return await page.web._guard(request, page.show(request))

        @post(f"{PATH}/export", include_in_schema=False, status_code=200)
        async def userdata_export(request: Request[Any, Any, State]) -> Response[Any]:
            return await page.web._guard(request, page.export(request))

        @post(f"{PATH}/delete", include_in_schema=False, status_code=200)
        async def userdata_delete(request: Request[Any, Any, State]) -> Response[Any]:
            return await page.web._guard(request, page.delete(request))

        return [userdata_page, userdata_export, userdata_delete]


__all__ = ["UserDataPage"]
