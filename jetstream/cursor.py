"""Where each source resumes: cursors in Valkey, saved in batches, never ahead of the model.

A cursor is saved only after every event up to it has been applied, so a crash replays a
little (delivery is at-least-once and applying is idempotent) but never skips. Saving is
batched (every N events or T seconds) because one extra Valkey write per event would cost
as much as the event itself.

Jetstream cursors are unix microseconds and mean the same on every instance, so one key
serves the whole list of Jetstream URLs. Firehose cursors are per-host sequence numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import valkey.asyncio as avalkey

from atcr.readmodel._compat import done

PREFIX: Final = "js:"


def cursor_key(source: str) -> str:
    """``js:cursor:jetstream`` or ``js:cursor:fh:<host>``."""
    return f"{PREFIX}cursor:{source}"


class CursorStore:
    """Reads and writes the saved cursor of one source."""

    def __init__(self, v: avalkey.Valkey, source: str) -> None:
        self._v = v
        self.key = cursor_key(source)

    async def load(self) -> int | None:
        raw = await done(self._v.get(self.key))
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return None

    async def save(self, value: int) -> None:
        await done(self._v.set(self.key, str(value)))

    async def clear(self) -> None:
        await done(self._v.delete(self.key))


class Checkpointer:
    """Remembers the newest fully applied position and saves it every N events or T seconds."""

    def __init__(
        self,
        store: CursorStore,
        *,
        every_events: int,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._every_events = every_events
        self._every_seconds = every_seconds
        self._clock = clock
        self.applied: int | None = None  # newest position whose events are all applied
        self.saved: int | None = None
        self._pending = 0
        self._last_save = clock()

    def restore(self, value: int | None) -> None:
        self.applied = self.saved = value

    async def advance(self, position: int, events: int = 1) -> bool:
        """Note that everything up to `position` is applied; save if due. True when saved."""
        if self.applied is None or position > self.applied:
            self.applied = position
        self._pending += events
        if self._pending >= self._every_events or self._clock() - self._last_save >= self._every_seconds:
            return await self.flush()
        return False

    async def tick(self) -> bool:
        """Save a position that waited long enough (a quiet stream still gets its cursor saved)."""
        if self.applied != self.saved and self._clock() - self._last_save >= self._every_seconds:
            return await self.flush()
        return False

    async def flush(self) -> bool:
        self._last_save = self._clock()
        self._pending = 0
        if self.applied is None or self.applied == self.saved:
            return False
        await self.store.save(self.applied)
        self.saved = self.applied
        return True
