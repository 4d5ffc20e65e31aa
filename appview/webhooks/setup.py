"""Building the webhook parts of one AppView process from its settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import valkey.asyncio as avalkey

from appview.auth.sessions import SessionCipher
from appview.settings import AppViewSettings
from appview.webhooks.api import BasicLogin, WebhookApi
from appview.webhooks.events import WebhookEvents
from appview.webhooks.service import WebhookService
from appview.webhooks.store import WebhookStore
from appview.webhooks.worker import DeliveryWorker
from atcr.http import SafeHttpClient, SsrfPolicy


@dataclass
class Webhooks:
    store: WebhookStore
    events: WebhookEvents
    service: WebhookService
    worker: DeliveryWorker
    api: WebhookApi
    http: SafeHttpClient
    run_worker: bool

    def start(self) -> None:
        if self.run_worker:
            self.worker.start()

    async def aclose(self) -> None:
        await self.worker.stop()
        await self.http.aclose()


def build_webhooks(
    settings: AppViewSettings, valkey: avalkey.Valkey, secret: bytes, *, login: BasicLogin, web: Any
) -> Webhooks:
    # Webhook URLs are the users' own: never the private ranges ATCR_ALLOW_PRIVATE_NETWORKS opens
    # for PDSes in dev, only what ATCR_WEBHOOK_ALLOWED_HOSTS names.
    policy = SsrfPolicy(allow_private=False, allowed_hosts=frozenset(settings.webhook_allowed_hosts))
    http = SafeHttpClient(policy=policy, timeout=settings.webhook_timeout, max_redirects=0)
    store = WebhookStore(valkey, SessionCipher(secret))
    worker = DeliveryWorker(
        store, http, retry_base=settings.webhook_retry_base, max_age=settings.webhook_max_age,
        lease=settings.webhook_lease, timeout=settings.webhook_timeout,
    )
    host = urlsplit(settings.base_url).netloc or settings.service
    events = WebhookEvents(store, registry_host=host, base_url=settings.base_url, wake=worker.wake)
    service = WebhookService(store, policy, registry_host=host, wake=worker.wake)
    return Webhooks(store, events, service, worker, WebhookApi(service, login, web), http, settings.webhook_worker)


__all__ = ["Webhooks", "build_webhooks"]
