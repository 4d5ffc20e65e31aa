"""Downloads: `com.atproto.sync.getBlob` for OCI digests, and the local driver's signed URLs.

``GET /xrpc/com.atproto.sync.getBlob?did=<hold>&cid=<sha256:...>`` answers
``{"url": <presigned GET URL>}`` (ATCR's shape; `redirect=true` answers 307 to it instead),
so the AppView can send the client straight to storage and bytes never pass through it.
``HEAD`` answers existence and size (``Content-Length`` and ``X-Blob-Size``) without a URL.
Public holds serve anyone; private holds want a service token (``lxm`` = getBlob) from a DID
that may read, or the scanners' shared secret in ``X-Scanner-Secret`` (hold/scan/).

A ``cid`` that is not an OCI digest is an atproto blob of the hold's own repo; those are
served by an `AtprotoBlobs` source when the repo provides one.

``GET|HEAD /_hold/blobs/<alg>/<hex>?exp=&sig=`` serves the local driver's bytes, with single
``Range`` requests answered 206 and unsatisfiable ones 416.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Protocol

from litestar import Request, Response, Router, get, head
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect, Stream

from atcr.digest import Digest
from atcr.digest import InvalidDigest as DigestSyntaxError
from hold.errors import BlobNotFound, InvalidDigest, InvalidRequest, RangeNotSatisfiable, RepoNotFound
from hold.service import HoldServices
from hold.storage.filesystem import BLOB_URL_PREFIX, FilesystemBlobStore
from hold.xrpc import bearer_token

NSID_GET_BLOB = "com.atproto.sync.getBlob"
STREAM_CHUNK = 1024 * 1024
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


class AtprotoBlobs(Protocol):
    """Blobs of the hold's own atproto repo (avatars, SBOMs): served by the embedded repo."""

    async def get_blob(self, cid: str) -> tuple[bytes, str] | None:
        """(bytes, mime type), or None when the repo has no such blob."""
        ...


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span a single ``Range`` asks for; None means "send everything".

    Syntax we do not serve (several ranges, other units, garbage) is ignored, as RFC 9110
    allows; a well-formed range that starts past the end is `RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, min(end, size - 1)


def blob_routes(services: HoldServices, *, atproto_blobs: AtprotoBlobs | None = None) -> Router:
    secret = services.settings.scanner_secret.encode()

    async def reader(request: Request[Any, Any, Any]) -> None:
        if await services.auth.is_public():
            return
        given = request.headers.get("x-scanner-secret")
        if secret and given and hmac.compare_digest(given.encode(), secret):
            return  # a subscribed scanner pulls the layers of the jobs it was sent
        token = bearer_token(request)
        did = await services.auth.authenticate(token, lxm=NSID_GET_BLOB) if token else None
        await services.auth.require_read(did)

    def target(request: Request[Any, Any, Any]) -> Digest | str:
        did = request.query_params.get("did")
        cid = request.query_params.get("cid")
        if not did or not cid:
            raise InvalidRequest("did and cid are required")
        if did != services.identity.did:
            raise RepoNotFound(f"this hold is {services.identity.did}")
        if ":" not in cid:
            return str(cid)  # an atproto CID
        try:
            return Digest.parse(cid)
        except DigestSyntaxError as exc:
            raise InvalidDigest(str(exc)) from None

    async def atproto_blob(cid: str) -> Response[bytes]:
        found = await atproto_blobs.get_blob(cid) if atproto_blobs is not None else None
        if found is None:
            raise BlobNotFound(f"no blob {cid[:100]}")
        data, mime = found
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=31536000, immutable"})

    @get(f"/xrpc/{NSID_GET_BLOB}")
    async def get_blob(request: Request[Any, Any, Any]) -> Response[Any]:
        wanted = target(request)
        await reader(request)
        if isinstance(wanted, str):
            return await atproto_blob(wanted)
        if await services.catalog.size(wanted) is None:
            raise BlobNotFound(f"no blob {wanted}")
        url = await services.store.presign_get(wanted, expires_in=services.settings.url_expiry)
        headers = {"Cache-Control": "no-store", "Docker-Content-Digest": str(wanted)}
        if request.query_params.get("redirect", "").lower() in ("1", "true", "yes"):
            return Redirect(url, status_code=307, headers=headers)
        return Response({"url": url}, headers=headers, media_type="application/json")

    @head(f"/xrpc/{NSID_GET_BLOB}")
    async def head_blob(request: Request[Any, Any, Any]) -> Response[None]:
        wanted = target(request)
        await reader(request)
        if isinstance(wanted, str):
            found = await atproto_blobs.get_blob(wanted) if atproto_blobs is not None else None
            if found is None:
                raise BlobNotFound()
            return Response(None, headers={"Content-Length": str(len(found[0])), "X-Blob-Size": str(len(found[0]))})
        size = await services.catalog.size(wanted)
        if size is None:
            raise BlobNotFound(f"no blob {wanted}")
        return Response(
            None,
            headers={
                "Content-Length": str(size),
                "X-Blob-Size": str(size),
                "Docker-Content-Digest": str(wanted),
                "Cache-Control": "no-store",
            },
        )

    handlers: list[HTTPRouteHandler] = [get_blob, head_blob]
    store = services.store
    if isinstance(store, FilesystemBlobStore):
        handlers.extend(_signed_blob_handlers(services, store))
    return Router(path="/", route_handlers=handlers, include_in_schema=False)


def _signed_blob_handlers(services: HoldServices, store: FilesystemBlobStore) -> list[HTTPRouteHandler]:
    def resolve(request: Request[Any, Any, Any]) -> tuple[Digest, Path]:
        alg, hexdigest = str(request.path_params["alg"]), str(request.path_params["hexdigest"])
        services.signer.verify(
            request.method, request.url.path, request.query_params.get("exp"), request.query_params.get("sig")
        )
        try:
            digest = Digest.from_hex(alg, hexdigest)
        except DigestSyntaxError:
            raise BlobNotFound() from None
        return digest, store.blob_file(digest)

    async def size_of(path: Path) -> int:
        def probe() -> int:
            try:
                return path.stat().st_size
            except FileNotFoundError:
                raise BlobNotFound() from None

        return await store.run(probe)

    def headers_for(digest: Digest, size: int, span: tuple[int, int] | None) -> dict[str, str]:
        h = {
            "Accept-Ranges": "bytes",
            "Docker-Content-Digest": str(digest),
            "ETag": f'"{digest}"',
            "Cache-Control": "private, max-age=300",
        }
        if span is not None:
            h["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        return h

    @get(f"{BLOB_URL_PREFIX}/{{alg:str}}/{{hexdigest:str}}")
    async def serve(request: Request[Any, Any, Any]) -> Stream:
        digest, path = resolve(request)
        size = await size_of(path)
        span = parse_range(request.headers.get("range"), size)
        start, end = span if span is not None else (0, size - 1)
        length = max(0, end - start + 1)

        fh: IO[bytes] = await store.run(lambda: open(path, "rb"))  # noqa: SIM115 - closed by the generator

        async def chunks() -> AsyncIterator[bytes]:
            try:
                await store.run(lambda: fh.seek(start))
                left = length
                while left > 0:
                    n = min(STREAM_CHUNK, left)
                    data = await store.run(lambda n=n: fh.read(n))  # type: ignore[misc]
                    if not data:
                        break
                    left -= len(data)
                    yield data
            finally:
                await store.run(fh.close)

        headers = headers_for(digest, size, span)
        headers["Content-Length"] = str(length)
        return Stream(
            chunks(),
            status_code=206 if span is not None else 200,
            headers=headers,
            media_type="application/octet-stream",
        )

    @head(f"{BLOB_URL_PREFIX}/{{alg:str}}/{{hexdigest:str}}")
    async def serve_head(request: Request[Any, Any, Any]) -> Response[None]:
        digest, path = resolve(request)
        size = await size_of(path)
        headers = headers_for(digest, size, None)
        headers["Content-Length"] = str(size)
        # litestar renders an empty body only for text/*; the header names the real type.
        headers["Content-Type"] = "application/octet-stream"
        return Response(None, headers=headers, media_type="text/plain")

    return [serve, serve_head]
