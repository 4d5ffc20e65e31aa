"""The AppView's client for holds (ATCR's hold XRPC surface, ATCR-NOTES.md §4.4, §5.2).

A hold is found from its DID: its document's `#atcr_hold` service names the endpoint. Calls
that act for a user carry a service token minted by that user's PDS (`getServiceAuth`, with
`aud` = the hold DID and `lxm` = the method), cached until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from atcr.errors import AtcrError, NetworkError, UpstreamUnavailable, XrpcError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver, did_web_url

log = logging.getLogger("appview.holds")

# Mints a service token for (user DID, hold DID, lxm); None when the user has no session.
TokenMinter = Callable[[str, str, str], Awaitable[str | None]]


# An upload's calls come in a known order: once one is made, the tokens for the calls that
# follow are minted in the background, so no PDS round trip sits between the client's requests.
NSID_INITIATE = "io.atcr.hold.initiateUpload"
NSID_UPLOAD_PART = "io.atcr.hold.uploadPart"
NSID_COMPLETE = "io.atcr.hold.completeUpload"
NSID_NOTIFY = "io.atcr.hold.notifyManifest"
# The DID-document service a hold that takes direct uploads advertises (hold/identity.py).
DIRECT_UPLOAD_SERVICE = "atcr_direct_upload"
# While a hold is given up on, a request goes through as a probe at most this often (seconds).
PROBE_EVERY = 1.0
MINT_NEXT: dict[str, tuple[str, ...]] = {
    NSID_INITIATE: (NSID_UPLOAD_PART, NSID_COMPLETE),
    NSID_UPLOAD_PART: (NSID_UPLOAD_PART,),
}
AHEAD_FRESH = 30.0  # seconds a token minted ahead is used; PDS service tokens live about 60 s
AHEAD_MAX = 10_000


def _consume_exception(task: asyncio.Task[str | None]) -> None:
    """A token minted ahead may fail unseen; its failure is retried when it is needed."""
    if not task.cancelled():
        task.exception()


class HoldError(AtcrError):
    """A hold refused or failed a call."""

    def __init__(self, status: int, error: str, message: str = "") -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(f"hold {status} {error}: {message}")


class HoldUnavailable(HoldError):
    """The hold could not be reached in time."""


@dataclass(frozen=True)
class BlobLocation:
    size: int | None
    url: str | None  # where to redirect a GET


class HoldClient:
    def __init__(
        self,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        mint: TokenMinter | None = None,
        allow_http_loopback: bool = False,
        timeout: float = 10.0,
        upload_timeout: float = 300.0,
        down_for: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._resolver = resolver
        self._mint = mint
        self._allow_http = allow_http_loopback
        self._timeout = timeout
        self._upload_timeout = upload_timeout
        self._down_for = down_for
        self._clock = clock
        # Holds that timed out or refused connections: given up on until the time stored, so
        # a hung hold costs one timeout per probe, not one per request (docs/hold.md). While a
        # hold is given up on, one request per PROBE_EVERY still goes through: the first to
        # succeed brings it back at once, so a restarted hold is not refused for `down_for`.
        self._down: dict[str, float] = {}
        self._next_probe: dict[str, float] = {}
        self._endpoints: dict[str, tuple[float, str]] = {}
        self._direct: dict[str, tuple[float, bool]] = {}
        self._ahead: dict[tuple[str, str, str], tuple[float, asyncio.Task[str | None]]] = {}

    def reachable(self, hold_did: str) -> bool:
        """False while the hold is given up on after a timeout or a refused connection."""
        until = self._down.get(hold_did)
        if until is None:
            return True
        if until <= self._clock():
            self._mark_up(hold_did)
            return True
        return False

    def _admit(self, hold_did: str) -> bool:
        """Whether a request may go to the hold: yes if it is up, or as the due probe if not."""
        if self.reachable(hold_did):
            return True
        now = self._clock()
        if self._next_probe.get(hold_did, 0.0) <= now:
            self._next_probe[hold_did] = now + min(PROBE_EVERY, self._down_for)
            return True
        return False

    def _mark_up(self, hold_did: str) -> None:
        if self._down.pop(hold_did, None) is not None:
            log.info("hold %s answers again", hold_did)
        self._next_probe.pop(hold_did, None)

    def _mark_down(self, hold_did: str, exc: Exception) -> None:
        if hold_did not in self._down or self._down[hold_did] <= self._clock():
            log.warning("hold %s did not answer (%s); giving up on it for %.0f s", hold_did, exc, self._down_for)
        now = self._clock()
        self._down[hold_did] = now + self._down_for
        self._next_probe[hold_did] = now + min(PROBE_EVERY, self._down_for)
        if len(self._down) > 10_000:
            self._down.clear()  # a bound, not an LRU: holds are few
            self._next_probe.clear()

    async def endpoint(self, hold_did: str) -> str:
        hit = self._endpoints.get(hold_did)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            doc = await self._resolver.resolve_did(hold_did)
            url = doc.service("atcr_hold")
        except NetworkError as exc:
            raise HoldUnavailable(503, "HoldUnavailable", f"{hold_did}: {exc}") from None
        except AtcrError as exc:
            raise HoldError(404, "HoldNotFound", f"{hold_did}: {exc}") from None
        if not url:
            if hold_did.startswith("did:web:"):
                url = did_web_url(hold_did, allow_http_loopback=self._allow_http).removesuffix(
                    "/.well-known/did.json"
                )
            else:
                raise HoldError(404, "HoldNotFound", f"{hold_did} has no #atcr_hold service")
        self._endpoints[hold_did] = (time.monotonic() + 300, url.rstrip("/"))
        return url.rstrip("/")

    async def takes_direct_uploads(self, hold_did: str) -> bool:
        """Whether the hold's DID document advertises direct uploads (remembered 5 minutes).

        A hold whose document cannot be read now is asked again next time; until then uploads
        take the proxied path, which reports the failure properly if the hold is really down.
        """
        hit = self._direct.get(hold_did)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            doc = await self._resolver.resolve_did(hold_did)
        except AtcrError as exc:
            log.info("hold %s: DID document unavailable (%s); uploads go through the AppView", hold_did, exc)
            return False
        takes = doc.service(DIRECT_UPLOAD_SERVICE) is not None
        if len(self._direct) > 10_000:
            self._direct.clear()  # a bound, not an LRU: holds are few
        self._direct[hold_did] = (time.monotonic() + 300, takes)
        return takes

    async def _next_token(self, user_did: str, hold_did: str, lxm: str, *, mint_next: bool = True) -> str | None:
        """Take the token minted ahead for this call if there is one, else mint it now.

        Each token is still used once (holds refuse a replayed `jti`); one minted ahead and
        never used simply expires unseen.
        """
        assert self._mint is not None
        ahead = self._ahead.pop((user_did, hold_did, lxm), None)
        token: str | None = None
        if ahead is not None:
            fresh_until, task = ahead
            if fresh_until > time.monotonic():
                try:
                    token = await task
                except (NetworkError, XrpcError):
                    token = None  # mint again below, and let that failure speak
            else:
                task.cancel()
        if token is None:
            token = await self._mint(user_did, hold_did, lxm)
        for following in MINT_NEXT.get(lxm, ()) if mint_next else ():
            self.mint_ahead(user_did, hold_did, following)
        return token

    def mint_ahead(self, user_did: str, hold_did: str, lxm: str) -> None:
        """Start minting the token a coming call will need (e.g. `initiateUpload` at POST)."""
        key = (user_did, hold_did, lxm)
        now = time.monotonic()
        if self._mint is None:
            return
        held = self._ahead.get(key)
        if held is not None:
            if held[0] > now:
                return
            self._ahead.pop(key)[1].cancel()  # too old to be used: mint a fresh one
        if len(self._ahead) >= AHEAD_MAX:
            for stale in [k for k, (until, _) in self._ahead.items() if until <= now]:
                self._ahead.pop(stale)[1].cancel()
            if len(self._ahead) >= AHEAD_MAX:
                return
        mint = self._mint

        async def ahead_of_time() -> str | None:
            return await mint(user_did, hold_did, lxm)

        task = asyncio.create_task(ahead_of_time())
        task.add_done_callback(_consume_exception)
        self._ahead[key] = (now + AHEAD_FRESH, task)

    async def _token(
        self, user_did: str | None, hold_did: str, lxm: str, *, mint_next: bool = True
    ) -> dict[str, str]:
        """A fresh service token per call: holds refuse a replayed `jti`, so tokens are single-use."""
        if user_did is None or self._mint is None:
            return {}
        try:
            token = await self._next_token(user_did, hold_did, lxm, mint_next=mint_next)
        except NetworkError as exc:
            raise HoldUnavailable(503, "PdsUnavailable", f"your PDS is unreachable (service token): {exc}") from None
        except XrpcError as exc:
            if exc.status >= 500:
                message = f"your PDS is failing (service token): {exc.error}"
                raise HoldUnavailable(503, "PdsUnavailable", message) from None
            raise HoldError(401, "ServiceAuthFailed", f"your PDS refused a service token: {exc.error}") from None
        if not token:
            # No PDS session (never logged in, or Valkey lost it): the hold would only say "401".
            raise HoldError(401, "SessionMissing", "no session with your PDS: run docker login again")
        return {"Authorization": f"Bearer {token}"}

    async def service_headers(self, user_did: str, hold_did: str, lxm: str) -> dict[str, str]:
        """The Authorization header of a fresh service token of `user_did`'s, for a call made
        outside this client (appview/scans fetches documents with its own bounded reads)."""
        return await self._token(user_did, hold_did, lxm, mint_next=False)

    async def _call(
        self,
        method: str,
        hold_did: str,
        nsid: str,
        *,
        user_did: str | None = None,
        anonymous_first: bool = False,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        follow_redirects: bool = False,
        mint_next: bool = True,
    ) -> httpx.Response:
        if not self._admit(hold_did):
            raise HoldUnavailable(503, "HoldUnavailable", f"{hold_did} did not answer just now; retry shortly")
        base = await self.endpoint(hold_did)
        if anonymous_first and user_did is not None:
            # Public holds answer reads without a token; only private ones cost a PDS round trip.
            resp = await self._call(method, hold_did, nsid, params=params, headers=headers, timeout=timeout)
            if resp.status_code not in (401, 403):
                return resp
        hdrs = dict(headers or {})
        hdrs.update(await self._token(user_did, hold_did, nsid, mint_next=mint_next))
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        try:
            resp = await self._http.request(
                method,
                f"{base}/xrpc/{nsid}",
                params=params,
                headers=hdrs,
                follow_redirects=follow_redirects,
                timeout=timeout or self._timeout,
                **kwargs,
            )
        except NetworkError as exc:
            self._mark_down(hold_did, exc)
            raise HoldUnavailable(503, "HoldUnavailable", f"{hold_did} did not answer: {exc}") from None
        if hold_did in self._down:
            self._mark_up(hold_did)
        return resp

    @staticmethod
    def _check(resp: httpx.Response) -> Any:
        if resp.status_code < 400:
            if not resp.content:
                return {}
            try:
                return resp.json()
            except ValueError:
                return {}
        error, message = "HoldError", ""
        try:
            body = resp.json()
            error = str(body.get("error") or error)
            message = str(body.get("message") or "")
        except ValueError:
            pass
        if resp.status_code >= 500:
            raise HoldUnavailable(resp.status_code, error, message)
        raise HoldError(resp.status_code, error, message)

    # --- blobs --------------------------------------------------------------------------------

    async def stat_blob(self, hold_did: str, digest: str, *, user_did: str | None = None) -> int | None:
        """The blob's size on the hold, or None when the hold does not have it."""
        resp = await self._call(
            "HEAD", hold_did, "com.atproto.sync.getBlob", user_did=user_did, anonymous_first=True,
            params={"did": hold_did, "cid": digest},
        )
        if resp.status_code == 404:
            return None
        if resp.status_code >= 300 and resp.status_code < 400:
            length = resp.headers.get("x-blob-size") or resp.headers.get("content-length")
            return int(length) if length and length.isdigit() else 0
        self._check(resp)
        length = resp.headers.get("x-blob-size") or resp.headers.get("content-length")
        return int(length) if length and length.isdigit() else 0

    async def blob_url(self, hold_did: str, digest: str, *, user_did: str | None = None) -> str | None:
        """A short-lived URL the client can fetch the blob from (presigned), or None if absent."""
        resp = await self._call(
            "GET", hold_did, "com.atproto.sync.getBlob", user_did=user_did, anonymous_first=True,
            params={"did": hold_did, "cid": digest},
        )
        if resp.status_code == 404:
            return None
        if 300 <= resp.status_code < 400 and "location" in resp.headers:
            return str(resp.headers["location"])
        body = self._check(resp)
        url = body.get("url") if isinstance(body, dict) else None
        return str(url) if url else None

    # --- uploads ------------------------------------------------------------------------------

    async def initiate_upload(self, hold_did: str, user_did: str, digest: str | None, size: int | None) -> str:
        body: dict[str, Any] = {}
        if digest:
            body["digest"] = digest
        if size is not None:
            body["size"] = size
        out = self._check(
            await self._call("POST", hold_did, NSID_INITIATE, user_did=user_did, json_body=body)
        )
        return str(out["uploadId"])

    async def initiate_direct_upload(
        self, hold_did: str, user_did: str, repository: str, blob_url: str, max_size: int
    ) -> tuple[str, str]:
        """Start a direct upload: (its id, the absolute upload URL for the client).

        The URL must be on the hold's own endpoint: the AppView hands it to the user's client.
        """
        body = {"direct": {"repository": repository, "blobUrl": blob_url, "maxSize": max_size}}
        # No part or completion tokens follow: the client talks to the hold from here on. A
        # push uploads its blobs one after another, so the next blob's token is minted now.
        out = self._check(
            await self._call("POST", hold_did, NSID_INITIATE, user_did=user_did, json_body=body, mint_next=False)
        )
        self.mint_ahead(user_did, hold_did, NSID_INITIATE)
        url = out.get("url") if isinstance(out, dict) else None
        upload_id = out.get("uploadId") if isinstance(out, dict) else None
        base = await self.endpoint(hold_did)
        if (
            not isinstance(url, str)
            or not url.startswith(base + "/")
            or len(url) > 8192
            or not isinstance(upload_id, str)
            or not 0 < len(upload_id) <= 128
        ):
            raise HoldError(502, "BadDirectUpload", f"{hold_did} answered a direct upload without a URL of its own")
        return upload_id, url

    async def upload_part(
        self, hold_did: str, user_did: str, upload_id: str, part_number: int, data: bytes | AsyncIterator[bytes]
    ) -> str:
        """Send one part; an iterator is streamed (chunked), so the part need not be in memory."""
        out = self._check(
            await self._call(
                "PUT", hold_did, NSID_UPLOAD_PART, user_did=user_did, content=data,
                headers={
                    "X-Upload-Id": upload_id,
                    "X-Part-Number": str(part_number),
                    "Content-Type": "application/octet-stream",
                },
                timeout=self._upload_timeout,
            )
        )
        return str(out["etag"])

    async def complete_upload(
        self, hold_did: str, user_did: str, upload_id: str, digest: str, parts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = self._check(
            await self._call(
                "POST", hold_did, NSID_COMPLETE, user_did=user_did,
                json_body={"uploadId": upload_id, "digest": digest, "parts": parts},
                timeout=self._upload_timeout,
            )
        )
        return out

    async def abort_upload(self, hold_did: str, user_did: str, upload_id: str) -> None:
        try:
            self._check(
                await self._call(
                    "POST", hold_did, "io.atcr.hold.abortUpload", user_did=user_did,
                    json_body={"uploadId": upload_id},
                )
            )
        except HoldError as exc:
            log.info("abortUpload on %s failed: %s", hold_did, exc)

    # --- notifications ------------------------------------------------------------------------

    async def notify_manifest(
        self,
        hold_did: str,
        user_did: str | None,
        body: dict[str, Any],
        *,
        service_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Tell the hold about a push (user's token) or pulls (`service_token` signed by the AppView).

        A retried notification with the same `idempotency_key` is counted once by the hold."""
        headers = {"Authorization": f"Bearer {service_token}"} if service_token else {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        out: dict[str, Any] = self._check(
            await self._call(
                "POST", hold_did, NSID_NOTIFY, user_did=user_did, json_body=body,
                headers=headers or None,
            )
        )
        return out

    async def gc_runs(self, hold_did: str, user_did: str) -> list[dict[str, Any]]:
        """The hold's last garbage-collection runs (`io.atcr.hold.listGcRuns`: its captain or a
        crew admin), newest first."""
        out = self._check(await self._call("GET", hold_did, "io.atcr.hold.listGcRuns", user_did=user_did))
        runs = out.get("runs") if isinstance(out, dict) else None
        return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []

    async def export_user_data(self, hold_did: str, user_did: str) -> dict[str, Any]:
        """`io.atcr.hold.exportUserData` as the user (their service token, minted at their PDS)."""
        out: dict[str, Any] = self._check(
            await self._call("GET", hold_did, "io.atcr.hold.exportUserData", user_did=user_did)
        )
        return out

    async def delete_user_data(self, hold_did: str, user_did: str) -> dict[str, Any]:
        """`io.atcr.hold.deleteUserData` as the user."""
        out: dict[str, Any] = self._check(
            await self._call("POST", hold_did, "io.atcr.hold.deleteUserData", user_did=user_did, json_body={})
        )
        return out

    async def request_scan(self, hold_did: str, user_did: str, digest: str) -> dict[str, Any]:
        """Ask the hold to scan a manifest of `user_did`'s again (`io.atcr.hold.requestScan`)."""
        out: dict[str, Any] = self._check(
            await self._call("POST", hold_did, "io.atcr.hold.requestScan", user_did=user_did,
                             json_body={"digest": digest})
        )
        return out

    async def request_crew(self, hold_did: str, user_did: str) -> dict[str, Any]:
        out: dict[str, Any] = self._check(
            await self._call("POST", hold_did, "io.atcr.hold.requestCrew", user_did=user_did, json_body={})
        )
        return out


__all__ = ["BlobLocation", "HoldClient", "HoldError", "HoldUnavailable", "UpstreamUnavailable", "XrpcError"]
