"""Pull counts reach the hold exactly once, also when an answer is lost and the count is resent."""

from __future__ import annotations

from typing import Any

import pytest

from appview.holds.pulls import PullCounter

pytestmark = pytest.mark.unit


class Hold:
    """Counts like the hold: a notification whose Idempotency-Key was seen before counts nothing."""

    def __init__(self) -> None:
        self.counted = 0
        self.keys: set[str] = set()
        self.lose_next = 0  # count it, then fail as if the answer was lost
        self.down = False
        self.refuse: int | None = None

    async def notify_manifest(
        self, hold_did: str, user_did: str | None, body: dict[str, Any], *, service_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        if self.refuse is not None:
            err = RuntimeError("refused")
            err.status = self.refuse  # type: ignore[attr-defined]
            raise err
        if self.down:
            raise ConnectionError("hold down")
        assert idempotency_key
        if idempotency_key not in self.keys:
            self.keys.add(idempotency_key)
            self.counted += int(body["count"])
        if self.lose_next:
            self.lose_next -= 1
            raise TimeoutError("answer lost")
        return {"success": True}


def pull(counter: PullCounter, n: int) -> None:
    for _ in range(n):
        counter.count("did:web:hold", "did:plc:owner", "app", "sha256:" + "a" * 64)


async def test_lost_answers_do_not_double_count() -> None:
    hold = Hold()
    counter = PullCounter(hold)
    pull(counter, 5)
    hold.lose_next = 1
    await counter.flush()  # counted, answer lost: kept for a retry with the same key
    pull(counter, 3)  # new pulls travel separately
    await counter.flush()
    await counter.flush()
    assert hold.counted == 8


async def test_counts_wait_while_the_hold_is_down() -> None:
    hold = Hold()
    counter = PullCounter(hold)
    hold.down = True
    for _ in range(3):
        pull(counter, 10)
        await counter.flush()
    assert hold.counted == 0
    hold.down = False
    await counter.flush()
    assert hold.counted == 30


async def test_a_definite_refusal_is_dropped_not_retried_forever() -> None:
    hold = Hold()
    counter = PullCounter(hold)
    hold.refuse = 403
    pull(counter, 2)
    await counter.flush()
    hold.refuse = None
    await counter.flush()
    assert hold.counted == 0
