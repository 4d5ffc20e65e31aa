"""Pushes against a running sweep: the ordering that keeps a pushed blob from being deleted.

Every place a push relies on a blob being stored takes a *lease* on its digest first
(`GcGuard.lease`): `completeUpload` before it commits (or finds) the blob, `notifyManifest`
before it checks the manifest's layers in storage and writes their layer records. A lease is
one atomic Valkey step that

* records the lease (a sorted set of ``<digest>|<token>`` → expiry), and
* answers whether the sweep has *condemned* the digest (decided to delete it, delete not yet
  confirmed); if so the push waits until the deletion is done, then goes on with the blob
  absent (an upload commits its bytes again; a manifest is refused with `LayerNotStored`, so
  nothing is written that names a missing blob).

Releasing a lease stamps the digest's last activity (``active``). The sweep condemns a digest
with one atomic step that refuses when a lease is held or the digest was active since the
sweep took its snapshot of references, so exactly one of the two sees the other: either the
push waits for the deletion, or the sweep keeps the blob. Deletions are remembered for a few
minutes (``deleted``) so a push in another process bypasses its in-memory existence cache.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from hold.errors import StorageUnavailable

LEASE_TTL = 3600.0  # a lease outlives any push step; a crashed holder's lease expires
RECENT_DELETES = 600.0  # how long a deletion is remembered for other processes' caches
WAIT_TIMEOUT = 60.0
WAIT_STEP = 0.02

# KEYS: leases, condemned, deleted. ARGV: now, expiry, recent cutoff, token, digests...
# -> per digest: 0 fine, 1 condemned (wait), 2 deleted recently (do not trust caches)
_LEASE = """
local out = {}
for i = 5, #ARGV do
  local d = ARGV[i]
  redis.call('ZADD', KEYS[1], ARGV[2], d .. '|' .. ARGV[4])
  local state = 0
  if redis.call('HEXISTS', KEYS[2], d) == 1 then
    state = 1
  else
    local t = redis.call('ZSCORE', KEYS[3], d)
    if t and tonumber(t) >= tonumber(ARGV[3]) then state = 2 end
  end
  out[#out + 1] = state
end
return out
"""

# KEYS: leases, active. ARGV: now, token, digests...
_RELEASE = """
for i = 3, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i] .. '|' .. ARGV[2])
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[i])
end
return 1
"""

# KEYS: leases, active, condemned. ARGV: digest, snapshot time, now -> 1 condemned, 0 refused
_CONDEMN = """
local d = ARGV[1]
local now = tonumber(ARGV[3])
local held = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
for _, member in ipairs(held) do
  if string.sub(member, 1, #d + 1) == d .. '|' then return 0 end
end
local t = redis.call('ZSCORE', KEYS[2], d)
if t and tonumber(t) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[3], d, ARGV[3])
return 1
"""

# KEYS: leases, active, condemned. ARGV: snapshot time, now, digests... -> the digests condemned
_CONDEMN_MANY = """
local now = tonumber(ARGV[2])
local held = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local sep = string.find(member, '|', 1, true)
  if sep then held[string.sub(member, 1, sep - 1)] = true end
