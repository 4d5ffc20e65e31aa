"""Range requests on the local driver's URLs (RFC 9110 §14, single ranges)."""

from __future__ import annotations

import pytest

from hold.errors import RangeNotSatisfiable
from hold.routes_blob import parse_range

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("header", "size", "span"),
    [
        (None, 100, None),
        ("", 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=5-3", 100, None),  # invalid: ignored, whole body
        ("bytes=0-1,5-6", 100, None),  # several ranges: we send everything (allowed)
        ("items=0-5", 100, None),
        ("bytes=-", 100, None),
        ("bytes=٠-٩", 100, None),
    ],
)
def test_spans(header: str | None, size: int, span: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == span


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=200-300", 100), ("bytes=-0", 100)])
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, size)
    assert exc.value.status == 416
    assert exc.value.headers["Content-Range"] == f"bytes */{size}"
