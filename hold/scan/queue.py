"""The scan-job queue in Valkey: leased jobs, so a scanner that dies loses nothing.

A job is keyed by manifest digest (one scan per digest at a time). `lease` moves a job from
`pending` to `leased` with a deadline and a fresh lease token; only the holder of the current
token may finish it (`complete`/`fail`), so a job a slow scanner held too long and that was
handed to another one is recorded once. Expired leases go back to `pending` (first in line)
on the next `lease` call by any hold process, and a job whose scanner disconnected goes back at
once (`release`); after `max_attempts` leases that ended either way the job is marked failed
instead (an image that kills every scanner must not loop forever).
Every step is one Lua script, so several hold processes and scanners never see half a move.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

QUEUED, SCANNING, DONE, FAILED = "queued", "scanning", "done", "failed"
STATES = (QUEUED, SCANNING, DONE, FAILED)
# Pushes go before re-scans (database updates, owners' requests): score = band + sequence.
PUSH_BAND, RESCAN_BAND, RETRY_BAND = 2e12, 4e12, 0.0

_ENQUEUE = """
-- KEYS: job, pending, lease, state, seq ; ARGV: digest, job json, band, now ms, state json, only_if_new
if ARGV[6] == '1' and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + seq, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 1
"""

_LEASE = """
-- KEYS: job, pending, lease, state, seq, token, attempts
-- ARGV: now ms, lease ms, max attempts, queued json, failed json, scanning json
local now = tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, d in ipairs(expired) do
  redis.call('ZREM', KEYS[3], d)
  redis.call('HDEL', KEYS[6], d)
  if tonumber(redis.call('HGET', KEYS[7], d) or '0') >= tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], d)
    redis.call('HDEL', KEYS[7], d)
    redis.call('HSET', KEYS[4], d, ARGV[5])
  else
    redis.call('ZADD', KEYS[2], 0, d)
    redis.call('HSET', KEYS[4], d, ARGV[4])
  end
end
while true do
  local top = redis.call('ZPOPMIN', KEYS[2])
  if #top == 0 then return false end
  local d = top[1]
  local job = redis.call('HGET', KEYS[1], d)
  if job then
    local token = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), d)
    redis.call('HSET', KEYS[6], d, token)
    redis.call('HINCRBY', KEYS[7], d, 1)
    redis.call('HSET', KEYS[4], d, ARGV[6])
    return {d, tostring(token), job}
  end
end
"""

_RENEW = """
-- KEYS: lease, token ; ARGV: digest, token, deadline ms
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 1
"""

_FINISH = """
-- KEYS: job, lease, state, token, attempts, pending
-- ARGV: digest, token, state json, requeue, max attempts, failed json (when a requeue is one too many)
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[4] == '1' and tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0') >= tonumber(ARGV[5]) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
  return 1
