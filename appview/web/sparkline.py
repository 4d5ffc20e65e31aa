"""A repository's pulls over the last 30 days, drawn as an inline SVG sparkline.

Drawn on the server so it shows without JavaScript and costs no extra request. The numbers
come from the holds' daily pull counts (summed across holds by the read model); days
without an entry are zero, so a quiet month reads as a flat line rather than a gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DAYS = 30
WIDTH = 120
HEIGHT = 28
PAD = 2


@dataclass(frozen=True)
class Sparkline:
    days: tuple[str, ...]  # ISO dates, oldest first
    counts: tuple[int, ...]
    points: str  # SVG polyline points
    area: str  # SVG path of the filled area under the line
    total: int
    peak: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def label(self) -> str:
        """What a screen reader hears instead of the picture."""
        if not self.total:
            return f"No pulls in the last {len(self.days)} days."
        return (
            f"{self.total} pull{'s' if self.total != 1 else ''} in the last {len(self.days)} days; "
            f"busiest day {self.peak}."
        )


def last_days(today: date | None = None, n: int = DAYS) -> list[str]:
    end = today or datetime.now(UTC).date()
    return [(end - timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def build(daily: Mapping[str, int], today: date | None = None, n: int = DAYS) -> Sparkline:
    """`daily` maps ``YYYY-MM-DD`` to pulls that day (any days; only the last `n` are drawn)."""
    days = last_days(today, n)
    counts = [max(0, int(daily.get(d, 0))) for d in days]
    peak = max(counts) if counts else 0
    scale = (HEIGHT - 2 * PAD) / peak if peak else 0.0
    step = (WIDTH - 2 * PAD) / max(1, n - 1)
    coords = [(PAD + i * step, HEIGHT - PAD - c * scale) for i, c in enumerate(counts)]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = (
        f"M{coords[0][0]:.1f},{HEIGHT - PAD} "
        + " ".join(f"L{x:.1f},{y:.1f}" for x, y in coords)
        + f" L{coords[-1][0]:.1f},{HEIGHT - PAD} Z"
    )
    return Sparkline(tuple(days), tuple(counts), points, area, sum(counts), peak)


__all__ = ["DAYS", "Sparkline", "build", "last_days"]
