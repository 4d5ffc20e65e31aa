"""A record's severity: from its CVSS vectors (scored by the `cvss` library) or its own rating."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def rate(severities: Iterable[Mapping[str, Any]], specifics: Iterable[Mapping[str, Any] | None]) -> Severity:
    """Severity from OSV `severity[]` entries (CVSS first, then an ecosystem's own word such as
    Ubuntu's), else from a `database_specific`/`ecosystem_specific` `severity` or `urgency`."""
    entries = [e for e in severities if isinstance(e, Mapping)]
    for kind in _PREFERENCE:
        for entry in entries:
            if entry.get("type") == kind and isinstance(entry.get("score"), str):
                rating = _vector_rating(kind, entry["score"])
                if rating is not None:
                    return rating
    for entry in entries:
        rating = _word(entry.get("score"))
        if rating is not None:
            return rating
    for specific in specifics:
        if isinstance(specific, Mapping):
            for field in ("severity", "urgency"):
                rating = _word(specific.get(field))
                if rating is not None:
                    return rating
    return "unknown"
