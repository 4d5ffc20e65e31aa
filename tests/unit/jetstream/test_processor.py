"""The processor's ordering and routing rules, against a recording fake of the read model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from atcr.readmodel.events import RecordChange
from jetstream.events import AccountEvent, CommitEvent, IdentityEvent
from jetstream.processor import Processor, holds_named

pytestmark = pytest.mark.unit

A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
B = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
HOLD = "did:web:hold.example.com"


class FakeModel:
    """Records every call in order; applies "newest rev wins" per record like the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.revs: dict[tuple[str, str, str], str] = {}
        self.hidden: dict[str, str] = {}

    async def apply_records(self, changes: Sequence[RecordChange]) -> list[bool]:
        self.calls.append(("records", [(c.did, c.rkey) for c in changes]))
        out = []
        for c in changes:
            key = (c.did, c.collection, c.rkey)
            if c.rev is not None and self.revs.get(key, "") > c.rev:
                out.append(False)
                continue
            self.revs[key] = c.rev or ""
            out.append(True)
        return out

    async def apply_listing(self, did: str, collection: str, records: Any, *, rev: Any, started_ms: int) -> int:
        self.calls.append(("listing", (did, collection, len(records))))
        return len(records)

    async def forget_identities(self, items: Sequence[tuple[str, str | None]]) -> None:
        self.calls.append(("identity", list(items)))

    async def apply_accounts(self, items: Sequence[tuple[str, bool, str | None]]) -> list[str]:
        self.calls.append(("accounts", [(did, active) for did, active, _ in items]))
        out = []
        for did, active, status in items:
            if active:
                out.append("restored" if self.hidden.pop(did, None) else "ignored")
                continue
            self.hidden[did] = status or "deactivated"
            out.append("purged" if status == "deleted" else "hidden")
        return out

    async def inactive(self, dids: Sequence[str]) -> dict[str, str]:
        return {d: self.hidden[d] for d in dids if d in self.hidden}

    async def now_ms(self) -> int:
        return 0


def tag(did: str, rkey: str, rev: str, op: str = "create", t: int = 1) -> CommitEvent:
    record = None if op == "delete" else {"repository": "app", "tag": rkey}
    return CommitEvent(did, t, "io.atcr.tag", rkey, op, rev, "bafy" if record else None, record)  # type: ignore[arg-type]


async def test_a_batch_is_one_model_call_and_counts_outcomes() -> None:
    model = FakeModel()
    result = await Processor(model).apply([tag(A, "x", "2", t=5), tag(A, "x", "1", t=7), tag(B, "y", "1", t=6)])
    assert model.calls == [("records", [(A, "x"), (A, "x"), (B, "y")])]
    assert result.outcomes[("commit", "applied")] == 2 and result.outcomes[("commit", "ignored")] == 1
    assert result.newest_us == 7 and result.total == 3


async def test_account_events_keep_their_place_among_the_same_dids_commits() -> None:
    model = FakeModel()
    events = [
        tag(A, "1", "1"),
        tag(B, "2", "1"),
        AccountEvent(A, 2, False, "deactivated"),
        tag(A, "3", "2"),  # after the deactivation: dropped
        tag(B, "4", "2"),
        AccountEvent(A, 3, True),
        tag(A, "5", "3"),
        IdentityEvent(B, 4, "b.test"),
    ]
    result = await Processor(model).apply(events)
    # Waves: order across DIDs is free (B's commit 4 joins the first wave); A's order is kept,
    # and A's commit 3, after its deactivation, is dropped without a call.
    assert model.calls == [
        ("records", [(A, "1"), (B, "2"), (B, "4")]),
        ("accounts", [(A, False)]),
        ("accounts", [(A, True)]),
        ("records", [(A, "5")]),
        ("identity", [(B, "b.test")]),
    ]
    assert result.outcomes[("commit", "hidden")] == 1
    assert result.outcomes[("account", "hidden")] == 1 and result.outcomes[("account", "restored")] == 1
    assert result.resync == [A]


async def test_commits_of_a_hidden_account_are_dropped() -> None:
    model = FakeModel()
    model.hidden[A] = "takendown"
    result = await Processor(model).apply([tag(A, "1", "1"), tag(B, "2", "1")])
    assert model.calls == [("records", [(B, "2")])]
    assert result.outcomes[("commit", "hidden")] == 1


async def test_holds_named_by_records() -> None:
    assert holds_named("io.atcr.manifest", A, {"holdDid": HOLD}) == [HOLD]
    assert holds_named("io.atcr.manifest", A, {"holdEndpoint": "https://hold.example.com"}) == [HOLD]
    assert holds_named("io.atcr.sailor.profile", A, {"defaultHold": HOLD}) == [HOLD]
    assert holds_named("io.atcr.sailor.profile", A, {"defaultHold": "nope"}) == []
    assert holds_named("io.atcr.hold.captain", HOLD, {"owner": A}) == [HOLD]
    assert holds_named("io.atcr.tag", A, {"repository": "x"}) == []
    assert holds_named("io.atcr.manifest", A, None) == []
    model = FakeModel()
    manifest = CommitEvent(A, 1, "io.atcr.manifest", "m", "create", "1", "bafy", {"holdDid": HOLD})
    result = await Processor(model).apply([manifest])
    assert result.holds == {HOLD}


async def test_empty_batch() -> None:
    model = FakeModel()
    result = await Processor(model).apply([])
    assert model.calls == [] and result.total == 0 and result.newest_us is None


async def test_listing_passes_through_and_reports_holds() -> None:
    model = FakeModel()
    changed, holds = await Processor(model).apply_listing(
        A, "io.atcr.manifest", [("m", {"holdDid": HOLD}, "bafy")], rev="3x", started_ms=1
    )
    assert changed == 1 and holds == {HOLD}
    assert model.calls == [("listing", (A, "io.atcr.manifest", 1))]


async def test_consecutive_account_events_of_one_did_stay_in_order() -> None:
    model = FakeModel()
    await Processor(model).apply(
        [AccountEvent(A, 1, False, "deactivated"), AccountEvent(A, 2, True), AccountEvent(A, 3, False, "deleted")]
    )
    assert model.calls == [("accounts", [(A, False)]), ("accounts", [(A, True)]), ("accounts", [(A, False)])]
    assert model.hidden == {A: "deleted"}
