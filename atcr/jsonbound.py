"""JSON parsing with a nesting bound, for every body a client (or another user) controls.

Python's `json` and msgspec both recurse per nesting level: `[[[[...]]]]` a thousand levels
deep raises `RecursionError`, which is no `ValueError`, so it escaped every "invalid JSON"
handler and became a 500 with a traceback. No document we accept needs more than a handful
of levels (OCI manifests about 5, XRPC bodies and records about 10), so bodies deeper than
`MAX_DEPTH` are refused *before* parsing, by a scan that does not recurse, with an error
that is a `ValueError` like any other malformed JSON.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64

# A JSON string, escapes included (unrolled so long strings cost no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# '[' and '{' -> +1, ']' and '}' -> -1 (as signed bytes).
_STEP = bytes.maketrans(b"[]{}", bytes([1, 255, 1, 255]))


class JsonTooDeep(ValueError):
    """The document nests deeper than allowed; raised instead of RecursionError."""


def _brackets(data: bytes | str) -> bytes:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    return _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)


def _depth(brackets: bytes) -> int:
    if not brackets:
        return 0
    return max(accumulate(array("b", brackets.translate(_STEP))))


def depth(data: bytes | str) -> int:
    """How deeply arrays and objects nest in `data` (brackets inside strings do not count)."""
    return _depth(_brackets(data))


def too_deep(data: bytes | str, max_depth: int = MAX_DEPTH) -> bool:
    brackets = _brackets(data)
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return False  # cannot nest deeper than it has openers (the common, cheap case)
    return _depth(brackets) > max_depth


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing documents nested deeper than `max_depth` with JsonTooDeep."""
    if too_deep(data, max_depth):
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except RecursionError:  # only if the bound is set above what the interpreter can parse
        raise JsonTooDeep("JSON nested too deeply to parse") from None


__all__ = ["MAX_DEPTH", "JsonTooDeep", "depth", "loads", "too_deep"]
