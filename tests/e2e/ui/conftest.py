"""The UI AppView (its own Valkey) on the session's hold and PDS, for the browser tests."""

from tests.support.ui_stack import ui_stack  # noqa: F401  (session fixture)
