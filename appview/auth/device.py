"""The device authorization grant (RFC 8628) behind `docker-credential-atcr login`.

A PDS offers no device grant, so the AppView runs its own: the helper asks for a device code,
the user signs in to the AppView in a browser (ATProto OAuth) and approves the device after
seeing which one asks (name, address, time: the §5.4 remote-phishing defence), and the helper's
poll then receives a device secret, once. The secret is 256 random bits, stored only as a
bcrypt hash; `docker login` presents it as the password, and `/auth/token` checks it here.

Valkey keys (docs/auth.md lists them all):
  av:devflow:<sha256(device_code)>          hash: pending flow (client name, ip, decision, ...)
  av:devflow-user:<USERCODE>                -> sha256(device_code), while the code may be entered
  av:devflow-secret:<sha256(device_code)>   sealed secret awaiting its one pickup by the poll
  av:devflow-poll:<sha256(device_code)>     poll-interval guard (slow_down)
  av:devflow-rl:<kind>:<who>                rate-limit counters
  av:device:<device_id>                     JSON device record with the bcrypt hash
  av:devices:<did>                          set of the account's device ids
  av:device-ok:<device_id>                  HMAC of a recently verified secret (skips bcrypt)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import bcrypt
import valkey.asyncio as avalkey

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
from atcr.errors import NetworkError, OAuthError

if TYPE_CHECKING:
    from appview.auth.sessions import SessionCipher

log = logging.getLogger("appview.device")

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, no look-alike digits
USER_CODE_LENGTH = 8
SECRET_PREFIX = "atcr_"  # noqa: S105 - a marker, not a secret: credentials.py routes these here
DEVICE_ID_BYTES = 8
CODE_ENTRY_LIMIT = 10  # wrong codes per window, per address and per account
CODE_ENTRY_WINDOW = 600
START_LIMIT = 30  # device codes per window per address
VERIFIED_CACHE_TTL = 300  # a verified secret skips bcrypt for this long (revocation clears it)
LAST_USED_GRANULARITY = 60
MAX_NAME = 100

AliveCheck = Callable[[str], Awaitable[bool]]
T = TypeVar("T")


async def awaited(value: Awaitable[T] | T) -> T:
    """valkey-py types its commands as sync-or-async; on the asyncio client they are awaitables."""
    if inspect.isawaitable(value):
        return await value
    return value


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_user_code(raw: str) -> str | None:
    """Case-insensitive, punctuation and spaces ignored (§6.1); None if it cannot be a code."""
    letters = "".join(ch for ch in raw.upper() if ch.isalnum())
    if len(letters) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in letters):
        return None
    return letters


def _h(device_code: str) -> str:
    return hashlib.sha256(device_code.encode()).hexdigest()


def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


@dataclass(frozen=True)
class DeviceAuthorization:
    """The answer to the device authorization request (RFC 8628 §3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DeviceRequest:
    """What the verification page shows before the user approves."""

    user_code: str
    client_name: str
    ip: str
    user_agent: str
    created: int
    expires_at: int


@dataclass(frozen=True)
class DeviceGrant:
    secret: str
    did: str
    handle: str | None
    device_id: str


@dataclass(frozen=True)
class Device:
    id: str
    did: str
    name: str
    ip: str
    user_agent: str
    created: int
    last_used: int


def parse_secret(secret: str) -> tuple[str, str] | None:
    """(device id, random part) of `atcr_<id>_<random>`, or None if it is not one of ours."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    rest = secret[len(SECRET_PREFIX) :]
    device_id, sep, random_part = rest.partition("_")
    if not sep or len(device_id) != DEVICE_ID_BYTES * 2 or not random_part or len(random_part) > 64:
        return None
    if any(c not in "0123456789abcdef" for c in device_id):
        return None
    return device_id, random_part


class DeviceFlowService:
    """Device codes, approvals, polling, and the devices (secrets) they produce."""

    def __init__(
        self,
        valkey: avalkey.Valkey,
        cipher: SessionCipher,
        mac_secret: bytes,
        *,
        base_url: str,
        alive: AliveCheck | None = None,
        ttl: int = 600,
        interval: int = 5,
        bcrypt_rounds: int = 12,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._v = valkey
        self._cipher = cipher
        self._mac_key = hashlib.sha256(b"atcr device proof v1" + mac_secret).digest()
        self.base_url = base_url.rstrip("/")
        self._alive = alive
        self.ttl = ttl
        self.interval = interval
        self._rounds = bcrypt_rounds
        self._clock = clock

    # --- rate limits ------------------------------------------------------------------------

    async def _count(self, key: str, window: int) -> int:
        n = int(await awaited(self._v.incr(key)))
        if n == 1:
            await awaited(self._v.expire(key, window))
        return n

    async def _over(self, key: str, limit: int) -> bool:
        raw = await self._v.get(key)
        return raw is not None and int(raw) >= limit

    # --- the device side ----------------------------------------------------------------------

    async def start(self, client_name: str, ip: str, user_agent: str) -> DeviceAuthorization:
        """Open a flow; the client shows `user_code` and `verification_uri` to its user."""
        if await self._count(f"av:devflow-rl:start:{ip}", CODE_ENTRY_WINDOW) > START_LIMIT:
            raise TooManyAttempts("too many device logins from this address; wait a few minutes")
        device_code = secrets.token_urlsafe(32)
        h = _h(device_code)
        for _ in range(8):
            code = new_user_code()
            if await self._v.set(f"av:devflow-user:{code}", h, nx=True, ex=self.ttl):
                break
        else:  # 20^8 codes; eight collisions in a row means something else is wrong
            raise Unavailable("cannot allocate a user code; try again")
        now = int(self._clock())
        key = f"av:devflow:{h}"
        await awaited(
            self._v.hset(
                key,
                mapping={
                    "user_code": code,
                    "client_name": (client_name or "unnamed device")[:MAX_NAME],
                    "ip": ip[:64],
                    "user_agent": user_agent[:200],
                    "created": str(now),
                    "expires_at": str(now + self.ttl),
                    "interval": str(self.interval),
                },
            )
        )
        await awaited(self._v.expire(key, self.ttl))
        pretty = format_user_code(code)
        return DeviceAuthorization(
            device_code=device_code,
            user_code=pretty,
            verification_uri=f"{self.base_url}/device",
            verification_uri_complete=f"{self.base_url}/device?code={pretty}",
            expires_in=self.ttl,
            interval=self.interval,
        )

    async def poll(self, device_code: str) -> DeviceGrant:
        """One token-endpoint poll: the grant, or the RFC 8628 error to answer with."""
        if not device_code or len(device_code) > 200:
            raise InvalidDeviceGrant()
        h = _h(device_code)
        key = f"av:devflow:{h}"
        flow = {_s(k): _s(v) for k, v in (await awaited(self._v.hgetall(key))).items()}
        if not flow:
            raise ExpiredToken()
        interval = int(flow.get("interval") or self.interval)
        guard_ms = max(interval * 1000 - 500, 500)
        if not await self._v.set(f"av:devflow-poll:{h}", b"1", nx=True, px=guard_ms):
            await awaited(self._v.hincrby(key, "interval", 5))  # §3.5: slow_down adds 5 seconds
            raise SlowDown()
        decision = flow.get("decision", "")
        if not decision:
            raise AuthorizationPending()
        if decision == "denied":
            await self._v.delete(key)
            raise AccessDenied()
        sealed = await self._v.getdel(f"av:devflow-secret:{h}")
        await self._v.delete(key)
        data = self._cipher.open(sealed, f"device:{h}") if sealed is not None else None
        if data is None:
            raise InvalidDeviceGrant("this device code was already used")
        return DeviceGrant(
            secret=data["secret"], did=data["did"], handle=data.get("handle"), device_id=data["device_id"]
        )

    # --- the user side ------------------------------------------------------------------------

    async def _flow_for_code(self, user_code: str) -> tuple[str, dict[str, str]] | None:
        code = normalize_user_code(user_code)
        if code is None:
            return None
        raw = await self._v.get(f"av:devflow-user:{code}")
        if raw is None:
            return None
        h = _s(raw)
        flow = {_s(k): _s(v) for k, v in (await awaited(self._v.hgetall(f"av:devflow:{h}"))).items()}
        if not flow or flow.get("decision") or flow.get("user_code") != code:
            return None
        return h, flow

    async def lookup(self, user_code: str, *, did: str, ip: str) -> DeviceRequest:
        """The pending request behind a code the user typed; wrong codes count against a limit."""
        limits = (f"av:devflow-rl:ip:{ip}", f"av:devflow-rl:did:{did}")
        for key in limits:
            if await self._over(key, CODE_ENTRY_LIMIT):
                raise TooManyAttempts()
        found = await self._flow_for_code(user_code)
        if found is None:
            for key in limits:
                await self._count(key, CODE_ENTRY_WINDOW)
            raise InvalidUserCode()
        _, flow = found
        return DeviceRequest(
            user_code=format_user_code(flow["user_code"]),
            client_name=flow.get("client_name", ""),
            ip=flow.get("ip", ""),
            user_agent=flow.get("user_agent", ""),
            created=int(flow.get("created") or 0),
            expires_at=int(flow.get("expires_at") or 0),
        )

    async def approve(self, user_code: str, *, did: str, handle: str | None, ip: str) -> Device:
        """Approve a code: mint the device and its secret, to be picked up once by the poll."""
        await self.lookup(user_code, did=did, ip=ip)  # rate limit + existence
        found = await self._flow_for_code(user_code)
        if found is None:
            raise InvalidUserCode()
        h, flow = found
        device_id = secrets.token_hex(DEVICE_ID_BYTES)
        random_part = secrets.token_urlsafe(32)  # 256 bits
        secret = f"{SECRET_PREFIX}{device_id}_{random_part}"
        hashed = await asyncio.to_thread(bcrypt.hashpw, random_part.encode(), bcrypt.gensalt(self._rounds))
        now = int(self._clock())
        device = Device(
            id=device_id,
            did=did,
            name=flow.get("client_name", "") or "unnamed device",
            ip=flow.get("ip", ""),
            user_agent=flow.get("user_agent", ""),
            created=now,
            last_used=0,
        )
        remaining = max(int(flow.get("expires_at") or 0) - now, 1)
        await self._v.set(f"av:device:{device_id}", json.dumps({**asdict(device), "hash": hashed.decode()}))
        await awaited(self._v.sadd(f"av:devices:{did}", device_id))
        sealed = self._cipher.seal(
            {"secret": secret, "did": did, "handle": handle, "device_id": device_id}, f"device:{h}"
        )
        await self._v.set(f"av:devflow-secret:{h}", sealed, ex=remaining)
        if not await awaited(self._v.hsetnx(f"av:devflow:{h}", "decision", "approved")):
            await self._forget(did, device_id)  # a concurrent deny or approve won
            await self._v.delete(f"av:devflow-secret:{h}")
            raise InvalidUserCode("this code was already answered")
        await awaited(self._v.hset(f"av:devflow:{h}", mapping={"did": did, "device_id": device_id}))
        await self._v.delete(f"av:devflow-user:{flow['user_code']}")
        log.info("device %s approved for %s", device_id, did)
        return device

    async def deny(self, user_code: str, *, did: str, ip: str) -> None:
        await self.lookup(user_code, did=did, ip=ip)
        found = await self._flow_for_code(user_code)
        if found is None:
            raise InvalidUserCode()
        h, flow = found
        if not await awaited(self._v.hsetnx(f"av:devflow:{h}", "decision", "denied")):
            raise InvalidUserCode("this code was already answered")
        await self._v.delete(f"av:devflow-user:{flow['user_code']}")

    # --- devices ------------------------------------------------------------------------------

    async def _device(self, device_id: str) -> dict[str, Any] | None:
        raw = await self._v.get(f"av:device:{device_id}")
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        return data

    def _proof(self, secret: str) -> bytes:
        return hmac.new(self._mac_key, secret.encode(), hashlib.sha256).digest()

    async def check_secret(self, did: str, secret: str) -> str | None:
        """The device id if `secret` is a live device secret of `did`, else None."""
        parsed = parse_secret(secret)
        if parsed is None:
            return None
        device_id, random_part = parsed
        record = await self._device(device_id)
        if record is None or record.get("did") != did:
            return None
        cached = await self._v.get(f"av:device-ok:{device_id}")
        if cached is None or not hmac.compare_digest(cached, self._proof(secret)):
            ok = await asyncio.to_thread(bcrypt.checkpw, random_part.encode(), str(record["hash"]).encode())
            if not ok:
                return None
            await self._v.set(f"av:device-ok:{device_id}", self._proof(secret), ex=VERIFIED_CACHE_TTL)
        now = int(self._clock())
        if now - int(record.get("last_used") or 0) >= LAST_USED_GRANULARITY:
            record["last_used"] = now
            await self._v.set(f"av:device:{device_id}", json.dumps(record), xx=True)
        return device_id

    async def verify(self, did: str, secret: str) -> bool:
        """`DeviceSecretVerifier` for `/auth/token`: a valid secret *and* a live PDS session.

        A device acts through the account's OAuth session (PDS writes need it), so a secret
        whose session died is refused with a message that says how to recover.
        """
        if await self.check_secret(did, secret) is None:
            return False
        if self._alive is not None:
            try:
                alive = await self._alive(did)
            except (OAuthError, NetworkError):
                raise Unavailable(
                    "cannot reach your PDS to renew your sign-in; try again", headers={"Retry-After": "10"}
                ) from None
            if not alive:
                raise Unauthorized(
                    f"your ATProto sign-in has expired: sign in again at {self.base_url}/auth/login "
                    "or run `docker-credential-atcr login`"
                )
        return True

    async def devices(self, did: str) -> list[Device]:
        ids = sorted(_s(m) for m in await awaited(self._v.smembers(f"av:devices:{did}")))
        out: list[Device] = []
        for device_id in ids:
            record = await self._device(device_id)
            if record is None or record.get("did") != did:
                await awaited(self._v.srem(f"av:devices:{did}", device_id))
                continue
            out.append(Device(**{k: record[k] for k in Device.__dataclass_fields__}))
        out.sort(key=lambda d: d.created, reverse=True)
        return out

    async def _forget(self, did: str, device_id: str) -> None:
        await self._v.delete(f"av:device:{device_id}", f"av:device-ok:{device_id}")
        await awaited(self._v.srem(f"av:devices:{did}", device_id))

    async def revoke(self, did: str, device_id: str) -> bool:
        """Revoke one of `did`'s devices; its secret stops working at once."""
        record = await self._device(device_id)
        if record is None or record.get("did") != did:
            return False
        await self._forget(did, device_id)
        log.info("device %s of %s revoked", device_id, did)
        return True
