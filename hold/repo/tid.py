"""TIDs (atproto.com/specs/tid): the sortable 13-character timestamps used as revs and record keys.

A commit's rev must sort after every earlier rev of the repo, even across restarts and a
wall clock that steps backwards, so the clock remembers the last value it handed out and can
be told about revs it finds on disk.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

from atcr.tid import decode_tid, encode_tid

__all__ = ["TidClock", "decode_tid", "encode_tid"]


class TidClock:
    """Hands out strictly increasing TIDs; thread-safe."""

    def __init__(self, now_us: Callable[[], int] | None = None, clock_id: int | None = None) -> None:
        self._now_us = now_us or (lambda: time.time_ns() // 1000)
        self._clock_id = secrets.randbelow(1024) if clock_id is None else clock_id
        self._last = 0
        self._lock = threading.Lock()

    def observe(self, tid: str) -> None:
        """Never hand out a TID at or before `tid` (e.g. the rev found on disk at start)."""
        micros, _ = decode_tid(tid)
        with self._lock:
            self._last = max(self._last, micros)

    def next(self) -> str:
        with self._lock:
            micros = max(self._now_us(), self._last + 1)
            self._last = micros
        return encode_tid(micros, self._clock_id)
