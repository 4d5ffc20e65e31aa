"""Webhook errors: leaves of the AppView's one root (`RegistryError`), so the HTTP layer
answers them as `{"errors":[{"code","message"}]}` with the leaf's status."""

from __future__ import annotations

from appview.errors import RegistryError


class WebhookError(RegistryError):
    code, status, default_message = "WEBHOOK_INVALID", 400, "invalid webhook"


class WebhookInvalid(WebhookError):
    pass


class WebhookUrlRefused(WebhookError):
    """The URL points at a loopback/private/link-local address (or cannot be resolved)."""

    code, default_message = "WEBHOOK_URL_REFUSED", "webhook URL refused"


class WebhookUnknown(WebhookError):
    code, status, default_message = "WEBHOOK_UNKNOWN", 404, "no such webhook"


class WebhookLimit(WebhookError):
    code, default_message = "WEBHOOK_LIMIT", "too many webhooks"
