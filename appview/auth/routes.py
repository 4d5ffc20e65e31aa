"""`/auth/token` (Docker token spec: GET with Basic, POST OAuth2 form) and the JWKS."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get, route
from litestar.datastructures import State
from litestar.enums import HttpMethod
from valkey.exceptions import ValkeyError

from appview.auth.credentials import Authenticator, Principal
from appview.auth.tokens import Access, TokenService, parse_scope
from appview.clientaddr import ClientAddresses, limit_key
from appview.errors import RegistryError, Unauthorized, Unavailable
from appview.oci.routes import error_response
from atcr.errors import AtcrError

# Resolves the identity part of a repository name to a DID (None when it does not resolve).
OwnerLookup = Callable[[str], Awaitable[str | None]]
# Called after a successful login (e.g. to create the sailor profile); must not raise.
AfterLogin = Callable[[Principal], Awaitable[None]]

MAX_SCOPES = 20


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    if decoded.startswith("did:"):
        # A DID username has colons of its own: did:<method>:<id>, then ':' and the password.
        parts = decoded.split(":", 3)
        if len(parts) != 4:
            raise Unauthorized("malformed Basic credentials")
        return ":".join(parts[:3]), parts[3]
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("malformed Basic credentials")
    return user, password


class TokenApi:
    def __init__(
        self, tokens: TokenService, authenticator: Authenticator, owner_of: OwnerLookup,
        after_login: AfterLogin | None = None, addresses: ClientAddresses | None = None,
    ) -> None:
        self.addresses = addresses or ClientAddresses()
        self.tokens = tokens
        self.authenticator = authenticator
        self.owner_of = owner_of
        self.after_login = after_login

    async def grant(self, principal: Principal | None, scopes: list[str]) -> list[Access]:
        """What the principal may do for each requested scope.

        Anyone may pull. In their own namespace an authenticated user gets pull, push and
        delete whatever subset they asked for: some clients (oras-py among them) keep the
        first token of a session and never ask again, so a pull-only token fetched by an
        early HEAD would make the rest of their push fail. Elsewhere they get pull only.
        """
        granted: list[Access] = []
        for raw in scopes[:MAX_SCOPES]:
            for one in raw.split(" "):
                access = parse_scope(one)
                if access is None or access.type != "repository" or not access.actions:
                    continue
                allowed = {"pull"}
                if principal is not None:
                    identity = access.name.partition("/")[0]
                    if await self.owner_of(identity) == principal.did:
                        allowed = {"pull", "push", "delete"}
                granted.append(Access(access.type, access.name, tuple(sorted(allowed))))
        return granted

    async def _respond(self, principal: Principal | None, scopes: list[str], *, oauth: bool) -> Response[Any]:
        access = await self.grant(principal, scopes)
        subject = principal.did if principal else ""
        method = principal.method if principal else "anonymous"
        token, expires_in, issued = self.tokens.issue(subject, access, method)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": datetime.fromtimestamp(issued, UTC).isoformat().replace("+00:00", "Z"),
        }
        if oauth:
            body["token_type"] = "Bearer"  # noqa: S105 - a token type name, not a secret
        return Response(body, status_code=200, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def _login(self, request: Request[Any, Any, State], username: str, password: str) -> Principal:
        """Check credentials; failures are limited per client address (and account) by the
        authenticator's login limiter, which reserves each attempt before the PDS is asked."""
        address = limit_key(self.addresses.of(request))
        principal = await self.authenticator.login(username, password, address=address)
        if self.after_login is not None:
            with contextlib.suppress(AtcrError, RegistryError, ValkeyError):
                await self.after_login(principal)
        return principal

    def handlers(self) -> list[Any]:
        api = self

        @route("/auth/token", http_method=[HttpMethod.GET], include_in_schema=True)
        async def token_get(request: Request[Any, Any, State]) -> Response[Any]:
            """Docker token endpoint: Basic credentials (app password or device secret), or anonymous."""
            try:
                scopes = request.query_params.getall("scope", [])
                creds = _basic(request.headers.get("authorization", ""))
                principal = await api._login(request, *creds) if creds else None
                return await api._respond(principal, scopes, oauth=False)
            except RegistryError as exc:
                return error_response(exc)
            except (ValkeyError, OSError):
                return error_response(Unavailable("state store unavailable; retry", headers={"Retry-After": "5"}))

        @route("/auth/token", http_method=[HttpMethod.POST], include_in_schema=True, status_code=200)
        async def token_post(request: Request[Any, Any, State]) -> Response[Any]:
            """OAuth2 form (`grant_type=password` or `refresh_token`), as Docker sends for identity tokens."""
            try:
                form = await request.form()
                grant = str(form.get("grant_type", ""))
                scopes = [str(s) for s in form.getall("scope", [])] if hasattr(form, "getall") else []
                username = str(form.get("username", ""))
                if grant == "password":
                    principal = await api._login(request, username, str(form.get("password", "")))
                elif grant == "refresh_token":
                    principal = await api._login(request, username, str(form.get("refresh_token", "")))
                else:
                    return Response(
                        {"error": "unsupported_grant_type"}, status_code=400, headers={"Cache-Control": "no-store"}
                    )
                return await api._respond(principal, scopes, oauth=True)
            except Unauthorized as exc:
                return Response(
                    {"error": "invalid_grant", "error_description": exc.message},
                    status_code=400,
                    headers={"Cache-Control": "no-store"},
                )
            except RegistryError as exc:
                return error_response(exc)
            except (ValkeyError, OSError):
                return error_response(Unavailable("state store unavailable; retry", headers={"Retry-After": "5"}))

        @get("/auth/jwks.json", sync_to_thread=False)
        def jwks() -> dict[str, Any]:
            """Public keys that verify registry tokens."""
            return api.tokens.jwks()

        return [token_get, token_post, jwks]
