"""Building event payloads and queuing them: all the push path ever does for webhooks.

`WebhookEvents.emit` costs one Valkey script call and never raises: a webhook must not fail
or slow a push, so a Valkey error is logged and the event is dropped (the push itself has
already been written to the user's PDS). The scanner calls `emit_scan_event`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

import valkey.asyncio as avalkey

from appview.auth.sessions import SessionCipher
from appview.webhooks.store import WebhookStore

log = logging.getLogger("appview.webhooks")

# What a webhook subscribes to; the payload's `type` is finer (docs/webhooks.md).
EVENT_KINDS: Final = ("push", "tag", "delete", "scan:first", "scan:all", "scan:changed")
# ATCR's `io.atcr.sailor.webhook` trigger bits, for the scan kinds.
TRIGGER_BITS: Final = {"scan:first": 0x01, "scan:all": 0x02, "scan:changed": 0x04}
_KIND_OF_TYPE: Final = {
    "push": "push",
    "tag": "tag",
    "tag:deleted": "delete",
    "manifest:deleted": "delete",
    "scan:first": "scan:first",
    "scan:all": "scan:all",
    "scan:changed": "scan:changed",
}
EMIT_TIMEOUT = 2.0


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def new_event_id() -> str:
    """Standard Webhooks message ids are unique per event; ``msg_`` like the spec's examples."""
    return "msg_" + secrets.token_hex(12)


def payload(type_: str, data: dict[str, Any], *, ts: float | None = None) -> str:
    """The JSON body every receiver gets: ``{"type", "timestamp", "data"}``."""
    return json.dumps({"type": type_, "timestamp": iso(ts if ts is not None else time.time()), "data": data},
                      separators=(",", ":"), sort_keys=True)


class WebhookEvents:
    """Turns registry happenings into queued deliveries; shared by the OCI routes and the scanner."""

    def __init__(self, store: WebhookStore, *, registry_host: str, base_url: str,
                 wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self.registry_host = registry_host
        self.base_url = base_url.rstrip("/")
        self._wake = wake

    def _data(self, owner_did: str, owner_handle: str | None, repository: str, *, actor_did: str | None,
              actor_handle: str | None, tag: str | None, digest: str | None, media_type: str | None) -> dict[str, Any]:
        owner = owner_handle or owner_did
        return {
            "registry": self.registry_host,
            "repository": repository,
            "name": f"{owner}/{repository}",
            "owner": {"did": owner_did, "handle": owner_handle},
            "actor": {"did": actor_did, "handle": actor_handle} if actor_did else None,
            "tag": tag,
            "digest": digest,
            "mediaType": media_type,
            "url": f"{self.base_url}/r/{owner}/{repository}",
        }

    async def emit(self, type_: str, owner_did: str, owner_handle: str | None, repository: str, *,
                   actor_did: str | None = None, actor_handle: str | None = None, tag: str | None = None,
                   digest: str | None = None, media_type: str | None = None, **extra: Any) -> int:
        """Queue a `type_` event for the owner's subscribed webhooks; how many were queued (0 on error)."""
        kind = _KIND_OF_TYPE[type_]
        data = self._data(owner_did, owner_handle, repository, actor_did=actor_did, actor_handle=actor_handle,
                          tag=tag, digest=digest, media_type=media_type)
        data.update(extra)
        body = payload(type_, data)
        try:
            async with asyncio.timeout(EMIT_TIMEOUT):
                n = await self.store.emit(owner_did, kind, repository, new_event_id(), body, type_)
        except Exception as exc:  # a webhook never fails the push that caused it
            log.warning("webhook event %s for %s/%s not queued: %s", type_, owner_did, repository,
                        type(exc).__name__)
            return 0
        if n and self._wake is not None:
            self._wake()
        return n


async def emit_scan_event(
    events: WebhookEvents | avalkey.Valkey,
    *,
    owner_did: str,
    repository: str,
    digest: str,
    summary: dict[str, Any],
    first: bool,
    changed: bool,
    owner_handle: str | None = None,
    media_type: str | None = None,
    cipher_secret: bytes | None = None,
    registry_host: str = "",
    base_url: str = "",
) -> int:
    """Queue the scan events of one finished scan: ``scan:all`` always, ``scan:first`` on the
    manifest's first scan, ``scan:changed`` when the summary differs from the previous scan's
    (ATCR's trigger bits 0x01/0x02/0x04).

    `summary` is ATCR's `io.atcr.hold.scan` counts: critical, high, medium, low, total,
    scannerVersion, scannedAt. Pass the AppView's `WebhookEvents` (app.state.webhook_events)
    or, from another process on the AppView's Valkey, that Valkey client (a cipher secret is
    then not needed: queuing reads no webhook secret).
    """
    if isinstance(events, WebhookEvents):
        target = events
    else:
        store = WebhookStore(events, SessionCipher(cipher_secret or b"\0" * 32))
        target = WebhookEvents(store, registry_host=registry_host, base_url=base_url)
    types = ["scan:all"] + (["scan:first"] if first else []) + (["scan:changed"] if changed else [])
    total = 0
    for type_ in types:
        total += await target.emit(type_, owner_did, owner_handle, repository, digest=digest,
                                   media_type=media_type, scan=dict(summary))
    return total


__all__ = ["EVENT_KINDS", "TRIGGER_BITS", "WebhookEvents", "emit_scan_event", "new_event_id", "payload"]
