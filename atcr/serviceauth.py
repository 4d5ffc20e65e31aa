"""Inter-service JWTs (atproto "service auth"): minting and verification.

A user's PDS signs a short-lived JWT with the user's `#atproto` key (`getServiceAuth`); the
receiving service (a hold, later the AppView) checks it against the issuer's DID document.
The rules follow the XRPC spec and the reference implementation (`@atproto/xrpc-server`):

* header ``alg`` is ES256K (secp256k1) or ES256 (P-256) and must match the issuer's key type,
  so a token cannot pick a weaker interpretation of its own signature;
* ``aud`` is our DID, with or without our service fragment (bare DIDs are the legacy form);
* ``lxm`` must name the method being called, so a token minted for a read cannot write;
* ``exp`` is checked with a small clock skew, and lifetimes are bounded so the replay cache
  stays small;
* the signature is checked before the ``jti`` is recorded, so a forged token cannot burn a
  real token's nonce; a second use of a ``jti`` is refused (single use, as the spec allows).
* high-S signatures are accepted on verification, as the reference implementation does for
  JWTs (``allowMalleableSig``): replay protection keys on ``jti``, not on signature bytes.
  Tokens we mint are always low-S, as atproto requires.

Error classes carry the reference implementation's XRPC error names (``BadJwtAudience`` ...);
the HTTP layer of each service decides the status.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from atcr.errors import AtcrError, IdentityError, NetworkError

ES256K = "ES256K"
ES256 = "ES256"
_CURVE_ORDER = {
    ES256K: 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141,
    ES256: 0xFFFFFFFF_00000000_FFFFFFFF_FFFFFFFF_BCE6FAAD_A7179E84_F3B9CAC2_FC632551,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {ES256K: ec.SECP256K1, ES256: ec.SECP256R1}
_REFUSED_TYP = {"at+jwt", "refresh+jwt", "dpop+jwt"}
MAX_TOKEN_BYTES = 8 * 1024


# --- errors --------------------------------------------------------------------------------------


class ServiceAuthError(AtcrError):
    """A service token was refused. `error` is the XRPC error name to answer with."""

    error: ClassVar[str] = "BadJwt"


class MalformedToken(ServiceAuthError):
    """Not a compact JWS with JSON header and claims of the expected types."""


class RefusedTokenType(ServiceAuthError):
    """An access, refresh or DPoP token presented where a service token belongs."""

    error = "BadJwtType"


class TokenExpired(ServiceAuthError):
    error = "JwtExpired"


class WrongAudience(ServiceAuthError):
    error = "BadJwtAudience"


class WrongMethod(ServiceAuthError):
    """`lxm` is missing or names another method."""

    error = "BadJwtLexiconMethod"


class BadSignature(ServiceAuthError):
    """The signature does not verify with the issuer's current `#atproto` key."""

    error = "BadJwtSignature"


class TokenReplayed(ServiceAuthError):
    """The token's `jti` was already used."""

    error = "JwtReplayed"


class IssuerUnavailable(ServiceAuthError):
    """The issuer's DID document could not be fetched right now (retryable, not the caller's fault)."""

    error = "IssuerUnavailable"


# --- keys ----------------------------------------------------------------------------------------