end
local out = {}
for i = 3, #ARGV do
  local d = ARGV[i]
  local t = redis.call('ZSCORE', KEYS[2], d)
  if not held[d] and not (t and tonumber(t) >= tonumber(ARGV[1])) then
    redis.call('HSET', KEYS[3], d, ARGV[2])
    out[#out + 1] = d
  end
end
return out
"""

# KEYS: condemned, deleted, active. ARGV: now, recent cutoff, digests...
_DONE = """
for i = 3, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
return 1
"""

# KEYS: lock. ARGV: token
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class GcGuard:
    """The Valkey side of the push/sweep protocol, namespaced by the hold's DID (one slot)."""

    def __init__(self, valkey: Any, hold_did: str, *, clock: Callable[[], float] = time.time) -> None:
        self._valkey = valkey
        self._clock = clock
        base = f"hold:gc:{{{hold_did}}}"
        self.k_leases = base + ":leases"
        self.k_active = base + ":active"
        self.k_condemned = base + ":condemned"
        self.k_deleted = base + ":deleted"
        self.k_unref = base + ":unref"
        self.k_lock = base + ":lock"
        self.k_runs = base + ":runs"
        self._lease = valkey.register_script(_LEASE)
        self._release = valkey.register_script(_RELEASE)
        self._condemn = valkey.register_script(_CONDEMN)
        self._condemn_many = valkey.register_script(_CONDEMN_MANY)
        self._done = valkey.register_script(_DONE)
        self._unlock = valkey.register_script(_UNLOCK)
        self._extend = valkey.register_script(_EXTEND)

    @property
    def valkey(self) -> Any:
        return self._valkey

    def now(self) -> float:
        return self._clock()

    # --- the push side --------------------------------------------------------------------------

    async def acquire(self, digests: Iterable[str]) -> tuple[str, set[str]]:
        """Lease `digests`; waits while the sweep is deleting one of them. Returns the lease token
        and the digests deleted recently (their cached existence must not be trusted)."""
        names = list(dict.fromkeys(digests))
        token = secrets.token_hex(8)
        if not names:
            return token, set()
        waited = 0.0
        while True:
            now = self.now()
            states = await self._lease(
                keys=[self.k_leases, self.k_condemned, self.k_deleted],
                args=[now, now + LEASE_TTL, now - RECENT_DELETES, token, *names],
            )
            condemned = [d for d, s in zip(names, states, strict=True) if int(s) == 1]
            if not condemned:
                return token, {d for d, s in zip(names, states, strict=True) if int(s) == 2}
            # The sweep decided before us: let its deletion finish, then the blob is simply absent.
            if waited >= WAIT_TIMEOUT:
                await self.release(token, names)
                raise StorageUnavailable("a blob of this push is being garbage collected; retry")
            await asyncio.sleep(WAIT_STEP)
            waited += WAIT_STEP

    async def release(self, token: str, digests: Iterable[str]) -> None:
        names = list(dict.fromkeys(digests))
        if names:
            await self._release(keys=[self.k_leases, self.k_active], args=[self.now(), token, *names])

    @asynccontextmanager
    async def lease(self, digests: Iterable[str]) -> AsyncIterator[set[str]]:
        """`async with guard.lease(digests) as recently_deleted:` around a push step."""
        names = list(dict.fromkeys(digests))
        token, recent = await self.acquire(names)
        try:
            yield recent
        finally:
            await self.release(token, names)

    # --- the sweep side -------------------------------------------------------------------------

    async def condemn(self, digest: str, snapshot: float) -> bool:
        """Decide to delete `digest`, unless a push holds it or used it since `snapshot`."""
        return bool(
            await self._condemn(
                keys=[self.k_leases, self.k_active, self.k_condemned], args=[digest, snapshot, self.now()]
            )
        )

    async def condemn_many(self, digests: list[str], snapshot: float) -> list[str]:
        """`condemn` for many digests in one step; the ones condemned."""
        if not digests:
            return []
        out = await self._condemn_many(
            keys=[self.k_leases, self.k_active, self.k_condemned], args=[snapshot, self.now(), *digests]
        )
        return [_text(x) for x in out]

    async def deleted(self, *digests: str) -> None:
        """The condemned blobs are gone from storage: waiting pushes go on."""
        if not digests:
            return
        now = self.now()
        await self._done(
            keys=[self.k_condemned, self.k_deleted, self.k_active], args=[now, now - RECENT_DELETES, *digests]
        )

    async def pardon(self, *digests: str) -> None:
        """The deletions failed: the blobs stay, waiting pushes go on."""
        if digests:
            await self._valkey.hdel(self.k_condemned, *digests)

    async def condemned(self) -> list[str]:
        """Digests a sweep condemned and did not finish (it crashed): the next run deletes them."""
        return [_text(x) for x in await self._valkey.hkeys(self.k_condemned)]

    async def leased(self) -> set[str]:
        now = self.now()
        raw = await self._valkey.zrangebyscore(self.k_leases, now, "+inf")
        await self._valkey.zremrangebyscore(self.k_leases, "-inf", f"({now}")
        return {_text(x).rsplit("|", 1)[0] for x in raw}

    async def active_since(self, digests: list[str]) -> dict[str, float]:
        if not digests:
            return {}
        scores = await self._valkey.zmscore(self.k_active, digests)
        return {d: float(s) for d, s in zip(digests, scores, strict=True) if s is not None}

    # --- "unreferenced since" -------------------------------------------------------------------

    async def unreferenced_since(self, keys: list[str], now: float, *, record: bool) -> dict[str, float]:
        """When each key was first seen unreferenced (recorded now when new, unless `record` is false)."""
        if not keys:
            return {}
        out: dict[str, float] = {}
        values = await self._valkey.hmget(self.k_unref, keys)
        new: dict[str, float] = {}
        for k, v in zip(keys, values, strict=True):
            if v is None:
                out[k] = now
                new[k] = now
            else:
                out[k] = float(_text(v))
        if record and new:
            await self._valkey.hset(self.k_unref, mapping={k: str(v) for k, v in new.items()})
        return out

    async def forget_unreferenced(self, keep: set[str]) -> int:
        """Drop the "unreferenced since" entries of keys not in `keep` (referenced again, or gone)."""
        known = [_text(x) for x in await self._valkey.hkeys(self.k_unref)]
        stale = [k for k in known if k not in keep]
        for start in range(0, len(stale), 1000):
            await self._valkey.hdel(self.k_unref, *stale[start : start + 1000])
        return len(stale)

    # --- one sweeper at a time ------------------------------------------------------------------

    async def lock(self, ttl: int) -> str | None:
        token = secrets.token_hex(16)
        ok = await self._valkey.set(self.k_lock, token, nx=True, ex=max(1, ttl))
        return token if ok else None

    async def extend(self, token: str, ttl: int) -> bool:
        return bool(await self._extend(keys=[self.k_lock], args=[token, max(1, ttl)]))

    async def unlock(self, token: str) -> None:
        await self._unlock(keys=[self.k_lock], args=[token])
