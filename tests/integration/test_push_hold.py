"""One push, one hold (appview/holds/pushhold.py), against a real Valkey."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appview.holds.pushhold import PushHolds, pin_key

pytestmark = pytest.mark.integration

USER = "did:plc:pushholduser00000000000"
DEFAULT, CHOSEN, OTHER = "did:web:default.example", "did:web:chosen.example", "did:web:other.example"


class Profiles:
    def __init__(self, hold: str | None) -> None:
        self.hold = hold

    async def __call__(self, did: str) -> dict[str, Any] | None:
        return {"defaultHold": self.hold} if self.hold else None


async def test_the_chosen_hold_is_pinned_for_the_whole_push(valkey: Any) -> None:
    profiles = Profiles(CHOSEN)
    holds = PushHolds(valkey, profiles, lambda did: True, DEFAULT, pin_seconds=60)
    assert await holds.resolve(USER) == CHOSEN
    profiles.hold = OTHER  # changed elsewhere (another AppView, Jetstream): this push keeps its hold
    assert await holds.resolve(USER) == CHOSEN
    assert 0 < await valkey.ttl(pin_key(USER)) <= 60
    await holds.forget(USER)  # changed in our web UI: the next push goes to the new hold
    assert await holds.resolve(USER) == OTHER


async def test_a_hold_that_does_not_answer_sends_the_push_to_the_default(valkey: Any) -> None:
    holds = PushHolds(valkey, Profiles(CHOSEN), lambda did: did != CHOSEN, DEFAULT, pin_seconds=60)
    assert await holds.resolve(USER) == DEFAULT
    # No profile, or a defaultHold that is not a DID: the AppView's default.
    assert await PushHolds(valkey, Profiles(None), lambda d: True, DEFAULT).choose(USER) == DEFAULT
    assert await PushHolds(valkey, Profiles("https://x"), lambda d: True, DEFAULT).choose(USER) == DEFAULT


async def test_replicas_resolving_at_once_agree(valkey: Any) -> None:
    """Two replicas see different health for the chosen hold at the same moment: both take
    whichever answer was pinned first."""
    up = PushHolds(valkey, Profiles(CHOSEN), lambda did: True, DEFAULT, pin_seconds=60)
    down = PushHolds(valkey, Profiles(CHOSEN), lambda did: did != CHOSEN, DEFAULT, pin_seconds=60)
    answers = await asyncio.gather(*(h.resolve(USER) for h in (up, down, up, down)))
    assert len(set(answers)) == 1


async def test_without_valkey_each_request_resolves(valkey: Any) -> None:
    profiles = Profiles(CHOSEN)
    holds = PushHolds(None, profiles, lambda did: True, DEFAULT)
    assert await holds.resolve(USER) == CHOSEN
    profiles.hold = OTHER
    assert await holds.resolve(USER) == OTHER
