"""What the JSON API and the settings page do with webhooks, with the checks in one place."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from appview.webhooks.errors import WebhookInvalid, WebhookUnknown, WebhookUrlRefused
from appview.webhooks.events import EVENT_KINDS, new_event_id, payload
from appview.webhooks.store import Webhook, WebhookStore
from atcr.errors import BlockedAddress, NetworkError
from atcr.http import SsrfPolicy, check_destination
from atcr.syntax import is_oci_repository

MAX_URL = 2000


async def check_url(url: str, policy: SsrfPolicy) -> None:
    """`WebhookUrlRefused` unless `url` is http(s) to a public address (or an allow-listed host)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise WebhookUrlRefused(f"url: an http:// or https:// URL of at most {MAX_URL} characters")
    try:
        await check_destination(url, policy)
    except BlockedAddress as exc:
        raise WebhookUrlRefused(f"url refused: {exc}") from None
    except NetworkError as exc:
        raise WebhookUrlRefused(f"url refused: {exc}") from None


def check_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise WebhookInvalid(f"events: a non-empty list of {', '.join(EVENT_KINDS)}")
    unknown = [e for e in events if e not in EVENT_KINDS]
    if unknown:
        raise WebhookInvalid(f"events: unknown {', '.join(sorted(set(unknown)))[:200]}; "
                             f"expected {', '.join(EVENT_KINDS)}")
    return list(dict.fromkeys(events))


def check_repository(repository: Any) -> str | None:
    if repository is None or repository == "":
        return None
    if not isinstance(repository, str) or not is_oci_repository(repository):
        raise WebhookInvalid("repository: a repository name of yours, e.g. myapp")
    return repository


class WebhookService:
    def __init__(self, store: WebhookStore, policy: SsrfPolicy, *, registry_host: str,
                 wake: Callable[[], None] | None = None) -> None:
        self.store = store
        self.policy = policy
        self.registry_host = registry_host
        self._wake = wake

    async def create(self, did: str, url: Any, events: Any, repository: Any) -> tuple[Webhook, str]:
        wanted = check_events(events)
        repo = check_repository(repository)
        await check_url(url, self.policy)
        return await self.store.create(did, url, wanted, repo)

    async def send_test(self, did: str, hook_id: str) -> str:
        """Queue a `test` event to this webhook only; its message id."""
        hook = await self.store.get(hook_id, did)
        message_id = new_event_id()
        body = payload("test", {
            "registry": self.registry_host, "webhook": hook.id, "owner": {"did": did},
            "message": "a test event sent from the registry's webhook settings",
        })
        await self.store.enqueue(hook.id, message_id, body, "test")
        self._poke()
        return message_id

    async def redeliver(self, did: str, hook_id: str, message_id: str) -> None:
        """Send a logged delivery again, same body and `webhook-id` (receivers de-duplicate on it)."""
        hook = await self.store.get(hook_id, did)
        found = await self.store.logged_body(hook.id, message_id)
        if found is None:
            raise WebhookUnknown("no such delivery in this webhook's log", detail={"delivery": message_id[:80]})
        body, type_ = found
        await self.store.enqueue(hook.id, message_id, body, type_)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake()

    async def listing(self, did: str) -> list[dict[str, Any]]:
        return [h.public() for h in await self.store.for_user(did)]

    async def deliveries(self, did: str, hook_id: str) -> list[dict[str, Any]]:
        hook = await self.store.get(hook_id, did)
        return await self.store.deliveries(hook.id)

    async def delete(self, did: str, hook_id: str) -> None:
        await self.store.delete(did, hook_id)


def created_view(hook: Webhook, secret: str) -> dict[str, Any]:
    """The answer to a create: the webhook and, this once, its signing secret."""
    return {**hook.public(), "secret": secret, "shownOnce": True, "createdAtUnix": int(time.time())}


__all__ = ["WebhookService", "check_events", "check_repository", "check_url", "created_view"]
