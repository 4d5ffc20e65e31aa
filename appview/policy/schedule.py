"""Retention on a schedule, for owners with a live session (OAuth or app password).

A push that finds retention rules (and a save on the rules page) remembers the repository in
Valkey (``av:retention:repos``). Every ``ATCR_RETENTION_INTERVAL`` seconds one AppView replica
(a Valkey lock per interval) goes through them: the owner's session at the AppView gives a
client on their PDS (no session: skipped until they sign in or push again), the rules are read
there (no retention any more: forgotten), and `Registry.apply_retention` removes what they say.
So `untaggedOlderThanDays` takes effect without a push.

A push reads the rules only where they may exist (`may_have_retention`): a remembered
repository, or one whose rules were not looked at in the last ``PROBE_SECONDS``. A re-tag of a
repository without retention then costs no PDS read (a read that competes with the tag write at
the PDS). Rules written by our rules page are remembered at once; rules another tool writes take
effect on the first push after the probe lapses, or at the latest one probe later. Skipping a
retention pass never removes anything, so a stale "no rules" answer is safe.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from valkey.exceptions import ValkeyError

from appview.errors import RegistryError
from appview.policy.store import read_policy
from atcr.errors import NetworkError, XrpcError
from atcr.periodic import Periodic
from atcr.xrpc import XrpcClient

if TYPE_CHECKING:
    from appview.oci.registry import Registry

log = logging.getLogger("appview.policy")

REPOS_KEY = "av:retention:repos"
LOCK_KEY = "av:retention:lock"
PROBE_PREFIX = "av:retention:probe:"
PROBE_SECONDS = 300


async def forget_account(valkey: Any, did: str) -> int:
    """Drop what retention keeps about an account (its remembered repositories and probes),
    for "delete my data"; how many entries went."""
    prefix = f"{did}|"
    members = [
        m for m in await valkey.smembers(REPOS_KEY) if (m.decode() if isinstance(m, bytes) else m).startswith(prefix)
    ]
    probes = [k async for k in valkey.scan_iter(match=PROBE_PREFIX + prefix.replace("[", "\\[") + "*", count=500)]
    if members:
        await valkey.srem(REPOS_KEY, *members)
    if probes:
        await valkey.delete(*probes)
    return len(members) + len(probes)


class Sessions(Protocol):
    async def client(self, did: str) -> XrpcClient | None: ...


class RetentionSchedule:
    def __init__(self, valkey: Any, registry: Registry, sessions: Sessions, interval: float) -> None:
        self._valkey = valkey
        self._registry = registry
        self._sessions = sessions
        self.interval = interval
        self._loop: Periodic | None = None

    async def remember(self, did: str, repository: str) -> None:
        await self._valkey.sadd(REPOS_KEY, f"{did}|{repository}")

    async def may_have_retention(self, did: str, repository: str) -> bool:
        """Whether a push to the repository should read its rules (see the module docstring)."""
        member = f"{did}|{repository}"
        try:
            async with self._valkey.pipeline(transaction=False) as pipe:
                pipe.sismember(REPOS_KEY, member)
                pipe.set(PROBE_PREFIX + member, b"1", nx=True, ex=PROBE_SECONDS)
                remembered, probe = await pipe.execute()
        except (ValkeyError, OSError) as exc:
            log.debug("retention probe for %s unavailable (%s): reading the rules", member, exc)
            return True
        return bool(remembered) or bool(probe)

    async def run_once(self) -> int:
        """One pass over the remembered repositories; how many had their rules applied."""
        if not await self._valkey.set(LOCK_KEY, b"1", nx=True, ex=max(1, int(self.interval))):
            return 0  # another replica ran this interval
        applied = 0
        for raw in sorted(await self._valkey.smembers(REPOS_KEY)):
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            did, _, repository = member.partition("|")
            try:
                client = await self._sessions.client(did)
                if client is None:
                    continue
                policy = await read_policy(client, did, repository)
                if not policy.has_retention:
                    await self._valkey.srem(REPOS_KEY, member)
                    continue
                ref = await self._registry.resolve(f"{did}/{repository}")
                await self._registry.apply_retention(ref, client, policy)
                applied += 1
            except (RegistryError, NetworkError, XrpcError) as exc:
                log.info("scheduled retention of %s skipped: %s", member, exc)
        return applied

    def start(self) -> None:
        if self.interval > 0 and self._loop is None:
            self._loop = Periodic(self.interval, self._tick, name="retention")
            self._loop.start()

    async def _tick(self) -> None:
        await self.run_once()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
