"""Direct uploads over HTTP: the AppView's XRPC to start one, and the client's OCI requests.

* ``POST io.atcr.hold.initiateUpload {direct: {repository, blobUrl, maxSize?}}`` (the pushing
  user's service token) -> ``{uploadId, url, expiresAt}``: `url` is the absolute upload URL
  the AppView answers the client's upload POST with (`DirectStarter`).
* ``PATCH | PUT ?digest= | GET | DELETE /_hold/oci/uploads/<id>/<capability>``: the OCI
  distribution spec's upload requests. The capability alone authorizes them; an
  Authorization header the client sends along is never read. Errors are OCI error bodies.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response, Router, route
from litestar.enums import HttpMethod

from atcr.digest import Digest
from atcr.digest import InvalidDigest as DigestSyntaxError
from hold.capability import CapabilitySigner, UploadCapability
from hold.errors import (
    DigestMismatch,
    Forbidden,
    HoldError,
    InvalidDigest,
    InvalidRequest,
    TooLarge,
    UploadBusy,
    UploadNotFound,
)
from hold.oci_uploads import DirectUploads, RangeMismatch, SizeInvalid, TooManyUploads
from hold.service import HoldServices
from hold.xrpc import body_stream, content_length, loggable_path

UPLOAD_PATH = "/_hold/oci/uploads"
log = logging.getLogger("hold.oci_uploads")
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})(?:/[0-9*]+)?$")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*")


def _oci_code(exc: HoldError) -> tuple[str, int]:
    """The OCI error code and status a client expects for a hold error."""
    if isinstance(exc, UploadNotFound):
        return "BLOB_UPLOAD_UNKNOWN", 404
    if isinstance(exc, Forbidden):
        return "DENIED", 403
    if isinstance(exc, RangeMismatch):
        return "BLOB_UPLOAD_INVALID", 416
    if isinstance(exc, DigestMismatch | InvalidDigest):
        return "DIGEST_INVALID", 400
    if isinstance(exc, SizeInvalid):
        return "SIZE_INVALID", 400
    if isinstance(exc, TooLarge):
        return "SIZE_INVALID", 413
    if isinstance(exc, TooManyUploads):
        return "TOOMANYREQUESTS", 429
    if isinstance(exc, UploadBusy):  # as the AppView answers a second writer: the spec has no 409
        return "BLOB_UPLOAD_INVALID", 400
    if exc.status >= 500:
        return "UNAVAILABLE", 503 if exc.status == 503 else exc.status
    return "BLOB_UPLOAD_INVALID", 400


def oci_error(exc: HoldError, headers: dict[str, str] | None = None) -> Response[Any]:
    code, status = _oci_code(exc)
    return Response(
        {"errors": [{"code": code, "message": exc.message, "detail": {"hold": exc.error_name}}]},
        status_code=status,
        headers={**API_VERSION, **exc.headers, **(headers or {}), "Cache-Control": "no-store"},
        media_type="application/json",
    )


def _start(request: Request[Any, Any, Any]) -> int | None:
    """The chunk's start from Content-Range (None when absent); end must fit the length."""
    raw = request.headers.get("content-range")
    if not raw:
        return None
    m = _CONTENT_RANGE.match(raw.strip())
    if m is None or int(m.group(2)) < int(m.group(1)):
        raise InvalidRequest("malformed Content-Range")
    length = content_length(request)
    if length is not None and int(m.group(2)) - int(m.group(1)) + 1 != length:
        raise InvalidRequest("Content-Range does not match Content-Length")
    return int(m.group(1))


def _upload_url(base: str, upload_id: str, token: str) -> str:
    # The capability is a path segment, not a query parameter: a client that sets `digest` by
    # replacing the Location's query (httpx's `params=` does) still presents it.
    return f"{base}{UPLOAD_PATH}/{quote(upload_id)}/{quote(token)}"


