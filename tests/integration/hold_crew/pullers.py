"""Pull-notification senders run in their own processes (an AppView's flushes, many at once).

Each notification carries its own `Idempotency-Key` and is retried until the hold answers
200, so a notification whose answer was lost while the hold was being killed is sent again and
still counted once. Each is signed as the AppView signs them (a service token of its did:web,
fresh per attempt): only signed notifications count for a repository the hold has no stats for.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.serviceauth import mint_service_token

NOTIFY = "io.atcr.hold.notifyManifest"


async def _send(
    url: str, owner: str, repository: str, n: int, concurrency: int, pace: float, done: Any, signer: Signer
) -> None:
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
                        headers = {"Idempotency-Key": key, "Authorization": "Bearer " + signer.token()}
                        r = await client.post(f"{url}/xrpc/{NOTIFY}", json=body, headers=headers)
                        if r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.05)  # the hold is restarting: try again
                with done.get_lock():
                    done.value += 1
                await asyncio.sleep(pace)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


class Signer:
    """Mints the AppView's service tokens for notifyManifest (picklable: the key travels as PEM)."""

    def __init__(self, key_pem: bytes, iss: str, aud: str) -> None:
        self.key_pem, self.iss, self.aud = key_pem, iss, aud

    @classmethod
    def of(cls, key: ec.EllipticCurvePrivateKey, iss: str, aud: str) -> Signer:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(pem, iss, aud)

    def token(self) -> str:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return mint_service_token(key, iss=self.iss, aud=self.aud, lxm=NOTIFY)


def send_pulls(
    url: str, owner: str, repository: str, n: int, concurrency: int, pace: float, done: Any, signer: Signer
) -> None:
    """Process entry point: `n` notifications of one pull each, `concurrency` at a time."""
    asyncio.run(_send(url, owner, repository, n, concurrency, pace, done, signer))
