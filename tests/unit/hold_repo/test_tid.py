"""TIDs: the spec's shape, and strictly increasing even when the wall clock steps back."""

from __future__ import annotations

from atcr.syntax import is_tid
from hold.repo.tid import TidClock, decode_tid, encode_tid


def test_encode_decode_round_trip() -> None:
    tid = encode_tid(1_700_000_000_000_000, 517)
    assert is_tid(tid) and decode_tid(tid) == (1_700_000_000_000_000, 517)
    assert encode_tid(0, 0) == "2222222222222"


def test_clock_is_monotonic_across_a_backwards_step_and_a_restart() -> None:
    now = [2_000_000_000_000_000]
    clock = TidClock(now_us=lambda: now[0], clock_id=3)
    first = clock.next()
    now[0] -= 10_000_000  # NTP steps the clock back 10 s
    second = clock.next()
    assert second > first
    restarted = TidClock(now_us=lambda: now[0], clock_id=9)
    restarted.observe(second)  # the rev found on disk
    assert restarted.next() > second
    assert len({clock.next() for _ in range(1000)}) == 1000
