"""The UI AppView (its own Valkey) on the session's hold and PDS, for the browser tests."""

from collections.abc import AsyncIterator

import pytest

from tests.e2e.auth.conftest import chromium  # noqa: F401  (the Debian chromium fixture)
from tests.support.ui_stack import ui_stack  # noqa: F401  (session fixture)


@pytest.fixture
async def browser(chromium: object) -> AsyncIterator[object]:  # noqa: F811
    """The browser of the UI tests: the auth tests' Debian chromium, launched once per test."""
    yield chromium
