"""The crew/stats/quota settings: defaults, parsing, and refusals that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from atcr.errors import ConfigError
from atcr.settings import load
from hold.settings import HoldSettings

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    s = load(HoldSettings, {})
    assert s.trust_pull_notifications is True  # compatible with AppViews that send no token
    assert s.trusted_appviews == ()
    assert s.quotas_path is None
    assert s.stats_flush_interval == 5.0


def test_values() -> None:
    s = load(
        HoldSettings,
        {
            "HOLD_TRUST_PULL_NOTIFICATIONS": "false",
            "HOLD_TRUSTED_APPVIEWS": "did:web:atcr.io, did:web:localhost%3A5000",
            "HOLD_QUOTAS_PATH": "/etc/atcr/quotas.yaml",
            "HOLD_STATS_FLUSH_INTERVAL": "0.5",
        },
    )
    assert s.trust_pull_notifications is False
    assert s.trusted_appviews == ("did:web:atcr.io", "did:web:localhost%3A5000")
    assert s.quotas_path == Path("/etc/atcr/quotas.yaml")
    assert s.stats_flush_interval == 0.5


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"HOLD_TRUSTED_APPVIEWS": "atcr.io"}, "HOLD_TRUSTED_APPVIEWS"),
        ({"HOLD_STATS_FLUSH_INTERVAL": "0"}, "HOLD_STATS_FLUSH_INTERVAL"),
        ({"HOLD_TRUST_PULL_NOTIFICATIONS": "sometimes"}, "HOLD_TRUST_PULL_NOTIFICATIONS"),
    ],
)
def test_refusals(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(HoldSettings, env)
