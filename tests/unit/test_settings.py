from __future__ import annotations

import subprocess
import sys

import pytest

from appview.settings import AppViewSettings
from atcr.errors import ConfigError
from atcr.settings import load
from hold.settings import HoldSettings
from jetstream.settings import JetstreamSettings

pytestmark = pytest.mark.unit

HOLD = "did:web:127.0.0.1%3A8080"


def test_env_values_are_typed_and_frozen() -> None:
    s = load(AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, "ATCR_TOKEN_EXPIRATION": "60"})
    assert s.token_expiration == 60
    assert s.default_hold_did == HOLD
    with pytest.raises(AttributeError):
        s.token_expiration = 5  # type: ignore[misc]


def test_cli_flag_beats_env() -> None:
    s = load(
        AppViewSettings,
        {"ATCR_DEFAULT_HOLD_DID": HOLD, "ATCR_HTTP_ADDR": "127.0.0.1:1"},
        {"http_addr": "127.0.0.1:2"},
    )
    assert s.http_addr == "127.0.0.1:2"


@pytest.mark.parametrize(
    ("cls", "env", "named"),
    [
        (AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, "ATCR_HTTP_ADDR": "nope"}, "ATCR_HTTP_ADDR"),
        (AppViewSettings, {}, "ATCR_DEFAULT_HOLD_DID"),
        (AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": "hold1"}, "ATCR_DEFAULT_HOLD_DID"),
        (AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, "ATCR_TOKEN_EXPIRATION": "x"}, "ATCR_TOKEN_EXPIRATION"),
        (AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, "ATCR_BASE_URL": "ftp://x"}, "ATCR_BASE_URL"),
        (HoldSettings, {"STORAGE_DRIVER": "gcs"}, "STORAGE_DRIVER"),
        (HoldSettings, {"STORAGE_DRIVER": "s3"}, "S3_BUCKET"),
        (HoldSettings, {"HOLD_PUBLIC": "maybe"}, "HOLD_PUBLIC"),
        (HoldSettings, {"HOLD_OWNER": "alice"}, "HOLD_OWNER"),
        (HoldSettings, {"ATCR_PLC_URL": "plc"}, "ATCR_PLC_URL"),
        (HoldSettings, {"VALKEY_URL": "http://x"}, "VALKEY_URL"),
        (JetstreamSettings, {"JETSTREAM_URL": "https://x/subscribe"}, "JETSTREAM_URL"),
    ],
)
def test_wrong_value_names_the_setting(cls: type, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(cls, env)
    assert named in str(info.value)
    assert "\n" not in str(info.value)


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load(HoldSettings, {"VALKEY_URL": "http://user:hunter2@x"})
    assert "hunter2" not in str(info.value)


def test_jetstream_urls_are_a_list() -> None:
    s = load(JetstreamSettings, {"JETSTREAM_URL": "ws://127.0.0.1:1/subscribe, ws://127.0.0.1:2/subscribe"})
    assert s.jetstream_urls == ("ws://127.0.0.1:1/subscribe", "ws://127.0.0.1:2/subscribe")


def test_cli_config_error_is_one_line_and_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "atcr.cli", "hold"],
        env={"STORAGE_DRIVER": "tape", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "STORAGE_DRIVER" in lines[0]
    assert "Traceback" not in proc.stderr


def test_help_lists_settings() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "atcr.cli", "appview", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for env in ("ATCR_BASE_URL", "ATCR_HTTP_ADDR", "ATCR_DEFAULT_HOLD_DID", "VALKEY_URL", "ATCR_PLC_URL"):
        assert env in proc.stdout
