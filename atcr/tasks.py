"""Stopping background tasks so that they do stop.

A cancellation can be lost on Python 3.11: `asyncio.wait_for` returns the inner result when
the inner awaitable finishes in the same loop turn as the cancel (CPython gh-86296, fixed in
3.12), and valkey-py sends every command through `wait_for`. A worker loop that lost its
cancel goes back to waiting on its queue as if nothing happened, and a shutdown that awaited it
hung: the Jetstream consumer's stop did, 4 times in 150 on a busy machine. Cancelling again
reaches such a task at its next wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

log = logging.getLogger("atcr.tasks")

AGAIN_EVERY: Final = 0.5
GIVE_UP_AFTER: Final = 30.0


async def cancel_and_wait(
    *tasks: asyncio.Future[Any], again_every: float = AGAIN_EVERY, give_up_after: float = GIVE_UP_AFTER
) -> None:
    """Cancel `tasks` and wait until each has ended; what they ended with is not raised.

    A task still running `again_every` seconds after its cancel is cancelled again. One that
    outlives `give_up_after` seconds is left running with an error logged: a shutdown that
    stops is worth more than one that waits forever for a task that will not.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            names = sorted(t.get_name() if isinstance(t, asyncio.Task) else repr(t) for t in pending)
            log.error("%d task(s) did not stop within %.0fs of their cancel: %s", len(pending), give_up_after, names)
            break
        _, pending = await asyncio.wait(pending, timeout=min(again_every, left))
        for task in pending:
            task.cancel()  # its cancel was lost (see the module's docstring): ask again
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure while stopping is not news to anyone


__all__ = ["cancel_and_wait"]
