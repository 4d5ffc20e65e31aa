"""A small XRPC client: queries, procedures, blobs, errors mapped to typed exceptions.

Authentication is a pluggable `XrpcAuth` so the same client serves anonymous reads, app
password sessions (Bearer) and, later, OAuth sessions with DPoP (which must see each
response to pick up nonces and retry once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from atcr.errors import (
    AuthenticationRequired,
    InvalidSwap,
    RecordNotFound,
    UpstreamUnavailable,
    XrpcError,
)
from atcr.http import SafeHttpClient
from atcr.lexicon import known_record_nsids, validate_record

Params = Mapping[str, str | int | bool | list[str] | None]


class XrpcAuth(Protocol):
    """Adds credentials to a request; may ask for one retry after seeing the response."""

    async def headers(self, method: str, url: str) -> dict[str, str]: ...

    async def should_retry(self, response: httpx.Response) -> bool: ...


@dataclass
class BearerAuth:
    """A plain access token (app-password sessions, service tokens)."""

    token: str

    async def headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def should_retry(self, response: httpx.Response) -> bool:
        return False


_ERRORS: dict[str, type[XrpcError]] = {
    "RecordNotFound": RecordNotFound,
    "InvalidSwap": InvalidSwap,
    "AuthenticationRequired": AuthenticationRequired,
    "ExpiredToken": AuthenticationRequired,
    "InvalidToken": AuthenticationRequired,
}


def _raise_for(resp: httpx.Response, nsid: str) -> None:
    if resp.status_code < 400:
        return
    error, message = "", ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            error = str(body.get("error") or "")
            message = str(body.get("message") or "")
    except ValueError:
        pass
    if resp.status_code >= 500 and not error:
        raise UpstreamUnavailable(f"{nsid}: upstream answered {resp.status_code}")
    if not error:
        error = {401: "AuthenticationRequired", 403: "Forbidden", 404: "NotFound"}.get(
            resp.status_code, "UnknownError"
        )
    if resp.status_code == 400 and error == "InvalidRequest" and "Could not locate record" in message:
        error = "RecordNotFound"
    cls = _ERRORS.get(error, XrpcError)
    if resp.status_code == 401 and cls is XrpcError:
        cls = AuthenticationRequired
    raise cls(resp.status_code, error, message)


def _clean(params: Params | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


class XrpcClient:
    """XRPC against one service (a PDS, a hold)."""

    def __init__(self, http: SafeHttpClient, base_url: str, auth: XrpcAuth | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.auth = auth

    def url(self, nsid: str) -> str:
        return f"{self.base_url}/xrpc/{nsid}"

    async def _send(
        self,
        method: str,
        nsid: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = self.url(nsid)
        for attempt in range(2):
            hdrs = dict(headers or {})
            if self.auth is not None:
                hdrs.update(await self.auth.headers(method, url))
            resp = await self.http.request(
                method, url, params=_clean(params), headers=hdrs, max_bytes=max_bytes, **kwargs
            )
            if attempt == 0 and self.auth is not None and await self.auth.should_retry(resp):
                continue
            return resp
        return resp

    async def query(self, nsid: str, params: Params | None = None, **kw: Any) -> Any:
        resp = await self._send("GET", nsid, params=params, **kw)
        _raise_for(resp, nsid)
        return resp.json()

    async def procedure(
        self, nsid: str, body: Any = None, params: Params | None = None, **kw: Any
    ) -> Any:
        if body is not None:
            kw["json"] = body
        resp = await self._send("POST", nsid, params=params, **kw)
        _raise_for(resp, nsid)
        if not resp.content:
            return None
        return resp.json()

    # -- repo helpers ----------------------------------------------------------------------

    async def get_record(self, repo: str, collection: str, rkey: str, cid: str | None = None) -> dict[str, Any]:
        """`{uri, cid, value}`; raises RecordNotFound when absent."""
        out: dict[str, Any] = await self.query(
            "com.atproto.repo.getRecord", {"repo": repo, "collection": collection, "rkey": rkey, "cid": cid}
        )
        return out

    async def list_records(
        self, repo: str, collection: str, *, limit: int = 100, cursor: str | None = None, reverse: bool = False
    ) -> tuple[list[dict[str, Any]], str | None]:
        out = await self.query(
            "com.atproto.repo.listRecords",
            {"repo": repo, "collection": collection, "limit": limit, "cursor": cursor, "reverse": reverse or None},
        )
        records = out.get("records") or []
        next_cursor = out.get("cursor")
        return records, next_cursor if records else None

    async def iter_records(
        self, repo: str, collection: str, *, page_size: int = 100, max_pages: int = 10_000
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        for _ in range(max_pages):
            records, cursor = await self.list_records(repo, collection, limit=page_size, cursor=cursor)
            for rec in records:
                yield rec
            if not cursor:
                return

    async def put_record(
        self,
        repo: str,
        collection: str,
        rkey: str,
        record: Mapping[str, Any],
        *,
        swap_record: str | None = None,
        swap_commit: str | None = None,
        create_only: bool = False,
    ) -> dict[str, Any]:
        """Validate against our lexicon, then write. Returns `{uri, cid}`.

        Validation happens before any byte leaves, so an invalid record is never half-written.
        `create_only` sends ``swapRecord: null``: the PDS refuses with InvalidSwap when a
        record already exists at the key (so two writers cannot both claim it).
        """
        body = {"$type": collection, **record}
        if collection in known_record_nsids():
            validate_record(collection, body)
        payload: dict[str, Any] = {"repo": repo, "collection": collection, "rkey": rkey, "record": body}
        # `validate` omitted: PDSes without our lexicons would refuse validate=true.
        if swap_record is not None or create_only:
            payload["swapRecord"] = swap_record
        if swap_commit is not None:
            payload["swapCommit"] = swap_commit
        out: dict[str, Any] = await self.procedure("com.atproto.repo.putRecord", payload)
        return out

    async def create_records(self, repo: str, creates: Sequence[tuple[str, str, Mapping[str, Any]]]) -> dict[str, Any]:
        """Create several records (collection, rkey, record) in one commit (`applyWrites`).

        All or nothing: a record already at one of the keys fails the whole call (the reference
        PDS answers 500 for it). Each record is validated first, as in `put_record`. Returns
        `{commit: {cid, rev}, results: [{uri, cid}, ...]}` in the order given.
        """
        writes = []
        for collection, rkey, record in creates:
            body = {"$type": collection, **record}
            if collection in known_record_nsids():
                validate_record(collection, body)
            writes.append(
                {"$type": "com.atproto.repo.applyWrites#create", "collection": collection, "rkey": rkey, "value": body}
            )
        out: dict[str, Any] = await self.procedure("com.atproto.repo.applyWrites", {"repo": repo, "writes": writes})
        return out

    async def delete_record(
        self, repo: str, collection: str, rkey: str, *, swap_record: str | None = None
    ) -> dict[str, Any]:
        """Returns `{commit: {cid, rev}}` when the PDS reports it."""
        payload: dict[str, Any] = {"repo": repo, "collection": collection, "rkey": rkey}
        if swap_record is not None:
            payload["swapRecord"] = swap_record
        out = await self.procedure("com.atproto.repo.deleteRecord", payload)
        return out if isinstance(out, dict) else {}

    async def upload_blob(self, data: bytes, mime_type: str) -> dict[str, Any]:
        """Upload bytes; returns the blob ref (`{"$type":"blob","ref":{"$link":cid},...}`)."""
        out = await self.procedure(
            "com.atproto.repo.uploadBlob", content=data, headers={"Content-Type": mime_type}
        )
        blob: dict[str, Any] = out["blob"]
        return blob

    async def get_blob(self, did: str, cid: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        resp = await self._send(
            "GET", "com.atproto.sync.getBlob", params={"did": did, "cid": cid}, max_bytes=max_bytes
        )
        _raise_for(resp, "com.atproto.sync.getBlob")
        return resp.content

    async def create_session(self, identifier: str, password: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.procedure(
            "com.atproto.server.createSession", {"identifier": identifier, "password": password}
        )
        return out

    async def get_service_auth(self, aud: str, lxm: str | None = None, exp: int | None = None) -> str:
        out = await self.query("com.atproto.server.getServiceAuth", {"aud": aud, "lxm": lxm, "exp": exp})
        token: str = out["token"]
        return token
