"""ATCR's upload XRPC (ATCR-NOTES.md §4.4): initiate, part URL, part, complete, abort.

Shapes (as ATCR's lexicons define them; `size` is our optional extension):

* ``POST io.atcr.hold.initiateUpload {digest?, size?}`` -> ``{uploadId}``; with our ``direct``
  extension, a direct upload on a capability URL instead (hold/routes_oci_upload.py)
* ``POST io.atcr.hold.getPartUploadUrl {uploadId, partNumber}`` -> ``{url, method: "PUT", headers}``
* ``PUT  io.atcr.hold.uploadPart`` raw body, headers ``X-Upload-Id``, ``X-Part-Number`` -> ``{etag}``
* ``POST io.atcr.hold.completeUpload {uploadId, digest, parts: [{partNumber, etag}]}``
  -> ``{status: "completed", digest}``
* ``POST io.atcr.hold.abortUpload {uploadId}`` -> ``{status: "aborted"}``

Every call needs a service token for its own method (``lxm``) from a DID that may write here.
With a `QuotaService`, a declared ``size`` is checked against the caller's quota at initiation,
and the real size at completion, before the blob becomes visible (hold/quota.py).
The local driver's signed part URLs (``PUT /_hold/uploads/<id>/<n>``) are served here too:
their signature stands in for the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, Router, post, put
from litestar.handlers import HTTPRouteHandler

from hold.errors import HoldError, InvalidPartNumber, InvalidRequest
from hold.gc.guard import GcGuard
from hold.oci_uploads import admitted_completion
from hold.quota import QuotaService
from hold.service import HoldServices
from hold.storage.filesystem import UPLOAD_URL_PREFIX
from hold.uploads import UploadManager
from hold.xrpc import bearer_token, body_stream, content_length, json_body

NSID_INITIATE = "io.atcr.hold.initiateUpload"
NSID_PART_URL = "io.atcr.hold.getPartUploadUrl"
NSID_UPLOAD_PART = "io.atcr.hold.uploadPart"
NSID_COMPLETE = "io.atcr.hold.completeUpload"
NSID_ABORT = "io.atcr.hold.abortUpload"


class UploadsUnavailable(HoldError):
    error, status, default_message = "UploadsUnavailable", 503, "uploads need Valkey, which is not configured"


def _int_field(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer")
    return value


def _str_field(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 256) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > max_len:
        raise InvalidRequest(f"{name} must be a string of at most {max_len} characters")
    return value


def _part_number(raw: str | None) -> int:
    if raw is None or not raw.strip().isascii() or not raw.strip().isdigit() or len(raw.strip()) > 6:
        raise InvalidPartNumber("X-Part-Number must be an integer between 1 and 10000")
    return int(raw.strip())


# Starts a direct upload for (caller DID, the request's ``direct`` object): hold/routes_oci_upload.py.
DirectStart = Callable[[str, Any], Awaitable[dict[str, Any]]]


def upload_routes(
    services: HoldServices,
    quota: QuotaService | None = None,
    guard: GcGuard | None = None,
    direct: DirectStart | None = None,
) -> Router:
    def manager() -> UploadManager:
        if services.uploads is None:
            raise UploadsUnavailable()
        return services.uploads

    async def writer(request: Request[Any, Any, Any], nsid: str) -> str:
        did = await services.auth.authenticate(bearer_token(request), lxm=nsid)
        await services.auth.require_write(did)
        return did

    @post(f"/xrpc/{NSID_INITIATE}", status_code=200)
    async def initiate_upload(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await writer(request, NSID_INITIATE)
        body = await json_body(request)
        if body.get("direct") is not None:
            if direct is None:
                raise InvalidRequest("this hold does not take direct uploads")
            return await direct(did, body["direct"])
        digest = _str_field(body, "digest", required=False, max_len=200)
        size = body.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise InvalidRequest("size must be an integer")
        uploads = manager()
        if quota is not None and isinstance(size, int) and size >= 0:
            await quota.check_upload(did, digest or None, size)
        upload_id = await uploads.initiate(did, digest or None, size)
        return {"uploadId": upload_id}

    @post(f"/xrpc/{NSID_PART_URL}", status_code=200)
    async def get_part_upload_url(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await writer(request, NSID_PART_URL)
        body = await json_body(request)
        upload_id = _str_field(body, "uploadId")
        assert upload_id is not None
        number = body.get("partNumber")
        if not isinstance(number, int) or isinstance(number, bool):
            raise InvalidPartNumber("partNumber must be an integer between 1 and 10000")
        presigned = await manager().part_url(did, upload_id, number)
        return {"url": presigned.url, "method": presigned.method, "headers": dict(presigned.headers)}

    def etag_response(etag: str) -> Response[dict[str, str]]:
        # The JSON body is ATCR's shape; the ETag header matches what S3 answers a presigned PUT.
        return Response({"etag": etag}, headers={"ETag": etag if etag.startswith('"') else f'"{etag}"'})

    @put(f"/xrpc/{NSID_UPLOAD_PART}", status_code=200, request_max_body_size=None)
    async def upload_part(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        did = await writer(request, NSID_UPLOAD_PART)
        upload_id = request.headers.get("x-upload-id") or request.query_params.get("uploadId") or ""
        number = _part_number(request.headers.get("x-part-number") or request.query_params.get("partNumber"))
        info = await manager().write_part(
            did, upload_id, number, body_stream(request), content_length=content_length(request)
        )
        return etag_response(info.etag)

    @put(f"{UPLOAD_URL_PREFIX}/{{upload_id:str}}/{{part:str}}", status_code=200, request_max_body_size=None)
    async def signed_part(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        upload_id, part = str(request.path_params["upload_id"]), str(request.path_params["part"])
        services.signer.verify(
            "PUT", request.url.path, request.query_params.get("exp"), request.query_params.get("sig")
        )
        info = await manager().write_part(
            None, upload_id, _part_number(part), body_stream(request), content_length=content_length(request)
        )
        return etag_response(info.etag)

    @post(f"/xrpc/{NSID_COMPLETE}", status_code=200)
    async def complete_upload(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await writer(request, NSID_COMPLETE)
        body = await json_body(request)
        upload_id = _str_field(body, "uploadId")
        digest = _str_field(body, "digest", max_len=200)
        assert upload_id is not None and digest is not None
        done = await admitted_completion(
            manager(), did, upload_id, digest, body.get("parts"), quota=quota, guard=guard
        )
        services.catalog.forget(done)
        return {"status": "completed", "digest": str(done)}

    @post(f"/xrpc/{NSID_ABORT}", status_code=200)
    async def abort_upload(request: Request[Any, Any, Any]) -> dict[str, Any]:
        did = await writer(request, NSID_ABORT)
        body = await json_body(request)
        upload_id = _str_field(body, "uploadId")
        assert upload_id is not None
        await manager().abort(did, upload_id)
        return {"status": "aborted"}

    handlers: list[HTTPRouteHandler] = [
        initiate_upload,
        get_part_upload_url,
        upload_part,
        complete_upload,
        abort_upload,
    ]
    if services.store.kind == "filesystem":
        handlers.append(signed_part)
    return Router(path="/", route_handlers=handlers, include_in_schema=False)
