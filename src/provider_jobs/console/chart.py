"""The overview's chart: dead letters per hour, stacked by category, drawn as SVG on the server."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

__all__ = ["WINDOWS", "Bar", "Chart", "HourlyCounts", "hourly_chart"]

#: The chart's windows: name to hours.
WINDOWS = {"24h": 24, "7d": 168}
_HOUR_MS = 3_600_000
#: Colour classes in the stylesheet, given to categories in order of size.
_PALETTE = 8
_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 720, 200, 40, 20, 8


#: Counts per hour and category since a time (ms): ``DeadLetterArchive.counts_by_hour``.
CountsSince = Callable[[int], list[tuple[int, str, int]]]


class HourlyCounts:
    """Dead letters per hour for the overview's chart, the hours before the last two kept a while.

    The page refreshes every few seconds and a week is 168 hours of records; the hours
    that are over change only when a late dead letter is archived or old ones are purged,
    so they are read again every ``ttl_s`` seconds, and the last two hours at every call.

    Args:
        counts_since: Reads ``(hour_start_ms, category, count)`` rows since a time in ms.
        ttl_s: How long the hours before the last two are kept. Default 60.
    """

    def __init__(self, counts_since: CountsSince, *, ttl_s: float = 60.0) -> None:
        self._counts_since = counts_since
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        # hours -> (the hours kept end before this ms, read at monotonic s, their rows)
        self._kept: dict[int, tuple[int, float, list[tuple[int, str, int]]]] = {}

    def rows(self, *, hours: int, now_ms: int) -> list[tuple[int, str, int]]:
        """The rows of the last ``hours`` hours up to ``now_ms``."""
        first_hour = (now_ms // _HOUR_MS - hours + 1) * _HOUR_MS
        recent_from = (now_ms // _HOUR_MS - 1) * _HOUR_MS
        with self._lock:
            kept = self._kept.get(hours)
        if kept is None or kept[0] != recent_from or time.monotonic() - kept[1] > self.ttl_s:
            rows = self._counts_since(first_hour)
            with self._lock:
                self._kept[hours] = (recent_from, time.monotonic(), [r for r in rows if r[0] < recent_from])
            return rows
        return kept[2] + self._counts_since(recent_from)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bar:
    """One category's part of one hour's bar."""

    x: float
    y: float
    width: float
    height: float
    colour: int
    title: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Chart:
    """What the template draws: bars, axis labels, the legend and a text summary."""

    width: int
    height: int
    bars: list[Bar]
    y_ticks: list[tuple[float, int]]
    x_ticks: list[tuple[float, str]]
    legend: list[tuple[int, str, int]]
    total: int
    summary: str


def hourly_chart(rows: Sequence[tuple[int, str, int]], *, hours: int, now_ms: int) -> Chart:
    """Stack ``(hour_start_ms, category, count)`` rows into bars for the last ``hours`` hours."""
    last_hour = now_ms // _HOUR_MS * _HOUR_MS
    first_hour = last_hour - (hours - 1) * _HOUR_MS
    per_hour: dict[int, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for hour_ms, category, count in rows:
        if first_hour <= hour_ms <= last_hour:
            per_hour[hour_ms][category] = per_hour[hour_ms].get(category, 0) + count
            totals[category] += count
    order = sorted(totals, key=lambda c: (-totals[c], c))
    colour = {category: i % _PALETTE for i, category in enumerate(order)}
    peak = max((sum(counts.values()) for counts in per_hour.values()), default=0)
    # An even top, so that the middle grid line falls on a whole number.
    scale_top = max(peak + peak % 2, 1) if peak > 1 else 1
    plot_w, plot_h = _WIDTH - _LEFT, _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / hours
    bars: list[Bar] = []
    for hour_ms, counts in sorted(per_hour.items()):
        x = _LEFT + (hour_ms - first_hour) / _HOUR_MS * slot
        base = float(_HEIGHT - _BOTTOM)
        label = datetime.fromtimestamp(hour_ms / 1000, UTC).strftime("%Y-%m-%d %H:00")
        for category in order:
            count = counts.get(category, 0)
            if not count:
                continue
            height = count / scale_top * plot_h
            base -= height
            bars.append(
                Bar(
                    x=round(x + slot * 0.1, 2),
                    y=round(base, 2),
                    width=round(max(slot * 0.8, 1.0), 2),
                    height=round(height, 2),
                    colour=colour[category],
                    title=f"{label} UTC: {count} {category}",
                )
            )
    fractions = (0, 0.5, 1) if scale_top > 1 else (0, 1)
    y_ticks = [(round(_HEIGHT - _BOTTOM - plot_h * f, 2), round(scale_top * f)) for f in fractions]
    step = 6 if hours <= 24 else 24
    x_ticks = [
        (
            round(_LEFT + i * slot, 2),
            datetime.fromtimestamp((first_hour + i * _HOUR_MS) / 1000, UTC).strftime(
                "%H:00" if hours <= 24 else "%m-%d"
            ),
        )
        for i in range(0, hours, step)
    ]
    total = sum(totals.values())
    summary = (
        f"{total} dead letters in the last {hours} hours"
        + (": " + ", ".join(f"{totals[c]} {c}" for c in order) if order else "")
        + (f"; the busiest hour had {peak}" if peak else "")
    )
    return Chart(
        width=_WIDTH,
        height=_HEIGHT,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=[(colour[c], c, totals[c]) for c in order],
        total=total,
        summary=summary,
    )
