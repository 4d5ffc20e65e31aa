"""Rate limits shared by every AppView replica, without a Valkey round trip per request.

Each process counts requests locally per (kind, identity, window) and, every `sync_interval`,
adds its new counts to a shared Valkey counter (INCRBY) and reads the replica-wide total
back. A request is refused when the last known total plus what this process counted since is
over the limit. Across N replicas the overshoot is bounded by what N processes admit in one
sync interval; in exchange the hot path (a manifest GET) stays a dictionary update.

If Valkey is unreachable the limiter fails open: refusing all traffic because the limiter's
store is down would turn a cache outage into a full outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from atcr.periodic import Periodic

log = logging.getLogger("appview.ratelimit")

Key = tuple[str, str, int]  # (kind, identity, window number)


@dataclass(frozen=True)
class Limit:
    requests: int  # per window; 0 disables
    window: int  # seconds


class RateLimiter:
    def __init__(self, valkey: avalkey.Valkey, limits: dict[str, Limit], *, sync_interval: float = 0.25) -> None:
        self._v = valkey
        self._limits = limits
        self._interval = sync_interval
        self._unsynced: Counter[Key] = Counter()
        self._known: dict[Key, int] = {}
        self._loop = Periodic(sync_interval, self.sync, name="rate-limit-sync")
        self._failing = False

    def hit(self, kind: str, identity: str, cost: int = 1) -> float | None:
        """Count a request; seconds to wait when it is over the limit, else None."""
        limit = self._limits.get(kind)
        if limit is None or limit.requests <= 0 or not identity:
            return None
        now = time.time()
        window = int(now // limit.window)
        key = (kind, identity, window)
        total = self._known.get(key, 0) + self._unsynced[key] + cost
        if total > limit.requests:
            return max(1.0, math.ceil((window + 1) * limit.window - now))
        self._unsynced[key] += cost
        return None

    def over(self, kind: str, identity: str) -> float | None:
        """Seconds to wait if `identity` has already used up its `kind` budget (counts nothing)."""
        limit = self._limits.get(kind)
        if limit is None or limit.requests <= 0 or not identity:
            return None
        now = time.time()
        window = int(now // limit.window)
        key = (kind, identity, window)
        if self._known.get(key, 0) + self._unsynced[key] >= limit.requests:
            return max(1.0, math.ceil((window + 1) * limit.window - now))
        return None

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sync(self) -> None:
        now_windows = {kind: int(time.time() // lim.window) for kind, lim in self._limits.items()}
        # Forget windows that are over.
        for key in [k for k in self._known if k[2] < now_windows.get(k[0], 0)]:
            del self._known[key]
        batch, self._unsynced = self._unsynced, Counter()
        # Keys with no new local count are refreshed too (INCRBY 0), to learn other replicas' counts.
        keys = list(dict.fromkeys([*batch, *self._known]))
        if not keys:
            return
        try:
            async with self._v.pipeline(transaction=False) as pipe:
                for kind, ident, window in keys:
                    name = f"av:rl:{kind}:{ident}:{window}"
                    pipe.incrby(name, batch[(kind, ident, window)])
                    pipe.expire(name, self._limits[kind].window * 2)
                results = await pipe.execute()
        except (ValkeyError, OSError) as exc:
            if not self._failing:
                log.warning("rate limiter cannot reach Valkey (%s); limiting per process only", exc)
            self._failing = True
            for key in batch:  # keep local counts so this process still limits itself
                self._known[key] = self._known.get(key, 0) + batch[key]
            return
        self._failing = False
        for i, key in enumerate(keys):
            self._known[key] = int(results[2 * i])