class DirectStarter:
    """``initiateUpload`` with a ``direct`` object: start a direct upload, answer its URL.

    The request rides on ATCR's ``initiateUpload`` (its service token, its OAuth scope) with an
    extension field, like ``size``: ``direct: {repository, blobUrl, maxSize?}`` ->
    ``{uploadId, url, expiresAt}``, where `blobUrl` is the AppView's ``.../v2/<name>/blobs/``.
    """

    def __init__(self, services: HoldServices, direct: DirectUploads, signer: CapabilitySigner) -> None:
        self._settings = services.settings
        self._base = services.identity.public_url
        self._direct = direct
        self._signer = signer

    async def __call__(self, did: str, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise InvalidRequest("direct must be an object {repository, blobUrl, maxSize?}")
        repository, blob_url, max_size = spec.get("repository"), spec.get("blobUrl"), spec.get("maxSize")
        if not isinstance(repository, str) or len(repository) > 256 or not _REPOSITORY.fullmatch(repository):
            raise InvalidRequest("direct.repository must be an OCI repository name")
        parts = urlsplit(blob_url) if isinstance(blob_url, str) else None
        if (
            parts is None
            or not isinstance(blob_url, str)
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or len(blob_url) > 1024
            or not blob_url.endswith("/blobs/")
        ):
            raise InvalidRequest("direct.blobUrl must be the AppView's absolute .../blobs/ URL")
        limit = self._settings.upload_max_size
        if max_size is not None:
            if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
                raise InvalidRequest("direct.maxSize must be a non-negative integer")
            limit = min(limit, max_size)
        upload_id = await self._direct.create(did, repository)
        ttl = self._settings.direct_upload_ttl
        token = self._signer.issue(
            did=did, repository=repository, upload=upload_id, max_size=limit, blob_url=blob_url, ttl=ttl
        )
        return {
            "uploadId": upload_id,
            "url": _upload_url(self._base, upload_id, token),
            "expiresAt": int(time.time()) + ttl,
        }


def oci_upload_routes(services: HoldServices, direct: DirectUploads, signer: CapabilitySigner) -> Router:
    base = services.identity.public_url

    def upload_url(upload_id: str, token: str) -> str:
        return _upload_url(base, upload_id, token)

    def progress(upload_id: str, token: str, offset: int) -> dict[str, str]:
        return {
            **API_VERSION,
            "Location": upload_url(upload_id, token),
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{max(offset - 1, 0)}",
        }

    @route(
        f"{UPLOAD_PATH}/{{upload_id:str}}/{{cap:str}}",
        http_method=[HttpMethod.PATCH, HttpMethod.PUT, HttpMethod.GET, HttpMethod.DELETE],
        request_max_body_size=None,
        include_in_schema=False,
        status_code=200,
    )
    async def upload(request: Request[Any, Any, Any]) -> Response[Any]:
        upload_id, token = str(request.path_params["upload_id"]), str(request.path_params["cap"])
        try:
            cap = signer.verify(token, upload_id)
            return await handle(request, cap, token)
        except RangeMismatch as exc:
            return oci_error(exc, progress(upload_id, token, exc.offset))
        except HoldError as exc:
            if exc.status >= 500:
                path = loggable_path(request.url.path)
                log.warning("%s %s -> %s %s: %s", request.method, path, exc.status, exc.error_name, exc.message)
            return oci_error(exc)

    async def handle(request: Request[Any, Any, Any], cap: UploadCapability, token: str) -> Response[Any]:
        uid, did, repo = cap.upload, cap.did, cap.repository
        method = request.method.upper()
        if method == "GET":
            session = await direct.get(uid, did, repo)
            return Response(b"", status_code=204, headers=progress(uid, token, session.offset))
        if method == "DELETE":
            await direct.cancel(uid, did, repo)
            return Response(b"", status_code=204, headers=API_VERSION)
        start = _start(request)
        length = content_length(request)
        if method == "PATCH":
            session = await direct.append(
                uid, did, repo, body_stream(request), start=start, length=length, max_size=cap.max_size
            )
            return Response(b"", status_code=202, headers=progress(uid, token, session.offset))
        digest = request.query_params.get("digest")
        if not digest:
            raise InvalidDigest("the closing PUT needs ?digest=")
        try:
            Digest.parse(digest)
        except DigestSyntaxError as exc:
            raise InvalidDigest(str(exc)) from None
        has_body = bool(length) or request.headers.get("transfer-encoding") is not None
        done = await direct.finish(
            uid, did, repo, digest, body_stream(request) if has_body else None,
            start=start, length=length if has_body else None, max_size=cap.max_size,
        )
        services.catalog.forget(done)
        return Response(
            b"", status_code=201,
            headers={**API_VERSION, "Location": f"{cap.blob_url}{done}", "Docker-Content-Digest": str(done)},
        )

    return Router(path="/", route_handlers=[upload], include_in_schema=False)


__all__ = ["UPLOAD_PATH", "DirectStarter", "oci_upload_routes"]
