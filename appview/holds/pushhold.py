"""Which hold a user's pushes go to: one answer for the whole push (docs/hold.md).

A push is many requests (a HEAD per blob, uploads, mounts, the manifest PUT), possibly on
several AppView replicas. If they asked different holds (the user's choice here, the
AppView's default there), a client would skip uploading a blob one hold has and the manifest
would then name a hold without it. So the first request of a push resolves the hold once, the
user's ``defaultHold`` if set and reachable, else the AppView's, and pins the answer in Valkey
for every replica; each use extends the pin, and changing the default hold in the web UI drops
it. Without Valkey the answer is resolved per request, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from atcr.errors import AtcrError
from atcr.syntax import is_did

log = logging.getLogger("appview.holds")

ProfileReader = Callable[[str], Awaitable[dict[str, Any] | None]]


def pin_key(did: str) -> str:
    return f"av:{{{did}}}:pushhold"


class PushHolds:
    def __init__(
        self,
        valkey: avalkey.Valkey | None,
        profile: ProfileReader,
        reachable: Callable[[str], bool],
        default_hold: str,
        *,
        pin_seconds: int = 900,
    ) -> None:
        self._v = valkey
        self._profile = profile
        self._reachable = reachable
        self.default_hold = default_hold
        self._pin = pin_seconds

    async def resolve(self, user_did: str) -> str:
        """The hold this user's push uses (pinned, see the module docstring)."""
        if self._v is not None and self._pin > 0:
            try:
                pinned = await self._v.getex(pin_key(user_did), ex=self._pin)
            except ValkeyError:
                pinned = None
            if pinned:
                return pinned.decode() if isinstance(pinned, bytes) else str(pinned)
        chosen = await self.choose(user_did)
        if self._v is not None and self._pin > 0:
            try:
                # Another replica may have pinned first: its answer wins.
                if not await self._v.set(pin_key(user_did), chosen, ex=self._pin, nx=True):
                    pinned = await self._v.get(pin_key(user_did))
                    if pinned:
                        return pinned.decode() if isinstance(pinned, bytes) else str(pinned)
            except ValkeyError:
                log.info("could not pin the push hold of %s; this request uses %s unpinned", user_did, chosen)
        return chosen

    async def choose(self, user_did: str) -> str:
        """The profile's ``defaultHold`` if it is a DID and the hold answers, else the default."""
        try:
            profile = await self._profile(user_did)
        except AtcrError:
            profile = None
        hold = (profile or {}).get("defaultHold")
        if not (isinstance(hold, str) and is_did(hold)):
            return self.default_hold
        if hold != self.default_hold and not self._reachable(hold):
            log.info("%s's defaultHold %s is not answering; this push goes to %s", user_did, hold, self.default_hold)
            return self.default_hold
        return hold

    async def forget(self, user_did: str) -> None:
        """Drop the pin (the user chose another hold): the next push resolves again."""
        if self._v is None:
            return
        try:
            await self._v.delete(pin_key(user_did))
        except ValkeyError:
            log.info("could not drop the push-hold pin of %s; it expires on its own", user_did)
