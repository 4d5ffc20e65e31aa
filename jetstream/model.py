"""The consumer's one door into the read model.

The processor and the backfill write only through `ReadModel`, so the rules of the model
(rev ordering, tombstones, listing floors, key layout) stay in `atcr.readmodel`, and unit
tests can stand in a recording fake for Valkey.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import valkey.asyncio as avalkey

from atcr.readmodel import apply as rm_apply
from atcr.readmodel import events as rm_events
from atcr.readmodel._compat import done
from atcr.readmodel.events import RecordChange

__all__ = ["ReadModel", "RecordChange", "ValkeyReadModel"]


class ReadModel(Protocol):
    async def apply_records(self, changes: Sequence[RecordChange]) -> list[bool]:
        """Upsert/delete each change if not older than what the model holds; True when applied."""
        ...

    async def apply_listing(
        self,
        did: str,
        collection: str,
        records: Sequence[tuple[str, dict[str, Any], str | None]],
        *,
        rev: str | None,
        started_ms: int,
    ) -> int:
        """Replace a whole collection of one repository with what a listing returned."""
        ...

    async def forget_identities(self, items: Sequence[tuple[str, str | None]]) -> None: ...

    async def apply_accounts(self, items: Sequence[tuple[str, bool, str | None]]) -> list[str]:
        """Per (did, active, status): ``hidden``, ``purged``, ``restored`` or ``ignored``
        (see `atcr.readmodel.events`)."""
        ...

    async def inactive(self, dids: Sequence[str]) -> dict[str, str]:
        """Status of each DID whose account is currently hidden or deleted."""
        ...

    async def now_ms(self) -> int:
        """The model's clock (listings are stamped with it, not with ours)."""
        ...


class ValkeyReadModel:
    """`ReadModel` over the real Valkey model."""

    def __init__(self, v: avalkey.Valkey) -> None:
        self.valkey = v

    async def apply_records(self, changes: Sequence[RecordChange]) -> list[bool]:
        return await rm_events.apply_records(self.valkey, changes)

    async def apply_listing(
        self,
        did: str,
        collection: str,
        records: Sequence[tuple[str, dict[str, Any], str | None]],
        *,
        rev: str | None,
        started_ms: int,
    ) -> int:
        return await rm_apply.apply_snapshot(
            self.valkey, did, collection, records, rev=rev, started_ms=started_ms, complete=True
        )

    async def forget_identities(self, items: Sequence[tuple[str, str | None]]) -> None:
        await rm_events.apply_identity(self.valkey, items)

    async def apply_accounts(self, items: Sequence[tuple[str, bool, str | None]]) -> list[str]:
        return await rm_events.apply_accounts(self.valkey, items)

    async def inactive(self, dids: Sequence[str]) -> dict[str, str]:
        return await rm_events.inactive_accounts(self.valkey, dids)

    async def now_ms(self) -> int:
        sec, usec = await done(self.valkey.time())
        return int(sec) * 1000 + int(usec) // 1000
