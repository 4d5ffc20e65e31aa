"""Service JWTs: every rule of the XRPC spec's inter-service auth, one refusal per rule."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from atcr.errors import DidNotFound, UpstreamUnavailable
from atcr.serviceauth import (
    BadSignature,
    IssuerUnavailable,
    MalformedToken,
    MemoryReplayCache,
    RefusedTokenType,
    ServiceAuthVerifier,
    TokenExpired,
    TokenReplayed,
    WrongAudience,
    WrongMethod,
    did_key_of,
    mint_service_token,
    multikey_of,
    public_key_from_multikey,
    sign_low_s,
    verify_raw,
)

pytestmark = pytest.mark.unit

HOLD = "did:web:hold.example%3A8080"
ALICE = "did:plc:alice"
LXM = "io.atcr.hold.initiateUpload"
K1_ORDER = 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141


class Keys:
    def __init__(self, **keys: ec.EllipticCurvePrivateKey) -> None:
        self.keys = {k.replace("_", ":"): v for k, v in keys.items()}
        self.calls: list[tuple[str, bool]] = []
        self.stale: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.error: Exception | None = None

    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None:
        self.calls.append((did, fresh))
        if self.error is not None:
            raise self.error
        key = self.stale.get(did) if not fresh and did in self.stale else self.keys.get(did)
        return multikey_of(key) if key is not None else None


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.fixture(params=[ec.SECP256K1, ec.SECP256R1], ids=["ES256K", "ES256"])
def alice_key(request: pytest.FixtureRequest) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(request.param())


@pytest.fixture
def keys(alice_key: ec.EllipticCurvePrivateKey) -> Keys:
    return Keys(**{ALICE.replace(":", "_"): alice_key})


def verifier(keys: Keys, *, now: float | None = None, replay: bool = True) -> ServiceAuthVerifier:
    clock = (lambda: now) if now is not None else time.time
    return ServiceAuthVerifier(
        service_did=HOLD,
        keys=keys,
        replay=MemoryReplayCache(clock=clock) if replay else None,
        service_fragment="atcr_hold",
        clock=clock,
    )


def mint(key: ec.EllipticCurvePrivateKey, **kw: object) -> str:
    args: dict[str, object] = {"iss": ALICE, "aud": f"{HOLD}#atcr_hold", "lxm": LXM}
    args.update(kw)
    return mint_service_token(key, **args)  # type: ignore[arg-type]


async def test_valid_token_with_fragment_or_bare_audience(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    v = verifier(keys)
    claims = await v.verify(mint(alice_key), lxm=LXM)
    assert claims.iss == ALICE and claims.lxm == LXM
    assert claims.alg in ("ES256K", "ES256")
    legacy = await v.verify(mint(alice_key, aud=HOLD), lxm=LXM)
    assert legacy.aud == HOLD


async def test_expired_within_and_beyond_skew(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    now = time.time()
    token = mint(alice_key, now=now - 100, ttl=60)  # expired 40 s ago
    with pytest.raises(TokenExpired) as exc:
        await verifier(keys, now=now).verify(token, lxm=LXM)
    assert exc.value.error == "JwtExpired"
    recent = mint(alice_key, now=now - 70, ttl=60)  # 10 s late: inside the 30 s skew
    assert (await verifier(keys, now=now).verify(recent, lxm=LXM)).iss == ALICE


@pytest.mark.parametrize("aud", ["did:web:other.example", f"{HOLD}#atproto_pds", "did:web:hold.example"])
async def test_wrong_audience(alice_key: ec.EllipticCurvePrivateKey, keys: Keys, aud: str) -> None:
    with pytest.raises(WrongAudience) as exc:
        await verifier(keys).verify(mint(alice_key, aud=aud), lxm=LXM)
    assert exc.value.error == "BadJwtAudience"


async def test_wrong_or_missing_method(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    v = verifier(keys)
    with pytest.raises(WrongMethod) as exc:
        await v.verify(mint(alice_key, lxm="io.atcr.hold.abortUpload"), lxm=LXM)
    assert exc.value.error == "BadJwtLexiconMethod"
    with pytest.raises(WrongMethod, match="missing"):
        await v.verify(mint(alice_key, lxm=None), lxm=LXM)


async def test_forged_by_another_key(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    mallory = ec.generate_private_key(type(alice_key.curve)())
    with pytest.raises(BadSignature) as exc:
        await verifier(keys).verify(mint(mallory), lxm=LXM)
    assert exc.value.error == "BadJwtSignature"
    # A failed check looks once more with a fresh document (the key may have rotated).
    assert keys.calls == [(ALICE, False), (ALICE, True)]


async def test_tampered_claims_break_the_signature(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    header, claims, sig = mint(alice_key).split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    decoded["lxm"] = "io.atcr.hold.completeUpload"
    with pytest.raises(BadSignature):
        await verifier(keys).verify(f"{header}.{b64(decoded)}.{sig}", lxm="io.atcr.hold.completeUpload")


async def test_alg_must_match_the_issuer_key(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    token = mint(alice_key)
    header, claims, sig = token.split(".")
    other = "ES256" if "ES256K" in base64.urlsafe_b64decode(header + "==").decode() else "ES256K"
    with pytest.raises(BadSignature):
        await verifier(keys).verify(f"{b64({'typ': 'JWT', 'alg': other})}.{claims}.{sig}", lxm=LXM)


async def test_replayed_jti_is_refused_but_a_forgery_cannot_burn_it(
    alice_key: ec.EllipticCurvePrivateKey, keys: Keys
) -> None:
    v = verifier(keys)
    token = mint(alice_key, jti="nonce-1")
    forged = mint(ec.generate_private_key(type(alice_key.curve)()), jti="nonce-1")
    with pytest.raises(BadSignature):
        await v.verify(forged, lxm=LXM)
    await v.verify(token, lxm=LXM)
    with pytest.raises(TokenReplayed) as exc:
        await v.verify(token, lxm=LXM)
    assert exc.value.error == "JwtReplayed"
    # Without a jti, the signed bytes themselves are the nonce.
    alg = "ES256K" if isinstance(alice_key.curve, ec.SECP256K1) else "ES256"
    now = int(time.time())
    signing_input = f"{b64({'typ': 'JWT', 'alg': alg})}.{b64({'iss': ALICE, 'aud': HOLD, 'lxm': LXM, 'exp': now + 60})}"
    sig = base64.urlsafe_b64encode(sign_low_s(alice_key, signing_input.encode())).rstrip(b"=").decode()
    no_jti = f"{signing_input}.{sig}"
    await v.verify(no_jti, lxm=LXM)
    with pytest.raises(TokenReplayed):
        await v.verify(no_jti, lxm=LXM)
    # Reuse is allowed when the service opts out of replay protection.
    reusable = verifier(keys, replay=False)
    await reusable.verify(token, lxm=LXM)
    await reusable.verify(token, lxm=LXM)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        f"{b64({'alg': 'ES256K'})}.{b64([1, 2])}.AAAA",
        f"{b64({'alg': 'HS256'})}.{b64({'iss': ALICE})}.AAAA",
        f"{b64({'alg': 'none'})}.{b64({'iss': ALICE})}.",
        f"{b64({'alg': 'ES256K'})}.{b64({'iss': ALICE, 'aud': HOLD, 'exp': 'soon'})}.AAAA",
        f"{b64({'alg': 'ES256K'})}.{b64({'iss': 'alice', 'aud': HOLD, 'exp': 2**40})}.AAAA",
        "x" * 9000,
    ],
)
async def test_malformed_tokens(keys: Keys, token: str) -> None:
    with pytest.raises(MalformedToken) as exc:
        await verifier(keys).verify(token, lxm=LXM)
    assert exc.value.error == "BadJwt"


async def test_access_refresh_and_dpop_tokens_are_not_service_tokens(
    alice_key: ec.EllipticCurvePrivateKey, keys: Keys
) -> None:
    _, claims, sig = mint(alice_key).split(".")
    for typ in ("at+jwt", "refresh+jwt", "dpop+jwt"):
        with pytest.raises(RefusedTokenType):
            await verifier(keys).verify(f"{b64({'alg': 'ES256K', 'typ': typ})}.{claims}.{sig}", lxm=LXM)


async def test_lifetime_and_issue_time_bounds(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    with pytest.raises(MalformedToken, match="lifetime"):
        await verifier(keys).verify(mint(alice_key, ttl=7 * 24 * 3600), lxm=LXM)
    with pytest.raises(MalformedToken, match="future"):
        await verifier(keys).verify(mint(alice_key, now=time.time() + 600), lxm=LXM)


async def test_key_rotation_is_picked_up(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    keys.stale[ALICE] = ec.generate_private_key(type(alice_key.curve)())  # a cached, outdated key
    assert (await verifier(keys).verify(mint(alice_key), lxm=LXM)).iss == ALICE
    assert keys.calls == [(ALICE, False), (ALICE, True)]


async def test_issuer_problems(alice_key: ec.EllipticCurvePrivateKey, keys: Keys) -> None:
    with pytest.raises(BadSignature, match="no #atproto"):
        await verifier(keys).verify(mint(alice_key, iss="did:plc:nobody"), lxm=LXM)
    keys.error = DidNotFound("gone")
    with pytest.raises(BadSignature):
        await verifier(keys).verify(mint(alice_key), lxm=LXM)
    keys.error = UpstreamUnavailable("plc down")
    with pytest.raises(IssuerUnavailable):
        await verifier(keys).verify(mint(alice_key), lxm=LXM)


async def test_high_s_signatures_verify_like_the_reference_server() -> None:
    alice_key = ec.generate_private_key(ec.SECP256K1())
    keys = Keys(**{ALICE.replace(":", "_"): alice_key})
    token = mint(alice_key)
    header, claims, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    high = r.to_bytes(32, "big") + (K1_ORDER - s).to_bytes(32, "big")
    flipped = f"{header}.{claims}." + base64.urlsafe_b64encode(high).rstrip(b"=").decode()
    assert (await verifier(keys).verify(flipped, lxm=LXM)).iss == ALICE


def test_minted_signatures_are_low_s_and_keys_round_trip() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    for i in range(50):
        sig = sign_low_s(key, f"message {i}".encode())
        assert int.from_bytes(sig[32:], "big") <= K1_ORDER // 2
        alg, public = public_key_from_multikey(did_key_of(key))
        assert alg == "ES256K" and verify_raw(public, f"message {i}".encode(), sig)
    der = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert decode_dss_signature(der)  # sanity: cryptography signs DER; we convert
    assert multikey_of(key).startswith("zQ3s")  # secp256k1 multikeys start so
    assert multikey_of(ec.generate_private_key(ec.SECP256R1())).startswith("zDn")
    with pytest.raises(ValueError):
        public_key_from_multikey("zNotAKey")


def test_atproto_key_from_current_and_legacy_did_documents() -> None:
    import libipld
    from cryptography.hazmat.primitives import serialization

    from atcr.serviceauth import atproto_key_of

    def doc(ident: str, kind: str, key: object) -> dict[str, object]:
        return {"verificationMethod": [{"id": ident, "type": kind, "publicKeyMultibase": key}]}

    key = ec.generate_private_key(ec.SECP256K1())
    did = "did:plc:alice"
    assert atproto_key_of(doc(f"{did}#atproto", "Multikey", multikey_of(key)), did) == multikey_of(key)
    # What the dev PLC (and older PLC entries) still serve: uncompressed key, no multicodec.
    raw = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    legacy = doc("#atproto", "EcdsaSecp256k1VerificationKey2019", libipld.encode_multibase("z", raw))
    assert atproto_key_of(legacy, did) == multikey_of(key)
    assert atproto_key_of(doc("#other", "Multikey", "z"), did) is None
    assert atproto_key_of(doc("#atproto", "Multikey", 5), did) is None
