"""The UI AppView (its own Valkey, so tests may FLUSHALL it) on the session's hold and PDS."""

from tests.support.ui_stack import ui_stack  # noqa: F401  (session fixture)
