"""The webhook JSON API (HTTP layer only; `service.py` does the work).

  POST   /api/webhooks                      {"url", "events": [...], "repository"?} -> 201 with the secret
  GET    /api/webhooks                      {"webhooks": [...]}
  DELETE /api/webhooks/{id}                 204
  POST   /api/webhooks/{id}/test            202 {"id": message id}
  GET    /api/webhooks/{id}/deliveries      {"deliveries": [...]} (the last 50 attempts)
  POST   /api/webhooks/{id}/deliveries/{delivery}/redeliver   202

Credentials: those of `docker login` (Basic with an app password or a device secret, checked
by the same `Authenticator` and login limiter as /auth/token) or the web session cookie, which
must then carry the page's CSRF token in ``X-CSRF-Token`` for writes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from valkey.exceptions import ValkeyError

from appview.auth.credentials import Principal
from appview.auth.routes import _basic
from appview.errors import Denied, RegistryError, Unauthorized, Unavailable
from appview.oci.routes import error_response
from appview.web.csrf import HEADER
from appview.webhooks.errors import WebhookInvalid
from appview.webhooks.service import WebhookService, created_view

BasicLogin = Callable[[Request[Any, Any, State], str, str], Awaitable[Principal]]
MAX_BODY = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}


class WebhookApi:
    def __init__(self, service: WebhookService, login: BasicLogin, web: Any) -> None:
        self.service = service
        self.login = login
        self.web = web  # appview.web.auth_routes.AuthWeb: the session cookie and CSRF

    async def caller(self, request: Request[Any, Any, State], *, write: bool) -> str:
        """The DID the request acts as (Basic credentials first, else the web session)."""
        creds = _basic(request.headers.get("authorization", ""))
        if creds is not None:
            return (await self.login(request, *creds)).did
        session = await self.web.user(request)
        if session is None:
            raise Unauthorized("sign in, or send Basic credentials (your docker login)",
                               headers={"WWW-Authenticate": 'Basic realm="webhooks"'})
        if write and not self.web.csrf.check(
            binding=session.id_hash, token=request.headers.get(HEADER),
            origin=request.headers.get("origin"), referer=request.headers.get("referer"),
        ):
            raise Denied("a web session's writes need the page's CSRF token in X-CSRF-Token")
        return str(session.did)

    async def _run(self, work: Awaitable[Response[Any]]) -> Response[Any]:
        try:
            return await work
        except RegistryError as exc:
            return error_response(exc)
        except (ValkeyError, OSError):
            return error_response(Unavailable("state store unavailable; retry", headers={"Retry-After": "5"}))

    async def _create(self, request: Request[Any, Any, State]) -> Response[Any]:
        did = await self.caller(request, write=True)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise WebhookInvalid("request body too large")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, RecursionError):
            raise WebhookInvalid("body: expected JSON {\"url\", \"events\", \"repository\"?}") from None
        if not isinstance(body, dict):
            raise WebhookInvalid("body: expected a JSON object")
        hook, secret = await self.service.create(did, body.get("url"), body.get("events"), body.get("repository"))
        return Response(created_view(hook, secret), status_code=201, headers=NO_STORE)

    def handlers(self) -> list[Any]:
        api = self

        @post("/api/webhooks", include_in_schema=False, status_code=201)
        async def create_webhook(request: Request[Any, Any, State]) -> Response[Any]:
            """Create a webhook; the answer carries its signing secret (shown this once)."""
            return await api._run(api._create(request))

        @get("/api/webhooks", include_in_schema=False)
        async def list_webhooks(request: Request[Any, Any, State]) -> Response[Any]:
            async def work() -> Response[Any]:
                did = await api.caller(request, write=False)
                return Response({"webhooks": await api.service.listing(did)}, headers=NO_STORE)

            return await api._run(work())

        @delete("/api/webhooks/{hook_id:str}", include_in_schema=False, status_code=200)
        async def delete_webhook(request: Request[Any, Any, State], hook_id: str) -> Response[Any]:
            async def work() -> Response[Any]:
                did = await api.caller(request, write=True)
                await api.service.delete(did, hook_id)
                return Response(None, status_code=204)

            return await api._run(work())

        @post("/api/webhooks/{hook_id:str}/test", include_in_schema=False, status_code=202)
        async def test_webhook(request: Request[Any, Any, State], hook_id: str) -> Response[Any]:
            async def work() -> Response[Any]:
                did = await api.caller(request, write=True)
                message_id = await api.service.send_test(did, hook_id)
                return Response({"id": message_id}, status_code=202, headers=NO_STORE)

            return await api._run(work())

        @get("/api/webhooks/{hook_id:str}/deliveries", include_in_schema=False)
        async def webhook_deliveries(request: Request[Any, Any, State], hook_id: str) -> Response[Any]:
            async def work() -> Response[Any]:
                did = await api.caller(request, write=False)
                return Response({"deliveries": await api.service.deliveries(did, hook_id)}, headers=NO_STORE)

            return await api._run(work())

        @post("/api/webhooks/{hook_id:str}/deliveries/{delivery:str}/redeliver", include_in_schema=False,
              status_code=202)
        async def redeliver(request: Request[Any, Any, State], hook_id: str, delivery: str) -> Response[Any]:
            async def work() -> Response[Any]:
                did = await api.caller(request, write=True)
                await api.service.redeliver(did, hook_id, delivery)
                return Response({"id": delivery}, status_code=202, headers=NO_STORE)

            return await api._run(work())

        return [create_webhook, list_webhooks, delete_webhook, test_webhook, webhook_deliveries, redeliver]


__all__ = ["WebhookApi"]
