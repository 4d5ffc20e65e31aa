"""The webhook AppView and the Debian chromium of the auth tests, for the settings page test."""

from tests.e2e.auth.conftest import chromium  # noqa: F401  (the Debian chromium fixture)
from tests.support.webhooks_stack import webhooks_stack  # noqa: F401  (session fixture)
