"""The hold's storage and upload settings are validated at start, naming the setting."""

from __future__ import annotations

import pytest

from atcr.errors import ConfigError
from atcr.settings import load
from hold.settings import HoldSettings

pytestmark = pytest.mark.unit


def test_defaults_are_usable() -> None:
    s = load(HoldSettings, {})
    assert s.storage_driver == "filesystem"
    assert s.upload_part_min_size == 5 * 1024**2 <= s.upload_part_max_size
    assert s.url_expiry > 0 and s.upload_max_age > 0
    assert not s.allow_token_reuse


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"STORAGE_DRIVER": "s3"}, "S3_BUCKET"),
        ({"STORAGE_DRIVER": "gcs"}, "STORAGE_DRIVER"),
        ({"HOLD_UPLOAD_PART_MIN_SIZE": "100", "HOLD_UPLOAD_PART_MAX_SIZE": "10"}, "HOLD_UPLOAD_PART_MIN_SIZE"),
        ({"HOLD_UPLOAD_PART_MAX_SIZE": str(6 * 1024**3)}, "HOLD_UPLOAD_PART_MAX_SIZE"),
        ({"STORAGE_DRIVER": "s3", "S3_BUCKET": "b", "HOLD_UPLOAD_PART_MIN_SIZE": "1024"}, "HOLD_UPLOAD_PART_MIN_SIZE"),
        ({"HOLD_UPLOAD_PART_MIN_SIZE": str(8 * 1024**2)}, "HOLD_UPLOAD_PART_MIN_SIZE"),
        ({"HOLD_UPLOAD_PART_MAX_SIZE": str(16 * 1024**2)}, "HOLD_UPLOAD_PART_MAX_SIZE"),
        ({"HOLD_URL_EXPIRY": "0"}, "HOLD_URL_EXPIRY"),
        ({"HOLD_UPLOAD_SWEEP_INTERVAL": "-1"}, "HOLD_UPLOAD_SWEEP_INTERVAL"),
        ({"S3_RETRY_BASE_DELAY": "2", "S3_RETRY_MAX_DELAY": "1"}, "S3_RETRY"),
        ({"S3_MAX_ATTEMPTS": "0"}, "S3_MAX_ATTEMPTS"),
        ({"HOLD_OWNER": "alice"}, "HOLD_OWNER"),
        ({"S3_ENDPOINT": "minio:9000"}, "S3_ENDPOINT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load(HoldSettings, env)


def test_holds_accept_every_part_size_an_appview_sends() -> None:
    from appview.oci.parts import PART_SIZE, STREAM_AFTER
    from hold.settings import APPVIEW_PART_MAX, APPVIEW_PART_MIN

    assert APPVIEW_PART_MIN == STREAM_AFTER
    assert APPVIEW_PART_MAX >= PART_SIZE + STREAM_AFTER - 1
