"""Numbers, sizes, times and digests the way people read them (Jinja filters of the UI).

Each filter takes the raw value from the read model and never raises: a page must render
even for a record with an odd timestamp or size, so bad input comes back as "—" or as-is.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Final

_UNITS: Final = ("B", "KB", "MB", "GB", "TB")


def size(value: Any) -> str:
    """Bytes in decimal units like registries show them: ``1.4 MB``, ``512 B``."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "—"
    if n < 0:
        return "—"
    for unit in _UNITS:
        if n < 1000 or unit == _UNITS[-1]:
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1000
    return "—"  # pragma: no cover - the loop always returns


def count(value: Any) -> str:
    """``1234`` -> ``1.2k``, ``2500000`` -> ``2.5M``: a card has room for four characters."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return "0"
    if n < 1000:
        return str(n)
    for div, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= div:
            text = f"{n / div:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(n)  # pragma: no cover


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 strings and epoch milliseconds (the model stores both) as aware datetimes."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and value > 0:
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def iso(value: Any) -> str:
    """Machine-readable time for ``<time datetime=...>``."""
    parsed = parse_time(value)
    return parsed.isoformat(timespec="seconds").replace("+00:00", "Z") if parsed else ""


def ago(value: Any, now: float | None = None) -> str:
    """``3 minutes ago``, ``2 days ago``, then the date for anything older than a month."""
    parsed = parse_time(value)
    if parsed is None:
        return "—"
    seconds = (now if now is not None else time.time()) - parsed.timestamp()
    seconds = max(seconds, 0)
    for limit, div, unit in (
        (60, 1, None),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (30 * 86400, 86400, "day"),
    ):
        if seconds < limit:
            if unit is None:
                return "just now"
            n = int(seconds // div)
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return parsed.strftime("%-d %b %Y")


def clock(value: Any) -> str:
    """``3 Dec 2026, 21:05 UTC``: an absolute time a person reads (not ISO 8601)."""
    parsed = parse_time(value)
    if parsed is None:
        return "—"
    return parsed.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


def short_digest(value: Any, n: int = 12) -> str:
    """``sha256:0123456789ab…`` -> ``0123456789ab``: the part people compare by eye."""
    text = str(value or "")
    _, _, hexpart = text.partition(":")
    return (hexpart or text)[:n]


def platform(value: Any) -> str:
    """An OCI platform object as ``linux/arm64/v8``."""
    if not isinstance(value, dict):
        return ""
    parts = [str(value.get("os") or ""), str(value.get("architecture") or "")]
    if value.get("variant"):
        parts.append(str(value["variant"]))
    text = "/".join(p for p in parts if p)
    if value.get("os.version") or value.get("osVersion"):
        text += f" ({value.get('os.version') or value.get('osVersion')})"
    return text


FILTERS: Final = {
    "size": size,
    "count": count,
    "iso": iso,
    "ago": ago,
    "clock": clock,
    "short_digest": short_digest,
    "platform": platform,
}

__all__ = ["FILTERS", "ago", "clock", "count", "iso", "parse_time", "platform", "short_digest", "size"]
