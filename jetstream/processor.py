"""One processor for every source: events in, read-model changes out.

Jetstream, the firehose and the backfill all end here, so the read model sees one set of
rules whichever way a change arrived:

* commits become rev-ordered upserts/deletes (`atcr.readmodel`), so duplicates, replays
  after a rewind and out-of-order delivery leave the model as the newest rev says;
* identity events drop cached identity (the next read resolves it again);
* account events hide a deactivated, suspended or taken-down account and purge a deleted
  one; commits of such an account are dropped until it is active again, when its records
  are listed afresh (the caller gets the DID back in `BatchResult.resync`).

Events are applied in batches, one Valkey round trip per batch, because per-event round
trips cap a consumer at a few thousand events per second. Order is kept where it matters:
an account event and the commits of the same DID apply in arrival order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atcr.readmodel import keys
from atcr.readmodel.records import hold_did_of
from atcr.syntax import is_did
from jetstream.events import AccountEvent, CommitEvent, Event, IdentityEvent
from jetstream.model import ReadModel, RecordChange
from jetstream.scanhooks import ScanHooks

log = logging.getLogger("jetstream.processor")


@dataclass
class BatchResult:
    """What one batch did, for metrics, the cursor and follow-up work."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, outcome) -> count
    resync: list[str] = field(default_factory=list)  # DIDs whose records must be listed again
    hidden: list[str] = field(default_factory=list)  # DIDs hidden or purged by this batch
    holds: set[str] = field(default_factory=set)  # hold DIDs the batch's records name
    newest_us: int | None = None  # time of the newest event in the batch
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        self.outcomes[(kind, outcome)] += n


def holds_named(collection: str, did: str, record: dict[str, Any] | None) -> list[str]:
    """Hold DIDs a record tells us about: where a manifest's layers live, a user's default
    hold, or the hold itself (its captain record). Backfill lists every hold seen here."""
    if record is None:
        return []
    if collection == keys.MANIFEST:
        hold = hold_did_of(record)
        return [hold] if hold else []
    if collection == keys.PROFILE:
        hold = record.get("defaultHold")
        return [hold] if isinstance(hold, str) and is_did(hold) else []
    if collection == keys.CAPTAIN:
        return [did]
    return []


class Processor:
    """Applies batches of normalized events to the read model."""

    def __init__(self, model: ReadModel, *, scans: ScanHooks | None = None) -> None:
        self.model = model
        self.scans = scans  # queues scan:* webhooks for holds' new scan records (jetstream/scanhooks.py)

    async def apply(self, events: Sequence[Event]) -> BatchResult:
        """Apply `events` (in delivery order). Never raises for one bad event; Valkey errors
        propagate, because then nothing can be applied and the caller must retry the batch.

        Order only matters between an account event and the commits of the same DID, so the
        batch is cut into waves: a DID's commits go into the wave after its last account
        event. Each wave is one round trip for its commits, then one for its account events;
        a batch without such interleaving (almost all of them) is a single wave.
        """
        started = time.perf_counter()
        result = BatchResult()
        if not events:
            return result
        result.newest_us = max(e.time_us for e in events)
        commit_dids = list(dict.fromkeys(e.did for e in events if isinstance(e, CommitEvent)))
        inactive = await self.model.inactive(commit_dids)

        waves: list[tuple[list[CommitEvent], list[AccountEvent]]] = [([], [])]
        wave_of: dict[str, int] = {}  # DID -> wave its next commit goes to
        identities: list[tuple[str, str | None]] = []
        for event in events:
            if isinstance(event, CommitEvent | AccountEvent):
                w = wave_of.get(event.did, 0)
                if w == len(waves):
                    waves.append(([], []))
                if isinstance(event, CommitEvent):
                    waves[w][0].append(event)
                else:
                    waves[w][1].append(event)
                    wave_of[event.did] = w + 1
            elif isinstance(event, IdentityEvent):
                identities.append((event.did, event.handle))
        for commits, accounts in waves:
            await self._commits(commits, inactive, result)
            await self._accounts(accounts, inactive, result)
        if identities:
            await self.model.forget_identities(identities)
            result.count("identity", "applied", len(identities))
        result.seconds = time.perf_counter() - started
        return result

    async def _commits(self, commits: list[CommitEvent], inactive: dict[str, str], result: BatchResult) -> None:
        kept = [c for c in commits if c.did not in inactive]
        if len(kept) < len(commits):
            result.count("commit", "hidden", len(commits) - len(kept))
        if not kept:
            return
        changes = [RecordChange(c.did, c.collection, c.rkey, c.record, c.cid, c.rev, c.raw_manifest) for c in kept]
        applied = await self.model.apply_records(changes)
        for commit, ok in zip(kept, applied, strict=True):
            result.count("commit", "applied" if ok else "ignored")
            if ok:
                result.holds.update(holds_named(commit.collection, commit.did, commit.record))
        if self.scans is not None:
            for outcome, n in (await self.scans.handle(kept)).items():
                result.count("scan", outcome, n)

    async def _accounts(self, accounts: list[AccountEvent], inactive: dict[str, str], result: BatchResult) -> None:
        if not accounts:
            return
        outcomes = await self.model.apply_accounts([(e.did, e.active, e.status) for e in accounts])
        for event, outcome in zip(accounts, outcomes, strict=True):
            result.count("account", outcome)
            if outcome in ("hidden", "purged"):
                inactive[event.did] = event.status or "deactivated"
                result.hidden.append(event.did)
                log.info("account %s is %s: its repositories are %s", event.did, event.status, outcome)
            elif event.active:
                inactive.pop(event.did, None)
                if outcome == "restored" and event.did not in result.resync:
                    result.resync.append(event.did)
                    log.info("account %s is active again: listing its records", event.did)

    async def apply_listing(
        self,
        did: str,
        collection: str,
        records: Sequence[tuple[str, dict[str, Any], str | None]],
        *,
        rev: str | None,
        started_ms: int,
    ) -> tuple[int, set[str]]:
        """Apply one complete listing (backfill); returns (changed entries, hold DIDs named)."""
        changed = await self.model.apply_listing(did, collection, records, rev=rev, started_ms=started_ms)
        holds: set[str] = set()
        for _, record, _ in records:
            holds.update(holds_named(collection, did, record))
        return changed, holds