end
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[6], 0, ARGV[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Lease:
    digest: str
    token: int
    job: dict[str, Any]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ScanQueue:
    def __init__(
        self,
        valkey: Any,
        hold_did: str,
        *,
        lease_seconds: float = 300.0,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._v = valkey
        self._lease_ms = int(lease_seconds * 1000)
        self._max_attempts = max_attempts
        self._clock = clock
        p = f"scan:{{{hold_did}}}:"  # one hash slot per hold (Valkey cluster)
        self.k_job, self.k_pending, self.k_lease = p + "job", p + "pending", p + "lease"
        self.k_state, self.k_seq, self.k_token, self.k_attempts = p + "state", p + "seq", p + "token", p + "attempts"
        self.k_dbversions = p + "dbversions"
        self._enqueue = valkey.register_script(_ENQUEUE)
        self._lease = valkey.register_script(_LEASE)
        self._renew = valkey.register_script(_RENEW)
        self._finish = valkey.register_script(_FINISH)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _state(self, state: str, **extra: Any) -> str:
        return json.dumps({"state": state, "updatedAt": self._now_ms() / 1000, **extra}, separators=(",", ":"))

    async def enqueue(self, job: dict[str, Any], *, rescan: bool = False, only_if_new: bool = False) -> bool:
        """Queue a scan of ``job["digest"]``; False when it is queued or being scanned already
        (the job's details are refreshed, it is not queued twice) or, with `only_if_new`, when it
        was ever queued."""
        digest = job["digest"]
        keys = [self.k_job, self.k_pending, self.k_lease, self.k_state, self.k_seq]
        band = RESCAN_BAND if rescan else PUSH_BAND
        args = [digest, json.dumps(job, separators=(",", ":")), band, self._now_ms(), self._state(QUEUED),
                "1" if only_if_new else "0"]
        return bool(await self._enqueue(keys=keys, args=args))

    async def lease(self) -> Lease | None:
        """The next job, leased to the caller until the lease runs out (see `renew`)."""
        keys = [self.k_job, self.k_pending, self.k_lease, self.k_state, self.k_seq, self.k_token, self.k_attempts]
        args = [
            self._now_ms(), self._lease_ms, self._max_attempts,
            self._state(QUEUED), self._state(FAILED, error="the scan did not finish (scanner lost)"),
            self._state(SCANNING),
        ]
        got = await self._lease(keys=keys, args=args)
        if not got:
            return None
        digest, token, job = (_s(x) for x in got)
        return Lease(digest, int(token), json.loads(job))

    async def renew(self, lease: Lease) -> bool:
        """Extend a lease still held; False when it expired and may belong to someone else now."""
        deadline = self._now_ms() + self._lease_ms
        return bool(await self._renew(keys=[self.k_lease, self.k_token], args=[lease.digest, lease.token, deadline]))

    async def holds(self, digest: str, token: int) -> bool:
        current = await self._v.hget(self.k_token, digest)
        return current is not None and _s(current) == str(token)

    async def _end(self, digest: str, token: int, state: str, requeue: bool) -> bool:
        keys = [self.k_job, self.k_lease, self.k_state, self.k_token, self.k_attempts, self.k_pending]
        failed = self._state(FAILED, error="the scan did not finish (no scanner completed it)")
        args = [digest, token, state, "1" if requeue else "0", self._max_attempts, failed]
        return bool(await self._finish(keys=keys, args=args))

    async def complete(self, digest: str, token: int, **extra: Any) -> bool:
        return await self._end(digest, token, self._state(DONE, **extra), False)

    async def fail(self, digest: str, token: int, error: str) -> bool:
        return await self._end(digest, token, self._state(FAILED, error=error[:500]), False)

    async def release(self, digest: str, token: int) -> bool:
        """Give a leased job back at once (its scanner disconnected): first in line again, unless
        it was handed out `max_attempts` times already (then it is marked failed)."""
        return await self._end(digest, token, self._state(QUEUED), True)

    async def state(self, digest: str) -> dict[str, Any] | None:
        raw = await self._v.hget(self.k_state, digest)
        return json.loads(_s(raw)) if raw is not None else None

    async def states(self, digests: list[str]) -> dict[str, dict[str, Any]]:
        if not digests:
            return {}
        raws = await self._v.hmget(self.k_state, digests)
        return {d: json.loads(_s(r)) for d, r in zip(digests, raws, strict=True) if r is not None}

    async def done_jobs(self) -> list[dict[str, Any]]:
        """Jobs of every digest ever scanned (for re-queueing after a database update)."""
        out = []
        async for digest, raw in self._v.hscan_iter(self.k_state):
            if json.loads(_s(raw)).get("state") in (DONE, FAILED):
                job = await self._v.hget(self.k_job + ":last", _s(digest))
                if job is not None:
                    out.append(json.loads(_s(job)))
        return out

    async def last_job(self, digest: str) -> dict[str, Any] | None:
        raw = await self._v.hget(self.k_job + ":last", digest)
        if raw is None:
            raw = await self._v.hget(self.k_job, digest)
        return json.loads(_s(raw)) if raw is not None else None

    async def remember(self, job: dict[str, Any]) -> None:
        """Keep the job of a finished scan, so a database update can queue it again."""
        await self._v.hset(self.k_job + ":last", job["digest"], json.dumps(job, separators=(",", ":")))

    async def new_db_version(self, version: str) -> bool:
        """True the first time any scanner reports this database version to this hold."""
        return bool(await self._v.sadd(self.k_dbversions, version))

    async def pending(self) -> int:
        return int(await self._v.zcard(self.k_pending))
