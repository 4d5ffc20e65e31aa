"""A record's severity: from its CVSS vectors (scored by the `cvss` library) or its own rating."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import cvss

from scanner.analysis.model import Severity

_WORDS: dict[str, Severity] = {
    "critical": "critical",
    "high": "high",
    "important": "high",  # Red Hat
    "moderate": "medium",  # GitHub advisories, Red Hat
    "medium": "medium",
    "low": "low",
    "negligible": "low",  # Ubuntu
    "unimportant": "low",  # Debian
    "none": "low",
}
_PREFERENCE = ("CVSS_V3", "CVSS_V4", "CVSS_V2")


def from_score(score: float) -> Severity:
    """The CVSS v3/v4 qualitative rating of a base score."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


@lru_cache(maxsize=16384)  # real databases repeat a few thousand distinct vectors; scoring one is ~100 us
def _vector_rating(kind: str, vector: str) -> Severity | None:
    try:
        if kind == "CVSS_V4":
            return from_score(float(cvss.CVSS4(vector).base_score))
        if kind == "CVSS_V3":
            return from_score(float(cvss.CVSS3(vector).base_score))
        if kind == "CVSS_V2":
            return from_score(float(cvss.CVSS2(vector).base_score))
    except (cvss.CVSSError, ValueError, TypeError, KeyError, IndexError):
        return None
    return None


def _word(value: Any) -> Severity | None:
    return _WORDS.get(value.strip().lower()) if isinstance(value, str) else None


def rate(vectors: Iterable[tuple[str, str]], words: Iterable[str]) -> Severity:
    """Severity from OSV `severity[]` (type, score) pairs: a CVSS vector first (v3, v4, v2),
    then an ecosystem's own word given as a score (Ubuntu's); else the first known word among
    a record's `database_specific`/`ecosystem_specific` `severity` or `urgency`."""
    entries = list(vectors)
    for kind in _PREFERENCE:
        for entry_kind, score in entries:
            if entry_kind == kind:
                rating = _vector_rating(kind, score)
                if rating is not None:
                    return rating
    for _, score in entries:
        rating = _word(score)
        if rating is not None:
            return rating
    for word in words:
        rating = _word(word)
        if rating is not None:
            return rating
    return "unknown"
