"""OCI digests: only canonical sha256/sha512 digests pass, so a digest is always a safe path."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atcr.digest import Digest, InvalidDigest, is_digest, parse_digest

pytestmark = pytest.mark.unit

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128


def test_valid_digests_parse_and_lay_out_like_distribution() -> None:
    d = parse_digest(SHA256)
    assert (d.algorithm, d.hex, str(d)) == ("sha256", "a" * 64, SHA256)
    assert d.blob_path == f"blobs/sha256/aa/{'a' * 64}/data"
    assert Digest.parse(SHA512).algorithm == "sha512"
    assert Digest.of(b"abc") == Digest.parse("sha256:" + hashlib.sha256(b"abc").hexdigest())
    assert Digest.of(b"abc", "sha512").hex == hashlib.sha512(b"abc").hexdigest()
    assert Digest.from_hex("sha256", "a" * 64) == d


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,  # upper case would alias a second path
        "sha512:" + "b" * 64,
        "sha384:" + "c" * 96,
        "md5:" + "d" * 32,
        "sha256:../../../../etc/passwd",
        "sha256:" + "a" * 62 + "/.",
        " sha256:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",
        "sha256:" + "g" * 64,
        None,
        42,
    ],
)
def test_anything_else_is_refused(bad: object) -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(bad)
    assert not is_digest(bad)


def test_unsupported_algorithm_for_hashing() -> None:
    with pytest.raises(InvalidDigest):
        Digest.of(b"x", "md5")


@given(st.text(max_size=200))
def test_no_string_yields_a_path_that_escapes(value: str) -> None:
    try:
        d = parse_digest(value)
    except InvalidDigest:
        return
    assert ".." not in d.blob_path and "\\" not in d.blob_path and d.blob_path.count("/") == 4
