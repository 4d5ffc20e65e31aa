"""One upstream load per key, however many requests and replicas miss it at once.

Within a process, concurrent callers share one future. Across replicas, the first to take a
short Valkey lock (``SET NX PX``) loads; the others poll the lock (a few ms apart, backing off)
until it is released and then re-read the model, which the winner has filled. A winner whose
load fails leaves a short-lived failure note, so waiters and the next callers fail fast with
the same error instead of each hammering an upstream that is down.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import valkey.asyncio as avalkey

from atcr import errors
from atcr.readmodel import keys

log = logging.getLogger("appview.cache")

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# Errors that travel to waiters in other replicas with their own type.
_PORTABLE: dict[str, type[errors.AtcrError]] = {
    cls.__name__: cls
    for cls in (
        errors.UpstreamUnavailable,
        errors.DigestMismatch,
        errors.ManifestBytesUnavailable,
        errors.InvalidDidDocument,
    )
}


def _rebuild(note: bytes | str) -> errors.AtcrError:
    text = note.decode() if isinstance(note, bytes) else note
    name, _, message = text.partition(":")
    return _PORTABLE.get(name, errors.UpstreamUnavailable)(message)


class SingleFlight:
    """Deduplicates loads by key, in this process and across processes sharing one Valkey."""

    def __init__(
        self,
        valkey: avalkey.Valkey,
        *,
        lock_ttl: float = 15.0,
        wait_timeout: float = 15.0,
        failure_ttl: float = 5.0,
    ) -> None:
        self._v = valkey
        self._lock_ms = int(lock_ttl * 1000)
        self._wait = wait_timeout
        self._failure_ms = max(1, int(failure_ttl * 1000))
        self._local: dict[str, asyncio.Future[bool]] = {}

    def busy(self, key: str) -> bool:
        return key in self._local

    async def do(self, key: str, load: Callable[[], Awaitable[None]], *, wait: bool = True) -> bool:
        """Run `load` unless someone else is running it; return once the model holds its result.

        Returns False only with ``wait=False`` when another process holds the lock (background
        refreshes skip instead of waiting). Raises the load's error, or the failure note a peer
        left, or UpstreamUnavailable when the peer holding the lock does not finish in time.
        """
        fut = self._local.get(key)
        if fut is not None:
            if not wait:
                return False
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._local[key] = fut
        try:
            done = await self._global(key, load, wait)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: there may be no local waiter
            raise
        else:
            fut.set_result(done)
            return done
        finally:
            self._local.pop(key, None)

    async def _global(self, key: str, load: Callable[[], Awaitable[None]], wait: bool) -> bool:
        lock, note_key = keys.lock(key), keys.failure(key)
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            pipe = self._v.pipeline(transaction=False)
            pipe.set(lock, token, nx=True, px=self._lock_ms)
            pipe.get(note_key)
            acquired, note = await pipe.execute()
            if note is not None:
                if acquired:
                    await self._release(lock, token)
                raise _rebuild(note)
            if acquired:
                try:
                    await load()
                except errors.AtcrError as exc:
                    if not isinstance(exc, errors.IdentityError):
                        await self._v.set(note_key, f"{type(exc).__name__}:{exc}", px=self._failure_ms)
                    raise
                finally:
                    await asyncio.shield(self._release(lock, token))
                return True
            if not wait:
                return False
            delay = 0.002
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                pipe = self._v.pipeline(transaction=False)
                pipe.exists(lock)
                pipe.get(note_key)
                held, note = await pipe.execute()
                if note is not None:
                    raise _rebuild(note)
                if not held:
                    return True
                if loop.time() > deadline:
                    raise errors.UpstreamUnavailable(f"gave up waiting for another replica to load {key}")

    async def _release(self, lock: str, token: str) -> None:
        try:
            await self._v.eval(_RELEASE, 1, lock, token)  # type: ignore[misc]
        except Exception:  # the lock expires by itself; never mask the load's outcome
            log.debug("could not release %s", lock, exc_info=True)
