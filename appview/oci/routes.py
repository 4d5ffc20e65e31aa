"""HTTP layer of the OCI Distribution API.

Litestar path parameters must be the last segment, and OCI names contain slashes
(`/v2/<identity>/<repo>/manifests/<ref>`), so one catch-all route parses the path itself.
This module only translates HTTP to `Registry` calls and `RegistryError`s to the spec's
JSON errors; the behaviour lives in `appview.oci.registry`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from litestar import Request, Response, route
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.enums import HttpMethod
from litestar.response.base import ASGIResponse
from valkey.exceptions import ValkeyError

from appview.auth.tokens import TokenClaims, TokenService
from appview.clientaddr import ClientAddresses, limit_key
from appview.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    Denied,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    PaginationInvalid,
    RangeInvalid,
    RangeNotSatisfiable,
    RegistryError,
    SizeInvalid,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from appview.oci.registry import MAX_MANIFEST_BYTES, Registry, RepoRef, split_name
from appview.provenance import ProvenanceService
from appview.provenance.oci import proof_blob, proof_manifest, proof_referrers
from appview.ratelimit import RateLimiter
from appview.scans import ScanResults
from appview.scans.oci import scan_blob, scan_manifest, scan_referrers
from atcr.oci import OCI_INDEX

log = logging.getLogger("appview.oci")

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
MAX_PAGE = 1000
_CONTENT_RANGE = re.compile(r"^(?:bytes )?(\d+)-(\d+)$")


@dataclass(frozen=True)
class Auth:
    realm: str
    service: str
    tokens: TokenService


_SAFE_SCOPE = re.compile(r"^[A-Za-z0-9._:/,@+*-]+$")


def _challenge(auth: Auth, scope: str | None, error: str | None = None) -> str:
    parts = [f'Bearer realm="{auth.realm}"', f'service="{auth.service}"']
    # The scope names the repository from the request path: never let it add quotes, parameters
    # (a second `realm=`) or line breaks to the header.
    if scope and _SAFE_SCOPE.match(scope):
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return ",".join(parts)


class RepeatedHeaders(Response[Any]):
    """A response that sends some headers once per value (``OCI-Tag: a``, ``OCI-Tag: b``):
    litestar keeps response headers in a dict, which holds one value per name."""

    def __init__(self, *args: Any, repeated: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeated = repeated

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        for name, value in self.repeated:
            response.headers.add(name, value)
        return response


def error_response(exc: RegistryError) -> Response[Any]:
    if exc.status >= 500:
        log.warning("%s %s: %s", exc.status, exc.code, exc.message)
    body = {"errors": [{"code": exc.code, "message": exc.message, "detail": exc.detail}]}
    headers = {**API_VERSION, **exc.headers}
    return Response(body, status_code=exc.status, headers=headers, media_type="application/json")


def _claims(request: Request[Any, Any, State], auth: Auth) -> TokenClaims | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return None
    return auth.tokens.verify(value.strip())


def _require(
    request: Request[Any, Any, State], auth: Auth, name: str, action: str, owner_did: str | None = None
) -> TokenClaims:
    """Check the bearer token grants `action` on `name`; pushes also need the namespace owner."""
    scope_actions = "pull" if action == "pull" else f"pull,{action}"
    scope = f"repository:{name}:{scope_actions}"
    try:
        claims = _claims(request, auth)
    except Unauthorized as exc:
        challenge = _challenge(auth, scope, "invalid_token")
        raise Unauthorized(exc.message, headers={"WWW-Authenticate": challenge}) from None
    if claims is None:
        raise Unauthorized(headers={"WWW-Authenticate": _challenge(auth, scope)})
    if not claims.allows(name, action) and not (action == "delete" and claims.allows(name, "push")):
        if not claims.subject:
            challenge = _challenge(auth, scope, "insufficient_scope")
            raise Unauthorized(_sign_in_hint(auth, action), headers={"WWW-Authenticate": challenge})
        raise Denied(f"not allowed to {action} {name}")
    if action != "pull" and owner_did is not None and claims.subject != owner_did:
        raise Denied("you can only push to your own namespace")
    return claims


def _sign_in_hint(auth: Auth, action: str) -> str | None:
    """The message of an anonymous token's 401: docker prints it after "unauthorized: "."""
    if action == "pull":
        return None
    host = urlsplit(auth.realm).netloc
    return f"authentication required to {action}: sign in first with `docker login {host}`"


