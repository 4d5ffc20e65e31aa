"""The webhook settings page (HTTP layer; `appview.webhooks.service` does the work).

  GET  /settings/webhooks                       the user's webhooks, each with its delivery log
  POST /settings/webhooks                       create (url, events, repository): the page shows the secret once
  POST /settings/webhooks/{id}/test             queue a test event
  POST /settings/webhooks/{id}/redeliver        delivery=<id>: send a logged delivery again
  POST /settings/webhooks/{id}/delete           remove the webhook and its log

Forms only (no script needed), CSRF-checked like every other settings form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect

from appview.errors import RegistryError
from appview.web.errors import BadInput, PageNotFound, SignInRequired
from appview.webhooks.errors import WebhookUnknown
from appview.webhooks.events import EVENT_KINDS

if TYPE_CHECKING:
    from appview.web.pages import WebUi
    from appview.web.websession import WebSession
    from appview.webhooks.service import WebhookService

NOTICES = {
    "test": "A test event was queued; it shows in the log below once sent.",
    "redeliver": "The delivery was queued again.",
    "deleted": "The webhook was deleted.",
}


def _done(hook_id: str | None, what: str) -> Redirect:
    anchor = f"#{hook_id}" if hook_id else ""
    return Redirect(path=f"/settings/webhooks?done={what}{anchor}", status_code=303,
                    headers={"Cache-Control": "no-store"})


class WebhooksPage:
    def __init__(self, web: WebUi, service: WebhookService) -> None:
        self.web = web
        self.service = service

    async def _page(self, request: Request[Any, Any, State], session: WebSession, *, status: int = 200,
                    created: dict[str, Any] | None = None, error: str | None = None,
                    form: dict[str, Any] | None = None) -> Response[Any]:
        hooks = await self.service.listing(session.did)
        for hook in hooks:
            hook["deliveries"] = await self.service.deliveries(session.did, hook["id"])
        notice = NOTICES.get(str(request.query_params.get("done") or ""))
        return self.web.render(request, "webhooks.html", session, status=status, hooks=hooks, kinds=EVENT_KINDS,
                               created=created, error=error, notice=notice, form=form or {"events": ["push"]})

    async def show(self, request: Request[Any, Any, State]) -> Response[Any]:
        session = await self.web.session(request)
        if session is None:
            return self.web._login("/settings/webhooks")
        return await self._page(request, session)

    async def _form(self, request: Request[Any, Any, State]) -> tuple[WebSession, Any]:
        session = await self.web.session(request)
        if session is None:
            raise SignInRequired()
        form = await request.form()
        self.web._check_csrf(request, session, {k: v for k, v in form.items()})
        return session, form

    async def create(self, request: Request[Any, Any, State]) -> Response[Any]:
        session, form = await self._form(request)
        events = [str(e) for e in form.getall("events", [])]
        url, repository = str(form.get("url") or "").strip(), str(form.get("repository") or "").strip()
        try:
            hook, secret = await self.service.create(session.did, url, events, repository or None)
        except RegistryError as exc:
            return await self._page(request, session, status=400, error=exc.message,
                                    form={"url": url, "events": events, "repository": repository})
        return await self._page(request, session, created={**hook.public(), "secret": secret})

    async def act(self, request: Request[Any, Any, State], hook_id: str, action: str) -> Response[Any]:
        session, form = await self._form(request)
        try:
            if action == "test":
                await self.service.send_test(session.did, hook_id)
            elif action == "redeliver":
                await self.service.redeliver(session.did, hook_id, str(form.get("delivery") or ""))
            elif action == "delete":
                await self.service.delete(session.did, hook_id)
                return _done(None, "deleted")
            else:
                raise PageNotFound()
        except WebhookUnknown:
            raise PageNotFound() from None
        except RegistryError as exc:
            raise BadInput(exc.message) from None
        return _done(hook_id, action)

    def handlers(self) -> list[Any]:
        page = self

        @get("/settings/webhooks", include_in_schema=False)
        async def webhooks_page(request: Request[Any, Any, State]) -> Response[Any]:
            return await page.web._guard(request, page.show(request))

        @post("/settings/webhooks", include_in_schema=False, status_code=200)
        async def webhooks_create(request: Request[Any, Any, State]) -> Response[Any]:
            return await page.web._guard(request, page.create(request))

        @post("/settings/webhooks/{hook_id:str}/{action:str}", include_in_schema=False, status_code=303)
        async def webhooks_action(request: Request[Any, Any, State], hook_id: str, action: str) -> Response[Any]:
            return await page.web._guard(request, page.act(request, hook_id, action))

        return [webhooks_page, webhooks_create, webhooks_action]


__all__ = ["WebhooksPage"]
