"""The device authorization grant service: codes, polling answers, approval, secrets, devices."""

from __future__ import annotations

import string
from typing import Any

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appview.auth.credentials import Authenticator
from appview.auth.device import (
    USER_CODE_ALPHABET,
    DeviceFlowService,
    format_user_code,
    new_user_code,
    normalize_user_code,
    parse_secret,
)
from appview.auth.sessions import PdsSessionStore, SessionCipher
from appview.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidDeviceGrant,
    InvalidUserCode,
    SlowDown,
    TooManyAttempts,
    Unauthorized,
    Unavailable,
)
from atcr.errors import OAuthError
from atcr.http import SafeHttpClient
from atcr.identity import Identity

pytestmark = pytest.mark.unit

DID = "did:plc:alice0000000000000000000"
OTHER = "did:plc:bob00000000000000000000000"
SECRET = b"m" * 32


class Alive:
    def __init__(self) -> None:
        self.answer: bool | Exception = True
        self.asked: list[str] = []

    async def __call__(self, did: str) -> bool:
        self.asked.append(did)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def alive() -> Alive:
    return Alive()


@pytest.fixture
def svc(fv: Any, alive: Alive) -> DeviceFlowService:
    return DeviceFlowService(
        fv,
        SessionCipher(SECRET),
        SECRET,
        base_url="https://atcr.example.com/",
        alive=alive,
        bcrypt_rounds=4,
        interval=5,
    )


# --- user codes ------------------------------------------------------------------------------------


def test_user_codes_use_the_rfc_alphabet() -> None:
    assert USER_CODE_ALPHABET == "BCDFGHJKLMNPQRSTVWXZ"
    codes = {new_user_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 8 and set(c) <= set(USER_CODE_ALPHABET) for c in codes)
    assert format_user_code("BCDFGHJK") == "BCDF-GHJK"


@given(st.text(alphabet=USER_CODE_ALPHABET, min_size=8, max_size=8), st.sampled_from(["", "-", " ", " - ", "."]))
def test_normalisation_ignores_case_and_punctuation(code: str, sep: str) -> None:
    typed = (code[:4] + sep + code[4:]).lower()
    assert normalize_user_code(typed) == code
    assert normalize_user_code(format_user_code(code)) == code


@given(st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=12))
def test_normalisation_refuses_non_codes(raw: str) -> None:
    out = normalize_user_code(raw)
    assert out is None or (len(out) == 8 and set(out) <= set(USER_CODE_ALPHABET))


def test_vowels_and_digits_are_not_codes() -> None:
    assert normalize_user_code("BCDF-GHJA") is None
    assert normalize_user_code("BCDF-GHJ1") is None
    assert normalize_user_code("BCDF-GHJ") is None


def test_parse_secret() -> None:
    assert parse_secret("atcr_0123456789abcdef_xyz") == ("0123456789abcdef", "xyz")
    assert parse_secret("atcr_0123456789abcdef_x_y") == ("0123456789abcdef", "x_y")
    for bad in (
        "atcr_short_xyz",
        "atcr_0123456789abcdeg_xyz",
        "atcr_0123456789abcdef",
        "app-pass-word",
        "atcr_0123456789abcdef_" + "x" * 65,
    ):
        assert parse_secret(bad) is None


# --- the flow ---------------------------------------------------------------------------------------


async def test_start(svc: DeviceFlowService) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "docker-credential-atcr/0.1")
    assert auth.verification_uri == "https://atcr.example.com/device"
    assert auth.verification_uri_complete == f"https://atcr.example.com/device?code={auth.user_code}"
    assert auth.user_code[4] == "-" and auth.expires_in == 600 and auth.interval == 5
    assert len(auth.device_code) >= 43


async def test_poll_answers(svc: DeviceFlowService, fv: Any) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "ua")
    with pytest.raises(AuthorizationPending):
        await svc.poll(auth.device_code)
    with pytest.raises(SlowDown):
        await svc.poll(auth.device_code)
    keys = [k async for k in fv.scan_iter("av:devflow:*")]
    assert int(await fv.hget(keys[0], "interval")) == 10  # slow_down adds 5 seconds
    await fv.delete(*[k async for k in fv.scan_iter("av:devflow-poll:*")])
    with pytest.raises(AuthorizationPending):
        await svc.poll(auth.device_code)
    with pytest.raises(ExpiredToken):
        await svc.poll("unknown-device-code")
    with pytest.raises(InvalidDeviceGrant):
        await svc.poll("")


async def test_approval_issues_the_secret_once(svc: DeviceFlowService, fv: Any) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "ua")
    pending = await svc.lookup(auth.user_code.lower(), did=DID, ip="198.51.100.1")
    assert (pending.client_name, pending.ip, pending.user_code) == ("laptop", "203.0.113.9", auth.user_code)
    device = await svc.approve(auth.user_code, did=DID, handle="alice.test", ip="198.51.100.1")
    assert device.name == "laptop" and device.did == DID
    grant = await svc.poll(auth.device_code)
    assert grant.did == DID and grant.handle == "alice.test" and grant.device_id == device.id
    parsed = parse_secret(grant.secret)
    assert parsed is not None and parsed[0] == device.id and len(parsed[1]) == 43
    await fv.delete(*[k async for k in fv.scan_iter("av:devflow-poll:*")])
    with pytest.raises(ExpiredToken):  # the flow is gone once the secret was handed out
        await svc.poll(auth.device_code)
    # The secret is stored only as a bcrypt hash; the plaintext is nowhere in Valkey.
    async for key in fv.scan_iter("*"):
        kind = await fv.type(key)
        values = [await fv.get(key)] if kind == b"string" else []
        if kind == b"hash":
            values = list((await fv.hgetall(key)).values())
        assert all(grant.secret.encode() not in (v or b"") for v in values), key
    record = await svc._device(device.id)
    assert record is not None and bcrypt.checkpw(parsed[1].encode(), record["hash"].encode())
    # The code cannot be entered again.
    with pytest.raises(InvalidUserCode):
        await svc.lookup(auth.user_code, did=DID, ip="198.51.100.1")


