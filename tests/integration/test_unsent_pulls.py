"""Pull counts the holds did not acknowledge at an AppView's stop wait in Valkey for the next start,
and are then counted exactly once, also by a hold that had counted them before its answer was lost."""

from __future__ import annotations

from typing import Any

import pytest

from appview import unsent_pulls
from appview.holds.pulls import PullCounter

pytestmark = pytest.mark.integration


class Hold:
    def __init__(self) -> None:
        self.counted = 0
        self.keys: set[str] = set()
        self.down = False
        self.lose_answers = False

    async def notify_manifest(self, hold_did: str, user_did: str | None, body: dict[str, Any], *,
                              service_token: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("hold down")
        assert idempotency_key
        if idempotency_key not in self.keys:
            self.keys.add(idempotency_key)
            self.counted += int(body["count"])
        if self.lose_answers:
            raise TimeoutError("answer lost")
        return {}


def pull(counter: PullCounter, n: int, repo: str = "app") -> None:
    for _ in range(n):
        counter.count("did:web:hold.test", "did:plc:owner", repo, "sha256:" + "a" * 64)


async def test_counts_survive_a_stop_while_the_hold_is_away(valkey: Any) -> None:
    hold = Hold()
    first = PullCounter(hold)
    first.start()
    hold.lose_answers = True  # counted by the hold, but the AppView never hears so
    pull(first, 2)
    await first.flush()
    hold.lose_answers, hold.down = False, True
    pull(first, 3, "other")
    await first.stop()
    assert await unsent_pulls.save(valkey, first) == 5
    assert hold.counted == 2

    hold.down = False
    second = PullCounter(hold)
    assert await unsent_pulls.restore(valkey, second) == 5
    assert await valkey.exists(unsent_pulls.KEY) == 0  # taken: another replica gets none of them
    await second.flush()
    assert hold.counted == 5  # the 2 are not counted twice; the 3 arrive
    assert await unsent_pulls.restore(valkey, PullCounter(hold)) == 0
    assert await unsent_pulls.save(valkey, second) == 0  # nothing left


async def test_an_unreadable_entry_is_dropped_not_fatal(valkey: Any) -> None:
    await valkey.rpush(unsent_pulls.KEY, b"{not json", b'{"hold": "x"}')
    assert await unsent_pulls.restore(valkey, PullCounter(Hold())) == 0
