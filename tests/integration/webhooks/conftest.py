"""The webhook AppView (its own Valkey and receiver) on the session's hold and PDS."""

from tests.support.webhooks_stack import webhooks_stack  # noqa: F401  (session fixture)
