"""A background task that runs one coroutine every `interval` seconds until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from atcr.tasks import cancel_and_wait

log = logging.getLogger("atcr.periodic")


class Periodic:
    """Runs `work` every `interval` seconds.

    `stop` never interrupts a round in progress: it waits for it to finish, then ends the loop.
    A round cut off midway (a flush of counts whose requests were sent but not answered) would
    leave its work half done; callers usually run `work` once more after `stop` instead.
    """

    def __init__(self, interval: float, work: Callable[[], Awaitable[None]], *, name: str) -> None:
        self._interval = interval
        self._work = work
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._working = False
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping = True
        if self._working:
            await asyncio.wait({task})  # the round in progress finishes; the loop then sees _stopping
        else:
            await cancel_and_wait(task)  # asleep between rounds: nothing to finish
        self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            self._working = True
            try:
                await self._work()
            except Exception:  # one failed round must not end the loop
                log.exception("%s: periodic work failed", self._name)
            finally:
                self._working = False