async def test_denial(svc: DeviceFlowService) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "ua")
    await svc.deny(auth.user_code, did=DID, ip="198.51.100.1")
    with pytest.raises(AccessDenied):
        await svc.poll(auth.device_code)
    with pytest.raises(InvalidUserCode):
        await svc.approve(auth.user_code, did=DID, handle=None, ip="198.51.100.1")


async def test_expired_code(svc: DeviceFlowService, fv: Any) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "ua")
    await fv.delete(*[k async for k in fv.scan_iter("av:devflow*")])  # what the TTL does
    with pytest.raises(InvalidUserCode):
        await svc.lookup(auth.user_code, did=DID, ip="198.51.100.1")
    with pytest.raises(ExpiredToken):
        await svc.poll(auth.device_code)


async def test_code_entry_is_rate_limited(svc: DeviceFlowService) -> None:
    auth = await svc.start("laptop", "203.0.113.9", "ua")
    for i in range(10):
        with pytest.raises(InvalidUserCode):
            await svc.lookup("BCDF-BCDF", did=DID, ip=f"198.51.100.{i}")  # many addresses, one account
    with pytest.raises(TooManyAttempts):
        await svc.lookup(auth.user_code, did=DID, ip="198.51.100.99")  # even the right code now
    assert (await svc.lookup(auth.user_code, did=OTHER, ip="198.51.100.98")).client_name == "laptop"


async def test_device_code_requests_are_rate_limited(svc: DeviceFlowService) -> None:
    for _ in range(30):
        await svc.start("x", "192.0.2.1", "ua")
    with pytest.raises(TooManyAttempts):
        await svc.start("x", "192.0.2.1", "ua")


# --- secrets and devices ----------------------------------------------------------------------------


async def approved(svc: DeviceFlowService, did: str = DID, name: str = "laptop") -> str:
    auth = await svc.start(name, "203.0.113.9", "ua")
    await svc.approve(auth.user_code, did=did, handle=None, ip="198.51.100.1")
    return (await svc.poll(auth.device_code)).secret


async def test_verify(svc: DeviceFlowService, alive: Alive, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = await approved(svc)
    assert await svc.verify(DID, secret)
    assert not await svc.verify(OTHER, secret)
    device_id, random_part = parse_secret(secret)  # type: ignore[misc]
    assert not await svc.verify(DID, f"atcr_{device_id}_{'A' * len(random_part)}")
    assert not await svc.verify(DID, "atcr_0000000000000000_nothing")
    # Verified secrets skip bcrypt for a while; a wrong one never hits the cache.
    calls = 0
    real = bcrypt.checkpw

    def counting(a: bytes, b: bytes) -> bool:
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert await svc.verify(DID, secret)
    assert calls == 0
    assert alive.asked == [DID, DID]


async def test_dead_session_asks_to_sign_in_again(svc: DeviceFlowService, alive: Alive) -> None:
    secret = await approved(svc)
    alive.answer = False
    with pytest.raises(Unauthorized) as info:
        await svc.verify(DID, secret)
    assert "sign in again at https://atcr.example.com/auth/login" in info.value.message
    alive.answer = OAuthError("temporarily_unavailable")
    with pytest.raises(Unavailable):
        await svc.verify(DID, secret)


async def test_list_and_revoke(svc: DeviceFlowService) -> None:
    first = await approved(svc, name="laptop")
    await approved(svc, name="ci")
    await approved(svc, did=OTHER, name="bobs")
    devices = await svc.devices(DID)
    assert sorted(d.name for d in devices) == ["ci", "laptop"]
    laptop = next(d for d in devices if d.name == "laptop")
    assert not await svc.revoke(OTHER, laptop.id)  # not theirs
    assert await svc.revoke(DID, laptop.id)
    assert not await svc.verify(DID, first)  # revoked: refused at once, cache included
    assert [d.name for d in await svc.devices(DID)] == ["ci"]


class Identities:
    async def identity(self, identifier: str) -> Identity:
        return Identity(did=DID, handle="alice.test", pds_endpoint="https://pds.example.com", signing_key=None)


async def test_authenticator_routes_device_secrets_here(svc: DeviceFlowService, fv: Any) -> None:
    secret = await approved(svc)
    http = SafeHttpClient()
    auth = Authenticator(fv, http, Identities(), PdsSessionStore(fv, SessionCipher(SECRET), http), SECRET, devices=svc)
    principal = await auth.login("alice.test", secret)
    assert (principal.did, principal.method) == (DID, "oauth")
    await svc.revoke(DID, parse_secret(secret)[0])  # type: ignore[index]
    with pytest.raises(Unauthorized):
        await auth.login("alice.test", secret)
    await http.aclose()
