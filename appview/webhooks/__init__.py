"""User webhooks: events about a user's repositories, delivered signed (Standard Webhooks).

The push path only *enqueues* (`events.py`, one Valkey script call); `worker.py` delivers
from a durable queue in Valkey with leases, retries with exponential backoff for about a day,
and keeps the last 50 attempts per webhook. `api.py` is the HTTP layer (JSON API and the
settings page). docs/webhooks.md describes the payload for receivers.
"""

from appview.webhooks.events import EVENT_KINDS, WebhookEvents, emit_scan_event
from appview.webhooks.store import WebhookStore

__all__ = ["EVENT_KINDS", "WebhookEvents", "WebhookStore", "emit_scan_event"]
