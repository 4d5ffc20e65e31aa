"""The scan-webhook rules of the consumer's processor on a real Valkey: which scan records count.

(Deliveries end to end, signatures included: tests/integration/webhooks/test_scan_events.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from atcr.readmodel import keys
from atcr.readmodel.events import RecordChange, apply_records
from jetstream.events import CommitEvent, Operation
from jetstream.model import ValkeyReadModel
from jetstream.processor import Processor
from jetstream.scanhooks import SCAN, ScanHooks, last_key
from tests.integration.jetstream.helpers import manifest_record, new_digest

pytestmark = pytest.mark.integration

OWNER = "did:plc:scanrules000000000000000"
HOLD = "did:web:hold.scanrules.test"


def scan(digest: str, scanned_at: str, *, hold: str = HOLD, critical: Any = 1, op: Operation = "create",
         rkey: str | None = None, **extra: Any) -> CommitEvent:
    record = {"$type": SCAN, "userDid": OWNER, "repository": "app", "critical": critical, "high": 0,
              "medium": 0, "low": 0, "total": 1, "scannedAt": scanned_at, **extra}
    return CommitEvent(hold, 1, SCAN, rkey or keys.manifest_rkey(digest), op,
                       "3l" + scanned_at[:10], record=None if op == "delete" else record)


async def test_only_the_manifests_hold_fires_and_each_scan_fires_once(valkey: Any) -> None:
    mine, theirs, unknown = new_digest(), new_digest(), new_digest()
    await apply_records(valkey, [
        RecordChange(OWNER, keys.MANIFEST, keys.manifest_rkey(mine), manifest_record("app", mine, holdDid=HOLD),
                     None, None),
        RecordChange(OWNER, keys.MANIFEST, keys.manifest_rkey(theirs),
                     manifest_record("app", theirs, holdDid="did:web:elsewhere.test"), None, None),
    ])
    processor = Processor(ValkeyReadModel(valkey), scans=ScanHooks(valkey, base_url="https://r.test"))

    async def outcomes(*events: CommitEvent) -> dict[str, int]:
        result = await processor.apply(list(events))
        return {outcome: n for (kind, outcome), n in result.outcomes.items() if kind == "scan"}

    assert await outcomes(
        scan(mine, "2026-02-01T00:00:00.000Z"),
        scan(theirs, "2026-02-01T00:00:00.000Z"),
        scan(unknown, "2026-02-01T00:00:00.000Z"),  # no http client: the PDS is not asked
        scan(mine, "2026-02-01T00:00:00.000Z", critical=-1),
        scan(mine, "", rkey="not-a-digest"),
        scan(mine, "yesterday"),
        scan(mine, "2026-03-01T00:00:00.000Z", op="delete"),
    ) == {"queued": 1, "foreign": 1, "unknown": 1, "invalid": 3}
    assert await valkey.exists(last_key(OWNER, "app", theirs), last_key(OWNER, "app", unknown)) == 0

    # The same scan again, and an older one arriving late: nothing; a newer one: queued.
    assert await outcomes(scan(mine, "2026-02-01T00:00:00.000Z"), scan(mine, "2026-01-01T00:00:00.000Z")) == {
        "replayed": 2
    }
    assert await outcomes(scan(mine, "2026-02-02T00:00:00.000Z", critical=0)) == {"queued": 1}
    # The same instant written another way (holds differ in RFC 3339 fractions) is the same scan.
    assert await outcomes(scan(mine, "2026-02-02T00:00:00Z", critical=0)) == {"replayed": 1}
    kept = await valkey.hgetall(last_key(OWNER, "app", mine))
    assert kept[b"at"] == b"2026-02-02T00:00:00.000Z" and b'"critical": 0' in kept[b"counts"]
    assert 0 < await valkey.ttl(last_key(OWNER, "app", mine)) <= 400 * 24 * 3600
