"""The local driver's signed URLs: only the exact method, path and unexpired time verify."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from hold.errors import UrlSignatureInvalid
from hold.signed_urls import UrlSigner

pytestmark = pytest.mark.unit

PATH = "/_hold/blobs/sha256/" + "a" * 64


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def parts(url: str) -> tuple[str, str, str]:
    u = urlsplit(url)
    q = parse_qs(u.query)
    return u.path, q["exp"][0], q["sig"][0]


def test_round_trip_and_head_is_get() -> None:
    clock = Clock()
    signer = UrlSigner(b"s" * 32, "http://hold.example:8080/", clock=clock)
    url = signer.sign("GET", PATH, expires_in=60)
    assert url.startswith("http://hold.example:8080" + PATH + "?")
    path, exp, sig = parts(url)
    signer.verify("GET", path, exp, sig)
    signer.verify("HEAD", path, exp, sig)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p, e, s: ("GET", p.replace("a" * 64, "b" * 64), e, s),
        lambda p, e, s: ("GET", p, str(int(e) + 3600), s),
        lambda p, e, s: ("GET", p, e, s[:-2] + ("AA" if not s.endswith("AA") else "BB")),
        lambda p, e, s: ("PUT", p, e, s),
        lambda p, e, s: ("GET", p, None, s),
        lambda p, e, s: ("GET", p, e, None),
        lambda p, e, s: ("GET", p, "12x", s),
        lambda p, e, s: ("GET", p, "١٢٣", s),
    ],
    ids=["other-path", "later-expiry", "altered-sig", "other-method", "no-exp", "no-sig", "bad-exp", "unicode-exp"],
)
def test_tampered_urls_are_refused(tamper: object) -> None:
    signer = UrlSigner(b"s" * 32, "http://hold", clock=Clock())
    method, path, exp, sig = tamper(*parts(signer.sign("GET", PATH, expires_in=60)))  # type: ignore[operator]
    with pytest.raises(UrlSignatureInvalid):
        signer.verify(method, path, exp, sig)


def test_expired_and_other_key() -> None:
    clock = Clock()
    signer = UrlSigner(b"s" * 32, "http://hold", clock=clock)
    path, exp, sig = parts(signer.sign("GET", PATH, expires_in=60))
    clock.now += 61
    with pytest.raises(UrlSignatureInvalid, match="expired"):
        signer.verify("GET", path, exp, sig)
    other = UrlSigner(b"t" * 32, "http://hold", clock=Clock())
    with pytest.raises(UrlSignatureInvalid, match="does not match"):
        other.verify("GET", *parts(signer.sign("GET", PATH, expires_in=60)))


def test_relative_paths_are_a_bug() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"s" * 32, "http://hold").sign("GET", "blobs/x", expires_in=1)
