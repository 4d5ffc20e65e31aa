"""The hold's HTTP edge: XRPC error bodies, bearer tokens, bounded JSON bodies.

This is the only place where hold errors meet HTTP. Every failure leaves as
``{"error": <Name>, "message": <text>}`` with the status its `HoldError` leaf names;
litestar's own refusals (unknown route, wrong method, bad parameter) are rephrased the same
way, and anything unexpected is logged with its traceback and answered as a bare
``InternalServerError``, so no stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, InternalServerException, ValidationException
from litestar.types import ExceptionHandlersMap

from atcr import jsonbound
from atcr.errors import RecordValidationError
from atcr.lexicon import parse_xrpc_params, validate_xrpc_input
from hold.errors import AuthRequired, HoldError, InvalidRequest, TooLarge

log = logging.getLogger("hold.http")

MAX_JSON_BODY = 2 * 1024 * 1024  # completeUpload lists up to 10,000 parts

_STATUS_NAMES = {
    400: "InvalidRequest",
    401: "AuthMissing",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotImplemented",
    413: "PayloadTooLarge",
    415: "InvalidRequest",
    429: "RateLimitExceeded",
    501: "MethodNotImplemented",
    503: "ServiceUnavailable",
}


def error_response(status: int, error: str, message: str, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(
        {"error": error, "message": message},
        status_code=status,
        headers={**(headers or {}), "Cache-Control": "no-store"},
        media_type="application/json",
    )


def loggable_path(path: str) -> str:
    """The path without a direct upload's capability (a bearer secret: hold/capability.py)."""
    prefix = "/_hold/oci/uploads/"
    if path.startswith(prefix) and path.count("/") > prefix.count("/"):
        return path.rsplit("/", 1)[0] + "/<capability>"
    return path


def _hold_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HoldError)
    if exc.status >= 500:
        path = loggable_path(request.url.path)
        log.warning("%s %s -> %s %s: %s", request.method, path, exc.status, exc.error_name, exc.message)
    return error_response(exc.status, exc.error_name, exc.message, exc.headers)


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status >= 500:
        log.error("%s %s -> %s: %s", request.method, loggable_path(request.url.path), status, exc.detail)
        return error_response(status, "InternalServerError", "internal server error")
    message = str(exc.detail or "")
    if isinstance(exc, ValidationException) and exc.extra:
        message = f"{message}: {exc.extra}"
    return error_response(status, _STATUS_NAMES.get(status, "InvalidRequest"), message[:500], exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, loggable_path(request.url.path), exc_info=exc)
    return error_response(500, "InternalServerError", "internal server error")


def exception_handlers() -> ExceptionHandlersMap:
    """Install on the app: hold errors, litestar refusals and surprises all leave as XRPC errors."""
    return {HoldError: _hold_error, HTTPException: _http_error, Exception: _unexpected}


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    """The Bearer token, None when there is no Authorization header at all."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthRequired(f"unsupported authorization scheme {scheme[:20]!r}: send a Bearer service token")
    return token.strip()


async def json_body(request: Request[Any, Any, Any], *, max_bytes: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object, read up to `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_stream(request):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"JSON body larger than {max_bytes} bytes")
        chunks.append(chunk)
    try:
        value = jsonbound.loads(b"".join(chunks) or b"null")
    except jsonbound.JsonTooDeep as exc:
        raise InvalidRequest(f"body is not acceptable JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body must be a JSON object")
    return value


async def body_stream(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The raw body as it arrives; a client that hangs up early becomes a clean `InvalidRequest`."""
    try:
        async for chunk in request.stream():
            yield chunk
    except InternalServerException:
        raise InvalidRequest("the request body ended early (client disconnected)") from None


def content_length(request: Request[Any, Any, Any]) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InvalidRequest("Content-Length must be a number")
    return int(raw)


def lexicon_input(nsid: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` after checking it against the method's lexicon (InvalidRequest naming the field)."""
    try:
        validate_xrpc_input(nsid, body)
    except RecordValidationError as exc:
        raise InvalidRequest(str(exc)[:500]) from None
    return body


def lexicon_params(nsid: str, request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The query parameters typed and checked against the method's lexicon."""
    try:
        return parse_xrpc_params(nsid, request.query_params.dict())
    except RecordValidationError as exc:
        raise InvalidRequest(str(exc)[:500]) from None