def jwt_alg_for(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    if isinstance(key.curve, ec.SECP256K1):
        return ES256K
    if isinstance(key.curve, ec.SECP256R1):
        return ES256
    raise ValueError(f"unsupported curve {key.curve.name}: atproto keys are secp256k1 or P-256")


def multikey_of(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The public key as an atproto Multikey (``publicKeyMultibase`` in a DID document)."""
    from atproto_crypto.did import format_multikey

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    multikey: str = format_multikey(jwt_alg_for(public), raw)
    return multikey


def did_key_of(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    return "did:key:" + multikey_of(key)


def public_key_from_multikey(multikey: str) -> tuple[str, ec.EllipticCurvePublicKey]:
    """(jwt alg, public key) of a Multikey or ``did:key``; ValueError when unsupported."""
    from atproto_crypto.did import parse_multikey

    text = multikey.removeprefix("did:key:")
    try:
        parsed = parse_multikey(text)
    except Exception as exc:  # the SDK raises several unrelated types for bad input
        raise ValueError(f"unsupported or malformed multikey: {type(exc).__name__}") from None
    curve = _CURVES.get(parsed.jwt_alg)
    if curve is None:
        raise ValueError(f"unsupported key algorithm {parsed.jwt_alg}")
    return parsed.jwt_alg, ec.EllipticCurvePublicKey.from_encoded_point(curve(), parsed.key_bytes)


def sign_low_s(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA-SHA256 as raw ``r||s`` (64 bytes) with s normalised to the low half, per atproto."""
    alg = jwt_alg_for(key)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    order = _CURVE_ORDER[alg]
    if s > order // 2:
        s = order - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_raw(public: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        public.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- minting -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise MalformedToken("token segment is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_service_token(
    key: ec.EllipticCurvePrivateKey,
    *,
    iss: str,
    aud: str,
    lxm: str | None,
    ttl: int = 60,
    now: float | None = None,
    jti: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A service JWT as a PDS would mint it: signed by `key` (the issuer's `#atproto` key)."""
    issued = int(now if now is not None else time.time())
    header = {"typ": "JWT", "alg": jwt_alg_for(key)}
    claims: dict[str, Any] = {
        "iat": issued,
        "iss": iss,
        "aud": aud,
        "exp": issued + ttl,
        "jti": jti or secrets.token_hex(16),
    }
    if lxm is not None:
        claims["lxm"] = lxm
    if extra:
        claims.update(extra)
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + _b64(
        json.dumps(claims, separators=(",", ":")).encode()
    )
    return signing_input + "." + _b64(sign_low_s(key, signing_input.encode("ascii")))


# --- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceClaims:
    """What a verified token says: who calls (`iss`), for which method, until when."""

    iss: str
    aud: str
    lxm: str | None
    exp: int
    iat: int | None
    jti: str | None
    alg: str


class SigningKeys(Protocol):
    """The issuer's current `#atproto` key (Multikey); `fresh` bypasses caches after key rotation."""

    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None: ...


class ReplayCache(Protocol):
    """Remembers nonces; `first_use` is True only for the first caller of a key within `ttl`."""

    async def first_use(self, key: str, ttl: int) -> bool: ...


def atproto_key_of(document: Mapping[str, Any], did: str) -> str | None:
    """The `#atproto` key of a DID document as a Multikey, whatever form the document uses.

    Current documents carry a ``Multikey``; older PLC entries (and the reference dev PLC)
    still carry ``EcdsaSecp256k1VerificationKey2019``/``...r1...`` with an uncompressed key
    and no multicodec prefix, which the spec says verifiers must keep accepting.
    """
    from atproto_crypto.did import get_did_key

    for vm in document.get("verificationMethod") or []:
        if not isinstance(vm, dict):
            continue
        ident = vm.get("id")
        if not isinstance(ident, str) or ident not in ("#atproto", f"{did}#atproto"):
            continue
        key, kind = vm.get("publicKeyMultibase"), vm.get("type")
        if not isinstance(key, str) or not isinstance(kind, str):
            return None
        try:
            did_key = get_did_key(kind, key)
        except Exception:  # malformed key material: no usable key
            return None
        return did_key.removeprefix("did:key:") if did_key else None
    return None


class ResolverSigningKeys:
    """`SigningKeys` over the shared identity resolver."""

    def __init__(self, resolver: Any) -> None:
        self._resolver = resolver

    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None:
        if fresh:
            self._resolver.invalidate(did)
        doc = await self._resolver.resolve_did(did)
        return atproto_key_of(doc.raw, did)


class ValkeyReplayCache:
    """Replay cache shared by every replica: ``SET key 1 NX EX ttl``."""

    def __init__(self, valkey: Any, prefix: str = "serviceauth:jti:") -> None:
        self._valkey = valkey
        self._prefix = prefix

    async def first_use(self, key: str, ttl: int) -> bool:
        ok = await self._valkey.set(self._prefix + key, b"1", nx=True, ex=max(1, ttl))
        return bool(ok)


class MemoryReplayCache:
    """In-process replay cache (tests, single-process tools)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._clock = clock
        self._max = max_entries

    async def first_use(self, key: str, ttl: int) -> bool:
        now = self._clock()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self._max):
            self._seen.popitem(last=False)
        expiry = self._seen.get(key)
        if expiry is not None and expiry >= now:
            return False
        self._seen[key] = now + ttl
        return True


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedToken("token too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("poorly formatted jwt")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise MalformedToken("jwt header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise MalformedToken("jwt header and claims must be JSON objects")
    return header, claims, (parts[0] + "." + parts[1]).encode("ascii"), _unb64(parts[2])


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedToken(f"jwt claim {name!r} must be an integer")
    return value


def _str_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedToken(f"jwt claim {name!r} must be a non-empty string")
    return value


class ServiceAuthVerifier:
    """Verifies service tokens addressed to one service DID."""

    def __init__(
        self,
        *,
        service_did: str,
        keys: SigningKeys,
        replay: ReplayCache | None,
        service_fragment: str | None = None,
        accept_bare_did: bool = True,
        clock_skew: int = 30,
        max_lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service_did = service_did
        self._audiences = {service_did} if accept_bare_did or not service_fragment else set()
        if service_fragment:
            self._audiences.add(f"{service_did}#{service_fragment.lstrip('#')}")
        self.keys = keys
        self._replay = replay
        self._skew = clock_skew
        self._max_lifetime = max_lifetime
        self._clock = clock
        self._parsed: OrderedDict[str, tuple[str, ec.EllipticCurvePublicKey]] = OrderedDict()

    def _public_key(self, multikey: str) -> tuple[str, ec.EllipticCurvePublicKey]:
        hit = self._parsed.get(multikey)
        if hit is None:
            hit = public_key_from_multikey(multikey)
            self._parsed[multikey] = hit
            if len(self._parsed) > 4096:
                self._parsed.popitem(last=False)
        return hit

    async def _signature_ok(self, iss: str, alg: str, signing_input: bytes, signature: bytes) -> bool:
        for fresh in (False, True):
            try:
                multikey = await self.keys.signing_key(iss, fresh=fresh)
            except NetworkError as exc:
                raise IssuerUnavailable(f"cannot resolve issuer {iss}: {exc}") from None
            except IdentityError as exc:
                raise BadSignature(f"issuer {iss} has no usable DID document: {exc}") from None
            if multikey is None:
                raise BadSignature(f"issuer {iss} has no #atproto signing key")
            try:
                key_alg, public = self._public_key(multikey)
            except ValueError as exc:
                raise BadSignature(f"issuer {iss}: {exc}") from None
            if key_alg == alg and verify_raw(public, signing_input, signature):
                return True
            # The key may have rotated since we cached the document: look once more, fresh.
        return False

    async def verify(self, token: str, *, lxm: str) -> ServiceClaims:
        """Check every rule in the module docstring; return the claims or raise a precise error."""
        header, claims, signing_input, signature = _split(token)
        alg = header.get("alg")
        if alg not in _CURVES:
            raise MalformedToken(f"jwt alg must be ES256K or ES256, got {str(alg)[:16]!r}")
        typ = header.get("typ")
        if isinstance(typ, str) and typ.lower() in _REFUSED_TYP:
            raise RefusedTokenType(f"invalid jwt type {typ!r}")
        iss = _str_claim(claims, "iss", required=True)
        aud = _str_claim(claims, "aud", required=True)
        exp = _int_claim(claims, "exp", required=True)
        iat = _int_claim(claims, "iat", required=False)
        token_lxm = _str_claim(claims, "lxm", required=False)
        jti = _str_claim(claims, "jti", required=False)
        assert iss is not None and aud is not None and exp is not None
        if not iss.startswith("did:"):
            raise MalformedToken("jwt issuer must be a DID")
        did = iss.split("#", 1)[0]  # legacy issuers carried a service fragment

        now = int(self._clock())
        if now > exp + self._skew:
            raise TokenExpired("jwt expired")
        if exp - now > self._max_lifetime + self._skew:
            raise MalformedToken(f"jwt lifetime exceeds {self._max_lifetime} s")
        if iat is not None and iat > now + self._skew:
            raise MalformedToken("jwt issued in the future")
        if aud not in self._audiences:
            raise WrongAudience(f"jwt audience {aud[:120]!r} is not this service ({self.service_did})")
        if token_lxm != lxm:
            if token_lxm is None:
                raise WrongMethod(f"missing jwt lexicon method (lxm); must be {lxm}")
            raise WrongMethod(f"jwt lexicon method {token_lxm[:120]!r} does not match {lxm}")
        if not await self._signature_ok(did, alg, signing_input, signature):
            raise BadSignature("jwt signature does not match jwt issuer")

        if self._replay is not None:
            nonce = jti or hashlib.sha256(signing_input).hexdigest()
            ttl = max(1, exp - now + self._skew)
            replay_key = hashlib.sha256(f"{did}\0{nonce}".encode()).hexdigest()
            if not await self._replay.first_use(replay_key, ttl):
                raise TokenReplayed("jwt was already used (replayed jti)")
        return ServiceClaims(iss=did, aud=aud, lxm=token_lxm, exp=exp, iat=iat, jti=jti, alg=alg)
