"""The README's configuration table lists every setting a service reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from appview.settings import AppViewSettings
from atcr.settings import describe
from hold.settings import HoldSettings
from jetstream.settings import JetstreamSettings
from scanner.settings import ScannerSettings

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("cls", [AppViewSettings, HoldSettings, JetstreamSettings, ScannerSettings])
def test_every_setting_is_documented(cls: type) -> None:
    missing = [info.env for info in describe(cls) if f"`{info.env}`" not in README]
    assert missing == [], f"add to README's configuration table: {missing}"