def _split(rest: str) -> tuple[str, str, str]:
    """(name, kind, argument) from the path after /v2/."""
    if rest.endswith("/tags/list"):
        return rest[: -len("/tags/list")], "tags", ""
    for marker, kind in (("/manifests/", "manifests"), ("/referrers/", "referrers"), ("/blobs/uploads/", "uploads")):
        if marker in rest:
            name, _, arg = rest.rpartition(marker)
            return name, kind, arg
    if rest.endswith("/blobs/uploads"):
        return rest[: -len("/blobs/uploads")], "uploads", ""
    if "/blobs/" in rest:
        name, _, arg = rest.rpartition("/blobs/")
        return name, "blobs", arg
    raise NameUnknown("unknown endpoint")


def _link(path: str, params: dict[str, str]) -> str:
    return f'<{path}?{urlencode(params)}>; rel="next"'


def _page_size(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise PaginationInvalid()
    n = int(raw)
    if n > MAX_PAGE:
        raise PaginationInvalid(f"n must be at most {MAX_PAGE}")
    return n


async def _body(request: Request[Any, Any, State]) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _content_length(request: Request[Any, Any, State]) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise SizeInvalid("invalid Content-Length")
    return int(raw)


_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _range_satisfiable(header: str | None, size: int) -> bool:
    """Refuse, before the redirect, a single byte range the blob cannot satisfy.

    Storage behind the redirect differs (S3 ignores a range that ends before it starts and sends
    the whole blob); distribution answers 416 for those, and for ranges past the end, so we do
    the same here. Anything else (no Range, several ranges) is left to the storage.
    """
    if not header:
        return True
    m = _SINGLE_RANGE.fullmatch(header.strip())
    if m is None:
        return True
    first, last = m.group(1), m.group(2)
    if not first:
        return bool(last) and int(last) > 0 and size > 0
    if int(first) >= size:
        return False
    return not last or int(last) >= int(first)


class OciApi:
    """Holds what the handlers need; `handlers()` returns the litestar route handlers."""

    def __init__(
        self,
        registry: Registry,
        auth: Auth,
        *,
        max_blob_size: int,
        base_url: str = "",
        direct_uploads: bool = False,
        limiter: RateLimiter | None = None,
        addresses: ClientAddresses | None = None,
        provenance: ProvenanceService | None = None,
        scans: ScanResults | None = None,
    ) -> None:
        self.provenance = provenance  # the publisher's repo proof as a referrer (appview/provenance)
        self.scans = scans  # the holds' SBOMs and vulnerability reports as referrers (appview/scans)
        self.registry = registry
        self.auth = auth
        self.max_blob_size = max_blob_size
        # Upload POSTs answer a Location on the push hold when it takes direct uploads.
        self.direct_uploads = direct_uploads and bool(base_url)
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.addresses = addresses or ClientAddresses()

    def _throttle(self, request: Request[Any, Any, State]) -> None:
        """Per-address and per-user limits (shared by replicas); 429 with Retry-After."""
        if self.limiter is None:
            return
        wait = self.limiter.hit("address", limit_key(self.addresses.of(request)))
        if wait is None:
            try:
                claims = _claims(request, self.auth)
            except RegistryError:
                claims = None
            if claims is not None and claims.subject:
                wait = self.limiter.hit("user", claims.subject)
        if wait is not None:
            raise TooManyRequests(
                "rate limit exceeded; slow down", headers={"Retry-After": str(int(wait))}
            )

    def handlers(self) -> list[Any]:
        api = self

        @route("/v2/", http_method=[HttpMethod.GET, HttpMethod.HEAD], include_in_schema=False)
        async def base(request: Request[Any, Any, State]) -> Response[Any]:
            try:
                claims = _claims(request, api.auth)
            except RegistryError:
                claims = None
            if claims is None:
                exc = Unauthorized(headers={"WWW-Authenticate": _challenge(api.auth, None)})
                return error_response(exc)
            return Response({}, status_code=200, headers=API_VERSION)

        @route(
            "/v2/{rest:path}",
            http_method=[
                HttpMethod.GET, HttpMethod.HEAD, HttpMethod.PUT, HttpMethod.POST, HttpMethod.PATCH, HttpMethod.DELETE,
            ],
            include_in_schema=False,
            request_max_body_size=None,
        )
        async def dispatch(request: Request[Any, Any, State], rest: str) -> Response[Any]:
            try:
                api._throttle(request)
                return await api.dispatch(request, rest.lstrip("/"))
            except RegistryError as exc:
                return error_response(exc)
            except (ValkeyError, OSError) as exc:
                log.warning("valkey unavailable: %s", type(exc).__name__)
                return error_response(
                    Unavailable("registry state store unavailable; retry shortly", headers={"Retry-After": "5"})
                )

        return [base, dispatch]

    async def dispatch(self, request: Request[Any, Any, State], rest: str) -> Response[Any]:
        method = request.method.upper()
        if rest in ("_catalog", "_catalog/"):
            if method != "GET":
                raise Unsupported()
            return await self.catalog(request)
        name, kind, arg = _split(rest)
        if not name:
            raise NameInvalid()
        split_name(name)  # NAME_INVALID before anything echoes the name (challenges, Location)
        if kind == "manifests":
            if method in ("GET", "HEAD"):
                return await self.get_manifest(request, name, arg, head=method == "HEAD")
            if method == "PUT":
                return await self.put_manifest(request, name, arg)
            if method == "DELETE":
                return await self.delete_manifest(request, name, arg)
        elif kind == "blobs":
            if method in ("GET", "HEAD"):
                return await self.get_blob(request, name, arg, head=method == "HEAD")
            if method == "DELETE":
                _require(request, self.auth, name, "delete")
                # No repository owns a blob here, so none has a link to remove (docs/design-notes.md).
                raise Unsupported(
                    "blob delete is not supported: a blob is stored once per hold and shared by every "
                    "repository and user on it, so no repository has a link of its own to remove; "
                    "delete the manifests that use it (uploads no manifest uses are removed by the hold)"
                )
        elif kind == "uploads":
            if method == "POST" and not arg:
                return await self.start_upload(request, name)
            if arg:
                if method == "PATCH":
                    return await self.patch_upload(request, name, arg)
                if method == "PUT":
                    return await self.put_upload(request, name, arg)
                if method == "GET":
                    return await self.upload_status(request, name, arg)
                if method == "DELETE":
                    return await self.cancel_upload(request, name, arg)
        elif kind == "tags" and method == "GET":
            return await self.tags(request, name)
        elif kind == "referrers" and method == "GET":
            return await self.referrers(request, name, arg)
        raise Unsupported(f"{method} is not supported here")

    # --- manifests ----------------------------------------------------------------------------

    async def get_manifest(
        self, request: Request[Any, Any, State], name: str, ref: str, *, head: bool
    ) -> Response[Any]:
        claims = _require(request, self.auth, name, "pull")
        repo = await self.registry.resolve(name)
        try:
            entry = await self.registry.get_manifest(repo, ref)
        except ManifestUnknown:
            served = await proof_manifest(self.provenance, repo, ref, head=head)
            if served is None:
                served = await scan_manifest(self.scans, repo, ref, head=head, viewer=claims.subject or None)
            if served is None:
                raise
            return served
        headers = {
            **API_VERSION,
            "Docker-Content-Digest": entry.digest,
            "Content-Length": str(len(entry.raw)),
            "ETag": f'"{entry.digest}"',
        }
        if head:
            return Response(b"", status_code=200, headers=headers, media_type=entry.media_type)
        self.registry.notify_pull(repo, entry, claims.subject or None)
        return Response(entry.raw, status_code=200, headers=headers, media_type=entry.media_type)

    async def put_manifest(self, request: Request[Any, Any, State], name: str, ref: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        claims = _require(request, self.auth, name, "push", repo.did)
        declared = _content_length(request)
        if declared is not None and declared > MAX_MANIFEST_BYTES:
            raise TooLarge(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        raw = bytearray()
        async for chunk in _body(request):
            raw += chunk
            if len(raw) > MAX_MANIFEST_BYTES:
                raise TooLarge(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        # `?tag=a&tag=b` (distribution-spec main): tags pointed at a manifest pushed by digest.
        tags = request.query_params.getall("tag", [])
        result = await self.registry.put_manifest(
            repo, claims.subject, ref, bytes(raw), request.headers.get("content-type"), tags
        )
        headers = {
            **API_VERSION,
            "Location": f"/v2/{name}/manifests/{result.digest}",
            # The digest as pushed: a push by sha512 digest answers that sha512 digest.
            "Docker-Content-Digest": result.digest,
        }
        if result.subject:
            headers["OCI-Subject"] = result.subject
        after = BackgroundTask(result.after) if result.after is not None else None
        if not tags:
            return Response(b"", status_code=201, headers=headers, background=after)
        # One OCI-Tag header per tag applied, as the spec asks (RFC 9110 field lines).
        return RepeatedHeaders(
            b"", status_code=201, headers=headers, repeated=[("OCI-Tag", t) for t in result.tags], background=after
        )

    async def delete_manifest(self, request: Request[Any, Any, State], name: str, ref: str) -> Response[Any]:
        repo = await self._owned(request, name, "delete")
        claims = _require(request, self.auth, name, "delete", repo.did)
        await self.registry.delete_manifest(repo, claims.subject, ref)
        return Response(b"", status_code=202, headers=API_VERSION)

    # --- blobs --------------------------------------------------------------------------------

    async def get_blob(self, request: Request[Any, Any, State], name: str, digest: str, *, head: bool) -> Response[Any]:
        claims = _require(request, self.auth, name, "pull")
        repo = await self.registry.resolve(name)
        try:
            if head:
                # The owner's HEAD is a push's "do you have it?": answered by the push hold alone.
                # If that hold refuses them, "no": the upload that follows gets DENIED with the
                # reason in its body (a HEAD answer has none for the client to show).
                pushing = bool(claims.subject) and claims.subject == repo.did and claims.allows(name, "push")
                try:
                    size = await self.registry.blob_size(
                        repo, digest, user_did=claims.subject or None, pushing=pushing, fresh=pushing
                    )
                except Denied:
                    if not pushing:
                        raise
                    size = None
                if size is None:
                    if pushing and self.direct_uploads:
                        await self.registry.prepare_direct_upload(claims.subject)
                    # Never for a push's "do you have it?": the blob must then go to the hold.
                    served = None if pushing else await proof_blob(self.provenance, repo, digest, head=True)
                    if served is None and not pushing:
                        served = await scan_blob(self.scans, repo, digest, head=True, viewer=claims.subject or None)
                    if served is not None:
                        return served
                    raise BlobUnknown(detail={"digest": digest})
                headers = {**API_VERSION, "Docker-Content-Digest": digest, "Content-Length": str(size),
                           "Accept-Ranges": "bytes"}
                return Response(b"", status_code=200, headers=headers, media_type="application/octet-stream")
            try:
                url, size = await self.registry.blob_redirect(repo, digest, claims.subject or None)
            except BlobUnknown:
                served = await proof_blob(self.provenance, repo, digest, head=False)
                if served is None:
                    served = await scan_blob(self.scans, repo, digest, head=False, viewer=claims.subject or None)
                if served is None:
                    raise
                return served
        except Denied as exc:
            if claims.subject:
                raise
            # Anonymous, and a private hold said no: a challenge, so clients offer to log in.
            challenge = _challenge(self.auth, f"repository:{name}:pull")
            raise Unauthorized(exc.message, headers={"WWW-Authenticate": challenge}) from None
        if not _range_satisfiable(request.headers.get("range"), size):
            raise RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
        return Response(
            b"", status_code=307, headers={**API_VERSION, "Location": url, "Docker-Content-Digest": digest}
        )

    # --- uploads ------------------------------------------------------------------------------

    async def _owned(self, request: Request[Any, Any, State], name: str, action: str) -> RepoRef:
        # Authenticate before resolving, so anonymous clients get the challenge they need.
        _require(request, self.auth, name, action)
        return await self.registry.resolve(name)

    def _upload_headers(self, name: str, upload_id: str, offset: int) -> dict[str, str]:
        return {
            **API_VERSION,
            "Location": f"/v2/{name}/blobs/uploads/{quote(upload_id)}",
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{max(offset - 1, 0)}",
        }

    async def start_upload(self, request: Request[Any, Any, State], name: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        claims = _require(request, self.auth, name, "push", repo.did)
        q = request.query_params
        mount = q.get("mount")
        # `from` is informational: blobs are content-addressed per hold, and the mount is
        # checked at the user's own hold with the user's own service token (crew rights).
        if mount and await self.registry.mount(repo, claims.subject, mount):
            return Response(
                b"", status_code=201,
                headers={**API_VERSION, "Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount},
            )
        digest = q.get("digest")
        if not digest and self.direct_uploads:
            # The bytes go straight to the hold (OCI allows an absolute Location); its closing
            # PUT answers with this AppView's blob URL. A monolithic POST (its body is already
            # here) stays on the proxied path below.
            direct = await self.registry.start_direct_upload(
                repo, claims.subject, f"{self.base_url}/v2/{name}/blobs/", self.max_blob_size
            )
            if direct is not None:
                upload_id, url = direct
                return Response(
                    b"", status_code=202,
                    headers={**API_VERSION, "Location": url, "Docker-Upload-UUID": upload_id, "Range": "0-0"},
                )
        session = await self.registry.start_upload(repo, claims.subject)
        if digest:
            length = _content_length(request)
            session = await self.registry.append(
                repo, claims.subject, session.id, _body(request), start=None, length=length,
                max_size=self.max_blob_size, final=True,
            )
            final = await self.registry.finish(repo, claims.subject, session.id, digest)
            return Response(
                b"", status_code=201,
                headers={**API_VERSION, "Location": f"/v2/{name}/blobs/{final}", "Docker-Content-Digest": final},
            )
        return Response(b"", status_code=202, headers=self._upload_headers(name, session.id, 0))

    async def patch_upload(self, request: Request[Any, Any, State], name: str, upload_id: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        claims = _require(request, self.auth, name, "push", repo.did)
        start = None
        length = _content_length(request)
        crange = request.headers.get("content-range")
        if crange:
            m = _CONTENT_RANGE.match(crange.strip())
            if not m:
                raise RangeInvalid("malformed Content-Range")
            start, end = int(m.group(1)), int(m.group(2))
            if end < start:
                raise RangeInvalid("malformed Content-Range")
            if length is not None and end - start + 1 != length:
                raise RangeInvalid("Content-Range does not match Content-Length")
        session = await self.registry.append(
            repo, claims.subject, upload_id, _body(request), start=start, length=length, max_size=self.max_blob_size
        )
        return Response(b"", status_code=202, headers=self._upload_headers(name, session.id, session.offset))

    async def put_upload(self, request: Request[Any, Any, State], name: str, upload_id: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        claims = _require(request, self.auth, name, "push", repo.did)
        digest = request.query_params.get("digest")
        if not digest:
            raise BlobUploadInvalid("digest query parameter required")
        length = _content_length(request)
        start = None
        crange = request.headers.get("content-range")
        if crange:
            m = _CONTENT_RANGE.match(crange.strip())
            if not m:
                raise RangeInvalid("malformed Content-Range")
            start = int(m.group(1))
        if length or request.headers.get("transfer-encoding"):
            await self.registry.append(
                repo, claims.subject, upload_id, _body(request), start=start, length=length,
                max_size=self.max_blob_size, final=True,
            )
        final = await self.registry.finish(repo, claims.subject, upload_id, digest)
        return Response(
            b"", status_code=201,
            headers={**API_VERSION, "Location": f"/v2/{name}/blobs/{final}", "Docker-Content-Digest": final},
        )

    async def upload_status(self, request: Request[Any, Any, State], name: str, upload_id: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        _require(request, self.auth, name, "push", repo.did)
        session = await self.registry.upload_status(repo, upload_id)
        return Response(b"", status_code=204, headers=self._upload_headers(name, session.id, session.offset))

    async def cancel_upload(self, request: Request[Any, Any, State], name: str, upload_id: str) -> Response[Any]:
        repo = await self._owned(request, name, "push")
        claims = _require(request, self.auth, name, "push", repo.did)
        await self.registry.cancel(repo, claims.subject, upload_id)
        return Response(b"", status_code=204, headers=API_VERSION)

    # --- discovery ----------------------------------------------------------------------------

    async def tags(self, request: Request[Any, Any, State], name: str) -> Response[Any]:
        _require(request, self.auth, name, "pull")
        repo = await self.registry.resolve(name)
        n = _page_size(request.query_params.get("n"))
        last = request.query_params.get("last")
        tags = await self.registry.tags(repo)
        if last:
            tags = [t for t in tags if t > last]
        headers = dict(API_VERSION)
        if n is not None:
            if n < len(tags) and n > 0:
                headers["Link"] = _link(f"/v2/{name}/tags/list", {"n": str(n), "last": tags[n - 1]})
            tags = tags[:n]
        return Response({"name": name, "tags": tags}, status_code=200, headers=headers)

    async def referrers(self, request: Request[Any, Any, State], name: str, digest: str) -> Response[Any]:
        claims = _require(request, self.auth, name, "pull")
        repo = await self.registry.resolve(name)
        artifact_type = request.query_params.get("artifactType")
        manifests = await self.registry.referrers(repo, digest, artifact_type)
        manifests += await proof_referrers(self.provenance, self.registry, repo, digest, artifact_type)
        manifests += await scan_referrers(
            self.scans, self.registry, repo, digest, artifact_type, claims.subject or None
        )
        headers = dict(API_VERSION)
        if artifact_type:
            headers["OCI-Filters-Applied"] = "artifactType"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return Response(body, status_code=200, headers=headers, media_type=OCI_INDEX)

    async def catalog(self, request: Request[Any, Any, State]) -> Response[Any]:
        claims = _claims(request, self.auth)
        if claims is None:
            raise Unauthorized(headers={"WWW-Authenticate": _challenge(self.auth, "registry:catalog:*")})
        n = _page_size(request.query_params.get("n"))
        size = 100 if n is None else n
        last = request.query_params.get("last")
        names = await self.registry.catalog(last, size + 1) if size else []
        headers = dict(API_VERSION)
        if len(names) > size:
            names = names[:size]
            headers["Link"] = _link("/v2/_catalog", {"n": str(size), "last": names[-1]})
        return Response({"repositories": names}, status_code=200, headers=headers)
