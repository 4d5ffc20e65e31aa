"""TIDs (atproto.com/specs/tid): the sortable 13-character timestamps used as revs and record keys.

Shared by the hold's repository (which hands them out, hold/repo/tid.py) and the provenance
verifier (which reads the time a commit's rev names).
"""

from __future__ import annotations

from datetime import UTC, datetime

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def encode_tid(micros: int, clock_id: int) -> str:
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def decode_tid(tid: str) -> tuple[int, int]:
    """(microseconds since the epoch, clock id); ValueError if `tid` is not a TID."""
    if len(tid) != 13 or any(c not in _INDEX for c in tid) or _INDEX[tid[0]] >= 16:
        raise ValueError(f"not a TID: {tid!r}")
    value = 0
    for c in tid:
        value = (value << 5) | _INDEX[c]
    return value >> 10, value & 0x3FF


def tid_datetime(tid: str) -> datetime:
    """The time a TID names (UTC); ValueError if `tid` is not a TID."""
    micros, _ = decode_tid(tid)
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
