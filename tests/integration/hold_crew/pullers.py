"""Pull-notification senders run in their own processes (an AppView's flushes, many at once).

Each notification carries its own `Idempotency-Key` and is retried until the hold answers
200, so a notification whose answer was lost while the hold was being killed is sent again and
still counted once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

NOTIFY = "io.atcr.hold.notifyManifest"


async def _send(url: str, owner: str, repository: str, n: int, concurrency: int, pace: float, done: Any) -> None:
    body = {
        "repository": repository,
        "userDid": owner,
        "manifestDigest": "sha256:" + "c" * 64,
        "operation": "pull",
        "count": 1,
    }
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(uuid.uuid4().hex)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=5, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            while not queue.empty():
                key = queue.get_nowait()
                while True:
                    try:
                        r = await client.post(f"{url}/xrpc/{NOTIFY}", json=body, headers={"Idempotency-Key": key})
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.05)  # the hold is restarting: try again
                with done.get_lock():
                    done.value += 1
                await asyncio.sleep(pace)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def send_pulls(url: str, owner: str, repository: str, n: int, concurrency: int, pace: float, done: Any) -> None:
    """Process entry point: `n` notifications of one pull each, `concurrency` at a time."""
    asyncio.run(_send(url, owner, repository, n, concurrency, pace, done))
