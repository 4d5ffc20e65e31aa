"""A background task that runs one coroutine every `interval` seconds until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("atcr.periodic")


class Periodic:
    def __init__(self, interval: float, work: Callable[[], Awaitable[None]], *, name: str) -> None:
        self._interval = interval
        self._work = work
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._work()
            except Exception:  # one failed round must not end the loop
                log.exception("%s: periodic work failed", self._name)
