"""Which blob GET ranges the AppView refuses before redirecting to storage."""

from __future__ import annotations

import pytest

from appview.oci.routes import _range_satisfiable


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, True), ("", True), ("bytes=0-0", True), ("bytes=500-1499", True), ("bytes=500-", True),
        ("bytes=-500", True), ("bytes=2000-5000", True), ("bytes=-5000", True),
        ("bytes=500-0", False), ("bytes=2048-", False), ("bytes=5000-10000", False), ("bytes=-0", False),
        ("bytes=0-1,4-5", True),  # several ranges: left to the storage
        ("items=0-1", True),  # another unit: ignored, as RFC 9110 says
    ],
)
def test_range_of_a_2048_byte_blob(header: str | None, ok: bool) -> None:
    assert _range_satisfiable(header, 2048) is ok


def test_nothing_in_an_empty_blob_is_satisfiable() -> None:
    assert not _range_satisfiable("bytes=0-", 0)
    assert not _range_satisfiable("bytes=-1", 0)
    assert _range_satisfiable(None, 0)
