"""A per-process near cache of hot read-model answers, kept coherent by Valkey itself.

Why it exists: a warm ``GET /v2/<name>/manifests/<tag>`` otherwise costs three Valkey round
trips (identity, tag, manifest), about a third of a worker's CPU under load. The answers change
rarely, so each process keeps the last ones it read, for a short time.

Why it does not serve stale data:

* Valkey's server-assisted client-side caching in broadcast mode (``CLIENT TRACKING ON BCAST
  PREFIX av:{ ...``) pushes the name of every changed read-model key to one dedicated connection
  per process, whoever changed it: this replica, another one, the Jetstream consumer, a
  ``FLUSHALL``. A changed key of a DID drops everything cached for that DID (its *scope*); a
  changed identity key drops that identity.
* A reader takes a `Stamp` of its scope before it reads Valkey and stores its answer only if no
  invalidation of that scope arrived in between, so an answer read just before a write is
  never kept after the write's invalidation.
* While the invalidation connection is not subscribed (start-up, Valkey restart, failover), the
  cache neither answers nor stores, and it is emptied whenever that connection is lost.
* Every entry expires after ``ttl`` seconds anyway: a lost message cannot keep an answer longer.
* This process's own writes drop their scope at once (`invalidate`), without waiting for the
  message, so a client that pushes and pulls through one replica reads its write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

import valkey.asyncio as avalkey
from valkey.exceptions import ResponseError, ValkeyError

from atcr.readmodel import keys
from atcr.tasks import cancel_and_wait

log = logging.getLogger("appview.cache.near")

CHANNEL: Final = "__redis__:invalidate"


class _Miss:
    """The answer of `NearCache.get` when it has nothing (None is a value that can be cached)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = _Miss()


@dataclass(frozen=True, slots=True)
class Stamp:
    """The generation of a scope when a reader started; `NearCache.put` refuses older ones."""

    epoch: int
    generation: int


class NearCache:
    """Bounded (entries and bytes), short-lived, invalidated by Valkey's tracking messages."""

    def __init__(
        self,
        valkey: avalkey.Valkey,
        *,
        ttl: float = 2.0,
        max_entries: int = 20_000,
        max_bytes: int = 32 * 1024 * 1024,
        ping_interval: float = 5.0,
        reconnect_max: float = 5.0,
        scope_of: Callable[[str], str | None] = keys.scope_of_key,
        prefixes: tuple[str, ...] = keys.TRACKED_PREFIXES,
    ) -> None:
        self._v = valkey
        self.ttl = ttl
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ping_interval = ping_interval
        self._reconnect_max = reconnect_max
        self._scope_of = scope_of
        self._prefixes = prefixes
        self._entries: OrderedDict[tuple[str, Hashable], tuple[float, Any, int]] = OrderedDict()
        self._by_scope: dict[str, set[Hashable]] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._bytes = 0
        self._ready = False
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.invalidations = 0
        self.connections = 0
        self._refused = False
        self.client_id: int | None = None

    # -- the cache -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while invalidations are being received: only then does the cache answer."""
        return self._ready

    def stamp(self, scope: str) -> Stamp | None:
        if not self._ready:
            return None
        return Stamp(self._epoch, self._generations.get(scope, 0))

    def get(self, scope: str, key: Hashable) -> Any:
        if not self._ready:
            return MISS
        hit = self._entries.get((scope, key))
        if hit is None:
            return MISS
        if hit[0] < time.monotonic():
            self._drop((scope, key))
            return MISS
        return hit[1]

    def put(self, scope: str, key: Hashable, value: Any, stamp: Stamp | None, size: int = 256) -> None:
        """Keep `value` unless the scope changed since `stamp` (or the cache is not live)."""
        if stamp is None or not self._ready or size > self._max_bytes // 8:
            return
        if stamp.epoch != self._epoch or stamp.generation != self._generations.get(scope, 0):
            return
        entry = (scope, key)
        if entry in self._entries:
            self._drop(entry)
        self._entries[entry] = (time.monotonic() + self.ttl, value, size)
        self._by_scope.setdefault(scope, set()).add(key)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def invalidate(self, scope: str) -> None:
        """Drop a scope and make every read of it already under way unable to store."""
        self._generations[scope] = self._generations.get(scope, 0) + 1
        for key in self._by_scope.pop(scope, ()):
            hit = self._entries.pop((scope, key), None)
            if hit is not None:
                self._bytes -= hit[2]
        if len(self._generations) > 4 * self._max_entries:
            # Generations only need to outlive the reads under way: start a new epoch.
            self.clear()

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_scope.clear()
        self._generations.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, entry: tuple[str, Hashable]) -> None:
        hit = self._entries.pop(entry, None)
        if hit is None:
            return
        self._bytes -= hit[2]
        scoped = self._by_scope.get(entry[0])
        if scoped is not None:
            scoped.discard(entry[1])
            if not scoped:
                del self._by_scope[entry[0]]

    # -- the invalidation connection -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="near-cache-invalidations")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._ready = False
        self._live.clear()
        if task is not None:
            await cancel_and_wait(task)

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._live.wait()
        return self._ready

    def _set_ready(self, ready: bool) -> None:
        if self._ready and not ready:
            log.warning("near cache off: lost Valkey's invalidation messages; reading Valkey directly")
        self._ready = ready
        if ready:
            self._live.set()
        else:
            self._live.clear()
        self.clear()

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            pool: Any = self._v.connection_pool  # untyped in valkey-py
            conn = pool.make_connection()
            try:
                await self._subscribe(conn)
                delay = 0.1
                self._refused = False
                self.connections += 1
                self._set_ready(True)
                await self._receive(conn)
            except ResponseError as exc:
                # Reachable but refusing (an ACL without CLIENT or SUBSCRIBE, an old server):
                # say so once; the cache stays off and the loader reads Valkey directly.
                if not self._refused:
                    log.warning("near cache off: Valkey refused client tracking (%s); see docs/deployment.md", exc)
                self._refused = True
                delay = self._reconnect_max
            except (ValkeyError, OSError, TimeoutError) as exc:
                log.debug("near cache invalidation connection: %s", exc)
            finally:
                self._set_ready(False)
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

    async def _subscribe(self, conn: Any) -> None:
        await conn.connect()
        await conn.send_command("CLIENT", "ID")
        client_id = await conn.read_response()
        self.client_id = int(client_id)
        prefixes = [arg for p in self._prefixes for arg in ("PREFIX", p)]
        await conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes)
        await conn.read_response()
        await conn.send_command("SUBSCRIBE", CHANNEL)
        await conn.read_response()

    async def _receive(self, conn: Any) -> None:
        """Apply invalidations; a PING every ``ping_interval`` proves the connection still works."""
        waiting_pong = False
        while True:
            message = await conn.read_response(timeout=self._ping_interval, disconnect_on_error=False)
            if message is None:
                if waiting_pong:
                    raise TimeoutError("Valkey did not answer the invalidation connection's PING")
                await conn.send_command("PING")
                waiting_pong = True
                continue
            waiting_pong = False
            if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                self._apply(message[2])

    def _apply(self, names: list[bytes] | None) -> None:
        self.invalidations += 1
        if names is None:  # FLUSHALL / FLUSHDB
            self.clear()
            return
        for name in names:
            scope = self._scope_of(name.decode(errors="replace"))
            if scope is not None:
                self.invalidate(scope)
