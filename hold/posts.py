"""Posts about pushes from the hold's own account (ATCR's `enableBlueskyPosts`, ATCR-NOTES §5.6).

When the captain record has ``enableBlueskyPosts: true``, a push (`notifyManifest`) makes the
hold write an ``app.bsky.feed.post`` record in its own repo: "@alice.example pushed myapp:v1"
with a mention facet (the pusher's DID) and a link facet to the repository's page on the
AppView (HOLD_APPVIEW_URL). Relays crawl the hold's repo like any PDS, so the post shows in
Bluesky clients under the hold's account.

At most one post per repository per HOLD_BLUESKY_POST_INTERVAL seconds (a Valkey key with that
TTL, shared by replicas): a CI pushing every minute does not flood the feed. Posting runs after
the push was answered and never fails it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hold.repo.repo import Create, Repo

log = logging.getLogger("hold.posts")

POST = "app.bsky.feed.post"
MAX_GRAPHEMES = 300


def _utf8_span(text: str, start: int, part: str) -> dict[str, int]:
    """Facet indices are UTF-8 byte offsets."""
    begin = len(text[:start].encode())
    return {"byteStart": begin, "byteEnd": begin + len(part.encode())}


def push_post(handle: str | None, did: str, repository: str, tag: str | None, page_url: str | None,
              created_at: str) -> dict[str, Any]:
    """The post record for one push: mention facet on the handle, link facet on the URL."""
    who = f"@{handle}" if handle else did
    ref = f"{repository}:{tag}" if tag else repository
    text = f"{who} pushed {ref}"
    facets: list[dict[str, Any]] = []
    if handle:
        facets.append({"index": _utf8_span(text, 0, who),
                       "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]})
    if page_url:
        start = len(text) + 1
        text = f"{text}\n{page_url}"
        facets.append({"index": _utf8_span(text, start, page_url),
                       "features": [{"$type": "app.bsky.richtext.facet#link", "uri": page_url}]})
    record: dict[str, Any] = {"$type": POST, "text": text[:MAX_GRAPHEMES], "createdAt": created_at, "langs": ["en"]}
    if facets:
        record["facets"] = facets
    return record


class PushPoster:
    def __init__(
        self,
        repo: Callable[[], Repo],
        captain_record: Callable[[], Awaitable[dict[str, Any] | None]],
        handle_of: Callable[[str], Awaitable[str | None]],
        valkey: Any,
        *,
        hold_did: str,
        appview_url: str,
        interval: float,
    ) -> None:
        self._repo = repo
        self._captain = captain_record
        self._handle_of = handle_of
        self._v = valkey
        self.hold_did = hold_did
        self.appview_url = appview_url.rstrip("/")
        self.interval = interval
        self._tasks: set[asyncio.Task[None]] = set()

    async def enabled(self) -> bool:
        record = await self._captain()
        return bool(record and record.get("enableBlueskyPosts") is True)

    def pushed(self, did: str, repository: str, tag: str | None) -> None:
        """Post about this push in the background (the push's answer does not wait)."""
        task = asyncio.create_task(self._post_quietly(did, repository, tag))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_quietly(self, did: str, repository: str, tag: str | None) -> None:
        try:
            await self.post(did, repository, tag)
        except Exception as exc:  # a post never fails or slows a push
            log.warning("post about %s/%s not written: %s", did, repository, type(exc).__name__)

    async def post(self, did: str, repository: str, tag: str | None) -> str | None:
        """Write the post unless disabled or rate-limited; its AT-URI, or None."""
        if not await self.enabled():
            return None
        if self._v is not None and self.interval > 0:
            key = f"hold:{self.hold_did}:posted:{did}/{repository}"
            if not await self._v.set(key, b"1", nx=True, ex=max(1, int(self.interval))):
                log.debug("post about %s/%s skipped: one in the last %ds", did, repository, self.interval)
                return None
        handle = await self._handle_of(did)
        page = f"{self.appview_url}/r/{handle or did}/{repository}" if self.appview_url else None
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        record = push_post(handle, did, repository, tag, page, created)
        repo = self._repo()
        rkey = repo.next_tid()
        await repo.apply_writes([Create(POST, rkey, record)])
        uri = f"at://{self.hold_did}/{POST}/{rkey}"
        log.info("posted %s about a push to %s/%s", uri, did, repository)
        return uri

    async def drain(self) -> None:
        """Let posts already started finish (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["POST", "PushPoster", "push_post"]
